"""Face detection, landmarks, masks, segmentation and identity-shape retargeting on real media."""

from __future__ import annotations

import re

import av
import cv2
import numpy as np
import pytest

from recast.errors import NoFaceError, UsageError
from recast.models import expression, masks, mesh_topology
from recast.models.face import DetectedFace, FaceAnalyzer, analyze_source_photo, select_face
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
def astronaut() -> np.ndarray:
    return _image("skimage_astronaut.png")


@pytest.fixture(scope="module")
def astronaut_face(astronaut) -> DetectedFace:
    return analyze_source_photo(astronaut, role_name="astronaut")


@pytest.fixture(scope="module")
def d0_landmarks() -> np.ndarray:
    """Landmarks of d0 frames 0 (mouth closed) and 32 (wide grin)."""
    with FaceAnalyzer(static_images=False, max_faces=1) as fa:
        return np.stack([fa.detect(f)[0].landmarks for f in _frames("liveportrait_d0.mp4", [0, 32])])


def _check_face(face: DetectedFace, shape) -> None:
    h, w = shape[:2]
    assert face.landmarks.shape == (478, 3) and face.landmarks.dtype == np.float32
    assert np.isfinite(face.landmarks).all()
    x0, y0, x1, y1 = face.box
    assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
    lm = face.landmarks
    # the landmarks sit inside their box (x, y in full-image pixels) and the face is upright
    assert x0 - 1 <= lm[:, 0].min() and lm[:, 0].max() <= x1 + 1
    assert lm[10, 1] < lm[1, 1] < lm[152, 1]  # forehead above nose tip above chin
    assert lm[33, 0] < lm[263, 0]  # subject's right eye on the image left
    assert face.area == (x1 - x0) * (y1 - y0)


def test_models_are_pinned_bundled_files():
    for ref in (*FaceAnalyzer.MODELS, *masks.PersonSegmenter.MODELS):
        assert ref.version == "0.10.21"
        assert ref.sha256 is not None and re.fullmatch(r"[0-9a-f]{64}", ref.sha256)


def test_astronaut_478_landmarks(astronaut, astronaut_face):
    _check_face(astronaut_face, astronaut.shape)
    # her face is in the upper middle of the portrait
    x0, y0, x1, y1 = astronaut_face.box
    assert 150 < (x0 + x1) / 2 < 300 and 60 < (y0 + y1) / 2 < 200
    assert 60 < x1 - x0 < 160


def test_video_frames_tracked():
    frames = _frames("liveportrait_d0.mp4", [0, 1, 2, 3, 4])
    with FaceAnalyzer(static_images=False, max_faces=1) as fa:
        results = [fa.detect(f) for f in frames]
    assert all(len(r) == 1 for r in results)
    for r, f in zip(results, frames):
        _check_face(r[0], f.shape)
    # consecutive frames of a still head: landmarks barely move
    jitter = np.abs(results[1][0].landmarks[:, :2] - results[0][0].landmarks[:, :2]).mean()
    assert jitter < 5.0


def test_small_face_in_720p_frame():
    (frame,) = _frames("liveportrait_s18.mp4", [0])
    assert frame.shape == (720, 1280, 3)
    with FaceAnalyzer(static_images=False) as fa:
        faces = fa.detect(frame)
    assert len(faces) >= 1
    _check_face(faces[0], frame.shape)
    x0, y0, x1, y1 = faces[0].box
    assert 600 < (x0 + x1) / 2 < 900 and 100 < (y0 + y1) / 2 < 420


def test_tiny_face_found_by_detection_fallback_and_followed():
    """A face of ~60 px in a 1280x720 frame: the mesh's own detector misses it, the tiled
    detection finds it, and the next frames follow it from the previous box."""
    frames = _frames("liveportrait_s18.mp4", [0, 1, 2])
    with FaceAnalyzer(static_images=False, max_faces=1) as fa:
        found = []
        for f in frames:
            small = cv2.resize(f, None, fx=0.25, fy=0.25, interpolation=cv2.INTER_AREA)
            canvas = np.full((720, 1280, 3), 90, np.uint8)
            canvas[400 : 400 + small.shape[0], 800 : 800 + small.shape[1]] = small
            found.append(fa.detect(canvas))
    for faces in found:
        assert len(faces) == 1
        _check_face(faces[0], (720, 1280))
        x0, y0, x1, y1 = faces[0].box
        assert 800 + 600 / 4 < (x0 + x1) / 2 < 800 + 900 / 4
        assert 400 + 100 / 4 < (y0 + y1) / 2 < 400 + 420 / 4


