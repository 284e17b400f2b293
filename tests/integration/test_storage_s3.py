"""S3Store against a real S3 HTTP API (moto's server on loopback)."""

from __future__ import annotations

import hashlib
import os
import socket
import time
import urllib.request
from pathlib import Path

import pytest

from recast import errors
from recast.settings import reset_settings
from recast.storage import LocalStore, S3Store, fetch_any, open_store

MiB = 1024 * 1024
PREFIX = "recast/test"


@pytest.fixture()
def s3_store(s3_bucket, tmp_path) -> S3Store:
    endpoint, bucket = s3_bucket
    return S3Store(bucket, PREFIX, endpoint_url=endpoint, cache_dir=tmp_path / "cache")


class Spy:
    """Wraps a client method and counts calls (boto3 client methods can be replaced per instance)."""

    def __init__(self, monkeypatch, client, name: str) -> None:
        self.calls = 0
        original = getattr(client, name)

        def wrapper(*args, **kwargs):
            self.calls += 1
            return original(*args, **kwargs)

        monkeypatch.setattr(client, name, wrapper)


def _free_closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tmp_leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob(".tmp-*")] if root.exists() else []


def test_put_fetch_exists_delete(s3_store, s3_admin, tmp_path):
    data = os.urandom(200_000)
    src = tmp_path / "chunk.mkv"
    src.write_bytes(data)
    obj = s3_store.put_file(src, media_type="video/x-matroska", suffix=".mkv")

    sha = hashlib.sha256(data).hexdigest()
    assert obj.key == f"{PREFIX}/objects/sha256/{sha[:2]}/{sha}.mkv"
    assert obj.uri == f"s3://{s3_store.bucket}/{obj.key}"
    assert (obj.sha256, obj.size) == (sha, len(data))
    assert s3_store.owns(obj.uri) and s3_store.exists(obj.uri) and s3_store.size(obj.uri) == len(data)
    head = s3_admin.head_object(Bucket=s3_store.bucket, Key=obj.key)
    assert head["ContentType"] == "video/x-matroska" and head["Metadata"]["sha256"] == sha

    local = s3_store.fetch(obj.uri)
    assert local == s3_store.cache_dir / "objects" / f"{sha}.mkv"
    assert local.read_bytes() == data
    assert s3_store.open_bytes(obj.uri) == data

    s3_store.delete(obj.uri)
    assert not s3_store.exists(obj.uri) and s3_store.size(obj.uri) is None


def test_put_bytes_and_presign(s3_store):
    data = b'{"verdict": "pass"}'
    obj = s3_store.put_bytes(data, media_type="application/json", suffix=".json")
    assert s3_store.open_bytes(obj.uri) == data
    url = s3_store.presign(obj.uri, expires_s=60)
    assert url and url.startswith(s3_store.endpoint_url)
    with urllib.request.urlopen(url, timeout=10) as resp:
        assert resp.read() == data


def test_multipart_upload_and_download(s3_bucket, s3_admin, tmp_path):
    endpoint, bucket = s3_bucket
    store = S3Store(bucket, PREFIX, endpoint_url=endpoint, cache_dir=tmp_path / "cache",
                    multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB)
    data = os.urandom(12 * MiB)
    src = tmp_path / "plate.mov"
    src.write_bytes(data)
    obj = store.put_file(src, media_type="video/quicktime", suffix=".mov")

    etag = s3_admin.head_object(Bucket=bucket, Key=obj.key)["ETag"].strip('"')
    assert etag.endswith("-3"), f"expected a 3-part multipart upload, got ETag {etag}"
    fetched = store.fetch(obj.uri)
    assert hashlib.sha256(fetched.read_bytes()).hexdigest() == obj.sha256


def test_put_is_idempotent(s3_store, tmp_path, monkeypatch):
    src = tmp_path / "plate.mp4"
    src.write_bytes(b"p" * 10_000)
    first = s3_store.put_file(src, media_type="video/mp4", suffix=".mp4")
    uploads = Spy(monkeypatch, s3_store.client, "upload_file")
    puts = Spy(monkeypatch, s3_store.client, "put_object")

    again = tmp_path / "same-plate-other-shot.mp4"
    again.write_bytes(b"p" * 10_000)
    second = s3_store.put_file(again, media_type="video/mp4", suffix=".mp4")
    third = s3_store.put_bytes(b"p" * 10_000, media_type="video/mp4", suffix=".mp4")

    assert second == first and third.uri == first.uri
    assert uploads.calls == 0 and puts.calls == 0


