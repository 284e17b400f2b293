"""recast.media on real clips: probing, errors, lossless chunks, H.264 render with plate timing and audio."""

from __future__ import annotations

import math
import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from recast import errors
from recast.contracts import Rate
from recast.media import (
    check_output_writable,
    probe_media,
    read_all_frames,
    read_frames,
    read_frames_at,
    read_frames_in_chunks,
    read_image,
    read_timing,
    render_h264,
    sha256_file,
    split_plate,
    write_lossless,
    write_png,
)

# Same location rule as tests/conftest.py (which is not importable by name: tests/ is no package).
MEDIA = Path(os.environ.get("RECAST_TEST_MEDIA", Path(__file__).resolve().parents[2].parent / "shared" / "media"))
IMAGES = MEDIA / "images"
VIDEOS = MEDIA / "videos"

TINY = VIDEOS / "dreamtalk_W009_front_happy_level3_001.mp4"  # 256x256, 108 frames, 25 fps, no audio
VFR = VIDEOS / "videoretalking_1.mp4"  # 700x700, 135 frames, aac, variable frame rate
NO_AUDIO = VIDEOS / "liveportrait_d0.mp4"  # 512x512, 78 frames, 25 fps
MOOV_FIRST = VIDEOS / "liveportrait_s18.mp4"  # 1280x720, index at the start of the file


@pytest.fixture(autouse=True)
def _need_media(media_dir):
    return media_dir


@pytest.fixture(scope="module")
def tiny_frames() -> np.ndarray:
    return read_all_frames(TINY, role="plate")


def _cut(src: Path, dst: Path, keep: float) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * keep)])
    return dst


def _files(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir())


# --- probe ----------------------------------------------------------------------------------


def test_probe_tiny_video():
    info = probe_media(TINY, role="plate")
    assert info.kind == "video"
    assert info.codec == "h264"
    assert (info.width, info.height) == (256, 256)
    assert info.pix_fmt == "yuv420p"
    assert info.frame_count == 108
    assert info.rate == Rate.of(25)
    assert info.avg_rate == Rate.of(25)
    assert info.variable_frame_rate is False
    assert info.audio == ()
    assert "mp4" in info.container


def test_probe_vfr_plate_with_audio():
    info = probe_media(VFR, role="plate")
    assert info.frame_count == 135
    assert info.rate == Rate.of(30)
    assert info.time_base == Rate.of(Fraction(1, 15360))
    # 48 of its frame gaps are two ticks of 1/30 s (a screen recorder dropping frames).
    assert info.variable_frame_rate is True
    assert info.avg_rate.fraction == Fraction(1350, 61)
    assert len(info.audio) == 1 and info.audio[0].codec == "aac"
    assert info.audio[0].sample_rate == 44100 and info.audio[0].channels == 2


def test_probe_frame_count_matches_decode():
    info = probe_media(NO_AUDIO, role="plate")
    n = sum(1 for _ in read_frames(NO_AUDIO, role="plate"))
    assert info.frame_count == n == 78


def test_read_timing_matches_decoded_pts():
    pts, tb = read_timing(VFR)
    assert pts.dtype == np.int64 and tb == Fraction(1, 15360)
    with av.open(str(VFR)) as c:
        decoded = [f.pts for f in c.decode(video=0)]
    assert pts.tolist() == decoded
    assert sorted(set(np.diff(pts).tolist())) == [512, 1024]


def test_probe_image():
    info = probe_media(IMAGES / "skimage_astronaut.png", role="source")
    assert (info.kind, info.codec, info.frame_count) == ("image", "png", 1)
    assert (info.width, info.height) == (512, 512)
    jpg = probe_media(IMAGES / "deepface_img25.jpg", role="source")
    assert (jpg.kind, jpg.codec) == ("image", "jpeg")


def test_sha256_file(tmp_path):
    import hashlib

    p = tmp_path / "blob.bin"
    data = os.urandom(3 * (1 << 20) + 17)
    p.write_bytes(data)
    assert sha256_file(p) == hashlib.sha256(data).hexdigest()


# --- errors ---------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    missing = tmp_path / "y.mp4"
    with pytest.raises(errors.InputNotFoundError) as ei:
        probe_media(missing, role="plate")
    assert str(ei.value) == f"plate '{missing}': file not found"
    assert isinstance(ei.value, FileNotFoundError)
    with pytest.raises(errors.InputNotFoundError, match="source .*file not found"):
        read_image(tmp_path / "face.jpg")


