"""QC cost per frame against swap cost per frame: QC must stay under 20% of the swap.

Runs ``swap_shot`` (face and head mode) on the first ``--frames`` frames of a shared talking-head
clip (looped when shorter) in a fresh data directory, then reads the stage runs of that run from
the database: the summed ``elapsed_ms`` of the swap chunks (the work one worker would do; chunks
run in parallel, so wall time is shorter) against the ``qc`` stage's (one task, single-threaded)
and the ``report`` stage's. Prints ms per frame and the ratio; exits 1 when QC costs more than
20% of the swap. Usage:

    .venv/bin/python benchmarks/qc.py [--frames 300] [--mode face|head|both] [--media ../shared/media]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

BUDGET = 0.20


def stage_ms(run_id: str) -> dict[str, float]:
    """Summed elapsed ms per stage of a run (chunks added up)."""
    from recast.db import repository as repo
    from recast.db.session import session_scope

    out: dict[str, float] = {}
    with session_scope() as s:
        for r in repo.stage_runs_for_run(s, run_id):
            if r.status != "done":
                continue
            ms = float((r.metrics or {}).get("elapsed_ms") or 0.0)
            out[r.stage] = out.get(r.stage, 0.0) + ms
    return out


def run(mode: str, plate: Path, source: Path, workdir: Path) -> dict[str, float]:
    from recast.contracts import Mode, ShotParams
    from recast.settings import configure_prefect_environment, reset_settings

    os.environ["RECAST_DATA_DIR"] = str(workdir / f"data-{mode}")
    reset_settings()
    configure_prefect_environment()
    from recast.db.migrate import ensure_schema
    from recast.flows.swap_shot import swap_shot
    from recast.settings import get_settings
    from recast.tasks import shots

    ensure_schema(get_settings())
    shot_id, run_id = shots.submit_local_shot(plate=str(plate), sources=[str(source)], params=ShotParams(mode=Mode(mode)))
    summary = swap_shot(shot_id=shot_id, run_id=run_id, review="never")
    ms = stage_ms(run_id)
    ms["frames"] = float(summary["frames"])
    return ms


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--mode", choices=("face", "head", "both"), default="both")
    ap.add_argument("--media", type=Path, default=REPO.parent / "shared" / "media")
    args = ap.parse_args()
    from benchmarks.pipeline import looped_plate

    work = Path(tempfile.mkdtemp(prefix="recast-qc-bench-"))
    plate = looped_plate(args.media / "videos" / "aniportrait_pose_ref_video.mp4", args.frames, work / "plate.mp4")
    source = args.media / "images" / "deepface_img17.jpg"
    worst = 0.0
    modes = ("face", "head") if args.mode == "both" else (args.mode,)
    for mode in modes:
        ms = run(mode, plate, source, work)
        n = ms["frames"]
        swap, qc, report = ms.get("swap", 0.0) / n, ms.get("qc", 0.0) / n, ms.get("report", 0.0) / n
        ratio = qc / swap if swap else float("inf")
        worst = max(worst, ratio)
        print(f"{mode:5s} {int(n)} frames 512x512: swap {swap:7.1f} ms/frame   qc {qc:6.1f} ms/frame ({100 * ratio:4.1f}% of swap)   "
              f"report {report:5.1f} ms/frame   segment {ms.get('segment', 0.0) / n:6.1f} ms/frame", flush=True)
    print(f"QC budget {100 * BUDGET:.0f}% of the swap: {'OK' if worst <= BUDGET else 'OVER'} (worst {100 * worst:.1f}%)")
    return 0 if worst <= BUDGET else 1


if __name__ == "__main__":
    raise SystemExit(main())
