"""QC of a swapped shot: identity, hair, pose, expression, motion, temporal stability, seam and
background metrics, the defect measures of :mod:`recast.models.qc_defects` (foreign pieces,
leftover plate head, fill artefacts, inner edges, colour blotches, hair colour, sharpness), the
wrong-person check across scene cuts, a verdict with reasons (the rule table of
:mod:`recast.models.qc_rules`), and the per-frame values reports are drawn from.

Pure: arrays and callables in, numbers out. Where the frames, thresholds and model files come
from is the ``qc`` stage's business (:mod:`recast.tasks.qc`).

Cheap metrics (pose, expression, landmark jitter, flicker, background, seam) are computed on
every frame, from the chunks' :class:`~recast.models.qc_frames.ChunkObservations`; costly ones
(identity embeddings, hair colour, the defect measures) on sampled frames: ``samples_per_second``
per second plus the worst frames by the cheap metrics (pose error, landmark jump, seam) and at
least one frame of every segment between scene cuts, so a bad moment is never missed by the
identity check. A defect measure's shot value is its worst sampled frame (largest; smallest for
sharpness), with the frames beyond its bound named in its reason and the regions of its
:data:`REGION_FRAMES` worst frames kept for the report. Only the sampled frames are decoded,
through the ``decode`` callable of :class:`QCInputs`.

Wrong person: the plate's chosen person is embedded on a few frames of the first segment that
has them; in every later segment the plate face of up to two sampled frames is embedded and a
segment whose median distance to that person is beyond the identity model's same-person bound
is a wrong-person segment (the track re-chose someone else after a cut: the swap replaced a
bystander). ``wrong_person`` is their count (any fails), its frames listed.

Motion: ``motion_ratio`` is the output's landmark acceleration over the plate's after a light
temporal smoothing of both (so that detector noise, which both have, does not hide real motion):
< 1 where the plate's motion was smoothed away. ``jitter_ratio`` (raw acceleration) stays the
measure of shake (> its bound).

Identity model: insightface ArcFace (``buffalo_l/w600k_r50.onnx``) when its file is in the model
directory (resolved and checksum-verified through :mod:`recast.models.registry`), dlib's ResNet
descriptor otherwise (:func:`identity_model`).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol

import cv2
import numpy as np

from recast.contracts import Mode, ModelRef, Verdict
from recast.errors import ModelMissingError, UsageError
# the hair metric reads hair the way the head model cuts it: its face frame, oval, colour space and skin model
from recast.models.identity import IDENTITY_MATCH_THRESHOLD, DlibFaceEmbedder, cosine_similarity, face_distance
from recast.models.metrics import (
    QCThresholds,
    expression_error,
    expression_features,
    head_pose_array,
    inter_ocular_distance,
    pose_error,
)
from recast.models import qc_defects as qd
from recast.models.qc_defects import CHANGE_THRESHOLD as CHANGE_THRESHOLD  # re-exported: the change map's bound
from recast.models.qc_defects import band_colour
from recast.models.qc_frames import QC_POINTS, ChunkObservations
from recast.models.qc_rules import REASON_FRAMES as REASON_FRAMES  # re-exported: at most this many frames are named per reason
from recast.models.qc_rules import DEFECT_RULES, judge, rule, rule_frames, vetting_records

log = logging.getLogger("recast")

#: part of the qc stage's work key: bump when a metric's definition changes, so cached QC
#: results of the old definition are not reused
QC_VERSION = "8"
WORST_FRAMES = 3
#: per flagged defect measure, the region masks of this many worst frames are kept for the report
REGION_FRAMES = 2
#: the window (seconds) of the per-frame motion ratio
MOTION_WINDOW_S = 1.0
#: frames of the plate whose person embeddings are averaged into the plate identity (two: a
#: dlib embedding costs ~60 ms, and the plate person's descriptors vary little within a segment)
PLATE_ID_FRAMES = 2
#: ArcFace: same person when the cosine similarity of two embeddings is above 0.35, i.e. the
#: distance 1 - cos below 0.65 (insightface R50 on WebFace600K: same-person pairs typically score
#: 0.4-0.8, different people below 0.2)
ARCFACE_MATCH_DISTANCE = 0.65
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
def explain_verdict(metrics: dict[str, Any], thresholds: QCThresholds, frames_by_metric: dict[str, list[int]],
                    extra: tuple[dict[str, Any], ...] | list[dict[str, Any]] = ()) -> tuple[Verdict, list[dict[str, Any]]]:
    """The verdict with each reason as a record (metric, value, threshold, outcome, the frames
    where it shows, worst first, and the one-line text with the frames appended): the rule
    table's :func:`recast.models.qc_rules.judge`."""
    return judge(metrics, thresholds, frames_by_metric, extra=extra)


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
    #: the source photo's vetting findings (recast.contracts.SourceFinding): a warning caps the verdict at review
    vetting: tuple[Any, ...] = ()
    #: ``plate_person(frames)``: {frame: (H, W) bool person mask of the plate} where known (segment's selfie segmentation)
    plate_person: Callable[[list[int]], dict[int, np.ndarray]] | None = None
    #: (start, end) segments between cuts that the track left without the chosen person (someone
    #: else, or nobody, there: passed through untouched); their frames do not count as faces lost
    absent_segments: tuple[tuple[int, int], ...] = ()
    #: {frame: the chosen plate person's embedding} already computed by the same identity model
    #: (the segment stage's, where a segment can start): used instead of embedding plate frames again
    plate_embeddings: Mapping[int, np.ndarray] = field(default_factory=dict)
    #: the source face's embedding by the same identity model, when already computed
    source_embedding: np.ndarray | None = None


