"""Background behind the person, for head mode: borrowed from other frames of the shot, inpainted last.

In head mode the plate's own head is removed; wherever the new head does not cover it the output
must show what is *behind* the person. This module rebuilds that background once per shot (a
whole-shot step, run after segmentation), from the per-frame person masks:

* :func:`estimate_camera_motion` — one homography per frame mapping it to its shot's reference
  frame (the shot's first frame), estimated on background pixels only: Shi-Tomasi corners on the
  background of a keyframe, pyramidal Lucas-Kanade tracking with a forward-backward check, RANSAC.
  It runs at reduced resolution (long side :data:`MOTION_SIZE`) and tracks every frame against a
  keyframe rather than against the previous frame, so a static camera does not accumulate a random
  walk; a frame whose background points moved by less than :data:`IDENTITY_PX` (median, full
  resolution pixels), or whose homography moves no image corner by more, gets the exact identity.
  Motion restarts from the identity at every scene cut.
* :func:`reconstruct_background` — for every frame, the plate where the (dilated) person mask is
  off, and where it is on, the value of the same scene point in the **nearest frame in time** in
  which it is visible (nearest first, rather than a temporal median, so that slow lighting changes
  and residual registration error matter least and the borrowed value is a real observed pixel;
  ties go to the earlier frame). What no usable frame shows is inpainted (``cv2.INPAINT_TELEA``)
  and marked ``known=False``. Nothing is ever borrowed across a scene cut.

Two paths, chosen per shot:

* **static** (every homography of the shot is the identity): two running passes over the shot —
  forward "last seen" and backward "next seen" — pick the nearest frame in which each pixel is
  visible, anywhere in the shot (the ``window`` does not bound this path; at the cost of a few
  array operations per frame it sees the whole shot). The never-seen pixels are the same for every
  frame of a static shot, so they are inpainted once per shot and pasted into every frame: the
  filled region does not flicker.
* **moving**: per target frame, source frames at offsets ``1, stride, 2*stride, ... <= window``
  before and after it (nearest first) are mapped into it by ``H_t^-1 @ H_s``. Which source fills
  which pixels is planned on coarse block masks, then each missing pixel is sampled (bilinear,
  all four taps visible in the source) from its planned source; a source whose relative motion is
  under :data:`IDENTITY_PX` is copied, not resampled. A source is planned only where it agrees
  with the target on the ring of pixels the target shows around its hole (block resolution,
  after a per-channel exposure gain that is then applied to what it fills): a frame the
  homography misregisters (parallax, a zoom, lighting that moved) or whose person mask missed
  part of the person would paste a shifted or foreign piece; the hole is left to later frames
  or to the inpainting instead. The rest is inpainted per frame (at reduced
  resolution when the hole is large: TELEA output is smooth anyway, and its cost grows with the
  hole's area), so a never-seen region may shimmer slightly from frame to frame on this path.

The dilation ring (``dilate_px`` around the segmented person) counts as hidden: it is replaced by
borrowed background where another frame shows it (segmentation edges carry hair and skin), and
inpainted where none does.

Memory: the result itself (``F*H*W*3`` bytes plus ``F*H*W`` for ``known``, about 1.1 GB for 300
frames of 1280x720) and O(window) full-resolution masks of scratch; the input frames are only
indexed (``frames[i]``), so a lazy sequence works. The static path keeps its per-pixel "age" in the
``known`` array's memory. Frames are RGB (or BGR — channel order does not matter), uint8.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from recast.errors import UsageError

__all__ = [
    "BackgroundPlate",
    "IDENTITY_PX",
    "MOTION_SIZE",
    "estimate_camera_motion",
    "reconstruct_background",
    "shot_segments",
]

#: long side (pixels) of the images camera motion is estimated on
MOTION_SIZE = 256
#: a homography that moves no image corner by more than this (full-resolution pixels) is the identity
IDENTITY_PX = 0.5
#: holes whose bounding box has a longer side than this are inpainted at reduced resolution
_INPAINT_MAX_SIDE = 96
#: long side (blocks) of the masks on which the moving-camera path plans which frame fills what
_PLAN_SIZE = 160

_I3 = np.eye(3, dtype=np.float64)


@dataclass(frozen=True)
class BackgroundPlate:
    """The background behind the person, for every frame of a shot.

    ``frames`` (F, H, W, 3) uint8: the plate where the (dilated) person mask is off; where it is
    on, the scene behind the person, borrowed from the nearest frame of the same shot that shows
    it, else inpainted. ``known`` (F, H, W) bool: True where the value was actually seen (in this
    frame or another one of the shot), False where it was inpainted.
    """

    frames: np.ndarray
    known: np.ndarray

    @property
    def known_fraction(self) -> float:
        """Share of all pixels of all frames whose value was seen rather than inpainted."""
        return float(self.known.mean()) if self.known.size else 1.0


# ================================================================================================
# helpers
# ================================================================================================
def shot_segments(n: int, cuts: Sequence[int] = ()) -> list[tuple[int, int]]:
    """[start, end) frame ranges of the shots of an ``n``-frame clip; a cut index starts a new shot.

    Cut indices outside ``1..n-1`` are ignored (a cut at 0 or at the end splits nothing).
    """
    bounds = sorted({int(c) for c in cuts if 0 < int(c) < n})
    edges = [0, *bounds, n]
    return [(a, b) for a, b in zip(edges[:-1], edges[1:]) if b > a]


def _check_inputs(frames, masks) -> tuple[int, int, int]:
    masks = np.asarray(masks)
    if masks.ndim != 3:
        raise UsageError(f"person masks must be (F, H, W), got shape {masks.shape}")
    n, h, w = masks.shape
    if len(frames) != n:
        raise UsageError(f"{len(frames)} frames but {n} person masks")
    if n:
        f0 = np.asarray(frames[0])
        if f0.shape != (h, w, 3) or f0.dtype != np.uint8:
            raise UsageError(f"frames must be uint8 (H, W, 3) matching the masks {(h, w)}, got {f0.dtype} {f0.shape}")
    return n, h, w


def _kernel(px: int) -> np.ndarray | None:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * px + 1, 2 * px + 1)) if px > 0 else None


def _dilate(mask: np.ndarray, kernel: np.ndarray | None) -> np.ndarray:
    m = np.ascontiguousarray(mask, dtype=np.uint8)
    if kernel is not None:
        m = cv2.dilate(m, kernel)
    return m.astype(bool)


def _put(dst: np.ndarray, src: np.ndarray, where: np.ndarray) -> None:
    """``dst[where] = src[where]`` in place; OpenCV's masked copy is ~50x faster than
    ``np.copyto(..., where=mask[..., None])`` on (H, W, 3) uint8 images."""
    r = cv2.copyTo(src, where.view(np.uint8) if where.dtype == bool else where, dst)
    if r is not dst and not np.shares_memory(r, dst):  # OpenCV had to reallocate: copy back
        np.copyto(dst, src, where=where[..., None] if dst.ndim == 3 else where)


def _is_identity(H: np.ndarray, w: int, h: int, tol: float = IDENTITY_PX) -> bool:
    c = np.array([[0, 0, 1], [w - 1, 0, 1], [0, h - 1, 1], [w - 1, h - 1, 1]], np.float64).T
    p = H @ c
    if np.any(np.abs(p[2]) < 1e-9):
        return False
    d = p[:2] / p[2] - c[:2]
    return bool(np.abs(d).max() <= tol)


# ================================================================================================
# camera motion
# ================================================================================================
_LK = dict(winSize=(15, 15), maxLevel=3, criteria=(cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 30, 0.01))


class _MotionFrame:
    """A frame reduced for motion estimation: grey image and background mask (255 = usable)."""

    __slots__ = ("gray", "bg")

    def __init__(self, frame: np.ndarray, mask: np.ndarray, scale: float, size: tuple[int, int]) -> None:
        gray = cv2.cvtColor(np.asarray(frame), cv2.COLOR_RGB2GRAY)
        person = np.ascontiguousarray(mask, dtype=np.uint8) * 255
        if scale != 1.0:
            gray = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
            person = cv2.resize(person, size, interpolation=cv2.INTER_AREA)
        # a margin around the person: edges of moving limbs and hair would pull the fit
        person = cv2.dilate((person > 0).astype(np.uint8), _kernel(3))
        self.gray = gray
        self.bg = np.where(person > 0, 0, 255).astype(np.uint8)

    def corners(self) -> np.ndarray | None:
        pts = cv2.goodFeaturesToTrack(self.gray, maxCorners=250, qualityLevel=0.005, minDistance=6,
                                      mask=self.bg, blockSize=5)
        return None if pts is None or len(pts) < 8 else pts.astype(np.float32)


def _track(key: _MotionFrame, pts: np.ndarray, cur: _MotionFrame, still_px: float) -> tuple[np.ndarray | None, int]:
    """Homography mapping ``cur`` coordinates to ``key`` coordinates (reduced scale), and its inliers."""
    nxt, st, _ = cv2.calcOpticalFlowPyrLK(key.gray, cur.gray, pts, None, **_LK)
    if nxt is None:
        return None, 0
    back, st2, _ = cv2.calcOpticalFlowPyrLK(cur.gray, key.gray, nxt, None, **_LK)
    fb = np.linalg.norm((back - pts).reshape(-1, 2), axis=1)
    ok = (st.ravel() == 1) & (st2.ravel() == 1) & (fb < 0.7)
    h, w = cur.gray.shape
    q = nxt.reshape(-1, 2)
    xi, yi = np.round(q[:, 0]).astype(int), np.round(q[:, 1]).astype(int)
    inside = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
    ok &= inside
    # a point that lands on the person in the current frame was occluded by it: not background
    ok[ok] &= cur.bg[yi[ok], xi[ok]] > 0
    if ok.sum() < 8:
        return None, 0
    src, dst = q[ok], pts.reshape(-1, 2)[ok]
    H, inl = cv2.findHomography(src, dst, cv2.RANSAC, 1.0, maxIters=500, confidence=0.995)
    if H is None or inl is None:
        return None, 0
    n_inl = int(inl.sum())
    det = np.linalg.det(H[:2, :2])
    if n_inl < 8 or not np.isfinite(H).all() or not (0.5 < det < 2.0):
        return None, 0
    # the camera held still if the background points did not move: a homography fitted to
    # sub-pixel noise can still swing the image corners by more than IDENTITY_PX
    inl = inl.ravel().astype(bool)
    if np.median(np.linalg.norm(src[inl] - dst[inl], axis=1)) < still_px:
        return _I3.copy(), n_inl
    return H, n_inl


def estimate_camera_motion(
    frames: Sequence[np.ndarray] | np.ndarray,
    masks: np.ndarray,
    *,
    cuts: Sequence[int] = (),
) -> np.ndarray:
    """Per-frame homographies (F, 3, 3) float64 mapping each frame to its shot's first frame.

    Estimated on background pixels only (``masks`` (F, H, W) bool is the person, excluded with a
    margin) at reduced resolution; each frame is tracked against a keyframe (re-chosen when too few
    of its corners survive), so a static camera gives exact identities rather than a drift. Motions
    smaller than :data:`IDENTITY_PX` are snapped to the identity; frames that cannot be registered
    (no texture, everything covered) keep the previous frame's homography. The first frame of every
    shot (``cuts``: indices that start a new shot) has the identity.
    """
    n, h, w = _check_inputs(frames, masks)
    masks = np.asarray(masks)
    out = np.repeat(_I3[None], n, axis=0)
    scale = min(1.0, MOTION_SIZE / max(h, w))
    size = (max(8, round(w * scale)), max(8, round(h * scale)))
    sx, sy = size[0] / w, size[1] / h
    # full -> reduced pixel coordinates (pixel centres), to carry homographies across scales
    S = np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5], [0, 0, 1]], np.float64)
    S_inv = np.linalg.inv(S)
    still = IDENTITY_PX * scale  # median point motion (reduced scale) below which nothing moved
    for start, end in shot_segments(n, cuts):
        key_i = start
        key = _MotionFrame(frames[start], masks[start], scale, size)
        pts = key.corners()
        n_key = 0 if pts is None else len(pts)
        prev = key
        Hs = {start: _I3.copy()}  # reduced-scale homographies to the shot's first frame
        for t in range(start + 1, end):
            cur = _MotionFrame(frames[t], masks[t], scale, size)
            H, n_inl = (None, 0) if pts is None else _track(key, pts, cur, still)
            if (H is None or n_inl < max(20, 0.3 * n_key)) and key_i != t - 1:
                # the keyframe is too far (or too occluded) now: re-key on the previous frame
                key_i, key = t - 1, prev
                pts = key.corners()
                n_key = 0 if pts is None else len(pts)
                H, n_inl = (None, 0) if pts is None else _track(key, pts, cur, still)
            if H is None:
                # nothing to register on: assume the camera held still since the previous frame
                Hs[t] = Hs[t - 1]
                key_i, key, pts = t, cur, cur.corners()
                n_key = 0 if pts is None else len(pts)
            else:
                Hs[t] = Hs[key_i] @ H
            prev = cur
        for t in range(start, end):
            Hf = S_inv @ Hs[t] @ S
            Hf = Hf / Hf[2, 2]
            out[t] = _I3 if _is_identity(Hf, w, h) else Hf
    return out


# ================================================================================================
# inpainting
# ================================================================================================
def _inpaint(img: np.ndarray, hole: np.ndarray, radius: int = 3) -> np.ndarray:
    """TELEA-inpaint ``hole`` of ``img`` in place, working on the hole's bounding box (plus a margin)
    and at reduced resolution when that box is large; only hole pixels are written."""
    ys, xs = np.nonzero(hole)
    if len(ys) == 0:
        return img
    h, w = hole.shape
    if len(ys) == h * w:
        # nothing seen at all: nothing to propagate from; leave the plate as it is
        return img
    m = 2 * radius + 8
    y0, y1 = max(0, ys.min() - m), min(h, ys.max() + m + 1)
    x0, x1 = max(0, xs.min() - m), min(w, xs.max() + m + 1)
    roi = np.ascontiguousarray(img[y0:y1, x0:x1])
    hroi = hole[y0:y1, x0:x1]
    hm = hroi.astype(np.uint8) * 255
    side = max(y1 - y0, x1 - x0)
    if side > _INPAINT_MAX_SIDE:
        f = _INPAINT_MAX_SIDE / side
        sz = (max(1, round((x1 - x0) * f)), max(1, round((y1 - y0) * f)))
        small = cv2.resize(roi, sz, interpolation=cv2.INTER_AREA)
        # grow the reduced hole a little: INTER_AREA mixes hole pixels into its rim
        hs = cv2.dilate((cv2.resize(hm, sz, interpolation=cv2.INTER_AREA) > 0).astype(np.uint8) * 255, _kernel(1))
        if hs.all():
            return img
        filled = cv2.inpaint(small, hs, radius, cv2.INPAINT_TELEA)
        filled = cv2.resize(filled, (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
    else:
        filled = cv2.inpaint(roi, hm, radius, cv2.INPAINT_TELEA)
    _put(img[y0:y1, x0:x1], filled, hroi)
    return img


# ================================================================================================
# reconstruction
# ================================================================================================
def _static_shot(frames, masks, start: int, end: int, kernel, out: np.ndarray, age: np.ndarray, inpaint: bool) -> None:
    """Nearest-seen fill of a static shot by a forward and a backward running pass.

    ``age`` (the uint8 view of the result's ``known``, used as scratch) holds per frame and pixel
    0 where the frame sees the pixel itself, else the distance in frames to the nearest earlier
    frame that saw it (capped at 254); at the end it is overwritten with ``known``. All work is
    confined to the box around every person mask of the shot: elsewhere the plate is kept as is.
    """
    h, w = out.shape[1:3]
    union = np.zeros((h, w), bool)
    for t in range(start, end):
        union |= np.asarray(masks[t], bool)
    for t in range(start, end):
        out[t] = np.asarray(frames[t])
    age[start:end] = 0
    if not union.any():
        return
    union = _dilate(union, kernel)
    bx, by, bw, bh = cv2.boundingRect(union.astype(np.uint8))
    box = (slice(by, by + bh), slice(bx, bx + bw))
    far = np.int32(1 << 30)
    val = np.zeros((bh, bw, 3), np.uint8)
    seen_t = np.full((bh, bw), -far, np.int32)
    ever = np.zeros((bh, bw), bool)
    # forward: last seen
    for t in range(start, end):
        hidden = _dilate(np.asarray(masks[t])[box], kernel)
        vis = ~hidden
        ft = out[t][box]
        _put(val, ft, vis)
        _put(seen_t, np.full_like(seen_t, t), vis)
        ever |= vis
        age[t][box] = np.minimum(t - seen_t, 254)
        _put(ft, val, hidden)
    # backward: next seen, where it is strictly nearer (ties keep the earlier frame)
    seen_t.fill(far)
    for t in range(end - 1, start - 1, -1):
        a = age[t][box]
        vis = a == 0
        ot = out[t][box]
        _put(val, ot, vis)
        _put(seen_t, np.full_like(seen_t, t), vis)
        _put(ot, val, seen_t - t < a)
    # never seen in the whole shot: the same pixels in every frame of a static shot, so inpaint
    # once (from the shot's middle frame) and paste everywhere: the filled region holds still
    never = np.zeros((h, w), bool)
    never[box] = ~ever
    if never.any():
        if inpaint:
            ref = out[(start + end) // 2].copy()
            _inpaint(ref, never)
        for t in range(start, end):
            _put(out[t], ref if inpaint else np.asarray(frames[t]), never)
    # known: everything some frame of the shot shows
    age[start:end] = ~never


def _sample(img: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Bilinear samples (N, 3) of ``img`` at points (u, v), as cv2.remap/warpPerspective take them."""
    n = len(u)
    if n == 0:
        return np.zeros((0, 3), np.uint8)
    # remap wants maps narrower than SHRT_MAX: lay the point list out as rows of 4096
    cols = min(n, 4096)
    rows = -(-n // cols)
    mu = np.zeros(rows * cols, np.float32)
    mv = np.zeros(rows * cols, np.float32)
    mu[:n], mv[:n] = u, v
    out = cv2.remap(img, mu.reshape(rows, cols), mv.reshape(rows, cols), cv2.INTER_LINEAR)
    return out.reshape(-1, 3)[:n]


#: the ring around a hole on which a source frame must agree with the target (blocks of the plan)
_RING_KERNEL = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (7, 7))
#: a source frame whose exposure-matched blocks differ from the target's on that ring by more than
#: this (mean absolute difference, 8-bit levels, 75th percentile) is misregistered there (parallax,
#: a zoom the homography missed, the person's own unsegmented parts): it fills nothing
_RING_MAX_DIFF = 10.0
#: fewer ring blocks than this in common and the agreement cannot be judged: the source is used
_RING_MIN_BLOCKS = 12
#: per-channel exposure gain bounds between a source frame and the target
_GAIN_RANGE = (0.8, 1.25)
_UNIT_GAIN = np.ones(3, np.float32)


def _agreement(target: np.ndarray, source: np.ndarray, ring: np.ndarray) -> np.ndarray | None:
    """The per-channel gain that matches ``source`` (a frame warped into the target, at block
    resolution, float32) to ``target`` on ``ring`` (bool blocks both show), or None when they
    disagree there beyond :data:`_RING_MAX_DIFF` after that gain. Too small a ring to judge:
    :data:`_UNIT_GAIN`."""
    if int(ring.sum()) < _RING_MIN_BLOCKS:
        return _UNIT_GAIN
    a, b = target[ring], source[ring]
    gain = np.clip((a.mean(0) + 1.0) / (b.mean(0) + 1.0), *_GAIN_RANGE).astype(np.float32)
    diff = np.abs(a - b * gain).mean(1)
    return gain if float(np.percentile(diff, 75)) <= _RING_MAX_DIFF else None


def _moving_shot(frames, masks, Hs, start: int, end: int, kernel, window: int, stride: int,
                 out: np.ndarray, known: np.ndarray, inpaint: bool) -> None:
    """Per target frame: warp the nearest source frames of a bounded window into it, then inpaint.

    Which source fills which part is planned first on block masks (long side :data:`_PLAN_SIZE`):
    without the plan, pixels that no frame shows (a torso that never moves) keep the search going
    through the whole window with full-resolution work, every frame. The plan is conservative (a
    block is "visible" in a source only if all its pixels are); the full-resolution pass then
    samples each missing pixel from its planned source (or, failing that at a block edge, from the
    next planned ones, nearest first). Pixels the plan misses at block edges are inpainted.
    """
    h, w = out.shape[1:3]
    offsets = sorted({1, *range(stride, window + 1, stride)})
    f = min(1.0, _PLAN_SIZE / max(h, w))
    ps = (max(4, round(w * f)), max(4, round(h * f)))
    sx, sy = ps[0] / w, ps[1] / h
    S = np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5], [0, 0, 1]], np.float64)
    S_inv = np.linalg.inv(S)
    # the block of each full-resolution row and column (as INTER_NEAREST resizing maps them)
    row_block = np.minimum((np.arange(h) * sy).astype(np.int64), ps[1] - 1)
    col_block = np.minimum((np.arange(w) * sx).astype(np.int64), ps[0] - 1)
    # frame -> (dilated person, fully visible blocks, the frame at block resolution)
    cache: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def occ(i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        c = cache.get(i)
        if c is None:
            m = _dilate(masks[i], kernel)
            vis_blocks = cv2.resize((~m).astype(np.uint8) * 255, ps, interpolation=cv2.INTER_AREA) == 255
            small = cv2.resize(np.asarray(frames[i]), ps, interpolation=cv2.INTER_AREA).astype(np.float32)
            c = cache[i] = (m, vis_blocks.astype(np.uint8) * 255, small)
        return c

    for t in range(start, end):
        for i in [i for i in cache if i < t - window]:
            del cache[i]
        hidden = occ(t)[0]
        ft = np.asarray(frames[t])
        out[t] = ft
        known[t] = ~hidden
        missing = hidden.copy()
        if not missing.any():
            continue
        Ht_inv = np.linalg.inv(Hs[t])
        # --- plan on blocks: nearest source first, each claims the blocks still missing that it shows
        rem = cv2.resize(hidden.astype(np.uint8) * 255, ps, interpolation=cv2.INTER_AREA) > 0
        # the ring of blocks around the hole that this frame itself shows: a source must agree with
        # the frame there (after an exposure gain) before it may fill the hole
        ring = (cv2.dilate(rem.astype(np.uint8), _RING_KERNEL) > 0) & ~rem & (occ(t)[1] > 0)
        small_t = occ(t)[2]
        plan: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]] = []
        for d in offsets:
            for s in (t - d, t + d):
                if not (start <= s < end) or not rem.any():
                    continue
                M = Ht_inv @ Hs[s]  # source frame -> target frame
                Ms = S @ M @ S_inv
                vb = cv2.warpPerspective(occ(s)[1], Ms, ps, flags=cv2.INTER_NEAREST, borderValue=0) > 0
                claim = rem & vb
                if not claim.any():
                    continue
                gain = _agreement(small_t, cv2.warpPerspective(occ(s)[2], Ms, ps, flags=cv2.INTER_LINEAR), ring & vb)
                if gain is None:
                    continue
                rem &= ~claim
                plan.append((s, M, claim, gain))
            if not rem.any():
                break
        if not plan:
            if inpaint:
                _inpaint(out[t], missing)
            continue
        # --- fill at full resolution, pixel lists instead of boxes: every missing pixel tries the
        # source its block was planned for, and, if that fails at full resolution (a block edge),
        # the later (farther) planned sources; the cost is O(missing pixels), not O(sources * box)
        labels = np.full(rem.shape, len(plan), np.int32)
        for k, (_, _, claim, _) in enumerate(plan):
            labels[claim] = k
        ys, xs = np.nonzero(missing)
        lab = labels[row_block[ys], col_block[xs]]
        order = np.argsort(lab, kind="stable")
        bounds = np.searchsorted(lab[order], np.arange(len(plan) + 1))
        pending = np.zeros(0, np.int64)  # indices into ys/xs that failed their planned source
        for k, (s, M, _, gain) in enumerate(plan):
            cand = np.concatenate([pending, order[bounds[k]:bounds[k + 1]]])
            if len(cand) == 0:
                continue
            py, px = ys[cand], xs[cand]
            vis_s = ~occ(s)[0]
            fs = np.asarray(frames[s])
            if _is_identity(M, w, h):
                ok = vis_s[py, px]
                vals = fs[py[ok], px[ok]]
            else:
                # target -> source coordinates; bilinear sample, all four taps visible and inside
                Minv = np.linalg.inv(M)
                q = Minv @ np.stack([px, py, np.ones_like(px)]).astype(np.float64)
                u, v = q[0] / q[2], q[1] / q[2]
                u0, v0 = np.floor(u).astype(np.int64), np.floor(v).astype(np.int64)
                ok = (u0 >= 0) & (v0 >= 0) & (u0 + 1 < w) & (v0 + 1 < h)
                u0c, v0c = np.clip(u0, 0, w - 2), np.clip(v0, 0, h - 2)
                ok &= vis_s[v0c, u0c] & vis_s[v0c, u0c + 1] & vis_s[v0c + 1, u0c] & vis_s[v0c + 1, u0c + 1]
                vals = _sample(fs, u[ok], v[ok])
            out[t, py[ok], px[ok]] = np.clip(vals * gain + 0.5, 0, 255) if gain is not _UNIT_GAIN else vals
            known[t, py[ok], px[ok]] = True
            missing[py[ok], px[ok]] = False
            pending = cand[~ok]
        if inpaint and missing.any():
            _inpaint(out[t], missing)


