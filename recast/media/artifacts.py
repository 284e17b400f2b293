"""Typed stage artefacts: the arrays one stage stores and later stages read.

Each artefact is one frozen dataclass with ``save(path)`` (a compressed npz) and
``load(path)``, used by its producer and by every consumer alike, so the layout of a file is
written down once, here. Save and load, with the kind and format version every file carries,
are :class:`recast.artifact_format.Artifact`'s. Bump a class's ``FORMAT_VERSION`` when its
layout or meaning changes: stages put the versions of what they read and write into their work
keys, so cached work of the old layout is redone, not misread.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from fractions import Fraction
from typing import TYPE_CHECKING, Any, ClassVar, Sequence

import numpy as np

from recast.artifact_format import Artifact

if TYPE_CHECKING:
    from recast.models.head import SourceHead

#: media types of stored intermediates
CHUNK_MEDIA_TYPE = "video/x-matroska; codecs=ffv1"
ANALYSIS_MEDIA_TYPE = "application/x-recast-face-analysis+npz"
TIMING_MEDIA_TYPE = "application/x-recast-timing+npz"


def _frames(name: str, value: np.ndarray, n: int, kind: str) -> None:
    if len(value) != n:
        raise ValueError(f"{kind}.{name}: {len(value)} frames, expected {n}")


@dataclass(frozen=True, eq=False)
class PlateTiming(Artifact):
    """The plate's presentation timestamps (``pts``, one per frame) in units of ``time_base``:
    ingest stores them so that a deliverable can keep the plate's exact timing."""

    FORMAT_VERSION: ClassVar[int] = 1

    pts: np.ndarray  # (F,) int64
    time_base: Fraction

    def __post_init__(self) -> None:
        object.__setattr__(self, "pts", np.asarray(self.pts, np.int64).reshape(-1))
        object.__setattr__(self, "time_base", Fraction(self.time_base))

    def _encode(self) -> dict[str, np.ndarray]:
        return {"pts": self.pts, "time_base": np.asarray([self.time_base.numerator, self.time_base.denominator], np.int64)}

    @classmethod
    def _decode(cls, arrays: dict[str, np.ndarray]) -> "PlateTiming":
        num, den = (int(v) for v in arrays["time_base"])
        return cls(pts=arrays["pts"], time_base=Fraction(num, den))


