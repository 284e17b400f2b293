"""Render the deliverable: swapped FFV1 chunks + the plate's timing and audio -> H.264 mp4.

Every output frame keeps the plate's own pts and time base, so a variable-frame-rate plate
stays in sync with its audio; audio is copied packet for packet where mp4 can carry it.
The file is written under a temporary name next to the output and renamed at the end, so
an output path either holds a complete deliverable or nothing.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterator, Sequence

import av
import numpy as np

from recast.errors import InternalError, OutputPathError, UnsupportedMediaError
from recast.media.chunks import SWS_ACCURATE, read_frames
from recast.media.probe import (
    _label,
    _nominal_rate,
    _short,
    _timecode,
    open_input,
    probe_media,
    read_timing,
    video_stream,
)

Progress = Callable[[int, int], None]

# Audio codecs the mp4 muxer accepts as they are; anything else (pcm, vorbis...) is re-encoded.
MP4_AUDIO_COPY = frozenset({"aac", "mp3", "alac", "opus", "ac3", "eac3", "flac"})

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

    def __init__(self, plate: Path, output: av.container.OutputContainer) -> None:
        self.copied = True
        self._container = av.open(str(plate), "r")
        self._out = output
        self._map: dict[int, tuple[av.stream.Stream, bool]] = {}
        for s in self._container.streams.audio:
            name = s.codec_context.name if s.codec_context is not None else ""
            if name in MP4_AUDIO_COPY:
                out = output.add_stream_from_template(s)
                self._map[s.index] = (out, True)
            else:
                ctx = s.codec_context
                out = output.add_stream("aac", rate=ctx.sample_rate or 48000)
                # The default layout for the channel count: the AAC encoder refuses the
                # "N channels" (unknown order) layout that pcm in mkv/wav often has.
                out.codec_context.layout = av.AudioLayout(f"{ctx.channels or 2}c")
                self._map[s.index] = (out, False)
                self.copied = False
        self.has_audio = bool(self._map)
        if not self.has_audio:
            self.copied = False
        streams = [s for s in self._container.streams.audio]
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


def render_h264(
    frame_chunks: Sequence[Path],
    plate: Path,
    out_path: Path,
    *,
    crf: int = 16,
    preset: str = "veryfast",
    threads: int = 0,
    progress: Progress | None = None,
    transform: Callable[[np.ndarray, int], np.ndarray] | None = None,
) -> RenderInfo:
    """Encode the swapped chunks, in order, as H.264 (yuv420p) in mp4 with the plate's audio.

    Frame ``i`` gets the plate's pts ``i`` in the plate's time base; the colour matrix and
    range of the plate are used and tagged, so unswapped pixels match the plate, and the
    plate's start timecode is carried (tmcd track). Audio
    streams are copied when mp4 can carry them, otherwise re-encoded to AAC
    (``audio_copied=False``; also False when the plate has no audio).

    Raises OutputPathError before any work when ``out_path`` cannot be written,
    UnsupportedMediaError for odd plate sizes (yuv420p needs even width and height; the
    deliverable is not padded so its size always equals the plate's), and InternalError when
    the chunks do not hold exactly the plate's frames. On any failure no output is left.
    ``transform(rgb, frame_index)`` may change each frame just before encoding (the watermark).
    """
    out_path = Path(out_path)
    plate = Path(plate)
    check_output_writable(out_path)
    info = _read_plate(plate)
    if info.width % 2 or info.height % 2:
        raise UnsupportedMediaError(
            f"{_label('plate', plate)}: size {info.width}x{info.height} is odd; "
            "H.264 yuv420p needs even width and height"
        )
    total = len(info.pts)
    in_chunks = _chunk_frame_total(frame_chunks)
    if in_chunks != total:
        raise InternalError(
            f"render {out_path}: the chunks hold {in_chunks} frames but the plate has {total}"
        )

    fd, tmp_name = tempfile.mkstemp(dir=out_path.parent, prefix=f".{out_path.name}.", suffix=".partial.mp4")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        audio_copied = _encode(frame_chunks, plate, tmp, info, crf=crf, preset=preset, threads=threads, progress=progress, transform=transform)
        written = probe_media(tmp, role="render output")
        if written.frame_count != total:
            raise InternalError(f"render {out_path}: wrote {written.frame_count} frames, expected {total}")
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
    )


def _encode(
    frame_chunks: Sequence[Path],
    plate: Path,
    tmp: Path,
    info: _Plate,
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
        output = av.open(str(tmp), "w", format="mp4", container_options={"movflags": "+faststart"})
    except av.error.FFmpegError as exc:
        raise OutputPathError(f"output '{tmp}': cannot be created ({_short(exc)})") from exc
    audio: _AudioPump | None = None
    try:
        video = output.add_stream("libx264", rate=info.rate)
        video.width, video.height = info.width, info.height
        video.pix_fmt = "yuv420p"
        ctx = video.codec_context
        # The plate's time base on both encoder and stream: pts go through without rounding.
        ctx.time_base = tb
        video.time_base = tb
        ctx.thread_count = threads
        ctx.options = {"crf": str(crf), "preset": preset}
        ctx.colorspace = info.colors["colorspace"]
        ctx.color_primaries = info.colors["color_primaries"]
        ctx.color_trc = info.colors["color_trc"]
        ctx.color_range = _AVCOL_RANGE_JPEG if info.full_range else (info.colors["color_range"] or 0)
        if info.timecode:
            # The mp4 muxer turns this into a tmcd track, so editors conform the deliverable.
            video.metadata["timecode"] = info.timecode
        audio = _AudioPump(plate, output)

        def mux_video(packets: list[av.Packet]) -> None:
            for p in packets:
                if audio is not None and p.dts is not None:
                    audio.pump(p.dts * tb)
                output.mux(p)

        n = 0
        for rgb in _chunk_frames(frame_chunks):
            if n >= total:
                raise InternalError(f"render: the chunks decode to more than the plate's {total} frames")
            if rgb.shape != (info.height, info.width, 3):
                raise InternalError(
                    f"render: frame {n} is {rgb.shape[1]}x{rgb.shape[0]}, the plate is {info.width}x{info.height}"
                )
            if transform is not None:
                rgb = transform(rgb, n)
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(
                format="yuv420p", dst_colorspace=matrix, dst_color_range=out_range, interpolation=SWS_ACCURATE
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
