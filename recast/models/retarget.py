"""Expression-aware landmark retargeting on the 478-point MediaPipe face mesh (SwapAnyHead style).

The target landmarks of the new head at plate frame ``t`` are built in a *face-aligned frame*
and then placed into the plate's pose at ``t``::

    target_t = place_t( neutral(source) + s * (plate_t - neutral(plate)) + edits_t )

* ``neutral(source)`` — :func:`neutralize_expression`: the source photo's own smile, open mouth,
  squint or raised brows are removed, so that they do not stay on the result.
* ``plate_t - neutral(plate)`` — :func:`expression_deltas` against :func:`estimate_neutral`
  of the whole shot: the performance.
* ``s`` — :func:`eye_mouth_scales`: eye deltas are scaled by ``s_eye``, mouth and jaw deltas by
  ``s_mouth`` (source/plate size ratios), so a small-mouthed source does not get the plate's
  wide-mouthed smile and keeps its own proportions.
* ``edits_t`` — operator edits (:class:`ExpressionEdit`, :func:`parse_edit`).
* ``place_t`` — the similarity (3-D rotation, scale, translation) that takes the plate's neutral
  face onto frame ``t`` on :data:`STABLE_POINTS`: pose, roll, distance and depth stay the plate's.

Face-aligned frame: origin at the midpoint of the two eye centres (each the midpoint of its
corners 33/133 and 362/263), x along the line from the subject's right eye to their left eye
(image right for a non-mirrored face), y perpendicular and pointing down the face, unit length
= the inter-ocular distance (IOD); z is MediaPipe's depth in the same units, zero at the eye
corners. All the measures and constants of this module are in IOD units.

Landmark arrays are (478, 3): x, y in pixels, z = MediaPipe z times the image width.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from recast.errors import UsageError
from recast.models import mesh_topology as mesh
from recast.models.similarity import similarity_align

NUM_LANDMARKS = mesh.NUM_LANDMARKS

# --- index sets (MediaPipe names: LEFT/RIGHT are the *subject's* sides) -------------------------
# Short local names for mesh_topology's sets; eyelids run from the outer to the inner corner,
# lip edges from the subject's right mouth corner to the left one.
R_EYE_CORNERS = mesh.RIGHT_EYE_CORNERS   # outer, inner
L_EYE_CORNERS = mesh.LEFT_EYE_CORNERS    # outer, inner
R_UPPER_LID = mesh.RIGHT_UPPER_LID
R_LOWER_LID = mesh.RIGHT_LOWER_LID
L_UPPER_LID = mesh.LEFT_UPPER_LID
L_LOWER_LID = mesh.LEFT_LOWER_LID
# the three upper/lower lid points facing each other around the middle of the eye
R_LID_PAIRS = tuple(zip(R_UPPER_LID[2:5], R_LOWER_LID[2:5]))
L_LID_PAIRS = tuple(zip(L_UPPER_LID[2:5], L_LOWER_LID[2:5]))
R_BROW = mesh.RIGHT_EYEBROW_LOWER + mesh.RIGHT_EYEBROW_UPPER
L_BROW = mesh.LEFT_EYEBROW_LOWER + mesh.LEFT_EYEBROW_UPPER
R_BROW_UPPER = mesh.RIGHT_EYEBROW_UPPER
L_BROW_UPPER = mesh.LEFT_EYEBROW_UPPER
R_IRIS = mesh.RIGHT_IRIS
L_IRIS = mesh.LEFT_IRIS
MOUTH_CORNERS = mesh.MOUTH_CORNERS
MOUTH_INNER_CORNERS = mesh.MOUTH_INNER_CORNERS
UPPER_LIP_INNER = mesh.LIPS_UPPER_INNER
LOWER_LIP_INNER = mesh.LIPS_LOWER_INNER
UPPER_LIP_OUTER = mesh.LIPS_UPPER_OUTER
LOWER_LIP_OUTER = mesh.LIPS_LOWER_OUTER
# lip rings from the outer edge in (MediaPipe's lipsUpper/LowerOuter, SemiOuter, SemiInner; the
# inner edge is UPPER/LOWER_LIP_INNER). The semi rings are in no MediaPipe connection set, so
# they are listed here (from MediaPipe's face mesh keypoint annotations).
UPPER_LIP_RINGS = (UPPER_LIP_OUTER, (184, 74, 73, 72, 11, 302, 303, 304, 408), (183, 42, 41, 38, 12, 268, 271, 272, 407))
LOWER_LIP_RINGS = (LOWER_LIP_OUTER, (77, 90, 180, 85, 16, 315, 404, 320, 307), (96, 89, 179, 86, 15, 316, 403, 319, 325))
#: right corner of each ring (outer to inner), then the left ones
RING_CORNERS_R = (MOUTH_CORNERS[0], 76, 62, MOUTH_INNER_CORNERS[0])
RING_CORNERS_L = (MOUTH_CORNERS[1], 306, 292, MOUTH_INNER_CORNERS[1])
LIP_PAIRS = tuple(zip(UPPER_LIP_INNER, LOWER_LIP_INNER))
NOSE_POINTS = (168, 6, 197, 195, 5, 4, 1, 2, 98, 327, 129, 358, 49, 279, 48, 278, 64, 294)
FACE_OVAL = mesh.FACE_OVAL
#: Below the lower lip on the midline: the chin moves with the jaw.
CHIN_POINTS = (18, 200, 199, 175, 152)

#: Landmarks that move little with expression: eye corners, nose bridge and tip, forehead,
#: temples. The chin is left out on purpose (it drops with the jaw), as are lids and brows.
STABLE_POINTS: tuple[int, ...] = (
    33, 133, 362, 263,
    168, 6, 197, 195, 5, 4, 1,
    10, 151, 9, 109, 338, 67, 297, 108, 337,
    127, 356, 234, 454, 162, 389,
)

EDIT_NAMES = ("smile", "mouth_open", "eye_open", "brow_raise", "gaze")
MODES = ("transfer", "keep_source", "neutral")

# --- neutral proportions ------------------------------------------------------------------------
# Measured with :func:`expression_measures` on the five frontal, closed-mouth, non-smiling faces
# of ../shared/media/images (aniportrait_lyl, deca_IMG_0392_inputs, deca_image02202,
# liveportrait_s2, sadtalker_people_0; MediaPipe 0.10.21, refine_landmarks). Mean ± SD:
#   mouth width 0.749 ± 0.066 IOD   (smiling faces of the set: 1.00–1.24)
#   smile (corner elevation) -0.017 ± 0.033 IOD   (smiling: +0.07–+0.10)
#   eye opening 0.298 ± 0.030 of eye width   (smiling/squinting: 0.18–0.25)
#   brow height 0.331 ± 0.017 IOD
# Mouth width, eye opening and brow height are also identity, so neutralisation only clamps them
# into a band around the mean (not onto it): a person's own proportions inside the band survive.
NEUTRAL_MOUTH_WIDTH = 0.749
NEUTRAL_MOUTH_WIDTH_SD = 0.066
NEUTRAL_SMILE = -0.017
NEUTRAL_SMILE_SD = 0.033
NEUTRAL_EYE_OPEN = 0.298
NEUTRAL_EYE_OPEN_SD = 0.030
NEUTRAL_BROW = 0.331
NEUTRAL_BROW_SD = 0.017
#: A closed mouth: the inner lips touch (MediaPipe puts 13 and 14 ~0.002 IOD apart).
CLOSED_LIP_GAP = 0.003


# ================================================================================================
# edits
# ================================================================================================
@dataclass(frozen=True)
class ExpressionEdit:
    """An operator's expression edit: ``name`` by a signed ``amount`` over frames [start, end).

    ``amount`` is roughly -1..+1 (1 = a strong change, e.g. a broad smile); ``start`` inclusive,
    ``end`` exclusive (as :class:`recast.contracts.FrameRange`); ``None`` = open on that side.
    """

    name: str
    amount: float
    start: int | None = None
    end: int | None = None

    def __post_init__(self) -> None:
        if self.name not in EDIT_NAMES:
            raise UsageError(f"unknown expression edit {self.name!r}: allowed are {', '.join(EDIT_NAMES)}")
        if not np.isfinite(self.amount):
            raise UsageError(f"expression edit {self.name} amount must be finite, got {self.amount}")
        if self.start is not None and self.end is not None and self.end <= self.start:
            raise UsageError(f"expression edit {self.name} frame range end {self.end} must be after start {self.start}")

    def active(self, frame: int) -> bool:
        """Whether the edit applies at ``frame``."""
        return (self.start is None or frame >= self.start) and (self.end is None or frame < self.end)


_EDIT_RE = re.compile(
    r"^\s*(?P<name>[a-z_]+)\s*=\s*(?P<amount>[+-]?(?:\d+(?:\.\d*)?|\.\d+))\s*"
    r"(?:@\s*(?P<start>\d+)?\s*-\s*(?P<end>\d+)?)?\s*$"
)


def parse_edit(text: str) -> ExpressionEdit:
    """Parse ``NAME=AMOUNT[@START-END]``, e.g. ``smile=+0.3``, ``eye_open=-0.1``, ``smile=0.2@10-40``.

    The frame range is START inclusive, END exclusive (``@10-40`` = frames 10..39, as the
    contracts' FrameRange); either side may be left out (``@10-`` = from 10 to the end).
    Raises :class:`~recast.errors.UsageError` naming the text and the allowed names.
    """
    m = _EDIT_RE.match(text or "")
    allowed = ", ".join(EDIT_NAMES)
    if not m:
        raise UsageError(
            f"bad expression edit {text!r}: expected NAME=AMOUNT[@START-END] such as smile=+0.3 or "
            f"smile=0.2@10-40, NAME one of {allowed}"
        )
    name = m["name"]
    if name not in EDIT_NAMES:
        raise UsageError(f"bad expression edit {text!r}: unknown name {name!r}, allowed are {allowed}")
    amount = float(m["amount"])
    if abs(amount) > 3:
        raise UsageError(f"bad expression edit {text!r}: amount {amount} is outside -3..3 (1 is already strong)")
    start = int(m["start"]) if m["start"] else None
    end = int(m["end"]) if m["end"] else None
    if start is not None and end is not None and end <= start:
        raise UsageError(f"bad expression edit {text!r}: frame range end {end} must be after start {start}")
    return ExpressionEdit(name, amount, start, end)


# ================================================================================================
# alignment
# ================================================================================================
@dataclass(frozen=True)
class _Frame:
    """Image ↔ face-aligned frame: aligned = ((p - c) @ [ax, ay]) / iod, z' = (z - z0) / iod."""

    c: np.ndarray
    rot: np.ndarray  # rows ax, ay
    iod: float
    z0: float

    def to_aligned(self, pts: np.ndarray) -> np.ndarray:
        out = np.empty_like(pts, dtype=np.float64)
        out[..., :2] = (pts[..., :2] - self.c) @ self.rot.T / self.iod
        out[..., 2] = (pts[..., 2] - self.z0) / self.iod
        return out

    def to_image(self, a: np.ndarray) -> np.ndarray:
        out = np.empty_like(a, dtype=np.float64)
        out[..., :2] = a[..., :2] * self.iod @ self.rot + self.c
        out[..., 2] = a[..., 2] * self.iod + self.z0
        return out


def _check_face(lm: np.ndarray, what: str) -> np.ndarray:
    a = np.asarray(lm, np.float64)
    if a.shape != (NUM_LANDMARKS, 3):
        raise UsageError(f"{what} must be ({NUM_LANDMARKS}, 3) landmarks, got {a.shape}")
    if not np.isfinite(a).all():
        raise UsageError(f"{what} has NaN or infinite landmarks")
    return a


def _eye_frame(lm: np.ndarray) -> _Frame:
    r = lm[list(R_EYE_CORNERS), :2].mean(0)
    l_ = lm[list(L_EYE_CORNERS), :2].mean(0)
    ax = l_ - r
    iod = float(np.linalg.norm(ax))
    if iod < 1e-6:
        raise UsageError("degenerate landmarks: the eye centres coincide")
    ax = ax / iod
    ay = np.array([-ax[1], ax[0]])  # image y is down, so this points down the face
    z0 = float(lm[[33, 133, 362, 263], 2].mean())
    return _Frame((r + l_) / 2, np.stack([ax, ay]), iod, z0)


def align_face(landmarks: np.ndarray) -> np.ndarray:
    """Landmarks in the face-aligned frame (eye-centred, roll removed, unit inter-ocular distance)."""
    lm = _check_face(landmarks, "landmarks")
    return _eye_frame(lm).to_aligned(lm)


def _fit_onto(a: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, tuple[float, np.ndarray, np.ndarray]]:
    """``a`` moved onto ``ref`` by the 3-D similarity fitted on the stable points."""
    st = list(STABLE_POINTS)
    s, rot, t = similarity_align(a[st], ref[st])
    return s * a @ rot.T + t, (s, rot, t)


# ================================================================================================
# measures
# ================================================================================================
def _measures_aligned(a: np.ndarray) -> dict[str, float]:
    y = a[:, 1]
    ew_r = float(np.linalg.norm(a[33, :2] - a[133, :2]))
    ew_l = float(np.linalg.norm(a[263, :2] - a[362, :2]))
    return {
        "mouth_open": float(np.mean([y[lo] - y[up] for up, lo in LIP_PAIRS[3:6]])),
        "mouth_width": float(np.linalg.norm(a[61, :2] - a[291, :2])),
        "eye_open_right": float(np.mean([y[lo] - y[up] for up, lo in R_LID_PAIRS]) / ew_r),
        "eye_open_left": float(np.mean([y[lo] - y[up] for up, lo in L_LID_PAIRS]) / ew_l),
        "eye_width": (ew_r + ew_l) / 2,
        "brow_height": float(-y[list(R_BROW_UPPER + L_BROW_UPPER)].mean()),
        # corners above the upper lip's centre = smile; the upper lip barely moves when the jaw
        # drops, so an open mouth does not read as a smile (the lower lip would)
        "smile": float(y[13] - y[list(MOUTH_CORNERS)].mean()),
        "gaze": float(((a[468, 0] - a[list(R_EYE_CORNERS), 0].mean()) / ew_r
                       + (a[473, 0] - a[list(L_EYE_CORNERS), 0].mean()) / ew_l) / 2),
    }


def expression_measures(landmarks: np.ndarray) -> dict[str, float]:
    """Expression measures of one face, in the face-aligned frame (IOD units unless said).

    ``mouth_open``: mean inner-lip gap at the centre of the mouth; ``mouth_width``: corner to
    corner; ``eye_open_left``/``eye_open_right``: lid gap / eye width; ``eye_open``: their mean;
    ``eye_width``; ``brow_height``: brows above the eye line; ``smile``: elevation of the mouth
    corners above the upper lip's centre; ``gaze``: iris offset from the eye's centre / eye width
    (positive = towards image right for an upright face).
    """
    m = _measures_aligned(align_face(landmarks))
    m["eye_open"] = (m["eye_open_left"] + m["eye_open_right"]) / 2
    return m


# ================================================================================================
# smooth deformation
# ================================================================================================
def _deform(a: np.ndarray, handles: np.ndarray, disp: np.ndarray, anchors: Sequence[int], sigma: float) -> np.ndarray:
    """Displacement field (478, 2) that moves ``handles`` by ``disp`` and keeps ``anchors`` still.

    Other points get a Gaussian-weighted (Nadaraya–Watson) average of the handle displacements,
    with the anchors and a constant background weight pulling towards zero, so the field decays
    smoothly within a few ``sigma`` of the handles. A smooth field whose variation across
    ``sigma`` is small compared to ``sigma`` cannot fold a triangle; callers keep it so.
    """
    p = a[:, :2]
    anchors = np.asarray([i for i in anchors if i not in set(handles.tolist())], int)
    ctrl = np.concatenate([handles, anchors])
    vals = np.concatenate([disp, np.zeros((len(anchors), 2))])
    d2 = ((p[:, None, :] - p[ctrl][None, :, :]) ** 2).sum(-1)
    w = np.exp(-d2 / (2 * sigma ** 2))
    u = (w @ vals) / (w.sum(1, keepdims=True) + 0.05)
    u[handles] = disp
    u[anchors] = 0.0
    u[list(R_IRIS + L_IRIS)] = 0.0  # irises are moved explicitly (gaze), never by falloff
    return u


def _lip_corner_profile(a: np.ndarray, idx: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Weights (0 at the mouth's centre → 1 at the right/left corner) of lip points ``idx``."""
    xr, xl = a[61, 0], a[291, 0]
    xc = (xr + xl) / 2
    half = max(abs(xl - xr) / 2, 1e-6)
    x = a[list(idx), 0]
    t = np.clip((x - xc) / half, -1, 1)
    return np.clip(-t, 0, 1) ** 2, np.clip(t, 0, 1) ** 2


def _mouth_field(a: np.ndarray, corner_r: np.ndarray, corner_l: np.ndarray, jaw_dy: float,
                 lower_dy: np.ndarray | None = None) -> np.ndarray:
    """Move the mouth: corners by ``corner_r``/``corner_l`` (2-vectors), lower lip and jaw by ``jaw_dy``.

    ``lower_dy`` optionally gives each of LOWER_LIP_INNER its own vertical move (closing to its
    upper partner); the other lower-lip rings follow that profile by x. Below the corner line an
    analytic jaw field moves by ``jaw_dy`` (full at the chin, less towards the ears), a cheap
    stand-in for the jaw's rotation about the ear; the rest falls off from the lips.
    """
    upper = [i for ring in UPPER_LIP_RINGS for i in ring] + list(UPPER_LIP_INNER)
    lower_pts = [i for ring in LOWER_LIP_RINGS for i in ring] + list(LOWER_LIP_INNER)
    corners = list(RING_CORNERS_R + RING_CORNERS_L)
    lips = upper + lower_pts + corners
    handles = list(lips)
    disp = np.zeros((len(handles), 2))
    # across the mouth, x moves are a uniform stretch about the centre (linear in x, so the lip
    # rings keep their order) and y moves bend the lips (quadratic: the centre stays)
    wr, wl = _lip_corner_profile(a, lips)
    disp[:, 0] = np.sqrt(wr) * corner_r[0] + np.sqrt(wl) * corner_l[0]
    disp[:, 1] = wr * corner_r[1] + wl * corner_l[1]
    # lower lip / jaw vertical move, tapering to nothing at the corners
    xin = a[list(LOWER_LIP_INNER), 0]
    order = np.argsort(xin)
    if lower_dy is None:
        lower_dy = np.full(len(LOWER_LIP_INNER), jaw_dy)
    xs = np.concatenate([[a[78, 0]], xin[order], [a[308, 0]]])
    ys = np.concatenate([[0.0], np.asarray(lower_dy)[order], [0.0]])
    for k, i in enumerate(lower_pts):
        disp[len(upper) + k, 1] += np.interp(a[i, 0], xs, ys)
    # jaw: an analytic field for everything below the mouth-corner line — the chin moves
    # fully, the jaw line less towards the ears (it turns about them) — with the move ramping in
    # over the height between the corner line and the lower lip (midline) or the chin (sides),
    # so the cheeks beside the mouth are compressed gently rather than sheared
    y_c = a[list(MOUTH_CORNERS), 1].mean()
    x_mid = a[list(MOUTH_CORNERS), 0].mean()
    half = max(abs(a[454, 0] - a[234, 0]) / 2, 1e-6)
    rx = np.clip(np.abs(a[:, 0] - x_mid) / half, 0, 1)
    y_end = a[14, 1] + (a[152, 1] - a[14, 1]) * np.clip(rx / 0.6, 0, 1)
    wy = np.clip((a[:, 1] - y_c) / np.maximum(y_end - y_c, 1e-3), 0, 1)
    jaw = np.zeros((NUM_LANDMARKS, 2))
    jaw[:, 1] = jaw_dy * wy * np.clip(1 - rx ** 2, 0, 1)
    jaw[list(R_IRIS + L_IRIS)] = 0.0
    handles = np.asarray(handles)
    anchors = list(NOSE_POINTS) + [i for i in FACE_OVAL if a[i, 1] <= y_c] + list(R_EYE_CORNERS + L_EYE_CORNERS)
    # lips get exactly their own moves; the rest of the face the jaw plus a smooth falloff of
    # the lips' difference from the jaw
    return jaw + _deform(a, handles, disp - jaw[handles], anchors, sigma=0.16)


def _eye_field(a: np.ndarray, d_open: tuple[float, float]) -> np.ndarray:
    """Open (d > 0) or close each eye by ``d`` (change of lid gap / eye width; right, left)."""
    handles, disp = [], []
    for (outer, inner), up, lo, d in (
        (R_EYE_CORNERS, R_UPPER_LID, R_LOWER_LID, d_open[0]),
        (L_EYE_CORNERS, L_UPPER_LID, L_LOWER_LID, d_open[1]),
    ):
        ew = float(np.linalg.norm(a[outer, :2] - a[inner, :2]))
        x0, x1 = a[outer, 0], a[inner, 0]
        for ids, sign in ((up, -1.0), (lo, 1.0)):
            t = np.clip((a[list(ids), 0] - x0) / (x1 - x0), 0, 1)
            prof = np.sin(np.pi * t)  # lids move most at the centre, not at the corners
            # the upper lid does most of the opening and closing
            share = 0.7 if sign < 0 else 0.3
            handles += list(ids)
            disp += [(0.0, sign * share * d * ew * w) for w in prof]
    anchors = list(R_EYE_CORNERS + L_EYE_CORNERS + R_BROW + L_BROW + NOSE_POINTS)
    return _deform(a, np.asarray(handles), np.asarray(disp), anchors, sigma=0.07)


def _brow_field(a: np.ndarray, dy: tuple[float, float]) -> np.ndarray:
    """Raise the right/left brow by ``dy`` IOD (positive = up); forehead follows, eyes stay."""
    handles = list(R_BROW + L_BROW)
    disp = [(0.0, -dy[0])] * len(R_BROW) + [(0.0, -dy[1])] * len(L_BROW)
    anchors = list(R_UPPER_LID + L_UPPER_LID + R_LOWER_LID + L_LOWER_LID + R_EYE_CORNERS + L_EYE_CORNERS)
    anchors += [i for i in FACE_OVAL if a[i, 1] < a[list(R_BROW + L_BROW), 1].min() - 0.25]
    return _deform(a, np.asarray(handles), np.asarray(disp, float), anchors, sigma=0.12)


def _apply_field(a: np.ndarray, u: np.ndarray) -> np.ndarray:
    out = a.copy()
    out[:, :2] += u
    return out


# ================================================================================================
# neutralisation
# ================================================================================================
def _neutralize_aligned(a: np.ndarray) -> np.ndarray:
    m = _measures_aligned(a)
    # mouth: close the lips pair by pair, un-smile the corners, narrow an over-wide mouth
    gaps = np.array([a[lo, 1] - a[up, 1] for up, lo in LIP_PAIRS])
    lower_dy = -np.clip(gaps - CLOSED_LIP_GAP, 0, None)
    smile_hi = NEUTRAL_SMILE + NEUTRAL_SMILE_SD
    smile_lo = NEUTRAL_SMILE - 1.5 * NEUTRAL_SMILE_SD
    d_elev = np.clip(m["smile"], smile_lo, smile_hi) - m["smile"]  # <0: corners go down
    w_hi = NEUTRAL_MOUTH_WIDTH + NEUTRAL_MOUTH_WIDTH_SD
    d_half = -max(m["mouth_width"] - w_hi, 0.0) / 2
    # corners move as a pair about the mouth's own axis (x right, y down in the aligned frame)
    corner_r = np.array([-d_half, -d_elev])
    corner_l = np.array([d_half, -d_elev])
    u = _mouth_field(a, corner_r, corner_l, jaw_dy=float(lower_dy[4]), lower_dy=lower_dy)
    out = _apply_field(a, u)
    # eyes to a neutral opening band; brows to a neutral height band
    lo_e, hi_e = NEUTRAL_EYE_OPEN - NEUTRAL_EYE_OPEN_SD, NEUTRAL_EYE_OPEN + 2 * NEUTRAL_EYE_OPEN_SD
    d_eye = (float(np.clip(m["eye_open_right"], lo_e, hi_e) - m["eye_open_right"]),
             float(np.clip(m["eye_open_left"], lo_e, hi_e) - m["eye_open_left"]))
    out = _apply_field(out, _eye_field(out, d_eye))
    lo_b, hi_b = NEUTRAL_BROW - 1.5 * NEUTRAL_BROW_SD, NEUTRAL_BROW + 1.5 * NEUTRAL_BROW_SD
    b = np.clip(m["brow_height"], lo_b, hi_b) - m["brow_height"]
    out = _apply_field(out, _brow_field(out, (b, b)))
    return out


def neutralize_expression(landmarks: np.ndarray) -> np.ndarray:
    """Remove a face's own expression; returns (478, 3) landmarks in the input's image frame.

    In the face-aligned frame: the inner lips are brought together pair by pair with the jaw
    following (an open mouth closes), the mouth corners are lowered into the neutral elevation
    band and an over-wide (smiling) mouth is narrowed to the top of the neutral width band, eye
    openings are clamped into the neutral band (a squint opens) and brows into theirs. Each move
    is a handle displacement spread by a Gaussian falloff (:func:`_deform`) so the mesh stays
    valid. Bands are the module's NEUTRAL_* constants (see there for how they were measured).
    """
    lm = _check_face(landmarks, "landmarks")
    fr = _eye_frame(lm)
    return fr.to_image(_neutralize_aligned(fr.to_aligned(lm)))


# ================================================================================================
# plate neutral and deltas
# ================================================================================================
def _align_shot(plate: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, list]:
    """Aligned faces of a shot, registered to the shot's median face on the stable points.

    Returns (aligned (F,478,3) NaN rows kept, valid (F,), reference (478,3), per-frame
    (eye frame, similarity) so that frame f's aligned points map back to its image).
    """
    valid = np.isfinite(plate).all(axis=(1, 2))
    if not valid.any():
        raise UsageError("no frame of the plate has landmarks")
    frames: list = [None] * len(plate)
    eye = np.full(plate.shape, np.nan)
    for f in np.flatnonzero(valid):
        fr = _eye_frame(plate[f])
        frames[f] = fr
        eye[f] = fr.to_aligned(plate[f])
    ref = np.median(eye[valid], axis=0)
    out = np.full(plate.shape, np.nan)
    sims: list = [None] * len(plate)
    for _ in range(2):  # refit once to the median of the registered faces
        for f in np.flatnonzero(valid):
            out[f], sims[f] = _fit_onto(eye[f], ref)
        ref = np.median(out[valid], axis=0)
    return out, valid, ref, [(frames[f], sims[f]) for f in range(len(plate))]


#: Share of a shot's frames (those with the least open mouth) whose mean gives the neutral mouth.
NEUTRAL_MOUTH_QUANTILE = 0.2
_MOUTH_REGION = tuple(dict.fromkeys(
    UPPER_LIP_INNER + LOWER_LIP_INNER + UPPER_LIP_OUTER + LOWER_LIP_OUTER + MOUTH_CORNERS
    + MOUTH_INNER_CORNERS + CHIN_POINTS))


def _neutral_from_aligned(aligned: np.ndarray, valid: np.ndarray) -> np.ndarray:
    faces = aligned[valid]
    neutral = np.median(faces, axis=0)
    # A talker's mouth is open much of the time, so the median mouth is half open: take the
    # mouth and jaw from the frames with the least open mouth instead. The whole lower face is
    # taken from those frames (blended by distance from the mouth) so it stays one shape.
    gaps = np.array([np.mean([fa[lo, 1] - fa[up, 1] for up, lo in LIP_PAIRS[3:6]]) for fa in faces])
    k = max(1, int(np.ceil(NEUTRAL_MOUTH_QUANTILE * len(faces))))
    closed = faces[np.argsort(gaps)[:k]].mean(0)
    mc = neutral[list(MOUTH_CORNERS)].mean(0)
    r = np.linalg.norm(neutral[:, :2] - mc[:2], axis=1)
    w = np.clip((0.9 - r) / 0.3, 0, 1)[:, None]
    neutral = w * closed + (1 - w) * neutral
    # the remaining expression (a shot-long smile, a squint) is removed as from a photo, so that
    # it counts as performance and transfers
    return _neutralize_aligned(neutral)


def estimate_neutral(plate_landmarks_over_shot: np.ndarray) -> np.ndarray:
    """The plate actor's neutral face over a shot, (478, 3) in the face-aligned frame (IOD = 1).

    ``plate_landmarks_over_shot`` is (F, 478, 3) with NaN rows where a frame has no face. Every
    valid frame is aligned and registered to the shot's median face (3-D similarity on
    :data:`STABLE_POINTS`). The neutral is the per-point median, except the mouth and jaw, which
    come from the mean of the 20 % of frames with the least open mouth (a median mouth of a
    talker is half open); the result then goes through the same neutralisation as a source
    photo (clamping a shot-long smile or squint). Being in the aligned frame, it can be passed
    wherever landmarks are expected (all functions here align their inputs).
    """
    plate = np.asarray(plate_landmarks_over_shot, np.float64)
    if plate.ndim != 3 or plate.shape[1:] != (NUM_LANDMARKS, 3):
        raise UsageError(f"plate landmarks must be (F, {NUM_LANDMARKS}, 3), got {plate.shape}")
    aligned, valid, _, _ = _align_shot(plate)
    return _neutral_from_aligned(aligned, valid)


def expression_deltas(plate_landmarks: np.ndarray, plate_neutral: np.ndarray) -> np.ndarray:
    """Expression of one plate frame: its landmarks minus the neutral, (478, 3) in IOD units.

    Both are aligned; the frame is registered onto the neutral on :data:`STABLE_POINTS` (3-D
    similarity), so pose and size drop out and the deltas live in the neutral's aligned frame.
    """
    a = align_face(plate_landmarks)
    n = align_face(plate_neutral)
    reg, _ = _fit_onto(a, n)
    return reg - n


def eye_mouth_scales(source_neutral: np.ndarray, plate_neutral: np.ndarray) -> tuple[float, float]:
    """(s_eye, s_mouth): source/plate ratios of eye width and mouth width, each in IOD units."""
    ms = _measures_aligned(align_face(source_neutral))
    mp_ = _measures_aligned(align_face(plate_neutral))
    return ms["eye_width"] / mp_["eye_width"], ms["mouth_width"] / mp_["mouth_width"]


def _scale_field(a: np.ndarray, s_eye: float, s_mouth: float) -> np.ndarray:
    """Per-point delta scale: s_eye around the eyes, s_mouth around mouth and jaw, 1 elsewhere."""
    s = np.ones(NUM_LANDMARKS)
    p = a[:, :2]
    for corners in (R_EYE_CORNERS, L_EYE_CORNERS):
        c = a[list(corners), :2].mean(0)
        ew = np.linalg.norm(a[corners[0], :2] - a[corners[1], :2])
        w = np.clip((1.0 * ew - np.linalg.norm(p - c, axis=1)) / (0.4 * ew), 0, 1)
        s += w * (s_eye - 1)
    mc = a[list(MOUTH_CORNERS), :2].mean(0)
    mw = np.linalg.norm(a[61, :2] - a[291, :2])
    r = np.linalg.norm(p - mc, axis=1)
    s += np.clip((1.1 * mw - r) / (0.4 * mw), 0, 1) * (s_mouth - 1)
    return s


# ================================================================================================
# edits
# ================================================================================================
def _apply_edit(a: np.ndarray, name: str, amount: float) -> np.ndarray:
    """One edit on an aligned face; magnitudes are in IOD or eye-width units, so they scale with the face."""
    if name == "smile":
        # corners up and out; 1.0 ≈ the difference between a neutral face and a broad smile
        corner_r = np.array([-0.06 * amount, -0.09 * amount])
        corner_l = np.array([0.06 * amount, -0.09 * amount])
        return _apply_field(a, _mouth_field(a, corner_r, corner_l, 0.0))
    if name == "mouth_open":
        gaps = np.array([a[lo, 1] - a[up, 1] for up, lo in LIP_PAIRS])
        prof = np.array([0.3, 0.6, 0.85, 0.95, 1.0, 0.95, 0.85, 0.6, 0.3])
        dy = 0.3 * amount * prof
        if amount < 0:  # closing stops at closed lips
            dy = np.maximum(dy, -(gaps - CLOSED_LIP_GAP).clip(0))
        return _apply_field(a, _mouth_field(a, np.zeros(2), np.zeros(2), float(dy[4]), lower_dy=dy))
    if name == "eye_open":
        m = _measures_aligned(a)
        d = []
        for side in ("eye_open_right", "eye_open_left"):
            di = 0.15 * amount
            d.append(max(di, 0.02 - m[side]))  # never past closed
        return _apply_field(a, _eye_field(a, (d[0], d[1])))
    if name == "brow_raise":
        return _apply_field(a, _brow_field(a, (0.08 * amount, 0.08 * amount)))
    if name == "gaze":
        out = a.copy()
        for iris, corners in ((R_IRIS, R_EYE_CORNERS), (L_IRIS, L_EYE_CORNERS)):
            ew = np.linalg.norm(a[corners[0], :2] - a[corners[1], :2])
            out[list(iris), 0] += 0.2 * amount * ew
        return out
    raise UsageError(f"unknown expression edit {name!r}: allowed are {', '.join(EDIT_NAMES)}")


# ================================================================================================
# retargeting
# ================================================================================================
def retarget_sequence(
    plate_landmarks: np.ndarray,
    source_landmarks: np.ndarray,
    *,
    mode: str = "transfer",
    edits: Sequence[ExpressionEdit] = (),
) -> np.ndarray:
    """Per-frame target landmarks of the new face: source identity, plate pose and expression.

    ``plate_landmarks`` (F, 478, 3) with NaN rows where the plate has no face; ``source_landmarks``
    (478, 3). Returns (F, 478, 3) float64 in plate pixels, NaN where the plate row is NaN.

    * ``transfer``: neutralised source + plate expression deltas (eye deltas × s_eye, mouth and
      jaw deltas × s_mouth, blended smoothly between regions) + edits;
    * ``keep_source``: the source as photographed (its own expression) + edits;
    * ``neutral``: the neutralised source with no plate expression + edits.

    In every mode the face is placed by the inverse of frame t's registration onto the plate's
    neutral (3-D similarity on :data:`STABLE_POINTS` after the eye frame), so the plate's pose,
    roll, size and depth are kept. Edits apply on the frames of their range only.
    """
    if mode not in MODES:
        raise UsageError(f"unknown expression mode {mode!r}: allowed are {', '.join(MODES)}")
    plate = np.asarray(plate_landmarks, np.float64)
    if plate.ndim != 3 or plate.shape[1:] != (NUM_LANDMARKS, 3):
        raise UsageError(f"plate landmarks must be (F, {NUM_LANDMARKS}, 3), got {plate.shape}")
    src = align_face(_check_face(source_landmarks, "source landmarks"))
    edits = tuple(edits)
    out = np.full(plate.shape, np.nan)
    if not np.isfinite(plate).all(axis=(1, 2)).any():
        return out
    aligned, valid, _, placement = _align_shot(plate)
    neutral_p = _neutral_from_aligned(aligned, valid)
    src_face = src if mode == "keep_source" else _neutralize_aligned(src)
    src_face, _ = _fit_onto(src_face, neutral_p)
    if mode == "transfer":
        s_eye, s_mouth = eye_mouth_scales(src_face, neutral_p)
        scale = _scale_field(src_face, s_eye, s_mouth)[:, None]
    for f in np.flatnonzero(valid):
        # frames were registered to the shot's median; refit to the neutral, so that deltas are
        # taken between shapes in one frame and placement inverts exactly this fit
        reg, (s, rot, t) = _fit_onto(aligned[f], neutral_p)
        x = src_face + scale * (reg - neutral_p) if mode == "transfer" else src_face.copy()
        for e in edits:
            if e.active(int(f)):
                x = _apply_edit(x, e.name, e.amount)
        # back: neutral frame → frame f's aligned frame → image
        fr = placement[f][0]
        back = ((x - t) @ rot) / s  # inverse of reg = s * a @ rot.T + t
        out[f] = fr.to_image(back)
    return out