def reconstruct_background(
    frames: Sequence[np.ndarray] | np.ndarray,
    person_masks: np.ndarray,
    *,
    cuts: Sequence[int] = (),
    window: int = 60,
    stride: int = 2,
    dilate_px: int = 8,
    inpaint: bool = True,
    homographies: np.ndarray | None = None,
) -> BackgroundPlate:
    """The background behind the person for every frame of a clip (see the module doc).

    ``frames``: (F, H, W, 3) uint8 or a sequence of such frames (only indexed, so a lazy reader
    works). ``person_masks``: (F, H, W) bool (or 0/1, 0/255), the person in each frame; dilated by
    ``dilate_px`` before use, because segmentation edges bleed. ``cuts``: frame indices that start
    a new shot; nothing is borrowed across them. ``window``/``stride``: in shots where the camera
    moves, a frame borrows from frames at most ``window`` away, trying offsets ``1, stride,
    2*stride, ...`` nearest first (static shots use the whole shot). ``inpaint=False`` leaves
    never-seen pixels as the plate (still ``known=False``). ``homographies`` (F, 3, 3), each frame
    to its shot's reference, as from :func:`estimate_camera_motion`; estimated when not given.

    Outside the dilated person mask ``frames`` equals the plate exactly and ``known`` is True.
    """
    n, h, w = _check_inputs(frames, person_masks)
    if window < 1 or stride < 1 or dilate_px < 0:
        raise UsageError(f"background window and stride must be >= 1 and dilate_px >= 0, got {window}, {stride}, {dilate_px}")
    masks = np.asarray(person_masks)
    if masks.dtype != bool:
        masks = masks > 0
    if homographies is None:
        homographies = estimate_camera_motion(frames, masks, cuts=cuts)
    else:
        homographies = np.asarray(homographies, np.float64)
        if homographies.shape != (n, 3, 3):
            raise UsageError(f"homographies must be ({n}, 3, 3), got {homographies.shape}")
    out = np.empty((n, h, w, 3), np.uint8)
    known = np.zeros((n, h, w), bool)
    kernel = _kernel(int(dilate_px))
    for start, end in shot_segments(n, cuts):
        if all(_is_identity(homographies[t], w, h, 1e-6) for t in range(start, end)):
            # the per-pixel ages live in known's memory (a uint8 view), then become known in place
            _static_shot(frames, masks, start, end, kernel, out, known.view(np.uint8), inpaint)
        else:
            _moving_shot(frames, masks, homographies, start, end, kernel, int(window), int(stride), out, known, inpaint)
    return BackgroundPlate(frames=out, known=known)
