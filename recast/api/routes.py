"""The ``/v1`` routes: parse the request, call :mod:`recast.api.service`, shape the response.

Handlers that only touch the database are plain ``def`` (FastAPI runs them in its thread pool);
the submission is ``async`` because it reads a JSON or multipart body itself (one route serves
both) and hands the blocking work to the thread pool.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from recast.api import service
from recast.api.auth import Principal, bearer_scheme, require_principal
from recast.api.schemas import CancelView, ErrorView, IdentityList, ReviewRequest, ReviewView, ShotDetail, ShotPage, ShotSubmission
from recast.api.service import ApiContext, ApiError, Upload

router = APIRouter(prefix="/v1", tags=["shots"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorView, "description": "no token, or an invalid or revoked one"},
    403: {"model": ErrorView, "description": "the token's project is not the one asked for"},
    404: {"model": ErrorView, "description": "no such shot in the token's project"},
    503: {"model": ErrorView, "description": "database, object store or Prefect server unavailable"},
}
MAX_FORM_FILES = 17  # one plate and up to 16 source photos


def principal(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer_scheme)) -> Principal:
    """The authenticated caller (401 otherwise)."""
    return require_principal(request, credentials)


def _ctx(request: Request) -> ApiContext:
    return request.app.state.api


def _validation_error(exc: ValidationError) -> RequestValidationError:
    return RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)])


async def _read_submission(request: Request, form: Any | None) -> tuple[ShotSubmission, dict[str, list[Upload]]]:
    uploads: dict[str, list[Upload]] = {}
    if form is None:
        try:
            data = json.loads(await request.body() or b"null")
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise RequestValidationError([{"loc": ("body",), "msg": f"body is not valid JSON: {exc}", "type": "json_invalid"}]) from None
        if not isinstance(data, dict):
            raise RequestValidationError([{"loc": ("body",), "msg": "body must be a JSON object", "type": "model_type"}])
    else:
        data = {}
        for name in set(form.keys()):
            values = form.getlist(name)
            files = [v for v in values if isinstance(v, UploadFile)]
            texts = [v for v in values if not isinstance(v, UploadFile)]
            if files:
                if name not in ("plate", "sources"):
                    raise ApiError(422, "only plate and sources may be uploaded files", field=name)
                uploads[name] = [Upload(f.filename or name, f.file, f.content_type) for f in files]
            if name in ("sources", "edits"):
                data[name] = texts
            elif texts:
                data[name] = texts[-1]
            elif name == "plate" and files:
                data["plate"] = f"upload:{files[0].filename or 'plate'}"  # placeholder: the upload wins
    try:
        return ShotSubmission.model_validate(data), uploads
    except ValidationError as exc:
        raise _validation_error(exc) from None


@router.post(
    "/shots",
    status_code=201,
    response_model=ShotDetail,
    responses={200: {"model": ShotDetail, "description": "an earlier submission with the same Idempotency-Key"},
               409: {"model": ErrorView, "description": "refused by policy, with the reason: the project requires consent and no identity "
                                                        "was named, no consent covers it now, the identity's photos were deleted; or an "
                                                        "Idempotency-Key reused for another request. Nothing was stored."},
               413: {"model": ErrorView, "description": "body too large"},
               415: {"model": ErrorView, "description": "a body that is neither JSON nor multipart"},
               422: {"model": ErrorView, "description": "validation: `detail` is a list of `{loc, msg}` naming the field (an unknown or "
                                                        "ambiguous identity, a backend that does not swap the mode, a plate or source "
                                                        "that does not exist...). Nothing was stored."},
               **_ERRORS},
    openapi_extra={"requestBody": {"required": True, "content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/ShotSubmission"}},
        "multipart/form-data": {"schema": {"$ref": "#/components/schemas/ShotSubmissionForm"}},
    }}},
    summary="Submit a shot",
)
async def submit_shot(request: Request, who: Principal = Depends(principal)) -> JSONResponse:
    """Record a shot and a queued run and start the ``swap-shot`` deployment; returns at once.

    The body is JSON, or multipart form data where ``plate`` and ``sources`` may be uploaded files
    (streamed to disk). Send an ``Idempotency-Key`` header to make retries safe: the same key
    gives back the same shot (200) and creates nothing new.
    """
    ctx = _ctx(request)
    key = request.headers.get("idempotency-key")
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "multipart/form-data":
        async with request.form(max_files=MAX_FORM_FILES, max_fields=200) as form:
            sub, uploads = await _read_submission(request, form)
            out, created = await run_in_threadpool(service.submit_shot, ctx, who, sub, uploads=uploads, idempotency_key=key)
    elif ctype in ("application/json", ""):
        sub, uploads = await _read_submission(request, None)
        out, created = await run_in_threadpool(service.submit_shot, ctx, who, sub, uploads=uploads, idempotency_key=key)
    else:
        raise ApiError(415, f"content type {ctype!r}: send application/json or multipart/form-data", field="Content-Type", location="header")
    return JSONResponse(ShotDetail.model_validate(out).model_dump(mode="json"), status_code=201 if created else 200)


@router.get("/identities", response_model=IdentityList, tags=["identities"], responses=_ERRORS, summary="Identities the project may use")
def list_identities(request: Request, who: Principal = Depends(principal)) -> Any:
    """The people a submission of the token's project may name as ``identity`` (by id, or by name
    where only one of them has it): every identity with a consent naming the project, with
    whether a consent covers the project now (else why not) and each consent's status and
    validity. Reference photos are never shown."""
    return service.list_identities(_ctx(request), who)


@router.get("/shots/{shot_id}", response_model=ShotDetail, responses=_ERRORS, summary="Status of a shot")
def get_shot(shot_id: str, request: Request, who: Principal = Depends(principal)) -> Any:
    """Status, stage progress, QC verdict and metrics, outputs (with presigned links on S3)."""
    return service.shot_detail(_ctx(request), who, shot_id)


@router.get("/shots", response_model=ShotPage, responses=_ERRORS, summary="List shots")
def list_shots(
    request: Request,
    project: str | None = Query(None, description="project name or id (default: the token's project)"),
    status: str | None = Query(None, description="only shots with this status"),
    page: int = Query(1, ge=1),
    page_size: int = Query(50, ge=1, le=500),
    who: Principal = Depends(principal),
) -> Any:
    """The project's shots, newest first, a page at a time."""
    return service.list_shots(_ctx(request), who, project=project, status=status, page=page, page_size=page_size)