def test_text_file_renamed_mp4(tmp_path):
    fake = tmp_path / "fake.mp4"
    fake.write_text("this is not a video\n" * 50)
    with pytest.raises(errors.MediaDecodeError) as ei:
        probe_media(fake, role="plate")
    msg = str(ei.value)
    assert msg.startswith(f"plate '{fake}': not a readable media file (")
    assert "\n" not in msg
    with pytest.raises(errors.MediaDecodeError, match="not a readable image"):
        read_image(fake.rename(tmp_path / "fake.png"), role="source")


@pytest.mark.parametrize("keep", [0.6, 0.3])
@pytest.mark.parametrize("clip", [TINY, MOOV_FIRST], ids=["moov-at-end", "moov-first"])
def test_truncated_mp4(tmp_path, clip, keep):
    cut = _cut(clip, tmp_path / "cut.mp4", keep)
    with pytest.raises(errors.MediaDecodeError, match=r"plate '.*cut\.mp4': truncated or corrupt") as ei:
        probe_media(cut, role="plate")
    assert not isinstance(ei.value, av.error.FFmpegError)
    out = tmp_path / "chunks"
    with pytest.raises(errors.MediaDecodeError, match="truncated or corrupt"):
        split_plate(cut, 16, out)
    assert not out.exists() or _files(out) == []


