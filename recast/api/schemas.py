"""Request and response models of the HTTP API (pydantic; they make the OpenAPI document).

Field validation happens here so a bad request answers 422 naming the field before anything is
recorded. Checks that need the database or the object store (the plate exists, the bucket is
allowed, consent) are in :mod:`recast.api.service`.
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import Enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from recast.contracts import Mode

_FACE_RE = re.compile(r"^(largest|index:\d{1,3})$")
_INDEX_RE = re.compile(r"^index:\d{1,3}$")
EXPRESSION_MODES = ("transfer", "keep_source", "neutral")
IDEMPOTENCY_KEY_MAX = 128


class Schedule(str, Enum):
    """When a submitted shot starts: at once (``now``) or with the project's nightly batch."""

    now = "now"
    batch = "batch"


class ShotSubmission(BaseModel):
    """``POST /v1/shots``: a shot to run. As JSON, or as multipart form fields of the same names
    where ``plate`` and ``sources`` may also be uploaded files."""

    model_config = ConfigDict(extra="forbid")

    project: str | None = Field(default=None, max_length=200, description="project name or id; default: the token's project")
    plate: str = Field(min_length=1, max_length=2048, description="the plate as an s3:// URI (or an uploaded file in a multipart request)")
    sources: list[str] = Field(default_factory=list, max_length=16,
                               description="source photos as s3:// URIs (or uploaded files); default: the identity's reference photos")
    identity: str | None = Field(default=None, max_length=200,
                                 description="the identity whose head goes in: its id, or its name where one identity of GET /v1/identities "
                                             "has it; consent is checked now, and required in a project that requires consent")
    code: str | None = Field(default=None, max_length=200, description="shot code (default: from the plate's name)")
    mode: Mode = Field(default=Mode.head, description="head (face, hair and head shape) or face (the face only)")
    backend: str = Field(default="classic", pattern=r"^[a-z][a-z0-9_]{0,31}$", description="swap engine")
    face: str = Field(default="largest", description="which person of the plate: largest | index:N")
    source_face: str | None = Field(default=None, description="which face of a source photo with several: index:N")
    expression: str = Field(default="transfer", description="transfer | keep_source | neutral")
    edits: list[str] = Field(default_factory=list, max_length=32, description="expression edits such as smile=+0.3 or smile=0.2@10-40")
    chunk_size: int | None = Field(default=None, ge=1, le=10_000, description="frames per chunk (default: the server's)")
    priority: int = Field(default=0, ge=-1000, le=1000, description="higher runs first in batches")
    schedule: Schedule = Field(default=Schedule.now, description="now: start at once; batch: wait for the nightly batch")
    review: Literal["auto", "pause", "never"] = Field(
        default="auto", description="on a QC verdict of review: pause (and auto, the same for runs the API starts) waits for a "
                                    "supervisor (POST /v1/shots/{id}/review); never renders it, delivered unapproved (approved: false)")

    @field_validator("review")
    @classmethod
    def _review_with_batch(cls, v: str, info: ValidationInfo) -> str:
        if v == "never" and info.data.get("schedule") is Schedule.batch:
            # the nightly batch starts its runs with the flow's default, which pauses on review
            raise ValueError("review 'never' applies to shots started now (schedule 'now'); the nightly batch pauses "
                             "shots whose QC verdict is review")
        return v

    @field_validator("face")
    @classmethod
    def _face(cls, v: str) -> str:
        if not _FACE_RE.match(v):
            raise ValueError("use largest or index:N (0 = the largest face)")
        return v

    @field_validator("source_face")
    @classmethod
    def _source_face(cls, v: str | None) -> str | None:
        if v is not None and not _INDEX_RE.match(v):
            raise ValueError("use index:N (0 = the largest face of the source photo)")
        return v

    @field_validator("expression")
    @classmethod
    def _expression(cls, v: str) -> str:
        if v not in EXPRESSION_MODES:
            raise ValueError(f"choose from {', '.join(EXPRESSION_MODES)}")
        return v

    @field_validator("edits")
    @classmethod
    def _edits(cls, v: list[str]) -> list[str]:
        from recast.errors import UsageError
        from recast.models.retarget import parse_edit  # numpy only; no MediaPipe

        for e in v:
            try:
                parse_edit(e)
            except UsageError as exc:
                raise ValueError(str(exc)) from None
        return v


class StageProgress(BaseModel):
    stage: str
    status: Literal["pending", "running", "done", "failed"]
    chunks_done: int | None = None
    chunks_total: int | None = None


class Progress(BaseModel):
    stages_done: int
    stages_total: int
    current: str | None = Field(default=None, description="the stage being worked on")
    stages: list[StageProgress]


class QCView(BaseModel):
    verdict: str | None = None
    metrics: dict[str, Any] = Field(default_factory=dict)
    reasons: list[dict[str, Any]] = Field(default_factory=list, description="one record per flagged measure: metric, value, threshold, outcome, frames, text")


