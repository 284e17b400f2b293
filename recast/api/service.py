"""What the HTTP API does, apart from HTTP: submissions, status views, review, cancel.

Routes (:mod:`recast.api.routes`) stay thin: they parse the request, call one function here and
turn the result into a response model. These functions talk to the database only through
repository functions (:mod:`recast.db.repository`, :mod:`recast.db.tokens`, :mod:`recast.db.queue`)
and raise :class:`ApiError` (status, message, field) or recast errors, which the app maps to HTTP
answers (see :func:`recast.api.app.create_app`).

A submission is three short transactions and one call to Prefect:

1. validate everything that can be checked without writing (fields, project policy, identity and
   consent, backend and mode, bucket, plate and source objects exist): a refused submission
   stores no upload and records nothing;
2. write the shot, a queued run and a ``shot.submitted`` audit event (uploads are stored first);
3. start the ``swap-shot`` deployment run (unless ``schedule=batch``) and remember its flow run id.

If step 3 fails (no Prefect server, no deployment) the run is marked failed with the reason and
the request answers 503: nothing will happen to that shot. A retry with the same Idempotency-Key
then queues a fresh run for the same shot and tries again, instead of creating another shot.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import shutil
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlparse

from recast.api.auth import Principal
from recast.api.schemas import IDEMPOTENCY_KEY_MAX, Schedule, ShotSubmission
from recast.contracts import ShotParams
from recast.db import queue
from recast.db import repository as repo
from recast.db.orm import RUN_STATUSES, RUN_TERMINAL_STATUSES
from recast.db.session import session_scope
from recast.errors import ConsentError, InputError, PolicyError, RecordNotFoundError, ServiceUnavailableError, UsageError
from recast.services import dispatch, review, shots, trust
from recast.services.qc import reason_records
from recast.settings import Settings
from recast.storage import S3Store, open_store, suffix_of
from recast.storage.s3 import split_s3_uri

StartRun = Callable[[str, str], "str | None"]
CancelRun = Callable[[str], "str | None"]

SHOT_STATUSES = ("new", *RUN_STATUSES)
# stages of swap_shot in the order they run; chunked ones report chunks done / total
STAGES_HEAD = ("ingest", "segment", "track", "background", "expression", "swap", "qc", "report", "render")
CHUNKED_STAGES = ("segment", "swap")


class ApiError(Exception):
    """An answer other than success: HTTP status, one-line message, and the field at fault if any."""

    def __init__(self, status: int, message: str, *, field: str | None = None, location: str = "body") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field
        self.location = location


@dataclass
class Upload:
    """A file part of a multipart submission (already on disk or in a spooled temp file)."""

    filename: str
    file: BinaryIO
    content_type: str | None = None


@dataclass
class ApiContext:
    """What the routes share: settings, the Prefect hooks, and the limits."""

    settings: Settings
    start_run: StartRun
    cancel_run: CancelRun
    allowed_buckets: frozenset[str]
    presign_expires_s: int = 3600
    max_json_bytes: int = 1024 * 1024
    max_upload_bytes: int = 2 * 1024**3
    tags: Sequence[str] = field(default_factory=tuple)
    # S3 clients for input buckets when the configured store is local: building one costs ~0.1 s
    # of CPU, far more than the HEAD it is for, so they are made once per bucket
    _input_stores: dict[str, S3Store] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def input_store(self, bucket: str) -> Any:
        """A store able to HEAD objects of ``bucket`` (the configured one when it is S3)."""
        store = open_store(self.settings)
        if isinstance(store, S3Store):
            return store  # its client reads any bucket on its endpoint
        with self._lock:
            found = self._input_stores.get(bucket)
            if found is None:
                s = self.settings
                found = self._input_stores[bucket] = S3Store(
                    bucket, endpoint_url=s.s3_endpoint_url, region=s.s3_region, cache_dir=s.resolved_data_dir / "cache")
            return found


# --- helpers ----------------------------------------------------------------------------------
def default_allowed_buckets(settings: Settings) -> frozenset[str]:
    """The configured store's bucket plus ``settings.api_allowed_buckets`` (comma list) if set."""
    buckets: set[str] = set()
    url = settings.resolved_storage_url
    if url.startswith("s3://"):
        buckets.add(urlparse(url).netloc)
    extra = getattr(settings, "api_allowed_buckets", None)
    if isinstance(extra, str):
        extra = [b for b in (x.strip() for x in extra.split(",")) if b]
    buckets.update(extra or ())
    return frozenset(buckets)


