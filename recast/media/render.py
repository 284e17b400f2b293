"""Render the deliverable: swapped FFV1 chunks + the plate's timing and audio -> mp4 or mov.

Every output frame keeps the plate's own pts and time base, so a variable-frame-rate plate
stays in sync with its audio; audio is copied packet for packet where the container can carry it.
The file is written under a temporary name next to the output and renamed at the end, so
an output path either holds a complete deliverable or nothing; it gets the mode the umask gives
new files (a temporary file is created private, 0600).

Containers (:data:`CONTAINERS`): mp4 and mov, the two that C2PA signing can embed a manifest in
(every deliverable is signed; Matroska, AVI or image sequences would have to go out unsigned, so
they are refused). The video codec is the plate's own where the container holds it and PyAV can
encode it (:func:`choose_video_codec`), else H.264.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterator, Sequence

import av
import numpy as np

from recast.errors import InternalError, OutputPathError, UnsupportedMediaError, UsageError
from recast.settings import Settings
from recast.media.chunks import SWS_ACCURATE, read_frames
from recast.media.orientation import UPRIGHT, Orientation, tag_stream, to_stored
from recast.media.probe import (
    _label,
    _nominal_rate,
    _short,
    _timecode,
    open_input,
    probe_media,
    read_orientation,
    read_timing,
    video_stream,
)

log = logging.getLogger("recast")

Progress = Callable[[int, int], None]

# Audio codecs the mp4 muxer accepts as they are; anything else (pcm, vorbis...) is re-encoded.
MP4_AUDIO_COPY = frozenset({"aac", "mp3", "alac", "opus", "ac3", "eac3", "flac"})
# QuickTime carries PCM as it is (the usual audio of ProRes and DNxHR plates); no opus or flac.
MOV_AUDIO_COPY = frozenset({"aac", "mp3", "alac", "ac3", "eac3", "pcm_s16le", "pcm_s16be", "pcm_s24le", "pcm_s24be",
                            "pcm_s32le", "pcm_s32be", "pcm_f32le", "pcm_f32be"})


@dataclass(frozen=True)
class Container:
    """A container recast delivers in: its ``--deliver`` name, the FFmpeg muxer, the file
    extensions that mean it, its media type and the audio codecs it carries as they are."""

    name: str
    muxer: str
    suffixes: tuple[str, ...]
    media_type: str
    audio_copy: frozenset[str]
    video_codecs: frozenset[str]  # plate codecs it holds (others become H.264)

    @property
    def suffix(self) -> str:
        return self.suffixes[0]


CONTAINERS: dict[str, Container] = {
    "mp4": Container("mp4", "mp4", (".mp4", ".m4v"), "video/mp4", MP4_AUDIO_COPY, frozenset({"h264", "hevc"})),
    "mov": Container("mov", "mov", (".mov",), "video/quicktime", MOV_AUDIO_COPY, frozenset({"h264", "hevc", "prores", "dnxhd"})),
}
DEFAULT_CONTAINER = "mp4"


def supported_containers() -> str:
    """The containers and extensions, for messages: ``mp4 (.mp4, .m4v), mov (.mov)``."""
    return ", ".join(f"{c.name} ({', '.join(c.suffixes)})" for c in CONTAINERS.values())


def resolve_container(out: Path | str | None, deliver: str | None = None) -> Container:
    """The deliverable's container: ``deliver`` (``--deliver``) when given, else the extension of
    ``out`` (``--out``), else mp4. Raises UsageError, naming both, when they disagree, and
    listing the supported containers for any other format (checked before any work)."""
    if deliver is not None:
        chosen = CONTAINERS.get(deliver.strip().lower())
        if chosen is None:
            raise UsageError(f"--deliver '{deliver}': choose from {', '.join(CONTAINERS)} "
                             "(deliverables carry an embedded C2PA manifest, which these containers hold)")
    if out is None:
        return chosen if deliver is not None else CONTAINERS[DEFAULT_CONTAINER]
    suffix = Path(out).suffix.lower()
    if deliver is not None:
        if suffix and suffix not in chosen.suffixes:
            raise UsageError(f"--out '{out}' has the extension {suffix} but --deliver {chosen.name} writes {', '.join(chosen.suffixes)}: "
                             "make them agree")
        return chosen
    for container in CONTAINERS.values():
        if suffix in container.suffixes:
            return container
    what = f"the extension {suffix}" if suffix else "no extension"
    raise UsageError(f"--out '{out}': {what}; recast delivers {supported_containers()} "
                     "(each carries the deliverable's embedded C2PA manifest), or give --deliver")


@dataclass(frozen=True)
class VideoCodec:
    """The encoder of the deliverable's video and its settings."""

    encoder: str  # PyAV/FFmpeg encoder name
    pix_fmt: str
    options: tuple[tuple[str, str], ...] = ()  # fixed encoder options (quality options are added for x264/x265)
    codec_tag: str | None = None

    @property
    def crf_based(self) -> bool:
        return self.encoder in ("libx264", "libx265")


