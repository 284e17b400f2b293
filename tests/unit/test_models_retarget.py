"""Expression-aware retargeting on real landmarks (MediaPipe face mesh on ../shared/media)."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

from recast.errors import UsageError
from recast.models import retarget as rt
from recast.models.mesh_topology import TESSELATION_TRIANGLES

MEDIA = Path(os.environ.get("RECAST_TEST_MEDIA", Path(__file__).resolve().parents[2].parent / "shared" / "media"))
TALKING = MEDIA / "videos" / "sadtalker_WDA_AlexandriaOcasioCortez_000.mp4"


@lru_cache(maxsize=None)
def _mesh():
    import mediapipe as mp

    return mp.solutions.face_mesh.FaceMesh(static_image_mode=True, refine_landmarks=True, max_num_faces=1)


def landmarks_of(rgb: np.ndarray) -> np.ndarray:
    """(478, 3) landmarks of the largest face in pixels (z * width), NaN when no face."""
    res = _mesh().process(np.ascontiguousarray(rgb))
    if not res.multi_face_landmarks:
        return np.full((478, 3), np.nan)
    h, w = rgb.shape[:2]
    return np.array([[p.x * w, p.y * h, p.z * w] for p in res.multi_face_landmarks[0].landmark])


@lru_cache(maxsize=None)
def image_landmarks(name: str) -> np.ndarray:
    import cv2

    path = MEDIA / "images" / name
    if not path.exists():
        pytest.skip(f"test media missing: {path}")
    lm = landmarks_of(cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB))
    assert np.isfinite(lm).all(), f"no face in {name}"
    return lm


@lru_cache(maxsize=None)
def talking_landmarks(n: int = 60) -> np.ndarray:
    import av

    if not TALKING.exists():
        pytest.skip(f"test media missing: {TALKING}")
    out = []
    with av.open(str(TALKING)) as c:
        for i, f in enumerate(c.decode(video=0)):
            if i >= n:
                break
            out.append(landmarks_of(f.to_ndarray(format="rgb24")))
    return np.stack(out)


def _areas(lm: np.ndarray) -> np.ndarray:
    p = lm[:, :2]
    a, b, c = (p[TESSELATION_TRIANGLES[:, k]] for k in range(3))
    return (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])


def flips(before: np.ndarray, after: np.ndarray) -> int:
    """Triangles whose orientation changed, among those not already near-degenerate.

    MediaPipe places sliver triangles (area < half the median) whose orientation flips with
    sub-pixel noise; those are not counted (see the module report on corner slivers).
    """
    a0, a1 = _areas(before), _areas(after)
    big = np.abs(a0) > 0.5 * np.median(np.abs(a0))
    return int(((np.sign(a0) != np.sign(a1)) & big).sum())


SMILERS = ["skimage_astronaut.png", "deepface_img17.jpg", "face_recognition_obama.jpg", "deepface_img39.jpg"]


# --- parse_edit ----------------------------------------------------------------------------------
def test_parse_edit_forms():
    assert rt.parse_edit("smile=+0.3") == rt.ExpressionEdit("smile", 0.3)
    assert rt.parse_edit("eye_open=-0.1") == rt.ExpressionEdit("eye_open", -0.1)
    e = rt.parse_edit("smile=0.2@10-40")
    assert (e.start, e.end) == (10, 40) and e.active(10) and e.active(39) and not e.active(40) and not e.active(9)
    assert rt.parse_edit("gaze=.5@7-").end is None


@pytest.mark.parametrize("text", ["grin=0.3", "smile", "smile=abc", "smile=0.2@40-10", "", "smile=9"])
def test_parse_edit_rejects_with_names(text):
    with pytest.raises(UsageError) as ei:
        rt.parse_edit(text)
    assert repr(text) in str(ei.value) and "smile" in str(ei.value)


# --- neutralisation ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", SMILERS)
def test_neutralize_closes_mouth_and_removes_smile(name):
    lm = image_landmarks(name)
    before, after = rt.expression_measures(lm), rt.expression_measures(rt.neutralize_expression(lm))
    # measured: mouth_open 0.11–0.24 IOD -> 0.003; smile +0.07..+0.10 -> +0.016 (obama +0.002 stays)
    assert after["mouth_open"] < 0.01 < before["mouth_open"] - 0.1
    assert after["smile"] <= rt.NEUTRAL_SMILE + rt.NEUTRAL_SMILE_SD + 1e-3
    if before["smile"] > 0.05:
        assert before["smile"] - after["smile"] > 0.04
    assert after["mouth_width"] < before["mouth_width"] - 0.1  # a broad smile narrows
    # known limit: narrowing obama's 1.15-IOD smile by 0.34 IOD folds one cheek triangle
    # beside the mouth corner (43-91-146); the others stay clean
    assert flips(lm, rt.neutralize_expression(lm)) <= (1 if name == "face_recognition_obama.jpg" else 0)


def test_neutralize_open_mouth_and_squint():
    wide = image_landmarks("liveportrait_d9.jpg")  # mouth wide open: 0.74 IOD
    assert rt.expression_measures(rt.neutralize_expression(wide))["mouth_open"] < 0.01
    squint = image_landmarks("ghost_beckham.jpg")  # smiling squint: eye opening 0.14
    m0, m1 = rt.expression_measures(squint), rt.expression_measures(rt.neutralize_expression(squint))
    assert m1["eye_open"] > m0["eye_open"] + 0.08
    assert flips(squint, rt.neutralize_expression(squint)) == 0


def test_neutral_face_is_left_alone():
    lm = image_landmarks("deca_IMG_0392_inputs.jpg")  # frontal, neutral: within every band
    assert np.abs(rt.neutralize_expression(lm) - lm).max() < 1e-6 * np.abs(lm).max() + 1e-3


def test_neutralize_keeps_pose_and_stable_points():
    lm = image_landmarks("skimage_astronaut.png")
    out = rt.neutralize_expression(lm)
    iod = np.linalg.norm(lm[33, :2] - lm[263, :2])
    assert np.abs(out[[33, 133, 362, 263, 168, 6, 1], :2] - lm[[33, 133, 362, 263, 168, 6, 1], :2]).max() < 0.01 * iod


def test_bad_shapes_are_usage_errors():
    with pytest.raises(UsageError):
        rt.neutralize_expression(np.zeros((468, 3)))
    with pytest.raises(UsageError):
        rt.retarget_sequence(np.zeros((2, 478, 3)), image_landmarks("skimage_astronaut.png"), mode="mirror")


# --- plate neutral, deltas, scales ---------------------------------------------------------------
def test_estimate_neutral_has_closed_mouth_and_deltas_follow_talking():
    plate = talking_landmarks()
    neutral = rt.estimate_neutral(plate)
    assert rt.expression_measures(neutral)["mouth_open"] < 0.02
    opening = np.array([rt.expression_measures(p)["mouth_open"] for p in plate])
    d = np.array([rt.expression_deltas(p, neutral)[14, 1] - rt.expression_deltas(p, neutral)[13, 1] for p in plate])
    assert np.corrcoef(opening, d)[0, 1] > 0.95


def test_eye_mouth_scales():
    a = image_landmarks("deca_IMG_0392_inputs.jpg")
    b = image_landmarks("sadtalker_people_0.png")
    s_eye, s_mouth = rt.eye_mouth_scales(a, b)
    ma, mb = rt.expression_measures(a), rt.expression_measures(b)
    assert s_mouth == pytest.approx(ma["mouth_width"] / mb["mouth_width"], rel=1e-6)
    assert s_eye == pytest.approx(ma["eye_width"] / mb["eye_width"], rel=1e-6)
    assert rt.eye_mouth_scales(a, a) == pytest.approx((1.0, 1.0))


# --- retarget_sequence ---------------------------------------------------------------------------
def test_transfer_follows_plate_mouth():
    plate = talking_landmarks()
    out = rt.retarget_sequence(plate, image_landmarks("skimage_astronaut.png"), mode="transfer")
    mp_ = np.array([rt.expression_measures(p)["mouth_open"] for p in plate])
    mt = np.array([rt.expression_measures(x)["mouth_open"] for x in out])
    assert np.corrcoef(mp_, mt)[0, 1] > 0.8  # measured 0.999
    assert mt.max() > 0.2  # the plate talks (opening up to 0.45 IOD): so must the target


def test_modes_keep_source_and_neutral_ignore_plate_expression():
    plate = talking_landmarks()
    src = image_landmarks("skimage_astronaut.png")
    keep = rt.retarget_sequence(plate, src, mode="keep_source")
    neut = rt.retarget_sequence(plate, src, mode="neutral")
    mk = np.array([rt.expression_measures(x)["mouth_open"] for x in keep])
    mn = np.array([rt.expression_measures(x)["mouth_open"] for x in neut])
    assert np.ptp(mk) < 0.01 and mk.mean() == pytest.approx(rt.expression_measures(src)["mouth_open"], abs=0.01)
    assert mn.max() < 0.02


def test_target_keeps_plate_pose():
    plate = talking_landmarks()
    out = rt.retarget_sequence(plate, image_landmarks("deepface_img17.jpg"))
    iod = np.linalg.norm(plate[:, 33, :2] - plate[:, 263, :2], axis=1)
    err = np.linalg.norm(out[:, [33, 133, 362, 263, 168, 6], :2] - plate[:, [33, 133, 362, 263, 168, 6], :2], axis=2).mean(1)
    # stable points land where the plate's are, up to the difference in face proportions
    assert (err / iod).max() < 0.15
    roll_p = np.arctan2(*(plate[:, 263, 1::-1] - plate[:, 33, 1::-1]).T)
    roll_t = np.arctan2(*(out[:, 263, 1::-1] - out[:, 33, 1::-1]).T)
    assert np.degrees(np.abs(roll_p - roll_t)).max() < 2.0


def test_scale_aware_deltas_keep_source_proportions():
    plate = talking_landmarks()
    narrow = image_landmarks("deca_IMG_0392_inputs.jpg")  # mouth 0.67 IOD
    wide = image_landmarks("sadtalker_people_0.png")      # mouth 0.85 IOD
    mw = {}
    for name, src in (("narrow", narrow), ("wide", wide)):
        out = rt.retarget_sequence(plate, src)
        mw[name] = np.array([rt.expression_measures(x)["mouth_width"] for x in out])
    src_diff = (rt.expression_measures(rt.neutralize_expression(wide))["mouth_width"]
                - rt.expression_measures(rt.neutralize_expression(narrow))["mouth_width"])
    # the targets differ as the sources do, frame by frame, though the performance is the same
    assert np.median(mw["wide"] - mw["narrow"]) == pytest.approx(src_diff, rel=0.3)
    # and the plate's opening is scaled by s_mouth: the wide source opens wider
    open_n = max(rt.expression_measures(x)["mouth_open"] for x in rt.retarget_sequence(plate, narrow))
    open_w = max(rt.expression_measures(x)["mouth_open"] for x in rt.retarget_sequence(plate, wide))
    assert open_w / open_n == pytest.approx(rt.eye_mouth_scales(wide, narrow)[1], rel=0.15)


def test_edits_change_their_measure_within_range_only():
    plate = talking_landmarks()[:30]
    src = image_landmarks("skimage_astronaut.png")
    base = rt.retarget_sequence(plate, src)
    cases = [("smile", 0.5, "smile", +1), ("mouth_open", 0.5, "mouth_open", +1), ("eye_open", -0.5, "eye_open", -1),
             ("brow_raise", 0.5, "brow_height", +1), ("gaze", 0.5, "gaze", +1)]
    for name, amount, measure, sign in cases:
        out = rt.retarget_sequence(plate, src, edits=[rt.ExpressionEdit(name, amount, 10, 20)])
        for f in range(30):
            m0, m1 = rt.expression_measures(base[f]), rt.expression_measures(out[f])
            if 10 <= f < 20:
                assert sign * (m1[measure] - m0[measure]) > 0.02, (name, f, m0[measure], m1[measure])
                others = {"smile": "eye_open", "mouth_open": "eye_open", "eye_open": "mouth_open",
                          "brow_raise": "mouth_open", "gaze": "mouth_open"}[name]
                assert abs(m1[others] - m0[others]) < 0.01, (name, others)
                assert flips(base[f], out[f]) == 0, name
            else:
                np.testing.assert_allclose(out[f], base[f])


def test_nan_rows_stay_nan_and_no_flips():
    plate = talking_landmarks()[:20].copy()
    plate[[0, 7, 8]] = np.nan
    out = rt.retarget_sequence(plate, image_landmarks("deepface_img17.jpg"))
    assert np.isnan(out[[0, 7, 8]]).all()
    ok = [f for f in range(20) if f not in (0, 7, 8)]
    assert np.isfinite(out[ok]).all()
    # the transferred performance (jaw drops of up to 0.45 IOD here) folds nothing relative to
    # the same head placed without expression (silhouette triangles of a different head shape
    # may face otherwise than the plate's; that is geometry, not deformation)
    still = rt.retarget_sequence(plate, image_landmarks("deepface_img17.jpg"), mode="neutral")
    assert all(flips(still[f], out[f]) == 0 for f in ok)
    assert np.isnan(rt.retarget_sequence(np.full((3, 478, 3), np.nan), image_landmarks("deepface_img17.jpg"))).all()


# --- the shared similarity estimate ----------------------------------------------------------------
def test_similarity_align_recovers_transform():
    from recast.models.similarity import apply_similarity, similarity_align, similarity_matrix

    rng = np.random.default_rng(1)
    src = rng.normal(0, 50, (30, 3))
    ang = np.deg2rad(20)
    r = np.array([[np.cos(ang), -np.sin(ang), 0], [np.sin(ang), np.cos(ang), 0], [0, 0, 1]])
    dst = 1.7 * src @ r.T + np.array([10.0, -4.0, 2.0])
    s, rr, t = similarity_align(src, dst)
    assert s == pytest.approx(1.7) and np.allclose(rr, r) and np.allclose(t, [10, -4, 2])
    assert np.allclose(apply_similarity(src, s, rr, t), dst)
    s2, r2, t2 = similarity_align(src[:, :2], dst[:, :2])
    assert r2.shape == (2, 2) and s2 == pytest.approx(1.7)
    out = apply_similarity(src, s2, r2, t2)
    assert np.allclose(out[:, :2], dst[:, :2]) and np.allclose(out[:, 2], 1.7 * src[:, 2])
    m = similarity_matrix(s2, r2, t2)
    assert m.shape == (2, 3) and np.allclose(src[:, :2] @ m[:, :2].T + m[:, 2], dst[:, :2])
    # rows with NaN are left out of the fit
    noisy = dst.copy()
    noisy[3] = np.nan
    assert similarity_align(src, noisy)[0] == pytest.approx(1.7)


def test_similarity_align_never_reflects():
    from recast.models.similarity import similarity_align

    rng = np.random.default_rng(2)
    src = rng.normal(0, 10, (12, 2))
    mirrored = src * np.array([-1.0, 1.0])  # no rotation maps src onto its mirror image
    _, r, _ = similarity_align(src, mirrored)
    assert np.linalg.det(r) == pytest.approx(1.0)
    with pytest.raises(UsageError, match="at least 2 finite point pairs"):
        similarity_align(src[:1], mirrored[:1])
