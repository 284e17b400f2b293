"""Exit codes of the ``recast`` command line, decided here and nowhere else, and the guard every
command runs in.

| code | meaning |
|------|---------|
| 0 | done (for ``qc``: verdict pass or review) |
| 1 | internal error (a bug: report it) |
| 2 | usage: bad arguments or options; ``swap --out`` that is an input, inside the store, or an unsupported container |
| 3 | bad input: missing, unreadable or corrupt file; no face where one is needed; unwritable output |
| 4 | refused by policy: consent, licence, permission |
| 5 | QC verdict fail: ``qc``; ``swap`` (nothing published at ``--out`` unless ``--deliver-on-fail``) |
| 6 | external service unavailable: database, object store, Prefect server |
| 7, 8, 9 | ``verify``: watermark-only, tampered, unknown (see ``recast verify --help``) |
| 130 | interrupted |

A command's body raises recast errors (:mod:`recast.errors`); :func:`guarded` turns each into its
code with a one-line message on stderr (the traceback too with ``recast --debug``). Errors of the
environment are translated first: a full disk or a read-only directory under the data directory
is 6 (under the user's own paths, 3), an unreachable Prefect API or a SQLite error the session
did not translate is 6, and after a lost embedded Prefect server whatever the flow raised while
unwinding is reported as that loss. The two results that are not errors, ``qc``'s fail
verdict and ``verify``'s result, leave through ``typer.Exit``, which :func:`guarded` passes on.
"""

from __future__ import annotations

import sys
import time
import traceback
from typing import Any, Callable, TypeVar

import typer

from recast import errors

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_INPUT = 3
EXIT_POLICY = 4
EXIT_QC_FAIL = 5
EXIT_SERVICE = 6
EXIT_INTERRUPTED = 130

T = TypeVar("T")


def _translated(exc: BaseException) -> BaseException:
    """The recast error an exception stands for: the reason this process was asked to end (a
    lost Prefect server), a full disk or read-only directory, an unreachable Prefect API."""
    from recast.services import processes

    abort = processes.aborting()
    if abort is not None:
        code, _status, message = abort
        if code == EXIT_INTERRUPTED:
            return KeyboardInterrupt()  # whatever the unwinding raised: the user stopped it
        if not isinstance(exc, (KeyboardInterrupt, errors.RecastError)):
            return errors.ServiceUnavailableError(message)
    try:
        env = processes.environment_error(exc)
    except Exception:  # noqa: BLE001 - e.g. invalid settings: report the original error
        env = None
    if env is not None:
        return env
    if type(exc).__module__.startswith(("httpx", "httpcore")) and "Connect" in type(exc).__name__:
        url = processes.local_prefect_url() or "the Prefect API (PREFECT_API_URL)"
        return errors.ServiceUnavailableError(f"Prefect server {url}: cannot connect ({exc or type(exc).__name__}); "
                                              "check that it runs, or unset PREFECT_API_URL to use recast's own")
    lost = _database_connection_error(exc)
    if lost is not None:
        return errors.DatabaseUnavailableError(f"database {_database_shown()}: {_first_line(lost)}")
    failing = _prefect_server_error(exc)
    if failing is not None:
        url = processes.local_prefect_url() or "the Prefect API (PREFECT_API_URL)"
        return errors.ServiceUnavailableError(f"Prefect server {url}: {_first_line(exc)} (it still failed after the client's retries); "
                                              "run the command again (finished stages are reused)")
    return exc


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:300]


def _prefect_server_error(exc: BaseException) -> BaseException | None:
    """The Prefect API's own failure behind ``exc``, if any: an HTTP 5xx answer (e.g. 503 while
    its database is locked or its connections were dropped) that outlived the Prefect client's
    retries, possibly wrapped (a tag concurrency slot that could not be acquired)."""
    # httpx's HTTPStatusError is what Prefect's client raises (PrefectHTTPStatusError is one);
    # recast's own HTTP calls all go to the Prefect API, the object store's go through boto3
    return _behind(exc, lambda e: type(e).__module__.startswith(("prefect", "httpx")) and type(e).__name__.endswith("HTTPStatusError")
                   and getattr(getattr(e, "response", None), "status_code", 0) >= 500)


def _database_shown() -> str:
    """The database the settings name, as messages show it (no password); errors raised past
    the engine's own translation (e.g. on commit inside a task) name it too."""
    try:
        from recast.db.session import safe_url
        from recast.settings import get_settings

        return safe_url(get_settings().resolved_database_url)
    except Exception:  # noqa: BLE001 - invalid settings: the message still says what broke
        return "(RECAST_DATABASE_URL)"