def test_group_photo_and_select_face():
    img = _image("insightface_t1.jpg")
    with FaceAnalyzer(static_images=True, max_faces=6) as fa:
        faces = fa.detect(img)
    assert len(faces) == 6
    areas = [f.area for f in faces]
    assert areas == sorted(areas, reverse=True)
    assert select_face(faces) is faces[0]
    assert select_face(faces, "largest") is faces[0]
    assert select_face(faces, "index:2") is faces[2]
    assert select_face(list(reversed(faces)), "index:0") is faces[0]
    assert select_face(faces, "index:6") is None
    assert select_face([], "largest") is None
    with pytest.raises(UsageError, match="'biggest'"):
        select_face(faces, "biggest")
    with pytest.raises(UsageError, match="index:-1"):
        select_face(faces, "index:-1")


def test_no_face_raises(astronaut):
    sky = np.ascontiguousarray(astronaut[:120, 380:500])  # background beside the portrait
    rng = np.random.default_rng(0)
    solid = np.clip(np.full((300, 400, 3), 128.0) + rng.normal(0, 3, (300, 400, 3)), 0, 255).astype(np.uint8)
    for img in (sky, solid):
        with pytest.raises(NoFaceError, match="source 'hero': no face found"):
            analyze_source_photo(img, role_name="hero")
    with FaceAnalyzer(static_images=False) as fa:
        assert fa.detect(solid) == []


def test_bad_image_is_usage_error():
    with FaceAnalyzer(static_images=True) as fa, pytest.raises(UsageError):
        fa.detect(np.zeros((10, 10), np.uint8))


# --- topology and masks ---------------------------------------------------------------------


def test_topology():
    t = mesh_topology.TESSELATION_TRIANGLES
    assert t.shape[1] == 3 and 840 <= len(t) <= 900 and t.max() < 468
    assert len(mesh_topology.FACE_OVAL) == 36 == len(set(mesh_topology.FACE_OVAL))
    for loop in (masks.LEFT_EYE, masks.RIGHT_EYE, masks.LIPS_INNER, masks.LIPS_OUTER):
        assert len(loop) in (16, 20) and len(set(loop)) == len(loop)


def test_face_masks(astronaut, astronaut_face):
    oval = masks.face_oval_mask(astronaut_face.landmarks, astronaut.shape[:2])
    assert oval.dtype == np.uint8 and set(np.unique(oval)) == {0, 255}
    x0, y0, x1, y1 = astronaut_face.box
    assert oval[int(astronaut_face.landmarks[1, 1]), int(astronaut_face.landmarks[1, 0])] == 255
    assert 0.55 < (oval > 0).sum() / ((x1 - x0) * (y1 - y0)) < 0.9
    assert oval[:y0].max() == 0 and oval[:, x1 + 1 :].max() == 0
    skin = masks.face_skin_mask(astronaut_face.landmarks, astronaut.shape[:2])
    assert (skin > 0).sum() < (oval > 0).sum() and not (skin & ~oval).any()
    eye = astronaut_face.landmarks[468]
    assert skin[int(eye[1]), int(eye[0])] == 0

    grown = masks.dilate_mask(oval, 5)
    assert (grown >= oval).all() and (grown > 0).sum() > (oval > 0).sum()
    alpha = masks.feather_mask(oval, 8)
    assert alpha.dtype == np.float32 and alpha.max() == 1.0
    assert (alpha[oval == 0] == 0).all()  # the feather stays inside the mask
    edge = (oval > 0) & (cv2.erode(oval, np.ones((3, 3), np.uint8)) == 0)
    assert alpha[edge].max() < 0.1

    packed, shape = masks.pack_mask(oval)
    assert packed.nbytes * 8 >= oval.size and packed.nbytes < oval.nbytes / 7
    assert np.array_equal(masks.unpack_mask(packed, shape), oval)


def test_person_segmenter():
    (frame,) = _frames("liveportrait_d0.mp4", [0])
    with FaceAnalyzer(static_images=False) as fa:
        face = fa.detect(frame)[0]
    with masks.PersonSegmenter() as seg:
        prob = seg.segment(frame)
    assert prob.shape == frame.shape[:2] and prob.dtype == np.uint8
    nose = face.landmarks[1]
    assert prob[int(nose[1]), int(nose[0])] > 200
    assert prob[:20, :20].mean() < 30  # green screen corner


