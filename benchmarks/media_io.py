"""Throughput of recast.media on real clips: plate decode, FFV1 write/read, H.264 render.

    python benchmarks/media_io.py [--frames 120] [--media ../shared/media]

Prints frames per second for each step at 512x512 and 1280x720. Numbers depend on the
cores free at the time; run it on an idle machine for figures worth quoting.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from recast.media import probe_media, read_frames, render_h264, write_lossless
from recast.media.chunks import LosslessWriter

CLIPS = {"512x512": "liveportrait_d0.mp4", "1280x720": "liveportrait_s18.mp4"}


def _fps(n: int, seconds: float) -> str:
    return f"{n / seconds:7.1f} fps"


def bench(plate: Path, max_frames: int, work: Path) -> None:
    info = probe_media(plate, role="plate")
    t = time.perf_counter()
    frames = []
    for rgb in read_frames(plate, role="plate"):
        frames.append(rgb)
        if len(frames) == max_frames:
            break
    decode_s = time.perf_counter() - t
    n = len(frames)
    print(f"  decode H.264 -> RGB      {_fps(n, decode_s)}  ({n} frames)")

    chunk = work / "chunk.mkv"
    t = time.perf_counter()
    with LosslessWriter(chunk, info.rate, info.width, info.height) as w:
        for rgb in frames:
            w.write(rgb)
    write_s = time.perf_counter() - t
    mb_per_frame = chunk.stat().st_size / n / 1e6
    print(f"  FFV1 write (RGB)         {_fps(n, write_s)}  ({mb_per_frame:.2f} MB/frame)")

    t = time.perf_counter()
    back = sum(1 for _ in read_frames(chunk))
    print(f"  FFV1 read -> RGB         {_fps(back, time.perf_counter() - t)}")

    # render_h264 needs the plate's full frame count: pad the chunk list with the rest.
    rest = info.frame_count - n
    chunks = [chunk]
    if rest:
        tail = work / "tail.mkv"
        write_lossless(tail, (frames[i % n] for i in range(rest)), info.rate)
        chunks.append(tail)
    t = time.perf_counter()
    out = render_h264(chunks, plate, work / "out.mp4", crf=16, preset="veryfast")
    render_s = time.perf_counter() - t
    print(f"  render H.264 (veryfast)  {_fps(out.frames, render_s)}  "
          f"(FFV1 read + RGB->yuv420p + x264 crf16 + mux, {out.frames} frames)")


def main() -> None:
    default_media = Path(__file__).resolve().parents[1].parent / "shared" / "media"
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=120, help="frames to decode and write per clip")
    ap.add_argument("--media", type=Path, default=Path(os.environ.get("RECAST_TEST_MEDIA", default_media)))
    args = ap.parse_args()
    print(f"cpus: {os.cpu_count()}, numpy {np.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        for label, name in CLIPS.items():
            print(f"{label}  {name}")
            bench(args.media / "videos" / name, args.frames, Path(tmp))


if __name__ == "__main__":
    main()
