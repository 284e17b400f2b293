"""Shots and runs: submission, status changes and the records a flow reads (through repository functions)."""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from recast.contracts import FALLBACK_FPS, ShotParams
from recast.db import repository as repo
from recast.db.migrate import ensure_schema
from recast.db.orm import utcnow
from recast.db.session import session_scope
from recast.errors import DatabaseUnavailableError, RecastError, UsageError
from recast.services.trust import SCRATCH_PROJECT
from recast.settings import get_settings

if TYPE_CHECKING:
    from recast.contracts import MediaInfo

#: frames with faces looked at when ``--face index:N`` asks for a person beyond the largest, and
#: how many opening frames of the plate (decoded in order) may be searched for them
FACE_INDEX_SAMPLES = 6
FACE_INDEX_MAX_FRAMES = 240


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


def _local_path(value: str, role: str) -> Path | None:
    """The local file behind a user-given input (a path or ``file://`` URI); None for remote
    URIs (``s3://``), which ingest fetches and checks."""
    from recast.storage import local_input

    if "://" in value and not value.startswith("file://"):
        return None
    return local_input(value, role)


def check_inputs_exist(plate: str, sources: Sequence[str]) -> None:
    """The cheapest check of all, for a command to make before it loads anything heavy: the
    plate and every source photo given as a local path (or ``file://`` URI) exist as files."""
    from urllib.parse import unquote, urlparse

    from recast.errors import InputNotFoundError

    for value, role in [(plate, "plate"), *((src, f"source #{i + 1}") for i, src in enumerate(sources))]:
        if "://" in value and not value.startswith("file://"):
            continue
        path = Path(unquote(urlparse(value).path)) if value.startswith("file://") else Path(value).expanduser()
        if not path.exists():
            raise InputNotFoundError(f"{role} '{value}': file not found")
        if path.is_dir():
            raise InputNotFoundError(f"{role} '{value}': is a directory, not a file")


def check_edit_ranges(edits: Sequence[str], frame_count: int, plate: str) -> None:
    """Refuse an ``--edit`` whose frame range lies outside the plate (it would silently do
    nothing, or only part of what was asked), naming the edit and the plate's frame count."""
    from recast.models.retarget import parse_edit

    for text in edits:
        e = parse_edit(text)
        start, end = e.start, e.end
        if (start is not None and start >= frame_count) or (end is not None and end > frame_count):
            shown = f"{'' if start is None else start}-{'' if end is None else end}"
            raise UsageError(f"--edit '{text}': frames {shown} are outside the plate '{plate}', which has {frame_count} frames "
                             f"(0 to {frame_count - 1}; END is exclusive)")


def check_face_index(face: str, plate_path: Path, info: MediaInfo, plate: str) -> None:
    """Refuse ``--face index:N`` when the plate's opening frames never show more than N faces.

    The flow counts faces on the first frame that has any; this looks the same way, at frames
    a fifth of a second apart from the start (until :data:`FACE_INDEX_SAMPLES` of them showed
    faces, within the first :data:`FACE_INDEX_MAX_FRAMES`), and takes the most faces seen. A plate with no face there is
    left to the flow, which says where faces are missing."""
    from recast.models.tracking import parse_face_selector

    selector = parse_face_selector(face)
    if selector.kind != "index" or not selector.index:
        return
    from recast.media import read_frames
    from recast.models.face import FaceAnalyzer

    step = max(1, round(info.fps / 5))
    most = with_faces = 0
    frames = read_frames(plate_path, role="plate")
    try:
        with FaceAnalyzer(static_images=True, max_faces=max(4, selector.index + 1)) as analyzer:
            for i, rgb in enumerate(frames):
                if i >= FACE_INDEX_MAX_FRAMES or with_faces >= FACE_INDEX_SAMPLES:
                    break
                if i % step:
                    continue
                count = len(analyzer.detect(rgb))
                most = max(most, count)
                with_faces += count > 0
    finally:
        frames.close()  # type: ignore[attr-defined]
    if most and selector.index >= most:
        raise UsageError(f"--face '{face}': the plate '{plate}' shows at most {most} face{'s' if most != 1 else ''} "
                         f"in its opening frames: choose index 0 to {most - 1} (0 = the largest)")