def test_fetch_reuses_the_cache(s3_store, monkeypatch):
    obj = s3_store.put_bytes(b"landmarks" * 1000, media_type="application/x-npz", suffix=".npz")
    downloads = Spy(monkeypatch, s3_store.client, "download_file")
    first = s3_store.fetch(obj.uri)
    second = s3_store.fetch(obj.uri)
    assert first == second and downloads.calls == 1

    first.write_bytes(b"half")  # a damaged cache entry (wrong size) is downloaded again
    assert s3_store.fetch(obj.uri).read_bytes() == b"landmarks" * 1000
    assert downloads.calls == 2
    assert _tmp_leftovers(s3_store.cache_dir) == []


def test_fetch_rejects_content_that_does_not_match_its_key(s3_store, s3_admin):
    sha = hashlib.sha256(b"the real bytes").hexdigest()
    key = f"{PREFIX}/objects/sha256/{sha[:2]}/{sha}.npz"
    s3_admin.put_object(Bucket=s3_store.bucket, Key=key, Body=b"something else")
    with pytest.raises(errors.InputError, match="corrupt"):
        s3_store.fetch(f"s3://{s3_store.bucket}/{key}")
    assert not (s3_store.cache_dir / "objects" / f"{sha}.npz").exists()
    assert _tmp_leftovers(s3_store.cache_dir) == []


def test_missing_object(s3_store):
    uri = s3_store.uri_for("objects/sha256/00/" + "0" * 64 + ".npz")
    assert not s3_store.exists(uri) and s3_store.size(uri) is None
    with pytest.raises(errors.InputNotFoundError, match=uri):
        s3_store.fetch(uri)
    with pytest.raises(errors.InputNotFoundError, match=uri):
        s3_store.open_bytes(uri)
    s3_store.delete(uri)  # deleting a missing object is fine


def test_missing_bucket(s3_server, tmp_path):
    store = S3Store("recast-no-such-bucket", PREFIX, endpoint_url=s3_server, cache_dir=tmp_path)
    uri = store.uri_for("objects/sha256/00/" + "0" * 64)
    for call in (lambda: store.exists(uri), lambda: store.fetch(uri), lambda: store.open_bytes(uri),
                 lambda: store.put_bytes(b"x", media_type="text/plain")):
        with pytest.raises(errors.StorageUnavailableError, match="bucket 'recast-no-such-bucket' does not exist"):
            call()


def test_unreachable_endpoint_fails_fast(s3_server, tmp_path):
    endpoint = f"http://127.0.0.1:{_free_closed_port()}"
    store = S3Store("b", "p", endpoint_url=endpoint, cache_dir=tmp_path, max_attempts=2, connect_timeout=1)
    started = time.monotonic()
    with pytest.raises(errors.StorageUnavailableError) as info:
        store.put_bytes(b"x", media_type="text/plain")
    assert time.monotonic() - started < 5
    message = str(info.value)
    assert message.startswith(f"object store s3://b/p at {endpoint}: cannot connect")
    assert "\n" not in message
    assert isinstance(info.value, ConnectionError)  # StorageUnavailableError is a ConnectionError too
    with pytest.raises(errors.StorageUnavailableError):
        store.exists("s3://b/p/x")  # unreachable is an error, never "does not exist"


def test_open_store_and_fetch_any_with_s3(s3_bucket, recast_env, monkeypatch, tmp_path, s3_admin):
    endpoint, bucket = s3_bucket
    monkeypatch.setenv("RECAST_S3_ENDPOINT_URL", endpoint)

    # The configured store is local, yet an s3:// plate can still be read (user-supplied URI).
    reset_settings()
    assert isinstance(open_store(), LocalStore)
    s3_admin.put_object(Bucket=bucket, Key="incoming/shot 010/plate.mov", Body=b"plate")
    local = fetch_any(f"s3://{bucket}/incoming/shot 010/plate.mov")
    assert local.read_bytes() == b"plate"
    assert local.is_relative_to(recast_env.resolve() / "cache" / "objects")

    monkeypatch.setenv("RECAST_STORAGE_URL", f"s3://{bucket}/{PREFIX}")
    reset_settings()
    store = open_store()
    assert isinstance(store, S3Store) and store.owns(f"s3://{bucket}/{PREFIX}/x")
    obj = store.put_bytes(b"chunk", media_type="application/octet-stream", suffix=".bin")
    assert fetch_any(obj.uri).read_bytes() == b"chunk"
    with pytest.raises(errors.InputNotFoundError):
        fetch_any(f"s3://{bucket}/incoming/missing.mov")
