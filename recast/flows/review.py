"""The review step of ``swap_shot``: when QC says ``review``, stop for a supervisor.

Orchestration only: what is stored goes through :mod:`recast.services.review`.

When the flow pauses (see :func:`should_pause`): the run is marked ``awaiting_review``, then
``pause_flow_run(wait_for_input=ReviewDecision)`` shows the supervisor a form in the Prefect UI
(decision approve / reject / rerun, note, reviewer, changed parameters). ``recast review SHOT``
and ``POST /v1/shots/{id}/review`` send the same input (both through
:func:`recast.services.review.submit_decision`, which resumes the pause with
``resume_flow_run(flow_run_id, run_input=...)``). Whoever sent it, the decision is recorded here,
once (``review`` row and audit event, :func:`recast.services.review.record_decision`), and then:

* ``approve``: the flow goes on to render; the deliverable is recorded as approved;
* ``reject``: the run ends as ``rejected``, nothing is rendered;
* ``rerun``: the shot's parameters are updated with ``params`` (ShotParams fields) and
  ``swap_shot`` runs again as a **subflow**, for a new run of the same shot. Every stage whose
  inputs and parameters did not change (ingest, segment, track, often background and
  expression) is reused from recast's stage cache, so only what the change touches is computed
  again. The paused run ends as ``rejected`` with a note naming the new run (its result was not
  accepted); the subflow's summary is the flow's result. A subflow rather than a loop inside the
  flow: each attempt keeps its own run row, Prefect flow run, QC record and review trail.

A paused run waits ``RECAST_REVIEW_TIMEOUT_S`` (default 3 days); with no decision by then it
ends as ``rejected`` (nothing rendered), the timeout recorded as the decision.

``review`` parameter of the flow: ``auto`` (default) pauses only runs started by a deployment
(API, batch, Prefect UI: ``prefect.runtime.deployment.id`` is set, for a re-run's subflow too),
so a local ``recast swap`` never blocks; ``pause`` always pauses on a review verdict (``recast
swap --review pause``); ``never`` does not pause. A run that does not pause renders, and its
deliverable is approved only when the verdict was ``pass``.
"""

from __future__ import annotations

from typing import Any, Literal

from prefect.input import RunInput

from recast.contracts import REVIEW_MODES, QCReport
from recast.errors import UsageError



class ReviewDecision(RunInput):
    """A supervisor's decision on a shot whose QC verdict is ``review`` (the Prefect UI form)."""

    decision: Literal["approve", "reject", "rerun"]
    note: str = ""
    reviewer: str = ""
    params: dict[str, Any] | None = None  # ShotParams fields to change for a re-run, e.g. {"expression": "neutral"}


def started_by_deployment() -> bool:
    """Whether this flow run was started by a deployment (API, batch, Prefect UI)."""
    # prefect.runtime.deployment (not flow_run, which has no deployment_id): a subflow (a re-run)
    # inherits the deployment of the run that started it
    from prefect.runtime import deployment

    try:
        return deployment.id is not None
    except Exception:  # outside a flow run, or the Prefect API unreachable: not a deployment
        return False


def should_pause(verdict: str, review: str) -> bool:
    """Whether to stop for a supervisor (see the module docstring for ``review``)."""
    if review not in REVIEW_MODES:
        raise UsageError(f"review mode {review!r}: choose from {', '.join(REVIEW_MODES)}")
    if verdict != "review" or review == "never":
        return False
    return review == "pause" or started_by_deployment()


def review_gate(*, run_id: str, shot: str, qc: QCReport, review: str, timeout: int | None = None) -> ReviewDecision | None:
    """Pause for a decision when :func:`should_pause` says so, record it and return it (None: no pause).

    ``timeout`` (seconds; default ``RECAST_REVIEW_TIMEOUT_S``, 3 days): with no decision by then
    the run is rejected on the supervisors' behalf (recorded as reviewer ``recast``, via
    ``timeout``, the note naming the wait), so nothing unreviewed is ever rendered and the run
    does not hang as paused for ever; the shot can be submitted again.
    """
    from prefect import pause_flow_run
    from prefect.exceptions import FlowPauseTimeout

    from recast.settings import get_settings
    from recast.tasks.common import emit_progress
    from recast.services.review import mark_awaiting_review, record_decision

    if not should_pause(qc.verdict.value, review):
        return None
    mark_awaiting_review(run_id, verdict=qc.verdict.value, reasons=qc.reasons)
    emit_progress(f"review: {shot} waits for a supervisor (Prefect UI, or `recast review {shot} --approve|--reject`)")
    description = (f"QC of **{shot}** asks for review:\n\n" + "\n".join(f"- {r}" for r in qc.reasons)
                   + "\n\nApprove to render, reject to end the run, or rerun with changed parameters.")
    timeout = int(timeout if timeout is not None else get_settings().review_timeout_s)
    via = "prefect"
    try:
        decision = pause_flow_run(wait_for_input=ReviewDecision.with_initial_data(description=description, decision="approve"),
                                  timeout=timeout)
    except FlowPauseTimeout:
        via = "timeout"
        decision = ReviewDecision(decision="reject", reviewer="recast",
                                  note=f"no review decision within {timeout} s (RECAST_REVIEW_TIMEOUT_S); submit the shot again to retry")
    record_decision(run_id, decision=decision.decision, reviewer=decision.reviewer, note=decision.note, params=decision.params,
                    via=via)
    emit_progress(f"review: {decision.decision} by {decision.reviewer or 'unknown'}" + (f" ({decision.note})" if decision.note else ""))
    return decision


__all__ = ["REVIEW_MODES", "ReviewDecision", "review_gate", "should_pause", "started_by_deployment"]
