"""Face detection and 478-point landmarks with MediaPipe's legacy solutions (0.10.21).

The face mesh (``refine_landmarks=True``: 468 mesh points + 10 iris points) is the landmark
model; its built-in short-range detector misses small faces (a face that fills a few percent of
a 1280x720 frame), so :class:`FaceAnalyzer` falls back to face *detection* (short range on
~512 px tiles, full range on the whole frame) and runs the mesh on an enlarged crop around each
detection.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, TypeVar

import cv2
import mediapipe as mp
import numpy as np
from mediapipe.python.solutions import face_detection as _mp_face_detection
from mediapipe.python.solutions import face_mesh as _mp_face_mesh

from recast.checksums import sha256_file
from recast.contracts import ModelRef
from recast.errors import NoFaceError, UsageError

MEDIAPIPE_VERSION = "0.10.21"
_MP_DIR = Path(mp.__file__).resolve().parent


def _sha256(rel: str) -> str | None:
    try:
        return sha256_file(_MP_DIR / rel)
    except OSError:  # a stripped install; the ModelRef then says "unknown checksum"
        return None


def mediapipe_model(name: str, rel_path: str) -> ModelRef:
    """A :class:`ModelRef` for a .tflite file bundled in the installed mediapipe package."""
    return ModelRef(name=name, version=getattr(mp, "__version__", MEDIAPIPE_VERSION), sha256=_sha256(rel_path))


_FACE_MODELS: tuple[ModelRef, ...] = (
    mediapipe_model("mediapipe.face_landmark_with_attention", "modules/face_landmark/face_landmark_with_attention.tflite"),
    mediapipe_model("mediapipe.face_detection_short_range", "modules/face_detection/face_detection_short_range.tflite"),
    mediapipe_model("mediapipe.face_detection_full_range_sparse", "modules/face_detection/face_detection_full_range_sparse.tflite"),
)


@dataclass(frozen=True, eq=False)  # compared by identity: array fields make == ambiguous
class DetectedFace:
    """One face in one image.

    ``landmarks`` is (478, 3) float32: x, y in pixels of the full image, z = MediaPipe's z times
    the width of the image the mesh ran on (so z is in pixels too, roughly the same scale as x;
    smaller is nearer the camera). ``box`` is the landmarks' bounding box (x0, y0, x1, y1),
    clipped to the image. ``score`` is the detector's confidence when the face came from the
    detection fallback, 1.0 when the face mesh found it directly (the legacy mesh reports no
    per-face score; it only returns faces that passed ``min_confidence``).
    """

    landmarks: np.ndarray
    box: tuple[int, int, int, int]
    score: float

    @property
    def area(self) -> int:
        """Area of ``box`` in pixels."""
        x0, y0, x1, y1 = self.box
        return max(0, x1 - x0) * max(0, y1 - y0)


def _iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _face_from_landmarks(lm: np.ndarray, shape: tuple[int, int], score: float) -> DetectedFace:
    h, w = shape
    x0 = int(np.clip(np.floor(lm[:, 0].min()), 0, w))
    y0 = int(np.clip(np.floor(lm[:, 1].min()), 0, h))
    x1 = int(np.clip(np.ceil(lm[:, 0].max()), 0, w))
    y1 = int(np.clip(np.ceil(lm[:, 1].max()), 0, h))
    return DetectedFace(landmarks=lm.astype(np.float32, copy=False), box=(x0, y0, x1, y1), score=float(score))


G = TypeVar("G", bound="MediaPipeGraphs")


class MediaPipeGraphs:
    """Closing of a wrapper around MediaPipe graphs, by hand or as a context manager: the
    attributes named in ``GRAPHS`` hold the graphs (None once closed, or never created)."""

    GRAPHS: ClassVar[tuple[str, ...]]

    def close(self) -> None:
        """Release the MediaPipe graphs."""
        for attr in self.GRAPHS:
            obj = getattr(self, attr, None)
            if obj is not None:
                obj.close()
                setattr(self, attr, None)

    def __enter__(self: G) -> G:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class FaceAnalyzer(MediaPipeGraphs):
    """Finds faces and their 478 landmarks in RGB frames.

    Not thread-safe (MediaPipe graphs keep state): create one per thread, and one per clip in
    video mode (``static_images=False``), where the mesh tracks faces from frame to frame on the
    full frame. When the mesh finds nothing, detection on tiles plus the mesh on crops takes
    over, and in video mode the boxes found that way are tried first on the next frame, so a
    small face is followed without running the detectors on every frame.
    """

    MODELS: tuple[ModelRef, ...] = _FACE_MODELS
    GRAPHS = ("_mesh", "_crop_mesh", "_det_short", "_det_full")

    #: side of the square tiles the short-range detector runs on for large frames
    TILE = 512
    #: the crop the mesh runs on around a detection, as a multiple of the detection box side
    CROP_SCALE = 2.2

    def __init__(self, *, static_images: bool, max_faces: int = 4, min_confidence: float = 0.5) -> None:
        if max_faces < 1:
            raise UsageError(f"max_faces must be at least 1, got {max_faces}")
        if not 0.0 < min_confidence < 1.0:
            raise UsageError(f"min_confidence must be in (0, 1), got {min_confidence}")
        self.static_images = static_images
        self.max_faces = max_faces
        self.min_confidence = min_confidence
        self._mesh = _mp_face_mesh.FaceMesh(
            static_image_mode=static_images,
            max_num_faces=max_faces,
            refine_landmarks=True,
            min_detection_confidence=min_confidence,
            min_tracking_confidence=min_confidence,
        )
        # created on first use: most video frames never need them
        self._crop_mesh = None
        self._det_short = None
        self._det_full = None
        self._track_boxes: list[tuple[int, int, int, int]] = []
        self._full_shape: tuple[int, int] = (0, 0)

    # --- detection ------------------------------------------------------------------------------
    def detect(self, rgb: np.ndarray) -> list[DetectedFace]:
        """Faces in ``rgb`` (H, W, 3) uint8, largest box first.

        Returns an empty list when there is no face.
        """
        if self._mesh is None:
            raise RuntimeError("FaceAnalyzer is closed")
        rgb = _check_rgb(rgb)
        self._full_shape = rgb.shape[:2]
        faces = self._mesh_faces(self._mesh, rgb, score=1.0)
        if self.static_images:
            # a still may hold small faces next to a large one; the full-frame mesh misses them
            if len(faces) < self.max_faces:
                faces = [*faces, *self._fallback(rgb, exclude=faces)]
        elif not faces:
            faces = self._track_crops(rgb)
            if not faces:
                faces = self._fallback(rgb, exclude=[])
            self._track_boxes = [f.box for f in faces]
        else:
            self._track_boxes = []
        faces.sort(key=lambda f: f.area, reverse=True)
        return faces[: self.max_faces]

    def _mesh_faces(self, mesh, rgb: np.ndarray, score: float) -> list[DetectedFace]:
        shape = rgb.shape[:2]
        return [_face_from_landmarks(lm, shape, score) for lm in self._mesh_faces_raw(mesh, rgb)]

    def _ensure_fallback(self) -> None:
        if self._crop_mesh is None:
            self._crop_mesh = _mp_face_mesh.FaceMesh(
                static_image_mode=True, max_num_faces=1, refine_landmarks=True,
                min_detection_confidence=self.min_confidence,
            )
            self._det_short = _mp_face_detection.FaceDetection(model_selection=0, min_detection_confidence=self.min_confidence)
            self._det_full = _mp_face_detection.FaceDetection(model_selection=1, min_detection_confidence=self.min_confidence)

    def _detections(self, rgb: np.ndarray) -> list[tuple[tuple[int, int, int, int], float]]:
        """Face boxes from both detectors, short range on tiles, full range on the whole frame."""
        h, w = rgb.shape[:2]
        boxes: list[tuple[tuple[int, int, int, int], float]] = []

        def run(det, img, ox, oy):
            res = det.process(img)
            ih, iw = img.shape[:2]
            for d in res.detections or []:
                bb = d.location_data.relative_bounding_box
                x0 = ox + bb.xmin * iw
                y0 = oy + bb.ymin * ih
                x1, y1 = x0 + bb.width * iw, y0 + bb.height * ih
                box = (int(max(0, x0)), int(max(0, y0)), int(min(w, x1)), int(min(h, y1)))
                if box[2] > box[0] and box[3] > box[1]:
                    boxes.append((box, float(d.score[0]) if d.score else 0.0))

        run(self._det_full, rgb, 0, 0)
        run(self._det_short, rgb, 0, 0)
        t = self.TILE
        if max(h, w) > t * 1.25:
            stride = t * 3 // 4  # overlap so a face cut by one tile is whole in the next
            ys = sorted({*range(0, max(h - t, 0) + 1, stride), max(h - t, 0)})
            xs = sorted({*range(0, max(w - t, 0) + 1, stride), max(w - t, 0)})
            for y in ys:
                for x in xs:
                    run(self._det_short, np.ascontiguousarray(rgb[y : y + t, x : x + t]), x, y)
        # non-maximum suppression, best score first
        boxes.sort(key=lambda b: b[1], reverse=True)
        kept: list[tuple[tuple[int, int, int, int], float]] = []
        for b, s in boxes:
            if all(_iou(b, k) < 0.3 for k, _ in kept):
                kept.append((b, s))
        return kept

    def _mesh_on_box(self, rgb: np.ndarray, box: tuple[int, int, int, int], score: float) -> DetectedFace | None:
        h, w = rgb.shape[:2]
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        side = max(box[2] - box[0], box[3] - box[1]) * self.CROP_SCALE
        x0, y0 = int(max(0, cx - side / 2)), int(max(0, cy - side / 2))
        x1, y1 = int(min(w, cx + side / 2)), int(min(h, cy + side / 2))
        if x1 - x0 < 16 or y1 - y0 < 16:
            return None
        crop = np.ascontiguousarray(rgb[y0:y1, x0:x1])
        # the mesh's landmark model works at 192 px; tiny crops are upscaled so its own
        # detector (128 px input) still sees a face of usable size
        scale = 1.0
        if max(crop.shape[:2]) < 256:
            scale = 256 / max(crop.shape[:2])
            crop = cv2.resize(crop, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
        found = self._mesh_faces_raw(self._crop_mesh, crop)
        if not found:
            return None
        lm = found[0]
        lm[:, :3] /= scale
        lm[:, 0] += x0
        lm[:, 1] += y0
        return _face_from_landmarks(lm, self._full_shape, score)

    @staticmethod
    def _mesh_faces_raw(mesh, rgb: np.ndarray) -> list[np.ndarray]:
        res = mesh.process(rgb)
        if not res.multi_face_landmarks:
            return []
        h, w = rgb.shape[:2]
        out = []
        for fl in res.multi_face_landmarks:
            lm = np.array([(p.x, p.y, p.z) for p in fl.landmark], dtype=np.float32)
            lm[:, 0] *= w
            lm[:, 1] *= h
            lm[:, 2] *= w
            out.append(lm)
        return out

    def _fallback(self, rgb: np.ndarray, exclude: list[DetectedFace]) -> list[DetectedFace]:
        self._ensure_fallback()
        faces: list[DetectedFace] = []
        for box, score in self._detections(rgb):
            if any(_iou(box, f.box) > 0.3 for f in [*exclude, *faces]):
                continue
            face = self._mesh_on_box(rgb, box, score)
            if face is not None and all(_iou(face.box, f.box) < 0.3 for f in [*exclude, *faces]):
                faces.append(face)
            if len(faces) + len(exclude) >= self.max_faces:
                break
        return faces

    def _track_crops(self, rgb: np.ndarray) -> list[DetectedFace]:
        if not self._track_boxes:
            return []
        self._ensure_fallback()
        faces = []
        for box in self._track_boxes:
            face = self._mesh_on_box(rgb, box, 1.0)
            if face is not None and all(_iou(face.box, f.box) < 0.3 for f in faces):
                faces.append(face)
        return faces

def _check_rgb(rgb: np.ndarray) -> np.ndarray:
    if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise UsageError(
            f"expected an RGB uint8 image (H, W, 3), got {getattr(rgb, 'dtype', type(rgb))} {getattr(rgb, 'shape', '')}"
        )
    return np.ascontiguousarray(rgb)


_SELECTOR = re.compile(r"^index:(\d+)$")


def select_face(faces: list[DetectedFace], selector: str = "largest") -> DetectedFace | None:
    """Pick one face: ``"largest"`` or ``"index:N"`` (the N-th by box area, 0 = largest).

    Returns None when there are no faces or fewer than N+1. An unknown selector raises
    :class:`~recast.errors.UsageError`.
    """
    sel = (selector or "").strip()
    if sel == "largest":
        n = 0
    else:
        m = _SELECTOR.match(sel)
        if not m:
            raise UsageError(f"face selector {selector!r} is not 'largest' or 'index:N'")
        n = int(m.group(1))
    ranked = sorted(faces, key=lambda f: f.area, reverse=True)
    return ranked[n] if n < len(ranked) else None


def analyze_source_photo(rgb: np.ndarray, *, role_name: str) -> DetectedFace:
    """The face of a source photo (largest, when there are several).

    Raises :class:`~recast.errors.NoFaceError` naming ``role_name`` when there is none.
    """
    with FaceAnalyzer(static_images=True, max_faces=4) as fa:
        faces = fa.detect(rgb)
    face = select_face(faces, "largest")
    if face is None:
        raise NoFaceError(f"source '{role_name}': no face found")
    return face
