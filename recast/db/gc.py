"""Repository queries of ``recast gc``: which stored assets something still needs, and which
intermediates are old enough to remove."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from recast.db.orm import Asset, Consent, IdentityPhoto, QCResult, Render, Run, Shot, StageRun

#: runs whose stored work is still wanted as it is: they are waiting (queued), working
#: (running), or paused for a supervisor whose approval renders from it (awaiting_review)
PENDING_RUN_STATUSES = ("queued", "running", "awaiting_review")


def _ids(values: Iterable[object]) -> set[uuid.UUID]:
    out: set[uuid.UUID] = set()
    for v in values:
        if v is None:
            continue
        try:
            out.add(v if isinstance(v, uuid.UUID) else uuid.UUID(str(v)))
        except ValueError:
            continue
    return out


def needed_asset_ids(s: Session) -> set[uuid.UUID]:
    """Every asset something still needs: deliverables (renders, run outputs), plates and source
    photos of shots, identity photos and consent releases, QC reports, and every input and output
    of the stage runs of pending runs (what a run paused for review needs to render)."""
    needed: set[uuid.UUID] = set()
    needed |= _ids(s.scalars(select(Render.asset_id)))
    needed |= _ids(s.scalars(select(Run.output_asset_id)))
    needed |= _ids(s.scalars(select(Shot.plate_asset_id)))
    for sources in s.scalars(select(Shot.source_asset_ids)):
        needed |= _ids(sources or [])
    needed |= _ids(s.scalars(select(IdentityPhoto.asset_id)))
    needed |= _ids(s.scalars(select(Consent.release_asset_id)))
    needed |= _ids(s.scalars(select(QCResult.report_asset_id)))
    pending = select(Run.id).where(Run.status.in_(PENDING_RUN_STATUSES))
    for inputs, outputs in s.execute(select(StageRun.input_asset_ids, StageRun.output_asset_ids).where(StageRun.run_id.in_(pending))):
        needed |= _ids(inputs or [])
        needed |= _ids(outputs or [])
    return needed


def pending_run_count(s: Session) -> int:
    return len(list(s.scalars(select(Run.id).where(Run.status.in_(PENDING_RUN_STATUSES)))))


def live_assets_older_than(s: Session, cutoff: datetime, *, keep_roles: Iterable[str]) -> list[Asset]:
    """Live (not soft-deleted) assets created before ``cutoff`` whose role is not kept by role."""
    q = (select(Asset).where(Asset.deleted_at.is_(None), Asset.created < cutoff, Asset.role.not_in(list(keep_roles)))
         .order_by(Asset.created))
    return list(s.scalars(q))


__all__ = ["PENDING_RUN_STATUSES", "live_assets_older_than", "needed_asset_ids", "pending_run_count"]
