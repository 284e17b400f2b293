"""``recast swap`` and ``recast demo``: run the pipeline on a plate here, progress on stderr
(``[recast] <stage>: <done>/<total> frames (<pct>%)``), the summary (or ``--json``) on stdout.

The output path is checked before anything is recorded or started: its container (``--deliver``
or its extension: mp4, mov), that it is none of the inputs and not inside recast's store, and
that it can be written. A QC verdict ``fail`` publishes nothing there and exits 5 (the summary
names the render's place in the store) unless ``--deliver-on-fail`` is given.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer

from recast import errors
from recast.cli.guard import EXIT_QC_FAIL, fmt, guarded, prepare
from recast.settings import get_settings


def shot_params(*, mode: str, face: str, source_face: Optional[str], expression: str, edits: list[str], chunk_size: Optional[int],
                backend: str = "classic"):
    """Validate the swap options early, naming the offending option and value."""
    from recast.contracts import Mode, ShotParams
    from recast.models.engines import ENGINE_NAMES
    from recast.models.retarget import MODES, parse_edit
    from recast.models.tracking import parse_face_selector

    try:
        mode_value = Mode(mode)
    except ValueError:
        raise errors.UsageError(f"--mode '{mode}': choose from {', '.join(m.value for m in Mode)}") from None
    if expression not in MODES:
        raise errors.UsageError(f"--expression '{expression}': choose from {', '.join(MODES)}")
    for e in edits:
        parse_edit(e)
    parse_face_selector(face)
    if source_face is not None and parse_face_selector(source_face).kind != "index":
        raise errors.UsageError(f"--source-face '{source_face}': use index:N (0 = the largest face of the source photo)")
    if backend not in ENGINE_NAMES:
        raise errors.UsageError(f"--backend '{backend}': choose from {', '.join(ENGINE_NAMES)}")
    # the backend/mode pair is checked where every submission goes through (services.shots)
    return ShotParams(mode=mode_value, face=face, source_face=source_face, expression=expression, edits=tuple(edits),
                      chunk_size=chunk_size or get_settings().chunk_size, backend=backend)


def check_output(out: Path, *, plate: str, sources: list[str], face: str, deliver: Optional[str]) -> None:
    """Refuse an output path before any work: an unsupported or contradictory container (2),
    one of the inputs or a place inside recast's store or database (2), unwritable (3)."""
    from recast.media import check_output_not_input, check_output_writable, resolve_container, store_paths
    from recast.models.tracking import parse_face_selector

    reference = parse_face_selector(face).reference_path
    # the worst mistake first: an input about to be destroyed is named even when the extension is wrong too
    check_output_not_input(out, [plate, *sources, *([reference] if reference else [])], store_paths(get_settings()))
    resolve_container(out, deliver)
    check_output_writable(out)


def run_swap(*, plate: str, sources: list[str], out: Optional[Path], params: Any, as_json: bool, note: str | None = None,
             project: Optional[str] = None, identity: Optional[str] = None, review: str = "auto", deliver: Optional[str] = None,
             deliver_on_fail: bool = False) -> None:
    """Check the output path, submit the shot and run its flow in this process; print the summary.
    Leaves with exit 5 when QC failed the render and nothing was published."""
    from recast.services import shots

    if out is not None:
        check_output(out, plate=plate, sources=sources, face=params.face, deliver=deliver)
    elif deliver is not None:
        from recast.media import resolve_container

        resolve_container(None, deliver)
    # bad input is refused before a Prefect server is started or the database touched: in a second, no run left behind
    shots.validate_submission(plate=plate, sources=sources, params=params)
    from recast.services.space import check_swap_space

    # needs only the settings: a full disk is refused before a Prefect server starts or a run exists
    check_swap_space(plate, out, mode=params.mode.value)
    prepare(local_flows=True)
    shot_id, run_id = shots.submit_local_shot(plate=plate, sources=sources, params=params, project=project, identity=identity, validated=True,
                                              run_here=True)
    typer.echo(f"[recast] run {run_id} (shot {shot_id})", err=True)
    try:
        from prefect import tags

        from recast.flows.swap_shot import swap_shot

        # the same tags as deployment runs, so the Prefect UI filters local runs alike
        with tags(f"project:{project or 'scratch'}", f"mode:{params.mode.value}", f"backend:{params.backend}", "priority:0", "recast"):
            outcome = swap_shot(shot_id=shot_id, run_id=run_id, output_path=str(out.absolute()) if out else None, review=review,
                                deliver=deliver, deliver_on_fail=deliver_on_fail)
    except BaseException as exc:
        shots.fail_run(run_id, exc)
        raise
    summary = outcome.summary()
    # the source report the flow recorded for each photo (what QC read): every check's outcome
    summary["source_vetting"] = shots.source_vetting(run_id)
    if as_json:
        typer.echo(json.dumps(summary, default=str))
    else:
        print_summary(summary, note)
    if outcome.published is False:
        typer.echo(f"recast: QC verdict fail: nothing written at '{out}'; the render is in the store at {outcome.output_uri} "
                   "(run again with --deliver-on-fail to publish it anyway)", err=True)
        raise typer.Exit(EXIT_QC_FAIL)


