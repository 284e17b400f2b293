"""Prefect deployments of recast: names, registration, starting and cancelling shot runs, the batch.

Deployments (see also ``deploy/README.md``), registered by ``recast deploy``
(:func:`register_deployments`), the one way to register them:

* ``swap_shot/swap-shot`` runs :func:`recast.flows.swap_shot.swap_shot` for one shot. The HTTP
  API starts it (:func:`start_swap_shot_run`) for every submission; operators can start it from
  the deployment's parameter form in the Prefect UI.
* ``nightly_batch/nightly-batch`` runs :func:`nightly_batch` on a cron schedule (02:00 UTC by
  default; the time zone is always stored): every queued shot of a project that no flow run
  executes yet.

Both go to process work pools (``cpu`` by default, ``gpu`` for GPU engines); a worker is
``recast worker --pool cpu``. Deployments use a *module path* entrypoint
(``recast.flows.swap_shot.swap_shot``) and no pull step, so any machine with recast installed can
run them without a code checkout, whatever its working directory. (``prefect deploy`` from a
prefect.yaml stores the deploying folder as a ``set_working_directory`` pull step, which breaks
every worker elsewhere: that route was removed.)

**How the batch keeps its concurrency limit.** The batch does not call ``swap_shot`` as an
in-process subflow: it starts one ``swap-shot`` deployment run per shot (``run_deployment``) and
keeps at most ``concurrency`` of them in flight, starting the next when one ends. So each shot is
its own flow run (named after the shot code, with its own logs, state and cancel button in the UI),
runs on whichever worker of the pool picks it up (scale-out over machines), and a crash of one shot
does not take the batch down. The batch flow itself only waits; it needs one worker slot.
The flow run of a shot is started with the run id as Prefect idempotency key, so two batches (or a
batch and a retried API call) never start the same run twice.

This module is orchestration: the database reads it needs go through :mod:`recast.db.queue`
inside small Prefect tasks.
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

from prefect import flow, get_run_logger, task

from recast.errors import RecordNotFoundError, ServiceUnavailableError, UsageError

SWAP_SHOT_FLOW = "swap_shot"
SWAP_SHOT_DEPLOYMENT = "swap-shot"
SWAP_SHOT = f"{SWAP_SHOT_FLOW}/{SWAP_SHOT_DEPLOYMENT}"
NIGHTLY_BATCH_FLOW = "nightly_batch"
NIGHTLY_BATCH_DEPLOYMENT = "nightly-batch"
NIGHTLY_BATCH = f"{NIGHTLY_BATCH_FLOW}/{NIGHTLY_BATCH_DEPLOYMENT}"
POOL_CPU = "cpu"
POOL_GPU = "gpu"
POOLS = (POOL_CPU, POOL_GPU)
DEFAULT_NIGHTLY_CRON = "0 2 * * *"  # 02:00 every night in DEFAULT_NIGHTLY_TIMEZONE
# always stored explicitly, so the schedule means the same on every server and in every route
DEFAULT_NIGHTLY_TIMEZONE = "UTC"

# how long a health check of the Prefect API is trusted: the API checks before each start so an
# unreachable server answers 503 at once instead of after the client's retries (~30 s)
_HEALTH_TTL_S = 10.0
_health_lock = threading.Lock()
_healthy_until: dict[str, float] = {}


# --- the Prefect API ----------------------------------------------------------------------------
def prefect_api_url() -> str:
    """The Prefect API URL this process talks to; ServiceUnavailableError when none is set.

    Without ``PREFECT_API_URL`` Prefect would start a temporary server of its own, which knows no
    deployments: a service must be pointed at the real server instead.
    """
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if not url:
        raise ServiceUnavailableError(
            "no Prefect server configured: set PREFECT_API_URL (e.g. http://prefect:4200/api) to the server "
            "where `recast deploy` registered the deployments"
        )
    return str(url).rstrip("/")


def check_prefect_api(timeout_s: float = 3.0) -> str:
    """The Prefect API URL after a (cached) health check; ServiceUnavailableError if it is down."""
    import httpx

    url = prefect_api_url()
    now = time.monotonic()
    with _health_lock:
        if _healthy_until.get(url, 0.0) > now:
            return url
    try:
        resp = httpx.get(f"{url}/health", timeout=timeout_s)
        ok = resp.status_code == 200
        why = f"HTTP {resp.status_code}"
    except httpx.HTTPError as exc:
        ok, why = False, f"{type(exc).__name__}: {exc}"
    if not ok:
        raise ServiceUnavailableError(f"Prefect API {url} cannot be reached ({why})")
    with _health_lock:
        _healthy_until[url] = now + _HEALTH_TTL_S
    return url


def _translate_prefect_error(exc: BaseException, what: str, url: str) -> ServiceUnavailableError:
    from prefect.exceptions import ObjectNotFound

    if isinstance(exc, ObjectNotFound):
        return ServiceUnavailableError(f"Prefect deployment {what!r} is not registered on {url}: run `recast deploy`")
    return ServiceUnavailableError(f"Prefect API {url}: {type(exc).__name__}: {exc}")


def _is_prefect_failure(exc: BaseException) -> bool:
    import httpx
    from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError

    return isinstance(exc, (ObjectNotFound, PrefectHTTPStatusError, httpx.HTTPError, ConnectionError, TimeoutError))


def start_swap_shot_run(
    shot_id: str,
    run_id: str,
    *,
    deployment: str = SWAP_SHOT,
    tags: Iterable[str] = (),
    review: str | None = None,
) -> str:
    """Start the ``swap-shot`` deployment for a recorded shot and queued run; returns the flow run id.

    Returns at once (``timeout=0``): a worker of the deployment's pool picks the run up. The run id
    is the Prefect idempotency key, so starting the same run twice gives back the same flow run.
    Raises :class:`~recast.errors.ServiceUnavailableError` when no server or deployment answers.
    """
    from prefect.deployments import run_deployment

    url = check_prefect_api()
    try:
        fr = run_deployment(
            name=deployment,
            # review: the flow's own parameter (auto | pause | never), shown with the run in the UI
            parameters={"shot_id": str(shot_id), "run_id": str(run_id), **({"review": review} if review else {})},
            timeout=0,
            idempotency_key=f"recast-run-{run_id}",
            tags=list(tags),
        )
    except Exception as exc:
        if _is_prefect_failure(exc):
            raise _translate_prefect_error(exc, deployment, url) from exc
        raise
    return str(fr.id)


def cancel_flow_run(flow_run_id: str) -> str:
    """Cancel a Prefect flow run; returns the state it was moved to (or the final state it had).

    A run no worker has started yet (scheduled, pending, paused) goes straight to ``Cancelled``;
    a running one goes to ``Cancelling``, and its worker stops the process and marks it cancelled.
    """
    from prefect import get_client
    from prefect.states import Cancelled, Cancelling, StateType

    url = check_prefect_api()
    try:
        with get_client(sync_client=True) as client:
            fr = client.read_flow_run(flow_run_id)
            state = fr.state
            if state is not None and state.is_final():
                return state.type.value
            not_started = state is None or state.type in (StateType.SCHEDULED, StateType.PENDING, StateType.PAUSED)
            new = Cancelled(message="cancelled through the recast API") if not_started else Cancelling(message="cancelled through the recast API")
            client.set_flow_run_state(flow_run_id, new, force=True)
            return new.type.value
    except Exception as exc:
        if _is_prefect_failure(exc):
            raise _translate_prefect_error(exc, f"flow run {flow_run_id}", url) from exc
        raise


def flow_run_state(flow_run_id: str) -> str | None:
    """The state type of a flow run (``COMPLETED``, ``FAILED``...), None when it is unknown."""
    from prefect import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            fr = client.read_flow_run(flow_run_id)
        except ObjectNotFound:
            return None
        return None if fr.state is None else fr.state.type.value


# --- registration -------------------------------------------------------------------------------
def ensure_work_pools(pools: Iterable[str] = POOLS) -> list[str]:
    """Create the named process work pools where they do not exist; returns those created."""
    from prefect import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    created = []
    with get_client(sync_client=True) as client:
        for name in pools:
            try:
                client.read_work_pool(name)
                continue
            except ObjectNotFound:
                pass
            try:
                client.create_work_pool(WorkPoolCreate(name=name, type="process"))
                created.append(name)
            except ObjectAlreadyExists:  # another `recast deploy` got there first
                pass
    return created


def build_deployments(
    *,
    swap_pool: str = POOL_CPU,
    batch_pool: str = POOL_CPU,
    nightly_project: str | None = None,
    nightly_cron: str = DEFAULT_NIGHTLY_CRON,
    nightly_timezone: str = DEFAULT_NIGHTLY_TIMEZONE,
    nightly_concurrency: int = 2,
    nightly_limit: int = 50,
) -> list[Any]:
    """The two deployments as Prefect ``RunnerDeployment`` objects (not yet registered).

    The nightly schedule is only there when ``nightly_project`` is given: the batch needs to
    know which project to drain. Without a pull step or storage, a worker imports the module-path
    entrypoints from its own installation, whatever its working directory.
    """
    from prefect.schedules import Cron
    from prefect.types.entrypoint import EntrypointType

    from recast.flows.swap_shot import swap_shot

    check_nightly_schedule(nightly_cron, nightly_timezone)

    swap = swap_shot.to_deployment(
        name=SWAP_SHOT_DEPLOYMENT,
        work_pool_name=swap_pool,
        entrypoint_type=EntrypointType.MODULE_PATH,
        tags=["recast"],
        description="Run one recast shot (started by the HTTP API, the nightly batch or an operator).",
    )
    batch_kwargs: dict[str, Any] = {}
    if nightly_project:
        batch_kwargs = {"schedules": [Cron(nightly_cron, timezone=nightly_timezone)],
                        "parameters": {"project": nightly_project, "limit": nightly_limit, "concurrency": nightly_concurrency}}
    batch = nightly_batch.to_deployment(
        name=NIGHTLY_BATCH_DEPLOYMENT,
        work_pool_name=batch_pool,
        entrypoint_type=EntrypointType.MODULE_PATH,
        tags=["recast", "batch"],
        description="Start every queued shot of a project, a few at a time, and wait for them.",
        **batch_kwargs,
    )
    return [swap, batch]


def check_nightly_schedule(cron: str, timezone: str) -> None:
    """UsageError naming the value when the cron expression or the IANA time zone is not valid."""
    from prefect.client.schemas.schedules import CronSchedule

    try:
        CronSchedule(cron=cron)
    except ValueError:  # pydantic's ValidationError
        raise UsageError(f"--nightly-cron {cron!r}: not a cron expression (e.g. '0 2 * * *' for 02:00 every day)") from None
    try:
        CronSchedule(cron=DEFAULT_NIGHTLY_CRON, timezone=timezone)
    except ValueError:
        raise UsageError(f"--nightly-timezone {timezone!r}: not an IANA time zone (e.g. UTC, Europe/London)") from None


def gpu_count() -> int:
    """GPUs on this machine (0 without torch or CUDA)."""
    try:
        import torch

        return int(torch.cuda.device_count())
    except Exception:  # no torch installed: no GPU work here
        return 0


def ensure_gpu_concurrency_limit(limit: int | None = None) -> int:
    """The global concurrency limit "gpu" that learned swap engines occupy one slot of.

    Its size is the number of GPUs (at least 1, so GPU tasks queued from a CPU-only machine still
    run one at a time on the GPU workers).
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate, GlobalConcurrencyLimitUpdate

    limit = max(1, gpu_count() if limit is None else limit)
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name("gpu")
            client.update_global_concurrency_limit("gpu", GlobalConcurrencyLimitUpdate(limit=limit))
        except Exception:
            client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name="gpu", limit=limit))
    return limit