def _project_of(s: Any, principal: Principal, requested: str | None) -> Any:
    if requested is not None and not principal.owns_project(requested):
        # the same answer whether or not that project exists: a token cannot probe for names
        raise ApiError(403, f"this token is not valid for project {requested!r} (it belongs to project {principal.project_name!r})",
                       field="project")
    return repo.get_project(s, principal.project_id)


def _check_s3_uri(ctx: ApiContext, uri: str, field_name: str) -> str:
    """An s3:// input: the bucket must be allowed and the object must exist (HEAD)."""
    parsed = urlparse(uri)
    if parsed.scheme != "s3":
        raise ApiError(422, f"{uri!r}: give an s3:// URI or upload the file (paths and file:// URIs on the server are not accepted)",
                       field=field_name)
    try:
        bucket, key = split_s3_uri(uri)
    except Exception:
        raise ApiError(422, f"{uri!r} is not a valid s3:// URI", field=field_name) from None
    if not key:
        raise ApiError(422, f"{uri!r} names a bucket but no object", field=field_name)
    if bucket not in ctx.allowed_buckets:
        allowed = ", ".join(sorted(ctx.allowed_buckets)) or "none configured"
        raise ApiError(403, f"bucket {bucket!r} of {uri} is not allowed (allowed buckets: {allowed})", field=field_name)
    if not ctx.input_store(bucket).exists(uri):  # a missing bucket raises StorageUnavailableError (503): a deployment problem
        raise ApiError(422, f"{uri} does not exist", field=field_name)
    return uri


def _store_upload(ctx: ApiContext, up: Upload, media_type: str) -> str:
    """Copy an uploaded file into the object store (content-addressed); returns its URI."""
    tmp_dir = ctx.settings.resolved_data_dir / "tmp"
    tmp_dir.mkdir(parents=True, exist_ok=True)
    suffix = suffix_of(up.filename or "")
    fd, name = tempfile.mkstemp(prefix="upload-", suffix=suffix, dir=tmp_dir)
    path = Path(name)
    try:
        with open(fd, "wb") as out:
            up.file.seek(0)
            shutil.copyfileobj(up.file, out, 1024 * 1024)
        return open_store(ctx.settings).put_file(path, media_type=up.content_type or media_type, suffix=suffix).uri
    finally:
        path.unlink(missing_ok=True)


def _fingerprint(sub: ShotSubmission, uploads: dict[str, list[Upload]]) -> str:
    """A digest of what was asked, to tell a retried request from a different one with the same key."""
    body = sub.model_dump(mode="json")
    h = hashlib.sha256(json.dumps(body, sort_keys=True).encode())
    for name in sorted(uploads):
        for up in uploads[name]:
            up.file.seek(0)
            while block := up.file.read(1024 * 1024):
                h.update(block)
            up.file.seek(0)
    return h.hexdigest()


def _scoped_key(project_id: str, key: str) -> str:
    # shot.idempotency_key is unique across the database; scoping it by project keeps two
    # projects that happen to pick the same key apart (and one from seeing the other's shot)
    return f"{project_id}:{key}"


