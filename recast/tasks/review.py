"""Review bookkeeping for the ``swap_shot`` flow: a run waiting for a supervisor, the decision
and who made it, approval of deliverables, rejection and re-runs (through repository functions)."""

from __future__ import annotations

from typing import Any

from recast.contracts import ShotParams
from recast.db import repository as repo
from recast.db import review as review_repo
from recast.db.session import session_scope
from recast.errors import UsageError


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


def prepare_rerun(shot_id: str, changes: dict[str, Any] | None) -> tuple[str, dict[str, Any]]:
    """Apply a re-run's parameter changes to the shot (validated as ShotParams) and queue a new
    run of it; returns (new run id, the shot's parameters)."""
    changes = dict(changes or {})
    with session_scope() as s:
        shot = repo.get_shot(s, shot_id)
        current = {k: v for k, v in dict(shot.params or {}).items() if k not in ("plate", "sources")}
        try:
            params = ShotParams.model_validate({**current, **changes})
        except Exception as exc:
            raise UsageError(f"re-run parameters {changes}: {str(exc).splitlines()[0]} ({exc})") from None
        review_repo.update_shot_params(s, shot_id, params.model_dump(mode="json"))
        run = repo.create_run(s, shot_id, params=params.model_dump(mode="json"))
        repo.add_audit_event(s, actor="recast", action="run.rerun", subject_type="shot", subject_id=shot_id,
                             detail={"run_id": str(run.id), "changes": changes})
        return str(run.id), params.model_dump(mode="json")
