"""Repository: every read and write of recast's database, as thin functions over a Session.

Routes, the CLI and tasks call these inside :func:`recast.db.session.session_scope`; nothing
outside ``recast.db`` builds ORM queries. Conventions:

* The session is the first argument; the caller owns the transaction (these functions flush,
  never commit).
* Ids are accepted as :class:`uuid.UUID` or ``str`` (with or without dashes). ORM objects are
  returned; ``*_to_dict`` helpers turn them into JSON-ready dicts with string ids.
* ``get_*`` raise :class:`~recast.errors.RecordNotFoundError` for an unknown id; ``find_*``
  return ``None``.
* JSON arguments may be plain data or contract records (pydantic models), enums, tuples, UUIDs,
  datetimes and fractions: they are converted to JSON-ready data on the way in.
* Registration of assets, asset parents, projects and idempotent shots uses
  ``INSERT ... ON CONFLICT DO NOTHING`` so concurrent workers registering the same
  content-addressed object do not fail on the unique constraint.
* No function here writes audit events implicitly: callers record them with
  :func:`add_audit_event`. Audit events are never updated or deleted.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Iterable, Sequence
from datetime import date, datetime, timezone
from fractions import Fraction
from pathlib import PurePath
from typing import Any

from pydantic import BaseModel
from sqlalchemy import Table, and_, func, select, text
from sqlalchemy.orm import Session

from recast.contracts import AssetRef
from recast.db.orm import (
    MEDIA_TYPES,
    RUN_STATUSES,
    RUN_TERMINAL_STATUSES,
    STAGE_RUN_STATUSES,
    VERDICTS,
    Asset,
    AssetParent,
    AuditEvent,
    Consent,
    Identity,
    IdentityPhoto,
    Project,
    QCResult,
    Render,
    Review,
    Run,
    Shot,
    StageRun,
    utcnow,
)
from recast.errors import ConsentError, InputError, InternalError, RecordNotFoundError, UsageError

IdLike = str | uuid.UUID

_ERROR_MAX_CHARS = 20_000


# --- helpers ------------------------------------------------------------------------------------
def as_uuid(value: IdLike | None, what: str = "record") -> uuid.UUID:
    """``value`` as a UUID; a malformed id raises RecordNotFoundError naming ``what``."""
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value).strip())
    except (ValueError, AttributeError, TypeError):
        raise RecordNotFoundError(f"{what} {value!r} not found: not a valid id") from None


def _opt_uuid(value: IdLike | None, what: str) -> uuid.UUID | None:
    return None if value is None else as_uuid(value, what)


def to_json(value: Any) -> Any:
    """Plain JSON data from records, enums, tuples, UUIDs, datetimes, fractions and paths."""
    if isinstance(value, enum.Enum):  # before str: str-based enums (Verdict, Mode) are str too
        return to_json(value.value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_json(v) for v in value]
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, Fraction):
        return f"{value.numerator}/{value.denominator}"
    if isinstance(value, PurePath):
        return str(value)
    if hasattr(value, "item"):  # numpy scalars, without importing numpy
        return value.item()
    raise UsageError(f"cannot store a {type(value).__name__} as JSON: {value!r:.80}")


def _id_list(values: Iterable[IdLike], what: str) -> list[str]:
    return [str(as_uuid(v, what)) for v in values]


def _aware(when: datetime | None) -> datetime | None:
    if when is None:
        return None
    return when.replace(tzinfo=timezone.utc) if when.tzinfo is None else when.astimezone(timezone.utc)


def _iso(when: datetime | None) -> str | None:
    return None if when is None else when.isoformat()


def _get(s: Session, cls: type, value: IdLike, what: str) -> Any:
    obj = s.get(cls, as_uuid(value, what))
    if obj is None:
        raise RecordNotFoundError(f"{what} {value} not found")
    return obj


def _insert_ignore(
    s: Session, table: Table, values: dict[str, Any], conflict_cols: Sequence[str] | None, where: Any = None
) -> None:
    """INSERT a row unless one with the same ``conflict_cols`` exists (no error, no update).

    (Whether it was inserted is not told: the driver's rowcount is -1 here on PostgreSQL, and
    RETURNING needs SQLite 3.35. Callers that need to know look the row up.) ``where`` names a partial unique index (its predicate); ``conflict_cols`` None ignores a
    conflict on any unique constraint.
    """
    dialect = s.get_bind().dialect.name
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    elif dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:  # other backends: check first (racy, but recast only supports the two above)
        cols = list(conflict_cols or ())
        cond = and_(*(table.c[c] == values[c] for c in cols)) if cols else None
        if cond is None or s.execute(select(table.c[cols[0]]).where(cond).limit(1)).first() is None:
            s.execute(table.insert().values(**values))
        return
    if conflict_cols is None:
        stmt = insert(table).values(**values).on_conflict_do_nothing()
    else:
        stmt = insert(table).values(**values).on_conflict_do_nothing(index_elements=list(conflict_cols), index_where=where)
    s.execute(stmt)


def _check_choice(value: str, allowed: Sequence[str], what: str) -> str:
    if value not in allowed:
        raise UsageError(f"{what} {value!r} is not one of {', '.join(allowed)}")
    return value


# --- projects -----------------------------------------------------------------------------------
def get_or_create_project(
    s: Session,
    name: str,
    *,
    media_type: str | None = None,
    consent_required: bool = True,
    commercial: bool = False,
) -> Project:
    """The project called ``name``, created with the given attributes if it does not exist.

    An existing project keeps its attributes (they are not overwritten by a later call).
    """
    name = name.strip()
    if not name:
        raise UsageError("project name must not be empty")
    if media_type is not None:
        _check_choice(media_type, MEDIA_TYPES, "project media type")
    _insert_ignore(
        s,
        Project.__table__,
        {
            "id": uuid.uuid4(),
            "name": name,
            "media_type": media_type,
            "consent_required": consent_required,
            "commercial": commercial,
            "created": utcnow(),
            "updated": utcnow(),
        },
        ["name"],
    )
    return s.scalars(select(Project).where(Project.name == name)).one()


def find_project(s: Session, id_or_name: IdLike) -> Project | None:
    """A project by id or by name."""
    if isinstance(id_or_name, uuid.UUID):
        return s.get(Project, id_or_name)
    try:
        found = s.get(Project, uuid.UUID(id_or_name))
        if found is not None:
            return found
    except ValueError:
        pass
    return s.scalars(select(Project).where(Project.name == id_or_name)).one_or_none()


def get_project(s: Session, id_or_name: IdLike) -> Project:
    """A project by id or name; RecordNotFoundError if there is none."""
    found = find_project(s, id_or_name)
    if found is None:
        raise RecordNotFoundError(f"project {id_or_name} not found")
    return found


def set_project_qc_thresholds(s: Session, project_id: IdLike, thresholds: dict[str, float] | None) -> Project:
    """Override (or with None, reset) a project's QC thresholds (names as in Settings, no ``qc_``)."""
    project = _get(s, Project, project_id, "project")
    project.qc_thresholds = to_json(thresholds)
    s.flush()
    return project