# --- submission -------------------------------------------------------------------------------
def submit_shot(
    ctx: ApiContext,
    principal: Principal,
    sub: ShotSubmission,
    *,
    uploads: dict[str, list[Upload]] | None = None,
    idempotency_key: str | None = None,
) -> tuple[dict[str, Any], bool]:
    """Record (and start) a shot; returns ``(shot detail, created)``. ``created`` is False when an
    Idempotency-Key matched an earlier submission (nothing new was created)."""
    uploads = uploads or {}
    if idempotency_key is not None:
        idempotency_key = idempotency_key.strip()
        if not idempotency_key or len(idempotency_key) > IDEMPOTENCY_KEY_MAX:
            raise ApiError(422, f"Idempotency-Key must be 1 to {IDEMPOTENCY_KEY_MAX} characters", field="Idempotency-Key", location="header")
    fingerprint = _fingerprint(sub, uploads)
    key = _scoped_key(principal.project_id, idempotency_key) if idempotency_key else None

    # 1. validate
    with session_scope(ctx.settings) as s:
        project = _project_of(s, principal, sub.project)
        project_id, project_name = str(project.id), project.name
        if key is not None:
            existing = queue.find_shot_by_idempotency_key(s, key)
            if existing is not None:
                return _replay(ctx, principal, existing.id, fingerprint), False
        try:
            use = trust.check_submission(s, project, sub.identity, option='"identity": an id or a name', listing="GET /v1/identities")
        except ConsentError as exc:
            raise ApiError(409, str(exc), field="identity") from None
        except PolicyError as exc:
            raise ApiError(409, str(exc), field="project") from None
        except InputError as exc:
            raise ApiError(422, str(exc), field="identity") from None
        identity_id, identity_photos = use.identity_id, list(use.photos)
        if sub.identity is not None and not identity_photos and not sub.sources and not uploads.get("sources"):
            raise ApiError(409, f"identity {use.identity_name!r}: its reference photos were deleted (consent revoked); "
                                "it cannot be the source", field="identity")

    params = ShotParams(
        mode=sub.mode, backend=sub.backend, face=sub.face, source_face=sub.source_face, expression=sub.expression,
        edits=tuple(sub.edits), chunk_size=sub.chunk_size or ctx.settings.chunk_size,
    )
    try:
        shots.check_shot_params(params)  # the backend exists and swaps this mode: refused now, not at swap time
    except UsageError as exc:
        raise ApiError(422, str(exc), field="backend") from None

    plate_upload = uploads.get("plate") or []
    plate_uri = None if plate_upload else _check_s3_uri(ctx, sub.plate, "plate")
    source_uris = [_check_s3_uri(ctx, u, f"sources[{i}]") for i, u in enumerate(sub.sources)]
    if not source_uris and not uploads.get("sources") and not identity_photos:
        raise ApiError(422, "at least one source photo is needed (sources, or an identity with reference photos)", field="sources")

    # 2. store uploads, record the shot and a queued run
    if plate_upload:
        plate_uri = _store_upload(ctx, plate_upload[0], "video/mp4")
    source_uris += [_store_upload(ctx, up, "image/jpeg") for up in uploads.get("sources", [])]
    if not source_uris:
        source_uris = identity_photos
    assert plate_uri is not None
    code = sub.code or f"{_stem(plate_upload[0].filename if plate_upload else plate_uri)}-{uuid.uuid4().hex[:8]}"
    with session_scope(ctx.settings) as s:
        shot = repo.create_shot(
            s, project_id=project_id, code=code, plate_asset_id=None,
            params={"plate": plate_uri, "sources": source_uris, **params.model_dump(mode="json")},
            source_asset_ids=[], identity_id=identity_id, priority=sub.priority, idempotency_key=key,
        )
        shot_id = str(shot.id)
        if repo.latest_run_for_shot(s, shot.id) is not None:
            # a concurrent request with the same key won the race: it owns the shot and its run
            created = False
        else:
            created = True
            run = repo.create_run(s, shot.id, params=params.model_dump(mode="json"))
            run_id = str(run.id)
            repo.add_audit_event(s, actor=principal.actor, action="shot.submitted", subject_type="shot", subject_id=shot_id,
                                 detail={"code": code, "project": project_name, "run_id": run_id, "plate": plate_uri,
                                         "identity_id": identity_id, "request_sha256": fingerprint,
                                         "idempotency_key": idempotency_key, "schedule": sub.schedule.value,
                                         "review": sub.review})
    if not created:
        return _replay(ctx, principal, shot_id, fingerprint), False

    # 3. start it
    if sub.schedule is Schedule.now:
        _start(ctx, principal, shot_id, run_id, project_name, sub, sub.review)
    return shot_detail(ctx, principal, shot_id, issue_links=False), True


