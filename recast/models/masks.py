"""Face-region masks from landmarks, mask morphology, and person segmentation.

Polygons are ordered index lists into the 478-point mesh (see :mod:`recast.models.mesh_topology`),
so ``landmarks[FACE_OVAL, :2]`` is a closed outline ready for ``cv2.fillPoly``.
"""

from __future__ import annotations

import cv2
import numpy as np
from mediapipe.python.solutions import selfie_segmentation as _mp_selfie

from recast.contracts import ModelRef
from recast.errors import UsageError
from recast.models.face import MediaPipeGraphs, mediapipe_model
from recast.models.mesh_topology import (
    FACE_OVAL,
    LEFT_EYE,
    LEFT_EYEBROW,
    LEFT_IRIS,
    LIPS_INNER,
    LIPS_OUTER,
    NOSE,
    RIGHT_EYE,
    RIGHT_EYEBROW,
    RIGHT_IRIS,
)

__all__ = [
    "FACE_OVAL", "LEFT_EYE", "RIGHT_EYE", "LIPS_OUTER", "LIPS_INNER", "NOSE", "LEFT_EYEBROW",
    "RIGHT_EYEBROW", "LEFT_IRIS", "RIGHT_IRIS", "polygon_mask", "face_oval_mask",
    "face_skin_mask", "dilate_mask", "erode_mask", "feather_mask", "PersonSegmenter",
]


def _check_landmarks(landmarks: np.ndarray) -> np.ndarray:
    lm = np.asarray(landmarks)
    if lm.ndim != 2 or lm.shape[0] < 468 or lm.shape[1] < 2:
        raise UsageError(f"expected face landmarks (478, 3), got shape {lm.shape}")
    if not np.isfinite(lm[:468, :2]).all():
        raise UsageError("face landmarks contain NaN or inf: no face on this frame")
    return lm


def polygon_mask(landmarks: np.ndarray, polygons, shape: tuple[int, int]) -> np.ndarray:
    """uint8 {0, 255} mask of the union of the given ordered index polygons."""
    lm = _check_landmarks(landmarks)
    mask = np.zeros(shape[:2], np.uint8)
    # sub-pixel vertices (shift=4) so small faces do not get blocky outlines
    pts = [np.round(lm[list(p), :2] * 16).astype(np.int32) for p in polygons]
    cv2.fillPoly(mask, pts, 255, lineType=cv2.LINE_8, shift=4)
    return mask


def face_oval_mask(landmarks: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """uint8 {0, 255} mask of the filled face oval (forehead line to chin), size ``shape[:2]``."""
    return polygon_mask(landmarks, [FACE_OVAL], shape)


def face_skin_mask(landmarks: np.ndarray, shape: tuple[int, int], *, margin_px: int = 0) -> np.ndarray:
    """Face oval minus eyes, brows and the mouth (lips and interior): the skin to take colour
    statistics from. ``margin_px`` grows the holes so lashes and lip edges stay out too."""
    oval = face_oval_mask(landmarks, shape)
    lm = _check_landmarks(landmarks)
    polys = [np.round(lm[list(p), :2] * 16).astype(np.int32) for p in (LEFT_EYE, RIGHT_EYE, LIPS_OUTER)]
    for brow in (LEFT_EYEBROW, RIGHT_EYEBROW):
        polys.append(cv2.convexHull(np.round(lm[list(brow), :2] * 16).astype(np.int32)))
    # filling with black and stroking the outlines with a 2*margin pen grows the holes by
    # margin, at a fraction of the cost of a dilation
    cv2.fillPoly(oval, polys, 0, shift=4)
    if margin_px > 0:
        cv2.polylines(oval, polys, True, 0, thickness=2 * int(margin_px) + 1, shift=4)
    return oval


def _kernel(px: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * px + 1, 2 * px + 1))


def dilate_mask(mask: np.ndarray, px: int) -> np.ndarray:
    """Grow a uint8 mask by ``px`` pixels (elliptic structuring element)."""
    if px <= 0:
        return mask.copy()
    return cv2.dilate(mask, _kernel(int(px)))


def erode_mask(mask: np.ndarray, px: int) -> np.ndarray:
    """Shrink a uint8 mask by ``px`` pixels (elliptic structuring element)."""
    if px <= 0:
        return mask.copy()
    return cv2.erode(mask, _kernel(int(px)), borderType=cv2.BORDER_CONSTANT, borderValue=0)


def feather_mask(mask: np.ndarray, px: float) -> np.ndarray:
    """float32 alpha in 0..1: 1 deeper than ``px`` inside the mask, falling linearly (smoothstep)
    to 0 at its edge, and exactly 0 outside it.

    The feather lies *inside* the mask, so compositing with it never touches a pixel the mask
    does not cover.
    """
    m = (np.asarray(mask) > 0).astype(np.uint8)
    if px <= 0:
        return m.astype(np.float32)
    # OpenCV measures distance to the nearest zero pixel only (the image border is not an
    # edge), so a face cut by the frame edge stays opaque up to that edge
    dist = cv2.distanceTransform(m, cv2.DIST_L2, 5)
    t = np.clip(dist / float(px), 0.0, 1.0)
    return (t * t * (3.0 - 2.0 * t)).astype(np.float32)


class PersonSegmenter(MediaPipeGraphs):
    """Person (foreground) probability with MediaPipe selfie segmentation.

    Uses the general model (``model_selection=0``, 256x256 input): it follows hair and shoulders
    better than the landscape model, which matters more here than its ~1 ms extra. Not
    thread-safe: one per thread.
    """

    MODELS: tuple[ModelRef, ...] = (
        mediapipe_model("mediapipe.selfie_segmentation", "modules/selfie_segmentation/selfie_segmentation.tflite"),
    )
    GRAPHS = ("_seg",)

    def __init__(self) -> None:
        self._seg = _mp_selfie.SelfieSegmentation(model_selection=0)

    def segment(self, rgb: np.ndarray) -> np.ndarray:
        """uint8 (H, W) person probability, 0..255."""
        if self._seg is None:
            raise RuntimeError("PersonSegmenter is closed")
        if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise UsageError(f"expected an RGB uint8 image (H, W, 3), got {getattr(rgb, 'shape', type(rgb))}")
        res = self._seg.process(np.ascontiguousarray(rgb))
        prob = res.segmentation_mask
        if prob is None:
            return np.zeros(rgb.shape[:2], np.uint8)
        return np.clip(prob * 255.0 + 0.5, 0, 255).astype(np.uint8)
