"""QC cost per frame against swap cost per frame: QC must stay under 20% of the swap.

For each mode (face, head) on the first ``--frames`` frames of a shared talking-head clip (looped
when shorter), in a fresh data directory, the stage functions of ``swap_shot`` are called
directly and one chunk at a time, so each stage's time is its own work and not a share of
cores fought over by parallel chunks:

* swap: the swap chunks' time, minus the part each spent on QC's per-frame measurements
  (``qc_observe_ms``: the output face mesh, background PSNR, flicker, seam, computed on the
  frames the swap has in memory; see :mod:`recast.models.qc_frames`);
* QC: that part plus the ``qc`` stage (identity embeddings on the sampled frames, decoded by
  seeking, pose/expression/jitter, the verdict). The ``report`` stage (contact sheet, plots,
  HTML) is printed apart.

Wall time and process CPU time are both printed (the swap records only the wall time of its QC
measurements, which run on two threads, so their CPU time is measured by running them again on
the same chunks). Exits 1 when QC costs more than 20% of the swap, by wall or by CPU time, in
either mode. Usage:

    .venv/bin/python benchmarks/qc.py [--frames 300] [--mode face|head|both] [--media ../shared/media]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

BUDGET = 0.20


class Clock:
    """Wall and process-CPU milliseconds of a block."""

    def __enter__(self) -> "Clock":
        self._w, self._c = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = (time.perf_counter() - self._w) * 1000.0
        self.cpu = (time.process_time() - self._c) * 1000.0


def run(mode: str, plate: Path, source: Path, workdir: Path) -> dict[str, float]:
    """Every stage of one shot, serially; ms per stage (wall and cpu) and the frame count."""
    from benchmarks.pipeline import use_data_dir

    use_data_dir(workdir / f"data-{mode}")
    import prefect  # noqa: F401  (imported by every flow run; not QC's cost)

    from recast.contracts import Mode, ShotParams
    from recast.db.migrate import ensure_schema
    from recast.settings import get_settings
    from recast.services import shots
    from recast.tasks.background import reconstruct
    from recast.tasks.expression import retarget
    from recast.tasks.ingest import ingest
    from recast.tasks.qc import score_shot
    from recast.tasks.report import build_report
    from recast.tasks.segment import analyze_source, segment_chunk
    from recast.tasks.swap import swap_chunk
    from recast.tasks.track import track_person

    ensure_schema(get_settings())
    params = ShotParams(mode=Mode(mode))
    shot_id, run_id = shots.submit_local_shot(plate=str(plate), sources=[str(source)], params=params)
    kw = dict(run_id=run_id, shot_id=shot_id)
    ing = ingest(**kw, plate=str(plate), sources=[str(source)], chunk_size=params.chunk_size)
    total = ing.plate_info.frame_count
    src = analyze_source(**kw, source=ing.sources[0], name=str(source), mode=mode, source_face=None)
    segs = [segment_chunk(**kw, chunk=c, chunk_index=i, face_selector="largest", total_frames=total) for i, c in enumerate(ing.chunks)]
    track = track_person(**kw, ingest=ing, segments=segs, face_selector="largest")
    backgrounds = list(reconstruct(**kw, ingest=ing, segments=segs, track=track).chunks) if mode == "head" else [None] * len(ing.chunks)
    expr = retarget(**kw, track=track, source=src, expression="transfer", edits=[])
    with Clock() as swap_clock:
        swaps = [swap_chunk(**kw, chunk=c, chunk_index=i, segment=segs[i], track=track, expression=expr, source=src,
                            background=backgrounds[i], backend="classic", mode=mode, total_frames=total) for i, c in enumerate(ing.chunks)]
    observe = sum(float(s.metrics["qc_observe_ms"]) for s in swaps)
    observe_cpu = observation_cpu_ms(ing, segs, track, swaps)
    with Clock() as qc_clock:
        qc = score_shot(**kw, ingest=ing, segments=segs, track=track, swaps=swaps, source=src, mode=mode)
    with Clock() as report_clock:
        build_report(**kw, shot=f"bench-{mode}", plate=ing.chunks, outputs=[s.video for s in swaps], qc=qc)
    return {
        "frames": float(total),
        "swap_wall": swap_clock.wall - observe, "swap_cpu": swap_clock.cpu - observe_cpu,
        "observe": observe, "observe_cpu": observe_cpu, "qc_stage_wall": qc_clock.wall, "qc_stage_cpu": qc_clock.cpu,
        "report_wall": report_clock.wall, "verdict": qc.verdict.value,
        "identity_samples": float(qc.metrics.get("identity_samples") or 0),
        "size": f"{ing.plate_info.width}x{ing.plate_info.height}",
    }


def observation_cpu_ms(ing, segs, track, swaps) -> float:
    """Process CPU time of QC's per-frame measurements, measured again on the same chunks (frames
    decoded before the clock starts): the swap records their wall time only, and they use two
    threads (face mesh beside the pixel metrics)."""
    from recast.media import read_all_frames
    from recast.models.qc_frames import observe_chunk
    from recast.media.artifacts import PlateAnalysis, ShotTracks, SwapMatte
    from recast.tasks.common import fetch, load_artifact

    tr = load_artifact(track.tracks, ShotTracks)
    total = 0.0
    for chunk, seg, sw in zip(ing.chunks, segs, swaps):
        start, end = chunk.frames.start, chunk.frames.end
        person, change = load_artifact(seg.analysis, PlateAnalysis).person_mask, load_artifact(sw.masks, SwapMatte).mask
        plate, out = list(read_all_frames(fetch(chunk.video))), list(read_all_frames(fetch(sw.video)))
        with Clock() as clock:
            observe_chunk(start=start, plate_frames=plate, out_frames=out, exclude=person, change=change, plate_boxes=tr.boxes[start:end],
                          face_found=tr.present[start:end], plate_landmarks=tr.raw_landmarks[start:end])
        total += clock.cpu
    return total


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--mode", choices=("face", "head", "both"), default="both")
    ap.add_argument("--media", type=Path, default=REPO.parent / "shared" / "media")
    ap.add_argument("--clip", default="aniportrait_pose_ref_video.mp4", help="plate clip under MEDIA/videos (liveportrait_s18.mp4 for 1280x720)")
    args = ap.parse_args()
    from benchmarks.pipeline import looped_plate

    work = Path(tempfile.mkdtemp(prefix="recast-qc-bench-"))
    plate = looped_plate(args.media / "videos" / args.clip, args.frames, work / "plate.mp4")
    source = args.media / "images" / "deepface_img17.jpg"
    worst = 0.0
    modes = ("face", "head") if args.mode == "both" else (args.mode,)
    rows = []
    for mode in modes:
        r = run(mode, plate, source, work)
        n = r["frames"]
        swap = r["swap_wall"] / n
        qc = (r["observe"] + r["qc_stage_wall"]) / n
        ratio = qc / swap if swap else float("inf")
        swap_cpu = r["swap_cpu"] / n
        qc_cpu = (r["observe_cpu"] + r["qc_stage_cpu"]) / n
        worst = max(worst, ratio, qc_cpu / swap_cpu)
        rows.append(f"{mode:5s} {int(n)} frames {r['size']}: swap {swap:6.1f} ms/frame (cpu {swap_cpu:6.1f})   "
                    f"qc {qc:5.1f} ms/frame = per-frame measurements {r['observe'] / n:4.1f} + qc stage {r['qc_stage_wall'] / n:4.1f} "
                    f"(cpu {qc_cpu:5.1f}; {int(r['identity_samples'])} identity samples)   "
                    f"qc/swap {100 * ratio:4.1f}% (cpu {100 * qc_cpu / swap_cpu:4.1f}%)   report {r['report_wall'] / n:4.1f} ms/frame   verdict {r['verdict']}")
        print(rows[-1], flush=True)
    print(f"QC budget {100 * BUDGET:.0f}% of the swap (wall and cpu): {'OK' if worst <= BUDGET else 'OVER'} (worst {100 * worst:.1f}%)")
    return 0 if worst <= BUDGET else 1


if __name__ == "__main__":
    raise SystemExit(main())