def validate_submission(*, plate: str, sources: Sequence[str], params: ShotParams) -> MediaInfo | None:
    """Everything about a submission that can be checked without the database or Prefect, so
    that bad input is refused in a second and leaves no run behind: the options
    (:func:`check_shot_params`), the plate exists and is a readable video, the edits' frame
    ranges lie within it, ``--face index:N`` names a face the plate shows, a reference photo and
    every source photo exist and decode. Returns the plate's media info (None for a remote
    plate, which ingest fetches and checks)."""
    from recast.errors import UnsupportedMediaError
    from recast.media import probe_media, read_image
    from recast.models.tracking import parse_face_selector

    check_shot_params(params)
    photos: list[tuple[str, Any]] = []
    for i, src in enumerate(sources):
        path = _local_path(src, f"source #{i + 1}")
        if path is not None:
            probe_media(path, role="source")
            photos.append((src, read_image(path, role="source")))  # a full decode: a truncated JPEG fails here
    reference = parse_face_selector(params.face).reference_path
    if reference:
        ref_path = _local_path(reference, "--face reference photo")
        if ref_path is not None:
            read_image(ref_path, role="--face reference photo")
    plate_path = _local_path(plate, "plate")
    if plate_path is None:
        vet_sources(photos, params=params, plate_path=None, info=None)
        return None
    info = probe_media(plate_path, role="plate")
    if info.kind != "video":
        raise UnsupportedMediaError(f"plate '{plate}': is a still image ({info.codec}), a plate must be a video clip")
    check_edit_ranges(params.edits, info.frame_count, plate)
    check_face_index(params.face, plate_path, info, plate)
    vet_sources(photos, params=params, plate_path=plate_path, info=info)
    return info


def plate_face_width(plate_path: Path, info: MediaInfo | None, face: str) -> float | None:
    """The plate's face width in px from a quick look at a few opening frames (a fifth of a
    second apart), for the upscale a source photo implies; None when none shows a face."""
    from recast.media import read_frames
    from recast.models.source_vetting import plate_face_px

    step = max(1, round((info.fps if info is not None and info.fps else FALLBACK_FPS) / 5))
    frames = read_frames(plate_path, role="plate")
    try:
        return plate_face_px(frames, face=face, step=step)
    finally:
        frames.close()  # type: ignore[attr-defined]


def vet_sources(photos: Sequence[tuple[str, Any]], *, params: ShotParams, plate_path: Path | None, info: MediaInfo | None,
                echo: Any = None) -> dict[str, list[dict[str, Any]]]:
    """The source report of each local photo at submission (:mod:`recast.models.source_vetting`):
    each warning is told as one progress line (``[recast] source: <photo>: <text>``), the first
    refusal is raised (exit 3, one line naming the photo and the reason). Returns the findings
    per photo as plain dicts."""
    import sys

    from recast.models.source_vetting import raise_if_refused, vet_photo

    if not photos:
        return {}
    plate_px = plate_face_width(plate_path, info, params.face) if plate_path is not None else None
    report: dict[str, list[dict[str, Any]]] = {}
    for name, rgb in photos:
        findings = vet_photo(rgb, name=name, source_face=params.source_face, mode=params.mode.value, plate_face_px=plate_px)
        raise_if_refused(findings)
        for f in findings:
            if f.outcome == "warn":
                line = f"[recast] source: {name}: {f.text.split(': ', 1)[-1]}"
                (echo or (lambda text: print(text, file=sys.stderr, flush=True)))(line)
        report[name] = [f.as_dict() for f in findings]
    return report


