"""Queries of the work queue that the HTTP API and the nightly batch need.

Kept beside :mod:`recast.db.repository` (same conventions: session first, the caller owns the
transaction) so that the API and the batch flow never build ORM queries themselves.
"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from recast.db.orm import Run, Shot, utcnow
from recast.db.repository import IdLike, as_uuid, get_run, set_run_status


def page_shots(
    s: Session, *, project_id: IdLike, status: str | None = None, offset: int = 0, limit: int = 50
) -> tuple[list[Shot], int]:
    """One page of a project's shots, newest first, and the total number that match."""
    cond = [Shot.project_id == as_uuid(project_id, "project")]
    if status is not None:
        cond.append(Shot.status == status)
    total = s.scalar(select(func.count()).select_from(Shot).where(*cond)) or 0
    rows = s.scalars(select(Shot).where(*cond).order_by(Shot.created.desc(), Shot.id).offset(offset).limit(limit))
    return list(rows), int(total)


def find_shot_by_idempotency_key(s: Session, key: str) -> Shot | None:
    """The shot recorded under an idempotency key (as stored, i.e. already scoped by the caller)."""
    return s.scalars(select(Shot).where(Shot.idempotency_key == key)).one_or_none()


def count_shots(s: Session, *, project_id: IdLike | None = None) -> int:
    """How many shots there are (of a project)."""
    q = select(func.count()).select_from(Shot)
    if project_id is not None:
        q = q.where(Shot.project_id == as_uuid(project_id, "project"))
    return int(s.scalar(q) or 0)


def shots_awaiting_start(s: Session, *, project_id: IdLike, limit: int = 50) -> list[tuple[str, str]]:
    """``(shot_id, run_id)`` of a project's queued runs that no Prefect flow run executes yet.

    Work-queue order: highest shot priority first, then the oldest run. These are the shots the
    nightly batch starts (submitted with ``schedule=batch``, or submitted while no deployment
    could be started).
    """
    rows = s.execute(
        select(Shot.id, Run.id)
        .join(Run, Run.shot_id == Shot.id)
        .where(
            Shot.project_id == as_uuid(project_id, "project"),
            Shot.status == "queued",
            Run.status == "queued",
            Run.prefect_flow_run_id.is_(None),
        )
        .order_by(Shot.priority.desc(), Run.created, Run.id)
        .limit(limit)
    )
    return [(str(a), str(b)) for a, b in rows]


def set_run_flow_run(s: Session, run_id: IdLike, flow_run_id: str) -> Run:
    """Remember which Prefect flow run executes a run (before the flow itself says so)."""
    run = get_run(s, run_id)
    if run.prefect_flow_run_id is None:
        run.prefect_flow_run_id = str(flow_run_id)
        s.flush()
    return run


def request_cancel(s: Session, run_id: IdLike, *, reason: str = "cancelled on request") -> Run:
    """Mark a run cancelled (and when that was asked for); its shot follows."""
    run = get_run(s, run_id)
    run.cancel_requested_at = run.cancel_requested_at or utcnow()
    return set_run_status(s, run.id, "cancelled", error=reason)


__all__ = ["count_shots", "find_shot_by_idempotency_key", "page_shots", "request_cancel", "set_run_flow_run", "shots_awaiting_start"]
