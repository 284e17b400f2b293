"""The ``recast`` command line: one module per command group, exit codes in :mod:`recast.cli.guard`.

* :mod:`recast.cli.swap`: ``swap``, ``demo``
* :mod:`recast.cli.runs`: ``runs``, ``show``, ``lineage``
* :mod:`recast.cli.production`: ``serve``, ``token``, ``deploy``, ``worker``
* :mod:`recast.cli.trust`: ``project``, ``identity``, ``consent``, ``verify``, ``audit``
* :mod:`recast.cli.qc`: ``qc``, ``review``
* :mod:`recast.cli.admin`: ``models``, ``db``, ``gc``

Commands are thin: they check their options, call :mod:`recast.services` (or a flow) and print.
"""

from __future__ import annotations

import re
import sys
from typing import Any, Callable

import typer

from recast.cli import admin, production, qc, runs, swap, trust
from recast.cli.guard import EXIT_INTERRUPTED, set_debug

app = typer.Typer(add_completion=False, no_args_is_help=True, help="recast: head and face replacement for post-production, with provenance.")


@app.callback()
def _global_options(debug: bool = typer.Option(False, "--debug", help="print the traceback of an error (also RECAST_DEBUG=1)")) -> None:
    """recast: head and face replacement for post-production, with provenance."""
    set_debug(debug)


app.add_typer(admin.db_app, name="db")
swap.register(app)
runs.register(app)
production.register(app)
trust.register(app)
qc.register(app)
app.add_typer(admin.models_app, name="models")
admin.register(app)


_NATIVE_NOISE = re.compile(rb"^(?:[IWE]\d{4} [\d:. ]+\S+\.cc:\d+\]|INFO: Created TensorFlow Lite|WARNING: All log messages before absl::InitializeLog)")


class LineSafeStream:
    """A text stream that never joins two threads' output on one line.

    Each thread's unterminated text is held back until that thread ends its line; when another
    thread writes, the held text is written first and ended with a newline, so a line left open
    by a library's thread cannot swallow the start of recast's own message. Everything else is
    the wrapped stream's (``fileno``, ``isatty``, ``encoding``...).
    """

    def __init__(self, stream: Any) -> None:
        import threading

        self.stream = stream
        # re-entrant: a finalizer run by the garbage collector, or a signal handler, may write to
        # stderr from inside a write of the same thread (a plain lock would deadlock the process)
        self._lock = threading.RLock()
        self._open: dict[int, str] = {}  # thread id -> its text not yet ended by a newline
        self._ended: set[int] = set()  # threads whose open line another thread's write ended

    def write(self, text: str) -> int:
        import threading

        me = threading.get_ident()
        with self._lock:
            if me in self._ended:
                self._ended.discard(me)
                if text.startswith("\n"):  # print()'s own newline, already written for it
                    text = text[1:]
            held = self._open.pop(me, "") + text
            self._end_others()
            whole, newline, rest = held.rpartition("\n")
            if newline:
                self.stream.write(whole + "\n")
                self.stream.flush()
            if rest:
                self._open[me] = rest
        return len(text)

    def _end_others(self) -> None:
        for other in list(self._open):
            self.stream.write(self._open.pop(other) + "\n")
            self._ended.add(other)

    def end_open_lines(self) -> None:
        """Write every thread's held text, each ended with a newline."""
        with self._lock:
            self._end_others()
            self.stream.flush()

    def flush(self) -> None:
        self.stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


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

    pending = b""

    def pump() -> None:
        nonlocal pending
        with os.fdopen(read_end, "rb", buffering=0) as src:
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

    # a library that leaves a line open (Prefect's "Error logging to API" writes its message
    # without a newline from its log thread) must not glue the next line to it
    line_safe = LineSafeStream(sys.stderr)
    sys.stderr = line_safe  # type: ignore[assignment]

    restored = threading.Event()

    def restore() -> None:
        if restored.is_set():  # main's finally and the exit timer may both call it
            return
        restored.set()
        line_safe.end_open_lines()
        if sys.stderr is line_safe:
            sys.stderr = line_safe.stream
        sys.stderr.flush()
        os.dup2(saved, 2)  # closes the pipe's last writer, so the pump drains and stops
        thread.join(timeout=5)
        os.close(saved)

    return restore


def main() -> None:
    """Console entry point.

    Ctrl-C, SIGTERM and SIGHUP interrupt the command (exit 130, the run recorded
    ``interrupted``) within ``RECAST_EXIT_GRACE_S``; see :mod:`recast.services.processes`, which
    also stops the embedded Prefect server on every way out.
    """
    from recast.services import processes

    processes.install_signal_handlers()
    restore = filter_native_logs()
    processes.before_hard_exit(restore)
    code = 0
    try:
        app()
    except KeyboardInterrupt:
        typer.echo("recast: interrupted", err=True)
        code = EXIT_INTERRUPTED
    except SystemExit as exc:
        if isinstance(exc.code, str):
            typer.echo(exc.code, err=True)
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        restore()
    if processes.aborting() is not None:
        # after a lost server or a signal, Prefect's exit handlers would retry a dead API or wait
        # for chunk threads: the line is printed and the runs are recorded, so leave now
        processes.message_shown()
        processes.hard_exit()
    raise SystemExit(code)


__all__ = ["app", "main"]
