"""Segment: per-frame face landmarks and masks of plate chunks, and the face of each source photo."""

from __future__ import annotations

import cv2
import numpy as np

from recast.contracts import AssetRef, ModelRef, PlateChunk, SegmentResult, SourceFaceResult
from recast.media import read_frames, read_image
from recast.models.face import FaceAnalyzer, analyze_source_photo, select_face
from recast.models.masks import PersonSegmenter, face_oval_mask
from recast.tasks.arrays import load_npz, pack_masks, save_npz
from recast.tasks.common import fetch, progress_for, run_stage, scratch_dir, store_asset

ANALYSIS_MEDIA_TYPE = "application/x-recast-face-analysis+npz"
N_LANDMARKS = 478


def segment_models() -> tuple[ModelRef, ...]:
    return tuple(FaceAnalyzer.MODELS) + tuple(PersonSegmenter.MODELS)


def segment_chunk(*, run_id: str | None, shot_id: str | None, chunk: PlateChunk, chunk_index: int, face_selector: str, total_frames: int) -> SegmentResult:
    """Landmarks (478 per frame, NaN where no face), face-oval and person masks of one plate chunk."""
    models = segment_models()

    def compute() -> SegmentResult:
        # OpenCV and MediaPipe start their own pools; chunks already run in parallel
        cv2.setNumThreads(1)
        progress = progress_for(run_id, "segment", total_frames)
        n = chunk.frames.count
        landmarks = np.full((n, N_LANDMARKS, 3), np.nan, dtype=np.float32)
        boxes = np.zeros((n, 4), dtype=np.int32)
        found = np.zeros(n, dtype=bool)
        face_masks: list[np.ndarray] = []
        person_masks: list[np.ndarray] = []
        # fresh solution objects per chunk: MediaPipe is not thread-safe, and tracking state carried
        # over from another chunk would make a resumed run differ from an uninterrupted one
        with FaceAnalyzer(static_images=False, max_faces=1 if face_selector == "largest" else 4) as analyzer, PersonSegmenter() as segmenter:
            for i, frame in enumerate(read_frames(fetch(chunk.video))):
                face = select_face(analyzer.detect(frame), face_selector)
                if face is not None:
                    landmarks[i] = face.landmarks
                    boxes[i] = face.box
                    found[i] = True
                    face_masks.append(face_oval_mask(face.landmarks, frame.shape[:2]) > 0)
                else:
                    face_masks.append(np.zeros(frame.shape[:2], dtype=bool))
                person_masks.append(segmenter.segment(frame) > 127)
                progress.advance()
        fm = pack_masks(np.stack(face_masks))
        pm = pack_masks(np.stack(person_masks))
        with scratch_dir("segment-") as tmp:
            path = save_npz(
                tmp / "analysis.npz",
                landmarks=landmarks,
                boxes=boxes,
                found=found,
                face_mask_bits=fm["bits"],
                person_mask_bits=pm["bits"],
                mask_shape=fm["shape"],
            )
            ref = store_asset(path, media_type=ANALYSIS_MEDIA_TYPE, role="plate_analysis", suffix=".npz", parents=[chunk.video])
        return SegmentResult(chunk=chunk.frames, analysis=ref, faces_found=int(found.sum()), models=models)

    return run_stage(
        "segment",
        run_id=run_id,
        shot_id=shot_id,
        inputs=[chunk.video],
        params={"face": face_selector, "landmarks": N_LANDMARKS, "frames": [chunk.frames.start, chunk.frames.end]},
        models=models,
        result_type=SegmentResult,
        compute=compute,
        chunk_index=chunk_index,
        frames=(chunk.frames.start, chunk.frames.end),
    )


def analyze_source(*, run_id: str | None, shot_id: str | None, source: AssetRef, name: str) -> SourceFaceResult:
    """The face of one source photo: 478 landmarks and its box, stored as an npz."""
    models = tuple(FaceAnalyzer.MODELS)

    def compute() -> SourceFaceResult:
        rgb = read_image(fetch(source), role="source")
        face = analyze_source_photo(rgb, role_name=name)
        with scratch_dir("source-") as tmp:
            path = save_npz(tmp / "source.npz", landmarks=face.landmarks.astype(np.float32), box=np.asarray(face.box, dtype=np.int32))
            ref = store_asset(path, media_type=ANALYSIS_MEDIA_TYPE, role="source_analysis", suffix=".npz", parents=[source])
        return SourceFaceResult(source=source, analysis=ref, face_box=tuple(int(v) for v in face.box), models=models)

    return run_stage(
        "segment",
        run_id=run_id,
        shot_id=shot_id,
        inputs=[source],
        params={"what": "source_face"},
        models=models,
        result_type=SourceFaceResult,
        compute=compute,
    )


def load_analysis(ref: AssetRef) -> dict[str, np.ndarray]:
    """Arrays of a stored plate or source analysis."""
    return load_npz(fetch(ref))
