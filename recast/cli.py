"""The ``recast`` command line. Exit codes are decided here and nowhere else.

| code | meaning |
|------|---------|
| 0 | done (for ``qc``: verdict pass or review) |
| 1 | internal error (a bug: report it) |
| 2 | usage: bad arguments or options |
| 3 | bad input: missing, unreadable or corrupt file; no face where one is needed |
| 4 | refused by policy: consent, licence, permission |
| 5 | ``qc``: verdict fail |
| 6 | external service unavailable: database, object store, Prefect server |
| 130 | interrupted |
"""

from __future__ import annotations

import json
import re
import sys
import traceback
from pathlib import Path
from typing import Any, Callable, Optional

import typer

from recast import errors
from recast.settings import configure_prefect_environment, get_settings

EXIT_OK, EXIT_INTERNAL, EXIT_USAGE, EXIT_INPUT, EXIT_POLICY, EXIT_QC_FAIL, EXIT_SERVICE, EXIT_INTERRUPTED = 0, 1, 2, 3, 4, 5, 6, 130

app = typer.Typer(add_completion=False, no_args_is_help=True, help="recast: head and face replacement for post-production, with provenance.")
db_app = typer.Typer(no_args_is_help=True, help="Database schema management.")
app.add_typer(db_app, name="db")


def exit_code_for(exc: BaseException) -> int:
    """The documented exit code for an exception."""
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(exc, errors.UsageError):
        return EXIT_USAGE
    if isinstance(exc, errors.PolicyError):
        return EXIT_POLICY
    if isinstance(exc, errors.ServiceUnavailableError):
        return EXIT_SERVICE
    if isinstance(exc, errors.InputError):
        return EXIT_INPUT
    return EXIT_INTERNAL


def _fail(exc: BaseException) -> None:
    code = exit_code_for(exc)
    if code == EXIT_INTERNAL and not isinstance(exc, errors.RecastError):
        traceback.print_exc(file=sys.stderr)
        typer.echo(f"recast: internal error: {type(exc).__name__}: {exc} (please report it)", err=True)
    elif code == EXIT_INTERRUPTED:
        typer.echo("recast: interrupted", err=True)
    else:
        typer.echo(f"recast: error: {exc}", err=True)
    raise typer.Exit(code)


