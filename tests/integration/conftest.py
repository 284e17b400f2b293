"""Services for integration tests: an S3 API (moto's server) on a real loopback HTTP port."""

from __future__ import annotations

import uuid

import pytest

# Isolate boto3 from any real AWS configuration on the machine: fake keys, no profile, no
# instance metadata lookups (which would stall for seconds off EC2).
_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_CONFIG_FILE": "/nonexistent/recast-test-aws-config",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/recast-test-aws-credentials",
    "AWS_EC2_METADATA_DISABLED": "true",
}


@pytest.fixture(scope="session")
def s3_server():
    """Endpoint URL (``http://127.0.0.1:PORT``) of a moto S3 server running for the session."""
    from moto.server import ThreadedMotoServer

    with pytest.MonkeyPatch.context() as mp:
        for name, value in _AWS_ENV.items():
            mp.setenv(name, value)
        mp.delenv("AWS_PROFILE", raising=False)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        try:
            yield f"http://{host}:{port}"
        finally:
            server.stop()


@pytest.fixture(scope="session")
def s3_admin(s3_server):
    """A plain boto3 client on the test server, for setup and inspection (not recast's store)."""
    import boto3

    return boto3.session.Session().client("s3", endpoint_url=s3_server, region_name="us-east-1")


@pytest.fixture()
def s3_bucket(s3_server, s3_admin):
    """A fresh, empty bucket on the session's S3 server: ``(endpoint_url, bucket_name)``."""
    bucket = f"recast-test-{uuid.uuid4().hex[:12]}"
    s3_admin.create_bucket(Bucket=bucket)
    return s3_server, bucket
