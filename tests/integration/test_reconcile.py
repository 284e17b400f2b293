"""recast follows Prefect's terminal states for the flow runs it dispatched.

A ``swap-shot`` flow run that ends before recast's code runs (its worker cannot import the
flow, the process is killed) is ``CRASHED`` in Prefect; the run recast recorded must not stay
``queued`` for ever. The slow test makes that happen for real — a ``prefect server``, ``recast worker`` and
``recast serve`` started as an operator would, a ``swap-shot`` deployment whose entrypoint cannot
be imported — and shows the run marked with Prefect's reason, a retried POST with the same
Idempotency-Key starting the shot again, and the next nightly batch running another. The quick tests cover the rules
(which states, which runs, how many attempts) with the Prefect reads replaced.
"""

from __future__ import annotations

import time

import pytest

from tests.integration.conftest_api import SOURCE_PHOTO

PROJECT = "reconcile-test"


def _shot(project: str, plate: str) -> tuple[str, str]:
    from recast.contracts import ShotParams
    from recast.db import repository as repo
    from recast.db.migrate import ensure_schema
    from recast.db.session import session_scope
    from recast.services.shots import submit_local_shot

    ensure_schema()
    with session_scope() as s:
        repo.get_or_create_project(s, project, consent_required=False)
    return submit_local_shot(plate=plate, sources=[str(SOURCE_PHOTO)], params=ShotParams(mode="face"), project=project,
                             code=f"sh{time.monotonic_ns() % 10**6:06d}", validated=True)


def _run(run_id: str):
    from recast.db import repository as repo
    from recast.db.session import session_scope

    with session_scope() as s:
        r = repo.get_run(s, run_id)
        s.expunge(r)
        return r


# --- the rules, without a Prefect server --------------------------------------------------------
@pytest.fixture()
def queued(recast_env, short_plate):
    """A shot of a project with a queued run that a (pretend) flow run was started for."""
    from recast.db import queue
    from recast.db.session import session_scope

    shot_id, run_id = _shot(PROJECT, str(short_plate))
    with session_scope() as s:
        queue.set_run_flow_run(s, run_id, "00000000-0000-4000-8000-000000000001")
    return shot_id, run_id


def _project_id() -> str:
    from recast.db import repository as repo
    from recast.db.session import session_scope

    with session_scope() as s:
        return str(repo.find_project(s, PROJECT).id)


def test_a_crashed_flow_run_marks_the_run_and_the_batch_queues_the_shot_again(queued):
    from recast.db import queue
    from recast.db import repository as repo
    from recast.db.session import session_scope
    from recast.services import dispatch

    shot_id, run_id = queued
    pid = _project_id()
    # still scheduled in Prefect: nothing changes, and the batch leaves it to its worker
    assert dispatch.reconcile_dispatched_runs(read_states=lambda ids: {i: ("SCHEDULED", "") for i in ids}) == []
    assert _run(run_id).status == "queued"
    with session_scope() as s:
        assert queue.shots_awaiting_start(s, project_id=pid) == []

    crashed = lambda ids: {i: ("CRASHED", "Flow run infrastructure exited with non-zero status code 1.") for i in ids}  # noqa: E731
    got = dispatch.reconcile_dispatched_runs(project_id=pid, read_states=crashed)
    assert [(r.run_id, r.status, r.prefect_state) for r in got] == [(run_id, "crashed", "CRASHED")]
    run = _run(run_id)
    assert run.status == "crashed" and "non-zero status code 1" in run.error and dispatch.retriable(run)
    with session_scope() as s:
        assert repo.get_shot(s, shot_id).status == "crashed"
    assert dispatch.reconcile_dispatched_runs(read_states=crashed) == []  # marked once

    # the batch queues a new run of the shot and picks it up; after MAX_DISPATCH_ATTEMPTS such
    # ends it stops (a shot that crashes its worker every time must not loop for ever)
    for attempt in range(1, dispatch.MAX_DISPATCH_ATTEMPTS):
        again = dispatch.requeue_ended_runs(project_id=pid)
        assert len(again) == 1 and again[0][0] == shot_id and again[0][1] != run_id
        with session_scope() as s:
            assert queue.shots_awaiting_start(s, project_id=pid) == [again[0]]
            queue.set_run_flow_run(s, again[0][1], f"00000000-0000-4000-8000-00000000000{attempt + 1}")
        assert [r.run_id for r in dispatch.reconcile_dispatched_runs(read_states=crashed)] == [again[0][1]]
    assert dispatch.requeue_ended_runs(project_id=pid) == []


