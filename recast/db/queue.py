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


def dispatched_live_runs(s: Session, *, statuses: tuple[str, ...], project_id: IdLike | None = None,
                         run_ids: list[str] | None = None) -> list[tuple[str, str, str]]:
    """``(run_id, shot_id, flow_run_id)`` of runs in ``statuses`` that a Prefect flow run was
    started for (of a project, or among ``run_ids``)."""
    q = select(Run.id, Run.shot_id, Run.prefect_flow_run_id).where(Run.status.in_(statuses), Run.prefect_flow_run_id.is_not(None))
    if project_id is not None:
        q = q.join(Shot, Run.shot_id == Shot.id).where(Shot.project_id == as_uuid(project_id, "project"))
    if run_ids is not None:
        q = q.where(Run.id.in_([as_uuid(r, "run") for r in run_ids]))
    return [(str(a), str(b), str(c)) for a, b, c in s.execute(q.order_by(Run.created, Run.id))]


def latest_runs_ended_in_prefect(s: Session, *, project_id: IdLike, prefix: str, limit: int = 50) -> list[Run]:
    """The latest runs of a project's shots that ended ``crashed`` or ``failed`` with an error
    starting with ``prefix`` (marked from Prefect's state): one per shot, work-queue order."""
    newest = (select(Run.shot_id, func.max(Run.created).label("created")).group_by(Run.shot_id).subquery())
    q = (
        select(Run)
        .join(newest, (Run.shot_id == newest.c.shot_id) & (Run.created == newest.c.created))
        .join(Shot, Run.shot_id == Shot.id)
        .where(Shot.project_id == as_uuid(project_id, "project"), Run.status.in_(("crashed", "failed")),
               Run.error.startswith(prefix, autoescape=True))
        .order_by(Shot.priority.desc(), Run.created, Run.id)
        .limit(limit)
    )
    return list(s.scalars(q))


def count_runs_ended_in_prefect(s: Session, shot_id: IdLike, *, prefix: str) -> int:
    """How many runs of a shot ended ``crashed``/``failed`` with an error starting with ``prefix``."""
    return int(s.scalar(select(func.count()).select_from(Run).where(
        Run.shot_id == as_uuid(shot_id, "shot"), Run.status.in_(("crashed", "failed")),
        Run.error.startswith(prefix, autoescape=True))) or 0)


def request_cancel(s: Session, run_id: IdLike, *, reason: str = "cancelled on request") -> Run:
    """Mark a run cancelled (and when that was asked for); its shot follows."""
    run = get_run(s, run_id)
    run.cancel_requested_at = run.cancel_requested_at or utcnow()
    return set_run_status(s, run.id, "cancelled", error=reason)


__all__ = ["count_runs_ended_in_prefect", "count_shots", "dispatched_live_runs", "latest_runs_ended_in_prefect", "find_shot_by_idempotency_key", "page_shots", "request_cancel", "set_run_flow_run", "shots_awaiting_start"]
