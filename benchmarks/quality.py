"""Head-swap quality benchmark on real (source photo, plate clip) pairs from ../shared/media.

For each pair, runs the ``swap_shot`` flow (head mode by default) and prints the QC metrics the
issue is judged by: identity transfer rate, hair transfer rate, pose error, expression error,
landmark jitter and pixel flicker relative to the plate, background PSNR outside the dilated
person/head region, seam score and fps; then the averages. Saves a contact sheet PNG per pair
(plate | output, 6 frames) under --out so a person can look. Outputs made from the shared media
are for local inspection only: never publish them.

    .venv/bin/python benchmarks/quality.py [--frames 150] [--mode head|face] [--only NAME] [--out /tmp/recast-quality]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# (name, source photo, plate clip, extra params, what it exercises)
PAIRS = [
    ("longhair-src", "images/deepface_img3.jpg", "videos/liveportrait_d0.mp4", {}, "long blonde hair source onto short black hair, green screen"),
    ("longhair-both", "images/deepface_img45.jpg", "videos/liveportrait_d3.mp4", {}, "long black hair source onto long brown hair plate, head tilts"),
    ("glasses-turn", "images/deepface_img25.jpg", "videos/liveportrait_d12.mp4", {}, "glasses on both, plate looks up and sideways (three-quarter)"),
    ("small-face-720p", "images/face_recognition_obama.jpg", "videos/liveportrait_s18.mp4", {}, "small face in a 1280x720 frame"),
    ("scene-cuts", "images/deepface_img17.jpg", "videos/ghost_nggyup.mp4", {}, "music video with scene cuts, face size varies"),
    ("group-source", "images/insightface_t1.jpg", "videos/videoretalking_1.mp4", {"source_face": "index:1"}, "group photo as source with index:1, VFR plate"),
    ("talking", "images/skimage_astronaut.png", "videos/sadtalker_WDA_AlexandriaOcasioCortez_000.mp4", {}, "talking head, smiling source"),
]

KEYS = ["identity_transfer_rate", "hair_transfer_rate", "pose_error_deg", "expression_error", "jitter_ratio", "flicker_ratio",
        "background_psnr_db", "delivered_background_psnr_db", "seam_score"]


def trimmed(src: Path, frames: int, out: Path) -> Path:
    """The first ``frames`` frames of a clip (with its audio), so the benchmark stays short."""
    from recast.media.synthetic import first_frames

    return first_frames(src, frames, out, crf=16)


def contact_sheet(plate: Path, output: Path, path: Path, n: int = 6) -> None:
    import av
    import cv2
    import numpy as np

    def frames(p: Path) -> list:
        with av.open(str(p)) as c:
            return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]

    a, b = frames(plate), frames(output)
    idx = np.linspace(0, min(len(a), len(b)) - 1, n).round().astype(int)
    scale = 256 / a[0].shape[0]
    cols = [np.concatenate([cv2.resize(a[i], None, fx=scale, fy=scale), cv2.resize(b[i], None, fx=scale, fy=scale)], axis=0) for i in idx]
    cv2.imwrite(str(path), np.concatenate(cols, axis=1)[:, :, ::-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--media", type=Path, default=REPO.parent / "shared" / "media")
    ap.add_argument("--frames", type=int, default=150, help="frames of each plate (0 = whole clip)")
    ap.add_argument("--mode", default="head", choices=["head", "face"])
    ap.add_argument("--only", default=None)
    ap.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "recast-quality")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("RECAST_DATA_DIR", str(args.out / "data"))
    from recast.settings import configure_prefect_environment, get_settings

    configure_prefect_environment(get_settings())
    from recast.contracts import Mode, ShotParams
    from recast.db.migrate import ensure_schema
    from recast.flows.swap_shot import swap_shot
    from recast.services import shots

    ensure_schema(get_settings())
    rows = []
    for name, src, clip, extra, what in PAIRS:
        if args.only and args.only != name:
            continue
        plate = args.media / clip
        if args.frames:
            plate = trimmed(plate, args.frames, args.out / f"{name}-plate.mp4")
        params = ShotParams(mode=Mode(args.mode), **extra)
        shot_id, run_id = shots.submit_local_shot(plate=str(plate), sources=[str(args.media / src)], params=params)
        out = args.out / f"{name}-{args.mode}.mp4"
        t = time.perf_counter()
        try:
            summary = swap_shot(shot_id=shot_id, run_id=run_id, output_path=str(out)).summary()
        except Exception as exc:  # report and go on: one bad pair must not hide the others
            print(f"{name}: FAILED: {exc}", flush=True)
            continue
        elapsed = time.perf_counter() - t
        qc = summary["qc"]
        row = {"pair": name, "what": what, "frames": summary["frames"], "fps": summary["frames"] / elapsed, "verdict": qc["verdict"],
               **{k: qc.get(k) for k in KEYS}, "stages_ms_per_frame": {k: v / summary["frames"] for k, v in summary["stages"].items()}}
        rows.append(row)
        contact_sheet(plate, out, args.out / f"{name}-{args.mode}-sheet.png")
        print(json.dumps(row), flush=True)

    def fmt(v):
        return "   n/a" if v is None else f"{v:6.2f}"

    print(f"\n{'pair':<16}" + "".join(f"{k[:12]:>13}" for k in KEYS) + f"{'fps':>8}")
    for r in rows:
        print(f"{r['pair']:<16}" + "".join(f"{fmt(r[k]):>13}" for k in KEYS) + f"{r['fps']:8.2f}")
    if rows:
        avg = {k: [r[k] for r in rows if r[k] is not None] for k in KEYS}
        print(f"{'average':<16}" + "".join(f"{fmt(sum(v) / len(v) if v else None):>13}" for v in avg.values())
              + f"{sum(r['fps'] for r in rows) / len(rows):8.2f}")
    print(f"\ncontact sheets and outputs in {args.out} (local inspection only; never publish them)")


if __name__ == "__main__":
    main()
