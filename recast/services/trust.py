"""Trust: projects and consent-gated identities, the consent gate of a shot, verification of a
file, revocation and the audit trail (signing deliverables is :mod:`recast.media.credentials`).

The consent gate runs inside the flow (the Prefect UI has no auth of its own, so it cannot live
only in the API or the CLI): once before any work and again just before render, so a consent
revoked mid-run stops delivery.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from recast.db import repository as repo
from recast.db import trust as trust_repo
from recast.db.session import session_scope
from recast.errors import ConsentError, InputError, PolicyError, UsageError
from recast.settings import get_settings

SCRATCH_PROJECT = "scratch"
MEDIA_TYPES = ("film", "ad")


@dataclass(frozen=True)
class ConsentUse:
    """The consent a shot runs under (None fields: a project that needs none, e.g. scratch)."""

    project: str
    scratch: bool
    identity: str | None
    consent_id: str | None
    scope: dict[str, Any] | None

    def manifest_entry(self) -> dict[str, Any] | None:
        if self.consent_id is None:
            return None
        return {"consent_id": self.consent_id, "scope": self.scope}


def require_consent(shot_id: str) -> ConsentUse:
    """The consent covering this shot now, or ConsentError (policy) saying why there is none."""
    with session_scope() as s:
        shot = repo.get_shot(s, shot_id)
        project = repo.get_project(s, shot.project_id)
        scratch = project.name == SCRATCH_PROJECT
        if scratch and not get_settings().scratch_enabled:
            raise PolicyError("the scratch project is turned off (RECAST_SCRATCH_ENABLED=false): use --project P --identity NAME")
        identity = repo.get_identity(s, shot.identity_id) if shot.identity_id else None
        if project.consent_required:
            if identity is None:
                raise ConsentError(f"project '{project.name}' requires consent: name an identity with consent on record (--identity NAME)")
            consent = repo.check_consent(s, identity.id, project.id)
        else:
            consent = repo.find_covering_consent(s, identity.id, project.id) if identity else None
        return ConsentUse(project=project.name, scratch=scratch, identity=identity.name if identity else None,
                          consent_id=str(consent.id) if consent else None, scope=dict(consent.scope) if consent else None)


@dataclass(frozen=True)
class SubmissionConsent:
    """What a shot is submitted under, checked when it is submitted (the flow checks again
    before any work and before render): the identity (None: the project needs none and none was
    named), the consent covering the project now (None where the project needs none) and the
    identity's reference photos that still exist."""

    identity_id: str | None
    identity_name: str | None
    consent_id: str | None
    photos: tuple[str, ...]


def _aware(d: datetime | None) -> datetime | None:
    return d if d is None or d.tzinfo else d.replace(tzinfo=timezone.utc)


def _scope_names_project(scope: dict[str, Any] | None, project: Any) -> bool:
    """Whether a consent's scope names ``project`` (by name or id, or any project), whatever its
    validity: such identities are the ones a project's users may see and pick."""
    allowed = (scope or {}).get("projects")
    return allowed is None or "*" in allowed or project.name in allowed or str(project.id) in allowed


def project_identities(s: Any, project: Any) -> list[tuple[Any, list[Any]]]:
    """``(identity, its consents naming the project)`` for every identity with a consent whose
    scope names ``project`` (revoked and expired ones included), by name."""
    from sqlalchemy import select

    from recast.db.orm import Consent, Identity

    found: dict[Any, list[Any]] = {}
    for c in s.scalars(select(Consent).order_by(Consent.created.desc())):
        if _scope_names_project(c.scope, project):
            found.setdefault(c.identity_id, []).append(c)
    if not found:
        return []
    people = s.scalars(select(Identity).where(Identity.id.in_(list(found))).order_by(Identity.name, Identity.created)).all()
    return [(i, found[i.id]) for i in people]


def _consent_status(c: Any, now: datetime) -> str:
    if c.revoked_at is not None and _aware(c.revoked_at) <= now:
        return "revoked"
    if _aware(c.valid_from) > now:
        return "not_yet_valid"
    if c.valid_until is not None and _aware(c.valid_until) <= now:
        return "expired"
    return "active"


