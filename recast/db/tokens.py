"""API tokens: bearer secrets of the HTTP API, each scoped to one project, stored hashed.

A token's secret is ``rct_`` followed by 43 URL-safe characters (256 random bits). Only its
sha256 is stored (``api_token.token_hash``) with the first 8 characters (``prefix``) for
listings; the secret itself is shown once, by :func:`create_token`. A plain (unsalted, fast)
hash is enough here: the secret is random and long, so there is nothing to brute-force, and the
lookup must stay cheap because it runs on every request.

Same conventions as :mod:`recast.db.repository`: the session comes first, the caller owns the
transaction.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from recast.db.orm import ApiToken, utcnow
from recast.db.repository import IdLike, as_uuid, get_project
from recast.errors import RecordNotFoundError, UsageError

TOKEN_PREFIX = "rct_"
PREFIX_CHARS = 8
# last_used_at is a convenience for operators, not an audit trail: writing it on every request
# would turn each GET into a write (and, on SQLite, take the single write lock), so it is
# refreshed at most this often per token
LAST_USED_RESOLUTION = timedelta(minutes=1)


def hash_secret(secret: str) -> str:
    """The stored form of a token secret (hex sha256)."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def create_token(s: Session, *, project_id: IdLike, name: str | None = None) -> tuple[ApiToken, str]:
    """A new token for a project; returns ``(row, secret)``. The secret is not stored anywhere."""
    project = get_project(s, project_id)
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    label = (name or f"{project.name}-token").strip()
    if not label:
        raise UsageError("token name must not be empty")
    row = ApiToken(name=label[:200], project_id=project.id, token_hash=hash_secret(secret), prefix=secret[:PREFIX_CHARS])
    s.add(row)
    s.flush()
    return row, secret


def find_active_token(s: Session, secret: str) -> ApiToken | None:
    """The unrevoked token whose secret this is, or None (unknown, malformed or revoked)."""
    if not secret or not secret.startswith(TOKEN_PREFIX) or len(secret) > 200:
        return None
    row = s.scalars(select(ApiToken).where(ApiToken.token_hash == hash_secret(secret))).one_or_none()
    if row is None or row.revoked_at is not None:
        return None
    return row


def touch_token(s: Session, token: ApiToken) -> None:
    """Record that a token was used (at most once per :data:`LAST_USED_RESOLUTION`)."""
    now = utcnow()
    if token.last_used_at is None or now - token.last_used_at >= LAST_USED_RESOLUTION:
        token.last_used_at = now
        s.flush()


def revoke_token(s: Session, token_id_or_prefix: IdLike) -> ApiToken:
    """Revoke a token by id or by its displayed prefix (must be unambiguous)."""
    text = str(token_id_or_prefix).strip()
    row = None
    try:
        row = s.get(ApiToken, as_uuid(text, "token"))
    except RecordNotFoundError:
        rows = list(s.scalars(select(ApiToken).where(ApiToken.prefix == text[:PREFIX_CHARS])))
        if len(rows) > 1:
            raise UsageError(f"token prefix {text!r} matches {len(rows)} tokens: give the id") from None
        row = rows[0] if rows else None
    if row is None:
        raise RecordNotFoundError(f"token {text} not found")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        s.flush()
    return row


def list_tokens(s: Session, project_id: IdLike | None = None) -> list[ApiToken]:
    """Tokens (revoked ones included), newest first."""
    q = select(ApiToken)
    if project_id is not None:
        q = q.where(ApiToken.project_id == get_project(s, project_id).id)
    return list(s.scalars(q.order_by(ApiToken.created.desc())))


def token_to_dict(t: ApiToken) -> dict[str, object]:
    """A JSON-ready description of a token (never the secret, never the hash)."""
    return {
        "id": str(t.id),
        "name": t.name,
        "project_id": str(t.project_id),
        "prefix": t.prefix,
        "created": t.created.isoformat() if t.created else None,
        "last_used_at": t.last_used_at.isoformat() if t.last_used_at else None,
        "revoked_at": t.revoked_at.isoformat() if t.revoked_at else None,
    }


__all__ = [
    "LAST_USED_RESOLUTION",
    "TOKEN_PREFIX",
    "create_token",
    "find_active_token",
    "hash_secret",
    "list_tokens",
    "revoke_token",
    "token_to_dict",
    "touch_token",
]
