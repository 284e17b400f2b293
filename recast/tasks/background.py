"""Background: the clean plate behind the person for every frame (head mode), whole shot at once.

The old head is removed in head mode; where the new head does not cover it, the swap shows this
background. It is taken from other frames of the shot where that part of the scene is visible
(after compensating camera motion) and inpainted only where no frame shows it.
"""

from __future__ import annotations

import numpy as np

from recast.contracts import BackgroundChunk, BackgroundResult, IngestResult, ModelRef, SegmentResult, TrackResult
from recast.media import read_frames, write_lossless
from recast.media.artifacts import ANALYSIS_MEDIA_TYPE, CHUNK_MEDIA_TYPE, BackgroundKnown, PlateAnalysis
from recast.models.background import reconstruct_background
from recast.tasks.common import fetch, load_artifact, progress_for, run_stage, scratch_dir, store_asset

#: 1.1: a frame borrows only where it agrees with the target around the hole, at its exposure
MODEL = ModelRef(name="background-reuse+telea-inpaint", version="1.1")


def reconstruct(*, run_id: str | None, shot_id: str | None, ingest: IngestResult, segments: list[SegmentResult], track: TrackResult) -> BackgroundResult:
    """Clean plate per chunk (lossless) plus where each pixel was really seen."""

    def compute() -> BackgroundResult:
        progress = progress_for(run_id, "background", ingest.plate_info.frame_count)
        frames = np.stack([f for c in ingest.chunks for f in read_frames(fetch(c.video))])
        person = np.concatenate([load_artifact(s.analysis, PlateAnalysis).person_mask for s in segments])
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
                kpath = BackgroundKnown(known=np.asarray(plate.known[a:b], bool)).save(tmp / f"known_{a}.npz")
                known = store_asset(kpath, media_type=ANALYSIS_MEDIA_TYPE, role="background_known", suffix=".npz", parents=[video])
                chunks.append(BackgroundChunk(frames=c.frames, video=video, known=known))
                progress.advance(c.frames.count)
        return BackgroundResult(chunks=tuple(chunks), known_ratio=person_known)

    return run_stage(
        "background",
        run_id=run_id,
        shot_id=shot_id,
        inputs=[c.video for c in ingest.chunks] + [s.analysis for s in segments],
        params={"cuts": list(track.cuts), "analysis_format": PlateAnalysis.FORMAT_VERSION, "known_format": BackgroundKnown.FORMAT_VERSION},
        models=[MODEL],
        result_type=BackgroundResult,
        compute=compute,
    )

