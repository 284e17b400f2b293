"""What every stage task shares: work keys, the recast stage cache, provenance rows, asset storage.

A stage's *work key* is a hash of its inputs' sha256s, its parameters, the checksums of the
models it uses and the recast version. Before working, :func:`run_stage` looks the key up in the
database (a ``stage_run`` with status ``done``) and checks that every output it recorded still
exists in the object store; if so it records a ``reused`` stage run and returns the stored
record. This cache is shared by every worker through the database and the object store, and is
independent of the shot id, so a retry, a resumed run or the same plate in another shot lands on
the same work.
"""

from __future__ import annotations

import hashlib
import json
import logging
import socket
import sys
import tempfile
import threading
import time
import traceback
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Sequence, TypeVar

from pydantic import BaseModel

from recast import __version__
from recast.contracts import AssetRef, ModelRef, Record
from recast.db import repository as repo
from recast.db.session import session_scope
from recast.errors import RecastError, StorageUnavailableError
from recast.settings import Settings, get_settings
from recast.storage import ObjectStore, open_store

if TYPE_CHECKING:
    from recast.models.metrics import QCThresholds

log = logging.getLogger("recast")

R = TypeVar("R", bound=Record)
A = TypeVar("A")

#: the stage run whose ``compute`` is running in this context: :func:`store_asset` records the
#: lineage links of what it stores as that stage run's (content addressing shares one asset row
#: between every run that produced the same bytes; the links say which run made it from what)
_current_stage_run: ContextVar[str | None] = ContextVar("recast_stage_run", default=None)

_store_lock = threading.Lock()
_stores: dict[str, ObjectStore] = {}


def store(settings: Settings | None = None) -> ObjectStore:
    """The configured object store (one per storage URL per process)."""
    settings = settings or get_settings()
    url = settings.resolved_storage_url
    with _store_lock:
        if url not in _stores:
            _stores[url] = open_store(settings)
        return _stores[url]


def reset_stores() -> None:
    with _store_lock:
        _stores.clear()


def work_key(stage: str, *, inputs: Iterable[str], params: dict[str, Any], models: Iterable[ModelRef]) -> str:
    """Hash of what determines a stage's output; never includes the shot or run id."""
    payload = {
        "stage": stage,
        "inputs": list(inputs),
        "params": params,
        "models": [[m.name, m.version, m.sha256] for m in models],
        "recast": __version__,
    }
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()


def iter_asset_refs(value: Any) -> Iterator[AssetRef]:
    """Every AssetRef inside a record (recursively)."""
    if isinstance(value, AssetRef):
        yield value
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            yield from iter_asset_refs(getattr(value, name))
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from iter_asset_refs(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from iter_asset_refs(item)


def store_asset(
    path: Path,
    *,
    media_type: str,
    role: str,
    suffix: str = "",
    parents: Sequence[AssetRef] = (),
    media_info: dict[str, Any] | None = None,
) -> AssetRef:
    """Put a local file into the object store and register it (with its parents) in the database.

    Inside :func:`run_stage`'s ``compute`` the parent links are recorded as the running stage
    run's. A parent with the same bytes as the file (a chunk passed through untouched) is the
    same asset: no self-link is made.
    """
    obj = store().put_file(path, media_type=media_type, suffix=suffix)
    with session_scope() as s:
        asset = repo.register_asset(
            s,
            uri=obj.uri,
            sha256=obj.sha256,
            size=obj.size,
            media_type=media_type,
            role=role,
            media_info=media_info,
            parent_ids=[p.asset_id for p in parents],
            stage_run_id=_current_stage_run.get(),
        )
        asset_id = str(asset.id)
    return AssetRef(asset_id=asset_id, uri=obj.uri, sha256=obj.sha256, media_type=media_type, size=obj.size)


def fetch(ref: AssetRef) -> Path:
    """A local path to read an asset from (the file itself for a local store, a cached copy for S3)."""
    return store().fetch(ref.uri)


def load_artifact(ref: AssetRef, cls: type[A]) -> A:
    """A stored stage artefact (a class of :mod:`recast.media.artifacts`, or any class with a
    ``load(path)`` classmethod) read from the object store."""
    return cls.load(fetch(ref))  # type: ignore[attr-defined]


@contextmanager
def scratch_dir(prefix: str) -> Iterator[Path]:
    """A temporary working directory under the data directory, removed afterwards."""
    base = get_settings().resolved_data_dir / "tmp"
    base.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=prefix, dir=base) as d:
        yield Path(d)


def _prefect_ids() -> tuple[str | None, str | None]:
    try:
        from prefect.context import FlowRunContext, TaskRunContext

        flow_ctx = FlowRunContext.get()
        task_ctx = TaskRunContext.get()
        flow_id = str(flow_ctx.flow_run.id) if flow_ctx and flow_ctx.flow_run else None
        task_id = str(task_ctx.task_run.id) if task_ctx else None
        if task_ctx and flow_id is None:
            flow_id = str(task_ctx.task_run.flow_run_id) if task_ctx.task_run.flow_run_id else None
        return flow_id, task_id
    except Exception:  # pragma: no cover - outside Prefect the ids are simply unknown
        return None, None


