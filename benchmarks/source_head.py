"""Time the source head cut-out (``extract_source_head``) on every shared photo.

    PYTHONPATH=. .venv/bin/python benchmarks/source_head.py [--media DIR] [--repeat N]

Prints, per photo, the face height, the milliseconds of the cut (person segmentation and pose
included, as the source stage runs it: the best of ``--repeat`` runs) and the matte's area in
face heights squared; then the median and the maximum. The cut runs once per source photo and
shot, so it is seconds per shot at most; this keeps it measured when the matte grows a step.
Photos the head mode refuses (a profile, no head) are listed with the reason.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--media", type=Path, default=REPO.parent / "shared" / "media")
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args(argv)

    from recast.errors import RecastError
    from recast.models.face import FaceAnalyzer, select_face
    from recast.models.head import chosen_person_mask, extract_source_head, face_frame

    photos = sorted(p for p in (args.media / "images").iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
    times = []
    print(f"{'photo':45s} {'face px':>8s} {'ms':>8s} {'matte H^2':>10s}")
    with FaceAnalyzer(static_images=True, max_faces=8) as fa:
        for path in photos:
            rgb = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
            faces = fa.detect(rgb)
            face = select_face(faces, "largest")
            if face is None:
                print(f"{path.name:45s} no face")
                continue
            best = float("inf")
            try:
                for _ in range(args.repeat):
                    t = time.perf_counter()
                    others = [f for f in faces if f is not face]
                    person = chosen_person_mask(rgb, face, others) if others else None
                    head = extract_source_head(rgb, face.landmarks, person_mask=person, role_name=path.name)
                    best = min(best, (time.perf_counter() - t) * 1000)
            except RecastError as exc:
                print(f"{path.name:45s} refused: {exc}")
                continue
            H = face_frame(np.asarray(face.landmarks, np.float64)).height
            times.append(best)
            print(f"{path.name:45s} {H:8.0f} {best:8.0f} {head.alpha.sum() / H ** 2:10.2f}")
    if times:
        print(f"\n{len(times)} photos: median {statistics.median(times):.0f} ms, max {max(times):.0f} ms per cut")
    return 0


if __name__ == "__main__":
    sys.exit(main())
