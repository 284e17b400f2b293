"""Quality matrix: recast's QC over a fixed set of shared (source photo, plate clip) pairs, in head
and face mode, next to the plain-warp reference (``benchmarks/plain_warp.py``) on every pair.

The standard set (:data:`STANDARD_SET`) is 60 pairs of the 29 photos of ``../shared/media/images``
and the 15 clips of ``../shared/media/videos``, each clip used 4 times, each photo twice (two
photos three times), no pair twice. It was drawn once with ``random.Random(14)`` (the 29 photos
twice plus two single-face photos drawn at random, the clips four times, shuffled until no pair
repeats) and is frozen here, so the figures quoted before and after a change are on the same
pairs even if files are added to the shared media. Every plate is the first 2 s of its clip
(``round(2 × average rate)`` frames, re-encoded H.264 CRF 16, with its audio).

Group photos. Four photos hold several faces (``insightface_t1.jpg`` 4, ``dlib_2007_007763.jpg``
4, ``dlib_2008_002506.jpg`` 3, ``face_recognition_kit_with_rose.jpg`` 2). Without a choice
recast refuses them (exit 3, "choose one with --source-face index:N"), so they would measure
nothing. They are kept, with ``--source-face index:0`` (the largest face, the person a user
would most likely mean): every photo is then used at least twice, and the small faces of the
dlib photos (about 45 px) exercise the small-source path. :data:`SOURCE_FACE` lists them.

Per pair: first each mode's swap, the real ``swap_shot`` flow in this process (SQLite and a
local object store in one fresh temporary data directory for the whole invocation; Prefect's
temporary server starts once, at the first pair; models stay loaded; ``review="never"``,
``deliver_on_fail=True`` so a failed output is still written for the montage). The stage cache
is the product's own: the plate's ingest/segment/track are computed once per clip and reused by
the other mode, by the other pairs on the same clip and by the reference's QC, as they would be
for a user (nothing is reused from an earlier invocation). Every numeric key of the QC metrics
becomes a CSV column (measures added to QC appear on their own), with the verdict and the
reason records (``recast.services.qc.qc_of_shot``). Then the reference: written by
:func:`plain_warp.plain_warp` and scored by ``recast.flows.score_files`` (what ``recast qc
--plate --output --source`` runs) in face mode; its numeric metrics are the ``ref_*`` columns
(same values on the head and face rows). Read ``background_psnr_db`` across the two with care:
inside a swap QC knows the swap's masks exactly (100 dB = nothing changed outside them), on
files it estimates the changed region.

Outputs under ``--out`` (default ``/tmp/quality_matrix/<UTC time>``; made from the shared
media, so local inspection only, never commit or publish them):

* ``matrix.csv``: one row per pair × mode, rewritten after every pair (a stopped run keeps
  what it measured); a pair that fails (no face, refused source, crash) is a row with
  verdict ``error`` and the error text, and the run goes on;
* ``montages/<pair>-<mode>.png``: 4 frames (those named by the reasons first, then spread over
  the clip), cropped to the region the swap changed, in rows plate | output | QC overlay (the
  difference heat map of QC's contact sheet over a grey copy of the output, with the regions
  of ``recast.models.qc_defects`` recomputed on these frames outlined and their per-frame
  values written, when that module is there) | plain warp; verdict and reasons on top;
* ``index.html``: every row worst first (error, fail, review, pass; then more reasons first,
  then larger pose error), montages inline by relative path;
* printed: the share of pairs per verdict; per mode the median and the worst-decile bound of
  every measure (90th percentile; 10th where low is bad; for ``motion_ratio`` and
  ``jitter_ratio``, whose ideal is 1, the value farthest from 1); recast's pose/expression/
  motion next to the reference's; seconds per pair per mode and a projection for the standard
  set and ``--sample 12`` (from the seconds per megapixel-frame measured after the first pair).

``--sample N`` draws N pairs of the chosen set with ``--seed`` (14), spread over as many clips
and photos as it can (``--sample 12``: 12 different clips, 12 different photos). ``QM_DEBUG=1``
prints the traceback of a failed pair.

    .venv/bin/python benchmarks/quality_matrix.py                 # the 60-pair standard set, both modes
    .venv/bin/python benchmarks/quality_matrix.py --sample 12     # a seeded subset of it
    .venv/bin/python benchmarks/quality_matrix.py --all           # every photo x every clip (435 pairs, hours)
    options: --mode head|face|both  --out DIR  --seed N  --only PAIR_ID  --no-reference  --media DIR
"""

from __future__ import annotations

import argparse
import csv
import html
import math
import os
import random
import shutil
import statistics
import sys
import tempfile
import textwrap
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

SECONDS = 2.0

#: photos with several faces and the face used (see the module docstring)
SOURCE_FACE = {
    "insightface_t1.jpg": "index:0",
    "dlib_2007_007763.jpg": "index:0",
    "dlib_2008_002506.jpg": "index:0",
    "face_recognition_kit_with_rose.jpg": "index:0",
}

