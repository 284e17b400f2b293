"""Process hygiene: Ctrl-C, kill -9, a lost Prefect server, read-only and full disks.

The whole-swap tests run the installed ``recast`` executable as a real process in a session of
its own (as a terminal would), with no PREFECT_API_URL, so recast starts its embedded Prefect
server; signals go to that process group like a terminal's Ctrl-C. The read-only and full-disk
tests mount small tmpfs file systems (they need the privilege to mount; skipped otherwise).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psutil
import pytest

from tests.conftest import IMAGES, VIDEOS

EXE = Path(sys.executable).with_name("recast")
SOURCE = IMAGES / "deepface_img17.jpg"
PLATE = VIDEOS / "aniportrait_pose_ref_video.mp4"  # 125 frames: long enough to be caught mid-run


def _env(data: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "RECAST_"))}
    env.update({"RECAST_DATA_DIR": str(data), **extra})
    return env


def _recast(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(EXE), *args], capture_output=True, text=True, env=env, timeout=timeout)


def _runs(env: dict[str, str]) -> list[dict]:
    proc = _recast(env, "runs", "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def _start_swap(tmp_path: Path, env: dict[str, str], *args: str) -> tuple[subprocess.Popen, Path]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    err = tmp_path / "stderr.txt"
    with open(err, "wb") as fh:
        proc = subprocess.Popen([str(EXE), "swap", "--mode", "face", "--plate", str(PLATE), "--source", str(SOURCE), "--out", str(tmp_path / "out.mp4"),
                                 *args], stdout=subprocess.DEVNULL, stderr=fh, env=env, start_new_session=True)
    return proc, err


def _wait_for(err: Path, proc: subprocess.Popen, text: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in err.read_text(errors="replace"):
            return
        assert proc.poll() is None, f"recast ended ({proc.returncode}) before '{text}': {err.read_text()[-2000:]}"
        time.sleep(0.2)
    proc.kill()
    pytest.fail(f"no '{text}' within {timeout} s: {err.read_text()[-2000:]}")


def _server(data: Path) -> psutil.Process:
    state = json.loads((data / "prefect" / "server.json").read_text())
    return psutil.Process(state["pid"])


def _gone_within(procs: list[psutil.Process], seconds: float) -> list[psutil.Process]:
    _gone, alive = psutil.wait_procs(procs, timeout=seconds)
    return alive


@pytest.mark.slow
@pytest.mark.parametrize("how", ["ctrl_c", "sigterm"])
def test_an_interrupt_ends_within_seconds_marks_the_run_and_stops_the_server(tmp_path, how):
    """A terminal's Ctrl-C (SIGINT to the whole foreground process group) and a process
    manager's SIGTERM (to recast alone): exit 130, the run ``interrupted``, the server gone."""
    data = tmp_path / "data"
    env = _env(data)
    proc, err = _start_swap(tmp_path, env)
    _wait_for(err, proc, "segment:")
    children = psutil.Process(proc.pid).children(recursive=True)
    server = _server(data)
    assert server in children and server.pid != proc.pid
    assert os.getpgid(server.pid) != os.getpgid(proc.pid), "the Prefect server must not be in the terminal's process group"

    t0 = time.monotonic()
    if how == "ctrl_c":
        os.killpg(proc.pid, signal.SIGINT)
    else:
        proc.send_signal(signal.SIGTERM)
    rc = proc.wait(timeout=30)
    took = time.monotonic() - t0
    stderr = err.read_text()
    assert rc == 130, stderr[-2000:]
    assert took < 12, f"exit took {took:.1f} s"
    assert "recast: interrupted" in stderr and "Traceback" not in stderr, stderr[-2000:]
    assert _gone_within(children, 10) == [], "a child of recast (the Prefect server) is still running"
    assert not (data / "prefect" / "server.json").exists()
    assert not (tmp_path / "out.mp4").exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == [], "a partial file was left beside --out"
    runs = _runs(env)
    assert [r["status"] for r in runs] == ["interrupted"], runs


def _embedded_servers(state_dir: Path) -> list[psutil.Process]:
    """The embedded Prefect server processes started for ``state_dir``."""
    found = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = p.info["cmdline"] or []
        if "prefect-server" in cmd and str(state_dir) in cmd:
            found.append(p)
    return found


