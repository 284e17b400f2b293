"""Piecewise-affine warping along MediaPipe's face mesh, and multi-band blending: the image
operations that the classic face swap, the classic head swap and the inswapper paste-back share.

A warp is described by two point sets with the same indices (where the pixels go, ``dst``, and
where they come from, ``src``) and a triangulation over them. :func:`rasterise_triangles` labels
each pixel of a region of interest with the triangle covering it, :func:`triangle_affines`
gives each triangle's map, and :func:`triangle_maps` turns both into the coordinate maps of
``cv2.remap``. Keeping the warp as maps (rather than warped images) lets callers join several
warps into one continuous map (see :class:`recast.models.head.HeadSwapper`).
"""

from __future__ import annotations

import cv2
import numpy as np

from recast.models.mesh_topology import (
    FACE_OVAL,
    LEFT_EYE,
    LEFT_IRIS_CENTER,
    LIPS_INNER,
    NUM_LANDMARKS,
    RIGHT_EYE,
    RIGHT_IRIS_CENTER,
    TESSELATION_TRIANGLES,
)

__all__ = [
    "FACE_TRIANGLES", "MOUTH_TRIANGLES", "RING_SCALE", "extended_points", "laplacian_blend", "rasterise_triangles",
    "triangle_affines", "triangle_maps",
]

_N = NUM_LANDMARKS
_MOUTH_CENTRE = _N  # a virtual point: the mean of the inner lip contour
_RING0 = _N + 1  # then one ring point per face-oval point
_OVAL = np.asarray(FACE_OVAL, np.int32)
#: ring points of :func:`extended_points` sit this far out from the oval's centre, relative to the oval
RING_SCALE = 1.12


def _fan(centre: int, loop: tuple[int, ...]) -> list[tuple[int, int, int]]:
    return [(centre, loop[i], loop[(i + 1) % len(loop)]) for i in range(len(loop))]


def _build_triangles() -> tuple[np.ndarray, np.ndarray]:
    tris = [tuple(t) for t in TESSELATION_TRIANGLES.tolist()]
    # the tessellation leaves holes at the eyes and the mouth; close them with fans
    tris += _fan(RIGHT_IRIS_CENTER, RIGHT_EYE)
    tris += _fan(LEFT_IRIS_CENTER, LEFT_EYE)
    mouth = _fan(_MOUTH_CENTRE, LIPS_INNER)
    n = len(_OVAL)
    ring = []
    for i in range(n):
        a, b = int(_OVAL[i]), int(_OVAL[(i + 1) % n])
        ra, rb = _RING0 + i, _RING0 + (i + 1) % n
        ring += [(a, b, rb), (a, rb, ra)]
    tris += ring
    face = np.asarray(tris, np.int32)
    return face, np.asarray(mouth, np.int32)


#: (T, 3) indices into :func:`extended_points`: the tessellation, fans closing the eyes, and a ring
#: of triangles from the face oval to the outer ring (so the warp fades into its surroundings)
FACE_TRIANGLES: np.ndarray
#: (M, 3) fan triangles of the mouth interior, around the virtual mouth centre
MOUTH_TRIANGLES: np.ndarray
FACE_TRIANGLES, MOUTH_TRIANGLES = _build_triangles()


def extended_points(landmarks: np.ndarray) -> np.ndarray:
    """(478 + 1 + len(FACE_OVAL), 3) points: the landmarks, the mouth centre, the outer ring."""
    lm = np.asarray(landmarks, np.float64)
    oval = lm[_OVAL]
    centre = oval.mean(0)
    ring = centre + (oval - centre) * RING_SCALE
    mouth = lm[list(LIPS_INNER)].mean(0, keepdims=True)
    return np.concatenate([lm, mouth, ring], axis=0)


