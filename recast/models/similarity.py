"""The least-squares similarity between two point sets (Umeyama 1991): the one estimate that
face alignment (ArcFace crops), head placement and expression retargeting share.

It is the estimate skimage's ``SimilarityTransform.estimate`` makes (which insightface uses
for its crops): centre both sets, SVD of their cross-covariance, a reflection turned into a
rotation by flipping the last singular direction, scale = trace(Σ·S) / variance of the source.
"""

from __future__ import annotations

import numpy as np

from recast.errors import UsageError

__all__ = ["apply_similarity", "similarity_align", "similarity_matrix"]


def similarity_align(src_pts: np.ndarray, dst_pts: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Least-squares similarity taking ``src_pts`` onto ``dst_pts``.

    Both are (N, D) with D = 2 or 3 (pass ``[:, :2]`` for a 2-D fit). Returns ``(scale, R, t)``
    with R a (D, D) rotation (no reflection) and t (D,), such that
    ``dst ≈ scale * src @ R.T + t``. Rows with NaN in either array are ignored.
    """
    src = np.asarray(src_pts, np.float64)
    dst = np.asarray(dst_pts, np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] not in (2, 3):
        raise UsageError(f"similarity_align needs two (N, 2|3) arrays of equal shape, got {src.shape} and {dst.shape}")
    ok = np.isfinite(src).all(1) & np.isfinite(dst).all(1)
    src, dst = src[ok], dst[ok]
    d = src.shape[1]
    if len(src) < d:
        raise UsageError(f"similarity_align needs at least {d} finite point pairs, got {len(src)}")
    mu_s, mu_d = src.mean(0), dst.mean(0)
    xs, xd = src - mu_s, dst - mu_d
    var_s = (xs ** 2).sum() / len(src)
    cov = xd.T @ xs / len(src)
    u, sig, vt = np.linalg.svd(cov)
    fix = np.eye(d)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        fix[-1, -1] = -1.0
    r = u @ fix @ vt
    scale = float(np.trace(np.diag(sig) @ fix) / var_s) if var_s > 0 else 1.0
    t = mu_d - scale * r @ mu_s
    return scale, r, t


def similarity_matrix(scale: float, R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """The (D, D + 1) affine matrix ``[scale * R | t]`` of a similarity (for ``cv2.warpAffine``)."""
    d = R.shape[0]
    m = np.empty((d, d + 1))
    m[:, :d] = scale * R
    m[:, d] = t
    return m


def apply_similarity(pts: np.ndarray, scale: float, R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Apply ``(scale, R, t)`` from :func:`similarity_align` to (N, C) points.

    The first D = ``R.shape[0]`` columns are transformed; with a 2-D fit on (N, 3) points, z is
    scaled by ``scale`` (it is a depth in the same pixel units as x).
    """
    p = np.asarray(pts, np.float64)
    d = R.shape[0]
    out = p.copy()
    out[:, :d] = scale * p[:, :d] @ R.T + t
    if p.shape[1] > d:
        out[:, d:] = scale * p[:, d:]
    return out
