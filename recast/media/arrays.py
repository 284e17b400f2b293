"""Compact storage of per-frame arrays (landmarks, masks) as compressed npz files."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def pack_masks(masks: np.ndarray) -> dict[str, np.ndarray]:
    """A boolean (or 0/nonzero) array of any shape as packed bits plus its shape: 8x smaller
    before compression, and masks are most of what the stages store."""
    m = np.asarray(masks)
    m = m if m.dtype == bool else m > 0
    return {"bits": np.packbits(m.reshape(-1)), "shape": np.asarray(m.shape, dtype=np.int64)}


def unpack_masks(bits: np.ndarray, shape: np.ndarray) -> np.ndarray:
    """The boolean array :func:`pack_masks` packed."""
    dims = tuple(int(x) for x in np.asarray(shape).reshape(-1))
    count = int(np.prod(dims, dtype=np.int64))
    return np.unpackbits(np.asarray(bits, np.uint8), count=count).astype(bool).reshape(dims)


def save_npz(path: Path, **arrays: np.ndarray) -> Path:
    np.savez_compressed(path, **arrays)
    # np.savez_compressed appends .npz when the name lacks it
    path = Path(path)
    return path if path.suffix == ".npz" else path.with_name(path.name + ".npz")


def load_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}
