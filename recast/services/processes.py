"""Process hygiene: the embedded Prefect server, who owns a run, and how recast ends.

**The embedded Prefect server.** With no ``PREFECT_API_URL``, Prefect would start a temporary
server of its own inside every process, in the process group of the terminal: Ctrl-C killed it
before recast could record anything, and ``kill -9`` of recast left it running. recast starts it
itself instead (:func:`use_local_prefect_server`):

* one server per data directory, shared by every recast process using that directory: its port
  and pid are in ``<data dir>/prefect/server.json``; each process using it leaves a lease file
  (``server-users/<pid>-<start time>``) and the last one to go stops it. Prefect's server is
  built for many clients, and one server means one writer of Prefect's SQLite database;
* in a session (process group) of its own, so a terminal's Ctrl-C reaches recast only;
* with a watchdog thread inside it that stops it when no process holding a lease is alive any
  more (recast killed with SIGKILL), within about a second;
* watched from each recast process: if the server dies, the process ends in seconds with exit 6
  naming the server and its log, instead of retrying for minutes.

**Ends.** :func:`install_signal_handlers` turns SIGINT, SIGTERM and SIGHUP into
``KeyboardInterrupt`` in the main thread (the flow records the run ``interrupted``), and starts a
timer: chunk tasks running on worker threads cannot be stopped, so if the process has not ended
``RECAST_EXIT_GRACE_S`` later it records its runs' end itself, stops what it started and exits.
A second Ctrl-C exits at once the same way.

**Owners.** Every run records the process that runs it (:func:`current_owner`: host, pid and the
process start time, which tells a reused pid apart); a heartbeat thread refreshes the run while
it is active. ``services.shots.sweep_crashed_runs`` uses :func:`owner_alive` to find the runs
whose process is gone.

**Environment errors.** :func:`environment_error` turns full disks and read-only or unwritable
directories into one-line :class:`~recast.errors.ServiceUnavailableError` (the data directory)
or :class:`~recast.errors.OutputPathError` (the user's own files).
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from recast.errors import OutputPathError, RecastError, ServiceUnavailableError
from recast.settings import Settings, get_settings

EXIT_SERVICE = 6
EXIT_INTERRUPTED = 130
_POLL_S = 0.5


# --- owners --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Owner:
    """The process that runs a run."""

    host: str
    pid: int
    started: datetime  # the process's start time (UTC): a pid reused later has another one


def _start_time(pid: int) -> float | None:
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None


_own_start: float | None = None


def current_owner() -> Owner:
    """This process as the owner of the runs it executes."""
    global _own_start
    if _own_start is None:
        _own_start = _start_time(os.getpid()) or time.time()
    return Owner(host=socket.gethostname(), pid=os.getpid(), started=datetime.fromtimestamp(_own_start, timezone.utc))


def pid_alive(pid: int, started: float | None) -> bool:
    """Whether process ``pid`` exists and (when ``started`` is given) is the one started then."""
    import psutil

    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        created = proc.create_time()
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return False
    except psutil.AccessDenied:
        return True
    # create_time is derived from boot time and clock ticks: allow for rounding
    return started is None or abs(created - started) < 1.0


def owner_alive(host: str | None, pid: int | None, started: datetime | None) -> bool | None:
    """True/False for a process of this host; None when it cannot be told from here."""
    if host is None or pid is None or host != socket.gethostname():
        return None
    if started is not None and started.tzinfo is None:
        started = started.replace(tzinfo=timezone.utc)
    return pid_alive(pid, started.timestamp() if started is not None else None)


# --- runs this process executes: heartbeat and the record of their end -------------------------
_active_runs: set[str] = set()
_runs_lock = threading.Lock()
_heartbeat: Callable[[list[str]], None] | None = None
_heartbeat_thread: threading.Thread | None = None
_end_runs: Callable[[list[str], str, str], None] | None = None


def set_run_callbacks(heartbeat: Callable[[list[str]], None], end_runs: Callable[[list[str], str, str], None]) -> None:
    """How to refresh the heartbeat of runs and record their end (status, message); given by
    ``services.shots`` (this module knows no database)."""
    global _heartbeat, _end_runs
    _heartbeat, _end_runs = heartbeat, end_runs


def run_started(run_id: str) -> None:
    """This process now executes ``run_id``: keep its heartbeat fresh until :func:`run_ended`."""
    global _heartbeat_thread
    with _runs_lock:
        _active_runs.add(run_id)
        if _heartbeat_thread is None or not _heartbeat_thread.is_alive():
            _heartbeat_thread = threading.Thread(target=_beat, name="recast-heartbeat", daemon=True)
            _heartbeat_thread.start()


def run_ended(run_id: str) -> None:
    with _runs_lock:
        _active_runs.discard(run_id)


def active_runs() -> list[str]:
    with _runs_lock:
        return sorted(_active_runs)


def _beat() -> None:
    interval = get_settings().run_heartbeat_s
    while True:
        time.sleep(interval)
        runs = active_runs()
        if not runs:
            continue
        try:
            if _heartbeat is not None:
                _heartbeat(runs)
        except Exception:  # noqa: BLE001 - a missed beat is retried; the run itself reports real failures
            pass


# --- ending: signals, lost server, the grace timer ------------------------------------------
_abort_lock = threading.Lock()
_abort: tuple[int, str, str] | None = None  # (exit code, run status, one-line message)
_message_shown = threading.Event()
_handlers_installed = False  # only the command line's own process may end itself


def aborting() -> tuple[int, str, str] | None:
    """(exit code, run status, message) once the process was asked to end, else None."""
    return _abort


def message_shown() -> None:
    """The command line printed its last line: the grace timer must not print another."""
    _message_shown.set()


def request_exit(code: int, status: str, message: str, *, interrupt_main: bool = True) -> None:
    """End the process: ``KeyboardInterrupt`` (or the error) in the main thread now, and
    :func:`hard_exit` after the grace period if the process is still there. A second request
    exits at once."""
    global _abort
    if not _handlers_installed:
        return  # a library user (the API server, a test) keeps control of its process
    with _abort_lock:
        first = _abort is None
        if first:
            _abort = (code, status, message)
    if not first:
        hard_exit()
        return
    timer = threading.Thread(target=_grace_then_exit, name="recast-exit-grace", daemon=True)
    timer.start()
    if interrupt_main:
        import _thread

        _thread.interrupt_main(signal.SIGUSR1)  # runs _raise_pending in the main thread


def _grace_then_exit() -> None:
    time.sleep(get_settings().exit_grace_s)
    hard_exit()


class PrefectServerLostError(ServiceUnavailableError):
    """The Prefect server this process used is gone."""


def _raise_pending(signum: int, frame: Any) -> None:
    if _abort is None:
        return
    code, _status, message = _abort
    if code == EXIT_INTERRUPTED:
        raise KeyboardInterrupt()
    raise PrefectServerLostError(message)


_before_exit: list[Callable[[], None]] = []


def before_hard_exit(fn: Callable[[], None]) -> None:
    """Run ``fn`` before :func:`hard_exit` prints its line (the command line restores stderr)."""
    _before_exit.append(fn)


def hard_exit() -> None:
    """Record the end of this process's runs, stop what it started, print the line and exit now."""
    code, status, message = _abort or (EXIT_INTERRUPTED, "interrupted", "interrupted")
    runs = active_runs()
    if runs and _end_runs is not None:
        with contextlib.suppress(Exception):
            _end_runs(runs, status, message)
    with contextlib.suppress(Exception):
        release_local_prefect_server()
    for fn in _before_exit:
        with contextlib.suppress(Exception):
            fn()
    if not _message_shown.is_set():
        _message_shown.set()
        line = "recast: interrupted" if code == EXIT_INTERRUPTED else f"recast: error: {message}"
        with contextlib.suppress(Exception):
            sys.stderr.flush()
            os.write(2, (line + "\n").encode())
    with contextlib.suppress(Exception):
        sys.stdout.flush()
    os._exit(code)