# --- identities and consent -------------------------------------------------------------------
def create_identity(
    s: Session, *, name: str, photo_asset_ids: Iterable[IdLike] = (), note: str | None = None
) -> Identity:
    """A new identity (a person whose head or face may be used), with reference photos."""
    if not name.strip():
        raise UsageError("identity name must not be empty")
    identity = Identity(name=name.strip(), note=note)
    s.add(identity)
    s.flush()
    add_identity_photos(s, identity.id, photo_asset_ids)
    return identity


def add_identity_photos(s: Session, identity_id: IdLike, asset_ids: Iterable[IdLike]) -> None:
    """Link reference photo assets to an identity (links that exist already are kept)."""
    iid = as_uuid(identity_id, "identity")
    for aid in asset_ids:
        _insert_ignore(
            s,
            IdentityPhoto.__table__,
            {"identity_id": iid, "asset_id": as_uuid(aid, "asset"), "created": utcnow()},
            ["identity_id", "asset_id"],
        )


def identity_photo_ids(s: Session, identity_id: IdLike) -> list[str]:
    """Ids of an identity's reference photos, oldest link first."""
    rows = s.scalars(
        select(IdentityPhoto.asset_id)
        .where(IdentityPhoto.identity_id == as_uuid(identity_id, "identity"))
        .order_by(IdentityPhoto.created)
    )
    return [str(r) for r in rows]


def get_identity(s: Session, identity_id: IdLike) -> Identity:
    """An identity by id; RecordNotFoundError if unknown."""
    return _get(s, Identity, identity_id, "identity")


def find_identity(s: Session, id_or_name: IdLike) -> Identity | None:
    """An identity by id, or the newest one with that name."""
    try:
        found = s.get(Identity, as_uuid(id_or_name))
        if found is not None:
            return found
    except RecordNotFoundError:
        pass
    return s.scalars(
        select(Identity).where(Identity.name == str(id_or_name)).order_by(Identity.created.desc()).limit(1)
    ).first()


def add_consent(
    s: Session,
    *,
    identity_id: IdLike,
    scope: dict[str, Any],
    valid_from: datetime | None = None,
    valid_until: datetime | None = None,
    release_asset_id: IdLike | None = None,
) -> Consent:
    """Record a consent. ``scope``: ``{"projects": [...], "media": [...], "territory": [...]}``.

    In each list, ``"*"`` (or leaving the key out) means unrestricted; project entries may be
    names or ids. ``valid_from`` defaults to now.
    """
    get_identity(s, identity_id)
    unknown = set(scope) - {"projects", "media", "territory"}
    if unknown:
        raise UsageError(f"consent scope has unknown keys {sorted(unknown)}: use projects, media, territory")
    clean = {k: [str(x) for x in (v if isinstance(v, (list, tuple, set)) else [v])] for k, v in scope.items()}
    start = _aware(valid_from) or utcnow()
    end = _aware(valid_until)
    if end is not None and end <= start:
        raise UsageError(f"consent valid_until {end.isoformat()} is not after valid_from {start.isoformat()}")
    consent = Consent(
        identity_id=as_uuid(identity_id, "identity"),
        scope=clean,
        valid_from=start,
        valid_until=end,
        release_asset_id=_opt_uuid(release_asset_id, "asset"),
    )
    s.add(consent)
    s.flush()
    return consent


def revoke_consent(s: Session, consent_id: IdLike, *, reason: str, when: datetime | None = None) -> Consent:
    """Mark a consent revoked (from ``when``, default now); the row is kept for the record."""
    consent = _get(s, Consent, consent_id, "consent")
    if consent.revoked_at is None:
        consent.revoked_at = _aware(when) or utcnow()
        consent.reason = reason
        s.flush()
    return consent


def consents_for_identity(s: Session, identity_id: IdLike) -> list[Consent]:
    """Every consent of an identity, newest first (revoked and expired included)."""
    return list(
        s.scalars(
            select(Consent)
            .where(Consent.identity_id == as_uuid(identity_id, "identity"))
            .order_by(Consent.created.desc())
        )
    )


def _scope_allows(scope: dict[str, Any], key: str, candidates: Iterable[str | None]) -> bool:
    allowed = scope.get(key)
    if allowed is None or "*" in allowed:
        return True
    return any(c is not None and c in allowed for c in candidates)


def _consent_problem(
    c: Consent, project: Project, media_type: str | None, territory: str | None, at: datetime
) -> str | None:
    if c.revoked_at is not None and c.revoked_at <= at:
        return f"consent {c.id} was revoked on {c.revoked_at.date()}"
    if c.valid_from > at:
        return f"consent {c.id} is valid only from {c.valid_from.date()}"
    if c.valid_until is not None and c.valid_until <= at:
        return f"consent {c.id} expired on {c.valid_until.date()}"
    scope = c.scope or {}
    if not _scope_allows(scope, "projects", (project.name, str(project.id))):
        return f"consent {c.id} does not cover project {project.name!r}"
    if not _scope_allows(scope, "media", (media_type,)):
        return f"consent {c.id} does not cover medium {media_type!r}"
    if territory is not None and not _scope_allows(scope, "territory", (territory,)):
        return f"consent {c.id} does not cover territory {territory!r}"
    return None


