"""What a media file is: container, codec, size, orientation, exact frame count, rational rates,
audio, timecode.

Frame counts and timing come from demuxing (no decode), which is fast and exact for the
containers a plate arrives in. Every PyAV/FFmpeg error is turned into a recast error whose
message names the role of the file ("plate", "source"), its path and the problem.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import av
import numpy as np

from recast.checksums import sha256_file  # noqa: F401  (re-exported by recast.media)
from recast.contracts import AudioStreamInfo, MediaInfo, Rate
from recast.errors import InputNotFoundError, MediaDecodeError, UnsupportedMediaError
from recast.media.orientation import UPRIGHT, Orientation, OrientationError, frame_orientation

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp"})

# FFmpeg demuxers that read one still image; a file that opens with one of these is an image.
_IMAGE_DEMUXERS = ("image2", "_pipe")

# 1001*1000 keeps NTSC-style rates (30000/1001, 24000/1001) exact while collapsing the
# rounding noise of a pts-derived average into a readable fraction.
_AVG_RATE_MAX_DEN = 1001 * 1000


def _label(role: str, path: Path) -> str:
    return f"{role} '{path}'"


def _short(exc: BaseException) -> str:
    """One line describing an FFmpeg/PIL error, without the file name FFmpeg repeats."""
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return text.splitlines()[0].strip()


def check_exists(path: Path, role: str) -> None:
    """Raise InputNotFoundError when ``path`` is missing or is not a regular file."""
    if not path.exists():
        raise InputNotFoundError(f"{_label(role, path)}: file not found")
    if not path.is_file():
        raise InputNotFoundError(f"{_label(role, path)}: not a file")


@contextmanager
def open_input(path: Path, role: str = "input") -> Iterator[av.container.InputContainer]:
    """Open a media file for reading, translating every FFmpeg error into a recast error."""
    path = Path(path)
    check_exists(path, role)
    try:
        container = av.open(str(path), "r")
    except av.error.FileNotFoundError as exc:
        raise InputNotFoundError(f"{_label(role, path)}: file not found") from exc
    except av.error.PermissionError as exc:
        raise MediaDecodeError(f"{_label(role, path)}: cannot be read (permission denied)") from exc
    except (av.error.FFmpegError, UnicodeDecodeError) as exc:
        if _looks_like_cut_mp4(path):
            raise MediaDecodeError(
                f"{_label(role, path)}: truncated or corrupt ({_short(exc)})"
            ) from exc
        raise MediaDecodeError(
            f"{_label(role, path)}: not a readable media file ({_short(exc)})"
        ) from exc
    try:
        yield container
    finally:
        container.close()


def _looks_like_cut_mp4(path: Path) -> bool:
    """An ISO-BMFF file (ftyp box first) that FFmpeg cannot open is a cut or damaged mp4/mov.

    The usual cause is a copy that stopped early: the ``moov`` index sits at the end of most
    camera and editor files, so the first part of the file alone cannot be opened.
    """
    try:
        with open(path, "rb") as fh:
            head = fh.read(12)
    except OSError:
        return False
    return len(head) == 12 and head[4:8] == b"ftyp"


def _video_candidates(container: av.container.InputContainer) -> list[av.VideoStream]:
    # Cover art (an mp4/mkv poster frame) is a video stream of one still picture, never the plate.
    return [s for s in container.streams.video if not (s.disposition & av.stream.Disposition.attached_pic)]


def _stream_score(stream: av.VideoStream) -> int:
    """FFmpeg's choice of the video stream to read (``ffmpeg -i FILE out`` without ``-map``):
    the picture area, plus a bonus for the default-disposition stream that outweighs any size up
    to 5 megapixels. A player shows the default stream, so a plate's default one is taken unless
    another is far larger; with no default (or several), the largest."""
    default = bool(stream.disposition & av.stream.Disposition.default)
    return (stream.width or 0) * (stream.height or 0) + 5_000_000 * default


def video_stream(container: av.container.InputContainer, path: Path, role: str) -> av.VideoStream:
    """The video stream recast reads (FFmpeg's choice, see :func:`_stream_score`; the first on a
    tie), or UnsupportedMediaError when there is none. Every reader of a file calls this, so
    probe, timing, chunks and render all see the same stream."""
    candidates = _video_candidates(container)
    if not candidates:
        if container.streams.video:
            raise UnsupportedMediaError(f"{_label(role, path)}: no video stream (only cover art)")
        raise UnsupportedMediaError(f"{_label(role, path)}: no video stream")
    best = candidates[0]
    for s in candidates[1:]:
        if _stream_score(s) > _stream_score(best):
            best = s
    return best


def describe_stream_choice(path: Path, role: str = "plate") -> str | None:
    """Which video stream is read and why, when the file has more than one (None otherwise):
    e.g. ``video stream #1 of 2, the largest; also #0 256x256``."""
    path = Path(path)
    with open_input(path, role) as container:
        candidates = _video_candidates(container)
        if len(candidates) < 2:
            return None
        chosen = video_stream(container, path, role).index
        sizes = {s.index: (s.width or 0, s.height or 0) for s in candidates}
        defaults = [s.index for s in candidates if s.disposition & av.stream.Disposition.default]
    w, h = sizes[chosen]
    if defaults == [chosen]:
        why = "the default"
    elif max(a * b for a, b in sizes.values()) == w * h:
        why = "the largest"
    else:
        why = "a default"
    others = ", ".join(f"#{i} {a}x{b}" for i, (a, b) in sizes.items() if i != chosen)
    return f"video stream #{chosen} of {len(candidates)}, {why}; also {others}"