#: the standard set: (photo, clip), drawn once with random.Random(14) and frozen
STANDARD_SET = [
    ("deepface_img39.jpg", "aniportrait_pose_ref_video.mp4"),
    ("face_recognition_obama.jpg", "aniportrait_pose_ref_video.mp4"),
    ("face_recognition_rose_leslie_img2.jpg", "aniportrait_pose_ref_video.mp4"),
    ("facexlib_test2.jpg", "aniportrait_pose_ref_video.mp4"),
    ("deca_id08456-SEvpX9LhEP4-000957.jpg", "dreamtalk_W009_front_happy_level3_001.mp4"),
    ("deca_image02202.jpg", "dreamtalk_W009_front_happy_level3_001.mp4"),
    ("ghost_beckham.jpg", "dreamtalk_W009_front_happy_level3_001.mp4"),
    ("liveportrait_s2.jpg", "dreamtalk_W009_front_happy_level3_001.mp4"),
    ("dlib_2008_002506.jpg", "ghost_nggyup.mp4"),
    ("facexlib_test2.jpg", "ghost_nggyup.mp4"),
    ("insightface_Tom_Hanks_54745.png", "ghost_nggyup.mp4"),
    ("skimage_astronaut.png", "ghost_nggyup.mp4"),
    ("deca_id08456-SEvpX9LhEP4-000957.jpg", "liveportrait_d0.mp4"),
    ("face_recognition_alex-lacamoire.png", "liveportrait_d0.mp4"),
    ("face_recognition_biden.jpg", "liveportrait_d0.mp4"),
    ("liveportrait_s12.jpg", "liveportrait_d0.mp4"),
    ("deca_IMG_0392_inputs.jpg", "liveportrait_d12.mp4"),
    ("face_recognition_kit_with_rose.jpg", "liveportrait_d12.mp4"),
    ("liveportrait_d8.jpg", "liveportrait_d12.mp4"),
    ("sadtalker_people_0.png", "liveportrait_d12.mp4"),
    ("aniportrait_lyl.png", "liveportrait_d13.mp4"),
    ("deepface_img45.jpg", "liveportrait_d13.mp4"),
    ("face_recognition_kit_with_rose.jpg", "liveportrait_d13.mp4"),
    ("liveportrait_s12.jpg", "liveportrait_d13.mp4"),
    ("deca_image03786.png", "liveportrait_d19.mp4"),
    ("dlib_2007_007763.jpg", "liveportrait_d19.mp4"),
    ("face_recognition_obama.jpg", "liveportrait_d19.mp4"),
    ("insightface_t1.jpg", "liveportrait_d19.mp4"),
    ("deepface_img17.jpg", "liveportrait_d20.mp4"),
    ("deepface_img25.jpg", "liveportrait_d20.mp4"),
    ("face_recognition_rose_leslie_img2.jpg", "liveportrait_d20.mp4"),
    ("liveportrait_d9.jpg", "liveportrait_d20.mp4"),
    ("aniportrait_lyl.png", "liveportrait_d3.mp4"),
    ("face_recognition_kit_harington_john2.jpeg", "liveportrait_d3.mp4"),
    ("insightface_t1.jpg", "liveportrait_d3.mp4"),
    ("liveportrait_d9.jpg", "liveportrait_d3.mp4"),
    ("aniportrait_Aragaki.png", "liveportrait_d6_first12s.mp4"),
    ("dlib_2008_002506.jpg", "liveportrait_d6_first12s.mp4"),
    ("face_recognition_biden.jpg", "liveportrait_d6_first12s.mp4"),
    ("liveportrait_s2.jpg", "liveportrait_d6_first12s.mp4"),
    ("deca_id08456-SEvpX9LhEP4-000957.jpg", "liveportrait_s18.mp4"),
    ("deepface_img17.jpg", "liveportrait_s18.mp4"),
    ("deepface_img3.jpg", "liveportrait_s18.mp4"),
    ("face_recognition_alex-lacamoire.png", "liveportrait_s18.mp4"),
    ("deca_IMG_0392_inputs.jpg", "liveportrait_s32.mp4"),
    ("deepface_img3.jpg", "liveportrait_s32.mp4"),
    ("dlib_2007_007763.jpg", "liveportrait_s32.mp4"),
    ("liveportrait_d8.jpg", "liveportrait_s32.mp4"),
    ("deepface_img25.jpg", "sadtalker_WDA_AlexandriaOcasioCortez_000.mp4"),
    ("deepface_img39.jpg", "sadtalker_WDA_AlexandriaOcasioCortez_000.mp4"),
    ("face_recognition_kit_harington_john2.jpeg", "sadtalker_WDA_AlexandriaOcasioCortez_000.mp4"),
    ("ghost_beckham.jpg", "sadtalker_WDA_AlexandriaOcasioCortez_000.mp4"),
    ("deca_image03786.png", "videoretalking_1.mp4"),
    ("deepface_img45.jpg", "videoretalking_1.mp4"),
    ("insightface_Tom_Hanks_54745.png", "videoretalking_1.mp4"),
    ("liveportrait_d8.jpg", "videoretalking_1.mp4"),
    ("aniportrait_Aragaki.png", "videoretalking_5.mp4"),
    ("deca_image02202.jpg", "videoretalking_5.mp4"),
    ("sadtalker_people_0.png", "videoretalking_5.mp4"),
    ("skimage_astronaut.png", "videoretalking_5.mp4"),
]

#: measures where a low value is the bad one (their worst decile is the 10th percentile)
LOW_IS_BAD = {"identity_transfer_rate", "hair_transfer_rate", "background_psnr_db", "background_psnr_min_db",
              "delivered_background_psnr_db", "face_found_ratio", "output_face_found_ratio", "identity_similarity_source",
              "identity_distance_plate", "sharpness", "swapped_frames", "person_segments_checked"}
#: ratios whose ideal is 1 (the worst decile is the value farthest from 1, either way)
TWO_SIDED = {"motion_ratio", "jitter_ratio"}
#: the reference's measures printed next to recast's
MOTION_KEYS = ("pose_error_deg", "expression_error", "jitter_ratio", "motion_ratio", "flicker_ratio", "identity_transfer_rate")
VERDICT_RANK = {"error": 0, "fail": 1, "review": 2, "pass": 3}