def check_consent(
    s: Session,
    identity_id: IdLike,
    project_id: IdLike,
    *,
    media_type: str | None = None,
    territory: str | None = None,
    at: datetime | None = None,
) -> Consent:
    """The consent covering this use of an identity, or ConsentError saying why none does.

    Covered means: not revoked, inside its validity at ``at`` (default now), the project (by
    name or id) and the medium (default: the project's media type) in scope. ``territory`` is
    checked only when given. A project with ``consent_required=False`` still needs a record
    here: callers decide whether to call this at all.
    """
    identity = get_identity(s, identity_id)
    project = get_project(s, project_id)
    media_type = media_type or project.media_type
    when = _aware(at) or utcnow()
    problems = []
    for c in consents_for_identity(s, identity.id):
        problem = _consent_problem(c, project, media_type, territory, when)
        if problem is None:
            return c
        problems.append(problem)
    if not problems:
        raise ConsentError(f"identity {identity.name!r} ({identity.id}) has no consent on record")
    raise ConsentError(
        f"no consent of identity {identity.name!r} covers project {project.name!r}: " + "; ".join(problems[:3])
    )


def find_covering_consent(
    s: Session,
    identity_id: IdLike,
    project_id: IdLike,
    *,
    media_type: str | None = None,
    territory: str | None = None,
    at: datetime | None = None,
) -> Consent | None:
    """Like :func:`check_consent`, but None instead of an error."""
    try:
        return check_consent(s, identity_id, project_id, media_type=media_type, territory=territory, at=at)
    except ConsentError:
        return None


# --- assets and lineage -------------------------------------------------------------------------
def _check_sha(sha256: str) -> str:
    sha = sha256.strip().lower()
    if len(sha) != 64 or any(ch not in "0123456789abcdef" for ch in sha):
        raise InputError(f"asset sha256 {sha256!r} is not 64 hex digits")
    return sha


def register_asset(
    s: Session,
    *,
    uri: str,
    sha256: str,
    size: int,
    media_type: str,
    role: str,
    media_info: Any = None,
    parent_ids: Iterable[IdLike] = (),
    stage_run_id: IdLike | None = None,
) -> Asset:
    """Record a stored object, idempotently.

    The same ``uri`` and ``sha256`` give back the existing row (its role and media type are
    kept; missing media info is filled in; a soft-deleted row comes back to life), with any new
    ``parent_ids`` added to its lineage as links of ``stage_run_id`` (the stage run that made
    it; None outside a stage). Safe against concurrent registration of one object.

    A parent that *is* the object (a stage output byte-identical to one of its inputs, such as a
    chunk of a plate passed through untouched: content addressing makes them one row) is left
    out: the asset is its own input, not its own child. The stage run still lists it as input
    and output.
    """
    sha = _check_sha(sha256)
    if size < 0:
        raise InputError(f"asset {uri}: size {size} is negative")
    info = to_json(media_info)
    now = utcnow()
    _insert_ignore(
        s,
        Asset.__table__,
        {
            "id": uuid.uuid4(),
            "uri": uri,
            "sha256": sha,
            "size": int(size),
            "media_type": media_type,
            "role": role,
            "media_info": info,
            "created": now,
            "updated": now,
        },
        ["uri", "sha256"],
    )
    asset = s.scalars(
        select(Asset).where(Asset.uri == uri, Asset.sha256 == sha).execution_options(populate_existing=True)
    ).one()
    if info is not None and asset.media_info is None:
        asset.media_info = info
    if asset.deleted_at is not None:
        asset.deleted_at = None
    add_asset_parents(s, asset.id, [p for p in parent_ids if as_uuid(p, "asset") != asset.id], stage_run_id=stage_run_id)
    s.flush()
    return asset


_NO_STAGE_RUN = text("stage_run_id IS NULL")
_WITH_STAGE_RUN = text("stage_run_id IS NOT NULL")


def add_asset_parents(
    s: Session, asset_id: IdLike, parent_ids: Iterable[IdLike], *, stage_run_id: IdLike | None = None
) -> None:
    """Add lineage links ``asset_id`` ← each parent, made by ``stage_run_id`` (None: outside a
    stage). Existing links are kept; each link is stored once per stage run.

    A self-link here is a bug of the caller (:func:`register_asset` leaves out the parent that
    is the object itself), hence :class:`~recast.errors.InternalError`, not bad input.
    """
    aid = as_uuid(asset_id, "asset")
    sid = _opt_uuid(stage_run_id, "stage run")
    for p in parent_ids:
        pid = as_uuid(p, "asset")
        if pid == aid:
            raise InternalError(f"lineage link asked from asset {aid} to itself")
        values = {"id": uuid.uuid4(), "asset_id": aid, "parent_id": pid, "stage_run_id": sid, "created": utcnow()}
        if sid is None:
            _insert_ignore(s, AssetParent.__table__, values, ["asset_id", "parent_id"], where=_NO_STAGE_RUN)
        else:
            _insert_ignore(s, AssetParent.__table__, values, ["asset_id", "parent_id", "stage_run_id"], where=_WITH_STAGE_RUN)


def get_asset(s: Session, asset_id: IdLike) -> Asset:
    """An asset by id; RecordNotFoundError if unknown."""
    return _get(s, Asset, asset_id, "asset")


def get_assets(s: Session, asset_ids: Iterable[IdLike]) -> list[Asset]:
    """Assets by id, in the order given; ids the database does not know are left out."""
    ids = [as_uuid(i, "asset") for i in asset_ids]
    found: dict[uuid.UUID, Asset] = {}
    for i in range(0, len(ids), 500):
        for a in s.scalars(select(Asset).where(Asset.id.in_(ids[i : i + 500]))):
            found[a.id] = a
    return [found[i] for i in ids if i in found]


