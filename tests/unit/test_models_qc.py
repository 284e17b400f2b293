"""QC models: dlib identity embeddings and the quality metrics, on real test media."""

from __future__ import annotations

import math

import av
import cv2
import numpy as np
import pytest

from recast.contracts import ModelRef, Verdict
from recast.errors import InputError, ModelMissingError
from recast.models import metrics as M
from recast.models.identity import (
    IDENTITY_MATCH_THRESHOLD,
    DlibFaceEmbedder,
    cosine_similarity,
    face_distance,
    identity_transfer_rate,
    identity_transferred,
)
from tests.conftest import IMAGES, VIDEOS


# --- helpers ---------------------------------------------------------------------------------
class _Landmarker:
    """Largest face's (box, 478 landmarks) via recast's FaceAnalyzer, or MediaPipe directly
    when face.py is not importable (it is developed alongside these models)."""

    def __init__(self) -> None:
        try:
            from recast.models.face import FaceAnalyzer
        except ImportError:
            import mediapipe as mp

            self._mesh = mp.solutions.face_mesh.FaceMesh(
                static_image_mode=True, refine_landmarks=True, max_num_faces=1
            )
            self._fa = None
        else:
            self._fa = FaceAnalyzer(static_images=True)

    def __call__(self, rgb: np.ndarray) -> tuple[tuple[int, int, int, int], np.ndarray]:
        if self._fa is not None:
            faces = self._fa.detect(rgb)
            assert faces, "no face found"
            f = max(faces, key=lambda f: f.area)
            return tuple(int(v) for v in f.box), np.asarray(f.landmarks, np.float32)
        h, w = rgb.shape[:2]
        res = self._mesh.process(rgb)
        assert res.multi_face_landmarks, "no face found"
        lm = np.array([(p.x * w, p.y * h, p.z * w) for p in res.multi_face_landmarks[0].landmark], np.float32)
        x0, y0 = np.floor(lm[:, :2].min(0)).astype(int)
        x1, y1 = np.ceil(lm[:, :2].max(0)).astype(int)
        return (int(x0), int(y0), int(x1), int(y1)), lm


@pytest.fixture(scope="module")
def landmarker(media_dir) -> _Landmarker:
    return _Landmarker()


@pytest.fixture(scope="module")
def embedder() -> DlibFaceEmbedder:
    return DlibFaceEmbedder()


def _image(name: str) -> np.ndarray:
    bgr = cv2.imread(str(IMAGES / name), cv2.IMREAD_COLOR)
    assert bgr is not None, name
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _frames(name: str, indices: set[int]) -> dict[int, np.ndarray]:
    out: dict[int, np.ndarray] = {}
    with av.open(str(VIDEOS / name)) as c:
        for i, frame in enumerate(c.decode(video=0)):
            if i in indices:
                out[i] = frame.to_ndarray(format="rgb24")
            if i >= max(indices):
                break
    assert set(out) == indices
    return out


# --- identity --------------------------------------------------------------------------------
def test_model_ref_is_named_and_hashed_once(embedder):
    ref = embedder.model
    assert isinstance(ref, ModelRef)
    assert ref.name == "dlib_face_recognition_resnet_model_v1"
    assert ref.version == "20.0.1"
    assert ref.sha256 is not None and len(ref.sha256) == 64
    assert embedder.model is ref  # computed once


def test_missing_model_files_name_them(tmp_path):
    (tmp_path / "shape_predictor_5_face_landmarks.dat").write_bytes(b"")
    with pytest.raises(ModelMissingError, match="dlib_face_recognition_resnet_model_v1.dat"):
        DlibFaceEmbedder(model_dir=tmp_path)
    assert issubclass(ModelMissingError, FileNotFoundError)


def test_same_person_in_two_video_frames_is_a_match(embedder, landmarker):
    frames = _frames("liveportrait_d0.mp4", {0, 60})
    embs = [embedder.embed(f, landmarker(f)[0]) for f in (frames[0], frames[60])]
    for e in embs:
        assert e.shape == (128,) and e.dtype == np.float64 and np.isfinite(e).all()
    d = face_distance(*embs)
    assert d < IDENTITY_MATCH_THRESHOLD, d


