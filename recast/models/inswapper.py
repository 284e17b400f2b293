"""The ``inswapper`` face swap: insightface's INSwapper ONNX (128 px) with an ArcFace source
embedding, run with onnxruntime, pasted back through recast's own colour matching and
multi-band blend.

What the model expects (as insightface's ``model_zoo/inswapper.py`` feeds it):

- ``target`` (1, 3, 128, 128) float32: the plate face aligned to the ArcFace 5-point template
  scaled to 128 px (template + 8 px in x, as ``face_align.estimate_norm`` does for sizes that are
  multiples of 128), **RGB**, values / 255 (mean 0, std 255; insightface builds the blob from a
  BGR image with ``swapRB=True``).
- ``source`` (1, 512) float32: the source's L2-normalised ArcFace embedding times ``emap``, the
  (512, 512) matrix stored as the **last initializer** of the ONNX graph, normalised again.
- output (1, 3, 128, 128): the swapped aligned face, RGB in 0..1.

The recogniser is buffalo_l's ``w600k_r50.onnx`` (input (1, 3, 112, 112), RGB,
(x - 127.5) / 127.5; output (1, 512)), fed with the source photo aligned to the 112 px template.

The five keypoints come from MediaPipe's 478 landmarks: the centres of the eye contours (rather
than the iris centres: the contours do not follow the gaze, so the crop does not jitter when the
eyes move), the nose tip (1) and the mouth corners (61, 291), in insightface's order
(image-left eye first for an unmirrored face).

INSwapper keeps the plate's face shape (it re-renders the identity inside the plate's face), so
the crop and the paste mask follow the *plate* landmarks; ``target_landmarks`` only decide
whether a frame is swapped (a frame without a valid target passes through).

Large faces: the 128 px result is upscaled to the face's size in the frame before the inverse
warp, by default with bicubic interpolation plus an unsharp mask (cheap, no extra weights); with
``upscaler=`` an ONNX super-resolution model (input (1, 3, t, t) RGB 0..1, output
(1, 3, k*t, k*t), e.g. a Real-ESRGAN x4 export) is run on overlapping tiles of the 128 px result
(tiles because such exports usually have a fixed input size), and its output resized to the face.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np

from recast.contracts import ModelRef
from recast.errors import InputError, ModelMissingError, UsageError
from recast.models.engines import EngineOptions, PlateFrames, SwapResult, SwapSource, require_model_dir, swap_frames
from recast.models.masks import erode_mask
from recast.models.mesh_topology import FACE_OVAL, LEFT_EYE, MOUTH_CORNERS, NUM_LANDMARKS, RIGHT_EYE
from recast.models.similarity import similarity_align, similarity_matrix
from recast.models.swap_classic import SwapFrame, colour_transfer, hard_blend_mask, paste_roi

__all__ = [
    "ARCFACE_DST", "five_points", "arcface_template", "align_face",
    "ArcFaceRecogniser", "InswapperBackend", "InswapperEngine", "onnx_providers",
]

#: insightface's ArcFace 5-point template for 112x112 crops (left eye, right eye, nose, mouth corners)
ARCFACE_DST = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    np.float64,
)
_NOSE_TIP = 1
#: the two weight files, relative to the model directory (see :mod:`recast.models.registry`)
INSWAPPER_FILE = "inswapper_128.onnx"
ARCFACE_FILE = "buffalo_l/w600k_r50.onnx"
_OVAL = np.asarray(FACE_OVAL, np.int32)


def onnx_providers(prefer_cuda: bool = True) -> list[str]:
    """onnxruntime execution providers: CUDA first when this onnxruntime build has it."""
    import onnxruntime as ort

    avail = ort.get_available_providers()
    if prefer_cuda and "CUDAExecutionProvider" in avail:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def five_points(landmarks: np.ndarray) -> np.ndarray:
    """(5, 2) ArcFace keypoints from MediaPipe landmarks (see the module docstring)."""
    lm = np.asarray(landmarks, np.float64)
    if lm.ndim != 2 or lm.shape[0] < 468 or not np.isfinite(lm[:468, :2]).all():
        raise UsageError(f"expected finite face landmarks ({NUM_LANDMARKS}, 3), got {lm.shape}")
    return np.stack([
        lm[list(RIGHT_EYE), :2].mean(0),  # the subject's right eye: image-left
        lm[list(LEFT_EYE), :2].mean(0),
        lm[_NOSE_TIP, :2],
        lm[MOUTH_CORNERS[0], :2],
        lm[MOUTH_CORNERS[1], :2],
    ])


def arcface_template(size: int) -> np.ndarray:
    """The 5-point template for a ``size`` crop, as insightface's ``estimate_norm`` scales it."""
    if size % 112 == 0:
        ratio, dx = size / 112.0, 0.0
    elif size % 128 == 0:
        ratio = size / 128.0
        dx = 8.0 * ratio
    else:
        raise UsageError(f"alignment size must be a multiple of 112 or 128, got {size}")
    dst = ARCFACE_DST * ratio
    dst[:, 0] += dx
    return dst


