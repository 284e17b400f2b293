"""The ``classic`` HEAD swap: the source's whole head (face, hair, ears) onto plate frames, on CPU.

Pipeline (one :class:`SourceHead` per source photo, one :class:`HeadSwapper` per source, one
:meth:`HeadSwapper.swap` call per frame):

1. :func:`extract_source_head` cuts the head out of the source photo: selfie segmentation ∩ a
   head region built in the face's own frame (tilted with it): everything above a neck line a
   little below the chin, plus hair that hangs beside the neck down to a limit (pose shoulders or
   a geometric rule), never the neck column, shoulders or clothes.
2. Per frame, the head is placed by a similarity fitted on :data:`recast.models.retarget.STABLE_POINTS`
   (source → target landmarks), and the inner face is mesh-warped onto the target landmarks. The
   two warps are joined *as coordinate maps* (a ring of triangles around the face oval whose
   outer vertices follow the similarity), so there is one continuous warp and no double edge.
3. The plate's old head (:func:`old_head_mask`: person mask ∩ head region above the plate's
   chin, without the shoulders and clothing beside the jaw, with the hair hanging there; plus
   what beside it differs from the known clean plate: earrings, strands, the halo the mask
   leaves) is replaced by the clean plate where it is known and inpainted (TELEA, at low
   resolution) where it is not. What is inpainted under the jaw is reported (``guessed``).
4. The new head's skin is matched to the plate's per semantic region (LAB mean/std, a smooth
   field interpolated between region centres, HeSer's colour reference idea); hair is exempt.
5. Multi-band blend (fine bands follow the soft matte, coarse bands smooth the neck seam),
   mouth interior from the plate when the source's mouth is closed, occluders kept exactly.

Everything is computed on a region of interest around both heads; pixels farther than
:attr:`HeadSwapper.SPILL` face heights from the union of the old and the new head never change.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from recast.contracts import ModelRef
from recast.errors import InputError, NoFaceError, UnsupportedMediaError, UsageError
from recast.models.engines import (
    NEEDS_BACKGROUND,
    NEEDS_SKIN_STATS,
    NEEDS_SOURCE_HEAD,
    EngineOptions,
    PlateFrames,
    SwapResult,
    SwapSource,
    swap_frames,
)
from recast.models.masks import PersonSegmenter, face_skin_mask
from recast.models.mesh_topology import (
    CHIN_BOTTOM,
    FACE_OVAL,
    FOREHEAD_TOP,
    LEFT_EYEBROW,
    LIPS_INNER,
    NUM_LANDMARKS,
    RIGHT_EYEBROW,
)
from recast.models.mesh_warp import (
    FACE_TRIANGLES,
    MOUTH_TRIANGLES,
    laplacian_blend,
    rasterise_triangles,
    triangle_affines,
    triangle_maps,
)
from recast.models.retarget import STABLE_POINTS
from recast.models.similarity import similarity_align
from recast.models.swap_classic import magnifying_interpolation, usable_face_mask

__all__ = [
    "ClassicHeadEngine",
    "chosen_person_mask",
    "ColourMatch",
    "FaceFrame",
    "HeadFrame",
    "HeadSwapper",
    "MAX_SOURCE_YAW_DEG",
    "REGION_NAMES",
    "SourceHead",
    "cielab",
    "estimate_yaw",
    "extract_source_head",
    "face_frame",
    "head_region",
    "pixel_grid",
    "skin_colour_stats",
    "skin_model",
]

_N = NUM_LANDMARKS
_OVAL = np.asarray(FACE_OVAL, np.int64)
_STABLE = list(STABLE_POINTS)
_BROWS = list(LEFT_EYEBROW) + list(RIGHT_EYEBROW)

#: a source turned further than this (degrees of yaw) cannot give a frontal head
MAX_SOURCE_YAW_DEG = 45.0

# --- head geometry, in face heights (H: forehead top to chin) and face widths (W) -------------
#: the plate's old head is removed down to this far below its chin
_PLATE_CUT = 0.05
#: the source head is opaque down to this far below its chin ...
_NECK_OPAQUE = 0.10
#: ... and fades out to nothing at the neck line, this far below the chin
_NECK_LINE = 0.25
#: half-width of the neck column (in face widths) where nothing but the fading neck is kept
_NECK_HALF = 0.42
#: hair hanging beside the neck is kept down to this far below the chin at most
_HAIR_LIMIT = 0.6
#: without pose, hair below the chin is kept down to this (a geometric stand-in for shoulders)
_HAIR_LIMIT_NO_POSE = 0.45
#: the head region's half-width and its reach above the forehead top
_HEAD_HALF_WIDTH = 1.6
_HEAD_ABOVE = 1.1
#: hair beside the neck and under the jaw corners (below this far above the chin) must hang from
#: the hair above it
_JAW_CORNER = 0.25
#: ... across gaps of up to twice this (face heights), from pixels where more than this share
#: of the pixels around (within the bridge) is hair
_HAIR_BRIDGE = 0.02
_HAIR_DENSE = 0.25
#: what the person mask left of the old head (see ``_stray_old_head``) is looked for this far
#: (face heights) around it, among pixels whose person probability is at least this (of 255) and
#: that differ from the known clean plate by more than this (8-bit levels, largest channel)
_STRAY_REACH = 0.08
_STRAY_PERSON = 13
_STRAY_DIFF = 24
#: the plate's clothing in front of the new neck: chroma (a, b) this many spreads from the
#: plate's skin, the spread at least this (CIELAB units; a face's own spread can be tiny)
_CLOTHING_CHROMA_Z = 3.5
_CLOTHING_CHROMA_MIN_SPREAD = 3.0


# --- face frame ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class FaceFrame:
    """The face's own axes in image pixels: ``across`` (image-left eye to image-right eye) and
    ``down`` (towards the chin), the chin point, the oval centre and the face's height/width."""

    chin: np.ndarray
    centre: np.ndarray
    across: np.ndarray
    down: np.ndarray
    height: float
    width: float

    def coords(self, xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(lateral offset from the face centre, depth below the chin), in pixels."""
        dx, dy = xs - self.centre[0], ys - self.centre[1]
        lat = dx * self.across[0] + dy * self.across[1]
        ex, ey = xs - self.chin[0], ys - self.chin[1]
        below = ex * self.down[0] + ey * self.down[1]
        return lat, below

    def point(self, lat: float, below: float) -> np.ndarray:
        """Image point at ``lat`` pixels across from the centre line and ``below`` under the chin."""
        base = self.chin + (self.centre - self.chin) @ self.across * self.across
        return base + lat * self.across + below * self.down


def face_frame(lm: np.ndarray) -> FaceFrame:
    """The :class:`FaceFrame` of (478, 3) landmarks: the geometry every head-region rule here
    (and the hair metric of :mod:`recast.models.qc`) is measured in."""
    lm = np.asarray(lm, np.float64)
    # the eye line is steadier than the oval sides under expression and does not slide with yaw
    across = lm[263, :2] - lm[33, :2]
    across /= np.linalg.norm(across) + 1e-9
    down = np.array([-across[1], across[0]])
    chin = lm[CHIN_BOTTOM, :2]
    top = lm[FOREHEAD_TOP, :2]
    height = float(max((chin - top) @ down, 1.0))
    width = float(np.ptp(lm[_OVAL, :2] @ across))
    # a turned face looks narrow; limits that scale with width must not shrink with yaw
    width = max(width, 0.8 * height)
    return FaceFrame(chin=chin, centre=lm[_OVAL, :2].mean(0), across=across, down=down, height=height, width=width)


def pixel_grid(roi: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates of ``roi`` (x0, y0, x1, y1): float32 xs (1, W) and ys (H, 1), which
    broadcast to the ROI's shape (for :meth:`FaceFrame.coords`)."""
    x0, y0, x1, y1 = roi
    xs = np.arange(x0, x1, dtype=np.float32)[None, :]
    ys = np.arange(y0, y1, dtype=np.float32)[:, None]
    return xs, ys


def head_region(landmarks: np.ndarray, shape: tuple[int, int], *, cut_below_chin: float = _PLATE_CUT,
                roi: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """uint8 {0, 255} mask of the head region of a face (on ``roi`` of an image of ``shape``, or
    on the whole image): above a line ``cut_below_chin`` face heights under the chin, tilted with
    the face, within :data:`_HEAD_HALF_WIDTH` face widths of its centre line and up to
    :data:`_HEAD_ABOVE` face heights above the forehead top. Geometry only: intersect it with a
    person mask to get the head itself."""
    h, w = shape[:2]
    roi = roi or (0, 0, w, h)
    ff = face_frame(landmarks)
    xs, ys = pixel_grid(roi)
    lat, below = ff.coords(xs, ys)
    inside = (np.abs(lat) <= _HEAD_HALF_WIDTH * ff.width) & (below <= cut_below_chin * ff.height)
    inside &= below >= -(1.0 + _HEAD_ABOVE) * ff.height
    return inside.astype(np.uint8) * 255


#: beside and under the jaw, the old head's region holds only what is hair: outside the face oval
#: grown by this (face heights), below the jaw corners and beyond the neck column
_BODY_OVAL_MARGIN = 0.04
#: hair hanging there is followed only when every clothing colour is at least this many spreads
#: (the larger of the two) from the hair's median in some channel: black hair on a dark jacket
#: read 0.75, a dark-blonde strand on a grey jacket 2.45
_HAIR_CLOTHING_APART = 2.0


#: a chest colour is the skin in shadow (the neck under the jaw) when its lightness is between
#: these shares of the lit skin's ...
_SHADE_L = (0.35, 1.0)
#: ... its hue within this many degrees of the skin's ...
_SHADE_HUE_DEG = 15.0
#: ... and its chroma per lightness at least this share of the lit skin's (a shadow on skin is
#: as saturated as the lit skin or more, light scattered under the skin reddens it; grey or
#: blonde hair of the same hue is paler)
_SHADE_CHROMA = 0.9


def _shaded_skin(centres: np.ndarray, skin: tuple[np.ndarray, np.ndarray] | None) -> np.ndarray:
    """bool per LAB colour (centres (k, 3)): the lit ``skin`` (median, spread) darkened by
    shade, not a colour of its own. The skin test on the chest sample (within 3 spreads of the
    cheeks) misses the neck in the jaw's shadow: on a grey-blonde bob the shaded neck (L 58 and
    38 against the cheeks' 82) were the chest's "clothing" colours nearest the hair, and the hair
    hanging beside the jaw was no longer followed. Below about a third of the skin's lightness
    nothing is called shade, and a pale colour of the skin's hue is not either (hair)."""
    if skin is None:
        return np.zeros(len(centres), bool)
    L, a, b = centres[:, 0], centres[:, 1], centres[:, 2]
    sL, sa, sb = (float(v) for v in skin[0])
    t = L / max(sL, 1e-3)
    dhue = np.abs((np.degrees(np.arctan2(b, a) - np.arctan2(sb, sa)) + 180.0) % 360.0 - 180.0)
    c_per_l = np.hypot(a, b) / np.maximum(L, 1e-3)
    return ((t >= _SHADE_L[0]) & (t <= _SHADE_L[1]) & (dhue < _SHADE_HUE_DEG)
            & (c_per_l >= _SHADE_CHROMA * np.hypot(sa, sb) / max(sL, 1e-3)))


def _chest_clothing(rgb: np.ndarray, person: np.ndarray, ff: FaceFrame, skin: tuple[np.ndarray, np.ndarray] | None
                    ) -> tuple[np.ndarray, np.ndarray] | None:
    """LAB clusters (centres, spreads) of the clothing on the chest of a frame: the person's
    non-skin pixels in the neck column (long hair falls at the sides) from where the neck is
    opaque in a new head (a collar rises there) down to 0.6 face heights under the chin, less
    the clusters that are the skin in shade (:func:`_shaded_skin`); None when the frame shows
    too little of it (a close-up cut at the chin)."""
    H, W = ff.height, ff.width
    h, w = rgb.shape[:2]
    corners = np.array([ff.point(sg * _NECK_HALF * W, b * H) for sg in (-1, 1) for b in (_NECK_OPAQUE, 0.6)])
    x0, y0 = np.clip(np.floor(corners.min(0)).astype(int), 0, (w, h))
    x1, y1 = np.clip(np.ceil(corners.max(0)).astype(int) + 1, 0, (w, h))
    if x1 - x0 < 2 or y1 - y0 < 2:
        return None
    lat, below = ff.coords(*pixel_grid((x0, y0, x1, y1)))
    lab = cielab(rgb[y0:y1, x0:x1])
    chest = (person[y0:y1, x0:x1] >= 128) & (below > _NECK_OPAQUE * H) & (below < 0.6 * H) & (np.abs(lat) < _NECK_HALF * W)
    if skin is not None:
        chest &= (np.abs(lab - skin[0]) / skin[1]).max(axis=2) > 3.0
    k = _CLOTHING_CLUSTERS
    if chest.sum() < max(10 * k, 0.01 * H * H):
        return None
    centres, spreads = _clothing_clusters(lab[chest], max_samples=2000)
    cloth = ~_shaded_skin(centres, skin)
    if not cloth.any():
        return None
    return centres[cloth], spreads[cloth]


def _plate_collar(lab: np.ndarray, person: np.ndarray, oval: np.ndarray, lat: np.ndarray, below: np.ndarray, ff: FaceFrame,
                  clothing: tuple[np.ndarray, np.ndarray], skin: tuple[np.ndarray, np.ndarray] | None,
                  hair: tuple[np.ndarray, np.ndarray] | None) -> np.ndarray:
    """bool: the plate's collar in the neck column under the jaw corners, outside the face
    (``oval``, grown): person pixels of the chest's ``clothing`` colours, nearer them than the
    skin and the hair, that reach down to the chest. A hoodie's or a turtleneck's collar rises
    there beside the jaw; taken for old head, it was filled from around into a blurred box with
    the neck column's straight sides under the new chin."""
    H, W = ff.height, ff.width
    col = person & ~oval & (below > -_JAW_CORNER * H) & (below < 0.6 * H) & (np.abs(lat) <= _NECK_HALF * W)
    px = lab[col]
    z_c = _clothing_z(px, clothing)
    like = np.zeros(col.shape, bool)
    like[col] = (z_c < _CLOTHING_Z) & (z_c < _nearest_z(px, skin, hair))
    return _bridged_reach(like, like & (below > _NECK_OPAQUE * H), 0)


def old_head_mask(rgb: np.ndarray, person: np.ndarray, landmarks: np.ndarray, *, cut_below_chin: float = _PLATE_CUT,
                  roi: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """bool mask of a plate person's own head on ``roi`` (x0, y0, x1, y1) of the frame ``rgb``
    (the whole frame when None): the person (``person``, the frame's person probability, uint8
    0..255, >= 128) in the :func:`head_region` of ``landmarks`` (frame pixels), except the body.

    Beside and under the jaw (below the jaw corners, beyond the neck column, outside the face
    oval grown by :data:`_BODY_OVAL_MARGIN`) the head region also holds the shoulders and the
    clothing wherever the framing is close or the shoulders are raised: a close-up's shoulders
    reach above the chin, and removing them left a smeared torso. There only hair is head: the
    plate's hair colours (:func:`_hair_model`, nearer the hair than the skin) that hang from the
    hair beside the face, down to :data:`_HAIR_LIMIT_NO_POSE` face heights under the chin (long
    hair over the shoulders goes with the head), and that are unlike the clothing the chest
    shows under the neck. Where hair and clothing have the same colours (dark hair, a dark
    jacket) the body keeps what lies there: a strand left beside the neck is less wrong than a
    shoulder taken away."""
    h, w = rgb.shape[:2]
    roi = roi or (0, 0, w, h)
    x0, y0, x1, y1 = roi
    img = rgb[y0:y1, x0:x1]
    lm = np.asarray(landmarks, np.float64) - (x0, y0, 0)
    ff = face_frame(lm)
    H, W = ff.height, ff.width
    xs, ys = pixel_grid((0, 0, x1 - x0, y1 - y0))
    lat, below = ff.coords(xs, ys)
    person = np.asarray(person)
    p = person[y0:y1, x0:x1] >= 128
    region = head_region(lm, img.shape[:2], cut_below_chin=cut_below_chin) > 0
    oval = np.zeros(img.shape[:2], np.uint8)
    cv2.fillPoly(oval, [np.round(lm[_OVAL, :2] * 16).astype(np.int32)], 255, shift=4)
    m = max(1, round(_BODY_OVAL_MARGIN * H))
    oval = cv2.dilate(oval, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * m + 1,) * 2)) > 0
    body = (below > -_JAW_CORNER * H) & (np.abs(lat) > _NECK_HALF * W) & ~oval
    everything = p & region
    lower = body | ((below > cut_below_chin * H) & (np.abs(lat) > 0.3 * W))
    if not (p & lower).any():
        return everything
    lab = cielab(img)
    skin = skin_model(lab, lm)
    clothing = _chest_clothing(rgb, person, face_frame(np.asarray(landmarks, np.float64)), skin)
    if clothing is None:
        # a close-up cut at the chin shows no clothing to tell the body from hair, and rarely a
        # shoulder beside the jaw: the whole region goes, as the hair beside the neck must
        return everything
    hair_model = _hair_model(lab, p.astype(np.float32), ff, skin, lat, below)
    old = everything & ~body & ~_plate_collar(lab, p, oval, lat, below, ff, clothing, skin, hair_model)
    if hair_model is None:  # bald, or nothing above the forehead to learn hair from: the body stays
        return old
    centres, spreads = clothing
    apart = (np.abs(centres - hair_model[0]) / np.maximum(spreads, hair_model[1])).max(axis=1)
    if (apart < _HAIR_CLOTHING_APART).any():
        # the hair has a colour of the clothing (dark hair, a dark jacket): pixel by pixel the
        # jacket's shaded folds passed for strands hanging from the hair
        return old
    # the colour tests run only where hanging hair and what it hangs from can be (a fifth of the
    # ROI): over the whole ROI they cost ~60 ms a frame
    where = (p & (np.abs(lat) > 0.3 * W) & (np.abs(lat) <= _HEAD_HALF_WIDTH * W) & (below > -0.8 * H)
             & (below <= _HAIR_LIMIT_NO_POSE * H) & ~oval)
    px = lab[where]
    z_hair = (np.abs(px - hair_model[0]) / hair_model[1]).max(axis=1)
    like = z_hair < 3.0
    if skin is not None:
        like &= z_hair < (np.abs(px - skin[0]) / skin[1]).max(axis=1)
    hairlike = np.zeros(p.shape, bool)
    hairlike[where] = like
    g = max(1, round(_HAIR_BRIDGE * H))
    dense = (cv2.blur(hairlike.astype(np.float32), (2 * g + 1, 2 * g + 1)) > _HAIR_DENSE) & hairlike
    unlike_clothing = np.zeros(p.shape, bool)
    unlike_clothing[where] = _clothing_z(px, clothing) > _CLOTHING_Z + 1.0
    # hair beside the face above the jaw corners, where no body is: what hangs from it is hair,
    # unless it has the clothing's colours too
    seeds = dense & (below <= -_JAW_CORNER * H) & (np.abs(lat) > 0.45 * W)
    hanging = _bridged_reach(dense & unlike_clothing, seeds, g) & hairlike
    # what lies between strands (shadows, highlights the colour test missed) is hair too
    hanging = cv2.morphologyEx(hanging.astype(np.uint8), cv2.MORPH_CLOSE,
                               cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * g + 1,) * 2)) > 0
    return old | (hanging & p & lower)


