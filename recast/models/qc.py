"""QC of a swapped shot: identity, hair, pose, expression, temporal stability, seam and
background metrics, a verdict with reasons, and the per-frame values reports are drawn from.

Pure: arrays and callables in, numbers out. Where the frames, thresholds and model files come
from is the ``qc`` stage's business (:mod:`recast.tasks.qc`).

Cheap metrics (pose, expression, landmark jitter, flicker, background, seam) are computed on
every frame, from the chunks' :class:`~recast.models.qc_frames.ChunkObservations`; costly ones
(identity embeddings, hair colour) on sampled frames: ``samples_per_second`` per second plus the
worst frames by the cheap metrics (pose error, landmark jump, seam), so a bad moment is never
missed by the identity check. Only the sampled frames are decoded, through the ``decode``
callable of :class:`QCInputs`.

Identity model: insightface ArcFace (``buffalo_l/w600k_r50.onnx``) when its file is in the model
directory (resolved and checksum-verified through :mod:`recast.models.registry`), dlib's ResNet
descriptor otherwise (:func:`identity_model`).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol

import cv2
import numpy as np

from recast.contracts import Mode, ModelRef, Verdict
from recast.errors import ModelMissingError, UsageError
# the hair metric reads hair the way the head model cuts it: its face frame, oval, colour space and skin model
from recast.models.head import cielab as _lab, face_frame as _face_frame, pixel_grid as _grid, skin_model as _skin_model
from recast.models.mesh_topology import FACE_OVAL as _OVAL
from recast.models.identity import IDENTITY_MATCH_THRESHOLD, DlibFaceEmbedder, cosine_similarity, face_distance
from recast.models.metrics import (
    QCThresholds,
    decide_verdict,
    expression_error,
    expression_features,
    head_pose_array,
    inter_ocular_distance,
    pose_error,
)
from recast.models.qc_frames import QC_POINTS, ChunkObservations

log = logging.getLogger("recast")

#: part of the qc stage's work key: bump when a metric's definition changes, so cached QC
#: results of the old definition are not reused
QC_VERSION = "5"
WORST_FRAMES = 3
#: at most this many frames are named per reason
REASON_FRAMES = 12
#: frames of the plate whose person embeddings are averaged into the plate identity
PLATE_ID_FRAMES = 3
#: ArcFace: same person when the cosine similarity of two embeddings is above 0.35, i.e. the
#: distance 1 - cos below 0.65 (insightface R50 on WebFace600K: same-person pairs typically score
#: 0.4-0.8, different people below 0.2)
ARCFACE_MATCH_DISTANCE = 0.65
#: grey levels (max over channels, after a 3x3 blur) above which a pixel counts as changed
#: by :func:`change_mask` (H.264 round trips stay below ~6 on these plates)
CHANGE_THRESHOLD = 14
#: floor under both accelerations (inter-ocular units), below MediaPipe's noise on a still face
_JITTER_FLOOR = 1e-3


# --- identity models -------------------------------------------------------------------------
class IdentityModel(Protocol):
    """A face identity embedder with a distance and its same-person bound."""

    model: ModelRef
    match_distance: float

    def embed(self, rgb: np.ndarray, landmarks: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray: ...

    def distance(self, a: np.ndarray, b: np.ndarray) -> float: ...


class DlibIdentity:
    """dlib's 128-D ResNet descriptor (Euclidean distance, same person below 0.6)."""

    match_distance = IDENTITY_MATCH_THRESHOLD

    def __init__(self) -> None:
        self._embedder = DlibFaceEmbedder.shared()
        self.model = self._embedder.model

    def embed(self, rgb: np.ndarray, landmarks: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
        """Descriptor of the face inside ``box`` (dlib aligns it with its own 5 points)."""
        return self._embedder.embed(rgb, box)

    def distance(self, a: np.ndarray, b: np.ndarray) -> float:
        """Euclidean distance of two descriptors."""
        return face_distance(a, b)


class ArcFaceIdentity:
    """insightface ArcFace (512-D), aligned on the 5-point template from MediaPipe landmarks;
    distance = 1 - cosine similarity, same person below :data:`ARCFACE_MATCH_DISTANCE`."""

    match_distance = ARCFACE_MATCH_DISTANCE

    def __init__(self, path: Path, model: ModelRef) -> None:
        from recast.models.inswapper import ArcFaceRecogniser

        # one thread: QC runs beside other chunk work, and batch 1 gains little from more
        self._rec = ArcFaceRecogniser(path, threads=1)
        self.model = model

    def embed(self, rgb: np.ndarray, landmarks: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
        """L2-normalised embedding of the face with ``landmarks`` (``box`` is not needed)."""
        return self._rec.embed(rgb, landmarks)

    def distance(self, a: np.ndarray, b: np.ndarray) -> float:
        """1 - cosine similarity."""
        return 1.0 - cosine_similarity(a, b)


def identity_model(model_dir: Path | None) -> IdentityModel:
    """ArcFace when ``buffalo_l``'s recogniser is in ``model_dir``, dlib otherwise (no directory,
    or no recogniser in it).

    A present file whose checksum differs from the pinned one is an error (InputError), not a
    silent fallback: the studio placed a file recast must not trust.
    """
    if model_dir is not None and Path(model_dir).is_dir():
        from recast.models import registry

        try:
            resolved = registry.resolve("buffalo_l", Path(model_dir))
        except ModelMissingError as exc:
            log.info("QC identity: dlib (%s)", exc)
        else:
            return ArcFaceIdentity(resolved.path("buffalo_l/w600k_r50.onnx"), resolved.model_ref)
    return DlibIdentity()


# --- thresholds ------------------------------------------------------------------------------
#: thresholds that settings (``RECAST_QC_<NAME>``) can set; the others come from QCThresholds
SETTINGS_THRESHOLDS = ("identity_pass", "identity_fail", "background_psnr_pass", "background_psnr_fail", "pose_error_review", "face_found_review")


def resolve_thresholds(defaults: Mapping[str, float], overrides: Mapping[str, Any] | None = None) -> QCThresholds:
    """QCThresholds: ``overrides`` (a project's; names with or without the ``qc_`` prefix) over
    ``defaults`` (the settings') over QCThresholds' own. An unknown name or a value that is not
    a number is a UsageError naming it."""
    known = {f.name for f in dataclasses.fields(QCThresholds)}
    values = {name: float(value) for name, value in defaults.items()}
    for name, value in (overrides or {}).items():
        key = name[3:] if name.startswith("qc_") else name
        if key not in known:
            raise UsageError(f"QC threshold {name!r} is not one of {', '.join(sorted(known))}")
        try:
            values[key] = float(value)
        except (TypeError, ValueError):
            raise UsageError(f"QC threshold {name!r}: {value!r} is not a number") from None
    return QCThresholds(**values)


# --- verdict with reasons --------------------------------------------------------------------
_REASON_KEYS = (
    ("identity transfer", "identity_transfer_rate", ("identity_pass", "identity_fail")),
    ("background PSNR", "background_psnr_db", ("background_psnr_pass", "background_psnr_fail")),
    ("pose error", "pose_error_deg", ("pose_error_review",)),
    ("expression error", "expression_error", ("expression_review",)),
    ("landmark jitter ratio", "jitter_ratio", ("jitter_ratio_review",)),
    ("flicker ratio", "flicker_ratio", ("flicker_ratio_review",)),
    ("seam score", "seam_score", ("seam_review",)),
    ("face found ratio", "face_found_ratio", ("face_found_review",)),
)


def explain_verdict(metrics: dict[str, Any], thresholds: QCThresholds, frames_by_metric: dict[str, list[int]]) -> tuple[Verdict, list[dict[str, Any]]]:
    """:func:`decide_verdict` with each reason as a record: metric, value, threshold, outcome,
    the frames where it shows (worst first) and the one-line text (frames appended)."""
    verdict, texts = decide_verdict(metrics, thresholds)
    out = []
    for text in texts:
        label, key, bounds = next(((lb, k, b) for lb, k, b in _REASON_KEYS if text.startswith(lb)), (text, None, ()))
        outcome = "fail" if text.endswith("(fail)") else "review"
        if key in ("identity_transfer_rate", "background_psnr_db") and "not measured" not in text:
            bound = getattr(thresholds, bounds[1] if outcome == "fail" else bounds[0])
        else:
            bound = getattr(thresholds, bounds[0]) if bounds else None
        frames = [int(f) for f in frames_by_metric.get(key or "", [])][:REASON_FRAMES]
        out.append({"metric": key, "value": metrics.get(key) if key else None, "threshold": bound, "outcome": outcome,
                    "frames": frames, "text": text + (f" at frames {', '.join(map(str, frames))}" if frames else "")})
    return verdict, out


# --- measuring -------------------------------------------------------------------------------
#: ``decode(wanted)``: {frame: (plate frame or None, output frame)} for ``wanted`` {frame: whether
#: the plate frame is needed too}; the only pixels :func:`measure` reads
FrameDecoder = Callable[[dict[int, bool]], dict[int, tuple["np.ndarray | None", np.ndarray]]]


@dataclass(frozen=True, eq=False)
class QCInputs:
    """Everything :func:`measure` needs about a shot."""

    decode: FrameDecoder
    observations: list[ChunkObservations]
    total: int
    rate: float
    size: tuple[int, int]
    plate_landmarks: np.ndarray  # (F, 478, 3) raw, NaN where the chosen person is absent
    face_found: np.ndarray  # (F,) bool
    source_rgb: np.ndarray
    source_landmarks: np.ndarray
    source_box: tuple[int, int, int, int]
    mode: str
    source_head: Any = None  # recast.models.head.SourceHead in head mode
    cuts: tuple[int, ...] = ()


@dataclass(frozen=True, eq=False)
class _Observed:
    """The chunks' observations as shot-long arrays."""

    out_lms: np.ndarray
    swapped: np.ndarray
    bg_psnr: np.ndarray
    seam: np.ndarray
    flick_out: np.ndarray
    flick_plate: np.ndarray
    flicker_sums: tuple[float, float, float, float]  # output sum, its count, plate sum, its count


def _gather(obs: list[ChunkObservations], total: int, plate_lms: np.ndarray) -> _Observed:
    covered = sum(len(o) for o in obs)
    if covered != total:
        raise ValueError(f"QC observations cover {covered} frames, the shot has {total}")
    if not obs:
        nan = np.full(total, np.nan)
        return _Observed(np.full_like(plate_lms, np.nan), np.zeros(total, bool), nan, nan.copy(), nan.copy(), nan.copy(), (0.0, 0.0, 0.0, 0.0))
    sums = np.sum([o.flicker_sums for o in obs], axis=0).tolist()
    return _Observed(
        out_lms=np.concatenate([o.out_landmarks for o in obs]).astype(np.float64),
        swapped=np.concatenate([o.swapped for o in obs]).astype(bool),
        bg_psnr=np.concatenate([o.background_psnr for o in obs]),
        seam=np.concatenate([o.seam for o in obs]),
        flick_out=np.concatenate([o.flicker_output for o in obs]),
        flick_plate=np.concatenate([o.flicker_plate for o in obs]),
        flicker_sums=tuple(float(v) for v in sums),  # type: ignore[arg-type]
    )


def _pose_per_frame(plate_lms: np.ndarray, out_lms: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(plate pose, output pose, mean absolute angle difference) per frame, degrees."""
    total = len(plate_lms)
    pose_plate = head_pose_array(plate_lms, size).reshape(total, 3)
    pose_out = head_pose_array(out_lms, size).reshape(total, 3)
    with np.errstate(invalid="ignore"):
        d = np.abs((pose_plate - pose_out + 180.0) % 360.0 - 180.0)
        pose_err = np.where(np.isfinite(d).all(axis=1), d.mean(axis=1), np.nan)
    return pose_plate, pose_out, pose_err


@dataclass(frozen=True, eq=False)
class _Identity:
    """Identity (and hair) values on the sampled frames."""

    samples: np.ndarray
    d_src: np.ndarray
    d_plate: np.ndarray
    cos_src: np.ndarray
    cos_plate: np.ndarray
    hair: np.ndarray
    transferred: np.ndarray
    measured: np.ndarray


def _measure_identity(inputs: QCInputs, identity: IdentityModel, samples: np.ndarray, plate_frames: list[int],
                      plate_lms: np.ndarray, out_lms: np.ndarray) -> _Identity:
    """Embed the output face on the ``samples`` and the plate's person on ``plate_frames``
    (averaged into one identity); distances to the source and to the plate's person; in head mode
    the hair metric on the samples. Decodes only those frames."""
    total = inputs.total
    head = inputs.mode == Mode.head.value and inputs.source_head is not None
    wanted = {int(f): head or int(f) in plate_frames for f in samples}
    for f in plate_frames:
        wanted[f] = True
    decoded = inputs.decode(wanted)

    src_embedding = identity.embed(inputs.source_rgb, inputs.source_landmarks, inputs.source_box)
    d_src, d_plate, cos_src, cos_plate, hair = (np.full(total, np.nan) for _ in range(5))
    out_embs: dict[int, np.ndarray] = {}
    plate_embs: list[np.ndarray] = []
    sample_set = set(int(f) for f in samples)
    for f in sorted(decoded):
        plate_frame, out_frame = decoded[f]
        if f in plate_frames and plate_frame is not None:
            plate_embs.append(identity.embed(plate_frame, plate_lms[f], _box(plate_lms[f], plate_frame.shape)))
        if f not in sample_set or np.isnan(out_lms[f]).any():
            continue
        out_embs[f] = identity.embed(out_frame, out_lms[f], _box(out_lms[f], out_frame.shape))
        if head and plate_frame is not None and np.isfinite(plate_lms[f]).all():
            verdict = hair_colour_transfer(out_frame, out_lms[f], inputs.source_head, plate_frame, plate_lms[f])
            hair[f] = np.nan if verdict is None else float(verdict)

    plate_person = np.mean(plate_embs, axis=0) if plate_embs else None
    for f, out_emb in out_embs.items():
        d_src[f] = identity.distance(out_emb, src_embedding)
        cos_src[f] = cosine_similarity(out_emb, src_embedding)
        if plate_person is not None:
            d_plate[f] = identity.distance(out_emb, plate_person)
            cos_plate[f] = cosine_similarity(out_emb, plate_person)
    t = identity.match_distance
    measured = np.isfinite(d_src) & np.isfinite(d_plate)
    transferred = measured & (d_src < t) & (d_plate > t)
    return _Identity(samples=samples, d_src=d_src, d_plate=d_plate, cos_src=cos_src, cos_plate=cos_plate, hair=hair,
                     transferred=transferred, measured=measured)


def measure(inputs: QCInputs, identity: IdentityModel, thresholds: QCThresholds, *, samples_per_second: float,
            advance: Callable[[int], None] = lambda n: None) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]], Verdict]:
    """All QC metrics of a shot from its chunks' observations: (metrics, per-frame values,
    reasons, verdict). The per-frame values are named as the fields of
    :class:`recast.media.artifacts.QCPerFrame`. Only the frames embedded for identity are decoded."""
    total, (h, w) = inputs.total, inputs.size
    plate_lms = np.asarray(inputs.plate_landmarks, np.float64)[:, :QC_POINTS]
    o = _gather(inputs.observations, total, plate_lms)
    out_lms = o.out_lms

    judged = o.swapped & inputs.face_found
    if not judged.any():  # nothing was swapped (an output identical to its plate): judge every face frame
        judged = inputs.face_found.copy()

    # every-frame metrics
    pose_plate, pose_out, pose_err = _pose_per_frame(plate_lms, out_lms, (h, w))
    expr_err = _expression_per_frame(plate_lms, out_lms, judged)
    acc_out, acc_plate = _landmark_acceleration(out_lms), _landmark_acceleration(plate_lms)
    jitter_excess = acc_out - acc_plate
    flicker_pf = (o.flick_out + 0.25) / (o.flick_plate + 0.25)

    # identity samples: one a second among the judged frames plus the worst frames by the cheap
    # metrics (not already sampled), so a bad moment is never missed by the identity check
    regular = sample_frames(judged, inputs.rate, samples_per_second)
    bad = badness(plate_lms, out_lms, pose_err, o.seam, thresholds)
    candidates = judged & np.isfinite(bad) & (np.nan_to_num(bad, nan=0.0) > 0)
    candidates[regular] = False
    worst = _worst(bad, candidates, WORST_FRAMES)
    samples = sample_frames(judged, inputs.rate, samples_per_second, np.asarray(worst, dtype=int))
    # the plate's person is one identity: embedded on a few regular samples and averaged, rather
    # than once per sampled frame (halves the embedding cost, the costliest part of QC)
    plate_frames = [int(f) for f in sorted(regular)[:: max(1, len(regular) // PLATE_ID_FRAMES)][:PLATE_ID_FRAMES]
                    if np.isfinite(plate_lms[f]).all()]
    ident = _measure_identity(inputs, identity, samples, plate_frames, plate_lms, out_lms)
    advance(total)

    metrics = _shot_metrics(inputs, o, judged, ident, plate_lms, pose_plate, pose_out, acc_out, acc_plate)
    frames_by_metric = {
        "identity_transfer_rate": [int(f) for f in samples if not ident.transferred[f]],
        "background_psnr_db": _order(o.bg_psnr, o.bg_psnr < thresholds.background_psnr_pass, ascending=True),
        "pose_error_deg": _order(pose_err, pose_err > thresholds.pose_error_review),
        "expression_error": _order(expr_err, expr_err > thresholds.expression_review),
        "jitter_ratio": _order(jitter_excess, jitter_excess > 0.02),
        "flicker_ratio": _order(flicker_pf, flicker_pf > thresholds.flicker_ratio_review),
        "seam_score": _order(o.seam, o.seam > thresholds.seam_review),
        "face_found_ratio": [int(f) for f in np.flatnonzero(~inputs.face_found)],
    }
    verdict, reasons = explain_verdict(metrics, thresholds, frames_by_metric)
    per_frame = {
        "swapped": o.swapped, "face_found": inputs.face_found, "sampled": samples, "d_source": ident.d_src, "d_plate": ident.d_plate,
        "similarity_source": ident.cos_src, "similarity_plate": ident.cos_plate, "transferred": ident.transferred,
        "pose_plate": pose_plate, "pose_output": pose_out, "pose_error": pose_err, "expression_error": expr_err,
        "jitter_excess": jitter_excess, "flicker_output": o.flick_out, "flicker_plate": o.flick_plate, "flicker_ratio": flicker_pf,
        "seam": o.seam, "background_psnr": o.bg_psnr, "hair": ident.hair, "badness": bad,
        "identity_match_distance": float(identity.match_distance),
    }
    return metrics, per_frame, reasons, verdict


def _shot_metrics(inputs: QCInputs, o: _Observed, judged: np.ndarray, ident: _Identity, plate_lms: np.ndarray,
                  pose_plate: np.ndarray, pose_out: np.ndarray, acc_out: np.ndarray, acc_plate: np.ndarray) -> dict[str, Any]:
    """The shot-level metrics (the QC record's ``metrics``) from the per-frame values."""
    total, out_lms, samples = inputs.total, o.out_lms, ident.samples
    both = judged & np.isfinite(acc_out) & np.isfinite(acc_plate)
    # jitter as shake, not motion: mean landmark acceleration (second difference) of the output
    # over the plate's; a head that jumps for one frame scores high, a head that moves smoothly
    # with the plate does not (the first difference of metrics.landmark_jitter averages a
    # one-frame jump away among the plate's own motion: 1.17 for a 20 px jump on the test plate)
    jr = float((acc_out[both].mean() + _JITTER_FLOOR) / (acc_plate[both].mean() + _JITTER_FLOOR)) if both.sum() >= 2 else None
    pe = pose_error([tuple(p) for p in pose_plate[judged]], [tuple(p) for p in pose_out[judged]]) if judged.any() else None
    ee = expression_error(plate_lms[judged], out_lms[judged]) if judged.any() else None
    n_meas = int(ident.measured[samples].sum()) if samples.size else 0
    hair_known = ident.hair[samples][~np.isnan(ident.hair[samples])] if samples.size else np.zeros(0)
    f_sum_out, f_cnt_out, f_sum_plate, f_cnt_plate = o.flicker_sums
    return {
        "frames": int(total),
        "swapped_frames": int(o.swapped.sum()),
        "face_found_ratio": float(inputs.face_found.mean()) if total else 0.0,
        "output_face_found_ratio": float(np.isfinite(out_lms[judged]).all(axis=(1, 2)).mean()) if judged.any() else 0.0,
        "identity_samples": int(samples.size),
        # a sampled frame whose output face could not be embedded counts as not transferred:
        # QC must not pass a shot because the face was unreadable
        "identity_transfer_rate": float(ident.transferred[samples].mean()) if samples.size else None,
        "identity_distance_source": _nanmean(ident.d_src[samples]) if samples.size else None,
        "identity_distance_plate": _nanmean(ident.d_plate[samples]) if samples.size else None,
        "identity_similarity_source": _nanmean(ident.cos_src[samples]) if samples.size else None,
        "identity_similarity_plate": _nanmean(ident.cos_plate[samples]) if samples.size else None,
        "identity_measured_samples": n_meas,
        "hair_transfer_rate": float(hair_known.mean()) if hair_known.size else None,
        "pose_error_deg": None if pe is None else float(pe),
        "expression_error": None if ee is None else float(ee),
        "jitter_ratio": None if jr is None else float(jr),
        "flicker_ratio": float((f_sum_out / f_cnt_out + 0.25) / (f_sum_plate / f_cnt_plate + 0.25)) if f_cnt_out and f_cnt_plate else None,
        "seam_score": _nanmean(o.seam),
        "background_psnr_db": _nanmean(o.bg_psnr),
        "background_psnr_min_db": float(np.nanmin(o.bg_psnr)) if np.isfinite(o.bg_psnr).any() else None,
        "scene_cuts": len(inputs.cuts),
    }


def badness(plate_lms: np.ndarray, out_lms: np.ndarray, pose_err: np.ndarray, seam: np.ndarray, t: QCThresholds) -> np.ndarray:
    """How bad each frame looks by the cheap metrics, each in units of its review bound: pose
    error, landmark jump from the previous frame beyond the plate's (5% of the eye distance is
    one unit), seam. NaN where none of them is known."""
    with np.errstate(invalid="ignore", divide="ignore"):
        jump = np.full(len(plate_lms), np.nan)
        if len(plate_lms) > 1:
            step_out = np.linalg.norm(np.diff(out_lms[:, :, :2], axis=0), axis=2).mean(axis=1)
            step_plate = np.linalg.norm(np.diff(plate_lms[:, :, :2], axis=0), axis=2).mean(axis=1)
            iod = np.asarray(inter_ocular_distance(plate_lms), float)[1:]
            jump[1:] = (step_out - step_plate) / np.where(iod > 0, iod, 1.0) / 0.05
        terms = np.stack([pose_err / t.pose_error_review, jump, seam / t.seam_review])
        any_known = np.isfinite(terms).any(axis=0)
        worst = np.nanmax(np.where(np.isfinite(terms), terms, -np.inf), axis=0)
    return np.where(any_known, worst, np.nan)


def sample_frames(swapped: np.ndarray, rate: float, per_second: float, worst: np.ndarray | None = None) -> np.ndarray:
    """Frames for the costly metrics: ``per_second`` a second among swapped frames, plus the worst."""
    idx = np.flatnonzero(swapped)
    if idx.size == 0:
        return idx
    step = max(1, int(round(rate / max(per_second, 1e-6))))
    picked = idx[::step]
    if picked.size < min(3, idx.size):  # short shots still get a few identity samples
        picked = idx[np.linspace(0, idx.size - 1, min(3, idx.size)).round().astype(int)]
    if worst is not None and worst.size:
        picked = np.concatenate([picked, worst[swapped[worst]]])
    return np.unique(picked)


# --- regions ---------------------------------------------------------------------------------
def changed_region(person: np.ndarray, swap_mask: np.ndarray) -> np.ndarray:
    """What background preservation excludes: the plate's person and every pixel the swap touched."""
    return person | swap_mask


def change_mask(plate: np.ndarray, output: np.ndarray, box: np.ndarray | None) -> np.ndarray:
    """The pixels that differ visibly between a plate frame and an output frame near the chosen
    face (inside its ``box`` grown by half its size; nothing when ``box`` is None): the blend
    region of a swap made by any tool, filled and cleaned of specks."""
    m = np.zeros(plate.shape[:2], bool)
    if box is None:
        return m
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))
    x0, y0, x1, y1 = (int(v) for v in box)
    gx, gy = (x1 - x0) // 2, (y1 - y0) // 2
    x0, y0, x1, y1 = max(0, x0 - gx), max(0, y0 - gy), min(plate.shape[1], x1 + gx), min(plate.shape[0], y1 + gy)
    d = cv2.absdiff(cv2.blur(plate[y0:y1, x0:x1], (3, 3)), cv2.blur(output[y0:y1, x0:x1], (3, 3))).max(axis=2)
    c = (d > CHANGE_THRESHOLD).astype(np.uint8)
    c = cv2.morphologyEx(cv2.morphologyEx(c, cv2.MORPH_OPEN, kernel), cv2.MORPH_CLOSE, kernel, iterations=2)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(c)
    if n > 1:
        keep = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))  # the swapped face, not stray compression noise
        c = (labels == keep).astype(np.uint8)
        contours, _ = cv2.findContours(c, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(c, contours, -1, 1, thickness=cv2.FILLED)  # holes: unchanged skin inside the face
        m[y0:y1, x0:x1] = c > 0
    return m


def matching_faces(faces_landmarks: np.ndarray, faces_boxes: np.ndarray, face_count: np.ndarray, boxes: np.ndarray,
                   present: np.ndarray) -> np.ndarray:
    """Per frame, the landmarks of the face (among ``face_count[i]`` detected in another file of
    the same shot) nearest the chosen face's box ``boxes[i]``; NaN where the chosen person is
    absent or no face is within a face width of it (another person)."""
    n = len(face_count)
    out = np.full((n,) + faces_landmarks.shape[2:], np.nan, np.float32)
    for i in range(n):
        if not present[i]:
            continue
        k = _nearest_index(faces_boxes[i, : face_count[i]], boxes[i])
        if k is not None:
            out[i] = faces_landmarks[i, k]
    return out


# --- the hair metric ----------------------------------------------------------------------------
def _hair_band(lm: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """bool mask of a band just above the forehead top (the hairline and above), outside the
    face oval: where the hair is on nearly every head that has hair."""
    h, w = shape[:2]
    ff = _face_frame(lm)
    pts = [ff.point(s * 0.4 * ff.width, -b * ff.height) for s in (-1, 1) for b in (0.95, 1.3)]
    p = np.asarray(pts)
    x0, y0 = np.clip(np.floor(p.min(0)).astype(int), 0, (w, h))
    x1, y1 = np.clip(np.ceil(p.max(0)).astype(int) + 1, 0, (w, h))
    band = np.zeros((h, w), bool)
    if x1 <= x0 or y1 <= y0:
        return band
    xs, ys = _grid((x0, y0, x1, y1))
    lat, below = ff.coords(xs, ys)
    # the band starts at the brows' height plus the forehead: above the oval top, below 1.3 H
    inner = (np.abs(lat) <= 0.4 * ff.width) & (below <= -1.02 * ff.height) & (below >= -1.3 * ff.height)
    oval = np.zeros((y1 - y0, x1 - x0), np.uint8)
    cv2.fillPoly(oval, [np.round((lm[_OVAL, :2] - (x0, y0)) * 16).astype(np.int32)], 255, shift=4)
    band[y0:y1, x0:x1] = inner & (oval == 0)
    return band


def _band_colour(rgb: np.ndarray, lm: np.ndarray, extra: np.ndarray | None = None) -> np.ndarray | None:
    """Mean CIELAB of the hair band, leaving out skin-coloured pixels (a high forehead) so that
    every image is measured on its hair alone."""
    lm = np.asarray(lm, np.float64)
    band = _hair_band(lm, rgb.shape)
    if extra is not None:
        band &= extra
    if band.sum() < 10:
        return None
    px = _lab(rgb[band].reshape(-1, 1, 3)).reshape(-1, 3)
    # the skin model on a crop around the face (cheaper than on the whole frame)
    pts = lm[_OVAL, :2]
    cx0, cy0 = np.maximum(np.floor(pts.min(0)).astype(int), 0)
    cx1, cy1 = np.minimum(np.ceil(pts.max(0)).astype(int) + 1, (rgb.shape[1], rgb.shape[0]))
    skin = None
    if cx1 - cx0 > 4 and cy1 - cy0 > 4:
        skin = _skin_model(_lab(np.ascontiguousarray(rgb[cy0:cy1, cx0:cx1])), lm - (cx0, cy0, 0))
    if skin is not None:
        not_skin = (np.abs(px - skin[0]) / skin[1]).max(1) > 3.0
        if not_skin.sum() >= 10:
            px = px[not_skin]
    return px.mean(0)


def hair_colour_transfer(output_rgb: np.ndarray, output_landmarks: np.ndarray, source_head: Any,
                         plate_rgb: np.ndarray, plate_landmarks: np.ndarray) -> bool | None:
    """The issue's hair metric for one frame: is the output's hair colour above the brows (a band
    just above the forehead top, outside the face oval) nearer, in mean CIELAB, the source's hair
    (``source_head``, a :class:`recast.models.head.SourceHead`) than the plate's? None when it
    cannot be told: the source's and the plate's hair colours are within ΔE 10 of each other, or
    a band is empty (no face, off the image).
    """
    for lm in (output_landmarks, plate_landmarks):
        if lm is None or not np.isfinite(np.asarray(lm, np.float64)[:468, :2]).all():
            return None
    src_hair = source_head.hair if source_head.hair.any() else None
    c_src = _band_colour(source_head.rgb, source_head.landmarks, src_hair)
    if c_src is None:  # a band of the source with no hair pixel (bald): take the band as it is
        c_src = _band_colour(source_head.rgb, source_head.landmarks)
    c_plate = _band_colour(np.asarray(plate_rgb), plate_landmarks)
    c_out = _band_colour(np.asarray(output_rgb), output_landmarks)
    if c_src is None or c_plate is None or c_out is None:
        return None
    if np.linalg.norm(c_src - c_plate) < 10.0:
        return None
    return bool(np.linalg.norm(c_out - c_src) < np.linalg.norm(c_out - c_plate))


# --- helpers ---------------------------------------------------------------------------------
def _expression_per_frame(plate_lms: np.ndarray, out_lms: np.ndarray, judged: np.ndarray) -> np.ndarray:
    """Per-frame centred expression difference (as :func:`expression_error` averages it)."""
    fp, fo = expression_features(plate_lms), expression_features(out_lms)
    ok = np.isfinite(fp).all(axis=1) & np.isfinite(fo).all(axis=1) & judged
    out = np.full(len(plate_lms), np.nan)
    if ok.sum() >= 8:
        fp = fp - np.median(fp[ok], axis=0)
        fo = fo - np.median(fo[ok], axis=0)
    out[ok] = np.abs(fp[ok] - fo[ok]).mean(axis=1)
    return out


def _landmark_acceleration(lms: np.ndarray) -> np.ndarray:
    """Per frame t: mean |x[t+1] - 2 x[t] + x[t-1]| of the 2D landmarks in inter-ocular units
    (NaN at the ends and where a frame has no face); smooth motion gives ~0, shake does not."""
    out = np.full(len(lms), np.nan)
    if len(lms) < 3:
        return out
    xy = np.asarray(lms, float)[:, :, :2]
    iod = np.asarray(inter_ocular_distance(lms), dtype=float)
    acc = np.linalg.norm(xy[2:] - 2 * xy[1:-1] + xy[:-2], axis=2).mean(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out[1:-1] = acc / iod[1:-1]
    return out


def _worst(values: np.ndarray, among: np.ndarray, k: int) -> list[int]:
    v = np.where(among & np.isfinite(values), values, -np.inf)
    order = np.argsort(v)[::-1][:k]
    return [int(f) for f in order if np.isfinite(v[f])]


def _order(values: np.ndarray, cond: np.ndarray, *, ascending: bool = False) -> list[int]:
    idx = np.flatnonzero(cond & np.isfinite(values))
    idx = idx[np.argsort(values[idx])]
    return [int(f) for f in (idx if ascending else idx[::-1])]


def _nearest_index(boxes: np.ndarray, box: np.ndarray) -> int | None:
    if len(boxes) == 0:
        return None
    c = (np.asarray(boxes)[:, :2] + np.asarray(boxes)[:, 2:]) / 2.0
    t = (np.asarray(box[:2]) + np.asarray(box[2:])) / 2.0
    k = int(np.argmin(((c - t) ** 2).sum(axis=1)))
    side = max(1.0, float(box[2] - box[0]))
    return k if np.sqrt(((c[k] - t) ** 2).sum()) < side else None  # farther than a face width: another person


def _box(landmarks: np.ndarray, shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    x0, y0 = np.floor(landmarks[:, :2].min(axis=0)).astype(int)
    x1, y1 = np.ceil(landmarks[:, :2].max(axis=0)).astype(int)
    return max(0, x0), max(0, y0), min(shape[1], x1), min(shape[0], y1)


def _nanmean(values: np.ndarray) -> float | None:
    v = values[~np.isnan(values)]
    return float(v.mean()) if v.size else None
