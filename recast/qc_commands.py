"""QC commands of the ``recast`` CLI: ``qc`` and ``review``.

``recast.cli`` adds them with :func:`register`. Exit codes stay decided in ``recast.cli``: each
command runs inside its ``_guarded`` (imported when the command runs) and raises recast errors.
The one code decided here is the QC verdict's: ``recast qc`` prints its result (the JSON with
``--json``) first and then leaves with ``typer.Exit(5)`` when the verdict is ``fail``
(``recast.cli.EXIT_QC_FAIL``; ``_guarded`` passes ``typer.Exit`` through unchanged), 0 for
``pass`` and ``review``.

* ``recast qc SHOT [--json]``: the latest QC result of a shot (id or code): metrics, verdict,
  reasons with frames, report location.
* ``recast qc --plate CLIP --output CLIP --source PHOTO [--mode face|head] [--face SEL]
  [--project P] [--json]``: scores any plate/output pair, including swaps made by other tools.
* ``recast review SHOT --approve|--reject|--rerun [--set key=value ...] --note TEXT
  [--reviewer NAME]``: the supervisor's decision. If the shot's latest run is paused for review
  in Prefect, it is resumed with the decision (the flow records it and renders, ends or
  re-runs); otherwise the decision is recorded on the latest run and its deliverables are
  approved or un-approved (``--rerun`` then runs the shot again here with the changed
  parameters, reusing cached stages).
"""

from __future__ import annotations

import getpass
import json
from typing import Any, Callable, Optional

import typer

EXIT_QC_FAIL = 5  # recast.cli.EXIT_QC_FAIL (DESIGN.md): kept equal, checked in the tests


def _run(fn: Callable[[], Any]) -> Any:
    from recast.cli import _guarded

    return _guarded(fn)


def _prepare() -> None:
    from recast.cli import _prepare as prepare

    prepare()