@router.post("/shots/{shot_id}/review", status_code=201, response_model=ReviewView,
             responses={409: {"model": ErrorView, "description": "the shot has no run yet"}, **_ERRORS}, summary="Review a shot: approve, reject or re-run")
def review_shot(shot_id: str, body: ReviewRequest, request: Request, who: Principal = Depends(principal)) -> Any:
    """A supervisor's decision on the shot's latest run. A run paused for review (QC verdict
    ``review``) is resumed with it: ``approve`` renders and approves the deliverable, ``reject``
    ends the run with nothing rendered, ``rerun`` runs the shot again with ``params`` changed (a
    new run, reusing the stages the change does not touch). A run that is not paused gets the
    decision recorded: its deliverable approved or withdrawn, or a re-run started."""
    return service.review_shot(_ctx(request), who, shot_id, decision=body.decision, note=body.note, reviewer=body.reviewer,
                               params=body.params)


@router.post("/shots/{shot_id}/cancel", response_model=CancelView,
             responses={409: {"model": ErrorView, "description": "the run already ended"}, **_ERRORS}, summary="Cancel a shot")
def cancel_shot(shot_id: str, request: Request, who: Principal = Depends(principal)) -> Any:
    """Cancel the Prefect flow run of the shot's latest run (if started) and mark the run cancelled."""
    return service.cancel_shot(_ctx(request), who, shot_id)


__all__ = ["router"]