# --- pose / yaw ---------------------------------------------------------------------------------
def estimate_yaw(landmarks: np.ndarray, image_size: tuple[int, int] | None = None) -> float:
    """Head yaw in degrees (0 = frontal, sign: nose towards the image's right is positive).

    Uses a PnP fit of a rigid face template (:func:`recast.models.metrics.head_pose`) when it
    succeeds; otherwise, or when it disagrees wildly, the 3-D direction of the eye-corner line
    (MediaPipe's z is a depth in the same pixel units as x), which needs no camera model.
    """
    lm = np.asarray(landmarks, np.float64)
    v = lm[263] - lm[33]
    z_yaw = math.degrees(math.atan2(v[2], v[0])) if lm.shape[1] >= 3 else float("nan")
    pnp = None
    if image_size is not None:
        from recast.models.metrics import head_pose  # local: metrics is only needed here

        pnp = head_pose(lm, image_size)
    if pnp is None or not np.isfinite(pnp[0]):
        return z_yaw if np.isfinite(z_yaw) else 0.0
    if np.isfinite(z_yaw) and abs(pnp[0] - z_yaw) > 25:
        # a bad PnP minimum (seen on strongly turned faces): trust the landmarks' own depth
        return z_yaw
    return float(pnp[0])


def _detect_pose(rgb: np.ndarray) -> np.ndarray | None:
    """(33, 4) MediaPipe Pose landmarks (x, y, z in pixels, visibility), None when none found."""
    from mediapipe.python.solutions import pose as _mp_pose

    # model_complexity=1 is the only pose model bundled with mediapipe 0.10.21 (see STACK.md)
    with _mp_pose.Pose(static_image_mode=True, model_complexity=1) as pose:
        res = pose.process(np.ascontiguousarray(rgb))
    if not res.pose_landmarks:
        return None
    h, w = rgb.shape[:2]
    return np.array([(p.x * w, p.y * h, p.z * w, p.visibility) for p in res.pose_landmarks.landmark], np.float64)


# --- source head --------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class SourceHead:
    """The source's head, cut out of its photo once and reused for every frame.

    ``rgb`` is a crop of the photo around the head (RGB uint8); ``landmarks`` (478, 3) are in
    that crop's pixels; ``alpha`` float32 0..1 is the soft head matte (face, hair, ears, a piece
    of neck fading out towards ``neck_line``); ``hair`` (bool) is the part of the matte that is
    hair (not face skin, ears, neck or facial features); ``neck_line`` (2, 2) are the two ends of
    the cut under the chin, in crop pixels.
    """

    rgb: np.ndarray
    landmarks: np.ndarray
    alpha: np.ndarray
    hair: np.ndarray
    neck_line: np.ndarray


