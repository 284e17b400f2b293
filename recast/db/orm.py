"""SQLAlchemy 2 ORM of recast's database.

Tables (see DESIGN.md, "The database"):

``project``, ``identity`` (+ ``identity_photo`` link table), ``consent``, ``shot``, ``run``,
``asset`` (+ ``asset_parent`` lineage links), ``stage_run``, ``qc_result``, ``review``,
``render`` and ``audit_event``.

``run`` is an addition to DESIGN's list: one row per execution of the ``swap_shot`` flow for a
shot. A shot can be run several times (a retry after a failure, a re-run with other parameters,
a re-run after a review rejected it), and stage runs, QC results, reviews and renders belong to
one of those executions, not to the shot as a whole. ``shot.status`` mirrors the status of the
shot's latest run (the repository keeps them in step).

Conventions:

* UUID primary keys (``sqlalchemy.Uuid``: native ``uuid`` on PostgreSQL, ``CHAR(32)`` on
  SQLite), generated in Python with :func:`uuid.uuid4`.
* ``created``/``updated`` timestamps are timezone-aware UTC on both backends
  (:class:`UTCDateTime`); ``audit_event`` only has ``created`` because it is append-only.
* JSON columns use ``sqlalchemy.JSON`` so the same schema works on SQLite and PostgreSQL. They
  are *not* mutation-tracked: assign a new value, do not edit one in place.
* A metadata naming convention gives every index and constraint a stable name, so Alembic
  migrations (and SQLite batch migrations, which recreate tables) can refer to them.
* Nothing here imports the rest of recast: ORM use outside ``recast.db`` goes through
  :mod:`recast.db.repository`.
"""

from __future__ import annotations

import threading
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    Uuid,
    false,
    func,
    text,
    true,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# Allowed values of the status-like columns. The database enforces them with CHECK
# constraints too; adding a value therefore needs a migration.
MEDIA_TYPES = ("film", "ad")
# interrupted: Ctrl-C or SIGTERM; crashed: its process went away without recording an end
# (killed, machine lost); superseded: a crashed or interrupted run whose shot a later run finished
RUN_STATUSES = ("queued", "running", "done", "failed", "cancelled", "awaiting_review", "rejected", "interrupted", "crashed", "superseded")
RUN_TERMINAL_STATUSES = ("done", "failed", "cancelled", "rejected", "interrupted", "crashed", "superseded")
STAGE_RUN_STATUSES = ("running", "done", "failed", "reused")
VERDICTS = ("pass", "review", "fail")
# Roles recast uses for assets. Documentation only, not enforced: new stages may add roles
# without a migration.
ASSET_ROLES = (
    "plate",
    "source",
    "timing",
    "plate_chunk",
    "source_analysis",
    "landmarks",
    "targets",
    "swapped_chunk",
    "deliverable",
    "qc_report",
    "release",
    "photo",
    "other",
)


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


_clock_lock = threading.Lock()
_last_now: datetime | None = None


def utcnow() -> datetime:
    """Current UTC time, strictly increasing within this process.

    Rows are listed in ``created`` order (audit events especially); a strictly increasing clock
    keeps events written in quick succession by one process in the order they were written even
    where the system clock's resolution would make them equal.
    """
    global _last_now
    now = datetime.now(timezone.utc)
    with _clock_lock:
        if _last_now is not None and now <= _last_now:
            now = _last_now + timedelta(microseconds=1)
        _last_now = now
    return now


class UTCDateTime(TypeDecorator):
    """``DateTime(timezone=True)`` that always hands back aware UTC datetimes.

    PostgreSQL stores ``timestamptz`` natively; SQLite stores text without an offset, so values
    are converted to UTC before they are written and marked UTC when read. Naive datetimes given
    by callers are taken to be UTC.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


class Base(DeclarativeBase):
    """Declarative base carrying the naming convention and the type map."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {
        datetime: UTCDateTime(),
        uuid.UUID: Uuid(),
        dict[str, Any]: JSON(),
        list[Any]: JSON(),
    }


def _pk() -> Mapped[uuid.UUID]:
    return mapped_column(Uuid(), primary_key=True, default=uuid.uuid4)


def _created() -> Mapped[datetime]:
    return mapped_column(UTCDateTime(), nullable=False, default=utcnow, server_default=func.now())


def _updated() -> Mapped[datetime]:
    return mapped_column(
        UTCDateTime(), nullable=False, default=utcnow, onupdate=utcnow, server_default=func.now()
    )


class Timestamped:
    """Mixin: UUID ``id`` plus ``created`` and ``updated``."""

    id: Mapped[uuid.UUID] = _pk()
    created: Mapped[datetime] = _created()
    updated: Mapped[datetime] = _updated()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.id}>"


