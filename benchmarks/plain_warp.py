"""The plain-warp reference of the quality matrix (a benchmark, not part of recast).

The plainest landmark-driven face swap: the source photo's face mesh (MediaPipe's 478 landmarks)
is warped onto the plate's 478 landmarks in every frame, triangle by triangle (Delaunay of the
source landmarks, one affine map per triangle), and Poisson-blended into the plate
(``cv2.seamlessClone`` over the convex hull of the plate's landmarks). Frames without a face are
the plate's. What it shows: how closely *any* landmark-driven warp follows the plate's head pose,
mouth/eyes and motion, the bar recast's pose/expression/motion errors are read against.

    .venv/bin/python benchmarks/plain_warp.py SOURCE PLATE OUT.mp4 [--source-face index:N]
"""

from __future__ import annotations

import sys
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
from scipy.spatial import Delaunay

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def plain_warp(source: Path, plate: Path, out: Path, source_face: str = "largest") -> dict:
    """Writes the reference at ``out`` (H.264, the plate's size, rate and frame count)."""
    from recast.media.synthetic import write_h264
    from recast.models.face import FaceAnalyzer, select_face

    src = cv2.cvtColor(cv2.imread(str(source), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    with FaceAnalyzer(static_images=True) as fa:
        face = select_face(fa.detect(src), source_face)
    if face is None:
        raise ValueError(f"source '{source}': no face ({source_face})")
    s_lm = face.landmarks[:, :2].astype(np.float32)
    tris = Delaunay(s_lm).simplices
    with av.open(str(plate)) as c:
        rate = c.streams.video[0].average_rate
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    result, warped_frames = [], 0
    with FaceAnalyzer(static_images=False, max_faces=1) as fa:
        for frame in frames:
            faces = fa.detect(frame)
            if not faces:
                result.append(frame)
                continue
            d_lm = faces[0].landmarks[:, :2].astype(np.float32)
            depth = faces[0].landmarks[:, 2]
            h, w = frame.shape[:2]
            warped, covered = np.zeros_like(frame), np.zeros((h, w), np.uint8)
            for t in tris[np.argsort(-depth[tris].mean(axis=1))]:  # far triangles first, near ones drawn over them
                s, d = s_lm[t], d_lm[t]
                if np.cross(s[1] - s[0], s[2] - s[0]) * np.cross(d[1] - d[0], d[2] - d[0]) <= 0:
                    continue  # turned away from the camera on the plate (folded over)
                x, y, bw, bh = cv2.boundingRect(d)
                x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + bw, w), min(y + bh, h)
                if x1 <= x0 or y1 <= y0:
                    continue
                m = cv2.getAffineTransform(s, d - np.float32([x0, y0]))
                patch = cv2.warpAffine(src, m, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
                tri_mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
                cv2.fillConvexPoly(tri_mask, np.round(d - [x0, y0]).astype(np.int32), 1)
                warped[y0:y1, x0:x1][tri_mask > 0] = patch[tri_mask > 0]
                covered[y0:y1, x0:x1] |= tri_mask
            mask = np.zeros((h, w), np.uint8)
            cv2.fillConvexPoly(mask, cv2.convexHull(np.round(d_lm).astype(np.int32)), 255)
            mask = cv2.erode(mask & (covered * 255), np.ones((3, 3), np.uint8))
            mask[:2], mask[-2:], mask[:, :2], mask[:, -2:] = 0, 0, 0, 0  # seamlessClone needs a border
            x, y, bw, bh = cv2.boundingRect(mask)
            if bw < 4 or bh < 4:
                result.append(frame)
                continue
            result.append(cv2.seamlessClone(warped, frame, mask, (x + bw // 2, y + bh // 2), cv2.NORMAL_CLONE))
            warped_frames += 1
    write_h264(np.stack(result), out, rate=Fraction(rate), crf=16)
    return {"frames": len(frames), "warped_frames": warped_frames}


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source", type=Path)
    ap.add_argument("plate", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--source-face", default="largest")
    a = ap.parse_args()
    print(plain_warp(a.source, a.plate, a.out, a.source_face))
