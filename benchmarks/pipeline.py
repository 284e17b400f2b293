"""End-to-end pipeline benchmark: fps, ms per frame per stage, peak RSS, orchestration overhead.

For a 512x512 clip and a 1280x720 clip of at least 300 frames (shorter shared clips are looped),
runs the ``swap_shot`` flow once through Prefect and once as the same stage functions called
directly in this process with the same parallelism, each in a fresh data directory so nothing
is reused. Prints one block per clip. Usage:

    .venv/bin/python benchmarks/pipeline.py [--frames 300] [--media ../shared/media]
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def looped_plate(src: Path, frames: int, out: Path) -> Path:
    """At least ``frames`` frames of ``src`` (played forwards then backwards, so motion stays smooth)."""
    import av
    import numpy as np

    from recast.media.synthetic import write_h264

    with av.open(str(src)) as c:
        rate = c.streams.video[0].average_rate
        clip = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    seq = []
    forward = True
    while len(seq) < frames:
        seq.extend(clip if forward else clip[::-1])
        forward = not forward
    return write_h264(np.stack(seq[:frames]), out, rate=Fraction(rate), crf=16)


def use_data_dir(path: Path) -> None:
    from recast.settings import reset_settings
    from recast.tasks.common import reset_stores

    os.environ["RECAST_DATA_DIR"] = str(path)
    reset_settings()
    reset_stores()


def run_direct(plate: Path, source: Path, workers: int, mode: str) -> dict[str, float]:
    """The flow's stage functions, called directly (no Prefect), same chunk parallelism."""
    from recast.contracts import Mode, ShotParams
    from recast.db.migrate import ensure_schema
    from recast.settings import get_settings
    from recast.services import shots
    from recast.services.trust import require_consent
    from recast.tasks.background import reconstruct
    from recast.tasks.expression import retarget
    from recast.tasks.ingest import ingest
    from recast.tasks.qc import score_shot
    from recast.tasks.render import render_shot
    from recast.tasks.segment import analyze_source, segment_chunk
    from recast.tasks.swap import swap_chunk
    from recast.tasks.track import track_person

    ensure_schema(get_settings())
    params = ShotParams(mode=Mode(mode))
    shot_id, run_id = shots.submit_local_shot(plate=str(plate), sources=[str(source)], params=params)
    stages: dict[str, float] = {}
    pool = ThreadPoolExecutor(max_workers=workers)
    kw = dict(run_id=run_id, shot_id=shot_id)
    t = time.perf_counter()
    ing = ingest(**kw, plate=str(plate), sources=[str(source)], chunk_size=params.chunk_size)
    stages["ingest"] = time.perf_counter() - t
    total = ing.plate_info.frame_count
    chunks = list(enumerate(ing.chunks))
    t = time.perf_counter()
    src_f = pool.submit(analyze_source, **kw, source=ing.sources[0], name=str(source), mode=mode, source_face=None)
    segs = list(pool.map(lambda ic: segment_chunk(**kw, chunk=ic[1], chunk_index=ic[0], face_selector="largest", total_frames=total), chunks))
    src = src_f.result()
    stages["segment"] = time.perf_counter() - t
    t = time.perf_counter()
    track = track_person(**kw, ingest=ing, segments=segs, face_selector="largest")
    stages["track"] = time.perf_counter() - t
    backgrounds = [None] * len(chunks)
    if mode == "head":
        t = time.perf_counter()
        backgrounds = list(reconstruct(**kw, ingest=ing, segments=segs, track=track).chunks)
        stages["background"] = time.perf_counter() - t
    t = time.perf_counter()
    expr = retarget(**kw, track=track, source=src, expression="transfer", edits=[])
    stages["expression"] = time.perf_counter() - t
    t = time.perf_counter()
    swaps = list(pool.map(lambda ic: swap_chunk(**kw, chunk=ic[1], chunk_index=ic[0], segment=segs[ic[0]], track=track, expression=expr,
                                                source=src, background=backgrounds[ic[0]], backend="classic", mode=mode, total_frames=total), chunks))
    stages["swap"] = time.perf_counter() - t
    t = time.perf_counter()
    qc = score_shot(**kw, ingest=ing, segments=segs, track=track, swaps=swaps, source=src, mode=mode)
    stages["qc"] = time.perf_counter() - t
    t = time.perf_counter()
    render_shot(**kw, shot=shots.shot_code(shot_id), ingest=ing, segments=segs, swaps=swaps, qc=qc, consent=require_consent(shot_id))
    stages["render"] = time.perf_counter() - t
    pool.shutdown()
    return {k: v * 1000 for k, v in stages.items()}


