"""Temporal stability over a whole shot: One-Euro smoothing, scene cuts, mask voting.

Per-chunk work (detection, segmentation) sees a few dozen frames; these functions run once per
shot on the small per-frame results (landmarks, colour statistics, masks) so that a filter never
restarts at a chunk boundary, and always restarts at a scene cut or after frames with no face.

* :class:`OneEuroFilter` — Casiez, Roussel & Vogel, "1€ Filter", CHI 2012, vectorised over any
  array shape (one filter smooths all 478×3 coordinates), at a fixed frame rate.
* :func:`smooth_landmarks`, :func:`smooth_series` — One-Euro forward and backward over each
  continuous run of a shot, averaged: the forward pass lags on motion and the backward pass
  leads by about as much, so the mean has no lag (zero-phase, as ``filtfilt``) while still
  being adaptive (fast motion raises the cutoff, so it is followed, not smeared).
* :func:`frame_signature`, :func:`scene_cuts`, :func:`detect_scene_cuts`, :func:`could_start_shot` — cuts from HSV
  histogram distances between consecutive frames.
* :func:`smooth_masks` — temporal majority (median) over a small window, not across cuts.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import cv2
import numpy as np

from recast.errors import UsageError


# ================================================================================================
# One-Euro filter
# ================================================================================================
class OneEuroFilter:
    """One-Euro low-pass filter (Casiez et al. 2012) over arrays, at a fixed frame rate.

    ``fps`` sets the sampling interval (dt = 1 / fps; pass a float, e.g. ``float(rate.fraction)``).
    ``min_cutoff`` (Hz) is the cutoff at rest — lower smooths more; ``beta`` raises the cutoff
    with speed (units of the signal per second), so fast motion is followed with little lag;
    ``d_cutoff`` (Hz) smooths the speed estimate. Each element of the array is filtered on its
    own. Call the filter on successive samples; :meth:`reset` starts over (at a cut or gap).
    """

    def __init__(self, fps: float, min_cutoff: float = 1.0, beta: float = 0.0, d_cutoff: float = 1.0) -> None:
        if not fps > 0:
            raise UsageError(f"OneEuroFilter needs a positive fps, got {fps}")
        if not (min_cutoff > 0 and d_cutoff > 0 and beta >= 0):
            raise UsageError(f"OneEuroFilter needs min_cutoff > 0, d_cutoff > 0, beta >= 0; got {min_cutoff}, {d_cutoff}, {beta}")
        self.dt = 1.0 / float(fps)
        self.min_cutoff = float(min_cutoff)
        self.beta = float(beta)
        self.d_cutoff = float(d_cutoff)
        self.reset()

    def reset(self) -> None:
        """Forget the past: the next sample passes through unchanged."""
        self._x: np.ndarray | None = None
        self._dx: np.ndarray | None = None

    def _alpha(self, cutoff: np.ndarray | float) -> np.ndarray | float:
        tau = 1.0 / (2 * np.pi * cutoff)
        return 1.0 / (1.0 + tau / self.dt)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float64)
        if self._x is None:
            self._x = x.copy()
            self._dx = np.zeros_like(x)
            return self._x.copy()
        dx = (x - self._x) / self.dt
        a_d = self._alpha(self.d_cutoff)
        self._dx = a_d * dx + (1 - a_d) * self._dx
        cutoff = self.min_cutoff + self.beta * np.abs(self._dx)
        a = self._alpha(cutoff)
        self._x = a * x + (1 - a) * self._x
        return self._x.copy()

    def filter(self, samples: np.ndarray) -> np.ndarray:
        """Filter a (T, ...) run of samples from a fresh state; returns the same shape."""
        self.reset()
        out = np.empty(np.shape(samples), np.float64)
        for i, s in enumerate(samples):
            out[i] = self(s)
        return out


# ================================================================================================
# segments
# ================================================================================================
def _segments(valid: np.ndarray, cuts: Iterable[int]) -> list[tuple[int, int]]:
    """[start, end) runs of valid frames, broken at every cut (a cut index starts a new run)."""
    n = len(valid)
    breaks = np.zeros(n + 1, bool)
    for c in cuts:
        c = int(c)
        if 0 < c < n:
            breaks[c] = True
    runs, start = [], None
    for i in range(n):
        if start is not None and (not valid[i] or breaks[i]):
            runs.append((start, i))
            start = None
        if valid[i] and start is None:
            start = i
    if start is not None:
        runs.append((start, n))
    return runs


def _filtfilt(seg: np.ndarray, fps: float, min_cutoff: float, beta: float, d_cutoff: float) -> np.ndarray:
    f = OneEuroFilter(fps, min_cutoff, beta, d_cutoff)
    fwd = f.filter(seg)
    bwd = f.filter(seg[::-1])[::-1]
    # the ends see only one direction's history: there the other pass is nearly raw, which is
    # what a filter restarted at the cut would give anyway
    return (fwd + bwd) / 2


def fill_gaps(values: np.ndarray) -> np.ndarray:
    """Each column of (T, K) ``values`` with its NaN entries interpolated from the known ones
    (the nearest known value beyond either end; 0 for a column with none), so a filter run over
    it sees a continuous signal."""
    out = np.array(values, dtype=float, copy=True)
    for j in range(out.shape[1]):
        col = out[:, j]
        ok = ~np.isnan(col)
        if not ok.any():
            col[:] = 0.0
        elif not ok.all():
            col[~ok] = np.interp(np.flatnonzero(~ok), np.flatnonzero(ok), col[ok])
    return out


def smooth_series(
    values: np.ndarray,
    fps: float,
    cuts: Sequence[int] = (),
    *,
    min_cutoff: float = 0.5,
    beta: float = 0.0,
    d_cutoff: float = 1.0,
) -> np.ndarray:
    """Smooth per-frame statistics (F, K) (e.g. LAB means and stds) over each shot.

    Forward-backward One-Euro (see module doc) on every run of finite rows between cuts; NaN
    rows stay NaN and break the run; nothing is smoothed across a cut. The defaults (0.5 Hz, no
    speed term) are heavy on purpose: colour that follows the plate slowly does not pump.
    """
    v = np.asarray(values, np.float64)
    if v.ndim == 1:
        return smooth_series(v[:, None], fps, cuts, min_cutoff=min_cutoff, beta=beta, d_cutoff=d_cutoff)[:, 0]
    if v.ndim != 2:
        raise UsageError(f"smooth_series needs (F, K) values, got {v.shape}")
    out = np.full_like(v, np.nan)
    valid = np.isfinite(v).all(1)
    for s, e in _segments(valid, cuts):
        out[s:e] = _filtfilt(v[s:e], fps, min_cutoff, beta, d_cutoff)
    return out


#: Landmark filter defaults, in face units (the landmarks are divided by the run's median
#: inter-ocular distance first, so they hold for any face size): 6 Hz at rest, rising by 5 Hz per
#: IOD/s of speed. The filter removes MediaPipe's frame-to-frame noise, not the actor's motion:
#: the earlier 1 Hz / 2 kept 0.61 of the plate's smoothed landmark acceleration (a talking head's
#: nods and mouth are 1-5 Hz), and the swap's output moved visibly less than the plate (QC's
#: motion ratio 0.70-0.77 on the quality matrix against 1.04 for a plain warp on the raw
#: landmarks). On the first 2 s of the 15 shared clips (raw landmarks, ``smooth_landmarks`` vs
#: none, QC's motion measure): 1 Hz / 2 keeps 0.61 of the motion (median; worst clip 0.47) and
#: 0.29 of the raw acceleration; 6 Hz / 5 keeps 0.86 (worst 0.81) and 0.61. The
#: forward-backward average keeps fast moves in place whatever the cutoff.
LANDMARK_MIN_CUTOFF = 6.0
LANDMARK_BETA = 5.0


def _iod(lm: np.ndarray) -> np.ndarray:
    r = lm[..., [33, 133], :2].mean(-2)
    l_ = lm[..., [263, 362], :2].mean(-2)
    return np.linalg.norm(l_ - r, axis=-1)


def smooth_landmarks(
    landmarks: np.ndarray,
    fps: float,
    cuts: Sequence[int] = (),
    *,
    min_cutoff: float = LANDMARK_MIN_CUTOFF,
    beta: float = LANDMARK_BETA,
    d_cutoff: float = 1.0,
) -> np.ndarray:
    """Smooth a shot's landmarks (F, 478, 3) with NaN rows; returns the same shape.

    One-Euro forward and backward, averaged (no lag), over each run of frames with a face
    between scene cuts: the filter restarts at every cut and after every gap, and NaN rows stay
    NaN. ``min_cutoff``/``beta`` are in face units (see :data:`LANDMARK_BETA`): the run is
    divided by its median inter-ocular distance before filtering and multiplied back after.
    Works for any (F, N, 3) with N >= 363 (the eye corners are used for the scale); other
    shapes are filtered in their own units.
    """
    lm = np.asarray(landmarks, np.float64)
    if lm.ndim != 3:
        raise UsageError(f"smooth_landmarks needs (F, N, 3) landmarks, got {lm.shape}")
    out = np.full_like(lm, np.nan)
    valid = np.isfinite(lm).all(axis=(1, 2))
    for s, e in _segments(valid, cuts):
        seg = lm[s:e]
        unit = float(np.median(_iod(seg))) if lm.shape[1] > 362 else 1.0
        unit = unit if unit > 1e-6 else 1.0
        out[s:e] = _filtfilt(seg / unit, fps, min_cutoff, beta, d_cutoff) * unit
    return out


# ================================================================================================
# scene cuts
# ================================================================================================
#: HSV histogram bins (hue, saturation, value) of :func:`frame_signature`.
SIGNATURE_BINS = (16, 4, 4)


def frame_signature(rgb: np.ndarray) -> np.ndarray:
    """A small colour signature of one RGB uint8 frame: a 16×4×4 HSV histogram, summing to 1.

    The frame is shrunk to at most 160 px wide first (the histogram does not need detail and
    this keeps it ~0.3 ms per 1080p frame after decode).
    """
    a = np.asarray(rgb)
    if a.ndim != 3 or a.shape[2] != 3:
        raise UsageError(f"frame_signature needs an (H, W, 3) RGB frame, got {a.shape}")
    if a.dtype != np.uint8:
        a = np.clip(a, 0, 255).astype(np.uint8)
    h, w = a.shape[:2]
    if w > 160:
        a = cv2.resize(a, (160, max(1, round(h * 160 / w))), interpolation=cv2.INTER_AREA)
    hsv = cv2.cvtColor(a, cv2.COLOR_RGB2HSV)
    hist = cv2.calcHist([hsv], [0, 1, 2], None, list(SIGNATURE_BINS), [0, 180, 0, 256, 0, 256]).ravel()
    return (hist / max(hist.sum(), 1.0)).astype(np.float32)


def signature_distances(signatures: np.ndarray) -> np.ndarray:
    """(F,) distance of each frame's signature to the previous one (total variation, 0..1; d[0] = 0)."""
    s = np.asarray(signatures, np.float64)
    if s.ndim != 2:
        raise UsageError(f"signatures must be (F, K), got {s.shape}")
    d = np.zeros(len(s))
    if len(s) > 1:
        d[1:] = 0.5 * np.abs(np.diff(s, axis=0)).sum(1)
    return d