def run_stage(
    stage: str,
    *,
    run_id: str | None,
    shot_id: str | None,
    inputs: Sequence[AssetRef],
    params: dict[str, Any],
    models: Sequence[ModelRef],
    result_type: type[R],
    compute: Callable[[], R],
    chunk_index: int | None = None,
    frames: tuple[int, int] | None = None,
) -> R:
    """Run one stage (or one chunk of it) through recast's cache, writing its ``stage_run`` row.

    ``compute`` does the work and returns the stage's record; every asset it stored must be
    referenced from that record, so a later run can check the outputs still exist.
    """
    key = work_key(stage, inputs=[a.sha256 for a in inputs], params=params, models=models)
    flow_run_id, task_run_id = _prefect_ids()
    common = dict(
        run_id=run_id,
        shot_id=shot_id,
        stage=stage,
        work_key=key,
        chunk_index=chunk_index,
        frame_start=frames[0] if frames else None,
        frame_end=frames[1] if frames else None,
        params=params,
        models=[m.model_dump() for m in models],
        code_version=__version__,
        input_asset_ids=[a.asset_id for a in inputs],
        host=socket.gethostname(),
        prefect_flow_run_id=flow_run_id,
        prefect_task_run_id=task_run_id,
    )

    cached = _find_reusable(stage, key, result_type)
    if cached is not None:
        outputs = [a.asset_id for a in iter_asset_refs(cached)]
        with session_scope() as s:
            repo.record_reused_stage_run(s, **common, output_asset_ids=outputs, result=cached.model_dump(mode="json"))
        log.info("%s%s: reused finished work %s", stage, f" chunk {chunk_index}" if chunk_index is not None else "", key[:12])
        return cached

    with session_scope() as s:
        row = repo.start_stage_run(s, **common)
        stage_run_id = str(row.id)
    started = time.perf_counter()
    token = _current_stage_run.set(stage_run_id)
    try:
        result = compute()
    except BaseException as exc:
        text = str(exc) if isinstance(exc, RecastError) else "".join(traceback.format_exception_only(type(exc), exc)).strip()
        try:
            with session_scope() as s:
                repo.finish_stage_run(s, stage_run_id, status="failed", error=text[:4000])
        except Exception:  # the original error matters more than a failed bookkeeping write
            log.exception("could not record the failure of stage %s", stage)
        raise
    finally:
        _current_stage_run.reset(token)
    elapsed_ms = (time.perf_counter() - started) * 1000.0
    metrics = dict(getattr(result, "metrics", None) or {}) if hasattr(result, "metrics") else {}
    metrics["elapsed_ms"] = round(elapsed_ms, 3)
    with session_scope() as s:
        repo.finish_stage_run(
            s,
            stage_run_id,
            status="done",
            output_asset_ids=[a.asset_id for a in iter_asset_refs(result)],
            result=result.model_dump(mode="json"),
            metrics=metrics,
        )
    return result


def _find_reusable(stage: str, key: str, result_type: type[R]) -> R | None:
    with session_scope() as s:
        row = repo.find_done_stage_run(s, stage, key)
        payload = dict(row.result) if row is not None and row.result else None
    if payload is None:
        return None
    try:
        record = result_type.model_validate(payload)
    except Exception:
        return None  # an older record shape: redo the work rather than trust it
    st = store()
    try:
        if all(st.exists(ref.uri) for ref in iter_asset_refs(record)):
            return record
    except StorageUnavailableError:
        raise
    return None


class Progress:
    """Progress of a long stage, summed over parallel chunks: printed to stderr and, inside a
    Prefect flow run, shown in the Prefect UI as a progress artifact.

    The artifact is created once per (run, stage) on the first advance and updated at most every
    :attr:`ARTIFACT_EVERY_S` seconds (and at 100%): an API call per frame would cost more than the
    work it reports on. Outside a flow run (unit tests, ``recast qc --plate``) there is no
    artifact. A failing Prefect API never fails the stage: progress is advisory.
    """

    #: seconds between two updates of the progress artifact
    ARTIFACT_EVERY_S = 2.0

    def __init__(self, stage: str, total: int, run_id: str | None = None) -> None:
        self.stage = stage
        self.total = max(1, total)
        self.run_id = run_id
        self.done = 0
        self._lock = threading.Lock()
        self._last = 0.0
        self._artifact_id: Any = None
        self._artifact_failed = False
        self._artifact_last = 0.0

    def advance(self, n: int = 1) -> None:
        """Count ``n`` more frames done."""
        with self._lock:
            self.done += n
            now = time.monotonic()
            finished = self.done >= self.total
            if finished or now - self._last > 1.0:
                self._last = now
                emit_progress(f"{self.stage}: {self.done}/{self.total} frames ({100.0 * self.done / self.total:.0f}%)")
            if finished or now - self._artifact_last >= self.ARTIFACT_EVERY_S or self._artifact_id is None:
                self._artifact_last = now
                self._publish(min(100.0, 100.0 * self.done / self.total))

    def _publish(self, percent: float) -> None:
        # called under self._lock: one creation per (run, stage) even with parallel chunk tasks
        if self._artifact_failed or not in_prefect_run():
            return
        try:
            from prefect.artifacts import create_progress_artifact, update_progress_artifact

            desc = f"{self.stage}: {self.done}/{self.total} frames"
            if self._artifact_id is None:
                self._artifact_id = create_progress_artifact(progress=percent, key=f"{self.stage}-progress", description=desc)
            else:
                update_progress_artifact(self._artifact_id, progress=percent, description=desc)
        except Exception as exc:  # advisory: never fail a stage because the UI could not be told
            self._artifact_failed = True
            log.warning("progress artifact for %s not published: %s", self.stage, exc)