@dataclass(frozen=True, eq=False)
class PlateAnalysis(Artifact):
    """Segment's analysis of one plate chunk (``n`` frames), up to ``M`` faces a frame.

    Face slots beyond ``face_count[i]`` hold NaN landmarks and zero boxes. Identity embeddings
    are sampled: ``embeddings[j]`` belongs to face ``embedding_index[j] = (frame, slot)``, frame
    counted from the chunk's start.
    """

    FORMAT_VERSION: ClassVar[int] = 1

    faces_landmarks: np.ndarray  # (n, M, 478, 3) float32
    faces_boxes: np.ndarray  # (n, M, 4) int32 x0, y0, x1, y1
    face_count: np.ndarray  # (n,) int16
    skin_stats: np.ndarray  # (n, M, R, 6) float32 per-region colour statistics, NaN where no face
    signatures: np.ndarray  # (n, D) float32 frame signatures for scene cuts
    embedding_index: np.ndarray  # (k, 2) int32 (frame, slot)
    embeddings: np.ndarray  # (k, 128) float32
    person_mask: np.ndarray  # (n, H, W) bool

    def __post_init__(self) -> None:
        n = len(self.face_count)
        for name in ("faces_landmarks", "faces_boxes", "skin_stats", "signatures", "person_mask"):
            _frames(name, getattr(self, name), n, "PlateAnalysis")
        if np.asarray(self.person_mask).dtype != bool or np.ndim(self.person_mask) != 3:
            raise ValueError(f"PlateAnalysis.person_mask: expected bool (n, H, W), got {np.asarray(self.person_mask).dtype} "
                             f"{np.shape(self.person_mask)}")
        object.__setattr__(self, "embedding_index", np.asarray(self.embedding_index, np.int32).reshape(-1, 2))
        if len(self.embeddings) != len(self.embedding_index):
            raise ValueError(f"PlateAnalysis: {len(self.embeddings)} embeddings for {len(self.embedding_index)} indices")

    def __len__(self) -> int:
        return int(len(self.face_count))

    @classmethod
    def concat(cls, parts: Sequence["PlateAnalysis"], *, with_person_mask: bool = True) -> "PlateAnalysis":
        """The analyses of consecutive chunks as one (a shot's): embedding frames counted from the
        first part's start. A part whose skin statistics have another number of regions than the
        widest (none: a chunk without faces) gets NaN statistics of that width. Without
        ``with_person_mask`` the masks are left out (shape (n, 0, 0)): a shot's masks at full
        resolution are large, and tracking does not need them."""
        offsets = np.cumsum([0] + [len(p) for p in parts[:-1]])
        width = max(p.skin_stats.shape[2] for p in parts)
        stats = [p.skin_stats if p.skin_stats.shape[2] == width else np.full(p.skin_stats.shape[:2] + (width, 6), np.nan, np.float32)
                 for p in parts]
        n = sum(len(p) for p in parts)
        return cls(
            faces_landmarks=np.concatenate([p.faces_landmarks for p in parts]),
            faces_boxes=np.concatenate([p.faces_boxes for p in parts]),
            face_count=np.concatenate([p.face_count for p in parts]),
            skin_stats=np.concatenate(stats),
            signatures=np.concatenate([p.signatures for p in parts]),
            embedding_index=np.concatenate([p.embedding_index + np.array([off, 0]) for p, off in zip(parts, offsets)]),
            embeddings=np.concatenate([p.embeddings for p in parts]),
            person_mask=np.concatenate([p.person_mask for p in parts]) if with_person_mask else np.zeros((n, 0, 0), bool),
        )


@dataclass(frozen=True, eq=False)
class SourceAnalysis(Artifact):
    """Segment's analysis of one source photo: the chosen face's landmarks and box, its identity
    embedding (dlib's 128-D descriptor of the box, as QC's default identity model computes it;
    None in analyses made without one), in head mode its head matte
    (:class:`recast.models.head.SourceHead`), and where something held in front of the face was
    taken out of the photo (:mod:`recast.models.source_repair`) the repaired pixels: ``patch``,
    the photo's pixels inside ``patch_box`` (x0, y0, x1, y1) as every later stage must see them
    (:meth:`photo`)."""

    FORMAT_VERSION: ClassVar[int] = 3  # 2: the embedding; 3: the occluder patch

    landmarks: np.ndarray  # (478, 3) float32, photo pixels
    box: tuple[int, int, int, int]
    head: "SourceHead | None" = None
    embedding: np.ndarray | None = None  # (128,) float64
    patch: np.ndarray | None = None  # (y1 - y0, x1 - x0, 3) uint8
    patch_box: tuple[int, int, int, int] | None = None

    def photo(self, rgb: np.ndarray) -> np.ndarray:
        """The source photo as the swap uses it: ``rgb`` (the stored photo's pixels) with the
        occluder patch applied; ``rgb`` itself when there is none."""
        if self.patch is None or self.patch_box is None:
            return rgb
        x0, y0, x1, y1 = self.patch_box
        out = rgb.copy()
        out[y0:y1, x0:x1] = self.patch
        return out

    def __post_init__(self) -> None:
        object.__setattr__(self, "landmarks", np.asarray(self.landmarks, np.float32))
        box = tuple(int(v) for v in np.asarray(self.box).reshape(-1))
        if len(box) != 4:
            raise ValueError(f"SourceAnalysis.box: expected x0, y0, x1, y1, got {box}")
        object.__setattr__(self, "box", box)

    def _encode(self) -> dict[str, np.ndarray]:
        out = {"landmarks": self.landmarks, "box": np.asarray(self.box, np.int32)}
        if self.embedding is not None:
            out["embedding"] = np.asarray(self.embedding, np.float64).reshape(-1)
        if self.patch is not None and self.patch_box is not None:
            out.update(patch=np.asarray(self.patch, np.uint8), patch_box=np.asarray(self.patch_box, np.int32))
        if self.head is not None:
            h = self.head
            out.update(head_rgb=np.asarray(h.rgb, np.uint8), head_landmarks=np.asarray(h.landmarks, np.float32),
                       head_alpha=np.asarray(h.alpha, np.float32), head_hair=np.asarray(h.hair, bool),
                       head_neck_line=np.asarray(h.neck_line, np.float32))
        return out

    @classmethod
    def _decode(cls, arrays: dict[str, np.ndarray]) -> "SourceAnalysis":
        head = None
        if "head_rgb" in arrays:
            from recast.models.head import SourceHead

            head = SourceHead(rgb=arrays["head_rgb"], landmarks=arrays["head_landmarks"], alpha=arrays["head_alpha"],
                              hair=arrays["head_hair"], neck_line=arrays["head_neck_line"])
        patch_box = tuple(int(v) for v in arrays["patch_box"]) if "patch_box" in arrays else None
        return cls(landmarks=arrays["landmarks"], box=tuple(arrays["box"]), head=head, embedding=arrays.get("embedding"),
                   patch=arrays.get("patch"), patch_box=patch_box)


