"""Swap: the new face or head composited into every frame of a plate chunk (lossless FFV1 output).

The chunk's inputs are fetched as typed artefacts, the chosen engine
(:mod:`recast.models.engines`) swaps them, QC measures the chunk on the frames in memory, and
the swapped chunk, its matte and QC's observations are stored. The engine's models are named
(with checksums) before the work-key lookup, and its weights are loaded only when the chunk is
really computed: a chunk found in the cache costs no model load.
"""

from __future__ import annotations

import time
from contextlib import nullcontext

import cv2
import numpy as np

from recast.contracts import BackgroundChunk, ExpressionResult, Mode, PlateChunk, SegmentResult, SourceFaceResult, SwapChunkResult, TrackResult
from recast.errors import ModelMissingError, UsageError
from recast.media import read_frames, read_image, write_lossless
from recast.media.artifacts import (
    ANALYSIS_MEDIA_TYPE,
    CHUNK_MEDIA_TYPE,
    BackgroundKnown,
    ExpressionTargets,
    PlateAnalysis,
    ShotTracks,
    SourceAnalysis,
    SwapMatte,
)
from recast.models.engines import (
    NEEDS_BACKGROUND,
    NEEDS_SKIN_STATS,
    NEEDS_SOURCE_HEAD,
    PlateFrames,
    SwapEngine,
    SwapResult,
    SwapSource,
    check_engine,
    create_engine,
    engine_uses_gpu,
    loaded_engine,
)
from recast.models.qc_frames import OBSERVE_VERSION, ChunkObservations, observe_chunk
from recast.settings import get_settings
from recast.tasks.common import fetch, load_artifact, progress_for, run_stage, scratch_dir, store_asset


def swap_chunk(
    *,
    run_id: str | None,
    shot_id: str | None,
    chunk: PlateChunk,
    chunk_index: int,
    segment: SegmentResult,
    track: TrackResult,
    expression: ExpressionResult,
    source: SourceFaceResult,
    background: BackgroundChunk | None,
    backend: str,
    mode: str,
    total_frames: int,
    project: str | None = None,
    commercial: bool = False,
) -> SwapChunkResult:
    """Swap one chunk; frames where the chosen person is absent pass through unchanged and are counted.

    ``project`` / ``commercial``: the shot's project and whether it is commercial, for the
    licences of learned engines' models.
    """
    engine = _engine(backend, mode, project=project, commercial=commercial)
    head = mode == Mode.head.value
    if head and background is None:
        raise UsageError("head mode needs the reconstructed background of the chunk")
    models = engine.model_refs()  # cheap: checksums and licences, no weights
    start, end = chunk.frames.start, chunk.frames.end
    uses_background = NEEDS_BACKGROUND in engine.needs and background is not None
    inputs = [chunk.video, segment.analysis, track.tracks, expression.targets, source.source, source.analysis]
    if uses_background:
        inputs += [background.video, background.known]
    formats = {"analysis_format": PlateAnalysis.FORMAT_VERSION, "tracks_format": ShotTracks.FORMAT_VERSION,
               "targets_format": ExpressionTargets.FORMAT_VERSION, "source_format": SourceAnalysis.FORMAT_VERSION,
               "matte_format": SwapMatte.FORMAT_VERSION, "observations_format": ChunkObservations.FORMAT_VERSION}
    if uses_background:
        formats["known_format"] = BackgroundKnown.FORMAT_VERSION

    def compute() -> SwapChunkResult:
        cv2.setNumThreads(1)
        progress = progress_for(run_id, "swap", total_frames)
        tracks = load_artifact(track.tracks, ShotTracks)
        targets = load_artifact(expression.targets, ExpressionTargets).targets[start:end]
        plate = _plate_frames(engine, chunk, segment, tracks, background if uses_background else None, start, end)
        src = _swap_source(engine, source)
        with _gpu_slot(backend):
            result = loaded_engine(engine).swap(plate, targets, src, progress=progress.advance)
        return _store(chunk, plate, result, tracks, inputs, models, segment, track)

    return run_stage(
        "swap",
        run_id=run_id,
        shot_id=shot_id,
        inputs=inputs,
        params={"backend": backend, "engine_version": engine.version, "mode": mode, "frames": [start, end],
                "qc_observe": OBSERVE_VERSION, **formats},
        models=models,
        result_type=SwapChunkResult,
        compute=compute,
        chunk_index=chunk_index,
        frames=(start, end),
    )


