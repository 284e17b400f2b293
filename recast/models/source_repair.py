"""Taking out what a source photo holds in front of its face (a hand on a cheek, a cup, a
microphone at the side of the chin), from the face's own other side.

A face is close to symmetric in its shape, skin and lighting falloff, so the pixels behind a
hand on the left cheek are best guessed from the right cheek: :func:`mirror_maps` warps the
face onto its own mirror image along the face mesh (each triangle onto the triangle holding
the mirrored landmarks, :data:`~recast.models.mesh_topology.MIRROR`), which keeps the head's
turn and the photo's perspective (a flat left-right flip of the crop would not). The mirrored
pixels are brought to this side's lighting by the smoothed difference between the two sides
around the covered region (one cheek is usually brighter than the other), and feathered in.

What the mirror cannot give is the part whose mirror is covered too: an object across the
midline (a microphone in front of the mouth). :func:`repair_occluder` fills such pixels by
inpainting and reports their share (``unfilled_pct``); source vetting refuses the photo when
that share is more than a sliver (``max_unfilled_pct``), because a mouth or chin invented by
inpainting is not the person's.

Pure: arrays in, arrays out; it runs once per source photo (the source stage), never per frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from recast.models.mesh_topology import FACE_OVAL, MIRROR
from recast.models.mesh_warp import FACE_TRIANGLES, MOUTH_TRIANGLES, extended_points, rasterise_triangles, triangle_affines, triangle_maps

__all__ = ["OccluderRepair", "mirror_maps", "mirror_share", "repair_occluder"]

_OVAL = np.asarray(FACE_OVAL, np.int64)
_TRIS = np.concatenate([FACE_TRIANGLES, MOUTH_TRIANGLES])


def _extended_mirror() -> np.ndarray:
    """:data:`MIRROR` over :func:`~recast.models.mesh_warp.extended_points`: the landmarks, the
    mouth centre (its own mirror) and the outer ring (ring point i belongs to oval point i)."""
    n = len(MIRROR)
    where = {int(v): i for i, v in enumerate(_OVAL)}
    ring = [where[MIRROR[int(v)]] for v in _OVAL]
    return np.concatenate([np.asarray(MIRROR), [n], n + 1 + np.asarray(ring)]).astype(np.int64)


_EXT_MIRROR = _extended_mirror()


@dataclass(frozen=True)
class OccluderRepair:
    """A source photo with an occluder taken out.

    ``rgb`` is the whole photo, changed only inside ``box`` (x0, y0, x1, y1); ``covered`` is the
    mask of the pixels that were replaced; ``unfilled_pct`` is the share of the face oval
    (percent) whose mirror was covered too, filled by inpainting instead."""

    rgb: np.ndarray
    covered: np.ndarray
    unfilled_pct: float
    box: tuple[int, int, int, int]


def _face_width(lm: np.ndarray) -> float:
    return float(np.ptp(lm[_OVAL, 0]))


def _roi(lm: np.ndarray, shape: tuple[int, int]) -> tuple[int, int, int, int]:
    pts = extended_points(lm)[:, :2]
    h, w = shape
    x0, y0 = np.floor(pts.min(0)).astype(int)
    x1, y1 = np.ceil(pts.max(0)).astype(int) + 1
    return max(0, int(x0)), max(0, int(y0)), min(w, int(x1)), min(h, int(y1))


def mirror_maps(landmarks: np.ndarray, shape: tuple[int, int]) -> tuple[tuple[int, int, int, int], np.ndarray, np.ndarray]:
    """(roi, map_x, map_y): for every pixel of the face's region of interest, where its mirror
    image lies in the photo (``cv2.remap`` maps of the ROI; pixels off the mesh map far outside)."""
    pts = extended_points(landmarks)
    roi = _roi(np.asarray(landmarks, np.float64), shape)
    labels = rasterise_triangles(pts, _TRIS, roi)
    aff = triangle_affines(pts, pts[_EXT_MIRROR], _TRIS)
    mx, my = triangle_maps(labels, aff, roi)
    return roi, mx, my


def _mirror_of(mask: np.ndarray, roi: tuple[int, int, int, int], mx: np.ndarray, my: np.ndarray) -> np.ndarray:
    """Where, in the ROI, the mirror image of ``mask`` is set (also where no mirror exists)."""
    m = cv2.remap(mask.astype(np.float32), mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=1.0)
    return m > 0.01


def mirror_share(landmarks: np.ndarray, covered: np.ndarray, oval: np.ndarray) -> float:
    """% of the face oval that is covered on both sides (its mirror covered too, or off the face)."""
    lm = np.asarray(landmarks, np.float64)
    if not covered.any():
        return 0.0
    roi, mx, my = mirror_maps(lm, covered.shape)
    x0, y0, x1, y1 = roi
    both = covered[y0:y1, x0:x1] & _mirror_of(covered, roi, mx, my)
    return 100.0 * float((both & oval[y0:y1, x0:x1]).sum()) / max(1, int(oval.sum()))


def _smooth_fill(values: np.ndarray, weight: np.ndarray, sigma: float) -> np.ndarray:
    """Normalised convolution: ``values`` where ``weight`` is set, spread smoothly everywhere."""
    num = cv2.GaussianBlur(values * weight[..., None], (0, 0), sigma)
    den = cv2.GaussianBlur(weight.astype(np.float32), (0, 0), sigma)[..., None]
    return num / np.maximum(den, 1e-3)


def repair_occluder(rgb: np.ndarray, landmarks: np.ndarray, covered: np.ndarray, oval: np.ndarray) -> OccluderRepair:
    """The photo with the ``covered`` pixels (bool, photo-sized) replaced by the face's other
    side (see the module docstring); ``oval`` is the face oval's mask, for ``unfilled_pct``."""
    lm = np.asarray(landmarks, np.float64)
    fw = _face_width(lm)
    h, w = covered.shape
    # the occluder's own edge (a soft shadow, antialiasing) goes too
    k = 2 * max(1, round(0.02 * fw)) + 1
    covered = cv2.dilate(covered.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))) > 0
    roi, mx, my = mirror_maps(lm, (h, w))
    x0, y0, x1, y1 = roi
    img = rgb[y0:y1, x0:x1].astype(np.float32)
    cov = covered[y0:y1, x0:x1]
    mirrored = cv2.remap(rgb, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT).astype(np.float32)
    mirror_cov = _mirror_of(covered, roi, mx, my)
    fill = cov & ~mirror_cov
    unfilled = cov & mirror_cov
    # the two sides' lighting differs: carry the difference measured on a band around the hole
    band_k = 2 * max(1, round(0.1 * fw)) + 1
    band = (cv2.dilate(cov.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (band_k, band_k))) > 0) & ~cov & ~mirror_cov
    band &= oval[y0:y1, x0:x1]
    if band.sum() >= 20:
        mirrored += _smooth_fill(img - mirrored, band, max(2.0, 0.08 * fw))
    out = img.copy()
    out[fill] = mirrored[fill]
    out = np.clip(out, 0, 255).astype(np.uint8)
    if unfilled.any():
        out = cv2.inpaint(out, unfilled.astype(np.uint8), max(3.0, 0.03 * fw), cv2.INPAINT_TELEA)
    # feather the seam: the replaced region fades in over a couple of pixels outside it
    alpha = cv2.GaussianBlur(cov.astype(np.float32), (0, 0), max(1.0, 0.01 * fw))
    alpha = np.maximum(alpha, cov.astype(np.float32))[..., None]
    blended = np.clip(out.astype(np.float32) * alpha + img * (1.0 - alpha) + 0.5, 0, 255).astype(np.uint8)
    result = rgb.copy()
    result[y0:y1, x0:x1] = blended
    area = max(1, int(oval.sum()))
    changed = np.nonzero(alpha[..., 0] > 0)
    box = (x0 + int(changed[1].min()), y0 + int(changed[0].min()), x0 + int(changed[1].max()) + 1,
           y0 + int(changed[0].max()) + 1) if changed[0].size else (x0, y0, x0, y0)
    full_cov = np.zeros((h, w), bool)
    full_cov[y0:y1, x0:x1] = cov
    return OccluderRepair(rgb=result, covered=full_cov, unfilled_pct=100.0 * float((unfilled & oval[y0:y1, x0:x1]).sum()) / area,
                          box=box)