def _accepted_kwargs(fn: Callable[..., Any], **kwargs: Any) -> dict[str, Any]:
    """The keyword arguments ``fn`` takes (starters of tests and benchmarks may take no tags)."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return {}
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return kwargs
    return {k: v for k, v in kwargs.items() if k in params}


def _submitted_review(s: Any, shot_id: str) -> str:
    """The review mode a shot was submitted with (``auto`` for shots submitted before there was one)."""
    events = repo.list_audit_events(s, subject_type="shot", subject_id=shot_id, action="shot.submitted", limit=1)
    return str((events[0].detail or {}).get("review") or "auto") if events else "auto"


def _start(ctx: ApiContext, principal: Principal, shot_id: str, run_id: str, project_name: str, sub: ShotSubmission | None,
           review_mode: str = "auto") -> None:
    tags = [f"project:{project_name}", *ctx.tags]
    if sub is not None:
        tags += [f"mode:{sub.mode.value}", f"priority:{sub.priority}"]
    try:
        flow_run_id = ctx.start_run(shot_id, run_id, **_accepted_kwargs(ctx.start_run, tags=tags, review=review_mode))
    except ServiceUnavailableError as exc:
        with session_scope(ctx.settings) as s:
            repo.set_run_status(s, run_id, "failed", error=f"not started: {exc}")
            repo.add_audit_event(s, actor=principal.actor, action="shot.start_failed", subject_type="shot", subject_id=shot_id,
                                 detail={"run_id": run_id, "error": str(exc)})
        raise
    if flow_run_id:
        with session_scope(ctx.settings) as s:
            queue.set_run_flow_run(s, run_id, flow_run_id)


def _replay(ctx: ApiContext, principal: Principal, shot_id: Any, fingerprint: str) -> dict[str, Any]:
    """The answer to a retried submission: the same shot, restarted only if it never started."""
    shot_id = str(shot_id)
    dispatch.reconcile_shot(shot_id, settings=ctx.settings)  # a run that crashed in Prefect is restarted below
    with session_scope(ctx.settings) as s:
        events = repo.list_audit_events(s, subject_type="shot", subject_id=shot_id, action="shot.submitted", limit=1)
        original = (events[0].detail or {}).get("request_sha256") if events else None
        if original is not None and original != fingerprint:
            raise ApiError(409, "Idempotency-Key was already used for a different request", field="Idempotency-Key", location="header")
        run = repo.latest_run_for_shot(s, shot_id)
        shot = repo.get_shot(s, shot_id)
        project_name = repo.get_project(s, shot.project_id).name
        restart = (run is not None and run.status == "failed" and run.prefect_flow_run_id is None and (run.error or "").startswith("not started:")) \
            or dispatch.retriable(run)
        review_mode = _submitted_review(s, shot_id)
        if restart:
            run_id = str(repo.create_run(s, shot.id, params=run.params).id)
            repo.add_audit_event(s, actor=principal.actor, action="shot.resubmitted", subject_type="shot", subject_id=shot_id,
                                 detail={"run_id": run_id})
    if restart:
        _start(ctx, principal, shot_id, run_id, project_name, None, review_mode)
    return shot_detail(ctx, principal, shot_id, issue_links=False)


def _stem(name: str) -> str:
    stem = Path(urlparse(name).path or name).stem or "shot"
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in stem)[:80]


# --- views --------------------------------------------------------------------------------------
def _visible_shot(s: Any, principal: Principal, shot_id: str) -> Any:
    """The shot if it belongs to the caller's project; 404 otherwise (whether or not it exists)."""
    try:
        shot = repo.get_shot(s, shot_id)
    except RecordNotFoundError:
        shot = None
    if shot is None or str(shot.project_id) != principal.project_id:
        raise ApiError(404, f"shot {shot_id} not found", location="path", field="shot_id")
    return shot


def _progress(stage_rows: Iterable[Any], mode: str) -> dict[str, Any]:
    rows = list(stage_rows)
    plan = [st for st in STAGES_HEAD if mode == "head" or st != "background"]
    plan += sorted({r.stage for r in rows} - set(plan))  # stages added later still show up
    n_chunks = None
    for r in rows:
        if r.stage == "ingest" and r.status in ("done", "reused") and isinstance(r.result, dict):
            chunks = r.result.get("chunks")
            n_chunks = len(chunks) if isinstance(chunks, list) else None
    out, current = [], None
    for st in plan:
        mine = [r for r in rows if r.stage == st]
        ok = [r for r in mine if r.status in ("done", "reused")]
        failed = any(r.status == "failed" for r in mine)
        item: dict[str, Any] = {"stage": st}
        if st in CHUNKED_STAGES:
            done_chunks = len({r.chunk_index for r in ok if r.chunk_index is not None})
            item["chunks_done"], item["chunks_total"] = done_chunks, n_chunks
            done = n_chunks is not None and done_chunks >= n_chunks and not any(r.status == "running" for r in mine)
        else:
            done = bool(ok)
        item["status"] = "done" if done else "failed" if failed else "running" if mine else "pending"
        if item["status"] in ("running", "failed") and current is None:
            current = st
        out.append(item)
    return {"stages_done": sum(1 for i in out if i["status"] == "done"), "stages_total": len(out), "current": current, "stages": out}


