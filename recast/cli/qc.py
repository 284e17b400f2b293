"""QC commands of the ``recast`` CLI: ``qc`` and ``review``.

``recast qc`` prints its result (the JSON with ``--json``) first and then leaves with
``EXIT_QC_FAIL`` (5) when the verdict is ``fail``, 0 for ``pass`` and ``review``.

* ``recast qc SHOT [--json]``: the latest QC result of a shot (id or code): metrics, verdict,
  reasons with frames, report location.
* ``recast qc --plate CLIP --output CLIP --source PHOTO [--mode face|head] [--face SEL]
  [--project P] [--json]``: scores any plate/output pair, including swaps made by other tools.
* ``recast review SHOT --approve|--reject|--rerun [--set key=value ...] --note TEXT
  [--reviewer NAME]``: the supervisor's decision, through
  :func:`recast.services.review.submit_decision` (the same path as the HTTP API's review): if
  the shot's latest run is paused for review in Prefect, it is resumed with the decision (the
  flow records it and renders, ends or re-runs); otherwise the decision is recorded on the
  latest run and its deliverables are approved or un-approved (``--rerun`` then runs the shot
  again here with the changed parameters, reusing cached stages).
"""

from __future__ import annotations

import getpass
import json
from typing import Any, Optional

import typer

from recast.cli.guard import EXIT_QC_FAIL, guarded, prepare


def qc(
    shot: Optional[str] = typer.Argument(None, help="a shot id or code (its latest QC result); or use --plate/--output/--source"),
    plate: Optional[str] = typer.Option(None, "--plate", help="score a pair of files: the plate"),
    output: Optional[str] = typer.Option(None, "--output", help="score a pair of files: the swapped clip (from recast or any tool)"),
    source: Optional[str] = typer.Option(None, "--source", help="score a pair of files: photo of the person who should appear"),
    mode: str = typer.Option("face", "--mode", help="head or face (head also measures hair transfer)"),
    face: str = typer.Option("largest", "--face", help="which person of the plate: largest | index:N | reference:PHOTO"),
    source_face: Optional[str] = typer.Option(None, "--source-face", help="score a pair of files: which face of a source photo showing several people, index:N"),
    project: Optional[str] = typer.Option(None, "--project", help="use this project's QC thresholds (default: settings)"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object on stdout"),
) -> None:
    """Print QC metrics, verdict, reasons and report location; exit code 5 when the verdict is fail."""

    def go() -> dict[str, Any]:
        from recast.errors import UsageError
        from recast.models.tracking import parse_face_selector
        from recast.services.qc import qc_of_files, qc_of_shot

        files = (plate, output, source)
        if shot is not None and any(files):
            raise UsageError("give either SHOT or --plate/--output/--source, not both")
        if shot is None and not all(files):
            raise UsageError("give a SHOT, or all of --plate, --output and --source")
        if source_face is not None and shot is not None:
            raise UsageError("--source-face applies to --plate/--output/--source, not to a SHOT (its run recorded its own)")
        if source_face is not None and parse_face_selector(source_face).kind != "index":
            raise UsageError(f"--source-face '{source_face}': use index:N (0 = the largest face of the source photo)")
        prepare(local_flows=shot is None)
        result = (qc_of_files(plate, output, source, mode=mode, face=face, project=project, source_face=source_face)
                  if shot is None else qc_of_shot(shot))
        _print_qc(result, as_json)
        return result

    result = guarded(go)
    if result["verdict"] == "fail":
        raise typer.Exit(EXIT_QC_FAIL)  # after printing: the JSON is printed either way


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
        f"jitter ratio {f('jitter_ratio')}, motion ratio {f('motion_ratio')}, flicker ratio {f('flicker_ratio')}",
        f"blend:      seam {f('seam_score')}, background PSNR {f('background_psnr_db', '{:.1f}')} dB, face found {f('face_found_ratio')}",
    ]
    from recast.models.qc_rules import RULES

    defects = [r for r in RULES if r.group == "defects" and m.get(r.metric) is not None]
    if defects:
        lines.append("defects:    " + ", ".join(f"{r.label} {r.format(float(m[r.metric]))}" for r in defects))
    for r in result.get("reasons") or []:
        lines.append(f"reason:     {r['text']}")
    for photo in result.get("source_vetting") or []:  # scoring files: what vetting found, never a refusal
        lines += [f"source:     {f['outcome']:6s} {f['check']}: {f['text']}" for f in photo["findings"] if f["outcome"] != "ok"]
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
        prepare(local_flows=True)
        from recast.services.review import submit_decision

        outcome = submit_decision(shot, chosen[0], note=note, reviewer=reviewer or _login(), params=parse_sets(set_) if rerun else None,
                                  via="cli", start_rerun=_rerun_here)
        typer.echo(json.dumps(outcome.as_dict(), default=str) if as_json else f"{outcome.decision}: {outcome.message}")

    guarded(go)


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


def _rerun_here(shot_id: str, run_id: str) -> dict[str, Any]:
    """A re-run decided on a run that is not paused runs here, to the end, without pausing."""
    from recast.flows.swap_shot import swap_shot

    return swap_shot(shot_id=shot_id, run_id=run_id, review="never").summary()


def _login() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return "unknown"


def register(app: typer.Typer) -> None:
    """Add ``qc`` and ``review`` to the ``recast`` Typer app."""
    app.command("qc")(qc)
    app.command("review")(review)


__all__ = ["parse_sets", "qc", "register", "review"]
