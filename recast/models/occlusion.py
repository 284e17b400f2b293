"""What is in front of the plate's face: hands, microphones, strands of hair.

A swap paints the new face over the plate's face oval; whatever stood *in front* of the
plate's face must be painted back over it. :class:`OcclusionDetector` returns those pixels as
a mask (uint8 {0, 255}) from two kinds of evidence, both without new models:

Hands (:meth:`OcclusionDetector.hand_mask`)
    MediaPipe Hands (legacy solution, full model) gives 21 landmarks per hand; each hand
    becomes its filled convex hull, dilated by 4% of the face width (the landmarks sit on the
    joints, inside the skin outline), limited to the face oval dilated by 10% of the face
    width. MediaPipe Hands readily mistakes an open mouth or a whole face for a hand (seen on
    d13 and the SadTalker clip of the test media, hand scores 0.9+), so a hand counts only when
    at least a quarter of its landmarks lie *outside* the face oval: a real hand in front of a
    face reaches in from outside it (wrist and palm below the chin or beside the cheek). A hand
    held flat over the whole face with the wrist inside the oval is missed by this rule.

Other occluders (:meth:`OcclusionDetector.foreign_mask`)
    A colour rule: a Gaussian in CIELAB is fitted (trimmed, so an occluder covering part of the
    skin does not pull it) to the face skin from the landmarks (oval minus eyes, brows and
    mouth). Pixels inside the oval are *foreign* when their Mahalanobis distance exceeds
    ``color_sigma`` (the covariance is floored so a flat-lit face does not make every shadow
    foreign), or when ``person_mask`` says they are not person. Foreign pixels count only as
    connected blobs that (a) survive an opening of 3% of the face width (glasses rims,
    single hairs, lashes and pores are thinner), (b) touch the outer band of the oval (objects
    enter the face from outside it; eyes, nostrils and an open mouth sit inside and never do),
    (c) reach at least 12% of the face width deep into the oval, and (d) cover at least 1.5% of
    it. Holes a blob encloses (a lip under a microphone) are filled.

    Limits, by design on the conservative side: an occluder with the colour of the skin
    (another person's cheek, a skin-coloured prop) is not found unless it is a hand; a dark
    full beard or a fringe of hair over the forehead *is* foreign by this rule (it enters from
    the border and is far from the skin colour), so it stays the plate's — right for a face
    swap that keeps the plate's hair, wrong for a head swap, which should use
    :meth:`~OcclusionDetector.hand_mask` alone or subtract the plate's hair region. Strong
    coloured light across half the face can look foreign too; temporal smoothing of the mask
    over the shot (``recast.models.temporal.smooth_masks``) removes one-frame flickers of it.
"""

from __future__ import annotations

import cv2
import numpy as np
from mediapipe.python.solution_base import SolutionBase
from mediapipe.python.solutions import hands as _mp_hands

from recast.contracts import ModelRef
from recast.errors import UsageError
from recast.models.face import MediaPipeGraphs, mediapipe_model
from recast.models.mesh_topology import (
    FACE_OVAL,
    LEFT_EYE,
    LEFT_EYEBROW,
    LIPS_OUTER,
    RIGHT_EYE,
    RIGHT_EYEBROW,
)

__all__ = ["OcclusionDetector"]


class _Hands(SolutionBase):
    """MediaPipe's legacy Hands graph, built without ``calculator_params``.

    ``mediapipe.solutions.hands.Hands`` sets its confidence thresholds through calculator
    options, which fails with protobuf >= 6 (``FieldDescriptor.label`` is gone). The graph's own
    defaults are the same 0.5 that ``Hands`` defaults to, so nothing is lost by not setting them.
    """

    def __init__(self, *, static_images: bool, max_hands: int) -> None:
        super().__init__(
            binary_graph_path=_mp_hands._BINARYPB_FILE_PATH,
            side_inputs={
                "model_complexity": 1,
                "num_hands": max_hands,
                "use_prev_landmarks": not static_images,
            },
            outputs=["multi_hand_landmarks"],
        )

    def process(self, image: np.ndarray):  # noqa: D102 - SolutionBase's
        return super().process(input_data={"image": image})


def _check_rgb(rgb: np.ndarray) -> np.ndarray:
    if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise UsageError(f"expected an RGB uint8 image (H, W, 3), got {getattr(rgb, 'dtype', type(rgb))} {getattr(rgb, 'shape', '')}")
    return np.ascontiguousarray(rgb)


