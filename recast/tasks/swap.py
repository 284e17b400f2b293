"""Swap: the new face or head composited into every frame of a plate chunk (lossless FFV1 output)."""

from __future__ import annotations

import time

import cv2
import numpy as np

from recast.contracts import BackgroundChunk, ExpressionResult, Mode, PlateChunk, SegmentResult, SourceFaceResult, SwapChunkResult, TrackResult
from recast.errors import UsageError
from recast.media import read_frames, read_image, write_lossless
from recast.models.head import ColourMatch, HeadSwapper, skin_colour_stats
from recast.models.occlusion import OcclusionDetector
from recast.models.qc_frames import OBSERVE_VERSION, observe_chunk
from recast.models.swap_classic import ClassicFaceSwapper
from recast.tasks.arrays import load_npz, pack_masks, save_npz, unpack_masks
from recast.tasks.background import load_known
from recast.tasks.common import fetch, progress_for, run_stage, scratch_dir, store_asset
from recast.tasks.ingest import CHUNK_MEDIA_TYPE
from recast.tasks.segment import ANALYSIS_MEDIA_TYPE, load_analysis, load_source_head

BACKENDS = ("classic", "inswapper", "diffusion")
GPU_BACKENDS = ("inswapper", "diffusion")


def learned_backend(backend: str, mode: str, shot_id: str | None):
    """Load a learned swap engine from RECAST_MODEL_DIR (files, checksums and licence checked)."""
    from recast.errors import ModelMissingError
    from recast.settings import get_settings
    from recast.tasks.shots import project_of

    settings = get_settings()
    if settings.model_dir is None:
        raise ModelMissingError(f"backend '{backend}': RECAST_MODEL_DIR is not set; place the model files there (see `recast models list`)")
    project, commercial = project_of(shot_id) if shot_id else (None, False)
    if backend == "inswapper":
        if mode != Mode.face.value:
            raise UsageError("backend 'inswapper' swaps faces only: use --mode face (or --backend classic|diffusion for heads)")
        from recast.models.inswapper import InswapperBackend

        return InswapperBackend.from_model_dir(settings.model_dir, commercial_project=commercial, project=project)
    if mode != Mode.head.value:
        raise UsageError("backend 'diffusion' repaints the whole head: use --mode head")
    from recast.models.diffusion_swap import DiffusionHeadSwapper

    return DiffusionHeadSwapper.from_model_dir(settings.model_dir, commercial_project=commercial, project=project, device=settings.device)


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
) -> SwapChunkResult:
    """Swap one chunk; frames where the chosen person is absent pass through unchanged and are counted."""
    if backend not in BACKENDS:
        raise UsageError(f"backend '{backend}': not available (choose from {', '.join(BACKENDS)})")
    head = mode == Mode.head.value
    if head and background is None:
        raise UsageError("head mode needs the reconstructed background of the chunk")
    engine = learned_backend(backend, mode, shot_id) if backend in GPU_BACKENDS else None
    if engine is not None:
        models = tuple(engine.models) + tuple(OcclusionDetector.MODELS)
    else:
        models = (HeadSwapper.MODEL,) + tuple(OcclusionDetector.MODELS) if head else (ClassicFaceSwapper.MODEL,) + tuple(OcclusionDetector.MODELS)
    start, end = chunk.frames.start, chunk.frames.end
    inputs = [chunk.video, segment.analysis, track.tracks, expression.targets, source.source, source.analysis]
    if background is not None:
        inputs += [background.video, background.known]

    def compute() -> SwapChunkResult:
        cv2.setNumThreads(1)
        progress = progress_for(run_id, "swap", total_frames)
        targets = load_npz(fetch(expression.targets))["targets"][start:end]
        tr = load_npz(fetch(track.tracks))
        plate_lms = tr["landmarks"][start:end]
        plate_stats = tr["skin_stats"][start:end]
        seg = load_analysis(segment.analysis)
        person = unpack_masks(seg["person_mask_bits"], seg["mask_shape"])
        if engine is not None:
            src = load_analysis(source.analysis)
            source_rgb = read_image(fetch(source.source), role="source")
            if backend == "inswapper":
                engine.set_source([(source_rgb, src["landmarks"])])
            else:
                return _diffusion_chunk(engine, chunk, targets, plate_lms, source_rgb, src["landmarks"], progress, tr, person)
        if head and engine is None:
            source_head = load_source_head(source.analysis)
            swapper = HeadSwapper(source_head)
            source_stats = skin_colour_stats(source_head.rgb, source_head.landmarks)
            bg_frames = read_frames(fetch(background.video))
            known = load_known(background)
        elif engine is None:
            src = load_analysis(source.analysis)
            face_swapper = ClassicFaceSwapper(read_image(fetch(source.source), role="source"), src["landmarks"])
        out_frames: list[np.ndarray] = []
        plate_frames: list[np.ndarray] = []  # kept for QC's measurements (see _store_chunk)
        masks: list[np.ndarray] = []
        swapped = passthrough = 0
        with OcclusionDetector(static_images=False) as occluder:
            for i, frame in enumerate(read_frames(fetch(chunk.video))):
                plate_frames.append(frame)
                bg = next(bg_frames) if head else None
                t, p = targets[i], plate_lms[i]
                if np.isnan(t).any() or np.isnan(p).any():
                    out_frames.append(frame)
                    masks.append(np.zeros(frame.shape[:2], dtype=bool))
                    passthrough += 1
                    progress.advance()
                    continue
                # in head mode the plate's own hair is replaced, so only hands count as occluders there
                occlusion = occluder.hand_mask(frame, p) if head else occluder.occlusion_mask(frame, p, person[i])
                if engine is not None:
                    result = engine.swap(frame, t, p, occlusion_mask=occlusion)
                elif head:
                    colour = None if np.isnan(plate_stats[i]).all() else ColourMatch(source_stats=source_stats, plate_stats=plate_stats[i])
                    result = swapper.swap(frame, target_landmarks=t, plate_landmarks=p, plate_person_mask=person[i], background=bg,
                                          background_known=known[i], occlusion_mask=occlusion, colour=colour)
                else:
                    result = face_swapper.swap(frame, t, p, occlusion_mask=occlusion)
                out_frames.append(result.frame)
                masks.append(result.mask > 0)
                swapped += 1
                progress.advance()
        return _store_chunk(plate_frames, out_frames, masks, swapped, passthrough, tr, person)

    def _diffusion_chunk(engine, chunk, targets, plate_lms, source_rgb, source_lms, progress, tr, person) -> SwapChunkResult:
        frames = list(read_frames(fetch(chunk.video)))
        results = engine.swap_batch(frames, list(targets), list(plate_lms), source_rgb, source_lms)
        valid = [not (np.isnan(t).any() or np.isnan(p).any()) for t, p in zip(targets, plate_lms)]
        progress.advance(len(frames))
        return _store_chunk(frames, [r.frame for r in results], [r.mask > 0 for r in results], sum(valid), len(valid) - sum(valid), tr, person)

    def _store_chunk(plate_frames, out_frames, masks, swapped, passthrough, tr, person) -> SwapChunkResult:
        change = np.stack(masks)
        # QC's every-frame measurements, on the frames in memory (decoding both chunks again in
        # the qc stage cost more than all of QC's arithmetic); timed apart, as QC's cost
        t0 = time.perf_counter()
        observations = observe_chunk(start=start, plate_frames=plate_frames, out_frames=out_frames, exclude=person, change=change,
                                     plate_boxes=tr["boxes"][start:end], face_found=tr["chosen"][start:end] >= 0,
                                     plate_landmarks=tr["raw_landmarks"][start:end])
        observe_ms = (time.perf_counter() - t0) * 1000.0
        with scratch_dir("swap-") as tmp:
            write_lossless(tmp / "swapped.mkv", out_frames, chunk.frames.rate)
            video = store_asset(tmp / "swapped.mkv", media_type=CHUNK_MEDIA_TYPE, role="swapped_chunk", suffix=".mkv", parents=inputs)
            mp = pack_masks(change)
            mask_path = save_npz(tmp / "masks.npz", mask_bits=mp["bits"], mask_shape=mp["shape"])
            mask_ref = store_asset(mask_path, media_type=ANALYSIS_MEDIA_TYPE, role="swap_masks", suffix=".npz", parents=[video])
            obs_ref = store_asset(observations.save(tmp / "qc_observations.npz"), media_type=ANALYSIS_MEDIA_TYPE, role="qc_observations",
                                  suffix=".npz", parents=[video, mask_ref, track.tracks, segment.analysis])
        return SwapChunkResult(chunk=chunk.frames, video=video, masks=mask_ref, observations=obs_ref, swapped_frames=swapped,
                               passthrough_frames=passthrough, models=models, metrics={"qc_observe_ms": round(observe_ms, 3)})

    def guarded() -> SwapChunkResult:
        if engine is None:
            return compute()
        # learned engines hold a GPU: at most as many chunks at once as the "gpu" global
        # concurrency limit allows (created by `recast deploy` with the number of GPUs)
        from prefect.concurrency.sync import concurrency

        with concurrency("gpu", occupy=1, strict=False):
            return compute()

    return run_stage(
        "swap",
        run_id=run_id,
        shot_id=shot_id,
        inputs=inputs,
        params={"backend": backend, "mode": mode, "frames": [start, end], "qc_observe": OBSERVE_VERSION},
        models=models,
        result_type=SwapChunkResult,
        compute=guarded,
        chunk_index=chunk_index,
        frames=(start, end),
    )
