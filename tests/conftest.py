"""Shared fixtures: real media from ../shared/media, isolated settings per test."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MEDIA = Path(os.environ.get("RECAST_TEST_MEDIA", REPO.parent / "shared" / "media"))
IMAGES = MEDIA / "images"
VIDEOS = MEDIA / "videos"


def media_available() -> bool:
    return VIDEOS.is_dir() and IMAGES.is_dir()


@pytest.fixture(scope="session")
def media_dir() -> Path:
    if not media_available():
        pytest.fail(f"test media not found at {MEDIA}: clone next to ../shared or set RECAST_TEST_MEDIA")
    return MEDIA


@pytest.fixture()
def recast_env(tmp_path, monkeypatch):
    """Point recast's settings at a fresh data directory for one test."""
    from recast.settings import reset_settings

    data = tmp_path / "recast-data"
    monkeypatch.setenv("RECAST_DATA_DIR", str(data))
    for var in ("RECAST_DATABASE_URL", "RECAST_STORAGE_URL", "RECAST_S3_ENDPOINT_URL"):
        monkeypatch.delenv(var, raising=False)
    reset_settings()
    yield data
    reset_settings()
