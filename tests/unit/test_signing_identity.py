"""Signing identity and watermark key when recast runs as a service.

With PostgreSQL or S3 configured, renders are made on several machines and verified on any: a
development CA made per machine would sign renders the others cannot verify, and the built-in
watermark key is every studio's. So a service refuses to start (and to sign or mark) without the
studio's certificate, key and seed, in one line naming the variables, and ``recast serve`` and
``recast worker`` do on any storage; other commands on one machine keep the development defaults.
"""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from tests.studio_credentials import studio_credentials_env

VARS = ("RECAST_C2PA_CERT", "RECAST_C2PA_KEY", "RECAST_WATERMARK_SEED", "RECAST_C2PA_TRUST_ANCHORS")


@pytest.fixture()
def service(recast_env, monkeypatch):
    """A data directory whose store is S3: recast runs as a service (nothing is stored here)."""
    from recast.settings import reset_settings

    for name in VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RECAST_STORAGE_URL", "s3://studio-bucket/recast")
    reset_settings()
    return recast_env


def test_a_service_without_the_studios_keys_is_refused_naming_them(service, monkeypatch):
    from recast.errors import UsageError
    from recast.media.credentials import signing_identity, watermark_seed
    from recast.settings import reset_settings

    for call in (signing_identity, watermark_seed):
        with pytest.raises(UsageError) as err:
            call()
        msg = str(err.value)
        assert "RECAST_C2PA_CERT, RECAST_C2PA_KEY, RECAST_WATERMARK_SEED" in msg and "RECAST_STORAGE_URL is S3" in msg
        assert "\n" not in msg
    assert not (service / "c2pa").exists()  # no per-machine development CA was made

    # PostgreSQL alone makes it a service too; only what is missing is named
    monkeypatch.delenv("RECAST_STORAGE_URL")
    monkeypatch.setenv("RECAST_DATABASE_URL", "postgresql+psycopg://recast@db.internal/recast")
    monkeypatch.setenv("RECAST_WATERMARK_SEED", "0x1234abcd")
    reset_settings()
    with pytest.raises(UsageError, match=r"set RECAST_C2PA_CERT, RECAST_C2PA_KEY: .*PostgreSQL"):
        signing_identity()
    assert watermark_seed() == 0x1234ABCD


@pytest.mark.parametrize("command", ["serve", "worker"])
def test_serve_and_worker_refuse_to_start_without_them(service, command):
    from recast.cli import app

    result = CliRunner().invoke(app, [command])
    assert result.exit_code == 2, result.output
    lines = [x for x in result.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and f"recast {command}: set RECAST_C2PA_CERT, RECAST_C2PA_KEY, RECAST_WATERMARK_SEED" in lines[0], lines


@pytest.mark.parametrize("command", ["serve", "worker"])
def test_serve_and_worker_on_sqlite_and_a_local_store_refuse_to_start_without_them(recast_env, monkeypatch, command):
    """Their renders are the studio's whatever the storage: no per-machine development CA, no
    public watermark key, even on one machine."""
    from recast.cli import app
    from recast.settings import reset_settings

    for name in VARS:
        monkeypatch.delenv(name, raising=False)
    reset_settings()
    result = CliRunner().invoke(app, [command])
    assert result.exit_code == 2, result.output
    lines = [x for x in result.stderr.splitlines() if x.strip()]
    assert len(lines) == 1, lines
    assert f"recast {command}: set RECAST_C2PA_CERT, RECAST_C2PA_KEY, RECAST_WATERMARK_SEED" in lines[0]
    assert f"recast {command} " in lines[0].split("runs as a service here", 1)[1]  # says why: the command itself
    assert not (recast_env / "c2pa").exists()


def test_a_service_with_the_studios_keys_uses_them(service, tmp_path, monkeypatch):
    from recast.media.credentials import require_studio_credentials, signing_identity, watermark_seed
    from recast.settings import reset_settings

    for name, value in studio_credentials_env(tmp_path / "studio", seed=987654321).items():
        monkeypatch.setenv(name, value)
    reset_settings()
    require_studio_credentials("recast worker")
    ident = signing_identity()
    assert str(tmp_path / "studio") in ident.description and watermark_seed() == 987654321
    assert not (service / "c2pa").exists()


def test_one_machine_keeps_the_development_defaults(recast_env, monkeypatch):
    from recast.media.credentials import require_studio_credentials, signing_identity, watermark_seed
    from recast.models.watermark import DEVELOPMENT_SEED
    from recast.settings import reset_settings

    for name in VARS:
        monkeypatch.delenv(name, raising=False)
    reset_settings()
    require_studio_credentials("recast swap")
    assert watermark_seed() == DEVELOPMENT_SEED
    assert "development" in signing_identity().description and (recast_env / "c2pa").is_dir()


def test_watermark_seed_values(recast_env, monkeypatch):
    from recast.errors import UsageError
    from recast.media.credentials import watermark_seed
    from recast.models.watermark import WatermarkKey, parse_seed
    from recast.settings import reset_settings

    assert parse_seed("0xFF") == parse_seed("255") == parse_seed(255) == 255
    for bad in ("-1", str(1 << 64), "twelve", 1.5):
        with pytest.raises(UsageError, match="watermark seed"):
            parse_seed(bad)
    with pytest.raises(UsageError):
        WatermarkKey(seed=-3)
    monkeypatch.setenv("RECAST_WATERMARK_SEED", str(1 << 70))
    reset_settings()
    with pytest.raises(UsageError, match="RECAST_WATERMARK_SEED: watermark seed"):
        watermark_seed()
