"""A corpus of bad and unusual inputs for ``recast swap``, generated here from ../shared/media.

Every case runs the real command line and checks the rules of the issue that asked for it:

* refused inputs: the documented exit code, exactly one ``recast: error:`` line on stderr and it
  names the offending input, no run or only failed ones in the database, nothing at ``--out``
  (no partial file beside it either), and every input's sha256 unchanged;
* unusual inputs that must work (B-frames, edit lists, 10-bit, 4:2:2, full range, anamorphic,
  one frame, long GOP, VFR, odd paths...): exit 0, a deliverable with the plate's frame count,
  the run ``done``, inputs unchanged. These run whole swaps and are marked ``slow``.
  A few refusals that take seconds each (an S3 round trip, face detection on a source) are
  marked ``slow`` too, to keep ``-m "not slow"`` quick; CI runs them all.

Media is tiny (256x256, a dozen frames) so that generating all of it takes a few seconds. As
root, file modes do not stop reads or writes: the unreadable plate runs ``recast`` without the
capabilities that bypass them (``setpriv``), and the read-only and full ``--out`` directories are
small tmpfs mounts. Cases this machine cannot make (no mount privilege, no ``setpriv``, no HEIC
encoder) are skipped with the reason.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Callable

import av
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from recast.cli import app
from tests.conftest import IMAGES, VIDEOS

FACE_CLIP = VIDEOS / "dreamtalk_W009_front_happy_level3_001.mp4"  # 256x256, one frontal face
PHOTO = IMAGES / "deepface_img17.jpg"
GROUP = IMAGES / "face_recognition_kit_with_rose.jpg"
SIZE = 256


# --- media ----------------------------------------------------------------------------------
def _face_frames(n: int) -> np.ndarray:
    out = []
    with av.open(str(FACE_CLIP)) as c:
        for f in c.decode(video=0):
            out.append(f.to_ndarray(format="rgb24"))
            if len(out) == n:
                break
    return np.stack(out)


def _noface_frames(n: int) -> np.ndarray:
    import skimage.data

    from recast.media.synthetic import camera_move_frames

    return camera_move_frames(skimage.data.coffee(), size=SIZE, frames=n)


def encode(path: Path, frames: np.ndarray, *, codec: str = "libx264", pix_fmt: str = "yuv420p", rate: int = 25,
           options: dict[str, str] | None = None, pts: list[int] | None = None, time_base: Fraction | None = None,
           sar: Fraction | None = None, rotation: int | None = None, audio: bool = False, color_range: int | None = None,
           faststart: bool = False) -> Path:
    """Encode RGB frames with the given codec settings (PyAV); ``pts`` in ``time_base`` units for VFR."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", options={"movflags": "+faststart"} if faststart else None) as c:
        s = c.add_stream(codec, rate=rate)
        s.width, s.height = frames.shape[2], frames.shape[1]
        s.pix_fmt = pix_fmt
        s.options = {"preset": "veryfast", **(options or {})} if codec in ("libx264", "libx265") else dict(options or {})
        if codec == "libx265":
            s.options = {**s.options, "x265-params": "log-level=error"}
        if time_base is not None:
            s.time_base = time_base
            s.codec_context.time_base = time_base
        if sar is not None:
            s.codec_context.sample_aspect_ratio = sar
        if color_range is not None:
            s.codec_context.color_range = color_range
        if rotation is not None:
            s.set_display_rotation(rotation)
        a = c.add_stream("aac", rate=48000) if audio else None
        for i, rgb in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            if pts is not None:
                vf.pts = pts[i]
                vf.time_base = time_base
            for p in s.encode(vf.reformat(format=pix_fmt) if pix_fmt.startswith("yuvj") else vf):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
        if a is not None:
            samples = int(48000 * len(frames) / rate)
            t = np.arange(samples) / 48000
            tone = (0.1 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None, :]
            for start in range(0, samples, 1024):
                af = av.AudioFrame.from_ndarray(np.ascontiguousarray(tone[:, start:start + 1024]), format="fltp", layout="mono")
                af.sample_rate = 48000
                af.pts = start
                for p in a.encode(af):
                    c.mux(p)
            for p in a.encode():
                c.mux(p)
    return path


def _audio_only(path: Path) -> Path:
    with av.open(str(path), "w") as c:
        a = c.add_stream("aac", rate=48000)
        for start in range(0, 48000, 1024):
            af = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            af.sample_rate = 48000
            af.pts = start
            for p in a.encode(af):
                c.mux(p)
        for p in a.encode():
            c.mux(p)
    return path


