"""The one review path (recast.services.review.submit_decision) on a shot whose latest run is not
paused in Prefect, against SQLite: what each decision writes and returns. The resume of a paused
run is Prefect's; only that call is stubbed, to see that nothing is recorded here then."""

from __future__ import annotations

import uuid

import pytest

from recast.contracts import ShotParams
from recast.errors import RecordNotFoundError, UsageError


@pytest.fixture()
def review_env(recast_env):
    """A fresh data directory whose SQLite database is at head."""
    from recast.db.migrate import ensure_schema
    from recast.db.session import dispose_engines

    ensure_schema()
    yield recast_env
    dispose_engines()


def rendered_shot(status: str = "done", flow_run_id: str | None = None) -> tuple[str, str, str]:
    """A shot (code sh010) with one run that rendered one deliverable, not approved (verdict
    review); returns (shot id, run id, render id)."""
    from recast.db import repository as repo
    from recast.db import trust as trust_repo
    from recast.db.session import session_scope

    with session_scope() as s:
        project = repo.get_or_create_project(s, f"p-{uuid.uuid4().hex[:8]}", media_type="film")
        shot = repo.create_shot(s, project_id=project.id, code="sh010", plate_asset_id=None,
                                params=ShotParams(mode="face", backend="classic"), source_asset_ids=[])
        run = repo.create_run(s, shot.id)
        asset = repo.register_asset(s, uri=f"file:///store/{uuid.uuid4().hex}.mp4", sha256=uuid.uuid4().hex * 2, size=10,
                                    media_type="video/mp4", role="render")
        render = trust_repo.create_render(s, render_id=trust_repo.new_render_id(), run_id=run.id, asset_id=asset.id, approved=False,
                                          watermark_payload=None, consent_id=None, signed=False)
        repo.set_run_status(s, run.id, status, prefect_flow_run_id=flow_run_id)
        return str(shot.id), str(run.id), str(render.id)


def state(run_id: str, render_id: str) -> dict:
    from sqlalchemy import select

    from recast.db import repository as repo
    from recast.db.orm import Run
    from recast.db import trust as trust_repo
    from recast.db.session import session_scope

    with session_scope() as s:
        run = repo.get_run(s, run_id)
        shot = repo.get_shot(s, run.shot_id)
        return {
            "run_status": run.status, "run_error": run.error, "approved": trust_repo.get_render(s, render_id).approved,
            "reviews": [(r.decision, r.reviewer, r.note) for r in repo.reviews_for_run(s, run_id)],
            "run_events": [e.action for e in repo.list_audit_events(s, subject_type="run", subject_id=run_id)],
            "shot_events": [e.detail for e in repo.list_audit_events(s, subject_type="shot", subject_id=shot.id, action="shot.reviewed")],
            "shot_params": dict(shot.params or {}),
            "runs": [(str(r.id), r.status) for r in s.scalars(select(Run).where(Run.shot_id == shot.id))],
        }


def no_rerun(shot_id: str, run_id: str):
    raise AssertionError("a re-run was started for a decision that is not rerun")


def test_approve_records_the_decision_and_approves_the_deliverables(review_env):
    from recast.services.review import submit_decision

    shot_id, run_id, render_id = rendered_shot()
    out = submit_decision("sh010", "approve", reviewer=" ana ", note="fine", via="cli", start_rerun=no_rerun)

    assert (out.shot_id, out.run_id, out.decision, out.reviewer, out.note) == (shot_id, run_id, "approve", "ana", "fine")
    assert out.run_status == "done" and out.resumed_flow_run is None and out.new_run_id is None
    assert out.message == f"run {run_id}: 1 deliverable(s) approved"
    after = state(run_id, render_id)
    assert after["approved"] is True and after["run_status"] == "done"
    assert after["reviews"] == [("approve", "ana", "fine")]
    assert "review.approve" in after["run_events"]
    (event,) = after["shot_events"]
    assert event["via"] == "cli" and event["review_id"] == out.review_id and event["resumed_flow_run"] is None


