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
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
