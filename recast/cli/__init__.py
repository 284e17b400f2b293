"""The ``recast`` command line: one module per command group, exit codes in :mod:`recast.cli.guard`.

* :mod:`recast.cli.swap`: ``swap``, ``demo``
* :mod:`recast.cli.runs`: ``runs``, ``show``, ``lineage``
* :mod:`recast.cli.production`: ``serve``, ``token``, ``deploy``, ``worker``
* :mod:`recast.cli.trust`: ``project``, ``identity``, ``consent``, ``verify``, ``audit``
* :mod:`recast.cli.qc`: ``qc``, ``review``
* :mod:`recast.cli.admin`: ``models``, ``db``

Commands are thin: they check their options, call :mod:`recast.services` (or a flow) and print.
"""

from __future__ import annotations

import re
import sys
from typing import Callable

import typer

from recast.cli import admin, production, qc, runs, swap, trust
from recast.cli.guard import EXIT_INTERRUPTED

app = typer.Typer(add_completion=False, no_args_is_help=True, help="recast: head and face replacement for post-production, with provenance.")
app.add_typer(admin.db_app, name="db")
swap.register(app)
runs.register(app)
production.register(app)
trust.register(app)
qc.register(app)
app.add_typer(admin.models_app, name="models")


_NATIVE_NOISE = re.compile(rb"^(?:[IWE]\d{4} [\d:. ]+\S+\.cc:\d+\]|INFO: Created TensorFlow Lite|WARNING: All log messages before absl::InitializeLog)")


def filter_native_logs() -> Callable[[], None]:
    """Drop the C++ log chatter of MediaPipe/TFLite from stderr, keep everything else.

    Those lines are written by native threads straight to file descriptor 2, so they can only be
    filtered at the descriptor: stderr goes through a pipe and a thread passes on what matters.
    Returns a function that restores stderr and flushes what is pending.
    """
    import os
    import threading

    sys.stderr.flush()
    saved = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)

    def pump() -> None:
        with os.fdopen(read_end, "rb", buffering=0) as src:
            pending = b""
            while chunk := src.read(65536):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    if not _NATIVE_NOISE.match(line):
                        os.write(saved, line + b"\n")
            if pending and not _NATIVE_NOISE.match(pending):
                os.write(saved, pending)

    thread = threading.Thread(target=pump, name="stderr-filter", daemon=True)
    thread.start()

    def restore() -> None:
        sys.stderr.flush()
        os.dup2(saved, 2)  # closes the pipe's last writer, so the pump drains and stops
        thread.join(timeout=5)
        os.close(saved)

    return restore


def main() -> None:
    """Console entry point."""
    restore = filter_native_logs()
    try:
        app()
    except KeyboardInterrupt:
        typer.echo("recast: interrupted", err=True)
        raise SystemExit(EXIT_INTERRUPTED) from None
    finally:
        restore()


__all__ = ["app", "main"]
