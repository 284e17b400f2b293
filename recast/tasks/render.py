"""Render: the deliverable (mp4 or mov) from the swapped chunks, with the plate's timing and audio;
and :func:`publish`, which copies it from the store to the user's output path."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Protocol, Sequence

import numpy as np

from recast.contracts import IngestResult, QCReport, Rate, RenderResult, SegmentResult, SwapChunkResult
from recast.db import repository as repo
from recast.db import trust as trust_repo
from recast.db.session import session_scope
from recast.db.trust import new_render_id
from recast.errors import InternalError, OutputPathError
from recast.checksums import sha256_file
from recast.media import (CONTAINERS, check_output_not_input, check_output_writable, new_file_mode, plate_video_codec, read_frames, render_video,
                          store_paths)
from recast.media.artifacts import PlateAnalysis, SwapMatte
from recast.media.credentials import sign_video, signing_identity, watermark_seed
from recast.models.metrics import background_psnr
from recast.models.qc import changed_region
from recast.models.qc_frames import BACKGROUND_DILATE_PX
from recast.models.watermark import WatermarkEmbedder, WatermarkKey, payload_from_id
from recast.settings import get_settings
from recast.tasks.common import fetch, load_artifact, progress_for, run_stage, scratch_dir, store_asset


class ConsentInUse(Protocol):
    """The consent a shot is delivered under, as the trust service's consent check returns it
    (None fields: a project that needs none, e.g. scratch)."""

    project: str
    scratch: bool
    identity: str | None
    consent_id: str | None

    def manifest_entry(self) -> dict[str, Any] | None: ...


def render_shot(*, run_id: str | None, shot_id: str | None, shot: str, ingest: IngestResult, segments: list[SegmentResult],
                swaps: list[SwapChunkResult], qc: QCReport, consent: ConsentInUse, container: str = "mp4") -> RenderResult:
    """Encode the swapped chunks of shot ``shot`` (its code) into a signed, watermarked video in
    ``container`` (mp4 or mov: the plate's codec where the container holds it, else H.264) and
    check it against the plate.

    ``consent`` is the consent check made right before this stage (by the flow, so that a consent
    revoked while the shot was being swapped stops delivery). The invisible mark (render id) goes
    only into the pixels the swap generated; the C2PA manifest names the plate as parent
    ingredient, the models, the identity and its consent (or says that none was on record, for
    the scratch project).
    """
    settings = get_settings()
    models = sorted({(m.name, m.version, m.sha256) for r in list(segments) + list(swaps) for m in r.models})
    render_id = new_render_id()
    box = CONTAINERS[container]
    codec = plate_video_codec(box, fetch(ingest.plate))
    params = {"codec": codec.encoder, "pix_fmt": codec.pix_fmt, "codec_options": dict(codec.options), "crf": settings.render_crf,
              "preset": settings.render_preset, "container": box.name,
              "watermark": {"strength": settings.watermark_strength, "key": hashlib.sha256(str(watermark_seed()).encode()).hexdigest()[:16]},
              "c2pa": True, "shot": shot, "identity": consent.identity, "consent": consent.consent_id, "scratch": consent.scratch}

    def compute() -> RenderResult:
        total = ingest.plate_info.frame_count
        progress = progress_for(run_id, "render", total)
        masks = np.concatenate([load_artifact(sw.masks, SwapMatte).mask for sw in swaps])
        embedder = WatermarkEmbedder(payload_from_id(render_id), WatermarkKey(seed=watermark_seed(), strength=settings.watermark_strength))

        def mark(rgb: np.ndarray, index: int) -> np.ndarray:
            return embedder.embed(rgb, masks[index], index) if masks[index].any() else rgb

        with scratch_dir("render-") as tmp:
            encoded = tmp / f"encoded{box.suffix}"
            out = tmp / f"deliverable{box.suffix}"
            last = [0]

            def on_progress(done: int, _total: int) -> None:
                progress.advance(done - last[0])
                last[0] = done

            plate_path = fetch(ingest.plate)
            info = render_video([fetch(s.video) for s in swaps], plate_path, encoded, container=box, codec=codec, crf=settings.render_crf,
                                preset=settings.render_preset, progress=on_progress, transform=mark)
            sign_video(encoded, out, identity=signing_identity(), parent=plate_path, parent_title=f"plate of shot {shot}",
                       render_id=render_id, shot=shot, models=[{"name": n, "version": v, "sha256": h} for n, v, h in models],
                       identity_name=consent.identity, consent=consent.manifest_entry(), scratch=consent.consent_id is None)
            metrics = _delivery_check(out, ingest, segments, swaps)
            ref = store_asset(out, media_type=box.media_type, role="deliverable", suffix=box.suffix,
                              parents=[ingest.plate] + [s.video for s in swaps])
        return RenderResult(output=ref, frames=info.frames, rate=Rate.of(info.rate), avg_rate=Rate.of(info.avg_rate),
                            audio_copied=info.audio_copied, codec=info.codec, metrics=metrics, render_id=render_id)

    result = run_stage(
        "render",
        run_id=run_id,
        shot_id=shot_id,
        inputs=[ingest.plate] + [s.video for s in swaps],
        params={**params, "matte_format": SwapMatte.FORMAT_VERSION, "analysis_format": PlateAnalysis.FORMAT_VERSION},
        models=[],
        result_type=RenderResult,
        compute=compute,
    )
    with session_scope() as s:
        # a reused render keeps the id its mark and manifest carry; this run gets its own row
        row_id = result.render_id if result.render_id == render_id else new_render_id()
        trust_repo.create_render(s, render_id=row_id, run_id=run_id, asset_id=result.output.asset_id,
                                 approved=qc.verdict.value == "pass",
                                 watermark_payload=f"{payload_from_id(result.render_id):016x}", consent_id=consent.consent_id, signed=True)
        repo.add_audit_event(s, actor="recast", action="render.created", subject_type="render", subject_id=row_id,
                             detail={"run_id": run_id, "asset": result.output.uri, "sha256": result.output.sha256,
                                     "identity": consent.identity, "consent": consent.consent_id, "scratch": consent.scratch})
    return result


def _delivery_check(out: Path, ingest: IngestResult, segments: list[SegmentResult], swaps: list[SwapChunkResult]) -> dict[str, float | int | None]:
    """Decode the deliverable: frame count must match the plate; PSNR vs the plate outside the face."""
    plate_frames = (f for c in ingest.chunks for f in read_frames(fetch(c.video)))
    masks = np.concatenate([changed_region(load_artifact(seg.analysis, PlateAnalysis).person_mask, load_artifact(sw.masks, SwapMatte).mask)
                            for seg, sw in zip(segments, swaps)])
    values = []
    n = 0
    for n, (delivered, plate) in enumerate(zip(read_frames(out), plate_frames), start=1):
        values.append(background_psnr(plate, delivered, masks[n - 1], BACKGROUND_DILATE_PX))
    if n != ingest.plate_info.frame_count:
        raise InternalError(f"deliverable has {n} frames, plate has {ingest.plate_info.frame_count}")
    return {"delivered_background_psnr_db": float(np.mean(values)) if values else None,
            "delivered_background_psnr_min_db": float(np.min(values)) if values else None}


def publish(result: RenderResult, output_path: Path, *, inputs: Sequence[str] = ()) -> Path:
    """Copy the stored deliverable to the user's output path: never over one of the shot's
    ``inputs`` (paths or URIs) or into the object store, written under a temporary name in the
    target directory and renamed into place only once its sha256 matches the stored deliverable,
    with the mode the umask gives new files. On any failure nothing is left at ``output_path``
    (a file that was already there stays as it was)."""
    output_path = Path(output_path)
    check_output_not_input(output_path, list(inputs), store_paths(get_settings()))
    check_output_writable(output_path)
    src = fetch(result.output)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{output_path.name}.", suffix=".partial" + output_path.suffix, dir=output_path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        shutil.copyfile(src, tmp)
        copied = sha256_file(tmp)
        if copied != result.output.sha256:
            raise OutputPathError(f"output '{output_path}': the copy's sha256 {copied[:16]}… differs from the stored deliverable's "
                                  f"{result.output.sha256[:16]}… (a full disk or a failing mount?)")
        os.chmod(tmp, new_file_mode())  # mkstemp made it private (0600)
        os.replace(tmp, output_path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OutputPathError):
            raise
        raise OutputPathError(f"output '{output_path}': cannot write ({exc.strerror or exc})") from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return output_path
