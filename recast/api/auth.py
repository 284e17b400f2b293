"""Bearer-token authentication of the HTTP API.

Every ``/v1`` route needs ``Authorization: Bearer <secret>`` with a token made by
``recast token create --project P``. A token belongs to one project:

* no token, a malformed header, an unknown or revoked token → **401** (``WWW-Authenticate: Bearer``);
* a request that names another project (``project`` in a submission or a listing) → **403**,
  whether or not that project exists, so a token cannot probe for project names;
* a shot id of another project → **404**, exactly as for an id that does not exist: answering 403
  there would tell the caller that the shot exists. (Chosen over 403 for that reason.)
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from recast.db import repository as repo
from recast.db import tokens
from recast.db.session import session_scope

# auto_error=False: FastAPI's own error would be 403 for a missing header; recast answers 401
bearer_scheme = HTTPBearer(auto_error=False, description="an API token from `recast token create --project P`")


@dataclass(frozen=True)
class Principal:
    """Who is calling: the token (by id, name and display prefix) and its project."""

    token_id: str
    token_name: str
    token_prefix: str
    project_id: str
    project_name: str

    @property
    def actor(self) -> str:
        """How the caller appears in audit events."""
        return f"api-token:{self.token_name}({self.token_prefix})"

    def owns_project(self, id_or_name: str) -> bool:
        """Whether ``id_or_name`` names this token's project."""
        v = id_or_name.strip()
        return v == self.project_name or v.replace("-", "").lower() == self.project_id.replace("-", "").lower()


def _unauthorized(message: str) -> HTTPException:
    return HTTPException(status.HTTP_401_UNAUTHORIZED, detail=message, headers={"WWW-Authenticate": "Bearer"})


def authenticate(settings, secret: str | None) -> Principal:
    """The principal of a token secret; HTTPException 401 if there is none or it is not valid."""
    if not secret:
        raise _unauthorized("missing bearer token: send Authorization: Bearer <token>")
    with session_scope(settings) as s:
        token = tokens.find_active_token(s, secret.strip())
        if token is None:
            raise _unauthorized("invalid or revoked API token")
        tokens.touch_token(s, token)
        project = repo.get_project(s, token.project_id)
        return Principal(str(token.id), token.name, token.prefix, str(project.id), project.name)


def require_principal(request: Request, credentials: HTTPAuthorizationCredentials | None = None) -> Principal:
    """FastAPI dependency body (wired in :mod:`recast.api.routes` with the bearer scheme)."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise _unauthorized("missing bearer token: send Authorization: Bearer <token>")
    return authenticate(request.app.state.api.settings, credentials.credentials)


__all__ = ["Principal", "authenticate", "bearer_scheme", "require_principal"]
