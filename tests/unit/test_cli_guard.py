"""The exit code of a lost database connection: the environment (6), not a bug (1)."""

from __future__ import annotations

import pytest
import sqlalchemy.exc as sa_exc

from recast.cli.guard import EXIT_INTERNAL, EXIT_SERVICE, exit_code_for


def _terminated() -> sa_exc.OperationalError:
    # what psycopg reports through SQLAlchemy when PostgreSQL terminates the backend mid-run
    return sa_exc.OperationalError("UPDATE run SET status=%(status)s", {}, Exception("terminating connection due to administrator command"))


def test_a_terminated_connection_raised_from_inside_a_task_is_exit_6():
    try:
        try:
            raise _terminated()
        except sa_exc.OperationalError as inner:
            raise RuntimeError("task swap-3 failed") from inner
    except RuntimeError as outer:
        assert exit_code_for(outer) == EXIT_SERVICE


@pytest.mark.parametrize("exc", [sa_exc.PendingRollbackError("Can't reconnect until invalid transaction is rolled back"),
                                 sa_exc.InterfaceError("SELECT 1", {}, Exception("connection already closed"))])
def test_an_unusable_connection_is_exit_6(exc):
    assert exit_code_for(exc) == EXIT_SERVICE


def test_a_prefect_server_that_keeps_answering_503_is_exit_6_and_says_to_run_again():
    """Seen in CI: while PostgreSQL's connections were being terminated the embedded Prefect
    server answered 503 to the task's tag concurrency request past its client's retries; that is
    the environment (exit 6, rerun), not a bug (exit 1)."""
    import httpx
    from prefect.concurrency._asyncio import ConcurrencySlotAcquisitionError
    from prefect.exceptions import PrefectHTTPStatusError

    from recast.cli.guard import _translated

    request = httpx.Request("POST", "http://127.0.0.1:4200/api/v2/concurrency_limits/increment-with-lease")
    answer = PrefectHTTPStatusError("Server error '503 Service Unavailable'", request=request,
                                    response=httpx.Response(503, request=request))
    try:
        try:
            raise answer
        except PrefectHTTPStatusError as inner:
            raise ConcurrencySlotAcquisitionError("Unable to acquire concurrency slots on ['tag:recast']: 503 Service Unavailable") from inner
    except ConcurrencySlotAcquisitionError as outer:
        assert exit_code_for(outer) == EXIT_SERVICE
        shown = str(_translated(outer))
        assert shown.startswith("Prefect server ") and "503" in shown and "run the command again" in shown, shown
    not_found = PrefectHTTPStatusError("Client error '404 Not Found'", request=request, response=httpx.Response(404, request=request))
    assert exit_code_for(not_found) == EXIT_INTERNAL  # a 4xx is recast asking wrongly: a bug


def test_other_errors_stay_internal():
    assert exit_code_for(ValueError("a bug")) == EXIT_INTERNAL


_FILTERED_CHILD = r"""
import os, sys, threading, typer
from recast.cli import filter_native_logs
restore = filter_native_logs()
os.write(2, b"I0000 00:00:00.000000 123 gl_context.cc:357] GL version: 3.2\n")
typer.echo("[recast] segment: 1/125 frames (1%)", err=True)
# a library's thread leaves its line open (Prefect's API log handler does), twice
for _ in range(2):
    writer = threading.Thread(target=lambda: (sys.stderr.write("--- Error logging to API ---\n"),
                                              sys.stderr.write("All connection attempts failed")))
    writer.start(); writer.join()
    typer.echo("[recast] segment: 125/125 frames (100%)", err=True)
typer.echo("recast: error: Prefect server stopped", err=True)
restore()
sys.stderr.write("after\n")
"""


def test_recasts_lines_are_never_glued_to_a_line_a_library_thread_left_open():
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", _FILTERED_CHILD], capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.decode().splitlines() == [
        "[recast] segment: 1/125 frames (1%)",
        "--- Error logging to API ---", "All connection attempts failed", "[recast] segment: 125/125 frames (100%)",
        "--- Error logging to API ---", "All connection attempts failed", "[recast] segment: 125/125 frames (100%)",
        "recast: error: Prefect server stopped", "after"], proc.stderr.decode()


def test_print_from_two_threads_at_once_gives_two_whole_lines_and_no_empty_ones():
    """print() writes its text and its newline in two calls: a thread printing in between ends
    the first thread's line for it, whose own newline is then not written a second time."""
    import io
    import threading

    from recast.cli import LineSafeStream

    out = io.StringIO()
    stream = LineSafeStream(out)
    stream.write("[recast] segment: 10/50 frames")  # thread A: the text of its print() ...
    other = threading.Thread(target=lambda: (stream.write("[recast] swap: 3/50 frames"), stream.write("\n")))
    other.start()
    other.join()  # ... thread B prints a whole line in between ...
    stream.write("\n")  # ... then A's newline
    stream.end_open_lines()
    assert out.getvalue() == "[recast] segment: 10/50 frames\n[recast] swap: 3/50 frames\n", repr(out.getvalue())


def test_a_write_from_inside_a_write_of_the_same_thread_does_not_deadlock():
    """A finalizer (run by the garbage collector while a write allocates) or a signal handler can
    write to stderr from inside a write: the stream's lock must let the same thread in."""
    import io
    import threading

    from recast.cli import LineSafeStream

    class Reentering(io.StringIO):
        inner_done = False

        def write(self, text):
            if not Reentering.inner_done:
                Reentering.inner_done = True
                stream.write("Exception ignored in: <finalizer>\n")
            return super().write(text)

    out = Reentering()
    stream = LineSafeStream(out)
    worker = threading.Thread(target=lambda: stream.write("[recast] swap: 3/50 frames\n"), daemon=True)
    worker.start()
    worker.join(timeout=5)
    assert not worker.is_alive(), "a write from inside a write deadlocked"
    assert "[recast] swap: 3/50 frames" in out.getvalue() and "Exception ignored in" in out.getvalue()
