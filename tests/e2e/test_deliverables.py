"""Deliverables: an output path never destroys an input, the container is the one asked for (mp4 or
mov, anything else refused before any work), a QC fail publishes nothing (exit 5) unless
``--deliver-on-fail``, and a published file has the mode the umask gives."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import av
import numpy as np
import pytest
from typer.testing import CliRunner

from recast.checksums import sha256_file
from recast.cli import app
from tests.conftest import IMAGES

SOURCE = IMAGES / "deepface_img17.jpg"


def invoke(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def run_count(data_dir: Path) -> int:
    """Runs recorded so far (0 when the database was never even created)."""
    if not (data_dir / "recast.db").exists():
        return 0
    listed = invoke("runs", "--json")
    assert listed.exit_code == 0, listed.stderr
    return len(json.loads(listed.stdout))


def no_partials(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# --- refused before any work (no run row, no Prefect) ------------------------------------------

def test_out_equal_to_the_plate_is_refused_and_the_plate_is_untouched(recast_env, short_plate, tmp_path):
    plate = tmp_path / "plate.mp4"
    shutil.copyfile(short_plate, plate)
    before = sha256_file(plate)
    result = invoke("swap", "--plate", plate, "--source", SOURCE, "--out", plate)
    assert result.exit_code == 2, result.output
    assert str(plate) in result.stderr and "input" in result.stderr
    assert sha256_file(plate) == before
    assert run_count(recast_env) == 0


def test_out_reaching_the_plate_through_a_symlink_or_a_relative_path_is_refused(recast_env, short_plate, tmp_path, monkeypatch):
    plate = tmp_path / "plate.mp4"
    shutil.copyfile(short_plate, plate)
    before = sha256_file(plate)
    link = tmp_path / "link.mp4"
    link.symlink_to(plate)
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    for out in (link, Path("..") / "plate.mp4"):
        result = invoke("swap", "--plate", plate, "--source", SOURCE, "--out", out)
        assert result.exit_code == 2 and str(out) in result.stderr, result.output
    assert sha256_file(plate) == before
    assert run_count(recast_env) == 0


def test_out_equal_to_the_source_photo_is_refused(recast_env, short_plate, tmp_path):
    photo = tmp_path / "actor.jpg"
    shutil.copyfile(SOURCE, photo)
    before = sha256_file(photo)
    result = invoke("swap", "--plate", short_plate, "--source", photo, "--out", photo)
    assert result.exit_code == 2, result.output
    assert str(photo) in result.stderr and "input" in result.stderr
    assert sha256_file(photo) == before
    assert run_count(recast_env) == 0


def test_out_equal_to_the_face_reference_photo_is_refused(recast_env, short_plate, tmp_path):
    ref = tmp_path / "who.jpg"
    shutil.copyfile(SOURCE, ref)
    result = invoke("swap", "--plate", short_plate, "--source", SOURCE, "--face", f"reference:{ref}", "--out", ref)
    assert result.exit_code == 2 and str(ref) in result.stderr, result.output
    assert sha256_file(ref) == sha256_file(SOURCE)


def test_out_inside_the_object_store_or_the_database_is_refused(recast_env, short_plate):
    store = recast_env / "store" / "objects"
    store.mkdir(parents=True)
    for out in (store / "x.mp4", recast_env / "recast.db"):
        result = invoke("swap", "--plate", short_plate, "--source", SOURCE, "--out", out)
        assert result.exit_code == 2, result.output
        assert str(out) in result.stderr and "recast's own data" in result.stderr
    assert not (store / "x.mp4").exists()
    assert run_count(recast_env) == 0


@pytest.mark.parametrize("name", ["x.avi", "x.exr", "x.mkv", "x"])
def test_containers_recast_cannot_deliver_are_refused_with_the_list(recast_env, short_plate, tmp_path, name):
    out = tmp_path / name
    result = invoke("swap", "--plate", short_plate, "--source", SOURCE, "--out", out)
    assert result.exit_code == 2, result.output
    assert str(out) in result.stderr
    assert "mp4 (.mp4, .m4v), mov (.mov)" in result.stderr
    assert not out.exists() and run_count(recast_env) == 0


def test_deliver_contradicting_the_out_extension_is_a_usage_error(recast_env, short_plate, tmp_path):
    result = invoke("swap", "--plate", short_plate, "--source", SOURCE, "--out", tmp_path / "x.mp4", "--deliver", "mov")
    assert result.exit_code == 2, result.output
    assert "--deliver mov" in result.stderr and "x.mp4" in result.stderr
    bad = invoke("swap", "--plate", short_plate, "--source", SOURCE, "--out", tmp_path / "x.mkv", "--deliver", "mkv")
    assert bad.exit_code == 2 and "--deliver 'mkv': choose from mp4, mov" in bad.stderr
    assert run_count(recast_env) == 0


# --- codec per container, file mode (media level, no flow) -------------------------------------

def _plate(path: Path, codec: str, pix_fmt: str, options: dict[str, str], n: int = 6) -> Path:
    """A small plate in ``codec`` with PCM audio (what ProRes and DNxHR plates usually carry)."""
    w, h = 320, 240
    with av.open(str(path), "w", format="mov") as out:
        video = out.add_stream(codec, rate=25)
        video.width, video.height, video.pix_fmt = w, h, pix_fmt
        video.codec_context.options = options
        audio = out.add_stream("pcm_s16le", rate=48000)
        audio.codec_context.layout = "stereo"
        for i in range(n):
            rgb = np.zeros((h, w, 3), np.uint8)
            rgb[:, : (i + 1) * 40] = (200, 120, 40)
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format=pix_fmt)
            frame.pts = i
            for p in video.encode(frame):
                out.mux(p)
        for p in video.encode(None):
            out.mux(p)
        samples = av.AudioFrame.from_ndarray(np.zeros((1, 2 * 48000 * n // 25), np.int16), format="s16", layout="stereo")
        samples.sample_rate, samples.pts = 48000, 0
        for p in list(audio.encode(samples)) + list(audio.encode(None)):
            out.mux(p)
    return path


@pytest.mark.parametrize("codec,pix_fmt,options,profile", [
    ("prores_ks", "yuv422p10le", {"profile": "1"}, "LT"),
    ("dnxhd", "yuv422p", {"profile": "dnxhr_sq"}, "DNXHR SQ"),
])
def test_mov_keeps_the_plates_codec_and_profile_mp4_gets_h264(tmp_path, codec, pix_fmt, options, profile):
    from recast.media import read_frames, render_video, write_lossless

    plate = _plate(tmp_path / "plate.mov", codec, pix_fmt, options)
    write_lossless(tmp_path / "c.mkv", read_frames(plate), 25)
    old = os.umask(0o027)
    try:
        mov = render_video([tmp_path / "c.mkv"], plate, tmp_path / "out.mov", container="mov")
        mp4 = render_video([tmp_path / "c.mkv"], plate, tmp_path / "out.mp4", container="mp4")
    finally:
        os.umask(old)
    assert (tmp_path / "out.mov").read_bytes()[8:12] == b"qt  " and mov.container == "mov"
    with av.open(str(tmp_path / "out.mov")) as c:
        v = c.streams.video[0]
        assert v.codec_context.name == ("prores" if codec == "prores_ks" else codec)
        assert v.codec_context.profile == profile
        assert [a.codec_context.name for a in c.streams.audio] == ["pcm_s16le"] and mov.audio_copied
        assert sum(1 for _ in c.decode(v)) == 6
    assert mp4.codec == "h264" and (tmp_path / "out.mp4").read_bytes()[8:12] != b"qt  "
    for p in (tmp_path / "out.mov", tmp_path / "out.mp4"):
        assert p.stat().st_mode & 0o777 == 0o640
    assert no_partials(tmp_path) == []


def test_choose_video_codec_and_resolve_container():
    from recast.errors import UsageError
    from recast.media import choose_video_codec, resolve_container

    assert choose_video_codec("mp4", "hevc").encoder == "libx265"
    assert choose_video_codec("mp4", "prores", "HQ").encoder == "libx264"
    assert choose_video_codec("mov", "prores", "4444").pix_fmt == "yuv444p10le"
    assert choose_video_codec("mov", "mpeg2video").encoder == "libx264"
    assert resolve_container("a.MOV").name == "mov" and resolve_container(None).name == "mp4"
    assert resolve_container("a", "mov").name == "mov"
    with pytest.raises(UsageError, match=r"\.avi"):
        resolve_container("a.avi")


# --- whole runs -------------------------------------------------------------------------------

@pytest.mark.slow
def test_mov_delivery_umask_and_qc_fail_publishes_nothing_unless_asked(recast_env, short_plate, tmp_path, monkeypatch):
    base = ("swap", "--plate", short_plate, "--source", SOURCE, "--mode", "face", "--chunk-size", "20", "--json")

    # 1. .mov: a real QuickTime file with the plate's frames, mode from the umask (not 0600)
    mov = tmp_path / "shot.mov"
    old = os.umask(0o027)
    try:
        result = invoke(*base, "--out", mov)
    finally:
        os.umask(old)
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["published"] is True and Path(summary["output"]) == mov.absolute()
    assert mov.read_bytes()[8:12] == b"qt  "
    with av.open(str(mov)) as c:
        assert "mov" in c.format.name
        assert sum(1 for _ in c.decode(c.streams.video[0])) == 40 == summary["frames"]
        assert len(c.streams.audio) == 1
    assert mov.stat().st_mode & 0o777 == 0o640
    assert no_partials(tmp_path) == []
    assert summary["output_uri"].endswith(".mov")

    # 2. thresholds no swap can meet: verdict fail -> nothing at --out, exit 5, the store URI named
    monkeypatch.setenv("RECAST_QC_IDENTITY_PASS", "2")
    monkeypatch.setenv("RECAST_QC_IDENTITY_FAIL", "2")
    from recast.settings import reset_settings

    reset_settings()
    out = tmp_path / "failed.mp4"
    failed = invoke(*base, "--out", out)
    assert failed.exit_code == 5, failed.output
    verdict = json.loads(failed.stdout)
    assert verdict["qc"]["verdict"] == "fail" and verdict["published"] is False and verdict["output"] is None
    uri = verdict["output_uri"]
    assert uri.startswith("file://") and uri.endswith(".mp4")
    assert uri in failed.stderr and "--deliver-on-fail" in failed.stderr
    assert not out.exists() and no_partials(tmp_path) == []
    from recast.storage import fetch_any

    assert fetch_any(uri).is_file()  # the render stays in the store
    status = [r["status"] for r in json.loads(invoke("runs", "--json").stdout) if r["run_id"] == verdict["run_id"]]
    assert status == ["done"]

    # 3. --deliver-on-fail: the same (cached) render is published, exit 0, the verdict still fail
    forced = invoke(*base, "--out", out, "--deliver-on-fail")
    assert forced.exit_code == 0, forced.stderr
    again = json.loads(forced.stdout)
    assert again["qc"]["verdict"] == "fail" and again["published"] is True
    assert out.is_file() and sha256_file(out) == sha256_file(fetch_any(again["output_uri"]))
    assert no_partials(tmp_path) == []
