"""Render: the deliverable (H.264 mp4) from the swapped chunks, with the plate's timing and audio."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from recast.contracts import IngestResult, QCReport, Rate, RenderResult, SegmentResult, SwapChunkResult
from recast.db import repository as repo
from recast.db import trust as trust_repo
from recast.db.trust import new_render_id
from recast.db.session import session_scope
from recast.errors import InternalError, OutputPathError
from recast.media import check_output_writable, read_frames, render_h264
from recast.models.metrics import background_psnr
from recast.settings import get_settings
from recast.tasks.arrays import load_npz, unpack_masks
from recast.tasks.common import fetch, progress_for, run_stage, scratch_dir, store_asset
from recast.tasks.qc import BACKGROUND_DILATE_PX, changed_region
from recast.tasks.segment import load_analysis

DELIVERABLE_MEDIA_TYPE = "video/mp4"


def render_shot(*, run_id: str | None, shot_id: str | None, ingest: IngestResult, segments: list[SegmentResult], swaps: list[SwapChunkResult],
                qc: QCReport, approved: bool | None = None) -> RenderResult:
    """Encode the swapped chunks into a signed, watermarked H.264 mp4 and check it against the plate.

    The consent gate runs again first, so a consent revoked while the shot was being swapped
    stops delivery. The invisible mark (render id) goes only into the pixels the swap generated;
    the C2PA manifest names the plate as parent ingredient, the models, the identity and its
    consent (or says that none was on record, for the scratch project).
    """
    from recast.models.watermark import WatermarkEmbedder, WatermarkKey, payload_from_id
    from recast.tasks.trust import require_consent, signing_identity

    settings = get_settings()
    consent = require_consent(shot_id)
    from recast.tasks import shots

    code = shots.shot_code(shot_id)
    models = sorted({(m.name, m.version, m.sha256) for r in list(segments) + list(swaps) for m in r.models})
    render_id = new_render_id()
    params = {"codec": "h264", "crf": settings.render_crf, "preset": settings.render_preset, "container": "mp4",
              "watermark": {"strength": settings.watermark_strength, "key": hashlib.sha256(str(settings.watermark_seed).encode()).hexdigest()[:16]},
              "c2pa": True, "shot": code, "identity": consent.identity, "consent": consent.consent_id, "scratch": consent.scratch}

    def compute() -> RenderResult:
        total = ingest.plate_info.frame_count
        progress = progress_for(run_id, "render", total)
        masks = np.concatenate([unpack_masks(**_mask_arrays(sw)) for sw in swaps])
        embedder = WatermarkEmbedder(payload_from_id(render_id), WatermarkKey(seed=settings.watermark_seed, strength=settings.watermark_strength))

        def mark(rgb: np.ndarray, index: int) -> np.ndarray:
            return embedder.embed(rgb, masks[index], index) if masks[index].any() else rgb

        with scratch_dir("render-") as tmp:
            encoded = tmp / "encoded.mp4"
            out = tmp / "deliverable.mp4"
            last = [0]

            def on_progress(done: int, _total: int) -> None:
                progress.advance(done - last[0])
                last[0] = done

            plate_path = fetch(ingest.plate)
            info = render_h264([fetch(s.video) for s in swaps], plate_path, encoded, crf=settings.render_crf,
                               preset=settings.render_preset, progress=on_progress, transform=mark)
            from recast.media.credentials import sign_video

            sign_video(encoded, out, identity=signing_identity(), parent=plate_path, parent_title=f"plate of shot {code}",
                       render_id=render_id, shot=code, models=[{"name": n, "version": v, "sha256": h} for n, v, h in models],
                       identity_name=consent.identity, consent=consent.manifest_entry(), scratch=consent.consent_id is None)
            metrics = _delivery_check(out, ingest, segments, swaps)
            ref = store_asset(out, media_type=DELIVERABLE_MEDIA_TYPE, role="deliverable", suffix=".mp4",
                              parents=[ingest.plate] + [s.video for s in swaps])
        return RenderResult(output=ref, frames=info.frames, rate=Rate.of(info.rate), avg_rate=Rate.of(info.avg_rate),
                            audio_copied=info.audio_copied, codec=info.codec, metrics=metrics, render_id=render_id)

    result = run_stage(
        "render",
        run_id=run_id,
        shot_id=shot_id,
        inputs=[ingest.plate] + [s.video for s in swaps],
        params=params,
        models=[],
        result_type=RenderResult,
        compute=compute,
    )
    with session_scope() as s:
        # a reused render keeps the id its mark and manifest carry; this run gets its own row
        row_id = result.render_id if result.render_id == render_id else new_render_id()
        trust_repo.create_render(s, render_id=row_id, run_id=run_id, asset_id=result.output.asset_id,
                                 approved=qc.verdict.value == "pass" if approved is None else approved,
                                 watermark_payload=f"{payload_from_id(result.render_id):016x}", consent_id=consent.consent_id, signed=True)
        repo.add_audit_event(s, actor="recast", action="render.created", subject_type="render", subject_id=row_id,
                             detail={"run_id": run_id, "asset": result.output.uri, "sha256": result.output.sha256,
                                     "identity": consent.identity, "consent": consent.consent_id, "scratch": consent.scratch})
    return result


def _mask_arrays(sw: SwapChunkResult) -> dict[str, np.ndarray]:
    m = load_npz(fetch(sw.masks))
    return {"bits": m["mask_bits"], "shape": m["mask_shape"]}


def _delivery_check(out: Path, ingest: IngestResult, segments: list[SegmentResult], swaps: list[SwapChunkResult]) -> dict[str, float | int | None]:
    """Decode the deliverable: frame count must match the plate; PSNR vs the plate outside the face."""
    plate_frames = (f for c in ingest.chunks for f in read_frames(fetch(c.video)))
    exclude = []
    for seg, sw in zip(segments, swaps):
        a = load_analysis(seg.analysis)
        m = load_npz(fetch(sw.masks))
        exclude.append(changed_region(unpack_masks(a["person_mask_bits"], a["mask_shape"]), unpack_masks(m["mask_bits"], m["mask_shape"])))
    masks = np.concatenate(exclude)
    values = []
    n = 0
    for n, (delivered, plate) in enumerate(zip(read_frames(out), plate_frames), start=1):
        values.append(background_psnr(plate, delivered, masks[n - 1], BACKGROUND_DILATE_PX))
    if n != ingest.plate_info.frame_count:
        raise InternalError(f"deliverable has {n} frames, plate has {ingest.plate_info.frame_count}")
    return {"delivered_background_psnr_db": float(np.mean(values)) if values else None,
            "delivered_background_psnr_min_db": float(np.min(values)) if values else None}


def publish(result: RenderResult, output_path: Path) -> Path:
    """Copy the stored deliverable to the user's output path (atomically: never a half-written file)."""
    check_output_writable(output_path)
    src = fetch(result.output)
    fd, tmp = tempfile.mkstemp(prefix=".recast-", suffix=output_path.suffix, dir=output_path.parent)
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, output_path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise OutputPathError(f"output '{output_path}': cannot write ({exc.strerror or exc})") from exc
    return output_path
