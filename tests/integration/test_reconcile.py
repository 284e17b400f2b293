"""recast follows Prefect's terminal states for the flow runs it dispatched.

A ``swap-shot`` flow run that ends before recast's code runs (its worker cannot import the
flow, the process is killed) is ``CRASHED`` in Prefect; the run recast recorded must not stay
``queued`` for ever. The slow test makes that happen for real — a deployment whose entrypoint
cannot be imported, run by a Prefect process worker — and shows the run marked with Prefect's
reason and the next nightly batch running the shot again. The quick tests cover the rules
(which states, which runs, how many attempts) with the Prefect reads replaced.
"""

from __future__ import annotations

import time

import pytest

from tests.integration.conftest_api import SOURCE_PHOTO, WorkerThread

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


# --- for real: a Prefect server, a process worker, a flow run that crashes before recast ----------
@pytest.fixture(scope="module")
def prefect_stack(prefect_server, tmp_path_factory):
    """A fresh local data directory, the deployments registered on the session's Prefect server,
    a deployment whose entrypoint cannot be imported, and a process worker for the cpu pool."""
    from prefect.types.entrypoint import EntrypointType

    from recast.db.migrate import ensure_schema
    from recast.flows.deployments import SWAP_SHOT_FLOW, register_deployments
    from recast.flows.swap_shot import swap_shot
    from recast.settings import get_settings, reset_settings

    data = tmp_path_factory.mktemp("reconcile") / "data"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RECAST_DATA_DIR", str(data))
        mp.setenv("RECAST_CHUNK_SIZE", "20")
        for var in ("RECAST_DATABASE_URL", "RECAST_STORAGE_URL", "RECAST_S3_ENDPOINT_URL"):
            mp.delenv(var, raising=False)
        reset_settings()
        ensure_schema(get_settings())
        register_deployments()
        broken = swap_shot.to_deployment(name="swap-shot-broken", work_pool_name="cpu", entrypoint_type=EntrypointType.MODULE_PATH)
        # what a worker with an older or broken install meets: the flow cannot be imported
        broken.entrypoint = "recast.flows.no_such_module.swap_shot"
        broken.apply()
        with WorkerThread("cpu", limit=2) as worker:
            yield {"broken": f"{SWAP_SHOT_FLOW}/swap-shot-broken", "worker": worker}
        reset_settings()


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_a_flow_run_crashed_before_recast_is_marked_and_the_next_batch_runs_the_shot(prefect_stack, short_plate):
    from recast.db import queue
    from recast.db import repository as repo
    from recast.db.session import session_scope
    from recast.flows.deployments import flow_run_state, nightly_batch, start_swap_shot_run

    shot_id, run_id = _shot(PROJECT, str(short_plate))
    flow_run_id = start_swap_shot_run(shot_id, run_id, deployment=prefect_stack["broken"])
    with session_scope() as s:
        queue.set_run_flow_run(s, run_id, flow_run_id)
    deadline = time.monotonic() + 180
    while (state := flow_run_state(flow_run_id)) not in ("CRASHED", "FAILED"):
        assert prefect_stack["worker"].error is None, prefect_stack["worker"].error
        assert time.monotonic() < deadline, f"flow run {flow_run_id} still {state}"
        time.sleep(1)
    assert _run(run_id).status == "queued"  # recast's code never ran: nothing recorded the end

    result = nightly_batch(project=PROJECT, limit=5, concurrency=1, poll_seconds=1.0)
    assert result["shots"] == 1 and result["states"] == {"COMPLETED": 1}, result

    first = _run(run_id)
    # marked crashed (failed) with Prefect's reason; once the new run finished, superseded by it
    assert first.status == "superseded" and first.error.startswith(f"Prefect flow run {flow_run_id} ended {state}"), first.error
    assert "exited" in first.error  # Prefect's own message: the process exited with status 1
    with session_scope() as s:
        latest = repo.latest_run_for_shot(s, shot_id)
        assert latest.id != first.id and latest.status == "done" and latest.output_asset_id is not None, latest.error
        assert repo.get_shot(s, shot_id).status == "done"
        events = repo.list_audit_events(s, subject_type="run", subject_id=run_id, action="run.reconciled")
        assert len(events) == 1 and events[0].detail["prefect_state"] == state
        assert events[0].detail["status"] == {"CRASHED": "crashed", "FAILED": "failed"}[state]


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