@dataclass(frozen=True, eq=False)
class _Observed:
    """The chunks' observations as shot-long arrays."""

    out_lms: np.ndarray
    swapped: np.ndarray
    bg_psnr: np.ndarray
    seam: np.ndarray
    flick_out: np.ndarray
    flick_plate: np.ndarray
    guessed: np.ndarray  # (F,) guessed fill, % of the plate face box (NaN unknown)
    flicker_sums: tuple[float, float, float, float]  # output sum, its count, plate sum, its count


def _gather(obs: list[ChunkObservations], total: int, plate_lms: np.ndarray) -> _Observed:
    covered = sum(len(o) for o in obs)
    if covered != total:
        raise ValueError(f"QC observations cover {covered} frames, the shot has {total}")
    if not obs:
        nan = np.full(total, np.nan)
        return _Observed(np.full_like(plate_lms, np.nan), np.zeros(total, bool), nan, nan.copy(), nan.copy(), nan.copy(), nan.copy(),
                         (0.0, 0.0, 0.0, 0.0))
    sums = np.sum([o.flicker_sums for o in obs], axis=0).tolist()
    return _Observed(
        out_lms=np.concatenate([o.out_landmarks for o in obs]).astype(np.float64),
        swapped=np.concatenate([o.swapped for o in obs]).astype(bool),
        bg_psnr=np.concatenate([o.background_psnr for o in obs]),
        seam=np.concatenate([o.seam for o in obs]),
        flick_out=np.concatenate([o.flicker_output for o in obs]),
        flick_plate=np.concatenate([o.flicker_plate for o in obs]),
        guessed=np.concatenate([o.guessed_fill for o in obs]),
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
    """Identity, hair, wrong-person and defect values on the sampled frames."""

    samples: np.ndarray
    d_src: np.ndarray
    d_plate: np.ndarray
    cos_src: np.ndarray
    cos_plate: np.ndarray
    hair: np.ndarray
    transferred: np.ndarray
    measured: np.ndarray
    wrong_person: np.ndarray  # (F,) 1.0 frames of a segment whose person is not the chosen one, 0.0 checked, NaN unknown
    wrong_segments: tuple[tuple[int, int], ...]
    segments_checked: int
    defects: np.ndarray  # (F, D)
    defect_names: tuple[str, ...]
    regions: dict[str, list[tuple[float, int, np.ndarray]]]  # measure -> [(badness, frame, mask)], worst first


def _lm_or_none(lm: np.ndarray) -> np.ndarray | None:
    lm = np.asarray(lm)
    return lm if np.isfinite(lm[:, :2]).all() else None


def _expected_person(inputs: QCInputs) -> np.ndarray:
    """(F,) bool: the frames outside the segments the track left without the chosen person."""
    expected = np.ones(inputs.total, bool)
    for a, b in inputs.absent_segments:
        expected[a:b] = False
    return expected


@dataclass
class _PlateSamples:
    """Where the plate's person is embedded: ``first`` holds embeddings of the chosen person in
    the first segment (averaged into the plate's identity); ``per_segment`` names up to two
    frames of each later segment whose face is compared with it, and ``later`` holds their
    embeddings once known (the segment stage's first, then those of decoded frames)."""

    first: list[np.ndarray]
    later: dict[int, np.ndarray]
    per_segment: dict[tuple[int, int], list[int]]

    @property
    def later_frames(self) -> set[int]:
        return {f for fs in self.per_segment.values() for f in fs}


def _plan_plate_samples(known_embeddings: Mapping[int, np.ndarray], segments: list[tuple[int, int]], samples: np.ndarray,
                        plate_lms: np.ndarray) -> _PlateSamples:
    """The plate frames to embed for the person's identity and the wrong-person check."""
    first_seg = segments[0]
    known = {int(f): np.asarray(e, np.float64) for f, e in known_embeddings.items()}
    first = [e for f, e in sorted(known.items()) if first_seg[0] <= f < first_seg[1]]
    later: dict[int, np.ndarray] = {}
    per_segment: dict[tuple[int, int], list[int]] = {}
    for seg in segments[1:]:  # the embeddings at hand first: a segment's start was embedded by the segment stage
        for f in [f for f in sorted(known) if seg[0] <= f < seg[1]][:2]:
            per_segment.setdefault(seg, []).append(f)
            later[f] = known[f]
    for f in sorted(int(x) for x in samples):
        seg = next(sg for sg in segments if sg[0] <= f < sg[1])
        if seg != first_seg and np.isfinite(plate_lms[f]).all() and len(per_segment.setdefault(seg, [])) < 2:
            per_segment[seg].append(f)
    return _PlateSamples(first=first, later=later, per_segment=per_segment)


def _keep_defects(found: qd.FrameDefects, f: int, names: tuple[str, ...], defects: np.ndarray,
                  regions: dict[str, list[tuple[float, int, np.ndarray]]], worse_lower: set[str]) -> None:
    """Frame ``f``'s defect values into ``defects``; each region found kept if it is among its
    measure's :data:`REGION_FRAMES` worst so far."""
    for j, name in enumerate(names):
        v = found.values.get(name)
        v = np.nan if v is None else float(v)
        defects[f, j] = v
        mask = found.regions.get(name)
        if np.isfinite(v) and mask is not None and np.asarray(mask).any():
            kept = regions[name]
            kept.append((-v if name in worse_lower else v, f, np.asarray(mask, bool)))
            kept.sort(key=lambda t: (-t[0], t[1]))
            del kept[REGION_FRAMES:]


def _wrong_person(plate: _PlateSamples, plate_person: np.ndarray | None, first_seg: tuple[int, int], identity: IdentityModel,
                  total: int) -> tuple[np.ndarray, tuple[tuple[int, int], ...], int]:
    """Per frame 1.0 in a later segment whose plate face is not the first segment's chosen
    person, 0.0 where it is (and in the first segment), NaN unknown; the wrong segments; how many
    segments were checked."""
    wrong = np.full(total, np.nan)
    wrong_segments: list[tuple[int, int]] = []
    checked = 0
    if plate_person is not None:
        wrong[first_seg[0]:first_seg[1]] = 0.0
        checked = 1
        for seg, fs in plate.per_segment.items():
            ds = [identity.distance(plate.later[f], plate_person) for f in fs if f in plate.later]
            if not ds:
                continue
            checked += 1
            is_wrong = float(np.median(ds)) > identity.match_distance
            wrong[seg[0]:seg[1]] = 1.0 if is_wrong else 0.0
            if is_wrong:
                wrong_segments.append(seg)
    return wrong, tuple(sorted(wrong_segments)), checked


def _measure_identity(inputs: QCInputs, identity: IdentityModel, samples: np.ndarray, plate_frames: list[int],
                      plate_lms: np.ndarray, out_lms: np.ndarray, segments: list[tuple[int, int]] | None = None) -> _Identity:
    """On the ``samples``: embed the output face, and the plate's person on ``plate_frames``
    (averaged into one identity, the chosen person of the first segment); distances to the source
    and to the plate's person; in head mode the hair metric; the defect measures of
    :mod:`recast.models.qc_defects`; and, in every later segment (between scene cuts), the plate
    face's identity against the chosen person's (``wrong_person``). Decodes only those frames."""
    total = inputs.total
    head = inputs.mode == Mode.head.value and inputs.source_head is not None
    segments = segments or [(0, total)]
    wanted = {int(f): True for f in samples}  # the defect measures compare plate and output on every sample
    for f in plate_frames:
        wanted[f] = True
    decoded = inputs.decode(wanted)
    persons = inputs.plate_person(sorted(int(f) for f in samples)) if inputs.plate_person is not None else {}

    src_embedding = (np.asarray(inputs.source_embedding, np.float64) if inputs.source_embedding is not None
                     else identity.embed(inputs.source_rgb, inputs.source_landmarks, inputs.source_box))
    d_src, d_plate, cos_src, cos_plate, hair = (np.full(total, np.nan) for _ in range(5))
    names: tuple[str, ...] = qd.DEFECT_MEASURES
    defects = np.full((total, len(names)), np.nan)
    regions: dict[str, list[tuple[float, int, np.ndarray]]] = {n: [] for n in names}
    look = qd.SourceLook.from_source(inputs.source_rgb, inputs.source_landmarks, inputs.source_head)
    worse_lower = {r.metric for r in DEFECT_RULES if r.worse == "lower"}
    src_hair_colour = source_hair_colour(inputs.source_head) if head else None

    out_embs: dict[int, np.ndarray] = {}
    plate = _plan_plate_samples(inputs.plate_embeddings, segments, samples, plate_lms)
    check_plate = plate.later_frames
    sample_set = set(int(f) for f in samples)
    for f in sorted(decoded):
        plate_frame, out_frame = decoded[f]
        if f in plate_frames and plate_frame is not None:
            plate.first.append(identity.embed(plate_frame, plate_lms[f], _box(plate_lms[f], plate_frame.shape)))
        if f in check_plate and f not in plate.later and plate_frame is not None:
            plate.later[f] = identity.embed(plate_frame, plate_lms[f], _box(plate_lms[f], plate_frame.shape))
        if f not in sample_set:
            continue
        if plate_frame is not None:
            found = qd.measure_defects(plate_frame, out_frame, _lm_or_none(plate_lms[f]), _lm_or_none(out_lms[f]), look=look,
                                       mode=inputs.mode, plate_person=persons.get(f))
            _keep_defects(found, f, names, defects, regions, worse_lower)
        if np.isnan(out_lms[f]).any():
            continue
        out_embs[f] = identity.embed(out_frame, out_lms[f], _box(out_lms[f], out_frame.shape))
        if head and plate_frame is not None and np.isfinite(plate_lms[f]).all():
            verdict = hair_colour_transfer(out_frame, out_lms[f], inputs.source_head, plate_frame, plate_lms[f],
                                           source_colour=src_hair_colour)
            hair[f] = np.nan if verdict is None else float(verdict)

    plate_person = np.mean(plate.first, axis=0) if plate.first else None
    for f, out_emb in out_embs.items():
        d_src[f] = identity.distance(out_emb, src_embedding)
        cos_src[f] = cosine_similarity(out_emb, src_embedding)
        if plate_person is not None:
            d_plate[f] = identity.distance(out_emb, plate_person)
            cos_plate[f] = cosine_similarity(out_emb, plate_person)
    t = identity.match_distance
    measured = np.isfinite(d_src) & np.isfinite(d_plate)
    transferred = measured & (d_src < t) & (d_plate > t)
    wrong, wrong_segments, checked = _wrong_person(plate, plate_person, segments[0], identity, total)
    return _Identity(samples=samples, d_src=d_src, d_plate=d_plate, cos_src=cos_src, cos_plate=cos_plate, hair=hair,
                     transferred=transferred, measured=measured, wrong_person=wrong, wrong_segments=wrong_segments,
                     segments_checked=checked, defects=defects, defect_names=names, regions=regions)


def segment_bounds(n_frames: int, cuts: tuple[int, ...] | list[int] = ()) -> list[tuple[int, int]]:
    """Shot segments ``[start, end)`` of ``n_frames`` frames split at ``cuts`` (as
    :func:`recast.models.tracking.segment_bounds`, without importing the tracker's scipy)."""
    edges = sorted({0, n_frames, *(int(c) for c in cuts if 0 < int(c) < n_frames)})
    return list(zip(edges[:-1], edges[1:]))


def _sample_every_segment(samples: np.ndarray, judged: np.ndarray, segments: list[tuple[int, int]]) -> np.ndarray:
    """``samples`` plus the middle judged frame of every segment that has judged frames but no sample."""
    extra = []
    for a, b in segments:
        if not ((samples >= a) & (samples < b)).any():
            idx = np.flatnonzero(judged[a:b]) + a
            if idx.size:
                extra.append(int(idx[idx.size // 2]))
    return np.unique(np.concatenate([samples, np.asarray(extra, int)])) if extra else samples


def measure(inputs: QCInputs, identity: IdentityModel, thresholds: QCThresholds, *, samples_per_second: float,
            advance: Callable[[int], None] = lambda n: None) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]], Verdict]:
    """All QC metrics of a shot from its chunks' observations: (metrics, per-frame values,
    reasons, verdict). The per-frame values are named as the fields of
    :class:`recast.media.artifacts.QCPerFrame`. Only the frames embedded for identity are decoded.

    The verdict and its reason records come from the rule table (:mod:`recast.models.qc_rules`),
    with one more review record per warning of the source photo's vetting."""
    total, (h, w) = inputs.total, inputs.size
    plate_lms = np.asarray(inputs.plate_landmarks, np.float64)[:, :QC_POINTS]
    o = _gather(inputs.observations, total, plate_lms)
    out_lms = o.out_lms
    segments = segment_bounds(total, inputs.cuts) if total else [(0, 0)]

    judged = o.swapped & inputs.face_found
    if not judged.any():  # nothing was swapped (an output identical to its plate): judge every face frame
        judged = inputs.face_found.copy()

    # every-frame metrics
    pose_plate, pose_out, pose_err = _pose_per_frame(plate_lms, out_lms, (h, w))
    expr_err = _expression_per_frame(plate_lms, out_lms, judged)
    acc_out, acc_plate = _landmark_acceleration(out_lms), _landmark_acceleration(plate_lms)
    jitter_excess = acc_out - acc_plate
    flicker_pf = (o.flick_out + 0.25) / (o.flick_plate + 0.25)
    mot_out, mot_plate = _motion_acceleration(out_lms, segments), _motion_acceleration(plate_lms, segments)
    motion_pf = _windowed_ratio(mot_out, mot_plate, judged, max(3, int(round(inputs.rate * MOTION_WINDOW_S))))

    # identity samples: ``samples_per_second`` (one every two seconds by default) among the judged frames plus the worst frames by the cheap
    # metrics (not already sampled), so a bad moment is never missed by the identity check
    regular = sample_frames(judged, inputs.rate, samples_per_second)
    bad = badness(plate_lms, out_lms, pose_err, o.seam, thresholds)
    candidates = judged & np.isfinite(bad) & (np.nan_to_num(bad, nan=0.0) > 0)
    candidates[regular] = False
    worst = _worst(bad, candidates, WORST_FRAMES)
    samples = sample_frames(judged, inputs.rate, samples_per_second, np.asarray(worst, dtype=int))
    # at least one sample in every segment between scene cuts (the wrong-person check needs it)
    samples = _sample_every_segment(samples, judged, segments)
    # the plate's person is one identity: embedded on a few regular samples and averaged, rather
    # than once per sampled frame (halves the embedding cost, the costliest part of QC); with
    # scene cuts, on the first segment that has the chosen person (later ones are checked against it)
    first = next(((a, b) for a, b in segments if judged[a:b].any()), segments[0])
    pool = [int(f) for f in sorted(regular) if first[0] <= f < first[1]] if len(segments) > 1 else [int(f) for f in sorted(regular)]
    if not pool and len(segments) > 1:
        pool = [int(f) for f in samples if first[0] <= f < first[1]]
    plate_frames = [int(f) for f in pool[:: max(1, len(pool) // PLATE_ID_FRAMES)][:PLATE_ID_FRAMES]
                    if np.isfinite(plate_lms[f]).all()]
    if any(first[0] <= f < first[1] for f in inputs.plate_embeddings):
        plate_frames = []  # the plate person's embeddings of that segment are at hand
    segs_from_first = [sg for sg in segments if sg[0] >= first[0]]
    ident = _measure_identity(inputs, identity, samples, plate_frames, plate_lms, out_lms, segs_from_first)
    advance(total)

    metrics = _shot_metrics(inputs, o, judged, ident, plate_lms, pose_plate, pose_out, acc_out, acc_plate, mot_out, mot_plate)
    sampled_mask = np.zeros(total, bool)
    sampled_mask[samples] = True
    frames_by_metric = {
        "identity_transfer_rate": [int(f) for f in samples if not ident.transferred[f]],
        "background_psnr_db": rule_frames(rule("background_psnr_db"), o.bg_psnr, thresholds),
        "pose_error_deg": rule_frames(rule("pose_error_deg"), pose_err, thresholds),
        "expression_error": rule_frames(rule("expression_error"), expr_err, thresholds),
        "jitter_ratio": rule_frames(rule("jitter_ratio"), jitter_excess, thresholds),
        "motion_ratio": rule_frames(rule("motion_ratio"), motion_pf, thresholds),
        "flicker_ratio": rule_frames(rule("flicker_ratio"), flicker_pf, thresholds),
        "guessed_fill": rule_frames(rule("guessed_fill"), o.guessed, thresholds),
        "seam_score": rule_frames(rule("seam_score"), o.seam, thresholds),
        "face_found_ratio": [int(f) for f in np.flatnonzero(~inputs.face_found & _expected_person(inputs))],
        "wrong_person": _wrong_person_frames(ident, judged),
    }
    for j, name in enumerate(ident.defect_names):
        try:
            r = rule(name)
        except KeyError:
            continue
        frames_by_metric[name] = rule_frames(r, ident.defects[:, j], thresholds, among=sampled_mask)
    verdict, reasons = explain_verdict(metrics, thresholds, frames_by_metric, extra=vetting_records(inputs.vetting))
    region_frames, region_measure, region_masks = _flagged_regions(ident, reasons, frames_by_metric, (h, w))
    per_frame = {
        "swapped": o.swapped, "face_found": inputs.face_found, "sampled": samples, "d_source": ident.d_src, "d_plate": ident.d_plate,
        "similarity_source": ident.cos_src, "similarity_plate": ident.cos_plate, "transferred": ident.transferred,
        "pose_plate": pose_plate, "pose_output": pose_out, "pose_error": pose_err, "expression_error": expr_err,
        "jitter_excess": jitter_excess, "flicker_output": o.flick_out, "flicker_plate": o.flick_plate, "flicker_ratio": flicker_pf,
        "seam": o.seam, "background_psnr": o.bg_psnr, "hair": ident.hair, "badness": bad, "guessed_fill": o.guessed,
        "identity_match_distance": float(identity.match_distance),
        "motion_ratio": motion_pf, "wrong_person": ident.wrong_person, "defects": ident.defects,
        "defect_names": np.asarray(ident.defect_names, dtype=str), "region_frames": region_frames, "region_measure": region_measure,
        "region_masks": region_masks,
    }
    return metrics, per_frame, reasons, verdict


def _wrong_person_frames(ident: _Identity, judged: np.ndarray) -> list[int]:
    """The frames of the wrong-person segments: their sampled frames first, then the others."""
    out: list[int] = []
    for a, b in ident.wrong_segments:
        seg = [int(f) for f in np.flatnonzero(judged[a:b]) + a]
        sampled = [f for f in seg if f in set(int(x) for x in ident.samples)]
        out += sampled + [f for f in seg if f not in sampled]
    return out


def _flagged_regions(ident: _Identity, reasons: list[dict[str, Any]], frames_by_metric: dict[str, list[int]],
                     size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(frames, measures, masks) of the kept regions of every defect measure a reason flagged,
    on frames beyond its bound only (worst first)."""
    flagged = {r["metric"] for r in reasons}
    frames, names, masks = [], [], []
    for name in ident.defect_names:
        if name not in flagged:
            continue
        beyond = set(frames_by_metric.get(name, []))
        for _, f, mask in ident.regions.get(name, []):
            if f in beyond:
                frames.append(f)
                names.append(name)
                masks.append(mask)
    h, w = size
    return (np.asarray(frames, np.int64), np.asarray(names, dtype=str),
            np.stack(masks).astype(bool) if masks else np.zeros((0, h, w), bool))


def _shot_metrics(inputs: QCInputs, o: _Observed, judged: np.ndarray, ident: _Identity, plate_lms: np.ndarray,
                  pose_plate: np.ndarray, pose_out: np.ndarray, acc_out: np.ndarray, acc_plate: np.ndarray,
                  mot_out: np.ndarray | None = None, mot_plate: np.ndarray | None = None) -> dict[str, Any]:
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
        # among the frames where the person is expected: a segment the track left without them
        # (after a cut to someone else) is not a face lost
        "face_found_ratio": float(inputs.face_found[_expected_person(inputs)].mean()) if _expected_person(inputs).any() else 0.0,
        "frames_without_person": int(sum(b - a for a, b in inputs.absent_segments)),
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
        "guessed_fill": _sustained(o.guessed[judged]),
        "scene_cuts": len(inputs.cuts),
        "motion_ratio": _motion_ratio(mot_out, mot_plate, judged) if mot_out is not None and mot_plate is not None else None,
        "wrong_person": len(ident.wrong_segments) if ident.segments_checked else None,
        "wrong_person_frames": int(sum(int(judged[a:b].sum()) for a, b in ident.wrong_segments)),
        "person_segments_checked": int(ident.segments_checked),
        **_defect_metrics(ident),
        "source_warnings": sum(1 for f in inputs.vetting if (f.get("outcome") if isinstance(f, dict) else getattr(f, "outcome", None)) == "warn"),
    }


def _sustained(values: np.ndarray) -> float | None:
    """A value a quarter of the frames reach (their 75th percentile): a moment's value, e.g. a
    head turn that uncovers unseen background for a few frames, does not count; None when no
    frame was measured."""
    v = values[np.isfinite(values)]
    return float(np.percentile(v, 75)) if v.size else None


def _defect_metrics(ident: _Identity) -> dict[str, float | None]:
    """Each defect measure's shot value: its worst sampled frame (the largest value; the smallest
    where lower is worse, as for sharpness); None where no sampled frame could be measured."""
    lower = {r.metric for r in DEFECT_RULES if r.worse == "lower"}
    out: dict[str, float | None] = {}
    samples = ident.samples
    for j, name in enumerate(ident.defect_names):
        v = ident.defects[samples, j] if samples.size else np.zeros(0)
        v = v[np.isfinite(v)]
        out[name] = (float(v.min()) if name in lower else float(v.max())) if v.size else None
        for r in DEFECT_RULES:
            if r.metric == name and r.fail_on:  # the value reached on at least two sampled frames
                srt = np.sort(-v if name in lower else v)
                out[r.fail_on] = (float(-srt[-2]) if name in lower else float(srt[-2])) if v.size >= 2 else None
    return out


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
def source_hair_colour(source_head: Any) -> np.ndarray | None:
    """Mean CIELAB of the source's hair band (on its hair matte; the whole band for a bald
    source), as :func:`hair_colour_transfer` compares it; None when the band is empty. The same
    for every frame of a shot: computed once."""
    src_hair = source_head.hair if source_head.hair.any() else None
    c_src = band_colour(source_head.rgb, source_head.landmarks, src_hair)
    if c_src is None:  # a band of the source with no hair pixel (bald): take the band as it is
        c_src = band_colour(source_head.rgb, source_head.landmarks)
    return c_src


def hair_colour_transfer(output_rgb: np.ndarray, output_landmarks: np.ndarray, source_head: Any,
                         plate_rgb: np.ndarray, plate_landmarks: np.ndarray, *,
                         source_colour: np.ndarray | None = None) -> bool | None:
    """The issue's hair metric for one frame: is the output's hair colour above the brows (a band
    just above the forehead top, outside the face oval) nearer, in mean CIELAB, the source's hair
    (``source_head``, a :class:`recast.models.head.SourceHead`) than the plate's? None when it
    cannot be told: the source's and the plate's hair colours are within ΔE 10 of each other, or
    a band is empty (no face, off the image). ``source_colour``: :func:`source_hair_colour` of
    ``source_head`` when the caller has it already.
    """
    for lm in (output_landmarks, plate_landmarks):
        if lm is None or not np.isfinite(np.asarray(lm, np.float64)[:468, :2]).all():
            return None
    c_src = source_colour if source_colour is not None else source_hair_colour(source_head)
    c_plate = band_colour(np.asarray(plate_rgb), plate_landmarks)
    c_out = band_colour(np.asarray(output_rgb), output_landmarks)
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


def _motion_acceleration(lms: np.ndarray, segments: list[tuple[int, int]]) -> np.ndarray:
    """Per frame: the landmarks' acceleration (as :func:`_landmark_acceleration`) after a light
    temporal smoothing (binomial 1-2-1 twice, inside each segment between scene cuts), so that
    MediaPipe's frame-to-frame noise, which plate and output both have, does not mask how much
    real motion (head turns, mouth) each has. NaN at segment ends and where a face is missing."""
    out = np.full(len(lms), np.nan)
    xy = np.asarray(lms, float)[:, :, :2]
    iod = np.asarray(inter_ocular_distance(lms), dtype=float) if len(lms) else np.zeros(0)
    for a, b in segments:
        if b - a < 7:
            continue
        seg = xy[a:b]
        for _ in range(2):
            seg = np.concatenate([seg[:1], (seg[:-2] + 2 * seg[1:-1] + seg[2:]) / 4.0, seg[-1:]])
        acc = np.linalg.norm(seg[2:] - 2 * seg[1:-1] + seg[:-2], axis=2).mean(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            vals = acc / iod[a + 1:b - 1]
        vals[:2] = np.nan  # the smoothing's edge frames
        vals[-2:] = np.nan
        out[a + 1:b - 1] = vals
    return out


def _motion_ratio(mot_out: np.ndarray, mot_plate: np.ndarray, judged: np.ndarray) -> float | None:
    """The output's mean smoothed landmark acceleration over the plate's (frames where both are
    known): < 1 where the output moves less than the plate (its motion smoothed away), ~1 where
    it follows. Both get the jitter floor, so a still head reads ~1."""
    both = judged & np.isfinite(mot_out) & np.isfinite(mot_plate)
    if both.sum() < 2:
        return None
    return float((mot_out[both].mean() + _JITTER_FLOOR) / (mot_plate[both].mean() + _JITTER_FLOOR))


def _windowed_ratio(num: np.ndarray, den: np.ndarray, judged: np.ndarray, window: int) -> np.ndarray:
    """Per frame, :func:`_motion_ratio` over a centred window of ``window`` frames (NaN where the
    window holds fewer than half its frames)."""
    both = judged & np.isfinite(num) & np.isfinite(den)
    n, d = np.where(both, num, 0.0), np.where(both, den, 0.0)

    def box(v: np.ndarray) -> np.ndarray:  # centred window sums, the window cut at the ends
        c = np.concatenate([[0.0], np.cumsum(v)])
        i = np.arange(len(v))
        lo, hi = np.clip(i - window // 2, 0, len(v)), np.clip(i - window // 2 + window, 0, len(v))
        return c[hi] - c[lo]

    cnt, sn, sd = box(both.astype(float)), box(n), box(d)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (sn / cnt + _JITTER_FLOOR) / (sd / cnt + _JITTER_FLOOR)
    return np.where((cnt >= window / 2) & judged, r, np.nan)


def _worst(values: np.ndarray, among: np.ndarray, k: int) -> list[int]:
    v = np.where(among & np.isfinite(values), values, -np.inf)
    order = np.argsort(v)[::-1][:k]
    return [int(f) for f in order if np.isfinite(v[f])]


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
