"""The ``classic`` face swap: mesh warp, LAB colour transfer and multi-band blending, on CPU.

The source face is cut along MediaPipe's face-mesh triangulation (plus fans that close the eyes
and the mouth, and a ring of points just outside the face oval), warped triangle by triangle onto
the target landmarks, colour-matched to the plate's skin, and blended into the plate inside the
(eroded, feathered) target face oval. The mouth interior is taken from the plate, warped to the
target mouth, because the plate's teeth and tongue belong to the plate's speech.

All work happens on the face's bounding box (region of interest), and nothing outside the
target face oval grown by :attr:`ClassicFaceSwapper.SPILL` of the face size changes.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from recast.contracts import ModelRef
from recast.errors import UsageError
from recast.models.masks import erode_mask, face_skin_mask, feather_mask
from recast.models.mesh_topology import (
    FACE_OVAL,
    LEFT_EYE,
    LEFT_EYEBROW,
    RIGHT_EYEBROW,
    LEFT_IRIS_CENTER,
    LIPS_INNER,
    NUM_LANDMARKS,
    RIGHT_EYE,
    RIGHT_IRIS_CENTER,
    TESSELATION_TRIANGLES,
)

_N = NUM_LANDMARKS
_MOUTH_CENTRE = _N  # a virtual point: the mean of the inner lip contour
_RING0 = _N + 1  # then one ring point per face-oval point
_OVAL = np.asarray(FACE_OVAL, np.int32)
_RING_SCALE = 1.12  # ring points sit this far out from the oval's centre, relative to the oval


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


_FACE_TRIS, _MOUTH_TRIS = _build_triangles()


def extended_points(landmarks: np.ndarray) -> np.ndarray:
    """(478 + 1 + len(FACE_OVAL), 3) points: the landmarks, the mouth centre, the outer ring."""
    lm = np.asarray(landmarks, np.float64)
    oval = lm[_OVAL]
    centre = oval.mean(0)
    ring = centre + (oval - centre) * _RING_SCALE
    mouth = lm[list(LIPS_INNER)].mean(0, keepdims=True)
    return np.concatenate([lm, mouth, ring], axis=0)


def _affines(dst: np.ndarray, src: np.ndarray, tris: np.ndarray) -> np.ndarray:
    """(T, 2, 3) affine maps taking each triangle of ``dst`` onto the same triangle of ``src``.

    Closed form (2x2 inverse by hand): numpy's batched ``inv`` costs milliseconds here.
    Degenerate target triangles get the constant map to their source's first vertex; they
    cover no pixels anyway (see :func:`_rasterise`).
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


def _rasterise(dst: np.ndarray, tris: np.ndarray, roi: tuple[int, int, int, int]) -> np.ndarray:
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


def _maps(labels: np.ndarray, aff: np.ndarray, roi: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray]:
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