def source_vetting(run_id: str) -> list[dict[str, Any]]:
    """The source report a run's flow recorded (``SourceFaceResult.vetting`` of its
    ``segment`` stage runs for source photos): ``[{"photo", "findings": [...]}]`` in the shot's
    source order; photos not analysed yet are left out."""
    with session_scope() as s:
        return source_vetting_in(s, repo.get_run(s, run_id))


def source_vetting_in(s: Any, run: Any) -> list[dict[str, Any]]:
    """:func:`source_vetting` within an open session, for a run row."""
    shot = repo.get_shot(s, run.shot_id)
    names = list((shot.params or {}).get("sources") or [])
    ids = [str(a) for a in (shot.source_asset_ids or [])]
    out: list[tuple[int, dict[str, Any]]] = []
    for sr in repo.stage_runs_for_run(s, run.id):
        res = sr.result if isinstance(sr.result, dict) else None
        if sr.stage != "segment" or (sr.params or {}).get("what") != "source_face" or res is None or "vetting" not in res:
            continue
        asset = str((res.get("source") or {}).get("asset_id") or "")
        i = ids.index(asset) if asset in ids else len(names)
        photo = (sr.params or {}).get("name") or (names[i] if i < len(names) else (res.get("source") or {}).get("uri"))
        out.append((i, {"photo": photo, "findings": list(res["vetting"])}))
    seen: set[str] = set()
    report = []
    for _, item in sorted(out, key=lambda x: x[0]):
        if item["photo"] not in seen:
            seen.add(item["photo"])
            report.append(item)
    return report


def submit_local_shot(*, plate: str, sources: list[str], params: ShotParams, project: str | None = None, identity: str | None = None,
                      code: str | None = None, actor: str = "cli", validated: bool = False, run_here: bool = False) -> tuple[str, str]:
    """Record a shot and a queued run for it; returns (shot_id, run_id).

    With no project the shot goes to the built-in ``scratch`` project (no consent required,
    unless RECAST_SCRATCH_ENABLED=false turns it off). With an identity and no sources, the
    identity's reference photos are the sources.

    The inputs and options are checked first (:func:`validate_submission`, unless the caller
    did, ``validated``): bad input is refused before the database is touched, and no run is
    recorded for it. A code already used
    in the project gets a suffix (``CODE-2``): shot codes are unique within a project.
    ``run_here``: this process runs the flow next (the command line), so it is recorded as the
    queued run's owner at once.
    """
    from recast.errors import PolicyError
    from recast.services import processes

    settings = get_settings()
    if project is None and not settings.scratch_enabled:
        raise PolicyError("the scratch project is turned off (RECAST_SCRATCH_ENABLED=false): give --project P --identity NAME")
    if identity is None and not sources:
        raise UsageError("give at least one --source photo or an --identity with reference photos")
    if not validated:
        validate_submission(plate=plate, sources=sources, params=params)
    ensure_schema(settings)
    if project is None:
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
        # the project's policy and the identity's consent, before the shot is recorded (the flow checks again)
        from recast.services.trust import check_submission

        check_submission(s, proj, identity_id, option="--identity NAME", listing="registered with recast identity add")
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
        if run_here:
            # this process runs it next: recorded as its owner now, so a process killed before
            # its flow starts leaves a run that the sweep marks crashed, not one queued for ever
            owner = processes.current_owner()
            run.owner_host, run.owner_pid, run.owner_started, run.heartbeat_at = owner.host, owner.pid, owner.started, utcnow()
        repo.add_audit_event(s, actor=actor, action="shot.submitted", subject_type="shot", subject_id=str(shot.id), detail={"code": shot.code, "project": project, "run_id": str(run.id)})
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
    """Mark a run running (creating it when a deployment started the flow without one), owned by
    this process: its host, pid and start time are recorded and its heartbeat kept fresh until
    :func:`finish_run` or :func:`fail_run`."""
    from recast.services import processes

    owner = processes.current_owner()
    with session_scope() as s:
        if run_id is None:
            shot = repo.get_shot(s, shot_id)
            run_id = str(repo.create_run(s, shot.id, params=dict(shot.params or {})).id)
        run = repo.set_run_status(s, run_id, "running", prefect_flow_run_id=flow_run_id)
        run.owner_host, run.owner_pid, run.owner_started = owner.host, owner.pid, owner.started
        run.heartbeat_at = utcnow()
    processes.set_run_callbacks(heartbeat=_heartbeat, end_runs=_end_runs)
    processes.run_started(run_id)
    return run_id


