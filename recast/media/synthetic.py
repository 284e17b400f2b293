"""A synthetic plate: a still photo filmed by a virtual camera (pan, zoom, slight roll).

Used by ``recast demo`` so the repository ships no footage of its own: the still comes from a
public-domain image inside a package recast already depends on.
"""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np


def camera_move_frames(still_rgb: np.ndarray, *, size: int = 512, frames: int = 75) -> np.ndarray:
    """Frames (N,size,size,3) of a slow push-in with a pan and a gentle roll over ``still_rgb``."""
    h, w = still_rgb.shape[:2]
    base = min(h, w)
    cx0, cy0 = w / 2.0, h * 0.42  # portraits put the face above the centre
    out = np.empty((frames, size, size, 3), dtype=np.uint8)
    for i in range(frames):
        t = i / max(1, frames - 1)
        ease = 0.5 - 0.5 * math.cos(math.pi * t)
        crop = base * (0.95 - 0.2 * ease)
        cx = cx0 + base * 0.04 * math.sin(2 * math.pi * t)
        cy = cy0 + base * 0.02 * ease
        angle = 3.0 * math.sin(math.pi * t)
        scale = size / crop
        m = cv2.getRotationMatrix2D((cx, cy), angle, scale)
        m[0, 2] += size / 2.0 - cx
        m[1, 2] += size / 2.0 - cy
        out[i] = cv2.warpAffine(still_rgb, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    return out


def write_h264(frames: np.ndarray, path: Path, rate: Fraction = Fraction(25), crf: int = 18) -> Path:
    """Encode RGB frames as an H.264 mp4 that opens in any player."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", options={"movflags": "+faststart"}) as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf), "preset": "veryfast"}
        for i, f in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(f, format="rgb24")
            frame.pts, frame.time_base = i, 1 / Fraction(rate)  # without a pts every frame is stamped 0
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def first_frames(src: Path, count: int, out: Path, *, crf: int = 18) -> Path:
    """The first ``count`` frames of a clip, re-encoded (H.264), with its audio up to that point
    (short plates for tests and benchmarks)."""
    with av.open(str(src)) as inp, av.open(str(out), "w") as outp:
        vin = inp.streams.video[0]
        ain = inp.streams.audio[0] if inp.streams.audio else None
        vout = outp.add_stream("libx264", rate=vin.average_rate)
        vout.width, vout.height, vout.pix_fmt = vin.width, vin.height, "yuv420p"
        vout.options = {"crf": str(crf), "preset": "veryfast"}
        aout = outp.add_stream("aac", rate=ain.rate) if ain is not None else None
        n = 0
        for frame in inp.decode(video=0):
            if n >= count:
                break
            # frame n at n / rate: the source's own stamps would be off after a cut, and no stamp
            # at all gives every frame 0
            frame.pts, frame.time_base = n, 1 / Fraction(vin.average_rate)
            for p in vout.encode(frame):
                outp.mux(p)
            n += 1
        for p in vout.encode():
            outp.mux(p)
        if aout is not None:
            inp.seek(0)
            limit = Fraction(count) / Fraction(vin.average_rate)
            for af in inp.decode(audio=0):
                if af.time is not None and af.time > limit:
                    break
                af.pts = None
                for p in aout.encode(af):
                    outp.mux(p)
            for p in aout.encode():
                outp.mux(p)
    return out
