"""Vetting of a source photo before any work starts: a report of :class:`Finding` records.

Every check gives ``ok``, ``warn`` or ``refuse``. Only what cannot work is refused — no usable
face, several faces and no ``--source-face`` to choose one, a face in profile (|yaw| above
:data:`recast.models.head.MAX_SOURCE_YAW_DEG`, the limit the head cut-out always had) and, in
head mode, a head cut off by the photo's border or a photo that shows the face but not the head.
Everything else is a warning: recorded, shown
in the submission's summary, and QC cannot pass the shot above ``review``.

Checks (``check`` names, in report order; values in the units given):

``faces``        faces found (refused: 0, or several without a selector)
``face_size``    face width in px (the x extent of the face oval); warn below ``min_face_px``
``upscale``      plate face width / source face width: how much the face will be enlarged on
                 this plate; warn above ``max_upscale``; ok with no value when the plate's face
                 size is unknown
``resolution``   the photo's shorter side in px; warn below ``min_image_px``
``blur``         fine detail of the face, 0..1 (:func:`face_detail`: the fine band's share of
                 the band-passed energy inside the oval), measured on the face resized down to
                 the plate's face width (192 px when unknown), the size it will be seen at;
                 warn below ``min_detail``. Sharp photos of the shared set read 0.15–0.51, the
                 same photos blurred (Gaussian σ 4, or down ×4 and up) 0.03–0.08 (except faces
                 so large that ×4 down still leaves more than the plate needs)
``occluder``     % of the face oval covered by a hand (MediaPipe Hands through the hand rule of
                 :meth:`~recast.models.occlusion.OcclusionDetector.hand_mask`: a hand counts
                 when a quarter of it lies outside the oval) or by a foreign object in the
                 lower face (:func:`_lower_face_foreign`: colour far from the skin of the
                 cheeks and nose, entering the oval from its outline) — a microphone, a cup, a
                 hand MediaPipe missed. The upper face is not searched: a fringe and glasses
                 are not occluders of a source. A beard is told apart by where it meets the
                 outline: a blob that touches it more than ``beard_reach`` of the face width
                 out on *both* sides of the midline follows the jaw (facial hair); a held
                 object enters narrowly or from one side. In head mode a hand anywhere over the
                 head region (the oval widened by half a face width) counts too. Above
                 ``max_occluded_pct`` of the face: what lies on one side of the face is taken
                 out of the photo (:mod:`recast.models.source_repair`, from the face's other
                 side) and warned; an object across the face's middle (a microphone in front
                 of the mouth) is refused; see :func:`occluder_plan` for the rule and its
                 measurements. A hand over the hair only (head mode) is warned. Measured
                 (before repair existed): a coloured hand-like patch over the mouth is found on 23/23 single-face photos of the shared set; a dark microphone on
                 12/23 — missed on dark skin, on black-and-white photos and where it touches a
                 beard (one blob, taken for the beard); one false alarm in the 29 photos (s12, a
                 hand-tinted photo whose lower face was tinted grey). Another person's hair
                 over the *head* is not looked for
``pose``         |yaw| in degrees (:func:`~recast.models.head.estimate_yaw`); refuse above
                 ``refuse_yaw_deg``, warn above ``warn_yaw_deg`` or a pitch more than
                 ``warn_pitch_deg`` from the frontal portraits' :data:`PITCH_FRONTAL_DEG`
``head_room``    head mode: share of the head's outline (:func:`head_outline`: hair and ears
                 around the face) inside the photo; warn below :data:`HEAD_ROOM_WARN` (a face
                 cropped tight: the head matte ends where the photo does, in a straight edge),
                 refuse below :data:`HEAD_ROOM_REFUSE` (a face crop without the head: 4 of the
                 29 shared photos, the 112 and 224 px aligned crops, read 0.00-0.34; the others
                 0.50 and 1.00)
``expression``   mouth opening in inter-ocular units (inner lips); warn above
                 ``max_mouth_open``, or an eye opening below ``min_eye_open`` (eyes shut)
``colour``       colour spread of the photo: the standard deviation of CIELAB a*, b* (8-bit
                 scale); warn below ``min_colour`` (black-and-white, sepia, a heavily
                 desaturated still)
``print``        a photographed print (see :func:`print_cues`): warn when at least two of
                 three cues agree — a rectangular frame of straight edges around the face, a
                 compressed tonal range on the face, a halftone/moiré peak in the face's
                 spectrum

How reliable the ``print`` heuristic is (measured on the 29 photos of the shared media set and
on prints made from each of them, ``tests/unit/test_source_vetting.py``): no false alarm on the
29 photos (none of them is a photographed print; the scanned historic photos s2 and s12 are
not flagged either); 21/29 of the photos printed with a white border, contrast halved, lying on
a desk, are flagged; 1/29 with the border but full contrast; 0/29 photographed edge-to-edge
with the contrast halved (one cue only). The halftone cue never fired on the set (resampled
PNG stills reach 85, the cue needs 120). Treat a missing ``print`` warning as no evidence.

Pure: arrays in, findings out (MediaPipe runs here through :func:`detect_hands`; no files,
storage or database). The callers turn :class:`Finding` into
:class:`recast.contracts.SourceFinding`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Iterable, Protocol, Sequence

import cv2
import numpy as np

from recast.errors import AmbiguousFaceError, InputError, NoFaceError, UnsupportedMediaError
from recast.models.mesh_topology import FACE_OVAL

__all__ = ["CHECKS", "DEFAULT_THRESHOLDS", "VETTING_VERSION", "Finding", "Occluders", "VettingThresholds", "detect_hands",
           "face_detail", "face_width", "find_occluders", "measure_source", "occluder_plan", "plate_face_px", "print_cues",
           "raise_if_refused", "refusals", "remove_occluders", "vet_photo", "vet_source", "warnings"]

#: bumped when a check or threshold changes (part of the source stage's cache key)
VETTING_VERSION = 3

CHECKS = ("faces", "face_size", "upscale", "resolution", "blur", "occluder", "pose", "head_room", "expression", "colour", "print")

_OVAL = np.asarray(FACE_OVAL, np.int64)
#: the pitch frontal portraits read (:func:`recast.models.metrics.head_pose` gives 0 to -12 on them)
PITCH_FRONTAL_DEG = -6.0
#: distance (in robust standard deviations of the upper face's skin, CIELAB) beyond which a lower-face pixel is foreign
FOREIGN_SIGMA = 8.0
#: above the nose tip an object is followed only through pixels this far from the skin: there the
#: face's own shading (the shadow side of a hand-tinted photo reads 9-14) must not pass for it
GROW_SIGMA = 1.5 * FOREIGN_SIGMA
#: the width (px) a face is analysed at when the plate's face size is unknown
DEFAULT_ANALYSIS_PX = 192.0


@dataclass(frozen=True)
class Finding:
    """One check of one photo: ``outcome`` ok | warn | refuse; ``text`` names the photo."""

    check: str
    outcome: str
    value: float | None
    threshold: float | None
    text: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class VettingThresholds:
    """Where each check turns from ok to warn (or refuse); see the module docstring."""

    refuse_yaw_deg: float = 45.0
    warn_yaw_deg: float = 30.0
    warn_pitch_deg: float = 20.0
    min_face_px: float = 96.0
    max_upscale: float = 2.0
    min_image_px: float = 200.0
    min_detail: float = 0.10
    max_occluded_pct: float = 2.0
    max_both_sides_pct: float = 1.0
    min_across_share: float = 0.5
    max_inpainted_pct: float = 5.0
    beard_reach: float = 0.25
    max_mouth_open: float = 0.35
    min_eye_open: float = 0.035
    min_colour: float = 3.0
    print_cues_needed: int = 2


DEFAULT_THRESHOLDS = VettingThresholds()


class _Face(Protocol):
    landmarks: np.ndarray
    box: tuple[int, int, int, int]

    @property
    def area(self) -> int: ...


# --- measures --------------------------------------------------------------------------------
def face_width(landmarks: np.ndarray) -> float:
    """Face width in px: the x extent of the face oval (as the plate's face is measured)."""
    oval = np.asarray(landmarks, np.float64)[_OVAL, :2]
    return float(max(1.0, oval[:, 0].max() - oval[:, 0].min()))


def _face_crop(rgb: np.ndarray, lm: np.ndarray, width_px: float) -> tuple[np.ndarray, np.ndarray]:
    """The face's bounding box resized so the face is ``width_px`` wide (never enlarged), and the
    oval mask in that crop."""
    h, w = rgb.shape[:2]
    pts = lm[_OVAL, :2]
    x0, y0 = np.floor(pts.min(0)).astype(int)
    x1, y1 = np.ceil(pts.max(0)).astype(int) + 1
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
    crop = rgb[y0:y1, x0:x1]
    fw = face_width(lm)
    scale = min(1.0, width_px / fw)
    size = (max(8, round((x1 - x0) * scale)), max(8, round((y1 - y0) * scale)))
    if scale < 1.0:
        crop = cv2.resize(crop, size, interpolation=cv2.INTER_AREA)
    mask = np.zeros(crop.shape[:2], np.uint8)
    poly = np.round((pts - (x0, y0)) * (crop.shape[1] / max(1, x1 - x0), crop.shape[0] / max(1, y1 - y0)) * 16).astype(np.int32)
    cv2.fillPoly(mask, [poly], 255, shift=4)
    return crop, mask


def face_detail(rgb: np.ndarray, landmarks: np.ndarray, width_px: float = DEFAULT_ANALYSIS_PX) -> float:
    """Fine detail of the face, 0..1, independent of contrast and of the photo's size.

    The face is resized to ``width_px`` wide (only ever down) and the grey image split by
    Gaussians into a fine band (σ < 1 px) and a coarse band (1 to 3 px); the value is the fine
    band's share of both bands' energy inside the face oval (shrunk to keep the outline's edge
    against the background out). A sharp face reads ~0.2–0.35, one blurred ×4 below ~0.08.
    """
    lm = np.asarray(landmarks, np.float64)
    crop, mask = _face_crop(rgb, lm, width_px)
    g = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY).astype(np.float32)
    b1 = cv2.GaussianBlur(g, (0, 0), 1.0)
    b3 = cv2.GaussianBlur(g, (0, 0), 3.0)
    fine, coarse = g - b1, b1 - b3
    inner = cv2.erode(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (7, 7))) > 0
    if inner.sum() < 50:
        inner = mask > 0
    ef, ec = float((fine[inner] ** 2).mean()), float((coarse[inner] ** 2).mean())
    return ef / max(ef + ec, 1e-6)