def finish_run(run_id: str, *, output_asset_id: str | None, summary: dict[str, Any]) -> None:
    """Mark a run done; crashed or interrupted runs of the same shot (or of the same submission
    under another shot: same project, plate, sources and parameters) become ``superseded``."""
    from recast.services import processes

    with session_scope() as s:
        run = repo.set_run_status(s, run_id, "done", output_asset_id=output_asset_id, summary=summary)
        repo.add_audit_event(s, actor="recast", action="render.done", subject_type="run", subject_id=run_id, detail={"output_asset_id": output_asset_id, "host": socket.gethostname()})
        _supersede(s, run)
    processes.run_ended(run_id)


def _supersede(s: Any, done: Any) -> None:
    from sqlalchemy import select

    from recast.db.orm import Run, Shot

    shot = s.get(Shot, done.shot_id)
    if shot is None:
        return
    older = s.execute(select(Run, Shot).join(Shot, Run.shot_id == Shot.id)
                      .where(Run.status.in_(("crashed", "interrupted")), Run.created <= done.created, Run.id != done.id,
                             Shot.project_id == shot.project_id)).all()
    for run, other in older:
        if other.id == shot.id or (other.params or {}) == (shot.params or {}):
            note = f"superseded by run {done.id}"
            repo.set_run_status(s, run.id, "superseded", error=f"{run.error}; {note}" if run.error else note)
    # set_run_status moves a run's shot along with it: this shot's status is its latest run's, done
    shot.status = done.status
    s.flush()


def fail_run(run_id: str, exc: BaseException) -> None:
    """Record why a run failed; the message is the one-line error a user sees.

    Ctrl-C and SIGTERM (``KeyboardInterrupt``, or Prefect's ``TerminationSignal`` while a flow
    runs) end it ``interrupted``; a cancellation asked for
    through the API stays ``cancelled``; anything else is ``failed``. A full disk or a read-only
    directory is recorded as the one-line error the command line shows.
    """
    from recast.services import processes

    from prefect.exceptions import TerminationSignal

    processes.run_ended(run_id)
    if isinstance(exc, KeyboardInterrupt):
        status, text = "interrupted", (processes.aborting() or (0, "", "interrupted (SIGINT)"))[2]
    elif isinstance(exc, TerminationSignal):
        # while a flow runs Prefect's own SIGTERM handler raises this before recast's handler sees the signal
        status, text = "interrupted", (processes.aborting() or (0, "", "interrupted (SIGTERM)"))[2]
    else:
        exc = processes.environment_error(exc) or exc
        status = "failed"
        text = str(exc) if isinstance(exc, RecastError) else f"{type(exc).__name__}: {exc}"
    def record() -> None:
        with session_scope() as s:
            run = repo.get_run(s, run_id)
            if run.status == "cancelled" or getattr(run, "cancel_requested_at", None) is not None:
                # a cancellation stops the flow with an exception: it stays a cancellation, not a failure
                repo.set_run_status(s, run_id, "cancelled", error=run.error or "cancelled by request")
                return
            if run.status in ("interrupted", "crashed", "superseded") or (run.status == "failed" and run.error):
                return  # already ended (the flow recorded it; the command line reports the same exception again)
            repo.set_run_status(s, run_id, status, error=text[:4000])

    try:
        record()
    except DatabaseUnavailableError as exc:
        if "full" not in str(exc) or not get_settings().database_is_sqlite:
            raise
        # SQLite on a full disk: moving the write-ahead log into the database file and truncating
        # it frees the room a one-row update needs, so the run does not stay `running`
        from sqlalchemy import text as sql

        with session_scope() as s:
            s.execute(sql("PRAGMA wal_checkpoint(TRUNCATE)"))
        record()