def _person_prob(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    m = np.asarray(mask)
    if m.shape[:2] != tuple(shape[:2]):
        raise UsageError(f"person mask shape {m.shape} does not match the image {tuple(shape[:2])}")
    if m.dtype == np.bool_:
        return m.astype(np.float32)
    if m.dtype == np.uint8:
        return m.astype(np.float32) / 255.0
    return np.clip(m.astype(np.float32), 0.0, 1.0)


def cielab(rgb: np.ndarray) -> np.ndarray:
    """CIELAB in its own units (L 0..100, a/b about -128..127), float32."""
    return cv2.cvtColor(rgb.astype(np.float32) * (1.0 / 255.0), cv2.COLOR_RGB2LAB)


def skin_model(lab: np.ndarray, lm: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """LAB median and robust spread of the cheek-and-nose skin of a face."""
    h, w = lab.shape[:2]
    ff = face_frame(lm)
    skin = face_skin_mask(lm, (h, w), margin_px=max(1, round(0.03 * ff.height)))
    # below the brows only: the forehead may be covered by a fringe
    ys, xs = np.nonzero(skin)
    if len(ys) < 30:
        return None
    lat, below = ff.coords(xs.astype(np.float32), ys.astype(np.float32))
    brow = float(np.max(ff.coords(lm[_BROWS, 0], lm[_BROWS, 1])[1]))
    keep = below > brow
    px = lab[ys[keep], xs[keep]]
    if len(px) < 30:
        return None
    med = np.median(px, axis=0)
    mad = np.median(np.abs(px - med), axis=0) * 1.4826
    return med, np.maximum(mad, np.array([3.0, 2.0, 2.0]))


def _hair_model(lab: np.ndarray, person: np.ndarray, ff: FaceFrame, skin: tuple[np.ndarray, np.ndarray] | None,
                lat: np.ndarray, below: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """LAB median and spread of the hair: person pixels in a band above the forehead top and
    beside the temples, which are hair unless the person is bald (then None)."""
    band = (person > 0.5) & (below < -1.02 * ff.height) & (below > -1.35 * ff.height)
    band &= np.abs(lat) < 0.6 * ff.width
    px = lab[band]
    if skin is not None and len(px):
        z = np.abs(px - skin[0]) / skin[1]
        px = px[z.max(1) > 3.0]  # drop skin (a high forehead) from the hair sample
    if len(px) < 40:
        return None
    med = np.median(px, axis=0)
    mad = np.median(np.abs(px - med), axis=0) * 1.4826
    return med, np.maximum(mad, np.array([4.0, 3.0, 3.0]))


#: the source head's matte is refined with GrabCut on its box scaled so that the face is at most
#: this tall (pixels) ...
_GRABCUT_FACE_PX = 128.0
#: ... with this many iterations
_GRABCUT_ITERATIONS = 4
#: ... and above the jaw corners its cut is taken only this far beside the face's centre line
#: (face widths) and beyond
_GRABCUT_SIDE = 0.8
#: clothing colours: k-means clusters of the person's non-skin, non-hair pixels below the neck line
_CLOTHING_CLUSTERS = 4
#: a pixel below the chin within this many spreads of a clothing colour (and nearer it than the
#: skin and the hair) is clothing: cut from the head
_CLOTHING_Z = 2.5
#: how far above the chin (face heights) clothing is looked for outside the face: collars and
#: high necklines rise beside the jaw
_CLOTHING_ABOVE_CHIN = 0.4


def lab_clusters(px: np.ndarray, k: int, *, max_samples: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """k-means (k-means++, seeded: the same pixels give the same clusters) of at most
    ``max_samples`` of the (n, 3) colours ``px``, drawn with a fixed seed: (the sample float32,
    each sample's cluster, the (k, 3) centres)."""
    rng = np.random.default_rng(0)
    sample = px[rng.choice(len(px), min(len(px), max_samples), replace=False)].astype(np.float32)
    cv2.setRNGSeed(0)
    _, labels, centres = cv2.kmeans(sample, k, None, (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_MAX_ITER, 20, 0.5), 1,
                                    cv2.KMEANS_PP_CENTERS)
    return sample, labels.ravel(), centres


def _chest(lat: np.ndarray, below: np.ndarray, H: float, W: float) -> np.ndarray:
    """Where a photo shows the clothing: under the neck line, and beside the neck below the chin
    (the shoulders: a photo cropped at the chin shows its clothing only there)."""
    return (below > _NECK_LINE * H) | ((below > 0.0) & (np.abs(lat) > 0.6 * W))


def _clothing_model(lab: np.ndarray, person: np.ndarray, ff: FaceFrame, skin: tuple[np.ndarray, np.ndarray] | None,
                    hair: np.ndarray | None, lat: np.ndarray, below: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """LAB colour clusters (centres (k, 3), per-channel spreads (k, 3)) of the clothing: person
    pixels below the neck line that are neither skin nor ``hair`` (bool: the hair hanging from
    the head, which may fall over the chest). A collar, a shirt or a jacket starts there in
    almost every photo; None when that band holds too few such pixels (bare shoulders, a photo
    cut at the chin)."""
    H, W = ff.height, ff.width
    band = (person > 0.5) & _chest(lat, below, H, W) & (below < 1.2 * H) & (np.abs(lat) < 1.6 * W)
    if hair is not None:
        band &= ~hair
    px = lab[band]
    if skin is not None and len(px):
        px = px[(np.abs(px - skin[0]) / skin[1]).max(1) > 3.0]
    k = _CLOTHING_CLUSTERS
    if len(px) < max(10 * k, 0.01 * H * H):  # a few percent of a face's area at least
        return None
    return _clothing_clusters(px, max_samples=4000)


def _clothing_clusters(px: np.ndarray, *, max_samples: int) -> tuple[np.ndarray, np.ndarray]:
    """The clothing model of (n, 3) LAB colours: :data:`_CLOTHING_CLUSTERS` k-means centres and
    each one's robust per-channel spread (floored; infinite for a cluster of under 10 samples)."""
    k = _CLOTHING_CLUSTERS
    sample, labels, centres = lab_clusters(px, k, max_samples=max_samples)
    spreads = np.stack([np.median(np.abs(sample[labels == i] - centres[i]), axis=0) * 1.4826 if (labels == i).sum() >= 10
                        else np.full(3, np.inf, np.float32) for i in range(k)])
    return centres.astype(np.float64), np.maximum(spreads, np.array([4.0, 3.0, 3.0]))


def _clothing_z(lab: np.ndarray, model: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Per pixel of ``lab`` (..., 3): the distance, in spreads, to the nearest clothing colour."""
    centres, spreads = model
    z = np.full(lab.shape[:-1], np.inf)
    for c, sp in zip(centres, spreads):
        z = np.minimum(z, (np.abs(lab - c) / sp).max(axis=-1))
    return z


def _nearest_z(px: np.ndarray, *models: tuple[np.ndarray, np.ndarray] | None) -> np.ndarray:
    """Per colour of ``px`` (..., 3 LAB): the distance, in spreads (largest channel), to the
    nearest of the colour ``models`` (median, spread) that are not None; inf when all are."""
    z = np.full(px.shape[:-1], np.inf)
    for model in models:
        if model is not None:
            z = np.minimum(z, (np.abs(px - model[0]) / model[1]).max(axis=-1))
    return z


def _bridged_reach(mask: np.ndarray, seeds: np.ndarray, gap: int) -> np.ndarray:
    """bool: the pixels connected to any of ``seeds`` through ``mask`` (bool), across gaps of up
    to ``2 * gap`` pixels (the mask dilated by ``gap`` before its components are taken)."""
    bridged = cv2.dilate(mask.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * gap + 1,) * 2))
    _, cc = cv2.connectedComponents(bridged, connectivity=8)
    ids = np.unique(cc[seeds])
    return np.isin(cc, ids[ids > 0])


def _crop_box(alpha: np.ndarray, margin: int) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(alpha > 0.02)
    h, w = alpha.shape
    return (max(0, int(xs.min()) - margin), max(0, int(ys.min()) - margin),
            min(w, int(xs.max()) + 1 + margin), min(h, int(ys.max()) + 1 + margin))


def extract_source_head(rgb: np.ndarray, landmarks: np.ndarray, *, person_mask: np.ndarray | None = None,
                        pose_landmarks: np.ndarray | None = None, role_name: str = "source") -> SourceHead:
    """Cut the source's head (face + hair + ears, a fading piece of neck) out of a photo.

    ``rgb`` is the photo (RGB uint8), ``landmarks`` its face's (478, 3) landmarks in pixels.
    ``person_mask`` (H, W) is the person's probability (uint8 0..255, float 0..1 or bool); it is
    computed with MediaPipe selfie segmentation when None. ``pose_landmarks`` (33, 2..4) are
    MediaPipe Pose landmarks in pixels (4th column: visibility); computed with MediaPipe Pose
    when None. Their shoulders (11, 12) bound how far down long hair is kept.

    Raises :class:`~recast.errors.UnsupportedMediaError` (naming ``role_name``) when the face is
    in profile (|yaw| > :data:`MAX_SOURCE_YAW_DEG`) and :class:`~recast.errors.InputError` when
    the image border cuts the head off or segmentation finds no person on the face.
    """
    img = np.asarray(rgb)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise UsageError(f"source '{role_name}': image must be RGB uint8 (H, W, 3), got {img.dtype} {img.shape}")
    lm = np.asarray(landmarks, np.float64)
    if lm.shape != (_N, 3) or not np.isfinite(lm).all():
        raise NoFaceError(f"source '{role_name}': face landmarks must be finite ({_N}, 3), got {lm.shape}")
    h, w = img.shape[:2]
    _check_source_pose(lm, (h, w), role_name)

    if person_mask is None:
        with PersonSegmenter() as seg:
            person_mask = seg.segment(img)
    person = _person_prob(person_mask, (h, w))
    if pose_landmarks is None:
        pose_landmarks = _detect_pose(img)

    # work on a box that can hold any head this face may have, not on the whole photo
    x0, y0, x1, y1 = _head_box(face_frame(lm), (h, w))
    cut = _HeadCut(img[y0:y1, x0:x1], person[y0:y1, x0:x1], lm - (x0, y0, 0))
    limit = cut.hair_limit(pose_landmarks, offset=(x0, y0))
    alpha = cut.refine(cut.matte(limit))
    if float((alpha[face_skin_mask(cut.lm, alpha.shape) > 0] > 0.5).mean()) < 0.5:
        raise InputError(f"source '{role_name}': segmentation finds no person over the face, cannot cut out the head")
    alpha = _fade_at_photo_border(alpha, (x0, y0, x1, y1), (h, w), cut.ff.height)
    hair = cut.hair(alpha, limit)

    H, W = cut.ff.height, cut.ff.width
    cx0, cy0, cx1, cy1 = _crop_box(alpha, max(2, round(0.05 * H)))
    nl = np.array([cut.ff.point(-_NECK_HALF * W, _NECK_LINE * H), cut.ff.point(_NECK_HALF * W, _NECK_LINE * H)])
    off = np.array([cx0, cy0], np.float64)
    return SourceHead(
        rgb=np.ascontiguousarray(cut.rgb[cy0:cy1, cx0:cx1]),
        landmarks=(cut.lm - (cx0, cy0, 0)).astype(np.float32),
        alpha=np.ascontiguousarray(alpha[cy0:cy1, cx0:cx1]),
        hair=np.ascontiguousarray(hair[cy0:cy1, cx0:cx1]),
        neck_line=(nl - off).astype(np.float32),
    )


#: where the photo's border cuts the head, the matte fades to 0 over this share of a face height
_BORDER_FADE = 0.08


def _fade_at_photo_border(alpha: np.ndarray, box: tuple[int, int, int, int], shape: tuple[int, int], face_height: float) -> np.ndarray:
    """The matte on ``box`` faded out towards each photo border the head reaches (a face
    cropped tight): a soft end instead of the photo's straight edge pasted into the plate.
    Source vetting warns about such photos (``head_room``)."""
    x0, y0, x1, y1 = box
    h, w = shape
    bh, bw = alpha.shape
    n = max(2.0, _BORDER_FADE * face_height)
    ramp = np.ones((bh, bw), np.float32)
    ys, xs = np.arange(bh, dtype=np.float32)[:, None], np.arange(bw, dtype=np.float32)[None, :]
    if x0 == 0 and alpha[:, 0].max() > 0.05:
        ramp = np.minimum(ramp, np.clip((xs + 0.5) / n, 0, 1))
    if x1 == w and alpha[:, -1].max() > 0.05:
        ramp = np.minimum(ramp, np.clip((bw - xs - 0.5) / n, 0, 1))
    if y0 == 0 and alpha[0].max() > 0.05:
        ramp = np.minimum(ramp, np.clip((ys + 0.5) / n, 0, 1))
    if y1 == h and alpha[-1].max() > 0.05:
        ramp = np.minimum(ramp, np.clip((bh - ys - 0.5) / n, 0, 1))
    return (alpha * ramp).astype(np.float32)


def _check_source_pose(lm: np.ndarray, shape: tuple[int, int], role_name: str) -> None:
    """Refuse a source in profile or with its head cut off by the photo's border."""
    h, w = shape
    yaw = estimate_yaw(lm, (h, w))
    if abs(yaw) > MAX_SOURCE_YAW_DEG:
        raise UnsupportedMediaError(
            f"source '{role_name}': face is in profile (yaw ≈ {abs(yaw):.0f}°), a frontal or three-quarter photo is needed"
        )
    oval = lm[_OVAL, :2]
    inside = (oval[:, 0] >= 0) & (oval[:, 0] < w) & (oval[:, 1] >= 0) & (oval[:, 1] < h)
    if inside.mean() < 0.85:
        raise InputError(
            f"source '{role_name}': the head is cut off by the image border ({100 * (1 - inside.mean()):.0f}% of the "
            "face outline is outside the photo), a photo showing the whole head is needed"
        )


def _head_box(ff: FaceFrame, shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """The box (x0, y0, x1, y1) of an image of ``shape`` that can hold any head the face may have."""
    h, w = shape
    H, W = ff.height, ff.width
    corners = np.array([ff.point(s * _HEAD_HALF_WIDTH * W, b) for s in (-1, 1)
                        for b in (_HAIR_LIMIT * H, -(1.0 + _HEAD_ABOVE) * H)])
    bx0, by0 = np.floor(corners.min(0)).astype(int)
    bx1, by1 = np.ceil(corners.max(0)).astype(int) + 1
    return max(0, int(bx0)), max(0, int(by0)), min(w, int(bx1)), min(h, int(by1))


class _HeadCut:
    """The source photo around its head, and the colour models the head's matte is cut with:
    ``rgb`` the box of the photo, ``person`` its person probability, ``lm`` the landmarks in the
    box; ``ff`` the face frame, ``lat``/``below`` every pixel's face coordinates, ``lab`` CIELAB,
    ``skin`` and ``hair_model`` LAB (median, spread) of the cheeks and of the hair (None when
    not found: a bald head has no hair model)."""

    def __init__(self, rgb: np.ndarray, person: np.ndarray, lm: np.ndarray) -> None:
        self.rgb, self.person, self.lm = rgb, person, lm
        h, w = rgb.shape[:2]
        xs, ys = pixel_grid((0, 0, w, h))
        self.ff = face_frame(lm)
        self.lat, self.below = self.ff.coords(xs, ys)
        self.lab = cielab(rgb)
        self.skin = skin_model(self.lab, lm)
        self.hair_model = _hair_model(self.lab, person, self.ff, self.skin, self.lat, self.below)
        #: bool, set by :meth:`matte`: the hair hanging from the hair beside the face (None: no hair model)
        self.strands: np.ndarray | None = None

    def _z_skin(self) -> np.ndarray:
        return (np.abs(self.lab - self.skin[0]) / self.skin[1]).max(axis=2)

    def hair_limit(self, pose_landmarks: np.ndarray | None, offset: tuple[int, int]) -> float:
        """How far below the chin (pixels) hair is kept: where the shoulders start when the pose
        (landmarks in photo pixels; ``offset`` is the box's origin) sees them, else a fixed share
        of the face height."""
        H = self.ff.height
        limit = _HAIR_LIMIT_NO_POSE * H
        if pose_landmarks is not None:
            pl = np.asarray(pose_landmarks, np.float64)
            vis = pl[[11, 12], 3] if pl.shape[1] >= 4 else np.ones(2)
            if pl.shape[0] > 12 and (vis > 0.5).all() and np.isfinite(pl[[11, 12], :2]).all():
                sh = pl[[11, 12], :2] - offset
                sh_below = float(np.mean((sh - self.ff.chin) @ self.ff.down))
                # the shoulder joints sit below the top of the shoulder line by about a fifth of a face
                limit = float(np.clip(sh_below - 0.2 * H, 0.2 * H, _HAIR_LIMIT * H))
        return limit

    def matte(self, limit: float) -> np.ndarray:
        """The soft head matte (float32 0..1) on the box."""
        H, W = self.ff.height, self.ff.width
        lat, below, lab, skin, hair_model = self.lat, self.below, self.lab, self.skin, self.hair_model
        # 1) the head proper: above the neck line, soft ramp over the neck seam band
        ramp = np.clip((_NECK_LINE * H - below) / ((_NECK_LINE - _NECK_OPAQUE) * H), 0.0, 1.0)
        region = ramp * ((np.abs(lat) <= _HEAD_HALF_WIDTH * W) & (below >= -(1.0 + _HEAD_ABOVE) * H))
        # beside the neck column the cut is at the opaque line: shoulders start there
        region[(np.abs(lat) > _NECK_HALF * W) & (below > _NECK_OPAQUE * H)] = 0.0
        # below the chin only skin (the neck) and, beside the neck, hair are kept: a collar, necklace
        # or top starting high must not come along (the plate's own neck and clothes show instead)
        if skin is not None:
            low = below > 0.02 * H
            like = np.clip((6.0 - self._z_skin()[low]) / 3.0, 0.0, 1.0)
            if hair_model is not None:
                # beside the neck, hair is welcome too
                z_h = (np.abs(lab[low] - hair_model[0]) / hair_model[1]).max(axis=1)
                side = np.abs(lat[low]) > _NECK_HALF * W
                like = np.maximum(like, np.clip((6.0 - z_h) / 3.0, 0.0, 1.0) * side)
            region[low] *= like
        # 2) hair hanging beside the neck, down to the limit
        strands = None  # bool: hair-coloured pixels connected to the hair beside the face
        if hair_model is not None and limit > _NECK_OPAQUE * H:
            hanging, strands = self._hanging_hair(region, limit)
            region = np.maximum(region, hanging)
        self.strands = strands
        # 3) around the jaw and below the chin, outside the face, what has the colours of the
        # clothing further down (a collar rising beside the jaw, a lapel, a dark jacket the hair
        # model also accepts) is clothing, not head; hanging hair, ears and neck skin stay
        clothing = _clothing_model(lab, self.person, self.ff, skin, strands, lat, below)
        if clothing is not None:
            oval = np.zeros(below.shape, np.uint8)
            cv2.fillPoly(oval, [np.round(self.lm[_OVAL, :2] * 16).astype(np.int32)], 255, shift=4)
            where = (below > -_CLOTHING_ABOVE_CHIN * H) & (oval == 0)
            if hair_model is not None:
                z_h = (np.abs(lab - hair_model[0]) / hair_model[1]).max(axis=2)
                # beside the face, anything hair-coloured is taken for hair (the shadowed inner layer
                # of long hair is as dark as a jacket): only a collar of other colours rises there.
                # Not under the chin in front of the neck: a shirt collar sits there, and a grey or
                # dark hair model is wide enough to take it for hair (a collar beside the neck that
                # the hair model takes is left to the GrabCut refinement, :meth:`refine`)
                beside = (below < 0.0) | (np.abs(lat) > _NECK_HALF * W)
                where &= ~((below < _NECK_OPAQUE * H) & beside & (z_h < 3.0))
            if strands is not None:
                where &= ~strands
            cloth = np.zeros(below.shape, np.float32)
            cloth[where] = 1.0 - self._not_clothing(where, clothing)
            # clothing continues from the chest: a clothing-coloured patch that does not reach down
            # there (a shadow in the hair beside the jaw, a dark earring) stays
            _, cc = cv2.connectedComponents((cloth > 0.5).astype(np.uint8), connectivity=8)
            chest = np.unique(cc[(cloth > 0.5) & _chest(lat, below, H, W)])
            cloth *= np.isin(cc, chest[chest > 0])
            region *= 1.0 - cloth
        alpha = (self.person * region).astype(np.float32)
        # a slight blur: segmentation at 256 px leaves stair steps on large photos
        return cv2.GaussianBlur(alpha, (0, 0), max(0.5, 0.006 * H))

    def refine(self, alpha: np.ndarray) -> np.ndarray:
        """The matte ``alpha`` with what is not this head taken out: pieces not joined to the
        face (a neighbour's hair in a group photo) and what GrabCut gives to the background
        under the jaw corners and, at every height, beyond :data:`_GRABCUT_SIDE` face widths
        beside the face. The colour thresholds of :meth:`matte` are per pixel and as wide as the
        hair's and skin's spreads: grey hair's model takes a white collar; and the person mask,
        which :meth:`matte` keeps whole above the neck line, fills the gap between long hair and
        the neck with the wall behind and holds the neighbours of a group photo. GrabCut learns
        colour mixtures of the head (the cheeks, the hair above the forehead and beside the face,
        the strands hanging from it) and of the rest (outside the person, the chest under the
        neck line) and cuts along the image's edges between them: the jaw line over a collar,
        the outline of hair against the wall. Near the face above the jaw corners the matte's
        own hair outline is kept (GrabCut at this scale shaves fine strands off it). Runs once
        per source photo (~0.1-0.3 s)."""
        H, W = self.ff.height, self.ff.width
        lat, below = self.lat, self.below
        h, w = alpha.shape
        s = min(1.0, _GRABCUT_FACE_PX / H)
        small = (max(8, round(w * s)), max(8, round(h * s)))

        def down(a: np.ndarray, interp: int = cv2.INTER_AREA) -> np.ndarray:
            return cv2.resize(a, small, interpolation=interp)

        face = face_skin_mask(self.lm, (h, w), margin_px=0) > 0
        seed = np.full((h, w), cv2.GC_PR_BGD, np.uint8)
        seed[alpha > 0.5] = cv2.GC_PR_FGD
        # not "below the hair limit": long hair goes on there, and learnt as background it took
        # the hanging hair above the limit with it
        seed[self.person < 0.05] = cv2.GC_BGD
        seed[(below > _NECK_LINE * H) & (np.abs(lat) < 0.3 * W) & (alpha < 0.05)] = cv2.GC_BGD
        if self.hair_model is not None:
            z_h = _nearest_z(self.lab, self.hair_model)
            # the hair above the forehead and beside the face down to the jaw corners: long hair's
            # darker hanging layers are learnt too, not only the lit top
            band = (below < -1.02 * H) & (below > -1.35 * H) & (np.abs(lat) < 0.6 * W)
            band |= (below > -0.8 * H) & (below < -_JAW_CORNER * H) & (np.abs(lat) > 0.55 * W)
            seed[band & (self.person > 0.9) & (z_h < 2.0) & (alpha > 0.5)] = cv2.GC_FGD
        if self.strands is not None:
            # the hair hanging from the hair beside the face is head: learnt from the lit hair on
            # top alone, GrabCut gave long hair's darker lower layers to a backdrop of similar
            # colours (auburn hair against orange lettering)
            seed[self.strands & (alpha > 0.5)] = cv2.GC_FGD
        seed[face] = cv2.GC_FGD
        small_seed = down(seed, cv2.INTER_NEAREST)
        if not ((small_seed == cv2.GC_BGD).any() and (small_seed == cv2.GC_FGD).any()):
            return alpha
        bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
        cv2.setRNGSeed(0)
        cv2.grabCut(np.ascontiguousarray(down(self.rgb)[..., ::-1]), small_seed, None, bgd, fgd, _GRABCUT_ITERATIONS,
                    cv2.GC_INIT_WITH_MASK)
        fg = ((small_seed == cv2.GC_FGD) | (small_seed == cv2.GC_PR_FGD)).astype(np.uint8)
        # the head is one piece: keep what is joined to the face
        _, cc = cv2.connectedComponents(fg, connectivity=8)
        ids = np.unique(cc[down(face.astype(np.uint8), cv2.INTER_NEAREST) > 0])
        fg = np.isin(cc, ids[ids > 0]).astype(np.float32)
        keep = cv2.GaussianBlur(cv2.resize(fg, (w, h), interpolation=cv2.INTER_LINEAR), (0, 0), max(0.5, 0.02 * H))
        if self.skin is not None:
            # the neck's skin keeps its own fade to the neck line: GrabCut, which learns the chest
            # as background, cut it off with a hard edge across the new neck (a seam under the chin)
            neck = (np.abs(lat) < 0.3 * W) & (below > -_JAW_CORNER * H) & (self._z_skin() < 3.0)
            keep = np.maximum(keep, neck.astype(np.float32))
        # the veto fades in under the jaw corners and, at every height, beyond the hair's usual
        # reach beside the face (a group photo's neighbours are in the person mask there)
        low = np.maximum(np.clip((below + _JAW_CORNER * H) / (0.05 * H), 0.0, 1.0),
                         np.clip((np.abs(lat) - _GRABCUT_SIDE * W) / (0.1 * W), 0.0, 1.0))
        joined = cv2.resize(fg, (w, h), interpolation=cv2.INTER_NEAREST) > 0
        joined = cv2.dilate(joined.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))) > 0
        out = alpha * (1.0 - low * (1.0 - keep))
        # a piece of matte not joined to the face at all goes everywhere
        _, acc = cv2.connectedComponents((alpha > 0.1).astype(np.uint8), connectivity=8)
        aids = np.unique(acc[face & (alpha > 0.1)])
        out *= np.isin(acc, aids[aids > 0]) | joined
        return out.astype(np.float32)

    def _not_clothing(self, where: np.ndarray, clothing: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        """Weight (0..1) of the pixels ``where`` selects: 0 where a pixel is a ``clothing``
        colour (within :data:`_CLOTHING_Z` spreads) nearer the clothing than the skin and the hair."""
        px = self.lab[where]
        z_c = _clothing_z(px, clothing)
        return 1.0 - np.clip((_CLOTHING_Z + 1.0 - z_c), 0.0, 1.0) * (z_c < _nearest_z(px, self.skin, self.hair_model))

    def _hanging_hair(self, region: np.ndarray, limit: float) -> tuple[np.ndarray, np.ndarray]:
        """Weight (0..1) of hair hanging beside the neck down to ``limit``: hair-coloured person
        pixels attached to the head ``region`` above, fading out just above the limit; and (bool)
        the *strands*: hair-coloured pixels that come down from the hair beside the face (at ear
        and jaw level) through hair-coloured pixels, with the gaps between them. Only strands
        are safe from the clothing test: a dark jacket under short dark hair is attached to the
        head region but is not a strand."""
        H, W = self.ff.height, self.ff.width
        lat, below = self.lat, self.below
        side = (np.abs(lat) > 0.25 * W) & (np.abs(lat) <= 1.2 * W) & (below > _NECK_OPAQUE * H) & (below <= limit)
        beside_face = (np.abs(lat) > 0.45 * W) & (np.abs(lat) <= 1.3 * W) & (below > -0.6 * H) & (below <= _NECK_OPAQUE * H)
        z_hair = (np.abs(self.lab - self.hair_model[0]) / self.hair_model[1]).max(axis=2)
        hairlike = (side | beside_face) & (z_hair < 3.0) & (self.person > 0.5)
        if self.skin is not None:
            # closer to the hair than to the skin (neck, bare shoulders)
            hairlike &= z_hair < self._z_skin()
        hl = hairlike.astype(np.uint8) * 255
        k = max(1, round(0.02 * H))
        hl = cv2.morphologyEx(hl, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * k + 1,) * 2))
        # keep only strands connected to the hair beside the face, above the neck (across gaps
        # of a twentieth of a face: darker strands and shadows break the colour test)
        g = max(1, round(0.05 * H))
        strands = _bridged_reach(hl > 0, (hl > 0) & beside_face & (below < 0.0), g) & (hl > 0)
        # what hangs: hair-coloured blobs beside the neck that touch the head region above
        attached = ((region > 0.5) | (hl > 0)).astype(np.uint8)
        _, att_cc = cv2.connectedComponents(attached, connectivity=8)
        head_ids = np.unique(att_cc[(region > 0.5) & (attached > 0)])
        hangs = np.isin(att_cc, head_ids[head_ids > 0]) & (hl > 0) & side
        fade = np.clip((limit - below) / (0.1 * H), 0.0, 1.0)
        # what lies between strands (shadows, highlights the colour test missed) is hair too
        enclosed = cv2.morphologyEx(strands.astype(np.uint8), cv2.MORPH_CLOSE,
                                    cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * g + 1,) * 2)) > 0
        return hangs * fade, enclosed

    def hair(self, alpha: np.ndarray, limit: float) -> np.ndarray:
        """bool: the part of the matte that is hair: not skin-coloured (face, ears, neck), not a
        facial feature; inside the face oval only what the face swapper's own test calls hair
        over the forehead."""
        W = self.ff.width
        oval_m = np.zeros(alpha.shape, np.uint8)
        cv2.fillPoly(oval_m, [np.round(self.lm[_OVAL, :2] * 16).astype(np.int32)], 255, shift=4)
        hair = (alpha > 0.5) & (oval_m == 0)
        if self.skin is not None:
            z_skin = self._z_skin()
            not_skin = z_skin > 3.0
            if self.hair_model is not None:
                # hair close to skin tones (light brown, blonde) still sits nearer the hair sample
                not_skin |= (np.abs(self.lab - self.hair_model[0]) / self.hair_model[1]).max(axis=2) < z_skin
            hair &= not_skin
        # nothing in the neck column under the chin is hair (long hair hangs at the sides)
        hair &= ~((np.abs(self.lat) < 0.3 * W) & (self.below > 0.0))
        hair &= ~self._detached_below_jaw(hair)
        hair |= (alpha > 0.5) & (oval_m > 0) & (usable_face_mask(self.rgb, self.lm) == 0)
        hair &= self.below < limit
        return hair

    def _detached_below_jaw(self, hair: np.ndarray) -> np.ndarray:
        """bool: the part of ``hair`` under the jaw corners, beside the neck (within the neck
        column's half-width of the centre line), that does not hang from the hair above the mouth
        line. The shadow under a jaw is as dark as light-brown hair and nearer the hair sample than
        the lit cheeks; called hair, it kept the source's colour while the skin around it was
        matched to the plate and showed as grey-green patches under the new chin. Hair that is
        really there (long hair, sideburns) comes down from above."""
        H, W = self.ff.height, self.ff.width
        zone = (self.below > -_JAW_CORNER * H) & (np.abs(self.lat) < _NECK_HALF * W)
        if not (hair & zone).any():
            return np.zeros(hair.shape, bool)
        # strands of long hair break up in the colour test: gaps of a few hundredths of a face
        # are bridged, between pixels where hair is dense (a dotted line of dark pixels along the
        # face's outline is not a connection: it tied the astronaut's jaw shadow to her hair)
        g = max(1, round(_HAIR_BRIDGE * H))
        dense = cv2.blur(hair.astype(np.float32), (2 * g + 1, 2 * g + 1)) > _HAIR_DENSE
        attached = _bridged_reach(hair & dense, hair & (self.below <= -_JAW_CORNER * H), g)
        return hair & zone & ~attached


# --- skin colour per semantic region ------------------------------------------------------------
#: regions of :func:`skin_colour_stats`, in row order
REGION_NAMES: tuple[str, ...] = ("forehead", "right_cheek", "left_cheek", "nose", "upper_lip", "chin", "neck")
# seed landmarks of each face region (subject's right = image left); every skin pixel goes to the
# region of its nearest seed, so the regions tile the face whatever its shape
_SEEDS: tuple[tuple[int, ...], ...] = (
    (151, 9, 108, 337, 67, 297, 69, 299),  # forehead
    (50, 101, 118, 117, 123, 147, 187, 207, 205),  # right cheek
    (280, 330, 347, 346, 352, 376, 411, 427, 425),  # left cheek
    (4, 5, 195, 197, 1, 45, 275),  # nose
    (164, 167, 393, 165, 391),  # upper lip skin
    (152, 175, 199, 200, 171, 396, 208, 428),  # chin
)
_SEED_IDX = np.concatenate([np.asarray(s) for s in _SEEDS])
_SEED_REGION = np.concatenate([np.full(len(s), i) for i, s in enumerate(_SEEDS)])
_NECK = len(_SEEDS)
#: statistics are taken with the face scaled to about this height (pixels): plenty for a mean
_STATS_FACE_PX = 96.0


def _region_labels(lm: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """int8 label image: region index per face-skin / neck pixel, -1 elsewhere."""
    h, w = shape
    ff = face_frame(lm)
    skin = face_skin_mask(lm, (h, w), margin_px=max(1, round(0.03 * ff.height)))
    labels = np.full((h, w), -1, np.int8)
    ys, xs = np.nonzero(skin)
    if len(ys):
        seeds = lm[_SEED_IDX, :2]
        d = (xs[:, None] - seeds[None, :, 0]) ** 2 + (ys[:, None] - seeds[None, :, 1]) ** 2
        labels[ys, xs] = _SEED_REGION[np.argmin(d, axis=1)]
    # the neck: a band under the chin, narrower than the jaw
    xg, yg = pixel_grid((0, 0, w, h))
    lat, below = ff.coords(xg, yg)
    neck = (np.abs(lat) < 0.22 * ff.width) & (below > 0.08 * ff.height) & (below < 0.3 * ff.height) & (labels < 0)
    labels[neck] = _NECK
    return labels


def skin_colour_stats(rgb: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """Per-region skin colour of a face: (R, 6) float32 rows of LAB mean (3) and std (3), in
    CIELAB units, one row per :data:`REGION_NAMES`; NaN rows for regions not visible (too few
    pixels in the image, or — for the neck — a collar, beard or scarf that is far from the
    chin's colour).

    Each region is trimmed (pixels beyond 3 robust deviations from its median are dropped) so a
    strand of hair or a shadowed lash line does not move its mean. Statistics are taken at a
    reduced scale (face about 96 px high): cheap, and as good for means.
    """
    img = np.asarray(rgb)
    lm = np.asarray(landmarks, np.float64)
    out = np.full((len(REGION_NAMES), 6), np.nan, np.float32)
    if not np.isfinite(lm[:468, :2]).all():
        return out
    h, w = img.shape[:2]
    ff = face_frame(lm)
    # a box around face and neck, at the statistics scale
    pts = np.concatenate([lm[_OVAL, :2], [ff.point(0.0, 0.35 * ff.height)]])
    x0, y0 = np.maximum(np.floor(pts.min(0)).astype(int) - 2, 0)
    x1, y1 = np.minimum(np.ceil(pts.max(0)).astype(int) + 3, (w, h))
    if x1 - x0 < 4 or y1 - y0 < 4:
        return out
    scale = min(1.0, _STATS_FACE_PX / ff.height)
    crop = img[y0:y1, x0:x1]
    if scale < 1.0:
        crop = cv2.resize(crop, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    slm = (lm - (x0, y0, 0)) * scale
    labels = _region_labels(slm, crop.shape[:2])
    lab = cielab(crop)
    min_px = max(6, round(0.002 * (ff.height * scale) ** 2))
    # hair over the forehead or down the cheeks lies inside the mesh's oval: drop pixels far from
    # the skin of the face's centre (nose, upper lip, chin), which hair rarely covers
    centre = lab[(labels >= 3) & (labels <= 5)]
    if len(centre) >= min_px:
        ref = np.median(centre, axis=0)
        far = (np.abs(lab - ref) > np.array([30.0, 15.0, 15.0], np.float32)).any(axis=2)
        labels[far] = -1
    for r in range(len(REGION_NAMES)):
        px = lab[labels == r]
        if len(px) < min_px:
            continue
        med = np.median(px, axis=0)
        mad = np.median(np.abs(px - med), axis=0) * 1.4826 + 1.0
        px = px[(np.abs(px - med) <= 3.0 * mad).all(1)]
        if len(px) < min_px:
            continue
        out[r, :3] = px.mean(0)
        out[r, 3:] = px.std(0)
    # a neck far from the chin's colour is not skin (or not lit like the face): not visible
    chin = out[REGION_NAMES.index("chin"), :3]
    if np.isfinite(chin).all() and np.isfinite(out[_NECK, :3]).all():
        if np.linalg.norm(out[_NECK, :3] - chin) > 25.0:
            out[_NECK] = np.nan
    return out


def _region_centres(lm: np.ndarray) -> np.ndarray:
    """(R, 2) centre of each region in image pixels (mean of its seeds; the neck under the chin)."""
    lm = np.asarray(lm, np.float64)
    c = [lm[list(s), :2].mean(0) for s in _SEEDS]
    ff = face_frame(lm)
    c.append(ff.point(0.0, 0.19 * ff.height))
    return np.asarray(c)


@dataclass(frozen=True, eq=False)
class ColourMatch:
    """Colour reference for one frame: the source's and the plate's per-region skin statistics,
    both (R, 6) as returned by :func:`skin_colour_stats`. The orchestration smooths
    ``plate_stats`` over time so the skin tone does not pump."""

    source_stats: np.ndarray
    plate_stats: np.ndarray


def _correction_params(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-region LAB gain and offset mapping source skin onto plate skin; and which regions
    both sides can see."""
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    ok = np.isfinite(src).all(1) & np.isfinite(dst).all(1)
    # the spread is matched only partly (as in the face swap): stubble or harsh light widen the
    # plate's statistics and stretching the source's contrast to them makes blotches
    gain = np.ones((len(src), 3))
    gain[ok] = np.clip((dst[ok, 3:] + 0.5) / (src[ok, 3:] + 0.5), 0.8, 1.25)
    offset = np.zeros((len(src), 3))
    offset[ok] = dst[ok, :3] - gain[ok] * src[ok, :3]
    return gain, offset, ok


# --- the swapper --------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class HeadFrame:
    """One head-swapped frame: the output RGB, a uint8 {0, 255} mask holding every pixel that
    changed (it may be a little larger than the set whose value differs), and a uint8 {0, 255}
    mask of where the new head is, soft edge and fading hair ends included (for QC and the
    watermark); ``guessed``: a uint8 {0, 255} mask of the old head's place beside and under the
    jaw (below the jaw corners: the body, long hair over the shoulders) that the output shows (the
    new head at most half opaque there) and that no frame of the shot showed: invented by
    inpainting, not seen (QC asks for review when it is large)."""

    frame: np.ndarray
    mask: np.ndarray
    head_mask: np.ndarray
    guessed: np.ndarray


def _check_lm(name: str, a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, np.float64)
    if a.shape != (_N, 3) or not np.isfinite(a).all():
        raise UsageError(f"{name} landmarks must be finite ({_N}, 3), got {a.shape}")
    return a


def _mouth_gap(lm: np.ndarray) -> float:
    """Inner-lip opening relative to the mouth width."""
    return float(np.linalg.norm(lm[13, :2] - lm[14, :2]) / (np.linalg.norm(lm[61, :2] - lm[291, :2]) + 1e-9))


def _decontaminate(rgb: np.ndarray, alpha: np.ndarray, face_height: float) -> np.ndarray:
    """``rgb`` with the matte's soft edge recoloured from the head's interior.

    Edge pixels of a photo's matte carry the photo's own background (a grey wall shows as a
    pale rim around the hair on a green screen); their colour is replaced by a normalised blur of
    the confidently-foreground pixels (alpha > 0.9) around them, at two scales so that pixels far
    from the core still get a value.
    """
    core = (alpha > 0.9).astype(np.float32)
    out = rgb.astype(np.float32)
    fg = np.zeros_like(out)
    wsum = np.zeros(alpha.shape, np.float32)
    for sigma in (0.02 * face_height, 0.08 * face_height):
        sig = max(1.0, sigma)
        w = cv2.GaussianBlur(core, (0, 0), sig)
        c = cv2.GaussianBlur(out * core[..., None], (0, 0), sig)
        take = (wsum < 1e-3) & (w > 1e-3)
        fg[take] = c[take] / w[take, None]
        wsum[take] = w[take]
    edge = (alpha <= 0.9) & (wsum > 1e-3)
    res = rgb.copy()
    res[edge] = np.clip(fg[edge] + 0.5, 0, 255).astype(np.uint8)
    return res


class HeadSwapper:
    """Swaps one source head onto plate frames, given per-frame target landmarks.

    Build one per source (everything that depends on the source alone is prepared here) and call
    :meth:`swap` per frame. Holds no MediaPipe state; keep one per thread all the same.
    """

    #: 1.1: a shadow under the jaw is skin, the plate's clothing stays in front of the new neck,
    #: what segmentation left of the old head goes with it where the clean plate is known
    #: 1.2: the plate's shoulders beside the jaw stay; 1.3: the shaded neck is not clothing, the
    #: plate's collar beside the jaw is not old head; 1.4: the source matte refined with GrabCut
    #: (the source analysis is keyed on this model too)
    MODEL = ModelRef(name="classic-head", version="1.4")

    #: ring of triangles joining the mesh-warped face to the similarity-warped head, as a scale
    #: of the face oval about its centre: wider = gentler transition
    RING = 1.22
    #: the blend may reach this far (face heights) outside the new head's matte, at most
    SPILL = 0.03
    #: the old head region is grown by this (face heights) to take the segmentation halo along
    GROW = 0.02
    #: the source's mouth counts as closed below this inner-lip gap / mouth width
    MOUTH_CLOSED = 0.08

    def __init__(self, source: SourceHead) -> None:
        if not isinstance(source, SourceHead):
            raise UsageError(f"HeadSwapper needs a SourceHead, got {type(source).__name__}")
        src = np.asarray(source.rgb)
        if src.ndim != 3 or src.shape[2] != 3 or src.dtype != np.uint8:
            raise UsageError(f"source head image must be RGB uint8 (H, W, 3), got {src.dtype} {src.shape}")
        if source.alpha.shape != src.shape[:2] or source.hair.shape != src.shape[:2]:
            raise UsageError("source head alpha and hair must have the image's height and width")
        self.source = source
        lm = _check_lm("source", source.landmarks)
        self._src_lm = lm
        self._src_stable = lm[_STABLE, :2]
        self._src_ff = face_frame(lm)
        self._mouth_open = _mouth_gap(lm) >= self.MOUTH_CLOSED
        # where the mesh covers: the face triangles, plus the source's own mouth when open
        self._tris = np.concatenate([FACE_TRIANGLES, MOUTH_TRIANGLES]) if self._mouth_open else FACE_TRIANGLES
        self._src_ext = np.concatenate([lm, lm[list(LIPS_INNER)].mean(0, keepdims=True), np.zeros((len(_OVAL), 3))])
        # RGBA and hair (x255) pyramids, so a small target head samples a level near its own
        # size instead of aliasing from a large photo
        rgb = _decontaminate(src, source.alpha, self._src_ff.height)
        rgba = np.dstack([rgb, np.clip(source.alpha * 255.0 + 0.5, 0, 255).astype(np.uint8)])
        self._pyramid = [(np.ascontiguousarray(rgba), source.hair.astype(np.uint8) * 255)]
        while min(self._pyramid[-1][0].shape[:2]) > 64 and len(self._pyramid) < 6:
            self._pyramid.append(tuple(cv2.pyrDown(x) for x in self._pyramid[-1]))
        # the matte's outline (for the placement's bounding box)
        ys, xs = np.nonzero(source.alpha > 0.01)
        self._src_box = np.array([[xs.min(), ys.min()], [xs.max() + 1, ys.min()], [xs.min(), ys.max() + 1],
                                  [xs.max() + 1, ys.max() + 1]], np.float64) if len(xs) else None
        self._src_stats = skin_colour_stats(src, lm)

    # --- placement ------------------------------------------------------------------------------
    def _placement(self, tlm: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        """Similarity (scale, R, t) from source to target on the stable landmarks."""
        return similarity_align(self._src_stable, tlm[_STABLE, :2])

    def _warp(self, tlm: np.ndarray, sim, roi: tuple[int, int, int, int]
              ) -> tuple[np.ndarray, np.ndarray, tuple[int, int, int, int]]:
        """The source (RGBA and hair) warped onto the ROI: similarity outside the face, mesh
        inside, joined by a ring whose outer vertices follow the similarity (one continuous warp).
        Returns the RGBA uint8 ROI image, the hair uint8 ROI image and the face box (frame
        coordinates) the mesh was drawn on."""
        s, R, t = sim
        x0, y0, x1, y1 = roi
        level = 0
        while level + 1 < len(self._pyramid) and s * 2 ** (level + 1) <= 1.0:
            level += 1
        k = 2.0 ** level
        rgba_l, hair_l = self._pyramid[level]
        interp = magnifying_interpolation(s if level == 0 else 1.0)
        # similarity, as the inverse affine from ROI pixels to source-level pixels:
        # source0 = R^T (p + roi origin - t) / s, level = (source0 + 0.5) / k - 0.5
        ri = R.T / s
        ti = ri @ (np.array([x0, y0], np.float64) - t)
        A = np.hstack([ri / k, ((ti + 0.5) / k - 0.5)[:, None]])
        size = (x1 - x0, y1 - y0)
        flags = interp | cv2.WARP_INVERSE_MAP
        rgba = cv2.warpAffine(rgba_l, A, size, flags=flags, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        hair = cv2.warpAffine(hair_l, A, size, flags=flags, borderMode=cv2.BORDER_CONSTANT, borderValue=0)

        # the face: mesh warp on the ring's box only
        oval_t = tlm[_OVAL]
        c_t = oval_t.mean(0)
        ring_t = c_t + (oval_t - c_t) * self.RING
        tgt = np.concatenate([tlm, tlm[list(LIPS_INNER)].mean(0, keepdims=True), ring_t])
        src = self._src_ext.copy()
        # the source side of the ring is the similarity's preimage of the target ring, so the
        # mesh map equals the similarity map on the ring's outer edge
        src[_N + 1:, :2] = ((ring_t[:, :2] - t) @ R) / s
        fx0, fy0 = np.floor(ring_t[:, :2].min(0)).astype(int)
        fx1, fy1 = np.ceil(ring_t[:, :2].max(0)).astype(int) + 1
        fbox = (max(x0, fx0), max(y0, fy0), min(x1, fx1), min(y1, fy1))
        if fbox[2] - fbox[0] < 2 or fbox[3] - fbox[1] < 2:
            return rgba, hair, fbox
        labels = rasterise_triangles(tgt, self._tris, fbox)
        mx, my = triangle_maps(labels, triangle_affines(tgt, src, self._tris), fbox)
        if level:
            mx = (mx + 0.5) / k - 0.5
            my = (my + 0.5) / k - 0.5
        m1, m2 = cv2.convertMaps(mx, my, cv2.CV_16SC2)  # fixed point: twice as fast for two remaps
        face_rgba = cv2.remap(rgba_l, m1, m2, interp, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        face_hair = cv2.remap(hair_l, m1, m2, interp, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        on = labels >= 0
        fs = (slice(fbox[1] - y0, fbox[3] - y0), slice(fbox[0] - x0, fbox[2] - x0))
        np.copyto(rgba[fs], face_rgba, where=on[..., None])
        np.copyto(hair[fs], face_hair, where=on)
        return rgba, hair, fbox

    def _roi(self, shape, tlm: np.ndarray, plm: np.ndarray, sim, person: np.ndarray) -> tuple[int, int, int, int]:
        h, w = shape[:2]
        s, R, t = sim
        pts = [tlm[:, :2], ((tlm[_OVAL, :2] - tlm[_OVAL, :2].mean(0)) * self.RING + tlm[_OVAL, :2].mean(0))]
        if self._src_box is not None:
            pts.append(s * self._src_box @ R.T + t)
        # the plate's head: its geometric region's box, shrunk to the person mask inside it
        pf = face_frame(plm)
        corners = np.array([pf.point(sg * _HEAD_HALF_WIDTH * pf.width, b) for sg in (-1, 1)
                            for b in (_PLATE_CUT * pf.height, -(1.0 + _HEAD_ABOVE) * pf.height)])
        bx0, by0 = np.clip(np.floor(corners.min(0)).astype(int), 0, (w, h))
        bx1, by1 = np.clip(np.ceil(corners.max(0)).astype(int) + 1, 0, (w, h))
        if bx1 > bx0 and by1 > by0:
            sub = person[by0:by1, bx0:bx1] >= 128
            if sub.any():
                x, y, ww, hh = cv2.boundingRect(sub.astype(np.uint8))
                pts.append(np.array([[bx0 + x, by0 + y], [bx0 + x + ww, by0 + y + hh]], np.float64))
        p = np.concatenate(pts)
        grow = (self.GROW + self.SPILL) * max(pf.height, 1.0) + 4
        x0, y0 = np.floor(p.min(0) - grow).astype(int)
        x1, y1 = np.ceil(p.max(0) + grow).astype(int)
        return max(0, x0), max(0, y0), min(w, x1), min(h, y1)

    # --- colour -----------------------------------------------------------------------------------
    def _colour_field(self, tlm: np.ndarray, roi, src_stats: np.ndarray, dst_stats: np.ndarray,
                      height: float) -> tuple[np.ndarray, np.ndarray] | None:
        """Per-pixel LAB gain and offset over the ROI: each region's correction spread by a
        Gaussian around the region's centre (in the target), normalised; smooth by design."""
        gain, offset, ok = _correction_params(src_stats, dst_stats)
        if not ok.any():
            return None
        centres = _region_centres(tlm)[ok]
        g, o = gain[ok], offset[ok]
        x0, y0, x1, y1 = roi
        step = max(2, int(height / 24))
        gx = np.arange(x0, x1 + step, step, dtype=np.float64)
        gy = np.arange(y0, y1 + step, step, dtype=np.float64)
        d2 = (gx[None, :, None] - centres[None, None, :, 0]) ** 2 + (gy[:, None, None] - centres[None, None, :, 1]) ** 2
        sigma = 0.25 * height
        wgt = np.exp(-d2 / (2 * sigma * sigma)) + 1e-4  # the small floor: the mean far away
        wgt /= wgt.sum(2, keepdims=True)
        coarse = np.concatenate([wgt @ g, wgt @ o], axis=2).astype(np.float32)  # (gh, gw, 6)
        # a smooth field: plain bilinear resizing of the coarse grid is all it needs
        size = (x1 - x0, y1 - y0)
        gain_f = cv2.resize(np.ascontiguousarray(coarse[..., :3]), size, interpolation=cv2.INTER_LINEAR)
        off_f = cv2.resize(np.ascontiguousarray(coarse[..., 3:]), size, interpolation=cv2.INTER_LINEAR)
        return gain_f, off_f

    # --- the frame --------------------------------------------------------------------------------
    def swap(
        self,
        frame: np.ndarray,
        *,
        target_landmarks: np.ndarray,
        plate_landmarks: np.ndarray,
        plate_person_mask: np.ndarray,
        background: np.ndarray | None,
        background_known: np.ndarray | None,
        occlusion_mask: np.ndarray | None = None,
        colour: ColourMatch | None = None,
    ) -> HeadFrame:
        """Put the source head on ``frame`` (RGB uint8) with the face shape ``target_landmarks``.

        ``plate_landmarks`` (478, 3): the plate's own face on this frame (its old head is removed,
        its skin is the colour reference, its mouth gives the teeth). ``plate_person_mask`` (H, W):
        the plate person's probability (uint8 0..255, float 0..1 or bool). ``background`` (H, W, 3)
        the clean plate for this frame, real where ``background_known`` (H, W, bool/uint8; None =
        everywhere) is set; what is neither covered by the new head nor known is inpainted.
        ``occlusion_mask`` (H, W): non-zero where something is in front of the face; those pixels
        stay exactly the plate's. ``colour``: per-region skin statistics (temporally smoothed by
        the caller); computed from this frame when None.

        The steps (numbered as in the module docstring) are the methods below, each on the
        region of interest around both heads.
        """
        img = np.asarray(frame)
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            raise UsageError(f"frame must be RGB uint8 (H, W, 3), got {img.dtype} {img.shape}")
        h, w = img.shape[:2]
        tlm = _check_lm("target", target_landmarks)
        plm = _check_lm("plate", plate_landmarks)
        person = np.asarray(plate_person_mask)
        if person.shape[:2] != (h, w):
            raise UsageError(f"plate person mask shape {person.shape} does not match the frame {img.shape}")
        if person.dtype != np.uint8:
            person = np.clip(_person_prob(person, (h, w)) * 255.0 + 0.5, 0, 255).astype(np.uint8)
        if background is not None and np.asarray(background).shape != img.shape:
            raise UsageError(f"background shape {np.asarray(background).shape} does not match the frame {img.shape}")
        occ_full = None
        if occlusion_mask is not None:
            occ_full = np.asarray(occlusion_mask)
            if occ_full.shape[:2] != (h, w):
                raise UsageError(f"occlusion mask shape {occ_full.shape} does not match the frame {img.shape}")

        sim = self._placement(tlm)
        roi = self._roi(img.shape, tlm, plm, sim, person)
        x0, y0, x1, y1 = roi
        empty = np.zeros((h, w), np.uint8)
        if x1 - x0 < 8 or y1 - y0 < 8:
            return HeadFrame(frame=img.copy(), mask=empty, head_mask=empty.copy(), guessed=empty.copy())
        sl = (slice(y0, y1), slice(x0, x1))
        occ = None if occ_full is None else occ_full[sl] > 0
        tf = face_frame(tlm)

        # 1. placement: the new head, warped
        new_rgb, alpha, hair, fbox = self._new_head(tlm, sim, roi)
        skin_box = self._skin_box(tf, fbox, roi)
        if colour is None:  # computed once here for the clothing test and the skin match
            colour = ColourMatch(source_stats=self._src_stats, plate_stats=skin_colour_stats(img, plm))
        # the plate's collar and clothing are in front of the new neck
        self._behind_clothing(img, plm, person, roi, colour.plate_stats, alpha, hair)
        # 6. mouth interior from the plate when the source's mouth is closed
        if not self._mouth_open:
            self._plate_mouth(img, tlm, plm, roi, new_rgb, alpha, hair)
        # 3. + 4. skin tone per region (the neck band too), hair exempt
        self._match_skin(new_rgb, hair, tlm, roi, skin_box, colour, tf.height)
        # 2. the old head, replaced by the clean plate or inpainted
        base, old, invented = self._remove_old_head(img, tlm, plm, person, background, background_known, roi, occ, alpha)
        # 5. blend, 7. occluders stay exactly the plate's
        out_roi, changed = self._blend(new_rgb, base, alpha, hair, img[sl], roi, skin_box, occ, tf.height)
        changed |= old

        out = img.copy()
        out[sl] = out_roi
        if occ is not None:
            changed &= ~occ
        mask = np.zeros((h, w), np.uint8)
        mask[sl][changed] = 255
        head_mask = np.zeros((h, w), np.uint8)
        hm = alpha > 0.0
        if occ is not None:
            hm &= ~occ
        head_mask[sl][hm] = 255
        guessed = np.zeros((h, w), np.uint8)
        guessed[sl][invented] = 255
        return HeadFrame(frame=out, mask=mask, head_mask=head_mask, guessed=guessed)

    def _new_head(self, tlm: np.ndarray, sim, roi: tuple[int, int, int, int]
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, int, int, int]]:
        """The warped source head on the ROI: RGB uint8, matte and hair weight (float32 0..1),
        and the face box of the mesh warp."""
        rgba, hair_u8, fbox = self._warp(tlm, sim, roi)
        new_rgb = np.ascontiguousarray(rgba[..., :3])
        alpha = rgba[..., 3].astype(np.float32) * (1.0 / 255.0)
        # the matte's faint tail (a few levels of 255) would spread the head's footprint for nothing
        alpha[alpha < 0.02] = 0.0
        hair = hair_u8.astype(np.float32) * (1.0 / 255.0)
        return new_rgb, alpha, hair, fbox

    @staticmethod
    def _skin_box(tf: FaceFrame, fbox: tuple[int, int, int, int], roi: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
        """The skin box (frame coordinates, inside the ROI): face ring and neck band, where colour
        correction and the multi-band blend run; outside it the new head is hair (or ears near
        it) and is composited straight."""
        x0, y0, x1, y1 = roi
        H = tf.height
        neck_pts = np.array([tf.point(sg * 0.6 * tf.width, (_NECK_LINE + 0.1) * H) for sg in (-1, 1)])
        bp = np.concatenate([np.array(fbox[:2])[None], np.array(fbox[2:])[None], neck_pts])
        grow = 0.08 * H
        sx0, sy0 = np.floor(bp.min(0) - grow).astype(int)
        sx1, sy1 = np.ceil(bp.max(0) + grow).astype(int)
        return int(max(sx0, x0)), int(max(sy0, y0)), int(min(sx1, x1)), int(min(sy1, y1))

    @staticmethod
    def _plate_mouth(img: np.ndarray, tlm: np.ndarray, plm: np.ndarray, roi: tuple[int, int, int, int], new_rgb: np.ndarray,
                     alpha: np.ndarray, hair: np.ndarray) -> None:
        """Put the plate's mouth interior (warped from the plate's mouth to the target's) into the
        new head, in place: the plate's teeth and tongue belong to the plate's speech."""
        x0, y0, x1, y1 = roi
        tgt_m = np.concatenate([tlm, tlm[list(LIPS_INNER)].mean(0, keepdims=True)])
        plate_m = np.concatenate([plm, plm[list(LIPS_INNER)].mean(0, keepdims=True)])
        mp = tgt_m[list(LIPS_INNER), :2]
        mx0, my0 = np.maximum(np.floor(mp.min(0)).astype(int) - 1, (x0, y0))
        mx1, my1 = np.minimum(np.ceil(mp.max(0)).astype(int) + 2, (x1, y1))
        if mx1 - mx0 < 2 or my1 - my0 < 2:
            return
        mbox = (int(mx0), int(my0), int(mx1), int(my1))
        mlabels = rasterise_triangles(tgt_m, MOUTH_TRIANGLES, mbox)
        inside = mlabels >= 0
        if not inside.any():
            return
        mx, my = triangle_maps(mlabels, triangle_affines(tgt_m, plate_m, MOUTH_TRIANGLES), mbox)
        mouth_rgb = cv2.remap(img, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)
        ms = (slice(mbox[1] - y0, mbox[3] - y0), slice(mbox[0] - x0, mbox[2] - x0))
        new_rgb[ms][inside] = mouth_rgb[inside]
        alpha[ms][inside] = 1.0
        hair[ms][inside] = 1.0  # exempt from the skin correction: already the plate's colour

    @staticmethod
    def _behind_clothing(img: np.ndarray, plm: np.ndarray, person: np.ndarray, roi: tuple[int, int, int, int],
                         plate_stats: np.ndarray, alpha: np.ndarray, hair: np.ndarray) -> None:
        """Take the new neck out of the matte, in place, where the plate's clothing covers it.

        The new head brings a piece of neck that fades out over :data:`_NECK_LINE`; a longer neck
        than the plate's, or one placed lower, was drawn over the plate's collar and jacket as a
        blurred band of skin. Clothing here is the plate person's pixels under the plate's chin
        whose chroma is far from the plate's skin (chroma, not lightness: the shadow under a jaw is
        darker skin, a collar is white or dark cloth), reaching down past where the new neck is
        opaque. Hair keeps its matte: long hair falls in front of a collar."""
        stats = np.asarray(plate_stats, np.float64)
        ok = np.isfinite(stats).all(1)
        if not ok.any():
            return
        x0, y0, x1, y1 = roi
        pf = face_frame(plm)
        H, W = pf.height, pf.width
        # only the box of the neck column under the chin is looked at (on the whole ROI this cost
        # ~17 ms a frame): the column and the fade of the new neck, with room for the chest test
        corners = np.array([pf.point(sg * _NECK_HALF * W, b * H) for sg in (-1, 1) for b in (0.0, _NECK_LINE + 0.1)])
        bx0, by0 = np.maximum(np.floor(corners.min(0)).astype(int) - 1, (x0, y0))
        bx1, by1 = np.minimum(np.ceil(corners.max(0)).astype(int) + 2, (x1, y1))
        if bx1 - bx0 < 2 or by1 - by0 < 2:
            return
        box = (int(bx0), int(by0), int(bx1), int(by1))
        bs = (slice(box[1] - y0, box[3] - y0), slice(box[0] - x0, box[2] - x0))
        a_box = alpha[bs]
        lat, below = pf.coords(*pixel_grid(box))
        # the new head's neck is its neck column (beside it, below the opaque line, the source
        # matte holds hair only)
        cand = (below > 0.0) & (np.abs(lat) < _NECK_HALF * W) & (person[box[1]:box[3], box[0]:box[2]] >= 128)
        if not (cand & (a_box > 0.0)).any():
            return
        ref = np.median(stats[ok, 1:3], axis=0)
        spread = np.maximum(np.median(stats[ok, 4:6], axis=0), _CLOTHING_CHROMA_MIN_SPREAD)
        ab = cielab(img[box[1]:box[3], box[0]:box[2]])[..., 1:]
        cloth = cand & ((np.abs(ab - ref) / spread).max(axis=2) > _CLOTHING_CHROMA_Z)
        # what reaches the chest is clothing; a stray off-colour spot on the neck is not
        _, cc = cv2.connectedComponents(cloth.astype(np.uint8), connectivity=8)
        chest = np.unique(cc[cloth & (below > _NECK_OPAQUE * H)])
        cloth &= np.isin(cc, chest[chest > 0])
        if not cloth.any():
            return
        soft = cv2.GaussianBlur(cloth.astype(np.float32), (0, 0), max(0.5, 0.01 * H))
        keep = np.maximum(1.0 - soft, np.clip(hair[bs] * 2.0 - 1.0, 0.0, 1.0))
        a_box *= keep

    def _match_skin(self, new_rgb: np.ndarray, hair: np.ndarray, tlm: np.ndarray,
                    roi: tuple[int, int, int, int], skin_box: tuple[int, int, int, int], colour: ColourMatch,
                    height: float) -> None:
        """Match the new head's skin to the plate's per region, in place, on the skin box only;
        hair keeps the source's colour."""
        x0, y0, _, _ = roi
        sx0, sy0, sx1, sy1 = skin_box
        if sx1 <= sx0 or sy1 <= sy0:
            return
        src_stats, dst_stats = np.asarray(colour.source_stats), np.asarray(colour.plate_stats)
        fieldv = self._colour_field(tlm, skin_box, src_stats, dst_stats, height)
        if fieldv is None:
            return
        sk = (slice(sy0 - y0, sy1 - y0), slice(sx0 - x0, sx1 - x0))
        g, o = fieldv
        lab = cielab(new_rgb[sk])
        corr = lab * g + o
        keep = hair[sk][..., None]
        lab = corr + keep * (lab - corr)
        new_rgb[sk] = np.clip(cv2.cvtColor(lab, cv2.COLOR_LAB2RGB) * 255.0 + 0.5, 0, 255).astype(np.uint8)

    def _remove_old_head(self, img: np.ndarray, tlm: np.ndarray, plm: np.ndarray, person: np.ndarray, background: np.ndarray | None,
                         background_known: np.ndarray | None, roi: tuple[int, int, int, int], occ: np.ndarray | None,
                         alpha: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The plate on the ROI with its old head (person ∩ head region above the plate's chin,
        grown over the segmentation halo) replaced by the clean plate where it is known and
        inpainted where not; the old head's mask and what of it below the jaw corners is inpainted
        and shows (the new head at most half opaque there) (bool, ROI)."""
        x0, y0, x1, y1 = roi
        h, w = img.shape[:2]
        sl = (slice(y0, y1), slice(x0, x1))
        pf = face_frame(plm)
        # never cut lower than where the new neck is still opaque (no gap between new chin and old neck)
        t_chin_below = float((tlm[CHIN_BOTTOM, :2] - pf.chin) @ pf.down) / pf.height
        cut = min(_PLATE_CUT, t_chin_below + _NECK_OPAQUE - 0.02)
        region = head_region(plm, (h, w), cut_below_chin=cut, roi=roi)
        head = old_head_mask(img, person, plm, cut_below_chin=cut, roi=roi)
        # strays are looked for beside the head, never on the body the mask left out
        region[~head & (person[sl] >= 128)] = 0
        old = head.astype(np.uint8) * 255
        gk = max(1, round(self.GROW * pf.height))
        old = cv2.dilate(old, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * gk + 1,) * 2))
        base = img[sl].copy()
        oldb = old > 0
        if background is not None:
            bg = np.asarray(background)[sl]
            known = np.ones(oldb.shape, bool) if background_known is None else np.asarray(background_known)[sl] > 0
            oldb |= _stray_old_head(base, bg, known, oldb, region > 0, person[sl], pf.height)
            if occ is not None:
                oldb &= ~occ
            take = oldb & known
            base[take] = bg[take]
            todo = oldb & ~known
        else:
            if occ is not None:
                oldb &= ~occ
            todo = oldb
        # inpaint only what no new head pixel will fully hide
        if (todo & (alpha < 0.999)).any():
            base = _inpaint(base, todo, pf.height)
        # what the old head hid beside and under the jaw is the body (shoulders, clothing, the
        # neck), which inpainting cannot make up; a guessed wall beside the head is QC's fill test's
        _, below = pf.coords(*pixel_grid(roi))
        return base, oldb, todo & (alpha <= 0.5) & (below > -_JAW_CORNER * pf.height)

    def _blend(self, new_rgb: np.ndarray, base: np.ndarray, alpha: np.ndarray, hair: np.ndarray, plate: np.ndarray,
               roi: tuple[int, int, int, int], skin_box: tuple[int, int, int, int], occ: np.ndarray | None,
               height: float) -> tuple[np.ndarray, np.ndarray]:
        """The new head over ``base`` on the ROI, and the mask (bool, ROI) of what it may change.

        Straight alpha compositing everywhere (hair edges keep the matte's detail and the
        background takes no hair colour); multi-band on the skin box (its low bands smooth the
        neck seam and the skin's outline), except over hair. Occluded pixels (``occ``) take the
        matte out and stay exactly the ``plate``'s (the occlusion is cleared from ``alpha``)."""
        x0, y0, _, _ = roi
        sx0, sy0, sx1, sy1 = skin_box
        H = height
        if occ is not None:
            alpha[occ] = 0.0
        out_roi = cv2.blendLinear(new_rgb, base, alpha, 1.0 - alpha)
        changed = alpha > 0.0
        if sx1 - sx0 >= 8 and sy1 - sy0 >= 8:
            sk = (slice(sy0 - y0, sy1 - y0), slice(sx0 - x0, sx1 - x0))
            bs = base[sk].astype(np.float32)
            a_s = np.ascontiguousarray(alpha[sk])
            straight = out_roi[sk].astype(np.float32)
            src_f = np.where(a_s[..., None] > 0.0, new_rgb[sk].astype(np.float32), bs)  # no black edge for the pyramid
            levels = int(np.clip(np.log2(max(H, 16) / 16), 1, 4))
            lap = laplacian_blend(src_f, bs, a_s, levels)
            hw = np.clip(hair[sk] * 1.5, 0.0, 1.0)
            # fade the multi-band result into the straight one towards the box edge
            bh, bw = bs.shape[:2]
            ramp = max(2, round(0.05 * H))
            ex = np.minimum(np.arange(bw), np.arange(bw)[::-1])[None, :]
            ey = np.minimum(np.arange(bh), np.arange(bh)[::-1])[:, None]
            edge_w = np.clip(np.minimum(ex, ey) / ramp, 0.0, 1.0).astype(np.float32)
            # confine the low bands: they fade out within ``spill`` of the matte (smoothstep)
            support = (a_s > 0.0).astype(np.uint8) * 255
            spill = max(1, round(self.SPILL * H))
            d_out = cv2.distanceTransform(cv2.bitwise_not(support), cv2.DIST_L2, 3)
            tt = np.clip(1.0 - d_out / spill, 0.0, 1.0)
            reach = tt * tt * (3.0 - 2.0 * tt)
            wl = ((1.0 - hw) * edge_w * reach)[..., None]
            out_roi[sk] = np.clip(straight + wl * (lap - straight) + 0.5, 0, 255).astype(np.uint8)
            changed[sk] |= reach > 0
        if occ is not None:
            np.copyto(out_roi, plate, where=occ[..., None])
        return out_roi, changed


class ClassicHeadEngine:
    """The ``classic`` engine in head mode behind :class:`recast.models.engines.SwapEngine`:
    :class:`HeadSwapper` per chunk on the source's cut-out head, the plate's old head replaced
    by the clean plate, skin matched per region with the plate's (smoothed) statistics, hands
    in front of the face kept. CPU only and nothing to load."""

    name = "classic"
    version = "1.0"
    modes = ("face", "head")
    needs: frozenset[str] = frozenset({NEEDS_BACKGROUND, NEEDS_SOURCE_HEAD, NEEDS_SKIN_STATS})

    def __init__(self, *, mode: str = "head", options: EngineOptions | None = None) -> None:
        if mode != "head":
            raise UsageError(f"ClassicHeadEngine swaps heads, not '{mode}' (the face mode is ClassicFaceEngine)")
        self.mode = mode
        self.device = "cpu"

    def model_refs(self) -> tuple[ModelRef, ...]:
        from recast.models.occlusion import OcclusionDetector

        return (HeadSwapper.MODEL,) + tuple(OcclusionDetector.MODELS)

    def load(self) -> None:
        """Nothing to load: the source head is prepared per call (it differs between shots)."""

    def swap(self, plate: PlateFrames, targets: np.ndarray, source: SwapSource, *,
             progress: Callable[[int], None] | None = None) -> SwapResult:
        from recast.models.occlusion import OcclusionDetector

        if source.head is None:
            raise UsageError("the classic head swap needs the source's cut-out head (analysed in head mode)")
        if plate.background is None or plate.skin_stats is None:
            raise UsageError("the classic head swap needs the chunk's reconstructed background and the plate's skin statistics")
        swapper = HeadSwapper(source.head)
        source_stats = skin_colour_stats(source.head.rgb, source.head.landmarks)
        known = plate.background_known

        def one(i: int, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            p = plate.landmarks[i]
            stats = plate.skin_stats[i]
            colour = None if np.isnan(stats).all() else ColourMatch(source_stats=source_stats, plate_stats=stats)
            # the plate's own hair is replaced, so only hands count as occluders here
            res = swapper.swap(frame, target_landmarks=targets[i], plate_landmarks=p, plate_person_mask=plate.person[i],
                               background=plate.background[i], background_known=None if known is None else known[i],
                               occlusion_mask=occluder.hand_mask(frame, p), colour=colour)
            return res.frame, res.mask, res.guessed

        with OcclusionDetector(static_images=False) as occluder:
            return swap_frames(plate, targets, one, progress)


def _stray_old_head(plate: np.ndarray, bg: np.ndarray, known: np.ndarray, old: np.ndarray, region: np.ndarray,
                    person: np.ndarray, face_height: float) -> np.ndarray:
    """bool: what segmentation left of the old head beside it (an earring, strands and the soft
    halo of hair, a lock the person mask cut off): pixels within :data:`_STRAY_REACH` face heights
    of the ``old`` head's mask, inside its head ``region``, that the person mask gives at least a
    faint chance (``person`` uint8 0..255) and where the plate differs from the clean plate ``bg``
    where that is ``known`` (seen in other frames). That difference is the old head itself, so it
    goes with it; where the clean plate is not known nothing is added (a guessed background
    cannot tell a strand from the wall)."""
    # the distance to the old head, not a dilation: a kernel of 0.16 face heights cost ~10 ms a frame
    near = cv2.distanceTransform(np.where(old, 0, 255).astype(np.uint8), cv2.DIST_L2, 3) <= _STRAY_REACH * face_height
    cand = near & ~old & region & known & (person >= _STRAY_PERSON)
    if not cand.any():
        return cand
    diff = cv2.absdiff(plate, bg).max(axis=2)
    stray = cand & (diff > _STRAY_DIFF)
    # the strand's own soft edge (below the difference threshold) goes with it
    return stray | ((cv2.dilate(stray.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0) & cand)


def _inpaint(img: np.ndarray, mask: np.ndarray, face_height: float) -> np.ndarray:
    """``img`` with ``mask`` filled by TELEA inpainting from its surroundings.

    Runs at reduced resolution (the face about 48 px high): a background fill has no detail to
    lose, and full-resolution TELEA on a whole head costs tens of milliseconds. Only masked pixels
    change.
    """
    # only the mask's box (plus a margin to inpaint from) is looked at
    ys, xs = np.nonzero(mask.any(1))[0], np.nonzero(mask.any(0))[0]
    pad = max(4, round(0.1 * face_height))
    by0, by1 = max(0, ys[0] - pad), min(mask.shape[0], ys[-1] + 1 + pad)
    bx0, bx1 = max(0, xs[0] - pad), min(mask.shape[1], xs[-1] + 1 + pad)
    out = img.copy()
    out[by0:by1, bx0:bx1] = _inpaint_box(img[by0:by1, bx0:bx1], mask[by0:by1, bx0:bx1], face_height)
    return out


def _inpaint_box(img: np.ndarray, mask: np.ndarray, face_height: float) -> np.ndarray:
    m = mask.astype(np.uint8) * 255
    scale = min(1.0, 48.0 / max(face_height, 1.0))
    if scale < 1.0:
        small = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        sm = cv2.resize(m, (small.shape[1], small.shape[0]), interpolation=cv2.INTER_AREA)
        sm = cv2.dilate((sm > 0).astype(np.uint8) * 255, np.ones((3, 3), np.uint8))  # no old-head pixel leaks in
        filled = cv2.inpaint(small, sm, 3, cv2.INPAINT_TELEA)
        up = cv2.resize(filled, (img.shape[1], img.shape[0]), interpolation=cv2.INTER_LINEAR)
    else:
        up = cv2.inpaint(img, m, 3, cv2.INPAINT_TELEA)
    out = img.copy()
    np.copyto(out, up, where=mask[..., None])
    return out


def chosen_person_mask(rgb: np.ndarray, face, others) -> np.ndarray:
    """uint8 0..255 person mask of one person in a group photo: ``face`` (a detected face with
    ``landmarks`` and ``box``) is the chosen one, ``others`` the other faces in the photo.

    The person mask covers everyone, so the head regions of the others are removed, nearest face
    wins. The segmentation runs on a crop around the chosen head: on a whole group photo the
    256 px segmentation model is too coarse and merges people and wall into one blob.
    """
    h, w = rgb.shape[:2]
    x0, y0, x1, y1 = face.box
    fw, fh = x1 - x0, y1 - y0
    cx0, cy0 = max(0, int(x0 - 1.2 * fw)), max(0, int(y0 - 1.6 * fh))
    cx1, cy1 = min(w, int(x1 + 1.0 * fw)), min(h, int(y1 + 1.6 * fh))
    person = np.zeros((h, w), np.uint8)
    with PersonSegmenter() as segmenter:
        person[cy0:cy1, cx0:cx1] = segmenter.segment(np.ascontiguousarray(rgb[cy0:cy1, cx0:cx1]))
    ys, xs = np.mgrid[0:h, 0:w]
    own_c = face.landmarks[:, :2].mean(axis=0)
    own_d = np.hypot(xs - own_c[0], ys - own_c[1])
    for other in others:
        c = other.landmarks[:, :2].mean(axis=0)
        closer = np.hypot(xs - c[0], ys - c[1]) < own_d
        person[(head_region(other.landmarks, (h, w), cut_below_chin=1.0) > 0) | closer] = 0
    return person
