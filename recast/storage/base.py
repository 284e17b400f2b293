"""The object store interface shared by the local and S3 backends.

Objects are content-addressed: the key of a file is ``objects/sha256/<aa>/<sha256><suffix>``
under the store's prefix, so the same bytes stored twice (a retry, a resumed run, the same plate
in another shot) land on the same key and are uploaded once. Keys and URIs are built here and in
the backends only; the rest of recast passes URIs around and never assembles them.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

from recast import errors
from recast.checksums import sha256_file  # noqa: F401  (re-exported: the backends' content keys)

BLOCK_SIZE = 1024 * 1024

# A suffix ends up in object keys, URIs and cache file names: keep it to a plain extension
# (no '/', '?', '#', '%' or spaces, which would change what a URI or path means).
_SUFFIX_PART = r"\.[A-Za-z0-9_+~-]{1,16}"
_SUFFIX_RE = re.compile(rf"^(?:{_SUFFIX_PART}){{0,3}}\Z")
_CONTENT_KEY_RE = re.compile(rf"(?:^|/)objects/sha256/([0-9a-f]{{2}})/(\1[0-9a-f]{{62}})((?:{_SUFFIX_PART}){{0,3}})\Z")


@dataclass(frozen=True)
class StoredObject:
    """An object in a store: its URI, its key inside the store, checksum, size and media type."""

    uri: str
    key: str
    sha256: str
    size: int
    media_type: str


def check_suffix(suffix: str) -> str:
    """Validate an object suffix such as ``.npz`` or ``.tar.gz`` (empty is allowed)."""
    if not _SUFFIX_RE.match(suffix):
        raise errors.UsageError(f"object suffix {suffix!r} must be empty or like '.npz' (letters, digits, '_+~-' after each dot)")
    return suffix


def suffix_of(path: Path | str) -> str:
    """The lower-cased extension of a user's file name when it is usable as an object suffix, else ''."""
    suffix = Path(path).suffix.lower()
    return suffix if _SUFFIX_RE.match(suffix) else ""


def content_key(sha256: str, suffix: str = "") -> str:
    """The content-addressed key of an object, relative to a store's prefix."""
    return f"objects/sha256/{sha256[:2]}/{sha256}{check_suffix(suffix)}"


def parse_content_key(key: str) -> tuple[str, str] | None:
    """``(sha256, suffix)`` when ``key`` is a content-addressed key, else None."""
    m = _CONTENT_KEY_RE.search(key)
    return (m.group(2), m.group(3)) if m else None


class ObjectStore(ABC):
    """Where recast keeps every intermediate and deliverable.

    Implementations are safe to share between threads. Writes are idempotent and atomic: an
    object either exists whole under its final key or not at all.
    """

    @abstractmethod
    def put_file(self, path: Path, *, media_type: str, suffix: str = "") -> StoredObject:
        """Store a file under its content-addressed key; skip the write when it is already there."""

    @abstractmethod
    def put_bytes(self, data: bytes, *, media_type: str, suffix: str = "") -> StoredObject:
        """Store bytes under their content-addressed key; skip the write when already there."""

    @abstractmethod
    def exists(self, uri: str) -> bool:
        """Whether the object exists."""

    @abstractmethod
    def size(self, uri: str) -> int | None:
        """The object's size in bytes, or None when it does not exist."""

    @abstractmethod
    def fetch(self, uri: str) -> Path:
        """A local path to read the object from (the file itself, or a cached download)."""

    def open_bytes(self, uri: str) -> bytes:
        """The whole object in memory (for small objects: npz, json)."""
        return self.fetch(uri).read_bytes()

    @abstractmethod
    def delete(self, uri: str) -> None:
        """Remove the object; removing a missing object is not an error."""

    @abstractmethod
    def presign(self, uri: str, expires_s: int = 3600) -> str | None:
        """A time-limited URL to GET the object, or None when the backend has no such thing."""

    @abstractmethod
    def owns(self, uri: str) -> bool:
        """Whether ``uri`` names an object of this store (its bucket/directory and prefix)."""

    @abstractmethod
    def describe(self) -> str:
        """One line naming the store for messages and logs."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.describe()})"