#: Default cut threshold on :func:`signature_distances`. Within a shot consecutive frames of the
#: shared test clips differ by 0.01–0.3 (talking heads; a singer moving under flickering light peaks at 0.29); the
#: cuts of ghost_nggyup.mp4 by 0.57–0.59.
CUT_THRESHOLD = 0.4


def could_start_shot(previous: np.ndarray, signature: np.ndarray, threshold: float = CUT_THRESHOLD) -> bool:
    """Whether a frame whose signature is ``signature`` may be a cut after the frame of ``previous``.

    This is the first test of :func:`scene_cuts` (the distance of :func:`signature_distances`
    above ``threshold``) and needs only the two frames, so a stage that streams frames can act on
    every frame that may start a shot before the whole shot is seen; :func:`scene_cuts` then
    keeps those that also stand out from the frames around them, so its cuts are a subset.
    """
    a, b = np.asarray(previous, np.float64).ravel(), np.asarray(signature, np.float64).ravel()
    if a.shape != b.shape:
        raise UsageError(f"signatures of different sizes: {a.shape} and {b.shape}")
    return bool(0.5 * np.abs(b - a).sum() > threshold)


def scene_cuts(signatures: np.ndarray, threshold: float = CUT_THRESHOLD, *, min_ratio: float = 3.0,
               min_shot: int = 3) -> list[int]:
    """Indices of frames that start a new shot.

    A cut at t needs the distance d[t] to the previous frame above ``threshold`` *and*
    ``min_ratio`` times the median distance of the ±5 frames around it (so steady fast motion,
    which is a run of large distances, is not a cut). Cuts closer than ``min_shot`` frames to
    the previous one are dropped (flashes, dissolves count once).
    """
    d = signature_distances(signatures)
    cuts: list[int] = []
    for t in range(1, len(d)):
        if d[t] <= threshold:
            continue
        around = np.concatenate([d[max(1, t - 5):t], d[t + 1:t + 6]])
        base = float(np.median(around)) if len(around) else 0.0
        if d[t] < min_ratio * base:
            continue
        if cuts and t - cuts[-1] < min_shot:
            if d[t] > d[cuts[-1]]:
                cuts[-1] = t
            continue
        cuts.append(t)
    return cuts


