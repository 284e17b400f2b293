"""Ingest: probe the plate and source photos, store and register them, cut the plate into chunks."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from recast.contracts import AssetRef, IngestResult, MediaInfo, PlateChunk
from recast.errors import InputNotFoundError, UnsupportedMediaError
from recast.media import probe_media, read_image, read_timing, split_plate
from recast.storage import fetch_any, suffix_of
from recast.tasks.arrays import save_npz
from recast.tasks.common import emit_progress, progress_for, run_stage, scratch_dir, store_asset
from recast.settings import get_settings

PLATE_MEDIA_TYPE = "video/mp4"
CHUNK_MEDIA_TYPE = "video/x-matroska; codecs=ffv1"
TIMING_MEDIA_TYPE = "application/x-recast-timing+npz"


def _local_input(uri_or_path: str, role: str) -> Path:
    """A local path for a user-given input (plain path, file:// or s3:// URI)."""
    if "://" in uri_or_path:
        return fetch_any(uri_or_path, get_settings())
    p = Path(uri_or_path).expanduser()
    if not p.exists():
        raise InputNotFoundError(f"{role} '{uri_or_path}': file not found")
    if p.is_dir():
        raise InputNotFoundError(f"{role} '{uri_or_path}': is a directory, not a file")
    return p


def register_plate(uri_or_path: str) -> tuple[AssetRef, MediaInfo, Path]:
    """Probe the plate (clear errors for missing/corrupt files) and store it."""
    path = _local_input(uri_or_path, "plate")
    info = probe_media(path, role="plate")
    if info.kind != "video":
        raise UnsupportedMediaError(f"plate '{uri_or_path}': is a still image ({info.codec}), a plate must be a video clip")
    media_type = {"mov": "video/quicktime", "mkv": "video/x-matroska"}.get(path.suffix.lower().lstrip("."), PLATE_MEDIA_TYPE)
    ref = store_asset(path, media_type=media_type, role="plate", suffix=suffix_of(path), media_info=info.model_dump(mode="json"))
    return ref, info, path


def register_sources(uris_or_paths: list[str]) -> tuple[tuple[AssetRef, ...], tuple[MediaInfo, ...]]:
    """Decode-check every source photo and store it."""
    refs, infos = [], []
    for i, u in enumerate(uris_or_paths):
        path = _local_input(u, f"source #{i + 1}")
        info = probe_media(path, role="source")
        read_image(path, role="source")  # full decode: a truncated JPEG fails here, not mid-flow
        suffix = suffix_of(path)
        media_type = "image/png" if suffix == ".png" else "image/jpeg"
        refs.append(store_asset(path, media_type=media_type, role="source", suffix=suffix, media_info=info.model_dump(mode="json")))
        infos.append(info)
    return tuple(refs), tuple(infos)


def ingest(*, run_id: str | None, shot_id: str | None, plate: str, sources: list[str], chunk_size: int) -> IngestResult:
    """Register plate and sources, then cut the plate into lossless intra-only chunks (cached by content)."""
    plate_ref, info, plate_path = register_plate(plate)
    source_refs, source_infos = register_sources(sources)

    def compute() -> IngestResult:
        progress = progress_for(run_id, "ingest", info.frame_count)
        with scratch_dir("ingest-") as tmp:
            pts, time_base = read_timing(plate_path)
            timing_file = save_npz(tmp / "timing.npz", pts=np.asarray(pts, dtype=np.int64), time_base=np.asarray([time_base.numerator, time_base.denominator], dtype=np.int64))
            timing = store_asset(timing_file, media_type=TIMING_MEDIA_TYPE, role="plate_timing", suffix=".npz", parents=[plate_ref])
            last = [0]

            def on_progress(done: int, total: int) -> None:
                progress.advance(done - last[0])
                last[0] = done

            pieces = split_plate(plate_path, chunk_size, tmp / "chunks", role="plate", progress=on_progress)
            chunks = []
            for frame_range, chunk_path in pieces:
                ref = store_asset(chunk_path, media_type=CHUNK_MEDIA_TYPE, role="plate_chunk", suffix=".mkv", parents=[plate_ref])
                chunks.append(PlateChunk(frames=frame_range, video=ref))
        return IngestResult(plate=plate_ref, plate_info=info, timing=timing, chunks=tuple(chunks), sources=(), source_infos=())

    result = run_stage(
        "ingest",
        run_id=run_id,
        shot_id=shot_id,
        inputs=[plate_ref],
        params={"chunk_size": chunk_size, "intermediate": "ffv1/gbrp"},
        models=[],
        result_type=IngestResult,
        compute=compute,
    )
    emit_progress(f"ingest: plate {info.width}x{info.height} {info.codec}, {info.frame_count} frames at {info.rate}, {len(result.chunks)} chunks")
    return result.model_copy(update={"plate": plate_ref, "sources": source_refs, "source_infos": source_infos})
