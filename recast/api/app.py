"""The FastAPI application of recast (``recast serve``); OpenAPI at ``/openapi.json``, docs at ``/docs``.

Errors are answered as follows (the body is ``{"detail": ...}``):

| status | when |
|---|---|
| 401 | no bearer token, or an invalid or revoked one |
| 403 | the token's project is not the one named (``project``), or an input bucket is not allowed |
| 404 | no such shot in the token's project (another project's shot included: see :mod:`recast.api.auth`) |
| 409 | refused by policy at submission, with the reason (a project that requires consent and no ``identity``, no consent covering the project now, an identity whose photos were deleted, the scratch project turned off): nothing is stored; an Idempotency-Key reused for a different request; a run that already ended; a review of a shot with no run |
| 413 | a JSON body over 1 MiB, or an upload over 2 GiB (limits configurable) |
| 415 | a body that is neither JSON nor multipart |
| 422 | validation: ``detail`` is a list of ``{"loc": [...,"<field>"], "msg": ...}`` naming the field (also a plate or source URI that does not exist, an unknown or ambiguous identity, a backend that does not swap the mode, re-run ``params`` that are not valid shot parameters) |
| 503 | database, object store or Prefect server (or the ``swap-shot`` deployment) unavailable; ``Retry-After`` is set |
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse

from recast import errors
from recast.api.schemas import ShotSubmission
from recast.api.service import ApiContext, ApiError, CancelRun, StartRun, default_allowed_buckets
from recast.settings import Settings, configure_prefect_environment, get_settings

log = logging.getLogger("recast.api")

MiB = 1024 * 1024
DEFAULT_MAX_JSON_BYTES = 1 * MiB
DEFAULT_MAX_UPLOAD_BYTES = 2 * 1024 * MiB


class BodyTooLarge(Exception):
    """Raised from inside the body stream when a request goes over its limit."""


class BodySizeLimit:
    """ASGI middleware: 413 for bodies over the limit, before or while they are read.

    A declared ``Content-Length`` over the limit is refused before a byte is read; a chunked body
    is counted as it streams and cut off at the limit. Multipart bodies get the upload limit
    (Starlette spools file parts to temporary files on disk, never whole into memory); every
    other body gets the JSON limit.
    """

    def __init__(self, app: Any, *, max_json: int, max_upload: int) -> None:
        self.app, self.max_json, self.max_upload = app, max_json, max_upload

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        multipart = headers.get("content-type", "").lower().startswith("multipart/")
        limit = self.max_upload if multipart else self.max_json
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._too_large(send, limit)
            return
        seen = 0
        started = False

        async def counted_receive() -> dict:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge()
            return message

        async def tracking_send(message: dict) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await self._too_large(send, limit)

    @staticmethod
    async def _too_large(send: Callable, limit: int) -> None:
        body = JSONResponse({"detail": f"request body too large: the limit is {limit} bytes"}, status_code=413)
        await send({"type": "http.response.start", "status": 413, "headers": body.raw_headers})
        await send({"type": "http.response.body", "body": body.body})


def _status_for(exc: errors.RecastError) -> int:
    if isinstance(exc, errors.RecordNotFoundError):
        return 404
    if isinstance(exc, errors.ConsentError):
        return 409
    if isinstance(exc, errors.PolicyError):
        return 403
    if isinstance(exc, errors.ServiceUnavailableError):
        return 503
    if isinstance(exc, (errors.InputError, errors.UsageError)):
        return 422
    return 500


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        if exc.status == 422 and exc.field:
            detail: Any = [{"loc": [exc.location, exc.field], "msg": exc.message, "type": "value_error"}]
        else:
            detail = exc.message
        body: dict[str, Any] = {"detail": detail}
        if exc.field and exc.status != 422:
            body["field"] = exc.field
        return JSONResponse(body, status_code=exc.status)

    @app.exception_handler(errors.RecastError)
    async def _recast_error(_: Request, exc: errors.RecastError) -> JSONResponse:
        status = _status_for(exc)
        headers = {"Retry-After": "30"} if status == 503 else None
        if status == 500:
            log.exception("internal error", exc_info=exc)
        return JSONResponse({"detail": str(exc)}, status_code=status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        # the same shape as FastAPI's own, minus the echoed input (it may be a large body)
        detail = [{k: v for k, v in e.items() if k not in ("input", "ctx", "url")} for e in exc.errors()]
        return JSONResponse({"detail": jsonable_encoder(detail)}, status_code=422)


def _openapi(app: FastAPI) -> Callable[[], dict[str, Any]]:
    def build() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        comps = schema.setdefault("components", {}).setdefault("schemas", {})
        sub = ShotSubmission.model_json_schema(ref_template="#/components/schemas/{model}")
        comps.update(sub.pop("$defs", {}))
        comps["ShotSubmission"] = sub
        form = {**sub, "title": "ShotSubmissionForm", "properties": dict(sub["properties"])}
        form["properties"]["plate"] = {"anyOf": [{"type": "string", "format": "binary"}, {"type": "string"}],
                                       "description": "the plate: an uploaded file or an s3:// URI"}
        form["properties"]["sources"] = {"type": "array", "items": {"anyOf": [{"type": "string", "format": "binary"}, {"type": "string"}]},
                                         "description": "source photos: uploaded files or s3:// URIs (repeat the field)"}
        comps["ShotSubmissionForm"] = form
        app.openapi_schema = schema
        return schema

    return build


def create_app(
    settings: Settings | None = None,
    *,
    start_run: StartRun | None = None,
    cancel_run: CancelRun | None = None,
    allowed_buckets: set[str] | frozenset[str] | list[str] | None = None,
    presign_expires_s: int = 3600,
    max_json_bytes: int | None = None,
    max_upload_bytes: int | None = None,
) -> FastAPI:
    """The recast HTTP API for ``settings`` (default: the process settings).

    ``start_run(shot_id, run_id) -> flow_run_id`` starts a shot (default: the ``swap-shot``
    deployment through :func:`recast.flows.deployments.start_swap_shot_run`); ``cancel_run``
    cancels a flow run. Tests and benchmarks inject their own. ``allowed_buckets`` are the buckets
    plates and sources may be read from (default: the store's bucket plus
    ``settings.api_allowed_buckets``).
    """
    settings = settings or get_settings()
    configure_prefect_environment(settings)
    from recast.db.migrate import ensure_schema

    ensure_schema(settings)  # fail at start (not on the first request) when the database is not ready
    if start_run is None or cancel_run is None:
        from recast.flows import deployments

        start_run = start_run or deployments.start_swap_shot_run
        cancel_run = cancel_run or deployments.cancel_flow_run
    buckets = frozenset(allowed_buckets) if allowed_buckets is not None else default_allowed_buckets(settings)
    max_json = max_json_bytes or getattr(settings, "api_max_json_bytes", None) or DEFAULT_MAX_JSON_BYTES
    max_upload = max_upload_bytes or getattr(settings, "api_max_upload_bytes", None) or DEFAULT_MAX_UPLOAD_BYTES

    from recast import __version__ as version
    from recast.api.routes import router

    app = FastAPI(
        title="recast API",
        version=str(version),
        description="Submit head/face replacement shots, follow their stages and QC, review, cancel and download results.",
        openapi_url="/openapi.json",
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.api = ApiContext(settings=settings, start_run=start_run, cancel_run=cancel_run, allowed_buckets=buckets,
                               presign_expires_s=presign_expires_s, max_json_bytes=max_json, max_upload_bytes=max_upload)
    app.include_router(router)

    @app.get("/healthz", tags=["service"], summary="Liveness (no auth)")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    _install_error_handlers(app)
    app.add_middleware(BodySizeLimit, max_json=max_json, max_upload=max_upload)
    app.openapi = _openapi(app)  # type: ignore[method-assign]
    return app


__all__ = ["BodySizeLimit", "create_app"]
