"""Fault injection: SIGKILL at random points of every stage, the object store going away and
PostgreSQL dropping its connections mid-run — and each time, a rerun of the same command
finishes with the swapped chunks of an uninterrupted run, no run left ``running``, no asset row
or stored object duplicated or orphaned, and nothing partial at ``--out``.

The loop itself (kill points, attempts, the audit of rows and objects) is
``benchmarks/faults.py``, which runs it with more kills and prints the figures.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
import uuid
from pathlib import Path

import pytest

from benchmarks.faults import (Config, audit, baseline, orphans, plan_chains, recast, run_chains, run_statuses, run_swap, stage_durations,
                               swapped_chunk_shas)
from tests.conftest import IMAGES

pytestmark = pytest.mark.slow

SOURCE = IMAGES / "deepface_img17.jpg"
KILLS = 10
SEED = 20261130


@pytest.fixture(scope="module")
def uninterrupted(short_plate, tmp_path_factory):
    """One uninterrupted run of the 40-frame plate: (its attempt, its swapped chunk sha256s)."""
    return baseline(Config(tmp_path_factory.mktemp("clean"), short_plate, SOURCE))


def _clean_audit(cfg: Config, report: dict) -> None:
    assert report["stuck"] == 0, report["statuses"]
    assert report["duplicate_assets"] == 0
    assert orphans(report) == 0, report
    assert report["out_dir"] == [cfg.out.name], report["out_dir"]


def test_sigkill_at_ten_random_points_and_a_rerun_each_time(uninterrupted, short_plate, tmp_path):
    from recast.checksums import sha256_file

    clean, expected = uninterrupted
    assert len(expected) == 4  # 40 frames at 12 per chunk
    inputs = {p: sha256_file(p) for p in (Path(short_plate), SOURCE)}
    chains = plan_chains(KILLS, SEED, stage_durations(clean), chains=2)
    assert sum(len(c) for c in chains) == KILLS
    # two data directories at once: the kills land by progress lines, so sharing the CPUs moves
    # no kill point out of its stage, and the test takes half the time
    results = run_chains(tmp_path, short_plate, SOURCE, chains, expected, parallel=2, log=lambda m: print(m, flush=True))
    problems = [f"chain {i} ({', '.join(map(str, r.points))}): {p}" for i, r in enumerate(results) for p in r.problems]
    assert problems == []
    killed = [a.killed_at.stage for r in results for a in r.attempts if a.killed_at is not None]
    # most kill points are reached (a rerun may finish before a point whose stage it reuses)
    assert len(killed) >= KILLS - 2, killed
    assert {"segment", "swap", "render"} <= set(killed), killed
    for r in results:
        statuses = r.audit["statuses"]
        # a kill late in publish can come after the run was recorded done (the process was exiting)
        assert statuses.get("done", 0) >= 1 and set(statuses) <= {"done", "superseded"}, statuses
    assert {p: sha256_file(p) for p in inputs} == inputs, "a killed run changed its plate or source photo"


# --- the object store goes away ------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_object_store_outage_mid_run_exits_6_naming_it_and_the_rerun_finishes(uninterrupted, short_plate, tmp_path, monkeypatch):
    """moto's server runs in this process, so its objects live in this process's memory: stopping
    the server (its port closed, as an S3 endpoint that went down) and starting it again on the
    same port keeps the bucket and what the first attempt stored, as a real store would."""
    import boto3
    from moto.server import ThreadedMotoServer

    from tests.integration.conftest import _AWS_ENV

    _clean, expected = uninterrupted
    for name, value in _AWS_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        bucket = f"recast-faults-{uuid.uuid4().hex[:8]}"
        boto3.session.Session().client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
        cfg = Config(tmp_path, short_plate, SOURCE, storage_url=f"s3://{bucket}/shots",
                     env_extra={**_AWS_ENV, "RECAST_S3_ENDPOINT_URL": endpoint})
        stopped: list[float] = []

        def outage() -> None:
            server.stop()
            stopped.append(time.monotonic())

        first = run_swap(cfg, on_stage={"swap": outage}, timeout=300)
        assert stopped, first.tail()
        assert first.rc == 6, first.tail()
        last = first.stderr.strip().splitlines()[-1]
        assert last.startswith("recast: error:") and f"s3://{bucket}/shots" in last and "Traceback" not in first.stderr, first.tail()
        assert not cfg.out.exists()
        statuses = run_statuses(cfg)  # the database only: listing the store would fail now
        assert statuses == {"failed": 1}, statuses

        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
        rerun = run_swap(cfg, timeout=300)
        assert rerun.rc == 0, rerun.tail()
        assert swapped_chunk_shas(cfg, rerun.summary["run_id"]) == expected
        report = audit(cfg)
        _clean_audit(cfg, report)
        assert report["statuses"] == {"failed": 1, "done": 1}, report["statuses"]
    finally:
        with contextlib.suppress(Exception):  # already stopped when the outage's checks failed
            server.stop()


# --- PostgreSQL drops the run's connections --------------------------------------------------------
def test_postgres_connections_terminated_mid_run_the_run_survives_or_the_rerun_finishes(uninterrupted, short_plate, tmp_path):
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    admin = os.environ.get("RECAST_TEST_POSTGRES_URL")
    if not admin:
        pytest.skip("RECAST_TEST_POSTGRES_URL is not set: no PostgreSQL server whose connections to terminate (CI sets it)")
    _clean, expected = uninterrupted
    name = f"recast_faults_{uuid.uuid4().hex[:10]}"
    engine = create_engine(admin, isolation_level="AUTOCOMMIT")
    with engine.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        cfg = Config(tmp_path, short_plate, SOURCE, database_url=make_url(admin).set(database=name).render_as_string(hide_password=False))
        upgraded = recast(cfg, "db", "upgrade")
        assert upgraded.returncode == 0, upgraded.stderr
        terminated: list[int] = []

        def outage() -> None:
            with engine.connect() as c:
                terminated.extend(c.execute(text("SELECT pid FROM pg_stat_activity WHERE datname = :d AND pid <> pg_backend_pid()"),
                                            {"d": name}).scalars())
                c.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :d AND pid <> pg_backend_pid()"),
                          {"d": name})

        first = run_swap(cfg, on_stage={"swap": outage}, timeout=300)
        assert terminated, f"no connection of the run to terminate: {first.tail()}"
        assert first.rc in (0, 6), first.tail()
        print(f"{len(terminated)} connections terminated at the swap stage: the run {'survived' if first.rc == 0 else 'ended with exit 6'}")
        if first.rc == 6:
            last = first.stderr.strip().splitlines()[-1]
            assert last.startswith("recast: error:") and "Traceback" not in first.stderr, first.tail()
            assert not cfg.out.exists()
        final = first if first.rc == 0 else run_swap(cfg, timeout=300)
        assert final.rc == 0, final.tail()
        assert swapped_chunk_shas(cfg, final.summary["run_id"]) == expected
        _clean_audit(cfg, audit(cfg))
    finally:
        from recast.db.session import dispose_engines

        dispose_engines()
        with engine.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        engine.dispose()



def test_a_run_the_command_line_submitted_is_owned_at_once_so_a_kill_before_its_flow_starts_shows_crashed(recast_env, short_plate):
    """A kill between the submission and the flow's start (the Prefect flow run being created)
    left the run ``queued`` for ever: no owner was recorded until the flow started."""
    import subprocess
    import sys

    import psutil
    from sqlalchemy import update

    from recast.contracts import ShotParams
    from recast.db import repository as repo
    from recast.db.orm import Run
    from recast.db.session import session_scope
    from recast.services import processes, shots

    _shot, run_id = shots.submit_local_shot(plate=str(short_plate), sources=[str(SOURCE)], params=ShotParams(), validated=True,
                                              run_here=True)
    me = processes.current_owner()
    with session_scope() as s:
        run = repo.get_run(s, run_id)
        assert (run.status, run.owner_host, run.owner_pid) == ("queued", me.host, me.pid)
    assert run_id not in shots.sweep_crashed_runs()  # its process is alive: still queued

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    from datetime import datetime, timezone

    started = datetime.fromtimestamp(psutil.Process(gone.pid).create_time(), timezone.utc)
    gone.wait()
    with session_scope() as s:
        s.execute(update(Run).where(Run.id == repo.as_uuid(run_id, "run")).values(owner_pid=gone.pid, owner_started=started))
    assert shots.sweep_crashed_runs() == [run_id]
    with session_scope() as s:
        assert repo.get_run(s, run_id).status == "crashed"
