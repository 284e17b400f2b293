"""Segment: every face of every frame of a plate chunk (landmarks, boxes, skin colour, sampled
identity embeddings), person masks and frame signatures; and the face or head of each source photo."""

from __future__ import annotations

import cv2
import numpy as np

from recast.contracts import AssetRef, Mode, ModelRef, PlateChunk, SegmentResult, SourceFaceResult, SourceFinding
from recast.media import read_frames, read_image
from recast.media.artifacts import ANALYSIS_MEDIA_TYPE, PlateAnalysis, SourceAnalysis
from recast.models.face import FaceAnalyzer
from recast.models.head import HeadSwapper, chosen_person_mask, extract_source_head, skin_colour_stats
from recast.models.identity import DlibFaceEmbedder
from recast.models.masks import PersonSegmenter
from recast.models.metrics import head_pose
from recast.models.occlusion import OcclusionDetector
from recast.models.source_vetting import VETTING_VERSION, detect_hands, plate_face_px, raise_if_refused, remove_occluders, vet_source
from recast.models.temporal import CUT_THRESHOLD, could_start_shot, frame_signature
from recast.models.tracking import parse_face_selector, require_single_source_face
from recast.tasks.common import fetch, progress_for, run_stage, scratch_dir, store_asset

N_LANDMARKS = 478
MAX_FACES = 4
# identity embeddings are costly (~60 ms a face on a CPU, ~5 ms per frame at one in 12), so
# only some frames get them: every Nth frame of the shot, with every selector, enough to stitch
# broken tracks and to re-identify the person after a cut by the mean of several embeddings
# (one frame's dlib descriptor of the same person in a wide shot ranges 0.33-0.55 from the
# close-up's; the mean of a segment's is 0.33: with only one or two the re-identification
# margin of recast.models.tracking refused the same person on the ghost_nggyup clip) ...
EMBED_EVERY = 12
# ... and, with every selector, the first frame with faces of each stretch that may start a shot
# segment: the chunk's start (the chunk cannot see the frame before it) and every frame whose
# signature differs from the previous one's as a scene cut does (the first test of scene_cuts,
# with its threshold, so every cut the track stage finds has one). The chosen person's identity
# (the anchor, learnt in the first segment) and the face of each later segment are compared
# there: without these, single-face footage with 'largest' had no embeddings at all and a cut to
# someone else was swapped by geometry. Costs one embedding per face per chunk and per cut.
EMBED_AT_SEGMENT_STARTS = f"chunk-start+signature-cut>{CUT_THRESHOLD}"


def segment_models() -> tuple[ModelRef, ...]:
    return tuple(FaceAnalyzer.MODELS) + tuple(PersonSegmenter.MODELS)


def segment_chunk(*, run_id: str | None, shot_id: str | None, chunk: PlateChunk, chunk_index: int, face_selector: str, total_frames: int) -> SegmentResult:
    """Every face in every frame of one plate chunk, the person mask and a frame signature."""
    parse_face_selector(face_selector)  # a bad selector fails here, before any frame is read
    embedder = DlibFaceEmbedder.shared()
    models = segment_models() + (embedder.model,)
    always_embed = True  # every selector: see EMBED_EVERY

    def compute() -> SegmentResult:
        # OpenCV and MediaPipe start their own pools; chunks already run in parallel
        cv2.setNumThreads(1)
        progress = progress_for(run_id, "segment", total_frames)
        n = chunk.frames.count
        lms = np.full((n, MAX_FACES, N_LANDMARKS, 3), np.nan, dtype=np.float32)
        boxes = np.zeros((n, MAX_FACES, 4), dtype=np.int32)
        counts = np.zeros(n, dtype=np.int16)
        stats: np.ndarray | None = None
        signatures, person_masks = [], []
        emb_index, emb_values = [], []
        awaiting_segment_face = True  # the chunk's first frame may start a segment
        # fresh solution objects per chunk: MediaPipe is not thread-safe, and tracking state carried
        # over from another chunk would make a resumed run differ from an uninterrupted one
        with FaceAnalyzer(static_images=False, max_faces=MAX_FACES) as analyzer, PersonSegmenter() as segmenter:
            for i, frame in enumerate(read_frames(fetch(chunk.video))):
                signature = frame_signature(frame)
                if signatures and could_start_shot(signatures[-1], signature):
                    awaiting_segment_face = True
                faces = analyzer.detect(frame)[:MAX_FACES]
                counts[i] = len(faces)
                periodic = ((chunk.frames.start + i) % EMBED_EVERY == 0 or i == 0) and (always_embed or len(faces) > 1)
                # a segment whose first frames show no face waits for its first face
                segment_start = awaiting_segment_face and len(faces) > 0
                if segment_start:
                    awaiting_segment_face = False
                for k, face in enumerate(faces):
                    lms[i, k] = face.landmarks
                    boxes[i, k] = face.box
                    s = skin_colour_stats(frame, face.landmarks)
                    if stats is None:
                        stats = np.full((n, MAX_FACES) + s.shape, np.nan, dtype=np.float32)
                    stats[i, k] = s
                    if periodic or segment_start:
                        emb_index.append((i, k))
                        emb_values.append(embedder.embed(frame, face.box))
                signatures.append(signature)
                person_masks.append(segmenter.segment(frame) > 127)
                progress.advance()
        analysis = PlateAnalysis(
            faces_landmarks=lms,
            faces_boxes=boxes,
            face_count=counts,
            skin_stats=stats if stats is not None else np.zeros((n, MAX_FACES, 0, 6), np.float32),
            signatures=np.stack(signatures).astype(np.float32),
            embedding_index=np.asarray(emb_index, dtype=np.int32).reshape(-1, 2),
            embeddings=np.asarray(emb_values, dtype=np.float32).reshape(-1, 128),
            person_mask=np.stack(person_masks),
        )
        with scratch_dir("segment-") as tmp:
            path = analysis.save(tmp / "analysis.npz")
            ref = store_asset(path, media_type=ANALYSIS_MEDIA_TYPE, role="plate_analysis", suffix=".npz", parents=[chunk.video])
        return SegmentResult(chunk=chunk.frames, analysis=ref, faces_found=int((counts > 0).sum()),
                             max_faces_in_frame=int(counts.max(initial=0)), models=models)

    return run_stage(
        "segment",
        run_id=run_id,
        shot_id=shot_id,
        inputs=[chunk.video],
        params={"max_faces": MAX_FACES, "embed_every": EMBED_EVERY, "always_embed": always_embed,
                "embed_at_segment_starts": EMBED_AT_SEGMENT_STARTS, "landmarks": N_LANDMARKS,
                "frames": [chunk.frames.start, chunk.frames.end], "analysis_format": PlateAnalysis.FORMAT_VERSION},
        models=models,
        result_type=SegmentResult,
        compute=compute,
        chunk_index=chunk_index,
        frames=(chunk.frames.start, chunk.frames.end),
    )