def test_reject_withdraws_the_deliverables_and_ends_the_run_rejected(review_env):
    from recast.services.review import submit_decision

    _, run_id, render_id = rendered_shot()
    with_approval = submit_decision("sh010", "approve", reviewer="ana", via="api", start_rerun=no_rerun)
    assert state(run_id, render_id)["approved"] is True

    out = submit_decision("sh010", "reject", reviewer="bo", note="wrong eyes", via="api", start_rerun=no_rerun)
    assert out.run_status == "rejected" and out.review_id not in (None, with_approval.review_id)
    assert out.message == f"run {run_id} rejected; its deliverables are not approved"
    after = state(run_id, render_id)
    assert after["approved"] is False and after["run_status"] == "rejected"
    assert after["run_error"] == "rejected in review by bo: wrong eyes"
    assert after["reviews"] == [("approve", "ana", None), ("reject", "bo", "wrong eyes")]


def test_rerun_changes_the_parameters_and_hands_a_new_run_to_the_caller(review_env):
    from recast.services.review import submit_decision

    shot_id, run_id, render_id = rendered_shot()
    started = []

    def start(shot: str, new_run: str):
        started.append((shot, new_run))
        return {"qc": {"verdict": "pass"}}  # as the CLI's, which runs it to the end

    out = submit_decision("sh010", "rerun", reviewer="ana", params={"expression": "neutral"}, via="cli", start_rerun=start)

    assert started == [(shot_id, out.new_run_id)] and out.new_run_id != run_id
    assert out.summary == {"qc": {"verdict": "pass"}} and out.message == f"re-ran as run {out.new_run_id}: verdict pass"
    assert out.as_dict()["new_run_id"] == out.new_run_id
    after = state(run_id, render_id)
    assert after["shot_params"]["expression"] == "neutral" and after["shot_params"]["mode"] == "face"
    assert after["run_status"] == "rejected" and after["run_error"].startswith(f"superseded by run {out.new_run_id}")
    assert dict(after["runs"])[out.new_run_id] == "queued"
    assert after["reviews"] == [("rerun", "ana", None)]


def test_a_paused_run_is_resumed_and_the_flow_records_the_decision(review_env, monkeypatch):
    from recast.services import review

    _, run_id, render_id = rendered_shot(status="awaiting_review", flow_run_id="11111111-2222-3333-4444-555555555555")
    resumed = []
    monkeypatch.setattr(review, "_resume_if_paused", lambda flow_run_id, *args: resumed.append((flow_run_id, *args)) or True)

    out = review.submit_decision("sh010", "approve", reviewer="ana", via="api", start_rerun=no_rerun)

    assert resumed == [("11111111-2222-3333-4444-555555555555", "approve", "", "ana", None)]
    assert out.resumed_flow_run == "11111111-2222-3333-4444-555555555555" and out.review_id is None
    after = state(run_id, render_id)
    assert after["reviews"] == [] and after["approved"] is False  # the resumed flow records and approves
    (event,) = after["shot_events"]
    assert event["resumed_flow_run"] == "11111111-2222-3333-4444-555555555555"


@pytest.mark.parametrize(("decision", "params", "error"), [
    ("maybe", None, "decision 'maybe': choose from approve, reject, rerun"),
    ("approve", {"expression": "neutral"}, "go with a rerun decision"),
    ("rerun", {"plate": "/elsewhere.mp4"}, "a re-run cannot change plate"),
    ("rerun", {"expression": "grin"}, "expression 'grin'"),
])
def test_a_bad_decision_is_refused_before_anything_is_written(review_env, decision, params, error):
    from recast.services.review import submit_decision

    _, run_id, render_id = rendered_shot()
    before = state(run_id, render_id)
    with pytest.raises(UsageError, match=error):
        submit_decision("sh010", decision, reviewer="ana", params=params, via="cli", start_rerun=no_rerun)
    assert state(run_id, render_id) == before


def test_a_shot_without_a_run_has_nothing_to_review(review_env):
    from recast.db import repository as repo
    from recast.db.session import session_scope
    from recast.services.review import submit_decision

    with session_scope() as s:
        project = repo.get_or_create_project(s, "p-empty", media_type="film")
        repo.create_shot(s, project_id=project.id, code="sh020", plate_asset_id=None, params=ShotParams(mode="face"), source_asset_ids=[])
    with pytest.raises(RecordNotFoundError, match="shot sh020 has no run to review"):
        submit_decision("sh020", "approve", reviewer="ana", via="cli", start_rerun=no_rerun)
