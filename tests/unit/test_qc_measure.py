"""QC of a shot with a scene cut to another person and a foreign piece pasted beside the head
(real frames of two shared talking-head clips): wrong_person fails with that segment's frames,
foreign_pieces gets its own record with the pasted frames and keeps their regions, a warned
source photo adds its record, motion_ratio is reported."""

from __future__ import annotations

import numpy as np
import pytest

from recast.contracts import SourceFinding, Verdict
from tests.conftest import IMAGES, VIDEOS

N1, N2 = 12, 12  # frames of the first clip (the chosen person), then of the second after the cut
PASTED = range(0, 10)
PIECE = np.s_[260:340, 12:92]  # beside the head, over the background


@pytest.fixture(scope="module")
def shot(media_dir):
    import cv2

    from recast.media import read_all_frames
    from recast.models.face import FaceAnalyzer, analyze_source_photo

    a = read_all_frames(VIDEOS / "aniportrait_pose_ref_video.mp4", role="plate")[:N1]
    b = read_all_frames(VIDEOS / "liveportrait_d0.mp4", role="plate")[:N2]
    frames = np.concatenate([a, b])
    with FaceAnalyzer(static_images=False, max_faces=1) as fa:
        faces = [fa.detect(f)[0] for f in frames]
    lms = np.stack([f.landmarks for f in faces]).astype(np.float32)
    boxes = np.array([f.box for f in faces], float)
    src = cv2.cvtColor(cv2.imread(str(IMAGES / "deepface_img17.jpg")), cv2.COLOR_BGR2RGB)
    det = analyze_source_photo(src, role_name="source")
    out = frames.copy()
    piece = cv2.resize(src[-120:, 300:420], (80, 80))  # a piece of the source photo's clothing
    for f in PASTED:
        out[f][PIECE] = piece
    return frames, out, lms, boxes, src, det


def _measure(frames, out, lms, boxes, src, det, *, vetting=(), cuts=(N1,), identity=None, plate_embeddings=None, source_embedding=None,
             change=None, guessed=None):
    from recast.models.metrics import QCThresholds
    from recast.models.qc import DlibIdentity, QCInputs, measure
    from recast.models.qc_frames import observe_chunk

    n, h, w = frames.shape[:3]
    person = np.zeros((n, h, w), bool)
    for i, (x0, y0, x1, y1) in enumerate(boxes.astype(int)):
        gx, gy = (x1 - x0) // 2, (y1 - y0) // 2
        person[i, max(0, y0 - gy):, max(0, x0 - gx):x1 + gx] = True
    asked: list[int] = []

    def plate_person(fs):
        asked.extend(fs)
        return {f: person[f] for f in fs}

    obs = observe_chunk(start=0, plate_frames=iter(frames), out_frames=iter(out), exclude=person,
                        change=np.zeros_like(person) if change is None else change, plate_boxes=boxes, face_found=np.ones(n, bool),
                        plate_landmarks=lms, out_landmarks=lms, guessed=guessed)
    inputs = QCInputs(decode=lambda wanted: {f: (frames[f] if need else None, out[f]) for f, need in wanted.items()},
                      observations=[obs], total=n, rate=25.0, size=(h, w), plate_landmarks=lms, face_found=np.ones(n, bool),
                      source_rgb=src, source_landmarks=det.landmarks, source_box=tuple(int(v) for v in det.box), mode="face",
                      cuts=cuts, vetting=vetting, plate_person=plate_person, plate_embeddings=plate_embeddings or {},
                      source_embedding=source_embedding)
    return (*measure(inputs, identity or DlibIdentity(), QCThresholds(), samples_per_second=2.0), asked)


def test_a_cut_to_another_person_fails_wrong_person_and_a_pasted_piece_is_flagged_with_its_region(shot):
    from recast.media.artifacts import QCPerFrame

    frames, out, lms, boxes, src, det = shot
    warn = SourceFinding(check="face_size", outcome="warn", value=80.0, threshold=128.0, text="deepface_img17.jpg: face 80 px high")
    metrics, per_frame, reasons, verdict, asked = _measure(frames, out, lms, boxes, src, det, vetting=(warn,))
    by = {r["metric"]: r for r in reasons}
    assert verdict is Verdict.failed

    # the segment after the cut is another person: one wrong segment, its frames named
    assert metrics["wrong_person"] == 1 and metrics["person_segments_checked"] == 2 and metrics["wrong_person_frames"] == N2
    wp = by["wrong_person"]
    assert wp["outcome"] == "fail" and wp["frames"] and all(N1 <= f < N1 + N2 for f in wp["frames"])
    assert np.all(per_frame["wrong_person"][N1:] == 1.0) and np.all(per_frame["wrong_person"][:N1] == 0.0)
    assert any(N1 <= f for f in per_frame["sampled"])  # every segment is sampled

    # the pasted piece: its own record, frames among the pasted ones, the region kept where it was pasted
    fp = by["foreign_pieces"]
    assert fp["value"] == metrics["foreign_pieces"] > fp["threshold"] and fp["frames"]
    assert set(fp["frames"]) <= set(PASTED)
    names = list(per_frame["defect_names"])
    col = per_frame["defects"][:, names.index("foreign_pieces")]
    sampled = per_frame["sampled"]
    clean = [f for f in sampled if f not in PASTED]
    assert np.nanmax(col[clean]) < fp["threshold"]  # no false alarm on the untouched frames
    k = [i for i, m in enumerate(per_frame["region_measure"]) if m == "foreign_pieces"]
    assert k and all(int(per_frame["region_frames"][i]) in fp["frames"] for i in k)
    region = per_frame["region_masks"][k[0]]
    assert region[PIECE].mean() > 0.5 and region.sum() < 2 * region[PIECE].size
    assert set(asked) == {int(f) for f in sampled}  # the plate person masks of the sampled frames were used

    # the warned source photo adds its own review record; motion is reported
    sv = by["source_vetting"]
    assert sv["outcome"] == "review" and "face 80 px" in sv["text"] and metrics["source_warnings"] == 1
    assert metrics["motion_ratio"] is not None and 0.3 < metrics["motion_ratio"] < 3
    # and everything is storable
    pf = QCPerFrame(**per_frame, reasons=tuple(reasons), thresholds={})
    assert pf.regions(int(per_frame["region_frames"][k[0]]))