def register_deployments(**kwargs: Any) -> dict[str, str]:
    """Create the work pools and the "gpu" concurrency limit, and register (create or update) both
    deployments; ``{name: id}``."""
    prefect_api_url()
    pools = {kwargs.get("swap_pool", POOL_CPU), kwargs.get("batch_pool", POOL_CPU), *POOLS}
    ensure_work_pools(sorted(pools))
    ensure_gpu_concurrency_limit()
    out = {}
    for dep in build_deployments(**kwargs):
        out[f"{dep.flow_name}/{dep.name}"] = str(dep.apply())
    return out


# --- the batch ----------------------------------------------------------------------------------
@task(name="find-queued-shots", retries=2, retry_delay_seconds=2, persist_result=False)
def find_queued_shots(project: str, limit: int) -> list[tuple[str, str]]:
    """``(shot_id, run_id)`` of the project's queued runs that no flow run executes yet."""
    from recast.db import queue
    from recast.db import repository as repo
    from recast.db.migrate import ensure_schema
    from recast.db.session import session_scope
    from recast.services.dispatch import reconcile_dispatched_runs, requeue_ended_runs

    ensure_schema()
    with session_scope() as s:
        proj = repo.find_project(s, project)
        if proj is None:
            raise RecordNotFoundError(f"project {project} not found")
        project_id = proj.id
    # runs whose flow run crashed before recast's code ran are marked from Prefect's state, and
    # their shots queued again, so this batch runs them instead of skipping them for ever
    reconcile_dispatched_runs(project_id=project_id)
    requeue_ended_runs(project_id=project_id, limit=limit)
    with session_scope() as s:
        return queue.shots_awaiting_start(s, project_id=project_id, limit=limit)