def test_different_people_are_no_match(embedder, landmarker):
    astro, obama = _image("skimage_astronaut.png"), _image("face_recognition_obama.jpg")
    ea = embedder.embed(astro, landmarker(astro)[0])
    eo = embedder.embed(obama, landmarker(obama)[0])
    assert face_distance(ea, eo) > IDENTITY_MATCH_THRESHOLD
    # Same input, same descriptor (no jitter by default); cosine agrees with the distance.
    again = embedder.embed(astro, landmarker(astro)[0])
    assert face_distance(ea, again) < 1e-9
    assert cosine_similarity(ea, again) == pytest.approx(1.0)
    assert cosine_similarity(ea, eo) < cosine_similarity(ea, again)


def test_embed_accepts_views_and_rejects_bad_input(embedder, landmarker):
    astro = _image("skimage_astronaut.png")
    box, _ = landmarker(astro)
    # A crop is a strided view; its box is shifted by the crop origin.
    crop = astro[20:, 10:]
    b = (box[0] - 10, box[1] - 20, box[2] - 10, box[3] - 20)
    assert face_distance(embedder.embed(crop, b), embedder.embed(astro, box)) < 0.05
    with pytest.raises(InputError):
        embedder.embed(astro, (10, 10, 10, 40))  # empty box
    with pytest.raises(InputError):
        embedder.embed(astro.astype(np.float32), box)


def test_identity_transferred_needs_both_conditions():
    assert identity_transferred(0.4, 0.8)
    assert not identity_transferred(0.4, 0.5)  # still looks like the plate's person
    assert not identity_transferred(0.7, 0.8)  # not the source either
    assert not identity_transferred(0.6, 0.9)  # threshold is strict
    assert not identity_transferred(float("nan"), 0.9)
    assert identity_transferred(0.45, 0.55, threshold=0.5)
    assert identity_transfer_rate([0.4, 0.4, None, 0.7], [0.8, 0.5, 0.9, 0.9]) == pytest.approx(1 / 3)
    assert identity_transfer_rate([None], [0.8]) is None


def test_face_distance_and_cosine_basics():
    a, b = np.zeros(128), np.zeros(128)
    b[0] = 0.3
    assert face_distance(a, b) == pytest.approx(0.3)
    assert cosine_similarity(a, b) == 0.0
    assert cosine_similarity(b, -b) == pytest.approx(-1.0)


# --- PSNR ------------------------------------------------------------------------------------
def _rng_image(seed: int = 0, shape=(64, 80, 3)) -> np.ndarray:
    return np.random.default_rng(seed).integers(20, 236, size=shape, dtype=np.uint8)


def test_psnr_identical_is_capped_and_known_noise_matches():
    a = _rng_image()
    assert M.psnr(a, a) == M.PSNR_CAP_DB == 100.0
    noise = np.random.default_rng(1).integers(-8, 9, size=a.shape)
    b = (a.astype(int) + noise).astype(np.uint8)  # no clipping: a is in [20, 236)
    mse = float((noise.astype(float) ** 2).mean())
    assert M.psnr(a, b) == pytest.approx(10 * math.log10(255**2 / mse), abs=1e-9)
    # A constant offset of 5 grey levels: MSE 25.
    assert M.psnr(a, a + 5) == pytest.approx(10 * math.log10(255**2 / 25))
    # Floats use a peak of 1.
    fa = a.astype(np.float64) / 255
    assert M.psnr(fa, fa + 0.01) == pytest.approx(40.0)


def test_psnr_mask_selects_pixels():
    a = _rng_image()
    b = a.copy()
    b[:, :40] = 0
    mask = np.zeros(a.shape[:2], bool)
    mask[:, 40:] = True
    assert M.psnr(a, b, mask) == M.PSNR_CAP_DB
    assert M.psnr(a, b, (~mask).astype(np.uint8) * 255) < 20
    assert M.psnr(a, b, np.zeros_like(mask)) is None
    with pytest.raises(ValueError):
        M.psnr(a, b[:10])