def test_without_the_cut_and_the_paste_no_defect_or_wrong_person_is_flagged(shot):
    frames, out, lms, boxes, src, det = shot
    metrics, per_frame, reasons, verdict, _ = _measure(frames[:N1], frames[:N1].copy(), lms[:N1], boxes[:N1], src, det, cuts=())
    assert metrics["wrong_person"] == 0
    flagged = {r["metric"] for r in reasons}
    # the output is the plate: identity does not transfer, but no defect measure fires
    assert "identity_transfer_rate" in flagged
    assert not flagged & {"wrong_person", "foreign_pieces", "leftover_plate_head", "fill_artefacts", "inner_edges", "colour_blotches",
                          "hair_colour_de", "sharpness", "motion_ratio"}, reasons
    assert metrics["motion_ratio"] == pytest.approx(1.0)
    assert len(per_frame["region_frames"]) == 0


def test_the_plate_persons_embeddings_at_hand_are_used_instead_of_embedding_plate_frames_again(shot):
    """The segment stage embedded the plate's person where each segment starts, and the source
    analysis its face: QC takes those (fewer costly embeddings: the plate identity's, the later
    segment's, the source's) with the same distances, and still finds the wrong person."""
    from recast.models.identity import DlibFaceEmbedder
    from recast.models.qc import PLATE_ID_FRAMES, DlibIdentity

    frames, out, lms, boxes, src, det = shot

    class Counting(DlibIdentity):
        calls = 0

        def embed(self, rgb, landmarks, box):
            type(self).calls += 1
            return super().embed(rgb, landmarks, box)

    metrics, *_ = _measure(frames, out, lms, boxes, src, det, identity=Counting())
    embedded_alone, Counting.calls = Counting.calls, 0
    embedder = DlibFaceEmbedder.shared()
    known = {f: embedder.embed(frames[f], tuple(int(v) for v in boxes[f])) for f in (0, N1)}
    source = embedder.embed(src, tuple(int(v) for v in det.box))  # what the source analysis stores
    metrics_known, *_ = _measure(frames, out, lms, boxes, src, det, identity=Counting(), plate_embeddings=known, source_embedding=source)
    assert Counting.calls <= embedded_alone - PLATE_ID_FRAMES - 2, (Counting.calls, embedded_alone)
    assert metrics_known["identity_distance_source"] == pytest.approx(metrics["identity_distance_source"], abs=1e-9)
    assert metrics_known["wrong_person"] == metrics["wrong_person"] == 1 and metrics_known["wrong_person_frames"] == N2
    assert metrics_known["identity_samples"] == metrics["identity_samples"]


def test_an_old_head_place_no_frame_showed_asks_for_review_naming_its_frames(shot):
    """Long hair over the shoulders of a plate that never moves: the head swap had to invent what
    is under it. However plausible the fill looks, a person must judge it (review, with the reason
    and the frames), and a thin invented rim around the new head does not ask."""
    frames, out, lms, boxes, src, det = shot
    n = N1
    change = np.zeros(frames[:n].shape[:3], bool)
    guessed = np.zeros_like(change)
    for i, (x0, y0, x1, y1) in enumerate(boxes[:n].astype(int)):
        change[i, y0:y1, x0:x1] = True
        if i >= n // 4:  # from a quarter of the shot on: a band over the shoulder, 40% of the face box
            guessed[i, y1 - (y1 - y0) * 2 // 5:y1, x0:x1] = True
        else:
            guessed[i, y0:y0 + 2, x0:x1] = True  # a rim
    metrics, per_frame, reasons, verdict, _ = _measure(frames[:n], out[:n], lms[:n], boxes[:n], src, det, cuts=(),
                                                       change=change, guessed=guessed)
    assert 35 < metrics["guessed_fill"] < 45
    rec = next(r for r in reasons if r["metric"] == "guessed_fill")
    assert rec["outcome"] == "review" and "no frame shows" in rec["text"] and "% of the face box" in rec["text"], rec
    assert rec["frames"] and min(rec["frames"]) >= n // 4
    assert np.isfinite(per_frame["guessed_fill"]).all() and per_frame["guessed_fill"][0] < 5
    rim = guessed.copy()
    rim[n // 4:] = False
    metrics, _, reasons, _, _ = _measure(frames[:n], out[:n], lms[:n], boxes[:n], src, det, cuts=(), change=change, guessed=rim)
    assert metrics["guessed_fill"] < 1 and "guessed_fill" not in {r["metric"] for r in reasons}
