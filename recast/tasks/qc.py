"""QC: identity, hair, pose, expression, temporal stability, seam and background metrics of a
swapped shot, and a verdict.

Cheap metrics (pose, expression, jitter, flicker, background) are computed on every frame; costly
ones (identity embeddings, hair colour) on sampled frames: ``qc_identity_samples_per_second`` per
second plus the worst frames by the cheap metrics.
"""

from __future__ import annotations

import cv2
import numpy as np

from recast.contracts import IngestResult, Mode, QCReport, SegmentResult, SourceFaceResult, SwapChunkResult, TrackResult
from recast.media import read_frames, read_image
from recast.models.face import FaceAnalyzer
from recast.models.identity import DlibFaceEmbedder, face_distance, identity_transferred
from recast.models.metrics import (
    QCThresholds,
    background_psnr,
    decide_verdict,
    expression_error,
    head_pose,
    jitter_ratio,
    pixel_flicker,
    pose_error,
    seam_score,
)
from recast.settings import get_settings
from recast.tasks.arrays import load_npz, save_npz, unpack_masks
from recast.tasks.common import emit_progress, fetch, progress_for, run_stage, scratch_dir, store_asset
from recast.tasks.segment import ANALYSIS_MEDIA_TYPE, load_analysis, load_source_head

BACKGROUND_DILATE_PX = 15
WORST_FRAMES = 3


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


def sample_frames(swapped: np.ndarray, rate: float, per_second: float, worst: np.ndarray | None = None) -> np.ndarray:
    """Frames for the costly metrics: ``per_second`` a second among swapped frames, plus the worst."""
    idx = np.flatnonzero(swapped)
    if idx.size == 0:
        return idx
    step = max(1, int(round(rate / max(per_second, 1e-6))))
    picked = idx[::step]
    if picked.size < min(5, idx.size):  # short shots still get a few identity samples
        picked = idx[np.linspace(0, idx.size - 1, min(5, idx.size)).round().astype(int)]
    if worst is not None and worst.size:
        picked = np.concatenate([picked, worst[swapped[worst]]])
    return np.unique(picked)


def changed_region(person: np.ndarray, swap_mask: np.ndarray) -> np.ndarray:
    """What background preservation excludes: the plate's person and every pixel the swap touched."""
    return person | swap_mask


def _nearest_face(faces, box: np.ndarray):
    """The detected output face that sits where the chosen plate face was."""
    if not faces:
        return None
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    return min(faces, key=lambda f: (f.box[0] + f.box[2] - 2 * cx) ** 2 + (f.box[1] + f.box[3] - 2 * cy) ** 2)


