"""Engines and sessions.

* :func:`make_engine` builds an engine for a URL: SQLite gets WAL journalling, a 30 s busy
  timeout and foreign keys; PostgreSQL gets pre-ping and a connect timeout.
* :func:`get_engine` caches one engine per URL (and per process: pools must not cross a fork).
* :func:`session_scope` is the unit of work: commit on success, rollback on error.

A database that cannot be reached raises :class:`recast.errors.DatabaseUnavailableError` with a
one-line message naming the URL without its password, whatever the driver said. A SQLite
database still locked after the busy timeout and a connection lost mid-transaction raise it too:
both are transient, so callers may retry them. A full disk and a read-only database or
directory raise it too, saying so (SQLite's "unable to open database file" alone names neither).
A SQLite file on a read-only file system is opened read-only (immutable), so listings still work.

Keep session scopes short (a few repository calls, no media work inside): with SQLite a write
transaction holds the database's single write lock until it ends.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.engine.interfaces import ExceptionContext
from sqlalchemy.exc import ArgumentError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from recast.errors import DatabaseUnavailableError, UsageError

if TYPE_CHECKING:
    from recast.settings import Settings

SQLITE_BUSY_TIMEOUT_MS = 30_000
PG_CONNECT_TIMEOUT_S = 10


def safe_url(url: str | URL) -> str:
    """The URL as text without its password (for messages and logs)."""
    try:
        u = make_url(url) if isinstance(url, str) else url
    except ArgumentError:
        return "<unparseable database URL>"
    # URL.set() ignores None, so replace the field of the named tuple directly
    return u._replace(password=None).render_as_string(hide_password=False)


def is_sqlite(url: str | URL) -> bool:
    """True for any ``sqlite`` URL."""
    u = make_url(url) if isinstance(url, str) else url
    return u.get_backend_name() == "sqlite"


def _first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip()
    line = text.splitlines()[0].strip() if text else type(orig).__name__
    return line[:300]


def _sqlite_dir_problem(database: str | None) -> str | None:
    """Why the directory of a SQLite file cannot be written (read-only file system, no
    permission, full disk), or None when nothing is wrong with it that can be seen."""
    if not database or database in (":memory:",) or database.startswith("file:"):
        return None
    folder = Path(database).expanduser().resolve().parent
    try:
        st = os.statvfs(folder)
    except OSError:
        return None
    if st.f_flag & os.ST_RDONLY:
        return f"{folder} is on a read-only file system"
    if not os.access(folder, os.W_OK):
        return f"{folder} is not writable for this user"
    if st.f_bavail * st.f_frsize < 64 * 1024:
        return f"the disk of {folder} is full"
    return None


def _install_error_translation(engine: Engine, shown_url: str, database: str | None = None) -> None:
    """Turn connect failures, lost connections, SQLite lock timeouts, full disks and read-only
    databases into one-line errors naming the database and what to do."""

    elsewhere = "or set RECAST_DATA_DIR (or RECAST_DATABASE_URL) elsewhere"

    def todo(problem: str) -> str:
        return f"free space there, {elsewhere}" if "full" in problem else f"make it writable, {elsewhere}"

    @event.listens_for(engine, "handle_error")
    def _translate(context: ExceptionContext) -> BaseException | None:
        if context.is_pre_ping:
            # pre-ping failures are handled by the pool (it reconnects); the reconnect's own
            # failure comes back through this hook as a connect failure
            return None
        exc = context.original_exception
        text = str(exc)
        if "database or disk is full" in text:
            return DatabaseUnavailableError(f"database {shown_url}: the disk is full (database or disk is full); free space there, {elsewhere}")
        if "readonly database" in text or "read-only" in text.lower():
            where = _sqlite_dir_problem(database) or "the database file is read-only"
            return DatabaseUnavailableError(f"database {shown_url} is read-only ({where}); make it writable, {elsewhere}")
        if context.connection is None and context.statement is None:
            problem = _sqlite_dir_problem(database)
            if problem is not None:
                return DatabaseUnavailableError(f"database {shown_url}: cannot open it: {problem}; {todo(problem)}")
            return DatabaseUnavailableError(f"database {shown_url}: cannot connect ({_first_line(exc)})")
        if context.is_disconnect:
            return DatabaseUnavailableError(f"database {shown_url}: connection lost ({_first_line(exc)})")
        if "database is locked" in text:
            return DatabaseUnavailableError(
                f"database {shown_url}: still locked by another writer after "
                f"{SQLITE_BUSY_TIMEOUT_MS // 1000} s (database is locked); wait for the other recast process, or stop it"
            )
        if "disk I/O error" in text or "unable to open database file" in text:
            problem = _sqlite_dir_problem(database) or _first_line(exc)
            return DatabaseUnavailableError(f"database {shown_url}: {problem}; {todo(problem)}")
        return None


def make_engine(url: str | URL, **kwargs: Any) -> Engine:
    """Create an engine for ``url`` with recast's connection settings.

    SQLite: the file's parent directory is created; every connection gets
    ``journal_mode=WAL``, ``busy_timeout=30000``, ``foreign_keys=ON`` and ``synchronous=NORMAL``
    (safe under WAL); ``check_same_thread=False`` because sessions move between worker threads.
    ``sqlite://`` (in memory) uses one shared connection so every session sees the same data.
    PostgreSQL (and others): ``pool_pre_ping`` and, for psycopg, a 10 s connect timeout unless
    the URL sets one. Extra keyword arguments go to :func:`sqlalchemy.create_engine`.
    """
    try:
        u = make_url(url) if isinstance(url, str) else url
    except ArgumentError as exc:
        raise UsageError(f"database URL {url!r} is not a valid SQLAlchemy URL ({exc})") from None
    shown = safe_url(u)
    if u.get_backend_name() == "sqlite":
        connect_args = dict(kwargs.pop("connect_args", {}))
        connect_args.setdefault("check_same_thread", False)
        connect_args.setdefault("timeout", SQLITE_BUSY_TIMEOUT_MS / 1000)
        db = u.database or ""
        in_memory = db in ("", ":memory:") or db.startswith("file::memory:")
        read_only = False
        sqlite_path: str | None = None
        if in_memory:
            kwargs.setdefault("poolclass", StaticPool)
        else:
            path = Path(db).expanduser().resolve()
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                problem = _sqlite_dir_problem(str(path.parent / "x")) or exc.strerror or str(exc)
                raise DatabaseUnavailableError(f"database {shown}: cannot create its directory ({problem}); "
                                               "set RECAST_DATA_DIR (or RECAST_DATABASE_URL) elsewhere") from None
            sqlite_path = str(path)
            if path.exists() and "read-only" in (_sqlite_dir_problem(sqlite_path) or ""):
                # a database on a read-only file system can still be read (`recast runs`): SQLite
                # in WAL mode would try to create its -shm file, so it opens the file as immutable
                read_only = True
                u = u.set(database=f"file:{path}?mode=ro&immutable=1", query={**u.query, "uri": "true"})
        engine = create_engine(u, connect_args=connect_args, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            try:
                if not in_memory and not read_only:
                    cur.execute("PRAGMA journal_mode=WAL")
                    cur.execute("PRAGMA synchronous=NORMAL")
                cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
                cur.execute("PRAGMA foreign_keys=ON")
            finally:
                cur.close()

    else:
        kwargs.setdefault("pool_pre_ping", True)
        connect_args = dict(kwargs.pop("connect_args", {}))
        if u.get_driver_name() in ("psycopg", "psycopg2", "psycopg_async") and "connect_timeout" not in u.query:
            connect_args.setdefault("connect_timeout", PG_CONNECT_TIMEOUT_S)
        engine = create_engine(u, connect_args=connect_args, **kwargs)

    _install_error_translation(engine, shown, sqlite_path if u.get_backend_name() == "sqlite" else None)
    return engine


_engines: dict[tuple[int, str], Engine] = {}
_engines_lock = threading.Lock()


def _url_of(settings: "Settings | None") -> str:
    if settings is None:
        from recast.settings import get_settings

        settings = get_settings()
    return settings.resolved_database_url


def get_engine(settings: "Settings | None" = None) -> Engine:
    """The engine for the configured database, created once per URL and process."""
    key = (os.getpid(), _url_of(settings))
    with _engines_lock:
        engine = _engines.get(key)
        if engine is None:
            engine = _engines[key] = make_engine(key[1])
        return engine


def dispose_engines() -> None:
    """Close and forget every cached engine (tests, or after settings change)."""
    with _engines_lock:
        engines = list(_engines.items())
        _engines.clear()
    for (pid, _url), engine in engines:
        # a forked child must not close its parent's connections
        engine.dispose(close=pid == os.getpid())


def make_session(engine: Engine) -> Session:
    """A new session on ``engine``; objects stay readable after commit (no expiry)."""
    return sessionmaker(bind=engine, expire_on_commit=False)()


@contextmanager
def session_scope(settings: "Settings | None" = None, *, engine: Engine | None = None) -> Iterator[Session]:
    """A transaction: ``with session_scope() as s: ...`` commits at the end, rolls back on error.

    Uses :func:`get_engine` for ``settings`` (the process settings by default) unless an
    ``engine`` is given. Returned ORM objects remain usable after the block (no expiry on
    commit), but lazy loads need a session: copy what you need out inside the block.
    """
    session = make_session(engine if engine is not None else get_engine(settings))
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


__all__ = [
    "dispose_engines",
    "get_engine",
    "is_sqlite",
    "make_engine",
    "make_session",
    "safe_url",
    "session_scope",
]
