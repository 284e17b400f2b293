"""Repository functions of the trust features: renders with their mark and consent, revocation."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from recast.db.orm import Asset, Consent, Identity, Project, Render, Run, Shot
from recast.db.repository import IdLike, _get, as_uuid, get_asset, get_run


def create_render(
    s: Session,
    *,
    render_id: IdLike,
    run_id: IdLike,
    asset_id: IdLike,
    approved: bool,
    watermark_payload: str | None,
    consent_id: IdLike | None,
    signed: bool,
) -> Render:
    """A deliverable of a run, with the id its watermark and manifest carry."""
    run = get_run(s, run_id)
    aid = get_asset(s, asset_id).id
    row = Render(
        id=as_uuid(render_id, "render"),
        run_id=run.id,
        shot_id=run.shot_id,
        asset_id=aid,
        approved=approved,
        watermark_payload=watermark_payload,
        consent_id=None if consent_id is None else as_uuid(consent_id, "consent"),
        signed=signed,
    )
    s.add(row)
    run.output_asset_id = aid
    s.flush()
    return row


def get_render(s: Session, render_id: IdLike) -> Render:
    return _get(s, Render, render_id, "render")


def renders_by_payload(s: Session, payload_hex: str) -> list[Render]:
    """Renders whose invisible mark carries this payload, newest first."""
    return list(s.scalars(select(Render).where(Render.watermark_payload == payload_hex).order_by(Render.created.desc())))


def renders_of_identity(s: Session, identity_id: IdLike) -> list[tuple[Render, Shot, Asset]]:
    """Every deliverable made with an identity (through its shots)."""
    iid = as_uuid(identity_id, "identity")
    q = (
        select(Render, Shot, Asset)
        .join(Shot, Render.shot_id == Shot.id)
        .join(Asset, Render.asset_id == Asset.id)
        .where(Shot.identity_id == iid)
        .order_by(Render.created)
    )
    return [(r, sh, a) for r, sh, a in s.execute(q)]


def render_context(s: Session, render: Render) -> dict[str, Any]:
    """Who and what a render is about: shot, project, identity, consent."""
    shot = s.get(Shot, render.shot_id)
    project = s.get(Project, shot.project_id) if shot else None
    identity = s.get(Identity, shot.identity_id) if shot and shot.identity_id else None
    consent = s.get(Consent, render.consent_id) if render.consent_id else None
    run = s.get(Run, render.run_id)
    return {
        "render_id": str(render.id),
        "created": render.created,
        "approved": render.approved,
        "revoked_at": render.revoked_at,
        "delivered_to": render.delivered_to,
        "run_id": str(render.run_id),
        "run_status": run.status if run else None,
        "shot": shot.code if shot else None,
        "shot_id": str(shot.id) if shot else None,
        "project": project.name if project else None,
        "identity": identity.name if identity else None,
        "consent": None if consent is None else {
            "id": str(consent.id), "scope": consent.scope, "valid_from": consent.valid_from, "valid_until": consent.valid_until,
            "revoked_at": consent.revoked_at, "release_asset_id": str(consent.release_asset_id) if consent.release_asset_id else None,
        },
    }


def new_render_id() -> str:
    return str(uuid.uuid4())
