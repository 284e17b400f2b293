"""QC review: a run waiting for a supervisor, the decision and who made it, approval of
deliverables, rejection and re-runs — and :func:`submit_decision`, the one way a decision reaches
a shot, whoever sends it (``recast review``, ``POST /v1/shots/{id}/review``).

A run paused for review in Prefect (:mod:`recast.flows.review`) is resumed with the decision as
its run input; the flow records it (:func:`record_decision`) and renders, ends or re-runs. The
Prefect UI's form resumes the same pause, so the decision is recorded in one place, once. A shot
whose latest run is not paused (it rendered already, with verdict ``review`` or any other) gets
the decision applied here: recorded, its deliverables approved or withdrawn, or a re-run started.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from recast.contracts import ShotParams
from recast.db import repository as repo
from recast.db import review as review_repo
from recast.db.session import session_scope
from recast.errors import RecordNotFoundError, ServiceUnavailableError, UsageError
from recast.services.shots import check_shot_params

DECISIONS = ("approve", "reject", "rerun")
# a run marked awaiting_review pauses in Prefect a moment later: a decision sent in between waits
# this long for the pause instead of being applied to a run that is about to stop for it
PAUSE_WAIT_S = 15.0

# (shot id, new run id) -> the new run's summary when it ran to the end here, None when it was
# only started (e.g. as a deployment run that a worker picks up)
StartRerun = Callable[[str, str], "dict[str, Any] | None"]


@dataclass(frozen=True)
class ReviewOutcome:
    """What became of a decision: resumed a paused flow run, or applied to the latest run here."""

    shot_id: str
    run_id: str
    decision: str
    reviewer: str
    note: str
    message: str
    at: datetime
    run_status: str
    resumed_flow_run: str | None = None  # the paused flow run that was resumed (it records the decision)
    review_id: str | None = None  # the review row, when the decision was recorded here
    new_run_id: str | None = None
    summary: dict[str, Any] | None = field(default=None, repr=False)

    def as_dict(self) -> dict[str, Any]:
        """The ``recast review --json`` object."""
        out: dict[str, Any] = {"shot_id": self.shot_id, "run_id": self.run_id, "decision": self.decision, "reviewer": self.reviewer,
                               "note": self.note}
        if self.resumed_flow_run is not None:
            out["resumed_flow_run"] = self.resumed_flow_run
        if self.new_run_id is not None:
            out["new_run_id"] = self.new_run_id
            out["summary"] = self.summary
        out["message"] = self.message
        return out


def mark_awaiting_review(run_id: str, *, verdict: str, reasons: list[str] | tuple[str, ...]) -> None:
    """The run stops for a supervisor: status ``awaiting_review`` and an audit event."""
    with session_scope() as s:
        repo.set_run_status(s, run_id, "awaiting_review")
        repo.add_audit_event(s, actor="recast", action="review.requested", subject_type="run", subject_id=run_id,
                             detail={"verdict": verdict, "reasons": list(reasons)})


def record_decision(run_id: str, *, decision: str, reviewer: str, note: str, params: dict[str, Any] | None, via: str) -> str:
    """Store a supervisor's decision on a run (review row + audit event); returns the review id."""
    reviewer = reviewer.strip() or "unknown"
    with session_scope() as s:
        row = repo.record_review(s, run_id=run_id, decision=decision, reviewer=reviewer, note=note or None)
        repo.add_audit_event(s, actor=reviewer, action=f"review.{decision}", subject_type="run", subject_id=run_id,
                             detail={"note": note, "params": params, "via": via, "review_id": str(row.id)})
        if decision != "reject":
            repo.set_run_status(s, run_id, "running")
        return str(row.id)


def approve_renders(run_id: str, approved: bool = True) -> int:
    """Mark the run's deliverables approved (after a supervisor's approval); returns how many."""
    with session_scope() as s:
        return len(review_repo.set_run_renders_approved(s, run_id, approved))


def reject_run(run_id: str, *, reason: str, summary: dict[str, Any] | None = None) -> None:
    """End a run as ``rejected`` (nothing rendered, or its deliverables withdrawn from approval)."""
    with session_scope() as s:
        review_repo.set_run_renders_approved(s, run_id, False)
        repo.set_run_status(s, run_id, "rejected", error=reason, summary=summary)


def _rerun_params(shot: Any, changes: dict[str, Any]) -> ShotParams:
    """The shot's parameters with a re-run's changes, validated (UsageError naming the change)."""
    bad = {"plate", "sources"} & set(changes)
    if bad:
        raise UsageError(f"a re-run cannot change {', '.join(sorted(bad))}: submit a new shot")
    current = {k: v for k, v in dict(shot.params or {}).items() if k not in ("plate", "sources")}
    try:
        params = ShotParams.model_validate({**current, **changes})
    except Exception as exc:
        raise UsageError(f"re-run parameters {changes}: {str(exc).splitlines()[0]} ({exc})") from None
    check_shot_params(params)
    return params


def prepare_rerun(shot_id: str, changes: dict[str, Any] | None) -> tuple[str, dict[str, Any]]:
    """Apply a re-run's parameter changes to the shot (validated as ShotParams) and queue a new
    run of it; returns (new run id, the shot's parameters)."""
    changes = dict(changes or {})
    with session_scope() as s:
        params = _rerun_params(repo.get_shot(s, shot_id), changes)
        review_repo.update_shot_params(s, shot_id, params.model_dump(mode="json"))
        run = repo.create_run(s, shot_id, params=params.model_dump(mode="json"))
        repo.add_audit_event(s, actor="recast", action="run.rerun", subject_type="shot", subject_id=shot_id,
                             detail={"run_id": str(run.id), "changes": changes})
        return str(run.id), params.model_dump(mode="json")