def _qc_view(s: Any, run: Any, rows: Sequence[Any]) -> dict[str, Any] | None:
    qc = repo.latest_qc(s, run.id)
    if qc is not None:
        return {"verdict": qc.verdict, "metrics": qc.metrics or {}, "reasons": reason_records(qc.reasons)}
    # the qc stage's own record is there as soon as QC ends (before render and the run summary)
    for r in reversed(list(rows)):
        if r.stage == "qc" and r.status in ("done", "reused") and isinstance(r.result, dict):
            res = r.result
            return {"verdict": res.get("verdict"), "metrics": res.get("metrics") or {}, "reasons": reason_records(res.get("reasons"))}
    summary_qc = (run.summary or {}).get("qc")
    if isinstance(summary_qc, dict):
        metrics = {k: v for k, v in summary_qc.items() if k not in ("verdict", "reasons")}
        return {"verdict": summary_qc.get("verdict"), "metrics": metrics, "reasons": reason_records(summary_qc.get("reasons"))}
    return None


def shot_detail(ctx: ApiContext, principal: Principal, shot_id: str, *, issue_links: bool = True) -> dict[str, Any]:
    """Everything ``GET /v1/shots/{id}`` shows. With ``issue_links``, outputs on S3 get presigned
    download URLs and each issued link is recorded as a ``download_link.issued`` audit event."""
    dispatch.reconcile_shot(shot_id, settings=ctx.settings)  # a flow run that ended in Prefect without recast shows as such
    with session_scope(ctx.settings) as s:
        shot = _visible_shot(s, principal, shot_id)
        project = repo.get_project(s, shot.project_id)
        params = dict(shot.params or {})
        out: dict[str, Any] = {
            "id": str(shot.id), "code": shot.code, "project": project.name, "status": shot.status, "priority": shot.priority,
            "created": shot.created, "updated": shot.updated,
            "identity_id": None if shot.identity_id is None else str(shot.identity_id),
            "plate": params.pop("plate", None), "params": {k: v for k, v in params.items() if k != "sources"},
            "review": _submitted_review(s, str(shot.id)), "run": None, "progress": None, "qc": None, "outputs": [], "source_vetting": [],
        }
        run = repo.latest_run_for_shot(s, shot.id)
        if run is None:
            return out
        out["run"] = {"id": str(run.id), "status": run.status, "prefect_flow_run_id": run.prefect_flow_run_id,
                      "created": run.created, "started": run.started, "ended": run.ended, "error": run.error}
        rows = repo.stage_runs_for_run(s, run.id)
        out["progress"] = _progress(rows, str(params.get("mode", "head")))
        out["qc"] = _qc_view(s, run, rows)
        out["source_vetting"] = shots.source_vetting_in(s, run)
        if run.output_asset_id is not None:
            a = repo.get_asset(s, run.output_asset_id)
            render = next((r for r in reversed(repo.renders_for_run(s, run.id)) if r.asset_id == a.id), None)
            out["outputs"].append({"role": "deliverable", "uri": a.uri, "sha256": a.sha256, "size": a.size,
                                   # a deliverable nobody approved (QC said review or fail, and no supervisor
                                   # approved it) is shown as such: it finished, it was not accepted
                                   "approved": bool(render.approved) if render is not None else None,
                                   "withdrawn": render is not None and render.revoked_at is not None})
    if issue_links and out["outputs"]:
        store = open_store(ctx.settings)
        issued = []
        for o in out["outputs"]:
            if o.get("withdrawn"):
                continue  # consent revoked: no new links to it
            if o["uri"].startswith("s3://") and store.owns(o["uri"]):
                o["download_url"] = store.presign(o["uri"], ctx.presign_expires_s)
                o["expires_in"] = ctx.presign_expires_s if o["download_url"] else None
                if o["download_url"]:
                    issued.append({"uri": o["uri"], "role": o["role"], "expires_in": ctx.presign_expires_s})
        if issued:
            with session_scope(ctx.settings) as s:
                for item in issued:
                    repo.add_audit_event(s, actor=principal.actor, action="download_link.issued", subject_type="shot",
                                         subject_id=out["id"], detail={**item, "run_id": out["run"]["id"]})
    return out


def list_identities(ctx: ApiContext, principal: Principal) -> dict[str, Any]:
    """The identities the caller's project may name in a submission (a consent names the project):
    ids, names, consent status and validity; no photos."""
    with session_scope(ctx.settings) as s:
        project = repo.get_project(s, principal.project_id)
        return {"project": project.name, "consent_required": bool(project.consent_required),
                "items": trust.list_identities(s, str(project.id))}


