"""Swap: the new face or head composited into every frame of a plate chunk (lossless FFV1 output)."""

from __future__ import annotations

import cv2
import numpy as np

from recast.contracts import BackgroundChunk, ExpressionResult, Mode, PlateChunk, SegmentResult, SourceFaceResult, SwapChunkResult, TrackResult
from recast.errors import UsageError
from recast.media import read_frames, read_image, write_lossless
from recast.models.head import ColourMatch, HeadSwapper, skin_colour_stats
from recast.models.occlusion import OcclusionDetector
from recast.models.swap_classic import ClassicFaceSwapper
from recast.tasks.arrays import load_npz, pack_masks, save_npz, unpack_masks
from recast.tasks.background import load_known
from recast.tasks.common import fetch, progress_for, run_stage, scratch_dir, store_asset
from recast.tasks.ingest import CHUNK_MEDIA_TYPE
from recast.tasks.segment import ANALYSIS_MEDIA_TYPE, load_analysis, load_source_head

BACKENDS = ("classic",)


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
        if head:
            source_head = load_source_head(source.analysis)
            swapper = HeadSwapper(source_head)
            source_stats = skin_colour_stats(source_head.rgb, source_head.landmarks)
            bg_frames = read_frames(fetch(background.video))
            known = load_known(background)
        else:
            src = load_analysis(source.analysis)
            face_swapper = ClassicFaceSwapper(read_image(fetch(source.source), role="source"), src["landmarks"])
        out_frames: list[np.ndarray] = []
        masks: list[np.ndarray] = []
        swapped = passthrough = 0
        with OcclusionDetector(static_images=False) as occluder:
            for i, frame in enumerate(read_frames(fetch(chunk.video))):
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
                if head:
                    colour = None if np.isnan(plate_stats[i]).all() else ColourMatch(source_stats=source_stats, plate_stats=plate_stats[i])
                    result = swapper.swap(frame, target_landmarks=t, plate_landmarks=p, plate_person_mask=person[i], background=bg,
                                          background_known=known[i], occlusion_mask=occlusion, colour=colour)
                else:
                    result = face_swapper.swap(frame, t, p, occlusion_mask=occlusion)
                out_frames.append(result.frame)
                masks.append(result.mask > 0)
                swapped += 1
                progress.advance()
        with scratch_dir("swap-") as tmp:
            write_lossless(tmp / "swapped.mkv", out_frames, chunk.frames.rate)
            video = store_asset(tmp / "swapped.mkv", media_type=CHUNK_MEDIA_TYPE, role="swapped_chunk", suffix=".mkv", parents=inputs)
            mp = pack_masks(np.stack(masks))
            mask_path = save_npz(tmp / "masks.npz", mask_bits=mp["bits"], mask_shape=mp["shape"])
            mask_ref = store_asset(mask_path, media_type=ANALYSIS_MEDIA_TYPE, role="swap_masks", suffix=".npz", parents=[video])
        return SwapChunkResult(chunk=chunk.frames, video=video, masks=mask_ref, swapped_frames=swapped, passthrough_frames=passthrough, models=models)

    return run_stage(
        "swap",
        run_id=run_id,
        shot_id=shot_id,
        inputs=inputs,
        params={"backend": backend, "mode": mode, "frames": [start, end]},
        models=models,
        result_type=SwapChunkResult,
        compute=compute,
        chunk_index=chunk_index,
        frames=(start, end),
    )