def test_no_video_stream(tmp_path):
    audio_only = tmp_path / "voice.m4a"
    with av.open(str(audio_only), "w", format="mp4") as c:
        s = c.add_stream("aac", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 8000
        for i in range(4):
            frame.pts = i * 1024
            for p in s.encode(frame):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    with pytest.raises(errors.UnsupportedMediaError, match=r"plate '.*voice\.m4a': no video stream"):
        probe_media(audio_only, role="plate")


# --- images ---------------------------------------------------------------------------------


def test_read_image_variants(tmp_path):
    rgb = read_image(IMAGES / "deepface_img25.jpg")
    assert rgb.dtype == np.uint8 and rgb.shape == (400, 400, 3)

    gray = read_image(IMAGES / "insightface_Tom_Hanks_54745.png")
    assert gray.shape == (112, 112, 3)

    rgba = np.zeros((4, 6, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:, :3, 3] = 255  # left half opaque red, right half transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    out = read_image(tmp_path / "a.png")
    assert out.shape == (4, 6, 3)
    assert out[0, 0].tolist() == [200, 0, 0] and out[0, 5].tolist() == [255, 255, 255]


def test_read_image_applies_exif_orientation(tmp_path):
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :20] = 255  # white left half
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = 6  # stored rotated: display needs a 90 degree clockwise turn
    img.save(tmp_path / "rot.jpg", exif=exif, quality=95)
    out = read_image(tmp_path / "rot.jpg")
    assert out.shape == (40, 20, 3)
    assert out[:15].mean() > 200 and out[25:].mean() < 50  # the white half is now on top
    assert probe_media(tmp_path / "rot.jpg").height == 40


def test_write_png_round_trip(tmp_path):
    rgb = np.random.default_rng(1).integers(0, 256, (17, 23, 3), dtype=np.uint8)
    write_png(tmp_path / "sub" / "x.png", rgb)
    assert np.array_equal(read_image(tmp_path / "sub" / "x.png"), rgb)


# --- lossless chunks ------------------------------------------------------------------------


def test_ffv1_round_trip_is_bit_exact(tmp_path, tiny_frames):
    noise = np.random.default_rng(0).integers(0, 256, (5, 33, 47, 3), dtype=np.uint8)  # odd size too
    assert write_lossless(tmp_path / "n.mkv", noise, Fraction(30000, 1001)) == 5
    assert np.array_equal(read_all_frames(tmp_path / "n.mkv"), noise)

    frames = tiny_frames[:20]
    assert write_lossless(tmp_path / "t.mkv", iter(frames), Rate.of(25)) == 20
    assert np.array_equal(read_all_frames(tmp_path / "t.mkv"), frames)
    with av.open(str(tmp_path / "t.mkv")) as c:
        s = c.streams.video[0]
        assert s.codec_context.name == "ffv1"
        assert all(p.is_keyframe for p in c.demux(s) if p.size)


def test_read_frames_at_seeks_to_exact_frames(tmp_path, tiny_frames):
    frames = tiny_frames[:30]
    for k, rate in enumerate((Rate.of(25), Fraction(30000, 1001))):
        path = tmp_path / f"seek-{k}.mkv"
        write_lossless(path, frames, rate)
        got = read_frames_at(path, [29, 0, 17, 17, 5, 30, 400])
        assert sorted(got) == [0, 5, 17, 29]  # past the end is left out, duplicates once
        for i, frame in got.items():
            assert np.array_equal(frame, frames[i]), i
    assert read_frames_at(tmp_path / "seek-0.mkv", []) == {}


def test_read_frames_in_chunks_maps_shot_frames_to_chunks(tmp_path, tiny_frames):
    frames = tiny_frames[:25]
    chunks = []
    for start in (0, 10, 20):
        path = tmp_path / f"c{start}.mkv"
        write_lossless(path, frames[start:start + 10], Rate.of(25))
        chunks.append((start, path))
    for threads in (1, 3):
        got = read_frames_in_chunks(chunks, [24, 0, 9, 10, 19, 30], threads=threads)
        assert sorted(got) == [0, 9, 10, 19, 24]
        assert all(np.array_equal(got[f], frames[f]) for f in got)


def test_read_frames_at_names_a_truncated_chunk(tmp_path, tiny_frames):
    path = tmp_path / "c.mkv"
    write_lossless(path, tiny_frames[:20], Rate.of(25))
    data = path.read_bytes()
    (tmp_path / "cut.mkv").write_bytes(data[: len(data) // 3])
    got = {}
    try:
        got = read_frames_at(tmp_path / "cut.mkv", [2, 19])
    except errors.MediaDecodeError as exc:
        assert "cut.mkv" in str(exc)
    else:  # frames that are still whole decode; the missing ones are not invented
        assert 19 not in got


def test_split_plate_chunks(tmp_path, tiny_frames):
    calls: list[tuple[int, int]] = []
    chunks = split_plate(TINY, 16, tmp_path / "chunks", progress=lambda d, t: calls.append((d, t)))
    n = len(tiny_frames)
    assert len(chunks) == math.ceil(n / 16) == 7
    assert [r.start for r, _ in chunks] == list(range(0, n, 16))
    assert sum(r.count for r, _ in chunks) == n
    assert chunks[-1][0].end == n and chunks[-1][0].count == n % 16
    assert all(r.rate == Rate.of(25) for r, _ in chunks)
    decoded = np.concatenate([read_all_frames(p) for _, p in chunks])
    assert np.array_equal(decoded, tiny_frames)
    for r, p in chunks:
        pts, tb = read_timing(p)  # frame i at i / rate, whatever the container's clock
        assert [t * tb for t in pts] == [Fraction(i, 25) for i in range(r.count)]
    assert calls[-1] == (n, n) and all(t == n for _, t in calls)


# --- render ---------------------------------------------------------------------------------


def _audio_packets(path: Path) -> list[tuple[Fraction, int]]:
    with av.open(str(path)) as c:
        a = c.streams.audio[0]
        return [(p.pts * p.time_base, p.size) for p in c.demux(a) if p.size]


@pytest.mark.slow
def test_render_keeps_vfr_timing_and_copies_audio(tmp_path):
    frames = read_all_frames(VFR, role="plate")
    chunk_a, chunk_b = tmp_path / "a.mkv", tmp_path / "b.mkv"
    write_lossless(chunk_a, frames[:70], 30)
    write_lossless(chunk_b, frames[70:], 30)
    out = tmp_path / "out.mp4"
    info = render_h264([chunk_a, chunk_b], VFR, out, crf=18)

    assert info.frames == 135 and info.codec == "h264" and info.audio_copied is True
    assert info.rate == Fraction(30) and info.avg_rate == Fraction(1350, 61)
    assert info.size == out.stat().st_size > 0
    assert _files(tmp_path) == ["a.mkv", "b.mkv", "out.mp4"]  # no temp file left behind

    plate_pts, plate_tb = read_timing(VFR)
    out_pts, out_tb = read_timing(out)
    assert [p * out_tb for p in out_pts] == [p * plate_tb for p in plate_pts]

    probed = probe_media(out)
    assert probed.frame_count == 135 and probed.variable_frame_rate is True
    assert probed.pix_fmt == "yuv420p" and probed.audio[0].codec == "aac"
    assert _audio_packets(out) == _audio_packets(VFR)

    # Colours survive the trip: plate RGB -> yuv420p H.264 -> RGB stays close and unbiased.
    back = np.stack([f for _, f in zip(range(10), read_frames(out))]).astype(np.int16)
    diff = back - frames[:10].astype(np.int16)
    assert np.abs(diff).mean() < 1.5 and abs(diff.mean()) < 0.5

    with open(out, "rb") as fh:  # +faststart: the index comes before the media data
        head = fh.read(1 << 16)
    assert 0 <= head.find(b"moov") < max(head.find(b"mdat"), 1 << 16)


def test_render_without_audio_and_progress(tmp_path, tiny_frames):
    chunks = tmp_path / "c.mkv"
    write_lossless(chunks, tiny_frames, 25)
    calls = []
    info = render_h264([chunks], TINY, tmp_path / "o.mp4", progress=lambda d, t: calls.append((d, t)))
    assert info.frames == 108 and info.audio_copied is False
    assert probe_media(tmp_path / "o.mp4").audio == ()
    assert calls[-1] == (108, 108)
    pts, tb = read_timing(tmp_path / "o.mp4")
    assert [p * tb for p in pts] == [Fraction(i, 25) for i in range(108)]


def _make_plate_with_pcm(path: Path, n: int = 10, size: tuple[int, int] = (64, 48)) -> None:
    w, h = size
    with av.open(str(path), "w", format="matroska") as c:
        v = c.add_stream("ffv1", rate=25)
        v.width, v.height, v.pix_fmt = w, h, "bgr0"
        a = c.add_stream("pcm_s16le", rate=16000, layout="mono")
        for i in range(n):
            f = av.VideoFrame.from_ndarray(np.full((h, w, 3), i * 20, np.uint8), format="rgb24").reformat(format="bgr0")
            f.pts = i
            for p in v.encode(f):
                c.mux(p)
        samples = (np.sin(np.arange(16000 * n // 25) / 5) * 8000).astype(np.int16)[None]
        af = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        af.sample_rate, af.pts = 16000, 0
        for p in a.encode(af):
            c.mux(p)
        for s in (v, a):
            for p in s.encode(None):
                c.mux(p)


def test_render_transcodes_audio_mp4_cannot_carry(tmp_path):
    plate = tmp_path / "plate.mkv"
    _make_plate_with_pcm(plate)
    assert probe_media(plate).audio[0].codec == "pcm_s16le"
    write_lossless(tmp_path / "c.mkv", read_frames(plate), 25)
    info = render_h264([tmp_path / "c.mkv"], plate, tmp_path / "o.mp4")
    assert info.frames == 10 and info.audio_copied is False
    audio = probe_media(tmp_path / "o.mp4").audio
    assert len(audio) == 1 and audio[0].codec == "aac" and audio[0].sample_rate == 16000


def test_render_carries_timecode(tmp_path):
    plate = tmp_path / "tc.mov"
    with av.open(str(plate), "w", format="mov") as c:
        v = c.add_stream("libx264", rate=Fraction(24000, 1001))
        v.width, v.height, v.pix_fmt = 64, 48, "yuv420p"
        v.metadata["timecode"] = "01:02:03:04"
        for i in range(6):
            f = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 40 * i, np.uint8), format="rgb24")
            f.pts = i
            for p in v.encode(f):
                c.mux(p)
        for p in v.encode(None):
            c.mux(p)
    info = probe_media(plate, role="plate")
    assert info.timecode == "01:02:03:04" and info.rate == Rate.of(Fraction(24000, 1001))
    write_lossless(tmp_path / "c.mkv", read_frames(plate), info.rate)
    out = render_h264([tmp_path / "c.mkv"], plate, tmp_path / "o.mp4")
    assert out.rate == Fraction(24000, 1001)
    assert probe_media(tmp_path / "o.mp4").timecode == "01:02:03:04"


def test_render_frame_count_mismatch(tmp_path, tiny_frames):
    write_lossless(tmp_path / "c.mkv", tiny_frames[:100], 25)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(errors.InternalError, match=r"100 frames.*108"):
        render_h264([tmp_path / "c.mkv"], TINY, out_dir / "o.mp4")
    assert _files(out_dir) == []


def test_failing_render_leaves_no_file(tmp_path, tiny_frames):
    write_lossless(tmp_path / "c.mkv", tiny_frames, 25)
    out_dir = tmp_path / "out"
    out_dir.mkdir()

    def boom(done, total):
        if done >= 48:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        render_h264([tmp_path / "c.mkv"], TINY, out_dir / "o.mp4", progress=boom)
    assert _files(out_dir) == []

    # Right frame count, wrong size: fails inside the encode loop, after the temp file exists.
    write_lossless(tmp_path / "small.mkv", (f[:128, :128] for f in tiny_frames), 25)
    with pytest.raises(errors.InternalError, match="128x128"):
        render_h264([tmp_path / "small.mkv"], TINY, out_dir / "o.mp4")
    assert _files(out_dir) == []


def test_odd_plate_size_is_delivered_at_its_own_size(tmp_path):
    """4:2:0 H.264 cannot code 65x47; the deliverable is H.264 4:4:4 at the plate's own size
    (never padded: its size always equals the plate's)."""
    plate = tmp_path / "odd.mkv"
    _make_plate_with_pcm(plate, n=3, size=(65, 47))
    write_lossless(tmp_path / "c.mkv", read_frames(plate), 25)
    render_h264([tmp_path / "c.mkv"], plate, tmp_path / "o.mp4")
    with av.open(str(tmp_path / "o.mp4")) as c:
        v = c.streams.video[0]
        assert (v.width, v.height, v.codec_context.name, v.format.name) == (65, 47, "h264", "yuv444p")


def test_output_path_checks(tmp_path, tiny_frames):
    with pytest.raises(errors.OutputPathError, match=r"output '.*': directory does not exist"):
        check_output_writable(tmp_path / "nope" / "o.mp4")
    (tmp_path / "isdir.mp4").mkdir()
    with pytest.raises(errors.OutputPathError, match="is a directory"):
        check_output_writable(tmp_path / "isdir.mp4")
    (tmp_path / "file").write_text("x")
    with pytest.raises(errors.OutputPathError, match="not a directory"):
        check_output_writable(tmp_path / "file" / "o.mp4")
    check_output_writable(tmp_path / "ok.mp4")
    assert not (tmp_path / "ok.mp4").exists() and _files(tmp_path) == ["file", "isdir.mp4"]

    # render checks before doing any work
    with pytest.raises(errors.OutputPathError):
        render_h264([tmp_path / "missing.mkv"], TINY, tmp_path / "nope" / "o.mp4")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through permission bits")
def test_output_dir_not_writable(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(errors.OutputPathError, match="not writable"):
            check_output_writable(ro / "o.mp4")
        assert _files(ro) == []
    finally:
        ro.chmod(0o755)


def test_lossless_intermediates_are_byte_identical_for_identical_frames(tmp_path):
    """Content-addressed keys rely on it: the same frames always make the same chunk bytes."""
    import hashlib

    rng = np.random.default_rng(7)
    frames = [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(4)]
    digests = []
    for i in range(2):
        path = tmp_path / f"c{i}.mkv"
        write_lossless(path, frames, 25)
        digests.append(hashlib.sha256(path.read_bytes()).hexdigest())
    assert digests[0] == digests[1]


def test_an_image_format_a_plugin_adds_is_refused_whatever_was_registered(tmp_path):
    """imageio registers pillow-heif's HEIF opener in any process that uses its Pillow plugin
    (scikit-image's sample data does): recast must read the same files either way."""
    pillow_heif = pytest.importorskip("pillow_heif", reason="pillow-heif (test extra) makes the HEIC file")
    from PIL import Image

    from recast.errors import UnsupportedMediaError
    from recast.media import read_image

    path = tmp_path / "photo.heic"
    pillow_heif.from_pillow(Image.new("RGB", (64, 48), (200, 120, 80))).save(path, quality=90)
    pillow_heif.register_heif_opener()  # as imageio does
    with pytest.raises(UnsupportedMediaError, match=r"photo\.heic'.*HEIF images are not read"):
        read_image(path)
