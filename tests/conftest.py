"""Shared fixtures: real media from ../shared/media, isolated settings per test."""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import numpy as np
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



@pytest.fixture()
def text_as_mp4(tmp_path) -> Path:
    """A text file named like a movie."""
    path = tmp_path / "notes.mp4"
    path.write_text("this is not a video\n" * 50)
    return path


@pytest.fixture(scope="session")
def prefect_server():
    """One real Prefect API (temporary, SQLite) for every flow run of the session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def no_face_clip(tmp_path_factory) -> Path:
    """A short H.264 clip of a scene with nobody in it (scikit-image's coffee cup, panned)."""
    import skimage.data

    from recast.media.synthetic import camera_move_frames, write_h264

    frames = camera_move_frames(skimage.data.coffee(), size=256, frames=12)
    return write_h264(frames, tmp_path_factory.mktemp("noface") / "no_face.mp4", rate=Fraction(25))


@pytest.fixture(scope="session")
def no_face_photo(tmp_path_factory) -> Path:
    import skimage.data

    from recast.media import write_png

    path = tmp_path_factory.mktemp("noface") / "coffee.png"
    write_png(path, np.ascontiguousarray(skimage.data.coffee()))
    return path


@pytest.fixture(scope="session")
def short_plate(tmp_path_factory) -> Path:
    """The first 40 frames of a real talking-head clip with audio (keeps flow tests quick)."""
    return first_frames(VIDEOS / "aniportrait_pose_ref_video.mp4", 40, tmp_path_factory.mktemp("plates") / "short_plate.mp4")


@pytest.fixture(scope="session")
def short_plate_glasses(tmp_path_factory) -> Path:
    """The first 90 frames (3 s) of a frontal talking clip (round glasses, plain wall) with audio:
    enough frames for the watermark's evidence to add up after a delivery re-encode."""
    return first_frames(VIDEOS / "liveportrait_d19.mp4", 90, tmp_path_factory.mktemp("plates") / "short_plate_glasses.mp4")


def first_frames(src: Path, count: int, out: Path) -> Path:
    from recast.media.synthetic import first_frames as trim

    return trim(src, count, out)


@pytest.fixture()
def postgres_url():
    """A fresh, empty PostgreSQL database on the server named by RECAST_TEST_POSTGRES_URL (dropped after)."""
    import uuid

    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    admin = os.environ.get("RECAST_TEST_POSTGRES_URL")
    if not admin:
        pytest.skip("RECAST_TEST_POSTGRES_URL is not set: no PostgreSQL server to test against (CI sets it)")
    name = f"recast_flow_{uuid.uuid4().hex[:10]}"
    engine = create_engine(admin, isolation_level="AUTOCOMMIT")
    with engine.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(admin).set(database=name).render_as_string(hide_password=False)
    finally:
        from recast.db.session import dispose_engines

        dispose_engines()
        with engine.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        engine.dispose()