def find_asset(s: Session, ref: IdLike) -> Asset | None:
    """An asset by id, sha256 (or a unique prefix of 12+ hex digits), or URI.

    Several rows may share a sha256 (one object at several URIs) or a URI (content replaced
    at a path): the newest live one wins.
    """
    if isinstance(ref, uuid.UUID):
        return s.get(Asset, ref)
    text = str(ref).strip()
    try:
        found = s.get(Asset, uuid.UUID(text))
        if found is not None:
            return found
    except ValueError:
        pass
    newest = (Asset.deleted_at.is_not(None), Asset.created.desc())
    low = text.lower()
    if 12 <= len(low) <= 64 and all(ch in "0123456789abcdef" for ch in low):
        cond = Asset.sha256 == low if len(low) == 64 else Asset.sha256.startswith(low, autoescape=True)
        rows = list(s.scalars(select(Asset).where(cond).order_by(*newest).limit(50)))
        if rows:
            if len({r.sha256 for r in rows}) > 1:
                raise UsageError(f"asset sha256 prefix {text!r} is ambiguous: give more digits")
            return rows[0]
    return s.scalars(select(Asset).where(Asset.uri == text).order_by(*newest).limit(1)).first()


def mark_asset_deleted(s: Session, asset_id: IdLike, when: datetime | None = None) -> Asset:
    """Soft-delete an asset (its object was removed from the store); lineage is kept."""
    asset = get_asset(s, asset_id)
    if asset.deleted_at is None:
        asset.deleted_at = _aware(when) or utcnow()
        s.flush()
    return asset


def asset_to_dict(a: Asset) -> dict[str, Any]:
    """A JSON-ready summary of an asset."""
    return {
        "id": str(a.id),
        "uri": a.uri,
        "sha256": a.sha256,
        "size": a.size,
        "media_type": a.media_type,
        "role": a.role,
        "media_info": a.media_info,
        "created": _iso(a.created),
        "deleted_at": _iso(a.deleted_at),
    }


def asset_ref(a: Asset) -> AssetRef:
    """The contract record (:class:`recast.contracts.AssetRef`) for an asset row."""
    return AssetRef(asset_id=str(a.id), uri=a.uri, sha256=a.sha256, media_type=a.media_type, size=a.size)


def asset_parent_ids(s: Session, asset_id: IdLike, *, stage_run_id: IdLike | None = None) -> list[str]:
    """Direct parents of an asset (recorded by any stage run, or by ``stage_run_id`` only)."""
    q = select(AssetParent.parent_id).where(AssetParent.asset_id == as_uuid(asset_id, "asset"))
    if stage_run_id is not None:
        q = q.where(AssetParent.stage_run_id == as_uuid(stage_run_id, "stage run"))
    return sorted({str(r) for r in s.scalars(q)})


def producing_run_id(s: Session, asset_id: IdLike) -> uuid.UUID | None:
    """The run an asset is the output of: the newest run that delivered it, else the run of the
    newest stage run that made it (None for inputs and for links older than migration 0004)."""
    aid = as_uuid(asset_id, "asset")
    delivered = s.scalars(select(Run.id).where(Run.output_asset_id == aid).order_by(Run.created.desc()).limit(1)).first()
    if delivered is not None:
        return delivered
    return s.scalars(
        select(StageRun.run_id)
        .join(AssetParent, AssetParent.stage_run_id == StageRun.id)
        .where(AssetParent.asset_id == aid, StageRun.run_id.is_not(None))
        .order_by(AssetParent.created.desc())
        .limit(1)
    ).first()


def run_work_stage_run_ids(s: Session, run_id: IdLike) -> set[uuid.UUID]:
    """The stage runs whose work a run used: its own, and for each of its ``reused`` stage runs
    the stage run that did the work (which recorded the lineage links of its outputs)."""
    ids: set[uuid.UUID] = set()
    for sid, origin in s.execute(select(StageRun.id, StageRun.reused_from_id).where(StageRun.run_id == as_uuid(run_id, "run"))):
        ids.add(sid)
        if origin is not None:
            ids.add(origin)
    return ids


def _links_of(
    links: list[tuple[uuid.UUID, uuid.UUID | None]], work: set[uuid.UUID] | None
) -> list[uuid.UUID]:
    """Which of an asset's links (parent, stage run; oldest first) make its lineage.

    The links of one stage run, never a mixture: the first of the run's stage runs (``work``)
    that made the asset, else (the run did not make it, or no run is known) the first stage run
    that did. The first, because a later stage run can only have made the same bytes again: a
    swap that passes a chunk without the person through returns the plate's chunk itself, and
    its links (to analyses of that very chunk) would make the chunk its own ancestor. Only an
    asset no stage run recorded (links older than migration 0004, or made outside a stage)
    shows all its links.
    """
    ours = [sr for _, sr in links if work is not None and sr in work]
    staged = ours or [sr for _, sr in links if sr is not None]
    chosen = [p for p, sr in links if sr == staged[0]] if staged else [p for p, _ in links]
    return list(dict.fromkeys(chosen))


def _graph(
    s: Session, start: uuid.UUID, *, up: bool, max_depth: int, work: set[uuid.UUID] | None = None
) -> tuple[dict[uuid.UUID, list[uuid.UUID]], dict[uuid.UUID, Asset]]:
    """Edges reachable from ``start`` (towards parents if ``up``, then chosen per asset by
    :func:`_links_of` for the run whose stage runs are ``work``), one layer per query."""
    near, far = (AssetParent.asset_id, AssetParent.parent_id) if up else (AssetParent.parent_id, AssetParent.asset_id)
    edges: dict[uuid.UUID, list[uuid.UUID]] = {}
    seen = {start}
    frontier = {start}
    for _ in range(max_depth):
        if not frontier:
            break
        batch = list(frontier)
        frontier = set()
        found: dict[uuid.UUID, list[tuple[uuid.UUID, uuid.UUID | None]]] = {}
        for i in range(0, len(batch), 500):  # keep IN lists modest
            q = select(near, far, AssetParent.stage_run_id).where(near.in_(batch[i : i + 500])).order_by(AssetParent.created)
            for a, b, sr in s.execute(q):
                found.setdefault(a, []).append((b, sr))
        for a, links in found.items():
            edges[a] = _links_of(links, work) if up else list(dict.fromkeys(b for b, _ in links))
            for b in edges[a]:
                if b not in seen:
                    seen.add(b)
                    frontier.add(b)
    assets: dict[uuid.UUID, Asset] = {}
    ids = list(seen)
    for i in range(0, len(ids), 500):
        for a in s.scalars(select(Asset).where(Asset.id.in_(ids[i : i + 500]))):
            assets[a.id] = a
    return edges, assets


