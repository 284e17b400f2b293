"""QC: identity, hair, pose, expression, temporal stability, seam and background metrics of a
swapped shot, a verdict with reasons, and the per-frame values reports are drawn from.

Cheap metrics (pose, expression, landmark jitter, flicker, background, seam) are computed on
every frame; costly ones (identity embeddings, hair colour) on sampled frames:
``qc_identity_samples_per_second`` per second plus the worst frames by the cheap metrics (pose
error, landmark jump, seam), so a bad moment is never missed by the identity check.

Where the work happens: the every-frame measurements need plate and output pixels side by side,
and decoding both FFV1 chunks again cost more than all of QC's arithmetic. So they are taken by
:func:`recast.models.qc_frames.observe_chunk` where the frames are already decoded: inside each
swap chunk (stored as its ``qc_observations`` asset, timed apart as ``qc_observe_ms``), and in
:func:`score_files` on the freshly decoded pair. The ``qc`` stage (:func:`measure`) reads those
arrays, computes the shot-level values, picks the identity samples and decodes only those frames
(by seeking in the intra-only chunks).

Identity model: insightface ArcFace (``buffalo_l/w600k_r50.onnx``) when its file is in
``RECAST_MODEL_DIR`` (resolved and checksum-verified through :mod:`recast.models.registry`), dlib's
ResNet descriptor otherwise. Which one ran, with its checksum, is the first entry of
``QCReport.models`` and is recorded with the QC result.

Two entry points share the measuring code:

* :func:`score_shot`, the ``qc`` stage of ``swap_shot`` (swap masks are known exactly);
* :func:`score_files`, ``recast qc --plate --output --source``: any plate/output pair, also from
  other tools. Both files go through ingest, segment and track (the same stage functions, so
  their work is cached too). What the swap changed is not known there, so the region that
  background preservation leaves out is the dilated union of the plate's and the output's person
  masks (selfie segmentation of both files) plus the pixels that differ visibly between them
  inside the chosen person's face box grown by half its size; the seam is measured along the
  edge of that changed region.

Thresholds: the project's ``qc_thresholds`` (database JSON, names as :class:`QCThresholds`
fields) over the defaults in settings (``RECAST_QC_*``) over :class:`QCThresholds`' own.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import cv2
import numpy as np

from recast.contracts import AssetRef, IngestResult, Mode, ModelRef, QCReport, SegmentResult, SourceFaceResult, SwapChunkResult, TrackResult, Verdict
from recast.errors import InputError, ModelMissingError, UsageError
from recast.media import read_frames, read_frames_in_chunks, read_image
from recast.models.face import FaceAnalyzer
from recast.models.qc_frames import BACKGROUND_DILATE_PX, OBSERVE_VERSION, QC_POINTS, SEAM_EVERY, ChunkObservations, observe_chunk
from recast.models.identity import IDENTITY_MATCH_THRESHOLD, DlibFaceEmbedder, cosine_similarity, face_distance
from recast.models.metrics import (
    QCThresholds,
    decide_verdict,
    expression_features,
    head_pose_array,
    inter_ocular_distance,
    pose_error,
)
from recast.settings import get_settings
from recast.tasks.arrays import load_npz, save_npz, unpack_masks
from recast.tasks.common import emit_progress, fetch, progress_for, run_stage, scratch_dir, store_asset
from recast.tasks.segment import ANALYSIS_MEDIA_TYPE, load_analysis, load_source_head

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
#: in :func:`score_files` (H.264 round trips stay below ~6 on these plates)
CHANGE_THRESHOLD = 14


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


def identity_model(model_dir: Path | None = None) -> IdentityModel:
    """ArcFace when ``buffalo_l``'s recogniser is in the model directory, dlib otherwise.

    A present file whose checksum differs from the pinned one is an error (InputError), not a
    silent fallback: the studio placed a file recast must not trust.
    """
    model_dir = model_dir if model_dir is not None else get_settings().model_dir
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
_SETTINGS_THRESHOLDS = ("identity_pass", "identity_fail", "background_psnr_pass", "background_psnr_fail", "pose_error_review", "face_found_review")


def thresholds_from_settings(overrides: dict[str, Any] | None = None) -> QCThresholds:
    """QCThresholds: ``overrides`` (a project's) over settings (``RECAST_QC_*``) over the defaults."""
    s = get_settings()
    values = {name: float(getattr(s, f"qc_{name}")) for name in _SETTINGS_THRESHOLDS}
    known = {f.name for f in dataclasses.fields(QCThresholds)}
    for name, value in (overrides or {}).items():
        key = name[3:] if name.startswith("qc_") else name
        if key not in known:
            raise UsageError(f"QC threshold {name!r} is not one of {', '.join(sorted(known))}")
        try:
            values[key] = float(value)
        except (TypeError, ValueError):
            raise UsageError(f"QC threshold {name!r}: {value!r} is not a number") from None
    return QCThresholds(**values)


def thresholds_for_shot(shot_id: str | None, project: str | None = None) -> QCThresholds:
    """The thresholds that apply to a shot (its project's overrides) or to a named project."""
    from recast.db import repository as repo
    from recast.db.session import session_scope

    overrides = None
    if shot_id is not None or project is not None:
        with session_scope() as s:
            proj = repo.get_project(s, repo.get_shot(s, shot_id).project_id) if shot_id is not None else repo.get_project(s, project)
            overrides = dict(proj.qc_thresholds or {})
    return thresholds_from_settings(overrides)


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
@dataclass
class QCChunk:
    """Where one chunk's plate and output frames are (for the few frames decoded again)."""

    start: int
    plate: Path
    output: Path


@dataclass
class QCInputs:
    """Everything the shot-level measure needs about a shot, as arrays and local paths."""

    chunks: list[QCChunk]
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
    source_head: Any = None
    cuts: tuple[int, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)


def frames_at(chunks: list[QCChunk], wanted: dict[int, bool]) -> dict[int, tuple[np.ndarray | None, np.ndarray]]:
    """Decode the frames ``wanted`` (frame -> whether its plate frame is needed too) by seeking
    in the intra-only chunks, chunks in parallel: {frame: (plate or None, output)}."""
    threads = max(1, min(4, os.cpu_count() or 1))
    outs = read_frames_in_chunks([(c.start, c.output) for c in chunks], wanted, threads=threads)
    plates = read_frames_in_chunks([(c.start, c.plate) for c in chunks], [f for f, need in wanted.items() if need], threads=threads)
    return {f: (plates.get(f), frame) for f, frame in outs.items()}


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


def measure(inputs: QCInputs, identity: IdentityModel, thresholds: QCThresholds, *, samples_per_second: float,
            advance: Callable[[int], None] = lambda n: None) -> tuple[dict[str, Any], dict[str, np.ndarray], list[dict[str, Any]], Verdict]:
    """All QC metrics of a shot from its chunks' observations: (metrics, per-frame arrays,
    reasons, verdict). Only the frames embedded for identity are decoded here."""
    total, (h, w) = inputs.total, inputs.size
    plate_lms = np.asarray(inputs.plate_landmarks, np.float64)[:, :QC_POINTS]
    obs = inputs.observations
    covered = sum(len(o) for o in obs)
    if covered != total:
        raise ValueError(f"QC observations cover {covered} frames, the shot has {total}")
    out_lms = np.concatenate([o.out_landmarks for o in obs]).astype(np.float64) if obs else np.full_like(plate_lms, np.nan)
    swapped = np.concatenate([o.swapped for o in obs]).astype(bool) if obs else np.zeros(total, bool)
    bg_psnr = np.concatenate([o.background_psnr for o in obs]) if obs else np.full(total, np.nan)
    seam = np.concatenate([o.seam for o in obs]) if obs else np.full(total, np.nan)
    flick_out = np.concatenate([o.flicker_output for o in obs]) if obs else np.full(total, np.nan)
    flick_plate = np.concatenate([o.flicker_plate for o in obs]) if obs else np.full(total, np.nan)
    f_sum_out, f_cnt_out, f_sum_plate, f_cnt_plate = (np.sum([o.flicker_sums for o in obs], axis=0) if obs else np.zeros(4)).tolist()

    judged = swapped & inputs.face_found
    if not judged.any():  # nothing was swapped (an output identical to its plate): judge every face frame
        judged = inputs.face_found.copy()

    pose_plate = head_pose_array(plate_lms, (h, w)).reshape(total, 3)
    pose_out = head_pose_array(out_lms, (h, w)).reshape(total, 3)
    with np.errstate(invalid="ignore"):
        d = np.abs((pose_plate - pose_out + 180.0) % 360.0 - 180.0)
        pose_err = np.where(np.isfinite(d).all(axis=1), d.mean(axis=1), np.nan)
    expr_err = _expression_per_frame(plate_lms, out_lms, judged)
    acc_out, acc_plate = _landmark_acceleration(out_lms), _landmark_acceleration(plate_lms)
    jitter_excess = acc_out - acc_plate
    flicker_pf = (flick_out + 0.25) / (flick_plate + 0.25)

    # identity samples: one a second among the judged frames plus the worst frames by the cheap
    # metrics (not already sampled), so a bad moment is never missed by the identity check
    regular = sample_frames(judged, inputs.rate, samples_per_second)
    bad = badness(plate_lms, out_lms, pose_err, seam, thresholds)
    candidates = judged & np.isfinite(bad) & (np.nan_to_num(bad, nan=0.0) > 0)
    candidates[regular] = False
    worst = _worst(bad, candidates, WORST_FRAMES)
    samples = sample_frames(judged, inputs.rate, samples_per_second, np.asarray(worst, dtype=int))
    # the plate's person is one identity: embedded on a few regular samples and averaged, rather
    # than once per sampled frame (halves the embedding cost, the costliest part of QC)
    plate_frames_for_id = [int(f) for f in sorted(regular)[:: max(1, len(regular) // PLATE_ID_FRAMES)][:PLATE_ID_FRAMES]
                           if np.isfinite(plate_lms[f]).all()]
    head = inputs.mode == Mode.head.value and inputs.source_head is not None
    if head:
        from recast.models.head import hair_colour_transfer
    wanted = {int(f): head or int(f) in plate_frames_for_id for f in samples}
    for f in plate_frames_for_id:
        wanted[f] = True
    decoded = frames_at(inputs.chunks, wanted)

    src_embedding = identity.embed(inputs.source_rgb, inputs.source_landmarks, inputs.source_box)
    d_src = np.full(total, np.nan)
    d_plate = np.full(total, np.nan)
    cos_src = np.full(total, np.nan)
    cos_plate = np.full(total, np.nan)
    hair = np.full(total, np.nan)
    out_embs: dict[int, np.ndarray] = {}
    plate_embs: list[np.ndarray] = []
    sample_set = set(int(f) for f in samples)
    for f in sorted(decoded):
        plate_frame, out_frame = decoded[f]
        if f in plate_frames_for_id and plate_frame is not None:
            plate_embs.append(identity.embed(plate_frame, plate_lms[f], _box(plate_lms[f], plate_frame.shape)))
        if f not in sample_set or np.isnan(out_lms[f]).any():
            continue
        out_embs[f] = identity.embed(out_frame, out_lms[f], _box(out_lms[f], out_frame.shape))
        if head and plate_frame is not None and np.isfinite(plate_lms[f]).all():
            verdict = hair_colour_transfer(out_frame, out_lms[f], inputs.source_head, plate_frame, plate_lms[f])
            hair[f] = np.nan if verdict is None else float(verdict)
    advance(total)

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
    both = judged & np.isfinite(acc_out) & np.isfinite(acc_plate)
    # jitter as shake, not motion: mean landmark acceleration (second difference) of the output
    # over the plate's; a head that jumps for one frame scores high, a head that moves smoothly
    # with the plate does not (the first difference of metrics.landmark_jitter averages a
    # one-frame jump away among the plate's own motion: 1.17 for a 20 px jump on the test plate)
    jr = float((acc_out[both].mean() + _JITTER_FLOOR) / (acc_plate[both].mean() + _JITTER_FLOOR)) if both.sum() >= 2 else None
    pe = pose_error([tuple(p) for p in pose_plate[judged]], [tuple(p) for p in pose_out[judged]]) if judged.any() else None
    from recast.models.metrics import expression_error

    ee = expression_error(plate_lms[judged], out_lms[judged]) if judged.any() else None
    n_meas = int(measured[samples].sum()) if samples.size else 0
    hair_known = hair[samples][~np.isnan(hair[samples])] if samples.size else np.zeros(0)
    metrics: dict[str, Any] = {
        "frames": int(total),
        "swapped_frames": int(swapped.sum()),
        "face_found_ratio": float(inputs.face_found.mean()) if total else 0.0,
        "output_face_found_ratio": float(np.isfinite(out_lms[judged]).all(axis=(1, 2)).mean()) if judged.any() else 0.0,
        "identity_samples": int(samples.size),
        # a sampled frame whose output face could not be embedded counts as not transferred:
        # QC must not pass a shot because the face was unreadable
        "identity_transfer_rate": float(transferred[samples].mean()) if samples.size else None,
        "identity_distance_source": _nanmean(d_src[samples]) if samples.size else None,
        "identity_distance_plate": _nanmean(d_plate[samples]) if samples.size else None,
        "identity_similarity_source": _nanmean(cos_src[samples]) if samples.size else None,
        "identity_similarity_plate": _nanmean(cos_plate[samples]) if samples.size else None,
        "identity_measured_samples": n_meas,
        "hair_transfer_rate": float(hair_known.mean()) if hair_known.size else None,
        "pose_error_deg": None if pe is None else float(pe),
        "expression_error": None if ee is None else float(ee),
        "jitter_ratio": None if jr is None else float(jr),
        "flicker_ratio": float((f_sum_out / f_cnt_out + 0.25) / (f_sum_plate / f_cnt_plate + 0.25)) if f_cnt_out and f_cnt_plate else None,
        "seam_score": _nanmean(seam),
        "background_psnr_db": _nanmean(bg_psnr),
        "background_psnr_min_db": float(np.nanmin(bg_psnr)) if np.isfinite(bg_psnr).any() else None,
        "scene_cuts": len(inputs.cuts),
    }
    frames_by_metric = {
        "identity_transfer_rate": [int(f) for f in samples if not transferred[f]],
        "background_psnr_db": _order(bg_psnr, bg_psnr < thresholds.background_psnr_pass, ascending=True),
        "pose_error_deg": _order(pose_err, pose_err > thresholds.pose_error_review),
        "expression_error": _order(expr_err, expr_err > thresholds.expression_review),
        "jitter_ratio": _order(jitter_excess, jitter_excess > 0.02),
        "flicker_ratio": _order(flicker_pf, flicker_pf > thresholds.flicker_ratio_review),
        "seam_score": _order(seam, seam > thresholds.seam_review),
        "face_found_ratio": [int(f) for f in np.flatnonzero(~inputs.face_found)],
    }
    verdict, reasons = explain_verdict(metrics, thresholds, frames_by_metric)
    per_frame = {
        "swapped": swapped, "face_found": inputs.face_found, "d_source": d_src, "d_plate": d_plate, "similarity_source": cos_src, "similarity_plate": cos_plate, "transferred": transferred,
        "sampled": samples, "pose_plate": pose_plate, "pose_output": pose_out, "pose_error": pose_err, "expression_error": expr_err,
        "jitter_excess": jitter_excess, "flicker_output": flick_out, "flicker_plate": flick_plate, "flicker_ratio": flicker_pf,
        "seam": seam, "background_psnr": bg_psnr, "hair": hair, "badness": bad,
        "identity_match_distance": np.asarray([t]),
    }
    return metrics, per_frame, reasons, verdict


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


def changed_region(person: np.ndarray, swap_mask: np.ndarray) -> np.ndarray:
    """What background preservation excludes: the plate's person and every pixel the swap touched."""
    return person | swap_mask


# --- the qc stage of swap_shot ---------------------------------------------------------------
def score_shot(*, run_id: str | None, shot_id: str | None, ingest: IngestResult, segments: list[SegmentResult], track: TrackResult,
               swaps: list[SwapChunkResult], source: SourceFaceResult, mode: str) -> QCReport:
    """Compute the shot's QC metrics on the lossless swapped chunks and decide a verdict."""
    settings = get_settings()
    thresholds = thresholds_for_shot(shot_id)
    identity = identity_model()
    models = (identity.model,) + tuple(FaceAnalyzer.MODELS)
    params = {"samples_per_second": settings.qc_identity_samples_per_second, "background_dilate_px": BACKGROUND_DILATE_PX,
              "worst_frames": WORST_FRAMES, "seam_every": SEAM_EVERY, "thresholds": dataclasses.asdict(thresholds), "mode": mode,
              "flicker": "temporal_noise", "qc_version": QC_VERSION, "observe_version": OBSERVE_VERSION}

    def compute() -> QCReport:
        total = ingest.plate_info.frame_count
        progress = progress_for(run_id, "qc", total)
        tr = load_npz(fetch(track.tracks))
        src = load_analysis(source.analysis)
        inputs = QCInputs(
            chunks=[QCChunk(start=c.frames.start, plate=fetch(c.video), output=fetch(sw.video)) for c, sw in zip(ingest.chunks, swaps)],
            observations=[ChunkObservations.load(fetch(sw.observations)) for sw in swaps],
            total=total, rate=_rate(ingest), size=(ingest.plate_info.height, ingest.plate_info.width),
            plate_landmarks=tr["raw_landmarks"], face_found=tr["chosen"] >= 0,
            source_rgb=read_image(fetch(source.source), role="source"), source_landmarks=src["landmarks"],
            source_box=tuple(int(v) for v in src["box"]), mode=mode,
            source_head=load_source_head(source.analysis) if mode == Mode.head.value else None, cuts=tuple(track.cuts),
        )
        return _finish(inputs, identity, thresholds, models, parents=[sw.video for sw in swaps] + [sw.observations for sw in swaps] + [source.source, track.tracks],
                       advance=progress.advance, samples_per_second=settings.qc_identity_samples_per_second)

    return run_stage(
        "qc",
        run_id=run_id,
        shot_id=shot_id,
        inputs=[c.video for c in ingest.chunks] + [track.tracks] + [s.video for s in swaps] + [s.observations for s in swaps] + [source.source, source.analysis],
        params=params,
        models=models,
        result_type=QCReport,
        compute=compute,
    )


def _finish(inputs: QCInputs, identity: IdentityModel, thresholds: QCThresholds, models: tuple[ModelRef, ...], *, parents: list[AssetRef],
            advance: Callable[[int], None], samples_per_second: float) -> QCReport:
    metrics, per_frame, reasons, verdict = measure(inputs, identity, thresholds, samples_per_second=samples_per_second, advance=advance)
    import json

    with scratch_dir("qc-") as tmp:
        path = save_npz(tmp / "qc.npz", reasons_json=np.asarray(json.dumps(reasons)), **per_frame)
        per_frame_ref = store_asset(path, media_type=ANALYSIS_MEDIA_TYPE, role="qc_per_frame", suffix=".npz", parents=parents)
    texts = tuple(r["text"] for r in reasons)
    emit_progress(f"qc: verdict {verdict.value}" + (f" ({'; '.join(texts)})" if texts else ""))
    return QCReport(metrics=metrics, verdict=verdict, reasons=texts, per_frame=per_frame_ref, models=models)


def load_reasons(report: QCReport) -> list[dict[str, Any]]:
    """The structured reasons (metric, value, threshold, outcome, frames, text) of a QC report."""
    import json

    if report.per_frame is None:
        return [{"metric": None, "value": None, "threshold": None, "outcome": "review", "frames": [], "text": t} for t in report.reasons]
    return json.loads(str(load_npz(fetch(report.per_frame))["reasons_json"]))


# --- any plate/output pair -------------------------------------------------------------------
@dataclass(frozen=True)
class FilesQC:
    """What :func:`score_files` measured, with the records the report stage needs."""

    qc: QCReport
    plate: IngestResult
    output: IngestResult


def score_files(*, plate: str, output: str, source: str, mode: str = "face", face: str = "largest", project: str | None = None,
                chunk_size: int | None = None) -> FilesQC:
    """QC of any swap: ``output`` (made by recast or another tool) against its ``plate`` and the
    ``source`` photo, with the same metrics and thresholds as the ``qc`` stage.

    Ingest, segment and track run on both files (cached like any stage); the output's face in
    each frame is the one nearest the plate's chosen face. See the module docstring for the
    background and seam regions used here.
    """
    from recast.tasks.ingest import ingest as ingest_stage
    from recast.tasks.segment import analyze_source, segment_chunk
    from recast.tasks.track import track_person

    if mode not in (Mode.face.value, Mode.head.value):
        raise UsageError(f"--mode '{mode}': choose from face, head")
    settings = get_settings()
    size = chunk_size or settings.chunk_size
    ing_p = ingest_stage(run_id=None, shot_id=None, plate=plate, sources=[source], chunk_size=size)
    ing_o = ingest_stage(run_id=None, shot_id=None, plate=output, sources=[source], chunk_size=size)
    pi, oi = ing_p.plate_info, ing_o.plate_info
    if (pi.width, pi.height) != (oi.width, oi.height):
        raise InputError(f"output '{output}' is {oi.width}x{oi.height}, its plate '{plate}' {pi.width}x{pi.height}: QC compares them frame by frame")
    if pi.frame_count != oi.frame_count:
        raise InputError(f"output '{output}' has {oi.frame_count} frames, its plate '{plate}' {pi.frame_count}")
    total = pi.frame_count
    seg_p = [segment_chunk(run_id=None, shot_id=None, chunk=c, chunk_index=i, face_selector=face, total_frames=total) for i, c in enumerate(ing_p.chunks)]
    seg_o = [segment_chunk(run_id=None, shot_id=None, chunk=c, chunk_index=i, face_selector=face, total_frames=total) for i, c in enumerate(ing_o.chunks)]
    track = track_person(run_id=None, shot_id=None, ingest=ing_p, segments=seg_p, face_selector=face)
    src = analyze_source(run_id=None, shot_id=None, source=ing_p.sources[0], name=Path(source).name, mode=mode, source_face=None)
    thresholds = thresholds_for_shot(None, project)
    identity = identity_model()
    models = (identity.model,) + tuple(FaceAnalyzer.MODELS)
    params = {"samples_per_second": settings.qc_identity_samples_per_second, "background_dilate_px": BACKGROUND_DILATE_PX,
              "worst_frames": WORST_FRAMES, "seam_every": SEAM_EVERY, "thresholds": dataclasses.asdict(thresholds), "mode": mode,
              "flicker": "temporal_noise", "qc_version": QC_VERSION, "observe_version": OBSERVE_VERSION, "what": "files", "change_threshold": CHANGE_THRESHOLD}

    def compute() -> QCReport:
        tr = load_npz(fetch(track.tracks))
        plate_lms, boxes, chosen = tr["raw_landmarks"], tr["boxes"], tr["chosen"]
        chunks, observations = [], []
        for pc, oc, sp, so in zip(ing_p.chunks, ing_o.chunks, seg_p, seg_o):
            ap, ao = load_analysis(sp.analysis), load_analysis(so.analysis)
            start, n = pc.frames.start, pc.frames.count
            out_lms = np.full((n, 478, 3), np.nan, np.float32)
            for i in range(n):
                f = start + i
                if chosen[f] < 0:
                    continue
                k = _nearest_index(ao["faces_boxes"][i, : ao["face_count"][i]], boxes[f])
                if k is not None:
                    out_lms[i] = ao["faces_landmarks"][i, k]
            persons = _unpack(ap, "person_mask_bits") | _unpack(ao, "person_mask_bits")
            plate_path, out_path = fetch(pc.video), fetch(oc.video)
            change = _change_masks(plate_path, out_path, boxes[start:start + n], chosen[start:start + n] >= 0)
            observations.append(observe_chunk(start=start, plate_frames=read_frames(plate_path), out_frames=read_frames(out_path), exclude=persons,
                                              change=change, plate_boxes=boxes[start:start + n], face_found=chosen[start:start + n] >= 0,
                                              plate_landmarks=plate_lms[start:start + n], out_landmarks=out_lms))
            chunks.append(QCChunk(start=start, plate=plate_path, output=out_path))
        s = load_analysis(src.analysis)
        inputs = QCInputs(
            chunks=chunks, observations=observations, total=total, rate=_rate(ing_p), size=(pi.height, pi.width), plate_landmarks=plate_lms,
            face_found=chosen >= 0, source_rgb=read_image(fetch(src.source), role="source"), source_landmarks=s["landmarks"],
            source_box=tuple(int(v) for v in s["box"]), mode=mode,
            source_head=load_source_head(src.analysis) if mode == Mode.head.value else None, cuts=tuple(track.cuts),
        )
        progress = progress_for(None, "qc", total)
        return _finish(inputs, identity, thresholds, models, parents=[ing_o.plate, ing_p.plate, src.source, track.tracks],
                       advance=progress.advance, samples_per_second=settings.qc_identity_samples_per_second)

    qc = run_stage(
        "qc",
        run_id=None,
        shot_id=None,
        inputs=[c.video for c in ing_p.chunks] + [c.video for c in ing_o.chunks] + [s.analysis for s in seg_p + seg_o]
               + [track.tracks, src.source, src.analysis],
        params=params,
        models=models,
        result_type=QCReport,
        compute=compute,
    )
    return FilesQC(qc=qc, plate=ing_p, output=ing_o)


def _change_masks(plate: Path, output: Path, boxes: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Pixels that differ visibly between plate and output near the chosen face, per frame
    (the blend region of a swap made by any tool), filled and cleaned of specks."""
    out = []
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))
    for i, (p, o) in enumerate(zip(read_frames(plate), read_frames(output))):
        m = np.zeros(p.shape[:2], bool)
        if present[i]:
            x0, y0, x1, y1 = (int(v) for v in boxes[i])
            gx, gy = (x1 - x0) // 2, (y1 - y0) // 2
            x0, y0, x1, y1 = max(0, x0 - gx), max(0, y0 - gy), min(p.shape[1], x1 + gx), min(p.shape[0], y1 + gy)
            d = cv2.absdiff(cv2.blur(p[y0:y1, x0:x1], (3, 3)), cv2.blur(o[y0:y1, x0:x1], (3, 3))).max(axis=2)
            c = (d > CHANGE_THRESHOLD).astype(np.uint8)
            c = cv2.morphologyEx(cv2.morphologyEx(c, cv2.MORPH_OPEN, kernel), cv2.MORPH_CLOSE, kernel, iterations=2)
            n, labels, stats, _ = cv2.connectedComponentsWithStats(c)
            if n > 1:
                keep = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))  # the swapped face, not stray compression noise
                c = (labels == keep).astype(np.uint8)
                contours, _ = cv2.findContours(c, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
                cv2.drawContours(c, contours, -1, 1, thickness=cv2.FILLED)  # holes: unchanged skin inside the face
                m[y0:y1, x0:x1] = c > 0
        out.append(m)
    return np.stack(out) if out else np.zeros((0, 1, 1), bool)


# --- helpers ---------------------------------------------------------------------------------
def _rate(ingest: IngestResult) -> float:
    return float(ingest.plate_info.rate.fraction) if ingest.plate_info.rate else 25.0


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


#: floor under both accelerations (inter-ocular units), below MediaPipe's noise on a still face
_JITTER_FLOOR = 1e-3


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


def _unpack(arrays: dict[str, np.ndarray], key: str) -> np.ndarray:
    return unpack_masks(arrays[key], arrays["mask_shape"])


def _box(landmarks: np.ndarray, shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    x0, y0 = np.floor(landmarks[:, :2].min(axis=0)).astype(int)
    x1, y1 = np.ceil(landmarks[:, :2].max(axis=0)).astype(int)
    return max(0, x0), max(0, y0), min(shape[1], x1), min(shape[0], y1)


def _nan(v: float | None) -> float:
    return np.nan if v is None else float(v)


def _nanmean(values: np.ndarray) -> float | None:
    v = values[~np.isnan(values)]
    return float(v.mean()) if v.size else None
