"""The classic face swap on real media: astronaut photo onto frames of liveportrait_d0."""

from __future__ import annotations

import av
import cv2
import numpy as np
import pytest

from recast.errors import UsageError
from recast.models.retarget import retarget_sequence
from recast.models.face import FaceAnalyzer, analyze_source_photo
from recast.models.masks import dilate_mask, face_oval_mask, face_skin_mask
from recast.models.swap_classic import ClassicFaceSwapper, SwapFrame
from tests.conftest import IMAGES, VIDEOS

FRAMES = [0, 32, 60]  # rest, wide grin, head turned to the side a little


@pytest.fixture(scope="module")
def case():
    src = cv2.cvtColor(cv2.imread(str(IMAGES / "skimage_astronaut.png")), cv2.COLOR_BGR2RGB)
    src_face = analyze_source_photo(src, role_name="astronaut")
    frames = {}
    with av.open(str(VIDEOS / "liveportrait_d0.mp4")) as c:
        for i, f in enumerate(c.decode(video=0)):
            if i in FRAMES:
                frames[i] = f.to_ndarray(format="rgb24")
            if i >= max(FRAMES):
                break
    plates = [frames[i] for i in FRAMES]
    with FaceAnalyzer(static_images=False, max_faces=1) as fa:
        plate_lm = np.stack([fa.detect(f)[0].landmarks for f in plates])
    targets = retarget_sequence(plate_lm, src_face.landmarks)
    swapper = ClassicFaceSwapper(src, src_face.landmarks)
    results = [swapper.swap(f, t, p) for f, t, p in zip(plates, targets, plate_lm)]
    return dict(src=src, src_face=src_face, plates=plates, plate_lm=plate_lm, targets=targets,
                swapper=swapper, results=results)


def _face_size(lm):
    return float(np.ptp(lm[:468, :2], axis=0).max())


def test_swap_changes_face_and_nothing_outside_it(case):
    for plate, res, tgt, plm in zip(case["plates"], case["results"], case["targets"], case["plate_lm"]):
        assert isinstance(res, SwapFrame)
        assert res.frame.shape == plate.shape and res.frame.dtype == np.uint8
        assert res.mask.shape == plate.shape[:2] and res.mask.dtype == np.uint8
        changed = (res.frame != plate).any(axis=2)
        # every changed pixel is inside the reported mask
        assert not (changed & (res.mask == 0)).any()
        # nothing changes outside the union of both face ovals grown by the swapper's spill
        union = face_oval_mask(tgt, plate.shape[:2]) | face_oval_mask(plm, plate.shape[:2])
        grown = dilate_mask(union, int(np.ceil(ClassicFaceSwapper.SPILL * _face_size(tgt))) + 2)
        outside = grown == 0
        assert np.array_equal(res.frame[outside], plate[outside])
        # and the face itself did change, a lot
        skin = face_skin_mask(tgt, plate.shape[:2]) > 0
        diff = np.abs(res.frame.astype(int) - plate.astype(int)).sum(axis=2)
        assert changed[skin].mean() > 0.9
        assert diff[skin].mean() > 15


def test_swapped_face_lands_on_target_landmarks(case):
    with FaceAnalyzer(static_images=True, max_faces=1) as fa:
        for res, tgt in zip(case["results"], case["targets"]):
            faces = fa.detect(res.frame)
            assert len(faces) == 1
            err = np.linalg.norm(faces[0].landmarks[:468, :2] - tgt[:468, :2], axis=1).mean()
            assert err < 0.03 * _face_size(tgt), err


def test_colour_transfer_moves_towards_plate_skin(case):
    sw = case["swapper"]
    for plate, res, tgt, plm in zip(case["plates"], case["results"], case["targets"], case["plate_lm"]):
        h, w = plate.shape[:2]
        raw, covered, (x0, y0, x1, y1) = sw.warp(plate.shape, tgt)
        skin_t = face_skin_mask(tgt, (h, w), margin_px=3)[y0:y1, x0:x1]
        skin_t[~covered] = 0
        skin_p = face_skin_mask(plm, (h, w), margin_px=3)

        def lab_mean(img, mask):
            return np.asarray(cv2.mean(cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2LAB), mask=mask)[:3])

        plate_mean = lab_mean(plate, skin_p)
        raw_mean = lab_mean(raw, skin_t)
        out_mean = lab_mean(res.frame[y0:y1, x0:x1], skin_t)
        assert np.linalg.norm(out_mean - plate_mean) < 0.5 * np.linalg.norm(raw_mean - plate_mean)


