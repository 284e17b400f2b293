"""Still images: read as RGB uint8 the way a viewer shows them, write PNG."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from recast.errors import InputNotFoundError, MediaDecodeError, UnsupportedMediaError


#: the PIL formats recast reads (what Pillow itself decodes; not formats a plugin may add)
READ_FORMATS = frozenset({"JPEG", "MPO", "PNG", "TIFF", "BMP", "WEBP", "GIF", "PPM", "TGA", "JPEG2000"})


def _label(role: str, path: Path) -> str:
    return f"{role} '{path}'"


@contextmanager
def open_pil(path: Path, role: str = "source") -> Iterator[Image.Image]:
    """Open an image with PIL, translating PIL/OS errors into recast errors."""
    path = Path(path)
    if not path.exists():
        raise InputNotFoundError(f"{_label(role, path)}: file not found")
    if not path.is_file():
        raise InputNotFoundError(f"{_label(role, path)}: not a file")
    try:
        img = Image.open(path)
    except UnidentifiedImageError as exc:
        raise MediaDecodeError(f"{_label(role, path)}: not a readable image file (unknown format)") from exc
    except (OSError, ValueError) as exc:
        raise MediaDecodeError(f"{_label(role, path)}: not a readable image file ({exc})") from exc
    if img.format not in READ_FORMATS:
        # a plugin another library registered (imageio registers pillow-heif's HEIF and AVIF
        # openers when it is installed) must not change what recast reads from one run to the next
        fmt = img.format
        img.close()
        raise UnsupportedMediaError(f"{_label(role, path)}: {fmt} images are not read; convert it to PNG, JPEG or TIFF")
    try:
        yield img
    finally:
        img.close()


def read_image(path: Path, *, role: str = "source") -> np.ndarray:
    """Read an image as an (H, W, 3) uint8 RGB array.

    EXIF orientation is applied, so the array is upright as photographed; transparency is
    composited on white (a cut-out portrait on black would read as a dark halo); grayscale,
    palette and 16-bit images are converted to 8-bit RGB. Only the first frame of
    multi-frame files is read.
    """
    path = Path(path)
    with open_pil(path, role) as img:
        try:
            img.load()
            img = ImageOps.exif_transpose(img)
            rgb = _to_rgb(img)
        except (OSError, ValueError, SyntaxError) as exc:
            # PIL reports a cut or damaged file only once it decodes the pixels.
            raise MediaDecodeError(f"{_label(role, path)}: truncated or corrupt image ({exc})") from exc
    arr = np.asarray(rgb, dtype=np.uint8)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.size == 0:
        raise UnsupportedMediaError(f"{_label(role, path)}: unsupported image layout {arr.shape}")
    return np.ascontiguousarray(arr)


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # PIL cannot convert 16-bit grayscale straight to RGB without clipping: scale first.
        arr = np.asarray(img, dtype=np.uint32)
        arr8 = (arr >> 8).astype(np.uint8) if arr.max() > 255 else arr.astype(np.uint8)
        return Image.fromarray(arr8, "L").convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, img).convert("RGB")
    return img.convert("RGB")


def write_png(path: Path, rgb: np.ndarray) -> None:
    """Write an (H, W, 3) uint8 RGB array (or (H, W) grayscale) as PNG."""
    arr = np.asarray(rgb)
    if arr.dtype != np.uint8 or arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
        raise ValueError(f"write_png wants uint8 (H,W), (H,W,3) or (H,W,4), got {arr.dtype} {arr.shape}")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(arr)).save(path, format="PNG")