def triangle_affines(dst: np.ndarray, src: np.ndarray, tris: np.ndarray) -> np.ndarray:
    """(T, 2, 3) affine maps taking each triangle of ``dst`` onto the same triangle of ``src``.

    Closed form (2x2 inverse by hand): numpy's batched ``inv`` costs milliseconds here.
    Degenerate target triangles get the constant map to their source's first vertex; they
    cover no pixels anyway (see :func:`rasterise_triangles`).
    """
    d = dst[tris][:, :, :2]  # (T, 3, 2)
    s = src[tris][:, :, :2]
    d1, d2 = d[:, 1] - d[:, 0], d[:, 2] - d[:, 0]
    s1, s2 = s[:, 1] - s[:, 0], s[:, 2] - s[:, 0]
    det = d1[:, 0] * d2[:, 1] - d2[:, 0] * d1[:, 1]
    ok = np.abs(det) > 1e-9
    inv_det = np.where(ok, 1.0 / np.where(ok, det, 1.0), 0.0)
    # inverse of D = [d1 d2] (columns) is [[d2y, -d2x], [-d1y, d1x]] / det
    i00, i01 = d2[:, 1] * inv_det, -d2[:, 0] * inv_det
    i10, i11 = -d1[:, 1] * inv_det, d1[:, 0] * inv_det
    a = np.empty((len(tris), 2, 3))
    a[:, :, 0] = s1 * i00[:, None] + s2 * i10[:, None]
    a[:, :, 1] = s1 * i01[:, None] + s2 * i11[:, None]
    a[:, :, 2] = s[:, 0] - a[:, :, 0] * d[:, 0, 0:1] - a[:, :, 1] * d[:, 0, 1:2]
    return a


def rasterise_triangles(dst: np.ndarray, tris: np.ndarray, roi: tuple[int, int, int, int]) -> np.ndarray:
    """int32 label image of the ROI: index of the triangle covering each pixel, -1 where none.

    Triangles are drawn far to near (by z) so that where the mesh folds over itself (a turned
    head), the nearer surface wins, as it does in the picture.
    """
    x0, y0, x1, y1 = roi
    labels = np.full((y1 - y0, x1 - x0), -1, np.int32)
    pts = dst[tris]  # (T, 3, 3)
    xy = np.round((pts[:, :, :2] - (x0, y0)) * 16).astype(np.int32)
    area2 = np.abs(np.cross(xy[:, 1] - xy[:, 0], xy[:, 2] - xy[:, 0]))
    order = np.argsort(-pts[:, :, 2].mean(1), kind="stable")
    for i in order:
        if area2[i] < 64:  # under a quarter of a pixel: would only draw a stray line
            continue
        cv2.fillConvexPoly(labels, xy[i], int(i), lineType=cv2.LINE_8, shift=4)
    return labels


def triangle_maps(labels: np.ndarray, aff: np.ndarray, roi: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """``cv2.remap`` coordinate maps (float32 x and y, shape of ``labels``) of the ROI: each
    pixel mapped by the affine of the triangle that covers it; uncovered pixels map far outside
    the source (so a constant border shows there)."""
    x0, y0, _, _ = roi
    h, w = labels.shape
    lab = np.where(labels >= 0, labels, 0)
    a = aff.astype(np.float32)[lab]  # (h, w, 2, 3)
    xs = np.arange(x0, x0 + w, dtype=np.float32)[None, :]
    ys = np.arange(y0, y0 + h, dtype=np.float32)[:, None]
    mx = a[..., 0, 0] * xs + a[..., 0, 1] * ys + a[..., 0, 2]
    my = a[..., 1, 0] * xs + a[..., 1, 1] * ys + a[..., 1, 2]
    outside = labels < 0
    mx[outside] = -1e4
    my[outside] = -1e4
    return mx, my


def laplacian_blend(a: np.ndarray, b: np.ndarray, alpha: np.ndarray, levels: int) -> np.ndarray:
    """Multi-band blend (Burt and Adelson): ``a`` where alpha is 1, ``b`` where 0, float32."""
    ga, gb, gm = [a], [b], [alpha]
    for _ in range(levels):
        ga.append(cv2.pyrDown(ga[-1]))
        gb.append(cv2.pyrDown(gb[-1]))
        gm.append(cv2.pyrDown(gm[-1]))
    out = ga[-1] * gm[-1][..., None] + gb[-1] * (1.0 - gm[-1][..., None])
    for i in range(levels - 1, -1, -1):
        size = (ga[i].shape[1], ga[i].shape[0])
        la = ga[i] - cv2.pyrUp(ga[i + 1], dstsize=size)
        lb = gb[i] - cv2.pyrUp(gb[i + 1], dstsize=size)
        m = gm[i][..., None]
        out = cv2.pyrUp(out, dstsize=size) + la * m + lb * (1.0 - m)
    return out