def qc(
    shot: Optional[str] = typer.Argument(None, help="a shot id or code (its latest QC result); or use --plate/--output/--source"),
    plate: Optional[str] = typer.Option(None, "--plate", help="score a pair of files: the plate"),
    output: Optional[str] = typer.Option(None, "--output", help="score a pair of files: the swapped clip (from recast or any tool)"),
    source: Optional[str] = typer.Option(None, "--source", help="score a pair of files: photo of the person who should appear"),
    mode: str = typer.Option("face", "--mode", help="head or face (head also measures hair transfer)"),
    face: str = typer.Option("largest", "--face", help="which person of the plate: largest | index:N | reference:PHOTO"),
    project: Optional[str] = typer.Option(None, "--project", help="use this project's QC thresholds (default: settings)"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object on stdout"),
) -> None:
    """Print QC metrics, verdict, reasons and report location; exit code 5 when the verdict is fail."""

    def go() -> dict[str, Any]:
        from recast.errors import UsageError

        files = (plate, output, source)
        if shot is not None and any(files):
            raise UsageError("give either SHOT or --plate/--output/--source, not both")
        if shot is None and not all(files):
            raise UsageError("give a SHOT, or all of --plate, --output and --source")
        _prepare()
        result = _qc_of_files(plate, output, source, mode, face, project) if shot is None else _qc_of_shot(shot)
        _print_qc(result, as_json)
        return result

    result = _run(go)
    if result["verdict"] == "fail":
        raise typer.Exit(EXIT_QC_FAIL)  # after printing: the JSON is printed either way


def _qc_of_shot(ref: str) -> dict[str, Any]:
    from recast.db import repository as repo
    from recast.db import review as review_repo
    from recast.db.session import session_scope
    from recast.errors import RecordNotFoundError
    from recast.tasks.common import store

    with session_scope() as s:
        shot = review_repo.find_shot_by_ref(s, ref)
        found = review_repo.latest_run_with_qc(s, shot.id)
        if found is None:
            raise RecordNotFoundError(f"shot {shot.code} has no QC result yet (run `recast swap` or submit it first)")
        run, row = found
        report_uri = repo.get_asset(s, row.report_asset_id).uri if row.report_asset_id else None
        renders = repo.renders_for_run(s, run.id)
        out: dict[str, Any] = {"shot": shot.code, "shot_id": str(shot.id), "run_id": str(run.id), "run_status": run.status,
                               "verdict": row.verdict, "metrics": dict(row.metrics or {}),
                               "reasons": [{"text": r} for r in (row.reasons or [])], "models": row.models,
                               "approved": bool(renders and renders[-1].approved),
                               "reviews": [{"decision": r.decision, "reviewer": r.reviewer, "note": r.note, "at": str(r.created)}
                                           for r in repo.reviews_for_run(s, run.id)]}
    if report_uri:
        summary = json.loads(store().fetch(report_uri).read_text())
        out["reasons"] = summary.get("reasons", out["reasons"])
        out["identity_model"] = summary.get("identity_model")
        out["report"] = summary.get("report", {}).get("html")
        out["contact_sheet"] = summary.get("report", {}).get("contact_sheet")
        out["report_json"] = report_uri
    return out


def _qc_of_files(plate: str, output: str, source: str, mode: str, face: str, project: Optional[str]) -> dict[str, Any]:
    from pathlib import Path

    from recast.tasks.qc import score_files
    from recast.tasks.report import build_report, publish_qc

    scored = score_files(plate=plate, output=output, source=source, mode=mode, face=face, project=project)
    name = f"{Path(output).stem}-vs-{Path(plate).stem}"
    report = build_report(run_id=None, shot_id=None, shot=name, plate=list(scored.plate.chunks),
                          outputs=[c.video for c in scored.output.chunks], qc=scored.qc)
    out = publish_qc(run_id=None, shot_id=None, shot=name, qc=scored.qc, report=report)
    out.update(plate=str(plate), output=str(output), source=str(source), mode=mode)
    return out


def _print_qc(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(result, default=str))
        return
    m = result["metrics"]

    def f(key: str, fmt: str = "{:.2f}") -> str:
        v = m.get(key)
        return "n/a" if v is None else fmt.format(v)

    lines = [
        f"shot:       {result['shot']}" + (f"   run {result['run_id']} ({result['run_status']})" if result.get("run_id") else ""),
        f"verdict:    {result['verdict'].upper()}",
        f"identity:   transfer {f('identity_transfer_rate')} over {m.get('identity_samples', 'n/a')} sampled frames, "
        f"similarity to source {f('identity_similarity_source')} / to plate person {f('identity_similarity_plate')}"
        + (f"  [{result['identity_model']['name']} sha256={str(result['identity_model'].get('sha256'))[:16]}]" if result.get("identity_model") else ""),
        f"motion:     pose error {f('pose_error_deg', '{:.1f}')} deg, expression error {f('expression_error', '{:.3f}')}, "
        f"jitter ratio {f('jitter_ratio')}, flicker ratio {f('flicker_ratio')}",
        f"blend:      seam {f('seam_score')}, background PSNR {f('background_psnr_db', '{:.1f}')} dB, face found {f('face_found_ratio')}",
    ]
    for r in result.get("reasons") or []:
        lines.append(f"reason:     {r['text']}")
    if result.get("report"):
        lines.append(f"report:     {result['report']}")
    typer.echo("\n".join(lines))


def review(
    shot: str = typer.Argument(..., help="a shot id or code"),
    approve: bool = typer.Option(False, "--approve", help="approve: render (a paused run) / approve the deliverable"),
    reject: bool = typer.Option(False, "--reject", help="reject: end the run, nothing delivered"),
    rerun: bool = typer.Option(False, "--rerun", help="run the swap again with changed parameters (--set)"),
    set_: list[str] = typer.Option([], "--set", help="for --rerun: a shot parameter to change, key=value (repeatable), e.g. expression=neutral"),
    note: str = typer.Option("", "--note", help="why (recorded with the decision)"),
    reviewer: Optional[str] = typer.Option(None, "--reviewer", help="who decides (default: the login name)"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Record a supervisor's decision on a shot; resumes its run when it is paused for review."""

    def go() -> None:
        from recast.errors import UsageError

        chosen = [name for name, on in (("approve", approve), ("reject", reject), ("rerun", rerun)) if on]
        if len(chosen) != 1:
            raise UsageError("choose exactly one of --approve, --reject, --rerun")
        if set_ and not rerun:
            raise UsageError("--set goes with --rerun")
        _prepare()
        result = decide(shot, chosen[0], note=note, reviewer=reviewer or _login(), params=parse_sets(set_) if rerun else None)
        typer.echo(json.dumps(result, default=str) if as_json else f"{result['decision']}: {result['message']}")

    _run(go)


def parse_sets(items: list[str]) -> dict[str, Any]:
    """``key=value`` pairs; values are read as JSON when they parse (numbers, lists), else text."""
    from recast.errors import UsageError

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--set '{item}': use key=value")
        try:
            out[key.strip()] = json.loads(value)
        except ValueError:
            out[key.strip()] = value
    return out


def decide(shot_ref: str, decision: str, *, note: str, reviewer: str, params: dict[str, Any] | None) -> dict[str, Any]:
    """Apply a decision to a shot's latest run: resume the paused flow, or record it directly."""
    from recast.db import repository as repo
    from recast.db import review as review_repo
    from recast.db.session import session_scope
    from recast.errors import RecordNotFoundError

    with session_scope() as s:
        shot = review_repo.find_shot_by_ref(s, shot_ref)
        run = repo.latest_run_for_shot(s, shot.id)
        if run is None:
            raise RecordNotFoundError(f"shot {shot.code} has no run to review")
        shot_id, run_id, status, flow_run_id = str(shot.id), str(run.id), run.status, run.prefect_flow_run_id
    base = {"shot_id": shot_id, "run_id": run_id, "decision": decision, "reviewer": reviewer, "note": note}
    if status == "awaiting_review" and flow_run_id and _resume_if_paused(flow_run_id, decision, note, reviewer, params):
        return {**base, "resumed_flow_run": flow_run_id, "message": f"resumed paused flow run {flow_run_id} of run {run_id}"}

    from recast.tasks.review import approve_renders, prepare_rerun, record_decision

    record_decision(run_id, decision=decision, reviewer=reviewer, note=note, params=params, via="cli")
    if decision == "approve":
        n = approve_renders(run_id, True)
        with session_scope() as s:
            repo.set_run_status(s, run_id, "done" if n else status)
        return {**base, "message": f"run {run_id}: {n} deliverable(s) approved"}
    if decision == "reject":
        approve_renders(run_id, False)
        with session_scope() as s:
            repo.set_run_status(s, run_id, "rejected", error=f"rejected in review by {reviewer}" + (f": {note}" if note else ""))
        return {**base, "message": f"run {run_id} rejected; its deliverables are not approved"}
    # rerun without a paused flow: a new run of the shot here, stages reused from the cache
    new_run, _ = prepare_rerun(shot_id, params)
    with session_scope() as s:
        repo.set_run_status(s, run_id, "rejected", error=f"superseded by run {new_run} (re-run in review with {params or {}})")
    from recast.flows.swap_shot import swap_shot

    summary = swap_shot(shot_id=shot_id, run_id=new_run, review="never")
    return {**base, "new_run_id": new_run, "summary": summary, "message": f"re-ran as run {new_run}: verdict {summary['qc']['verdict']}"}


def _resume_if_paused(flow_run_id: str, decision: str, note: str, reviewer: str, params: dict[str, Any] | None) -> bool:
    """Resume a Prefect flow run paused for review with the decision; False when it is not paused."""
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.flow_runs import resume_flow_run

    from recast.errors import ServiceUnavailableError

    try:
        with get_client(sync_client=True) as client:
            fr = client.read_flow_run(UUID(flow_run_id))
        if fr.state is None or not fr.state.is_paused():
            return False
        run_input = {"decision": decision, "note": note, "reviewer": reviewer, "params": params}
        resume_flow_run(UUID(flow_run_id), run_input=run_input)
    except (OSError, ConnectionError) as exc:
        raise ServiceUnavailableError(f"Prefect API unavailable: cannot resume flow run {flow_run_id} ({exc})") from None
    return True


def _login() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return "unknown"


def register(app: typer.Typer) -> None:
    """Add ``qc`` and ``review`` to the ``recast`` Typer app."""
    app.command("qc")(qc)
    app.command("review")(review)


__all__ = ["decide", "parse_sets", "qc", "register", "review"]
