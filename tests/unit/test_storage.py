"""LocalStore, content addressing and open_store (no network)."""

from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path

import pytest

from recast import errors
from recast.settings import get_settings
from recast.storage import LocalStore, S3Store, StoredObject, fetch_any, open_store, sha256_file
from recast.storage.base import content_key, parse_content_key


@pytest.fixture()
def store(tmp_path) -> LocalStore:
    return LocalStore(tmp_path / "objects")


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _tmp_leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.startswith(".tmp-")]


def test_sha256_file_matches_hashlib(tmp_path):
    data = os.urandom(3 * 1024 * 1024 + 17)  # spans several 1 MiB blocks
    path = _write(tmp_path / "a.bin", data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()


def test_put_file_fetch_round_trip(store, tmp_path):
    data = b"plate bytes " * 1000
    src = _write(tmp_path / "in" / "plate.mov", data)
    obj = store.put_file(src, media_type="video/quicktime", suffix=".mov")

    sha = hashlib.sha256(data).hexdigest()
    assert isinstance(obj, StoredObject)
    assert obj.sha256 == sha and obj.size == len(data) and obj.media_type == "video/quicktime"
    assert obj.key == f"objects/sha256/{sha[:2]}/{sha}.mov"
    assert obj.uri == (store.root / obj.key).as_uri() and obj.uri.startswith("file:///")
    fetched = store.fetch(obj.uri)
    assert fetched == store.root / obj.key  # the file itself, no copy
    assert fetched.read_bytes() == data
    assert store.open_bytes(obj.uri) == data
    assert store.size(obj.uri) == len(data)
    assert store.owns(obj.uri)
    assert store.presign(obj.uri) is None


def test_put_bytes_round_trip(store):
    obj = store.put_bytes(b'{"a": 1}', media_type="application/json", suffix=".json")
    assert store.open_bytes(obj.uri) == b'{"a": 1}'
    assert obj.key.endswith(".json")


def test_put_is_idempotent(store, tmp_path, monkeypatch):
    src = _write(tmp_path / "chunk.mkv", b"x" * 5000)
    first = store.put_file(src, media_type="video/x-matroska", suffix=".mkv")
    stored = store.fetch(first.uri)
    os.utime(stored, (1_000_000, 1_000_000))

    writes = []
    original = LocalStore._write_atomic
    monkeypatch.setattr(LocalStore, "_write_atomic", lambda self, *a: writes.append(a) or original(self, *a))
    second = store.put_file(src, media_type="video/x-matroska", suffix=".mkv")
    third = store.put_bytes(b"x" * 5000, media_type="video/x-matroska", suffix=".mkv")

    assert second == first and third.uri == first.uri
    assert writes == []
    assert stored.stat().st_mtime == 1_000_000


def test_put_rewrites_a_truncated_object(store, tmp_path):
    data = b"y" * 4096
    obj = store.put_bytes(data, media_type="application/octet-stream")
    store.fetch(obj.uri).write_bytes(data[:100])  # as a crash on a store without atomic writes would
    again = store.put_bytes(data, media_type="application/octet-stream")
    assert again.uri == obj.uri and store.open_bytes(obj.uri) == data


def test_content_addressing_same_bytes_same_uri(store, tmp_path):
    a = _write(tmp_path / "shot1" / "plate.mp4", b"same plate")
    b = _write(tmp_path / "shot2" / "other-name.mp4", b"same plate")
    c = _write(tmp_path / "shot3" / "plate.mp4", b"another plate")
    ua = store.put_file(a, media_type="video/mp4", suffix=".mp4").uri
    ub = store.put_file(b, media_type="video/mp4", suffix=".mp4").uri
    uc = store.put_file(c, media_type="video/mp4", suffix=".mp4").uri
    assert ua == ub != uc


def test_exists_and_delete(store):
    obj = store.put_bytes(b"mask", media_type="application/x-npz", suffix=".npz")
    assert store.exists(obj.uri)
    store.delete(obj.uri)
    assert not store.exists(obj.uri) and store.size(obj.uri) is None
    store.delete(obj.uri)  # deleting twice is fine
    with pytest.raises(errors.InputNotFoundError, match="does not exist"):
        store.fetch(obj.uri)


def test_delete_refuses_uris_outside_the_store(store, tmp_path):
    outside = _write(tmp_path / "precious.mov", b"keep me")
    with pytest.raises(errors.UsageError):
        store.delete(outside.as_uri())
    assert outside.exists()
    assert not store.owns(outside.as_uri()) and not store.owns("s3://b/k")


def test_writes_leave_no_temp_files(store, tmp_path):
    for i in range(3):
        store.put_bytes(bytes([i]) * 100, media_type="application/octet-stream")
    store.put_file(_write(tmp_path / "f.bin", b"z" * 10), media_type="application/octet-stream", suffix=".bin")
    assert _tmp_leftovers(store.root) == []
    assert len([p for p in store.root.rglob("*") if p.is_file()]) == 4


def test_failed_write_leaves_no_temp_file(store, monkeypatch):
    def boom(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(errors.OutputPathError, match="No space left"):
        store.put_bytes(b"data", media_type="application/octet-stream")
    assert _tmp_leftovers(store.root) == []


def test_put_missing_file(store, tmp_path):
    with pytest.raises(errors.InputNotFoundError):
        store.put_file(tmp_path / "nope.mov", media_type="video/quicktime")


def test_bad_suffix_is_rejected(store):
    with pytest.raises(errors.UsageError):
        store.put_bytes(b"x", media_type="text/plain", suffix="/../../etc")


def test_content_key_parsing():
    sha = "ab" + "0" * 62
    assert content_key(sha, ".tar.gz") == f"objects/sha256/ab/{sha}.tar.gz"
    assert parse_content_key(f"p/q/objects/sha256/ab/{sha}.npz") == (sha, ".npz")
    assert parse_content_key(f"objects/sha256/cd/{sha}.npz") is None  # shard does not match
    assert parse_content_key("renders/out.mp4") is None


def test_open_store_default_is_local_under_data_dir(recast_env):
    store = open_store()
    assert isinstance(store, LocalStore)
    assert store.root == (recast_env / "store").resolve()
    assert store.describe().startswith("file:///")


def test_open_store_file_url(recast_env, tmp_path, monkeypatch):
    monkeypatch.setenv("RECAST_STORAGE_URL", (tmp_path / "elsewhere").as_uri())
    from recast.settings import reset_settings

    reset_settings()
    store = open_store()
    assert isinstance(store, LocalStore) and store.root == (tmp_path / "elsewhere").resolve()


def test_open_store_s3_url(recast_env, monkeypatch):
    from recast.settings import reset_settings

    monkeypatch.setenv("RECAST_STORAGE_URL", "s3://studio-bucket/recast/prod")
    monkeypatch.setenv("RECAST_S3_ENDPOINT_URL", "http://127.0.0.1:9")
    reset_settings()
    store = open_store()  # no request is made until the store is used
    assert isinstance(store, S3Store)
    assert (store.bucket, store.prefix, store.endpoint_url) == ("studio-bucket", "recast/prod", "http://127.0.0.1:9")
    assert store.cache_dir == get_settings().resolved_data_dir / "cache"
    assert store.describe() == "s3://studio-bucket/recast/prod at http://127.0.0.1:9"
    assert store.owns("s3://studio-bucket/recast/prod/objects/sha256/ab/x")
    assert not store.owns("s3://studio-bucket/recast/other/x") and not store.owns("s3://other/recast/prod/x")
    clone = pickle.loads(pickle.dumps(store))  # stores travel to other processes without their client
    assert clone.describe() == store.describe()


@pytest.mark.parametrize("url", ["ftp://host/objects", "gs://bucket/prefix", "s3:///no-bucket", "objects"])
def test_open_store_bad_url(recast_env, monkeypatch, url):
    from recast.settings import reset_settings

    monkeypatch.setenv("RECAST_STORAGE_URL", url)
    reset_settings()
    with pytest.raises(errors.UsageError, match="storage URL"):
        open_store()


def test_fetch_any_local_paths(recast_env, tmp_path):
    path = _write(tmp_path / "plate.mov", b"plate")
    assert fetch_any(path) == path
    assert fetch_any(str(path)) == path
    assert fetch_any(path.as_uri()) == path
    with pytest.raises(errors.InputNotFoundError):
        fetch_any(tmp_path / "missing.mov")
    with pytest.raises(errors.UsageError):
        fetch_any("http://example.com/plate.mov")


def test_suffix_of_user_file_names():
    from recast.storage import suffix_of

    assert suffix_of("shot_010/Plate.MOV") == ".mov"
    assert suffix_of("notes") == ""
    assert suffix_of("take 3.final cut") == ""  # a space would break URIs: stored without suffix
    assert suffix_of("plate.mov\n") == ""


def test_s3_error_translation_without_a_server(tmp_path):
    from botocore.exceptions import ClientError

    store = S3Store("bkt", "pre", endpoint_url="http://127.0.0.1:9", cache_dir=tmp_path)
    uri = "s3://bkt/pre/objects/x"

    def client_error(code: str, status: int) -> ClientError:
        return ClientError({"Error": {"Code": code, "Message": "msg"}, "ResponseMetadata": {"HTTPStatusCode": status}}, "GetObject")

    assert isinstance(store._translate(client_error("SlowDown", 503), "reading", uri), errors.StorageUnavailableError)
    assert isinstance(store._translate(client_error("InternalError", 500), "reading", uri), errors.StorageUnavailableError)
    assert isinstance(store._translate(client_error("NoSuchKey", 404), "reading", uri), errors.InputNotFoundError)
    missing_bucket = store._translate(client_error("NoSuchBucket", 404), "reading", uri)
    assert isinstance(missing_bucket, errors.StorageUnavailableError) and "'bkt' does not exist" in str(missing_bucket)
    assert isinstance(store._translate(client_error("AccessDenied", 403), "reading", uri), errors.StorageUnavailableError)
    assert isinstance(store._translate(client_error("InvalidArgument", 400), "reading", uri), errors.InternalError)