def list_shots(ctx: ApiContext, principal: Principal, *, project: str | None, status: str | None, page: int, page_size: int) -> dict[str, Any]:
    """One page of the caller's project's shots, newest first."""
    if status is not None and status not in SHOT_STATUSES:
        raise ApiError(422, f"status {status!r}: choose from {', '.join(SHOT_STATUSES)}", field="status", location="query")
    with session_scope(ctx.settings) as s:
        proj = _project_of(s, principal, project)
        rows, total = queue.page_shots(s, project_id=proj.id, status=status, offset=(page - 1) * page_size, limit=page_size)
        items = [{"id": str(r.id), "code": r.code, "project": proj.name, "status": r.status, "priority": r.priority,
                  "created": r.created, "updated": r.updated} for r in rows]
    return {"items": items, "page": page, "page_size": page_size, "total": total}


# --- review and cancel --------------------------------------------------------------------------
def review_shot(ctx: ApiContext, principal: Principal, shot_id: str, *, decision: str, note: str | None, reviewer: str | None,
                params: dict[str, Any] | None = None) -> dict[str, Any]:
    """A supervisor's decision on the shot's latest run, through the same path as ``recast review``
    (:func:`recast.services.review.submit_decision`): a run paused for review is resumed with it
    (the flow records it and renders, ends or re-runs); otherwise it is recorded and applied
    here, a re-run then starting as a ``swap-shot`` deployment run."""
    with session_scope(ctx.settings) as s:
        shot = _visible_shot(s, principal, shot_id)
        if repo.latest_run_for_shot(s, shot.id) is None:
            raise ApiError(409, f"shot {shot_id} has no run to review")
        shot_id, project_name = str(shot.id), repo.get_project(s, shot.project_id).name
        review_mode = _submitted_review(s, shot_id)

    def start_rerun(rerun_shot_id: str, new_run_id: str) -> None:
        _start(ctx, principal, rerun_shot_id, new_run_id, project_name, None, review_mode)

    try:
        outcome = review.submit_decision(shot_id, decision, reviewer=reviewer or principal.actor, note=note or "", params=params,
                                         via="api", actor=principal.actor, start_rerun=start_rerun)
    except UsageError as exc:  # e.g. re-run parameters that are not valid shot parameters
        raise ApiError(422, str(exc), field="params" if decision == "rerun" else "decision") from None
    return {"id": outcome.review_id, "shot_id": outcome.shot_id, "run_id": outcome.run_id, "decision": outcome.decision,
            "reviewer": outcome.reviewer, "note": outcome.note or None, "created": outcome.at, "status": outcome.run_status,
            "message": outcome.message, "resumed_flow_run": outcome.resumed_flow_run, "new_run_id": outcome.new_run_id}


def cancel_shot(ctx: ApiContext, principal: Principal, shot_id: str) -> dict[str, Any]:
    """Cancel the shot's latest run: its Prefect flow run (if started) and the run record."""
    with session_scope(ctx.settings) as s:
        shot = _visible_shot(s, principal, shot_id)
        run = repo.latest_run_for_shot(s, shot.id)
        if run is None:
            raise ApiError(409, f"shot {shot_id} has no run to cancel")
        if run.status in RUN_TERMINAL_STATUSES:
            raise ApiError(409, f"shot {shot_id}: its run {run.id} already ended ({run.status})")
        run_id, flow_run_id = str(run.id), run.prefect_flow_run_id
    prefect_state = ctx.cancel_run(flow_run_id) if flow_run_id else None  # 503 if Prefect is down: nothing changed
    with session_scope(ctx.settings) as s:
        run = queue.request_cancel(s, run_id, reason="cancelled through the API")
        repo.add_audit_event(s, actor=principal.actor, action="shot.cancelled", subject_type="shot", subject_id=shot_id,
                             detail={"run_id": run_id, "prefect_flow_run_id": flow_run_id, "prefect_state": prefect_state})
        return {"shot_id": str(run.shot_id), "run_id": run_id, "status": run.status, "prefect_state": prefect_state}


__all__ = ["ApiContext", "ApiError", "Upload", "cancel_shot", "default_allowed_buckets", "list_identities", "list_shots", "review_shot",
           "shot_detail", "submit_shot"]