def _check_landmarks(lm: np.ndarray) -> np.ndarray:
    a = np.asarray(lm, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] < 468 or a.shape[1] < 2:
        raise UsageError(f"expected face landmarks (478, 3), got shape {a.shape}")
    if not np.isfinite(a[:468, :2]).all():
        raise UsageError("face landmarks contain NaN or inf: no face on this frame")
    return a


def _poly(lm: np.ndarray, idx) -> np.ndarray:
    return np.round(lm[list(idx), :2] * 16).astype(np.int32)


def _ellipse(px: int) -> np.ndarray:
    px = max(1, int(px))
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * px + 1, 2 * px + 1))


class OcclusionDetector(MediaPipeGraphs):
    """Pixels in front of a face that must stay the plate's (see the module docstring).

    ``static_images=False`` lets MediaPipe Hands track hands from frame to frame (one detector
    per clip, frames in order); ``True`` treats every frame on its own. Not thread-safe (the
    MediaPipe graph keeps state): one per thread. Use as a context manager or call
    :meth:`close`.
    """

    MODELS: tuple[ModelRef, ...] = (
        mediapipe_model("mediapipe.palm_detection_full", "modules/palm_detection/palm_detection_full.tflite"),
        mediapipe_model("mediapipe.hand_landmark_full", "modules/hand_landmark/hand_landmark_full.tflite"),
    )
    GRAPHS = ("_hands",)

    #: a hand counts when at least this share of its 21 landmarks lies outside the face oval
    HAND_OUTSIDE_MIN = 0.25
    #: hand hull dilation and face-region dilation, as shares of the face width
    HAND_DILATE = 0.04
    REGION_DILATE = 0.10
    #: foreign-colour rule (see the module docstring)
    OPEN_FRAC = 0.03
    BORDER_FRAC = 0.04
    DEPTH_FRAC = 0.12
    AREA_FRAC = 0.015
    #: the foreign rule runs on the face crop resized to at most this face width (pixels)
    ANALYSIS_WIDTH = 160.0

    def __init__(self, *, static_images: bool = False, max_hands: int = 2, color_sigma: float = 4.0) -> None:
        if max_hands < 1:
            raise UsageError(f"max_hands must be at least 1, got {max_hands}")
        if color_sigma <= 0:
            raise UsageError(f"color_sigma must be positive, got {color_sigma}")
        self.static_images = static_images
        self.color_sigma = float(color_sigma)
        self._hands: _Hands | None = _Hands(static_images=static_images, max_hands=max_hands)

    # --- hands ----------------------------------------------------------------------------------
    def hands(self, rgb: np.ndarray) -> list[np.ndarray]:
        """(21, 2) float32 pixel landmarks of each hand MediaPipe finds (unfiltered)."""
        if self._hands is None:
            raise RuntimeError("OcclusionDetector is closed")
        rgb = _check_rgb(rgb)
        res = self._hands.process(rgb)
        h, w = rgb.shape[:2]
        return [
            np.array([(p.x * w, p.y * h) for p in hl.landmark], dtype=np.float32)
            for hl in (res.multi_hand_landmarks or [])
        ]

    def hand_mask(self, rgb: np.ndarray, face_landmarks: np.ndarray, *, hands: list[np.ndarray] | None = None) -> np.ndarray:
        """uint8 {0, 255}: hands in front of the face (dilated hulls within the dilated face).

        ``hands`` may pass landmarks from :meth:`hands` already computed for this frame.
        """
        rgb = _check_rgb(rgb)
        lm = _check_landmarks(face_landmarks)
        shape = rgb.shape[:2]
        out = np.zeros(shape, np.uint8)
        found = self.hands(rgb) if hands is None else hands
        if not found:
            return out
        oval_poly = lm[list(FACE_OVAL), :2].astype(np.float32)
        face_w = _face_width(lm)
        for hand in found:
            pts = np.asarray(hand, np.float32)[:, :2]
            outside = np.mean([cv2.pointPolygonTest(oval_poly, (float(x), float(y)), False) < 0 for x, y in pts])
            # an open mouth or a whole face taken for a hand lies inside the oval
            if outside < self.HAND_OUTSIDE_MIN:
                continue
            hull = cv2.convexHull(np.round(pts * 16).astype(np.int32))
            cv2.fillConvexPoly(out, hull, 255, shift=4)
        if not out.any():
            return out
        out = cv2.dilate(out, _ellipse(round(self.HAND_DILATE * face_w)))
        region = np.zeros(shape, np.uint8)
        cv2.fillPoly(region, [_poly(lm, FACE_OVAL)], 255, shift=4)
        region = cv2.dilate(region, _ellipse(round(self.REGION_DILATE * face_w)))
        return cv2.bitwise_and(out, region)

    # --- other occluders ------------------------------------------------------------------------
    def foreign_mask(self, rgb: np.ndarray, face_landmarks: np.ndarray, person_mask: np.ndarray | None = None) -> np.ndarray:
        """uint8 {0, 255}: non-skin objects entering the face oval from its border (see module doc)."""
        rgb = _check_rgb(rgb)
        lm = _check_landmarks(face_landmarks)
        h, w = rgb.shape[:2]
        face_w = _face_width(lm)
        # work in a crop around the face: cost does not grow with the frame
        x0, y0 = lm[:468, :2].min(0) - 4
        x1, y1 = lm[:468, :2].max(0) + 4
        x0, y0 = int(max(0, np.floor(x0))), int(max(0, np.floor(y0)))
        x1, y1 = int(min(w, np.ceil(x1))), int(min(h, np.ceil(y1)))
        out = np.zeros((h, w), np.uint8)
        if x1 - x0 < 8 or y1 - y0 < 8:
            return out
        crop = rgb[y0:y1, x0:x1]
        # the rule needs no detail finer than ~1% of the face: analyse at <= ANALYSIS_WIDTH px
        # of face width, so a close-up in 4K costs what a 512 px portrait does
        scale = min(1.0, self.ANALYSIS_WIDTH / face_w)
        if scale < 1.0:
            crop = cv2.resize(crop, (max(8, round((x1 - x0) * scale)), max(8, round((y1 - y0) * scale))), interpolation=cv2.INTER_AREA)
        lmc = (lm[:, :2] - np.array([x0, y0], np.float64)) * np.array(
            [crop.shape[1] / (x1 - x0), crop.shape[0] / (y1 - y0)]
        )
        face_w = _face_width(lmc)
        cs = crop.shape[:2]

        oval = np.zeros(cs, np.uint8)
        cv2.fillPoly(oval, [_poly(lmc, FACE_OVAL)], 255, shift=4)
        features = np.zeros(cs, np.uint8)
        polys = [_poly(lmc, LEFT_EYE), _poly(lmc, RIGHT_EYE), _poly(lmc, LIPS_OUTER)]
        polys += [cv2.convexHull(_poly(lmc, b)) for b in (LEFT_EYEBROW, RIGHT_EYEBROW)]
        cv2.fillPoly(features, polys, 255, shift=4)
        # lashes, lip edges and brow hair are not skin and not occluders either
        features = cv2.dilate(features, _ellipse(round(0.03 * face_w)))
        skin = cv2.bitwise_and(oval, cv2.bitwise_not(features))
        if cv2.countNonZero(skin) < 50:
            return out

        lab = cv2.cvtColor(crop, cv2.COLOR_RGB2LAB).astype(np.float32)
        d2 = _skin_distance2(lab, skin > 0)
        if d2 is None:
            return out
        foreign = (d2 > self.color_sigma**2) & (oval > 0) & (features == 0)
        if person_mask is not None:
            pm = np.asarray(person_mask)
            if pm.shape[:2] != (h, w):
                raise UsageError(f"person_mask shape {pm.shape} does not match the frame {(h, w)}")
            pm = pm[y0:y1, x0:x1]
            if pm.shape[:2] != cs:
                pm = cv2.resize(pm.astype(np.float32), (cs[1], cs[0]), interpolation=cv2.INTER_LINEAR)
                pm = pm if np.asarray(person_mask).dtype != np.uint8 else pm.astype(np.uint8)
            not_person = (pm < 128) if pm.dtype == np.uint8 else (pm < 0.5)
            foreign |= not_person & (oval > 0) & (features == 0)
        fg = foreign.astype(np.uint8) * 255
        fg = cv2.morphologyEx(fg, cv2.MORPH_OPEN, _ellipse(round(self.OPEN_FRAC * face_w / 2)))
        if not fg.any():
            return out

        inner = cv2.erode(oval, _ellipse(round(self.BORDER_FRAC * face_w)))
        band = (oval > 0) & (inner == 0)
        depth = cv2.distanceTransform((oval > 0).astype(np.uint8), cv2.DIST_L2, 5)
        n, labels, stats, _ = cv2.connectedComponentsWithStats(fg, connectivity=8)
        keep = np.zeros(cs, np.uint8)
        min_area = self.AREA_FRAC * cv2.countNonZero(oval)
        for k in range(1, n):
            if stats[k, cv2.CC_STAT_AREA] < min_area:
                continue
            blob = labels == k
            if not band[blob].any():
                continue  # inside the face only: an eye, a nostril, an open mouth
            if depth[blob].max() < self.DEPTH_FRAC * face_w:
                continue  # a sliver along the outline: hairline, jaw shadow, background
            keep[blob] = 255
        if not keep.any():
            return out
        keep = _fill_holes(keep)
        if keep.shape != (y1 - y0, x1 - x0):
            keep = cv2.resize(keep, (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
            keep = np.where(keep >= 128, 255, 0).astype(np.uint8)
        # clip to the full-resolution oval so the upscaled mask does not spill past the face
        oval_full = np.zeros((y1 - y0, x1 - x0), np.uint8)
        cv2.fillPoly(oval_full, [_poly(lm[:, :2] - np.array([x0, y0]), FACE_OVAL)], 255, shift=4)
        out[y0:y1, x0:x1] = cv2.bitwise_and(keep, oval_full)
        return out

    # --- both -----------------------------------------------------------------------------------
    def occlusion_mask(self, rgb: np.ndarray, face_landmarks: np.ndarray, person_mask: np.ndarray | None = None) -> np.ndarray:
        """uint8 {0, 255} (H, W): pixels in front of the face that must stay the plate's.

        The union of :meth:`hand_mask` and :meth:`foreign_mask`. ``face_landmarks`` is the
        (478, 3) mesh of the face in pixels; ``person_mask`` (optional, uint8 0..255 or float
        0..1, e.g. from :class:`~recast.models.masks.PersonSegmenter`) adds non-person pixels
        inside the oval as evidence for the foreign rule.
        """
        return cv2.bitwise_or(self.hand_mask(rgb, face_landmarks), self.foreign_mask(rgb, face_landmarks, person_mask))


def _face_width(lm: np.ndarray) -> float:
    oval = lm[list(FACE_OVAL), :2]
    return float(max(1.0, oval[:, 0].max() - oval[:, 0].min()))


def _skin_distance2(lab: np.ndarray, skin: np.ndarray) -> np.ndarray | None:
    """Squared Mahalanobis distance of every pixel to a trimmed Gaussian fit of the skin pixels."""
    x = lab[skin].astype(np.float64)
    if len(x) < 50:
        return None
    keep = np.ones(len(x), bool)
    for _ in range(3):
        # trimmed refits: an occluder over part of the skin, or specular highlights, would
        # otherwise widen the model until it accepts the occluder itself
        mu = x[keep].mean(0)
        cov = np.cov(x[keep].T)
        cov = _floor_cov(cov)
        inv = np.linalg.inv(cov)
        d = x - mu
        m2 = np.einsum("ij,jk,ik->i", d, inv, d)
        new = m2 < 7.8  # chi-square, 3 dof, 95%
        if new.sum() < 50 or np.array_equal(new, keep):
            break
        keep = new
    d = lab.reshape(-1, 3).astype(np.float64) - mu
    return np.einsum("ij,jk,ik->i", d, inv, d).reshape(lab.shape[:2])


def _floor_cov(cov: np.ndarray) -> np.ndarray:
    # OpenCV's 8-bit LAB: L 0..255, a/b 128-centred. A floor of 6 (L) and 3 (a, b) units of
    # standard deviation keeps ordinary shading and make-up inside the model on evenly lit faces
    floor = np.array([6.0, 3.0, 3.0]) ** 2
    cov = cov + np.diag(np.maximum(floor - np.diag(cov), 0.0))
    return cov


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill the holes of a uint8 mask (regions not connected to the crop border)."""
    h, w = mask.shape
    pad = np.zeros((h + 2, w + 2), np.uint8)
    pad[1:-1, 1:-1] = mask
    flood = pad.copy()
    ff = np.zeros((h + 4, w + 4), np.uint8)
    cv2.floodFill(flood, ff, (0, 0), 255)
    holes = cv2.bitwise_not(flood)[1:-1, 1:-1]
    return cv2.bitwise_or(mask, holes)
