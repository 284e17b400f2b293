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

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from recast.contracts import ModelRef
from recast.errors import UsageError
from recast.models.engines import EngineOptions, PlateFrames, SwapResult, SwapSource, swap_frames
from recast.models.masks import erode_mask, face_skin_mask, feather_mask
from recast.models.mesh_topology import FACE_OVAL, LEFT_EYEBROW, NUM_LANDMARKS, RIGHT_EYEBROW
from recast.models.mesh_warp import (
    FACE_TRIANGLES,
    MOUTH_TRIANGLES,
    extended_points,
    laplacian_blend,
    rasterise_triangles,
    triangle_affines,
    triangle_maps,
)

__all__ = [
    "ClassicFaceEngine", "ClassicFaceSwapper", "SwapFrame", "colour_transfer", "hard_blend_mask", "magnifying_interpolation",
    "paste_roi", "usable_face_mask",
]

_N = NUM_LANDMARKS
_OVAL = np.asarray(FACE_OVAL, np.int32)


def _lab_stats(lab: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    if cv2.countNonZero(mask) < 50:
        return None
    mean, std = cv2.meanStdDev(lab, mask=mask)
    return mean.ravel().astype(np.float32), std.ravel().astype(np.float32) + 1e-3


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
    blended = laplacian_blend(source_roi, dst_f, alpha, levels)
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



#: above this magnification a source is sampled bicubically (see :func:`magnifying_interpolation`)
MAGNIFY_CUBIC_ABOVE = 1.05


def magnifying_interpolation(magnification: float) -> int:
    """The ``cv2`` interpolation for sampling a source shown ``magnification`` times its size:
    bicubic when it is enlarged (a small source photo on a larger plate face), bilinear
    otherwise (the pyramid already gives a level near the target's size). Measured on 5 faces
    of the shared set shrunk to 90 px and enlarged to 240 px against the 240 px original:
    bilinear 30.6 dB, fine-detail ratio 0.44; bicubic 32.1 dB, 0.51 (Lanczos 32.3 dB, 0.52,
    with more ringing at edges). The cost is a fraction of a millisecond per face."""
    return cv2.INTER_CUBIC if magnification > MAGNIFY_CUBIC_ABOVE else cv2.INTER_LINEAR


def usable_face_mask(rgb: np.ndarray, lm: np.ndarray) -> np.ndarray:
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
        rgba = np.dstack([src, usable_face_mask(src, lm)])
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
        source shows hair over its forehead (see :func:`usable_face_mask`)."""
        tgt = extended_points(np.asarray(target_landmarks, np.float64))
        if roi is None:
            roi = self._roi(frame_shape, tgt, tgt)
        face = float(np.ptp(tgt[_OVAL, :2], axis=0).max())
        img, scale = self._source_level(face)
        labels = rasterise_triangles(tgt, FACE_TRIANGLES, roi)
        aff = triangle_affines(tgt, self._src_pts / scale, FACE_TRIANGLES)
        mx, my = triangle_maps(labels, aff, roi)
        warped = cv2.remap(img, mx, my, magnifying_interpolation(face / self._src_face), borderMode=cv2.BORDER_REFLECT101)
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
        mouth_labels = rasterise_triangles(tgt, MOUTH_TRIANGLES, roi)
        inside_mouth = mouth_labels >= 0
        if inside_mouth.any():
            ys, xs = np.nonzero(inside_mouth)
            sub = (x0 + xs.min(), y0 + ys.min(), x0 + xs.max() + 1, y0 + ys.max() + 1)
            sl = (slice(sub[1] - y0, sub[3] - y0), slice(sub[0] - x0, sub[2] - x0))
            mx, my = triangle_maps(mouth_labels[sl], triangle_affines(tgt, plate_pts, MOUTH_TRIANGLES), sub)
            mouth_px = cv2.remap(frame, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)
            m = inside_mouth[sl]
            warped[sl][m] = mouth_px[m]

        # shift the origin of the landmarks into the ROI for the masks
        off = np.array([x0, y0, 0.0])
        t_roi, p_roi = tlm - off, plm - off
        shape = (rh, rw)
        corrected = colour_transfer(warped, covered, plate_roi, t_roi, p_roi, shape, face)

        # hard blend region: the target oval pulled in a little, where the warp has content,
        # minus occluders
        hard, occ = hard_blend_mask(tgt[_OVAL, :2], (x0, y0, x1, y1), shape, covered, max(1, round(self.ERODE * face)),
                                    occlusion_mask, frame.shape)
        # fill what the warp did not reach with the plate, so the pyramid sees no black edges
        src_f = np.where(covered[..., None], corrected, plate_roi).astype(np.float32)
        return paste_roi(frame, (x0, y0, x1, y1), src_f, hard, face, feather_frac=self.FEATHER, spill_frac=self.SPILL, occlusion=occ)


def colour_transfer(warped: np.ndarray, covered: np.ndarray, plate_roi: np.ndarray, t_roi: np.ndarray, p_roi: np.ndarray,
                    shape: tuple[int, int], face: float) -> np.ndarray:
    """Match mean and spread of the warped source's skin to the plate's skin, in CIELAB.

    ``warped`` (RGB uint8) is the new face on a ROI of ``shape``, ``covered`` where it has
    content; ``plate_roi`` the plate on the same ROI; ``t_roi`` / ``p_roi`` the target's and
    the plate's landmarks in ROI pixels; ``face`` the face size in pixels. Shared by every
    engine that pastes a face (classic, inswapper).

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


class ClassicFaceEngine:
    """The ``classic`` engine in face mode behind :class:`recast.models.engines.SwapEngine`:
    :class:`ClassicFaceSwapper` per chunk, with occluders (hands, foreign objects over the face)
    kept. CPU only and nothing to load; the MediaPipe hand models of the occlusion detector are
    its only models."""

    name = "classic"
    version = "1.0"
    modes = ("face", "head")
    needs: frozenset[str] = frozenset()

    def __init__(self, *, mode: str = "face", options: EngineOptions | None = None) -> None:
        if mode != "face":
            raise UsageError(f"ClassicFaceEngine swaps faces, not '{mode}' (the head mode is ClassicHeadEngine)")
        self.mode = mode
        self.device = "cpu"

    def model_refs(self) -> tuple[ModelRef, ...]:
        from recast.models.occlusion import OcclusionDetector

        return (ClassicFaceSwapper.MODEL,) + tuple(OcclusionDetector.MODELS)

    def load(self) -> None:
        """Nothing to load: the source is prepared per call (it differs between shots)."""

    def swap(self, plate: PlateFrames, targets: np.ndarray, source: SwapSource, *,
             progress: Callable[[int], None] | None = None) -> SwapResult:
        from recast.models.occlusion import OcclusionDetector

        swapper = ClassicFaceSwapper(np.asarray(source.rgb), np.asarray(source.landmarks, np.float64))

        def one(i: int, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            p = plate.landmarks[i]
            res = swapper.swap(frame, targets[i], p, occlusion_mask=occluder.occlusion_mask(frame, p, plate.person[i]))
            return res.frame, res.mask

        with OcclusionDetector(static_images=False) as occluder:
            return swap_frames(plate, targets, one, progress)
