"""QC: the ``qc`` stage. Fetches a swapped shot's arrays and frames, measures it with
:func:`recast.models.qc.measure` (identity, hair, pose, expression, temporal stability, seam and
background metrics, a verdict with reasons) and stores the per-frame values reports are drawn
from (:class:`~recast.media.artifacts.QCPerFrame`).

Where the work happens: the every-frame measurements need plate and output pixels side by side,
and decoding both FFV1 chunks again cost more than all of QC's arithmetic. So they are taken by
:func:`recast.models.qc_frames.observe_chunk` where the frames are already decoded: inside each
swap chunk (stored as its ``qc_observations`` asset, timed apart as ``qc_observe_ms``), and in
:func:`score_pair` on the freshly decoded pair. This stage reads those arrays, computes the
shot-level values, picks the identity samples and decodes only those frames (by seeking in the
intra-only chunks).

Identity model: insightface ArcFace when its file is in ``RECAST_MODEL_DIR``, dlib's ResNet
descriptor otherwise (:func:`recast.models.qc.identity_model`). Which one ran, with its checksum,
is the first entry of ``QCReport.models`` and is recorded with the QC result.

Two entry points share the measuring code:

* :func:`score_shot`, the ``qc`` stage of ``swap_shot`` (swap masks are known exactly);
* :func:`score_pair`, for ``recast qc --plate --output --source`` on any plate/output pair, also
  from other tools (:func:`recast.flows.score_files.score_files` runs ingest, segment and track
  on both files first). What the swap changed is not known there, so the region that background
  preservation leaves out is the dilated union of the plate's and the output's person masks
  (selfie segmentation of both files) plus the pixels that differ visibly between them inside the
  chosen person's face box grown by half its size (:func:`recast.models.qc.change_mask`); the
  seam is measured along the edge of that changed region.

Thresholds: the project's ``qc_thresholds`` (database JSON, names as :class:`QCThresholds`
fields) over the defaults in settings (``RECAST_QC_*``) over :class:`QCThresholds`' own
(:func:`recast.tasks.common.thresholds_for_shot`).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np

from recast.contracts import AssetRef, IngestResult, Mode, ModelRef, QCReport, SegmentResult, SourceFaceResult, SwapChunkResult, TrackResult
from recast.errors import UsageError
from recast.media import read_frames, read_frames_in_chunks, read_image
from recast.media.artifacts import ANALYSIS_MEDIA_TYPE, PlateAnalysis, QCPerFrame, ShotTracks, SourceAnalysis
from recast.models.face import FaceAnalyzer
from recast.models.metrics import QCThresholds
from recast.models.qc import (
    CHANGE_THRESHOLD,
    QC_VERSION,
    WORST_FRAMES,
    DlibIdentity,
    FrameDecoder,
    IdentityModel,
    QCInputs,
    change_mask,
    identity_model,
    matching_faces,
    measure,
)
from recast.models.qc_frames import BACKGROUND_DILATE_PX, OBSERVE_VERSION, SEAM_EVERY, ChunkObservations, observe_chunk
from recast.settings import get_settings
from recast.tasks.common import emit_progress, fetch, load_artifact, progress_for, run_stage, scratch_dir, store_asset, thresholds_for_shot


def chunk_decoder(chunks: list[tuple[int, Path, Path]]) -> FrameDecoder:
    """Decodes the frames QC asks for by seeking in the intra-only chunks ``(start, plate,
    output)``, chunks in parallel."""
    threads = max(1, min(4, os.cpu_count() or 1))

    def decode(wanted: dict[int, bool]) -> dict[int, tuple[np.ndarray | None, np.ndarray]]:
        outs = read_frames_in_chunks([(start, output) for start, _, output in chunks], wanted, threads=threads)
        plates = read_frames_in_chunks([(start, plate) for start, plate, _ in chunks], [f for f, need in wanted.items() if need], threads=threads)
        return {f: (plates.get(f), frame) for f, frame in outs.items()}

    return decode


def _params(settings: Any, thresholds: QCThresholds, mode: str) -> dict[str, Any]:
    """What determines a QC result besides its inputs and models (the work key's params)."""
    return {"samples_per_second": settings.qc_identity_samples_per_second, "background_dilate_px": BACKGROUND_DILATE_PX,
            "worst_frames": WORST_FRAMES, "seam_every": SEAM_EVERY, "thresholds": dataclasses.asdict(thresholds), "mode": mode,
            "flicker": "temporal_noise", "qc_version": QC_VERSION, "observe_version": OBSERVE_VERSION,
            "observations_format": ChunkObservations.FORMAT_VERSION, "tracks_format": ShotTracks.FORMAT_VERSION, "source_format": SourceAnalysis.FORMAT_VERSION,
            "per_frame_format": QCPerFrame.FORMAT_VERSION, "defects_version": _defects_version()}


def _source_inputs(source: SourceFaceResult, mode: str, identity: IdentityModel) -> dict[str, Any]:
    src = load_artifact(source.analysis, SourceAnalysis)
    return {"source_rgb": src.photo(read_image(fetch(source.source), role="source")), "source_landmarks": src.landmarks, "source_box": src.box,
            "source_head": src.head if mode == Mode.head.value else None, "vetting": tuple(source.vetting),
            # the source analysis' embedding is dlib's, of the same box: used when QC's model is dlib
            "source_embedding": src.embedding if isinstance(identity, DlibIdentity) else None}


def plate_person_embeddings(chunks: list[tuple[int, SegmentResult]], chosen: np.ndarray, identity: Any) -> dict[int, np.ndarray]:
    """{frame: embedding} of the chosen plate person that the segment stage computed (where a
    segment can start, and every few frames among several faces), when QC's identity model is
    the segment stage's (dlib); empty otherwise, and QC embeds plate frames itself."""
    if not isinstance(identity, DlibIdentity):
        return {}
    out: dict[int, np.ndarray] = {}
    for start, seg in chunks:
        analysis = load_artifact(seg.analysis, PlateAnalysis)
        for (i, slot), emb in zip(analysis.embedding_index, analysis.embeddings):
            f = start + int(i)
            if 0 <= f < len(chosen) and int(chosen[f]) == int(slot):
                out[f] = np.asarray(emb, np.float64)
    return out


def _absent(track: TrackResult) -> tuple[tuple[int, int], ...]:
    return tuple((r.start, r.end) for r in track.segments_without_person)


def _source_params(source: SourceFaceResult) -> dict[str, Any]:
    """What of the source record besides its assets changes a QC result: its vetting findings
    (a warning caps the verdict at review)."""
    return {"source_vetting": [f.model_dump() for f in source.vetting]}


def _defects_version() -> str | None:
    try:
        from recast.models import qc_defects
    except ImportError:  # pragma: no cover
        return None
    return str(getattr(qc_defects, "DEFECTS_VERSION", getattr(qc_defects, "VERSION", "1")))


def person_masks(chunks: list[tuple[int, SegmentResult]]) -> Callable[[list[int]], dict[int, np.ndarray]]:
    """``plate_person(frames)`` for :class:`QCInputs`: the plate's person masks of those frames
    from the segment stage's analyses ``(chunk start, SegmentResult)``, one chunk loaded at a time."""

    def get(frames: list[int]) -> dict[int, np.ndarray]:
        out: dict[int, np.ndarray] = {}
        for start, seg in chunks:
            n = seg.chunk.end - seg.chunk.start
            mine = [int(f) for f in frames if start <= int(f) < start + n]
            if not mine:
                continue
            masks = load_artifact(seg.analysis, PlateAnalysis).person_mask
            for f in mine:
                out[f] = np.array(masks[f - start], bool)
        return out

    return get


# --- the qc stage of swap_shot ---------------------------------------------------------------
def score_shot(*, run_id: str | None, shot_id: str | None, ingest: IngestResult, segments: list[SegmentResult], track: TrackResult,
               swaps: list[SwapChunkResult], source: SourceFaceResult, mode: str) -> QCReport:
    """Compute the shot's QC metrics on the lossless swapped chunks and decide a verdict."""
    settings = get_settings()
    thresholds = thresholds_for_shot(shot_id)
    identity = identity_model(settings.model_dir)
    models = (identity.model,) + tuple(FaceAnalyzer.MODELS)

    def compute() -> QCReport:
        total = ingest.plate_info.frame_count
        progress = progress_for(run_id, "qc", total)
        tr = load_artifact(track.tracks, ShotTracks)
        inputs = QCInputs(
            decode=chunk_decoder([(c.frames.start, fetch(c.video), fetch(sw.video)) for c, sw in zip(ingest.chunks, swaps)]),
            observations=[load_artifact(sw.observations, ChunkObservations) for sw in swaps],
            total=total, rate=ingest.plate_info.fps, size=(ingest.plate_info.height, ingest.plate_info.width),
            plate_landmarks=tr.raw_landmarks, face_found=tr.present, mode=mode, cuts=tuple(track.cuts), absent_segments=_absent(track), **_source_inputs(source, mode, identity),
            plate_person=person_masks([(c.frames.start, sg) for c, sg in zip(ingest.chunks, segments)]),
            plate_embeddings=plate_person_embeddings([(c.frames.start, sg) for c, sg in zip(ingest.chunks, segments)], tr.chosen, identity),
        )
        return _finish(inputs, identity, thresholds, models, parents=[sw.video for sw in swaps] + [sw.observations for sw in swaps] + [source.source, track.tracks],
                       advance=progress.advance, samples_per_second=settings.qc_identity_samples_per_second)

    return run_stage(
        "qc",
        run_id=run_id,
        shot_id=shot_id,
        inputs=[c.video for c in ingest.chunks] + [track.tracks] + [s.video for s in swaps] + [s.observations for s in swaps] + [source.source, source.analysis]
               + [sg.analysis for sg in segments],
        params={**_params(settings, thresholds, mode), **_source_params(source)},
        models=models,
        result_type=QCReport,
        compute=compute,
    )


def _finish(inputs: QCInputs, identity: IdentityModel, thresholds: QCThresholds, models: tuple[ModelRef, ...], *, parents: list[AssetRef],
            advance: Callable[[int], None], samples_per_second: float) -> QCReport:
    metrics, per_frame, reasons, verdict = measure(inputs, identity, thresholds, samples_per_second=samples_per_second, advance=advance)
    values = QCPerFrame(**per_frame, reasons=tuple(reasons), thresholds=dataclasses.asdict(thresholds))
    with scratch_dir("qc-") as tmp:
        per_frame_ref = store_asset(values.save(tmp / "qc.npz"), media_type=ANALYSIS_MEDIA_TYPE, role="qc_per_frame", suffix=".npz", parents=parents)
    texts = tuple(r["text"] for r in reasons)
    emit_progress(f"qc: verdict {verdict.value}" + (f" ({'; '.join(texts)})" if texts else ""))
    return QCReport(metrics=metrics, verdict=verdict, reasons=texts, per_frame=per_frame_ref, models=models)


# --- any plate/output pair -------------------------------------------------------------------
def score_pair(*, plate: IngestResult, output: IngestResult, plate_segments: list[SegmentResult], output_segments: list[SegmentResult],
               track: TrackResult, source: SourceFaceResult, mode: str, project: str | None = None) -> QCReport:
    """QC of ``output`` (made by recast or another tool) against its ``plate``, both already
    ingested, segmented and (the plate) tracked, with the same metrics and thresholds as
    :func:`score_shot`. The output's face in each frame is the one nearest the plate's chosen face."""
    if mode not in (Mode.face.value, Mode.head.value):
        raise UsageError(f"--mode '{mode}': choose from face, head")
    settings = get_settings()
    thresholds = thresholds_for_shot(None, project)
    identity = identity_model(settings.model_dir)
    models = (identity.model,) + tuple(FaceAnalyzer.MODELS)
    pi = plate.plate_info
    total = pi.frame_count
    params = {**_params(settings, thresholds, mode), **_source_params(source), "what": "files", "change_threshold": CHANGE_THRESHOLD,
              "analysis_format": PlateAnalysis.FORMAT_VERSION}

    def compute() -> QCReport:
        tr = load_artifact(track.tracks, ShotTracks)
        present = tr.present
        chunks, observations = [], []
        for pc, oc, sp, so in zip(plate.chunks, output.chunks, plate_segments, output_segments):
            ap, ao = load_artifact(sp.analysis, PlateAnalysis), load_artifact(so.analysis, PlateAnalysis)
            a, b = pc.frames.start, pc.frames.end
            out_lms = matching_faces(ao.faces_landmarks, ao.faces_boxes, ao.face_count, tr.boxes[a:b], present[a:b])
            plate_path, out_path = fetch(pc.video), fetch(oc.video)
            change = np.stack([change_mask(p, o, tr.boxes[a + i] if present[a + i] else None)
                               for i, (p, o) in enumerate(zip(read_frames(plate_path), read_frames(out_path)))])
            observations.append(observe_chunk(start=a, plate_frames=read_frames(plate_path), out_frames=read_frames(out_path),
                                              exclude=ap.person_mask | ao.person_mask, change=change, plate_boxes=tr.boxes[a:b],
                                              face_found=present[a:b], plate_landmarks=tr.raw_landmarks[a:b], out_landmarks=out_lms))
            chunks.append((a, plate_path, out_path))
        inputs = QCInputs(
            decode=chunk_decoder(chunks), observations=observations, total=total, rate=pi.fps, size=(pi.height, pi.width),
            plate_landmarks=tr.raw_landmarks, face_found=present, mode=mode, cuts=tuple(track.cuts), absent_segments=_absent(track), **_source_inputs(source, mode, identity),
            plate_person=person_masks([(c.frames.start, sg) for c, sg in zip(plate.chunks, plate_segments)]),
            plate_embeddings=plate_person_embeddings([(c.frames.start, sg) for c, sg in zip(plate.chunks, plate_segments)], tr.chosen, identity),
        )
        progress = progress_for(None, "qc", total)
        return _finish(inputs, identity, thresholds, models, parents=[output.plate, plate.plate, source.source, track.tracks],
                       advance=progress.advance, samples_per_second=settings.qc_identity_samples_per_second)

    return run_stage(
        "qc",
        run_id=None,
        shot_id=None,
        inputs=[c.video for c in plate.chunks] + [c.video for c in output.chunks] + [s.analysis for s in plate_segments + output_segments]
               + [track.tracks, source.source, source.analysis],
        params=params,
        models=models,
        result_type=QCReport,
        compute=compute,
    )
