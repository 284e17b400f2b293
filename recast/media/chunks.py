"""Plate chunks as lossless, intra-only intermediates (FFV1 in Matroska, 8-bit RGB).

Chunks are decoded from the plate once, at ingest; every later stage opens only its own
chunk file. FFV1 stores the decoded RGB exactly, so what segment, swap and render see is
bit-identical to the plate as decoded, and every frame is a keyframe.

FFmpeg's FFV1 encoder takes 8-bit RGB only as packed ``bgr0`` (it has no 8-bit ``gbrp``;
planar RGB starts at 9 bits). It codes it as RGB with a reversible colour transform, so it is
as lossless as planar RGB would be; the rgb24 <-> bgr0 repacking is an exact byte shuffle.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import av
import numpy as np

from recast.contracts import FrameRange, Rate
from recast.errors import MediaDecodeError, UnsupportedMediaError
from recast.media.orientation import UPRIGHT, Orientation, OrientationError, frame_orientation, to_upright
from recast.media.probe import _label, _short, open_input, probe_media, video_stream

Progress = Callable[[int, int], None]

LOSSLESS_CODEC = "ffv1"
LOSSLESS_PIX_FMT = "bgr0"
LOSSLESS_SUFFIX = ".mkv"

# Report progress about once per this many frames: often enough for a progress bar, rarely
# enough that a slow callback (a database write, a Prefect artifact) costs nothing.
_PROGRESS_EVERY = 24


def _as_fraction(rate: Fraction | Rate | int | str) -> Fraction:
    return rate.fraction if isinstance(rate, Rate) else Fraction(rate)


def _encoder_threads() -> int:
    # FFV1 parallelises over slices; more threads than cores only adds contention.
    return max(1, min(4, os.cpu_count() or 1))


class LosslessWriter:
    """Append RGB frames to an FFV1/mkv file; frame ``i`` gets pts ``i`` at ``1/rate``.

    Use as a context manager; ``count`` is the number of frames written so far.
    """

    def __init__(self, path: Path, rate: Fraction | Rate, width: int, height: int) -> None:
        self.path = Path(path)
        self.width, self.height = int(width), int(height)
        rate_f = _as_fraction(rate)
        # bitexact: no random segment UID, no muxing date, no library version string, so the
        # same frames always make the same bytes and land on the same content-addressed key
        self._container = av.open(str(self.path), "w", format="matroska", options={"fflags": "+bitexact"})
        try:
            stream = self._container.add_stream(LOSSLESS_CODEC, rate=rate_f)
            stream.width, stream.height = self.width, self.height
            stream.pix_fmt = LOSSLESS_PIX_FMT
            stream.codec_context.time_base = 1 / rate_f
            stream.codec_context.thread_count = _encoder_threads()
            # FFV1 carries its coder state from one frame to the next until the next keyframe;
            # a keyframe every frame makes each frame decodable on its own (seekable chunks).
            stream.codec_context.gop_size = 1
            # Level 3 allows slices (threads) and per-slice CRCs, so a damaged chunk is detected.
            stream.codec_context.options = {"level": "3", "slicecrc": "1"}
            stream.codec_context.flags |= av.codec.context.Flags.bitexact
        except Exception:
            self._container.close()
            raise
        self._stream = stream
        self.count = 0

    def write(self, rgb: np.ndarray) -> None:
        """Encode one (H, W, 3) uint8 RGB frame."""
        if rgb.shape != (self.height, self.width, 3) or rgb.dtype != np.uint8:
            raise ValueError(
                f"frame {self.count} for {self.path.name}: expected uint8 {(self.height, self.width, 3)}, "
                f"got {rgb.dtype} {rgb.shape}"
            )
        # rgb24 -> bgr0 is a byte repack in swscale (no colour matrix), hence exact.
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24").reformat(
            format=LOSSLESS_PIX_FMT
        )
        frame.pts = self.count
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.count += 1

    def close(self) -> None:
        if self._container is None:
            return
        try:
            for packet in self._stream.encode(None):
                self._container.mux(packet)
        finally:
            self._container.close()
            self._container = None

    def abort(self) -> None:
        """Close without flushing and delete the partial file."""
        if self._container is not None:
            try:
                self._container.close()
            except av.error.FFmpegError:
                pass
            self._container = None
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> "LosslessWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_lossless(path: Path, frames: Iterable[np.ndarray], rate: Fraction | Rate) -> int:
    """Write RGB uint8 frames as FFV1/mkv (``bgr0``, frame i at pts i); return the frame count.

    The round trip through :func:`read_frames` is bit-exact. On error the file is removed.
    """
    it = iter(frames)
    try:
        first = next(it)
    except StopIteration:
        raise ValueError(f"write_lossless {path}: no frames") from None
    height, width = first.shape[:2]
    with LosslessWriter(path, rate, width, height) as writer:
        writer.write(first)
        for rgb in it:
            writer.write(rgb)
    return writer.count


# swscale flags for YUV <-> RGB: bilinear + accurate rounding + full chroma interpolation.
# swscale's default fast path decodes about one code value too dark on every channel; these
# flags remove that bias (mean error of a 4:2:0 round trip 1.2 -> 0.4) for ~3 ms per 720p frame.
SWS_ACCURATE = 0x2 | 0x40000 | 0x2000 | 0x4000  # BILINEAR | ACCURATE_RND | FULL_CHR_H_INT | FULL_CHR_H_INP


def _frame_to_rgb(frame: av.VideoFrame) -> np.ndarray:
    if frame.format.name == LOSSLESS_PIX_FMT:
        return frame.to_ndarray(format="rgb24")  # byte repack, exact
    # YUV: PyAV converts with the frame's own matrix and range tags (BT.601 when untagged);
    # render encodes with the same tags so colours survive the round trip.
    return frame.to_ndarray(format="rgb24", interpolation=SWS_ACCURATE)


def _orientation(frame: av.VideoFrame, path: Path, role: str) -> Orientation:
    try:
        return frame_orientation(frame)
    except OrientationError as exc:
        raise UnsupportedMediaError(f"{_label(role, path)}: {exc}") from exc


def read_frames(path: Path, *, role: str = "chunk", upright: bool = True) -> Iterator[np.ndarray]:
    """Decode a video (an FFV1 chunk or any plate) as (H, W, 3) uint8 RGB frames, in order.

    ``upright``: as shown, turned by the video's display matrix (a phone clip's sideways pixels
    come out the right way up); chunks carry none, so theirs come out as stored either way.
    """
    path = Path(path)
    with open_input(path, role) as container:
        stream = video_stream(container, path, role)
        stream.thread_type = "AUTO"
        n = 0
        orientation: Orientation | None = None if upright else UPRIGHT
        try:
            for frame in container.decode(stream):
                if orientation is None:
                    orientation = _orientation(frame, path, role)  # the track's: the same on every frame
                yield to_upright(_frame_to_rgb(frame), orientation)
                n += 1
        except av.error.FFmpegError as exc:
            raise MediaDecodeError(
                f"{_label(role, path)}: truncated or corrupt at frame {n} ({_short(exc)})"
            ) from exc


def read_frames_at(path: Path, indices: Iterable[int], *, role: str = "chunk") -> dict[int, np.ndarray]:
    """Decode only the frames ``indices`` (0-based, within the file) of an intra-only chunk, upright.

    Every frame of a chunk is a keyframe, so each wanted frame costs one seek and one decode,
    not the decode of everything before it (QC embeds a dozen frames of a shot; decoding whole
    FFV1 chunks for them cost more than the embeddings). Indices past the end are left out.
    """
    path = Path(path)
    wanted = sorted({int(i) for i in indices if int(i) >= 0})
    out: dict[int, np.ndarray] = {}
    if not wanted:
        return out
    with open_input(path, role) as container:
        stream = video_stream(container, path, role)
        tb = stream.time_base
        rate = stream.average_rate or stream.base_rate or stream.guessed_rate
        if tb is None or not rate:
            raise MediaDecodeError(f"{_label(role, path)}: no time base or frame rate to seek by")
        first_pts = stream.start_time or 0
        try:
            for target in wanted:
                if target in out:
                    continue
                container.seek(first_pts + int(Fraction(target) / Fraction(rate) / tb), stream=stream, backward=True)
                for frame in container.decode(stream):
                    index = round((frame.pts - first_pts) * tb * Fraction(rate)) if frame.pts is not None else -1
                    if index in wanted and index not in out:
                        out[index] = to_upright(_frame_to_rgb(frame), _orientation(frame, path, role))
                    if index >= target:
                        break
        except av.error.FFmpegError as exc:
            raise MediaDecodeError(f"{_label(role, path)}: truncated or corrupt near frame {target} ({_short(exc)})") from exc
    return out


def read_frames_in_chunks(chunks: Sequence[tuple[int, Path]], frames: Iterable[int], *, threads: int = 1) -> dict[int, np.ndarray]:
    """Shot frames ``frames`` from a shot cut into chunks (``(first frame, path)`` in shot order),
    each decoded by seeking (:func:`read_frames_at`); chunks on up to ``threads`` threads
    (decoding releases the GIL). Frames past the last chunk's end are left out."""
    want = sorted({int(f) for f in frames})
    starts = [int(c[0]) for c in chunks]

    def one(k: int) -> dict[int, np.ndarray]:
        start, end = starts[k], starts[k + 1] if k + 1 < len(starts) else None
        mine = [f - start for f in want if f >= start and (end is None or f < end)]
        return {start + i: frame for i, frame in read_frames_at(chunks[k][1], mine).items()} if mine else {}

    out: dict[int, np.ndarray] = {}
    if threads > 1 and len(chunks) > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="chunk-frames") as pool:
            for part in pool.map(one, range(len(chunks))):
                out.update(part)
    else:
        for k in range(len(chunks)):
            out.update(one(k))
    return out