def _guarded(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except typer.Exit:
        raise
    except BaseException as exc:  # noqa: BLE001 - every failure leaves with its documented code
        _fail(exc)


def _prepare() -> None:
    configure_prefect_environment(get_settings())
    from recast.db.migrate import ensure_schema

    ensure_schema(get_settings())


def _shot_params(*, mode: str, face: str, source_face: Optional[str], expression: str, edits: list[str], chunk_size: Optional[int],
                 backend: str = "classic"):
    """Validate the swap options early, naming the offending value."""
    from recast.contracts import Mode, ShotParams
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
    from recast.tasks.swap import BACKENDS

    if backend not in BACKENDS:
        raise errors.UsageError(f"--backend '{backend}': choose from {', '.join(BACKENDS)}")
    return ShotParams(mode=mode_value, face=face, source_face=source_face, expression=expression, edits=tuple(edits),
                      chunk_size=chunk_size or get_settings().chunk_size, backend=backend)


def _run_swap(*, plate: str, sources: list[str], out: Optional[Path], params: Any, as_json: bool, note: str | None = None,
              project: Optional[str] = None, identity: Optional[str] = None, review: str = "auto") -> None:
    from recast.tasks import shots

    _prepare()
    shot_id, run_id = shots.submit_local_shot(plate=plate, sources=sources, params=params, project=project, identity=identity)
    typer.echo(f"[recast] run {run_id} (shot {shot_id})", err=True)
    try:
        if out is not None:
            from recast.media import check_output_writable

            check_output_writable(out)
        from recast.flows.swap_shot import swap_shot, task_runner_for

        from prefect import tags

        flow = swap_shot.with_options(task_runner=task_runner_for()) if get_settings().dask_address else swap_shot
        # the same tags as deployment runs, so the Prefect UI filters local runs alike
        with tags(f"project:{project or 'scratch'}", f"mode:{params.mode.value}", f"backend:{params.backend}", "priority:0", "recast"):
            summary = flow(shot_id=shot_id, run_id=run_id, output_path=str(out.absolute()) if out else None, review=review)
    except BaseException as exc:
        shots.fail_run(run_id, exc)
        raise
    if as_json:
        typer.echo(json.dumps(summary, default=str))
    else:
        _print_summary(summary, note)


def _print_summary(summary: dict[str, Any], note: str | None) -> None:
    qc = summary["qc"]
    lines = [
        f"output:   {summary['output']}",
        f"run:      {summary['run_id']}   shot: {summary['shot_id']}",
        f"frames:   {summary['frames']} at {summary['fps']} fps (average {summary['avg_fps']}), {summary['swapped_frames']} swapped, {summary['passthrough_frames']} without a face",
        f"qc:       {qc['verdict'].upper()}  identity transfer {_fmt(qc.get('identity_transfer_rate'))}, hair transfer {_fmt(qc.get('hair_transfer_rate'))}, "
        f"distance to source {_fmt(qc.get('identity_distance_source'))} / to plate person {_fmt(qc.get('identity_distance_plate'))}, "
        f"pose error {_fmt(qc.get('pose_error_deg'))} deg, background PSNR {_fmt(qc.get('delivered_background_psnr_db'))} dB",
        "stages:   " + ", ".join(f"{k} {v / 1000:.1f}s" for k, v in summary["stages"].items()),
    ]
    if qc.get("reasons"):
        lines.append("reasons:  " + "; ".join(qc["reasons"]))
    if note:
        lines.append(note)
    typer.echo("\n".join(lines))


def _fmt(v: Any) -> str:
    return "n/a" if v is None else (f"{v:.2f}" if isinstance(v, float) else str(v))


@app.command()
def swap(
    plate: str = typer.Option(..., "--plate", help="the filmed clip (path, file:// or s3:// URI)"),
    source: list[str] = typer.Option([], "--source", help="photo of the person whose head goes in (repeatable; default: the --identity's photos)"),
    project: Optional[str] = typer.Option(None, "--project", help="production project (consent-gated); default: the built-in 'scratch' project"),
    identity: Optional[str] = typer.Option(None, "--identity", help="registered identity whose consent covers the project"),
    out: Path = typer.Option(..., "--out", help="where to write the deliverable (.mp4)"),
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
        from recast.flows.review import REVIEW_MODES

        if review not in REVIEW_MODES:
            raise errors.UsageError(f"--review '{review}': choose from {', '.join(REVIEW_MODES)}")
        params = _shot_params(mode=mode, face=face, source_face=source_face, expression=expression, edits=edit, chunk_size=chunk_size, backend=backend)
        _run_swap(plate=plate, sources=source, out=out, params=params, as_json=as_json, project=project, identity=identity, review=review)

    _guarded(go)


@app.command()
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
        params = _shot_params(mode=mode, face="largest", source_face=None, expression="transfer", edits=[], chunk_size=None)
        _run_swap(plate=str(plt), sources=[str(src)], out=target, params=params, as_json=as_json, note=note)

    _guarded(go)


@app.command()
def runs(limit: int = typer.Option(20, "--limit", min=1), as_json: bool = typer.Option(False, "--json")) -> None:
    """List recent runs with their status."""

    def go() -> None:
        from recast.reports import recent_runs

        _prepare()
        rows = recent_runs(limit)
        if as_json:
            typer.echo(json.dumps(rows, default=str))
            return
        if not rows:
            typer.echo("no runs yet")
        for r in rows:
            typer.echo(f"{r['run_id']}  {r['status']:<9} {str(r['started'] or '')[:19]:<19}  {r['project']}/{r['shot']}" + (f"  {r['error']}" if r.get("error") else ""))

    _guarded(go)


@app.command()
def show(run_id: str = typer.Argument(..., help="a run id from `recast runs`"), as_json: bool = typer.Option(False, "--json")) -> None:
    """Print the stage runs of a run: parameters, models and checksums, inputs and outputs."""

    def go() -> None:
        from recast.reports import run_detail

        _prepare()
        detail = run_detail(run_id)
        if as_json:
            typer.echo(json.dumps(detail, default=str, indent=2))
            return
        r = detail["run"]
        typer.echo(f"run {r['run_id']}  {r['status']}  shot {r['shot']} ({r['shot_id']})  project {r['project']}")
        if r.get("error"):
            typer.echo(f"  error: {r['error']}")
        for sr in detail["stages"]:
            where = f" chunk {sr['chunk_index']} [{sr['frame_start']},{sr['frame_end']})" if sr["chunk_index"] is not None else ""
            typer.echo(f"- {sr['stage']}{where}: {sr['status']}  {sr['elapsed_ms'] or '-'} ms  work {sr['work_key'][:12]}")
            typer.echo(f"    params: {json.dumps(sr['params'], sort_keys=True)}")
            for m in sr["models"]:
                typer.echo(f"    model:  {m['name']} {m['version']} sha256={m.get('sha256') or '-'}")
            for a in sr["inputs"]:
                typer.echo(f"    in:     {a['role']:<16} {a['uri']} sha256={a['sha256'][:16]}")
            for a in sr["outputs"]:
                typer.echo(f"    out:    {a['role']:<16} {a['uri']} sha256={a['sha256'][:16]}")
            if sr.get("error"):
                typer.echo(f"    error:  {sr['error']}")

    _guarded(go)


@app.command()
def lineage(target: str = typer.Argument(..., help="a deliverable path, an asset id, a URI or a sha256"), as_json: bool = typer.Option(False, "--json")) -> None:
    """Print the tree of assets a file or asset came from."""

    def go() -> None:
        from recast.reports import lineage_tree

        _prepare()
        tree = lineage_tree(target)
        if as_json:
            typer.echo(json.dumps(tree, default=str, indent=2))
            return

        seen: set[str] = set()

        def walk(node: dict[str, Any], depth: int) -> None:
            a = node["asset"]
            repeat = a["id"] in seen
            typer.echo(f"{'  ' * depth}{'└─ ' if depth else ''}{a['role']}  {a['uri']}  sha256={a['sha256'][:16]}  ({a['id']})" + ("  [above]" if repeat and node.get("parents") else ""))
            if repeat:
                return  # an asset shared by several branches is expanded once
            seen.add(a["id"])
            for p in node.get("parents", []):
                walk(p, depth + 1)

        walk(tree, 0)

    _guarded(go)


from recast.api.commands import register as _register_production_commands  # noqa: E402 - needs app defined

_register_production_commands(app)
from recast.trust_commands import register as _register_trust_commands  # noqa: E402

_register_trust_commands(app)
from recast.qc_commands import register as _register_qc_commands  # noqa: E402

_register_qc_commands(app)


models_app = typer.Typer(no_args_is_help=True, help="Model weights in RECAST_MODEL_DIR (never downloaded).")
app.add_typer(models_app, name="models")


@models_app.command("list")
def models_list(as_json: bool = typer.Option(False, "--json")) -> None:
    """What each registered model needs, whether its files are present and their checksums verified."""

    def go() -> None:
        from recast.models.registry import list_models

        rows = list_models(get_settings().model_dir)
        if as_json:
            typer.echo(json.dumps([r.__dict__ for r in rows], default=str))
            return
        typer.echo(f"model directory: {get_settings().model_dir or '(RECAST_MODEL_DIR not set)'}")
        for r in rows:
            state = "verified" if r.verified else ("present" if r.present else "missing")
            use = "commercial use ok" if r.commercial_use else "NON-COMMERCIAL"
            typer.echo(f"{r.name:<28} {state:<9} {r.device:<5} {use:<18} {r.problem or ''}")

    _guarded(go)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply the database migrations (the embedded SQLite is upgraded automatically)."""

    def go() -> None:
        from recast.db.migrate import current_revision, upgrade

        url = get_settings().resolved_database_url
        upgrade(url)
        typer.echo(f"database at revision {current_revision(url)}")

    _guarded(go)


_NATIVE_NOISE = re.compile(rb"^(?:[IWE]\d{4} [\d:. ]+\S+\.cc:\d+\]|INFO: Created TensorFlow Lite|WARNING: All log messages before absl::InitializeLog)")


def _filter_native_logs() -> Callable[[], None]:
    """Drop the C++ log chatter of MediaPipe/TFLite from stderr, keep everything else.

    Those lines are written by native threads straight to file descriptor 2, so they can only be
    filtered at the descriptor: stderr goes through a pipe and a thread passes on what matters.
    Returns a function that restores stderr and flushes what is pending.
    """
    import os
    import threading

    sys.stderr.flush()
    saved = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)

    def pump() -> None:
        with os.fdopen(read_end, "rb", buffering=0) as src:
            pending = b""
            while chunk := src.read(65536):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    if not _NATIVE_NOISE.match(line):
                        os.write(saved, line + b"\n")
            if pending and not _NATIVE_NOISE.match(pending):
                os.write(saved, pending)

    thread = threading.Thread(target=pump, name="stderr-filter", daemon=True)
    thread.start()

    def restore() -> None:
        sys.stderr.flush()
        os.dup2(saved, 2)  # closes the pipe's last writer, so the pump drains and stops
        thread.join(timeout=5)
        os.close(saved)

    return restore


def main() -> None:
    """Console entry point."""
    restore = _filter_native_logs()
    try:
        app()
    except KeyboardInterrupt:
        typer.echo("recast: interrupted", err=True)
        raise SystemExit(EXIT_INTERRUPTED) from None
    finally:
        restore()


if __name__ == "__main__":
    main()
