"""Face detection, landmarks, masks and segmentation on real media."""

from __future__ import annotations

import re

import av
import cv2
import numpy as np
import pytest

from recast.errors import NoFaceError, UsageError
from recast.models import masks, mesh_topology
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
