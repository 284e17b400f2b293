"""The one exception tree of recast.

Every error a user can cause or meet derives from :class:`RecastError`. Leaves also inherit
the builtin they resemble (as PyAV's ``InvalidDataError(FFmpegError, ValueError)`` does), so
code that catches ``FileNotFoundError`` or ``ValueError`` keeps working. Exit codes are chosen
in ``recast.cli`` only, from the branch of this tree an error belongs to.

Messages are one line and name the offending input and what is wrong with it.
"""

from __future__ import annotations


class RecastError(Exception):
    """Base of every error recast raises on purpose."""


# --- usage (exit 2) -------------------------------------------------------------------------
class UsageError(RecastError, ValueError):
    """Bad arguments or options: the command line or parameters are wrong."""


# --- bad input (exit 3) ---------------------------------------------------------------------
class InputError(RecastError, ValueError):
    """An input file or value is missing, unreadable, corrupt or unusable."""


class InputNotFoundError(InputError, FileNotFoundError):
    """An input file or object does not exist."""


class MediaDecodeError(InputError):
    """A file is not media, or is truncated or corrupt."""


class UnsupportedMediaError(InputError):
    """Media that decodes but that recast cannot work on (no video stream, odd format)."""


class NoFaceError(InputError):
    """No face where one is needed (source photo, or every frame of a plate)."""


class AmbiguousFaceError(InputError):
    """Several faces and no selector saying which one to use."""


class OutputPathError(InputError, PermissionError):
    """The requested output location cannot be written."""


# --- policy (exit 4) ------------------------------------------------------------------------
class PolicyError(RecastError, PermissionError):
    """Refused by policy: consent, licence, permission."""


class ConsentError(PolicyError):
    """No consent on record covers this use of an identity."""


# --- external services (exit 6) ------------------------------------------------------------
class ServiceUnavailableError(RecastError, ConnectionError):
    """An external service (database, object store, Prefect server) cannot be reached."""


class StorageUnavailableError(ServiceUnavailableError):
    """The object store cannot be reached or answered with a transient error."""


class DatabaseUnavailableError(ServiceUnavailableError):
    """The database cannot be reached."""


# --- not found by id (exit 3) --------------------------------------------------------------
class RecordNotFoundError(InputError, LookupError):
    """A run, shot or asset id that the database does not know."""


# --- internal (exit 1) ----------------------------------------------------------------------
class InternalError(RecastError, RuntimeError):
    """A bug or an inconsistency recast cannot explain: report it."""


class ModelMissingError(InputError, FileNotFoundError):
    """Weights that a chosen engine needs are not in the model directory."""
