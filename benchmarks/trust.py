"""Cost of recast's trust layer: C2PA signing per file and watermark embed/decode per frame.

    python benchmarks/trust.py [--frames N]

Signing is timed on real H.264 mp4 files of N frames (512x512 and 1280x720, cut from the shared
test media); the watermark on the same frames with a face-sized ellipse as the region.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import av
import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from recast.media.credentials import ensure_dev_signing_identity, read_credentials, sign_video  # noqa: E402
from recast.models.watermark import (  # noqa: E402
    WatermarkDecoder,
    WatermarkEmbedder,
    WatermarkKey,
    payload_from_id,
    watermark_psnr,
)

VIDEOS = REPO.parent / "shared" / "media" / "videos"
CLIPS = {"512x512": VIDEOS / "liveportrait_d0.mp4", "1280x720": VIDEOS / "liveportrait_s18.mp4"}


def _cut(src: Path, dst: Path, n: int) -> list[np.ndarray]:
    frames = []
    with av.open(str(src)) as c, av.open(str(dst), "w") as out:
        s = None
        for i, f in enumerate(c.decode(video=0)):
            if i >= n:
                break
            if s is None:
                s = out.add_stream("libx264", rate=25)
                s.width, s.height, s.pix_fmt = f.width, f.height, "yuv420p"
                s.codec_context.options = {"crf": "18", "preset": "veryfast"}
            frames.append(f.to_ndarray(format="rgb24"))
            g = f.reformat(format="yuv420p")
            g.pts = None  # the source time base is not the output's: let the encoder number frames
            for p in s.encode(g):
                out.mux(p)
        for p in s.encode(None):
            out.mux(p)
    return frames


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=48)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ident, _ = ensure_dev_signing_identity(tmp / "ca")
        key = WatermarkKey(seed=1)
        print(f"{'size':>9} {'frames':>6} {'sign ms/file':>12} {'sign ms/frame':>13} {'read ms':>8} "
              f"{'embed ms/fr':>11} {'decode ms/fr':>12} {'psnr dB':>8}")
        for label, src in CLIPS.items():
            clip = tmp / f"{label}.mp4"
            frames = _cut(src, clip, args.frames)
            n = len(frames)
            t = time.perf_counter()
            reps = 3
            for i in range(reps):
                sign_video(clip, tmp / f"signed{i}.mp4", identity=ident, parent=clip, parent_title="plate.mp4",
                           render_id="bench", shot="s", models=[], identity_name=None, consent=None, scratch=True)
            sign_ms = (time.perf_counter() - t) * 1000 / reps
            t = time.perf_counter()
            read_credentials(tmp / "signed0.mp4")
            read_ms = (time.perf_counter() - t) * 1000
            h, w = frames[0].shape[:2]
            mask = np.zeros((h, w), np.uint8)
            cv2.ellipse(mask, (w // 2, int(h * 0.45)), (int(h * 0.21), int(h * 0.28)), 0, 0, 360, 255, -1)
            emb = WatermarkEmbedder(payload_from_id("bench"), key)
            emb.embed(frames[0], mask, 0)  # builds the per-size pattern once, as a render does
            t = time.perf_counter()
            marked = [emb.embed(f, mask, i) for i, f in enumerate(frames)]
            embed_ms = (time.perf_counter() - t) * 1000 / n
            psnr = min(watermark_psnr(f, g, mask) for f, g in zip(frames, marked))
            dec = WatermarkDecoder(key)
            t = time.perf_counter()
            for g in marked:
                dec.add_frame(g)
            res = dec.result()
            decode_ms = (time.perf_counter() - t) * 1000 / n
            assert res.found
            print(f"{label:>9} {n:>6} {sign_ms:>12.1f} {sign_ms / n:>13.2f} {read_ms:>8.1f} "
                  f"{embed_ms:>11.2f} {decode_ms:>12.2f} {psnr:>8.1f}")


if __name__ == "__main__":
    main()
