"""Database fixtures (``db_`` prefix): SQLite always, PostgreSQL when configured.

``RECAST_TEST_POSTGRES_URL`` names a PostgreSQL *server* through a database the tests may
connect to as an administrator, e.g. ``postgresql+psycopg://postgres@127.0.0.1:5432/postgres``.
The tests never write to that database: for the session they create ``recast_test_<random>``
beside it (and, for migration tests, further scratch databases), and drop them at the end.
Without the variable, the PostgreSQL cases are skipped.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator

import pytest

PG_ENV = "RECAST_TEST_POSTGRES_URL"


def _pg_admin_engine(server_url: str):
    from sqlalchemy import create_engine

    return create_engine(server_url, isolation_level="AUTOCOMMIT", pool_pre_ping=True)


def _create_database(server_url: str, prefix: str = "recast_test_") -> str:
    from sqlalchemy.engine import make_url

    name = f"{prefix}{uuid.uuid4().hex[:12]}"
    engine = _pg_admin_engine(server_url)
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    finally:
        engine.dispose()
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


def _drop_database(server_url: str, url: str) -> None:
    from sqlalchemy.engine import make_url

    name = make_url(url).database
    engine = _pg_admin_engine(server_url)
    try:
        with engine.connect() as conn:
            # FORCE (PostgreSQL 13+) ends connections a test may have left open
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        engine.dispose()


@pytest.fixture(scope="session")
def db_pg_server_url() -> str:
    """The admin URL of the test PostgreSQL server, or skip."""
    url = os.environ.get(PG_ENV)
    if not url:
        pytest.skip(f"{PG_ENV} not set: PostgreSQL tests skipped")
    return url


@pytest.fixture(scope="session")
def db_pg_url(db_pg_server_url: str) -> Iterator[str]:
    """A fresh ``recast_test_<random>`` database for the whole test session, migrated to head."""
    from recast.db.migrate import upgrade
    from recast.db.session import dispose_engines

    url = _create_database(db_pg_server_url)
    try:
        upgrade(url)
        yield url
    finally:
        dispose_engines()
        _drop_database(db_pg_server_url, url)


@pytest.fixture()
def db_pg_new_database(db_pg_server_url: str) -> Iterator[Callable[[], str]]:
    """Factory of empty scratch PostgreSQL databases, dropped after the test."""
    made: list[str] = []

    def make() -> str:
        url = _create_database(db_pg_server_url, prefix="recast_test_scratch_")
        made.append(url)
        return url

    yield make
    for url in made:
        _drop_database(db_pg_server_url, url)


BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@pytest.fixture(params=BACKENDS)
def db_backend(request) -> str:
    """``sqlite`` or ``postgresql`` (the latter skipped without RECAST_TEST_POSTGRES_URL)."""
    return request.param


@pytest.fixture()
def db_url(db_backend: str, tmp_path, request) -> str:
    """URL of a database at the head revision: a new SQLite file, or the session's PostgreSQL."""
    from recast.db.migrate import upgrade

    if db_backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'db' / 'recast.db'}"
        upgrade(url)
        return url
    return request.getfixturevalue("db_pg_url")


@pytest.fixture()
def db_empty_url(db_backend: str, tmp_path, request) -> str:
    """URL of an empty (never migrated) database on the backend under test."""
    if db_backend == "sqlite":
        return f"sqlite:///{tmp_path / 'empty' / 'recast.db'}"
    return request.getfixturevalue("db_pg_new_database")()


@pytest.fixture()
def db_engine(db_url: str):
    """An engine on :func:`db_url`, disposed after the test."""
    from recast.db.session import make_engine

    engine = make_engine(db_url)
    yield engine
    engine.dispose()


@pytest.fixture()
def db_session(db_engine):
    """A session on :func:`db_engine`; rolled back (not committed) after the test."""
    from recast.db.session import make_session

    session = make_session(db_engine)
    yield session
    session.rollback()
    session.close()
