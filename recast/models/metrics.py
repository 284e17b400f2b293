"""Quality metrics of a swap and the QC verdict (DESIGN.md, "Quality metrics").

Everything here is pure numpy/OpenCV on arrays the caller already has: MediaPipe landmarks
``(478, 3)`` float32 in pixels (NaN where no face), RGB uint8 frames and masks. Per-frame and
per-shot functions return plain floats (or None where nothing could be measured), so a QC stage
can put them straight into ``QCReport.metrics``.

:data:`METRIC_KEYS` are the metrics measured here: ``identity_transfer_rate``,
``identity_distance_source``, ``identity_distance_plate``, ``pose_error_deg``,
``expression_error``, ``jitter_ratio``, ``flicker_ratio``, ``seam_score``,
``background_psnr_db``, ``face_found_ratio``. Which metrics are judged, against which
:class:`QCThresholds` field, is the rule table's (:mod:`recast.models.qc_rules`), which also
judges the defect measures of :mod:`recast.models.qc_defects`, ``motion_ratio`` and
``wrong_person``; :func:`decide_verdict` is that table without frames.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from recast.contracts import Verdict

__all__ = [
    "METRIC_KEYS",
    "PSNR_CAP_DB",
    "QCThresholds",
    "background_psnr",
    "decide_verdict",
    "EXPRESSION_CENTRE_MIN_FRAMES",
    "EXPRESSION_FEATURE_NAMES",
    "expression_error",
    "expression_features",
    "flicker_ratio",
    "TemporalNoiseMeter",
    "temporal_noise",
    "temporal_noise_pairs",
    "head_pose",
    "head_pose_array",
    "head_poses",
    "inter_ocular_distance",
    "jitter_ratio",
    "landmark_jitter",
    "pixel_flicker",
    "pose_error",
    "psnr",
    "seam_score",
]

METRIC_KEYS = (
    "identity_transfer_rate",
    "identity_distance_source",
    "identity_distance_plate",
    "pose_error_deg",
    "expression_error",
    "jitter_ratio",
    "flicker_ratio",
    "seam_score",
    "background_psnr_db",
    "face_found_ratio",
)

#: PSNR of identical images is infinite; JSON has no infinity, so it is reported as this value.
#: 100 dB is far above anything a lossy step produces (8-bit rounding alone gives ~59 dB).
PSNR_CAP_DB = 100.0

# MediaPipe face-mesh indices (subject's right = image left in a frontal view).
_R_EYE_OUT, _R_EYE_IN, _L_EYE_IN, _L_EYE_OUT = 33, 133, 362, 263
_MOUTH_R, _MOUTH_L, _LIP_UP_IN, _LIP_LO_IN = 61, 291, 13, 14
_R_LID_UP, _R_LID_LO, _L_LID_UP, _L_LID_LO = 159, 145, 386, 374
_R_BROW, _L_BROW = 105, 334  # upper brow, above the pupil

# 3D template for head pose: these points of MediaPipe's canonical face model
# (canonical_face_model.obj, centimetres, x to the image right, y up, z towards the camera).
# Only points that expression does not move: eye corners, nose, forehead. Chin and mouth corners
# were tried and left out: on the talking-head test clips they tied pitch to mouth opening
# (correlation 0.6-0.8 against 0.2-0.4 without them).
_POSE_TEMPLATE = {
    1: (0.000000, -1.126865, 7.475604),  # nose tip
    2: (0.000000, -2.089024, 6.058267),  # under the nose
    4: (0.000000, -0.463170, 7.586580),  # nose, above the tip
    6: (0.000000, 2.473255, 5.788627),  # nose bridge
    168: (0.000000, 3.271027, 5.236015),  # between the eyes
    10: (0.000000, 8.261778, 4.481535),  # forehead top (hairline)
    33: (-4.445859, 2.663991, 3.173422),  # right eye, outer corner
    133: (-1.856432, 2.585245, 3.757904),  # right eye, inner corner
    362: (1.856432, 2.585245, 3.757904),  # left eye, inner corner
    263: (4.445859, 2.663991, 3.173422),  # left eye, outer corner
}
_POSE_IDX = np.array(list(_POSE_TEMPLATE), dtype=np.int64)
# To OpenCV camera axes (x right, y down, z away from the camera), so a face looking into the
# lens has rotation ~identity.
_POSE_MODEL = np.array(list(_POSE_TEMPLATE.values()), dtype=np.float64) * np.array([1.0, -1.0, -1.0])


def _lm_array(landmarks: np.ndarray) -> np.ndarray:
    a = np.asarray(landmarks, dtype=np.float64)
    if a.ndim < 2 or a.shape[-2] < 468 or a.shape[-1] < 2:
        raise ValueError(f"landmarks must be (..., 478, 2|3), got shape {a.shape}")
    return a


# --- head pose -------------------------------------------------------------------------------
def head_pose(landmarks: np.ndarray, image_size: tuple[int, int]) -> tuple[float, float, float] | None:
    """Head yaw, pitch and roll in degrees from one face's MediaPipe landmarks.

    ``landmarks`` is ``(478, 3)`` (or ``(478, 2)``) in pixels of an image of ``image_size``
    ``(h, w)``. The pose comes from ``cv2.solvePnP`` of a 10-point rigid template taken from
    MediaPipe's canonical face model, with a pinhole camera of focal length = image width and the
    principal point at the image centre.

    Pitch reads 0 to -12 degrees on the frontal test portraits (a template-versus-face offset
    plus the usual chin-down pose); :func:`pose_error` compares plate with output of the same
    head, where such an offset cancels.

    Convention (angles in degrees, 0,0,0 = looking straight into the lens):

    - yaw > 0: the nose turns towards the image's right (the subject turns to their left);
    - pitch > 0: the nose turns up (looking up);
    - roll > 0: the line from the image-left eye to the image-right eye slopes down to the
      right in the image, i.e. the head tilts clockwise as seen in the image.

    The rotation is taken relative to the camera ray through the face, not the optical axis: a
    face moved across the frame but seen the same way keeps the same angles (that is what the
    viewer perceives as pose, and what plate and output must agree on).

    Returns None when a template landmark is NaN or the fit fails.
    """
    lm = _lm_array(landmarks)
    pts = lm[_POSE_IDX, :2]
    if not np.isfinite(pts).all():
        return None
    h, w = int(image_size[0]), int(image_size[1])
    f = float(w)
    cam = np.array([[f, 0.0, w / 2.0], [0.0, f, h / 2.0], [0.0, 0.0, 1.0]])
    ok, rvec, tvec = cv2.solvePnP(_POSE_MODEL, pts.reshape(-1, 1, 2), cam, None, flags=cv2.SOLVEPNP_EPNP)
    if not ok:
        return None
    # EPnP gives a closed-form start; a few LM iterations polish it to the reprojection optimum.
    rvec, tvec = cv2.solvePnPRefineLM(_POSE_MODEL, pts.reshape(-1, 1, 2), cam, None, rvec, tvec)
    if not (np.isfinite(rvec).all() and np.isfinite(tvec).all()) or float(tvec[2, 0]) <= 0:
        return None
    rot, _ = cv2.Rodrigues(rvec)
    rot = _ray_rotation(tvec.ravel()).T @ rot
    return _euler_deg(rot)


def _ray_rotation(t: np.ndarray) -> np.ndarray:
    """Rotation taking the optical axis (0, 0, 1) onto the ray towards ``t``."""
    z = np.array([0.0, 0.0, 1.0])
    r = t / np.linalg.norm(t)
    axis = np.cross(z, r)
    s = np.linalg.norm(axis)
    if s < 1e-12:
        return np.eye(3)
    angle = math.atan2(s, float(np.dot(z, r)))
    rot, _ = cv2.Rodrigues(axis / s * angle)
    return rot


def _euler_deg(rot: np.ndarray) -> tuple[float, float, float]:
    # The face looks along -z of its model frame (towards the camera); where that direction and
    # the eye line (+x) end up in camera axes defines the three angles.
    nose = rot @ np.array([0.0, 0.0, -1.0])
    eyes = rot @ np.array([1.0, 0.0, 0.0])
    yaw = math.degrees(math.atan2(nose[0], -nose[2]))
    pitch = math.degrees(math.atan2(-nose[1], math.hypot(nose[0], nose[2])))
    roll = math.degrees(math.atan2(eyes[1], eyes[0]))
    return yaw, pitch, roll


def head_poses(
    landmarks: np.ndarray, image_size: tuple[int, int]
) -> list[tuple[float, float, float] | None]:
    """:func:`head_pose` of each frame of ``(F, 478, 3)`` landmarks (None where no face)."""
    arr = head_pose_array(landmarks, image_size)
    return [None if not np.isfinite(row).all() else (float(row[0]), float(row[1]), float(row[2])) for row in arr]


def head_pose_array(landmarks: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """:func:`head_pose` of every frame of ``(F, 468|478, 2|3)`` landmarks as an ``(F, 3)``
    array of yaw, pitch, roll (NaN rows where no face or no fit).

    The same fit as :func:`head_pose` (EPnP, then Levenberg-Marquardt), with the rotations to
    angles done for all frames at once: QC poses every frame of plate and output, and the
    per-frame Python around the two OpenCV calls cost twice the calls themselves.
    """
    lm = _lm_array(landmarks)
    lm = lm.reshape(-1, *lm.shape[-2:])
    out = np.full((len(lm), 3), np.nan)
    pts_all = lm[:, _POSE_IDX, :2]
    valid = np.flatnonzero(np.isfinite(pts_all).all(axis=(1, 2)))
    if not valid.size:
        return out
    h, w = int(image_size[0]), int(image_size[1])
    cam = np.array([[float(w), 0.0, w / 2.0], [0.0, float(w), h / 2.0], [0.0, 0.0, 1.0]])
    rvecs = np.full((len(lm), 3), np.nan)
    tvecs = np.full((len(lm), 3), np.nan)
    for i in valid:
        pts = np.ascontiguousarray(pts_all[i]).reshape(-1, 1, 2)
        ok, rvec, tvec = cv2.solvePnP(_POSE_MODEL, pts, cam, None, flags=cv2.SOLVEPNP_EPNP)
        if not ok:
            continue
        rvec, tvec = cv2.solvePnPRefineLM(_POSE_MODEL, pts, cam, None, rvec, tvec)
        rvecs[i], tvecs[i] = rvec.ravel(), tvec.ravel()
    good = np.isfinite(rvecs).all(axis=1) & np.isfinite(tvecs).all(axis=1)
    good[good] = tvecs[good, 2] > 0
    idx = np.flatnonzero(good)
    if not idx.size:
        return out
    rot = _rodrigues(rvecs[idx])
    # rotation taking the optical axis onto the ray towards the face (see _ray_rotation)
    r = tvecs[idx] / np.linalg.norm(tvecs[idx], axis=1, keepdims=True)
    axis = np.stack([-r[:, 1], r[:, 0], np.zeros(len(r))], axis=1)  # z x r
    s = np.linalg.norm(axis, axis=1)
    angle = np.arctan2(s, r[:, 2])
    with np.errstate(invalid="ignore", divide="ignore"):
        ray = _rodrigues(np.where(s[:, None] < 1e-12, 0.0, axis / s[:, None] * angle[:, None]))
    rot = np.transpose(ray, (0, 2, 1)) @ rot
    nose = -rot[:, :, 2]
    eyes = rot[:, :, 0]
    out[idx, 0] = np.degrees(np.arctan2(nose[:, 0], -nose[:, 2]))
    out[idx, 1] = np.degrees(np.arctan2(-nose[:, 1], np.hypot(nose[:, 0], nose[:, 2])))
    out[idx, 2] = np.degrees(np.arctan2(eyes[:, 1], eyes[:, 0]))
    return out


def _rodrigues(rvecs: np.ndarray) -> np.ndarray:
    """Rotation matrices ``(N, 3, 3)`` of rotation vectors ``(N, 3)`` (cv2.Rodrigues, batched)."""
    theta = np.linalg.norm(rvecs, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        k = np.where(theta[:, None] > 1e-12, rvecs / theta[:, None], 0.0)
    kx, ky, kz = k[:, 0], k[:, 1], k[:, 2]
    zero = np.zeros_like(kx)
    K = np.stack([np.stack([zero, -kz, ky], 1), np.stack([kz, zero, -kx], 1), np.stack([-ky, kx, zero], 1)], 1)
    sin, cos = np.sin(theta)[:, None, None], np.cos(theta)[:, None, None]
    return np.eye(3)[None] + sin * K + (1.0 - cos) * (K @ K)


def _angle_diff(a: float, b: float) -> float:
    return abs((a - b + 180.0) % 360.0 - 180.0)


def pose_error(
    plate_poses: Sequence[tuple[float, float, float] | None],
    output_poses: Sequence[tuple[float, float, float] | None],
) -> float | None:
    """Mean absolute pose difference in degrees, averaged over yaw, pitch and roll and over the
    frames where both poses exist (None when there is no such frame)."""
    if len(plate_poses) != len(output_poses):
        raise ValueError(f"pose lists differ in length: {len(plate_poses)} != {len(output_poses)}")
    diffs = [
        sum(_angle_diff(a, b) for a, b in zip(p, o)) / 3.0
        for p, o in zip(plate_poses, output_poses)
        if p is not None and o is not None and np.isfinite(p).all() and np.isfinite(o).all()
    ]
    return float(np.mean(diffs)) if diffs else None


# --- PSNR ------------------------------------------------------------------------------------
def _peak(dtype: np.dtype) -> float:
    if np.issubdtype(dtype, np.integer):
        return float(np.iinfo(dtype).max)
    return 1.0


def psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float | None:
    """Peak signal-to-noise ratio of two images (or stacks of frames) in dB.

    ``a`` and ``b``: images ``(H, W)`` or ``(H, W, C)``, or stacks ``(F, H, W, C)``. The peak is
    the dtype's maximum for integer images (255 for uint8) and 1.0 for floats. ``mask`` (bool, or
    numbers where > 0 counts; ``(H, W)``, ``(F, H, W)`` for a stack, or the full shape) selects
    the pixels that count; MSE is pooled over all of them. Identical inputs give
    :data:`PSNR_CAP_DB` (100 dB) instead of infinity, and any larger value is capped to it.
    Returns None when the mask selects no pixel.
    """
    a = np.asarray(a)
    b = np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"psnr of different shapes {a.shape} and {b.shape}")
    m = None if mask is None else np.asarray(mask) > 0
    if m is not None and not (m.shape == a.shape or m.shape == a.shape[: m.ndim]):
        raise ValueError(f"mask shape {m.shape} does not fit image shape {a.shape}")
    total, n = _squared_error(a, b, m)
    if n == 0:
        return None
    mse = total / n
    if not np.isfinite(mse):
        return None
    if mse == 0.0:
        return PSNR_CAP_DB
    return min(PSNR_CAP_DB, 10.0 * math.log10(_peak(a.dtype) ** 2 / mse))


_CV_DTYPES = (np.uint8, np.uint16, np.int16, np.float32, np.float64)


def _squared_error(a: np.ndarray, b: np.ndarray, m: np.ndarray | None) -> tuple[float, int]:
    """Sum of squared differences over the counted values, and how many values were counted."""
    per_px = a.shape[2] if a.ndim == 3 else 1
    if a.ndim == 4 and (m is None or m.ndim in (2, 3)) and a.shape[3] <= 4:
        total, n = 0.0, 0
        for i in range(a.shape[0]):
            mi = None if m is None else (m[i] if m.ndim == 3 else m)
            t, c = _squared_error(a[i], b[i], mi)
            total, n = total + t, n + c
        return total, n
    if a.ndim in (2, 3) and per_px <= 4 and a.dtype.type in _CV_DTYPES and (m is None or m.ndim == 2):
        # OpenCV sums the squares under a 2D mask in one pass without temporaries (~10x numpy).
        ca, cb = np.ascontiguousarray(a), np.ascontiguousarray(b)
        if m is None:
            return float(cv2.norm(ca, cb, cv2.NORM_L2SQR)), a.size
        m8 = m.astype(np.uint8)
        return float(cv2.norm(ca, cb, cv2.NORM_L2SQR, mask=m8)), int(cv2.countNonZero(m8)) * per_px
    diff = a.astype(np.float64) - b.astype(np.float64)
    sq = diff * diff
    if m is None:
        return float(sq.sum()), sq.size
    if m.shape != sq.shape:
        m = np.broadcast_to(m.reshape(m.shape + (1,) * (sq.ndim - m.ndim)), sq.shape)
    return float(sq[m].sum()), int(m.sum())


def _dilate(mask: np.ndarray, px: int) -> np.ndarray:
    m = np.asarray(mask) > 0
    if px <= 0 or not m.any():
        return m
    # Dilate only the mask's bounding box grown by px: a face in a 4K frame costs what the face
    # costs (a large elliptic kernel over the whole frame is ~50 ms at 1080p).
    ys, xs = np.nonzero(m.any(axis=1))[0], np.nonzero(m.any(axis=0))[0]
    h, w = m.shape
    y0, y1 = max(int(ys[0]) - px, 0), min(int(ys[-1]) + px + 1, h)
    x0, x1 = max(int(xs[0]) - px, 0), min(int(xs[-1]) + px + 1, w)
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * px + 1, 2 * px + 1))
    out = np.zeros_like(m)
    out[y0:y1, x0:x1] = cv2.dilate(m[y0:y1, x0:x1].astype(np.uint8), k) > 0
    return out


def background_psnr(
    plate: np.ndarray, output: np.ndarray, exclude_mask: np.ndarray, dilate_px: int
) -> float | None:
    """PSNR (dB) between plate and output over the pixels outside ``exclude_mask`` grown by
    ``dilate_px`` pixels: the background a swap must leave untouched.

    Works on one frame ``(H, W, 3)`` with an ``(H, W)`` mask, or on a stack ``(F, H, W, 3)``
    with ``(F, H, W)`` or ``(H, W)`` masks (MSE pooled over the stack). The exclude mask should
    be the union of the plate's and the output's person/head masks. None when nothing is left.
    """
    plate = np.asarray(plate)
    ex = np.asarray(exclude_mask)
    if plate.ndim == 4 and ex.ndim == 3:
        keep = np.stack([~_dilate(m, dilate_px) for m in ex])
    else:
        keep = ~_dilate(ex, dilate_px)
    return psnr(plate, output, keep)


# --- temporal stability ----------------------------------------------------------------------
def inter_ocular_distance(landmarks: np.ndarray) -> np.ndarray | float:
    """Distance in pixels between the outer eye corners (33, 263), the scale unit of the
    landmark metrics; per frame for ``(F, 478, 3)`` input, NaN where no face."""
    lm = _lm_array(landmarks)
    d = np.linalg.norm(lm[..., _R_EYE_OUT, :2] - lm[..., _L_EYE_OUT, :2], axis=-1)
    return float(d) if np.ndim(d) == 0 else d


def landmark_jitter(landmarks: np.ndarray) -> float | None:
    """Frame-to-frame landmark motion, in units of the inter-ocular distance.

    For each pair of consecutive frames that both have a face: the mean 2D (x, y) displacement of
    all landmarks divided by the pair's mean inter-ocular distance; the result is the mean over
    pairs (None when there is no such pair). The MediaPipe z is left out: it is a relative depth
    estimate, noisier than x and y and not visible in the image.

    Real head motion counts too, so the number is only meaningful next to the plate's:
    :func:`jitter_ratio` near 1 means the output moves no more than the plate; shake added by the
    swap pushes it up. A static landmark set gives 0.
    """
    lm = _lm_array(landmarks)
    if lm.ndim != 3:
        raise ValueError(f"landmark_jitter needs (F, 478, 3) landmarks, got shape {lm.shape}")
    xy = lm[:, :, :2]
    valid = np.isfinite(xy).all(axis=(1, 2))
    pair = valid[1:] & valid[:-1]
    if not pair.any():
        return None
    iod = np.asarray(inter_ocular_distance(lm), dtype=np.float64)
    disp = np.linalg.norm(xy[1:] - xy[:-1], axis=2).mean(axis=1)
    scale = (iod[1:] + iod[:-1]) / 2.0
    pair &= np.isfinite(scale) & (scale > 1e-6)
    if not pair.any():
        return None
    return float(np.mean(disp[pair] / scale[pair]))


# Floor under both jitter values: ~0.1% of the eye distance, below MediaPipe's own noise on a
# still face, so a perfectly static plate does not turn tiny output noise into a huge ratio.
_JITTER_FLOOR = 1e-3
_FLICKER_FLOOR = 0.25  # grey levels (of 255): below 8-bit rounding noise


def jitter_ratio(output_lms: np.ndarray, plate_lms: np.ndarray) -> float | None:
    """:func:`landmark_jitter` of the output divided by that of the plate (1 = as steady as the
    plate; > 1 = the swap adds shake). None when either cannot be measured."""
    jo, jp = landmark_jitter(output_lms), landmark_jitter(plate_lms)
    if jo is None or jp is None:
        return None
    return (jo + _JITTER_FLOOR) / (jp + _JITTER_FLOOR)


def pixel_flicker(frames: np.ndarray | Iterable[np.ndarray], mask: np.ndarray) -> float | None:
    """Mean absolute frame-to-frame difference (grey levels, averaged over channels) inside a mask.

    ``frames`` is an ``(F, H, W, C)`` array or any iterable of ``(H, W, C)`` frames (read once,
    so a decoder generator streams a whole shot without holding it in memory). ``mask`` is one
    ``(H, W)`` mask for all frames, or ``(F, H, W)`` per frame; for a pair of frames the pixels in
    both frames' masks count. None with fewer than two frames or an empty mask.
    """
    m_all = np.asarray(mask) > 0
    per_frame = m_all.ndim == 3
    if not m_all.any():
        return None
    # Only pixels inside the mask count: crop every frame to its bounding box before converting.
    any_m = m_all.any(axis=0) if per_frame else m_all
    ys, xs = np.nonzero(any_m)
    y0, y1, x0, x1 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
    m_all = m_all[..., y0:y1, x0:x1]
    total = 0.0
    count = 0
    prev = prev_m = None
    for i, frame in enumerate(frames):
        cur = np.asarray(frame)[y0:y1, x0:x1].astype(np.float32)
        cur_m = m_all[i] if per_frame else m_all
        if prev is not None:
            m = cur_m & prev_m
            n = int(m.sum())
            if n:
                d = np.abs(cur - prev)
                d = d.mean(axis=2) if d.ndim == 3 else d
                total += float(d[m].sum())
                count += n
        prev, prev_m = cur, cur_m
    return total / count if count else None


class TemporalNoiseMeter:
    """Streaming form of :func:`temporal_noise_pairs`: feed frames one at a time with
    :meth:`add` (so a caller that decodes a shot once for several metrics need not decode it
    again for this one). ``mask`` is one ``(H, W)`` region for all frames."""

    def __init__(self, mask: np.ndarray, *, search_px: int = 2, block_px: int = 8, max_side: int = 128) -> None:
        m = np.asarray(mask) > 0
        if m.ndim != 2:
            raise ValueError(f"TemporalNoiseMeter needs one (H, W) mask, got shape {m.shape}")
        self.empty = not m.any()
        self._prev: np.ndarray | None = None
        if self.empty:
            return
        ys, xs = np.nonzero(m)
        self._y0, self._y1, self._x0, self._x1 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
        self._scale = min(1.0, max_side / max(self._y1 - self._y0, self._x1 - self._x0))
        self._cw = max(1, round((self._x1 - self._x0) * self._scale))
        self._ch = max(1, round((self._y1 - self._y0) * self._scale))
        # pad to whole blocks; padded pixels are outside the mask and never counted
        self._ph, self._pw = -self._ch % block_px, -self._cw % block_px
        self._block = block_px
        self._r = int(search_px)
        r = self._r
        self._shifts = [(0, 0)] + [(dy, dx) for dy in range(-r, r + 1) for dx in range(-r, r + 1) if (dy, dx) != (0, 0)]
        mc = m[self._y0:self._y1, self._x0:self._x1]
        if self._scale < 1.0:
            mc = cv2.resize(mc.astype(np.uint8), (self._cw, self._ch), interpolation=cv2.INTER_NEAREST) > 0
        self._mask = np.pad(mc, ((0, self._ph), (0, self._pw)))
        self._n = int(self._mask.sum())
        hp, wp = self._mask.shape
        self._mask_blocks = self._mask.astype(np.float32).reshape(hp // block_px, block_px, wp // block_px, block_px)
        self._diffs = np.empty((len(self._shifts), hp, wp), np.float32)
        self._means = np.empty((len(self._shifts), hp // block_px, wp // block_px), np.float32)

    def _prep(self, frame: np.ndarray) -> np.ndarray:
        a = np.asarray(frame)[self._y0:self._y1, self._x0:self._x1].astype(np.float32)
        # downscale first, then the channel mean: both are linear, so the order does not change
        # the result, and the mean then runs on the small image (float32 avoids uint8 rounding)
        if self._scale < 1.0:
            a = cv2.resize(a, (self._cw, self._ch), interpolation=cv2.INTER_AREA)
        if a.ndim == 3:
            a = cv2.transform(a, np.full((1, a.shape[2]), 1.0 / a.shape[2], np.float32)).reshape(a.shape[:2])
        return cv2.copyMakeBorder(a, 0, self._ph, 0, self._pw, cv2.BORDER_REPLICATE)

    def add(self, frame: np.ndarray) -> tuple[float, int] | None:
        """Feed the next frame; returns (sum, count) of its residual against the previous frame
        (None for the first frame, or with an empty mask)."""
        if self.empty:
            return None
        cur = self._prep(frame)
        prev, self._prev = self._prev, cur
        if prev is None:
            return None
        r, b = self._r, self._block
        padded = cv2.copyMakeBorder(prev, r, r, r, r, cv2.BORDER_REPLICATE)
        h, w = cur.shape
        bw, bh = w // b, h // b
        diffs, means = self._diffs, self._means
        for k, (dy, dx) in enumerate(self._shifts):
            cv2.absdiff(cur, padded[r + dy:r + dy + h, r + dx:r + dx + w], dst=diffs[k])
            means[k] = cv2.resize(diffs[k], (bw, bh), interpolation=cv2.INTER_AREA)  # exact block means
        best = np.argmin(means, axis=0)  # the first minimum: no shift (index 0) wins ties
        # the winning shift's difference in every block, counted on the mask's pixels only
        won = np.take_along_axis(diffs.reshape(len(self._shifts), bh, b, bw, b), best[None, :, None, :, None], axis=0)[0]
        return float((won * self._mask_blocks).sum(dtype=np.float64)), self._n


def temporal_noise_pairs(
    frames: np.ndarray | Iterable[np.ndarray],
    mask: np.ndarray,
    *,
    search_px: int = 2,
    block_px: int = 8,
    max_side: int = 128,
) -> list[tuple[float, int]]:
    """Per consecutive frame pair: (sum, count) of the motion-compensated change inside ``mask``.

    Why: the plain frame difference (:func:`pixel_flicker`) counts real motion as flicker. A head
    swap whose new hair moves over what was a static green screen in the plate then scores ~3.5x
    the plate although nothing flickers. Here every ``block_px`` tile of the current frame is
    matched against the previous frame shifted by up to ``search_px`` pixels (the shift with the
    smallest mean absolute difference wins; no shift wins ties, so a static scene is compared in
    place); what is left after that smooth local motion is removed, the mean absolute residual in
    grey levels (mean of the channels), is the frame's *temporal noise*: brightness pumping,
    boiling texture, popping edges. The region's crop is downscaled to ``max_side`` pixels first
    (area average) so the cost does not grow with the resolution (~1-2 ms a pair); that averages
    out single-pixel noise in plate and output alike, so their ratio stays fair, and the search
    range grows with the downscale (±2 px at 128 px is ±8 px on a 512 px face).
    """
    meter = TemporalNoiseMeter(mask, search_px=search_px, block_px=block_px, max_side=max_side)
    if meter.empty:
        return []
    out = []
    for frame in frames:
        got = meter.add(frame)
        if got is not None:
            out.append(got)
    return out


def temporal_noise(frames: np.ndarray | Iterable[np.ndarray], mask: np.ndarray, **kw: int) -> float | None:
    """Mean motion-compensated temporal change inside ``mask`` in grey levels, pooled over all
    frame pairs (see :func:`temporal_noise_pairs`); None with fewer than two frames or an empty
    mask. A static scene gives 0; a uniform +-10 brightness pump gives 10."""
    pairs = temporal_noise_pairs(frames, mask, **kw)
    total = sum(t for t, _ in pairs)
    count = sum(n for _, n in pairs)
    return total / count if count else None


def flicker_ratio(
    output_frames: np.ndarray | Iterable[np.ndarray],
    plate_frames: np.ndarray | Iterable[np.ndarray],
    mask: np.ndarray,
) -> float | None:
    """:func:`temporal_noise` of the output over that of the plate, in the same mask (the swapped
    region). 1 = as steady as the plate there; > 1 = the swap flickers.

    Motion-compensated rather than the plain :func:`pixel_flicker`: real motion that the output
    has and the plate had not in that region (new hair moving over a static background) is not
    flicker. Both values get a floor of a quarter grey level (below 8-bit rounding noise)."""
    fo, fp = temporal_noise(output_frames, mask), temporal_noise(plate_frames, mask)
    if fo is None or fp is None:
        return None
    return (fo + _FLICKER_FLOOR) / (fp + _FLICKER_FLOOR)


# --- seam ------------------------------------------------------------------------------------
def _normal_gradient_at(frame: np.ndarray, ys: np.ndarray, xs: np.ndarray, nx: np.ndarray, ny: np.ndarray) -> np.ndarray:
    """At pixels (ys, xs): the magnitude of the image gradient (Sobel) projected on the normal
    direction (nx, ny) (normalised here), summed over channels (a colour seam with no luma step
    still shows)."""
    f = np.asarray(frame, dtype=np.float32)
    if f.ndim == 2:
        f = f[:, :, None]
    gx = cv2.Sobel(f, cv2.CV_32F, 1, 0, ksize=3).reshape(f.shape)[ys, xs]
    gy = cv2.Sobel(f, cv2.CV_32F, 0, 1, ksize=3).reshape(f.shape)[ys, xs]
    norm = np.sqrt(nx * nx + ny * ny) + 1e-6
    gn = gx * (nx / norm)[:, None] + gy * (ny / norm)[:, None]
    return np.sqrt((gn * gn).sum(axis=1))


def seam_score(frame: np.ndarray, mask: np.ndarray, ring_px: int = 1, band_px: int = 6) -> float | None:
    """How visible the blend boundary of a pasted region is; ~1 = invisible, higher = worse.

    ``mask`` is the blend mask (bool, uint8 0/255 or float alpha 0..1; thresholded at half).
    Definition: the image gradient is projected on the mask's edge normal (from its signed
    distance map), so texture running along the edge counts little and a step across it counts
    fully. The score is the mean of that normal gradient (Sobel, summed over channels) on the
    boundary ring, the pixels within ``ring_px`` of the edge on either side, divided by its mean
    on two bands beside the ring, ``ring_px + 2`` to ``ring_px + 2 + band_px`` pixels inside and
    outside. A hard paste puts a step on the ring that the texture on either side does not have;
    a feathered one spreads it below the texture level.

    Where the mask edge follows a real image edge (jaw line, hairline) the ratio is above 1 on the
    plate too: compare with ``seam_score(plate, mask)`` for an absolute judgement. The bands' mean
    is floored at 1 grey level so flat surroundings do not blow a faint seam up. None when the
    mask is empty or fills the frame.
    """
    m = np.asarray(mask)
    if np.issubdtype(m.dtype, np.floating):
        binary = m > 0.5
    elif m.dtype == np.bool_:
        binary = m
    else:
        binary = m > (127 if m.max(initial=0) > 1 else 0)
    if binary.ndim != 2 or binary.shape != np.asarray(frame).shape[:2]:
        raise ValueError(f"seam mask shape {np.shape(mask)} does not fit frame shape {np.shape(frame)}")
    if not binary.any() or binary.all():
        return None
    # Only a margin around the mask matters: crop, so a face in a 4K frame costs what the face costs.
    margin = ring_px + band_px + 8
    ys, xs = np.nonzero(binary)
    y0, y1 = max(int(ys.min()) - margin, 0), min(int(ys.max()) + margin + 1, binary.shape[0])
    x0, x1 = max(int(xs.min()) - margin, 0), min(int(xs.max()) + margin + 1, binary.shape[1])
    binary = binary[y0:y1, x0:x1]
    frame = np.asarray(frame)[y0:y1, x0:x1]
    b8 = binary.astype(np.uint8)
    d_in = cv2.distanceTransform(b8, cv2.DIST_L2, 5)
    d_out = cv2.distanceTransform(1 - b8, cv2.DIST_L2, 5)
    sd = d_in - d_out  # > 0 inside; the edge lies between +1 and -1
    ring = (binary & (d_in <= ring_px)) | (~binary & (d_out <= ring_px))
    lo, hi = ring_px + 2, ring_px + 2 + band_px
    bands = (binary & (d_in > lo) & (d_in <= hi)) | (~binary & (d_out > lo) & (d_out <= hi))
    if not ring.any() or not bands.any():
        return None
    sds = cv2.GaussianBlur(sd, (0, 0), 1.5)
    nx = cv2.Sobel(sds, cv2.CV_32F, 1, 0, ksize=3)
    ny = cv2.Sobel(sds, cv2.CV_32F, 0, 1, ksize=3)
    # the normal gradient only where it is averaged (ring and bands, a few % of the crop)
    ys, xs = np.nonzero(ring | bands)
    on_ring = ring[ys, xs]
    g = _normal_gradient_at(frame, ys, xs, nx[ys, xs], ny[ys, xs])
    return float(g[on_ring].mean()) / max(float(g[~on_ring].mean()), 1.0)


# --- expression ------------------------------------------------------------------------------
#: Names of the columns of :func:`expression_features`, in order.
EXPRESSION_FEATURE_NAMES = (
    "mouth_open",
    "mouth_width",
    "right_eye_open",
    "left_eye_open",
    "right_brow_height",
    "left_brow_height",
)


def expression_features(landmarks: np.ndarray) -> np.ndarray:
    """Scale-free expression features of a face: ``(6,)`` for ``(478, 3)``, ``(F, 6)`` for frames.

    In units of the inter-ocular distance (outer eye corners), from 2D landmark distances (so
    in-plane rotation and scale drop out): mouth opening (inner lips 13-14), mouth width (corners
    61-291), right and left eye opening (lids 159-145, 386-374), right and left brow height (brow
    105 / 334 above the centre of its eye's corners); names in :data:`EXPRESSION_FEATURE_NAMES`.
    NaN rows where no face.
    """
    lm = _lm_array(landmarks)
    xy = lm[..., :2]

    def dist(i: int, j: int) -> np.ndarray:
        return np.linalg.norm(xy[..., i, :] - xy[..., j, :], axis=-1)

    iod = dist(_R_EYE_OUT, _L_EYE_OUT)
    r_eye_c = (xy[..., _R_EYE_OUT, :] + xy[..., _R_EYE_IN, :]) / 2.0
    l_eye_c = (xy[..., _L_EYE_OUT, :] + xy[..., _L_EYE_IN, :]) / 2.0
    feats = np.stack(
        [
            dist(_LIP_UP_IN, _LIP_LO_IN),
            dist(_MOUTH_R, _MOUTH_L),
            dist(_R_LID_UP, _R_LID_LO),
            dist(_L_LID_UP, _L_LID_LO),
            np.linalg.norm(xy[..., _R_BROW, :] - r_eye_c, axis=-1),
            np.linalg.norm(xy[..., _L_BROW, :] - l_eye_c, axis=-1),
        ],
        axis=-1,
    )
    with np.errstate(invalid="ignore", divide="ignore"):
        out = feats / np.where(iod > 1e-6, iod, np.nan)[..., None]
    return out


#: With at least this many frames, :func:`expression_error` compares expressions relative to
#: each sequence's median face by default.
EXPRESSION_CENTRE_MIN_FRAMES = 8


def expression_error(
    plate_lms: np.ndarray, output_lms: np.ndarray, centre: bool | None = None
) -> float | None:
    """Mean absolute difference of :func:`expression_features` between plate and output, over
    features and over frames where both have a face (inter-ocular units; None if no such frame).

    Accepts one face ``(478, 3)`` or frames ``(F, 478, 3)``.

    ``centre``: subtract each sequence's per-feature median first, so that the error measures
    whether the output *moves* like the plate (mouth opens when the plate's does) and not how the
    two people's faces differ at rest (mouth width alone differs by up to 0.25 between people).
    None (default) centres when at least :data:`EXPRESSION_CENTRE_MIN_FRAMES` frames pair up.
    Measured on the talking-head test clips, centred: the same clip one frame apart 0.006-0.015,
    ten frames apart 0.02-0.045, two unrelated clips 0.03-0.055.
    """
    fp = np.atleast_2d(expression_features(plate_lms))
    fo = np.atleast_2d(expression_features(output_lms))
    if fp.shape != fo.shape:
        raise ValueError(f"landmark stacks differ in shape: {fp.shape} != {fo.shape}")
    ok = np.isfinite(fp).all(axis=1) & np.isfinite(fo).all(axis=1)
    if not ok.any():
        return None
    fp, fo = fp[ok], fo[ok]
    if centre is None:
        centre = len(fp) >= EXPRESSION_CENTRE_MIN_FRAMES
    if centre:
        fp = fp - np.median(fp, axis=0)
        fo = fo - np.median(fo, axis=0)
    return float(np.abs(fp - fo).mean())


# --- verdict ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class QCThresholds:
    """Bounds that turn QC metrics into a verdict (see :mod:`recast.models.qc_rules`, whose rule
    table names which field bounds which metric).

    ``*_pass``/``*_fail`` pairs: at or beyond ``pass`` is fine, between the two asks for review,
    beyond ``fail`` fails. ``*_review`` bounds only ever ask for review.

    ``seam_review`` 1.5: on six test portraits with a face-shaped mask, untouched plates score
    0.64-1.47, a feathered paste 0.81-1.26, a hard paste with a 14-grey-level colour step
    1.21-3.07. ``expression_review`` 0.03 is for the centred :func:`expression_error` (lagging
    expressions and unrelated clips land at 0.03-0.055).

    ``motion_ratio_review`` 0.7: the output's (lightly smoothed) landmark acceleration over the
    plate's, below which the plate's own motion was smoothed away. Issue 14 measured 0.64-0.87 on
    outputs that visibly lag; recast's own classic face swap of the 40-frame test plate reads
    0.77 in the swap's QC and 0.82 through ``recast qc --plate --output``, so 0.8 would send it to
    review (a decision for whoever freezes the bounds).

    The defect review bounds (``foreign_pieces_review`` ... ``sharpness_review``) are per frame,
    in the units of :mod:`recast.models.qc_defects`, and are the values
    ``benchmarks/qc_detectors.py`` proposed (:data:`recast.models.qc_defects.SUGGESTED_THRESHOLDS`)
    applied to the worst sampled frame. ``foreign_pieces_fail`` 10 (% of the head area) is the
    gross piece, judged on the value at least two sampled frames reach (a one-frame glitch asks
    for review); ``wrong_person_fail`` 0: any segment whose person is not the chosen one fails.
    """

    identity_pass: float = 0.9
    identity_fail: float = 0.5
    background_psnr_pass: float = 40.0
    background_psnr_fail: float = 30.0
    pose_error_review: float = 5.0
    face_found_review: float = 0.8
    jitter_ratio_review: float = 1.5
    flicker_ratio_review: float = 2.0
    seam_review: float = 1.5
    expression_review: float = 0.03
    motion_ratio_review: float = 0.7
    foreign_pieces_review: float = 0.3
    foreign_pieces_fail: float = 10.0
    leftover_plate_head_review: float = 0.6
    fill_artefacts_review: float = 0.3
    guessed_fill_review: float = 15.0
    inner_edges_review: float = 0.03
    colour_blotches_review: float = 1.0
    hair_colour_de_review: float = 16.0
    sharpness_review: float = 0.9
    wrong_person_fail: float = 0.0


def decide_verdict(
    metrics: dict[str, float | int | None], thresholds: QCThresholds = QCThresholds()
) -> tuple[Verdict, tuple[str, ...]]:
    """The QC verdict of a shot and the reasons for it, as one line each: the rule table of
    :mod:`recast.models.qc_rules` (:func:`~recast.models.qc_rules.judge`) without frames.

    - fail: ``identity_transfer_rate < identity_fail`` or ``background_psnr_db <
      background_psnr_fail`` (or a defect beyond its fail bound);
    - review: identity or background between their pass and fail bounds, or not measured (None
      or missing: QC cannot vouch for them); any other judged metric beyond its review bound
      (these are skipped when None);
    - pass otherwise, with no reasons.

    Reasons name the metric, its value, the bound and the outcome, e.g.
    ``"identity transfer 0.42 < 0.50 (fail)"``; fail reasons come first.
    """
    from recast.models.qc_rules import judge

    verdict, records = judge(metrics, thresholds)
    return verdict, tuple(r["text"] for r in records)