class Project(Timestamped, Base):
    """A production (film or ad campaign); QC thresholds may be overridden per project."""

    __tablename__ = "project"
    __table_args__ = (CheckConstraint(f"media_type IS NULL OR {_in('media_type', MEDIA_TYPES)}", name="media_type"),)

    name: Mapped[str] = mapped_column(String(200), unique=True)
    media_type: Mapped[str | None] = mapped_column(String(16))
    consent_required: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    commercial: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    qc_thresholds: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class Identity(Timestamped, Base):
    """A person whose head or face may be used; independent of projects."""

    __tablename__ = "identity"

    name: Mapped[str] = mapped_column(String(200), index=True)
    note: Mapped[str | None] = mapped_column(Text)


class IdentityPhoto(Base):
    """Link: reference photos (assets) of an identity."""

    __tablename__ = "identity_photo"

    identity_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("identity.id", ondelete="CASCADE"), primary_key=True)
    asset_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("asset.id"), primary_key=True, index=True)
    created: Mapped[datetime] = _created()


class Consent(Timestamped, Base):
    """A signed consent of an identity, with its scope and validity.

    ``scope`` is ``{"projects": [...], "media": [...], "territory": [...]}``: a missing key or a
    list containing ``"*"`` means unrestricted; an empty list means nothing is covered.
    """

    __tablename__ = "consent"

    identity_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("identity.id"), index=True)
    scope: Mapped[dict[str, Any]] = mapped_column(JSON)
    valid_from: Mapped[datetime]
    valid_until: Mapped[datetime | None]
    release_asset_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("asset.id"))
    revoked_at: Mapped[datetime | None]
    reason: Mapped[str | None] = mapped_column(Text)


class Asset(Timestamped, Base):
    """A stored object (plate, chunk, landmarks, deliverable, report...). Deleted softly."""

    __tablename__ = "asset"
    __table_args__ = (UniqueConstraint("uri", "sha256"),)

    uri: Mapped[str] = mapped_column(String(2048), index=True)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    size: Mapped[int] = mapped_column(BigInteger)
    media_type: Mapped[str] = mapped_column(String(200))
    media_info: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    role: Mapped[str] = mapped_column(String(32), index=True)
    deleted_at: Mapped[datetime | None]


class AssetParent(Base):
    """Lineage link: ``asset_id`` was made from ``parent_id`` by the stage run ``stage_run_id``.

    Assets are content-addressed, so one asset row can be the output of several stage runs
    (two runs producing the same bytes from different inputs, a passthrough chunk equal to the
    plate's): each producing stage run records its own links, and a deliverable's lineage
    follows the links of the stage runs that made it. ``stage_run_id`` is None for links made
    outside a stage (and for every link recorded before migration 0004). Each link is stored
    once per stage run (once in all without one): two partial unique indexes say so.
    """

    __tablename__ = "asset_parent"
    __table_args__ = (
        Index("uq_asset_parent_link", "asset_id", "parent_id", unique=True,
              sqlite_where=text("stage_run_id IS NULL"), postgresql_where=text("stage_run_id IS NULL")),
        Index("uq_asset_parent_stage_run_link", "asset_id", "parent_id", "stage_run_id", unique=True,
              sqlite_where=text("stage_run_id IS NOT NULL"), postgresql_where=text("stage_run_id IS NOT NULL")),
    )

    id: Mapped[uuid.UUID] = _pk()
    asset_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("asset.id"), index=True)
    parent_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("asset.id"), index=True)
    stage_run_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("stage_run.id"), index=True)
    created: Mapped[datetime] = _created()


class Shot(Timestamped, Base):
    """A plate to work on, the identity to put in, and what to do (``params``)."""

    __tablename__ = "shot"
    # a code names one shot within its project (``recast qc CODE``); the repository picks a free
    # one when the code asked for is taken
    __table_args__ = (Index("uq_shot_project_id_code", "project_id", "code", unique=True),)

    project_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("project.id"))
    code: Mapped[str] = mapped_column(String(200))
    # nullable: a shot may be submitted by URI before ingest has registered its plate
    plate_asset_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("asset.id"))
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(32), default="new", server_default="new", index=True)
    identity_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("identity.id"))
    source_asset_ids: Mapped[list[Any]] = mapped_column(JSON)
    priority: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    idempotency_key: Mapped[str | None] = mapped_column(String(200), unique=True)


class Run(Timestamped, Base):
    """One execution of the ``swap_shot`` flow for a shot."""

    __tablename__ = "run"
    __table_args__ = (CheckConstraint(_in("status", RUN_STATUSES), name="status"),)

    shot_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("shot.id"), index=True)
    status: Mapped[str] = mapped_column(String(32), default="queued", server_default="queued", index=True)
    params: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    prefect_flow_run_id: Mapped[str | None] = mapped_column(String(64), index=True)
    started: Mapped[datetime | None]
    ended: Mapped[datetime | None]
    error: Mapped[str | None] = mapped_column(Text)
    output_asset_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("asset.id"))
    summary: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # set by the API's cancel: a flow killed by Prefect's cancellation can then tell (when it
    # records its failure) that the end was asked for, and keep the run ``cancelled``
    cancel_requested_at: Mapped[datetime | None]
    # the process that runs it (services.processes.current_owner): host, pid and the process's
    # start time (a pid reused later has another); heartbeat_at is refreshed while it runs, so a
    # run whose process is gone can be marked crashed (services.shots.sweep_crashed_runs)
    owner_host: Mapped[str | None] = mapped_column(String(255))
    owner_pid: Mapped[int | None]
    owner_started: Mapped[datetime | None]
    heartbeat_at: Mapped[datetime | None]