def _tree(
    node: uuid.UUID,
    edges: dict[uuid.UUID, list[uuid.UUID]],
    assets: dict[uuid.UUID, Asset],
    key: str,
    path: frozenset[uuid.UUID],
    depth: int,
    max_depth: int,
) -> dict[str, Any]:
    out: dict[str, Any] = {"asset": asset_to_dict(assets[node]) if node in assets else {"id": str(node), "missing": True}, key: []}
    if node in path:
        out["cycle"] = True  # a lineage loop (should not happen): stop here rather than recurse forever
        return out
    nexts = edges.get(node, [])
    if depth >= max_depth:
        if nexts:
            out["truncated"] = True
        return out
    out[key] = [_tree(n, edges, assets, key, path | {node}, depth + 1, max_depth) for n in nexts]
    return out


def asset_lineage(s: Session, asset_id: IdLike, *, run_id: IdLike | None = None, max_depth: int = 32) -> dict[str, Any]:
    """Where an asset came from: ``{"asset": {...}, "parents": [<same shape>, ...], "run_id": ...}``.

    Content addressing shares an asset between every run that produced the same bytes, so the
    tree is that of one run: ``run_id``, by default the run that produced the asset
    (:func:`producing_run_id`). At each asset it follows the links recorded by that run's stage
    runs (a reused stage run stands for the one that did the work), see :func:`_links_of`.
    ``run_id`` in the answer is the run used (None: no run known, every link shown).

    A node met again on its own path is marked ``"cycle": True`` and not expanded; nodes below
    ``max_depth`` are marked ``"truncated": True``. Shared ancestors appear under every child.
    """
    aid = get_asset(s, asset_id).id
    rid = as_uuid(run_id, "run") if run_id is not None else producing_run_id(s, aid)
    work = run_work_stage_run_ids(s, rid) if rid is not None else None
    edges, assets = _graph(s, aid, up=True, max_depth=max_depth, work=work)
    tree = _tree(aid, edges, assets, "parents", frozenset(), 0, max_depth)
    tree["run_id"] = None if rid is None else str(rid)
    return tree


def asset_descendants(s: Session, asset_id: IdLike, *, max_depth: int = 32) -> dict[str, Any]:
    """What was made from an asset: ``{"asset": {...}, "children": [<same shape>, ...]}``."""
    aid = get_asset(s, asset_id).id
    edges, assets = _graph(s, aid, up=False, max_depth=max_depth)
    return _tree(aid, edges, assets, "children", frozenset(), 0, max_depth)


# --- shots and runs -----------------------------------------------------------------------------
def create_shot(
    s: Session,
    *,
    project_id: IdLike,
    code: str,
    plate_asset_id: IdLike | None,
    params: Any,
    source_asset_ids: Iterable[IdLike],
    identity_id: IdLike | None = None,
    priority: int = 0,
    idempotency_key: str | None = None,
) -> Shot:
    """A new shot; with an ``idempotency_key`` already used, the existing shot is returned.

    A code names one shot within its project (a unique index says so): when ``code`` is taken
    (the same plate submitted twice in one second, a code given again), the shot gets the next
    free ``CODE-2``, ``CODE-3``... — read the returned shot's ``code``. Safe against concurrent
    submissions. ``params`` may be a :class:`recast.contracts.ShotParams` or a dict.
    ``plate_asset_id`` may be None when the plate is registered later (:func:`set_shot_plate`).
    """
    pid = get_project(s, project_id).id
    base = code.strip()
    if not base:
        raise UsageError("shot code must not be empty")
    values = {
        "project_id": pid,
        "plate_asset_id": _opt_uuid(plate_asset_id, "asset"),
        "params": to_json(params) or {},
        "identity_id": _opt_uuid(identity_id, "identity"),
        "source_asset_ids": _id_list(source_asset_ids, "asset"),
        "priority": int(priority),
        "idempotency_key": idempotency_key,
    }
    by_key = select(Shot).where(Shot.idempotency_key == idempotency_key)
    if idempotency_key is not None:
        existing = s.scalars(by_key).one_or_none()
        if existing is not None:
            return existing
    candidate = base
    for _ in range(100):
        shot_id, now = uuid.uuid4(), utcnow()
        row = {"id": shot_id, "code": candidate, "status": "new", "created": now, "updated": now, **values}
        # no conflict target: a taken code and a used idempotency key both leave the row out
        _insert_ignore(s, Shot.__table__, row, None)
        made = s.scalars(select(Shot).where(Shot.id == shot_id)).first()
        if made is not None:
            return made
        if idempotency_key is not None:
            existing = s.scalars(by_key).one_or_none()
            if existing is not None:  # a concurrent submission with the same key won
                return existing
        candidate = _next_free_code(s, pid, base)
    raise InternalError(f"no free shot code after {base!r} in project {pid} after 100 attempts")


def _next_free_code(s: Session, project_id: uuid.UUID, base: str) -> str:
    """``base-N`` with N one more than the highest taken (at least 2)."""
    taken = s.scalars(
        select(Shot.code).where(Shot.project_id == project_id, Shot.code.startswith(f"{base}-", autoescape=True))
    )
    highest = 1
    for c in taken:
        tail = c[len(base) + 1 :]
        if tail.isdigit():
            highest = max(highest, int(tail))
    return f"{base}-{highest + 1}"


def set_shot_plate(s: Session, shot_id: IdLike, plate_asset_id: IdLike) -> Shot:
    """Attach the registered plate to a shot (after ingest)."""
    shot = get_shot(s, shot_id)
    shot.plate_asset_id = as_uuid(plate_asset_id, "asset")
    s.flush()
    return shot


def get_shot(s: Session, shot_id: IdLike) -> Shot:
    """A shot by id; RecordNotFoundError if unknown."""
    return _get(s, Shot, shot_id, "shot")