def read_orientation(path: Path, role: str = "plate") -> Orientation:
    """How the video's stored pixels are shown: the display matrix of its first decoded frame
    (decoders attach the track's matrix, or a display-orientation SEI, to every frame).

    Raises UnsupportedMediaError naming the file for a matrix that is not a quarter turn or mirror.
    """
    path = Path(path)
    with open_input(path, role) as container:
        stream = video_stream(container, path, role)
        try:
            for frame in container.decode(stream):
                return frame_orientation(frame)
        except av.error.FFmpegError as exc:
            raise MediaDecodeError(f"{_label(role, path)}: truncated or corrupt: the first frame cannot be decoded ({_short(exc)})") from exc
        except OrientationError as exc:
            raise UnsupportedMediaError(f"{_label(role, path)}: {exc}") from exc
    return UPRIGHT


@dataclass(frozen=True)
class _Scan:
    pts: np.ndarray  # int64, presentation order
    time_base: Fraction
    last_duration: int  # in time_base ticks; 0 when unknown
    retimed: str | None = None  # why the file's timestamps were replaced, for the ingest line


def _scan_packets(container: av.container.InputContainer, stream: av.VideoStream, path: Path, role: str) -> _Scan:
    """Demux the video stream (no decode) and collect the pts of every frame it will show."""
    time_base = stream.time_base or Fraction(1, 1)
    pts: list[int] = []
    stored = 0  # packets in the file, shown or not: what the container's sample count counts
    last_duration = 0
    missing_pts = False
    try:
        for packet in container.demux(stream):
            if packet.size == 0:
                continue  # the flush packet
            stored += 1
            if packet.is_discard:
                continue  # cut by an edit list: decoded for reference, never shown
            if packet.pts is None:
                missing_pts = True
            else:
                pts.append(packet.pts)
            last_duration = packet.duration or 0
    except av.error.FFmpegError as exc:
        raise MediaDecodeError(
            f"{_label(role, path)}: truncated or corrupt after {len(pts)} frames ({_short(exc)})"
        ) from exc
    if missing_pts or not pts:
        # Raw elementary streams carry no pts: only decoding tells how many frames there are.
        return _scan_decode(path, role)
    declared = stream.frames
    if declared and stored < declared:
        raise MediaDecodeError(
            f"{_label(role, path)}: truncated or corrupt: {stored} of {declared} frames present"
        )
    arr = np.sort(np.asarray(pts, dtype=np.int64))
    if len(arr) > 1 and arr[0] == arr[-1]:
        return _retime(arr, Fraction(time_base), _nominal_rate(stream))
    return _Scan(arr, Fraction(time_base), last_duration)