def _record_flow_run(run_id: str, flow_run_id: str) -> None:
    from recast.db import queue
    from recast.db.session import session_scope

    with session_scope() as s:
        queue.set_run_flow_run(s, run_id, flow_run_id)


def _run_shot_and_wait(shot_id: str, run_id: str, *, tags: list[str], poll_s: float, timeout_s: float,
                       start: Callable[..., str]) -> dict[str, Any]:
    """Start one shot's deployment run and wait until it ends (runs in a thread of the batch)."""
    flow_run_id = start(shot_id, run_id, tags=tags)
    _record_flow_run(run_id, flow_run_id)
    deadline = time.monotonic() + timeout_s
    state = None
    while time.monotonic() < deadline:
        state = flow_run_state(flow_run_id)
        # PAUSED: the shot waits for a supervisor (QC verdict review), which may take days; the
        # batch's slot goes to the next shot and the run goes on when it is reviewed
        if state in ("COMPLETED", "FAILED", "CANCELLED", "CRASHED", "PAUSED"):
            break
        time.sleep(poll_s)
    if state in ("FAILED", "CANCELLED", "CRASHED"):
        from recast.services.dispatch import reconcile_dispatched_runs

        reconcile_dispatched_runs(run_ids=[run_id])  # a crash before recast's code ran: the run says so now
    return {"shot_id": shot_id, "run_id": run_id, "flow_run_id": flow_run_id, "state": state}