def _on_signal(signum: int, frame: Any) -> None:
    name = signal.Signals(signum).name
    request_exit(EXIT_INTERRUPTED, "interrupted", f"interrupted ({name})", interrupt_main=False)
    raise KeyboardInterrupt()


def install_signal_handlers() -> None:
    """Ctrl-C, SIGTERM and SIGHUP end recast through ``KeyboardInterrupt`` with a bounded
    unwinding (main thread only; elsewhere, e.g. inside a test runner's thread, nothing changes)."""
    global _handlers_installed
    if threading.current_thread() is not threading.main_thread():
        return
    _handlers_installed = True
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    signal.signal(signal.SIGUSR1, _raise_pending)


# --- the embedded Prefect server ------------------------------------------------------------
@dataclass
class _ServerUse:
    url: str
    pid: int
    started: float
    state_dir: Path
    lease: Path
    proc: subprocess.Popen[bytes] | None
    stop_watch: threading.Event


_use: _ServerUse | None = None
_use_lock = threading.Lock()


def _state_dir(settings: Settings) -> Path:
    return settings.prefect_home


def _lease_name(pid: int, started: float) -> str:
    return f"{pid}-{started:.2f}"


def _live_leases(users: Path) -> list[Path]:
    """Lease files of processes still alive (stale ones are removed)."""
    live = []
    with contextlib.suppress(FileNotFoundError):
        for lease in users.iterdir():
            pid_s, _, started_s = lease.name.partition("-")
            try:
                pid, started = int(pid_s), float(started_s)
            except ValueError:
                continue
            if pid_alive(pid, started):
                live.append(lease)
            else:
                with contextlib.suppress(OSError):
                    lease.unlink()
    return live


