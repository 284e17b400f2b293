"""Background: the clean plate behind the person for every frame (head mode), whole shot at once.

The old head is removed in head mode; where the new head does not cover it, the swap shows this
background. It is taken from other frames of the shot where that part of the scene is visible
(after compensating camera motion) and inpainted only where no frame shows it.
"""

from __future__ import annotations

import numpy as np

from recast.contracts import BackgroundChunk, BackgroundResult, IngestResult, ModelRef, SegmentResult, TrackResult
from recast.media import read_frames, write_lossless
from recast.models.background import reconstruct_background
from recast.tasks.arrays import pack_masks, save_npz, unpack_masks
from recast.tasks.common import fetch, progress_for, run_stage, scratch_dir, store_asset
from recast.tasks.ingest import CHUNK_MEDIA_TYPE
from recast.tasks.segment import ANALYSIS_MEDIA_TYPE, load_analysis

MODEL = ModelRef(name="background-reuse+telea-inpaint", version="1.0")


def reconstruct(*, run_id: str | None, shot_id: str | None, ingest: IngestResult, segments: list[SegmentResult], track: TrackResult) -> BackgroundResult:
    """Clean plate per chunk (lossless) plus where each pixel was really seen."""

    def compute() -> BackgroundResult:
        progress = progress_for(run_id, "background", ingest.plate_info.frame_count)
        frames = np.stack([f for c in ingest.chunks for f in read_frames(fetch(c.video))])
        masks = []
        for s in segments:
            a = load_analysis(s.analysis)
            masks.append(unpack_masks(a["person_mask_bits"], a["mask_shape"]))
        person = np.concatenate(masks)
        plate = reconstruct_background(frames, person, cuts=list(track.cuts))
        del frames
        person_known = float(plate.known[person].mean()) if person.any() else 1.0
        chunks = []
        with scratch_dir("background-") as tmp:
            for c in ingest.chunks:
                a, b = c.frames.start, c.frames.end
                write_lossless(tmp / f"bg_{a}.mkv", plate.frames[a:b], c.frames.rate)
                video = store_asset(tmp / f"bg_{a}.mkv", media_type=CHUNK_MEDIA_TYPE, role="background_chunk", suffix=".mkv",
                                    parents=[x.video for x in ingest.chunks] + [s.analysis for s in segments])
                km = pack_masks(plate.known[a:b])
                kpath = save_npz(tmp / f"known_{a}.npz", known_bits=km["bits"], mask_shape=km["shape"])
                known = store_asset(kpath, media_type=ANALYSIS_MEDIA_TYPE, role="background_known", suffix=".npz", parents=[video])
                chunks.append(BackgroundChunk(frames=c.frames, video=video, known=known))
                progress.advance(c.frames.count)
        return BackgroundResult(chunks=tuple(chunks), known_ratio=person_known)

    return run_stage(
        "background",
        run_id=run_id,
        shot_id=shot_id,
        inputs=[c.video for c in ingest.chunks] + [s.analysis for s in segments],
        params={"cuts": list(track.cuts)},
        models=[MODEL],
        result_type=BackgroundResult,
        compute=compute,
    )


def load_known(chunk: BackgroundChunk) -> np.ndarray:
    from recast.tasks.arrays import load_npz

    k = load_npz(fetch(chunk.known))
    return unpack_masks(k["known_bits"], k["mask_shape"])
