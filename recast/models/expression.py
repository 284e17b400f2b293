"""Target landmarks for the new face: the source's proportions with the plate's pose and expression.

This is the first, group-wise retargeting (issue 2 replaces it by full expression-aware
retargeting with a neutralised source). See :func:`blend_identity_shape`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recast.errors import UsageError
from recast.models.mesh_topology import (
    FACE_OVAL,
    LEFT_EYE,
    LEFT_EYE_CORNERS,
    LEFT_EYEBROW,
    LEFT_IRIS,
    LIPS_INNER,
    LIPS_OUTER,
    MOUTH_CORNERS,
    NOSE,
    NUM_LANDMARKS,
    RIGHT_EYE,
    RIGHT_EYE_CORNERS,
    RIGHT_EYEBROW,
    RIGHT_IRIS,
)

#: Landmarks that move little with expression: eye corners, nose bridge and tip, forehead,
#: temples and the sides of the face. The chin is left out on purpose: it drops by a tenth of
#: the face height when the mouth opens, which would tilt every alignment.
STABLE_POINTS: tuple[int, ...] = (
    33, 133, 362, 263,          # eye corners
    168, 6, 197, 195, 5, 4, 1,  # nose bridge to tip
    10, 151, 9, 109, 338, 67, 297, 108, 337,  # forehead
    127, 356, 234, 454, 162, 389,  # temples and face sides
)


def similarity_align(src_pts: np.ndarray, dst_pts: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Least-squares similarity (Umeyama 1991) taking ``src_pts`` onto ``dst_pts``.

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


def _invert(scale: float, R: np.ndarray, t: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    inv_s = 1.0 / scale
    return inv_s, R.T, -inv_s * R.T @ t


@dataclass(frozen=True)
class _Group:
    name: str
    points: tuple[int, ...]
    # "rigid": centre and size follow the source, shape and motion come from the plate.
    # "shape": the source's outline, plus the plate's motion about its own shot median.
    mode: str
    anchor: tuple[int, ...]  # points whose mean is the group's position


_GROUPS: tuple[_Group, ...] = (
    _Group("right_eye", tuple(dict.fromkeys(RIGHT_EYE + RIGHT_IRIS)), "rigid", RIGHT_EYE_CORNERS),
    _Group("left_eye", tuple(dict.fromkeys(LEFT_EYE + LEFT_IRIS)), "rigid", LEFT_EYE_CORNERS),
    _Group("right_brow", RIGHT_EYEBROW, "rigid", RIGHT_EYEBROW),
    _Group("left_brow", LEFT_EYEBROW, "rigid", LEFT_EYEBROW),
    _Group("mouth", tuple(dict.fromkeys(LIPS_OUTER + LIPS_INNER)), "rigid", MOUTH_CORNERS),
    _Group("nose", NOSE, "shape", NOSE),
    _Group("oval", FACE_OVAL, "shape", FACE_OVAL),
)


def _group_size(pts: np.ndarray, group: _Group) -> float:
    if group.name in ("right_eye", "left_eye", "mouth"):
        a, b = group.anchor
        # width between the corners: eye opening and lip parting do not change it
        return float(np.linalg.norm(pts[a] - pts[b]))
    c = pts[list(group.points)]
    return float(np.sqrt(((c - c.mean(0)) ** 2).sum(1).mean()))


def _rest_weights(ref: np.ndarray, grouped: np.ndarray, rest: np.ndarray, k: int = 6) -> np.ndarray:
    """Inverse-distance weights (len(rest), len(grouped)) over the k nearest grouped points."""
    d = np.linalg.norm(ref[rest][:, None, :2] - ref[grouped][None, :, :2], axis=2)
    nn = np.argsort(d, axis=1)[:, :k]
    w = np.zeros_like(d)
    rows = np.arange(len(rest))[:, None]
    w[rows, nn] = 1.0 / (d[rows, nn] + 1e-6) ** 2
    return w / w.sum(1, keepdims=True)


def blend_identity_shape(plate_landmarks: np.ndarray, source_landmarks: np.ndarray, *, strength: float = 1.0) -> np.ndarray:
    """Per-frame target landmarks: source proportions, plate pose and expression.

    ``plate_landmarks`` is (F, 478, 3) with NaN rows where a frame has no face;
    ``source_landmarks`` is (478, 3). Returns (F, 478, 3) float32, NaN where the plate is NaN.

    How: every plate frame is brought into the source's frame of reference by a 3-D similarity
    fitted on :data:`STABLE_POINTS` (so head pose and distance drop out), and the plate actor's
    typical shape is taken as the per-point median over the shot. The face is then handled in
    feature groups:

    * eyes (with irises), brows, mouth — *rigid*: the group's position and size (eye and mouth
      corner widths, brow extent) become the source's, while the plate's shape inside the group
      (eye opening, blinks, lip parting, smile) and its motion about the shot median (brow
      raise, jaw drop) are kept, scaled to the source's size;
    * nose and face oval — *shape*: the source's outline, moved by the plate's motion about its
      median (so the chin still drops when the plate's mouth opens);
    * every other point moves by an inverse-distance blend of its nearest group points'
      displacements.

    ``strength`` in [0, 1] blends from the plate (0) to the full identity shape (1). The result
    is mapped back into each frame by the inverse similarity. With a single frame the median is
    that frame, so its brow raise and jaw drop count as identity and are replaced.

    Limits: the source is taken as it is (its expression in the photo is part of its "shape"
    for nose and oval); large yaw relies on MediaPipe's z being a fair depth.
    """
    plate = np.asarray(plate_landmarks, np.float64)
    src = np.asarray(source_landmarks, np.float64)
    if plate.ndim != 3 or plate.shape[1:] != (NUM_LANDMARKS, 3):
        raise UsageError(f"plate landmarks must be (F, {NUM_LANDMARKS}, 3), got {plate.shape}")
    if src.shape != (NUM_LANDMARKS, 3) or not np.isfinite(src).all():
        raise UsageError(f"source landmarks must be finite ({NUM_LANDMARKS}, 3), got {src.shape}")
    if not 0.0 <= strength <= 1.0:
        raise UsageError(f"identity strength must be in [0, 1], got {strength}")
    out = np.full(plate.shape, np.nan, np.float32)
    valid = np.isfinite(plate).all(axis=(1, 2))
    if not valid.any():
        return out

    stable = list(STABLE_POINTS)
    sims = {}
    canon = np.full(plate.shape, np.nan)
    for f in np.flatnonzero(valid):
        s, r, t = similarity_align(src[stable], plate[f][stable])
        sims[f] = (s, r, t)
        canon[f] = apply_similarity(plate[f], *_invert(s, r, t))
    median = np.nanmedian(canon[valid], axis=0)

    grouped_mask = np.zeros(NUM_LANDMARKS, bool)
    for g in _GROUPS:
        grouped_mask[list(g.points)] = True
    grouped = np.flatnonzero(grouped_mask)
    rest = np.flatnonzero(~grouped_mask)
    w_rest = _rest_weights(src, grouped, rest)

    for f in np.flatnonzero(valid):
        pc = canon[f]
        tc = pc.copy()
        for g in _GROUPS:
            idx = list(g.points)
            if g.mode == "rigid":
                a_src = src[list(g.anchor)].mean(0)
                a_med = median[list(g.anchor)].mean(0)
                size_med = _group_size(median, g)
                k = _group_size(src, g) / size_med if size_med > 1e-6 else 1.0
                tc[idx] = a_src + k * (pc[idx] - a_med)
            else:
                tc[idx] = src[idx] + (pc[idx] - median[idx])
        disp = tc[grouped] - pc[grouped]
        tc[rest] = pc[rest] + w_rest @ disp
        tc = pc + strength * (tc - pc)
        out[f] = apply_similarity(tc, *sims[f]).astype(np.float32)
    return out