def detect_scene_cuts(frames_or_signatures: np.ndarray | Sequence[np.ndarray], threshold: float = CUT_THRESHOLD) -> list[int]:
    """Scene cuts from RGB frames (F, H, W, 3) / a list of frames, or from signatures (F, K)."""
    first = frames_or_signatures[0] if len(frames_or_signatures) else None
    if first is None:
        return []
    if np.ndim(first) == 3:
        sigs = np.stack([frame_signature(f) for f in frames_or_signatures])
    elif np.ndim(first) == 1:
        sigs = np.asarray(frames_or_signatures)
    else:
        raise UsageError("detect_scene_cuts needs RGB frames (F, H, W, 3) or signatures (F, K)")
    return scene_cuts(sigs, threshold)


# ================================================================================================
# masks
# ================================================================================================
def smooth_masks(masks: np.ndarray, cuts: Sequence[int] = (), radius: int = 1) -> np.ndarray:
    """Temporal median of masks (F, H, W) over frames t-radius..t+radius of the same shot.

    For bool masks this is a majority vote (ties, at the ends of a shot, keep frame t's own
    value); for uint8 (soft) masks the per-pixel median. A one-frame dropout or flash of the
    mask is removed; edges that move keep their position (the median of a moving edge is the
    middle frame's edge). Nothing is mixed across a cut. Returns the input's dtype.
    """
    m = np.asarray(masks)
    if m.ndim != 3:
        raise UsageError(f"smooth_masks needs (F, H, W) masks, got {m.shape}")
    if radius < 0:
        raise UsageError(f"smooth_masks radius must be >= 0, got {radius}")
    if radius == 0 or len(m) < 2:
        return m.copy()
    out = np.empty_like(m)
    for s, e in _segments(np.ones(len(m), bool), cuts):
        for t in range(s, e):
            lo, hi = max(s, t - radius), min(e, t + radius + 1)
            win = m[lo:hi]
            if m.dtype == bool:
                votes = win.sum(0, dtype=np.int32)
                n = hi - lo
                out[t] = (2 * votes > n) | ((2 * votes == n) & m[t])
            else:
                med = np.median(win, axis=0)
                if (hi - lo) % 2 == 0:  # even window: keep the frame's own side of the median
                    med = np.where(m[t] >= med, np.ceil(med), np.floor(med))
                out[t] = med.astype(m.dtype) if np.issubdtype(m.dtype, np.integer) else med
    return out