H264 = VideoCodec("libx264", "yuv420p")
# hvc1: the sample entry Apple's players and editors require for HEVC in mp4/mov
HEVC = VideoCodec("libx265", "yuv420p", (("x265-params", "log-level=error"),), codec_tag="hvc1")
# ProRes profile (as the decoder names it) -> prores_ks profile number; 4444 keeps full chroma
_PRORES = {"proxy": "0", "lt": "1", "standard": "2", "hq": "3", "4444": "4", "4444xq": "5"}
# DNxHR profile -> (encoder profile, pixel format); DNxHD (fixed sizes and bit rates) becomes DNxHR HQ
_DNXHR = {"dnxhr lb": ("dnxhr_lb", "yuv422p"), "dnxhr sq": ("dnxhr_sq", "yuv422p"), "dnxhr hq": ("dnxhr_hq", "yuv422p"),
          "dnxhr hqx": ("dnxhr_hqx", "yuv422p10le"), "dnxhr 444": ("dnxhr_444", "yuv444p10le")}


def choose_video_codec(container: Container | str, plate_codec: str | None, plate_profile: str | None = None) -> VideoCodec:
    """The plate's own codec where ``container`` holds it (H.264 and HEVC in mp4; those and
    ProRes, DNxHR in mov), at the plate's profile; H.264 for anything else."""
    c = CONTAINERS[container] if isinstance(container, str) else container
    codec = (plate_codec or "").lower()
    profile = (plate_profile or "").strip().lower()
    if codec not in c.video_codecs or codec == "h264":
        return H264
    if codec == "hevc":
        return HEVC
    if codec == "prores":
        number = _PRORES.get(profile, "3")  # an unnamed profile: HQ, the usual finishing flavour
        return VideoCodec("prores_ks", "yuv444p10le" if number in ("4", "5") else "yuv422p10le", (("profile", number),))
    encoder_profile, pix_fmt = _DNXHR.get(profile, ("dnxhr_hq", "yuv422p"))
    return VideoCodec("dnxhd", pix_fmt, (("profile", encoder_profile),))


def _full_chroma(codec: VideoCodec) -> VideoCodec:
    """The same codec without chroma subsampling, for a plate of odd width or height.

    4:2:0 H.264/HEVC cannot code an odd size at all (even the crop is counted in chroma
    samples), prores_ks writes a wrong last column at an odd 4:2:2 width, and padding would change
    the deliverable's size; at 4:4:4 (H.264 High 4:4:4, HEVC RExt, ProRes 4444, DNxHR 444)
    every one of them codes 641x361 exactly.
    """
    if codec.encoder == "prores_ks":
        return VideoCodec("prores_ks", "yuv444p10le", (("profile", "4"),), codec.codec_tag)
    if codec.encoder == "dnxhd":
        return VideoCodec("dnxhd", "yuv444p10le", (("profile", "dnxhr_444"),), codec.codec_tag)
    return VideoCodec(codec.encoder, "yuv444p", codec.options, codec.codec_tag)


def plate_video_codec(container: Container | str, plate: Path) -> VideoCodec:
    """:func:`choose_video_codec` for the plate file ``plate`` (its codec and profile)."""
    with open_input(Path(plate), "plate") as c:
        ctx = video_stream(c, Path(plate), "plate").codec_context
        return choose_video_codec(container, ctx.name if ctx is not None else None, ctx.profile if ctx is not None else None)


