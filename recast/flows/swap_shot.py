"""The ``swap_shot`` flow: ingest → segment (mapped) → expression → swap (mapped) → qc → render.

Orchestration only: stages are Prefect tasks from ``recast.tasks``; this module moves references
between them, runs chunk tasks in parallel and keeps the run's status in step.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import flow, unmapped
from prefect.futures import wait
from prefect.runtime import flow_run
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from recast.contracts import IngestResult, QCReport, SegmentResult, ShotOutcome, SwapChunkResult, TrackResult
from recast.errors import NoFaceError, UsageError
from recast.media.render import Container, resolve_container
from recast.settings import get_settings
from recast.services import shots
from recast.tasks.common import emit_progress, stage_task
from recast.tasks.expression import retarget
from recast.tasks.ingest import ingest
from recast.flows.review import ReviewDecision, review_gate
from recast.tasks.qc import score_shot
from recast.tasks.report import build_report, publish_qc
from recast.services.review import approve_renders, prepare_rerun, reject_run
from recast.tasks.render import publish, render_shot
from recast.tasks.segment import analyze_source, segment_chunk
from recast.tasks.track import track_person
from recast.tasks.background import reconstruct
from recast.tasks.swap import swap_chunk
from recast.services.trust import require_consent
from recast.media.credentials import require_studio_credentials

ingest_task = stage_task(ingest, name="ingest")
analyze_source_task = stage_task(analyze_source, name="segment-source")
segment_task = stage_task(segment_chunk, name="segment")
track_task = stage_task(track_person, name="track")
background_task = stage_task(reconstruct, name="background")
expression_task = stage_task(retarget, name="expression")
swap_task = stage_task(swap_chunk, name="swap")
qc_task = stage_task(score_shot, name="qc")
render_task = stage_task(render_shot, name="render")
report_task = stage_task(build_report, name="report")
publish_qc_task = stage_task(publish_qc, name="qc-record")


def _run_name() -> str:
    shot_id = flow_run.parameters.get("shot_id")
    try:
        return shots.shot_code(shot_id)
    except Exception:
        return f"shot-{shot_id}"


def _gather(futures: list[Any]) -> list[Any]:
    """Results of mapped chunk tasks, waiting for all first so finished chunks are kept for a resume."""
    wait(futures)
    results, first_error = [], None
    for f in futures:
        try:
            results.append(f.result())
        except BaseException as exc:  # keep going: every chunk that finished is recorded
            first_error = first_error or exc
    if first_error is not None:
        raise first_error
    return results


def task_runner_for(settings=None):
    """Chunk tasks run on threads of this process, or on a Dask cluster (RECAST_DASK_ADDRESS).

    Work spread over several processes or machines shares the database: SQLite cannot be shared
    that way, so a Dask cluster needs PostgreSQL and recast refuses SQLite there.
    """
    settings = settings or get_settings()
    if not settings.dask_address:
        return ThreadPoolTaskRunner(max_workers=settings.worker_count)
    if settings.database_is_sqlite:
        raise UsageError(f"RECAST_DASK_ADDRESS={settings.dask_address} needs a shared database: set RECAST_DATABASE_URL to PostgreSQL "
                         "(SQLite cannot be shared by several processes or machines)")
    from prefect_dask import DaskTaskRunner

    return DaskTaskRunner(address=settings.dask_address)


class SettingsTaskRunner(TaskRunner):
    """The flow's task runner, chosen from the settings when a flow run starts.

    A runner given to ``@flow`` is built when the module is imported: the worker count and
    ``RECAST_DASK_ADDRESS`` would be fixed for the life of the process (a worker, a test session)
    and ``reset_settings()`` could not change them. Prefect enters a fresh copy of the flow's
    runner (:meth:`duplicate`) at the start of every run; this one builds the real runner
    (:func:`task_runner_for`) at that moment and hands every submission to it.

    A configuration error (Dask with SQLite) is kept and raised at the first submission, so the
    flow body reports it for the run it has already recorded, like any other failure.
    """

    def __init__(self) -> None:
        super().__init__()
        self._inner: TaskRunner | None = None
        self._error: BaseException | None = None

    @property
    def name(self) -> str:
        return "settings"

    def duplicate(self) -> "SettingsTaskRunner":
        return type(self)()

    def __enter__(self) -> "SettingsTaskRunner":
        super().__enter__()
        try:
            self._inner = task_runner_for()
            self._inner.__enter__()
        except UsageError as exc:
            self._inner, self._error = None, exc
        return self

    def __exit__(self, *exc_info: Any) -> None:
        inner, self._inner, self._error = self._inner, None, None
        try:
            if inner is not None:
                inner.__exit__(*exc_info)
        finally:
            super().__exit__(*exc_info)

    @property
    def runner(self) -> TaskRunner:
        """The runner built at flow start (raises the configuration error, if there was one)."""
        if self._error is not None:
            raise self._error
        if self._inner is None:
            raise RuntimeError("the task runner is used before its flow run started")
        return self._inner

    def submit(self, task: Any, parameters: dict[str, Any], wait_for: Any = None, dependencies: Any = None) -> Any:
        return self.runner.submit(task, parameters, wait_for, dependencies)


@flow(
    name="swap_shot",
    flow_run_name=_run_name,
    # built when a run starts, from the settings then in force (not when this module is imported)
    task_runner=SettingsTaskRunner(),
    persist_result=False,
    validate_parameters=True,
)
def swap_shot(shot_id: str, run_id: str | None = None, output_path: str | None = None, review: str = "auto",
              deliver: str | None = None, deliver_on_fail: bool = False) -> ShotOutcome:
    """Swap the source face into every frame of a shot's plate; returns the run's outcome.

    ``review``: ``auto`` pauses for a supervisor when the QC verdict is ``review`` and a
    deployment started the run, ``pause`` always does, ``never`` does not (see
    :mod:`recast.flows.review`).

    The deliverable's container is ``deliver`` (mp4, mov) or the extension of ``output_path``
    (default mp4). It is published at ``output_path`` unless the QC verdict is ``fail``: then it
    stays in the store only (``published`` False, ``output_uri`` says where) — unless
    ``deliver_on_fail`` is set or a supervisor approved it in review.
    """
    spec = shots.load_shot(shot_id)
    run_id = shots.start_run(shot_id, run_id, str(flow_run.id) if flow_run.id else None)
    stages: dict[str, float] = {}
    try:
        container = _check_before_work(shot_id, spec, output_path, deliver)
        done = _run_stages(spec, shot_id, run_id, stages)
        decision = review_gate(run_id=run_id, shot=spec.code, qc=done.qc, review=review)
        if decision is not None and decision.decision == "reject":
            return _reject(spec, run_id, shot_id, done, decision, stages)
        if decision is not None and decision.decision == "rerun":
            new_run_id, _ = prepare_rerun(shot_id, decision.params)
            reject_run(run_id, reason=f"superseded by run {new_run_id} (re-run in review with {decision.params or {}})")
            # a subflow: a new run of the same shot; unchanged stages are reused from the stage cache
            return swap_shot(shot_id=shot_id, run_id=new_run_id, output_path=output_path, review=review, deliver=deliver,
                             deliver_on_fail=deliver_on_fail)
        return _render_and_publish(spec, run_id, shot_id, done, decision, container=container, output_path=output_path,
                                   deliver_on_fail=deliver_on_fail, stages=stages)
    except BaseException as exc:
        shots.fail_run(run_id, exc)
        raise


@dataclass(frozen=True)
class _StageResults:
    """What the stages up to QC produced for one run: what review and render go on from."""

    ingest: IngestResult
    segments: list[SegmentResult]
    track: TrackResult
    swaps: list[SwapChunkResult]
    qc: QCReport
    qc_summary: dict[str, Any]  # QC's metrics with the verdict, the reasons and the report's URI


def _check_before_work(shot_id: str, spec: shots.ShotSpec, output_path: str | None, deliver: str | None) -> Container:
    """The deliverable's container, once every check that can refuse the run without work has passed."""
    container = resolve_container(output_path, deliver)  # an unsupported container fails before any work
    require_studio_credentials(f"shot {spec.code}")  # a service signs and marks with the studio's keys: checked before any work
    if get_settings().dask_address:
        task_runner_for()  # refuses SQLite with a clear error before any work, for this run
    consent = require_consent(shot_id)  # policy gate before any work; render checks again
    emit_progress(f"consent: {consent.identity} under consent {consent.consent_id}" if consent.consent_id
                  else f"consent: none on record (project '{consent.project}' does not require it)")
    return container