#: errors of the database drivers and SQLAlchemy that mean the database (or the connection to it)
#: is gone or unusable, not a bug: e.g. PostgreSQL restarted or the backend terminated mid-run
_DATABASE_CONNECTION_ERRORS = ("OperationalError", "InterfaceError", "PendingRollbackError", "DisconnectionError")


def _database_connection_error(exc: BaseException) -> BaseException | None:
    """The database connection error behind ``exc`` (itself, or what it was raised from), if any."""
    return _behind(exc, lambda e: type(e).__module__.startswith(("sqlite3", "sqlalchemy", "psycopg"))
                   and type(e).__name__ in _DATABASE_CONNECTION_ERRORS)


def _behind(exc: BaseException, matches) -> BaseException | None:
    """The first exception in ``exc``'s chain (itself, then what it was raised from or during)
    that ``matches``."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if matches(current):
            return current
        current = current.__cause__ or current.__context__
    return None


def exit_code_for(exc: BaseException) -> int:
    """The documented exit code for an exception."""
    exc = _translated(exc)
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(exc, errors.UsageError):
        return EXIT_USAGE
    if isinstance(exc, errors.PolicyError):
        return EXIT_POLICY
    if isinstance(exc, errors.ServiceUnavailableError):
        return EXIT_SERVICE
    if isinstance(exc, errors.InputError):
        return EXIT_INPUT
    return EXIT_INTERNAL


_debug = False


def set_debug(on: bool) -> None:
    """The global ``--debug`` option."""
    global _debug
    _debug = on


def debug_enabled() -> bool:
    """Whether tracebacks are shown (``recast --debug`` or RECAST_DEBUG=1)."""
    from recast.settings import get_settings

    if _debug:
        return True
    try:
        return get_settings().debug
    except Exception:  # noqa: BLE001 - invalid settings must not hide the error being reported
        return False


def fail(exc: BaseException) -> None:
    """Leave with the exception's exit code and a one-line message (a traceback with --debug)."""
    from recast.services import processes

    shown = _translated(exc)
    code = exit_code_for(exc)
    sys.stderr.flush()
    if debug_enabled():
        traceback.print_exception(exc, file=sys.stderr)
    if code == EXIT_INTERNAL and not isinstance(shown, errors.RecastError):
        hint = "" if debug_enabled() else "; run with --debug for the traceback"
        typer.echo(f"recast: internal error: {type(shown).__name__}: {shown} (please report it{hint})", err=True)
    elif code == EXIT_INTERRUPTED:
        typer.echo("recast: interrupted", err=True)
    else:
        typer.echo(f"recast: error: {shown}", err=True)
    processes.message_shown()
    raise typer.Exit(code)


def guarded(fn: Callable[[], T]) -> T:
    """Run a command's body; every failure leaves with its documented exit code."""
    try:
        return fn()
    except typer.Exit:
        raise
    except BaseException as exc:  # noqa: BLE001 - every failure leaves with its documented code
        fail(exc)
        raise  # not reached: fail() always raises


def prepare(*, local_flows: bool = False) -> None:
    """What a command that touches the database or Prefect needs first: Prefect's environment
    from the settings, the database schema (the embedded SQLite is created or upgraded), and the
    runs whose process is gone marked ``crashed``.

    ``local_flows``: the command runs flows in this process, so without ``PREFECT_API_URL`` the
    data directory's embedded Prefect server is started (or joined) first.
    """
    from recast.db.migrate import ensure_schema
    from recast.services import processes
    from recast.services.shots import sweep_crashed_runs
    from recast.settings import configure_prefect_environment, get_settings

    configure_prefect_environment(get_settings())
    ensure_schema(get_settings())
    try:
        sweep_crashed_runs()
    except errors.DatabaseUnavailableError:
        pass  # a read-only or busy database: the listing still works, the sweep runs next time
    if local_flows:
        processes.use_local_prefect_server(get_settings())


def fmt(v: Any) -> str:
    """A value for a human-readable line: ``n/a`` for None, two decimals for floats."""
    return "n/a" if v is None else (f"{v:.2f}" if isinstance(v, float) else str(v))


__all__ = ["EXIT_INPUT", "EXIT_INTERNAL", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_POLICY", "EXIT_QC_FAIL", "EXIT_SERVICE", "EXIT_USAGE",
           "debug_enabled", "exit_code_for", "set_debug", "fail", "fmt", "guarded", "prepare"]