def colour_spread(rgb: np.ndarray) -> float:
    """sqrt(var a* + var b*) of the photo in CIELAB (8-bit scale), on a <=256 px copy: ~0 for a
    black-and-white photo, a few units for sepia, 10+ for ordinary colour photos."""
    h, w = rgb.shape[:2]
    s = min(1.0, 256.0 / max(h, w))
    small = cv2.resize(rgb, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA) if s < 1 else rgb
    lab = cv2.cvtColor(small, cv2.COLOR_RGB2LAB).reshape(-1, 3).astype(np.float32)
    return float(np.sqrt(lab[:, 1].var() + lab[:, 2].var()))


def _expression(lm: np.ndarray) -> tuple[float, float]:
    from recast.models.metrics import expression_features

    f = expression_features(lm)
    return float(f[0]), float(min(f[2], f[3]))


def _pose(lm: np.ndarray, shape: tuple[int, int]) -> tuple[float, float]:
    from recast.models.head import estimate_yaw
    from recast.models.metrics import head_pose

    yaw = float(estimate_yaw(lm, shape))
    p = head_pose(lm, shape)
    pitch = float(p[1]) if p is not None and np.isfinite(p[1]) else 0.0
    return yaw, pitch


def _oval_mask(shape: tuple[int, int], lm: np.ndarray) -> np.ndarray:
    m = np.zeros(shape, np.uint8)
    cv2.fillPoly(m, [np.round(lm[_OVAL, :2] * 16).astype(np.int32)], 255, shift=4)
    return m


