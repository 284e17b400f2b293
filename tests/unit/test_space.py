"""Disk space before a run: the estimate of what a swap writes, and the one-line refusal when it
does not fit (tested with a given free-space function, not by filling a disk)."""

from __future__ import annotations

from pathlib import Path

import pytest

from recast.contracts import MediaInfo
from recast.services.space import (
    DataDiskFullError,
    OutputDiskFullError,
    RunEstimate,
    check_free_space,
    estimate_run_bytes,
)
from tests.conftest import VIDEOS

GB = 1024**3


def info(w=1920, h=1080, n=240) -> MediaInfo:
    return MediaInfo(kind="video", codec="h264", width=w, height=h, frame_count=n)


def test_estimate_counts_lossless_chunks_by_pixels_not_by_the_plate_file():
    small_file = estimate_run_bytes(info(), plate_bytes=10 * 1024**2, mode="head")
    # 1080p x 240 frames: three lossless copies at <= 0.75 B/px are ~1.1 GB, whatever the H.264 size
    assert 1.0 * GB < small_file.data_bytes < 3 * GB
    face = estimate_run_bytes(info(), plate_bytes=10 * 1024**2, mode="face")
    assert face.data_bytes < small_file.data_bytes  # no background plate in face mode
    s3 = estimate_run_bytes(info(), plate_bytes=10 * 1024**2, mode="head", local_store=False)
    assert s3.data_bytes < face.data_bytes
    assert small_file.out_bytes >= 2 * 2 * 10 * 1024**2  # the signed copy beside the encoded one


def test_estimate_is_above_what_ingest_really_writes(tmp_path):
    """The lossless factor holds on a real clip: the FFV1 chunks ingest writes fit in one copy's allowance."""
    from recast.media import probe_media
    from recast.media.chunks import split_plate
    from recast.services.space import LOSSLESS_BYTES_PER_PIXEL

    plate = VIDEOS / "dreamtalk_W009_front_happy_level3_001.mp4"
    i = probe_media(plate)
    written = sum(p.stat().st_size for _, p in split_plate(plate, 48, tmp_path / "chunks"))
    assert written <= LOSSLESS_BYTES_PER_PIXEL * i.width * i.height * i.frame_count


def test_full_data_directory_is_the_environment_exit_6(tmp_path):
    from recast.cli.guard import exit_code_for

    need = RunEstimate(data_bytes=50 * GB, out_bytes=GB)
    with pytest.raises(DataDiskFullError) as e:
        check_free_space(tmp_path / "data", tmp_path / "o.mp4", need, free_bytes=lambda p: 3 * GB)
    msg = str(e.value)
    assert "\n" not in msg and "needs ~51.0 GB" in msg and "3.0 GB free" in msg and str(tmp_path) in msg
    assert exit_code_for(e.value) == 6


def test_no_room_at_out_is_the_users_output_exit_3(tmp_path, monkeypatch):
    import recast.services.space as space
    from recast.cli.guard import exit_code_for

    monkeypatch.setattr(space, "_same_device", lambda a, b: False)  # --out on another disk
    out_dir = tmp_path / "deliveries"
    out_dir.mkdir()
    free = {True: 100 * GB, False: 200 * 1024**2}
    need = RunEstimate(data_bytes=GB, out_bytes=2 * GB)
    with pytest.raises(OutputDiskFullError) as e:
        check_free_space(tmp_path / "data", out_dir / "o.mp4", need, free_bytes=lambda p: free[p == tmp_path])
    assert f"--out '{out_dir / 'o.mp4'}'" in str(e.value) and "needs ~2.0 GB" in str(e.value) and "0.2 GB free" in str(e.value)
    assert exit_code_for(e.value) == 3
    check_free_space(tmp_path / "data", out_dir / "o.mp4", RunEstimate(GB, 100 * 1024**2), free_bytes=lambda p: free[p == tmp_path])


def test_swap_refused_before_any_run_when_the_estimate_does_not_fit(recast_env, short_plate, tmp_path, monkeypatch):
    """The CLI checks before it submits: exit 6, one line, no run recorded, nothing at --out."""
    from typer.testing import CliRunner

    import recast.services.space as space
    from recast.cli import app
    from tests.conftest import IMAGES

    import recast.cli.swap as swap_cli

    prepared: list[bool] = []
    monkeypatch.setattr(swap_cli, "prepare", lambda **kw: prepared.append(True))
    monkeypatch.setattr(space, "estimate_run_bytes", lambda *a, **k: RunEstimate(data_bytes=10**15, out_bytes=10**9))
    out = tmp_path / "o.mp4"
    r = CliRunner().invoke(app, ["swap", "--plate", str(short_plate), "--source", str(IMAGES / "deepface_img17.jpg"), "--out", str(out)])
    assert r.exit_code == 6, r.stderr
    lines = [x for x in r.stderr.splitlines() if x.startswith("recast: error")]
    assert len(lines) == 1 and "not enough disk space" in lines[0] and "GB free" in lines[0]
    assert not out.exists()
    # refused before prepare(): no Prefect server was started (or joined), the database not even created
    assert prepared == []
    assert not (recast_env / "prefect" / "server.json").exists() and not (recast_env / "recast.db").exists()
    from recast.db.migrate import ensure_schema
    from recast.services.runs import recent_runs

    ensure_schema()
    assert recent_runs(5) == []