def print_summary(summary: dict[str, Any], note: str | None) -> None:
    qc = summary["qc"]
    output = summary.get("output")
    if summary.get("published") is False:
        output = f"not written (QC verdict fail); the render is in the store at {summary.get('output_uri')}"
    lines = [
        f"output:   {output}",
        f"run:      {summary['run_id']}   shot: {summary['shot_id']}",
        f"frames:   {summary['frames']} at {summary['fps']} fps (average {summary['avg_fps']}), {summary['swapped_frames']} swapped, {summary['passthrough_frames']} without a face",
        f"qc:       {qc['verdict'].upper()}  identity transfer {fmt(qc.get('identity_transfer_rate'))}, hair transfer {fmt(qc.get('hair_transfer_rate'))}, "
        f"distance to source {fmt(qc.get('identity_distance_source'))} / to plate person {fmt(qc.get('identity_distance_plate'))}, "
        f"pose error {fmt(qc.get('pose_error_deg'))} deg, background PSNR {fmt(qc.get('delivered_background_psnr_db'))} dB",
        "stages:   " + ", ".join(f"{k} {v / 1000:.1f}s" for k, v in summary["stages"].items()),
    ]
    absent = summary.get("segments_without_person") or []
    if absent:  # after a cut the chosen person is not there: those frames are the plate's, untouched
        lines.append("untouched: frames " + ", ".join(f"{r['start']}-{r['end'] - 1}" for r in absent) + " (the chosen person is not in them)")
    if qc.get("reasons"):
        lines.append("reasons:  " + "; ".join(str(r.get("text", r)) if isinstance(r, dict) else str(r) for r in qc["reasons"]))
    warned = [f["text"] for item in summary.get("source_vetting") or [] for f in item["findings"] if f["outcome"] == "warn"]
    if warned:
        lines.append("source:   " + "; ".join(warned))
    if note:
        lines.append(note)
    typer.echo("\n".join(lines))


def swap(
    plate: str = typer.Option(..., "--plate", help="the filmed clip (path, file:// or s3:// URI)"),
    source: list[str] = typer.Option([], "--source", help="photo of the person whose head goes in (repeatable; default: the --identity's photos)"),
    project: Optional[str] = typer.Option(None, "--project", help="production project (consent-gated); default: the built-in 'scratch' project"),
    identity: Optional[str] = typer.Option(None, "--identity", help="registered identity whose consent covers the project"),
    out: Path = typer.Option(..., "--out", help="where to write the deliverable: .mp4 or .mov (the extension chooses the container)"),
    deliver: Optional[str] = typer.Option(None, "--deliver", help="container of the deliverable: mp4 | mov (default: --out's extension); "
                                          "the plate's codec where the container holds it (H.264, HEVC; ProRes, DNxHR in mov), else H.264"),
    deliver_on_fail: bool = typer.Option(False, "--deliver-on-fail", help="write the deliverable at --out even when the QC verdict is fail "
                                         "(exit 0); without it a fail verdict writes nothing there and exits 5"),
    mode: str = typer.Option("head", "--mode", help="head (face, hair and head shape of the source) or face (the face only)"),
    face: str = typer.Option("largest", "--face", help="which person of the plate: largest | index:N (0 = largest) | reference:PHOTO"),
    source_face: Optional[str] = typer.Option(None, "--source-face", help="which face of a source photo showing several people: index:N"),
    expression: str = typer.Option("transfer", "--expression", help="transfer (the plate's performance) | keep_source | neutral"),
    edit: list[str] = typer.Option([], "--edit", help="expression edit, repeatable: smile|mouth_open|eye_open|brow_raise|gaze=AMOUNT[@START-END], e.g. smile=+0.3"),
    review: str = typer.Option("auto", "--review", help="auto: a local swap never waits (pauses only in deployment runs) | pause: wait for `recast review` or the Prefect UI on a review verdict | never"),
    backend: str = typer.Option("classic", "--backend", help="classic (CPU) | inswapper (face, ONNX) | diffusion (head, GPU); weights from RECAST_MODEL_DIR"),
    chunk_size: Optional[int] = typer.Option(None, "--chunk-size", min=1, help="frames per chunk (default RECAST_CHUNK_SIZE, 48)"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object on stdout"),
) -> None:
    """Swap the source head (or face) onto the chosen person in every frame of the plate; progress goes to stderr."""

    def go() -> None:
        from recast.services.shots import check_inputs_exist

        check_inputs_exist(plate, source)  # before the heavy imports below: a missing file is told at once
        from recast.contracts import REVIEW_MODES  # not flows.review: that imports Prefect (seconds)

        if review not in REVIEW_MODES:
            raise errors.UsageError(f"--review '{review}': choose from {', '.join(REVIEW_MODES)}")
        params = shot_params(mode=mode, face=face, source_face=source_face, expression=expression, edits=edit, chunk_size=chunk_size, backend=backend)
        run_swap(plate=plate, sources=source, out=out, params=params, as_json=as_json, project=project, identity=identity, review=review,
                 deliver=deliver, deliver_on_fail=deliver_on_fail)

    guarded(go)


def demo(
    source: Optional[Path] = typer.Option(None, "--source", help="your own source photo (default: NASA's astronaut portrait, public domain)"),
    plate: Optional[Path] = typer.Option(None, "--plate", help="your own plate clip (default: a synthetic plate)"),
    out: Optional[Path] = typer.Option(None, "--out", help="deliverable path (default: <data dir>/demo/output.mp4)"),
    mode: str = typer.Option("head", "--mode", help="head or face"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Run the whole pipeline on sample media that ships with recast's dependencies."""

    def go() -> None:
        from recast.demo import demo_inputs

        settings = get_settings()
        src, plt, note = demo_inputs(settings.resolved_data_dir / "demo", source=source, plate=plate)
        target = out or settings.resolved_data_dir / "demo" / "output.mp4"
        params = shot_params(mode=mode, face="largest", source_face=None, expression="transfer", edits=[], chunk_size=None)
        run_swap(plate=str(plt), sources=[str(src)], out=target, params=params, as_json=as_json, note=note)

    guarded(go)


def register(app: typer.Typer) -> None:
    """Add ``swap`` and ``demo``."""
    app.command("swap")(swap)
    app.command("demo")(demo)