def test_background_psnr_ignores_the_excluded_region_and_its_margin():
    plate = _image("skimage_astronaut.png")
    exclude = np.zeros(plate.shape[:2], np.uint8)
    exclude[150:350, 150:300] = 255
    out = plate.copy()
    out[150:350, 150:300] = 0  # the swap itself
    out[145:150, 150:300] = 0  # spill within the 8 px margin
    assert M.background_psnr(plate, out, exclude, dilate_px=8) == M.PSNR_CAP_DB
    assert M.psnr(plate, out) < 20
    out[10:20, 10:20] = 255  # the background changed
    bg = M.background_psnr(plate, out, exclude, dilate_px=8)
    assert 20 < bg < 50
    # A stack of frames with per-frame masks pools the error.
    stack = M.background_psnr(np.stack([plate, plate]), np.stack([out, plate]), np.stack([exclude, exclude]), 8)
    assert stack == pytest.approx(bg + 10 * math.log10(2), abs=0.01)


# --- head pose -------------------------------------------------------------------------------
def test_head_pose_frontal_mirrored_and_shifted(landmarker):
    astro = _image("skimage_astronaut.png")
    _, lm = landmarker(astro)
    yaw, pitch, roll = M.head_pose(lm, astro.shape[:2])
    assert abs(yaw) < 6 and abs(roll) < 8 and abs(pitch) < 20
    shifted = lm.copy()
    shifted[:, :2] += 20
    assert np.allclose(M.head_pose(shifted, astro.shape[:2]), (yaw, pitch, roll), atol=1.0)

    # A face turned ~10 degrees: its mirror image turns the other way, by about as much.
    turned = _image("liveportrait_s12.jpg")
    _, lm_t = landmarker(turned)
    _, lm_m = landmarker(np.ascontiguousarray(turned[:, ::-1]))
    y1, p1, r1 = M.head_pose(lm_t, turned.shape[:2])
    y2, p2, r2 = M.head_pose(lm_m, turned.shape[:2])
    assert abs(y1) > 5 and np.sign(y1) == -np.sign(y2)
    assert abs(y1 + y2) < 4 and abs(r1 + r2) < 3 and abs(p1 - p2) < 6

    nan = lm.copy()
    nan[1] = np.nan
    assert M.head_pose(nan, astro.shape[:2]) is None
    assert M.head_poses(np.stack([lm, nan]), astro.shape[:2])[1] is None


def test_head_pose_array_matches_head_pose_frame_by_frame(landmarker):
    frames = _frames("liveportrait_d0.mp4", {0, 10, 20, 30})
    lms = np.stack([landmarker(f)[1] for f in frames.values()])
    lms = np.concatenate([lms, np.full((1, 478, 3), np.nan, np.float32)])
    arr = M.head_pose_array(lms, (512, 512))
    assert arr.shape == (5, 3) and np.isnan(arr[4]).all()
    for row, lm in zip(arr[:4], lms[:4]):
        assert np.allclose(row, M.head_pose(lm, (512, 512)), atol=1e-9)
    # the 468 mesh points are enough (QC leaves the iris points out)
    assert np.allclose(M.head_pose_array(lms[:, :468], (512, 512))[:4], arr[:4], atol=1e-9)


def _project_template(yaw: float, pitch: float, roll: float, size=(480, 640)) -> np.ndarray:
    """Landmarks of the pose template seen by the metric's camera at the given pose (degrees)."""
    h, w = size
    cam = np.array([[w, 0, w / 2], [0, w, h / 2], [0, 0, 1]], float)
    y, p, r = np.radians([yaw, pitch, roll])
    # Built to match the documented convention: yaw turns the nose to image right, pitch up,
    # roll clockwise in the image (OpenCV axes, y down).
    ry = np.array([[np.cos(y), 0, -np.sin(y)], [0, 1, 0], [np.sin(y), 0, np.cos(y)]])
    rx = np.array([[1, 0, 0], [0, np.cos(p), np.sin(p)], [0, -np.sin(p), np.cos(p)]])  # y is down
    rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
    rot = ry @ rx @ rz
    pts, _ = cv2.projectPoints(M._POSE_MODEL, cv2.Rodrigues(rot)[0], np.array([0.0, 0.0, 60.0]), cam, None)
    lm = np.zeros((478, 3), np.float32)
    lm[M._POSE_IDX, :2] = pts.reshape(-1, 2)
    return lm