def _run_stages(spec: shots.ShotSpec, shot_id: str, run_id: str, stages: dict[str, float]) -> _StageResults:
    """The stage graph from ingest to QC (and its report); each stage's time goes into ``stages``."""
    t = time.perf_counter()
    ing = ingest_task(run_id=run_id, shot_id=shot_id, plate=spec.plate, sources=list(spec.sources), chunk_size=spec.params.chunk_size)
    stages["ingest"] = _ms(t)
    shots.attach_inputs(shot_id, plate_asset_id=ing.plate.asset_id, source_asset_ids=[r.asset_id for r in ing.sources])
    total = ing.plate_info.frame_count

    params = spec.params
    mode = params.mode.value
    t = time.perf_counter()
    source_futures = [analyze_source_task.submit(run_id=run_id, shot_id=shot_id, source=ref, name=name, mode=mode, source_face=params.source_face,
                                                 plate=ing.plate, face_selector=params.face)
                      for ref, name in zip(ing.sources, spec.sources)]
    seg_futures = segment_task.map(
        run_id=unmapped(run_id), shot_id=unmapped(shot_id), chunk=list(ing.chunks), chunk_index=list(range(len(ing.chunks))),
        face_selector=unmapped(params.face), total_frames=unmapped(total),
    )
    source_faces = _gather(source_futures)
    segments = _gather(list(seg_futures))
    stages["segment"] = _ms(t)

    t = time.perf_counter()
    track = track_task(run_id=run_id, shot_id=shot_id, ingest=ing, segments=segments, face_selector=params.face)
    stages["track"] = _ms(t)
    if track.frames_with_person == 0:
        raise NoFaceError(f"plate '{spec.plate}': no face found in any of its {total} frames" if sum(s.faces_found for s in segments) == 0
                          else f"plate '{spec.plate}': the selected face ({params.face}) is in none of its {total} frames")
    absent = track.segments_without_person
    emit_progress(f"track: chosen person in {track.frames_with_person}/{total} frames, {len(track.cuts)} scene cuts"
                  + (f"; not in frames {', '.join(f'{r.start}-{r.end - 1}' for r in absent)} (left untouched)" if absent else ""))

    source = source_faces[0]
    backgrounds: list = [None] * len(ing.chunks)
    if params.mode.value == "head":
        t = time.perf_counter()
        bg = background_task(run_id=run_id, shot_id=shot_id, ingest=ing, segments=segments, track=track)
        backgrounds = list(bg.chunks)
        stages["background"] = _ms(t)

    t = time.perf_counter()
    expr = expression_task(run_id=run_id, shot_id=shot_id, track=track, source=source, expression=params.expression, edits=list(params.edits))
    stages["expression"] = _ms(t)

    t = time.perf_counter()
    project, commercial = shots.project_of(shot_id)  # the licences of learned engines' models
    swap_futures = swap_task.map(
        run_id=unmapped(run_id), shot_id=unmapped(shot_id), chunk=list(ing.chunks), chunk_index=list(range(len(ing.chunks))),
        segment=segments, track=unmapped(track), expression=unmapped(expr), source=unmapped(source), background=backgrounds,
        backend=unmapped(params.backend), mode=unmapped(mode), total_frames=unmapped(total),
        project=unmapped(project), commercial=unmapped(commercial),
    )
    swaps = _gather(list(swap_futures))
    stages["swap"] = _ms(t)

    t = time.perf_counter()
    qc = qc_task(run_id=run_id, shot_id=shot_id, ingest=ing, segments=segments, track=track, swaps=swaps, source=source, mode=mode)
    # the report is part of QC in the timings (the summary's stage names stay the six stages)
    report = report_task(run_id=run_id, shot_id=shot_id, shot=spec.code, plate=list(ing.chunks), outputs=[s.video for s in swaps], qc=qc)
    qc_out = publish_qc_task(run_id=run_id, shot_id=shot_id, shot=spec.code, qc=qc, report=report)
    stages["qc"] = _ms(t)
    qc_summary = {**qc.metrics, "verdict": qc.verdict.value, "reasons": qc_out["reasons"], "report": qc_out["report"]}
    return _StageResults(ingest=ing, segments=segments, track=track, swaps=swaps, qc=qc, qc_summary=qc_summary)