def list_identities(s: Any, project_id: str) -> list[dict[str, Any]]:
    """The identities a project's users may name (see :func:`project_identities`), with whether a
    consent covers the project now (``covered``; else ``reason`` says why not) and each consent's
    status and validity. No photos: only how many reference photos are left (a revocation
    deletes them). The scopes' project lists are left out: they would name other projects."""
    project = repo.get_project(s, project_id)
    now = datetime.now(timezone.utc)
    out = []
    for identity, consents in project_identities(s, project):
        try:
            covering = repo.check_consent(s, identity.id, project.id)
            reason = None
        except ConsentError as exc:
            covering, reason = None, str(exc)
        photos = [a for a in repo.get_assets(s, repo.identity_photo_ids(s, identity.id)) if a.deleted_at is None]
        out.append({
            "id": str(identity.id), "name": identity.name, "created": identity.created,
            "covered": covering is not None, "consent_id": str(covering.id) if covering is not None else None,
            "valid_until": _aware(covering.valid_until) if covering is not None else None, "reason": reason,
            "reference_photos": len(photos),
            "consents": [{"id": str(c.id), "status": _consent_status(c, now), "valid_from": _aware(c.valid_from),
                          "valid_until": _aware(c.valid_until), "revoked_at": _aware(c.revoked_at),
                          "media": list((c.scope or {}).get("media") or ["*"]),
                          "territory": list((c.scope or {}).get("territory") or ["*"])} for c in consents],
        })
    return out


def resolve_identity(s: Any, project: Any, ref: str, *, listing: str) -> Any:
    """The identity ``ref`` names for a submission to ``project``: an id, or a name among the
    identities the project's users may see (:func:`project_identities`) when exactly one has it.
    A name no such identity has, or several do, is refused (:class:`~recast.errors.InputError`,
    naming ``listing``: where to look the ids up) rather than guessed."""
    from recast.errors import RecordNotFoundError

    try:
        return repo.get_identity(s, ref)
    except RecordNotFoundError:
        pass
    named = [i for i, _ in project_identities(s, project) if i.name == ref.strip()]
    if not named:
        raise InputError(f"identity {ref!r}: no identity with that id, nor one of that name with a consent naming project "
                         f"{project.name!r} ({listing})")
    if len(named) > 1:
        raise InputError(f"identity {ref!r}: {len(named)} identities have that name ({', '.join(str(i.id) for i in named)}): "
                         "give the id")
    return named[0]


def check_submission(s: Any, project: Any, identity_ref: str | None, *, option: str, listing: str) -> SubmissionConsent:
    """The project's policy and the identity's consent for a shot being submitted, checked before
    anything is stored or recorded (the CLI and the API call it; the flow checks again).

    Refused: the scratch project when it is turned off (PolicyError); no identity for a project
    that requires consent, or no consent of the identity covering the project now (ConsentError
    with the reason); an identity that cannot be found or named unambiguously (InputError).
    ``option`` is how the caller names an identity (``--identity NAME``, ``identity``) and
    ``listing`` where its users find them, for the messages.
    """
    if project.name == SCRATCH_PROJECT and not get_settings().scratch_enabled:
        raise PolicyError("the scratch project is turned off (RECAST_SCRATCH_ENABLED=false): use a project with consent on record")
    if identity_ref is None:
        if project.consent_required:
            raise ConsentError(f"project {project.name!r} requires consent: name the person whose head goes in ({option}), "
                               f"an identity with a consent covering the project ({listing})")
        return SubmissionConsent(identity_id=None, identity_name=None, consent_id=None, photos=())
    identity = resolve_identity(s, project, identity_ref, listing=listing)
    consent = repo.check_consent(s, identity.id, project.id) if project.consent_required else None
    photos = tuple(a.uri for a in repo.get_assets(s, repo.identity_photo_ids(s, identity.id)) if a.deleted_at is None)
    return SubmissionConsent(identity_id=str(identity.id), identity_name=identity.name,
                             consent_id=None if consent is None else str(consent.id), photos=photos)


