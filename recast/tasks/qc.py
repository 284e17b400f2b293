"""QC: identity, pose, face-found and background metrics of a swapped shot, and a verdict."""

from __future__ import annotations

import cv2
import numpy as np

from recast.contracts import IngestResult, QCReport, SegmentResult, SourceFaceResult, SwapChunkResult
from recast.media import read_frames, read_image
from recast.models.face import FaceAnalyzer, select_face
from recast.models.identity import DlibFaceEmbedder, face_distance, identity_transferred
from recast.models.metrics import QCThresholds, background_psnr, decide_verdict, head_pose, pose_error
from recast.settings import get_settings
from recast.tasks.arrays import load_npz, save_npz, unpack_masks
from recast.tasks.common import emit_progress, fetch, run_stage, scratch_dir, store_asset
from recast.tasks.segment import ANALYSIS_MEDIA_TYPE, load_analysis

BACKGROUND_DILATE_PX = 15


def thresholds_from_settings() -> QCThresholds:
    s = get_settings()
    return QCThresholds(
        identity_pass=s.qc_identity_pass,
        identity_fail=s.qc_identity_fail,
        background_psnr_pass=s.qc_background_psnr_pass,
        background_psnr_fail=s.qc_background_psnr_fail,
        pose_error_review=s.qc_pose_error_review,
        face_found_review=s.qc_face_found_review,
    )


def sample_frames(swapped: np.ndarray, rate: float, per_second: float) -> np.ndarray:
    """Frame indices for the costly metrics: ``per_second`` frames per second among swapped frames."""
    idx = np.flatnonzero(swapped)
    if idx.size == 0:
        return idx
    step = max(1, int(round(rate / max(per_second, 1e-6))))
    picked = idx[::step]
    if picked.size < min(5, idx.size):  # short shots still get a few identity samples
        picked = idx[np.linspace(0, idx.size - 1, min(5, idx.size)).round().astype(int)]
    return np.unique(picked)


def score_shot(*, run_id: str | None, shot_id: str | None, ingest: IngestResult, segments: list[SegmentResult], swaps: list[SwapChunkResult], source: SourceFaceResult) -> QCReport:
    """Compute the shot's QC metrics on the lossless swapped chunks and decide a verdict."""
    settings = get_settings()
    thresholds = thresholds_from_settings()
    embedder = DlibFaceEmbedder()
    models = (embedder.model,) + tuple(FaceAnalyzer.MODELS)
    params = {"samples_per_second": settings.qc_identity_samples_per_second, "background_dilate_px": BACKGROUND_DILATE_PX, "thresholds": thresholds.__dict__}

    def compute() -> QCReport:
        cv2.setNumThreads(1)
        total = ingest.plate_info.frame_count
        rate = float(ingest.plate_info.rate.fraction) if ingest.plate_info.rate else 25.0
        found = np.concatenate([load_analysis(s.analysis)["found"] for s in segments])
        swapped_flags = np.zeros(total, dtype=bool)
        src_arrays = load_analysis(source.analysis)
        src_embedding = embedder.embed(read_image(fetch(source.source), role="source"), tuple(int(v) for v in src_arrays["box"]))

        d_src = np.full(total, np.nan)
        d_plate = np.full(total, np.nan)
        pose_plate = np.full((total, 3), np.nan)
        pose_out = np.full((total, 3), np.nan)
        bg_psnr = np.full(total, np.nan)
        transferred = np.zeros(total, dtype=bool)

        chunk_masks = []
        for sw in swaps:
            m = load_npz(fetch(sw.masks))
            chunk_masks.append(unpack_masks(m["mask_bits"], m["mask_shape"]))
        for ci, sw in enumerate(swaps):
            swapped_flags[sw.chunk.start:sw.chunk.end] = chunk_masks[ci].reshape(chunk_masks[ci].shape[0], -1).any(axis=1)
        sample_set = set(int(i) for i in sample_frames(swapped_flags, rate, settings.qc_identity_samples_per_second))

        with FaceAnalyzer(static_images=True, max_faces=1) as analyzer:
            for ci, (chunk, seg, sw) in enumerate(zip(ingest.chunks, segments, swaps)):
                plate_an = load_analysis(seg.analysis)
                face_masks = unpack_masks(plate_an["face_mask_bits"], plate_an["mask_shape"])
                for i, (plate_frame, out_frame) in enumerate(zip(read_frames(fetch(chunk.video)), read_frames(fetch(sw.video)))):
                    f = chunk.frames.start + i
                    changed = face_masks[i] | chunk_masks[ci][i]
                    bg_psnr[f] = background_psnr(plate_frame, out_frame, changed, BACKGROUND_DILATE_PX)
                    if f not in sample_set:
                        continue
                    plate_lms = plate_an["landmarks"][i]
                    pose_plate[f] = head_pose(plate_lms, plate_frame.shape[:2]) or (np.nan,) * 3
                    out_face = select_face(analyzer.detect(out_frame), "largest")
                    d_plate_person = embedder.embed(plate_frame, tuple(int(v) for v in plate_an["boxes"][i]))
                    if out_face is None:
                        continue
                    pose_out[f] = head_pose(out_face.landmarks, out_frame.shape[:2]) or (np.nan,) * 3
                    out_emb = embedder.embed(out_frame, out_face.box)
                    d_src[f] = face_distance(out_emb, src_embedding)
                    d_plate[f] = face_distance(out_emb, d_plate_person)
                    transferred[f] = identity_transferred(d_src[f], d_plate[f])

        samples = np.array(sorted(sample_set), dtype=int)
        pe = pose_error(pose_plate[samples], pose_out[samples]) if samples.size else None
        metrics = {
            "frames": int(total),
            "swapped_frames": int(swapped_flags.sum()),
            "face_found_ratio": float(found.mean()) if total else 0.0,
            "identity_samples": int(samples.size),
            "identity_transfer_rate": float(transferred[samples].mean()) if samples.size else 0.0,
            "identity_distance_source": _nanmean(d_src[samples]) if samples.size else None,
            "identity_distance_plate": _nanmean(d_plate[samples]) if samples.size else None,
            "pose_error_deg": None if pe is None else float(pe),
            "background_psnr_db": _nanmean(bg_psnr),
        }
        verdict, reasons = decide_verdict(metrics, thresholds)
        with scratch_dir("qc-") as tmp:
            path = save_npz(tmp / "qc.npz", d_source=d_src, d_plate=d_plate, pose_plate=pose_plate, pose_output=pose_out,
                            background_psnr=bg_psnr, transferred=transferred, sampled=samples, found=found)
            per_frame = store_asset(path, media_type=ANALYSIS_MEDIA_TYPE, role="qc_per_frame", suffix=".npz",
                                    parents=[sw.video for sw in swaps] + [source.source])
        emit_progress(f"qc: verdict {verdict.value}" + (f" ({'; '.join(reasons)})" if reasons else ""))
        return QCReport(metrics=metrics, verdict=verdict, reasons=tuple(reasons), per_frame=per_frame, models=models)

    return run_stage(
        "qc",
        run_id=run_id,
        shot_id=shot_id,
        inputs=[c.video for c in ingest.chunks] + [s.analysis for s in segments] + [s.video for s in swaps] + [source.source, source.analysis],
        params=params,
        models=models,
        result_type=QCReport,
        compute=compute,
    )


def _nanmean(values: np.ndarray) -> float | None:
    v = values[~np.isnan(values)]
    return float(v.mean()) if v.size else None