def find_shot(s: Session, *, project_id: IdLike, code: str) -> Shot | None:
    """The newest shot of a project with that code."""
    return s.scalars(
        select(Shot)
        .where(Shot.project_id == as_uuid(project_id, "project"), Shot.code == code)
        .order_by(Shot.created.desc())
        .limit(1)
    ).first()


def list_shots(
    s: Session, *, project_id: IdLike | None = None, status: str | None = None, limit: int = 100
) -> list[Shot]:
    """Shots, highest priority first, then oldest first (a work queue's order)."""
    q = select(Shot)
    if project_id is not None:
        q = q.where(Shot.project_id == as_uuid(project_id, "project"))
    if status is not None:
        q = q.where(Shot.status == status)
    return list(s.scalars(q.order_by(Shot.priority.desc(), Shot.created).limit(limit)))


def create_run(s: Session, shot_id: IdLike, *, params: Any = None) -> Run:
    """A new queued run (execution of ``swap_shot``) of a shot; the shot becomes ``queued``."""
    shot = get_shot(s, shot_id)
    run = Run(shot_id=shot.id, status="queued", params=to_json(params))
    s.add(run)
    shot.status = "queued"
    s.flush()
    return run


def set_run_status(
    s: Session,
    run_id: IdLike,
    status: str,
    *,
    error: str | None = None,
    prefect_flow_run_id: str | None = None,
    output_asset_id: IdLike | None = None,
    summary: Any = None,
) -> Run:
    """Move a run to ``status`` and keep its shot's status in step.

    ``started`` is set the first time a run goes ``running``; ``ended`` is set when it reaches a
    terminal status (done, failed, cancelled, rejected) and cleared if it leaves one (re-queued).
    Given values of the keyword arguments replace stored ones; None leaves them as they are.
    """
    _check_choice(status, RUN_STATUSES, "run status")
    run = get_run(s, run_id)
    now = utcnow()
    run.status = status
    if status == "running" and run.started is None:
        run.started = now
    if status in RUN_TERMINAL_STATUSES:
        run.ended = now
    else:
        run.ended = None
    if error is not None:
        run.error = error[:_ERROR_MAX_CHARS]
    if prefect_flow_run_id is not None:
        run.prefect_flow_run_id = str(prefect_flow_run_id)
    if output_asset_id is not None:
        run.output_asset_id = as_uuid(output_asset_id, "asset")
    if summary is not None:
        run.summary = to_json(summary)
    shot = s.get(Shot, run.shot_id)
    if shot is not None:
        shot.status = status
    s.flush()
    return run


def get_run(s: Session, run_id: IdLike) -> Run:
    """A run by id; RecordNotFoundError if unknown."""
    return _get(s, Run, run_id, "run")


def find_run_by_flow_run(s: Session, prefect_flow_run_id: str) -> Run | None:
    """The run a Prefect flow run executes."""
    return s.scalars(
        select(Run).where(Run.prefect_flow_run_id == str(prefect_flow_run_id)).order_by(Run.created.desc()).limit(1)
    ).first()


def latest_run_for_shot(s: Session, shot_id: IdLike) -> Run | None:
    """A shot's newest run."""
    return s.scalars(
        select(Run).where(Run.shot_id == as_uuid(shot_id, "shot")).order_by(Run.created.desc()).limit(1)
    ).first()


def list_runs(
    s: Session, limit: int = 20, *, status: str | None = None, project_id: IdLike | None = None
) -> list[tuple[Run, Shot, Project]]:
    """Newest runs first, each with its shot and project."""
    q = select(Run, Shot, Project).join(Shot, Run.shot_id == Shot.id).join(Project, Shot.project_id == Project.id)
    if status is not None:
        q = q.where(Run.status == status)
    if project_id is not None:
        q = q.where(Project.id == get_project(s, project_id).id)
    return [tuple(row) for row in s.execute(q.order_by(Run.created.desc()).limit(limit))]  # type: ignore[misc]


def run_to_dict(run: Run, shot: Shot | None = None, project: Project | None = None) -> dict[str, Any]:
    """A JSON-ready summary of a run (with its shot and project when given)."""
    out: dict[str, Any] = {
        "id": str(run.id),
        "shot_id": str(run.shot_id),
        "status": run.status,
        "params": run.params,
        "prefect_flow_run_id": run.prefect_flow_run_id,
        "created": _iso(run.created),
        "started": _iso(run.started),
        "ended": _iso(run.ended),
        "error": run.error,
        "output_asset_id": None if run.output_asset_id is None else str(run.output_asset_id),
        "summary": run.summary,
    }
    if shot is not None:
        out["shot"] = {
            "id": str(shot.id),
            "code": shot.code,
            "status": shot.status,
            "priority": shot.priority,
            "identity_id": None if shot.identity_id is None else str(shot.identity_id),
            "plate_asset_id": None if shot.plate_asset_id is None else str(shot.plate_asset_id),
        }
    if project is not None:
        out["project"] = {"id": str(project.id), "name": project.name, "media_type": project.media_type}
    return out


# --- stage runs (provenance and the work-key cache) ---------------------------------------------
def start_stage_run(
    s: Session,
    *,
    run_id: IdLike | None,
    shot_id: IdLike | None,
    stage: str,
    work_key: str,
    chunk_index: int | None = None,
    frame_start: int | None = None,
    frame_end: int | None = None,
    params: Any,
    models: Any,
    code_version: str | None,
    input_asset_ids: Iterable[IdLike],
    host: str | None,
    prefect_flow_run_id: str | None = None,
    prefect_task_run_id: str | None = None,
) -> StageRun:
    """Record that a stage starts working (status ``running``, ``started`` now).

    ``models`` is a list of :class:`recast.contracts.ModelRef` or ``{name, version, sha256}``
    dicts. Finish the row with :func:`finish_stage_run`.
    """
    if not work_key:
        raise UsageError(f"stage {stage}: empty work key")
    row = StageRun(
        run_id=_opt_uuid(run_id, "run"),
        shot_id=_opt_uuid(shot_id, "shot"),
        stage=stage,
        work_key=work_key,
        chunk_index=chunk_index,
        frame_start=frame_start,
        frame_end=frame_end,
        status="running",
        params=to_json(params),
        models=to_json(list(models or ())),
        code_version=code_version,
        input_asset_ids=_id_list(input_asset_ids, "asset"),
        host=host,
        prefect_flow_run_id=None if prefect_flow_run_id is None else str(prefect_flow_run_id),
        prefect_task_run_id=None if prefect_task_run_id is None else str(prefect_task_run_id),
        started=utcnow(),
    )
    s.add(row)
    s.flush()
    return row


