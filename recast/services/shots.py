"""Shots and runs: submission, status changes and the records a flow reads (through repository functions)."""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recast.contracts import ShotParams
from recast.db import repository as repo
from recast.db.migrate import ensure_schema
from recast.db.session import session_scope
from recast.errors import RecastError, UsageError
from recast.services.trust import SCRATCH_PROJECT
from recast.settings import get_settings


@dataclass(frozen=True)
class ShotSpec:
    """What a flow needs to know about a shot."""

    shot_id: str
    code: str
    project: str
    plate: str
    sources: tuple[str, ...]
    params: ShotParams


def _as_input(value: str) -> str:
    """Local paths become absolute (the flow may run in another directory); URIs stay as they are."""
    if "://" in value:
        return value
    return str(Path(value).expanduser().absolute())


def check_shot_params(params: ShotParams) -> None:
    """What ShotParams cannot check alone, checked whenever a shot is submitted or re-run (CLI,
    API, review): the backend exists and swaps the mode, the expression mode and edits are known
    (UsageError naming the value), so a bad choice is refused before anything is recorded rather
    than stages later. (The face selector is checked by the CLI and the API's schema: parsing it
    here would load MediaPipe into the API server.)"""
    from recast.models.engines import check_engine
    from recast.models.retarget import MODES, parse_edit

    check_engine(params.backend, params.mode.value)
    if params.expression not in MODES:
        raise UsageError(f"expression '{params.expression}': choose from {', '.join(MODES)}")
    for edit in params.edits:
        parse_edit(edit)


def submit_local_shot(*, plate: str, sources: list[str], params: ShotParams, project: str | None = None, identity: str | None = None,
                      code: str | None = None, actor: str = "cli") -> tuple[str, str]:
    """Record a shot and a queued run for it; returns (shot_id, run_id).

    With no project the shot goes to the built-in ``scratch`` project (no consent required,
    unless RECAST_SCRATCH_ENABLED=false turns it off). With an identity and no sources, the
    identity's reference photos are the sources.
    """
    from recast.errors import PolicyError

    check_shot_params(params)
    settings = get_settings()
    ensure_schema(settings)
    if project is None:
        if not settings.scratch_enabled:
            raise PolicyError("the scratch project is turned off (RECAST_SCRATCH_ENABLED=false): give --project P --identity NAME")
        project = SCRATCH_PROJECT
    identity_id = None
    if identity is not None:
        from recast.services.trust import identity_photo_paths

        identity_id, photos = identity_photo_paths(identity)
        sources = list(sources) or photos
    if not sources:
        raise UsageError("give at least one --source photo or an --identity with reference photos")
    plate_in = _as_input(plate)
    code = code or f"{Path(plate_in).stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    with session_scope() as s:
        if project == SCRATCH_PROJECT:
            proj = repo.get_or_create_project(s, project, consent_required=False)
        else:
            proj = repo.find_project(s, project)
            if proj is None:
                raise UsageError(f"--project '{project}': no such project (recast project create {project} --media film|ad)")
        shot = repo.create_shot(
            s,
            project_id=proj.id,
            code=code,
            plate_asset_id=None,
            params={"plate": plate_in, "sources": [_as_input(x) for x in sources], **params.model_dump(mode="json")},
            source_asset_ids=[],
            identity_id=identity_id,
        )
        run = repo.create_run(s, shot.id, params=params.model_dump(mode="json"))
        repo.add_audit_event(s, actor=actor, action="shot.submitted", subject_type="shot", subject_id=str(shot.id), detail={"code": code, "project": project, "run_id": str(run.id)})
        return str(shot.id), str(run.id)


def load_shot(shot_id: str) -> ShotSpec:
    with session_scope() as s:
        shot = repo.get_shot(s, shot_id)
        project = repo.get_project(s, shot.project_id)
        p = dict(shot.params or {})
        plate = p.pop("plate")
        sources = tuple(p.pop("sources", ()))
        return ShotSpec(shot_id=str(shot.id), code=shot.code, project=project.name, plate=plate, sources=sources, params=ShotParams.model_validate(p))


def shot_code(shot_id: str) -> str:
    with session_scope() as s:
        return repo.get_shot(s, shot_id).code


def start_run(shot_id: str, run_id: str | None, flow_run_id: str | None) -> str:
    """Mark a run running (creating it when a deployment started the flow without one)."""
    with session_scope() as s:
        if run_id is None:
            shot = repo.get_shot(s, shot_id)
            run_id = str(repo.create_run(s, shot.id, params=dict(shot.params or {})).id)
        repo.set_run_status(s, run_id, "running", prefect_flow_run_id=flow_run_id)
        return run_id


def finish_run(run_id: str, *, output_asset_id: str | None, summary: dict[str, Any]) -> None:
    with session_scope() as s:
        repo.set_run_status(s, run_id, "done", output_asset_id=output_asset_id, summary=summary)
        repo.add_audit_event(s, actor="recast", action="render.done", subject_type="run", subject_id=run_id, detail={"output_asset_id": output_asset_id, "host": socket.gethostname()})


def fail_run(run_id: str, exc: BaseException) -> None:
    """Record why a run failed; the message is the one-line error a user sees."""
    if isinstance(exc, KeyboardInterrupt):
        status, text = "cancelled", "interrupted"
    else:
        status = "failed"
        text = str(exc) if isinstance(exc, RecastError) else f"{type(exc).__name__}: {exc}"
    with session_scope() as s:
        run = repo.get_run(s, run_id)
        if run.status == "cancelled" or getattr(run, "cancel_requested_at", None) is not None:
            # a cancellation stops the flow with an exception: it stays a cancellation, not a failure
            repo.set_run_status(s, run_id, "cancelled", error=run.error or "cancelled by request")
            return
        repo.set_run_status(s, run_id, status, error=text[:4000])


def attach_inputs(shot_id: str, *, plate_asset_id: str, source_asset_ids: list[str]) -> None:
    """Link the shot to its registered plate and source assets (after ingest)."""
    with session_scope() as s:
        repo.set_shot_plate(s, shot_id, plate_asset_id)
        repo.set_shot_sources(s, shot_id, source_asset_ids)


def project_of(shot_id: str) -> tuple[str, bool]:
    """(project name, whether the project is commercial) of a shot."""
    with session_scope() as s:
        project = repo.get_project(s, repo.get_shot(s, shot_id).project_id)
        return project.name, bool(project.commercial)
