"""The studio's signing certificate, key and watermark seed for tests that run recast as a
service (PostgreSQL or S3 configured), where recast refuses to sign with a per-machine
development CA: a CA made once in ``directory`` stands in for the studio's."""

from __future__ import annotations

from pathlib import Path


def studio_credentials_env(directory: Path, *, seed: int | None = None) -> dict[str, str]:
    """``RECAST_C2PA_CERT``, ``RECAST_C2PA_KEY``, ``RECAST_C2PA_TRUST_ANCHORS`` and
    ``RECAST_WATERMARK_SEED`` (the development seed unless given, so outputs match local runs)."""
    from recast.media.credentials import ensure_dev_signing_identity
    from recast.models.watermark import DEVELOPMENT_SEED

    directory = Path(directory)
    ensure_dev_signing_identity(directory)
    return {
        "RECAST_C2PA_CERT": str(directory / "recast-dev-signer-chain.pem"),
        "RECAST_C2PA_KEY": str(directory / "recast-dev-signer-key.pem"),
        "RECAST_C2PA_TRUST_ANCHORS": str(directory / "recast-dev-root-ca.pem"),
        "RECAST_WATERMARK_SEED": str(DEVELOPMENT_SEED if seed is None else seed),
    }
