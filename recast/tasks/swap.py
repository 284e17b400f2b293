"""Swap: the new face composited into every frame of a plate chunk (lossless FFV1 output)."""

from __future__ import annotations

import cv2
import numpy as np

from recast.contracts import ExpressionResult, PlateChunk, SegmentResult, SourceFaceResult, SwapChunkResult
from recast.errors import UsageError
from recast.media import read_frames, read_image, write_lossless
from recast.models.swap_classic import ClassicFaceSwapper
from recast.tasks.arrays import load_npz, pack_masks, save_npz
from recast.tasks.common import fetch, progress_for, run_stage, scratch_dir, store_asset
from recast.tasks.ingest import CHUNK_MEDIA_TYPE
from recast.tasks.segment import ANALYSIS_MEDIA_TYPE, load_analysis

BACKENDS = ("classic",)


def swap_chunk(
    *,
    run_id: str | None,
    shot_id: str | None,
    chunk: PlateChunk,
    chunk_index: int,
    segment: SegmentResult,
    expression: ExpressionResult,
    source: SourceFaceResult,
    backend: str,
    mode: str,
    total_frames: int,
) -> SwapChunkResult:
    """Swap one chunk; frames where the plate has no face pass through unchanged and are counted."""
    if backend not in BACKENDS:
        raise UsageError(f"backend '{backend}': not available (choose from {', '.join(BACKENDS)})")
    model = ClassicFaceSwapper.MODEL
    start, end = chunk.frames.start, chunk.frames.end

    def compute() -> SwapChunkResult:
        cv2.setNumThreads(1)
        progress = progress_for(run_id, "swap", total_frames)
        targets = load_npz(fetch(expression.targets))["targets"][start:end]
        plate_lms = load_analysis(segment.analysis)["landmarks"]
        src = load_analysis(source.analysis)
        swapper = ClassicFaceSwapper(read_image(fetch(source.source), role="source"), src["landmarks"])
        out_frames: list[np.ndarray] = []
        masks: list[np.ndarray] = []
        swapped = passthrough = 0
        for i, frame in enumerate(read_frames(fetch(chunk.video))):
            t, p = targets[i], plate_lms[i]
            if np.isnan(t).any() or np.isnan(p).any():
                out_frames.append(frame)
                masks.append(np.zeros(frame.shape[:2], dtype=bool))
                passthrough += 1
            else:
                result = swapper.swap(frame, t, p)
                out_frames.append(result.frame)
                masks.append(result.mask > 0)
                swapped += 1
            progress.advance()
        with scratch_dir("swap-") as tmp:
            write_lossless(tmp / "swapped.mkv", out_frames, chunk.frames.rate)
            video = store_asset(tmp / "swapped.mkv", media_type=CHUNK_MEDIA_TYPE, role="swapped_chunk", suffix=".mkv",
                                parents=[chunk.video, segment.analysis, expression.targets, source.source, source.analysis])
            mp = pack_masks(np.stack(masks))
            mask_path = save_npz(tmp / "masks.npz", mask_bits=mp["bits"], mask_shape=mp["shape"])
            mask_ref = store_asset(mask_path, media_type=ANALYSIS_MEDIA_TYPE, role="swap_masks", suffix=".npz", parents=[video])
        return SwapChunkResult(chunk=chunk.frames, video=video, masks=mask_ref, swapped_frames=swapped, passthrough_frames=passthrough, models=(model,))

    return run_stage(
        "swap",
        run_id=run_id,
        shot_id=shot_id,
        inputs=[chunk.video, segment.analysis, expression.targets, source.source, source.analysis],
        params={"backend": backend, "mode": mode, "frames": [start, end]},
        models=[model],
        result_type=SwapChunkResult,
        compute=compute,
        chunk_index=chunk_index,
        frames=(start, end),
    )