def in_prefect_run() -> bool:
    """Whether this thread runs inside a Prefect flow or task run (artifacts need one)."""
    try:
        from prefect.context import FlowRunContext, TaskRunContext

        return FlowRunContext.get() is not None or TaskRunContext.get() is not None
    except Exception:  # pragma: no cover - Prefect missing or broken: no artifacts
        return False


_progress_registry: dict[str, Progress] = {}
_progress_lock = threading.Lock()


def progress_for(run_id: str | None, stage: str, total: int) -> Progress:
    """One shared progress counter per (run, stage), so mapped chunk tasks add up."""
    key = f"{run_id}:{stage}"
    with _progress_lock:
        p = _progress_registry.get(key)
        # a finished counter is not reused: the same stage of another file (``recast qc --plate
        # --output`` segments both) or a re-run would otherwise count on past 100%
        if p is None or p.total != max(1, total) or p.done >= p.total:
            p = Progress(stage, total, run_id)
            _progress_registry[key] = p
        return p


def emit_progress(line: str) -> None:
    """Write one progress line to stderr (never stdout: ``--json`` owns stdout).

    Locally the line is ``[recast] <line>`` exactly (scripts watch ``recast swap``'s progress).
    Inside a deployment run — a worker's process, whose log interleaves many shots over hours —
    it also carries the UTC time and the shot code: ``[recast] 2026-11-30T05:01:02Z sh010 <line>``.
    """
    print(f"[recast] {_deployment_prefix()}{line}", file=sys.stderr, flush=True)


def _deployment_prefix() -> str:
    """``"<UTC time> <shot code> "`` inside a deployment's flow run (or its subflows and task
    threads), else ``""``. The flow run of a shot is named after its code."""
    try:
        from prefect.context import FlowRunContext
    except Exception:  # pragma: no cover - Prefect missing: no flow runs either
        return ""
    ctx = FlowRunContext.get()
    fr = None if ctx is None else ctx.flow_run
    if fr is None:
        return ""
    if fr.deployment_id is None:
        # a subflow (a re-run in review) has no deployment of its own: it belongs to its process's
        if not _deployment_runs or fr.parent_task_run_id is None:
            return ""
    else:
        _deployment_runs.add(str(fr.id))
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return f"{stamp} {fr.name or '-'} "


# ids of the deployment flow runs this process has run (a worker's subprocess runs one)
_deployment_runs: set[str] = set()


def _transient_only(task: Any, task_run: Any, state: Any) -> bool:
    """Retry only transient service failures (object store, database), never bad input."""
    from recast.errors import ServiceUnavailableError

    return isinstance(getattr(state, "data", None), ServiceUnavailableError)


def stage_task(fn: Callable[..., Any], *, name: str, tags: Iterable[str] = (), retries: int = 2) -> Any:
    """Wrap a stage function as a Prefect task.

    Prefect's own result cache is switched off: recast's work-key cache (:func:`run_stage`) is the
    one shared by every worker. Retries apply to transient storage/database errors only.
    """
    from prefect import task
    from prefect.cache_policies import NO_CACHE

    return task(
        fn,
        name=name,
        tags=list(tags),
        cache_policy=NO_CACHE,
        persist_result=False,
        retries=retries,
        retry_delay_seconds=[1, 4, 10][:retries] or None,
        retry_condition_fn=_transient_only,
    )


def thresholds_from_settings(overrides: dict[str, Any] | None = None) -> QCThresholds:
    """QC thresholds: ``overrides`` (a project's) over settings (``RECAST_QC_*``) over the defaults."""
    from recast.models.qc import SETTINGS_THRESHOLDS, resolve_thresholds

    s = get_settings()
    return resolve_thresholds({name: float(getattr(s, f"qc_{name}")) for name in SETTINGS_THRESHOLDS}, overrides)


def thresholds_for_shot(shot_id: str | None, project: str | None = None) -> QCThresholds:
    """The QC thresholds that apply to a shot (its project's overrides) or to a named project;
    shared by the qc stage (its verdict) and the report stage (what it draws and tabulates)."""
    overrides = None
    if shot_id is not None or project is not None:
        with session_scope() as s:
            proj = repo.get_project(s, repo.get_shot(s, shot_id).project_id) if shot_id is not None else repo.get_project(s, project)
            overrides = dict(proj.qc_thresholds or {})
    return thresholds_from_settings(overrides)
