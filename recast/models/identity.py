"""Face identity embeddings for QC: dlib's ResNet face descriptor (128-D).

The descriptor is dlib's ``dlib_face_recognition_resnet_model_v1`` (LFW 99.38%), read by path
from the installed ``face_recognition_models`` package. Two faces of the same person are usually
closer than 0.6 (Euclidean), different people farther apart: that is the threshold QC uses to
decide whether a swap put the source's identity on a frame (see DESIGN.md, "Quality metrics").

Faces are located by the caller (MediaPipe in recast); dlib only aligns them with its 5-point
shape predictor inside the given box and embeds the aligned 150x150 chip.
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from recast.checksums import sha256_file
from recast.contracts import ModelRef
from recast.errors import InputError, ModelMissingError

__all__ = [
    "IDENTITY_MATCH_THRESHOLD",
    "DlibFaceEmbedder",
    "cosine_similarity",
    "dlib_model_dir",
    "face_distance",
    "identity_transfer_rate",
    "identity_transferred",
]

#: dlib's documented same-person threshold on the Euclidean distance of two descriptors.
IDENTITY_MATCH_THRESHOLD = 0.6

SHAPE_PREDICTOR_FILE = "shape_predictor_5_face_landmarks.dat"
RECOGNITION_MODEL_FILE = "dlib_face_recognition_resnet_model_v1.dat"
_MODEL_NAME = "dlib_face_recognition_resnet_model_v1"
_MODEL_VERSION = "20.0.1"

# A MediaPipe box drawn around all 478 landmarks is about as wide as dlib's HOG box but ~15%
# taller (it reaches the forehead); dlib's box is square. Measured on 7 portraits of the test
# media: HOG side / sqrt(w*h) of the landmark box = 0.93 +- 0.05, centres within 5% of the side.
# The 5-point predictor starts from its mean shape placed in this box, so matching dlib's
# convention keeps its alignment as good as with dlib's own detector.
_BOX_SCALE = 0.93


def dlib_model_dir() -> Path | None:
    """The ``models/`` directory of the installed ``face_recognition_models`` package, or None.

    The package is located without importing it: its ``__init__`` imports ``pkg_resources``,
    which newer setuptools no longer ship.
    """
    try:
        spec = importlib.util.find_spec("face_recognition_models")
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    for loc in spec.submodule_search_locations or ():
        d = Path(loc) / "models"
        if d.is_dir():
            return d
    return None


_SHARED_LOCK = threading.Lock()
_SHARED: "DlibFaceEmbedder | None" = None


class DlibFaceEmbedder:
    """128-D face descriptors with dlib's ResNet model, aligned by dlib's 5-point predictor.

    ``embed(rgb, box)`` takes an RGB uint8 image and a face box ``(x0, y0, x1, y1)`` in pixels
    (from MediaPipe), and returns a unit-scale 128-D float64 descriptor. Compare descriptors with
    :func:`face_distance` (same person when < :data:`IDENTITY_MATCH_THRESHOLD`).

    ``num_jitters`` defaults to 0: one forward pass on the aligned chip (~70-90 ms per face on one
    core). dlib's jittering (random crops, averaged) makes descriptors ~1% steadier at N times the
    cost, which QC over many frames does not need: per-frame noise averages out over a shot.

    Thread-safety: dlib's network keeps its activations in the model object, so one instance must
    not run two faces at once. :meth:`embed` holds a lock, so sharing an instance is safe but
    serialises callers; for parallel work give each thread (or process) its own instance (loading
    takes ~0.2 s and ~30 MB).

    Raises :class:`~recast.errors.ModelMissingError` when the ``.dat`` files are not in
    ``model_dir`` (default: the installed ``face_recognition_models`` package).
    """

    def __init__(self, model_dir: str | Path | None = None, num_jitters: int = 0) -> None:
        import dlib  # heavy native import: only when an embedder is built

        base = Path(model_dir) if model_dir is not None else dlib_model_dir()
        names = (SHAPE_PREDICTOR_FILE, RECOGNITION_MODEL_FILE)
        if base is None:
            raise ModelMissingError(
                f"dlib face models {', '.join(names)} not found: package face_recognition_models is not installed"
            )
        missing = [n for n in names if not (base / n).is_file()]
        if missing:
            raise ModelMissingError(f"dlib face model file(s) {', '.join(missing)} missing in {base}")
        if num_jitters < 0:
            raise ValueError(f"num_jitters must be >= 0, got {num_jitters}")
        self.model_dir = base
        self.num_jitters = int(num_jitters)
        self._recognition_path = base / RECOGNITION_MODEL_FILE
        self._predictor = dlib.shape_predictor(str(base / SHAPE_PREDICTOR_FILE))
        self._net = dlib.face_recognition_model_v1(str(self._recognition_path))
        self._rectangle = dlib.rectangle
        self._lock = threading.Lock()
        self._model: ModelRef | None = None

    @classmethod
    def shared(cls) -> "DlibFaceEmbedder":
        """One embedder per process on the installed models, created on first use.

        Loading costs ~0.2 s and hashing the model ~50 ms; segment chunks, track and QC each built
        their own, which on a 300-frame shot cost more than a second. :meth:`embed` holds a lock,
        so callers in parallel threads share it safely (their embeddings run one at a time; they
        are a small, sampled part of those stages).
        """
        with _SHARED_LOCK:
            global _SHARED
            if _SHARED is None:
                _SHARED = cls()
            return _SHARED

    @property
    def model(self) -> ModelRef:
        """The recognition model as a :class:`ModelRef`; its sha256 is computed on first use."""
        with self._lock:
            if self._model is None:
                self._model = ModelRef(
                    name=_MODEL_NAME, version=_MODEL_VERSION, sha256=sha256_file(self._recognition_path)
                )
            return self._model

    @staticmethod
    def dlib_box(box: Sequence[float], image_size: tuple[int, int]) -> tuple[int, int, int, int]:
        """The square box dlib's predictor expects for a MediaPipe face box ``(x0, y0, x1, y1)``.

        ``image_size`` is ``(h, w)``; the result may extend past the image (dlib allows that).
        """
        x0, y0, x1, y1 = (float(v) for v in box)
        w, h = x1 - x0, y1 - y0
        if not (np.isfinite([x0, y0, x1, y1]).all() and w > 1 and h > 1):
            raise InputError(f"face box {tuple(box)} is empty or not finite")
        side = _BOX_SCALE * float(np.sqrt(w * h))
        cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0
        left, top = int(round(cx - side / 2)), int(round(cy - side / 2))
        right, bottom = int(round(cx + side / 2)), int(round(cy + side / 2))
        ih, iw = image_size
        if right <= 0 or bottom <= 0 or left >= iw or top >= ih:
            raise InputError(f"face box {tuple(box)} lies outside the {iw}x{ih} image")
        return left, top, right, bottom

    def embed(self, rgb: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
        """The 128-D descriptor (float64) of the face inside ``box`` of an RGB uint8 image.

        Greyscale (H, W) and RGBA images are accepted and converted.
        """
        img = _as_rgb_uint8(rgb)
        left, top, right, bottom = self.dlib_box(box, img.shape[:2])
        rect = self._rectangle(left, top, right, bottom)
        with self._lock:
            shape = self._predictor(img, rect)
            desc = self._net.compute_face_descriptor(img, shape, self.num_jitters)
        return np.asarray(desc, dtype=np.float64).reshape(128)


def _as_rgb_uint8(rgb: np.ndarray) -> np.ndarray:
    a = np.asarray(rgb)
    if a.dtype != np.uint8:
        raise InputError(f"face image must be uint8, got {a.dtype}")
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    elif a.ndim == 3 and a.shape[2] == 4:
        a = a[:, :, :3]
    elif not (a.ndim == 3 and a.shape[2] == 3):
        raise InputError(f"face image must be (H, W, 3) RGB, got shape {a.shape}")
    # dlib reads the buffer directly and rejects strided views (crops, channel slices).
    return np.ascontiguousarray(a)


def face_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Euclidean distance of two descriptors; dlib's same-person threshold is 0.6."""
    return float(np.linalg.norm(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)))


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine of the angle between two descriptors (1 = same direction); 0.0 if one is zero."""
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0.0 or nb == 0.0:
        return 0.0
    return float(np.dot(a, b) / (na * nb))


def identity_transferred(d_source: float, d_plate: float, threshold: float = IDENTITY_MATCH_THRESHOLD) -> bool:
    """Whether a swapped frame shows the source person and no longer the plate's person.

    True when the output face is closer than ``threshold`` to the source identity AND farther
    than ``threshold`` from the plate's original person (DESIGN.md). NaN distances give False.
    """
    d_source, d_plate = float(d_source), float(d_plate)
    return bool(d_source < threshold and d_plate > threshold)


def identity_transfer_rate(
    d_source: Sequence[float | None],
    d_plate: Sequence[float | None],
    threshold: float = IDENTITY_MATCH_THRESHOLD,
) -> float | None:
    """Share of frames where :func:`identity_transferred` holds, over frames where both distances
    were measured (None/NaN frames, e.g. no face found, are left out; ``face_found_ratio`` reports
    those). None when no frame was measured.
    """
    if len(d_source) != len(d_plate):
        raise ValueError(f"distance lists differ in length: {len(d_source)} != {len(d_plate)}")
    measured = ok = 0
    for ds, dp in zip(d_source, d_plate):
        if ds is None or dp is None or not (np.isfinite(ds) and np.isfinite(dp)):
            continue
        measured += 1
        ok += identity_transferred(ds, dp, threshold)
    return ok / measured if measured else None
