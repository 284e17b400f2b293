"""Plates with a display matrix (phone clips), several video streams and odd sizes.

Frames are worked on upright; the deliverable stores its pixels as the plate stores them, under
the plate's own display matrix. Every plate here is written in the test from a shared clip.
"""

from __future__ import annotations

import os
from pathlib import Path

import av
import numpy as np
import pytest

from recast import errors
from recast.media import probe_media, read_frames, split_plate
from recast.media.orientation import (
    UPRIGHT,
    OrientationError,
    frame_orientation,
    orientation_from,
    parse_display_matrix,
    to_stored,
    to_upright,
)
from recast.media.probe import read_orientation
from recast.media.render import render_video

MEDIA = Path(os.environ.get("RECAST_TEST_MEDIA", Path(__file__).resolve().parents[2].parent / "shared" / "media"))
CLIP = MEDIA / "videos" / "aniportrait_pose_ref_video.mp4"  # 512x512 talking head, 25 fps
PHOTO = MEDIA / "images" / "deepface_img17.jpg"

# the eight orientations as (rotation counter-clockwise, mirrored) and the numpy picture they show
EXPECTED = {
    (0, False): lambda s: s,
    (90, False): lambda s: np.rot90(s, 1),
    (180, False): lambda s: np.rot90(s, 2),
    (-90, False): lambda s: np.rot90(s, -1),  # a phone held upright: turn the sensor's picture clockwise
    (0, True): lambda s: s[:, ::-1],
    (90, True): lambda s: np.rot90(s, 1)[:, ::-1],
    (180, True): lambda s: np.rot90(s, 2)[:, ::-1],
    (-90, True): lambda s: np.rot90(s, -1)[:, ::-1],
}


@pytest.fixture(autouse=True)
def _need_media(media_dir):
    return media_dir


@pytest.fixture(scope="module")
def upright_frames() -> np.ndarray:
    """10 frames of a real talking head as a portrait picture, 320 wide x 448 high (a crop
    that is not square, so a quarter turn shows in the size)."""
    out = []
    with av.open(str(CLIP)) as c:
        for frame in c.decode(video=0):
            out.append(frame.to_ndarray(format="rgb24")[32:480, 96:416])
            if len(out) == 10:
                break
    return np.stack(out)


