"""Object store in an S3 bucket (AWS S3, MinIO, Ceph, moto); URIs are ``s3://bucket/key``.

Credentials come from boto3's default chain (environment, shared config, instance role).
Transient failures (connection refused, timeouts, 5xx, throttling) are retried by botocore's
``standard`` retry mode with exponential backoff and jitter, a bounded number of attempts; what
still fails is raised as :class:`~recast.errors.StorageUnavailableError` naming the store and the
operation. Buckets are never created here: a missing bucket is a deployment problem.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import boto3
from boto3.exceptions import RetriesExceededError, S3UploadFailedError
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionError as BotoConnectionError,
    HTTPClientError,
    NoCredentialsError,
    ParamValidationError,
    PartialCredentialsError,
)

from recast import errors
from recast.storage.base import ObjectStore, StoredObject, content_key, parse_content_key, sha256_file

MiB = 1024 * 1024

_NOT_FOUND = {"404", "NoSuchKey", "NotFound"}
_DENIED = {"403", "AccessDenied", "Forbidden", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken"}
_THROTTLED = {"SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequestsException",
              "RequestThrottled", "RequestTimeout", "RequestTimeoutException", "ServiceUnavailable"}
_BOTO_ERRORS = (ClientError, BotoCoreError, S3UploadFailedError, RetriesExceededError)
_SAFE_NAME_RE = re.compile(r"[^A-Za-z0-9._-]+")


def split_s3_uri(uri: str) -> tuple[str, str]:
    """``(bucket, key)`` of an ``s3://bucket/key`` URI."""
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise errors.UsageError(f"not an s3:// URI: {uri!r}")
    return parsed.netloc, parsed.path.lstrip("/")


def _root_cause(exc: BaseException) -> BaseException:
    """The botocore error behind boto3's transfer wrappers (they hide the structured error)."""
    if isinstance(exc, RetriesExceededError) and exc.last_exception is not None:
        return exc.last_exception
    if isinstance(exc, S3UploadFailedError):
        inner = exc.__cause__ or exc.__context__
        if isinstance(inner, (ClientError, BotoCoreError)):
            return inner
    return exc


