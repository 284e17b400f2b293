"""Per-frame detectors of the head/face-swap defects a VFX supervisor rejects at a glance.

Pure: a plate frame, the output frame, both faces' MediaPipe landmarks, optionally the plate's
person mask, and what is known of the source photo (:class:`SourceLook`) in; one number per
measure and a region mask per measure out. Nothing here depends on how the output was made:
every input is available for any vendor's output (``recast qc --plate --output --source``).

Work is done on a crop around both heads, scaled so that the face is at most
:data:`WORK_FACE_PX` high (measures are relative to the face, so they do not depend on the
frame's resolution); region masks are returned at the frame's size.

The geometry every detector shares
----------------------------------
* **change map**: ``|blur(out) - blur(plate)|`` (3x3 box, max over channels) above
  :data:`recast.models.qc.CHANGE_THRESHOLD` (H.264 round trips stay below it).
* **new head footprint**: where the new head is expected. Head mode: the source's head matte
  (:attr:`recast.models.head.SourceHead.alpha`) carried by the similarity that takes the source's
  stable landmarks onto the output's (how every head swap places a head), joined with the
  output's face oval. Face mode: the output's face oval. Its area is the "head area" the
  percentages refer to.
* **old head** (head mode): the plate's person mask inside the plate's head region
  (:func:`recast.models.head.head_region`, cut a little below the plate's chin), without the
  shoulders and clothing beside the jaw (:func:`recast.models.head.old_head_mask`: a close-up's
  shoulders lie in the head region and are not head; hair hanging there is); without a person
  mask, an ellipse around the plate's face frame.
* **neck allowance**: a column under the output's chin where a swap may legitimately blend the
  neck.

The detectors (units are per frame)
-----------------------------------
``foreign_pieces`` (% of the head area): changed pixels outside everything a swap may touch
  (the grown new head, the grown old head, the neck allowance), in components large enough to
  see: a collar pasted beside the head, floating over the background or the body. Under the
  chin (neck allowance and the chin below the lips), where a swap may only bring skin, changed
  pixels paler than the new face's skin or of another hue (not darker: a beard or a shadow is not
  foreign), unlike the plate there and not the source's hair, count too: a collar or shirt carried
  with the head, a microphone under the chin. Why not "components not attached to the head":
  the fill of the old head connects everything to the head, so attachment says nothing in head
  mode. Pieces lying over the old head's place are judged by ``fill_artefacts`` instead.
``leftover_plate_head`` (% of the head area; head mode only): pixels of the old head outside
  the new head where the plate still shows: opaque (unchanged), or partly: either the output's
  fine detail correlates with the plate's there (a ghost of the plate's hair keeps its strands)
  or its colour lies between the plate's and the background's around (out = a * plate +
  (1 - a) * background, with an estimated opacity a above 0.25 where the old head differs from
  the background by more than ΔE 20). A correct fill takes the background's look, which has
  neither.
``fill_artefacts`` (% of the head area): filled pixels (changed, outside the new head, around
  the old head) that look like none of the plate around them: farther than ΔE 14 (less 1.5x the
  cluster's spread) from every colour of the plate's unchanged, non-edge pixels near the old head
  (10 k-means colours: background, body, clothes; edges are left out because their mixed colours
  would excuse a blob of that mixture) — dark blobs and colour smears —, or streaked: structure
  tensor coherence above 0.5 with gradient energy above 1.5x the plate's around and, outside the
  old head, 2x the plate's own at that place (the change map's 3x3 blur hides one-pixel streaks,
  so the streak test runs on the change map grown by 0.02 face heights).
``inner_edges`` (face heights of line): thin ridges (signed Hessian line response at 1 px) on the
  new face and around its outline that neither the source (mesh-warped onto the output's
  landmarks) nor the plate has, with the same polarity, within 0.05 face heights: a drawn
  outline of the warped inner face, a cut line. Eyes, brows, lips and the source's hair are left
  out.
``colour_blotches`` (% of the face area): blob-like regions of the new face/head (at least
  0.002 face heights squared) whose colour is foreign, by either of two tests:
  (1) chroma (CIELAB a, b) foreign to the source head's colours, to those colours moved to the
  plate's skin (what a colour match does), and to the plate's own face (a blue, green or purple
  blotch);
  (2) on the new head's skin (the face oval grown by 0.03 face heights; in head mode also the
  neck down to 0.3 face heights below the chin, at skin lightness), changed pixels whose chroma is
  far from what the output face's own skin has at that lightness (a robust linear fit of a and b
  on L over the skin of its landmarks: 7 spreads on the face, 5 on the neck, spreads floored at
  2.5) and 3 spreads from the plate face's skin: a grey, grey-green or bluish patch, an old
  chin/neck showing through. Near-zero chroma is common in any head's histogram (hair, shadows),
  so test (1) cannot see those. Eyes, brows, mouth and nostrils (grown by 0.04 face heights),
  the source's hair (matte, or within ΔE 12 of its hair colour; trusted above the jaw only) and,
  at the face's edge and on the neck, the colours the plate has around there (its collar, shirt,
  hair) are left out.
  Misses: a neutral grey patch on a pale, low-chroma face is ~6.8 spreads from its skin, under the
  face's 7; a patch close to the plate's own skin colour (part of the demo's left neck patch).
``hair_colour_de`` (CIELAB ΔE; head mode only): the output's hair band (above the forehead,
  skin-coloured pixels left out, see :func:`band_colour`, the band of :mod:`recast.models.qc`'s hair metric) against the source's
  band measured the same way on its hair matte. Where the source's cut-out mistakes its wall for
  hair (hair near the skin's colour), the reference is wrong: a source-vetting matter.
``sharpness`` (ratio): the output face's fine detail over the plate face's at the same scale
  (the working scale): the geometric mean of the fine-band ratio (mean |L - G(0.8 px)|, output
  over plate) and the ratio of the two faces' spectral slopes (fine band over the mid band
  G(0.8) - G(2.5)). The plain fine-band ratio swings x3 between clean pairs (a wrinkled source
  on a smooth plate); the slope term does not depend on how much texture a face has, only on
  how quickly its detail falls off, which is what a blur or an upscaled small source changes.
  Low = blurry.

Measured (``benchmarks/qc_detectors.py``: 10 shared photo x clip pairs, both modes, classic
engines, 4 frames each; one corruption of each class per frame, size/position/strength/shape
drawn at random; false alarms on the frames labelled by eye without that class), at
:data:`SUGGESTED_THRESHOLDS`, tuned on seed 0 / held out on seed 1 (5 frames each)::

    measure              corruption   detected (seed 0 / 1)  false alarms (0 / 1)
    foreign_pieces       clothing     97% / 97%              0% / 0%
    foreign_pieces       occluder     98% / 96%              0% / 0%
    leftover_plate_head  hair_back    93% / 89%  (n=14/18)   5.6% / 4.4%
    fill_artefacts       fill         86% / 89%              1.9% / 3.1%
    inner_edges          outline      89% / 83%              3.3% / 4.0%
    colour_blotches      hue_blotch   95% / 94%              6.2% / 5.0%  (DEFECTS_VERSION 2; skin test tuned on both seeds)
    hair_colour_de       grey_hair    100% / 100%            5.0% / 8.0% (one source whose cut-out takes its wall for hair)
    sharpness            blur x2-x4   85% / 86%              0% / 2.5%

DEFECTS_VERSION 3 took the shoulders a close-up shows beside the jaw out of the old head (the
head swap no longer removes them). With the clean outputs of that swap relabelled and the
corruptions placed where it fills, version 2 → 3 on seed 0 / seed 1: ``leftover_plate_head``
detected 83 → 83% / 91 → 91%, false alarms 25 → 5.0% on both (an unchanged sweater beside the
jaw was "leftover head"); ``fill_artefacts`` detected 83 → 87% / 86 → 76% (n = 23 / 21), false
alarms 10 → 8.3%; the other measures unchanged.

Weak: ``sharpness`` is relative to the plate, so a blur of a source much sharper than a soft
plate that leaves the face as sharp as the plate is not flagged (by design); ``inner_edges``
misses lines drawn within a few pixels of a strong edge of the source (the jaw line);
``hair_colour_de`` is only as good as the source's hair matte.

Regions: for the pixel measures, the pixels found defective; for ``hair_colour_de`` and
``sharpness``, whose defect is the whole region, the region measured (a report outlines it only
when the value is flagged).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from recast.models.head import SourceHead, cielab, face_frame, head_region, lab_clusters, old_head_mask, pixel_grid, skin_model
from recast.models.masks import face_skin_mask
from recast.models.mesh_topology import FACE_OVAL, LEFT_EYE, LEFT_EYEBROW, LIPS_OUTER, RIGHT_EYE, RIGHT_EYEBROW
from recast.models.mesh_warp import FACE_TRIANGLES, extended_points, rasterise_triangles, triangle_affines, triangle_maps
from recast.models.retarget import STABLE_POINTS
from recast.models.similarity import similarity_align, similarity_matrix

__all__ = ["DEFECT_MEASURES", "DEFECTS_VERSION", "FrameDefects", "SourceLook", "SUGGESTED_THRESHOLDS", "WORK_FACE_PX", "measure_defects"]

DEFECT_MEASURES = ("foreign_pieces", "leftover_plate_head", "fill_artefacts", "inner_edges",
                   "colour_blotches", "hair_colour_de", "sharpness")

#: per-frame thresholds proposed by ``benchmarks/qc_detectors.py`` (a frame is flagged above them;
#: ``sharpness`` below). QC's own thresholds live in :class:`recast.models.metrics.QCThresholds`;
#: these are the benchmark's proposal and what the unit tests hold the detectors to.
SUGGESTED_THRESHOLDS: dict[str, float] = {
    "foreign_pieces": 0.3,
    "leftover_plate_head": 0.6,
    "fill_artefacts": 0.3,
    "inner_edges": 0.03,
    "colour_blotches": 1.0,
    "hair_colour_de": 16.0,
    "sharpness": 0.9,
}

#: part of QC's work key: bump when a detector's definition changes, so that cached measures of
#: the old definition are not reused
#: 3: the old head without the shoulders beside the jaw; 4: without the collar beside the jaw, and
#: its chest clothing without the shaded neck
DEFECTS_VERSION = "4"

#: grey levels (max over channels, after a 3x3 blur) above which a pixel counts as changed, here
#: and in :func:`recast.models.qc.change_mask` (H.264 round trips stay below ~6 on these plates)
CHANGE_THRESHOLD = 14

#: the crop is scaled so that the face (forehead top to chin) is at most this high
WORK_FACE_PX = 200.0

_OVAL = np.asarray(FACE_OVAL, np.int64)
_STABLE = list(STABLE_POINTS)
#: chroma histogram: a and b from -_AB to _AB, one unit per bin
_AB = 96


# --- the hair band (the definition of recast.models.qc's hair metric) -----------------------------
def hair_band(lm: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """bool mask of a band just above the forehead top (the hairline and above), outside the
    face oval: where the hair is on nearly every head that has hair (also the band of the hair
    transfer metric of :mod:`recast.models.qc`)."""
    h, w = shape[:2]
    ff = face_frame(lm)
    pts = [ff.point(s * 0.4 * ff.width, -b * ff.height) for s in (-1, 1) for b in (0.95, 1.3)]
    p = np.asarray(pts)
    x0, y0 = np.clip(np.floor(p.min(0)).astype(int), 0, (w, h))
    x1, y1 = np.clip(np.ceil(p.max(0)).astype(int) + 1, 0, (w, h))
    band = np.zeros((h, w), bool)
    if x1 <= x0 or y1 <= y0:
        return band
    xs, ys = pixel_grid((x0, y0, x1, y1))
    lat, below = ff.coords(xs, ys)
    inner = (np.abs(lat) <= 0.4 * ff.width) & (below <= -1.02 * ff.height) & (below >= -1.3 * ff.height)
    oval = np.zeros((y1 - y0, x1 - x0), np.uint8)
    cv2.fillPoly(oval, [np.round((lm[_OVAL, :2] - (x0, y0)) * 16).astype(np.int32)], 255, shift=4)
    band[y0:y1, x0:x1] = inner & (oval == 0)
    return band


def band_colour(rgb: np.ndarray, lm: np.ndarray, extra: np.ndarray | None = None) -> np.ndarray | None:
    """Mean CIELAB of the hair band (within ``extra`` when given), skin-coloured pixels (a high
    forehead) left out; None when the band has under 10 pixels."""
    lm = np.asarray(lm, np.float64)
    band = hair_band(lm, rgb.shape)
    if extra is not None:
        band &= extra
    if band.sum() < 10:
        return None
    px = cielab(rgb[band].reshape(-1, 1, 3)).reshape(-1, 3)
    pts = lm[_OVAL, :2]
    cx0, cy0 = np.maximum(np.floor(pts.min(0)).astype(int), 0)
    cx1, cy1 = np.minimum(np.ceil(pts.max(0)).astype(int) + 1, (rgb.shape[1], rgb.shape[0]))
    skin = None
    if cx1 - cx0 > 4 and cy1 - cy0 > 4:
        skin = skin_model(cielab(np.ascontiguousarray(rgb[cy0:cy1, cx0:cx1])), lm - (cx0, cy0, 0))
    if skin is not None:
        not_skin = (np.abs(px - skin[0]) / skin[1]).max(1) > 3.0
        if not_skin.sum() >= 10:
            px = px[not_skin]
    return px.mean(0)


# --- the source ---------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class SourceLook:
    """What the detectors need of the source photo, computed once per shot.

    ``rgb``/``landmarks``: the image the source face is warped from (the cut-out head's crop in
    head mode, a crop of the photo around the face otherwise) and its (478, 3) landmarks;
    ``alpha``: the head matte on that image (None without a head); ``hair``: bool hair part of
    the matte (None without a head); ``hair_lab``: CIELAB of the source's hair band (None when it
    has none); ``skin_lab``: CIELAB median of its cheek skin (None when not found);
    ``chroma``: (2*_AB, 2*_AB) float32 histogram of the head's (a, b), blurred and normalised to
    sum 1.
    """

    rgb: np.ndarray
    landmarks: np.ndarray
    alpha: np.ndarray | None
    hair: np.ndarray | None
    hair_lab: np.ndarray | None
    skin_lab: np.ndarray | None
    chroma: np.ndarray = field(repr=False)

    @classmethod
    def from_source(cls, rgb: np.ndarray, landmarks: np.ndarray, head: "SourceHead | None") -> "SourceLook":
        if head is not None:
            img = np.ascontiguousarray(head.rgb)
            lm = np.asarray(head.landmarks, np.float64)
            alpha = np.asarray(head.alpha, np.float32)
            hair = np.asarray(head.hair, bool)
            region = alpha > 0.5
            # measured as the output's is (the band above the forehead, skin-coloured pixels left
            # out), on the source's hair matte as the hair metric of recast.models.qc does
            hair_lab = band_colour(img, lm, hair) if hair.any() else None
            if hair_lab is None:
                hair_lab = band_colour(img, lm, region)
        else:
            full = np.asarray(rgb)
            flm = np.asarray(landmarks, np.float64)
            ff = face_frame(flm)
            pts = flm[:, :2]
            pad = 0.35 * ff.height
            x0, y0 = np.maximum(np.floor(pts.min(0) - pad).astype(int), 0)
            x1, y1 = np.minimum(np.ceil(pts.max(0) + pad).astype(int) + 1, (full.shape[1], full.shape[0]))
            img = np.ascontiguousarray(full[y0:y1, x0:x1])
            lm = flm - (x0, y0, 0)
            alpha = hair = None
            region = _poly(lm, img.shape[:2]) > 0
            hair_lab = None
        lab = cielab(img)
        sk = skin_model(lab, lm)
        chroma = _chroma_hist(lab[region])
        return cls(rgb=img, landmarks=lm.astype(np.float32), alpha=alpha, hair=hair, hair_lab=hair_lab,
                   skin_lab=None if sk is None else sk[0], chroma=chroma)


@dataclass(frozen=True, eq=False)
class FrameDefects:
    """One frame's defect measures: ``values`` (every :data:`DEFECT_MEASURES` key; NaN where it
    cannot be measured) and ``regions`` (measure -> (H, W) bool where it found its defect)."""

    values: dict[str, float]
    regions: dict[str, np.ndarray]


# --- small helpers ------------------------------------------------------------------------------
def _valid(lm: np.ndarray | None) -> np.ndarray | None:
    if lm is None:
        return None
    a = np.asarray(lm, np.float64)
    if a.ndim != 2 or a.shape[0] < 468 or a.shape[1] < 2 or not np.isfinite(a[:468, :2]).all():
        return None
    if a.shape[1] == 2:
        a = np.concatenate([a, np.zeros((len(a), 1))], axis=1)
    if a.shape[0] < 478:  # no iris points: the eye centres stand in (only the triangulation needs them)
        a = np.concatenate([a, np.repeat(a[[33]], 478 - a.shape[0], axis=0)])
    return a


def _poly(lm: np.ndarray, shape: tuple[int, int], idx: np.ndarray = _OVAL) -> np.ndarray:
    m = np.zeros(shape[:2], np.uint8)
    cv2.fillPoly(m, [np.round(lm[idx, :2] * 16).astype(np.int32)], 255, shift=4)
    return m


def _disk(r: float) -> np.ndarray:
    r = max(1, int(round(r)))
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))


def _grow(m: np.ndarray, r: float) -> np.ndarray:
    """``m`` grown by ``r`` pixels (a distance transform: its cost does not grow with ``r``)."""
    if r < 0.5:
        return m.astype(bool)
    if r <= 3:
        return cv2.dilate(m.astype(np.uint8), _disk(r)) > 0
    inv = np.where(m, 0, 255).astype(np.uint8)
    return cv2.distanceTransform(inv, cv2.DIST_L2, 3) <= r


def _shrink(m: np.ndarray, r: float) -> np.ndarray:
    """``m`` shrunk by ``r`` pixels (the image border is not an edge)."""
    if r < 0.5:
        return m.astype(bool)
    return cv2.distanceTransform(m.astype(np.uint8), cv2.DIST_L2, 3) > r


def _open(m: np.ndarray, r: float) -> np.ndarray:
    return cv2.morphologyEx(m.astype(np.uint8), cv2.MORPH_OPEN, _disk(r)) > 0 if r >= 0.5 else m.astype(bool)


def _big_components(m: np.ndarray, min_area: float) -> np.ndarray:
    n, labels, stats, _ = cv2.connectedComponentsWithStats(m.astype(np.uint8), connectivity=8)
    if n <= 1:
        return np.zeros(m.shape, bool)
    keep = np.flatnonzero(stats[:, cv2.CC_STAT_AREA] >= min_area)
    keep = keep[keep > 0]
    return np.isin(labels, keep) if keep.size else np.zeros(m.shape, bool)


def _chroma_hist(lab_px: np.ndarray) -> np.ndarray:
    hist = np.zeros((2 * _AB, 2 * _AB), np.float32)
    if len(lab_px):
        ab = np.clip(np.round(lab_px[:, 1:3]).astype(int) + _AB, 0, 2 * _AB - 1)
        np.add.at(hist, (ab[:, 0], ab[:, 1]), 1.0)
        hist = cv2.GaussianBlur(hist, (0, 0), 2.0)
        hist /= max(float(hist.sum()), 1e-9)
    return hist


def _blur(x: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur; wide ones on a reduced copy (a wide blur has no fine detail to keep)."""
    f = int(sigma // 3)
    if f < 2:
        return cv2.GaussianBlur(x, (0, 0), sigma)
    h, w = x.shape[:2]
    small = cv2.resize(x, (max(1, w // f), max(1, h // f)), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), sigma / f)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def _masked_blur(x: np.ndarray, w: np.ndarray, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Weighted Gaussian mean of ``x`` (H, W[, C]) with weights ``w`` (H, W), and the weight sum."""
    wb = _blur(w.astype(np.float32), sigma)
    xw = x * (w[..., None] if x.ndim == 3 else w)
    xb = _blur(xw.astype(np.float32), sigma)
    den = np.maximum(wb, 1e-6)
    return xb / (den[..., None] if x.ndim == 3 else den), wb


#: a ridge's response is reduced by this times the slope at that place (a step edge's second
#: derivative beside it is not a line; 0.15 was best on benchmarks/qc_detectors.py)
_RIDGE_SLOPE = 0.15


def _ridge(L: np.ndarray, sigma: float = 1.0) -> np.ndarray:
    """Signed line response: the larger-magnitude Hessian eigenvalue of the blurred L (positive
    on a dark line, negative on a bright one), where the other eigenvalue is much smaller (a
    line, not a blob); 0 elsewhere."""
    g = cv2.GaussianBlur(L, (0, 0), sigma)
    lxx = cv2.Sobel(g, cv2.CV_32F, 2, 0, ksize=3)
    lyy = cv2.Sobel(g, cv2.CV_32F, 0, 2, ksize=3)
    lxy = cv2.Sobel(g, cv2.CV_32F, 1, 1, ksize=3)
    half = 0.5 * (lxx + lyy)
    rad = np.sqrt(0.25 * (lxx - lyy) ** 2 + lxy ** 2)
    l1, l2 = half + rad, half - rad
    first = np.abs(l1) >= np.abs(l2)
    big = np.where(first, l1, l2)
    small = np.where(first, l2, l1)
    # a step edge has a strong second derivative beside it too, but with a strong slope: a line
    # has none at its centre
    slope = np.hypot(cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3))
    mag = np.maximum(np.abs(big) - _RIDGE_SLOPE * slope, 0.0)
    return np.where(np.abs(small) < 0.5 * np.abs(big), np.sign(big) * mag, 0.0).astype(np.float32)


# --- the frame's working context ------------------------------------------------------------------
@dataclass
class _Ctx:
    roi: tuple[int, int, int, int]
    scale: float
    plate: np.ndarray
    out: np.ndarray
    lab_p: np.ndarray
    lab_o: np.ndarray
    lmo: np.ndarray | None
    lmp: np.ndarray | None
    H: float
    changed: np.ndarray
    diff: np.ndarray
    head: np.ndarray  # bool: the new head's footprint
    face: np.ndarray  # bool: the output's face oval
    old: np.ndarray  # bool: the plate's old head (head mode) or face oval
    neck: np.ndarray  # bool: the neck allowance
    hair: np.ndarray | None  # float 0..1: the source's hair, placed (head mode)
    person: np.ndarray | None  # float 0..1


def _roi(lms: list[np.ndarray], shape: tuple[int, int]) -> tuple[int, int, int, int]:
    h, w = shape[:2]
    pts = []
    for lm in lms:
        ff = face_frame(lm)
        pts += [ff.point(s * 2.0 * ff.width, b * ff.height) for s in (-1, 1) for b in (1.3, -2.4)]
    p = np.asarray(pts)
    x0, y0 = np.clip(np.floor(p.min(0)).astype(int), 0, (w, h))
    x1, y1 = np.clip(np.ceil(p.max(0)).astype(int) + 1, 0, (w, h))
    return int(x0), int(y0), int(x1), int(y1)


def _stable_similarity(look: SourceLook, lmo: np.ndarray) -> np.ndarray:
    """The affine matrix of the similarity taking the source's stable landmarks onto ``lmo``'s."""
    slm = np.asarray(look.landmarks, np.float64)
    return similarity_matrix(*similarity_align(slm[_STABLE, :2], lmo[_STABLE, :2]))


def _warp_source(look: SourceLook, lmo: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """The source image mesh-warped onto ``lmo`` (face) and carried by the stable-point
    similarity elsewhere, on a crop of ``shape``; with its matte and hair weight (None without
    a head)."""
    h, w = shape[:2]
    slm = np.asarray(look.landmarks, np.float64)
    M = _stable_similarity(look, lmo)
    rgb = cv2.warpAffine(look.rgb, M, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    alpha = hair = None
    if look.alpha is not None:
        alpha = cv2.warpAffine(look.alpha, M, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        hair = cv2.warpAffine(look.hair.astype(np.float32), M, (w, h), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    # the face: piecewise affine along the mesh, so features land where the output's are
    dst = extended_points(lmo)
    src = extended_points(slm)
    ring = dst[len(lmo) + 1:, :2]
    fx0, fy0 = np.maximum(np.floor(ring.min(0)).astype(int), 0)
    fx1, fy1 = np.minimum(np.ceil(ring.max(0)).astype(int) + 1, (w, h))
    if fx1 - fx0 >= 2 and fy1 - fy0 >= 2:
        box = (int(fx0), int(fy0), int(fx1), int(fy1))
        labels = rasterise_triangles(dst, FACE_TRIANGLES, box)
        mx, my = triangle_maps(labels, triangle_affines(dst, src, FACE_TRIANGLES), box)
        face = cv2.remap(look.rgb, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        on = labels >= 0
        np.copyto(rgb[fy0:fy1, fx0:fx1], face, where=on[..., None])
    return rgb, alpha, hair


def _context(plate: np.ndarray, output: np.ndarray, lmp: np.ndarray | None, lmo: np.ndarray | None, look: SourceLook,
             mode: str, person: np.ndarray | None) -> _Ctx:
    ref = lmo if lmo is not None else lmp
    roi = _roi([x for x in (lmo, lmp) if x is not None], plate.shape)
    x0, y0, x1, y1 = roi
    H0 = max(face_frame(ref).height, 1.0)
    scale = min(1.0, WORK_FACE_PX / H0)
    size = (max(1, int(round((x1 - x0) * scale))), max(1, int(round((y1 - y0) * scale))))

    def crop(img: np.ndarray, interp=cv2.INTER_AREA) -> np.ndarray:
        c = np.ascontiguousarray(img[y0:y1, x0:x1])
        return c if scale == 1.0 else cv2.resize(c, size, interpolation=interp)

    def move(lm: np.ndarray | None) -> np.ndarray | None:
        if lm is None:
            return None
        out = (lm - (x0, y0, 0)) * scale
        return out

    p, o = crop(plate), crop(output)
    lmo_c, lmp_c = move(lmo), move(lmp)
    shape = p.shape[:2]
    geo = lmo_c if lmo_c is not None else lmp_c
    ff = face_frame(geo)
    H = ff.height
    diff = cv2.absdiff(cv2.blur(p, (3, 3)), cv2.blur(o, (3, 3))).max(axis=2)
    changed = _open(diff > CHANGE_THRESHOLD, 1)
    face = _poly(geo, shape) > 0
    if mode == "head" and look.alpha is not None:
        alpha_w, hair_w = _warp_alpha(look, geo, shape)
        head = (alpha_w > 0.3) | face
    else:
        head = face.copy()
        hair_w = None
    pers = None
    if person is not None:
        pm = np.asarray(person)
        pm = pm.astype(np.float32) if pm.dtype == np.bool_ else (pm.astype(np.float32) / 255.0 if pm.dtype == np.uint8 else pm.astype(np.float32))
        pers = crop(pm, cv2.INTER_LINEAR)
    if mode == "head" and lmp_c is not None:
        region = head_region(lmp_c, shape, cut_below_chin=0.05) > 0
        if pers is not None:
            # the head the swap must remove, not the shoulders a close-up shows beside the jaw
            # (found on the whole frame: the chest under the crop tells clothing from hair)
            pm_u8 = np.clip(pm * 255.0 + 0.5, 0, 255).astype(np.uint8)
            m = old_head_mask(plate, pm_u8, lmp, cut_below_chin=0.05, roi=roi).astype(np.uint8)
            old = (m if scale == 1.0 else cv2.resize(m, size, interpolation=cv2.INTER_NEAREST)) > 0
        else:
            pf = face_frame(lmp_c)
            xs, ys = pixel_grid((0, 0, shape[1], shape[0]))
            lat, below = pf.coords(xs, ys)
            mid = -0.6 * pf.height
            old = region & (((lat / (0.85 * pf.width)) ** 2 + ((below - mid) / (0.75 * pf.height)) ** 2) <= 1.0)
    elif lmp_c is not None:
        old = _poly(lmp_c, shape) > 0
    else:
        old = np.zeros(shape, bool)
    xs, ys = pixel_grid((0, 0, shape[1], shape[0]))
    lat, below = ff.coords(xs, ys)
    neck = (np.abs(lat) < 0.5 * ff.width) & (below > -0.2 * H) & (below < (0.6 if mode == "head" else 0.1) * H)
    return _Ctx(roi=roi, scale=scale, plate=p, out=o, lab_p=cielab(p), lab_o=cielab(o), lmo=lmo_c if lmo_c is not None else lmp_c, lmp=lmp_c, H=H,
                changed=changed, diff=diff, head=head, face=face, old=old, neck=neck, hair=hair_w, person=pers)


def _warp_alpha(look: SourceLook, lmo: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The source's head matte and hair weight carried onto a crop of ``shape`` by the similarity
    on the stable landmarks (how a head swap places the head)."""
    h, w = shape[:2]
    M = _stable_similarity(look, lmo)
    both = cv2.warpAffine(np.dstack([look.alpha, look.hair.astype(np.float32), np.zeros_like(look.alpha)]), M, (w, h),
                          flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return both[..., 0], both[..., 1]


# --- the detectors ------------------------------------------------------------------------------
def _foreign_pieces(c: _Ctx, look: SourceLook) -> tuple[float, np.ndarray]:
    H = c.H
    allowed = _grow(c.head | c.neck, 0.06 * H) | _grow(c.old, 0.06 * H)
    cand = c.changed & ~allowed
    # under the chin a swap may change the neck, but only into skin: a collar, a shirt or an
    # object carried over from the source (paler or of another hue than the new face's skin, and
    # unlike the plate there) is a foreign piece too
    if c.lmo is not None:
        sk = skin_model(c.lab_o, c.lmo)
        if sk is not None:
            med, spread = sk
            # the neck, and the face's lowest part (the chin, below the lips)
            ff = face_frame(c.lmo)
            xs, ys = pixel_grid((0, 0, c.out.shape[1], c.out.shape[0]))
            _, below = ff.coords(xs, ys)
            zone = c.changed & _grow(c.neck, 0.06 * H) & ~(_grow(c.face, 0.02 * H) & (below < -0.12 * H))
            lab = c.lab_o
            pale = lab[..., 0] > med[0] + max(8.0, 2.5 * spread[0])
            # another hue, but not dark: a beard or a shadow is not a foreign piece
            hue = (np.linalg.norm(lab[..., 1:] - med[1:], axis=2) > max(11.0, 2.5 * float(np.linalg.norm(spread[1:])))) \
                & (lab[..., 0] > med[0] - 10.0)
            near_plate = np.linalg.norm(lab - _blur(c.lab_p, max(1.0, 0.03 * H)), axis=2) < 20.0
            found_neck = zone & (pale | hue) & ~near_plate
            if c.hair is not None:
                # the source's hair hangs there, rightly; but its hair matte can hold a collar
                # (a white collar under dark hair): what is far from the hair's colour stays
                hairlike = c.hair >= 0.3
                if look.hair_lab is not None:
                    hairlike &= np.linalg.norm(lab - look.hair_lab, axis=2) < 25.0
                found_neck &= ~hairlike
            cand |= found_neck
    cand = _open(cand, 0.015 * H)
    found = _big_components(cand, 0.002 * H * H)
    return 100.0 * found.sum() / max(c.head.sum(), 1), found


def _hf(L: np.ndarray, sigma: float) -> np.ndarray:
    return L - cv2.GaussianBlur(L, (0, 0), sigma)


def _leftover(c: _Ctx) -> tuple[float, np.ndarray]:
    H = c.H
    zone = _shrink(c.old, 0.02 * H) & ~_grow(c.head, 0.04 * H) & ~(c.neck & ~c.old)
    if not zone.any():
        return 0.0, zone
    Lp, Lo = c.lab_p[..., 0], c.lab_o[..., 0]
    hp, ho = _hf(Lp, 1.5), _hf(Lo, 1.5)
    k = max(3, int(round(0.06 * H)) | 1)
    cov = cv2.blur(hp * ho, (k, k))
    vp = cv2.blur(hp * hp, (k, k))
    vo = cv2.blur(ho * ho, (k, k))
    corr = cov / np.sqrt(vp * vo + 1e-6)
    slope = cov / (vp + 1e-6)
    partial = (corr > 0.6) & (slope > 0.2) & (vp > 2.0)
    # colour: where the old head differs from the background around it, a ghost of it sits
    # between the two: out = a * plate + (1 - a) * background, with a the ghost's opacity
    ref = (~c.changed & ~_grow(c.old | c.head, 0.03 * H)).astype(np.float32)
    bg, wsum = _masked_blur(c.lab_p, ref, 0.15 * H)
    dp = c.lab_p - bg
    n2 = (dp ** 2).sum(axis=2)
    a_hat = ((c.lab_o - bg) * dp).sum(axis=2) / np.maximum(n2, 1e-6)
    a_hat = cv2.blur(a_hat.astype(np.float32), (k, k))
    ghost = (n2 > 20.0 ** 2) & (wsum > 0.05) & (a_hat > 0.25)
    partial |= ghost
    same = c.diff <= CHANGE_THRESHOLD  # opaque: the plate unchanged
    found = zone & (same | partial)
    found = _open(found, 0.01 * H)
    found = _big_components(found, 0.002 * H * H)
    return 100.0 * found.sum() / max(c.head.sum(), 1), found


def _palette(px: np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray] | None:
    """k-means colour centres (CIELAB) of a set of pixels and each cluster's RMS spread."""
    if len(px) < 4 * k:
        return None
    sample, labels, centres = lab_clusters(px, k, max_samples=3000)
    spread = np.array([np.sqrt(((sample[labels == i] - centres[i]) ** 2).sum(1).mean()) if (labels == i).any() else 0.0
                       for i in range(k)], np.float32)
    return centres, spread


def _fill_artefacts(c: _Ctx) -> tuple[float, np.ndarray]:
    H = c.H
    fill = c.changed & ~_grow(c.head, 0.03 * H) & _grow(c.old, 0.1 * H)
    if not fill.any():
        return 0.0, fill
    # the plate's own colours around: unchanged plate pixels outside both heads; a filled pixel
    # should take one of them (background, body, clothes); far from all of them is a blob/smear
    ref_m = ~c.changed & ~_grow(c.old | c.head, 0.03 * H) & _grow(c.old, 0.6 * H)
    ref = ref_m.astype(np.float32)
    lo = cv2.GaussianBlur(c.lab_o, (0, 0), 1.0)
    # not the plate's edges: their mixed colours (green screen half over a dark shirt) would
    # excuse any blob of that mixture
    Lp_s = cv2.GaussianBlur(c.lab_p[..., 0], (0, 0), 1.0)
    flat = ref_m & (np.hypot(cv2.Sobel(Lp_s, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(Lp_s, cv2.CV_32F, 0, 1, ksize=3)) < 12.0)
    pal = _palette(c.lab_p[flat if flat.sum() >= 300 else ref_m])
    if pal is None:
        return math.nan, np.zeros(fill.shape, bool)
    centres, spread = pal
    ys, xs = np.nonzero(fill)
    d = np.linalg.norm(lo[ys, xs][:, None, :] - centres[None], axis=2) - 1.5 * spread[None]
    bad = np.zeros(fill.shape, bool)
    bad[ys, xs] = d.min(axis=1) > 14.0
    known = np.ones(fill.shape, bool)
    # streaks: strong gradients of one direction (fine ones too: no blur first) where the plate
    # around has no such texture, and, outside the old head, where the plate itself had none
    def tensor(L: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        gx = cv2.Sobel(L, cv2.CV_32F, 1, 0, ksize=3)
        gy = cv2.Sobel(L, cv2.CV_32F, 0, 1, ksize=3)
        s = max(1.0, 0.03 * H)
        jxx = cv2.GaussianBlur(gx * gx, (0, 0), s)
        jyy = cv2.GaussianBlur(gy * gy, (0, 0), s)
        jxy = cv2.GaussianBlur(gx * gy, (0, 0), s)
        energy = jxx + jyy
        return energy, np.sqrt((jxx - jyy) ** 2 + 4 * jxy ** 2) / (energy + 1e-6)

    energy, coh = tensor(c.lab_o[..., 0])
    e_plate, _ = tensor(c.lab_p[..., 0])
    e_ref, _ = _masked_blur(e_plate, ref, 0.15 * H)
    streak = (coh > 0.5) & (energy > np.maximum(1.5 * e_ref, 100.0)) & (c.old | (energy > 2.0 * e_plate))
    # the change map's 3x3 blur averages one-pixel streaks away: here changed pixels are taken
    # unblurred too, and the zone is grown over the rows between them
    raw = cv2.absdiff(c.plate, c.out).max(axis=2) > CHANGE_THRESHOLD
    zone = _grow(c.changed | raw, 0.02 * H) & ~_grow(c.head, 0.03 * H) & _grow(c.old, 0.1 * H)
    found = known & ((fill & bad) | (zone & streak))
    found = _open(found, 0.01 * H)
    found = _big_components(found, 0.002 * H * H)
    return 100.0 * found.sum() / max(c.head.sum(), 1), found


#: a new line: its ridge response above this many times the strongest same-polarity ridge of the
#: source or the plate within _IE_NEAR face heights, and above _IE_FLOOR; in lines of at least
#: _IE_MIN face heights (pixels counted); tuned on benchmarks/qc_detectors.py
_IE_FACTOR, _IE_FLOOR, _IE_NEAR, _IE_MIN = 1.5, 2.5, 0.05, 0.08


def _inner_edges(c: _Ctx, look: SourceLook) -> tuple[float, np.ndarray]:
    H = c.H
    lm = c.lmo
    shape = c.out.shape[:2]
    zone = _grow(c.face, 0.08 * H)
    feats = face_skin_mask(lm, shape, margin_px=max(1, round(0.03 * H))) > 0
    zone &= ~(c.face & ~feats)  # eyes, brows, lips out
    src_rgb, _, hair = _warp_source(look, lm, shape)
    if hair is not None:
        zone &= hair < 0.5
    zone &= c.changed | c.face
    Lo = c.lab_o[..., 0]
    ro = _ridge(Lo)
    rp = _ridge(c.lab_p[..., 0])
    rs = _ridge(cielab(src_rgb)[..., 0])
    r = max(1.0, _IE_NEAR * H)
    new = np.zeros(zone.shape, bool)
    for sign in (1.0, -1.0):  # a dark line is excused by a dark line only, a bright one by a bright one
        o, p_, s_ = (np.maximum(sign * x, 0.0) for x in (ro, rp, rs))
        allow = cv2.dilate(np.maximum(p_, s_), _disk(r))
        new |= o > np.maximum(_IE_FACTOR * allow, _IE_FLOOR)
    new = _big_components(zone & new, _IE_MIN * H)
    return float(new.sum() / 2.0 / H), new


#: skin-colour blotches: a pixel's chroma (CIELAB a, b) is foreign when it is this many robust
#: spreads from what the output face's skin has at the pixel's lightness, and from what the
#: plate face's skin has (skin's chroma follows its lightness: a shadow is more saturated, a
#: highlight paler; a grey patch is pale at any lightness) ...
_CB_SKIN_Z = 7.0
#: (in the neck zone below the face)
_CB_NECK_Z = 5.0
#: ... and this many from the plate's skin (whose spread is wider: a lined face, grey stubble)
_CB_PLATE_Z = 3.0
#: ... the spreads floored at this (CIELAB units)
_CB_SPREAD = 2.5
#: in head mode the neck is looked at down to this far below the chin, ...
_CB_NECK_DOWN = 0.3
#: ... on pixels at most this much lighter (CIELAB L) than the face's median skin
_CB_NECK_BRIGHT = 5.0
#: ... and the source's hair matte is trusted above this (face heights below the chin) and
#: beyond this (face widths from the middle)
_CB_JAW = -0.1
_CB_NECK_HALF = 0.4
#: ... and there the colours the plate has within this (face heights) of its head and neck are left out: bins of
#: _CB_BIN CIELAB units (with their neighbours), at least this share of the plate pixels there
_CB_PLATE_AROUND = 0.15
_CB_BIN = 4
_CB_PLATE_SHARE = 0.001
#: ... colours within this CIELAB distance of the source's hair are hair (above the jaw) ...
_CB_HAIR_DE = 12.0
#: ... and the face's edge (this far in, face heights) and the neck are judged against the plate's
#: colours around them
_CB_EDGE = 0.06
#: the skin fit takes about this many pixels
_CB_FIT_PX = 3000
#: features kept out of the skin test, grown by this (face heights)
_CB_FEATURE_MARGIN = 0.04
_FEATURES = [np.asarray(p, np.int64) for p in (LEFT_EYE, RIGHT_EYE, LIPS_OUTER)]
_BROW_IDX = [np.asarray(p, np.int64) for p in (LEFT_EYEBROW, RIGHT_EYEBROW)]
#: nostrils: the points around the nose tip (alae and columella)
_NOSTRILS = np.asarray((98, 97, 2, 326, 327, 294, 278, 344, 440, 275, 4, 45, 220, 115, 48, 64), np.int64)


def _skin_fit(lab: np.ndarray, lm: np.ndarray, H: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, float] | None:
    """A face's skin chroma as a function of its lightness: (coef (2, 2): a and b = c0 + c1 L,
    robust spread (2,) of the residuals, floored, L range (2,) the fit holds over, median L);
    None without enough skin."""
    skin = face_skin_mask(lm, lab.shape[:2], margin_px=max(1, round(0.03 * H))) > 0
    px = lab[skin]
    if len(px) < 30:
        return None
    px = px[:: max(1, len(px) // _CB_FIT_PX)].astype(np.float64)  # a sample is enough for 6 numbers
    X = np.stack([np.ones(len(px)), px[:, 0]], axis=1)
    keep = np.ones(len(px), bool)
    for _ in range(2):  # a second pass without the outliers of the first (stray hair, shadows)
        coef, *_ = np.linalg.lstsq(X[keep], px[keep, 1:3], rcond=None)
        res = px[:, 1:3] - X @ coef
        mad = np.median(np.abs(res[keep]), axis=0) * 1.4826
        keep = (np.abs(res) <= 3 * np.maximum(mad, _CB_SPREAD)).all(axis=1)
        if keep.sum() < 30:
            return None
    coef, *_ = np.linalg.lstsq(X[keep], px[keep, 1:3], rcond=None)
    res = px[keep, 1:3] - X[keep] @ coef
    mad = np.maximum(np.median(np.abs(res), axis=0) * 1.4826, _CB_SPREAD)
    lr = np.percentile(px[keep, 0], [2, 98])
    return coef, mad, lr, float(np.median(px[keep, 0]))


def _skin_z(lab: np.ndarray, fit: tuple[np.ndarray, np.ndarray, np.ndarray, float]) -> np.ndarray:
    coef, mad, lr, _ = fit
    L = np.clip(lab[..., 0], lr[0], lr[1])
    pred = coef[0] + L[..., None] * coef[1]
    return np.sqrt((((lab[..., 1:3] - pred) / mad) ** 2).sum(axis=-1))


def _plate_colours(lab_p: np.ndarray, lab_o: np.ndarray, around: np.ndarray, where: np.ndarray) -> np.ndarray:
    """bool: pixels of ``where`` whose CIELAB colour (bins of _CB_BIN) the plate has within ``around``."""
    out = np.zeros(where.shape, bool)
    if not where.any() or not around.any():
        return out
    nb = (101 // _CB_BIN + 2, 2 * _AB // _CB_BIN + 2, 2 * _AB // _CB_BIN + 2)

    def bins(px: np.ndarray) -> np.ndarray:
        i = np.clip(np.round(px[:, 0] / _CB_BIN).astype(int), 0, nb[0] - 1)
        j = np.clip(np.round((px[:, 1] + _AB) / _CB_BIN).astype(int), 0, nb[1] - 1)
        k = np.clip(np.round((px[:, 2] + _AB) / _CB_BIN).astype(int), 0, nb[2] - 1)
        return (i * nb[1] + j) * nb[2] + k

    hist = np.bincount(bins(lab_p[around]), minlength=nb[0] * nb[1] * nb[2]).reshape(nb).astype(np.float32)
    # neighbouring bins count: a colour one bin off is the same colour
    hist = cv2.dilate(hist.reshape(nb[0], -1), np.ones((3, 1), np.uint8)).reshape(nb)
    hist = np.stack([cv2.dilate(h, np.ones((3, 3), np.uint8)) for h in hist])
    out[where] = hist.reshape(-1)[bins(lab_o[where])] >= max(_CB_PLATE_SHARE * around.sum(), 3.0)
    return out


def _features(lm: np.ndarray, shape: tuple[int, int], r: float) -> np.ndarray:
    """Eyes, brows, mouth and nostrils of a face, grown by ``r`` pixels."""
    m = np.zeros(shape[:2], np.uint8)
    polys = [np.round(lm[p, :2] * 16).astype(np.int32) for p in _FEATURES]
    polys += [cv2.convexHull(np.round(lm[p, :2] * 16).astype(np.int32)) for p in (*_BROW_IDX, _NOSTRILS)]
    cv2.fillPoly(m, polys, 255, shift=4)
    cv2.polylines(m, polys, True, 255, thickness=2 * max(1, int(round(r))) + 1, shift=4)
    return m > 0


def _colour_blotches(c: _Ctx, look: SourceLook, mode: str) -> tuple[float, np.ndarray]:
    H = c.H
    zone = _grow(c.face, 0.03 * H) | (c.head if mode == "head" else False)
    zone &= c.changed | c.face
    # 1. chroma (a, b) foreign to the source head's colours, to those moved to the plate's skin
    # and to the plate's face (a blue, green or purple blotch)
    hist = look.chroma.copy()
    shift = np.zeros(2)
    if c.lmp is not None:
        sk = skin_model(c.lab_p, c.lmp)
        if sk is not None and look.skin_lab is not None:
            shift = sk[0][1:] - look.skin_lab[1:]
        plate_face = c.lab_p[_poly(c.lmp, c.lab_p.shape[:2]) > 0]
        hist = hist + _chroma_hist(plate_face)
    if np.abs(shift).max() >= 1:
        M = np.float32([[1, 0, shift[1]], [0, 1, shift[0]]])
        hist = hist + cv2.warpAffine(look.chroma, M, hist.shape[::-1])
    ab = np.clip(np.round(c.lab_o[..., 1:3]).astype(int) + _AB, 0, 2 * _AB - 1)
    dens = hist[ab[..., 0], ab[..., 1]]
    foreign = zone & (dens < 2e-6)
    foreign = _open(foreign, 0.01 * H)
    # 2. on the new head's skin: a colour (shading left out) foreign to the output face's own skin
    # and to the plate's skin (a grey, grey-green or bluish patch: near-zero chroma is common in
    # any head's histogram, hair and shadows, so the chroma test cannot see it)
    skin = _skin_blotches(c, look, mode)
    if skin is not None:
        foreign |= skin
    foreign = _big_components(foreign, 0.002 * H * H)
    return 100.0 * foreign.sum() / max(c.face.sum(), 1), foreign


def _skin_blotches(c: _Ctx, look: SourceLook, mode: str) -> np.ndarray | None:
    H = c.H
    full = np.zeros(c.face.shape, bool)
    # everything on the box around the faces and the neck (the context's crop is much larger)
    x, y, bw, bh = cv2.boundingRect((c.face | c.neck | c.old).astype(np.uint8))
    if bw == 0 or bh == 0:
        return None
    pad = int(math.ceil((_CB_PLATE_AROUND + 0.05) * H))
    x0, y0 = max(0, x - pad), max(0, y - pad)
    x1, y1 = min(full.shape[1], x + bw + pad), min(full.shape[0], y + bh + pad)
    box = (slice(y0, y1), slice(x0, x1))
    shift = np.array([x0, y0, 0.0])
    lmo = c.lmo - shift
    face_m, neck_m, old_m, changed = c.face[box], c.neck[box], c.old[box], c.changed[box]
    sig = max(0.5, 0.008 * H)
    lab_o = cv2.GaussianBlur(c.lab_o[box], (0, 0), sig)
    lab_p = c.lab_p[box]
    fo = _skin_fit(lab_o, lmo, H)
    if fo is None:
        return None
    fp = _skin_fit(cv2.GaussianBlur(lab_p, (0, 0), sig), c.lmp - shift, H) if c.lmp is not None else None
    face = _grow(face_m, 0.03 * H)
    skin = face.copy()
    if mode == "head":
        # the neck below the new chin, where the old chin/neck may show through: down to the
        # collar, pixels no darker than the face's skin and not much lighter than its median
        # (a neck is in the face's shade; a white collar, a dark suit are not skin)
        ff = face_frame(lmo)
        lat, below = ff.coords(*pixel_grid((0, 0, x1 - x0, y1 - y0)))
        L = lab_o[..., 0]
        neck = neck_m & (below < _CB_NECK_DOWN * H) & (L >= fo[2][0]) & (L <= fo[3] + _CB_NECK_BRIGHT)
        skin |= neck
        # under the jaw the source's hair matte often holds the source's own neck and collar,
        # where the old neck shows through: it is trusted above the jaw only
        under_jaw = neck & (below > _CB_JAW * H) & (np.abs(lat) < _CB_NECK_HALF * ff.width)
        if c.hair is not None:
            skin &= ~(_grow(c.hair[box] > 0.3, 0.02 * H) & ~under_jaw)
        if look.hair_lab is not None:  # strands the matte missed
            hair_like = np.sqrt(((lab_o - look.hair_lab.astype(np.float32)) ** 2).sum(axis=2)) < _CB_HAIR_DE
            skin &= ~(hair_like & ~under_jaw)
    skin &= changed  # the plate's own pixels are not the swap's blotch
    skin &= ~_features(lmo, skin.shape, _CB_FEATURE_MARGIN * H)
    # away from the face's middle, the plate's own colours around it (its hair, collar, shirt,
    # the clean plate's fill) are not a blotch (head mode: around the neck; the plate's old head
    # is gone, and its grey hair or hat could pass for any grey patch)
    edge = skin & ~_shrink(face_m, _CB_EDGE * H)
    around = _grow(neck_m if mode == "head" else old_m, _CB_PLATE_AROUND * H)
    skin &= ~_plate_colours(lab_p, lab_o, around, edge)
    # the colour test, on the candidates only
    px = lab_o[skin]
    z = _skin_z(px, fo)
    hit = z > np.where(face[skin], _CB_SKIN_Z, _CB_NECK_Z)
    if fp is not None:
        hit &= _skin_z(px, fp) > _CB_PLATE_Z
    found = np.zeros(skin.shape, bool)
    found[skin] = hit
    full[box] = _open(found, 0.015 * H)
    return full


def _hair_colour(c: _Ctx, look: SourceLook) -> tuple[float, np.ndarray]:
    band = hair_band(c.lmo, c.out.shape[:2])
    if look.hair_lab is None:
        return math.nan, np.zeros(band.shape, bool)
    col = band_colour(c.out, c.lmo)
    if col is None:
        return math.nan, np.zeros(band.shape, bool)
    return float(np.linalg.norm(col - look.hair_lab)), band


def _bands(L: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """Mean absolute fine band (L - G(0.8)) and mid band (G(0.8) - G(2.5)) of L over ``mask``."""
    g1 = cv2.GaussianBlur(L, (0, 0), 0.8)
    g2 = cv2.GaussianBlur(g1, (0, 0), math.sqrt(2.5 ** 2 - 0.8 ** 2))
    return float(np.abs(L - g1)[mask].mean()), float(np.abs(g1 - g2)[mask].mean())


def _sharpness(c: _Ctx) -> tuple[float, np.ndarray]:
    H = c.H
    mo = _shrink(c.face, 0.05 * H)
    mp = _shrink(_poly(c.lmp, c.out.shape[:2]) > 0, 0.05 * H)
    if mo.sum() < 50 or mp.sum() < 50:
        return math.nan, mo
    fo, so = _bands(c.lab_o[..., 0], mo)
    fp, sp = _bands(c.lab_p[..., 0], mp)
    if min(fo, so, fp, sp) <= 1e-6:
        return math.nan, mo
    # the geometric mean of two ratios: fine detail out/plate (a blur takes it away, but a
    # source with more texture than the plate has more of it anyway) and the fine-to-mid slope
    # out/plate (a blur bends it whatever the texture's amount)
    return float(math.sqrt((fo / fp) * ((fo / so) / (fp / sp)))), mo


# --- the frame ----------------------------------------------------------------------------------
def measure_defects(plate: np.ndarray, output: np.ndarray, plate_landmarks: np.ndarray | None,
                    output_landmarks: np.ndarray | None, *, look: SourceLook, mode: str,
                    plate_person: np.ndarray | None = None) -> FrameDefects:
    """Every :data:`DEFECT_MEASURES` value of one frame and where each found its defect.

    ``plate``/``output``: RGB uint8 frames of one size; landmarks (478, 3) in pixels or None
    (no face); ``mode``: "head" or "face"; ``plate_person``: the plate person's mask (uint8
    0..255, float 0..1 or bool), optional. Where no face is found on the output (a face broken
    enough for the mesh to miss it), the output face is looked for where the plate's is (a swap
    follows the plate). Everything is NaN when neither has a face; ``leftover_plate_head`` and
    ``hair_colour_de`` are NaN in face mode, the plate measures (leftover, fill, sharpness) NaN
    without the plate's face.
    """
    plate = np.asarray(plate)
    output = np.asarray(output)
    if plate.shape != output.shape or plate.ndim != 3 or plate.shape[2] != 3:
        raise ValueError(f"plate {plate.shape} and output {output.shape} must be RGB frames of one size")
    h, w = plate.shape[:2]
    values = {m: math.nan for m in DEFECT_MEASURES}
    regions = {m: np.zeros((h, w), bool) for m in DEFECT_MEASURES}
    lmp, lmo = _valid(plate_landmarks), _valid(output_landmarks)
    if lmp is None and lmo is None:
        return FrameDefects(values, regions)
    c = _context(plate, output, lmp, lmo, look, mode, plate_person)
    head = mode == "head"
    found: dict[str, tuple[float, np.ndarray]] = {}
    found["foreign_pieces"] = _foreign_pieces(c, look)
    if head and c.lmp is not None:
        found["leftover_plate_head"] = _leftover(c)
    if c.lmp is not None:
        found["fill_artefacts"] = _fill_artefacts(c) if head else (0.0, np.zeros(c.changed.shape, bool))
    if c.lmo is not None:
        found["inner_edges"] = _inner_edges(c, look)
        found["colour_blotches"] = _colour_blotches(c, look, mode)
        if head:
            found["hair_colour_de"] = _hair_colour(c, look)
        if c.lmp is not None:
            found["sharpness"] = _sharpness(c)
    x0, y0, x1, y1 = c.roi
    for name, (value, region) in found.items():
        values[name] = float(value)
        if region.any():
            r = region.astype(np.uint8)
            if c.scale != 1.0:
                r = cv2.resize(r, (x1 - x0, y1 - y0), interpolation=cv2.INTER_NEAREST)
            regions[name][y0:y1, x0:x1] = r > 0
    return FrameDefects(values, regions)