@contextlib.contextmanager
def _locked(state_dir: Path, timeout_s: float | None = None, blocking: bool = True) -> Iterator[bool]:
    import fcntl

    with open(state_dir / "server.lock", "a+b") as fh:
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not blocking:
                    yield False
                    return
                if deadline is not None and time.monotonic() > deadline:
                    raise ServiceUnavailableError(
                        f"Prefect server of {state_dir}: another recast process has been starting it for over {timeout_s:.0f} s "
                        f"(lock {state_dir / 'server.lock'}); see {state_dir / 'server.log'}") from None
                time.sleep(0.1)
        try:
            yield True
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _read_state(state_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((state_dir / "server.json").read_text())
    except (OSError, ValueError):
        return None


def _healthy(url: str, timeout_s: float = 2.0) -> bool:
    import httpx

    try:
        return httpx.get(f"{url}/health", timeout=timeout_s).status_code == 200
    except httpx.HTTPError:
        return False


def _log_tail(path: Path, lines: int = 3) -> str:
    with contextlib.suppress(OSError):
        text = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
        if text:
            return " | ".join(text[-lines:])[-500:]
    return ""


def _start_server(state_dir: Path, timeout_s: float) -> tuple[subprocess.Popen[bytes], dict[str, Any]]:
    """Start the server in a session of its own; returns it once /api/health answers."""
    log = state_dir / "server.log"
    with contextlib.suppress(FileNotFoundError):
        (state_dir / "server.json").unlink()
    env = {**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}
    env.pop("PREFECT_API_URL", None)
    with open(log, "wb") as out:  # a new server, a new log (the last one's is there until then)
        proc = subprocess.Popen([sys.executable, "-m", "recast.services.processes", "prefect-server", str(state_dir)],
                                stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env, start_new_session=True, close_fds=True)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = _log_tail(log)
            raise ServiceUnavailableError(f"Prefect server: the embedded server exited at start (code {proc.returncode}); "
                                          f"see {log}" + (f": {tail}" if tail else ""))
        state = _read_state(state_dir)
        if state and state.get("pid") == proc.pid and _healthy(state["url"], 1.0):
            return proc, state
        time.sleep(0.1)
    proc.terminate()
    raise ServiceUnavailableError(f"Prefect server: the embedded server did not answer within {timeout_s:.0f} s "
                                  f"(RECAST_PREFECT_STARTUP_TIMEOUT_S); see {log}")


def use_local_prefect_server(settings: Settings | None = None) -> str | None:
    """Point this process at the data directory's Prefect server, starting it if needed.

    Does nothing when ``PREFECT_API_URL`` is set (a real server) or when Prefect is already
    configured with one in this process (the test harness). Returns the API URL it uses.
    """
    global _use
    settings = settings or get_settings()
    if _use is not None:
        return _use.url
    if os.environ.get("PREFECT_API_URL"):
        return None
    if "prefect" in sys.modules:
        from prefect.settings import PREFECT_API_URL

        if PREFECT_API_URL.value():
            return None
    with _use_lock:
        if _use is not None:
            return _use.url
        state_dir = _state_dir(settings)
        users = state_dir / "server-users"
        try:
            users.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise environment_error(exc, settings) or exc from None
        me = current_owner()
        lease = users / _lease_name(me.pid, me.started.timestamp())
        proc = None
        with _locked(state_dir, timeout_s=settings.prefect_startup_timeout_s + 30):
            lease.touch()
            try:
                state = _read_state(state_dir)
                if not (state and pid_alive(state["pid"], state.get("started")) and _healthy(state["url"])):
                    proc, state = _start_server(state_dir, settings.prefect_startup_timeout_s)
            except BaseException:
                with contextlib.suppress(OSError):
                    lease.unlink()
                raise
        _use = _ServerUse(url=state["url"], pid=int(state["pid"]), started=float(state["started"]), state_dir=state_dir,
                          lease=lease, proc=proc, stop_watch=threading.Event())
        _point_prefect_at(_use.url)
        threading.Thread(target=_watch_server, args=(_use,), name="recast-prefect-watch", daemon=True).start()
        atexit.register(release_local_prefect_server)
        return _use.url


def _point_prefect_at(url: str) -> None:
    # a server that is ours and watched: failing fast beats Prefect's minute of retries
    os.environ.setdefault("PREFECT_CLIENT_MAX_RETRIES", "1")
    os.environ["PREFECT_API_URL"] = url
    if "prefect" in sys.modules:
        # Prefect read the environment at import: rebuild its process-wide settings (its own
        # background threads read those), so none of them starts a temporary server of its own
        from prefect.context import refresh_global_settings_context
        from prefect.settings import PREFECT_API_URL, PREFECT_CLIENT_MAX_RETRIES, temporary_settings

        refresh_global_settings_context()
        if PREFECT_API_URL.value() != url:  # a settings context entered in this thread hides the global one
            temporary_settings(updates={PREFECT_API_URL: url, PREFECT_CLIENT_MAX_RETRIES: 1}).__enter__()


def local_prefect_url() -> str | None:
    """The URL of the embedded server this process uses, if any."""
    return _use.url if _use is not None else None


def _watch_server(use: _ServerUse) -> None:
    while not use.stop_watch.wait(_POLL_S):
        alive = use.proc.poll() is None if use.proc is not None else pid_alive(use.pid, use.started)
        if not alive and not use.stop_watch.is_set():
            log = use.state_dir / "server.log"
            request_exit(EXIT_SERVICE, "failed",
                         f"Prefect server {use.url} (pid {use.pid}) stopped while recast was using it; see {log}, "
                         "then run the command again (finished stages are reused)")
            return


def release_local_prefect_server() -> None:
    """This process no longer uses the embedded server; the last user stops it."""
    global _use
    with _use_lock:
        use, _use = _use, None
    if use is None:
        return
    use.stop_watch.set()
    with _locked(use.state_dir, timeout_s=10):
        with contextlib.suppress(OSError):
            use.lease.unlink()
        if _live_leases(use.lease.parent):
            return
        state = _read_state(use.state_dir)
        if state and state.get("pid") == use.pid:
            with contextlib.suppress(OSError):
                (use.state_dir / "server.json").unlink()
        _stop_pid(use.pid, use.started, use.proc)


def _stop_pid(pid: int, started: float, proc: subprocess.Popen[bytes] | None, timeout_s: float = 5.0) -> None:
    if not pid_alive(pid, started):
        if proc is not None:
            with contextlib.suppress(Exception):
                proc.wait(timeout=1)
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return
        if proc is None and not pid_alive(pid, started):
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    if proc is not None:
        with contextlib.suppress(Exception):
            proc.wait(timeout=2)


def _serve_prefect(state_dir: Path) -> int:
    """The server process: Prefect's API app on a free loopback port, with a watchdog that stops
    it when no recast process holding a lease is alive."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    started = _start_time(os.getpid()) or time.time()
    state = {"pid": os.getpid(), "started": started, "url": f"http://127.0.0.1:{port}/api", "port": port}
    tmp = state_dir / f"server.json.{os.getpid()}"
    tmp.write_text(json.dumps(state))
    os.replace(tmp, state_dir / "server.json")

    config = uvicorn.Config("prefect.server.api.server:create_app", factory=True, log_level="error", lifespan="on")
    server = uvicorn.Server(config)

    def watchdog() -> None:
        users = state_dir / "server-users"
        while True:
            time.sleep(_POLL_S)
            if _live_leases(users):
                continue
            with _locked(state_dir, blocking=False) as got:
                if not got or _live_leases(users):
                    continue  # someone is starting to use it right now
                current = _read_state(state_dir)
                if current and current.get("pid") == os.getpid():
                    with contextlib.suppress(OSError):
                        (state_dir / "server.json").unlink()
            if not server.started:
                os._exit(0)  # still starting (migrations): nothing to shut down gracefully
            server.should_exit = True
            time.sleep(3)
            os._exit(0)  # a shutdown stuck on a request

    threading.Thread(target=watchdog, name="recast-prefect-watchdog", daemon=True).start()
    server.run(sockets=[sock])
    return 0


# --- errors of the environment ----------------------------------------------------------------
_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
_READ_ONLY = {errno.EROFS}
_DENIED = {errno.EACCES, errno.EPERM}


def _under(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
        return True
    except (ValueError, OSError):
        return False


def environment_error(exc: BaseException, settings: Settings | None = None) -> RecastError | None:
    """A one-line error for a full disk or a read-only/unwritable directory, else None.

    Paths under the data directory (database, object store, Prefect state) are recast's
    environment: ServiceUnavailableError (exit 6). Other paths are the user's own files:
    OutputPathError (exit 3).
    """
    if isinstance(exc, RecastError) or not isinstance(exc, OSError) or exc.errno not in _FULL | _READ_ONLY | _DENIED:
        return None
    settings = settings or get_settings()
    name = exc.filename or ""
    path = Path(os.fsdecode(name)) if name else settings.resolved_data_dir
    if exc.errno in _FULL:
        what = f"no space left on the disk of {path}"
        todo = "free space there"
    elif exc.errno in _READ_ONLY:
        what = f"{path} is on a read-only file system"
        todo = "use a writable location"
    else:
        what = f"{path}: permission denied"
        todo = "make it writable for this user"
    data = settings.resolved_data_dir
    if not name or _under(path, data):
        return ServiceUnavailableError(f"data directory {data}: {what}; {todo}, or set RECAST_DATA_DIR to another directory")
    return OutputPathError(f"{what}; {todo}")


def _main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "prefect-server":
        return _serve_prefect(Path(argv[1]))
    print("usage: python -m recast.services.processes prefect-server STATE_DIR", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))


__all__ = [
    "Owner",
    "PrefectServerLostError",
    "active_runs",
    "aborting",
    "before_hard_exit",
    "current_owner",
    "environment_error",
    "hard_exit",
    "install_signal_handlers",
    "local_prefect_url",
    "message_shown",
    "owner_alive",
    "pid_alive",
    "release_local_prefect_server",
    "request_exit",
    "run_ended",
    "run_started",
    "set_run_callbacks",
    "use_local_prefect_server",
]
