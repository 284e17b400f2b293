"""Following the Prefect flow runs recast dispatched: runs whose flow run ended without recast.

A ``swap-shot`` deployment run can end before any of recast's code runs: the worker's subprocess
cannot import recast, is killed by the out-of-memory killer, the machine goes away. Prefect then
marks the flow run ``CRASHED`` (or ``FAILED``, ``CANCELLED``) but nothing tells recast's database,
where the run would stay ``queued`` (or ``running``) for ever and the batch, seeing a flow run id,
would never start it again.

:func:`reconcile_dispatched_runs` closes that gap: for runs recast still believes are live and
that have a Prefect flow run id, it reads the flow runs' states from the Prefect API (one request
for all of them) and marks the ones Prefect ended — ``crashed``, ``failed`` or ``cancelled`` —
with the flow run's state message as the reason. It is called by the nightly batch before it picks
shots, by the HTTP API when a shot is read or resubmitted (only that shot's run) and by
``recast reconcile``.

A run marked ``crashed`` or ``failed`` this way is *retriable* (:func:`retriable`): recast's own
code never recorded an outcome for it, so nothing says the shot itself is bad. The next batch
queues a new run for such a shot (:func:`requeue_ended_runs`, at most :data:`MAX_DISPATCH_ATTEMPTS`
runs of a shot ended this way) and a retried submission with the same Idempotency-Key starts one.
A run cancelled in Prefect (from its UI) is not: cancelling is deliberate.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from recast.db import queue
from recast.db import repository as repo
from recast.db.session import session_scope
from recast.settings import Settings

log = logging.getLogger(__name__)

#: Prefect's terminal state types that recast follows, and the run status each one becomes
PREFECT_TERMINAL = {"CRASHED": "crashed", "FAILED": "failed", "CANCELLED": "cancelled"}
#: run statuses that a finished flow run contradicts (the flow records every other outcome itself)
LIVE_STATUSES = ("queued", "running", "awaiting_review")
#: the beginning of the error of every run marked here (how a retriable run is recognised)
REASON_PREFIX = "Prefect flow run "
#: runs of one shot ended in Prefect after which the batch stops queueing the shot again
MAX_DISPATCH_ATTEMPTS = 3

#: reads ``{flow_run_id: (state type, state message)}`` for some flow run ids (unknown ids absent)
ReadStates = Callable[[list[str]], dict[str, tuple[str, str]]]


@dataclass(frozen=True)
class Reconciled:
    """A run whose end recast learnt from Prefect."""

    run_id: str
    shot_id: str
    flow_run_id: str
    prefect_state: str
    status: str
    reason: str


def read_prefect_states(flow_run_ids: list[str]) -> dict[str, tuple[str, str]]:
    """The state type and message of each flow run, read in one request from ``PREFECT_API_URL``.

    Client retries are off: the API calls this when a shot is read, and a Prefect server that
    does not answer must cost that read a few seconds at most, not half a minute.
    """
    from uuid import UUID

    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.settings import PREFECT_API_URL, PREFECT_CLIENT_MAX_RETRIES, temporary_settings

    if not flow_run_ids or not PREFECT_API_URL.value():
        return {}
    ids = []
    for f in flow_run_ids:
        try:
            ids.append(UUID(str(f)))
        except ValueError:
            continue
    out: dict[str, tuple[str, str]] = {}
    with temporary_settings({PREFECT_CLIENT_MAX_RETRIES: 0}), get_client(sync_client=True, httpx_settings={"timeout": 5.0}) as client:
        for start in range(0, len(ids), 200):
            chunk = ids[start:start + 200]
            for fr in client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=chunk)), limit=len(chunk)):
                if fr.state is not None:
                    out[str(fr.id)] = (fr.state.type.value, fr.state.message or fr.state.name or "")
    return out


def _reason(flow_run_id: str, state: str, message: str) -> str:
    why = message.strip() or "no message"
    return (f"{REASON_PREFIX}{flow_run_id} ended {state} before recast recorded an outcome ({why})"
            + ("" if state == "CANCELLED" else "; a retry or the next batch runs the shot again"))


def reconcile_dispatched_runs(*, run_ids: Iterable[str] | None = None, shot_id: str | None = None,
                              project_id: Any = None, settings: Settings | None = None,
                              read_states: ReadStates | None = None) -> list[Reconciled]:
    """Mark the live runs whose Prefect flow run ended (crashed, failed, cancelled); returns them.

    Looks at runs ``queued``, ``running`` or ``awaiting_review`` that have a flow run id: all of
    them, those of ``project_id``, of ``shot_id`` (its latest run only) or ``run_ids``. A flow run
    in any other state (scheduled, pending, running, paused, completed) changes nothing: the flow
    records those outcomes itself. A run the flow ended meanwhile (its status changed between the
    two reads) is left as the flow recorded it.
    """
    with session_scope(settings) as s:
        if shot_id is not None:
            run = repo.latest_run_for_shot(s, shot_id)
            candidates = [] if run is None or run.status not in LIVE_STATUSES or not run.prefect_flow_run_id else \
                [(str(run.id), str(run.shot_id), run.prefect_flow_run_id)]
        else:
            candidates = queue.dispatched_live_runs(s, statuses=LIVE_STATUSES, project_id=project_id,
                                                    run_ids=None if run_ids is None else list(run_ids))
    if not candidates:
        return []
    states = (read_states or read_prefect_states)([fr for _, _, fr in candidates])
    ended: list[Reconciled] = []
    with session_scope(settings) as s:
        for run_id, shot, flow_run_id in candidates:
            state, message = states.get(str(flow_run_id), (None, ""))
            status = PREFECT_TERMINAL.get(str(state))
            if status is None:
                continue
            run = repo.get_run(s, run_id)
            if run.status not in LIVE_STATUSES:
                continue
            reason = _reason(flow_run_id, str(state), message)
            repo.set_run_status(s, run_id, status, error=reason)
            repo.add_audit_event(s, actor="recast", action="run.reconciled", subject_type="run", subject_id=run_id,
                                 detail={"shot_id": shot, "prefect_flow_run_id": flow_run_id, "prefect_state": state,
                                         "status": status, "message": message})
            ended.append(Reconciled(run_id, shot, str(flow_run_id), str(state), status, reason))
    for r in ended:
        log.warning("run %s of shot %s: %s", r.run_id, r.shot_id, r.reason)
    return ended


def reconcile_shot(shot_id: str, *, settings: Settings | None = None) -> Reconciled | None:
    """The cheap form for one shot (the API, on each read): its latest run only, and never an
    error — the Prefect server being down or the id being malformed leaves the run as it is."""
    try:
        found = reconcile_dispatched_runs(shot_id=shot_id, settings=settings)
    except Exception as exc:  # advisory: a read of the shot must still answer
        log.info("shot %s: Prefect state not reconciled (%s: %s)", shot_id, type(exc).__name__, exc)
        return None
    return found[0] if found else None


def retriable(run: Any) -> bool:
    """Whether a run ended in Prefect before recast's code recorded anything (crashed or failed
    there), so that running its shot again is the right answer to a retry."""
    return run is not None and run.status in ("crashed", "failed") and str(run.error or "").startswith(REASON_PREFIX)


def requeue_ended_runs(*, project_id: Any, limit: int = 50, settings: Settings | None = None,
                       actor: str = "nightly-batch") -> list[tuple[str, str]]:
    """Queue a new run for each shot of the project whose latest run is :func:`retriable` (and
    that has not ended that way :data:`MAX_DISPATCH_ATTEMPTS` times); ``(shot_id, new_run_id)``."""
    out: list[tuple[str, str]] = []
    with session_scope(settings) as s:
        for run in queue.latest_runs_ended_in_prefect(s, project_id=project_id, prefix=REASON_PREFIX, limit=limit):
            if queue.count_runs_ended_in_prefect(s, run.shot_id, prefix=REASON_PREFIX) >= MAX_DISPATCH_ATTEMPTS:
                continue
            new = repo.create_run(s, run.shot_id, params=run.params)
            repo.add_audit_event(s, actor=actor, action="shot.requeued", subject_type="shot", subject_id=str(run.shot_id),
                                 detail={"run_id": str(new.id), "after_run_id": str(run.id), "after": run.error})
            out.append((str(run.shot_id), str(new.id)))
    return out


__all__ = ["MAX_DISPATCH_ATTEMPTS", "PREFECT_TERMINAL", "REASON_PREFIX", "Reconciled", "read_prefect_states",
           "reconcile_dispatched_runs", "reconcile_shot", "requeue_ended_runs", "retriable"]
