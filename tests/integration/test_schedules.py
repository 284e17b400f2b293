"""The nightly schedule fires: a real ``prefect server`` (its own PREFECT_HOME and database, its
scheduler service looking every second) creates the scheduled flow runs of the deployment that
``recast deploy --nightly-project`` registers, at 02:00 in the deployment's time zone, and a
``recast worker`` runs one.

Why: with SQLAlchemy 2.1 (which recast once allowed) Prefect 3.8.8's scheduler fails every loop
in ``_insert_scheduled_flow_runs`` ("Can't evaluate bulk DML statement") and creates no run, while
the UI still shows the schedule. Only a real server's scheduler shows that; the next dependency
bump that breaks it fails here.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest
from sqlalchemy.engine import make_url

from tests.integration.conftest_api import free_port
from tests.integration.prefect_process import BIN, PrefectServerProcess
from tests.studio_credentials import studio_credentials_env

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

PROJECT = "nightly-film"
TZ = "Asia/Tokyo"  # not UTC (so the zone is applied, not ignored) and without daylight saving time


def recast_env(server: PrefectServerProcess, data: Path, **extra: str) -> dict[str, str]:
    """What every recast command of the test runs with, the studio's credentials included
    (``recast serve`` and ``recast worker`` refuse to start without them)."""
    return server.client_env(RECAST_DATA_DIR=str(data), **studio_credentials_env(data.parent / "studio-ca"), **extra)


def ok(proc) -> str:
    assert proc.returncode == 0, f"{proc.args}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def wait_for_scheduled_runs(server: PrefectServerProcess, deployment_id: str, at_least: int, timeout_s: float = 60) -> list[dict]:
    deadline = time.monotonic() + timeout_s
    runs: list[dict] = []
    while time.monotonic() < deadline:
        runs = server.scheduled_runs(deployment_id)
        if len(runs) >= at_least:
            return runs
        time.sleep(0.5)
    errors = [line for line in server.log().splitlines() if "Error" in line or "error" in line][-10:]
    raise AssertionError(f"{len(runs)} scheduled run(s) after {timeout_s} s; the server log's errors:\n" + "\n".join(errors))


@pytest.fixture(params=["sqlite", "postgres"])
def prefect_database(request) -> str | None:
    """The Prefect server's own database: SQLite in its PREFECT_HOME, or a fresh PostgreSQL one."""
    if request.param == "sqlite":
        return None
    url = request.getfixturevalue("postgres_url")  # skipped without RECAST_TEST_POSTGRES_URL
    return make_url(url).set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)


def test_recast_deploy_schedule_creates_runs_at_0200_in_its_time_zone(tmp_path, prefect_database):
    with PrefectServerProcess(tmp_path / "prefect", database_url=prefect_database) as server:
        env = recast_env(server, tmp_path / "data")
        ok(server.run(["recast", "db", "upgrade"], env=env))
        ok(server.run(["recast", "project", "create", PROJECT, "--media", "film"], env=env))
        # deploy/README.md §4's second form: a time zone, and the swaps on the gpu pool
        ok(server.run(["recast", "deploy", "--nightly-project", PROJECT, "--nightly-timezone", TZ, "--swap-pool", "gpu"],
                      env=env, cwd=tmp_path))
        assert server.deployment("swap_shot/swap-shot")["work_pool_name"] == "gpu"

        dep = server.deployment("nightly_batch/nightly-batch")
        (schedule,) = dep["schedules"]
        assert schedule["active"] and schedule["schedule"]["cron"] == "0 2 * * *" and schedule["schedule"]["timezone"] == TZ
        runs = wait_for_scheduled_runs(server, dep["id"], at_least=3)

        now = dt.datetime.now(dt.timezone.utc)
        starts = [dt.datetime.fromisoformat(r["expected_start_time"].replace("Z", "+00:00")) for r in runs]
        local = [s.astimezone(ZoneInfo(TZ)) for s in starts]
        assert all(s > now for s in starts)
        assert {(t.hour, t.minute, t.second) for t in local} == {(2, 0, 0)}, local
        assert {t.utcoffset() for t in local} == {dt.timedelta(hours=9)}  # 17:00 UTC the day before
        assert [b - a for a, b in zip(local, local[1:])] == [dt.timedelta(days=1)] * (len(local) - 1)
        assert {r["parameters"]["project"] for r in runs} == {PROJECT}
        assert "InvalidRequestError" not in server.log()

        # what deploy/README.md tells the operator to look at
        out = ok(server.run(["prefect", "flow-run", "ls", "--flow-name", "nightly_batch", "--state-type", "SCHEDULED",
                             "--limit", "3", "-o", "json"]))
        listed = json.loads(out)
        assert len(listed) == 3 and {r["deployment_id"] for r in listed} == {dep["id"]}