def pair_id(photo: str, clip: str) -> str:
    return f"{Path(photo).stem}__{Path(clip).stem}"


def choose_pairs(args: argparse.Namespace, media: Path) -> list[tuple[str, str]]:
    if args.all:
        photos = sorted(p.name for p in (media / "images").iterdir() if p.is_file())
        clips = sorted(p.name for p in (media / "videos").iterdir() if p.is_file())
        pairs = [(p, c) for c in clips for p in photos]
    else:
        pairs = list(STANDARD_SET)
    if args.only:
        pairs = [p for p in pairs if pair_id(*p) == args.only or args.only in pair_id(*p)]
    if args.sample:
        pairs = spread_sample(pairs, args.sample, args.seed)
    return pairs


def spread_sample(pairs: list[tuple[str, str]], n: int, seed: int) -> list[tuple[str, str]]:
    """``n`` pairs drawn with ``seed``, spread over as many clips and photos as possible: in a
    seeded order, pairs whose clip and photo are both new first, then a new clip, then any."""
    order = list(pairs)
    random.Random(seed).shuffle(order)
    chosen: list[tuple[str, str]] = []
    for new_photo, new_clip in ((True, True), (False, True), (False, False)):
        for p in order:
            if len(chosen) >= n:
                break
            if p in chosen or (new_clip and any(c[1] == p[1] for c in chosen)) or (new_photo and any(c[0] == p[0] for c in chosen)):
                continue
            chosen.append(p)
    return [p for p in pairs if p in chosen]


# --- media ------------------------------------------------------------------------------------
def trimmed_plate(clip: Path, out_dir: Path) -> Path:
    """The first 2 s of a clip (cached per clip for the whole run)."""
    import av

    from recast.media.synthetic import first_frames

    out = out_dir / f"{clip.stem}-2s.mp4"
    if not out.exists():
        with av.open(str(clip)) as c:
            rate = c.streams.video[0].average_rate
        out_dir.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".part.mp4")
        first_frames(clip, max(1, round(SECONDS * float(rate))), tmp, crf=16)
        tmp.rename(out)
    return out


def clip_mpf(clip: Path) -> float:
    """Megapixel-frames of a clip's first 2 s (what the run time grows with)."""
    import av

    with av.open(str(clip)) as c:
        v = c.streams.video[0]
        return v.width * v.height * max(1, round(SECONDS * float(v.average_rate))) / 1e6


def read_video(path: Path, wanted: list[int] | None = None) -> dict[int, Any]:
    import av

    got = {}
    with av.open(str(path)) as c:
        for i, f in enumerate(c.decode(video=0)):
            if wanted is None or i in wanted:
                got[i] = f.to_ndarray(format="rgb24")
    return got


def frame_count(path: Path) -> int:
    import av

    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


# --- one pair ---------------------------------------------------------------------------------
def numeric(d: dict[str, Any], prefix: str = "") -> dict[str, float]:
    out = {}
    for k, v in d.items():
        if isinstance(v, bool):
            out[prefix + k] = float(v)
        elif isinstance(v, (int, float)) and v is not None:
            out[prefix + k] = float(v)
    return out


def run_swap(plate: Path, photo: Path, mode: str, out_mp4: Path) -> dict[str, Any]:
    """recast's swap_shot flow on one pair: metrics, verdict and reason records."""
    from recast.contracts import Mode, ShotParams
    from recast.flows.swap_shot import swap_shot
    from recast.services import shots
    from recast.services.qc import qc_of_shot

    params = ShotParams(mode=Mode(mode), source_face=SOURCE_FACE.get(photo.name))
    shot_id, run_id = shots.submit_local_shot(plate=str(plate), sources=[str(photo)], params=params,
                                              code=f"qm-{photo.stem[:20]}-{mode}", run_here=True)
    summary = swap_shot(shot_id=shot_id, run_id=run_id, output_path=str(out_mp4), review="never", deliver_on_fail=True).summary()
    qc = summary["qc"]
    reasons = [r if isinstance(r, dict) else {"metric": None, "text": str(r), "frames": []} for r in qc.get("reasons", [])]
    try:  # the reason records as the report keeps them (metric, value, threshold, outcome, frames, text)
        reasons = qc_of_shot(shot_id).get("reasons") or reasons
    except Exception:
        pass
    metrics = {k: v for k, v in qc.items() if k not in ("verdict", "reasons", "report")}
    return {"verdict": qc["verdict"], "reasons": reasons, "metrics": numeric(metrics), "frames": summary.get("frames"),
            "output": summary.get("output") or out_mp4, "stages": summary.get("stages", {})}


def run_reference(plate: Path, photo: Path, out_mp4: Path) -> dict[str, Any]:
    """The plain warp of the pair, scored by the same QC as ``recast qc --plate --output --source``
    (face mode: it is a face warp). For a group photo the source face is the same ``index:0``."""
    import recast.flows.score_files as sf
    from plain_warp import plain_warp

    face = SOURCE_FACE.get(photo.name)
    t = time.perf_counter()
    info = plain_warp(photo, plate, out_mp4, face or "largest")
    warp_s = time.perf_counter() - t
    original = sf.analyze_source
    if face:  # score_files has no --source-face: the same analysis, told which face
        sf.analyze_source = lambda **kw: original(**{**kw, "source_face": face})
    try:
        scored = sf.score_files(plate=str(plate), output=str(out_mp4), source=str(photo), mode="face")
    finally:
        sf.analyze_source = original
    return {"verdict": scored.qc.verdict.value, "metrics": numeric(dict(scored.qc.metrics)), "warped_frames": info["warped_frames"],
            "warp_s": round(warp_s, 2)}