def _retime(pts: np.ndarray, time_base: Fraction, rate: Fraction) -> _Scan:
    """Timing for a plate whose frames all carry one timestamp (a muxer that wrote none): frame
    ``i`` at ``start + i / rate``, from the nominal rate. Copied as they are, every frame of the
    deliverable would be shown at one instant (players show one frame, or refuse the file)."""
    n, start = len(pts), Fraction(int(pts[0])) * time_base
    step = 1 / (rate * time_base)  # ticks of the stream's time base per frame
    if step.denominator == 1:
        new, tb = int(pts[0]) + np.arange(n, dtype=np.int64) * int(step), time_base
    else:  # the rate does not fall on the time base's ticks: count in frames instead
        new, tb = round(start * rate) + np.arange(n, dtype=np.int64), 1 / rate
    when = "0" if start == 0 else f"{float(start):g} s"
    note = f"timestamps: all {n} frames stamped {when} in the file, re-timed at {float(rate):g} fps (its nominal rate)"
    return _Scan(new, Fraction(tb), int(step) if tb == time_base else 1, retimed=note)


def _scan_decode(path: Path, role: str) -> _Scan:
    """Fallback timing by decoding every frame (streams without packet timestamps)."""
    with open_input(path, role) as container:
        stream = video_stream(container, path, role)
        stream.thread_type = "AUTO"
        time_base = stream.time_base or Fraction(1, 1)
        pts: list[int] = []
        try:
            for i, frame in enumerate(container.decode(stream)):
                pts.append(frame.pts if frame.pts is not None else i)
        except av.error.FFmpegError as exc:
            raise MediaDecodeError(
                f"{_label(role, path)}: truncated or corrupt at frame {len(pts)} ({_short(exc)})"
            ) from exc
    if not pts:
        raise MediaDecodeError(f"{_label(role, path)}: video stream has no frames")
    arr = np.asarray(pts, dtype=np.int64)
    if np.any(np.diff(arr) <= 0):
        # Timestamps guessed by the decoder are unusable: fall back to frame indices at the
        # stream's rate so that timing stays monotonic.
        rate = Fraction(_nominal_rate_of_path(path, role))
        arr = np.arange(len(pts), dtype=np.int64)
        return _Scan(arr, 1 / rate, 0, retimed=f"timestamps: not increasing in the file, re-timed at {float(rate):g} fps (its nominal rate)")
    return _Scan(arr, Fraction(time_base), 0)


def _nominal_rate_of_path(path: Path, role: str) -> Fraction:
    with open_input(path, role) as container:
        return _nominal_rate(video_stream(container, path, role))


def _nominal_rate(stream: av.VideoStream) -> Fraction:
    for rate in (stream.guessed_rate, stream.average_rate, stream.base_rate):
        if rate:
            return Fraction(rate)
    return Fraction(25)


def _deltas(pts: np.ndarray) -> np.ndarray:
    return np.diff(pts) if len(pts) > 1 else np.zeros(0, dtype=np.int64)


def _is_variable(pts: np.ndarray) -> bool:
    """Timestamps quantised to the time base jitter by one tick at most; more is a VFR plate."""
    d = _deltas(pts)
    return bool(len(d) and int(d.max()) - int(d.min()) > 1)


def _duration_ticks(scan: _Scan) -> int:
    d = _deltas(scan.pts)
    last = scan.last_duration or (int(np.median(d)) if len(d) else 0)
    return int(scan.pts[-1] - scan.pts[0]) + last


def read_timing(path: Path, *, role: str = "plate") -> tuple[np.ndarray, Fraction]:
    """The pts of every video frame (int64, presentation order) and the stream's time base.

    ``pts[i] * time_base`` is the presentation time in seconds of frame ``i`` as decoded. A
    plate whose frames all carry the same timestamp is re-timed from its nominal rate
    (:func:`timing_note` says so).
    """
    path = Path(path)
    with open_input(path, role) as container:
        stream = video_stream(container, path, role)
        scan = _scan_packets(container, stream, path, role)
    return scan.pts, scan.time_base


def timing_note(path: Path, *, role: str = "plate") -> str | None:
    """Why recast does not use the file's own frame timestamps (None when it does): a plate whose
    frames all carry one timestamp is re-timed from its nominal rate (see :func:`read_timing`)."""
    path = Path(path)
    with open_input(path, role) as container:
        stream = video_stream(container, path, role)
        return _scan_packets(container, stream, path, role).retimed