@pytest.mark.parametrize("pose", [(0, 0, 0), (20, 0, 0), (-15, 0, 0), (0, 12, 0), (0, -12, 0), (0, 0, 10), (15, -10, 5)])
def test_head_pose_convention_on_synthetic_views(pose):
    got = M.head_pose(_project_template(*pose), (480, 640))
    assert np.allclose(got, pose, atol=0.5), (got, pose)


def test_pose_error_averages_angles_over_shared_frames():
    plate = [(0.0, 0.0, 0.0), (10.0, 0.0, 0.0), None, (179.0, 0.0, 0.0)]
    out = [(3.0, 3.0, 3.0), None, (1.0, 1.0, 1.0), (-179.0, 0.0, 0.0)]
    assert M.pose_error(plate, out) == pytest.approx((3.0 + 2.0 / 3) / 2)
    assert M.pose_error([None], [(0.0, 0.0, 0.0)]) is None


# --- temporal stability ----------------------------------------------------------------------
def test_landmark_jitter_zero_when_static_and_grows_with_noise(landmarker):
    astro = _image("skimage_astronaut.png")
    _, lm = landmarker(astro)
    static = np.repeat(lm[None], 10, axis=0)
    assert M.landmark_jitter(static) == 0.0
    rng = np.random.default_rng(0)
    iod = M.inter_ocular_distance(lm)
    j = []
    for sigma in (0.5, 2.0, 5.0):
        noisy = static + rng.normal(0, sigma, static.shape).astype(np.float32)
        j.append(M.landmark_jitter(noisy))
    assert 0 < j[0] < j[1] < j[2]
    # 2D Gaussian noise of sigma per axis: mean displacement between frames ~ sigma*sqrt(pi).
    assert j[1] == pytest.approx(2.0 * math.sqrt(math.pi) / iod, rel=0.1)
    noisy = static + rng.normal(0, 2.0, static.shape).astype(np.float32)
    assert M.jitter_ratio(noisy, static) > 10
    assert M.jitter_ratio(static, static) == pytest.approx(1.0)
    # Frames with no face break the pairs instead of counting as motion.
    gappy = static.copy()
    gappy[3:5] = np.nan
    assert M.landmark_jitter(gappy) == 0.0
    assert M.landmark_jitter(np.full((3, 478, 3), np.nan)) is None


def test_pixel_flicker_inside_mask_streams_frames():
    base = _rng_image(3)
    mask = np.zeros(base.shape[:2], bool)
    mask[10:40, 10:40] = True
    steady = [base] * 5
    assert M.pixel_flicker(np.stack(steady), mask) == 0.0
    flick = [base if i % 2 else np.clip(base.astype(int) + 10, 0, 255).astype(np.uint8) for i in range(5)]
    assert M.pixel_flicker(iter(flick), mask) == pytest.approx(10.0)
    outside = [f.copy() for f in steady]
    outside[2][50:, 50:] = 0
    assert M.pixel_flicker(outside, mask) == 0.0
    assert M.flicker_ratio(flick, steady, mask) == pytest.approx(10.25 / 0.25)
    assert M.pixel_flicker([base], mask) is None


# --- seam ------------------------------------------------------------------------------------
def test_seam_score_hard_paste_worse_than_feathered():
    plate = _image("skimage_astronaut.png")
    h, w = plate.shape[:2]
    mask = np.zeros((h, w), np.uint8)
    mask[120:300, 160:320] = 255
    # Pasted content: the same picture, shifted and colour-cast (what a mismatched swap does).
    src = cv2.warpAffine(plate, np.float32([[1, 0, 4], [0, 1, 3]]), (w, h), borderMode=cv2.BORDER_REFLECT)
    src = np.clip(src.astype(np.int16) + np.array([20, -10, 8]), 0, 255).astype(np.uint8)
    hard = np.where(mask[..., None] > 0, src, plate)
    alpha = cv2.GaussianBlur(mask.astype(np.float32) / 255, (0, 0), 8)[..., None]
    soft = (src * alpha + plate * (1 - alpha)).round().astype(np.uint8)

    s_plate, s_hard, s_soft = (M.seam_score(f, mask) for f in (plate, hard, soft))
    assert s_hard > M.QCThresholds().seam_review > s_soft
    assert s_hard > 1.3 * s_soft
    assert s_hard > s_plate
    # A soft alpha mask is thresholded at one half and gives the same ring.
    assert M.seam_score(soft, alpha[..., 0]) == pytest.approx(s_soft, rel=0.05)
    assert M.seam_score(plate, np.zeros((h, w), bool)) is None