def new_file_mode() -> int:
    """The mode a newly created file gets under this process's umask (0o666 & ~umask).

    Read from /proc where it is available: setting the umask to read it back is not safe
    while other threads create files.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask

_PROGRESS_EVERY = 24

# AVColorSpace (stream tag) -> swscale matrix (av.video.reformatter.Colorspace values).
# Untagged plates decode with swscale's default (BT.601); encoding with the same matrix and
# leaving the output untagged makes the deliverable look exactly like the plate in any player.
_SWS_MATRIX = {1: "ITU709", 4: "FCC", 5: "ITU601", 6: "SMPTE170M", 7: "SMPTE240M", 9: "BT2020", 10: "BT2020"}
_AVCOL_RANGE_JPEG = 2


@dataclass(frozen=True)
class RenderInfo:
    """What :func:`render_h264` wrote."""

    frames: int
    rate: Fraction  # the plate's nominal rate
    avg_rate: Fraction  # frame count over the pts span of the output
    audio_copied: bool  # False when there was no audio to copy or it had to be re-encoded
    codec: str
    size: int
    container: str = DEFAULT_CONTAINER


def check_output_writable(out_path: Path) -> None:
    """Raise OutputPathError unless a file can be created at ``out_path``.

    Checked by creating (and removing) a probe file in the directory, which also catches
    read-only mounts and ACLs that permission bits do not show (and runs as root correctly).
    """
    out_path = Path(out_path)
    label = f"output '{out_path}'"
    if out_path.is_dir():
        raise OutputPathError(f"{label}: is a directory")
    parent = out_path.parent if str(out_path.parent) else Path(".")
    if not parent.exists():
        raise OutputPathError(f"{label}: directory does not exist")
    if not parent.is_dir():
        raise OutputPathError(f"{label}: parent '{parent}' is not a directory")
    try:
        fd, probe = tempfile.mkstemp(dir=parent, prefix=f".{out_path.name}.", suffix=".check")
    except OSError as exc:
        raise OutputPathError(f"{label}: not writable ({exc.strerror or exc})") from exc
    os.close(fd)
    os.unlink(probe)


def _local_path(ref: str | Path) -> Path | None:
    """A local path for an input given as a path or file:// URI (None for s3:// and other URIs)."""
    text = str(ref)
    if text.startswith("file://"):
        from urllib.parse import unquote, urlparse

        return Path(unquote(urlparse(text).path))
    if "://" in text:
        return None
    return Path(text)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)  # hard links, case-folding file systems
    except OSError:
        return False


def check_output_not_input(out_path: Path, inputs: Sequence[str | Path], protected: Sequence[Path] = ()) -> None:
    """Raise UsageError when ``out_path`` is one of ``inputs`` (paths or file:// URIs: plate,
    source photos, reference photos) or is or lies inside one of ``protected`` (the object store,
    the database: :func:`store_paths`): writing the deliverable there would destroy an input.
    Symbolic links, ``..`` and hard links are seen through."""
    out_path = Path(out_path)
    real_out = Path(os.path.realpath(out_path))
    for ref in inputs:
        path = _local_path(ref)
        if path is None:
            continue
        if Path(os.path.realpath(path)) == real_out or _same_file(out_path, path):
            raise UsageError(f"--out '{out_path}' is the input '{ref}': writing the deliverable there would destroy it; "
                             "choose another output path")
    for folder in protected:
        real = Path(os.path.realpath(folder))
        if real_out == real or real in real_out.parents:
            raise UsageError(f"--out '{out_path}' is inside recast's own data ('{folder}': object store, cache or database): "
                             "choose a path outside it")


def store_paths(settings: Settings) -> list[Path]:
    """What an output path must never be or be inside of: the local object store, the download
    cache of an S3 store, and the embedded SQLite database."""
    paths = [settings.resolved_data_dir / "cache"]
    url = settings.resolved_storage_url
    if url.startswith("file:"):
        from urllib.parse import unquote, urlparse

        paths.append(Path(unquote(urlparse(url).path)))
    database = settings.resolved_database_url
    if database.startswith("sqlite") and ":///" in database:
        paths.append(Path(database.split(":///", 1)[1].split("?", 1)[0]))
    return paths