def test_cancelled_in_prefect_is_cancelled_not_retried_and_recorded_outcomes_are_kept(queued, short_plate):
    from recast.db import repository as repo
    from recast.db.session import session_scope
    from recast.services import dispatch

    _, run_id = queued
    got = dispatch.reconcile_dispatched_runs(read_states=lambda ids: {i: ("CANCELLED", "cancelled in the UI") for i in ids})
    assert [r.status for r in got] == ["cancelled"]
    run = _run(run_id)
    assert run.status == "cancelled" and "cancelled in the UI" in run.error and not dispatch.retriable(run)
    assert dispatch.requeue_ended_runs(project_id=_project_id()) == []

    # a run whose flow recorded its own failure keeps recast's error (no Prefect read changes it)
    _, other = _shot(PROJECT, str(short_plate))
    with session_scope() as s:
        repo.set_run_status(s, other, "failed", error="plate 'x': no face found in any of its 40 frames",
                            prefect_flow_run_id="00000000-0000-4000-8000-0000000000ff")
    assert dispatch.reconcile_dispatched_runs(read_states=lambda ids: {i: ("FAILED", "boom") for i in ids}) == []
    assert not dispatch.retriable(_run(other)) and dispatch.requeue_ended_runs(project_id=_project_id()) == []


# --- for real: `prefect server`, `recast worker`, `recast serve`, flow runs that crash before recast -
def _wait_for_flow_run(server, flow_run_id: str, ends: tuple[str, ...], worker, worker_log, timeout_s: float = 180) -> str:
    """The flow run's state type once it is one of ``ends`` (the worker must stay up meanwhile)."""
    deadline = time.monotonic() + timeout_s
    while (state := server.get(f"/flow_runs/{flow_run_id}")["state"]["type"]) not in ends:
        assert worker.poll() is None, worker_log.read_text()[-4000:]
        assert time.monotonic() < deadline, f"flow run {flow_run_id} still {state}\n{worker_log.read_text()[-4000:]}"
        time.sleep(1)
    return state


def _post_shot(api: str, token: str, plate, key: str):
    import httpx

    with open(plate, "rb") as video, open(SOURCE_PHOTO, "rb") as photo:
        return httpx.post(f"{api}/v1/shots", headers={"Authorization": f"Bearer {token}", "Idempotency-Key": key},
                          data={"mode": "face"}, files={"plate": ("plate.mp4", video, "video/mp4"),
                                                        "sources": ("actor.jpg", photo, "image/jpeg")}, timeout=60)