class S3Store(ObjectStore):
    """Objects in ``s3://bucket/prefix/objects/sha256/...``; reads are cached under ``cache_dir``.

    ``fetch`` downloads into ``<cache_dir>/objects/`` (named by sha256 for content-addressed keys)
    and reuses a cached file of the right size. The boto3 client is created on first use and is
    shared by threads; a pickled store (sent to another process) makes its own client.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        cache_dir: Path | None = None,
        *,
        max_attempts: int = 5,
        connect_timeout: float = 5,
        read_timeout: float = 60,
        multipart_threshold: int = 64 * MiB,
        multipart_chunksize: int = 16 * MiB,
        max_concurrency: int = 4,
        public_endpoint_url: str | None = None,
    ) -> None:
        if not bucket:
            raise errors.UsageError("S3 object store needs a bucket name")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint_url = endpoint_url or None
        # the address clients outside the network reach the same service at (download links only)
        self.public_endpoint_url = public_endpoint_url or None
        self.region = region
        self.cache_dir = Path(cache_dir) if cache_dir is not None else Path(tempfile.gettempdir()) / "recast-cache"
        self.max_attempts = max_attempts
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.transfer_config = TransferConfig(
            multipart_threshold=multipart_threshold,
            multipart_chunksize=multipart_chunksize,
            max_concurrency=max_concurrency,
            use_threads=True,
        )
        self._client: Any = None
        self._public_client: Any = None
        self._lock = threading.Lock()
        self._buckets_seen: set[str] = set()

    # --- client -------------------------------------------------------------------------------
    @property
    def client(self) -> Any:
        """The boto3 S3 client (created on first use)."""
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._client = self._make_client()
        return self._client

    @property
    def public_client(self) -> Any:
        """A client for ``public_endpoint_url`` that only signs links (it never sends a request),
        or the ordinary client when no public endpoint is set."""
        if self.public_endpoint_url is None or self.public_endpoint_url == self.endpoint_url:
            return self.client
        if self._public_client is None:
            with self._lock:
                if self._public_client is None:
                    self._public_client = self._make_client(self.public_endpoint_url)
        return self._public_client

    def _make_client(self, endpoint_url: str | None = None) -> Any:
        endpoint_url = endpoint_url or self.endpoint_url
        config = Config(
            retries={"max_attempts": self.max_attempts, "mode": "standard"},
            connect_timeout=self.connect_timeout,
            read_timeout=self.read_timeout,
            max_pool_connections=max(10, 2 * self.transfer_config.max_concurrency),
            # MinIO and Ceph serve buckets by path; virtual-host names need DNS they rarely have.
            s3={"addressing_style": "path" if endpoint_url else "auto"},
            # boto3 >= 1.36 adds CRC checksums to every upload by default, which older MinIO and
            # Ceph releases reject; only send them where the API requires one.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        try:
            # A session per store: boto3's default session is not safe to share between threads.
            return boto3.session.Session().client("s3", endpoint_url=endpoint_url, region_name=self.region, config=config)
        except ValueError as exc:
            raise errors.UsageError(f"object store {self.describe()}: bad S3 endpoint {endpoint_url!r}: {exc}") from exc

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_client"] = None
        state["_public_client"] = None
        state["_lock"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    # --- addressing ---------------------------------------------------------------------------
    def _full_key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def uri_for(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._full_key(key)}"

    def owns(self, uri: str) -> bool:
        try:
            bucket, key = split_s3_uri(uri)
        except errors.UsageError:
            return False
        if bucket != self.bucket or not key:
            return False
        return not self.prefix or key.startswith(self.prefix + "/")

    def describe(self) -> str:
        where = f"at {self.endpoint_url}" if self.endpoint_url else f"(AWS {self.region})"
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/") + f" {where}"

    def _cache_path(self, bucket: str, key: str) -> Path:
        content = parse_content_key(key)
        if content:
            # The same bytes have the same name in every bucket: one cached copy serves them all.
            name = "".join(content)
        else:
            tag = hashlib.sha256(f"{bucket}/{key}".encode()).hexdigest()[:16]
            name = f"{tag}-{_SAFE_NAME_RE.sub('_', key.rsplit('/', 1)[-1])[-80:]}"
        return self.cache_dir / "objects" / name

    # --- error translation --------------------------------------------------------------------
    @contextmanager
    def _translated(self, doing: str, uri: str) -> Iterator[None]:
        try:
            yield
        except _BOTO_ERRORS as exc:
            raise self._translate(exc, doing, uri) from exc

    def _translate(self, exc: BaseException, doing: str, uri: str) -> errors.RecastError:
        exc = _root_cause(exc)
        where = f"object store {self.describe()}"
        if isinstance(exc, ClientError):
            err = exc.response.get("Error", {})
            code = str(err.get("Code", ""))
            message = err.get("Message") or ""
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
            if code in _NOT_FOUND:
                return errors.InputNotFoundError(f"object {uri} does not exist")
            if code == "NoSuchBucket":
                return self._no_bucket(split_s3_uri(uri)[0])
            if code in _DENIED:
                return errors.StorageUnavailableError(f"{where}: access denied ({code}: {message or 'check the AWS credentials'}) while {doing} {uri}")
            if code == "InvalidBucketName":
                return errors.UsageError(f"{where}: invalid bucket name in {uri}")
            if status >= 500 or code in _THROTTLED:
                return errors.StorageUnavailableError(
                    f"{where}: service error {status} {code} ({message}) while {doing} {uri}, after {self.max_attempts} attempts"
                )
            return errors.InternalError(f"{where}: unexpected S3 error {status} {code} ({message}) while {doing} {uri}")
        if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
            return errors.StorageUnavailableError(f"{where}: no usable AWS credentials ({exc}) while {doing} {uri}")
        if isinstance(exc, (BotoConnectionError, HTTPClientError)):
            return errors.StorageUnavailableError(f"{where}: cannot connect ({exc}) while {doing} {uri}")
        if isinstance(exc, ParamValidationError):
            return errors.InternalError(f"{where}: bad request while {doing} {uri}: {exc}")
        return errors.StorageUnavailableError(f"{where}: {type(exc).__name__} ({exc}) while {doing} {uri}")

    def _no_bucket(self, bucket: str) -> errors.StorageUnavailableError:
        return errors.StorageUnavailableError(
            f"object store {self.describe()}: bucket {bucket!r} does not exist (recast does not create buckets: create it first)"
        )

    def _require_bucket(self, bucket: str, doing: str, uri: str) -> None:
        """Tell a missing bucket from a missing key: S3 answers a bare 404 to HEAD for both."""
        if bucket in self._buckets_seen:
            return
        try:
            with self._translated(doing, uri):
                self.client.head_bucket(Bucket=bucket)
        except errors.InputNotFoundError:
            raise self._no_bucket(bucket) from None
        self._buckets_seen.add(bucket)

    def _head(self, bucket: str, key: str, uri: str, doing: str) -> dict[str, Any] | None:
        try:
            with self._translated(doing, uri):
                return self.client.head_object(Bucket=bucket, Key=key)
        except errors.InputNotFoundError:
            self._require_bucket(bucket, doing, uri)
            return None

    # --- writes -------------------------------------------------------------------------------
    def put_file(self, path: Path, *, media_type: str, suffix: str = "") -> StoredObject:
        path = Path(path)
        if not path.is_file():
            raise errors.InputNotFoundError(f"cannot store {path}: no such file")
        sha = sha256_file(path)
        key = self._full_key(content_key(sha, suffix))
        uri = f"s3://{self.bucket}/{key}"
        size = path.stat().st_size
        head = self._head(self.bucket, key, uri, "checking")
        if head is None or head.get("ContentLength") != size:
            extra = {"ContentType": media_type, "Metadata": {"sha256": sha}}
            with self._translated("uploading", uri):
                # upload_file switches to a parallel multipart upload above the threshold.
                self.client.upload_file(str(path), self.bucket, key, ExtraArgs=extra, Config=self.transfer_config)
        return StoredObject(uri=uri, key=key, sha256=sha, size=size, media_type=media_type)

    def put_bytes(self, data: bytes, *, media_type: str, suffix: str = "") -> StoredObject:
        sha = hashlib.sha256(data).hexdigest()
        key = self._full_key(content_key(sha, suffix))
        uri = f"s3://{self.bucket}/{key}"
        head = self._head(self.bucket, key, uri, "checking")
        if head is None or head.get("ContentLength") != len(data):
            with self._translated("uploading", uri):
                self.client.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType=media_type, Metadata={"sha256": sha})
        return StoredObject(uri=uri, key=key, sha256=sha, size=len(data), media_type=media_type)

    # --- reads --------------------------------------------------------------------------------
    def exists(self, uri: str) -> bool:
        bucket, key = split_s3_uri(uri)
        return self._head(bucket, key, uri, "checking") is not None

    def size(self, uri: str) -> int | None:
        bucket, key = split_s3_uri(uri)
        head = self._head(bucket, key, uri, "checking")
        return None if head is None else int(head["ContentLength"])

    def fetch(self, uri: str) -> Path:
        bucket, key = split_s3_uri(uri)
        head = self._head(bucket, key, uri, "fetching")
        if head is None:
            raise errors.InputNotFoundError(f"object {uri} does not exist")
        size = int(head["ContentLength"])
        dest = self._cache_path(bucket, key)
        try:
            if dest.stat().st_size == size:
                return dest
        except FileNotFoundError:
            pass
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(prefix=".tmp-", dir=dest.parent)
            os.close(fd)
        except OSError as exc:
            raise errors.OutputPathError(f"object cache {dest.parent}: cannot write: {exc.strerror or exc}") from exc
        tmp = Path(tmp_name)
        try:
            with self._translated("downloading", uri):
                self.client.download_file(bucket, key, tmp_name, Config=self.transfer_config)
            content = parse_content_key(key)
            if content and sha256_file(tmp) != content[0]:
                raise errors.InputError(f"object {uri} is corrupt: its content does not match the sha256 in its key")
            # Readers only ever see a complete file: a crash leaves a .tmp- file, never a half object.
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
        return dest

    def open_bytes(self, uri: str) -> bytes:
        # Small objects (npz, json) are read straight into memory, bypassing the file cache.
        bucket, key = split_s3_uri(uri)
        with self._translated("reading", uri):
            return self.client.get_object(Bucket=bucket, Key=key)["Body"].read()

    def delete(self, uri: str) -> None:
        if not self.owns(uri):
            raise errors.UsageError(f"refusing to delete {uri}: it is not in object store {self.describe()}")
        bucket, key = split_s3_uri(uri)
        with self._translated("deleting", uri):
            self.client.delete_object(Bucket=bucket, Key=key)

    def presign(self, uri: str, expires_s: int = 3600) -> str | None:
        """A GET link for clients, signed for ``public_endpoint_url`` when one is set: S3 checks the
        signature against the host the request was sent to, so a link signed for the internal
        address would fail (or not resolve) outside the network."""
        bucket, key = split_s3_uri(uri)
        with self._translated("presigning", uri):
            return self.public_client.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=int(expires_s))