def _color_tags(ctx: av.codec.context.CodecContext) -> dict[str, int]:
    return {
        "colorspace": int(ctx.colorspace or 2),
        "color_range": int(ctx.color_range or 0),
        "color_primaries": int(ctx.color_primaries or 2),
        "color_trc": int(ctx.color_trc or 2),
    }


@dataclass
class _Plate:
    width: int
    height: int
    rate: Fraction
    pts: np.ndarray
    time_base: Fraction
    colors: dict[str, int]
    full_range: bool
    timecode: str | None
    codec: str = ""
    profile: str | None = None
    # width and height above are as stored; chunk frames are upright and are turned back
    orientation: Orientation = UPRIGHT


def _read_plate(plate: Path) -> _Plate:
    pts, tb = read_timing(plate, role="plate")
    with open_input(plate, "plate") as container:
        stream = video_stream(container, plate, "plate")
        ctx = stream.codec_context
        colors = _color_tags(ctx)
        pix_fmt = stream.format.name if stream.format is not None else ""
        return _Plate(
            width=stream.width,
            height=stream.height,
            rate=_nominal_rate(stream),
            pts=pts,
            time_base=tb,
            colors=colors,
            full_range=colors["color_range"] == _AVCOL_RANGE_JPEG or pix_fmt.startswith("yuvj"),
            timecode=_timecode(container),
            codec=ctx.name if ctx is not None else "",
            profile=ctx.profile if ctx is not None else None,
            orientation=read_orientation(plate, "plate"),
        )


def _chunk_frame_total(frame_chunks: Sequence[Path]) -> int:
    # Demux-only count: cheap, and it lets a mismatch fail before any encoding.
    return sum(len(read_timing(Path(p), role="chunk")[0]) for p in frame_chunks)


def _chunk_frames(frame_chunks: Sequence[Path]) -> Iterator[np.ndarray]:
    for p in frame_chunks:
        yield from read_frames(Path(p), role="chunk")


class _AudioPump:
    """Feeds the plate's audio into the output interleaved with the video by time.

    Interleaving here (rather than writing all video then all audio) keeps the muxer's
    buffer small for long plates.
    """

    def __init__(self, plate: Path, output: av.container.OutputContainer, copyable: frozenset[str] = MP4_AUDIO_COPY) -> None:
        self.copied = True
        self._container = av.open(str(plate), "r")
        self._out = output
        self._map: dict[int, tuple[av.stream.Stream, bool]] = {}
        #: audio streams left out: FFmpeg has no decoder for them and the container cannot copy them
        self.dropped: list[str] = []
        for s in self._container.streams.audio:
            name = s.codec_context.name if s.codec_context is not None else ""
            if name in copyable:
                out = output.add_stream_from_template(s)
                self._map[s.index] = (out, True)
            elif s.codec_context is None:
                # an audio stream nothing here can decode must not cost the whole shot: the
                # picture is delivered, the stream is named as left out (and audio_copied is false)
                self.dropped.append(f"#{s.index}" + (f" ({s.metadata['handler_name']})" if s.metadata.get('handler_name') else ''))
                log.warning("plate %s: audio stream %s has no decoder here and cannot be copied into the deliverable: left out",
                            plate, self.dropped[-1])
            else:
                ctx = s.codec_context
                out = output.add_stream("aac", rate=ctx.sample_rate or 48000)
                # The default layout for the channel count: the AAC encoder refuses the
                # "N channels" (unknown order) layout that pcm in mkv/wav often has.
                out.codec_context.layout = av.AudioLayout(f"{ctx.channels or 2}c")
                self._map[s.index] = (out, False)
                self.copied = False
        self.has_audio = bool(self._map)
        if not self.has_audio or self.dropped:
            self.copied = False
        streams = [s for s in self._container.streams.audio if s.index in self._map]
        self._packets = self._container.demux(streams) if streams else iter(())
        self._pending: av.Packet | None = None
        self._done = not streams

    def _next(self) -> av.Packet | None:
        while True:
            try:
                packet = next(self._packets)
            except StopIteration:
                self._done = True
                return None
            if packet.size or not self._map[packet.stream.index][1]:
                return packet

    def pump(self, until: Fraction | None) -> None:
        """Mux audio up to time ``until`` (seconds), or everything when None."""
        while not self._done:
            if self._pending is None:
                self._pending = self._next()
                if self._pending is None:
                    break
            packet = self._pending
            ts = packet.dts if packet.dts is not None else packet.pts
            if until is not None and ts is not None and ts * packet.time_base > until:
                return
            self._pending = None
            self._write(packet)
        if until is None:
            for out, copy in self._map.values():
                if not copy:
                    for p in out.encode(None):
                        self._out.mux(p)

    def _write(self, packet: av.Packet) -> None:
        out, copy = self._map[packet.stream.index]
        if copy:
            if packet.dts is None:
                return  # an empty flush packet: nothing to carry
            packet.stream = out
            self._out.mux(packet)
        else:
            for frame in packet.decode():
                for p in out.encode(frame):
                    self._out.mux(p)

    def close(self) -> None:
        self._container.close()