def _review_info(decision: ReviewDecision | None) -> dict[str, Any] | None:
    """The supervisor's decision as the outcome records it (None: the run did not pause)."""
    return None if decision is None else {"decision": decision.decision, "reviewer": decision.reviewer, "note": decision.note,
                                          "params": decision.params}


def _reject(spec: shots.ShotSpec, run_id: str, shot_id: str, done: _StageResults, decision: ReviewDecision, stages: dict[str, float]) -> ShotOutcome:
    """The outcome of a run rejected in review: nothing is rendered."""
    params = spec.params
    outcome = ShotOutcome(run_id=run_id, shot_id=shot_id, shot=spec.code, status="rejected", mode=params.mode.value,
                          params=params.model_dump(mode="json"), qc=done.qc_summary, review=_review_info(decision), stages=stages,
                          segments_without_person=done.track.segments_without_person)
    reject_run(run_id, reason=f"rejected in review by {decision.reviewer or 'unknown'}" + (f": {decision.note}" if decision.note else ""),
               summary=outcome.summary())
    return outcome


def _render_and_publish(spec: shots.ShotSpec, run_id: str, shot_id: str, done: _StageResults, decision: ReviewDecision | None, *,
                        container: Container, output_path: str | None, deliver_on_fail: bool, stages: dict[str, float]) -> ShotOutcome:
    """Render the deliverable, publish it unless QC failed it, and finish the run with its outcome."""
    params, qc, swaps = spec.params, done.qc, done.swaps
    t = time.perf_counter()
    # consent again right before delivery: one revoked while the shot was swapped stops it here
    rendered = render_task(run_id=run_id, shot_id=shot_id, shot=spec.code, ingest=done.ingest, segments=done.segments, swaps=swaps, qc=qc,
                           consent=require_consent(shot_id), container=container.name)
    if decision is not None:  # approved by a supervisor: the deliverable is approved whatever the verdict
        approve_renders(run_id)
    # a failed verdict publishes nothing (a script must not find a deliverable where QC failed it)
    # unless asked to, or a supervisor approved it; the render stays in the store either way
    withheld = bool(output_path) and qc.verdict.value == "fail" and decision is None and not deliver_on_fail
    if withheld:
        output = None
        emit_progress(f"render: QC verdict fail: nothing written at {output_path}; the render stays in the store at "
                      f"{rendered.output.uri} (--deliver-on-fail publishes it anyway)")
    elif output_path:
        output = str(publish(rendered, Path(output_path), inputs=[spec.plate, *spec.sources, *_reference_photos(params.face)]))
    else:
        output = rendered.output.uri
    stages["render"] = _ms(t)

    outcome = ShotOutcome(
        run_id=run_id,
        shot_id=shot_id,
        shot=spec.code,
        output=output,
        published=None if not output_path else not withheld,
        output_uri=rendered.output.uri,
        output_asset_id=rendered.output.asset_id,
        frames=rendered.frames,
        fps=str(rendered.rate),
        avg_fps=str(rendered.avg_rate) if rendered.avg_rate else None,
        variable_frame_rate=done.ingest.plate_info.variable_frame_rate,
        audio_copied=rendered.audio_copied,
        swapped_frames=sum(s.swapped_frames for s in swaps),
        passthrough_frames=sum(s.passthrough_frames for s in swaps),
        segments_without_person=done.track.segments_without_person,
        mode=params.mode.value,
        params=params.model_dump(mode="json"),
        qc={**done.qc_summary, **rendered.metrics},
        approved=qc.verdict.value == "pass" or decision is not None,
        review=_review_info(decision),
        stages=stages,
    )
    shots.finish_run(run_id, output_asset_id=rendered.output.asset_id, summary=outcome.summary())
    return outcome


def _reference_photos(face: str) -> list[str]:
    """The photo a ``reference:PHOTO`` face selector names (an input too), else none."""
    from recast.models.tracking import parse_face_selector

    reference = parse_face_selector(face).reference_path
    return [reference] if reference else []


def _ms(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000.0, 1)
