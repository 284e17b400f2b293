"""The one file format of typed stage artefacts: a compressed npz tagged with its kind and version.

:class:`Artifact` is the save/load every artefact class shares, those of
:mod:`recast.media.artifacts` and :class:`recast.models.qc_frames.ChunkObservations` alike. It
sits here, beside ``contracts`` and ``errors``, rather than in ``media/``, because ``models/``
defines an artefact too and ``models/`` and ``media/`` do not import each other.

Every file carries its kind (the class name) and the class's ``FORMAT_VERSION``; :meth:`Artifact.load`
refuses a file of another kind or version rather than guess at its keys. Masks are boolean arrays
in memory and packed bits on disk.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import ClassVar, TypeVar

import numpy as np

from recast.errors import InputError

_KIND = "__kind__"
_FORMAT = "__format__"
_BITS = "__bits"
_SHAPE = "__shape"

A = TypeVar("A", bound="Artifact")


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


class Artifact:
    """Save/load shared by the artefact classes (dataclasses): every field an array (boolean ones
    packed); classes whose fields are not all arrays override :meth:`_encode` / :meth:`_decode`.

    Bump a class's ``FORMAT_VERSION`` when its layout or meaning changes: stages put the versions
    of what they read and write into their work keys, so cached work of the old layout is redone,
    not misread."""

    FORMAT_VERSION: ClassVar[int]

    def _encode(self) -> dict[str, np.ndarray]:
        return {f.name: getattr(self, f.name) for f in fields(self)}  # type: ignore[arg-type]

    @classmethod
    def _decode(cls: type[A], arrays: dict[str, np.ndarray]) -> A:
        return cls(**{f.name: arrays[f.name] for f in fields(cls)})  # type: ignore[arg-type]

    def save(self, path: Path) -> Path:
        """Write the artefact as a compressed npz (``.npz`` appended when missing); the path written."""
        out: dict[str, np.ndarray] = {_KIND: np.asarray(type(self).__name__), _FORMAT: np.asarray(self.FORMAT_VERSION, np.int64)}
        for name, value in self._encode().items():
            value = np.asarray(value)
            if value.dtype == bool:
                packed = pack_masks(value)
                out[name + _BITS], out[name + _SHAPE] = packed["bits"], packed["shape"]
            else:
                out[name] = value
        return save_npz(Path(path), **out)

    @classmethod
    def load(cls: type[A], path: Path) -> A:
        """Read what :meth:`save` wrote; a file of another kind or format version is refused."""
        try:
            raw = load_npz(Path(path))
        except (OSError, ValueError) as exc:
            raise InputError(f"{cls.__name__} '{path}': not a readable npz file ({exc})") from exc
        kind = str(raw[_KIND]) if _KIND in raw else None
        version = int(raw[_FORMAT]) if _FORMAT in raw else None
        if kind != cls.__name__:
            raise InputError(f"'{path}' holds {kind or 'an untyped array file'}, not a {cls.__name__}")
        if version != cls.FORMAT_VERSION:
            raise InputError(f"{cls.__name__} '{path}' has format version {version}, this recast reads version "
                             f"{cls.FORMAT_VERSION}: run the stage that wrote it again")
        arrays: dict[str, np.ndarray] = {}
        for key, value in raw.items():
            if key in (_KIND, _FORMAT) or key.endswith(_SHAPE):
                continue
            if key.endswith(_BITS):
                name = key[: -len(_BITS)]
                arrays[name] = unpack_masks(value, raw[name + _SHAPE])
            else:
                arrays[key] = value
        return cls._decode(arrays)