def _lab_stats(lab: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    if cv2.countNonZero(mask) < 50:
        return None
    mean, std = cv2.meanStdDev(lab, mask=mask)
    return mean.ravel().astype(np.float32), std.ravel().astype(np.float32) + 1e-3


def _laplacian_blend(a: np.ndarray, b: np.ndarray, alpha: np.ndarray, levels: int) -> np.ndarray:
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


def hard_blend_mask(oval_points: np.ndarray, roi: tuple[int, int, int, int], shape: tuple[int, int], covered: np.ndarray,
                    erode_px: int, occlusion_mask: np.ndarray | None, frame_shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray | None]:
    """The region a pasted face replaces: the face oval pulled in by ``erode_px``, where the warp
    has content, minus occluders; also the occlusion (0..1, on the ROI) for :func:`paste_roi`."""
    x0, y0, x1, y1 = roi
    oval = np.zeros(shape, np.uint8)
    cv2.fillPoly(oval, [np.round((oval_points - (x0, y0)) * 16).astype(np.int32)], 255, shift=4)
    hard = erode_mask(oval, erode_px)
    hard[~covered] = 0
    occ = None
    if occlusion_mask is not None:
        om = np.asarray(occlusion_mask)
        if om.shape[:2] != tuple(frame_shape[:2]):
            raise UsageError(f"occlusion mask shape {om.shape} does not match the frame {tuple(frame_shape)}")
        occ = om[y0:y1, x0:x1].astype(np.float32) / (255.0 if om.dtype == np.uint8 else 1.0)
        hard[occ >= 0.5] = 0
    return hard, occ


def paste_roi(frame: np.ndarray, roi: tuple[int, int, int, int], source_roi: np.ndarray, hard: np.ndarray, face: float, *,
              feather_frac: float, spill_frac: float, occlusion: np.ndarray | None) -> "SwapFrame":
    """Blend ``source_roi`` (float32) into ``frame`` inside ``roi`` under the ``hard`` mask.

    Multi-band blend with a feathered mask; the pyramid's low bands spread beyond the hard mask,
    so they fade out over ``spill_frac`` of the face size (a smoothstep of the distance to the
    mask) and nowhere further. Occluded pixels stay the frame's. Shared by every engine that
    pastes a face back (classic, inswapper).
    """
    x0, y0, x1, y1 = roi
    h, w = frame.shape[:2]
    alpha = feather_mask(hard, max(1.0, feather_frac * face))
    dst_f = frame[y0:y1, x0:x1].astype(np.float32)
    levels = int(np.clip(np.log2(max(face, 16) / 8), 1, 5))
    blended = _laplacian_blend(source_roi, dst_f, alpha, levels)
    spill = max(1, round(spill_frac * face))
    d_out = cv2.distanceTransform(cv2.bitwise_not(hard), cv2.DIST_L2, 5)
    t = np.clip(1.0 - d_out / spill, 0.0, 1.0)
    reach = t * t * (3.0 - 2.0 * t)
    if occlusion is not None:
        reach *= 1.0 - np.clip(occlusion, 0.0, 1.0)
    out_roi = dst_f + reach[..., None] * (blended - dst_f)
    out = frame.copy()
    out[y0:y1, x0:x1] = np.clip(out_roi + 0.5, 0, 255).astype(np.uint8)
    mask = np.zeros((h, w), np.uint8)
    mask[y0:y1, x0:x1][reach > 0] = 255
    return SwapFrame(frame=out, mask=mask)


def _usable_face_mask(rgb: np.ndarray, lm: np.ndarray) -> np.ndarray:
    """uint8 mask of a source photo: 255 where its face can be used, 0 on hair (or a hat)
    hanging over the forehead inside the face oval.

    Above the brows, pixels whose LAB colour lies far (over 3 standard deviations in any
    channel) from the photo's own cheek-and-nose skin are taken as not-skin. The mesh's oval
    runs along the hairline of a bald forehead, so fringes and side parts fall inside it; left
    in, they would paste a band of the source's hair across the plate's forehead.
    """
    h, w = rgb.shape[:2]
    usable = np.full((h, w), 255, np.uint8)
    skin = face_skin_mask(lm, (h, w), margin_px=max(1, round(0.02 * np.ptp(lm[_OVAL, 0]))))
    lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB)
    # statistics from below the brows: the forehead may be mostly hair
    right, left = lm[33, :2], lm[263, :2]
    across = (left - right) / (np.linalg.norm(left - right) + 1e-9)
    up = np.array([across[1], -across[0]])  # image y grows downwards
    ys, xs = np.mgrid[0:h, 0:w]
    height = (xs - right[0]) * up[0] + (ys - right[1]) * up[1]
    brow_h = float(((lm[list(LEFT_EYEBROW) + list(RIGHT_EYEBROW), :2] - right) @ up).mean())
    lower = skin.copy()
    lower[height > brow_h] = 0
    if cv2.countNonZero(lower) < 50:
        return usable
    mean, std = cv2.meanStdDev(lab, mask=lower)
    z = np.abs(lab.astype(np.float32) - mean.ravel()) / (std.ravel() + 2.0)
    far = (z.max(axis=2) > 3.0) & (height > brow_h)
    oval = np.zeros((h, w), np.uint8)
    cv2.fillPoly(oval, [np.round(lm[_OVAL, :2]).astype(np.int32)], 255)
    hair = (far & (oval > 0)).astype(np.uint8) * 255
    k = max(1, round(0.01 * np.ptp(lm[_OVAL, 0])))
    hair = cv2.morphologyEx(hair, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * k + 1,) * 2))
    hair = cv2.dilate(hair, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (4 * k + 1,) * 2))
    usable[hair > 0] = 0
    return usable


@dataclass(frozen=True, eq=False)
class SwapFrame:
    """One swapped frame: the new RGB image and a uint8 {0, 255} mask of the pixels it changed
    (it may be a little larger than the set of pixels whose value differs)."""

    frame: np.ndarray
    mask: np.ndarray