def run_flow(plate: Path, source: Path, out: Path, mode: str) -> dict:
    from recast.contracts import Mode, ShotParams
    from recast.flows.swap_shot import swap_shot
    from recast.services import shots

    shot_id, run_id = shots.submit_local_shot(plate=str(plate), sources=[str(source)], params=ShotParams(mode=Mode(mode)))
    return swap_shot(shot_id=shot_id, run_id=run_id, output_path=str(out)).summary()


def peak_rss_mb() -> tuple[float, float]:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return own, children


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--media", type=Path, default=REPO.parent / "shared" / "media")
    ap.add_argument("--only", choices=["512", "720"], default=None)
    ap.add_argument("--mode", choices=["head", "face"], default="head")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="recast-bench-"))
    os.environ["RECAST_DATA_DIR"] = str(work / "data-startup")
    from recast.settings import configure_prefect_environment, get_settings

    configure_prefect_environment(get_settings())
    from prefect import flow

    @flow(name="startup-probe")
    def probe() -> int:
        return 1

    t = time.perf_counter()
    probe()
    startup = time.perf_counter() - t
    t = time.perf_counter()
    probe()
    per_flow = time.perf_counter() - t
    print(f"mode {args.mode}; prefect start-up (first flow, temporary server): {startup:.1f} s; an empty flow afterwards: {per_flow * 1000:.0f} ms")

    cases = [
        ("512x512", args.media / "videos" / "liveportrait_d3.mp4", args.media / "images" / "deepface_img17.jpg"),
        ("1280x720", args.media / "videos" / "liveportrait_s18.mp4", args.media / "images" / "deepface_img17.jpg"),
    ]
    if args.only:
        cases = [c for c in cases if c[0].startswith(args.only) or c[0].endswith(args.only)]
    from recast.settings import get_settings as gs

    for label, clip, source in cases:
        plate = looped_plate(clip, args.frames, work / f"plate-{label}.mp4")
        use_data_dir(work / f"data-flow-{label}")
        workers = gs().worker_count
        t = time.perf_counter()
        summary = run_flow(plate, source, work / f"out-{label}.mp4", args.mode)
        flow_s = time.perf_counter() - t
        use_data_dir(work / f"data-direct-{label}")
        t = time.perf_counter()
        direct = run_direct(plate, source, workers, args.mode)
        direct_s = time.perf_counter() - t
        n = summary["frames"]
        own, children = peak_rss_mb()
        print(f"\n== {label} {args.mode} mode: {clip.name} looped to {n} frames, {workers} workers, chunk {gs().chunk_size}")
        print(f"end-to-end through Prefect: {flow_s:.1f} s = {n / flow_s:.2f} fps")
        print(f"same stages called directly: {direct_s:.1f} s = {n / direct_s:.2f} fps")
        print(f"orchestration overhead ratio (flow / direct): {flow_s / direct_s:.3f}")
        print("ms per frame per stage (flow | direct):")
        for k in summary["stages"]:
            print(f"  {k:<10} {summary['stages'][k] / n:8.2f} | {direct.get(k, float('nan')) / n:8.2f}")
        qc = summary["qc"]
        print(f"qc: verdict {qc['verdict']}, identity transfer {qc['identity_transfer_rate']:.2f}, "
              f"pose error {qc['pose_error_deg']}, delivered background PSNR {qc['delivered_background_psnr_db']:.2f} dB")
        print(f"peak RSS so far: this process {own:.0f} MB, largest child {children:.0f} MB")


if __name__ == "__main__":
    main()