class OutputView(BaseModel):
    role: str
    uri: str
    sha256: str | None = None
    size: int | None = None
    approved: bool | None = Field(default=None, description="whether the deliverable was accepted: QC passed it or a supervisor "
                                                            "approved it (false: QC said review or fail and nobody approved it)")
    withdrawn: bool = Field(default=False, description="withdrawn when the identity's consent was revoked: no download link")
    download_url: str | None = Field(default=None, description="presigned GET URL (S3 stores only; signed for RECAST_S3_PUBLIC_ENDPOINT_URL when set)")
    expires_in: int | None = Field(default=None, description="seconds the download URL stays valid")


class RunView(BaseModel):
    id: str
    status: str
    prefect_flow_run_id: str | None = None
    created: datetime | None = None
    started: datetime | None = None
    ended: datetime | None = None
    error: str | None = None


class ShotSummary(BaseModel):
    id: str
    code: str
    project: str
    status: str
    priority: int
    created: datetime
    updated: datetime


class SourceFindingView(BaseModel):
    check: str = Field(description="face_size, upscale, resolution, blur, occluder, pose, expression, colour, print, faces")
    outcome: str = Field(description="ok | warn (QC cannot pass the shot above review) | refuse (the run fails, exit 3)")
    value: float | None = None
    threshold: float | None = None
    text: str


class SourceReportView(BaseModel):
    photo: str = Field(description="the source photo as submitted (path or URI)")
    findings: list[SourceFindingView] = Field(default_factory=list)


class ShotDetail(ShotSummary):
    identity_id: str | None = None
    plate: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    review: str | None = Field(default=None, description="the review mode it was submitted with (auto, pause, never)")
    run: RunView | None = None
    progress: Progress | None = None
    qc: QCView | None = None
    outputs: list[OutputView] = Field(default_factory=list)
    source_vetting: list[SourceReportView] = Field(default_factory=list, description="the source report of each photo, once the "
                                                   "run's first stage analysed it (a refused photo fails the run with its reason)")


class ShotPage(BaseModel):
    items: list[ShotSummary]
    page: int
    page_size: int
    total: int


class ConsentView(BaseModel):
    id: str
    status: Literal["active", "revoked", "expired", "not_yet_valid"]
    valid_from: datetime | None = None
    valid_until: datetime | None = None
    revoked_at: datetime | None = None
    media: list[str] = Field(description="media it covers (* = any)")
    territory: list[str] = Field(description="territories it covers (* = any)")


class IdentityView(BaseModel):
    id: str
    name: str
    created: datetime | None = None
    covered: bool = Field(description="a consent covers the token's project now: a submission may name this identity")
    consent_id: str | None = Field(default=None, description="the covering consent")
    valid_until: datetime | None = Field(default=None, description="when the covering consent ends (null: open-ended)")
    reason: str | None = Field(default=None, description="why no consent covers the project now")
    reference_photos: int = Field(description="reference photos left (a revoked consent deletes them); the photos themselves are not shown")
    consents: list[ConsentView]


class IdentityList(BaseModel):
    project: str
    consent_required: bool
    items: list[IdentityView]


class ReviewRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    decision: Literal["approve", "reject", "rerun"] = Field(
        description="approve: render (a run paused for review) / approve the deliverable; reject: end the run, nothing delivered; "
                    "rerun: run the shot again with `params` changed, reusing the stages the change does not touch")
    note: str | None = Field(default=None, max_length=10_000)
    reviewer: str | None = Field(default=None, max_length=200, description="who decided (default: the token's name)")
    params: dict[str, Any] | None = Field(default=None, description="for rerun: shot parameters to change, e.g. {\"expression\": \"neutral\"}")

    @model_validator(mode="after")
    def _params_go_with_rerun(self) -> "ReviewRequest":
        if self.params and self.decision != "rerun":
            raise ValueError(f"params go with decision 'rerun', not {self.decision!r}")
        return self


class ReviewView(BaseModel):
    id: str | None = Field(description="the review record; null when a run paused for review was resumed (its flow records the decision)")
    shot_id: str
    run_id: str | None
    decision: str
    reviewer: str
    note: str | None
    created: datetime = Field(description="when the decision was taken")
    status: str | None = Field(default=None, description="the run's status after the decision (running: resumed, it renders or re-runs)")
    message: str | None = None
    resumed_flow_run: str | None = Field(default=None, description="the Prefect flow run that was paused for review and resumed")
    new_run_id: str | None = Field(default=None, description="rerun: the new run of the shot")


class CancelView(BaseModel):
    shot_id: str
    run_id: str
    status: str
    prefect_state: str | None = Field(default=None, description="the state the Prefect flow run was moved to")


class ErrorView(BaseModel):
    detail: Any


__all__ = [
    "CancelView",
    "ConsentView",
    "ErrorView",
    "IDEMPOTENCY_KEY_MAX",
    "IdentityList",
    "IdentityView",
    "OutputView",
    "Progress",
    "QCView",
    "ReviewRequest",
    "ReviewView",
    "RunView",
    "Schedule",
    "ShotDetail",
    "ShotPage",
    "ShotSubmission",
    "ShotSummary",
    "StageProgress",
]
