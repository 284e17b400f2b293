"""Ingest: probe the plate and source photos, store and register them, cut the plate into chunks."""

from __future__ import annotations

from pathlib import Path

from recast.contracts import AssetRef, IngestResult, MediaInfo, PlateChunk
from recast.errors import UnsupportedMediaError
from recast.media import probe_media, read_image, read_timing, split_plate
from recast.media.probe import describe_stream_choice, timing_note
from recast.media.artifacts import CHUNK_MEDIA_TYPE, TIMING_MEDIA_TYPE, PlateTiming
from recast.storage import local_input, suffix_of
from recast.tasks.common import emit_progress, progress_for, run_stage, scratch_dir, store_asset

PLATE_MEDIA_TYPE = "video/mp4"


def register_plate(uri_or_path: str) -> tuple[AssetRef, MediaInfo, Path]:
    """Probe the plate (clear errors for missing/corrupt files) and store it."""
    path = local_input(uri_or_path, "plate")
    info = probe_media(path, role="plate")
    if info.kind != "video":
        raise UnsupportedMediaError(f"plate '{uri_or_path}': is a still image ({info.codec}), a plate must be a video clip")
    media_type = {"mov": "video/quicktime", "mkv": "video/x-matroska"}.get(path.suffix.lower().lstrip("."), PLATE_MEDIA_TYPE)
    ref = store_asset(path, media_type=media_type, role="plate", suffix=suffix_of(path), media_info=info.model_dump(mode="json"))
    return ref, info, path


def _plate_summary(info: MediaInfo, path: Path, retimed: str | None = None) -> str:
    """``1080x1920 h264 (stored 1920x1080, rotated -90°: ...; video stream #1 of 2, ...)``: the
    size worked on, and what the reader of the ingest line needs to know about how it was read."""
    notes = []
    if info.rotation or info.mirrored:
        w, h = info.stored_size
        turn = f"rotated {info.rotation}°" if info.rotation else ""
        notes.append(f"stored {w}x{h}, " + ", ".join(x for x in (turn, "mirrored" if info.mirrored else "") if x)
                     + ": worked on upright, delivered as stored")
    if info.video_streams > 1:
        notes.append(describe_stream_choice(path, "plate") or f"video stream #{info.stream_index}")
    if retimed:
        notes.append(retimed)
    text = f"{info.width}x{info.height} {info.codec}"
    return f"{text} ({'; '.join(notes)})" if notes else text


def register_sources(uris_or_paths: list[str]) -> tuple[tuple[AssetRef, ...], tuple[MediaInfo, ...]]:
    """Decode-check every source photo and store it."""
    refs, infos = [], []
    for i, u in enumerate(uris_or_paths):
        path = local_input(u, f"source #{i + 1}")
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
    retimed = timing_note(plate_path, role="plate")  # frames that all carry one timestamp: re-timed, and said so

    def compute() -> IngestResult:
        progress = progress_for(run_id, "ingest", info.frame_count)
        with scratch_dir("ingest-") as tmp:
            pts, time_base = read_timing(plate_path)
            timing_file = PlateTiming(pts=pts, time_base=time_base).save(tmp / "timing.npz")
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
        # frames: chunks hold the plate upright (its display matrix applied); chunks cut before
        # that held stored pixels, so the key changes and they are not reused for a rotated plate
        params={"chunk_size": chunk_size, "intermediate": "ffv1/gbrp", "timing_format": PlateTiming.FORMAT_VERSION,
                "frames": "upright", "stream": info.stream_index, **({"timing": "nominal rate"} if retimed else {})},
        models=[],
        result_type=IngestResult,
        compute=compute,
    )
    emit_progress(f"ingest: plate {_plate_summary(info, plate_path, retimed)}, {info.frame_count} frames at {info.rate}, {len(result.chunks)} chunks")
    return result.model_copy(update={"plate": plate_ref, "sources": source_refs, "source_infos": source_infos})