def submit_decision(shot_ref: str, decision: str, *, reviewer: str, note: str = "", params: dict[str, Any] | None = None,
                    via: str, actor: str | None = None, start_rerun: StartRerun) -> ReviewOutcome:
    """A supervisor's decision on a shot (id or code), applied to its latest run.

    Checked first: the decision is one of :data:`DECISIONS`, ``params`` go with ``rerun`` only and
    are valid shot parameters, the shot has a run. Then, when that run is paused for review in
    Prefect, it is resumed with the decision (the flow records it and renders, ends or re-runs
    there). Otherwise the decision is recorded on the run here: ``approve`` approves its
    deliverables (the run is ``done`` once it has one), ``reject`` withdraws them and ends the run
    ``rejected``, ``rerun`` changes the shot's parameters, queues a new run and hands it to
    ``start_rerun`` (the CLI runs it to the end, the API starts a deployment run); the old run
    ends ``rejected``, superseded. ``via`` (``cli``, ``api``) and ``actor`` go to the audit trail.
    """
    if decision not in DECISIONS:
        raise UsageError(f"decision {decision!r}: choose from {', '.join(DECISIONS)}")
    if params and decision != "rerun":
        raise UsageError(f"parameters {params} go with a rerun decision, not {decision!r}")
    reviewer = (reviewer or "").strip() or "unknown"
    note = note or ""
    with session_scope() as s:
        shot = review_repo.find_shot_by_ref(s, shot_ref)
        run = repo.latest_run_for_shot(s, shot.id)
        if run is None:
            raise RecordNotFoundError(f"shot {shot.code} has no run to review")
        if decision == "rerun":
            _rerun_params(shot, dict(params or {}))  # refused before anything is resumed or written
        shot_id, run_id, status, flow_run_id = str(shot.id), str(run.id), run.status, run.prefect_flow_run_id
    outcome = _apply(shot_id, run_id, status, flow_run_id, decision, reviewer=reviewer, note=note, params=params, via=via,
                     start_rerun=start_rerun)
    with session_scope() as s:  # who sent it and how, whether the flow or this function records the decision
        repo.add_audit_event(s, actor=actor or reviewer, action="shot.reviewed", subject_type="shot", subject_id=shot_id,
                             detail={"run_id": run_id, "decision": decision, "reviewer": reviewer, "note": note, "params": params,
                                     "via": via, "resumed_flow_run": outcome.resumed_flow_run, "review_id": outcome.review_id,
                                     "new_run_id": outcome.new_run_id})
    return outcome


def _apply(shot_id: str, run_id: str, status: str, flow_run_id: str | None, decision: str, *, reviewer: str, note: str,
           params: dict[str, Any] | None, via: str, start_rerun: StartRerun) -> ReviewOutcome:
    base = dict(shot_id=shot_id, run_id=run_id, decision=decision, reviewer=reviewer, note=note, at=datetime.now(timezone.utc))
    if status == "awaiting_review" and flow_run_id and _resume_if_paused(flow_run_id, decision, note, reviewer, params):
        return ReviewOutcome(**base, run_status="running", resumed_flow_run=flow_run_id,
                             message=f"resumed paused flow run {flow_run_id} of run {run_id}")

    review_id = record_decision(run_id, decision=decision, reviewer=reviewer, note=note, params=params, via=via)
    if decision == "approve":
        n = approve_renders(run_id, True)
        with session_scope() as s:
            final = repo.set_run_status(s, run_id, "done" if n else status).status
        return ReviewOutcome(**base, run_status=final, review_id=review_id, message=f"run {run_id}: {n} deliverable(s) approved")
    if decision == "reject":
        reject_run(run_id, reason=f"rejected in review by {reviewer}" + (f": {note}" if note else ""))
        return ReviewOutcome(**base, run_status="rejected", review_id=review_id,
                             message=f"run {run_id} rejected; its deliverables are not approved")
    # a re-run without a paused flow: a new run of the shot, stages reused from the cache
    new_run, _ = prepare_rerun(shot_id, params)
    with session_scope() as s:
        repo.set_run_status(s, run_id, "rejected", error=f"superseded by run {new_run} (re-run in review with {params or {}})")
    summary = start_rerun(shot_id, new_run)
    message = (f"re-ran as run {new_run}: verdict {summary['qc']['verdict']}" if summary is not None
               else f"re-run started as run {new_run}")
    return ReviewOutcome(**base, run_status="rejected", review_id=review_id, new_run_id=new_run, summary=summary, message=message)


def _resume_if_paused(flow_run_id: str, decision: str, note: str, reviewer: str, params: dict[str, Any] | None) -> bool:
    """Resume a Prefect flow run paused for review with the decision; False when it is not paused
    (and does not pause within :data:`PAUSE_WAIT_S` while still running)."""
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.flow_runs import resume_flow_run

    try:
        with get_client(sync_client=True) as client:
            deadline = time.monotonic() + PAUSE_WAIT_S
            while True:
                state = client.read_flow_run(UUID(flow_run_id)).state
                if state is not None and state.is_paused():
                    break
                if state is None or not state.is_running() or time.monotonic() > deadline:
                    return False
                time.sleep(0.5)
        run_input = {"decision": decision, "note": note, "reviewer": reviewer, "params": params}
        resume_flow_run(UUID(flow_run_id), run_input=run_input)
    except (OSError, ConnectionError) as exc:
        raise ServiceUnavailableError(f"Prefect API unavailable: cannot resume flow run {flow_run_id} ({exc})") from None
    return True


__all__ = ["DECISIONS", "ReviewOutcome", "StartRerun", "approve_renders", "mark_awaiting_review", "prepare_rerun", "record_decision",
           "reject_run", "submit_decision"]