# --- expression: identity shape -------------------------------------------------------------


def test_similarity_align_recovers_transform():
    rng = np.random.default_rng(1)
    src = rng.normal(0, 50, (30, 3))
    ang = np.deg2rad(20)
    r = np.array([[np.cos(ang), -np.sin(ang), 0], [np.sin(ang), np.cos(ang), 0], [0, 0, 1]])
    dst = 1.7 * src @ r.T + np.array([10.0, -4.0, 2.0])
    s, rr, t = expression.similarity_align(src, dst)
    assert s == pytest.approx(1.7) and np.allclose(rr, r) and np.allclose(t, [10, -4, 2])
    assert np.allclose(expression.apply_similarity(src, s, rr, t), dst)
    s2, r2, t2 = expression.similarity_align(src[:, :2], dst[:, :2])
    assert r2.shape == (2, 2) and s2 == pytest.approx(1.7)
    out = expression.apply_similarity(src, s2, r2, t2)
    assert np.allclose(out[:, :2], dst[:, :2]) and np.allclose(out[:, 2], 1.7 * src[:, 2])


def _eye_distance(lm):
    right = lm[[33, 133], :2].mean(0)
    left = lm[[263, 362], :2].mean(0)
    return np.linalg.norm(left - right)


def _proportion(lm):
    """Inter-ocular distance over face height (forehead top to chin)."""
    return _eye_distance(lm) / np.linalg.norm(lm[10, :2] - lm[152, :2])


def _mouth_opening(lm):
    return np.linalg.norm(lm[13, :2] - lm[14, :2]) / _eye_distance(lm)


def test_identity_shape_takes_source_proportions_and_plate_expression(astronaut_face, d0_landmarks):
    src = astronaut_face.landmarks
    plate = d0_landmarks  # frame 0: mouth closed, frame 1: wide open grin
    assert _mouth_opening(plate[1]) > 3 * _mouth_opening(plate[0])
    assert abs(_proportion(src) - _proportion(plate[0])) > 0.03  # different people
    nan = np.full((1, 478, 3), np.nan, np.float32)
    out = expression.blend_identity_shape(np.concatenate([plate[:1], nan, plate[1:]]), src, strength=1.0)
    assert out.shape == (3, 478, 3) and out.dtype == np.float32
    assert np.isnan(out[1]).all() and np.isfinite(out[[0, 2]]).all()
    closed, grin = out[0], out[2]
    # proportions are the source's on the frame of rest; on the grin the jaw drop still shows
    assert _proportion(closed) == pytest.approx(_proportion(src), rel=0.05)
    assert abs(_proportion(grin) - _proportion(src)) < abs(_proportion(plate[1]) - _proportion(src))
    # expression is the plate's: the grin stays open, the closed mouth stays closed although
    # the source photo smiles with parted lips
    assert _mouth_opening(grin) == pytest.approx(_mouth_opening(plate[1]), rel=0.35)
    assert _mouth_opening(closed) < 0.5 * _mouth_opening(grin)
    assert _mouth_opening(closed) < _mouth_opening(src)
    # pose and position stay the plate's: the face sits where the plate's face is
    for o, p in ((closed, plate[0]), (grin, plate[1])):
        assert np.linalg.norm(o[1, :2] - p[1, :2]) < 0.1 * np.linalg.norm(p[10, :2] - p[152, :2])


def test_identity_shape_strength_and_single_frame(astronaut_face, d0_landmarks):
    src = astronaut_face.landmarks
    zero = expression.blend_identity_shape(d0_landmarks, src, strength=0.0)
    assert np.allclose(zero, d0_landmarks, atol=1e-3)
    single = expression.blend_identity_shape(d0_landmarks[:1], src)
    assert _proportion(single[0]) == pytest.approx(_proportion(src), rel=0.03)
    half = expression.blend_identity_shape(d0_landmarks[:1], src, strength=0.5)
    assert _proportion(half[0]) == pytest.approx((_proportion(src) + _proportion(d0_landmarks[0])) / 2, rel=0.05)
    assert np.isnan(expression.blend_identity_shape(np.full((2, 478, 3), np.nan), src)).all()
    with pytest.raises(UsageError):
        expression.blend_identity_shape(d0_landmarks, src, strength=1.5)
    with pytest.raises(UsageError):
        expression.blend_identity_shape(d0_landmarks[0], src)
