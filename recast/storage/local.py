"""Object store in a local (or network-mounted) directory; URIs are ``file:///abs/path``."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from urllib.parse import unquote, urlparse

from recast import errors
from recast.storage.base import BLOCK_SIZE, ObjectStore, StoredObject, content_key, sha256_file

_TMP_PREFIX = ".tmp-"


def _own_tmp_prefix() -> str:
    """Temporary names carry this host and process: a writer killed mid-write (SIGKILL, power)
    leaves its file behind, and the next write into that directory on this host removes it."""
    import socket

    return f"{_TMP_PREFIX}{socket.gethostname()}-{os.getpid()}-"


def _remove_dead_writers_files(directory: Path) -> None:
    """Remove the temporary files in ``directory`` left by a process of this host that is gone.
    Files of other hosts (a shared mount) and of live processes are left alone."""
    import socket

    mine = f"{_TMP_PREFIX}{socket.gethostname()}-"
    try:
        names = [p for p in directory.iterdir() if p.name.startswith(mine)]
    except OSError:
        return
    for path in names:
        pid_text = path.name[len(mine):].split("-", 1)[0]
        if not pid_text.isdigit() or int(pid_text) == os.getpid():
            continue
        try:
            os.kill(int(pid_text), 0)
        except ProcessLookupError:
            path.unlink(missing_ok=True)
        except OSError:
            continue  # alive but not ours to signal


def file_uri_to_path(uri: str) -> Path:
    """The path named by a ``file://`` URI (only local URIs: no host other than localhost)."""
    parsed = urlparse(uri)
    if parsed.scheme != "file" or parsed.netloc not in ("", "localhost"):
        raise errors.UsageError(f"not a local file URI: {uri!r}")
    return Path(unquote(parsed.path))


class LocalStore(ObjectStore):
    """Objects as files under ``root``; the embedded default (``<data_dir>/objects``).

    Writes go to a temporary file in the destination directory and are renamed into place with
    ``os.replace``, so readers (and a crash) never see half an object.
    """

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).expanduser().resolve()

    # --- addressing ---------------------------------------------------------------------------
    def uri_for(self, key: str) -> str:
        return (self.root / key).as_uri()

    def _path(self, uri: str) -> Path:
        return file_uri_to_path(uri)

    def owns(self, uri: str) -> bool:
        try:
            path = self._path(uri)
        except errors.UsageError:
            return False
        return path.is_relative_to(self.root) and path != self.root

    def describe(self) -> str:
        return self.root.as_uri()

    # --- writes -------------------------------------------------------------------------------
    def put_file(self, path: Path, *, media_type: str, suffix: str = "") -> StoredObject:
        path = Path(path)
        if not path.is_file():
            raise errors.InputNotFoundError(f"cannot store {path}: no such file")
        sha = sha256_file(path)
        key = content_key(sha, suffix)
        dest = self.root / key
        size = path.stat().st_size
        if not self._already_stored(dest, size):
            with open(path, "rb") as src:
                written_sha = self._write_atomic(dest, iter(lambda: src.read(BLOCK_SIZE), b""))
            # Hashing again while copying costs nothing extra and catches a file that changed
            # between the two reads, which would otherwise sit under a key it does not match.
            if written_sha != sha:
                dest.unlink(missing_ok=True)
                raise errors.InputError(f"cannot store {path}: it changed while being stored")
        return StoredObject(uri=dest.as_uri(), key=key, sha256=sha, size=size, media_type=media_type)

    def put_bytes(self, data: bytes, *, media_type: str, suffix: str = "") -> StoredObject:
        sha = hashlib.sha256(data).hexdigest()
        key = content_key(sha, suffix)
        dest = self.root / key
        if not self._already_stored(dest, len(data)):
            self._write_atomic(dest, [data])
        return StoredObject(uri=dest.as_uri(), key=key, sha256=sha, size=len(data), media_type=media_type)

    @staticmethod
    def _already_stored(dest: Path, size: int) -> bool:
        try:
            return dest.stat().st_size == size
        except FileNotFoundError:
            return False

    def _write_atomic(self, dest: Path, blocks) -> str:
        """Write ``blocks`` to ``dest`` through a temp file + rename; return the sha256 written."""
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            _remove_dead_writers_files(dest.parent)
            fd, tmp_name = tempfile.mkstemp(prefix=_own_tmp_prefix(), dir=dest.parent)
        except OSError as exc:
            raise errors.OutputPathError(f"object store {self.describe()}: cannot write {dest}: {exc.strerror or exc}") from exc
        tmp = Path(tmp_name)
        digest = hashlib.sha256()
        try:
            with os.fdopen(fd, "wb") as out:
                for block in blocks:
                    digest.update(block)
                    out.write(block)
                out.flush()
                # Without fsync a crash after the rename can leave an empty file under the key.
                os.fsync(out.fileno())
            # mkstemp creates 0600; other workers sharing the store must be able to read.
            os.chmod(tmp, 0o644)
            os.replace(tmp, dest)
        except BaseException as exc:
            tmp.unlink(missing_ok=True)
            if isinstance(exc, OSError):
                raise errors.OutputPathError(f"object store {self.describe()}: cannot write {dest}: {exc.strerror or exc}") from exc
            raise
        return digest.hexdigest()

    # --- reads --------------------------------------------------------------------------------
    def exists(self, uri: str) -> bool:
        return self._path(uri).is_file()

    def size(self, uri: str) -> int | None:
        try:
            return self._path(uri).stat().st_size
        except FileNotFoundError:
            return None

    def fetch(self, uri: str) -> Path:
        path = self._path(uri)
        if not path.is_file():
            raise errors.InputNotFoundError(f"object {uri} does not exist")
        return path

    def delete(self, uri: str) -> None:
        if not self.owns(uri):
            raise errors.UsageError(f"refusing to delete {uri}: it is not in object store {self.describe()}")
        self._path(uri).unlink(missing_ok=True)

    def presign(self, uri: str, expires_s: int = 3600) -> str | None:
        return None