def finish_stage_run(
    s: Session,
    stage_run_id: IdLike,
    *,
    status: str,
    output_asset_ids: Iterable[IdLike] = (),
    result: Any = None,
    metrics: Any = None,
    error: str | None = None,
) -> StageRun:
    """Close a stage run as ``done`` or ``failed`` with its outputs, frozen result and metrics.

    ``result`` is the stage's contract record (or its JSON): a later identical piece of work
    can return it from :func:`find_done_stage_run` without working.
    """
    _check_choice(status, ("done", "failed"), "stage run final status")
    row = get_stage_run(s, stage_run_id)
    row.status = status
    row.output_asset_ids = _id_list(output_asset_ids, "asset")
    row.result = to_json(result)
    row.metrics = to_json(metrics)
    if error is not None:
        row.error = error[:_ERROR_MAX_CHARS]
    row.ended = utcnow()
    s.flush()
    return row


def get_stage_run(s: Session, stage_run_id: IdLike) -> StageRun:
    """A stage run by id; RecordNotFoundError if unknown."""
    return _get(s, StageRun, stage_run_id, "stage run")


def find_done_stage_run(
    s: Session, stage: str, work_key: str, *, require_live_outputs: bool = True
) -> StageRun | None:
    """The newest ``done`` stage run of ``stage`` with ``work_key`` (the cache lookup).

    With ``require_live_outputs`` (default), rows whose output assets were soft-deleted are
    skipped. The caller must still check that the outputs exist in the object store.
    """
    rows = s.scalars(
        select(StageRun)
        .where(StageRun.stage == stage, StageRun.work_key == work_key, StageRun.status == "done")
        .order_by(StageRun.ended.desc(), StageRun.created.desc())
        .limit(20)
    )
    for row in rows:
        if not require_live_outputs or not row.output_asset_ids:
            return row
        ids = [as_uuid(i, "asset") for i in row.output_asset_ids]
        live = s.scalar(
            select(func.count()).select_from(Asset).where(Asset.id.in_(ids), Asset.deleted_at.is_(None))
        )
        if live == len(set(ids)):
            return row
    return None


def record_reused_stage_run(
    s: Session,
    done: StageRun | IdLike | None = None,
    *,
    run_id: IdLike | None,
    shot_id: IdLike | None,
    stage: str | None = None,
    work_key: str | None = None,
    chunk_index: int | None = None,
    frame_start: int | None = None,
    frame_end: int | None = None,
    params: Any = None,
    models: Any = None,
    code_version: str | None = None,
    input_asset_ids: Iterable[IdLike] | None = None,
    output_asset_ids: Iterable[IdLike] | None = None,
    result: Any = None,
    metrics: Any = None,
    host: str | None = None,
    prefect_flow_run_id: str | None = None,
    prefect_task_run_id: str | None = None,
) -> StageRun:
    """Record that a stage reused earlier work instead of working (status ``reused``).

    Two ways to call it:

    * with ``done``, the row (or id) of the work being reused: everything not given (stage,
      work key, chunk and frames, parameters, models, code version, inputs, outputs, result,
      metrics) is copied from it;
    * without ``done``, with the same keywords as :func:`start_stage_run` plus
      ``output_asset_ids``/``result``: the done row is looked up by ``stage`` and ``work_key``.

    ``reused_from_id`` points at the row that did the work (following a chain of reuses); it is
    None only if no done row can be found any more.
    """
    if done is not None:
        src: StageRun | None = done if isinstance(done, StageRun) else get_stage_run(s, done)
    else:
        if not stage or not work_key:
            raise UsageError("record_reused_stage_run needs the done stage run, or stage and work_key")
        src = find_done_stage_run(s, stage, work_key) or find_done_stage_run(
            s, stage, work_key, require_live_outputs=False
        )
    origin_id = None
    if src is not None:
        origin_id = src.reused_from_id if src.status == "reused" and src.reused_from_id else src.id

    def pick(given: Any, attr: str, convert: Any = None) -> Any:
        if given is not None:
            return convert(given) if convert else given
        return getattr(src, attr) if src is not None else None

    now = utcnow()
    row = StageRun(
        run_id=_opt_uuid(run_id, "run"),
        shot_id=_opt_uuid(shot_id, "shot"),
        stage=pick(stage, "stage"),
        work_key=pick(work_key, "work_key"),
        chunk_index=pick(chunk_index, "chunk_index"),
        frame_start=pick(frame_start, "frame_start"),
        frame_end=pick(frame_end, "frame_end"),
        status="reused",
        reused_from_id=origin_id,
        params=pick(params, "params", to_json),
        models=pick(models, "models", lambda m: to_json(list(m))),
        code_version=pick(code_version, "code_version"),
        input_asset_ids=pick(input_asset_ids, "input_asset_ids", lambda ids: _id_list(ids, "asset")),
        output_asset_ids=pick(output_asset_ids, "output_asset_ids", lambda ids: _id_list(ids, "asset")),
        result=pick(result, "result", to_json),
        metrics=pick(metrics, "metrics", to_json),
        host=host,
        prefect_flow_run_id=None if prefect_flow_run_id is None else str(prefect_flow_run_id),
        prefect_task_run_id=None if prefect_task_run_id is None else str(prefect_task_run_id),
        started=now,
        ended=now,
    )
    s.add(row)
    s.flush()
    return row


def stage_runs_for_run(s: Session, run_id: IdLike) -> list[StageRun]:
    """A run's stage runs in the order they started (then by chunk)."""
    return list(
        s.scalars(
            select(StageRun)
            .where(StageRun.run_id == as_uuid(run_id, "run"))
            .order_by(StageRun.started, StageRun.created, StageRun.chunk_index)
        )
    )