# --- expression ------------------------------------------------------------------------------
def test_expression_features_open_mouth_and_error(landmarker):
    closed = _image("skimage_astronaut.png")
    opened = _image("liveportrait_d9.jpg")  # mouth wide open
    _, lc = landmarker(closed)
    _, lo = landmarker(opened)
    fc, fo = M.expression_features(lc), M.expression_features(lo)
    assert fc.shape == (6,) and np.isfinite(fc).all()
    assert fo[0] > 0.3 > fc[0]
    # Scale-free: a face twice as large has the same features.
    big = lc.copy()
    big[:, :2] *= 2
    assert np.allclose(M.expression_features(big), fc, atol=1e-5)
    assert M.expression_error(lc, lc) == 0.0
    assert M.expression_error(lc, lo) > 0.05
    stack = np.stack([lc, lo, np.full_like(lc, np.nan)])
    assert M.expression_features(stack).shape == (3, 6)
    assert np.isnan(M.expression_features(stack)[2]).all()
    assert M.expression_error(stack, stack[[1, 0, 2]]) == pytest.approx(M.expression_error(lc, lo))
    assert M.expression_error(stack[2:], stack[2:]) is None


def test_expression_error_centred_ignores_rest_shape(landmarker):
    _, lc = landmarker(_image("skimage_astronaut.png"))
    rng = np.random.default_rng(0)
    plate = np.repeat(lc[None], 12, axis=0)
    plate[:, 14, 1] += rng.uniform(0, 20, 12).astype(np.float32)  # lower lip moves
    wider = plate.copy()
    wider[:, 291, 0] += 8  # another person's wider mouth, moving the same way
    assert M.expression_error(plate, wider, centre=False) > 0.01
    assert M.expression_error(plate, wider) == pytest.approx(0.0, abs=1e-6)
    frozen = np.repeat(lc[None], 12, axis=0)  # output ignores the plate's expression
    assert M.expression_error(plate, frozen) > 0.01


# --- verdict ---------------------------------------------------------------------------------
_GOOD = {
    "identity_transfer_rate": 0.97,
    "identity_distance_source": 0.41,
    "identity_distance_plate": 0.82,
    "pose_error_deg": 1.2,
    "expression_error": 0.012,
    "jitter_ratio": 1.1,
    "flicker_ratio": 1.2,
    "seam_score": 1.05,
    "background_psnr_db": 48.0,
    "face_found_ratio": 1.0,
}


def test_decide_verdict_pass():
    assert set(_GOOD) == set(M.METRIC_KEYS)
    assert M.decide_verdict(_GOOD, M.QCThresholds()) == (Verdict.passed, ())


def test_decide_verdict_fail_names_metric_value_and_bound():
    verdict, reasons = M.decide_verdict({**_GOOD, "identity_transfer_rate": 0.42}, M.QCThresholds())
    assert verdict is Verdict.failed
    assert reasons == ("identity transfer 0.42 < 0.50 (fail)",)
    verdict, reasons = M.decide_verdict(
        {**_GOOD, "background_psnr_db": 27.345, "pose_error_deg": 9.0}, M.QCThresholds()
    )
    assert verdict is Verdict.failed
    assert reasons == ("background PSNR 27.3 dB < 30.0 dB (fail)", "pose error 9.0 deg > 5.0 deg (review)")


def test_decide_verdict_review_reasons():
    t = M.QCThresholds()
    cases = {
        "identity_transfer_rate": (0.7, "identity transfer 0.70 < 0.90 (review)"),
        "background_psnr_db": (35.0, "background PSNR 35.0 dB < 40.0 dB (review)"),
        "pose_error_deg": (6.5, "pose error 6.5 deg > 5.0 deg (review)"),
        "face_found_ratio": (0.5, "face found ratio 0.50 < 0.80 (review)"),
        "jitter_ratio": (2.0, "landmark jitter ratio 2.00 > 1.50 (review)"),
        "seam_score": (2.5, "seam score 2.50 > 1.50 (review)"),
        "flicker_ratio": (3.0, "flicker ratio 3.00 > 2.00 (review)"),
        "expression_error": (0.05, "expression error 0.050 > 0.030 (review)"),
        "identity_distance_source": (0.9, None),  # reported, not judged
    }
    for key, (value, reason) in cases.items():
        verdict, reasons = M.decide_verdict({**_GOOD, key: value}, t)
        if reason is None:
            assert verdict is Verdict.passed
        else:
            assert (verdict, reasons) == (Verdict.review, (reason,)), key