@pytest.mark.slow
def test_two_swaps_on_one_data_directory_share_one_prefect_server(tmp_path):
    """The second recast joins the first one's server (one lease each); the server outlives the
    first to leave and stops when the last one does."""
    data = tmp_path / "data"
    env = _env(data)
    first, first_err = _start_swap(tmp_path / "first", env)
    _wait_for(first_err, first, "segment:")
    state = json.loads((data / "prefect" / "server.json").read_text())
    server = _server(data)
    # other chunks than the first's: nothing of its work to reuse, so it is still running when
    # the first leaves (the same command would take the first's stages from the cache and finish)
    second, second_err = _start_swap(tmp_path / "second", env, "--chunk-size", "20")
    try:
        _wait_for(second_err, second, "segment:")  # its flow runs against a Prefect API by now
        assert json.loads((data / "prefect" / "server.json").read_text()) == state, "a second server replaced the first"
        servers = _embedded_servers(data / "prefect")
        assert [p.pid for p in servers] == [state["pid"]], servers
        assert psutil.Process(state["pid"]) not in psutil.Process(second.pid).children(recursive=True)
        leases = sorted(int(p.name.partition("-")[0]) for p in (data / "prefect" / "server-users").iterdir())
        assert leases == sorted([first.pid, second.pid]), leases

        os.killpg(first.pid, signal.SIGINT)
        assert first.wait(timeout=30) == 130, first_err.read_text()[-2000:]
        users = data / "prefect" / "server-users"
        deadline = time.monotonic() + 10
        while any(p.name.startswith(f"{first.pid}-") for p in users.iterdir()):  # the first's lease is released
            assert time.monotonic() < deadline, "the first recast left its lease behind"
            time.sleep(0.1)
        # a server that missed the second lease would stop at its watchdog's next polls (twice a second)
        assert _gone_within([server], 1.5) == [server], "the server stopped while the second recast still used it"
        assert second.poll() is None, second_err.read_text()[-2000:]
    finally:
        for proc in (first, second):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGINT)
    assert second.wait(timeout=30) == 130, second_err.read_text()[-2000:]
    assert _gone_within([server], 10) == [], "the last user left and the Prefect server still runs"
    assert sorted(r["status"] for r in _runs(env)) == ["interrupted", "interrupted"]


@pytest.mark.slow
def test_kill_9_stops_the_server_by_itself_and_the_run_shows_crashed(tmp_path):
    data = tmp_path / "data"
    env = _env(data)
    proc, err = _start_swap(tmp_path, env)
    _wait_for(err, proc, "segment:")
    server = _server(data)

    proc.kill()
    proc.wait(timeout=10)
    assert _gone_within([server], 15) == [], "the Prefect server outlived recast (no watchdog)"
    runs = _runs(env)
    assert [r["status"] for r in runs] == ["crashed"], runs
    assert str(proc.pid) in runs[0]["error"]


@pytest.mark.slow
def test_lost_prefect_server_ends_with_exit_6_naming_it(tmp_path):
    data = tmp_path / "data"
    env = _env(data)
    proc, err = _start_swap(tmp_path, env)
    _wait_for(err, proc, "segment:")
    server = _server(data)
    url = json.loads((data / "prefect" / "server.json").read_text())["url"]

    t0 = time.monotonic()
    server.kill()
    rc = proc.wait(timeout=60)
    took = time.monotonic() - t0
    stderr = err.read_text()
    assert rc == 6, stderr[-2000:]
    assert took < 20, f"exit took {took:.1f} s"
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("recast: error: Prefect server") and url in last, stderr[-2000:]
    assert "Traceback" not in stderr
    runs = _runs(env)
    assert [r["status"] for r in runs] == ["failed"] and url in runs[0]["error"], runs


# --- read-only and full file systems -----------------------------------------------------------
@contextmanager
def _tmpfs(where: Path, size: str = "8m"):
    where.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (read-only and full-disk checks)")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}): no read-only or full file system to test on")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def _read_only(where: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(where)], check=True)


@pytest.mark.slow
def test_read_only_data_directory_is_exit_6_saying_read_only(tmp_path, short_plate):
    with _tmpfs(tmp_path / "ro") as mnt:
        # an empty data directory on a read-only file system
        (mnt / "data").mkdir()
        _read_only(mnt)
        env = _env(mnt / "data")
        for args in (("runs",), ("swap", "--plate", str(short_plate), "--source", str(SOURCE), "--out", str(tmp_path / "o.mp4"))):
            proc = _recast(env, *args)
            assert proc.returncode == 6, (args, proc.stderr)
            assert "read-only" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
            assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr

    with _tmpfs(tmp_path / "ro2") as mnt:
        # a data directory with data, then made read-only: listings still work, a swap says why not
        env = _env(mnt / "data")
        assert _recast(env, "runs").returncode == 0
        _read_only(mnt)
        proc = _recast(env, "runs", "--json")
        assert proc.returncode == 0 and json.loads(proc.stdout) == [], proc.stderr
        proc = _recast(env, "swap", "--plate", str(short_plate), "--source", str(SOURCE), "--out", str(tmp_path / "o.mp4"))
        assert proc.returncode == 6 and "read-only" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
        assert not (tmp_path / "o.mp4").exists()