def _engine(backend: str, mode: str, *, project: str | None, commercial: bool) -> SwapEngine:
    """The (unloaded) engine for this shot, from the settings' model directory and device."""
    check_engine(backend, mode)  # a wrong name or mode says so before anything about weights
    settings = get_settings()
    if engine_uses_gpu(backend) and settings.model_dir is None:
        raise ModelMissingError(f"backend '{backend}': RECAST_MODEL_DIR is not set; place the model files there (see `recast models list`)")
    return create_engine(backend, mode, model_dir=settings.model_dir, device=settings.device, project=project, commercial=commercial)


def _gpu_slot(backend: str):
    """Learned engines hold a GPU: at most as many chunks at once as the "gpu" global
    concurrency limit allows (created by `recast deploy` with the number of GPUs); the weights
    are loaded inside the slot too. Classic engines run on the CPU, outside any slot."""
    if not engine_uses_gpu(backend):
        return nullcontext()
    from prefect.concurrency.sync import concurrency

    return concurrency("gpu", occupy=1, strict=False)


def _plate_frames(engine: SwapEngine, chunk: PlateChunk, segment: SegmentResult, tracks: ShotTracks,
                  background: BackgroundChunk | None, start: int, end: int) -> PlateFrames:
    frames = list(read_frames(fetch(chunk.video)))
    person = load_artifact(segment.analysis, PlateAnalysis).person_mask
    bg = known = None
    if background is not None:
        bg = list(read_frames(fetch(background.video)))
        known = load_artifact(background.known, BackgroundKnown).known
    return PlateFrames(frames=frames, landmarks=tracks.landmarks[start:end], person=person,
                       skin_stats=tracks.skin_stats[start:end] if NEEDS_SKIN_STATS in engine.needs else None,
                       background=bg, background_known=known)


def _swap_source(engine: SwapEngine, source: SourceFaceResult) -> SwapSource:
    analysis = load_artifact(source.analysis, SourceAnalysis)
    if NEEDS_SOURCE_HEAD in engine.needs and analysis.head is None:
        raise UsageError("head mode needs the source's head matte: analyse the source in head mode")
    return SwapSource(rgb=analysis.photo(read_image(fetch(source.source), role="source")), landmarks=analysis.landmarks,
                      head=analysis.head)


def _store(chunk: PlateChunk, plate: PlateFrames, result: SwapResult, tracks: ShotTracks, inputs, models,
           segment: SegmentResult, track: TrackResult) -> SwapChunkResult:
    """Store the swapped chunk, its matte and QC's observations of it."""
    start, end = chunk.frames.start, chunk.frames.end
    # QC's every-frame measurements, on the frames in memory (decoding both chunks again in the
    # qc stage cost more than all of QC's arithmetic); timed apart, as QC's cost
    t0 = time.perf_counter()
    observations = observe_chunk(start=start, plate_frames=list(plate.frames), out_frames=result.frames, exclude=plate.person,
                                 change=result.matte, plate_boxes=tracks.boxes[start:end], face_found=tracks.chosen[start:end] >= 0,
                                 plate_landmarks=tracks.raw_landmarks[start:end], guessed=result.guessed)
    observe_ms = (time.perf_counter() - t0) * 1000.0
    with scratch_dir("swap-") as tmp:
        write_lossless(tmp / "swapped.mkv", result.frames, chunk.frames.rate)
        video = store_asset(tmp / "swapped.mkv", media_type=CHUNK_MEDIA_TYPE, role="swapped_chunk", suffix=".mkv", parents=inputs)
        matte_path = SwapMatte(mask=np.asarray(result.matte, bool)).save(tmp / "matte.npz")
        matte = store_asset(matte_path, media_type=ANALYSIS_MEDIA_TYPE, role="swap_masks", suffix=".npz", parents=[video])
        obs = store_asset(observations.save(tmp / "qc_observations.npz"), media_type=ANALYSIS_MEDIA_TYPE, role="qc_observations",
                          suffix=".npz", parents=[video, matte, track.tracks, segment.analysis])
    return SwapChunkResult(chunk=chunk.frames, video=video, masks=matte, observations=obs, swapped_frames=result.swapped,
                           passthrough_frames=result.passthrough, models=tuple(models), metrics={"qc_observe_ms": round(observe_ms, 3)})
