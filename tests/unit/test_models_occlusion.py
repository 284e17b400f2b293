"""Occlusion masks on real media.

None of the shared clips has a hand in front of the face, so the occluded frames are composites
of real pictures: a real hand (cut along its MediaPipe landmark hull from
face_recognition_obama.jpg, arms crossed) laid over the mouth of a real liveportrait_d0 frame,
and a microphone-shaped strip of the same photo's tie rising from below the chin. The face
landmarks are the clean frame's, so the test measures the occlusion rule, not the mesh.
"""

from __future__ import annotations

import av
import cv2
import numpy as np
import pytest

from recast.errors import UsageError
from recast.models.face import FaceAnalyzer
from recast.models.masks import face_oval_mask, face_skin_mask
from recast.models.occlusion import OcclusionDetector
from tests.conftest import IMAGES, VIDEOS


def _image(name: str) -> np.ndarray:
    bgr = cv2.imread(str(IMAGES / name), cv2.IMREAD_COLOR)
    assert bgr is not None, name
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _frames(name: str, indices: list[int]) -> list[np.ndarray]:
    wanted, out = set(indices), {}
    with av.open(str(VIDEOS / name)) as c:
        for i, f in enumerate(c.decode(video=0)):
            if i in wanted:
                out[i] = f.to_ndarray(format="rgb24")
            if i >= max(indices):
                break
    return [out[i] for i in indices]


@pytest.fixture(scope="module")
def detector():
    with OcclusionDetector(static_images=True) as od:
        yield od


@pytest.fixture(scope="module")
def plate():
    rgb = _frames("liveportrait_d0.mp4", [0])[0]
    with FaceAnalyzer(static_images=True, max_faces=1) as fa:
        lm = fa.detect(rgb)[0].landmarks
    return rgb, lm


def _face_w(lm: np.ndarray) -> float:
    return float(lm[:, 0].max() - lm[:, 0].min())


def _score(mask: np.ndarray, occluder: np.ndarray, lm: np.ndarray) -> tuple[float, float]:
    """(share of the occluder inside the face oval that the mask covers, share of the visible
    face skin that it covers)."""
    oval = face_oval_mask(lm, mask.shape) > 0
    occ = (occluder > 0) & oval
    skin = (face_skin_mask(lm, mask.shape) > 0) & ~(cv2.dilate(occluder, np.ones((5, 5), np.uint8)) > 0)
    assert occ.sum() > 0.02 * oval.sum() and skin.sum() > 0.3 * oval.sum()
    return float((mask > 0)[occ].mean()), float((mask > 0)[skin].mean())


@pytest.fixture(scope="module")
def hand_over_mouth(plate, detector):
    rgb, lm = plate
    src = _image("face_recognition_obama.jpg")
    hands = detector.hands(src)
    assert len(hands) == 1
    hand = hands[0].astype(np.float64)
    cut = np.zeros(src.shape[:2], np.uint8)
    cv2.fillConvexPoly(cut, cv2.convexHull(np.round(hand).astype(np.int32)), 255)
    cut = cv2.dilate(cut, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (15, 15)))
    # knuckle of the middle finger onto the mouth, fingers across it, wrist below the chin
    mouth = lm[[61, 291], :2].mean(0)
    m = cv2.getRotationMatrix2D(tuple(hand[9]), -60.0, 1.2)
    m[:, 2] += mouth + np.array([0.05, 0.10]) * _face_w(lm) - hand[9]
    h, w = rgb.shape[:2]
    occluder = cv2.warpAffine(cut, m, (w, h), flags=cv2.INTER_NEAREST)
    comp = rgb.copy()
    comp[occluder > 0] = cv2.warpAffine(src, m, (w, h), flags=cv2.INTER_LINEAR)[occluder > 0]
    return comp, occluder


def test_hand_over_mouth_is_masked(plate, detector, hand_over_mouth):
    _, lm = plate
    comp, occluder = hand_over_mouth
    mask = detector.occlusion_mask(comp, lm)
    assert mask.dtype == np.uint8 and mask.shape == comp.shape[:2] and set(np.unique(mask)) <= {0, 255}
    covered, skin_fp = _score(mask, occluder, lm)
    assert covered >= 0.70, covered
    assert skin_fp < 0.05, skin_fp
    # the hand itself is found by MediaPipe Hands (the sleeve bits by the colour rule)
    hand_only = detector.hand_mask(comp, lm)
    assert _score(hand_only, occluder, lm)[0] >= 0.5