def align_face(rgb: np.ndarray, landmarks: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Crop ``size`` x ``size`` aligned to the ArcFace template: ``(crop, M)`` with ``M`` the
    (2, 3) map from image to crop."""
    m = similarity_matrix(*similarity_align(five_points(landmarks), arcface_template(size)))
    crop = cv2.warpAffine(rgb, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return crop, m


def _session(path: Path, providers: Sequence[str] | None, threads: int | None):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    # errors only: the release INSwapper graph carries its emap as an unused initializer, and
    # onnxruntime warns about that on every load
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(str(path), sess_options=opts, providers=list(providers or onnx_providers()))
    except Exception as e:  # onnxruntime raises its own untyped errors for a corrupt file
        raise InputError(f"{path}: cannot load the ONNX model ({str(e).splitlines()[0]})") from None


def resolve_models(model_dir: Path, *, commercial_project: bool, project: str | None = None, verify: bool = True,
                   fetch: Callable[[str], Path] | None = None):
    """``inswapper_128`` and ``buffalo_l`` resolved through the registry (files present,
    checksums matching the pins, licence allowing the project's use); loads nothing."""
    from recast.models import registry

    swap = registry.resolve("inswapper_128", model_dir, verify=verify, fetch=fetch)
    rec = registry.resolve("buffalo_l", model_dir, verify=verify, fetch=fetch)
    for r in (swap, rec):
        registry.check_licence(r.spec, commercial_project=commercial_project, project=project)
    return swap, rec


def _file_sha256(path: Path) -> str:
    from recast.models.registry import sha256_file

    return sha256_file(path, cache_root=path.parent, rel=path.name)


class ArcFaceRecogniser:
    """insightface ArcFace ONNX (``w600k_r50.onnx``): 512-D identity embedding of an aligned face."""

    def __init__(self, path: Path, *, providers: Sequence[str] | None = None, threads: int | None = None) -> None:
        path = Path(path)
        if not path.is_file():
            raise ModelMissingError(f"model 'buffalo_l': missing {path.name} in {path.parent} (place the file there; see `recast models list`)")
        self.path = path
        self.session = _session(path, providers, threads)
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        size = inp.shape[2] if isinstance(inp.shape[2], int) else 112
        self.size = int(size)
        self.mean, self.std = self._normalisation(path)

    @staticmethod
    def _normalisation(path: Path) -> tuple[float, float]:
        # insightface's rule: graphs exported from mxnet normalise inside (Sub and Mul nodes
        # among the first ones) and take raw 0..255; the others take (x - 127.5) / 127.5
        try:
            import onnx

            g = onnx.load(str(path), load_external_data=False).graph
            names = [n.name for n in g.node[:8]]
        except Exception:  # onnx missing or unreadable: the common case below
            return 127.5, 127.5
        sub = any(n.startswith(("Sub", "_minus")) for n in names)
        mul = any(n.startswith(("Mul", "_mul")) for n in names)
        return (0.0, 1.0) if sub and mul else (127.5, 127.5)

    def embed_aligned(self, crop_rgb: np.ndarray) -> np.ndarray:
        """L2-normalised (512,) embedding of an aligned RGB crop of ``self.size``."""
        blob = (crop_rgb.astype(np.float32).transpose(2, 0, 1)[None] - self.mean) / self.std
        emb = self.session.run(None, {self.input_name: np.ascontiguousarray(blob, np.float32)})[0].reshape(-1)
        return (emb / (np.linalg.norm(emb) + 1e-12)).astype(np.float32)

    def embed(self, rgb: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """L2-normalised (512,) embedding of the face with ``landmarks`` in ``rgb``."""
        crop, _ = align_face(rgb, landmarks, self.size)
        return self.embed_aligned(crop)


def _unsharp(img: np.ndarray, amount: float = 0.6, sigma: float = 1.0) -> np.ndarray:
    blur = cv2.GaussianBlur(img, (0, 0), sigma)
    return cv2.addWeighted(img, 1.0 + amount, blur, -amount, 0)


def tiled_upscale(img: np.ndarray, factor: int, fn: Callable[[np.ndarray], np.ndarray], *, tile: int = 64, overlap: int = 8) -> np.ndarray:
    """Upscale float32 (H, W, 3) ``img`` by ``factor`` with ``fn`` run on overlapping ``tile``
    squares; overlaps are averaged with linear ramps so tile seams do not show."""
    h, w = img.shape[:2]
    out = np.zeros((h * factor, w * factor, 3), np.float32)
    weight = np.zeros((h * factor, w * factor, 1), np.float32)
    step = max(1, tile - 2 * overlap)
    ramp1 = np.minimum(np.arange(tile * factor) + 1, np.arange(tile * factor)[::-1] + 1).astype(np.float32)
    ramp1 = np.clip(ramp1 / max(1, overlap * factor), 0.0, 1.0)
    wtile = (ramp1[:, None] * ramp1[None, :])[..., None] + 1e-4
    pad = cv2.copyMakeBorder(img, 0, max(0, tile - h), 0, max(0, tile - w), cv2.BORDER_REFLECT101)
    ys = list(range(0, max(1, h - tile) + 1, step)) or [0]
    xs = list(range(0, max(1, w - tile) + 1, step)) or [0]
    if ys[-1] + tile < h:
        ys.append(h - tile)
    if xs[-1] + tile < w:
        xs.append(w - tile)
    for y in ys:
        for x in xs:
            up = fn(pad[y:y + tile, x:x + tile])
            y0, x0 = y * factor, x * factor
            hh = min(tile * factor, out.shape[0] - y0)
            ww = min(tile * factor, out.shape[1] - x0)
            out[y0:y0 + hh, x0:x0 + ww] += up[:hh, :ww] * wtile[:hh, :ww]
            weight[y0:y0 + hh, x0:x0 + ww] += wtile[:hh, :ww]
    return out / weight


class InswapperBackend:
    """insightface INSwapper face swap with recast's paste-back.

    Construct from the two ONNX files (or :meth:`from_model_dir`), give it the source identity
    with :meth:`set_source`, then call :meth:`swap` per frame (or :meth:`swap_batch`). The ONNX
    sessions are created once and stay warm; the graph takes batch 1, so frames run in a loop.
    :meth:`set_source` stores the identity on the backend; to share one backend between threads
    swapping different identities, pass ``latent=`` (:meth:`identity_latent`) to :meth:`swap`
    instead (onnxruntime sessions are thread-safe).
    """

    SIZE = 128
    #: geometry of the paste mask, as fractions of the face size (as in the classic swapper)
    ERODE = 0.02
    FEATHER = 0.06
    SPILL = 0.03

    def __init__(
        self,
        inswapper_path: Path,
        arcface_path: Path,
        *,
        providers: Sequence[str] | None = None,
        threads: int | None = None,
        upscaler_path: Path | None = None,
        colour_match: bool = True,
        model_refs: tuple[ModelRef, ...] | None = None,
    ) -> None:
        inswapper_path = Path(inswapper_path)
        if not inswapper_path.is_file():
            raise ModelMissingError(f"model 'inswapper_128': missing {inswapper_path.name} in {inswapper_path.parent} "
                                    "(place the file there; see `recast models list`)")
        self.providers = list(providers or onnx_providers())
        self.session = _session(inswapper_path, self.providers, threads)
        ins = self.session.get_inputs()
        if len(ins) != 2 or len(self.session.get_outputs()) != 1:
            raise InputError(f"{inswapper_path}: not an INSwapper graph (expected inputs target and source, one output)")
        names = [i.name for i in ins]
        # the release graph names them; fall back on insightface's order (target, source)
        self._target_name = "target" if "target" in names else names[0]
        self._source_name = "source" if "source" in names else names[1]
        self.emap = self._read_emap(inswapper_path)
        self.recogniser = ArcFaceRecogniser(arcface_path, providers=self.providers, threads=threads)
        self.upscaler = _session(Path(upscaler_path), self.providers, threads) if upscaler_path else None
        self.colour_match = colour_match
        self._paths = (inswapper_path, Path(arcface_path)) + ((Path(upscaler_path),) if upscaler_path else ())
        self._model_refs = model_refs
        self._latent: np.ndarray | None = None

    @staticmethod
    def _read_emap(path: Path) -> np.ndarray:
        import onnx
        from onnx import numpy_helper

        graph = onnx.load(str(path)).graph
        if not graph.initializer:
            raise InputError(f"{path}: the graph has no initializers, so no emap matrix")
        emap = numpy_helper.to_array(graph.initializer[-1]).astype(np.float32)
        if emap.shape != (512, 512):
            raise InputError(f"{path}: last initializer has shape {emap.shape}, expected the (512, 512) emap of INSwapper")
        return emap

    @classmethod
    def from_model_dir(
        cls,
        model_dir: Path,
        *,
        commercial_project: bool,
        project: str | None = None,
        verify: bool = True,
        fetch: Callable[[str], Path] | None = None,
        **kwargs,
    ) -> "InswapperBackend":
        """Resolve ``inswapper_128`` and ``buffalo_l`` through the registry (presence,
        checksums, licence) and build the backend; its :attr:`models` carry the checksums."""
        swap, rec = resolve_models(model_dir, commercial_project=commercial_project, project=project, verify=verify, fetch=fetch)
        return cls(swap.path(INSWAPPER_FILE), rec.path(ARCFACE_FILE), model_refs=(swap.model_ref, rec.model_ref), **kwargs)

    @property
    def models(self) -> tuple[ModelRef, ...]:
        """The models this backend runs, with sha256 (for provenance and work keys)."""
        if self._model_refs is None:
            names = ("inswapper_128", "buffalo_l.w600k_r50", "upscaler")
            self._model_refs = tuple(ModelRef(name=n, version="onnx", sha256=_file_sha256(p)) for n, p in zip(names, self._paths))
        return self._model_refs

    # --- source ------------------------------------------------------------------------------
    def source_latent(self, embedding: np.ndarray) -> np.ndarray:
        """(1, 512) ``source`` input: normalised embedding times emap, normalised again."""
        e = np.asarray(embedding, np.float32).reshape(1, -1)
        e = e / (np.linalg.norm(e) + 1e-12)
        lat = e @ self.emap
        return (lat / (np.linalg.norm(lat) + 1e-12)).astype(np.float32)

    def identity_latent(self, images: Sequence[tuple[np.ndarray, np.ndarray]] | tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """``(embedding, latent)`` of the identity in one or more ``(rgb, landmarks)`` reference
        photos: several are averaged (mean of normalised embeddings), which steadies the
        identity. ``latent`` is the model's ``source`` input; nothing is stored on the backend,
        so one backend can swap several identities at once (pass ``latent=`` to :meth:`swap`)."""
        if isinstance(images, tuple) and len(images) == 2 and isinstance(images[0], np.ndarray) and images[0].ndim == 3:
            images = [images]
        embs = []
        for rgb, lm in images:
            rgb = np.asarray(rgb)
            if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
                raise UsageError(f"source image must be RGB uint8 (H, W, 3), got {rgb.dtype} {rgb.shape}")
            embs.append(self.recogniser.embed(rgb, lm))
        if not embs:
            raise UsageError("no source image given")
        mean = np.mean(embs, axis=0)
        mean /= np.linalg.norm(mean) + 1e-12
        return mean, self.source_latent(mean)

    def set_source(self, images: Sequence[tuple[np.ndarray, np.ndarray]] | tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        """Set the identity that :meth:`swap` uses by default (see :meth:`identity_latent`).
        Returns the normalised mean embedding."""
        mean, self._latent = self.identity_latent(images)
        return mean

    # --- swap --------------------------------------------------------------------------------
    def infer_aligned(self, crop_rgb: np.ndarray, latent: np.ndarray | None = None) -> np.ndarray:
        """Run the swapper on a 128 px aligned RGB uint8 crop: float32 RGB 0..255 (128, 128, 3).
        ``latent``: the identity (:meth:`identity_latent`); the one set by :meth:`set_source`
        when None."""
        latent = self._latent if latent is None else latent
        if latent is None:
            raise UsageError("InswapperBackend: call set_source() (or pass latent=) before swapping")
        blob = np.ascontiguousarray(crop_rgb.astype(np.float32).transpose(2, 0, 1)[None] / 255.0)
        pred = self.session.run(None, {self._target_name: blob, self._source_name: latent})[0]
        return np.clip(pred[0].transpose(1, 2, 0) * 255.0, 0.0, 255.0).astype(np.float32)

    def _upscale(self, fake: np.ndarray, size: int) -> np.ndarray:
        if size <= self.SIZE:
            return fake
        if self.upscaler is not None:
            inp = self.upscaler.get_inputs()[0]
            tile = inp.shape[2] if isinstance(inp.shape[2], int) else 64

            def run(t: np.ndarray) -> np.ndarray:
                x = np.ascontiguousarray(t.transpose(2, 0, 1)[None] / 255.0, np.float32)
                return np.clip(self.upscaler.run(None, {inp.name: x})[0][0].transpose(1, 2, 0) * 255.0, 0, 255)

            factor = int(run(fake[:tile, :tile]).shape[0] // tile)
            up = tiled_upscale(fake, factor, run, tile=tile, overlap=max(2, tile // 8))
            return cv2.resize(up, (size, size), interpolation=cv2.INTER_AREA if up.shape[0] > size else cv2.INTER_CUBIC)
        up = cv2.resize(fake, (size, size), interpolation=cv2.INTER_CUBIC)
        return _unsharp(up, amount=min(1.0, 0.3 * np.log2(size / self.SIZE) + 0.3))

    def swap(
        self,
        frame_rgb: np.ndarray,
        target_landmarks: np.ndarray | None,
        plate_landmarks: np.ndarray,
        *,
        occlusion_mask: np.ndarray | None = None,
        latent: np.ndarray | None = None,
    ) -> SwapFrame:
        """Swap the source identity (``latent``, or the one set by :meth:`set_source`) into the
        plate face of ``frame_rgb``.

        Returns a :class:`~recast.models.swap_classic.SwapFrame`: the new frame and the uint8
        {0, 255} mask of the pixels that may have changed; every pixel outside it is the
        plate's, exactly. A frame whose target or plate landmarks are missing (NaN) passes
        through unchanged with an empty mask.
        """
        frame = np.asarray(frame_rgb)
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise UsageError(f"frame must be RGB uint8 (H, W, 3), got {frame.dtype} {frame.shape}")
        h, w = frame.shape[:2]
        plm = np.asarray(plate_landmarks, np.float64)
        passthrough = SwapFrame(frame=frame.copy(), mask=np.zeros((h, w), np.uint8))
        if plm.shape != (NUM_LANDMARKS, 3):
            raise UsageError(f"plate landmarks must be ({NUM_LANDMARKS}, 3), got {plm.shape}")
        if not np.isfinite(plm[:, :2]).all():
            return passthrough
        if target_landmarks is not None and not np.isfinite(np.asarray(target_landmarks, np.float64)[:, :2]).all():
            return passthrough

        oval = plm[_OVAL, :2]
        face = float(np.ptp(oval, axis=0).max())
        if face < 8:
            return passthrough
        pad = max(4, int(np.ceil(self.SPILL * face)) + 4)
        x0, y0 = (int(max(0, np.floor(v - pad))) for v in oval.min(0))
        x1 = int(min(w, np.ceil(oval[:, 0].max() + pad)))
        y1 = int(min(h, np.ceil(oval[:, 1].max() + pad)))
        if x1 - x0 < 8 or y1 - y0 < 8:
            return passthrough
        roi_shape = (y1 - y0, x1 - x0)
        plate_roi = frame[y0:y1, x0:x1]

        crop, m = align_face(frame, plm, self.SIZE)
        fake = self.infer_aligned(crop, latent)
        # scale of the crop relative to the frame: upscale the 128 px result to the face size
        scale = float(np.sqrt(abs(np.linalg.det(m[:, :2]))))
        size = int(min(1024, max(self.SIZE, round(self.SIZE / max(scale, 1e-6)))))
        fake_up = self._upscale(fake, size)
        # map from the upscaled crop to the ROI of the frame
        k = size / self.SIZE
        m_up = m * k  # frame -> upscaled crop
        full = np.vstack([m_up, [0, 0, 1]])
        inv = np.linalg.inv(full)[:2]
        inv[:, 2] -= (x0, y0)  # into ROI coordinates
        warped = cv2.warpAffine(fake_up, inv, (roi_shape[1], roi_shape[0]), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        valid = cv2.warpAffine(np.full((size, size), 255, np.uint8), inv, (roi_shape[1], roi_shape[0]), flags=cv2.INTER_NEAREST, borderValue=0)
        valid = erode_mask(valid, 2)

        p_roi = plm - (x0, y0, 0.0)
        warped_u8 = np.clip(warped + 0.5, 0, 255).astype(np.uint8)
        covered = valid > 0
        if self.colour_match:
            warped_u8 = colour_transfer(warped_u8, covered, plate_roi, p_roi, p_roi, roi_shape, face)

        hard, occ = hard_blend_mask(oval, (x0, y0, x1, y1), roi_shape, covered, max(1, round(self.ERODE * face)),
                                    occlusion_mask, frame.shape)
        if not hard.any():
            return passthrough
        src_f = np.where(covered[..., None], warped_u8, plate_roi).astype(np.float32)
        return paste_roi(frame, (x0, y0, x1, y1), src_f, hard, face, feather_frac=self.FEATHER, spill_frac=self.SPILL, occlusion=occ)

    def swap_batch(
        self,
        frames: Sequence[np.ndarray],
        target_landmarks: Sequence[np.ndarray | None],
        plate_landmarks: Sequence[np.ndarray],
        *,
        occlusion_masks: Sequence[np.ndarray | None] | None = None,
        latent: np.ndarray | None = None,
    ) -> list[SwapFrame]:
        """:meth:`swap` over a chunk of frames (the graph takes batch 1; sessions stay warm)."""
        if not (len(frames) == len(target_landmarks) == len(plate_landmarks)):
            raise UsageError("frames, target_landmarks and plate_landmarks must have the same length")
        occ = occlusion_masks or [None] * len(frames)
        return [self.swap(f, t, p, occlusion_mask=o, latent=latent) for f, t, p, o in zip(frames, target_landmarks, plate_landmarks, occ)]


class InswapperEngine:
    """The ``inswapper`` engine (face mode) behind :class:`recast.models.engines.SwapEngine`:
    :class:`InswapperBackend` on the weights of the model directory, hands and other occluders
    kept in front of the new face (:class:`~recast.models.occlusion.OcclusionDetector`).

    The loaded backend holds no identity (the source's latent is computed per call), so one
    loaded engine serves every chunk and shot of a worker process.
    """

    name = "inswapper"
    version = "1.0"
    modes = ("face",)
    needs: frozenset[str] = frozenset()

    def __init__(self, *, mode: str, options: EngineOptions) -> None:
        if mode not in self.modes:
            raise UsageError(f"backend '{self.name}' swaps faces only, not '{mode}'")
        self.mode = mode
        self.options = options
        self.device = options.device
        self._resolved = None
        self._backend: InswapperBackend | None = None

    def _resolve(self):
        if self._resolved is None:
            model_dir = require_model_dir(self.options, self.name)
            self._resolved = resolve_models(model_dir, commercial_project=self.options.commercial, project=self.options.project)
        return self._resolved

    def model_refs(self) -> tuple[ModelRef, ...]:
        from recast.models.occlusion import OcclusionDetector

        swap, rec = self._resolve()
        return (swap.model_ref, rec.model_ref) + tuple(OcclusionDetector.MODELS)

    def load(self) -> None:
        if self._backend is None:
            swap, rec = self._resolve()
            # CUDA when this onnxruntime has it, whatever the torch device: the graph is small
            self._backend = InswapperBackend(swap.path(INSWAPPER_FILE), rec.path(ARCFACE_FILE), model_refs=(swap.model_ref, rec.model_ref))

    @property
    def loaded(self) -> bool:
        """Whether :meth:`load` has run (the ONNX sessions exist)."""
        return self._backend is not None

    def swap(self, plate: PlateFrames, targets: np.ndarray, source: SwapSource, *,
             progress: Callable[[int], None] | None = None) -> SwapResult:
        from recast.models.occlusion import OcclusionDetector

        self.load()
        backend = self._backend
        _, latent = backend.identity_latent((np.asarray(source.rgb), np.asarray(source.landmarks, np.float64)))

        def one(i: int, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            p = plate.landmarks[i]
            occlusion = occluder.occlusion_mask(frame, p, plate.person[i])
            res = backend.swap(frame, targets[i], p, occlusion_mask=occlusion, latent=latent)
            return res.frame, res.mask

        with OcclusionDetector(static_images=False) as occluder:
            return swap_frames(plate, targets, one, progress)
