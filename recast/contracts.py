"""Typed records that pass between stages.

Every record is a frozen pydantic model: small, serialisable, and free of arrays. Pixels and
landmarks live in the object store; records carry references to them (:class:`AssetRef`).
Time is rational: frame numbers and a :class:`Rate`, never float seconds.
"""

from __future__ import annotations

from enum import Enum
from fractions import Fraction
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator


class Record(BaseModel):
    """Base of all contract records: frozen, no extra fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class Rate(Record):
    """A rational frame rate or time base, e.g. 30000/1001."""

    num: int = Field(gt=0)
    den: int = Field(gt=0)

    @classmethod
    def of(cls, value: Fraction | int | str | "Rate") -> "Rate":
        if isinstance(value, Rate):
            return value
        f = Fraction(value)
        if f <= 0:
            raise ValueError(f"rate must be positive, got {value!r}")
        return cls(num=f.numerator, den=f.denominator)

    @property
    def fraction(self) -> Fraction:
        return Fraction(self.num, self.den)

    def __str__(self) -> str:
        return f"{self.num}/{self.den}"


class FrameRange(Record):
    """Frames ``start`` (inclusive) to ``end`` (exclusive) of a plate at ``rate``."""

    start: int = Field(ge=0)
    end: int = Field(ge=0)
    rate: Rate

    @field_validator("end")
    @classmethod
    def _end_after_start(cls, v: int, info: Any) -> int:
        start = info.data.get("start", 0)
        if v <= start:
            raise ValueError(f"frame range end {v} must be after start {start}")
        return v

    @property
    def count(self) -> int:
        return self.end - self.start


class AssetRef(Record):
    """A stored object: where it is, what it is, and its checksum."""

    asset_id: str
    uri: str
    sha256: str = Field(min_length=64, max_length=64)
    media_type: str
    size: int = Field(ge=0)


class ModelRef(Record):
    """An engine or model used by a stage: name, version and the checksum of its weights."""

    name: str
    version: str
    sha256: str | None = None


class AudioStreamInfo(Record):
    index: int
    codec: str
    sample_rate: int | None = None
    channels: int | None = None


#: frames per second assumed where a file declares no rate (a still image, a stream without one)
FALLBACK_FPS = 25.0


class MediaInfo(Record):
    """What ingest learnt about a plate (video) or a still image."""

    kind: str = Field(description="'video' or 'image'")
    container: str | None = None
    codec: str
    width: int = Field(description="width as shown (upright: after the display matrix or EXIF orientation)")
    height: int = Field(description="height as shown (upright)")
    rotation: int = Field(default=0, description="display rotation, degrees counter-clockwise (0, 90, 180, -90; "
                          "-90 for a phone held upright): the stored pixels are turned by this to be shown")
    mirrored: bool = Field(default=False, description="a left-right mirror follows the rotation")
    stream_index: int = Field(default=0, description="the container stream read (the default-disposition "
                              "video stream, else the largest: FFmpeg's choice)")
    video_streams: int = Field(default=1, description="how many video streams the file has (cover art not counted)")
    pix_fmt: str | None = None
    frame_count: int = 1
    rate: Rate | None = Field(default=None, description="nominal frame rate (the stream's declared rate)")
    avg_rate: Rate | None = Field(default=None, description="average rate from frame count and duration")
    time_base: Rate | None = None
    variable_frame_rate: bool = False
    audio: tuple[AudioStreamInfo, ...] = ()
    timecode: str | None = None

    @property
    def fps(self) -> float:
        """Frames per second for per-frame filters and sampling: the nominal rate, or
        :data:`FALLBACK_FPS` when the stream declares none (a still image, a stream without a rate)."""
        return float(self.rate.fraction) if self.rate else FALLBACK_FPS

    @property
    def stored_size(self) -> tuple[int, int]:
        """(width, height) of the pixels as the file stores them (a quarter turn swaps them)."""
        return (self.height, self.width) if self.rotation in (90, -90) else (self.width, self.height)


class Mode(str, Enum):
    face = "face"
    head = "head"


class Verdict(str, Enum):
    passed = "pass"
    review = "review"
    failed = "fail"


#: the ``review`` parameter of a shot's flow: ``auto`` pauses for a supervisor on a review verdict
#: only in deployment runs, ``pause`` always does, ``never`` does not (see recast.flows.review)
REVIEW_MODES: tuple[str, ...] = ("auto", "pause", "never")


class ShotParams(Record):
    """What to do with a shot: the parameters a user chooses."""

    mode: Mode = Mode.head
    backend: str = "classic"
    face: str = Field(default="largest", description="which plate face: largest | index:N | reference:PHOTO")
    source_face: str | None = Field(default=None, description="which face of a source photo with several: index:N")
    expression: str = Field(default="transfer", description="transfer | keep_source | neutral")
    edits: tuple[str, ...] = Field(default=(), description="operator edits such as 'smile=+0.3' or 'eye_open=-0.1@10-40'")
    chunk_size: int = Field(default=48, ge=1)


class PlateChunk(Record):
    """One chunk of a plate as a lossless intra-only intermediate (FFV1/mkv, RGB)."""

    frames: FrameRange
    video: AssetRef


class IngestResult(Record):
    """Registered plate and sources, with the plate cut into chunks."""

    plate: AssetRef
    plate_info: MediaInfo
    timing: AssetRef = Field(description="the plate's per-frame pts and time base: recast.media.artifacts.PlateTiming")
    chunks: tuple[PlateChunk, ...]
    sources: tuple[AssetRef, ...]
    source_infos: tuple[MediaInfo, ...]


class SourceFinding(Record):
    """One check of a source photo's vetting (:mod:`recast.models.source_vetting`).

    ``outcome``: ``ok``; ``warn`` (recorded, shown in the summary and the QC report, and QC
    cannot pass the shot above ``review``); ``refuse`` (the photo cannot work: exit 3)."""

    check: str = Field(description="what was checked, e.g. face_size, blur, occluder, pose, print")
    outcome: str = Field(description="ok | warn | refuse")
    value: float | None = None
    threshold: float | None = None
    text: str = Field(description="one line naming the photo and what was found")


class SourceFaceResult(Record):
    """The face (and, in head mode, the head matte) of one source photo, stored as one npz."""

    source: AssetRef
    analysis: AssetRef
    face_box: tuple[int, int, int, int]
    yaw_deg: float | None = None
    models: tuple[ModelRef, ...]
    vetting: tuple[SourceFinding, ...] = ()


class SegmentResult(Record):
    """Per-frame faces (every detected face: landmarks, boxes, skin colour), person masks and
    frame signatures of one plate chunk."""

    chunk: FrameRange
    analysis: AssetRef = Field(description="every face of every frame, person masks, frame signatures: recast.media.artifacts.PlateAnalysis")
    faces_found: int
    max_faces_in_frame: int
    models: tuple[ModelRef, ...]


class TrackResult(Record):
    """The chosen person across the whole shot: per-frame landmarks (smoothed over the shot,
    reset at scene cuts), boxes and smoothed skin colour statistics."""

    tracks: AssetRef = Field(description="the chosen person's landmarks, boxes and skin colour per frame: recast.media.artifacts.ShotTracks")
    frames_with_person: int
    cuts: tuple[int, ...]
    selector: str
    segments_without_person: tuple[FrameRange, ...] = Field(
        default=(), description="shot segments (between cuts) in which the chosen person is on no frame — absent after a cut, "
                                "only someone else there, or nobody: their frames pass through unchanged")


class BackgroundChunk(Record):
    """The reconstructed background (clean plate) of one chunk, and where it was really seen."""

    frames: FrameRange
    video: AssetRef
    known: AssetRef = Field(description="where the clean plate was seen: recast.media.artifacts.BackgroundKnown")


class BackgroundResult(Record):
    chunks: tuple[BackgroundChunk, ...]
    known_ratio: float = Field(description="share of person pixels whose background was seen in some frame")


class ExpressionResult(Record):
    """Per-frame target landmarks of the new face for the whole shot."""

    targets: AssetRef = Field(description="target landmarks per frame: recast.media.artifacts.ExpressionTargets")
    method: str
    params: dict[str, Any] = Field(default_factory=dict)


class SwapChunkResult(Record):
    """Swapped frames of one chunk (lossless FFV1/mkv) and what happened per frame."""

    chunk: FrameRange
    video: AssetRef
    masks: AssetRef = Field(description="the pixels the swap changed: recast.media.artifacts.SwapMatte")
    observations: AssetRef = Field(description="QC's per-frame measurements of these frames: recast.models.qc_frames.ChunkObservations")
    swapped_frames: int
    passthrough_frames: int
    models: tuple[ModelRef, ...]
    metrics: dict[str, float] = Field(default_factory=dict, description="qc_observe_ms: time spent on QC's measurements, counted as QC's")


class QCReport(Record):
    """Shot-level metrics and verdict."""

    metrics: dict[str, float | int | None]
    verdict: Verdict
    reasons: tuple[str, ...] = ()
    per_frame: AssetRef | None = Field(default=None, description="QC's per-frame values: recast.media.artifacts.QCPerFrame")
    models: tuple[ModelRef, ...] = ()


class RenderResult(Record):
    """The deliverable."""

    output: AssetRef
    frames: int
    rate: Rate
    avg_rate: Rate | None
    audio_copied: bool
    codec: str
    metrics: dict[str, float | int | None] = Field(default_factory=dict)
    render_id: str = Field(description="the id the deliverable's watermark and C2PA manifest carry")


class ShotOutcome(Record):
    """What a ``swap_shot`` flow run ends with: a rendered deliverable (``status`` ``done``) or a
    run rejected in review (nothing rendered: the delivery fields are None).

    :meth:`summary` is the JSON that ``recast swap --json`` prints and the run row keeps.
    """

    run_id: str
    shot_id: str
    shot: str
    status: str = Field(default="done", description="'done' (rendered) or 'rejected' (in review; nothing rendered)")
    output: str | None = Field(default=None, description="where the deliverable was published (a path, or its store URI)")
    published: bool | None = Field(default=None, description="whether the deliverable was written at the requested output path: "
                                   "False when the QC verdict failed (it stays in the store, at output_uri); None: no path requested")
    output_uri: str | None = None
    output_asset_id: str | None = None
    frames: int | None = None
    fps: str | None = Field(default=None, description="the plate's rational frame rate, e.g. 30000/1001")
    avg_fps: str | None = None
    variable_frame_rate: bool | None = None
    audio_copied: bool | None = None
    swapped_frames: int | None = None
    passthrough_frames: int | None = None
    segments_without_person: tuple[FrameRange, ...] = Field(
        default=(), description="shot segments (between cuts) in which the chosen person was not found, left untouched")
    mode: str
    params: dict[str, Any]
    qc: dict[str, Any] = Field(description="QC metrics plus verdict, reasons and the report's URI")
    approved: bool = False
    review: dict[str, Any] | None = Field(default=None, description="the supervisor's decision when the run paused for review")
    stages: dict[str, float] = Field(description="milliseconds per stage")

    #: fields a rejected run has no value for (left out of its summary)
    DELIVERY_FIELDS: ClassVar[tuple[str, ...]] = (
        "published", "output_uri", "output_asset_id", "frames", "fps", "avg_fps", "variable_frame_rate", "audio_copied", "swapped_frames",
        "passthrough_frames", "approved")

    def summary(self) -> dict[str, Any]:
        """The run's summary as JSON-ready data (``recast swap --json``, the run row)."""
        data = self.model_dump(mode="json")
        if self.status == "rejected":
            for name in self.DELIVERY_FIELDS:
                data.pop(name, None)
        return data