def create_project(name: str, *, media: str | None, consent_required: bool, commercial: bool, actor: str) -> dict[str, Any]:
    if media is not None and media not in MEDIA_TYPES:
        raise UsageError(f"--media '{media}': choose from {', '.join(MEDIA_TYPES)}")
    if name == SCRATCH_PROJECT:
        raise UsageError("'scratch' is the built-in project for local trials; choose another name")
    with session_scope() as s:
        if repo.find_project(s, name) is not None:
            raise UsageError(f"project '{name}' exists already")
        p = repo.get_or_create_project(s, name, media_type=media, consent_required=consent_required, commercial=commercial)
        repo.add_audit_event(s, actor=actor, action="project.created", subject_type="project", subject_id=str(p.id),
                             detail={"name": name, "media": media, "consent_required": consent_required, "commercial": commercial})
        if not consent_required:
            repo.add_audit_event(s, actor=actor, action="project.consent_not_required", subject_type="project", subject_id=str(p.id),
                                 detail={"name": name, "note": "explicit choice: swaps in this project need no consent"})
        return {"id": str(p.id), "name": name, "media": media, "consent_required": consent_required, "commercial": commercial}


def parse_scope(text: str) -> dict[str, list[str]]:
    """``project=P[,media=ad|film][,territory=..]`` (repeat a key for several values) as a consent scope."""
    scope: dict[str, list[str]] = {}
    names = {"project": "projects", "projects": "projects", "media": "media", "territory": "territory"}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep or key.strip() not in names or not value.strip():
            raise UsageError(f"--scope '{text}': expected project=P[,media=ad|film][,territory=T], got '{part}'")
        for v in value.split("|"):
            scope.setdefault(names[key.strip()], []).append(v.strip())
    if "projects" not in scope:
        raise UsageError(f"--scope '{text}': a consent must name at least one project (project=P)")
    for m in scope.get("media", []):
        if m not in MEDIA_TYPES + ("*",):
            raise UsageError(f"--scope '{text}': media '{m}' is not one of {', '.join(MEDIA_TYPES)}")
    return scope


def parse_date(text: str, what: str) -> datetime:
    try:
        d = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"{what} '{text}': expected a date like 2027-06-30") from None
    return d if d.tzinfo else d.replace(tzinfo=timezone.utc)


def add_identity(name: str, *, photos: list[Path], consent_doc: Path | None, scope: str | None, valid_from: str | None,
                 valid_until: str | None, actor: str) -> dict[str, Any]:
    """Register a person: reference photos and (optionally) a signed release with its scope."""
    from recast.media import probe_media, read_image
    from recast.tasks.common import store_asset
    from recast.storage import suffix_of

    if not photos:
        raise UsageError("identity add: give at least one --photo")
    if (consent_doc is None) != (scope is None):
        raise UsageError("identity add: --consent RELEASE and --scope go together")
    parsed_scope = parse_scope(scope) if scope else None
    start = parse_date(valid_from, "--valid-from") if valid_from else None
    end = parse_date(valid_until, "--valid-until") if valid_until else None
    refs = []
    for p in photos:
        if not p.is_file():
            from recast.errors import InputNotFoundError

            raise InputNotFoundError(f"photo '{p}': file not found")
        info = probe_media(p, role="photo")
        read_image(p, role="photo")
        refs.append(store_asset(p, media_type="image/png" if suffix_of(p) == ".png" else "image/jpeg", role="identity_photo",
                                suffix=suffix_of(p), media_info=info.model_dump(mode="json")))
    release = None
    if consent_doc is not None:
        if not consent_doc.is_file():
            from recast.errors import InputNotFoundError

            raise InputNotFoundError(f"consent release '{consent_doc}': file not found")
        release = store_asset(consent_doc, media_type="application/pdf" if consent_doc.suffix.lower() == ".pdf" else "application/octet-stream",
                              role="consent_release", suffix=suffix_of(consent_doc))
    with session_scope() as s:
        identity = repo.create_identity(s, name=name, photo_asset_ids=[r.asset_id for r in refs])
        repo.add_audit_event(s, actor=actor, action="identity.added", subject_type="identity", subject_id=str(identity.id),
                             detail={"name": name, "photos": [r.sha256 for r in refs]})
        consent_id = None
        if parsed_scope is not None:
            consent = repo.add_consent(s, identity_id=identity.id, scope=parsed_scope, valid_from=start, valid_until=end,
                                       release_asset_id=release.asset_id if release else None)
            consent_id = str(consent.id)
            repo.add_audit_event(s, actor=actor, action="consent.added", subject_type="consent", subject_id=consent_id,
                                 detail={"identity": name, "scope": parsed_scope, "valid_until": end, "release_sha256": release.sha256 if release else None})
        return {"identity_id": str(identity.id), "name": name, "photos": [r.uri for r in refs], "consent_id": consent_id}