def _heartbeat(run_ids: list[str]) -> None:
    """Refresh the heartbeat of this process's live runs; forget those that ended another way
    (rejected in review, cancelled)."""
    from sqlalchemy import select, update

    from recast.db.orm import Run
    from recast.services import processes

    ids = [repo.as_uuid(r, "run") for r in run_ids]
    with session_scope() as s:
        s.execute(update(Run).where(Run.id.in_(ids), Run.status.in_(_LIVE_STATUSES)).values(heartbeat_at=utcnow()))
        live = {str(i) for i in s.scalars(select(Run.id).where(Run.id.in_(ids), Run.status.in_(_LIVE_STATUSES)))}
    for run_id in run_ids:
        if str(repo.as_uuid(run_id, "run")) not in live:
            processes.run_ended(run_id)


def _end_runs(run_ids: list[str], status: str, message: str) -> None:
    """Record the end of runs this process still had when it had to exit (the grace timer)."""
    with session_scope() as s:
        for run_id in run_ids:
            run = repo.get_run(s, run_id)
            if run.status in ("running", "awaiting_review", "queued"):
                repo.set_run_status(s, run_id, status, error=message[:4000])


# Statuses of a run whose process must be alive: running, and paused for review (the paused flow
# waits inside its process, so a review decision cannot resume a run whose process is gone).
# Queued runs have no process yet (a worker picks them up later).
_LIVE_STATUSES = ("running", "awaiting_review")
# ... except a run the command line submitted and runs itself: queued, with its owner recorded,
# until its flow starts (the sweep's concern too)
_SWEPT_STATUSES = ("queued", *_LIVE_STATUSES)


def sweep_crashed_runs() -> list[str]:
    """Mark ``crashed`` the live runs (and the command line's queued ones) whose process is gone;
    returns their ids.

    A run of this host is crashed as soon as its owner process no longer exists (or the pid now
    belongs to a process started at another time). A run of another host is crashed when its
    heartbeat is older than ``RECAST_RUN_HEARTBEAT_TIMEOUT_S``. Runs recorded before owners
    were (no owner) are left alone. Called by every command that opens the database.
    """
    from datetime import timedelta

    from sqlalchemy import select

    from recast.db.orm import Run
    from recast.services import processes

    timeout = timedelta(seconds=get_settings().run_heartbeat_timeout_s)
    now = utcnow()
    crashed: list[str] = []
    with session_scope() as s:
        for run in s.scalars(select(Run).where(Run.status.in_(_SWEPT_STATUSES), Run.owner_pid.is_not(None))).all():
            alive = processes.owner_alive(run.owner_host, run.owner_pid, run.owner_started)
            if alive is None:  # another host: only its heartbeat can tell
                beat = run.heartbeat_at or run.started
                if beat is None:
                    continue
                if beat.tzinfo is None:
                    beat = beat.replace(tzinfo=now.tzinfo)
                if now - beat <= timeout:
                    continue
                why = f"no heartbeat from process {run.owner_pid} on {run.owner_host} for {int((now - beat).total_seconds())} s"
            elif alive:
                continue
            else:
                why = f"its process {run.owner_pid} on {run.owner_host} ended without recording an outcome (killed?)"
            repo.set_run_status(s, run.id, "crashed", error=f"crashed: {why}; run the command again (finished stages are reused)")
            crashed.append(str(run.id))
    return crashed


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