def test_a_scheduled_batch_fires_on_a_worker(tmp_path):
    """Every minute instead of 02:00, so the scheduler's run comes due during the test: the
    ``recast worker`` picks it up and the batch (no queued shot) completes. The folder deployed
    from is gone by then and the worker runs elsewhere, as on another machine."""
    deployer, worker_home = tmp_path / "deploying-checkout", tmp_path / "worker-host"
    deployer.mkdir()
    worker_home.mkdir()
    with PrefectServerProcess(tmp_path / "prefect") as server:
        env = recast_env(server, tmp_path / "data", PREFECT_WORKER_QUERY_SECONDS="1")
        ok(server.run(["recast", "project", "create", PROJECT, "--media", "film"], env=env))
        ok(server.run(["recast", "deploy", "--nightly-project", PROJECT, "--nightly-cron", "* * * * *"], env=env, cwd=deployer))
        shutil.rmtree(deployer)
        log = (tmp_path / "worker.log").open("wb")
        worker = subprocess.Popen([str(BIN / "recast"), "worker", "--pool", "cpu"], env=env, cwd=worker_home,
                                  stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            dep = server.deployment("nightly_batch/nightly-batch")
            first = wait_for_scheduled_runs(server, dep["id"], at_least=1)[0]
            api_serves_a_token(server, env, tmp_path)  # meanwhile the first run comes due (< 60 s)
            deadline = time.monotonic() + 150
            state = None
            while time.monotonic() < deadline:
                state = server.get(f"/flow_runs/{first['id']}")["state"]["type"]
                if state in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
                    break
                assert worker.poll() is None, (tmp_path / "worker.log").read_text()
                time.sleep(1)
            assert state == "COMPLETED", f"{state}\n{(tmp_path / 'worker.log').read_text()[-4000:]}"
        finally:
            stop_group(worker, log)


def stop_group(proc: subprocess.Popen, log) -> None:
    """Stop a process started in its own session (and its children): SIGTERM, then SIGKILL if it
    has not ended within 20 s; close its log."""
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    log.close()


def api_serves_a_token(server: PrefectServerProcess, env: dict[str, str], tmp_path: Path) -> None:
    """deploy/README.md's last step: a token for the project, ``recast serve``, a request with it."""
    token = ok(server.run(["recast", "token", "create", "--project", PROJECT, "--name", "editorial"], env=env)).strip()
    port = free_port()
    log = (tmp_path / "serve.log").open("wb")
    api = subprocess.Popen([str(BIN / "recast"), "serve", "--host", "127.0.0.1", "--port", str(port)], env=env, cwd=tmp_path,
                           stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline, r = time.monotonic() + 90, None
        while time.monotonic() < deadline and api.poll() is None:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/v1/shots", headers={"Authorization": f"Bearer {token}"}, timeout=5)
                break
            except httpx.HTTPError:
                time.sleep(0.5)
        assert r is not None and r.status_code == 200, (r, (tmp_path / "serve.log").read_text()[-3000:])
        assert r.json()["total"] == 0
    finally:
        stop_group(api, log)