def identity_photo_paths(name: str) -> tuple[str, list[str]]:
    """(identity id, local paths or URIs of its reference photos) for a swap."""
    with session_scope() as s:
        identity = repo.find_identity(s, name)
        if identity is None:
            raise InputError(f"identity '{name}': not registered (recast identity add)")
        assets = repo.get_assets(s, repo.identity_photo_ids(s, identity.id))
        live = [a.uri for a in assets if a.deleted_at is None]
        if not live:
            raise ConsentError(f"identity '{name}': its reference photos were deleted (consent revoked)")
        return str(identity.id), live


def revoke(name: str, *, reason: str, actor: str) -> dict[str, Any]:
    """Revoke every consent of an identity: withdraw its renders, delete its photos and face data."""
    from recast.tasks.common import store

    if not reason.strip():
        raise UsageError("consent revoke: --reason must say why")
    deleted: list[dict[str, str]] = []
    with session_scope() as s:
        identity = repo.find_identity(s, name)
        if identity is None:
            raise InputError(f"identity '{name}': not registered")
        now = datetime.now(timezone.utc)
        consents = [repo.revoke_consent(s, c.id, reason=reason, when=now) for c in repo.consents_for_identity(s, identity.id) if c.revoked_at is None]
        renders = []
        for render, shot, asset in trust_repo.renders_of_identity(s, identity.id):
            if render.revoked_at is None:
                repo.revoke_render(s, render.id, when=now)
            renders.append({"render_id": str(render.id), "shot": shot.code, "output_uri": asset.uri, "delivered_to": render.delivered_to})
        # reference photos and everything computed from them that holds the face (landmarks, head mattes, embeddings)
        photo_ids = repo.identity_photo_ids(s, identity.id)
        doomed = {}
        for pid in photo_ids:
            a = repo.get_asset(s, pid)
            doomed[str(a.id)] = a
            for child in _descendants(repo.asset_descendants(s, a.id)):
                if child["role"] in ("source_analysis",):
                    doomed[child["id"]] = repo.get_asset(s, child["id"])
        for a in doomed.values():
            if a.deleted_at is None:
                deleted.append({"asset_id": str(a.id), "role": a.role, "sha256": a.sha256, "uri": a.uri})
        repo.add_audit_event(s, actor=actor, action="consent.revoked", subject_type="identity", subject_id=str(identity.id),
                             detail={"name": name, "reason": reason, "consents": [str(c.id) for c in consents],
                                     "renders_revoked": [r["render_id"] for r in renders], "assets_deleted": [d["sha256"] for d in deleted]})
    st = store()
    for d in deleted:
        st.delete(d["uri"])
    with session_scope() as s:
        for d in deleted:
            repo.mark_asset_deleted(s, d["asset_id"])
    return {"identity": name, "consents_revoked": len(consents), "renders": renders, "deleted": deleted}


def _descendants(tree: dict[str, Any]):
    for child in tree.get("children", []):
        yield child["asset"]
        yield from _descendants(child)


def audit(since: str | None, limit: int | None = None) -> list[dict[str, Any]]:
    when = parse_date(since, "--since") if since else None
    with session_scope() as s:
        return [repo.audit_event_to_dict(e) for e in repo.list_audit_events(s, since=when, limit=limit)]