@dataclass(frozen=True, eq=False)
class ShotTracks(Artifact):
    """Track's choice of the person in every frame of the shot (``F`` frames).

    ``chosen[f]`` is the face slot of frame ``f`` in its chunk's :class:`PlateAnalysis`, -1
    where the person is absent (landmarks NaN, box zero there). ``landmarks`` and ``skin_stats``
    are smoothed over the shot (restarting at each cut); ``raw_landmarks`` are as detected.
    """

    FORMAT_VERSION: ClassVar[int] = 1

    landmarks: np.ndarray  # (F, 478, 3) float32
    raw_landmarks: np.ndarray  # (F, 478, 3) float32
    chosen: np.ndarray  # (F,) int16
    boxes: np.ndarray  # (F, 4) int32
    skin_stats: np.ndarray  # (F, R, 6) float32
    cuts: np.ndarray  # (c,) int32 first frames of new scenes

    def __post_init__(self) -> None:
        n = len(self.chosen)
        for name in ("landmarks", "raw_landmarks", "boxes", "skin_stats"):
            _frames(name, getattr(self, name), n, "ShotTracks")
        object.__setattr__(self, "cuts", np.asarray(self.cuts, np.int32).reshape(-1))

    @property
    def present(self) -> np.ndarray:
        """(F,) bool: frames where the chosen person was found."""
        return np.asarray(self.chosen) >= 0

    def __len__(self) -> int:
        return int(len(self.chosen))


@dataclass(frozen=True, eq=False)
class ExpressionTargets(Artifact):
    """Expression's target landmarks of the new face for every frame of the shot; ``valid`` is
    False (and the landmarks NaN) where there is no target (no person in that frame)."""

    FORMAT_VERSION: ClassVar[int] = 1

    targets: np.ndarray  # (F, 478, 3) float32
    valid: np.ndarray  # (F,) bool

    def __post_init__(self) -> None:
        _frames("valid", self.valid, len(self.targets), "ExpressionTargets")


@dataclass(frozen=True, eq=False)
class BackgroundKnown(Artifact):
    """Where background's clean plate of one chunk was seen in some frame (True) rather than
    inpainted (False)."""

    FORMAT_VERSION: ClassVar[int] = 1

    known: np.ndarray  # (n, H, W) bool

    def __post_init__(self) -> None:
        if np.asarray(self.known).dtype != bool or np.ndim(self.known) != 3:
            raise ValueError(f"BackgroundKnown.known: expected bool (n, H, W), got {np.asarray(self.known).dtype} {np.shape(self.known)}")