class ClassicFaceSwapper:
    """Swaps one source face onto plate frames, given target landmarks per frame.

    Build one per source identity (the source is prepared once) and call :meth:`swap` per frame.
    Holds no MediaPipe state, but keep one per thread all the same (cheap to create).
    """

    MODEL = ModelRef(name="classic", version="1.0", sha256=None)

    #: the blend reaches this fraction of the face size outside the target's face oval, at most
    SPILL = 0.03
    #: the hard blend edge sits this fraction of the face size inside the target's face oval
    ERODE = 0.02
    #: width of the feather inside the blend edge, as a fraction of the face size
    FEATHER = 0.06

    def __init__(self, source_rgb: np.ndarray, source_landmarks: np.ndarray) -> None:
        src = np.asarray(source_rgb)
        if src.ndim != 3 or src.shape[2] != 3 or src.dtype != np.uint8:
            raise UsageError(f"source image must be RGB uint8 (H, W, 3), got {src.dtype} {src.shape}")
        lm = np.asarray(source_landmarks, np.float64)
        if lm.shape != (_N, 3) or not np.isfinite(lm).all():
            raise UsageError(f"source landmarks must be finite ({_N}, 3), got {lm.shape}")
        self._src_pts = extended_points(lm)
        self._src_face = float(np.ptp(lm[_OVAL, :2], axis=0).max())
        # a pyramid of the source, so that a small target face samples a level near its own
        # size instead of aliasing from a large photo; the 4th channel says where the source
        # face is usable (not hair over the forehead)
        rgba = np.dstack([src, _usable_face_mask(src, lm)])
        self._pyramid = [np.ascontiguousarray(rgba)]
        while min(self._pyramid[-1].shape[:2]) > 64 and len(self._pyramid) < 6:
            self._pyramid.append(cv2.pyrDown(self._pyramid[-1]))

    def _source_level(self, target_face: float) -> tuple[np.ndarray, float]:
        level = 0
        while level + 1 < len(self._pyramid) and self._src_face / 2 ** (level + 1) >= target_face:
            level += 1
        img = self._pyramid[level]
        return img, self._pyramid[0].shape[1] / img.shape[1]

    def warp(self, frame_shape: tuple[int, ...], target_landmarks: np.ndarray, roi: tuple[int, int, int, int] | None = None):
        """The source face warped onto ``target_landmarks``, on a region of interest of a frame
        of ``frame_shape``: returns ``(warped_roi_rgb uint8, covered_roi bool, roi)``. Pixels
        the mesh does not cover are black and ``covered`` is False there, and also where the
        source shows hair over its forehead (see :func:`_usable_face_mask`)."""
        tgt = extended_points(np.asarray(target_landmarks, np.float64))
        if roi is None:
            roi = self._roi(frame_shape, tgt, tgt)
        face = float(np.ptp(tgt[_OVAL, :2], axis=0).max())
        img, scale = self._source_level(face)
        labels = _rasterise(tgt, _FACE_TRIS, roi)
        aff = _affines(tgt, self._src_pts / scale, _FACE_TRIS)
        mx, my = _maps(labels, aff, roi)
        warped = cv2.remap(img, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)
        covered = (labels >= 0) & (warped[..., 3] >= 128)
        return np.ascontiguousarray(warped[..., :3]), covered, roi

    @classmethod
    def _roi(cls, shape, tgt: np.ndarray, plate: np.ndarray) -> tuple[int, int, int, int]:
        h, w = shape[:2]
        pts = np.concatenate([tgt[:, :2], plate[_OVAL, :2]])
        lo = np.floor(pts.min(0)) - 4
        hi = np.ceil(pts.max(0)) + 4
        x0, y0 = int(max(0, lo[0])), int(max(0, lo[1]))
        x1, y1 = int(min(w, hi[0])), int(min(h, hi[1]))
        return x0, y0, x1, y1

    def swap(
        self,
        frame_rgb: np.ndarray,
        target_landmarks: np.ndarray,
        plate_landmarks: np.ndarray,
        *,
        occlusion_mask: np.ndarray | None = None,
    ) -> SwapFrame:
        """Put the source face on ``frame_rgb`` with the shape ``target_landmarks`` (478, 3).

        ``plate_landmarks`` (478, 3) are the plate's own landmarks on this frame: the colour
        reference (its skin) and the source of the mouth interior. ``occlusion_mask`` (H, W),
        non-zero where something is in front of the face (a hand, a glass), keeps the plate there
        (values are read as 0..255 opacity of the occluder).

        Pixels outside the target face oval grown by :attr:`SPILL` of the face size are never
        changed.
        """
        frame = np.asarray(frame_rgb)
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise UsageError(f"frame must be RGB uint8 (H, W, 3), got {frame.dtype} {frame.shape}")
        tlm = np.asarray(target_landmarks, np.float64)
        plm = np.asarray(plate_landmarks, np.float64)
        for name, a in (("target", tlm), ("plate", plm)):
            if a.shape != (_N, 3) or not np.isfinite(a).all():
                raise UsageError(f"{name} landmarks must be finite ({_N}, 3), got {a.shape}")
        h, w = frame.shape[:2]
        tgt = extended_points(tlm)
        roi = self._roi(frame.shape, tgt, plm)
        x0, y0, x1, y1 = roi
        if x1 - x0 < 8 or y1 - y0 < 8:
            return SwapFrame(frame=frame.copy(), mask=np.zeros((h, w), np.uint8))
        rh, rw = y1 - y0, x1 - x0
        plate_roi = frame[y0:y1, x0:x1]
        face = float(np.ptp(tlm[_OVAL, :2], axis=0).max())

        warped, covered, _ = self.warp(frame.shape, tlm, roi)

        # mouth interior from the plate, warped from the plate's mouth to the target's
        plate_pts = extended_points(plm)
        mouth_labels = _rasterise(tgt, _MOUTH_TRIS, roi)
        inside_mouth = mouth_labels >= 0
        if inside_mouth.any():
            ys, xs = np.nonzero(inside_mouth)
            sub = (x0 + xs.min(), y0 + ys.min(), x0 + xs.max() + 1, y0 + ys.max() + 1)
            sl = (slice(sub[1] - y0, sub[3] - y0), slice(sub[0] - x0, sub[2] - x0))
            mx, my = _maps(mouth_labels[sl], _affines(tgt, plate_pts, _MOUTH_TRIS), sub)
            mouth_px = cv2.remap(frame, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)
            m = inside_mouth[sl]
            warped[sl][m] = mouth_px[m]

        # shift the origin of the landmarks into the ROI for the masks
        off = np.array([x0, y0, 0.0])
        t_roi, p_roi = tlm - off, plm - off
        shape = (rh, rw)
        corrected = self._colour_transfer(warped, covered, plate_roi, t_roi, p_roi, shape, face)

        # hard blend region: the target oval pulled in a little, where the warp has content,
        # minus occluders
        hard, occ = hard_blend_mask(tgt[_OVAL, :2], (x0, y0, x1, y1), shape, covered, max(1, round(self.ERODE * face)),
                                    occlusion_mask, frame.shape)
        # fill what the warp did not reach with the plate, so the pyramid sees no black edges
        src_f = np.where(covered[..., None], corrected, plate_roi).astype(np.float32)
        return paste_roi(frame, (x0, y0, x1, y1), src_f, hard, face, feather_frac=self.FEATHER, spill_frac=self.SPILL, occlusion=occ)

    @staticmethod
    def _colour_transfer(warped: np.ndarray, covered: np.ndarray, plate_roi: np.ndarray, t_roi: np.ndarray, p_roi: np.ndarray,
                         shape: tuple[int, int], face: float) -> np.ndarray:
        """Match mean and spread of the warped source's skin to the plate's skin, in CIELAB.

        Eyes, brows and the mouth are left out of both statistics (they are not skin and their
        size changes with expression), so a smile or a blink does not shift the skin tone.
        """
        margin = max(1, round(0.02 * face))
        t_skin = face_skin_mask(t_roi, shape, margin_px=margin)
        t_skin[~covered] = 0
        p_skin = face_skin_mask(p_roi, shape, margin_px=margin)
        src_lab = cv2.cvtColor(warped, cv2.COLOR_RGB2LAB)
        dst_lab = cv2.cvtColor(plate_roi, cv2.COLOR_RGB2LAB)
        s, d = _lab_stats(src_lab, t_skin), _lab_stats(dst_lab, p_skin)
        if s is None or d is None:
            return warped
        # the spread is matched only partly: beard, stubble or harsh light widen the plate's
        # skin statistics, and stretching the source's contrast to them darkens lips and
        # shadows into blotches
        ratio = np.clip(d[1] / s[1], 0.8, 1.25)
        m = np.zeros((3, 4), np.float32)
        m[[0, 1, 2], [0, 1, 2]] = ratio
        m[:, 3] = d[0] - s[0] * ratio
        out = cv2.transform(src_lab, m)  # per-pixel affine in LAB, saturated to uint8
        return cv2.cvtColor(out, cv2.COLOR_LAB2RGB)
