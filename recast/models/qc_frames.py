"""QC's per-frame measurements of one chunk: what QC needs from every frame's pixels.

QC's every-frame metrics (background PSNR, seam, motion-compensated flicker, the output face's
landmarks for pose, expression and jitter) need the plate and the output frames side by side.
Decoding both FFV1 chunks again for that cost more than everything QC computes on them (a 512 px
frame decodes in ~20 ms of CPU on the reference machine; two per frame were two thirds of QC).
So :func:`observe_chunk` runs where the frames already are in memory: inside the swap task, on
the exact frames it writes (the FFV1 round trip is bit-exact, so the numbers are those of the
chunk on disk), and, for ``recast qc --plate --output`` on any pair of files, on freshly decoded
frames. The shot-level ``qc`` stage then only reads these arrays and decodes the dozen frames it
embeds for identity.

What is measured here is QC's, not the swap's: a separate MediaPipe graph finds the face in the
output pixels (the swap's own target landmarks are never reused), and the time it takes is
recorded apart (``qc_observe_ms`` of the swap stage) and counted as QC's cost by
``benchmarks/qc.py``.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import ClassVar, Iterable

import cv2
import numpy as np
from mediapipe.python.solutions import face_mesh as _mp_face_mesh

from recast.artifact_format import Artifact
from recast.models.face import MediaPipeGraphs
from recast.models.metrics import TemporalNoiseMeter, psnr, seam_score

#: bump when what :func:`observe_chunk` measures changes: part of the swap stage's work key
OBSERVE_VERSION = "5"
#: background preservation leaves out the person and the swapped pixels grown by this margin
BACKGROUND_DILATE_PX = 15
#: seam every Nth swapped frame: it is the costliest cheap metric and a seam does not come and go
SEAM_EVERY = 6
#: the output face is looked for in a square this many times the plate face box's side
CROP_SCALE = 2.2
#: QC compares the 468 points of the face mesh (not the 10 iris points: gaze is not jitter)
QC_POINTS = 468


@dataclass(frozen=True, eq=False)
class ChunkObservations(Artifact):
    """Per-frame QC measurements of one chunk (``n`` frames from ``start``).

    Stored by the swap stage and read by the qc stage, as every typed stage artefact is
    (:class:`recast.artifact_format.Artifact`): :meth:`load` refuses a file written with another
    :attr:`FORMAT_VERSION` (bump it when the fields change)."""

    FORMAT_VERSION: ClassVar[int] = 3  # 2: the artefact format (kind recorded, ``swapped`` packed); 3: ``guessed_fill``

    start: int
    swapped: np.ndarray  # (n,) bool: the swap changed a pixel of this frame
    out_landmarks: np.ndarray  # (n, 468, 3) float32, NaN where no output face was measured
    background_psnr: np.ndarray  # (n,) dB outside the grown person/swap region (NaN: nothing left)
    seam: np.ndarray  # (n,) seam score every SEAM_EVERY-th swapped frame, NaN elsewhere
    flicker_output: np.ndarray  # (n,) temporal noise of the output in the swapped region (grey levels)
    flicker_plate: np.ndarray  # (n,) the same in the plate
    flicker_sums: np.ndarray  # (4,) output noise sum, its pixel count, plate noise sum, its count
    #: (n,) what the engine invented of the body the old head hid beside and under the jaw
    #: (:attr:`recast.models.engines.SwapResult.guessed`), in % of the plate face box's area;
    #: NaN where unknown (an engine that says nothing of it, a pair of files measured by
    #: ``recast qc``, a frame without a face box)
    guessed_fill: np.ndarray

    def __post_init__(self) -> None:
        object.__setattr__(self, "start", int(self.start))  # a 0-d array when loaded

    def __len__(self) -> int:
        return int(len(self.swapped))


class OutputFaceTracker(MediaPipeGraphs):
    """The swapped face's 468 mesh landmarks in output frames, found in the output pixels.

    MediaPipe's face mesh in video mode with one face and without the iris refinement, run on a
    square crop around where the plate's chosen face is (same size for a whole chunk, so the
    graph's tracking region stays valid from frame to frame): the person QC judges is the one in
    the crop even in a crowd, and the mesh's own detector runs only when tracking is lost. With
    room for two faces MediaPipe runs its detector on every frame (half the landmark cost), and
    the iris model adds a fifth; no QC metric uses the iris points (468-477).
    """

    GRAPHS = ("_mesh",)

    def __init__(self, min_confidence: float = 0.5) -> None:
        self._mesh = _mp_face_mesh.FaceMesh(static_image_mode=False, max_num_faces=1, refine_landmarks=False,
                                            min_detection_confidence=min_confidence, min_tracking_confidence=min_confidence)

    def landmarks(self, frame: np.ndarray, box: np.ndarray, side: int) -> np.ndarray | None:
        """(468, 3) landmarks in frame pixels of the face in the ``side`` crop around ``box``."""
        h, w = frame.shape[:2]
        cw, ch = min(side, w), min(side, h)
        cx, cy = (box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0
        x0 = int(np.clip(round(cx - cw / 2), 0, w - cw))
        y0 = int(np.clip(round(cy - ch / 2), 0, h - ch))
        res = self._mesh.process(np.ascontiguousarray(frame[y0:y0 + ch, x0:x0 + cw]))
        if not res.multi_face_landmarks:
            return None
        lm = np.array([(p.x, p.y, p.z) for p in res.multi_face_landmarks[0].landmark], dtype=np.float32)[:QC_POINTS]
        lm[:, 0] = lm[:, 0] * cw + x0
        lm[:, 1] = lm[:, 1] * ch + y0
        lm[:, 2] *= cw
        return lm


def crop_side(boxes: np.ndarray, present: np.ndarray) -> int:
    """The crop side for a chunk: CROP_SCALE times the largest plate face box side in it."""
    b = np.asarray(boxes, float)[np.asarray(present, bool)]
    b = b[np.isfinite(b).all(axis=1)] if b.size else b
    if not len(b):
        return 0
    return int(np.ceil(CROP_SCALE * float(np.max(np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1])))))


def observe_chunk(
    *,
    start: int,
    plate_frames: Iterable[np.ndarray],
    out_frames: Iterable[np.ndarray],
    exclude: np.ndarray,
    change: np.ndarray,
    plate_boxes: np.ndarray,
    face_found: np.ndarray,
    plate_landmarks: np.ndarray,
    out_landmarks: np.ndarray | None = None,
    guessed: np.ndarray | None = None,
) -> ChunkObservations:
    """Measure one chunk, frame by frame (frames may be streamed from a decoder).

    ``exclude`` (n, H, W): person pixels background preservation leaves out; ``change`` (n, H, W):
    pixels the swap changed; ``plate_boxes`` (n, 4) and ``face_found`` (n,): where the chosen
    person's face is in the plate; ``plate_landmarks`` (n, 478, 3): used for the flicker region
    when nothing was changed. ``out_landmarks`` (n, 478, 3), when already known, skips the
    output face tracker (only the first 468 points are kept). ``guessed`` (n, H, W): what the
    engine invented (:attr:`recast.models.engines.SwapResult.guessed`), when it says.
    """
    change = np.asarray(change, bool)
    n = len(change)
    h, w = change.shape[1:3]
    swapped = change.reshape(n, -1).any(axis=1)
    region = change.any(axis=0)
    if not region.any():  # nothing changed (e.g. an output identical to the plate): the face is the region
        region = face_region(plate_landmarks, (h, w))
    meter_out, meter_plate = TemporalNoiseMeter(region), TemporalNoiseMeter(region)
    bg = np.full(n, np.nan)
    seam = np.full(n, np.nan)
    fl_out = np.full(n, np.nan)
    fl_plate = np.full(n, np.nan)
    sums = np.zeros(4)
    lms = np.full((n, QC_POINTS, 3), np.nan, np.float32)
    if out_landmarks is not None:
        lms[:] = np.asarray(out_landmarks)[:n, :QC_POINTS]
    side = crop_side(plate_boxes, face_found & swapped)
    wanted = swapped & np.asarray(face_found, bool) & np.isfinite(np.asarray(plate_boxes, float)).all(axis=1)
    tracking = None
    if out_landmarks is None and side > 0 and wanted.any():
        # the face mesh (MediaPipe's own threads, GIL released) runs beside the pixel metrics
        # (OpenCV, GIL released) on a second thread, as the swap's codecs use theirs
        out_frames = out_frames if isinstance(out_frames, (list, tuple, np.ndarray)) else list(out_frames)
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="qc-landmarks")
        tracking = pool.submit(_track_output_faces, out_frames, plate_boxes, wanted, side, lms)
        pool.shutdown(wait=False)
    count = 0
    try:
        for i, (plate, out) in enumerate(zip(plate_frames, out_frames)):
            if i >= n:
                break
            count += 1
            po, pp = meter_out.add(out), meter_plate.add(plate)
            if po is not None and pp is not None and po[1]:
                fl_out[i], fl_plate[i] = po[0] / po[1], pp[0] / pp[1]
                sums += (po[0], po[1], pp[0], pp[1])
            v = psnr(plate, out, ~grow(exclude[i] | change[i], BACKGROUND_DILATE_PX))
            bg[i] = np.nan if v is None else float(v)
            if swapped[i] and (start + i) % SEAM_EVERY == 0:
                s = seam_score(out, change[i])
                seam[i] = np.nan if s is None else float(s)
    except BaseException:
        if tracking is not None:
            wait([tracking])  # let the tracker finish with the frames before they go; keep this error
        raise
    if tracking is not None:
        tracking.result()  # landmarks written into lms; re-raises a tracker error
    if count != n:
        raise ValueError(f"observe_chunk: {count} frame pairs for {n} masks (chunk at frame {start})")
    return ChunkObservations(start=int(start), swapped=swapped, out_landmarks=lms, background_psnr=bg, seam=seam,
                             flicker_output=fl_out, flicker_plate=fl_plate, flicker_sums=sums,
                             guessed_fill=guessed_fill(guessed, plate_boxes, swapped))


def guessed_fill(guessed: np.ndarray | None, boxes: np.ndarray, swapped: np.ndarray) -> np.ndarray:
    """(n,) the invented pixels of each swapped frame in % of its plate face box's area (NaN where
    nothing is known: no ``guessed`` masks, a frame not swapped or without a box)."""
    n = len(swapped)
    out = np.full(n, np.nan)
    if guessed is None:
        return out
    b = np.asarray(boxes, float).reshape(n, 4)
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    ok = np.asarray(swapped, bool) & np.isfinite(area) & (area > 0)
    counts = np.asarray(guessed, bool).reshape(n, -1).sum(axis=1)
    out[ok] = 100.0 * counts[ok] / area[ok]
    return out


def _track_output_faces(out_frames, plate_boxes: np.ndarray, wanted: np.ndarray, side: int, into: np.ndarray) -> None:
    """Fill ``into[i]`` with the output face's landmarks on every wanted frame, in order (the
    mesh tracks from frame to frame)."""
    with OutputFaceTracker() as tracker:
        for i, out in enumerate(out_frames):
            if i >= len(wanted):
                break
            if wanted[i]:
                found = tracker.landmarks(out, plate_boxes[i], side)
                if found is not None:
                    into[i] = found


def grow(mask: np.ndarray, px: int) -> np.ndarray:
    """``mask`` dilated by at least ``px`` pixels, computed at a quarter of the resolution: a
    full-resolution elliptic dilation of a person mask was the costliest step of the background
    measure (~3 ms a 512 px frame, ~30 ms at 1080p); at 1/4 it is ~0.2 ms and errs on the side of
    excluding a few more pixels."""
    m = np.asarray(mask, bool)
    if not m.any():
        return m
    h, w = m.shape
    q = 4
    small = cv2.resize(m.astype(np.uint8), ((w + q - 1) // q, (h + q - 1) // q), interpolation=cv2.INTER_AREA) > 0
    r = int(np.ceil(px / q)) + 1
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    grown = cv2.dilate(small.astype(np.uint8), k)
    return (cv2.resize(grown, (w, h), interpolation=cv2.INTER_NEAREST) > 0) | m


def face_region(landmarks: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The union of the convex hulls of the faces in ``landmarks`` (n, 478, 3)."""
    region = np.zeros(size, np.uint8)
    for lm in landmarks:
        if np.isfinite(lm[:, :2]).all():
            cv2.fillConvexPoly(region, cv2.convexHull(lm[:, :2].astype(np.int32)), 1)
    return region > 0