@dataclass(frozen=True, eq=False)
class SwapMatte(Artifact):
    """The pixels the swap of one chunk changed (True), per frame."""

    FORMAT_VERSION: ClassVar[int] = 1

    mask: np.ndarray  # (n, H, W) bool

    def __post_init__(self) -> None:
        if np.asarray(self.mask).dtype != bool or np.ndim(self.mask) != 3:
            raise ValueError(f"SwapMatte.mask: expected bool (n, H, W), got {np.asarray(self.mask).dtype} {np.shape(self.mask)}")


@dataclass(frozen=True, eq=False)
class QCPerFrame(Artifact):
    """QC's per-frame values of a shot (``F`` frames), the report's source; the verdict's
    reasons as records (metric, value, threshold, outcome, frames, text) and the thresholds
    (:class:`recast.models.metrics.QCThresholds` fields) it was decided with.

    Identity values (``d_*``, ``similarity_*``, ``transferred``, ``hair``) and the defect measures
    (``defects``, one column per name in ``defect_names``, :mod:`recast.models.qc_defects`) are
    known only on the ``sampled`` frames (NaN elsewhere); ``identity_match_distance`` is the
    identity model's same-person bound the distances are read against. ``motion_ratio``: the
    output's landmark motion over the plate's in a one-second window; ``wrong_person``: 1 on
    frames of a segment whose person is not the chosen one, 0 on the other judged frames;
    ``guessed_fill``: what the swap invented of the body the old head hid beside the jaw, in %
    of the face box (NaN where the engine does not say).

    ``region_frames`` / ``region_measure`` / ``region_masks``: for each flagged defect measure,
    its worst frames and where on them the detector found the defect (the report outlines them).
    :meth:`series` reads any per-frame series by name (a field or a defect column).
    """

    FORMAT_VERSION: ClassVar[int] = 3  # 3: guessed_fill

    swapped: np.ndarray  # (F,) bool
    face_found: np.ndarray  # (F,) bool
    sampled: np.ndarray  # (s,) int frames embedded for identity
    d_source: np.ndarray  # (F,) identity distance to the source
    d_plate: np.ndarray  # (F,) identity distance to the plate's person
    similarity_source: np.ndarray  # (F,) cosine similarity to the source
    similarity_plate: np.ndarray  # (F,)
    transferred: np.ndarray  # (F,) bool
    pose_plate: np.ndarray  # (F, 3) yaw, pitch, roll (deg)
    pose_output: np.ndarray  # (F, 3)
    pose_error: np.ndarray  # (F,) deg
    expression_error: np.ndarray  # (F,)
    jitter_excess: np.ndarray  # (F,) output - plate landmark acceleration (inter-ocular units)
    flicker_output: np.ndarray  # (F,)
    flicker_plate: np.ndarray  # (F,)
    flicker_ratio: np.ndarray  # (F,)
    seam: np.ndarray  # (F,)
    background_psnr: np.ndarray  # (F,) dB
    hair: np.ndarray  # (F,) 1.0 hair transferred, 0.0 not, NaN unknown
    badness: np.ndarray  # (F,)
    identity_match_distance: float
    motion_ratio: np.ndarray | None = None  # (F,) NaN where unknown
    wrong_person: np.ndarray | None = None  # (F,) 1.0 / 0.0 / NaN
    guessed_fill: np.ndarray | None = None  # (F,) % of the face box, NaN where unknown
    defects: np.ndarray | None = None  # (F, D) float, NaN where not measured
    defect_names: np.ndarray | None = None  # (D,) str
    region_frames: np.ndarray | None = None  # (k,) int
    region_measure: np.ndarray | None = None  # (k,) str: the defect measure of each region
    region_masks: np.ndarray | None = None  # (k, H, W) bool
    reasons: tuple[dict[str, Any], ...] = ()
    thresholds: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.swapped)
        nan = np.full(n, np.nan)
        for name in ("motion_ratio", "wrong_person", "guessed_fill"):
            object.__setattr__(self, name, nan.copy() if getattr(self, name) is None else np.asarray(getattr(self, name), np.float64))
        names = np.asarray(() if self.defect_names is None else self.defect_names, dtype=str).reshape(-1)
        object.__setattr__(self, "defect_names", names)
        d = np.full((n, len(names)), np.nan) if self.defects is None else np.asarray(self.defects, np.float64).reshape(n, -1)
        if d.shape[1] != len(names):
            raise ValueError(f"QCPerFrame.defects: {d.shape[1]} columns for {len(names)} defect names")
        object.__setattr__(self, "defects", d)
        object.__setattr__(self, "region_frames", np.asarray(() if self.region_frames is None else self.region_frames, np.int64).reshape(-1))
        object.__setattr__(self, "region_measure", np.asarray(() if self.region_measure is None else self.region_measure, dtype=str).reshape(-1))
        masks = np.zeros((0, 0, 0), bool) if self.region_masks is None else np.asarray(self.region_masks, bool)
        object.__setattr__(self, "region_masks", masks)
        k = len(self.region_frames)
        if len(self.region_measure) != k or len(masks) != k:
            raise ValueError(f"QCPerFrame: {k} region frames, {len(self.region_measure)} region measures, {len(masks)} region masks")
        for f in fields(self):
            if f.name not in ("sampled", "identity_match_distance", "reasons", "thresholds", "swapped", "defect_names", "region_frames",
                              "region_measure", "region_masks"):
                _frames(f.name, getattr(self, f.name), n, "QCPerFrame")
        object.__setattr__(self, "sampled", np.asarray(self.sampled, np.int64).reshape(-1))
        object.__setattr__(self, "identity_match_distance", float(self.identity_match_distance))
        object.__setattr__(self, "reasons", tuple(dict(r) for r in self.reasons))
        object.__setattr__(self, "thresholds", {str(k): float(v) for k, v in dict(self.thresholds).items()})

    def __len__(self) -> int:
        return int(len(self.swapped))

    def series(self, name: str) -> np.ndarray | None:
        """The per-frame series ``name``: a field of this class or a column of ``defects``
        (None when it has neither)."""
        names = [str(x) for x in self.defect_names]
        if name in names:
            return self.defects[:, names.index(name)]
        if name in {f.name for f in fields(self)} and name not in _QC_JSON:
            v = np.asarray(getattr(self, name))
            return v if v.ndim >= 1 and len(v) == len(self) else None
        return None

    def regions(self, frame: int) -> list[tuple[str, np.ndarray]]:
        """(measure, mask) of every region stored for ``frame``."""
        return [(str(m), self.region_masks[i]) for i, (f, m) in enumerate(zip(self.region_frames, self.region_measure)) if int(f) == int(frame)]

    def _encode(self) -> dict[str, np.ndarray]:
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in _QC_JSON}
        out["identity_match_distance"] = np.asarray(self.identity_match_distance, np.float64)
        out["reasons_json"] = np.asarray(json.dumps(list(self.reasons), default=float))
        out["thresholds_json"] = np.asarray(json.dumps(self.thresholds))
        return out

    @classmethod
    def _decode(cls, arrays: dict[str, np.ndarray]) -> "QCPerFrame":
        values: dict[str, Any] = {f.name: arrays[f.name] for f in fields(cls) if f.name not in _QC_JSON}
        values["identity_match_distance"] = float(values["identity_match_distance"])
        values["reasons"] = tuple(json.loads(str(arrays["reasons_json"])))
        values["thresholds"] = json.loads(str(arrays["thresholds_json"]))
        return cls(**values)


#: QCPerFrame fields stored as JSON text rather than arrays
_QC_JSON = ("reasons", "thresholds")