def test_decide_verdict_unmeasured_metrics():
    # Gate metrics that are missing ask for review; optional ones are skipped.
    verdict, reasons = M.decide_verdict({"identity_transfer_rate": None, "background_psnr_db": float("nan")})
    assert verdict is Verdict.review
    assert reasons == ("identity transfer not measured (review)", "background PSNR not measured (review)")
    verdict, reasons = M.decide_verdict({**_GOOD, "seam_score": None, "pose_error_deg": None})
    assert verdict is Verdict.passed
    # Stricter thresholds are honoured.
    verdict, reasons = M.decide_verdict(_GOOD, M.QCThresholds(identity_pass=0.99))
    assert verdict is Verdict.review and reasons == ("identity transfer 0.97 < 0.99 (review)",)


def test_flicker_ratio_ignores_motion_that_the_plate_lacks_but_catches_pumping():
    # A head swap's new hair moving over what was a static backdrop in the plate: the plain
    # frame difference calls that flicker, the motion-compensated measure does not.
    rng = np.random.default_rng(5)
    backdrop = np.full((120, 160, 3), (40, 160, 60), np.uint8)  # static green screen
    texture = cv2.GaussianBlur(rng.integers(0, 256, (60, 60, 3), dtype=np.uint8), (0, 0), 1.2)
    plate, moving, pumping = [], [], []
    for i in range(12):
        plate.append(backdrop.copy())
        f = backdrop.copy()
        x = 40 + 2 * i  # the "hair" slides 2 px a frame
        f[30:90, x:x + 60] = texture
        moving.append(f)
        g = f.copy()
        g[30:90, x:x + 60] = np.clip(texture.astype(int) + (12 if i % 2 else -12), 0, 255).astype(np.uint8)
        pumping.append(g)
    mask = np.zeros((120, 160), bool)
    mask[20:100, 30:130] = True
    plain = (M.pixel_flicker(moving, mask) + 0.25) / (M.pixel_flicker(plate, mask) + 0.25)
    assert plain > 10  # the old measure: a "flicker" of the static plate's backdrop
    assert M.flicker_ratio(moving, plate, mask) < M.QCThresholds().flicker_ratio_review
    assert M.flicker_ratio(pumping, plate, mask) > 3 * M.QCThresholds().flicker_ratio_review
    assert M.temporal_noise(plate, mask) == 0.0 and M.temporal_noise(plate[:1], mask) is None


# --- the shot-level measure (recast.models.qc) -------------------------------------------------
_MEASURE_N = 24
_ALTERED = range(10, 16)  # frames whose background the "output" changes


@pytest.fixture(scope="module")
def measured_plate(media_dir):
    """24 frames of a real talking-head plate with the face's landmarks and box per frame."""
    from recast.media import read_all_frames
    from recast.models.face import FaceAnalyzer

    frames = read_all_frames(VIDEOS / "liveportrait_d0.mp4", role="plate")[:_MEASURE_N]
    with FaceAnalyzer(static_images=False, max_faces=1) as fa:
        faces = [fa.detect(f)[0] for f in frames]
    lms = np.stack([f.landmarks for f in faces]).astype(np.float32)
    boxes = np.array([f.box for f in faces], float)
    return frames, lms, boxes


