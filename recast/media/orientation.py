"""How a video's stored pixels are meant to be shown: the display matrix, as quarter turns and mirrors.

Phones store their pixels as the sensor reads them (landscape) and tag the track with a display
matrix ("rotate a quarter turn clockwise to show"). recast works on upright frames (what a viewer
sees: faces the right way up for the landmark and swap models) and delivers pixels in the plate's
own stored orientation with the plate's own matrix, so pixels it did not touch stay the plate's.

The matrix is FFmpeg's ``AV_PKT_DATA_DISPLAYMATRIX`` (also what mp4/mov ``tkhd`` and Matroska
carry): nine int32, ``[a b u; c d v; x y w]``, a point ``(p, q)`` of the stored picture (column,
row; rows go down) is shown at ``(a*p + c*q + x, b*p + d*q + y)``. a, b, c, d are 16.16 fixed
point. Only quarter turns and mirrors are images of the pixel grid; other angles are refused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import av
import numpy as np

_ONE = 1 << 16  # 1.0 in the matrix's 16.16 fixed point
_IDENTITY = (_ONE, 0, 0, 0, _ONE, 0, 0, 0, 1 << 30)

try:  # the frame side-data type key (PyAV >= 13)
    from av.sidedata.sidedata import Type as _SideDataType

    _DISPLAYMATRIX = _SideDataType.DISPLAYMATRIX
except (ImportError, AttributeError):  # pragma: no cover - older PyAV has no frame side data API
    _DISPLAYMATRIX = None


class OrientationError(ValueError):
    """A display matrix that is not a quarter turn or mirror of the pixel grid."""


@dataclass(frozen=True)
class Orientation:
    """Stored -> upright: transpose the picture, then flip its rows, then flip its columns.

    Every one of the eight quarter-turn/mirror orientations is exactly one such combination;
    ``matrix`` is the display matrix it came from (None: untagged, shown as stored).
    """

    transpose: bool = False
    flip_rows: bool = False  # upside down: the first stored row is shown at the bottom
    flip_cols: bool = False  # mirrored left-right (after the transpose)
    matrix: tuple[int, ...] | None = None

    @property
    def is_identity(self) -> bool:
        return not (self.transpose or self.flip_rows or self.flip_cols)

    @property
    def mirrored(self) -> bool:
        """True when showing the picture needs a mirror (the matrix's determinant is negative)."""
        # a transpose is a mirror; each flip is one more
        return (int(self.transpose) + int(self.flip_rows) + int(self.flip_cols)) % 2 == 1

    @property
    def rotation(self) -> int:
        """Degrees counter-clockwise, 0, 90, 180 or -90, with a left-right mirror after it when
        :attr:`mirrored`: what ``VideoStream.set_display_rotation(rotation, hflip=mirrored)``
        writes. Without a mirror this is what FFmpeg reports ("rotation of -90.00 degrees" for a
        phone held upright)."""
        for turn in (0, 90, 180, -90):
            o = orientation_from(turn, mirrored=self.mirrored)
            if (o.transpose, o.flip_rows, o.flip_cols) == (self.transpose, self.flip_rows, self.flip_cols):
                return turn
        raise AssertionError(f"no quarter turn gives {self}")  # the eight cases are all covered

    def upright_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) of the upright picture of a stored ``width`` x ``height`` one."""
        return (height, width) if self.transpose else (width, height)

    def stored_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) of the stored picture whose upright picture is ``width`` x ``height``."""
        return (height, width) if self.transpose else (width, height)

    def describe(self) -> str:
        """``rotated -90°``, ``rotated 180°, mirrored``, ``upright``: for progress lines."""
        if self.is_identity:
            return "upright"
        parts = [f"rotated {self.rotation}°"] if self.rotation else []
        if self.mirrored:
            parts.append("mirrored")
        return ", ".join(parts)


UPRIGHT = Orientation()