def _timecode(container: av.container.InputContainer) -> str | None:
    # mov/mp4 keep it on a tmcd data stream, mxf/mkv on the container or the video stream.
    for meta in [container.metadata, *(s.metadata for s in container.streams)]:
        tc = meta.get("timecode")
        if tc:
            return str(tc)
    return None


def _audio_infos(container: av.container.InputContainer) -> tuple[AudioStreamInfo, ...]:
    infos = []
    for a in container.streams.audio:
        ctx = a.codec_context
        infos.append(
            AudioStreamInfo(
                index=a.index,
                codec=ctx.name if ctx is not None else "unknown",
                sample_rate=(ctx.sample_rate or None) if ctx is not None else None,
                channels=(ctx.channels or None) if ctx is not None else None,
            )
        )
    return tuple(infos)


def probe_media(path: Path, *, role: str = "input") -> MediaInfo:
    """Describe a video or still image.

    Videos: container, codec, size as shown (upright), display rotation, which video stream
    (:func:`video_stream`), pixel format, exact frame count (demuxed packets), nominal rate,
    average rate from the pts span, time base, whether the frame rate is variable, audio
    streams and timecode. Images (by suffix, or anything FFmpeg reads as a
    single still): ``kind="image"``, ``frame_count=1``.

    Raises InputNotFoundError, MediaDecodeError (not media, truncated, corrupt) or
    UnsupportedMediaError (no video stream, a display matrix that is not a quarter turn).
    """
    path = Path(path)
    check_exists(path, role)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return _probe_image(path, role)
    with open_input(path, role) as container:
        fmt = container.format.name
        if any(tag in fmt for tag in _IMAGE_DEMUXERS) and container.streams.video:
            return _probe_image(path, role)
        stream = video_stream(container, path, role)
        ctx = stream.codec_context
        if ctx is None or not stream.width or not stream.height:
            raise UnsupportedMediaError(f"{_label(role, path)}: video stream has no decodable size")
        stream_index = stream.index
        video_streams = len(_video_candidates(container))
        scan = _scan_packets(container, stream, path, role)
        audio = _audio_infos(container)
        timecode = _timecode(container)
        nominal = _nominal_rate(stream)
        width, height = stream.width, stream.height
        codec = ctx.name
        pix_fmt = stream.format.name if stream.format is not None else None

    orientation = read_orientation(path, role)
    width, height = orientation.upright_size(width, height)
    count = len(scan.pts)
    ticks = _duration_ticks(scan)
    avg = nominal
    if ticks > 0:
        avg = (Fraction(count) / (ticks * scan.time_base)).limit_denominator(_AVG_RATE_MAX_DEN)
    return MediaInfo(
        kind="video",
        container=fmt,
        codec=codec,
        width=width,
        height=height,
        rotation=orientation.rotation,
        mirrored=orientation.mirrored,
        stream_index=stream_index,
        video_streams=video_streams,
        pix_fmt=pix_fmt,
        frame_count=count,
        rate=Rate.of(nominal),
        avg_rate=Rate.of(avg),
        time_base=Rate.of(scan.time_base),
        variable_frame_rate=_is_variable(scan.pts),
        audio=audio,
        timecode=timecode,
    )


_PIL_PIX_FMT = {"L": "gray", "LA": "ya8", "RGB": "rgb24", "RGBA": "rgba", "P": "pal8", "CMYK": "cmyk", "I;16": "gray16"}


def _probe_image(path: Path, role: str) -> MediaInfo:
    from recast.media.image import open_pil

    with open_pil(path, role) as img:
        fmt = (img.format or path.suffix.lstrip(".")).lower()
        width, height = img.size
        mode = img.mode
        orientation = img.getexif().get(0x0112, 1)
    if orientation in (5, 6, 7, 8):
        # EXIF says the stored pixels are rotated a quarter turn: report the size as displayed.
        width, height = height, width
    return MediaInfo(
        kind="image",
        container=fmt,
        codec=fmt,
        width=width,
        height=height,
        pix_fmt=_PIL_PIX_FMT.get(mode, mode.lower()),
        frame_count=1,
    )