def test_microphone_from_below_is_masked(plate, detector):
    rgb, lm = plate
    src = _image("face_recognition_obama.jpg")
    fw = _face_w(lm)
    top, bottom = lm[17, 1], lm[152, 1] + 0.3 * fw  # lower lip to below the chin
    wd, length = int(round(0.16 * fw)), int(round(bottom - top))
    strip = cv2.resize(src[520:640, 405:445], (wd, length))  # the tie
    shape = np.zeros((length, wd), np.uint8)
    cv2.rectangle(shape, (0, wd // 2), (wd - 1, length - 1), 255, -1)
    cv2.circle(shape, (wd // 2, wd // 2), wd // 2, 255, -1)
    x0, y0 = int(lm[17, 0] - wd / 2), int(top)
    comp = rgb.copy()
    region = comp[y0:y0 + length, x0:x0 + wd]
    region[shape > 0] = strip[shape > 0]
    occluder = np.zeros(rgb.shape[:2], np.uint8)
    occluder[y0:y0 + length, x0:x0 + wd] = shape
    mask = detector.occlusion_mask(comp, lm)
    covered, skin_fp = _score(mask, occluder, lm)
    assert covered >= 0.70, covered
    assert skin_fp < 0.05, skin_fp


def test_clean_frames_give_empty_masks():
    """d0 in video mode (hands tracked), and faces Hands mistakes for hands, and a beard."""
    frames = _frames("liveportrait_d0.mp4", list(range(0, 78, 7)))
    with FaceAnalyzer(static_images=False, max_faces=1) as fa, OcclusionDetector(static_images=False) as od:
        for rgb in frames:
            lm = fa.detect(rgb)[0].landmarks
            mask = od.occlusion_mask(rgb, lm)
            oval = face_oval_mask(lm, rgb.shape) > 0
            assert (mask > 0)[oval].mean() < 0.01
    # MediaPipe Hands reports a "hand" on these faces (an open mouth, score > 0.9); it lies
    # inside the face oval, so it is not taken as an occluder
    cases = [_frames("liveportrait_d13.mp4", [95])[0], _frames("sadtalker_WDA_AlexandriaOcasioCortez_000.mp4", [0])[0],
             _image("deepface_img17.jpg")]
    with FaceAnalyzer(static_images=True, max_faces=1) as fa, OcclusionDetector(static_images=True) as od:
        for k, rgb in enumerate(cases):
            lm = fa.detect(rgb)[0].landmarks
            if k < 2:
                assert len(od.hands(rgb)) == 1
            mask = od.occlusion_mask(rgb, lm)
            oval = face_oval_mask(lm, rgb.shape) > 0
            assert (mask > 0)[oval].mean() < 0.01, k


def test_person_mask_adds_non_person_evidence(plate, detector):
    rgb, lm = plate
    h, w = rgb.shape[:2]
    fw = _face_w(lm)
    person = np.full((h, w), 255, np.uint8)
    assert not detector.foreign_mask(rgb, lm, person).any()
    # a segmentation that says a bar across the cheek from the face's edge is not person
    y = int(lm[50, 1])
    x_edge = int(lm[234, 0])
    person[y - int(0.06 * fw): y + int(0.06 * fw), : x_edge + int(0.35 * fw)] = 0
    m = detector.foreign_mask(rgb, lm, person)
    oval = face_oval_mask(lm, rgb.shape) > 0
    assert (m > 0)[(person == 0) & oval].mean() > 0.7
    with pytest.raises(UsageError):
        detector.foreign_mask(rgb, lm, person[:10])


def test_bad_arguments_and_models(detector, plate):
    rgb, lm = plate
    with pytest.raises(UsageError):
        detector.occlusion_mask(rgb.astype(np.float32), lm)
    with pytest.raises(UsageError):
        detector.occlusion_mask(rgb, np.full((478, 3), np.nan))
    with pytest.raises(UsageError):
        OcclusionDetector(max_hands=0)
    assert [m.name for m in OcclusionDetector.MODELS] == ["mediapipe.palm_detection_full", "mediapipe.hand_landmark_full"]
    assert all(m.sha256 and len(m.sha256) == 64 for m in OcclusionDetector.MODELS)
    od = OcclusionDetector()
    od.close()
    od.close()
    with pytest.raises(RuntimeError):
        od.hands(rgb)