# --- montage ----------------------------------------------------------------------------------
def montage_frames(reasons: list[dict[str, Any]], total: int, n: int = 4) -> list[int]:
    chosen: list[int] = []
    for r in reasons:
        for f in (r.get("frames") or [])[:1]:
            f = int(f)
            if 0 <= f < total and f not in chosen and len(chosen) < 2:
                chosen.append(f)
    spread = [round(v * (total - 1) / (n - 1)) for v in range(n)] + [round(v * (total - 1) / (2 * n - 2)) for v in range(1, 2 * n - 2, 2)]
    for x in spread if total > 1 else [0]:  # first and last frame, evenly between, then the midpoints
        if len(chosen) >= n:
            break
        if all(abs(x - c) > 2 for c in chosen):
            chosen.append(int(x))
    chosen += [int(x) for x in spread if x not in chosen][: max(0, n - len(chosen))]  # a very short clip
    return sorted(set(chosen))[:n]


class Overlay:
    """Defect regions of ``recast.models.qc_defects`` on the montage frames, when it is there."""

    COLOURS = [(0, 255, 255), (255, 0, 255), (0, 255, 0), (255, 128, 0), (255, 255, 255), (0, 128, 255), (255, 0, 0), (128, 255, 128)]

    def __init__(self) -> None:
        self.note = ""
        try:
            from recast.models import qc_defects  # noqa: F401
            from recast.models.face import FaceAnalyzer

            self.qd = qc_defects
            self.fa = FaceAnalyzer(static_images=True, max_faces=4)
        except Exception as exc:
            self.qd, self.fa, self.note = None, None, f"no defect regions ({type(exc).__name__}: {exc})"

    def look(self, photo: Path, mode: str):
        """The detectors' view of the source, as QC builds it: in head mode from the cut-out head."""
        import cv2

        from recast.models.face import select_face

        if self.qd is None:
            return None
        try:
            rgb = cv2.cvtColor(cv2.imread(str(photo), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
            faces = self.fa.detect(rgb)
            face = select_face(faces, SOURCE_FACE.get(photo.name, "largest"))
            head = None
            if mode == "head":
                from recast.models.head import chosen_person_mask, extract_source_head

                others = [f for f in faces if f is not face]
                person = chosen_person_mask(rgb, face, others) if others else None
                head = extract_source_head(rgb, face.landmarks, person_mask=person, role_name=photo.name)
            return self.qd.SourceLook.from_source(rgb, face.landmarks, head)
        except Exception as exc:
            self.note = f"no defect regions (SourceLook: {type(exc).__name__}: {exc})"
            return None

    def regions(self, plate, output, look, mode: str) -> dict[str, Any]:
        if self.qd is None or look is None:
            return {}
        try:
            lm = [(fs[0].landmarks if fs else None) for fs in (self.fa.detect(plate), self.fa.detect(output))]
            d = self.qd.measure_defects(plate, output, lm[0], lm[1], look=look, mode=mode)
            return {k: (m, d.values.get(k)) for k, m in d.regions.items() if m is not None and m.any()}
        except Exception as exc:
            self.note = f"no defect regions (measure_defects: {type(exc).__name__}: {exc})"
            return {}


def ascii_text(text: str) -> str:
    """What OpenCV's Hershey fonts can draw (ASCII only)."""
    for a, b in (("×", "x"), ("°", " deg"), ("≤", "<="), ("≥", ">="), ("–", "-"), ("—", "-"), ("Δ", "d"), ("…", "..."), ("’", "'")):
        text = text.replace(a, b)
    return text.encode("ascii", "replace").decode()


def crop_box(pairs: list[tuple[Any, Any]], W: int, H: int, grow: float = 0.15, min_side: float = 0.4) -> tuple[int, int, int, int]:
    """The region the swaps changed (pixels differing by more than 24 levels in any of the
    frame pairs), grown by ``grow`` of its size on every side, at least ``min_side`` of the
    frame's shorter side; the whole frame when nothing changed or the region is most of it."""
    import numpy as np

    changed = np.zeros((H, W), bool)
    for a, b in pairs:
        changed |= np.abs(a.astype(np.int16) - b.astype(np.int16)).max(axis=2) > 24
    ys, xs = np.nonzero(changed)
    if xs.size < 50:
        return 0, 0, W, H
    qx0, qx1 = np.percentile(xs, [0.5, 99.5])
    qy0, qy1 = np.percentile(ys, [0.5, 99.5])
    side = max(qx1 - qx0, qy1 - qy0) * (1 + 2 * grow)
    side = max(side, min_side * min(W, H))
    cx, cy = (qx0 + qx1) / 2, (qy0 + qy1) / 2
    x0, x1 = int(max(0, cx - side / 2)), int(min(W, cx + side / 2))
    y0, y1 = int(max(0, cy - side / 2)), int(min(H, cy + side / 2))
    if (x1 - x0) * (y1 - y0) > 0.7 * W * H:
        return 0, 0, W, H
    return x0, y0, x1, y1


def draw_montage(path: Path, title: list[str], plate: Path, output: Path, ref: Path | None, frames: list[int],
                 labels: dict[int, str], overlay: Overlay, look, mode: str, tile_w: int = 240) -> None:
    import cv2
    import numpy as np

    from recast.media.qc_report import heat_map

    p = read_video(plate, frames)
    o = read_video(output, frames)
    r = read_video(ref, frames) if ref is not None and ref.exists() else {}
    frames = [f for f in frames if f in p and f in o]
    H, W = p[frames[0]].shape[:2]
    x0, y0, x1, y1 = crop_box([(p[f], o[f]) for f in frames] + [(p[f], r[f]) for f in frames if f in r], W, H)
    crop = lambda img: img[y0:y1, x0:x1]  # noqa: E731
    h0, w0 = y1 - y0, x1 - x0
    tile_h = max(1, round(h0 * tile_w / w0))
    if (x0, y0, x1, y1) != (0, 0, W, H):
        title = [*title, f"(tiles cropped to x {x0}-{x1}, y {y0}-{y1} of the {W}x{H} frame: the changed region)"]
    row_names = ["plate", "output", "QC overlay", "plain warp"]
    label_w, lab_h = 84, 18
    sheet_w = label_w + len(frames) * tile_w
    lines = [(i, part) for i, line in enumerate(title) for part in textwrap.wrap(ascii_text(line), max(20, (sheet_w - 12) // 9))]
    head_h = 18 * len(lines) + 8
    sheet = np.full((head_h + lab_h + 4 * tile_h, sheet_w, 3), 24, np.uint8)
    for k, (i, line) in enumerate(lines):
        cv2.putText(sheet, line, (6, 16 + 18 * k), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 200, 80) if i else (240, 240, 240), 1, cv2.LINE_AA)
    legend: dict[str, tuple[int, int, int]] = {}
    for j, f in enumerate(frames):
        x = label_w + j * tile_w
        cv2.putText(sheet, ascii_text(labels.get(f, f"frame {f}"))[:34], (x + 4, head_h + 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                    (255, 200, 80) if "!" in labels.get(f, "") else (200, 200, 200), 1, cv2.LINE_AA)
        # the QC contact sheet's difference heat map over a grey copy of the output, so the
        # outlined regions can be placed on the face
        grey = cv2.cvtColor(cv2.cvtColor(o[f], cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
        heat = crop(cv2.addWeighted(heat_map(p[f], o[f]), 0.6, grey, 0.4, 0))
        found = sorted(overlay.regions(p[f], o[f], look, mode).items())
        for k, (name, (mask, _)) in enumerate(found):
            colour = legend.setdefault(name, Overlay.COLOURS[len(legend) % len(Overlay.COLOURS)])
            cnts, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            cv2.drawContours(heat, [c - np.array([x0, y0]) for c in cnts], -1, colour, max(1, w0 // 240))
        heat = cv2.resize(heat, (tile_w, tile_h), interpolation=cv2.INTER_AREA)
        for k, (name, (_, value)) in enumerate(found):  # this frame's value of each outlined measure
            cv2.putText(heat, f"{name} {_num(value) if value is not None else ''}", (4, tile_h - 6 - 13 * k), cv2.FONT_HERSHEY_SIMPLEX,
                        0.38, legend[name], 1, cv2.LINE_AA)
        tiles = [crop(p[f]), crop(o[f]), heat, crop(r.get(f, np.zeros_like(p[f])))]
        for k, img in enumerate(tiles):
            y = head_h + lab_h + k * tile_h
            sheet[y:y + tile_h, x:x + tile_w] = cv2.resize(img, (tile_w, tile_h), interpolation=cv2.INTER_AREA)
    for k, name in enumerate(row_names):
        cv2.putText(sheet, name, (4, head_h + lab_h + k * tile_h + 16), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (235, 235, 235), 1, cv2.LINE_AA)
    y = head_h + lab_h + 2 * tile_h + 34
    for name, colour in legend.items():  # which outline is which measure, beside the overlay row
        cv2.putText(sheet, name[:12], (4, y), cv2.FONT_HERSHEY_SIMPLEX, 0.36, colour, 1, cv2.LINE_AA)
        y += 14
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))


# --- tables -----------------------------------------------------------------------------------
FIXED = ["pair", "photo", "clip", "mode", "source_face", "frames", "verdict", "n_reasons", "reason_metrics", "reasons", "error",
         "swap_s", "ref_s", "ref_warp_s", "montage_s", "montage", "ref_verdict", "ref_warped_frames", "ref_error"]


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    keys = [k for k in FIXED]
    extra = sorted({k for r in rows for k in r if k not in FIXED and not k.startswith("ref_")})
    ref = sorted({k for r in rows for k in r if k.startswith("ref_") and k not in FIXED})
    tmp = path.with_suffix(".part")
    with tmp.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys + extra + ref, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in keys + extra + ref})
    tmp.replace(path)


def badness(r: dict[str, Any]) -> tuple:
    pose = r.get("pose_error_deg")
    return (VERDICT_RANK.get(r.get("verdict"), 0), -(r.get("n_reasons") or 0), -(pose if isinstance(pose, float) and math.isfinite(pose) else 0.0))


def write_html(rows: list[dict[str, Any]], path: Path) -> None:
    show = ["identity_transfer_rate", "pose_error_deg", "expression_error", "jitter_ratio", "motion_ratio", "seam_score",
            "background_psnr_db", "foreign_pieces", "leftover_plate_head", "fill_artefacts", "inner_edges", "colour_blotches",
            "hair_colour_de", "sharpness"]
    parts = ["<!doctype html><meta charset=utf-8><title>recast quality matrix</title>",
             "<style>body{font:13px sans-serif;background:#181818;color:#ddd}img{max-width:100%}.v-fail,.v-error{color:#f66}"
             ".v-review{color:#fc6}.v-pass{color:#6d6}td,th{padding:1px 6px;text-align:right}div.pair{margin:18px 0;"
             "border-top:1px solid #444}</style>",
             f"<h1>recast quality matrix: {len(rows)} rows, worst first</h1>"]
    for m in sorted({r["mode"] for r in rows}):
        rs = [r for r in rows if r["mode"] == m]
        parts.append(f"<p>{m}: " + ", ".join(f"<span class=v-{v}>{v} {sum(1 for r in rs if r.get('verdict') == v)}</span>"
                                             for v in ("fail", "review", "pass", "error")) + f" of {len(rs)}</p>")
    parts.append("<p>Montage rows: plate | output | QC overlay (difference heat map over a grey output; outlines: the regions "
                 "of recast.models.qc_defects on these frames, with this frame's value) | plain-warp reference. Local "
                 "inspection only: made from the shared media.</p>")
    for r in sorted(rows, key=badness):
        v = r.get("verdict")
        parts.append(f"<div class=pair><h3 id='{html.escape(r['pair'])}-{r['mode']}'>{html.escape(r['pair'])} · {r['mode']} · "
                     f"<span class=v-{v}>{str(v).upper()}</span></h3>")
        parts.append(f"<p>{html.escape(r['photo'])} on {html.escape(r['clip'])} (first {SECONDS:g} s)"
                     + (f", source face {r['source_face']}" if r.get("source_face") else "") + "</p>")
        if r.get("error"):
            parts.append(f"<p class=v-error>error: {html.escape(str(r['error']))}</p>")
        if r.get("reasons"):
            parts.append("<ul>" + "".join(f"<li>{html.escape(t)}</li>" for t in str(r["reasons"]).split(" | ")) + "</ul>")
        cells = [(k, r.get(k), r.get("ref_" + k)) for k in show if r.get(k) is not None or r.get("ref_" + k) is not None]
        if cells:
            parts.append("<table><tr><th></th>" + "".join(f"<th>{html.escape(k)}</th>" for k, _, _ in cells) + "</tr><tr><th>recast</th>"
                         + "".join(f"<td>{_fmt(v)}</td>" for _, v, _ in cells) + "</tr><tr><th>plain warp</th>"
                         + "".join(f"<td>{_fmt(v)}</td>" for _, _, v in cells) + "</tr></table>")
        if r.get("montage"):
            parts.append(f"<img loading=lazy src='{html.escape(r['montage'])}'>")
        parts.append("</div>")
    path.write_text("\n".join(parts))


def _fmt(v: Any) -> str:
    if v is None or v == "":
        return "–"
    if isinstance(v, float):
        return "nan" if not math.isfinite(v) else f"{v:.3g}"
    return html.escape(str(v))


def quantile(vals: list[float], q: float) -> float:
    s = sorted(vals)
    if not s:
        return float("nan")
    pos = q * (len(s) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def worst_decile(key: str, vals: list[float]) -> float:
    base = key[4:] if key.startswith("ref_") else key
    if base in TWO_SIDED:
        pos = [v for v in vals if v > 0]
        if not pos:
            return float("nan")
        bound = quantile([abs(math.log(v)) for v in pos], 0.9)
        return min(pos, key=lambda v: abs(abs(math.log(v)) - bound))
    return quantile(vals, 0.1 if base in LOW_IS_BAD or "psnr" in base else 0.9)


def finite(rows: list[dict[str, Any]], key: str) -> list[float]:
    return [float(r[key]) for r in rows if isinstance(r.get(key), (int, float)) and math.isfinite(float(r[key]))]


def print_summary(rows: list[dict[str, Any]], modes: list[str], times: dict[str, list[float]], ref_times: list[float],
                  wall: float, n_pairs: int, first_pair_s: float | None, pair_walls: list[tuple[float, float]] = (),
                  media: Path = Path("."), projections: dict[str, list[tuple[str, str]]] | None = None) -> None:
    projections = projections or {}
    by_mode = {m: [r for r in rows if r["mode"] == m] for m in modes}
    refs = {r["pair"]: r for r in rows}.values()  # one reference row per pair
    measures = sorted({k for r in rows for k, v in r.items() if isinstance(v, float) and k not in ("swap_s", "ref_s", "ref_warp_s", "montage_s")
                       and not k.startswith("ref_")})
    print("\n== verdicts (share of pairs)")
    for m, rs in by_mode.items():
        counts = {v: sum(1 for r in rs if r["verdict"] == v) for v in ("pass", "review", "fail", "error")}
        print(f"  {m:<5} " + "  ".join(f"{v} {c}/{len(rs)} ({100 * c / max(1, len(rs)):.0f}%)" for v, c in counts.items()))
    ref_counts = {v: sum(1 for r in refs if r.get("ref_verdict") == v) for v in ("pass", "review", "fail")}
    print("  ref   " + "  ".join(f"{v} {c}/{len(refs)}" for v, c in ref_counts.items()) + "  (plain warp, scored in face mode)")
    print("\n== measures: median / worst-decile bound (p90; p10 where low is bad; farthest from 1 for two-sided ratios), n")
    head = f"  {'measure':<32}" + "".join(f"{m + ' median':>14}{m + ' worst10':>14}{'n':>4}" for m in modes)
    print(head)
    for k in measures:
        line = f"  {k:<32}"
        for m in modes:
            vals = finite(by_mode[m], k)
            line += f"{_num(statistics.median(vals) if vals else float('nan')):>14}{_num(worst_decile(k, vals)):>14}{len(vals):>4}"
        print(line)
    print("\n== recast vs the plain-warp reference (median | worst decile)")
    print(f"  {'measure':<24}" + "".join(f"{m:>22}" for m in modes) + f"{'plain warp':>22}")
    for k in MOTION_KEYS:
        line = f"  {k:<24}"
        for m in modes:
            vals = finite(by_mode[m], k)
            line += f"{(_num(statistics.median(vals)) if vals else '–') + ' | ' + _num(worst_decile(k, vals)):>22}"
        rv = finite(list(refs), "ref_" + k)
        line += f"{(_num(statistics.median(rv)) if rv else '–') + ' | ' + _num(worst_decile('ref_' + k, rv)):>22}"
        print(line)
    print("\n== timing")
    for m in modes:
        ts = times.get(m, [])
        if ts:
            later = ts[1:] if len(ts) > 1 else ts
            print(f"  {m:<5} swap_shot: median {statistics.median(ts):.1f} s/pair, mean {statistics.mean(ts):.1f}, "
                  f"mean without the first pair {statistics.mean(later):.1f} (n={len(ts)})")
    if ref_times:
        warp = finite(list(refs), "ref_warp_s")
        print(f"  plain warp + its QC: median {statistics.median(ref_times):.1f} s/pair (n={len(ref_times)})"
              + (f", of which the warp {statistics.median(warp):.1f} s" if warp else ""))
    per_pair = wall / max(1, n_pairs)
    print(f"  wall {wall:.0f} s for {n_pairs} pairs = {per_pair:.1f} s/pair all included (modes {'+'.join(modes)}, reference, montages)")
    if first_pair_s is not None and pair_walls:
        # time grows with the plate's pixels x frames (a 1280x720 plate costs ~2.5x a 512x512 one):
        # project with the seconds per megapixel-frame measured after the first pair
        later = pair_walls[1:] or pair_walls
        rate = sum(t for t, _ in later) / max(1e-9, sum(m for _, m in later))
        overhead = max(0.0, first_pair_s - rate * pair_walls[0][1])
        print(f"  first pair {first_pair_s:.0f} s (of which ~{overhead:.0f} s Prefect's temporary server start and model loading); "
              f"then {rate:.2f} s per megapixel-frame of plate")
        for name, pairs in projections.items():
            try:
                mpf = sum(clip_mpf(media / "videos" / c) for _, c in pairs)
            except Exception as exc:  # another --media: the standard set's clips are not there
                print(f"  no projection for {name}: {type(exc).__name__}: {exc}")
                continue
            print(f"  projected for {name} ({len(pairs)} pairs, {mpf:.0f} Mpx-frames), modes {'+'.join(modes)}"
                  f"{' + reference' if ref_times else ''}: {(overhead + rate * mpf) / 60:.0f} min on this machine at its current load")


def _num(v: float) -> str:
    if not isinstance(v, (int, float)) or not math.isfinite(v):
        return "–"
    return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"


# --- main -------------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description="recast quality matrix (see the module docstring)")
    ap.add_argument("--media", type=Path, default=REPO.parent / "shared" / "media")
    ap.add_argument("--all", action="store_true", help="every photo x every clip instead of the 60-pair standard set")
    ap.add_argument("--sample", type=int, default=0, help="a seeded subset of N pairs")
    ap.add_argument("--seed", type=int, default=14)
    ap.add_argument("--only", default=None, help="pairs whose id (photo-stem__clip-stem) contains this")
    ap.add_argument("--mode", choices=["head", "face", "both"], default="both")
    ap.add_argument("--no-reference", action="store_true", help="skip the plain-warp reference")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--keep-data", action="store_true", help="keep the temporary recast data directory (database, store)")
    args = ap.parse_args()
    out = args.out or Path("/tmp/quality_matrix") / datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    for sub in ("outputs", "montages", "plates"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    modes = ["head", "face"] if args.mode == "both" else [args.mode]
    pairs = choose_pairs(args, args.media)
    if not pairs:
        sys.exit("no pairs chosen")

    data = Path(tempfile.mkdtemp(prefix="recast-qm-"))  # fresh: no stage result of an earlier run is reused
    os.environ["RECAST_DATA_DIR"] = str(data)
    from recast.settings import configure_prefect_environment, get_settings, reset_settings

    reset_settings()
    configure_prefect_environment(get_settings())
    from recast.db.migrate import ensure_schema

    ensure_schema(get_settings())
    print(f"quality matrix: {len(pairs)} pairs x modes {','.join(modes)}"
          f"{'' if args.no_reference else ' + plain-warp reference'}; out {out}; data {data}", flush=True)
    overlay = Overlay()
    if overlay.note:
        print(f"  montage overlay: difference heat map only, {overlay.note}", flush=True)
    rows: list[dict[str, Any]] = []
    times: dict[str, list[float]] = {m: [] for m in modes}
    ref_times: list[float] = []
    t_start = time.perf_counter()
    first_pair_s = None
    pair_walls: list[tuple[float, float]] = []
    try:
        for n, (photo_name, clip_name) in enumerate(pairs, 1):
            t_pair = time.perf_counter()
            pid = pair_id(photo_name, clip_name)
            photo, clip = args.media / "images" / photo_name, args.media / "videos" / clip_name
            base = {"pair": pid, "photo": photo_name, "clip": clip_name, "source_face": SOURCE_FACE.get(photo_name)}
            ref: dict[str, Any] = {}
            ref_mp4 = out / "outputs" / f"{pid}-plainwarp.mp4"
            for old in [ref_mp4, *(out / "outputs" / f"{pid}-{m}.mp4" for m in modes)]:
                old.unlink(missing_ok=True)  # an --out used before: never show an earlier run's video
            try:
                plate = trimmed_plate(clip, out / "plates")
                total = frame_count(plate)
            except Exception as exc:
                rows += [{**base, "mode": m, "verdict": "error", "error": f"plate: {type(exc).__name__}: {exc}"} for m in modes]
                continue
            results: dict[str, Any] = {}
            mode_rows: dict[str, dict[str, Any]] = {}
            for mode in modes:  # the swaps first: the reference's QC then reuses their plate and source analyses
                row: dict[str, Any] = {**base, "mode": mode, "frames": total}
                t = time.perf_counter()
                try:
                    res = run_swap(plate, photo, mode, out / "outputs" / f"{pid}-{mode}.mp4")
                    row.update(res["metrics"])
                    row.update(verdict=res["verdict"], frames=res["frames"] or total, n_reasons=len(res["reasons"]),
                               reason_metrics=";".join(str(x.get("metric")) for x in res["reasons"]),
                               reasons=" | ".join(str(x.get("text")) for x in res["reasons"]))
                except Exception as exc:
                    res = None
                    row.update(verdict="error", error=f"{type(exc).__name__}: {exc}".strip().splitlines()[0][:400])
                    if os.environ.get("QM_DEBUG"):
                        traceback.print_exc()
                row["swap_s"] = round(time.perf_counter() - t, 2)
                times[mode].append(row["swap_s"])
                results[mode], mode_rows[mode] = res, row
            if not args.no_reference:
                t = time.perf_counter()
                try:
                    r = run_reference(plate, photo, ref_mp4)
                    ref = {"ref_verdict": r["verdict"], "ref_warped_frames": r["warped_frames"], "ref_warp_s": r["warp_s"], **{f"ref_{k}": v for k, v in r["metrics"].items()}}
                except Exception as exc:
                    ref = {"ref_verdict": "error", "ref_error": f"{type(exc).__name__}: {exc}".strip().splitlines()[0][:400]}
                    if os.environ.get("QM_DEBUG"):
                        traceback.print_exc()
                ref["ref_s"] = round(time.perf_counter() - t, 2)
                ref_times.append(ref["ref_s"])
            for mode in modes:
                res, row = results[mode], mode_rows[mode]
                row.update(ref)
                t = time.perf_counter()
                try:
                    video = Path(res["output"]) if res else None
                    if video is None or not video.exists():
                        video = ref_mp4 if ref_mp4.exists() else plate  # still show the plate and the reference
                    reasons = res["reasons"] if res else []
                    frames = montage_frames(reasons, total)
                    labels = {}
                    for f in frames:
                        named = [str(x.get("metric")) for x in reasons if f in (x.get("frames") or [])]
                        labels[f] = f"frame {f}" + ("  ! " + ",".join(named) if named else "")
                    title = [f"{pid}  {mode}  {str(row['verdict']).upper()}  pose {_num(row.get('pose_error_deg', float('nan')))}deg"
                             f"  expr {_num(row.get('expression_error', float('nan')))}  motion {_num(row.get('motion_ratio', float('nan')))}"
                             f"  (plain warp: pose {_num(ref.get('ref_pose_error_deg', float('nan')))}deg"
                             f" expr {_num(ref.get('ref_expression_error', float('nan')))} motion {_num(ref.get('ref_motion_ratio', float('nan')))})"]
                    title += [("error: " + row["error"])] if row.get("error") else [f"- {x.get('text')}" for x in reasons][:5]
                    if not res:
                        title.append("(output row: no recast output; it shows the plain warp or the plate)")
                    mpath = out / "montages" / f"{pid}-{mode}.png"
                    overlay.note = ""
                    draw_montage(mpath, title, plate, video, ref_mp4, frames, labels, overlay, overlay.look(photo, mode), mode)
                    row["montage"] = str(mpath.relative_to(out))
                    if overlay.note:
                        row["overlay_note"] = overlay.note
                        print(f"  montage overlay: {overlay.note}", flush=True)
                except Exception as exc:
                    row["montage_error"] = f"{type(exc).__name__}: {exc}"
                row["montage_s"] = round(time.perf_counter() - t, 2)
                rows.append(row)
                print(f"[{n}/{len(pairs)}] {pid} {mode}: {row['verdict']}"
                      + (f" ({row.get('reason_metrics')})" if row.get("reason_metrics") else "")
                      + (f" ERROR {row['error']}" if row.get("error") else "")
                      + f"  pose {_num(row.get('pose_error_deg', float('nan')))} expr {_num(row.get('expression_error', float('nan')))}"
                      + f" | ref pose {_num(ref.get('ref_pose_error_deg', float('nan')))} expr {_num(ref.get('ref_expression_error', float('nan')))}"
                      + f"  swap {row['swap_s']:.1f}s ref {ref.get('ref_s', 0):.1f}s montage {row['montage_s']:.1f}s", flush=True)
            if first_pair_s is None:
                first_pair_s = time.perf_counter() - t_pair
            pair_walls.append((time.perf_counter() - t_pair, clip_mpf(clip)))
            write_csv(rows, out / "matrix.csv")
            write_html(rows, out / "index.html")
    finally:
        write_csv(rows, out / "matrix.csv")
        write_html(rows, out / "index.html")
        if not args.keep_data:
            shutil.rmtree(data, ignore_errors=True)
    projections = {"the standard set": STANDARD_SET, "--sample 12": spread_sample(STANDARD_SET, 12, 14)}
    print_summary(rows, modes, times, ref_times, time.perf_counter() - t_start, len({r["pair"] for r in rows}), first_pair_s,
                  pair_walls, args.media, projections)
    print(f"\n{out / 'matrix.csv'}\n{out / 'index.html'}\n(made from the shared media: local inspection only, never commit or publish)")


if __name__ == "__main__":
    main()
