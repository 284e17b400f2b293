"""Fixtures for the HTTP API tests: a real uvicorn server on loopback, a real Prefect API (the
session's test harness) with the recast deployments registered, and a process worker.

Imported by ``test_api.py`` (``from tests.integration.conftest_api import *``) rather than put in
``conftest.py``, so the other integration tests do not pay for them.
"""

from __future__ import annotations

import asyncio
import contextvars
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import IMAGES
from tests.studio_credentials import studio_credentials_env

SOURCE_PHOTO = IMAGES / "deepface_img17.jpg"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerThread:
    """uvicorn serving an app on 127.0.0.1:<free port> in a thread, started and stopped cleanly.

    The thread runs in a copy of the caller's context: Prefect keeps its settings (the harness's
    PREFECT_API_URL) in a context variable, which threads do not inherit by themselves.
    """

    def __init__(self, app: Any) -> None:
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off", access_log=False)
        self.server = uvicorn.Server(config)
        ctx = contextvars.copy_context()
        self.thread = threading.Thread(target=ctx.run, args=(self.server.run,), name=f"uvicorn-{self.port}", daemon=True)

    def __enter__(self) -> "ServerThread":
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


class WorkerThread:
    """A Prefect ``ProcessWorker`` for a work pool, polling every second, in a thread.

    ``limit=1`` runs one flow run at a time, so a second submission stays *scheduled* while the
    first runs (the cancellation test relies on it).
    """

    def __init__(self, pool: str, *, limit: int | None = 1) -> None:
        self.pool, self.limit = pool, limit
        self._stop = threading.Event()
        ctx = contextvars.copy_context()
        self.thread = threading.Thread(target=ctx.run, args=(asyncio.run, self._main()), name=f"worker-{pool}", daemon=True)
        self.error: BaseException | None = None

    async def _main(self) -> None:
        import anyio
        from prefect.settings import PREFECT_WORKER_QUERY_SECONDS, temporary_settings
        from prefect.workers.process import ProcessWorker

        try:
            with temporary_settings({PREFECT_WORKER_QUERY_SECONDS: 1}):
                worker = ProcessWorker(work_pool_name=self.pool, limit=self.limit, name=f"test-{self.pool}-{uuid.uuid4().hex[:6]}")
                async with anyio.create_task_group() as tg:
                    tg.start_soon(worker.start)
                    while not self._stop.is_set():
                        await anyio.sleep(0.2)
                    tg.cancel_scope.cancel()
        except BaseException as exc:  # noqa: BLE001 - reported by the test that needs the worker
            self.error = exc

    def __enter__(self) -> "WorkerThread":
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self.thread.join(timeout=30)


@dataclass
class ApiStack:
    """The running pieces: the API's URL, the settings it runs with, the S3 bucket and tokens."""

    url: str
    settings: Any
    endpoint: str
    bucket: str
    other_bucket: str
    project: str
    token: str
    other_token: str
    worker: WorkerThread
    extra: dict[str, Any] = field(default_factory=dict)

    def headers(self, token: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token or self.token}"}


def make_token(settings: Any, project: str, *, consent_required: bool = False) -> str:
    from recast.db import repository as repo
    from recast.db import tokens
    from recast.db.session import session_scope

    with session_scope(settings) as s:
        p = repo.get_or_create_project(s, project, consent_required=consent_required)
        return tokens.create_token(s, project_id=p.id, name=f"test-{project}")[1]


@pytest.fixture(scope="module")
def api_stack(prefect_server, s3_server, s3_admin, tmp_path_factory) -> Iterator[ApiStack]:
    """recast serve (uvicorn, loopback) + Prefect harness with the deployments + one cpu worker.

    Storage is S3 (moto's server), the database the embedded SQLite of a fresh data directory;
    the flow-run subprocesses the worker starts inherit the RECAST_* environment set here.
    """
    from recast.api.app import create_app
    from recast.db.migrate import ensure_schema
    from recast.flows.deployments import register_deployments
    from recast.settings import get_settings, reset_settings

    bucket = f"recast-api-{uuid.uuid4().hex[:10]}"
    other = f"recast-other-{uuid.uuid4().hex[:10]}"
    s3_admin.create_bucket(Bucket=bucket)
    s3_admin.create_bucket(Bucket=other)
    data = tmp_path_factory.mktemp("api") / "data"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RECAST_DATA_DIR", str(data))
        mp.setenv("RECAST_STORAGE_URL", f"s3://{bucket}/studio")
        mp.setenv("RECAST_S3_ENDPOINT_URL", s3_server)
        mp.setenv("RECAST_CHUNK_SIZE", "20")
        for name, value in studio_credentials_env(tmp_path_factory.mktemp("studio-ca")).items():  # S3: a service
            mp.setenv(name, value)
        mp.delenv("RECAST_DATABASE_URL", raising=False)
        reset_settings()
        settings = get_settings()
        ensure_schema(settings)
        register_deployments()
        token = make_token(settings, "api-test")
        other_token = make_token(settings, "api-other")
        with WorkerThread("cpu", limit=1) as worker, ServerThread(create_app(settings)) as server:
            yield ApiStack(url=server.url, settings=settings, endpoint=s3_server, bucket=bucket, other_bucket=other,
                           project="api-test", token=token, other_token=other_token, worker=worker)
        reset_settings()


def upload(s3_admin: Any, bucket: str, path: Path, key: str) -> str:
    s3_admin.upload_file(str(path), bucket, key)
    return f"s3://{bucket}/{key}"


__all__ = ["ApiStack", "SOURCE_PHOTO", "ServerThread", "WorkerThread", "api_stack", "free_port", "make_token", "upload"]