def read_all_frames(path: Path, *, role: str = "chunk") -> np.ndarray:
    """All frames of a video as one (N, H, W, 3) uint8 array (for chunks: small by design)."""
    frames = list(read_frames(path, role=role))
    if not frames:
        raise MediaDecodeError(f"{_label(role, Path(path))}: video stream has no frames")
    return np.stack(frames)


def chunk_ranges(frame_count: int, chunk_size: int, rate: Fraction | Rate) -> list[FrameRange]:
    """The frame ranges of ``frame_count`` frames cut every ``chunk_size`` frames."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    r = Rate.of(_as_fraction(rate))
    return [
        FrameRange(start=s, end=min(s + chunk_size, frame_count), rate=r)
        for s in range(0, frame_count, chunk_size)
    ]


def chunk_filename(index: int) -> str:
    return f"chunk_{index:05d}{LOSSLESS_SUFFIX}"


def split_plate(
    path: Path,
    chunk_size: int,
    out_dir: Path,
    *,
    role: str = "plate",
    progress: Progress | None = None,
) -> list[tuple[FrameRange, Path]]:
    """Decode the plate once and write it as FFV1/mkv chunks of ``chunk_size`` frames, upright.

    Frames go into the chunks as shown (the plate's display matrix applied: a phone clip's
    sideways pixels are turned the right way up), so every later stage sees faces upright;
    render turns them back to the plate's stored orientation.

    Returns ``(FrameRange, path)`` per chunk, in order; ranges carry the plate's nominal rate.
    Chunk files are named ``chunk_00000.mkv``... in ``out_dir`` (created if needed). The
    decoded frame count must match the probed count, otherwise MediaDecodeError says where
    the plate is truncated or corrupt (and the chunks written are removed).
    """
    path, out_dir = Path(path), Path(out_dir)
    info = probe_media(path, role=role)
    if info.kind != "video":
        raise UnsupportedMediaError(f"{_label(role, path)}: is a still image, a plate must be a video")
    total = info.frame_count
    ranges = chunk_ranges(total, chunk_size, info.rate)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[tuple[FrameRange, Path]] = []
    writer: LosslessWriter | None = None
    orientation: Orientation | None = None
    decoded = 0
    try:
        with open_input(path, role) as container:
            stream = video_stream(container, path, role)
            stream.thread_type = "AUTO"
            try:
                for frame in container.decode(stream):
                    if decoded >= total:
                        raise MediaDecodeError(
                            f"{_label(role, path)}: decodes more frames than its {total} packets; corrupt"
                        )
                    if orientation is None:
                        orientation = _orientation(frame, path, role)
                    rgb = to_upright(_frame_to_rgb(frame), orientation)
                    if writer is None:
                        idx = len(written)
                        writer = LosslessWriter(out_dir / chunk_filename(idx), info.rate, rgb.shape[1], rgb.shape[0])
                        written.append((ranges[idx], writer.path))
                    writer.write(rgb)
                    decoded += 1
                    if writer.count == ranges[len(written) - 1].count:
                        writer.close()
                        writer = None
                    if progress is not None and (decoded % _PROGRESS_EVERY == 0 or decoded == total):
                        progress(decoded, total)
            except av.error.FFmpegError as exc:
                raise MediaDecodeError(
                    f"{_label(role, path)}: truncated or corrupt at frame {decoded} of {total} ({_short(exc)})"
                ) from exc
        if decoded != total:
            raise MediaDecodeError(
                f"{_label(role, path)}: truncated or corrupt at frame {decoded}: "
                f"decoding stopped after {decoded} of {total} frames"
            )
    except BaseException:
        if writer is not None:
            writer.abort()
        for _, p in written:
            p.unlink(missing_ok=True)
        raise
    return written