def render_h264(frame_chunks: Sequence[Path], plate: Path, out_path: Path, **kw) -> RenderInfo:
    """:func:`render_video` as H.264 in mp4, whatever the plate's codec."""
    return render_video(frame_chunks, plate, out_path, container="mp4", codec=H264, **kw)


def render_video(
    frame_chunks: Sequence[Path],
    plate: Path,
    out_path: Path,
    *,
    container: Container | str = DEFAULT_CONTAINER,
    codec: VideoCodec | None = None,
    crf: int = 16,
    preset: str = "veryfast",
    threads: int = 0,
    progress: Progress | None = None,
    transform: Callable[[np.ndarray, int], np.ndarray] | None = None,
) -> RenderInfo:
    """Encode the swapped chunks, in order, into ``container`` (mp4 or mov) with the plate's audio.

    The video codec is ``codec``, by default the plate's own where the container holds it
    (:func:`choose_video_codec`), else H.264. Frame ``i`` gets the plate's pts ``i`` in the
    plate's time base; the colour matrix and range of the plate are used and tagged, so
    unswapped pixels match the plate, and the plate's start timecode is carried (tmcd track).
    Audio streams are copied when the container can carry them, otherwise re-encoded to AAC
    (``audio_copied=False``; also False when the plate has no audio).

    Raises OutputPathError before any work when ``out_path`` cannot be written,
    UnsupportedMediaError for odd plate sizes where the pixel format subsamples chroma (the
    deliverable is not padded so its size always equals the plate's), and InternalError when
    the chunks do not hold exactly the plate's frames. On any failure no output is left.
    ``transform(rgb, frame_index)`` may change each frame just before encoding (the watermark).
    """
    out_path = Path(out_path)
    plate = Path(plate)
    box = CONTAINERS[container] if isinstance(container, str) else container
    check_output_writable(out_path)
    info = _read_plate(plate)
    codec = codec or choose_video_codec(box, info.codec, info.profile)
    if (info.width % 2 and not codec.pix_fmt.startswith("yuv444")) or (info.height % 2 and codec.pix_fmt.startswith("yuv420")):
        codec = _full_chroma(codec)
    odd_width = info.width % 2 and not codec.pix_fmt.startswith("yuv444")
    odd_height = info.height % 2 and codec.pix_fmt.startswith("yuv420")
    if odd_width or odd_height:
        raise UnsupportedMediaError(
            f"{_label('plate', plate)}: size {info.width}x{info.height} is odd; "
            f"{codec.encoder} {codec.pix_fmt} needs even {'width' if odd_width else 'height'}"
        )
    total = len(info.pts)
    in_chunks = _chunk_frame_total(frame_chunks)
    if in_chunks != total:
        raise InternalError(
            f"render {out_path}: the chunks hold {in_chunks} frames but the plate has {total}"
        )

    fd, tmp_name = tempfile.mkstemp(dir=out_path.parent, prefix=f".{out_path.name}.", suffix=".partial" + box.suffix)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        audio_copied = _encode(frame_chunks, plate, tmp, info, box, codec, crf=crf, preset=preset, threads=threads, progress=progress,
                               transform=transform)
        written = probe_media(tmp, role="render output")
        if written.frame_count != total:
            raise InternalError(f"render {out_path}: wrote {written.frame_count} frames, expected {total}")
        os.chmod(tmp, new_file_mode())  # mkstemp made it private
        os.replace(tmp, out_path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return RenderInfo(
        frames=total,
        rate=info.rate,
        avg_rate=written.avg_rate.fraction if written.avg_rate else info.rate,
        audio_copied=audio_copied,
        codec=written.codec,
        size=out_path.stat().st_size,
        container=box.name,
    )


def _encode(
    frame_chunks: Sequence[Path],
    plate: Path,
    tmp: Path,
    info: _Plate,
    box: Container,
    codec: VideoCodec,
    *,
    crf: int,
    preset: str,
    threads: int,
    progress: Progress | None,
    transform: Callable[[np.ndarray, int], np.ndarray] | None = None,
) -> bool:
    total = len(info.pts)
    tb = info.time_base
    matrix = _SWS_MATRIX.get(info.colors["colorspace"], "DEFAULT")
    out_range = "JPEG" if info.full_range else "MPEG"
    try:
        output = av.open(str(tmp), "w", format=box.muxer, container_options={"movflags": "+faststart"})
    except av.error.FFmpegError as exc:
        raise OutputPathError(f"output '{tmp}': cannot be created ({_short(exc)})") from exc
    audio: _AudioPump | None = None
    try:
        video = output.add_stream(codec.encoder, rate=info.rate)
        video.width, video.height = info.width, info.height
        video.pix_fmt = codec.pix_fmt
        tag_stream(video, info.orientation)  # the plate's display matrix: shown as the plate is
        ctx = video.codec_context
        # The plate's time base on both encoder and stream: pts go through without rounding.
        ctx.time_base = tb
        video.time_base = tb
        ctx.thread_count = threads
        ctx.options = {**dict(codec.options), **({"crf": str(crf), "preset": preset} if codec.crf_based else {})}
        if codec.codec_tag:
            ctx.codec_tag = codec.codec_tag
        ctx.colorspace = info.colors["colorspace"]
        ctx.color_primaries = info.colors["color_primaries"]
        ctx.color_trc = info.colors["color_trc"]
        ctx.color_range = _AVCOL_RANGE_JPEG if info.full_range else (info.colors["color_range"] or 0)
        if info.timecode:
            # The mp4/mov muxer turns this into a tmcd track, so editors conform the deliverable.
            video.metadata["timecode"] = info.timecode
        audio = _AudioPump(plate, output, box.audio_copy)

        def mux_video(packets: list[av.Packet]) -> None:
            for p in packets:
                if audio is not None and p.dts is not None:
                    audio.pump(p.dts * tb)
                output.mux(p)

        n = 0
        for rgb in _chunk_frames(frame_chunks):
            if n >= total:
                raise InternalError(f"render: the chunks decode to more than the plate's {total} frames")
            up_w, up_h = info.orientation.upright_size(info.width, info.height)
            if rgb.shape != (up_h, up_w, 3):
                raise InternalError(
                    f"render: frame {n} is {rgb.shape[1]}x{rgb.shape[0]}, the plate is {up_w}x{up_h} upright"
                )
            if transform is not None:
                rgb = transform(rgb, n)
            # stored as the plate stores it, so pixels outside the matte are the plate's own
            rgb = to_stored(rgb, info.orientation)
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(
                format=codec.pix_fmt, dst_colorspace=matrix, dst_color_range=out_range, interpolation=SWS_ACCURATE
            )
            frame.pts = int(info.pts[n])
            frame.time_base = tb
            mux_video(video.encode(frame))
            n += 1
            if progress is not None and (n % _PROGRESS_EVERY == 0 or n == total):
                progress(n, total)
        if n != total:
            raise InternalError(f"render: the chunks decoded to {n} frames but the plate has {total}")
        mux_video(video.encode(None))
        audio.pump(None)
        output.close()
    except av.error.FFmpegError as exc:
        _close_quietly(output)
        raise InternalError(f"render {tmp.name}: encoding failed ({_short(exc)})") from exc
    except BaseException:
        _close_quietly(output)
        raise
    finally:
        if audio is not None:
            audio.close()
    return audio.copied


def _close_quietly(container: av.container.OutputContainer) -> None:
    try:
        container.close()
    except Exception:  # the file is deleted next; a second error would hide the first
        pass