def test_occlusion_keeps_plate_pixels(case):
    plate, tgt, plm = case["plates"][0], case["targets"][0], case["plate_lm"][0]
    occ = np.zeros(plate.shape[:2], np.uint8)
    nose = plm[1, :2].astype(int)
    occ[nose[1] :, : nose[0]] = 255  # a "hand" over the lower left quarter of the face
    res = case["swapper"].swap(plate, tgt, plm, occlusion_mask=occ)
    assert np.array_equal(res.frame[occ > 0], plate[occ > 0])
    assert (res.frame[occ == 0] != plate[occ == 0]).any()


def test_smaller_frame_and_face_at_edge(case):
    """A 256x256 plate (face ~120 px, source pyramid level 0) and a face cut by the frame."""
    plate = cv2.resize(case["plates"][0], (256, 256), interpolation=cv2.INTER_AREA)
    plm = case["plate_lm"][0] * np.array([0.5, 0.5, 0.5], np.float32)
    tgt = case["targets"][0] * np.array([0.5, 0.5, 0.5], np.float32)
    res = case["swapper"].swap(plate, tgt, plm)
    assert (res.frame != plate).any(axis=2).sum() > 1000
    shift = np.array([-90.0, 0.0, 0.0], np.float32)  # the left part of the face leaves the frame
    edge = np.ascontiguousarray(plate[:, 90:])
    res2 = case["swapper"].swap(edge, tgt + shift, plm + shift)
    assert res2.frame.shape == edge.shape
    assert (res2.frame != edge).any(axis=2).sum() > 500


def test_bad_inputs(case):
    sw, plate, plm = case["swapper"], case["plates"][0], case["plate_lm"][0]
    with pytest.raises(UsageError):
        sw.swap(plate, np.full((478, 3), np.nan), plm)
    with pytest.raises(UsageError):
        sw.swap(plate[..., 0], plm, plm)
    with pytest.raises(UsageError):
        ClassicFaceSwapper(case["src"], case["src_face"].landmarks[:468])
    assert ClassicFaceSwapper.MODEL.name == "classic" and ClassicFaceSwapper.MODEL.sha256 is None


def test_a_small_source_is_enlarged_bicubically_closer_to_the_face_it_shows(monkeypatch):
    """A 90 px source face on a 240 px plate face: the swap samples it bicubically, which keeps
    more of the face's detail than bilinear sampling (the reference here: the same photo at the
    large size)."""
    import recast.models.swap_classic as sc
    from recast.media import read_image

    big = read_image(IMAGES / "face_recognition_obama.jpg", role="source")
    with FaceAnalyzer(static_images=True) as fa:
        lm = fa.detect(big)[0].landmarks.astype(np.float64)
    f = 90 / np.ptp(lm[:, 0])
    small = cv2.resize(big, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
    small_lm = lm.copy()
    small_lm[:, :2] = (lm[:, :2] + 0.5) * f - 0.5

    def error(threshold):
        monkeypatch.setattr(sc, "MAGNIFY_CUBIC_ABOVE", threshold)
        warped, covered, (x0, y0, x1, y1) = sc.ClassicFaceSwapper(small, small_lm).warp(big.shape, lm)
        inside = cv2.erode(covered.astype(np.uint8), np.ones((9, 9), np.uint8)) > 0
        return np.abs(warped.astype(np.float64) - big[y0:y1, x0:x1])[inside].mean()

    default = sc.MAGNIFY_CUBIC_ABOVE
    bilinear, used = error(float("inf")), error(default)
    assert used < 0.95 * bilinear, (used, bilinear)
