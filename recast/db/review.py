"""Repository functions for QC review: finding a shot's latest run, pending reviews, changing a
shot's parameters for a re-run, approving a run's deliverables. Same conventions as
:mod:`recast.db.repository` (session first, flush never commit)."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from recast.db import repository as repo
from recast.db.orm import QCResult, Render, Run, Shot
from recast.errors import RecordNotFoundError, UsageError


def find_shot_by_ref(s: Session, ref: str) -> Shot:
    """A shot by id, or by code (which must then name one shot across projects)."""
    try:
        found = s.get(Shot, uuid.UUID(str(ref)))
        if found is not None:
            return found
    except ValueError:
        pass
    rows = list(s.scalars(select(Shot).where(Shot.code == ref).order_by(Shot.created.desc()).limit(50)))
    if not rows:
        raise RecordNotFoundError(f"shot {ref} not found (give its id or code)")
    # codes are unique within a project (migration 0004): several rows are several projects
    projects = {r.project_id for r in rows}
    if len(projects) > 1:
        names = sorted(repo.get_project(s, p).name for p in projects)
        raise UsageError(f"shot code {ref!r} is used in {len(names)} projects ({', '.join(names)}): give the shot id")
    return rows[0]


def latest_run_with_qc(s: Session, shot_id: Any) -> tuple[Run, QCResult] | None:
    """The shot's newest run that has a QC result, with that result."""
    row = s.execute(
        select(Run, QCResult).join(QCResult, QCResult.run_id == Run.id)
        .where(Run.shot_id == repo.as_uuid(shot_id, "shot")).order_by(QCResult.created.desc()).limit(1)
    ).first()
    return None if row is None else (row[0], row[1])


def set_run_renders_approved(s: Session, run_id: Any, approved: bool) -> list[Render]:
    """Approve (or withdraw approval of) every deliverable of a run."""
    rows = repo.renders_for_run(s, run_id)
    for r in rows:
        repo.set_render_approved(s, r.id, approved)
    return rows


def update_shot_params(s: Session, shot_id: Any, changes: dict[str, Any]) -> dict[str, Any]:
    """Change some of a shot's parameters (for a re-run); returns the new parameter dict.

    The plate and sources cannot be changed this way (that is another shot)."""
    shot = repo.get_shot(s, shot_id)
    bad = {"plate", "sources"} & set(changes)
    if bad:
        raise UsageError(f"a re-run cannot change {', '.join(sorted(bad))}: submit a new shot")
    params = {**dict(shot.params or {}), **repo.to_json(changes)}
    shot.params = params
    s.flush()
    return params
