"""Schema migrations (Alembic, configured in code: recast ships no ``alembic.ini``).

* :func:`upgrade` / :func:`downgrade` move a database to a revision (``recast db upgrade``).
* :func:`current_revision` and :func:`head_revision` say where a database is and where the code
  is.
* :func:`ensure_schema` is called by the CLI (and anything else) before first use: the embedded
  SQLite database is upgraded automatically; any other database must already be at head (an
  operator runs ``recast db upgrade`` deliberately, once, for a shared server).

The scripts live in ``recast/db/migrations`` inside the package, so they work from an installed
wheel. To write a new revision after changing :mod:`recast.db.orm`::

    python -m recast.db.migrate autogenerate "add foo to shot"

then read the generated file over (autogenerate misses renames and server-side details).
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection, make_url

from recast.db.session import is_sqlite, make_engine, safe_url
from recast.errors import DatabaseUnavailableError

if TYPE_CHECKING:
    from recast.settings import Settings

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def alembic_config(url: str | None = None, connection: Connection | None = None) -> Config:
    """An Alembic :class:`Config` pointing at recast's migrations.

    ``connection``, when given, is used by ``env.py`` as is (the caller owns the transaction);
    otherwise ``env.py`` connects to ``url``.
    """
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        # configparser interpolates '%': URL-encoded passwords need doubling
        cfg.set_main_option("sqlalchemy.url", str(url).replace("%", "%%"))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    """The newest revision the installed code knows."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "recast ships at least one migration"
    return head


def _known_revisions() -> set[str]:
    return {s.revision for s in ScriptDirectory.from_config(alembic_config()).walk_revisions()}


@contextlib.contextmanager
def _sqlite_migration_lock(url: str) -> Iterator[None]:
    """Serialise migrations of one SQLite file across processes (two CLIs started at once).

    A lock file beside the database; POSIX only (elsewhere, no lock: the embedded database is
    then a one-process affair anyway).
    """
    db = make_url(url).database or ""
    if db in ("", ":memory:") or db.startswith("file:"):
        yield
        return
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    path = Path(db).expanduser().resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{path}.migrate.lock", "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _current(conn: Connection) -> str | None:
    return MigrationContext.configure(conn).get_current_revision()


def _check_known(url: str, current: str | None) -> None:
    if current is not None and current not in _known_revisions():
        raise DatabaseUnavailableError(
            f"database {safe_url(url)} is at schema revision {current}, which this version of recast "
            f"does not know (migrated by a newer recast?)"
        )


def upgrade(url: str, revision: str = "head") -> str | None:
    """Migrate the database at ``url`` up to ``revision``; returns the revision it ends at."""
    engine = make_engine(url)
    try:
        with _sqlite_migration_lock(url) if is_sqlite(url) else contextlib.nullcontext():
            with engine.begin() as conn:
                _check_known(url, _current(conn))
                command.upgrade(alembic_config(url, conn), revision)
            with engine.connect() as conn:
                return _current(conn)
    finally:
        engine.dispose()


def downgrade(url: str, revision: str) -> str | None:
    """Migrate the database at ``url`` down to ``revision`` (``"base"`` drops every table)."""
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            command.downgrade(alembic_config(url, conn), revision)
        with engine.connect() as conn:
            return _current(conn)
    finally:
        engine.dispose()


def current_revision(url: str) -> str | None:
    """The revision the database at ``url`` is at; None for an empty (never migrated) database."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return _current(conn)
    finally:
        engine.dispose()


_ready: set[str] = set()
_ready_lock = threading.Lock()


def ensure_schema(settings: "Settings | None" = None) -> None:
    """Make sure the configured database is at the current schema revision.

    The embedded SQLite database is upgraded in place (first use creates it). Any other database
    that is not at head raises :class:`~recast.errors.DatabaseUnavailableError` telling the
    operator to run ``recast db upgrade``. Checked once per URL and process.
    """
    if settings is None:
        from recast.settings import get_settings

        settings = get_settings()
    url = settings.resolved_database_url
    with _ready_lock:
        if url in _ready:
            return
        head = head_revision()
        if is_sqlite(url):
            if current_revision(url) != head:
                upgrade(url, "head")
        else:
            current = current_revision(url)
            if current != head:
                _check_known(url, current)
                at = f"at revision {current}" if current else "empty"
                raise DatabaseUnavailableError(
                    f"database {safe_url(url)} is not at the current schema revision ({at}, code is at "
                    f"{head}); run `recast db upgrade`"
                )
        _ready.add(url)


def forget_schema_checks() -> None:
    """Forget which URLs :func:`ensure_schema` found ready (tests)."""
    with _ready_lock:
        _ready.clear()


def autogenerate_revision(message: str, rev_id: str | None = None) -> None:
    """Write a new revision file comparing the ORM with a scratch SQLite database at head.

    For developers; the result must be read over before it is committed.
    """
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'autogen.db'}"
        if len(_known_revisions()) > 0:
            upgrade(url, "head")
        engine = make_engine(url)
        try:
            with engine.begin() as conn:
                command.revision(alembic_config(url, conn), message=message, autogenerate=True, rev_id=rev_id)
        finally:
            engine.dispose()


def _main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[0] == "autogenerate":
        rev_id = argv[2] if len(argv) > 2 else None
        autogenerate_revision(argv[1], rev_id)
        return 0
    if len(argv) >= 1 and argv[0] == "upgrade":
        if len(argv) > 1:
            url = argv[1]
        else:
            from recast.settings import get_settings

            url = get_settings().resolved_database_url
        print(upgrade(url))
        return 0
    print('usage: python -m recast.db.migrate autogenerate "message" [rev_id] | upgrade [URL]', file=sys.stderr)
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(_main(sys.argv[1:]))


__all__ = [
    "MIGRATIONS_DIR",
    "alembic_config",
    "autogenerate_revision",
    "current_revision",
    "downgrade",
    "ensure_schema",
    "forget_schema_checks",
    "head_revision",
    "upgrade",
]