@pytest.mark.slow
def test_full_disk_under_the_database_is_exit_6_and_the_run_ends(tmp_path, short_plate):
    with _tmpfs(tmp_path / "full", size="3m") as mnt:
        db = mnt / "recast.db"
        env = _env(tmp_path / "data", RECAST_DATABASE_URL=f"sqlite:///{db}")
        assert _recast(env, "runs").returncode == 0  # creates the database
        free_kb = os.statvfs(mnt).f_bavail * os.statvfs(mnt).f_frsize // 1024
        with open(mnt / "filler", "wb") as fh:  # leave room for the submission, not for the run
            fh.write(b"\0" * ((free_kb - 200) * 1024))
        proc = _recast(env, "swap", "--mode", "face", "--plate", str(short_plate), "--source", str(SOURCE), "--out", str(tmp_path / "o.mp4"),
                       timeout=600)
        assert proc.returncode == 6, proc.stderr[-2000:]
        last = proc.stderr.strip().splitlines()[-1]
        assert str(db) in last and "full" in last, proc.stderr[-2000:]
        assert "Traceback" not in proc.stderr
        assert not (tmp_path / "o.mp4").exists()
        statuses = [r["status"] for r in _runs(env)]
        assert statuses and "running" not in statuses, statuses


# --- the pieces, in this process ------------------------------------------------------------------
def test_sqlite_database_full_is_one_line_naming_the_file(tmp_path):
    """A real SQLITE_FULL from SQLite (the database capped at its current size) becomes
    DatabaseUnavailableError naming the file, not an OperationalError traceback."""
    from sqlalchemy import event, text

    from recast.db.session import make_engine
    from recast.errors import DatabaseUnavailableError

    path = tmp_path / "capped.db"
    engine = make_engine(f"sqlite:///{path}")
    with engine.begin() as c:
        c.execute(text("CREATE TABLE t (x BLOB)"))

    @event.listens_for(engine, "connect")
    def _cap(dbapi_conn, _record):
        cur = dbapi_conn.cursor()
        pages = cur.execute("PRAGMA page_count").fetchone()[0]
        cur.execute(f"PRAGMA max_page_count={pages}")
        cur.close()

    engine.dispose()
    with pytest.raises(DatabaseUnavailableError) as info:
        with engine.begin() as c:
            c.execute(text("INSERT INTO t VALUES (zeroblob(1000000))"))
    assert str(path) in str(info.value) and "full" in str(info.value)
    engine.dispose()


def test_environment_errors_are_exit_6_under_the_data_dir_and_3_elsewhere(recast_env, tmp_path):
    import errno

    from recast.cli.guard import EXIT_INPUT, EXIT_SERVICE, exit_code_for

    inside = OSError(errno.ENOSPC, "No space left on device", str(recast_env / "store" / "x"))
    outside = OSError(errno.EROFS, "Read-only file system", str(tmp_path / "elsewhere.mp4"))
    assert exit_code_for(inside) == EXIT_SERVICE
    assert exit_code_for(outside) == EXIT_INPUT


def _run_owned_by(host: str, pid: int, started: datetime, heartbeat: datetime | None = None, params: dict | None = None) -> str:
    from recast.contracts import ShotParams
    from recast.db import repository as repo
    from recast.db.session import session_scope
    from recast.services import shots

    _shot_id, run_id = shots.submit_local_shot(plate=str(PLATE), sources=[str(SOURCE)], params=ShotParams(**(params or {})),
                                               code=f"sweep-{uuid.uuid4().hex[:8]}")
    with session_scope() as s:
        run = repo.set_run_status(s, run_id, "running")
        run.owner_host, run.owner_pid, run.owner_started = host, pid, started
        run.heartbeat_at = heartbeat or datetime.now(timezone.utc)
    return run_id


def _status(run_id: str) -> tuple[str, str | None]:
    from recast.db import repository as repo
    from recast.db.session import session_scope

    with session_scope() as s:
        run = repo.get_run(s, run_id)
        return run.status, run.error


def test_sweep_marks_runs_of_gone_processes_crashed_and_a_rerun_supersedes_them(recast_env):
    from recast.db.migrate import ensure_schema
    from recast.services import processes, shots

    ensure_schema()
    here = socket.gethostname()
    me = processes.current_owner()
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone_started = datetime.fromtimestamp(psutil.Process(gone.pid).create_time(), timezone.utc)
    gone.wait()
    now = datetime.now(timezone.utc)

    live = _run_owned_by(here, me.pid, me.started)
    dead = _run_owned_by(here, gone.pid, gone_started)
    reused_pid = _run_owned_by(here, me.pid, me.started - timedelta(hours=1))  # same pid, another process
    remote_fresh = _run_owned_by("render-node-7", 4242, now, heartbeat=now)
    remote_silent = _run_owned_by("render-node-8", 4242, now, heartbeat=now - timedelta(hours=1))

    crashed = set(shots.sweep_crashed_runs())
    assert crashed == {dead, reused_pid, remote_silent}
    assert _status(live)[0] == "running" and _status(remote_fresh)[0] == "running"
    status, error = _status(dead)
    assert status == "crashed" and str(gone.pid) in error and here in error
    assert "no heartbeat" in _status(remote_silent)[1]

    # a rerun of the same submission that finishes supersedes the crashed runs of it
    rerun = _run_owned_by(here, me.pid, me.started)
    shots.finish_run(rerun, output_asset_id=None, summary={})
    status, error = _status(dead)
    assert status == "superseded" and rerun in error and "crashed" in error
    assert _status(live)[0] == "running"  # not crashed: left alone