def _two_streams(path: Path, frames: np.ndarray) -> Path:
    """Stream 0 a small 128x128 picture, stream 1 the 256x256 one with the face."""
    small = np.stack([np.ascontiguousarray(f[::2, ::2]) for f in frames])
    with av.open(str(path), "w") as c:
        streams = []
        for fr in (small, frames):
            s = c.add_stream("libx264", rate=25)
            s.width, s.height, s.pix_fmt = fr.shape[2], fr.shape[1], "yuv420p"
            streams.append((s, fr))
        for i in range(len(frames)):
            for s, fr in streams:
                for p in s.encode(av.VideoFrame.from_ndarray(fr[i], format="rgb24")):
                    c.mux(p)
        for s, _ in streams:
            for p in s.encode():
                c.mux(p)
    return path


def _patch(path: Path, src: Path, old: bytes, new: bytes) -> Path:
    data = src.read_bytes()
    assert old in data, f"{old!r} not in {src}"
    path.write_bytes(data.replace(old, new))
    return path


def _corrupt_middle(path: Path, src: Path) -> Path:
    """The same file with 2 KB of its frame data scrambled halfway through (size unchanged)."""
    data = bytearray(src.read_bytes())
    at = data.find(b"mdat")
    mid = at + (len(data) - at) // 2
    rng = np.random.default_rng(7)
    data[mid:mid + 2048] = rng.integers(0, 256, 2048, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    return path


class Media:
    """Every input of the corpus, made once per session on first use."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._made: dict[str, Path] = {}

    def __getitem__(self, name: str) -> Path:
        if name not in self._made:
            self._made[name] = getattr(self, "make_" + name)(self.root / name)
        return self._made[name]

    def frames(self, n: int) -> np.ndarray:
        return _face_frames(n)

    # plates
    def make_plate(self, d: Path) -> Path:
        return encode(d / "plate.mp4", self.frames(12), audio=True)

    def make_plate_empty(self, d: Path) -> Path:
        return _write(d / "empty.mp4", b"")

    def make_plate_text(self, d: Path) -> Path:
        return _write(d / "notes.mp4", b"this is not a video\n")

    def make_plate_truncated(self, d: Path) -> Path:
        src = encode(d / "full.mp4", self.frames(12), faststart=True)
        data = src.read_bytes()
        (d / "cut_half.mp4").write_bytes(data[: len(data) // 2])
        return d / "cut_half.mp4"

    def make_plate_truncated_90(self, d: Path) -> Path:
        src = encode(d / "full.mp4", self.frames(12), faststart=True)
        data = src.read_bytes()
        (d / "cut_90.mp4").write_bytes(data[: len(data) * 9 // 10])
        return d / "cut_90.mp4"

    def make_plate_audio_only(self, d: Path) -> Path:
        d.mkdir(parents=True)
        return _audio_only(d / "voice.mp4")

    def make_plate_still(self, d: Path) -> Path:
        d.mkdir(parents=True)
        shutil.copy(PHOTO, d / "still.jpg")
        return d / "still.jpg"

    def make_plate_dir(self, d: Path) -> Path:
        (d / "clip.mp4").mkdir(parents=True)
        return d / "clip.mp4"

    def make_plate_noface(self, d: Path) -> Path:
        return encode(d / "cup.mp4", _noface_frames(12))

    def make_plate_corrupt_mid(self, d: Path) -> Path:
        src = encode(d / "src.mp4", self.frames(12), options={"g": "4"})
        return _corrupt_middle(d / "corrupt_mid.mp4", src)

    def make_plate_odd_dims(self, d: Path) -> Path:
        f = self.frames(8)
        big = np.stack([np.pad(x, ((0, 105), (0, 385), (0, 0)), mode="edge") for x in f])  # 361 x 641
        return encode(d / "odd_641x361.mp4", big, pix_fmt="yuv444p")

    def make_plate_two_streams(self, d: Path) -> Path:
        d.mkdir(parents=True)
        return _two_streams(d / "two_streams.mp4", self.frames(8))

    def make_plate_rotated(self, d: Path) -> Path:
        sideways = np.stack([np.ascontiguousarray(np.rot90(f, 1)) for f in self.frames(8)])
        return encode(d / "phone_rot90.mp4", sideways, rotation=-90)

    def make_plate_tag_on_upright(self, d: Path) -> Path:
        """Upright pixels under a quarter-turn display matrix: players show them turned, and must go on doing so."""
        return encode(d / "tagged_upright_rot90.mp4", self.frames(8), rotation=90)

    def make_plate_person_last(self, d: Path) -> Path:
        return encode(d / "person_last.mp4", np.concatenate([_noface_frames(10), self.frames(6)]))

    def make_plate_cutaway(self, d: Path) -> Path:
        f = self.frames(8)
        return encode(d / "cutaway.mp4", np.concatenate([f[:4], _noface_frames(10), f[4:]]))

    def make_plate_bframes(self, d: Path) -> Path:
        return encode(d / "bframes.mp4", self.frames(12), options={"preset": "medium", "bf": "3", "b_strategy": "2"})

    def make_plate_editlist(self, d: Path) -> Path:
        """Video starting 0.4 s into the track: the mp4 muxer writes an edit list (an empty edit)."""
        tb = Fraction(1, 25)
        return encode(d / "editlist.mp4", self.frames(10), pts=list(range(10, 20)), time_base=tb, audio=True)

    def make_plate_h264_10bit(self, d: Path) -> Path:
        return encode(d / "h264_10bit.mp4", self.frames(8), pix_fmt="yuv420p10le")

    def make_plate_h264_422(self, d: Path) -> Path:
        return encode(d / "h264_422.mp4", self.frames(8), pix_fmt="yuv422p")

    def make_plate_hevc_10bit(self, d: Path) -> Path:
        return encode(d / "hevc_10bit.mp4", self.frames(8), codec="libx265", pix_fmt="yuv420p10le", options={"tag": "hvc1"})

    def make_plate_hevc_422_10bit(self, d: Path) -> Path:
        return encode(d / "hevc_422_10bit.mp4", self.frames(8), codec="libx265", pix_fmt="yuv422p10le")

    def make_plate_full_range(self, d: Path) -> Path:
        return encode(d / "yuvj420p.mp4", self.frames(8), pix_fmt="yuvj420p", color_range=2)

    def make_plate_anamorphic(self, d: Path) -> Path:
        return encode(d / "anamorphic.mp4", self.frames(8), sar=Fraction(4, 3))

    def make_plate_one_frame(self, d: Path) -> Path:
        return encode(d / "one_frame.mp4", self.frames(1))

    def make_plate_long_gop(self, d: Path) -> Path:
        return encode(d / "long_gop.mp4", self.frames(16), options={"g": "1000", "keyint_min": "1000", "sc_threshold": "0"})

    def make_plate_vfr(self, d: Path) -> Path:
        tb = Fraction(1, 1000)
        pts = [0, 40, 80, 100, 180, 220, 300, 320, 400, 440]
        return encode(d / "vfr.mp4", self.frames(10), pts=pts, time_base=tb)

    def make_plate_no_audio_decoder(self, d: Path) -> Path:
        """The audio track's codec tag renamed to one FFmpeg has no decoder for."""
        src = encode(d / "with_audio.mp4", self.frames(8), audio=True)
        patched = _patch(d / "tmp.mp4", src, b"mp4a", b"zz9a")
        return _patch(d / "unknown_audio.mp4", patched, b"esds", b"zsds")  # no decoder config either

    def make_plate_8k(self, d: Path) -> Path:
        f = self.frames(2)
        big = np.stack([np.ascontiguousarray(np.repeat(np.repeat(x, 30, axis=0), 30, axis=1)[:4320, :7680]) for x in f])
        return encode(d / "plate_8k.mp4", big, options={"preset": "ultrafast"})

    def make_plate_unicode(self, d: Path) -> Path:
        p = d / "plätte Szene 1 ☃" / "Aufnahme 010 é.mp4"
        p.parent.mkdir(parents=True)
        shutil.copy(self["plate"], p)
        return p

    # sources
    def make_source_video(self, d: Path) -> Path:
        d.mkdir(parents=True)
        shutil.copy(self["plate"], d / "clip_as_photo.mp4")
        return d / "clip_as_photo.mp4"

    def make_source_empty(self, d: Path) -> Path:
        return _write(d / "empty.jpg", b"")

    def make_source_text(self, d: Path) -> Path:
        return _write(d / "notes.jpg", b"not a photo\n")

    def make_source_truncated(self, d: Path) -> Path:
        d.mkdir(parents=True)
        data = PHOTO.read_bytes()
        (d / "cut.jpg").write_bytes(data[: len(data) // 2])
        return d / "cut.jpg"

    def make_source_noface(self, d: Path) -> Path:
        import skimage.data

        d.mkdir(parents=True)
        Image.fromarray(skimage.data.coffee()).save(d / "cup.png")
        return d / "cup.png"

    def make_source_tiny_face(self, d: Path) -> Path:
        d.mkdir(parents=True)
        im = Image.open(PHOTO).convert("RGB")
        im.resize((max(1, im.width // 6), max(1, im.height // 6)), Image.LANCZOS).save(d / "tiny_face.jpg", quality=95)
        return d / "tiny_face.jpg"

    def make_source_cmyk(self, d: Path) -> Path:
        d.mkdir(parents=True)
        Image.open(PHOTO).convert("CMYK").save(d / "cmyk.jpg", quality=95)
        return d / "cmyk.jpg"

    def make_source_16bit(self, d: Path) -> Path:
        import cv2

        d.mkdir(parents=True)
        bgr = cv2.imread(str(PHOTO))
        cv2.imwrite(str(d / "deep16.png"), bgr.astype(np.uint16) * 257)
        return d / "deep16.png"

    def make_source_exif_rotated(self, d: Path) -> Path:
        """Pixels stored a quarter turn off with an EXIF Orientation tag that turns them upright."""
        d.mkdir(parents=True)
        im = Image.open(PHOTO).convert("RGB").transpose(Image.Transpose.ROTATE_90)
        exif = Image.Exif()
        exif[0x0112] = 6  # rotate 90 CW to display: undoes the ROTATE_90 (counter-clockwise) above
        im.save(d / "exif_rot.jpg", exif=exif, quality=95)
        return d / "exif_rot.jpg"

    def make_source_gif(self, d: Path) -> Path:
        d.mkdir(parents=True)
        im = Image.open(PHOTO).convert("RGB")
        frames = [im, im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
        frames[0].save(d / "animated.gif", save_all=True, append_images=frames[1:], duration=200, loop=0)
        return d / "animated.gif"

    def make_source_heic(self, d: Path) -> Path:
        try:
            import pillow_heif
        except ImportError:
            pytest.skip("no HEIC encoder on this machine (pillow-heif, of the test extra, is not installed)")
        d.mkdir(parents=True)
        # encoded without register_heif_opener(): recast runs in this process and must not gain a
        # HEIC reader from the test (recast itself reads no HEIC)
        pillow_heif.from_pillow(Image.open(PHOTO).convert("RGB")).save(d / "photo.heic", quality=90)
        return d / "photo.heic"

    def make_source_unicode(self, d: Path) -> Path:
        p = d / "Quellen Foto ü" / "Darstellerin Zoë.jpg"
        p.parent.mkdir(parents=True)
        shutil.copy(PHOTO, p)
        return p


@pytest.fixture(scope="session")
def media(tmp_path_factory) -> Media:
    return Media(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="session")
def moto_s3():
    """A moto S3 server with one bucket: ``(endpoint, bucket)``."""
    import boto3
    from moto.server import ThreadedMotoServer

    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_CONFIG_FILE": "/nonexistent/aws-config", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/aws-credentials",
           "AWS_EC2_METADATA_DISABLED": "true"}
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        mp.delenv("AWS_SESSION_TOKEN", raising=False)
        mp.delenv("AWS_PROFILE", raising=False)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        boto3.session.Session().client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket="corpus")
        try:
            yield endpoint, "corpus"
        finally:
            server.stop()


# --- cases ----------------------------------------------------------------------------------
def _write(path: Path, data: bytes) -> Path:
    """A file of ``data`` at ``path`` (its folder created)."""
    path.parent.mkdir(parents=True)
    path.write_bytes(data)
    return path


def _same_orientation_as_the_plate(plate: Path, out: Path) -> None:
    """The deliverable stores its pixels as the plate does, under the plate's display matrix."""
    from recast.media import probe_media
    from recast.media.probe import read_orientation

    assert read_orientation(out) == read_orientation(plate)
    p, o = probe_media(plate), probe_media(out)
    assert (o.width, o.height) == (p.width, p.height)


def _quicktime(plate: Path, out: Path) -> None:
    assert out.read_bytes()[8:12] == b"qt  ", "a .mov deliverable must be a QuickTime file, not MP4 bytes"


@dataclass(frozen=True)
class Case:
    """One corpus case: which plate and source (keys of :class:`Media`, or special values), extra
    options, what ``--out`` is, the one exit code this machine gives, which input the message must
    name and, for a deliverable, what else must hold (``check(plate, out)``)."""

    id: str
    plate: str = "plate"
    source: str = "photo"
    args: tuple[str, ...] = ()
    out: str = "out.mp4"
    code: int = 3
    names: str = "plate"  # 'plate' | 'source' | 'out' | an option's text that must appear
    slow: bool = False
    check: Callable[[Path, Path], None] | None = field(default=None, compare=False)


CASES = [
    # plates that must be refused (exit 3, fast)
    Case("plate-missing", plate="<missing>"),
    Case("plate-zero-bytes", plate="plate_empty"),
    Case("plate-text-file", plate="plate_text"),
    Case("plate-truncated-half", plate="plate_truncated"),
    Case("plate-truncated-90-percent", plate="plate_truncated_90"),
    Case("plate-audio-only", plate="plate_audio_only"),
    Case("plate-still-image", plate="plate_still"),
    Case("plate-is-directory", plate="plate_dir"),
    Case("plate-unreadable", plate="<unreadable>", slow=True),  # a recast process under setpriv
    Case("plate-no-face", plate="plate_noface", slow=True),
    # the scrambled bytes break frame 3's slice: decoding stops there, refused before any run
    Case("plate-corrupt-frames-mid-stream", plate="plate_corrupt_mid", slow=True),
    # plates that are processed as they are
    Case("plate-odd-dimensions-641x361", plate="plate_odd_dims", code=0, slow=True),
    Case("plate-two-video-streams", plate="plate_two_streams", code=0, slow=True),  # the larger stream, said on stderr
    Case("plate-rotation-tag", plate="plate_rotated", code=0, slow=True, check=_same_orientation_as_the_plate),
    # shown turned, the face lies on its side: QC fails it (exit 5 otherwise); published anyway to check
    # that the deliverable keeps the plate's matrix and so plays in the plate's orientation
    Case("plate-rotation-tag-on-upright-pixels", plate="plate_tag_on_upright", args=("--deliver-on-fail",), code=0, slow=True,
         check=_same_orientation_as_the_plate),
    Case("plate-cutaway-longer-than-a-chunk", plate="plate_cutaway", args=("--chunk-size", "4"), code=0, slow=True),
    Case("plate-8k", plate="plate_8k", code=0, slow=True),  # 2 frames: processed within memory
    # plates that must be processed (slow: whole swaps)
    Case("plate-person-only-in-last-frames", plate="plate_person_last", args=("--chunk-size", "4"), code=0, slow=True),
    Case("plate-b-frames", plate="plate_bframes", code=0, slow=True),
    Case("plate-edit-list", plate="plate_editlist", code=0, slow=True),
    Case("plate-h264-10bit", plate="plate_h264_10bit", code=0, slow=True),
    Case("plate-h264-422", plate="plate_h264_422", code=0, slow=True),
    Case("plate-hevc-10bit", plate="plate_hevc_10bit", code=0, slow=True),
    Case("plate-hevc-422-10bit", plate="plate_hevc_422_10bit", code=0, slow=True),
    Case("plate-full-range-yuvj", plate="plate_full_range", code=0, slow=True),
    Case("plate-anamorphic-sar", plate="plate_anamorphic", code=0, slow=True),
    Case("plate-one-frame", plate="plate_one_frame", code=0, slow=True),
    Case("plate-long-gop", plate="plate_long_gop", args=("--chunk-size", "4"), code=0, slow=True),
    Case("plate-vfr", plate="plate_vfr", code=0, slow=True),
    Case("plate-audio-without-decoder", plate="plate_no_audio_decoder", code=0, slow=True),
    # sources
    Case("source-missing", source="<missing>", names="source"),
    Case("source-zero-bytes", source="source_empty", names="source"),
    Case("source-text-file", source="source_text", names="source"),
    Case("source-truncated-jpeg", source="source_truncated", names="source"),
    Case("source-no-face", source="source_noface", names="source", slow=True),
    Case("source-is-a-video", source="source_video", names="source"),
    # recast reads no HEIC (pillow-heif is only in the test extra, to make the file): refused, naming it
    Case("source-heic", source="source_heic", code=3, names="source", slow=True),
    Case("source-animated-gif", source="source_gif", code=0, names="source", slow=True),  # read as its first frame
    Case("source-cmyk-jpeg", source="source_cmyk", code=0, slow=True),
    Case("source-16bit-png", source="source_16bit", code=0, slow=True),
    Case("source-exif-orientation", source="source_exif_rotated", code=0, slow=True),
    # a ~40 px face: QC passes it on this small plate (a fail verdict, exit 5 with nothing published, is
    # test_deliverables' QC-fail test); pinned so that a change of verdict is seen
    Case("source-tiny-face", source="source_tiny_face", code=0, slow=True),
    # paths
    Case("paths-unicode-and-spaces", plate="plate_unicode", source="source_unicode", out="Ausgabe finale ü/Résultat 010.mp4",
         code=0, slow=True),
    Case("paths-symlinks", plate="<symlink>", source="<symlink>", code=0, slow=True),
    Case("out-is-the-plate", out="<plate>", code=2, names="out"),
    Case("out-is-the-source", out="<source>", code=2, names="out"),
    Case("out-inside-the-object-store", out="<store>", code=2, names="out"),
    Case("out-mov", out="out.mov", code=0, slow=True, check=_quicktime),
    Case("out-avi", out="out.avi", code=2, names="out"),
    Case("out-mkv", out="out.mkv", code=2, names="out"),
    Case("out-exr", out="out.exr", code=2, names="out"),
    Case("out-is-a-directory", out="<dir>", code=3, names="out"),
    Case("out-in-a-read-only-directory", out="<read-only-dir>", code=3, names="out"),
    Case("out-on-a-full-disk", out="<full-dir>", code=3, names="out"),
    Case("plate-on-s3-missing", plate="<s3-missing>", slow=True),
    Case("plate-on-s3-wrong-credentials", plate="<s3-denied>", code=6, slow=True),
    # options that cannot apply to this plate
    Case("face-index-out-of-range", args=("--face", "index:99"), code=2, names="index:99"),
    Case("edit-range-past-the-plate", args=("--edit", "smile=0.3@100-200"), code=2, names="100-200"),
    Case("source-face-index-out-of-range", source="group", args=("--source-face", "index:9"), code=2, names="index:9", slow=True),
]


def sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _runs() -> list[dict]:
    """Every run of the test's own data directory (a refusal before the database exists leaves none)."""
    from recast.db.migrate import ensure_schema
    from recast.services.runs import recent_runs

    ensure_schema()

    return recent_runs(50)


def _materialise(case: Case, media: Media, tmp: Path, request) -> tuple[str, str, Path, list[Path], str]:
    """Copy the case's inputs into the test's own directory (a refused --out must not touch the
    shared copies); returns (plate arg, source arg, out path, input files, the name to look for)."""
    inputs: list[Path] = []

    def local(key: str, default: Path, label: str) -> str:
        if key == "<missing>":
            return str(tmp / f"no_such_{label}.mp4")
        if key == "<unreadable>":
            if os.geteuid() == 0 and shutil.which("setpriv") is None:
                pytest.skip("running as root without setpriv: no way to run recast without CAP_DAC_OVERRIDE here")
            p = tmp / "locked.mp4"
            shutil.copy(media["plate"], p)
            p.chmod(0)
            return str(p)
        if key == "<symlink>":
            real = tmp / "elsewhere" / default.name
            real.parent.mkdir(exist_ok=True)
            shutil.copy(default, real)
            link = tmp / f"link_to_{default.name}"
            link.symlink_to(real)
            inputs.append(real)
            return str(link)
        src = default if key in ("plate", "photo") else (GROUP if key == "group" else media[key])
        if src.is_dir():
            return str(src)
        rel = src.relative_to(media.root) if src.is_relative_to(media.root) else Path(src.name)
        dst = tmp / "in" / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, dst)
        inputs.append(dst)
        return str(dst)

    if case.plate in ("<s3-missing>", "<s3-denied>"):
        endpoint, bucket = request.getfixturevalue("moto_s3")
        mp = request.getfixturevalue("monkeypatch")
        mp.setenv("RECAST_S3_ENDPOINT_URL", endpoint)
        from recast.settings import reset_settings

        reset_settings()
        if case.plate == "<s3-denied>":
            import moto.settings

            s3 = __import__("boto3").session.Session().client("s3", endpoint_url=endpoint, region_name="us-east-1")
            s3.put_object(Bucket=bucket, Key="plates/real.mp4", Body=media["plate"].read_bytes())
            mp.setattr(moto.settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)  # moto now checks keys: 'testing' is unknown
            plate = f"s3://{bucket}/plates/real.mp4"
        else:
            plate = f"s3://{bucket}/plates/no_such_plate.mp4"
    else:
        plate = local(case.plate, media["plate"], "plate")
    source = local(case.source, PHOTO, "source")
    out_dir = tmp / "deliveries"
    out_dir.mkdir()
    if case.out == "<plate>":
        out = Path(plate)
    elif case.out == "<source>":
        out = Path(source)
    elif case.out == "<dir>":
        out = out_dir / "a_folder.mp4"
        out.mkdir()
    elif case.out == "<store>":
        store = request.getfixturevalue("recast_env") / "store" / "objects"
        store.mkdir(parents=True)
        out = store / "x.mp4"
    elif case.out == "<read-only-dir>":
        out = _tmpfs(tmp / "read_only_deliveries", request, read_only=True) / "out.mp4"
    elif case.out == "<full-dir>":
        full = _tmpfs(tmp / "full_deliveries", request)
        with open(full / "filler", "wb") as fh:  # every block taken: not even the deliverable's first one fits
            with contextlib.suppress(OSError):
                while True:
                    fh.write(b"\0" * 65536)
                    fh.flush()
        out = full / "out.mp4"
    else:
        out = out_dir / case.out
        out.parent.mkdir(parents=True, exist_ok=True)
    name = {"plate": plate, "source": source, "out": str(out)}.get(case.names, case.names)
    return plate, source, out, inputs, name


def _tmpfs(where: Path, request, *, read_only: bool = False) -> Path:
    """A 1 MB tmpfs at ``where`` (read-only when asked), unmounted after the test: as root,
    file modes do not make a directory unwritable, a read-only file system does."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    where.mkdir(parents=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(where)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}): no read-only or full --out directory to test with")
    request.addfinalizer(lambda: subprocess.run(["umount", "-l", str(where)], check=False))
    if read_only:
        subprocess.run(["mount", "-o", "remount,ro", str(where)], check=True)
    return where


@dataclass(frozen=True)
class Outcome:
    """What a command line run gave: the fields of Click's Result the corpus reads."""

    exit_code: int
    stdout: str
    stderr: str


def _invoke(args: list[str], *, without_dac_override: bool) -> Outcome:
    """Run ``recast`` in this process; ``without_dac_override``: in a child process without the
    capabilities that let root read any file, so a mode-000 file is unreadable as for a user."""
    if not without_dac_override:
        r = CliRunner().invoke(app, args, catch_exceptions=False)
        return Outcome(r.exit_code, r.stdout, r.stderr)
    cmd = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", sys.executable, "-m", "recast.cli", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ), timeout=120)
    return Outcome(done.returncode, done.stdout, done.stderr)


def _params():
    for c in CASES:
        marks = []
        if c.slow:
            marks.append(pytest.mark.slow)
        yield pytest.param(c, id=c.id, marks=marks)


@pytest.mark.parametrize("case", list(_params()))
def test_corpus(case: Case, media, recast_env, tmp_path, request):
    plate, source, out, inputs, name = _materialise(case, media, tmp_path, request)
    before = {p: sha(p) for p in inputs}
    out_dir_before = sorted(x.name for x in out.parent.iterdir()) if out.parent.is_dir() else []
    args = ["swap", "--plate", plate, "--source", source, "--out", str(out), "--mode", "face", *case.args]
    r = _invoke(args, without_dac_override=case.plate == "<unreadable>" and os.geteuid() == 0)

    assert r.exit_code == case.code, f"exit {r.exit_code}, expected {case.code}\nstderr: {r.stderr[-3000:]}"
    for p, digest in before.items():
        assert p.is_file() and sha(p) == digest, f"input {p} was changed"
    runs = _runs()
    if r.exit_code == 0:
        assert out.is_file() and [x["status"] for x in runs] == ["done"], runs
        with av.open(str(out)) as c:
            assert c.streams.video[0].frames > 0 or next(c.decode(video=0), None) is not None
        if case.check is not None:
            case.check(Path(plate), out)
        return
    if r.exit_code == 5:  # QC verdict fail: the render stays in the store, nothing at --out
        assert "fail" in (r.stdout + r.stderr).lower() and not out.exists()
        assert sorted(x.name for x in out.parent.iterdir()) == out_dir_before, "a partial file was left beside --out"
        return
    errors = [line for line in r.stderr.splitlines() if line.startswith("recast: error")]
    assert len(errors) == 1, f"expected one error line, got:\n{r.stderr[-3000:]}"
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    shown = [name, Path(name).name] if "://" not in name else [name]
    assert any(s in errors[0] for s in shown), f"the message does not name {name!r}: {errors[0]}"
    assert all(x["status"] == "failed" for x in runs), runs
    if case.out == "<dir>":
        assert out.is_dir() and not any(out.iterdir())
    elif case.out not in ("<plate>", "<source>"):
        assert not out.exists(), f"{out} was written by a failed run"
    assert sorted(x.name for x in out.parent.iterdir()) == out_dir_before, "a partial file was left beside --out"


def test_corpus_is_large_enough():
    assert len(CASES) >= 40 and len({c.id for c in CASES}) == len(CASES)


# --- verify and qc on damaged files ---------------------------------------------------------
def _signed_marked(tmp: Path, render_id: str) -> Path:
    """A signed deliverable carrying the watermark, made as render makes it (mark inside a head
    region, H.264, C2PA manifest) without running a whole swap."""
    from recast.media.credentials import sign_video, signing_identity, watermark_seed
    from recast.media.synthetic import write_h264
    from recast.models.watermark import WatermarkEmbedder, WatermarkKey, payload_from_id
    from recast.settings import get_settings

    frames = []
    with av.open(str(VIDEOS / "liveportrait_d19.mp4")) as c:
        for f in c.decode(video=0):
            frames.append(f.to_ndarray(format="rgb24"))
            if len(frames) == 60:
                break
    s = get_settings()
    emb = WatermarkEmbedder(payload_from_id(render_id), WatermarkKey(seed=watermark_seed(), strength=s.watermark_strength))
    h, w = frames[0].shape[:2]
    head = np.zeros((h, w), np.uint8)
    head[h // 6: 5 * h // 6, w // 5: 4 * w // 5] = 1
    encoded = write_h264(np.stack([emb.embed(f, head, i) for i, f in enumerate(frames)]), tmp / "encoded.mp4")
    out = tmp / "deliverable.mp4"
    sign_video(encoded, out, identity=signing_identity(), parent=VIDEOS / "liveportrait_d19.mp4", parent_title="plate",
               render_id=render_id, shot="sh010", models=[], identity_name=None, consent=None, scratch=True)
    return out


@pytest.mark.slow
def test_verify_reads_the_mark_on_what_is_left_of_a_cut_deliverable(recast_env, tmp_path):
    import json

    from recast.models.watermark import payload_from_id

    full = _signed_marked(tmp_path, "render-under-test")
    data = full.read_bytes()
    expected = f"{payload_from_id('render-under-test'):016x}"
    runner = CliRunner()
    ok = json.loads(runner.invoke(app, ["verify", str(full), "--json"], catch_exceptions=False).stdout)
    assert ok["result"] == "verified" and not ok["decode"]["truncated"]
    for frac in (0.9, 0.5):
        cut = tmp_path / f"cut_{int(frac * 100)}.mp4"
        cut.write_bytes(data[: int(len(data) * frac)])
        r = runner.invoke(app, ["verify", str(cut), "--json"], catch_exceptions=False)
        assert r.exit_code == 8, r.stderr  # the content no longer matches its manifest: tampered, not "unreadable"
        rep = json.loads(r.stdout)
        assert rep["result"] == "tampered" and rep["watermark"]["found"] and rep["watermark"]["payload"] == expected, rep
        assert rep["decode"]["truncated"] and 0 < rep["decode"]["frames_decodable"] < 60
        text = runner.invoke(app, ["verify", str(cut)], catch_exceptions=False).stdout
        assert "TRUNCATED" in text and f"{rep['decode']['frames_decodable']} of 60 frames decodable" in text
    nothing = tmp_path / "head_only.mp4"
    nothing.write_bytes(data[:3000])
    r = runner.invoke(app, ["verify", str(nothing)], catch_exceptions=False)
    assert r.exit_code == 3 and "head_only.mp4" in r.stderr


def test_qc_names_a_broken_output_as_the_output(recast_env, media, tmp_path):
    broken = tmp_path / "vendor_swap.mp4"
    data = media["plate"].read_bytes()
    broken.write_bytes(data[: len(data) // 2])
    r = CliRunner().invoke(app, ["qc", "--plate", str(media["plate"]), "--output", str(broken), "--source", str(PHOTO)],
                           catch_exceptions=False)
    assert r.exit_code == 3, r.stderr
    line = [x for x in r.stderr.splitlines() if x.startswith("recast: error")]
    assert len(line) == 1 and line[0].startswith(f"recast: error: --output '{broken}'") and "plate" not in line[0], line
