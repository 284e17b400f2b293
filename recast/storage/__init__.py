"""recast's object store: a local directory (the default) or an S3 bucket, content-addressed.

Use :func:`open_store` for the configured store (``RECAST_STORAGE_URL``) and :func:`fetch_any`
to read an input given as a path, ``file://`` or ``s3://`` URI wherever it lives.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from urllib.parse import urlparse

from recast import errors
from recast.settings import Settings, get_settings
from recast.storage.base import ObjectStore, StoredObject, sha256_file, suffix_of
from recast.storage.local import LocalStore, file_uri_to_path
from recast.storage.s3 import S3Store, split_s3_uri

__all__ = ["ObjectStore", "StoredObject", "LocalStore", "S3Store", "sha256_file", "suffix_of", "open_store", "fetch_any", "local_input"]

# Building an S3 client costs ~0.1 s and tasks open the store once per chunk, so stores are kept
# per process (the pid is in the key: a boto3 client must not be shared across a fork).
_stores: dict[tuple, ObjectStore] = {}
_stores_lock = threading.Lock()


def _cached(key: tuple, make) -> ObjectStore:
    key = (os.getpid(), *key)
    with _stores_lock:
        store = _stores.get(key)
        if store is None:
            store = _stores[key] = make()
        return store


def _s3_store(bucket: str, prefix: str, settings: Settings) -> S3Store:
    cache_dir = settings.resolved_data_dir / "cache"
    key = ("s3", bucket, prefix, settings.s3_endpoint_url, settings.s3_public_endpoint_url, settings.s3_region, str(cache_dir))
    return _cached(key, lambda: S3Store(bucket, prefix, endpoint_url=settings.s3_endpoint_url, region=settings.s3_region, cache_dir=cache_dir,  # type: ignore[return-value]
                                        public_endpoint_url=settings.s3_public_endpoint_url))


def open_store(settings: Settings | None = None) -> ObjectStore:
    """The object store named by ``settings.resolved_storage_url`` (``file://`` or ``s3://``)."""
    settings = settings or get_settings()
    url = settings.resolved_storage_url
    parsed = urlparse(url)
    if parsed.scheme == "file":
        root = file_uri_to_path(url)
        return _cached(("file", str(root)), lambda: LocalStore(root))
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise errors.UsageError(f"storage URL {url!r} names no bucket: use s3://bucket/prefix")
        return _s3_store(parsed.netloc, parsed.path.strip("/"), settings)
    raise errors.UsageError(f"storage URL {url!r} is not supported: use file:///path or s3://bucket/prefix")


def fetch_any(uri: str | Path, settings: Settings | None = None) -> Path:
    """A local path to read ``uri`` from: a plain path, a ``file://`` URI or an ``s3://`` URI.

    The URI need not belong to the configured store (a user may pass an ``s3://`` plate while
    the store is local); S3 objects are read with the configured endpoint and region and cached
    under ``<data_dir>/cache``.
    """
    settings = settings or get_settings()
    text = str(uri)
    scheme = urlparse(text).scheme if isinstance(uri, str) else ""
    if scheme in ("", "file"):
        path = file_uri_to_path(text) if scheme == "file" else Path(text).expanduser()
        if not path.is_file():
            raise errors.InputNotFoundError(f"{text}: no such file")
        return path
    if scheme == "s3":
        store = open_store(settings)
        if isinstance(store, S3Store):
            # The configured client can read any bucket on its endpoint.
            return store.fetch(text)
        bucket, _ = split_s3_uri(text)
        return _s3_store(bucket, "", settings).fetch(text)
    raise errors.UsageError(f"cannot read {text!r}: only paths, file:// and s3:// URIs are supported")


def local_input(uri_or_path: str, role: str, settings: Settings | None = None) -> Path:
    """A local path for a user-given input (plain path, ``file://`` or ``s3://`` URI), with an
    error naming its ``role`` ("plate", "source #2", ...) when a plain path is missing or a directory."""
    if "://" in uri_or_path:
        return fetch_any(uri_or_path, settings or get_settings())
    p = Path(uri_or_path).expanduser()
    if not p.exists():
        raise errors.InputNotFoundError(f"{role} '{uri_or_path}': file not found")
    if p.is_dir():
        raise errors.InputNotFoundError(f"{role} '{uri_or_path}': is a directory, not a file")
    return p