def _measure(frames: np.ndarray, out: np.ndarray, lms: np.ndarray, boxes: np.ndarray):
    """QC of ``out`` against its plate ``frames``, the plate's own face (frame 0) as the source,
    the output's face where the plate's is (as ``recast qc --plate --output`` finds it)."""
    from recast.models.qc import DlibIdentity, QCInputs, measure
    from recast.models.qc_frames import observe_chunk

    n, h, w = frames.shape[:3]
    person = np.zeros((n, h, w), bool)  # the person: the face box grown by half its size
    for i, (x0, y0, x1, y1) in enumerate(boxes.astype(int)):
        gx, gy = (x1 - x0) // 2, (y1 - y0) // 2
        person[i, max(0, y0 - gy):y1 + gy, max(0, x0 - gx):x1 + gx] = True
    change = np.zeros_like(person)  # what the "swap" changed: nothing it owns up to
    obs = observe_chunk(start=0, plate_frames=iter(frames), out_frames=iter(out), exclude=person, change=change, plate_boxes=boxes,
                        face_found=np.ones(n, bool), plate_landmarks=lms, out_landmarks=lms)
    inputs = QCInputs(decode=lambda wanted: {f: (frames[f] if need else None, out[f]) for f, need in wanted.items()},
                      observations=[obs], total=n, rate=25.0, size=(h, w), plate_landmarks=lms, face_found=np.ones(n, bool),
                      source_rgb=frames[0], source_landmarks=lms[0], source_box=tuple(int(v) for v in boxes[0]), mode="face")
    return measure(inputs, DlibIdentity(), M.QCThresholds(), samples_per_second=1.0)


def test_measure_an_unchanged_plate_is_the_same_person_and_fails_identity_transfer(measured_plate):
    from recast.models.qc import DlibIdentity

    frames, lms, boxes = measured_plate
    metrics, per_frame, reasons, verdict = _measure(frames, frames.copy(), lms, boxes)
    # the output is the plate: its face is the plate's person and the "source" (the same person)
    assert metrics["identity_samples"] >= 3 and metrics["identity_measured_samples"] == metrics["identity_samples"]
    assert metrics["identity_distance_plate"] < DlibIdentity.match_distance
    assert metrics["identity_distance_source"] < DlibIdentity.match_distance
    # ... so no identity was transferred, and QC must say so
    assert metrics["identity_transfer_rate"] == 0.0 and verdict is Verdict.failed
    ident = next(r for r in reasons if r["metric"] == "identity_transfer_rate")
    assert ident["outcome"] == "fail" and ident["frames"] == [int(f) for f in per_frame["sampled"]]
    # nothing else differs: background at the cap, no pose or expression error
    assert metrics["background_psnr_db"] == pytest.approx(100.0) and metrics["pose_error_deg"] == pytest.approx(0.0, abs=1e-6)
    assert not any(r["metric"] == "background_psnr_db" for r in reasons)


def test_measure_a_background_change_outside_the_face_lowers_background_psnr_on_those_frames(measured_plate):
    frames, lms, boxes = measured_plate
    out = frames.copy()
    h, w = frames.shape[1:3]
    x1 = int(boxes[:, 0].min()) // 2  # a strip at the left edge, far from the face
    for f in _ALTERED:
        out[f, : h // 3, :x1] = np.clip(out[f, : h // 3, :x1].astype(int) + 60, 0, 255).astype(np.uint8)
    baseline, _, _, _ = _measure(frames, frames.copy(), lms, boxes)
    metrics, per_frame, reasons, verdict = _measure(frames, out, lms, boxes)
    psnr = per_frame["background_psnr"]
    assert np.allclose(np.delete(psnr, list(_ALTERED)), 100.0)  # untouched frames keep the cap
    assert (psnr[list(_ALTERED)] < M.QCThresholds().background_psnr_pass).all()
    assert metrics["background_psnr_db"] < baseline["background_psnr_db"]
    assert metrics["background_psnr_min_db"] < M.QCThresholds().background_psnr_pass
    # the face was not touched: identity is measured exactly as on the unchanged plate
    assert metrics["identity_distance_plate"] == pytest.approx(baseline["identity_distance_plate"])

    # the same change on every frame brings the shot's background below its bound: a reason
    # names it with the worst frames first
    for f in range(len(out)):
        out[f, : h // 3, :x1] = np.clip(frames[f, : h // 3, :x1].astype(int) + (90 if f in _ALTERED else 60), 0, 255).astype(np.uint8)
    metrics, per_frame, reasons, verdict = _measure(frames, out, lms, boxes)
    assert metrics["background_psnr_db"] < M.QCThresholds().background_psnr_pass
    bg = next(r for r in reasons if r["metric"] == "background_psnr_db")
    assert bg["value"] == metrics["background_psnr_db"] and set(bg["frames"][: len(_ALTERED)]) == set(_ALTERED)