class StageRun(Timestamped, Base):
    """One execution (or reuse) of a stage for a shot or one chunk of it: provenance and cache."""

    __tablename__ = "stage_run"
    __table_args__ = (CheckConstraint(_in("status", STAGE_RUN_STATUSES), name="status"),)

    run_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("run.id"), index=True)
    shot_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("shot.id"))
    stage: Mapped[str] = mapped_column(String(32))
    chunk_index: Mapped[int | None]
    frame_start: Mapped[int | None]
    frame_end: Mapped[int | None]
    work_key: Mapped[str] = mapped_column(String(128), index=True)
    status: Mapped[str] = mapped_column(String(16))
    reused_from_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("stage_run.id"))
    prefect_flow_run_id: Mapped[str | None] = mapped_column(String(64))
    prefect_task_run_id: Mapped[str | None] = mapped_column(String(64))
    params: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    models: Mapped[list[Any] | None] = mapped_column(JSON)
    code_version: Mapped[str | None] = mapped_column(String(64))
    input_asset_ids: Mapped[list[Any] | None] = mapped_column(JSON)
    output_asset_ids: Mapped[list[Any] | None] = mapped_column(JSON)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    metrics: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    started: Mapped[datetime | None]
    ended: Mapped[datetime | None]
    host: Mapped[str | None] = mapped_column(String(255))
    error: Mapped[str | None] = mapped_column(Text)


class QCResult(Timestamped, Base):
    """Shot-level QC metrics and verdict of one run."""

    __tablename__ = "qc_result"
    __table_args__ = (CheckConstraint(_in("verdict", VERDICTS), name="verdict"),)

    run_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("run.id"), index=True)
    shot_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("shot.id"), index=True)
    verdict: Mapped[str] = mapped_column(String(16))
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON)
    reasons: Mapped[list[Any]] = mapped_column(JSON)
    report_asset_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("asset.id"))
    models: Mapped[list[Any] | None] = mapped_column(JSON)


class Review(Timestamped, Base):
    """A human decision on a run's result."""

    __tablename__ = "review"

    shot_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("shot.id"), index=True)
    run_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("run.id"), index=True)
    decision: Mapped[str] = mapped_column(String(32))
    reviewer: Mapped[str] = mapped_column(String(200))
    note: Mapped[str | None] = mapped_column(Text)


class Render(Timestamped, Base):
    """A deliverable of a run."""

    __tablename__ = "render"

    run_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("run.id"), index=True)
    shot_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("shot.id"), index=True)
    asset_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("asset.id"))
    approved: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    revoked_at: Mapped[datetime | None]
    delivered_to: Mapped[str | None] = mapped_column(Text)
    # provenance of the deliverable itself: the invisible mark it carries (hex of the 64-bit
    # payload, to find the render from a copy whose manifest was stripped), the consent it
    # was made under (None: scratch project, no consent on record) and whether it is signed
    watermark_payload: Mapped[str | None] = mapped_column(String(16), index=True)
    consent_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("consent.id"))
    signed: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class ApiToken(Timestamped, Base):
    """A bearer token of the HTTP API, scoped to one project. Only the secret's sha256 is kept."""

    __tablename__ = "api_token"

    name: Mapped[str] = mapped_column(String(200))
    project_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("project.id"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # the first characters of the secret, to tell tokens apart in listings and logs
    prefix: Mapped[str] = mapped_column(String(16))
    revoked_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]


class AuditEvent(Base):
    """Who did what, when. Append-only: the repository never updates or deletes a row."""

    __tablename__ = "audit_event"

    id: Mapped[uuid.UUID] = _pk()
    created: Mapped[datetime] = mapped_column(
        UTCDateTime(), nullable=False, default=utcnow, server_default=func.now(), index=True
    )
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(100), index=True)
    subject_type: Mapped[str] = mapped_column(String(50))
    subject_id: Mapped[str | None] = mapped_column(String(200))
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSON)

    def __repr__(self) -> str:
        return f"<AuditEvent {self.action} {self.subject_type}:{self.subject_id} by {self.actor}>"


__all__ = [
    "ASSET_ROLES",
    "ApiToken",
    "Asset",
    "AssetParent",
    "AuditEvent",
    "Base",
    "Consent",
    "Identity",
    "IdentityPhoto",
    "MEDIA_TYPES",
    "NAMING_CONVENTION",
    "Project",
    "QCResult",
    "Render",
    "Review",
    "RUN_STATUSES",
    "RUN_TERMINAL_STATUSES",
    "Run",
    "STAGE_RUN_STATUSES",
    "Shot",
    "StageRun",
    "UTCDateTime",
    "VERDICTS",
    "utcnow",
]