def analyze_source(*, run_id: str | None, shot_id: str | None, source: AssetRef, name: str, mode: str, source_face: str | None,
                   plate: AssetRef | None = None, face_selector: str = "largest", refuse: bool = True) -> SourceFaceResult:
    """The face of one source photo (one face, or the one ``source_face`` selects), and in head
    mode its head matte (face, hair, ears, cut at the neck), with the photo's source report
    (``vetting``, :mod:`recast.models.source_vetting`): with the ``plate``, the upscale its face
    implies on the plate's face (``face_selector``) is checked too. A refusal (no face, several
    faces and no ``source_face``, a face in profile) raises its error (exit 3); with ``refuse``
    False (scoring a vendor's files: ``recast qc --plate --output``) it is only recorded, and a
    photo of several people is read by its largest face (no face at all still raises)."""
    embedder = DlibFaceEmbedder.shared()
    models = (tuple(FaceAnalyzer.MODELS) + tuple(OcclusionDetector.MODELS) + (embedder.model,)
              + ((*PersonSegmenter.MODELS, HeadSwapper.MODEL) if mode == Mode.head.value else ()))

    def compute() -> SourceFaceResult:
        rgb = read_image(fetch(source), role="source")
        with FaceAnalyzer(static_images=True, max_faces=MAX_FACES * 2) as analyzer:
            faces = analyzer.detect(rgb)
        plate_px = None
        if plate is not None and faces:
            frames = read_frames(fetch(plate))
            try:
                plate_px = plate_face_px(frames, face=face_selector)
            finally:
                close = getattr(frames, "close", None)
                if close is not None:
                    close()
        hands = detect_hands(rgb) if faces else []
        findings = vet_source(rgb, faces, name=name, source_face=source_face, mode=mode, plate_face_px=plate_px, hands=hands)
        if refuse:
            raise_if_refused(findings)
        face = require_single_source_face(faces, source_face if refuse or source_face else "largest", name)
        pose = head_pose(face.landmarks, rgb.shape[:2])
        # a hand or an object in front of the face is taken out before anything reads the face
        repair = remove_occluders(rgb, face.landmarks, hands=hands)
        if repair is not None:
            rgb = repair.rgb
        head = None
        if mode == Mode.head.value:
            others = [f for f in faces if f is not face]
            # alone in the photo, the head model segments the person itself
            person = chosen_person_mask(rgb, face, others) if others else None
            head = extract_source_head(rgb, face.landmarks, person_mask=person, role_name=name)
        # the identity QC compares every output with: computed once here, not per QC run
        patch = {}
        if repair is not None:
            x0, y0, x1, y1 = repair.box
            patch = {"patch": rgb[y0:y1, x0:x1], "patch_box": repair.box}
        analysis = SourceAnalysis(landmarks=face.landmarks, box=face.box, head=head, embedding=embedder.embed(rgb, face.box), **patch)
        with scratch_dir("source-") as tmp:
            path = analysis.save(tmp / "source.npz")
            ref = store_asset(path, media_type=ANALYSIS_MEDIA_TYPE, role="source_analysis", suffix=".npz", parents=[source])
        return SourceFaceResult(source=source, analysis=ref, face_box=tuple(int(v) for v in face.box),
                                yaw_deg=None if pose is None else float(pose[0]), models=models,
                                vetting=tuple(SourceFinding(**f.as_dict()) for f in findings))

    return run_stage(
        "segment",
        run_id=run_id,
        shot_id=shot_id,
        inputs=[source] + ([plate] if plate is not None else []),
        params={"what": "source_face", "mode": mode, "source_face": source_face, "analysis_format": SourceAnalysis.FORMAT_VERSION,
                "name": name, "vetting": VETTING_VERSION, **({"plate_face": face_selector} if plate is not None else {}),
                **({} if refuse else {"refuse": False})},
        models=models,
        result_type=SourceFaceResult,
        compute=compute,
    )