def parse_display_matrix(values: Sequence[int]) -> Orientation:
    """The orientation a display matrix (nine ints, FFmpeg's layout) describes.

    Raises OrientationError for a matrix that is not a quarter turn or mirror (an arbitrary
    angle, a shear, a zero scale): those cannot be undone on the pixel grid without resampling.
    """
    m = tuple(int(v) for v in values)
    if len(m) != 9:
        raise OrientationError(f"display matrix has {len(m)} values, expected 9")
    a, b, c, d = m[0], m[1], m[3], m[4]
    if a == 0 and d == 0 and b != 0 and c != 0:
        # (p, q) -> (c*q, b*p): the stored column p becomes the shown row: a transpose
        o = Orientation(transpose=True, flip_rows=b < 0, flip_cols=c < 0, matrix=m)
    elif b == 0 and c == 0 and a != 0 and d != 0:
        o = Orientation(transpose=False, flip_rows=d < 0, flip_cols=a < 0, matrix=m)
    else:
        angle = -math.degrees(math.atan2(b, a)) if (a or b) else float("nan")
        raise OrientationError(
            f"display matrix {list(m[:2]) + list(m[3:5])} is not a quarter turn or mirror "
            f"(rotation {angle:.1f}°); only 0, 90, 180 and 270 degrees, optionally mirrored, are supported"
        )
    if o.is_identity:
        return UPRIGHT
    return o


def frame_orientation(frame: av.VideoFrame) -> Orientation:
    """The orientation a decoded frame carries (decoders attach the track's display matrix to
    every frame, and H.264/HEVC display-orientation SEI too); UPRIGHT when untagged."""
    if _DISPLAYMATRIX is None:
        return UPRIGHT
    data = frame.side_data.get(_DISPLAYMATRIX)
    if data is None:
        return UPRIGHT
    raw = bytes(data)
    if len(raw) < 36:
        raise OrientationError(f"display matrix side data has {len(raw)} bytes, expected 36")
    return parse_display_matrix(np.frombuffer(raw[:36], dtype="<i4").tolist())


def to_upright(image: np.ndarray, orientation: Orientation) -> np.ndarray:
    """The picture as shown, from the stored picture ((H, W, ...) array). Exact (no resampling);
    returns a contiguous array (a view would cost every later consumer a strided copy)."""
    if orientation.is_identity:
        return image
    out = image
    if orientation.transpose:
        out = np.swapaxes(out, 0, 1)
    if orientation.flip_rows:
        out = out[::-1]
    if orientation.flip_cols:
        out = out[:, ::-1]
    return np.ascontiguousarray(out)


def to_stored(image: np.ndarray, orientation: Orientation) -> np.ndarray:
    """The stored picture of an upright one: the exact inverse of :func:`to_upright`."""
    if orientation.is_identity:
        return image
    out = image
    # undo in reverse order; each step is its own inverse
    if orientation.flip_cols:
        out = out[:, ::-1]
    if orientation.flip_rows:
        out = out[::-1]
    if orientation.transpose:
        out = np.swapaxes(out, 0, 1)
    return np.ascontiguousarray(out)


def tag_stream(stream: av.VideoStream, orientation: Orientation) -> None:
    """Write ``orientation``'s display matrix on an output video stream (before its first frame),
    the plate's own nine values, so players show the deliverable as they show the plate."""
    if orientation.is_identity or orientation.matrix is None:
        return
    stream.set_display_matrix(list(orientation.matrix))


def orientation_from(rotation: int, *, mirrored: bool = False) -> Orientation:
    """The orientation FFmpeg writes for ``rotation`` degrees counter-clockwise (then a left-right
    mirror when ``mirrored``): what ``VideoStream.set_display_rotation`` stores. For tests and
    synthetic plates."""
    if rotation % 90:
        raise OrientationError(f"rotation {rotation}°: only quarter turns are supported")
    theta = math.radians(rotation)
    cos, sin = round(math.cos(theta)), round(math.sin(theta))
    # av_display_rotation_set() takes the angle clockwise: PyAV passes -rotation, giving [cos -sin; sin cos]
    m = [cos * _ONE, -sin * _ONE, 0, sin * _ONE, cos * _ONE, 0, 0, 0, 1 << 30]
    if mirrored:  # av_display_matrix_flip(hflip): negate the first column
        m[0], m[3] = -m[0], -m[3]
    return parse_display_matrix(m)


def upright_rgb(frame: av.VideoFrame) -> np.ndarray:
    """A decoded frame as an upright (H, W, 3) uint8 RGB array; a matrix that is not a quarter
    turn leaves it as stored (for readers that must not fail on such a file, e.g. verify)."""
    rgb = frame.to_ndarray(format="rgb24")
    try:
        return to_upright(rgb, frame_orientation(frame))
    except OrientationError:
        return rgb