_DURATION = re.compile(r"^(\d+)([hd])$")


def since_value(text: str | None) -> str | None:
    """``--since`` accepts a date/time or a duration like 24h / 7d."""
    if text is None:
        return None
    m = _DURATION.match(text.strip())
    if m:
        from datetime import timedelta

        n, unit = int(m.group(1)), m.group(2)
        return (datetime.now(timezone.utc) - (timedelta(hours=n) if unit == "h" else timedelta(days=n))).isoformat()
    return text


VERIFY_RESULTS = {"verified": 0, "watermark-only": 7, "tampered": 8, "unknown": 9}
VERIFY_MAX_FRAMES = 150


def verify_file(path: Path) -> dict[str, Any]:
    """Provenance of a file: its C2PA manifest, its invisible mark, and what the database says.

    Result: ``verified`` (manifest valid and signed by a trusted CA, and the mark, when it can be
    read, names the same render), ``watermark-only`` (no usable manifest — e.g. stripped by a
    re-encode — but the mark identifies a render), ``tampered`` (a manifest is present but the
    content no longer matches it; the mark may still identify the render), ``unknown`` (neither).

    A cut or damaged file is read as far as it decodes: the mark is looked for on the frames that
    survive and ``decode`` says how many those were (``truncated``). Only a file of which no frame
    decodes is MediaDecodeError (exit 3).
    """
    from recast.errors import InputNotFoundError
    from recast.media.credentials import CredentialReading, read_credentials, trust_anchors, watermark_seed
    from recast.models.watermark import WatermarkDecoder, WatermarkKey, payload_from_id

    if not path.is_file():
        raise InputNotFoundError(f"file '{path}': not found")
    settings = get_settings()
    anchors = trust_anchors()
    try:
        reading = read_credentials(path, trust_anchors_pem=anchors)
    except InputNotFoundError:
        raise
    except InputError as exc:
        if not str(exc).startswith("file to verify"):
            raise  # the trust anchors, not the file
        # a cut file can break the manifest's boxes too: what is left may still carry the mark
        reading = CredentialReading(present=False, valid=False, trusted=False, tampered=False, render_id=None, assertion=None,
                                    message=str(exc))
    decoder = WatermarkDecoder(WatermarkKey(seed=watermark_seed(), strength=settings.watermark_strength))
    decoded = _decode_for_mark(path, decoder)
    mark = decoder.result()
    mark_hex = f"{mark.payload:016x}" if mark.found and mark.payload is not None else None

    manifest_render = reading.render_id if reading.present else None
    agrees = mark_hex is None or manifest_render is None or mark_hex == f"{payload_from_id(manifest_render):016x}"
    if reading.present and reading.tampered:
        result = "tampered"
    elif reading.present and reading.valid and reading.trusted and agrees:
        result = "verified"
    elif reading.present and reading.valid and reading.trusted and not agrees:
        result = "tampered"  # a valid manifest on pixels that carry another render's mark
    elif mark_hex is not None:
        result = "watermark-only"
    else:
        result = "unknown"

    render_info = None
    with session_scope() as s:
        rows = []
        if manifest_render and result in ("verified", "tampered"):
            try:
                rows = [trust_repo.get_render(s, manifest_render)]
            except Exception:
                rows = []
        if not rows and mark_hex:
            rows = trust_repo.renders_by_payload(s, mark_hex)
        if rows:
            render = rows[-1]  # the render whose id the mark was made from is the oldest with that payload
            render_info = trust_repo.render_context(s, render)
            asset = repo.get_asset(s, render.asset_id)
            render_info["output_uri"] = asset.uri
            render_info["output_sha256"] = asset.sha256
            render_info["lineage"] = repo.asset_lineage(s, asset.id, max_depth=4)
            render_info["models"] = _render_models(s, render.run_id)
    if render_info is None and result == "watermark-only":
        result = "unknown"  # a mark of ours that this database does not know is no identification
    assertion = reading.assertion or {}
    return {
        "file": str(path),
        "result": result,
        "exit_code": VERIFY_RESULTS[result],
        "manifest": {"present": reading.present, "valid": reading.valid, "trusted": reading.trusted, "tampered": reading.tampered,
                     "render_id": reading.render_id, "signer": reading.signer, "actions": list(reading.actions),
                     "digital_source_types": list(reading.digital_source_types), "message": reading.message,
                     "consent": assertion.get("consent"), "identity": assertion.get("identity")},
        "watermark": {"found": mark.found, "payload": mark_hex, "confidence": round(mark.confidence, 3), "frames_used": mark.frames_used},
        "render": render_info,
        "decode": decoded.as_dict(),
    }


