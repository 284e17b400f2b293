"""Track: pick the chosen person in every frame of the shot and smooth over the whole shot.

Runs once per shot between the per-chunk segment and swap stages: links faces into tracks across
frames, finds scene cuts, chooses the person the selector names (re-identified by embedding after
a cut), and smooths landmarks and skin colour over the whole shot — a filter restarted at every
chunk boundary would jump there.
"""

from __future__ import annotations

import numpy as np

from recast.checksums import sha256_file
from recast.contracts import FrameRange, IngestResult, ModelRef, SegmentResult, TrackResult
from recast.errors import NoFaceError
from recast.media import read_image
from recast.media.artifacts import ANALYSIS_MEDIA_TYPE, PlateAnalysis, ShotTracks
from recast.models.face import FaceAnalyzer, select_face
from recast.models.identity import DlibFaceEmbedder
from recast.models.temporal import fill_gaps, scene_cuts, smooth_landmarks, smooth_series
from recast.models.tracking import (choose_track, link_tracks, mean_track_embeddings, parse_face_selector, pick_chosen,
                                    segments_without_person)
from recast.storage import local_input
from recast.tasks.common import load_artifact, run_stage, scratch_dir, store_asset

# "reid-margin": after a cut, only a face within tracking.REID_MAX_DISTANCE of the person is taken
# (before, 'largest' took the segment's largest face when none matched); the result lists the
# segments left without the person
METHOD = "iou-tracks+embedding-reid-margin+one-euro-forward-backward"


def _reference_embedding(reference: str, embedder: DlibFaceEmbedder) -> np.ndarray:
    rgb = read_image(local_input(reference, "face reference"), role="face reference")
    with FaceAnalyzer(static_images=True, max_faces=1) as analyzer:
        face = select_face(analyzer.detect(rgb), "largest")
    if face is None:
        raise NoFaceError(f"face reference '{reference}': no face found")
    return embedder.embed(rgb, face.box)


def track_person(*, run_id: str | None, shot_id: str | None, ingest: IngestResult, segments: list[SegmentResult], face_selector: str) -> TrackResult:
    """Choose the selected person in every frame; smooth landmarks and colour over the shot."""
    selector = parse_face_selector(face_selector)
    embedder = DlibFaceEmbedder.shared()
    models: tuple[ModelRef, ...] = (embedder.model,) if selector.kind == "reference" else ()
    reference_sha = None
    if selector.kind == "reference":
        reference_sha = sha256_file(local_input(selector.reference_path, "face reference"))
    params = {"method": METHOD, "face": face_selector if reference_sha is None else f"reference:{reference_sha}",
              "analysis_format": PlateAnalysis.FORMAT_VERSION, "tracks_format": ShotTracks.FORMAT_VERSION}
    fps = ingest.plate_info.fps

    def compute() -> TrackResult:
        # the person masks are left out: tracking does not need them
        a = PlateAnalysis.concat([load_artifact(s.analysis, PlateAnalysis) for s in segments], with_person_mask=False)
        total = len(a)
        cuts = [int(c) for c in scene_cuts(a.signatures)]
        boxes_per_frame = [a.faces_boxes[f, : a.face_count[f]] for f in range(total)]
        track_ids = link_tracks(boxes_per_frame, cuts=cuts)
        samples = [(int(f), int(k)) for f, k in a.embedding_index]
        embeddings = mean_track_embeddings([(f, k) for f, k in samples], {(f, k): a.embeddings[i] for i, (f, k) in enumerate(samples)}, track_ids) \
            if samples else {}
        ref = _reference_embedding(selector.reference_path, embedder) if selector.kind == "reference" else None
        chosen = choose_track(track_ids, boxes_per_frame, selector, embeddings=embeddings, reference_embedding=ref, cuts=cuts)
        present = chosen >= 0
        raw, boxes, stats = (pick_chosen(v, chosen) for v in (a.faces_landmarks, a.faces_boxes, a.skin_stats))
        smoothed = smooth_landmarks(raw, fps, cuts).astype(np.float32)
        flat = stats.reshape(total, -1)
        smooth_stats = smooth_series(fill_gaps(flat), fps, cuts).reshape(stats.shape).astype(np.float32)
        smooth_stats[~present] = np.nan
        with scratch_dir("track-") as tmp:
            path = ShotTracks(landmarks=smoothed, raw_landmarks=raw, chosen=chosen.astype(np.int16), boxes=boxes,
                              skin_stats=smooth_stats, cuts=np.asarray(cuts, dtype=np.int32)).save(tmp / "track.npz")
            ref_asset = store_asset(path, media_type=ANALYSIS_MEDIA_TYPE, role="track", suffix=".npz", parents=[s.analysis for s in segments])
        rate = segments[0].chunk.rate
        absent = tuple(FrameRange(start=s, end=e, rate=rate) for s, e in segments_without_person(chosen, cuts))
        return TrackResult(tracks=ref_asset, frames_with_person=int(present.sum()), cuts=tuple(cuts), selector=face_selector,
                           segments_without_person=absent)

    return run_stage(
        "track",
        run_id=run_id,
        shot_id=shot_id,
        inputs=[s.analysis for s in segments],
        params=params,
        models=models,
        result_type=TrackResult,
        compute=compute,
    )