def _skin_distance(rgb: np.ndarray, lm: np.ndarray, oval: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(distance, features, lips): every pixel's colour distance from the skin of the cheeks and
    nose (between the eyes' line and the nose tip, within the outer eye corners, eyes left out),
    in robust standard deviations in CIELAB (median, 1.48 MAD, floored at 6/3/3 units as the
    occlusion rule does); the eyes' and the lips' masks (slightly widened). None when the
    reference skin is too small to measure. The upper face is the reference because what a
    photo holds in front of a face (a microphone, a cup, a hand) covers the mouth and chin far
    more often than the forehead."""
    from recast.models.mesh_topology import LEFT_EYE, LIPS_OUTER, RIGHT_EYE

    h, w = oval.shape
    fw = face_width(lm)
    ys = np.arange(h)[:, None]
    nose_y = float(lm[1, 1])
    feats = np.zeros((h, w), np.uint8)
    polys = [np.round(lm[list(idx), :2] * 16).astype(np.int32) for idx in (LEFT_EYE, RIGHT_EYE)]
    cv2.fillPoly(feats, polys, 255, shift=4)
    k = 2 * max(1, round(0.04 * fw)) + 1
    feats = cv2.dilate(feats, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))) > 0
    # cheeks and nose: under the eyes' line, above the nose tip, between the outer eye corners
    # (hair falling over the oval's sides, a fringe and the brows stay out of the reference)
    eye_y = float((lm[33, 1] + lm[263, 1]) / 2)
    xs = np.arange(w)[None, :]
    xl, xr = sorted((float(lm[33, 0]), float(lm[263, 0])))
    ref = oval & ~feats & (ys > eye_y) & (ys < nose_y) & (xs > xl) & (xs < xr)
    lips = np.zeros((h, w), np.uint8)
    cv2.fillPoly(lips, [np.round(lm[list(LIPS_OUTER), :2] * 16).astype(np.int32)], 255, shift=4)
    lips = cv2.dilate(lips, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))) > 0
    if ref.sum() < 50:
        return None
    lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB).astype(np.float32)
    return _robust_distance(lab, ref, (6.0, 3.0, 3.0)), feats, lips


def _robust_distance(lab: np.ndarray, sample: np.ndarray, floor: tuple[float, float, float]) -> np.ndarray:
    """Every pixel's CIELAB distance from the ``sample`` pixels' median, in robust standard
    deviations (1.48 MAD per channel, at least ``floor``)."""
    x = lab[sample]
    med = np.median(x, 0)
    sd = np.maximum(1.4826 * np.median(np.abs(x - med), 0), np.asarray(floor))
    return np.sqrt((((lab - med) / sd) ** 2).sum(-1))


def _lower_face_foreign(rgb: np.ndarray, lm: np.ndarray, oval: np.ndarray) -> np.ndarray:
    """Pixels of the lower face (below the nose tip, lips left out) whose colour is farther than
    :data:`FOREIGN_SIGMA` from the skin of the cheeks and nose (:func:`_skin_distance`)."""
    h, w = oval.shape
    test = oval & (np.arange(h)[:, None] > float(lm[1, 1]))
    dist = _skin_distance(rgb, lm, oval) if test.any() else None
    if dist is None:
        return np.zeros((h, w), bool)
    d, _, lips = dist
    foreign = (d > FOREIGN_SIGMA) & test & ~lips
    o = 2 * max(1, round(0.015 * face_width(lm))) + 1
    return cv2.morphologyEx(foreign.astype(np.uint8), cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (o, o))) > 0


def _grow_foreign(rgb: np.ndarray, lm: np.ndarray, oval: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """The whole of the objects whose lower part :func:`_lower_face_foreign` found: connected
    foreign pixels anywhere in the oval (eyes left out) that touch a seed and are of the seeds'
    colour. A hand over a cheek reaches above the nose tip, where the search does not look;
    without this its upper half would stay in the photo. (It runs only when something was found:
    recomputing the skin distance there keeps the common clean photo at one computation.)"""
    dist = _skin_distance(rgb, lm, oval)
    if dist is None:
        return seeds
    d, feats, _ = dist
    # foreign to the skin and of the object's own colour (robust statistics of the seeds, floored
    # at 8/6/6 CIELAB units): a beard, a moustache or the lips next to a hand are not the hand
    like = _robust_distance(cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB).astype(np.float32), seeds, (8.0, 6.0, 6.0)) < 3.0
    # the lips are left out of the search (their colour is not the skin's) but not out of the
    # object: where it covers them they have its colour, which ``like`` tests
    cand = ((d > GROW_SIGMA) & like & oval & ~feats) | seeds
    n, labels = cv2.connectedComponents(cand.astype(np.uint8), connectivity=8)
    keep = np.unique(labels[seeds])
    keep = keep[keep > 0]
    return np.isin(labels, keep) if keep.size else seeds


@dataclass(frozen=True)
class Occluders:
    """What covers a photo's face: bool masks of the photo's size (``hand``: hands inside the
    oval; ``foreign``: held objects in the lower face), the face ``oval`` itself, and in head
    mode the % of the head region (the oval widened by half a face width) under a hand."""

    oval: np.ndarray
    hand: np.ndarray
    foreign: np.ndarray
    head_hand_pct: float

    @property
    def covered(self) -> np.ndarray:
        """The face pixels something covers (what source repair replaces)."""
        return (self.hand | self.foreign) & self.oval


def find_occluders(rgb: np.ndarray, lm: np.ndarray, *, hands: Sequence[np.ndarray] | None, mode: str = "face",
                   thresholds: VettingThresholds = DEFAULT_THRESHOLDS) -> Occluders:
    """Hands over the face (and, head mode, over the head) and foreign objects in the lower face,
    see the module docstring."""
    from recast.models.occlusion import OcclusionDetector

    h, w = rgb.shape[:2]
    oval = _oval_mask((h, w), lm) > 0
    area = max(1, int(oval.sum()))
    # the hand rule only, on hands already found: no MediaPipe graph is built for it
    det = object.__new__(OcclusionDetector)
    hand = np.zeros((h, w), bool)
    head_hand = 0.0
    if hands:
        hand = det.hand_mask(rgb, lm, hands=list(hands)) > 0
        if mode == "head":
            fw = face_width(lm)
            region = cv2.dilate(_oval_mask((h, w), lm), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (int(fw) | 1, int(fw) | 1)))
            hulls = np.zeros((h, w), np.uint8)
            oval_poly = lm[_OVAL, :2].astype(np.float32)
            for pts in hands:
                pts = np.asarray(pts, np.float32)[:, :2]
                # the hand rule of OcclusionDetector: a face taken for a hand lies inside the oval
                if np.mean([cv2.pointPolygonTest(oval_poly, (float(x), float(y)), False) < 0 for x, y in pts]) < det.HAND_OUTSIDE_MIN:
                    continue
                cv2.fillConvexPoly(hulls, cv2.convexHull(np.round(np.asarray(pts)[:, :2]).astype(np.int32)), 255)
            head_hand = 100.0 * float(((hulls > 0) & (region > 0)).sum()) / area
    foreign = _lower_face_foreign(rgb, lm, oval)
    kept = np.zeros((h, w), bool)
    if foreign.any():
        fw = face_width(lm)
        oval_u8 = oval.astype(np.uint8)
        band = oval & (cv2.erode(oval_u8, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * max(1, round(0.05 * fw)) + 1,) * 2)) == 0)
        across = lm[263, :2] - lm[33, :2]
        across /= np.linalg.norm(across) + 1e-9
        mid = lm[168, :2]
        n, labels, stats, _ = cv2.connectedComponentsWithStats(foreign.astype(np.uint8), connectivity=8)
        min_area = 0.015 * area
        for k in range(1, n):
            if stats[k, cv2.CC_STAT_AREA] < min_area:
                continue
            blob = labels == k
            ys, xs = np.nonzero(blob & band)
            if not xs.size:
                continue  # inside the face only: a moustache, an open mouth
            proj = (np.stack([xs, ys], 1) - mid) @ across
            # a beard follows the jaw on both sides of the chin; a held object enters narrowly
            if min(-proj.min(), proj.max()) > thresholds.beard_reach * fw:
                continue
            kept |= blob
        if kept.any():
            kept = _grow_foreign(rgb, lm, oval, kept)
    return Occluders(oval=oval, hand=hand & oval, foreign=kept & oval, head_hand_pct=head_hand)


def occluded_share(rgb: np.ndarray, lm: np.ndarray, *, hands: Sequence[np.ndarray] | None, mode: str = "face",
                   thresholds: VettingThresholds = DEFAULT_THRESHOLDS) -> dict[str, float]:
    """% of the face oval covered by hands (``hand_pct``; ``head_hand_pct``: of the head region, head
    mode), by foreign objects in the lower face (``foreign_pct``), and covered on both sides of
    the face (``both_sides_pct``: what :mod:`recast.models.source_repair` cannot take from the
    other side), see the module docstring."""
    from recast.models.source_repair import mirror_share

    occ = find_occluders(rgb, lm, hands=hands, mode=mode, thresholds=thresholds)
    area = max(1, int(occ.oval.sum()))
    covered = occ.covered
    return {"hand_pct": 100.0 * float(occ.hand.sum()) / area, "head_hand_pct": occ.head_hand_pct,
            "foreign_pct": 100.0 * float(occ.foreign.sum()) / area, "covered_pct": 100.0 * float(covered.sum()) / area,
            "both_sides_pct": mirror_share(lm, covered, occ.oval) if covered.any() else 0.0}


def print_cues(rgb: np.ndarray, lm: np.ndarray) -> dict[str, float]:
    """Cues of a photographed print: ``frame`` (0..4, sides of a straight-edged rectangle found
    around the face), ``tonal_range`` (1st–99th percentile of the face's L*, 0..255) and
    ``halftone`` (peak-to-median ratio of the face's high-frequency spectrum)."""
    h, w = rgb.shape[:2]
    fw = face_width(lm)
    cx, cy = lm[_OVAL, :2].mean(0)
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    s = min(1.0, 640.0 / max(h, w))
    small = cv2.resize(grey, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA) if s < 1 else grey
    edges = cv2.Canny(cv2.GaussianBlur(small, (0, 0), 1.0), 60, 150)
    min_len = max(20, int(0.9 * fw * s))
    lines = cv2.HoughLinesP(edges, 1, np.pi / 180, threshold=max(20, min_len // 2), minLineLength=min_len, maxLineGap=4)
    sides: set[str] = set()
    if lines is not None:
        for x0, y0, x1, y1 in lines[:, 0, :].astype(np.float64) / s:
            dx, dy = x1 - x0, y1 - y0
            ang = abs(np.degrees(np.arctan2(dy, dx))) % 180
            mx, my = (x0 + x1) / 2, (y0 + y1) / 2
            if min(ang, 180 - ang) < 12:  # horizontal: above or below the face, spanning it
                if min(x0, x1) < cx < max(x0, x1) and 0.6 * fw < abs(my - cy) < 3.0 * fw:
                    sides.add("top" if my < cy else "bottom")
            elif abs(ang - 90) < 12:
                if min(y0, y1) < cy < max(y0, y1) and 0.6 * fw < abs(mx - cx) < 3.0 * fw:
                    sides.add("left" if mx < cx else "right")
    crop, mask = _face_crop(rgb, np.asarray(lm, np.float64), 256.0)
    lab = cv2.cvtColor(crop, cv2.COLOR_RGB2LAB)[..., 0][mask > 0].astype(np.float32)
    rng = float(np.percentile(lab, 99) - np.percentile(lab, 1)) if lab.size else float("nan")
    g = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY).astype(np.float32)
    g = g - cv2.GaussianBlur(g, (0, 0), 2.0)
    win = np.outer(np.hanning(g.shape[0]), np.hanning(g.shape[1])).astype(np.float32)
    spec = np.abs(np.fft.fftshift(np.fft.fft2(g * win)))
    yy, xx = np.mgrid[: g.shape[0], : g.shape[1]]
    r = np.hypot((yy - g.shape[0] / 2) / g.shape[0], (xx - g.shape[1] / 2) / g.shape[1])
    band = (r > 0.12) & (r < 0.48)
    vals = spec[band]
    halftone = float(vals.max() / (np.median(vals) + 1e-6)) if vals.size else 0.0
    return {"frame": float(len(sides)), "tonal_range": rng, "halftone": halftone}


#: head mode warns when less of the head's outline (:func:`head_outline`) than this is in the photo
HEAD_ROOM_WARN = 0.97
#: ... and refuses when less than this is: the photo shows a face, not a head (an aligned face
#: crop of a dataset: the forehead's top, the hair and the ears are outside it), and the head
#: swap pasted a square of face with straight edges
HEAD_ROOM_REFUSE = 0.5


def head_outline(landmarks: np.ndarray, n: int = 64) -> np.ndarray:
    """(n, 2) points around where a head's hair and ears usually reach, from the face's own
    frame (chin, face height H and width W): the top of the skull 1.3 H above the chin, the
    ears 0.95 W out at the cheekbones' height; the lower half (neck, shoulders) is left out."""
    from recast.models.head import face_frame

    ff = face_frame(np.asarray(landmarks, np.float64))
    theta = np.linspace(-np.pi * 0.55, np.pi * 0.55, n)
    return np.array([ff.point(0.95 * ff.width * np.sin(a), -0.55 * ff.height - 0.75 * ff.height * np.cos(a)) for a in theta])


def measure_source(rgb: np.ndarray, landmarks: np.ndarray, *, hands: Sequence[np.ndarray] | None = None, mode: str = "face",
                   plate_face_px: float | None = None, thresholds: VettingThresholds = DEFAULT_THRESHOLDS) -> dict[str, float]:
    """Every raw measure of one face of a photo (the values the findings report)."""
    lm = np.asarray(landmarks, np.float64)
    h, w = rgb.shape[:2]
    fw = face_width(lm)
    yaw, pitch = _pose(lm, (h, w))
    mouth, eye = _expression(lm)
    occ = occluded_share(rgb, lm, hands=hands, mode=mode, thresholds=thresholds)
    cues = print_cues(rgb, lm)
    oval = lm[_OVAL, :2]
    inside = float(((oval[:, 0] >= 0) & (oval[:, 0] < w) & (oval[:, 1] >= 0) & (oval[:, 1] < h)).mean())
    head = head_outline(lm)
    head_inside = float(((head[:, 0] >= 0) & (head[:, 0] < w) & (head[:, 1] >= 0) & (head[:, 1] < h)).mean())
    return {
        "face_px": fw,
        "upscale": float(plate_face_px / fw) if plate_face_px else float("nan"),
        "image_px": float(min(h, w)),
        "detail": face_detail(rgb, lm, float(plate_face_px) if plate_face_px else DEFAULT_ANALYSIS_PX),
        "yaw": yaw, "pitch": pitch, "mouth_open": mouth, "eye_open": eye,
        "colour": colour_spread(rgb), "inside": inside, "head_inside": head_inside, **occ, **cues,
    }


# --- findings --------------------------------------------------------------------------------
def _f(check: str, outcome: str, value: float | None, threshold: float | None, text: str) -> Finding:
    return Finding(check, outcome, None if value is None or not np.isfinite(value) else round(float(value), 3),
                   None if threshold is None else float(threshold), text)


def print_flagged(m: dict[str, float], t: VettingThresholds = DEFAULT_THRESHOLDS) -> int:
    """How many print cues agree (see :func:`print_cues`)."""
    return int(m["frame"] >= 3) + int(m["tonal_range"] < 120) + int(m["halftone"] > 120)


def vet_source(rgb: np.ndarray, faces: Sequence[_Face], *, name: str, source_face: str | None = None, mode: str = "face",
               plate_face_px: float | None = None, hands: Sequence[np.ndarray] | None = None,
               thresholds: VettingThresholds = DEFAULT_THRESHOLDS) -> list[Finding]:
    """The findings for one source photo (``faces`` as :class:`~recast.models.face.FaceAnalyzer`
    found them; ``hands`` from :func:`detect_hands`, None to skip the hand rule).

    Never raises for what it finds (:func:`raise_if_refused` does): a photo with a refusal gets
    the refusal and, when it has a face at all, the other findings of its largest face. A
    ``source_face`` naming a face the photo does not have is a :class:`UsageError` (exit 2).
    """
    from recast.models.tracking import describe_faces, require_single_source_face

    t = thresholds
    who = f"source '{name}'"
    out: list[Finding] = []
    ranked = sorted(faces, key=lambda f: f.area, reverse=True)
    try:
        face = require_single_source_face(ranked, source_face, name)
        out.append(_f("faces", "ok", len(ranked), 1, f"{who}: {len(ranked)} face{'s' if len(ranked) != 1 else ''}"
                      + (f", using {source_face}" if len(ranked) > 1 else "")))
    except NoFaceError as exc:
        return [_f("faces", "refuse", 0, 1, str(exc))]
    except AmbiguousFaceError:
        out.append(_f("faces", "refuse", len(ranked), 1, f"{who}: {describe_faces(ranked)}; choose one with --source-face index:N"))
        face = ranked[0]
    m = measure_source(rgb, face.landmarks, hands=hands, mode=mode, plate_face_px=plate_face_px, thresholds=t)

    fw = m["face_px"]
    out.append(_f("face_size", "warn" if fw < t.min_face_px else "ok", fw, t.min_face_px,
                  f"{who}: face {fw:.0f} px wide" + (f", small (under {t.min_face_px:.0f} px): it will look soft" if fw < t.min_face_px else "")))
    up = m["upscale"]
    if np.isfinite(up):
        out.append(_f("upscale", "warn" if up > t.max_upscale else "ok", up, t.max_upscale,
                      f"{who}: face {fw:.0f} px wide, the plate's {plate_face_px:.0f} px: enlarged {up:.1f}×"
                      + (f" (over {t.max_upscale:.1f}×): expect a soft face" if up > t.max_upscale else "")))
    else:
        out.append(_f("upscale", "ok", None, t.max_upscale, f"{who}: the plate's face size is unknown, upscale not checked"))
    res = m["image_px"]
    out.append(_f("resolution", "warn" if res < t.min_image_px else "ok", res, t.min_image_px,
                  f"{who}: photo {rgb.shape[1]}×{rgb.shape[0]} px" + (" (low resolution)" if res < t.min_image_px else "")))
    d = m["detail"]
    out.append(_f("blur", "warn" if d < t.min_detail else "ok", d, t.min_detail,
                  f"{who}: face fine detail {d:.3f}" + (f" (under {t.min_detail}): the face is blurred" if d < t.min_detail else "")))
    out.append(_occluder_finding(m, who, t))
    yaw, pitch = m["yaw"], m["pitch"]
    if abs(yaw) > t.refuse_yaw_deg:
        out.append(_f("pose", "refuse", abs(yaw), t.refuse_yaw_deg,
                      f"{who}: face is in profile (yaw ≈ {abs(yaw):.0f}°), a frontal or three-quarter photo is needed"))
    elif abs(yaw) > t.warn_yaw_deg or abs(pitch - PITCH_FRONTAL_DEG) > t.warn_pitch_deg:
        by_yaw = abs(yaw) > t.warn_yaw_deg
        out.append(_f("pose", "warn", abs(yaw) if by_yaw else abs(pitch - PITCH_FRONTAL_DEG), t.warn_yaw_deg if by_yaw else t.warn_pitch_deg,
                      f"{who}: face turned (yaw {yaw:+.0f}°, pitch {pitch:+.0f}°): the hidden side is guessed"))
    else:
        out.append(_f("pose", "ok", abs(yaw), t.warn_yaw_deg, f"{who}: yaw {yaw:+.0f}°, pitch {pitch:+.0f}°"))
    if mode == "head" and m["inside"] < 0.85:
        out.append(_f("pose", "refuse", 1.0 - m["inside"], 0.15,
                      f"{who}: the head is cut off by the image border ({100 * (1 - m['inside']):.0f}% of the face outline is outside "
                      "the photo), a photo showing the whole head is needed"))
    if mode == "head" and m["inside"] >= 0.85:
        hi = m["head_inside"]
        if hi < HEAD_ROOM_REFUSE:
            out.append(_f("head_room", "refuse", hi, HEAD_ROOM_REFUSE,
                          f"{who}: the photo shows the face but not the head ({100 * hi:.0f}% of the hair and ears' outline is "
                          "inside it): a head swap needs a photo showing the whole head, or use --mode face"))
        else:
            out.append(_f("head_room", "warn" if hi < HEAD_ROOM_WARN else "ok", hi, HEAD_ROOM_WARN,
                          f"{who}: " + (f"the photo's border cuts the head ({100 * (1 - hi):.0f}% of the hair and ears' outline is "
                                        "outside it): the new head ends in a straight edge there, the hair is incomplete"
                                        if hi < HEAD_ROOM_WARN else "the whole head is in the photo")))
    mo, eo = m["mouth_open"], m["eye_open"]
    if mo > t.max_mouth_open:
        out.append(_f("expression", "warn", mo, t.max_mouth_open, f"{who}: mouth wide open ({mo:.2f} of the eye distance): "
                      "the open mouth is carried into every frame"))
    elif eo < t.min_eye_open:
        out.append(_f("expression", "warn", eo, t.min_eye_open, f"{who}: eyes shut ({eo:.3f} of the eye distance)"))
    else:
        out.append(_f("expression", "ok", mo, t.max_mouth_open, f"{who}: mouth {mo:.2f}, eyes {eo:.3f} of the eye distance"))
    c = m["colour"]
    out.append(_f("colour", "warn" if c < t.min_colour else "ok", c, t.min_colour,
                  f"{who}: " + (f"black-and-white or monochrome photo (colour spread {c:.1f}): skin and hair colour are guessed"
                                if c < t.min_colour else f"colour spread {c:.1f}")))
    n = print_flagged(m, t)
    out.append(_f("print", "warn" if n >= t.print_cues_needed else "ok", float(n), float(t.print_cues_needed),
                  f"{who}: " + ("looks like a photographed print" if n >= t.print_cues_needed else "no sign of a photographed print")
                  + f" (frame sides {m['frame']:.0f}, face tonal range {m['tonal_range']:.0f}, halftone {m['halftone']:.0f})"))
    return out


def occluder_plan(m: dict[str, float], t: VettingThresholds = DEFAULT_THRESHOLDS) -> str:
    """What is done about what covers the face (``m`` from :func:`measure_source` or
    :func:`occluded_share`): ``none`` (``max_occluded_pct`` or less of the oval covered);
    ``repair`` (taken out from the face's other side: at most ``max_both_sides_pct`` of the oval
    is covered on both sides); ``refuse`` (more than that, and either at least
    ``min_across_share`` of all that is covered, an object on the midline, or more than
    ``max_inpainted_pct`` of the oval, about a mouth's area); ``keep`` (otherwise: partly
    across, not clearly an object; left in the photo and warned, as before repair existed).

    Measured on synthetic occluders over 6 photos of the shared set (tests/unit/
    test_source_vetting.py): a patch over one cheek is covered on both sides for 0% of the oval
    (repaired); a dark microphone over the mouth 1.4-5.4% (80-97% of what it covers) and a
    hand reaching over the mouth from the side 7.0-8.3% (34-60%), both refused; the one false
    alarm among the set's 29 photos (a hand-tinted photo's grey jaw and moustache) 3.1% (36%):
    kept, since inpainting a moustache the detector took for an object would destroy it."""
    covered, both = m["covered_pct"], m["both_sides_pct"]
    if covered <= t.max_occluded_pct:
        return "none"
    if both <= t.max_both_sides_pct:
        return "repair"
    if both >= t.min_across_share * covered or both > t.max_inpainted_pct:
        return "refuse"
    return "keep"


def _occluder_finding(m: dict[str, float], who: str, t: VettingThresholds) -> Finding:
    """The ``occluder`` check: see :func:`occluder_plan`; a hand over the hair (head mode) is warned."""
    face = m["covered_pct"]
    what = "a hand" if m["hand_pct"] >= m["foreign_pct"] else "an object"
    plan = occluder_plan(m, t)
    if plan == "refuse":
        return _f("occluder", "refuse", m["both_sides_pct"], t.max_both_sides_pct,
                  f"{who}: {what} covers {face:.0f}% of the face, {m['both_sides_pct']:.0f}% across its middle, where the face's "
                  "other side cannot replace it: a photo with the face unobstructed is needed")
    if plan == "repair":
        return _f("occluder", "warn", face, t.max_occluded_pct,
                  f"{who}: {what} covers {face:.0f}% of the face: taken out of the photo, filled from the face's other side")
    if plan == "keep":
        return _f("occluder", "warn", face, t.max_occluded_pct,
                  f"{who}: {what} covers {face:.0f}% of the face: it may be carried into the output")
    if m["head_hand_pct"] > t.max_occluded_pct:
        return _f("occluder", "warn", m["head_hand_pct"], t.max_occluded_pct,
                  f"{who}: a hand covers {m['head_hand_pct']:.0f}% of the head: it may be carried into the output")
    return _f("occluder", "ok", face, t.max_occluded_pct, f"{who}: nothing in front of the face")


def remove_occluders(rgb: np.ndarray, lm: np.ndarray, *, hands: Sequence[np.ndarray] | None,
                     thresholds: VettingThresholds = DEFAULT_THRESHOLDS) -> Any:
    """The photo with what covers its face taken out (a
    :class:`~recast.models.source_repair.OccluderRepair`) where :func:`occluder_plan` says
    ``repair``; None otherwise. Call it on photos vetting did not refuse."""
    from recast.models.source_repair import mirror_share, repair_occluder

    lm = np.asarray(lm, np.float64)
    occ = find_occluders(rgb, lm, hands=hands, thresholds=thresholds)
    covered = occ.covered
    area = max(1, int(occ.oval.sum()))
    m = {"covered_pct": 100.0 * float(covered.sum()) / area}
    if m["covered_pct"] <= thresholds.max_occluded_pct:
        return None
    m["both_sides_pct"] = mirror_share(lm, covered, occ.oval)
    if occluder_plan(m, thresholds) != "repair":
        return None
    return repair_occluder(rgb, lm, covered, occ.oval)


def refusals(findings: Sequence[Any]) -> list[Any]:
    return [f for f in findings if f.outcome == "refuse"]


def warnings(findings: Sequence[Any]) -> list[Any]:
    return [f for f in findings if f.outcome == "warn"]


def raise_if_refused(findings: Sequence[Any]) -> None:
    """Raise the error of the first refusal (all exit 3): NoFaceError, AmbiguousFaceError,
    UnsupportedMediaError (profile), InputError (head cut off, an object across the face)."""
    for f in findings:
        if f.outcome != "refuse":
            continue
        if f.check == "faces":
            raise (NoFaceError if not f.value else AmbiguousFaceError)(f.text)
        if f.check == "pose" and "profile" in f.text:
            raise UnsupportedMediaError(f.text)
        raise InputError(f.text)


def detect_hands(rgb: np.ndarray, max_hands: int = 4) -> list[np.ndarray]:
    """(21, 2) pixel landmarks of every hand MediaPipe Hands finds in a still photo."""
    from recast.models.occlusion import OcclusionDetector

    with OcclusionDetector(static_images=True, max_hands=max_hands) as det:
        return det.hands(np.ascontiguousarray(rgb))


def face_widths(faces: Sequence[_Face]) -> list[float]:
    """Face widths of detected faces, largest face first."""
    return [face_width(f.landmarks) for f in sorted(faces, key=lambda f: f.area, reverse=True)]


def plate_face_px(frames: Iterable[np.ndarray], *, face: str = "largest", step: int = 5, samples: int = 3, max_frames: int = 120) -> float | None:
    """The plate's face width in px (median over up to ``samples`` frames ``step`` apart that show
    a face, within the first ``max_frames``): the face ``--face`` selects when it is ``index:N``,
    the largest otherwise (a ``reference:`` selector is not resolved here). None when no face."""
    from recast.models.face import FaceAnalyzer
    from recast.models.tracking import parse_face_selector

    sel = parse_face_selector(face)
    n = int(sel.index or 0) if sel.kind == "index" else 0
    widths: list[float] = []
    with FaceAnalyzer(static_images=True, max_faces=max(4, n + 1)) as fa:
        for i, rgb in enumerate(frames):
            if i >= max_frames or len(widths) >= samples:
                break
            if i % max(1, step):
                continue
            ws = face_widths(fa.detect(rgb))
            if len(ws) > n:
                widths.append(ws[n])
    return float(np.median(widths)) if widths else None


def vet_photo(rgb: np.ndarray, *, name: str, source_face: str | None = None, mode: str = "face", plate_face_px: float | None = None,
              thresholds: VettingThresholds = DEFAULT_THRESHOLDS) -> list[Finding]:
    """:func:`vet_source` with the faces and hands found here (MediaPipe, static-image mode)."""
    from recast.models.face import FaceAnalyzer

    with FaceAnalyzer(static_images=True, max_faces=8) as fa:
        faces = fa.detect(rgb)
    hands = detect_hands(rgb) if faces else []
    return vet_source(rgb, faces, name=name, source_face=source_face, mode=mode, plate_face_px=plate_face_px, hands=hands,
                      thresholds=thresholds)