def write_clip(path: Path, stored: np.ndarray, *, rotation: int = 0, mirrored: bool = False, codec: str = "libx264",
               pix_fmt: str = "yuv420p", options: dict[str, str] | None = None, fmt: str | None = None) -> Path:
    """Encode (N, H, W, 3) frames as they are (the stored pixels) under a display matrix."""
    with av.open(str(path), "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=25)
        stream.width, stream.height = stored.shape[2], stored.shape[1]
        stream.pix_fmt = pix_fmt
        stream.codec_context.options = options or ({"crf": "12", "preset": "veryfast"} if codec == "libx264" else {})
        if rotation or mirrored:
            stream.set_display_rotation(rotation, hflip=mirrored)
        for rgb in stored:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24").reformat(format=pix_fmt)
            for p in stream.encode(frame):
                out.mux(p)
        for p in stream.encode():
            out.mux(p)
    return path


def phone_plate(path: Path, upright: np.ndarray, rotation: int = -90, mirrored: bool = False) -> Path:
    """A plate whose stored pixels show ``upright`` once turned by its display matrix."""
    stored = np.stack([to_stored(f, orientation_from(rotation, mirrored=mirrored)) for f in upright])
    return write_clip(path, stored, rotation=rotation, mirrored=mirrored)


def stored_frames(path: Path) -> np.ndarray:
    return np.stack(list(read_frames(path, role="plate", upright=False)))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


# --- the display matrix ------------------------------------------------------------------------

@pytest.mark.parametrize("rotation,mirrored", sorted(EXPECTED))
def test_display_matrix_read_back_from_a_file_gives_its_rotation_and_upright_picture(tmp_path, rotation, mirrored):
    picture = np.arange(6 * 10 * 3, dtype=np.uint8).reshape(6, 10, 3)
    path = write_clip(tmp_path / "tagged.mp4", np.zeros((1, 32, 48, 3), np.uint8), rotation=rotation, mirrored=mirrored)
    with av.open(str(path)) as c:
        orientation = frame_orientation(next(c.decode(video=0)))
    assert (orientation.rotation, orientation.mirrored) == (rotation, mirrored)
    assert np.array_equal(to_upright(picture, orientation), EXPECTED[rotation, mirrored](picture))
    assert read_orientation(path) == orientation
    if (rotation, mirrored) == (0, False):
        assert orientation == UPRIGHT and orientation.matrix is None


@pytest.mark.parametrize("rotation,mirrored", sorted(EXPECTED))
def test_to_stored_is_the_exact_inverse_of_to_upright(rotation, mirrored):
    o = orientation_from(rotation, mirrored=mirrored)
    stored = np.random.default_rng(1).integers(0, 256, (7, 11, 3), dtype=np.uint8)  # odd, not square
    upright = to_upright(stored, o)
    assert upright.shape[:2] == ((11, 7) if rotation in (90, -90) else (7, 11))
    assert upright.flags.c_contiguous
    assert np.array_equal(to_stored(upright, o), stored)
    assert np.array_equal(to_upright(to_stored(stored if rotation in (0, 180) else upright, o), o),
                          stored if rotation in (0, 180) else upright)


def test_a_matrix_that_is_not_a_quarter_turn_is_refused_naming_the_plate(tmp_path):
    one = 1 << 16
    with pytest.raises(OrientationError, match="quarter turn"):
        parse_display_matrix([46341, -46341, 0, 46341, 46341, 0, 0, 0, 1 << 30])  # 45 degrees
    assert parse_display_matrix([one, 0, 0, 0, one, 0, 0, 0, 1 << 30]) == UPRIGHT
    plate = write_clip(tmp_path / "tilted.mp4", np.zeros((2, 32, 48, 3), np.uint8), rotation=30)
    with pytest.raises(errors.UnsupportedMediaError, match=r"plate '.*tilted\.mp4'.*quarter turn"):
        probe_media(plate, role="plate")


# --- a phone plate: probe, chunks, render ------------------------------------------------------

def test_rotated_plate_is_probed_upright_with_its_rotation(tmp_path, upright_frames):
    plate = phone_plate(tmp_path / "phone.mp4", upright_frames)
    info = probe_media(plate, role="plate")
    assert (info.width, info.height) == (320, 448)  # as shown: portrait
    assert info.stored_size == (448, 320)  # as stored: the sensor's landscape
    assert (info.rotation, info.mirrored) == (-90, False)
    with av.open(str(plate)) as c:
        assert (c.streams.video[0].width, c.streams.video[0].height) == (448, 320)
    untagged = probe_media(write_clip(tmp_path / "plain.mp4", upright_frames[:2]), role="plate")
    assert (untagged.width, untagged.height, untagged.rotation) == (320, 448, 0)


def test_split_plate_writes_upright_chunks(tmp_path, upright_frames):
    plate = phone_plate(tmp_path / "phone.mp4", upright_frames)
    pieces = split_plate(plate, 4, tmp_path / "chunks")
    chunk_frames = np.concatenate([np.stack(list(read_frames(p))) for _, p in pieces])
    stored = stored_frames(plate)
    assert stored.shape == (10, 320, 448, 3)
    # exactly the decoded stored pixels turned clockwise: no resampling on the way in
    assert np.array_equal(chunk_frames, np.stack([np.rot90(f, -1) for f in stored]))
    assert psnr(chunk_frames, upright_frames) > 35  # and that is the portrait picture we filmed


@pytest.mark.parametrize("rotation,mirrored", [(-90, False), (180, False), (90, True)])
def test_render_stores_pixels_as_the_plate_does_under_its_display_matrix(tmp_path, upright_frames, rotation, mirrored):
    """Unchanged upright chunks rendered back: same matrix, same stored size, same stored pixels
    (apart from the codec) -- and a tag on pixels that look upright is kept too (180)."""
    plate = phone_plate(tmp_path / "phone.mp4", upright_frames, rotation, mirrored)
    pieces = split_plate(plate, 5, tmp_path / "chunks")
    out = tmp_path / "out.mp4"
    render_video([p for _, p in pieces], plate, out)
    assert read_orientation(out).matrix == read_orientation(plate).matrix is not None
    delivered, original = stored_frames(out), stored_frames(plate)
    assert delivered.shape == original.shape
    assert psnr(delivered, original) > 38
    shown = probe_media(out, role="output")
    assert (shown.width, shown.height, shown.rotation, shown.mirrored) == (320, 448, rotation, mirrored)


# --- several video streams ----------------------------------------------------------------------

def two_stream_file(path: Path, first: np.ndarray, second: np.ndarray, default: int | None, fmt: str) -> Path:
    with av.open(str(path), "w", format=fmt) as out:
        streams = []
        for frames in (first, second):
            s = out.add_stream("libx264", rate=25)
            s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
            streams.append(s)
        for i, s in enumerate(streams):
            s.disposition = av.stream.Disposition.default if default == i else av.stream.Disposition(0)
        for a, b in zip(first, second):
            for s, rgb in zip(streams, (a, b)):
                for p in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24").reformat(format="yuv420p")):
                    out.mux(p)
        for s in streams:
            for p in s.encode():
                out.mux(p)
    return path


@pytest.fixture()
def ingest_env(recast_env):
    from recast.db.migrate import ensure_schema
    from recast.db.session import dispose_engines
    from recast.tasks.common import reset_stores

    ensure_schema()
    yield recast_env
    reset_stores()
    dispose_engines()


@pytest.mark.parametrize("fmt,default,chosen,why", [
    ("matroska", None, 1, "the largest"),  # no default stream: the largest picture
    ("mp4", 1, 1, "the default"),  # the default stream, though smaller than the other
])
def test_the_plate_stream_is_chosen_deliberately_and_the_ingest_line_says_which(tmp_path, upright_frames, ingest_env, capsys,
                                                                                 fmt, default, chosen, why):
    from recast.tasks.ingest import ingest

    thumb = np.full((6, 256, 256, 3), 40, np.uint8)  # stream 0: a 256x256 picture of nothing
    plate_frames = upright_frames[:6]
    first, second = (thumb, plate_frames) if default is None else (upright_frames[:6, :288, :288], thumb[:, :192, :160])
    plate = two_stream_file(tmp_path / f"two.{'mkv' if fmt == 'matroska' else 'mp4'}", first, second, default, fmt)
    expected = second
    info = probe_media(plate, role="plate")
    assert (info.stream_index, info.video_streams) == (chosen, 2)
    assert (info.width, info.height) == (expected.shape[2], expected.shape[1])
    result = ingest(run_id=None, shot_id=None, plate=str(plate), sources=[str(PHOTO)], chunk_size=4)
    assert result.plate_info.stream_index == chosen
    line = [ln for ln in capsys.readouterr().err.splitlines() if "ingest: plate" in ln][0]
    assert f"ingest: plate {expected.shape[2]}x{expected.shape[1]} h264 (video stream #{chosen} of 2, {why}; also #0 " in line, line
    pieces = split_plate(plate, 4, tmp_path / "chunks")
    got = np.concatenate([np.stack(list(read_frames(p))) for _, p in pieces])
    assert got.shape == expected.shape and psnr(got, expected) > 30


def test_the_ingest_line_says_a_plate_is_rotated(tmp_path, upright_frames, ingest_env, capsys):
    from recast.tasks.ingest import ingest

    plate = phone_plate(tmp_path / "phone.mp4", upright_frames[:4])
    result = ingest(run_id=None, shot_id=None, plate=str(plate), sources=[str(PHOTO)], chunk_size=4)
    assert (result.plate_info.width, result.plate_info.height, result.plate_info.rotation) == (320, 448, -90)
    line = [ln for ln in capsys.readouterr().err.splitlines() if "ingest: plate" in ln][0]
    assert "ingest: plate 320x448 h264 (stored 448x320, rotated -90°" in line, line


# --- odd sizes ------------------------------------------------------------------------------------

@pytest.mark.parametrize("container", ["mp4", "mov"])
def test_an_odd_sized_plate_is_delivered_at_its_own_size(tmp_path, upright_frames, container):
    """641x361 (a ProRes plate, as a post house sends): 4:2:0 H.264 cannot code an odd size, so the
    deliverable is H.264 4:4:4 (mp4) or the plate's ProRes (mov) at exactly 641x361."""
    frames = np.stack([np.pad(f, ((0, 0), (0, 321), (0, 0)), mode="reflect")[40:401, :641] for f in upright_frames[:4]])
    assert frames.shape[1:3] == (361, 641)
    plate = write_clip(tmp_path / "odd.mov", frames, codec="prores_ks", pix_fmt="yuv422p10le", options={"profile": "3"}, fmt="mov")
    info = probe_media(plate, role="plate")
    assert (info.width, info.height) == (641, 361)
    pieces = split_plate(plate, 2, tmp_path / "chunks")
    out = tmp_path / f"out.{container}"
    rendered = render_video([p for _, p in pieces], plate, out, container=container)
    delivered = probe_media(out, role="output")
    assert (delivered.width, delivered.height, delivered.frame_count) == (641, 361, 4)
    assert rendered.codec == ("h264" if container == "mp4" else "prores")
    assert psnr(stored_frames(out), stored_frames(plate)) > 38