@flow(name=NIGHTLY_BATCH_FLOW, persist_result=False, validate_parameters=True)
def nightly_batch(project: str, limit: int = 50, concurrency: int = 2, poll_seconds: float = 2.0,
                  shot_timeout_seconds: float = 6 * 3600) -> dict[str, Any]:
    """Run every queued shot of ``project`` (at most ``limit``), ``concurrency`` at a time.

    Each shot runs as its own ``swap-shot`` deployment run (see the module docstring for why);
    returns counts by final state and the wall time.
    """
    if concurrency < 1 or limit < 1:
        raise UsageError(f"nightly_batch: limit ({limit}) and concurrency ({concurrency}) must be at least 1")
    log = get_run_logger()
    t0 = time.perf_counter()
    pending = find_queued_shots(project, limit)
    log.info("project %s: %d queued shot(s), %d at a time", project, len(pending), concurrency)
    results: list[dict[str, Any]] = []
    tags = [f"project:{project}", "batch"]
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="recast-batch") as pool:
        in_flight: set[Future] = set()
        queue_ = list(pending)
        while queue_ or in_flight:
            while queue_ and len(in_flight) < concurrency:
                shot_id, run_id = queue_.pop(0)
                # the flow run context goes along, so each shot's run is linked to the batch in the UI
                ctx = contextvars.copy_context()
                in_flight.add(pool.submit(ctx.run, _run_shot_and_wait, shot_id, run_id, tags=tags,
                                          poll_s=poll_seconds, timeout_s=shot_timeout_seconds, start=start_swap_shot_run))
            done, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
            for f in done:
                try:
                    r = f.result()
                except Exception as exc:  # one shot that cannot start must not stop the others
                    r = {"state": "NOT_STARTED", "error": f"{type(exc).__name__}: {exc}"}
                results.append(r)
                log.info("shot %s: %s", r.get("shot_id"), r.get("state"))
    counts: dict[str, int] = {}
    for r in results:
        counts[str(r.get("state"))] = counts.get(str(r.get("state")), 0) + 1
    return {"project": project, "shots": len(pending), "states": counts, "seconds": round(time.perf_counter() - t0, 1),
            "runs": results}


__all__ = [
    "NIGHTLY_BATCH",
    "POOL_CPU",
    "POOL_GPU",
    "SWAP_SHOT",
    "build_deployments",
    "cancel_flow_run",
    "check_nightly_schedule",
    "check_prefect_api",
    "ensure_work_pools",
    "flow_run_state",
    "nightly_batch",
    "prefect_api_url",
    "register_deployments",
    "start_swap_shot_run",
]