@dataclass(frozen=True)
class _Decoded:
    """How much of a file's video decoded: a truncated or damaged file still gets its watermark
    read on the frames that survive, and says how many those were."""

    frames: int
    declared: int | None
    errors: int
    first_error: str | None

    @property
    def truncated(self) -> bool:
        return self.errors > 0 or (self.declared is not None and self.frames < min(self.declared, VERIFY_MAX_FRAMES))

    def as_dict(self) -> dict[str, Any]:
        return {"truncated": self.truncated, "frames_decodable": self.frames, "frames_declared": self.declared,
                "decode_errors": self.errors, "first_error": self.first_error}


def _decode_for_mark(path: Path, decoder: Any) -> _Decoded:
    """Feed up to VERIFY_MAX_FRAMES decodable frames of ``path`` to the watermark decoder.

    A cut or damaged file makes FFmpeg raise on the broken packets (and the demuxer on the cut
    tail); each packet is decoded on its own so the frames before (and between) the damage are
    kept: a deliverable cut to 90% still carries the mark in the part that is left. Only a file
    with no decodable frame at all is "not a readable video" (MediaDecodeError, exit 3).
    """
    import av

    from recast.errors import MediaDecodeError
    from recast.media.orientation import upright_rgb

    frames = errors = 0
    first_error: str | None = None

    def note(exc: BaseException) -> None:
        nonlocal errors, first_error
        errors += 1
        first_error = first_error or (str(exc).splitlines()[0] if str(exc) else type(exc).__name__)

    def add(frame_list) -> bool:
        nonlocal frames
        for frame in frame_list:
            if frames >= VERIFY_MAX_FRAMES:
                return False
            decoder.add_frame(upright_rgb(frame), frames)  # the mark was embedded upright
            frames += 1
        return frames < VERIFY_MAX_FRAMES

    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, UnicodeDecodeError) as exc:
        raise MediaDecodeError(f"file '{path}': not a readable video ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
    with container as c:
        if not c.streams.video:
            raise MediaDecodeError(f"file '{path}': has no video stream")
        stream = c.streams.video[0]
        declared = int(stream.frames) if stream.frames else None
        more, flushed = True, False
        packets = c.demux(stream)
        while more:
            try:
                packet = next(packets)
            except StopIteration:
                break
            except av.error.FFmpegError as exc:  # the demuxer meets the cut tail: stop reading
                note(exc)
                break
            flushed = packet.size == 0  # the demuxer's last, empty packet drains the decoder
            try:
                more = add(packet.decode())
            except av.error.EOFError:
                break
            except av.error.FFmpegError as exc:  # a damaged packet: skip it, keep the rest
                note(exc)
        if more and not flushed:
            try:  # drain the frames the decoder still holds (a cut file never sent the flush packet)
                add(stream.codec_context.decode(None))
            except av.error.EOFError:
                pass
            except av.error.FFmpegError as exc:
                note(exc)
    if frames == 0:
        detail = f" ({first_error})" if first_error else ""
        raise MediaDecodeError(f"file '{path}': not a readable video, no frame decodes{detail}")
    return _Decoded(frames=frames, declared=declared, errors=errors, first_error=first_error)


def _render_models(s, run_id) -> list[dict[str, Any]]:
    seen: dict[tuple, dict[str, Any]] = {}
    for sr in repo.stage_runs_for_run(s, run_id):
        for m in sr.models or []:
            seen[(m.get("name"), m.get("version"), m.get("sha256"))] = m
    return list(seen.values())
