"""Disk space: what a swap will write, checked against the free space before any work starts.

A run that fills the disk halfway (SQLite, the object store and the deliverable share it) costs
the work done so far and can leave the database unwritable; a one-line refusal before the run
exists costs nothing. The estimate is deliberately on the safe side, not exact.

How the estimate is made
------------------------
Most of what a run writes is lossless FFV1 video: the plate cut into chunks (ingest), the
swapped chunks (swap) and, in head mode, the plate with the old head removed (background).
Measured on four shared clips (``liveportrait_d19`` 480x480x250, ``aniportrait_pose_ref_video``
512x512x125, ``dreamtalk_W009…`` 256x256x108, ``liveportrait_d12`` 512x512x183, 48-frame chunks),
the FFV1 chunks take 0.47 to 0.70 bytes per pixel per frame (38x to 128x the H.264 plate), so
the size of the plate file says little and its pixel count says much: each lossless copy is
counted at :data:`LOSSLESS_BYTES_PER_PIXEL` (0.75, above every clip measured). Per-frame arrays
(masks, landmarks, QC observations) are compressed ``.npz`` and counted at
:data:`ARRAYS_BYTES_PER_PIXEL`, a generous allowance rather than a measurement. The stored
plate copy is the plate's own size; the deliverable (H.264 at the render's quality) is counted as
twice the plate file with a floor per pixel, and twice again at ``--out``'s directory because the
signed file is written beside the encoded one before it is renamed into place. Ingest writes the
plate's chunks to a scratch directory under the data directory before storing them, so with a
local object store they briefly exist twice.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from recast.contracts import MediaInfo
from recast.errors import OutputPathError, ServiceUnavailableError

LOSSLESS_BYTES_PER_PIXEL = 0.75
ARRAYS_BYTES_PER_PIXEL = 0.10
DELIVERABLE_MIN_BYTES_PER_PIXEL = 0.02
SAFETY = 1.25  # on top of the estimate: Prefect's state, logs, the database
GB = 1024**3


class DataDiskFullError(ServiceUnavailableError):
    """The data directory (database, object store, scratch) has no room for a run: the
    environment's problem, not the input's (exit 6)."""


class OutputDiskFullError(OutputPathError):
    """The directory of ``--out`` has no room for the deliverable: the user's output (exit 3)."""


@dataclass(frozen=True)
class RunEstimate:
    """Bytes a run will write: in the data directory (object store and scratch) and at ``--out``."""

    data_bytes: int
    out_bytes: int


def estimate_run_bytes(info: MediaInfo, *, plate_bytes: int, mode: str = "head", local_store: bool = True) -> RunEstimate:
    """What a swap of a plate described by ``info`` (``plate_bytes`` on disk) will write.

    ``local_store`` False (an S3 object store): only the scratch copies stay on this machine.
    See the module docstring for where the factors come from.
    """
    pixels = max(int(info.width), 1) * max(int(info.height), 1) * max(int(info.frame_count), 1)
    lossless = LOSSLESS_BYTES_PER_PIXEL * pixels
    copies = 3 if mode == "head" else 2  # plate chunks, swapped chunks (+ background in head mode)
    deliverable = max(2 * plate_bytes, DELIVERABLE_MIN_BYTES_PER_PIXEL * pixels)
    scratch = lossless  # ingest's chunks before they are stored
    if local_store:
        data = plate_bytes + copies * lossless + ARRAYS_BYTES_PER_PIXEL * pixels + deliverable + scratch
    else:
        data = scratch + lossless  # scratch plus the local cache of fetched chunks
    return RunEstimate(data_bytes=int(data * SAFETY), out_bytes=int(2 * deliverable * SAFETY))


def _existing(path: Path) -> Path:
    """The nearest directory of ``path`` that exists (the data directory may not exist yet)."""
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p if p.is_dir() else p.parent


def _gb(n: float) -> str:
    if n >= 0.1 * GB:
        return f"{n / GB:.1f} GB"
    # a tiny plate's estimate is well under a megabyte: "~0 MB needed, 0 MB free" would say nothing
    return f"{n / 1024**2:.0f} MB" if n >= 1024**2 else f"{n / 1024:.0f} KB"


def check_free_space(data_dir: Path, out_path: Path | None, needed: RunEstimate, *,
                     free_bytes: Callable[[Path], int] | None = None) -> None:
    """Refuse a run whose estimate does not fit: DataDiskFullError (exit 6) for the data
    directory, OutputDiskFullError (exit 3) for ``--out``'s directory, each one line saying
    how much is needed and how much is free. When both are on one file system, their sum must fit.

    ``free_bytes`` (a path's free bytes) defaults to :func:`shutil.disk_usage`; tests pass
    their own instead of filling a disk.
    """
    free = free_bytes or (lambda p: shutil.disk_usage(p).free)
    data = _existing(data_dir)
    data_free = free(data)
    out_dir = _existing(Path(out_path).absolute().parent) if out_path is not None else None
    shared = out_dir is not None and _same_device(data, out_dir)
    data_need = needed.data_bytes + (needed.out_bytes if shared else 0)
    if data_need > data_free:
        what = "the data directory and --out" if shared else "the data directory"
        raise DataDiskFullError(f"not enough disk space for {what}: this run needs ~{_gb(data_need)} in {data}, "
                                f"{_gb(data_free)} free (free some space, or run `recast gc`)")
    if out_dir is not None and not shared:
        out_free = free(out_dir)
        if needed.out_bytes > out_free:
            raise OutputDiskFullError(f"--out '{out_path}': not enough disk space: the deliverable needs ~{_gb(needed.out_bytes)} "
                                      f"in {out_dir}, {_gb(out_free)} free")


def _writable(folder: Path) -> bool:
    try:
        return not os.statvfs(folder).f_flag & os.ST_RDONLY and os.access(folder, os.W_OK)
    except OSError:
        return True  # cannot tell: the space check goes ahead


def _same_device(a: Path, b: Path) -> bool:
    try:
        return os.stat(a).st_dev == os.stat(b).st_dev
    except OSError:
        return False


def check_swap_space(plate: str, out: Path | None, *, mode: str, estimate: Callable[..., RunEstimate] | None = None) -> None:
    """Before a swap is submitted: probe the plate (a local file; an S3 plate is not downloaded
    for this) and check the estimate against the free space. A plate that cannot be probed is
    left to the run's own validation, which names the problem."""
    from recast.errors import RecastError
    from recast.media import probe_media
    from recast.settings import get_settings

    if "://" in plate and not plate.startswith("file://"):
        return
    path = Path(plate.removeprefix("file://")).expanduser()
    try:
        info = probe_media(path, role="plate")
        size = path.stat().st_size
    except (RecastError, OSError):
        return
    if info.kind != "video":
        return
    settings = get_settings()
    if not _writable(_existing(settings.resolved_data_dir)):
        # a read-only or unwritable data directory is its own problem, told by the database's
        # opening next (prepare); "not enough space" would send the user the wrong way
        return
    local_store = settings.resolved_storage_url.startswith("file://")
    needed = (estimate or estimate_run_bytes)(info, plate_bytes=size, mode=mode, local_store=local_store)
    check_free_space(settings.resolved_data_dir, out, needed)


__all__ = ["DataDiskFullError", "OutputDiskFullError", "RunEstimate", "check_free_space", "check_swap_space", "estimate_run_bytes"]