def stage_run_to_dict(r: StageRun) -> dict[str, Any]:
    """A JSON-ready summary of a stage run."""
    return {
        "id": str(r.id),
        "run_id": None if r.run_id is None else str(r.run_id),
        "shot_id": None if r.shot_id is None else str(r.shot_id),
        "stage": r.stage,
        "chunk_index": r.chunk_index,
        "frame_start": r.frame_start,
        "frame_end": r.frame_end,
        "work_key": r.work_key,
        "status": r.status,
        "reused_from_id": None if r.reused_from_id is None else str(r.reused_from_id),
        "prefect_flow_run_id": r.prefect_flow_run_id,
        "prefect_task_run_id": r.prefect_task_run_id,
        "params": r.params,
        "models": r.models,
        "code_version": r.code_version,
        "input_asset_ids": r.input_asset_ids,
        "output_asset_ids": r.output_asset_ids,
        "metrics": r.metrics,
        "started": _iso(r.started),
        "ended": _iso(r.ended),
        "seconds": None if r.started is None or r.ended is None else (r.ended - r.started).total_seconds(),
        "host": r.host,
        "error": r.error,
    }


# --- QC, review, render -------------------------------------------------------------------------
def record_qc(
    s: Session,
    *,
    run_id: IdLike,
    verdict: Any,
    metrics: Any,
    reasons: Iterable[Any] = (),
    report_asset_id: IdLike | None = None,
    models: Any = (),
    shot_id: IdLike | None = None,
) -> QCResult:
    """Store a run's QC verdict (``pass``/``review``/``fail`` or a contracts.Verdict), metrics and
    reasons (records ``metric, value, threshold, outcome, frames, text``, or texts)."""
    run = get_run(s, run_id)
    v = _check_choice(str(to_json(verdict)), VERDICTS, "QC verdict")
    row = QCResult(
        run_id=run.id,
        shot_id=run.shot_id if shot_id is None else as_uuid(shot_id, "shot"),
        verdict=v,
        metrics=to_json(metrics) or {},
        reasons=[to_json(dict(r)) if isinstance(r, dict) else str(r) for r in reasons],
        report_asset_id=_opt_uuid(report_asset_id, "asset"),
        models=to_json(list(models or ())),
    )
    s.add(row)
    s.flush()
    return row


def latest_qc(s: Session, run_id: IdLike) -> QCResult | None:
    """A run's newest QC result."""
    return s.scalars(
        select(QCResult).where(QCResult.run_id == as_uuid(run_id, "run")).order_by(QCResult.created.desc()).limit(1)
    ).first()


def record_review(
    s: Session, *, run_id: IdLike, decision: str, reviewer: str, note: str | None = None
) -> Review:
    """Store a reviewer's decision (e.g. ``approve``/``reject``) on a run."""
    run = get_run(s, run_id)
    if not decision.strip() or not reviewer.strip():
        raise UsageError("a review needs a decision and a reviewer")
    row = Review(shot_id=run.shot_id, run_id=run.id, decision=decision.strip(), reviewer=reviewer.strip(), note=note)
    s.add(row)
    s.flush()
    return row


def reviews_for_run(s: Session, run_id: IdLike) -> list[Review]:
    """A run's reviews, oldest first."""
    return list(s.scalars(select(Review).where(Review.run_id == as_uuid(run_id, "run")).order_by(Review.created)))


def set_render_approved(s: Session, render_id: IdLike, approved: bool = True) -> Render:
    """Approve (or un-approve) a deliverable."""
    row = _get(s, Render, render_id, "render")
    row.approved = approved
    s.flush()
    return row


def revoke_render(s: Session, render_id: IdLike, when: datetime | None = None) -> Render:
    """Mark a deliverable withdrawn (e.g. after consent was revoked)."""
    row = _get(s, Render, render_id, "render")
    if row.revoked_at is None:
        row.revoked_at = _aware(when) or utcnow()
        s.flush()
    return row


def renders_for_run(s: Session, run_id: IdLike) -> list[Render]:
    """A run's deliverables, oldest first."""
    return list(s.scalars(select(Render).where(Render.run_id == as_uuid(run_id, "run")).order_by(Render.created)))


# --- audit --------------------------------------------------------------------------------------
def add_audit_event(
    s: Session, *, actor: str, action: str, subject_type: str, subject_id: IdLike | None, detail: Any = None
) -> AuditEvent:
    """Append an audit event (who did what to which record). Never updated or deleted."""
    row = AuditEvent(
        actor=actor,
        action=action,
        subject_type=subject_type,
        subject_id=None if subject_id is None else str(subject_id),
        detail=to_json(detail),
    )
    s.add(row)
    s.flush()
    return row


def list_audit_events(
    s: Session,
    since: datetime | None = None,
    *,
    subject_type: str | None = None,
    subject_id: IdLike | None = None,
    action: str | None = None,
    limit: int | None = None,
) -> list[AuditEvent]:
    """Audit events in the order they happened (oldest first), after ``since`` when given."""
    q = select(AuditEvent)
    if since is not None:
        q = q.where(AuditEvent.created > _aware(since))
    if subject_type is not None:
        q = q.where(AuditEvent.subject_type == subject_type)
    if subject_id is not None:
        q = q.where(AuditEvent.subject_id == str(subject_id))
    if action is not None:
        q = q.where(AuditEvent.action == action)
    q = q.order_by(AuditEvent.created, AuditEvent.id)
    if limit is not None:
        q = q.limit(limit)
    return list(s.scalars(q))


def audit_event_to_dict(e: AuditEvent) -> dict[str, Any]:
    """A JSON-ready audit event."""
    return {
        "id": str(e.id),
        "created": _iso(e.created),
        "actor": e.actor,
        "action": e.action,
        "subject_type": e.subject_type,
        "subject_id": e.subject_id,
        "detail": e.detail,
    }


def set_shot_sources(s: Session, shot_id: IdLike, source_asset_ids: Iterable[IdLike]) -> Shot:
    """Attach the registered source photos to a shot (after ingest)."""
    shot = get_shot(s, shot_id)
    shot.source_asset_ids = _id_list(source_asset_ids, "asset")
    s.flush()
    return shot
