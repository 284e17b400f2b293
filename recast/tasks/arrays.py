"""Compact storage of per-frame arrays (landmarks, masks) as compressed npz files."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def pack_masks(masks: np.ndarray) -> dict[str, np.ndarray]:
    """Bool/uint8 masks (N,H,W) as packed bits plus their shape (8x smaller before compression)."""
    m = np.asarray(masks) > 0 if masks.dtype != bool else masks
    return {"bits": np.packbits(m, axis=-1), "shape": np.asarray(m.shape, dtype=np.int64)}


def unpack_masks(bits: np.ndarray, shape: np.ndarray) -> np.ndarray:
    n, h, w = (int(x) for x in shape)
    return np.unpackbits(bits, axis=-1, count=w).astype(bool).reshape(n, h, w)


def save_npz(path: Path, **arrays: np.ndarray) -> Path:
    np.savez_compressed(path, **arrays)
    # np.savez_compressed appends .npz when the name lacks it
    return path if path.suffix == ".npz" else path.with_name(path.name + ".npz")


def load_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}