def _serve(env: dict, cwd, log_path):
    """``recast serve`` on a free loopback port; its URL once it answers."""
    import subprocess

    import httpx

    from tests.integration.conftest_api import free_port
    from tests.integration.prefect_process import BIN

    port = free_port()
    log = log_path.open("wb")
    proc = subprocess.Popen([str(BIN / "recast"), "serve", "--host", "127.0.0.1", "--port", str(port)], env=env, cwd=cwd,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 90
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            httpx.get(f"{url}/openapi.json", timeout=5)
            return proc, log, url
        except httpx.HTTPError:
            time.sleep(0.5)
    return proc, log, None


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_flow_runs_crashed_before_recast_are_restarted_by_a_retried_post_and_by_the_next_batch(tmp_path, short_plate, monkeypatch):
    """A real ``prefect server`` and ``recast worker --pool cpu`` and ``recast serve`` as
    subprocesses. The ``swap-shot`` deployment's entrypoint is made unimportable (what a worker
    with an older or broken install meets), so the flow runs of two submitted shots crash before
    any recast code runs. A retried POST with the same Idempotency-Key starts a new run of its
    shot; after ``recast deploy`` repairs the deployment, the next nightly batch runs the other."""
    import subprocess

    import httpx

    from recast.db import repository as repo
    from recast.db.session import session_scope
    from recast.settings import reset_settings
    from tests.integration.prefect_process import BIN, PrefectServerProcess
    from tests.integration.test_schedules import ok, stop_group
    from tests.studio_credentials import studio_credentials_env

    data, elsewhere = tmp_path / "data", tmp_path / "worker-host"
    elsewhere.mkdir()
    # this process reads the same recast database as the subprocesses (SQLite in the data directory)
    monkeypatch.setenv("RECAST_DATA_DIR", str(data))
    for var in ("RECAST_DATABASE_URL", "RECAST_STORAGE_URL", "RECAST_S3_ENDPOINT_URL"):
        monkeypatch.delenv(var, raising=False)
    reset_settings()
    with PrefectServerProcess(tmp_path / "prefect") as server:
        env = server.client_env(RECAST_DATA_DIR=str(data), RECAST_CHUNK_SIZE="20", PREFECT_WORKER_QUERY_SECONDS="1",
                                **studio_credentials_env(tmp_path / "studio-ca"))
        for project in (PROJECT, f"{PROJECT}-api"):
            ok(server.run(["recast", "project", "create", project, "--no-consent-required"], env=env))
        ok(server.run(["recast", "deploy"], env=env, cwd=tmp_path))
        swap = server.deployment("swap_shot/swap-shot")
        r = httpx.patch(f"{server.api_url}/deployments/{swap['id']}", json={"entrypoint": "recast.flows.no_such_module.swap_shot"}, timeout=10)
        assert r.status_code < 300 and server.deployment("swap_shot/swap-shot")["entrypoint"].startswith("recast.flows.no_such"), r.text
        batch_token = ok(server.run(["recast", "token", "create", "--project", PROJECT], env=env)).strip()
        api_token = ok(server.run(["recast", "token", "create", "--project", f"{PROJECT}-api"], env=env)).strip()

        worker_log = tmp_path / "worker.log"
        wlog = worker_log.open("wb")
        worker = subprocess.Popen([str(BIN / "recast"), "worker", "--pool", "cpu"], env=env, cwd=elsewhere,
                                  stdout=wlog, stderr=subprocess.STDOUT, start_new_session=True)
        api, alog, url = _serve(env, tmp_path, tmp_path / "serve.log")
        try:
            assert url is not None, (tmp_path / "serve.log").read_text()[-3000:]
            first = _post_shot(url, api_token, short_plate, "retry-me")
            other = _post_shot(url, batch_token, short_plate, "batch-me")
            assert first.status_code == other.status_code == 201, (first.text, other.text)
            shot_id, run_id, flow_run_id = first.json()["id"], first.json()["run"]["id"], first.json()["run"]["prefect_flow_run_id"]
            batch_shot, batch_run = other.json()["id"], other.json()["run"]["id"]
            batch_flow_run = other.json()["run"]["prefect_flow_run_id"]
            ends = ("CRASHED", "FAILED")
            state = _wait_for_flow_run(server, flow_run_id, ends, worker, worker_log)
            _wait_for_flow_run(server, batch_flow_run, ends, worker, worker_log)
            assert _run(run_id).status == "queued"  # recast's code never ran: nothing recorded the end

            # the client retries (same key, same body): the crashed run is marked, a new one starts
            again = _post_shot(url, api_token, short_plate, "retry-me")
            assert again.status_code == 200, again.text
            body = again.json()
            assert body["id"] == shot_id and body["status"] == "queued", body
            assert body["run"]["id"] != run_id and body["run"]["prefect_flow_run_id"] not in (None, flow_run_id), body
            marked = _run(run_id)
            assert marked.status == "crashed" and marked.error.startswith(f"Prefect flow run {flow_run_id} ended {state}"), marked.error
            # the deployment is still broken: the new run crashes too, before the repair below
            _wait_for_flow_run(server, body["run"]["prefect_flow_run_id"], ends, worker, worker_log)

            # the operator repairs the deployment; the next batch runs the other project's shot again
            ok(server.run(["recast", "deploy"], env=env, cwd=tmp_path))
            nightly = server.deployment("nightly_batch/nightly-batch")
            fr = server.post(f"/deployments/{nightly['id']}/create_flow_run",
                             {"parameters": {"project": PROJECT, "limit": 5, "concurrency": 1, "poll_seconds": 1.0}})
            assert _wait_for_flow_run(server, fr["id"], ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"), worker, worker_log,
                                      timeout_s=420) == "COMPLETED", worker_log.read_text()[-4000:]
        finally:
            stop_group(api, alog)
            stop_group(worker, wlog)

    first_run = _run(batch_run)
    # marked with Prefect's reason; once the new run finished, superseded by it
    assert first_run.status == "superseded" and first_run.error.startswith(f"Prefect flow run {batch_flow_run} ended"), first_run.error
    assert "exited" in first_run.error  # Prefect's own message: the process exited with status 1
    with session_scope() as s:
        latest = repo.latest_run_for_shot(s, batch_shot)
        assert latest.id != first_run.id and latest.status == "done" and latest.output_asset_id is not None, latest.error
        assert repo.get_shot(s, batch_shot).status == "done"
        events = repo.list_audit_events(s, subject_type="run", subject_id=batch_run, action="run.reconciled")
        assert len(events) == 1 and events[0].detail["prefect_state"] in ends
    reset_settings()


def test_a_retry_with_the_same_idempotency_key_restarts_a_shot_whose_flow_run_crashed(queued, monkeypatch):
    """The API's answer to a retried submission (and to a read) follows Prefect: the crashed run
    is marked with Prefect's reason and a new run of the same shot is started."""
    from recast.api import service
    from recast.api.auth import Principal
    from recast.services import dispatch
    from recast.settings import get_settings

    shot_id, run_id = queued
    states = {"00000000-0000-4000-8000-000000000001": ("CRASHED", "Process exited with status code: 1.")}
    monkeypatch.setattr(dispatch, "read_prefect_states", lambda ids: {i: states[i] for i in ids if i in states})
    started: list[tuple[str, str]] = []

    def start_run(shot: str, run: str, **kwargs) -> str:
        started.append((shot, run))
        return "00000000-0000-4000-8000-0000000000aa"

    ctx = service.ApiContext(settings=get_settings(), start_run=start_run, cancel_run=lambda fr: None, allowed_buckets=frozenset())
    who = Principal(token_id="t", token_name="test", token_prefix="rct_x", project_id=_project_id(), project_name=PROJECT)

    seen = service.shot_detail(ctx, who, shot_id, issue_links=False)  # a read marks it
    assert seen["status"] == "crashed" and seen["run"]["error"].startswith("Prefect flow run ") and "status code: 1" in seen["run"]["error"]
    assert started == []

    again = service._replay(ctx, who, shot_id, "any")  # the retried POST with the same key
    assert len(started) == 1 and started[0][0] == shot_id and started[0][1] != run_id
    assert again["run"]["id"] == started[0][1] and again["status"] == "queued"
    assert again["run"]["prefect_flow_run_id"] == "00000000-0000-4000-8000-0000000000aa"
    assert _run(run_id).status == "crashed"
    service._replay(ctx, who, shot_id, "any")  # a second retry: the new run is live, nothing restarts
    assert len(started) == 1
