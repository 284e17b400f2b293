"""Exit codes of the ``recast`` command line, decided here and nowhere else, and the guard every
command runs in.

| code | meaning |
|------|---------|
| 0 | done (for ``qc``: verdict pass or review) |
| 1 | internal error (a bug: report it) |
| 2 | usage: bad arguments or options |
| 3 | bad input: missing, unreadable or corrupt file; no face where one is needed |
| 4 | refused by policy: consent, licence, permission |
| 5 | ``qc``: verdict fail |
| 6 | external service unavailable: database, object store, Prefect server |
| 7, 8, 9 | ``verify``: watermark-only, tampered, unknown (see ``recast verify --help``) |
| 130 | interrupted |

A command's body raises recast errors (:mod:`recast.errors`); :func:`guarded` turns each into its
code with a one-line message on stderr. The two results that are not errors, ``qc``'s fail
verdict and ``verify``'s result, leave through ``typer.Exit``, which :func:`guarded` passes on.
"""

from __future__ import annotations

import sys
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


def exit_code_for(exc: BaseException) -> int:
    """The documented exit code for an exception."""
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


def fail(exc: BaseException) -> None:
    """Leave with the exception's exit code and a one-line message (a traceback for a bug)."""
    code = exit_code_for(exc)
    if code == EXIT_INTERNAL and not isinstance(exc, errors.RecastError):
        traceback.print_exc(file=sys.stderr)
        typer.echo(f"recast: internal error: {type(exc).__name__}: {exc} (please report it)", err=True)
    elif code == EXIT_INTERRUPTED:
        typer.echo("recast: interrupted", err=True)
    else:
        typer.echo(f"recast: error: {exc}", err=True)
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


def prepare() -> None:
    """What a command that touches the database or Prefect needs first: Prefect's environment
    from the settings, and the database schema (the embedded SQLite is created or upgraded)."""
    from recast.db.migrate import ensure_schema
    from recast.settings import configure_prefect_environment, get_settings

    configure_prefect_environment(get_settings())
    ensure_schema(get_settings())


def fmt(v: Any) -> str:
    """A value for a human-readable line: ``n/a`` for None, two decimals for floats."""
    return "n/a" if v is None else (f"{v:.2f}" if isinstance(v, float) else str(v))


__all__ = ["EXIT_INPUT", "EXIT_INTERNAL", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_POLICY", "EXIT_QC_FAIL", "EXIT_SERVICE", "EXIT_USAGE",
           "exit_code_for", "fail", "fmt", "guarded", "prepare"]