def score_shot(*, run_id: str | None, shot_id: str | None, ingest: IngestResult, segments: list[SegmentResult], track: TrackResult,
               swaps: list[SwapChunkResult], source: SourceFaceResult, mode: str) -> QCReport:
    """Compute the shot's QC metrics on the lossless swapped chunks and decide a verdict."""
    settings = get_settings()
    thresholds = thresholds_from_settings()
    embedder = DlibFaceEmbedder()
    models = (embedder.model,) + tuple(FaceAnalyzer.MODELS)
    params = {"samples_per_second": settings.qc_identity_samples_per_second, "background_dilate_px": BACKGROUND_DILATE_PX,
              "worst_frames": WORST_FRAMES, "thresholds": thresholds.__dict__, "mode": mode}

    def compute() -> QCReport:
        cv2.setNumThreads(1)
        total = ingest.plate_info.frame_count
        progress = progress_for(run_id, "qc", total)
        rate = float(ingest.plate_info.rate.fraction) if ingest.plate_info.rate else 25.0
        tr = load_npz(fetch(track.tracks))
        plate_lms, plate_boxes = tr["raw_landmarks"], tr["boxes"]
        out_lms = np.full_like(plate_lms, np.nan)
        bg_psnr = np.full(total, np.nan)
        seam = np.full(total, np.nan)
        flicker_out, flicker_plate = [], []
        swapped_flags = np.zeros(total, dtype=bool)
        h, w = ingest.plate_info.height, ingest.plate_info.width

        # pass 1, every frame: output landmarks, background PSNR, seam, flicker
        with FaceAnalyzer(static_images=False, max_faces=2) as analyzer:
            for chunk, seg, sw in zip(ingest.chunks, segments, swaps):
                person = _unpack(load_analysis(seg.analysis), "person_mask_bits")
                smask = _unpack(load_npz(fetch(sw.masks)), "mask_bits")
                region = smask.any(axis=0)
                fo = pixel_flicker(read_frames(fetch(sw.video)), region) if region.any() else None
                fp = pixel_flicker(read_frames(fetch(chunk.video)), region) if region.any() else None
                if fo is not None and fp is not None:
                    flicker_out.append(fo)
                    flicker_plate.append(fp)
                for i, (plate_frame, out_frame) in enumerate(zip(read_frames(fetch(chunk.video)), read_frames(fetch(sw.video)))):
                    f = chunk.frames.start + i
                    swapped_flags[f] = smask[i].any()
                    bg_psnr[f] = background_psnr(plate_frame, out_frame, changed_region(person[i], smask[i]), BACKGROUND_DILATE_PX)
                    if swapped_flags[f]:
                        face = _nearest_face(analyzer.detect(out_frame), plate_boxes[f])
                        if face is not None:
                            out_lms[f] = face.landmarks
                        if f % 5 == 0:
                            seam[f] = seam_score(out_frame, smask[i]) or np.nan
                    progress.advance()

        pose_plate = np.array([head_pose(l, (h, w)) or (np.nan,) * 3 for l in plate_lms], dtype=float)
        pose_out = np.array([head_pose(l, (h, w)) or (np.nan,) * 3 for l in out_lms], dtype=float)
        per_frame_pose_err = np.nanmean(np.abs(pose_plate - pose_out), axis=1) if total else np.zeros(0)
        worst = np.argsort(np.nan_to_num(per_frame_pose_err, nan=-1.0))[::-1][:WORST_FRAMES]
        samples = sample_frames(swapped_flags, rate, settings.qc_identity_samples_per_second, worst)

        # pass 2, sampled frames: identity (and hair in head mode)
        src = load_analysis(source.analysis)
        src_embedding = embedder.embed(read_image(fetch(source.source), role="source"), tuple(int(v) for v in src["box"]))
        head = mode == Mode.head.value
        source_head = load_source_head(source.analysis) if head else None
        if head:
            from recast.models.head import hair_colour_transfer
        d_src = np.full(total, np.nan)
        d_plate = np.full(total, np.nan)
        hair = np.full(total, np.nan)
        wanted = set(int(x) for x in samples)
        for chunk, sw in zip(ingest.chunks, swaps):
            if not any(chunk.frames.start <= f < chunk.frames.end for f in wanted):
                continue
            for i, (plate_frame, out_frame) in enumerate(zip(read_frames(fetch(chunk.video)), read_frames(fetch(sw.video)))):
                f = chunk.frames.start + i
                if f not in wanted:
                    continue
                plate_person = embedder.embed(plate_frame, tuple(int(v) for v in plate_boxes[f]))
                if np.isnan(out_lms[f]).any():
                    continue
                box = _box(out_lms[f], out_frame.shape)
                out_emb = embedder.embed(out_frame, box)
                d_src[f] = face_distance(out_emb, src_embedding)
                d_plate[f] = face_distance(out_emb, plate_person)
                if head:
                    verdict = hair_colour_transfer(out_frame, out_lms[f], source_head, plate_frame, plate_lms[f])
                    hair[f] = np.nan if verdict is None else float(verdict)

        transferred = np.array([identity_transferred(a, b) if not (np.isnan(a) or np.isnan(b)) else False for a, b in zip(d_src, d_plate)])
        found = tr["chosen"] >= 0
        jr = jitter_ratio(out_lms[swapped_flags], plate_lms[swapped_flags]) if swapped_flags.sum() > 2 else None
        pe = pose_error(pose_plate[swapped_flags], pose_out[swapped_flags]) if swapped_flags.any() else None
        ee = expression_error(plate_lms[swapped_flags], out_lms[swapped_flags]) if swapped_flags.any() else None
        hair_known = hair[samples][~np.isnan(hair[samples])] if samples.size else np.zeros(0)
        metrics = {
            "frames": int(total),
            "swapped_frames": int(swapped_flags.sum()),
            "face_found_ratio": float(found.mean()) if total else 0.0,
            "identity_samples": int(samples.size),
            "identity_transfer_rate": float(transferred[samples].mean()) if samples.size else 0.0,
            "identity_distance_source": _nanmean(d_src[samples]) if samples.size else None,
            "identity_distance_plate": _nanmean(d_plate[samples]) if samples.size else None,
            "hair_transfer_rate": float(hair_known.mean()) if hair_known.size else None,
            "pose_error_deg": None if pe is None else float(pe),
            "expression_error": None if ee is None else float(ee),
            "jitter_ratio": None if jr is None else float(jr),
            "flicker_ratio": float(np.mean(flicker_out) / max(np.mean(flicker_plate), 1e-6)) if flicker_out else None,
            "seam_score": _nanmean(seam),
            "background_psnr_db": _nanmean(bg_psnr),
            "scene_cuts": len(track.cuts),
        }
        verdict, reasons = decide_verdict(metrics, thresholds)
        with scratch_dir("qc-") as tmp:
            path = save_npz(tmp / "qc.npz", d_source=d_src, d_plate=d_plate, pose_plate=pose_plate, pose_output=pose_out,
                            background_psnr=bg_psnr, seam=seam, transferred=transferred, hair=hair, sampled=samples,
                            output_landmarks=out_lms.astype(np.float32))
            per_frame = store_asset(path, media_type=ANALYSIS_MEDIA_TYPE, role="qc_per_frame", suffix=".npz",
                                    parents=[sw.video for sw in swaps] + [source.source, track.tracks])
        emit_progress(f"qc: verdict {verdict.value}" + (f" ({'; '.join(reasons)})" if reasons else ""))
        return QCReport(metrics=metrics, verdict=verdict, reasons=tuple(reasons), per_frame=per_frame, models=models)

    return run_stage(
        "qc",
        run_id=run_id,
        shot_id=shot_id,
        inputs=[c.video for c in ingest.chunks] + [s.analysis for s in segments] + [track.tracks] + [s.video for s in swaps] + [source.source, source.analysis],
        params=params,
        models=models,
        result_type=QCReport,
        compute=compute,
    )


def _unpack(arrays: dict[str, np.ndarray], key: str) -> np.ndarray:
    return unpack_masks(arrays[key], arrays["mask_shape"])


def _box(landmarks: np.ndarray, shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    x0, y0 = np.floor(landmarks[:, :2].min(axis=0)).astype(int)
    x1, y1 = np.ceil(landmarks[:, :2].max(axis=0)).astype(int)
    return max(0, x0), max(0, y0), min(shape[1], x1), min(shape[0], y1)


def _nanmean(values: np.ndarray) -> float | None:
    v = values[~np.isnan(values)]
    return float(v.mean()) if v.size else None
