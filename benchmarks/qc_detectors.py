"""Detection and false-alarm rates of the per-frame defect detectors (:mod:`recast.models.qc_defects`)
on a synthetic labelled set, and the per-frame thresholds they suggest.

Clean outputs are made in-process: the classic head swap (:class:`recast.models.head.HeadSwapper`,
old head inpainted) and the classic face swap (:class:`recast.models.swap_classic.ClassicFaceSwapper`)
of shared photos onto frames from the first 2 s of shared clips, in both modes. Each clean frame
is then corrupted on purpose, once per corruption class, with a seeded RNG drawing the size,
position, strength and shape of every corruption (no single recipe to tune to):

=============  ==================================================================  ======================
corruption     what is done                                                        expected measure
=============  ==================================================================  ======================
clothing       a piece of the source photo below its chin (clothes), random         foreign_pieces
               polygon/ellipse, pasted beside or below the new head
hair_back      the plate's old head blended back at 30-70% where the new head       leftover_plate_head
               leaves it (head mode; pairs where the old head shows)
fill           streaks, a smear or a dark blob in the filled area around the head   fill_artefacts
               (head mode)
outline        a 1-2 px line along part of the inner face outline (cheek/jaw)       inner_edges
hue_blotch     a blue/green/purple blotch over an eye and brow                       colour_blotches
grey_hair      the new head's hair made grey/white (head mode)                      hair_colour_de
blur           the face downscaled x2-x4 and back                                   sharpness
occluder       a pale blob under the chin (a microphone carried from the source)    foreign_pieces
=============  ==================================================================  ======================

Output landmarks are detected again on every corrupted frame (as QC does on any output). For each
measure it prints the proposed per-frame threshold, the detection rate on its corruptions, the
share of detections whose region overlaps the corruption, and the false-alarm rate on the clean
outputs; then ``measure_defects``'s time per frame at 512 px. A contact sheet of corruptions
with the true region (green) and the found region (red) is written to ``--sheet``.

``--from DIR`` takes output/plate frame pairs instead of making them: ``DIR/<pair>/plate_<frame>.png``
and ``output_<frame>.png`` with ``DIR/<pair>/source.png|jpg`` and ``DIR/<pair>/mode`` (a file
holding "face" or "head"; head when absent). ``--labels CSV`` (columns ``pair,frame,classes``;
classes separated by ``;`` or spaces, empty or ``clean`` for a clean frame, class names as the
corruption names above or the measure names) reports detection on real labelled defects of those
frames (with ``--from``).

    .venv/bin/python benchmarks/qc_detectors.py [--sample N] [--frames 4] [--seed 0] [--sheet PNG] [--fixed]
        [--cache DIR] [--from DIR [--labels CSV]]

``--fixed`` judges at :data:`recast.models.qc_defects.SUGGESTED_THRESHOLDS` (use it with another
``--seed`` and ``--frames`` for a held-out check of detectors tuned on the default set).
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# the tests' media directory when they set one (tests/conftest.py reads the same variable)
MEDIA = Path(os.environ.get("RECAST_TEST_MEDIA", REPO.parent / "shared" / "media"))

#: (source photo, clip): sources with short and long hair, plates with short and long hair,
#: glasses, a beard, different skin and light; every pair is run in head and in face mode
PAIRS: tuple[tuple[str, str], ...] = (
    ("deepface_img3.jpg", "liveportrait_d0.mp4"),
    ("skimage_astronaut.png", "liveportrait_d3.mp4"),
    ("deepface_img45.jpg", "liveportrait_d19.mp4"),
    ("face_recognition_obama.jpg", "sadtalker_WDA_AlexandriaOcasioCortez_000.mp4"),
    ("liveportrait_s12.jpg", "videoretalking_1.mp4"),
    ("face_recognition_biden.jpg", "liveportrait_d12.mp4"),
    ("deepface_img17.jpg", "liveportrait_d20.mp4"),
    ("insightface_t1.jpg", "dreamtalk_W009_front_happy_level3_001.mp4"),
    ("liveportrait_d9.jpg", "liveportrait_s18.mp4"),
    ("face_recognition_kit_harington_john2.jpeg", "liveportrait_d13.mp4"),
)

#: the clean set's outputs labelled by eye (contact sheets of all frames, per pair and mode): the
#: defect classes the classic engines really leave there, () for clean, None where unsure. False
#: alarms are counted on the frames labelled clean; the others are "labelled real defects".
#: Relabelled when the head swap stopped removing the shoulders beside the jaw (s12, biden, d9:
#: their streaky or cut shoulders and the sweater read as leftover head are gone).
EYE_LABELS: dict[tuple[str, str], tuple[str, ...] | None] = {
    ("deepface_img3__liveportrait_d0", "head"): (),
    ("deepface_img3__liveportrait_d0", "face"): None,  # the source's fringe strands over the forehead
    ("skimage_astronaut__liveportrait_d3", "head"): ("foreign_pieces", "fill_artefacts", "inner_edges"),  # collar, dark blob, cut
    ("skimage_astronaut__liveportrait_d3", "face"): ("colour_blotches",),  # dark forehead patch
    ("deepface_img45__liveportrait_d19", "head"): ("fill_artefacts",),  # stair-step stub under the chin
    ("deepface_img45__liveportrait_d19", "face"): None,  # the plate's glasses arms cut off
    ("face_recognition_obama__sadtalker_WDA_AlexandriaOcasioCortez_000", "head"): ("foreign_pieces", "fill_artefacts"),
    ("face_recognition_obama__sadtalker_WDA_AlexandriaOcasioCortez_000", "face"): (),
    ("liveportrait_s12__videoretalking_1", "head"): ("foreign_pieces",),  # collar pieces beside the neck
    ("liveportrait_s12__videoretalking_1", "face"): (),
    ("face_recognition_biden__liveportrait_d12", "head"): ("foreign_pieces",),  # white stubs of his collar
    ("face_recognition_biden__liveportrait_d12", "face"): (),
    ("deepface_img17__liveportrait_d20", "head"): (),
    ("deepface_img17__liveportrait_d20", "face"): (),
    ("insightface_t1__dreamtalk_W009_front_happy_level3_001", "head"): ("sharpness",),  # a small face from a group photo
    ("insightface_t1__dreamtalk_W009_front_happy_level3_001", "face"): ("sharpness", "colour_blotches"),
    ("liveportrait_d9__liveportrait_s18", "head"): ("foreign_pieces",),  # a yellow piece beside the head
    ("liveportrait_d9__liveportrait_s18", "face"): (),
    ("face_recognition_kit_harington_john2__liveportrait_d13", "head"): ("inner_edges", "foreign_pieces"),  # double jaw line, cloak
    ("face_recognition_kit_harington_john2__liveportrait_d13", "face"): ("inner_edges",),  # cut at the cheek
}

#: corruption -> the measure expected to see it
EXPECTED = {
    "clothing": "foreign_pieces",
    "hair_back": "leftover_plate_head",
    "fill": "fill_artefacts",
    "outline": "inner_edges",
    "hue_blotch": "colour_blotches",
    "grey_hair": "hair_colour_de",
    "blur": "sharpness",
    "occluder": "foreign_pieces",
}
HEAD_ONLY = {"hair_back", "fill", "grey_hair"}
#: measures where a low value is the defect
LOW_IS_BAD = {"sharpness"}
WORK = 512  # frames are scaled so that their longer side is this


# --- the clean set ------------------------------------------------------------------------------
@dataclass
class Case:
    """One clean output frame and what the corruptions and the detectors need."""

    pair: str
    frame: int
    mode: str
    plate: np.ndarray
    output: np.ndarray
    plm: np.ndarray
    olm: np.ndarray | None
    person: np.ndarray
    new_head: np.ndarray  # bool: where the new head is (engine's head mask / face oval)
    source_rgb: np.ndarray
    source_lm: np.ndarray
    look: object
    extra: dict = field(default_factory=dict)


def _read_image(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path))
    if bgr is None:
        raise FileNotFoundError(path)
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    s = min(1.0, 1024.0 / max(rgb.shape[:2]))
    return rgb if s == 1.0 else cv2.resize(rgb, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)


def _frames(path: Path, k: int) -> list[tuple[int, np.ndarray]]:
    """``k`` frames spread over the first 2 s of a clip, scaled to :data:`WORK` px."""
    import av

    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        rate = float(stream.average_rate or 25)
        n = int(2 * rate)
        want = set(np.linspace(0, n - 1, k).round().astype(int).tolist())
        out = []
        for i, f in enumerate(c.decode(video=0)):
            if i in want:
                rgb = f.to_ndarray(format="rgb24")
                s = WORK / max(rgb.shape[:2])
                if s != 1.0:
                    rgb = cv2.resize(rgb, (round(rgb.shape[1] * s) // 2 * 2, round(rgb.shape[0] * s) // 2 * 2), interpolation=cv2.INTER_AREA)
                out.append((i, rgb))
            if i >= max(want):
                break
    return out


def detect(fa, rgb: np.ndarray) -> np.ndarray | None:
    faces = fa.detect(rgb)
    if not faces:
        return None
    return max(faces, key=lambda f: f.area).landmarks


def make_cases(pairs, k: int, modes=("head", "face"), log=print) -> list[Case]:
    """Clean outputs of ``pairs`` (source, clip) in ``modes`` on ``k`` frames each."""
    from recast.models.face import FaceAnalyzer
    from recast.models.head import HeadSwapper, extract_source_head
    from recast.models.masks import PersonSegmenter, face_oval_mask
    from recast.models.qc_defects import SourceLook
    from recast.models.retarget import retarget_sequence
    from recast.models.swap_classic import ClassicFaceSwapper

    cases: list[Case] = []
    with FaceAnalyzer(static_images=True, max_faces=2) as fa, PersonSegmenter() as seg:
        for src_name, clip in pairs:
            pair = f"{Path(src_name).stem}__{Path(clip).stem}"
            try:
                src = _read_image(MEDIA / "images" / src_name)
                slm = detect(fa, src)
                if slm is None:
                    log(f"  {pair}: no face in the source, skipped")
                    continue
                frames = _frames(MEDIA / "videos" / clip, k)
                plms = [detect(fa, f) for f in frames for f in [f[1]]]
                keep = [i for i, p in enumerate(plms) if p is not None]
                if not keep:
                    log(f"  {pair}: no face in the plate, skipped")
                    continue
                frames = [frames[i] for i in keep]
                plm = np.stack([plms[i] for i in keep])
                persons = [seg.segment(f) for _, f in frames]
                head = None
                if "head" in modes:
                    try:
                        head = extract_source_head(src, slm, role_name=src_name)
                    except Exception as exc:  # a source the head swap refuses: face mode only
                        log(f"  {pair}: head mode skipped ({exc})")
                for mode in modes:
                    if mode == "head" and head is None:
                        continue
                    look = SourceLook.from_source(src, slm, head if mode == "head" else None)
                    if mode == "head":
                        sw = HeadSwapper(head)
                        tg = retarget_sequence(plm, head.landmarks)
                    else:
                        sw = ClassicFaceSwapper(src, slm)
                        tg = retarget_sequence(plm, slm)
                    for (fi, frame), p, t, person in zip(frames, plm, tg, persons):
                        if mode == "head":
                            r = sw.swap(frame, target_landmarks=t, plate_landmarks=p, plate_person_mask=person, background=None,
                                        background_known=None)
                            out, new_head = r.frame, r.head_mask > 0
                        else:
                            out = sw.swap(frame, t, p).frame
                            new_head = face_oval_mask(t, out.shape) > 0
                        cases.append(Case(pair, fi, mode, frame, out, p, detect(fa, out), person, new_head, src, slm, look))
            except Exception as exc:
                log(f"  {pair}: failed ({type(exc).__name__}: {exc})")
    return cases


def load_dir(root: Path, log=print) -> list[Case]:
    """Cases from ``root/<pair>/plate_<frame>.png`` + ``output_<frame>.png`` (see the module doc)."""
    from recast.models.face import FaceAnalyzer
    from recast.models.head import extract_source_head
    from recast.models.masks import PersonSegmenter
    from recast.models.qc import change_mask
    from recast.models.qc_defects import SourceLook

    cases = []
    with FaceAnalyzer(static_images=True, max_faces=2) as fa, PersonSegmenter() as seg:
        for d in sorted(p for p in root.iterdir() if p.is_dir()):
            srcs = sorted(d.glob("source.*"))
            if not srcs:
                continue
            mode = (d / "mode").read_text().strip() if (d / "mode").exists() else "head"
            src = _read_image(srcs[0])
            slm = detect(fa, src)
            if slm is None:
                continue
            head = extract_source_head(src, slm) if mode == "head" else None
            look = SourceLook.from_source(src, slm, head)
            for pp in sorted(d.glob("plate_*.png")):
                op = pp.with_name(pp.name.replace("plate_", "output_"))
                if not op.exists():
                    continue
                plate, out = _read_image(pp), _read_image(op)
                plm, olm = detect(fa, plate), detect(fa, out)
                if plm is None:
                    continue
                x0, y0 = plm[:, :2].min(0)
                x1, y1 = plm[:, :2].max(0)
                new_head = change_mask(plate, out, np.array([x0, y0, x1, y1]))
                cases.append(Case(d.name, int(pp.stem.split("_")[-1]), mode, plate, out, plm, olm, seg.segment(plate), new_head,
                                  src, slm, look))
    log(f"  {len(cases)} frames from {root}")
    return cases


# --- corruptions ----------------------------------------------------------------------------------
def _ff(lm):
    from recast.models.head import face_frame

    return face_frame(np.asarray(lm, np.float64))


def _shape_mask(rng, shape, centre, rx, ry) -> np.ndarray:
    """bool mask of a random shape (ellipse, rotated box or random convex polygon) around ``centre``."""
    m = np.zeros(shape[:2], np.uint8)
    kind = rng.integers(3)
    ang = float(rng.uniform(0, 180))
    c = (float(centre[0]), float(centre[1]))
    if kind == 0:
        cv2.ellipse(m, (round(c[0]), round(c[1])), (max(2, round(rx)), max(2, round(ry))), ang, 0, 360, 1, -1)
    elif kind == 1:
        box = cv2.boxPoints((c, (2 * rx, 2 * ry), ang))
        cv2.fillConvexPoly(m, np.round(box).astype(np.int32), 1)
    else:
        n = int(rng.integers(5, 10))
        t = np.sort(rng.uniform(0, 2 * np.pi, n))
        r = rng.uniform(0.6, 1.0, n)
        pts = np.stack([c[0] + rx * r * np.cos(t), c[1] + ry * r * np.sin(t)], 1)
        cv2.fillPoly(m, [np.round(pts).astype(np.int32)], 1)
    return m > 0


def _feather(mask: np.ndarray, px: float) -> np.ndarray:
    return cv2.GaussianBlur(mask.astype(np.float32), (0, 0), max(0.5, px)) if px > 0 else mask.astype(np.float32)


def _blend(out: np.ndarray, other: np.ndarray, a: np.ndarray) -> np.ndarray:
    a3 = a[..., None]
    return np.clip(out.astype(np.float32) * (1 - a3) + other.astype(np.float32) * a3 + 0.5, 0, 255).astype(np.uint8)


def _old_head(case: Case) -> np.ndarray:
    """Where the head swap removed the old head (not the shoulders beside the jaw: they stay)."""
    from recast.models.head import old_head_mask

    return old_head_mask(case.plate, case.person, case.plm, cut_below_chin=0.05)


def _grow(m, r):
    r = max(1, int(round(r)))
    return cv2.dilate(m.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))) > 0


def corrupt_clothing(case: Case, rng) -> tuple[np.ndarray, np.ndarray] | None:
    src, slm = case.source_rgb, case.source_lm
    sf = _ff(slm)
    Hs = sf.height
    h, w = case.output.shape[:2]
    of = _ff(case.olm if case.olm is not None else case.plm)
    H = of.height
    sh, sw = src.shape[:2]
    for _ in range(30):
        # a piece of the source below its chin (clothes), or failing that its lowest part
        below = rng.uniform(0.45, 1.3) * Hs
        cx, cy = sf.point(rng.uniform(-0.9, 0.9) * sf.width, below)
        pw, ph = min(rng.uniform(0.2, 0.5) * Hs, sw - 2), min(rng.uniform(0.15, 0.4) * Hs, sh - 2)
        # a photo cut just under the chin: its lowest rows (the collar, the shoulders)
        cx = float(np.clip(cx, pw / 2 + 1, sw - pw / 2 - 1))
        cy = float(np.clip(cy, ph / 2 + 1, sh - ph / 2 - 1))
        lat_s, below_s = sf.coords(np.float32(cx), np.float32(cy))
        if below_s < 0.25 * Hs and abs(lat_s) < 1.1 * sf.width:
            continue  # that would be the head itself
        x0, y0 = int(cx - pw / 2), int(cy - ph / 2)
        x1, y1 = int(x0 + pw), int(y0 + ph)
        if x0 < 0 or y0 < 0 or x1 > sw or y1 > sh or x1 - x0 < 4 or y1 - y0 < 4:
            continue
        patch = src[y0:y1, x0:x1]
        k = H / Hs * rng.uniform(0.8, 1.3)
        patch = cv2.resize(patch, (max(4, round(patch.shape[1] * k)), max(4, round(patch.shape[0] * k))), interpolation=cv2.INTER_AREA)
        ph_, pw_ = patch.shape[:2]
        # where: beside the head, or below it (a collar, a shoulder)
        if rng.random() < 0.6:
            lat = rng.choice([-1, 1]) * rng.uniform(0.8, 1.5) * of.width
            dep = rng.uniform(-1.1, 0.6) * H
        else:
            lat = rng.uniform(-0.9, 0.9) * of.width
            dep = rng.uniform(0.4, 0.9) * H
        px, py = of.point(lat, dep)
        X0, Y0 = int(px - pw_ / 2), int(py - ph_ / 2)
        # the frame's border may cut the piece
        cx0, cy0 = max(0, -X0), max(0, -Y0)
        cx1, cy1 = min(pw_, w - X0), min(ph_, h - Y0)
        if cx1 - cx0 < 4 or cy1 - cy0 < 4:
            continue
        shape = _shape_mask(rng, (ph_, pw_), (pw_ / 2, ph_ / 2), pw_ / 2, ph_ / 2)
        m = np.zeros((h, w), bool)
        m[Y0 + cy0:Y0 + cy1, X0 + cx0:X0 + cx1] = shape[cy0:cy1, cx0:cx1]
        gt = m & ~case.new_head
        if gt.sum() < 0.7 * m.sum() or gt.sum() < 0.01 * H * H:
            continue
        big = np.zeros_like(case.output)
        big[Y0 + cy0:Y0 + cy1, X0 + cx0:X0 + cx1] = patch[cy0:cy1, cx0:cx1]
        return _blend(case.output, big, _feather(m, 0.7) * m), gt
    return None


def corrupt_hair_back(case: Case, rng) -> tuple[np.ndarray, np.ndarray] | None:
    if case.mode != "head":
        return None
    H = _ff(case.plm).height
    zone = _old_head(case) & ~_grow(case.new_head, 0.02 * H)
    if zone.sum() < 0.03 * H * H:
        return None
    ys, xs = np.nonzero(zone)
    for _ in range(20):
        i = rng.integers(len(ys))
        sub = _shape_mask(rng, zone.shape, (xs[i], ys[i]), rng.uniform(0.2, 0.7) * H, rng.uniform(0.2, 0.7) * H) & zone
        if rng.random() < 0.3:
            sub = zone
        if sub.sum() >= 0.02 * H * H:
            break
    else:
        return None
    a = float(rng.uniform(0.3, 0.7))
    out = _blend(case.output, case.plate, _feather(sub, 1.5) * a)
    return out, sub


def corrupt_fill(case: Case, rng) -> tuple[np.ndarray, np.ndarray] | None:
    if case.mode != "head":
        return None
    H = _ff(case.plm).height
    zone = _grow(_old_head(case), 0.08 * H) & ~_grow(case.new_head, 0.04 * H)
    if zone.sum() < 0.02 * H * H:
        return None
    ys, xs = np.nonzero(zone)
    # more often near the neck and shoulder line: weight by depth
    wgt = (ys - ys.min() + 1.0) ** 1.5
    i = rng.choice(len(ys), p=wgt / wgt.sum())
    rx, ry = rng.uniform(0.12, 0.35) * H, rng.uniform(0.08, 0.25) * H
    m = _shape_mask(rng, zone.shape, (xs[i], ys[i]), rx, ry) & zone
    if m.sum() < 0.01 * H * H:
        return None
    out = case.output.astype(np.float32)
    kind = rng.choice(["streaks", "smear", "blob"])
    yy, xx = np.nonzero(m)
    y0, y1, x0, x1 = yy.min(), yy.max() + 1, xx.min(), xx.max() + 1
    box = out[y0:y1, x0:x1]
    if kind == "streaks":
        # rows stretched from one column with row-wise jitter: horizontal streaks
        col = box[:, int(rng.integers(box.shape[1]))]
        jitter = rng.normal(0, rng.uniform(8, 25), (box.shape[0], 1, 3))
        ang = rng.uniform(-15, 15)
        streak = np.repeat(col[:, None, :], box.shape[1], axis=1) + jitter
        if abs(ang) > 1:
            M = cv2.getRotationMatrix2D((box.shape[1] / 2, box.shape[0] / 2), ang, 1.0)
            streak = cv2.warpAffine(streak.astype(np.float32), M, (box.shape[1], box.shape[0]), borderMode=cv2.BORDER_REFLECT)
        new = streak
        a = rng.uniform(0.7, 1.0)
    elif kind == "smear":
        L = max(3, int(rng.uniform(0.2, 0.5) * H))
        k = np.zeros((L, L), np.float32)
        k[L // 2, :] = 1.0
        M = cv2.getRotationMatrix2D((L / 2 - 0.5, L / 2 - 0.5), rng.uniform(-40, 40), 1.0)
        k = cv2.warpAffine(k, M, (L, L))
        k /= k.sum()
        pad = L
        big = cv2.copyMakeBorder(out[max(0, y0 - pad):y1 + pad, max(0, x0 - pad):x1 + pad], 0, 0, 0, 0, cv2.BORDER_REFLECT)
        sm = cv2.filter2D(big, -1, k, borderType=cv2.BORDER_REFLECT)
        sm = sm[y0 - max(0, y0 - pad):y0 - max(0, y0 - pad) + (y1 - y0), x0 - max(0, x0 - pad):x0 - max(0, x0 - pad) + (x1 - x0)]
        # a colour smear: pulled towards a colour of the head (skin or hair)
        hy, hx = np.nonzero(case.new_head)
        j = rng.integers(len(hy))
        tint = out[hy[j], hx[j]]
        new = sm * (1 - 0.5) + tint * 0.5
        a = rng.uniform(0.7, 1.0)
    else:
        new = box * rng.uniform(0.25, 0.55)
        a = 1.0
    full = out.copy()
    full[y0:y1, x0:x1] = new
    res = _blend(case.output, full, _feather(m, 1.0) * m * a)
    return res, m


def corrupt_outline(case: Case, rng) -> tuple[np.ndarray, np.ndarray] | None:
    from recast.models.mesh_topology import FACE_OVAL

    lm = case.olm if case.olm is not None else case.plm
    oval = np.asarray(lm, np.float64)[list(FACE_OVAL), :2]
    c = oval.mean(0)
    pts = c + (oval - c) * rng.uniform(0.82, 0.97)
    n = len(pts)
    # on a cheek or the jaw: start somewhere on the lower two thirds of the oval
    start = int(rng.integers(n))
    length = int(n * rng.uniform(0.2, 0.45))
    idx = [(start + i) % n for i in range(length)]
    seg = pts[idx]
    lower = seg[:, 1] > c[1] - 0.25 * np.ptp(oval[:, 1])
    seg = seg[lower]
    if len(seg) < 4:
        seg = pts[[(n // 4 + i) % n for i in range(length)]]
    thick = int(rng.integers(1, 3))
    lab = cv2.cvtColor(case.output, cv2.COLOR_RGB2LAB).astype(np.float32)
    line = np.zeros(case.output.shape[:2], np.uint8)
    cv2.polylines(line, [np.round(seg * 16).astype(np.int32)], False, 255, thick, cv2.LINE_AA, shift=4)
    a = line.astype(np.float32) / 255.0
    d = rng.uniform(25, 60) * (1 if rng.random() < 0.3 else -1) * 2.55  # OpenCV's 8-bit L is 0..255
    lab[..., 0] = np.clip(lab[..., 0] + d * a * rng.uniform(0.7, 1.0), 0, 255)
    out = cv2.cvtColor(np.clip(lab + 0.5, 0, 255).astype(np.uint8), cv2.COLOR_LAB2RGB)
    gt = _grow(line > 40, 2)
    return out, gt


def corrupt_hue_blotch(case: Case, rng) -> tuple[np.ndarray, np.ndarray] | None:
    lm = case.olm if case.olm is not None else case.plm
    lm = np.asarray(lm, np.float64)
    H = _ff(lm).height
    eye = lm[[33, 133]].mean(0) if rng.random() < 0.5 else lm[[263, 362]].mean(0)
    centre = eye[:2] + np.array([rng.uniform(-0.05, 0.05), -rng.uniform(0.0, 0.1)]) * H
    m = _shape_mask(rng, case.output.shape, centre, rng.uniform(0.1, 0.22) * H, rng.uniform(0.07, 0.16) * H)
    hue = np.deg2rad(rng.uniform(130, 330))  # greens, blues, purples: no skin hue
    chroma = rng.uniform(25, 50)
    s = rng.uniform(0.6, 1.0)
    lab = cv2.cvtColor(case.output.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)
    a = _feather(m, 0.02 * H) * s
    lab[..., 1] = lab[..., 1] * (1 - a) + a * chroma * np.cos(hue)
    lab[..., 2] = lab[..., 2] * (1 - a) + a * chroma * np.sin(hue)
    out = np.clip(cv2.cvtColor(lab, cv2.COLOR_LAB2RGB) * 255 + 0.5, 0, 255).astype(np.uint8)
    return out, m


def corrupt_grey_hair(case: Case, rng) -> tuple[np.ndarray, np.ndarray] | None:
    if case.mode != "head":
        return None
    from recast.models.masks import face_oval_mask

    hl = case.look.hair_lab
    if hl is None or (hl[0] > 65 and np.hypot(hl[1], hl[2]) < 12):
        return None  # the class is a dark or coloured head of hair turned grey: not a grey one

    lm = case.olm if case.olm is not None else case.plm
    ff = _ff(lm)
    H = ff.height
    hair = case.new_head & ~_grow(face_oval_mask(lm, case.output.shape) > 0, 0.01 * H)
    # not the neck column under the chin (long hair hangs beside it)
    ys, xs = np.mgrid[0:hair.shape[0], 0:hair.shape[1]].astype(np.float32)
    lat, below = ff.coords(xs, ys)
    hair &= ~((np.abs(lat) < 0.5 * ff.width) & (below > -0.15 * H))
    if hair.sum() < 0.05 * H * H:
        return None
    lab = cv2.cvtColor(case.output.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)
    s = rng.uniform(0.6, 1.0)
    target_L = rng.uniform(62, 88)
    a = _feather(hair, 1.0) * s
    lab[..., 0] = lab[..., 0] * (1 - a) + a * (target_L + 0.4 * (lab[..., 0] - lab[..., 0][hair].mean()))
    lab[..., 1] *= 1 - a
    lab[..., 2] *= 1 - a
    out = np.clip(cv2.cvtColor(lab, cv2.COLOR_LAB2RGB) * 255 + 0.5, 0, 255).astype(np.uint8)
    return out, hair


def corrupt_blur(case: Case, rng) -> tuple[np.ndarray, np.ndarray] | None:
    from recast.models.masks import face_oval_mask

    lm = case.olm if case.olm is not None else case.plm
    H = _ff(lm).height
    f = rng.uniform(2.0, 4.0)
    h, w = case.output.shape[:2]
    small = cv2.resize(case.output, (max(1, round(w / f)), max(1, round(h / f))), interpolation=cv2.INTER_AREA)
    up = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC if rng.random() < 0.5 else cv2.INTER_LINEAR)
    oval = _grow(face_oval_mask(lm, case.output.shape) > 0, 0.03 * H)
    return _blend(case.output, up, _feather(oval, 0.03 * H)), oval


def corrupt_occluder(case: Case, rng) -> tuple[np.ndarray, np.ndarray] | None:
    lm = case.olm if case.olm is not None else case.plm
    ff = _ff(lm)
    H, W = ff.height, ff.width
    centre = ff.point(rng.uniform(-0.3, 0.3) * W, rng.uniform(0.0, 0.25) * H)
    m = _shape_mask(rng, case.output.shape, centre, rng.uniform(0.15, 0.32) * W, rng.uniform(0.08, 0.2) * H)
    L = rng.uniform(70, 95)
    lab = np.zeros(case.output.shape, np.float32)
    lab[..., 0] = L + rng.normal(0, 2.0, lab.shape[:2]).astype(np.float32)
    lab[..., 1] = rng.uniform(-6, 6)
    lab[..., 2] = rng.uniform(-6, 10)
    # a little shading, top to bottom
    yy = np.arange(lab.shape[0], dtype=np.float32)[:, None]
    lab[..., 0] -= (yy - centre[1]) / max(H, 1) * rng.uniform(0, 30)
    blob = np.clip(cv2.cvtColor(np.clip(lab, [0, -127, -127], [100, 127, 127]).astype(np.float32), cv2.COLOR_LAB2RGB) * 255 + 0.5, 0, 255)
    a = _feather(m, 1.0) * rng.uniform(0.8, 1.0)
    return _blend(case.output, blob, a), m


def visible(clean: np.ndarray, out: np.ndarray, gt: np.ndarray, kind: str = "") -> bool:
    """A corruption counts when it shows: in its region, the 90th percentile of the change (max
    over channels) is at least 20 grey levels (a streak of green on green does not); a blur, which
    moves few pixels far, at least 8."""
    if gt.sum() < 8:
        return False
    d = np.abs(out.astype(np.int16) - clean.astype(np.int16)).max(axis=2)[gt]
    return float(np.percentile(d, 90)) >= (8.0 if kind == "blur" else 20.0)


def corrupt(fn, case: Case, rng, tries: int = 6):
    """``fn(case, rng)`` redrawn until the corruption is visible (None when it never is)."""
    for _ in range(tries):
        made = fn(case, rng)
        if made is None:
            return None
        if visible(case.output, made[0], made[1], fn.__name__.removeprefix("corrupt_")):
            return made
    return None


CORRUPTIONS = {
    "clothing": corrupt_clothing,
    "hair_back": corrupt_hair_back,
    "fill": corrupt_fill,
    "outline": corrupt_outline,
    "hue_blotch": corrupt_hue_blotch,
    "grey_hair": corrupt_grey_hair,
    "blur": corrupt_blur,
    "occluder": corrupt_occluder,
}


# --- running --------------------------------------------------------------------------------------
def measure(case: Case, output: np.ndarray, olm: np.ndarray | None):
    from recast.models.qc_defects import measure_defects

    return measure_defects(case.plate, output, case.plm, olm, look=case.look, mode=case.mode, plate_person=case.person)


#: no threshold below these: the least a supervisor would call a defect (% of the head, face
#: heights of line, ΔE) whatever a small clean set allows; sharpness: no threshold above
FLOOR = {"foreign_pieces": 0.3, "leftover_plate_head": 0.3, "fill_artefacts": 0.3, "inner_edges": 0.03,
         "colour_blotches": 0.2, "hair_colour_de": 10.0, "sharpness": 0.9}


def propose(clean: np.ndarray, bad: np.ndarray, low_is_bad: bool, floor: float | None = None) -> float:
    """A per-frame threshold: between the clean values' 95th percentile and the corrupted values'
    5th (geometric middle when they separate), else the clean 95th percentile; never past ``floor``."""
    t = _propose(clean, bad, low_is_bad)
    if floor is not None and np.isfinite(t):
        t = min(t, floor) if low_is_bad else max(t, floor)
    return float(t)


def _propose(clean: np.ndarray, bad: np.ndarray, low_is_bad: bool) -> float:
    c = clean[np.isfinite(clean)]
    b = bad[np.isfinite(bad)]
    if low_is_bad:
        c, b = -c, -b
    if not c.size:
        return float("nan")
    lo = float(np.percentile(c, 95))
    hi = float(np.percentile(b, 5)) if b.size else lo
    if hi > lo:
        t = np.sqrt(max(lo, 1e-3) * hi) if lo > 0 and not low_is_bad else (lo + hi) / 2
    else:
        t = lo
    if lo <= 0 < hi and not low_is_bad:
        t = min(hi / 2, max(lo, 0) + 0.5 * hi)
    return float(-t if low_is_bad else t)


def flagged(v: float, t: float, low_is_bad: bool) -> bool:
    if not np.isfinite(v):
        return False
    return v < t if low_is_bad else v > t


def contact_sheet(examples, path: Path, per_row: int = 6, tile: int = 220) -> None:
    tiles = []
    for name, case, out, gt, region in examples:
        H = _ff(case.plm).height
        cx, cy = case.plm[:, :2].mean(0)
        r = int(1.6 * H)
        x0, y0 = max(0, int(cx - r)), max(0, int(cy - r))
        x1, y1 = min(out.shape[1], int(cx + r)), min(out.shape[0], int(cy + r))
        img = cv2.cvtColor(out, cv2.COLOR_RGB2BGR).copy()
        for m, col in ((gt, (0, 220, 0)), (region, (0, 0, 255))):
            cs, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
            cv2.drawContours(img, cs, -1, col, 1)
        t = cv2.resize(img[y0:y1, x0:x1], (tile, tile), interpolation=cv2.INTER_AREA)
        cv2.putText(t, name, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (255, 255, 255), 1, cv2.LINE_AA)
        tiles.append(t)
    if not tiles:
        return
    while len(tiles) % per_row:
        tiles.append(np.zeros_like(tiles[0]))
    rows = [np.hstack(tiles[i:i + per_row]) for i in range(0, len(tiles), per_row)]
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.vstack(rows))


def read_labels(path: Path) -> dict[tuple[str, int], tuple[str, ...]]:
    out = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            classes = {c.strip() for c in row.get("classes", "").replace(";", " ").split() if c.strip() and c.strip() != "clean"}
            out[(row["pair"], int(row["frame"]))] = tuple(sorted({EXPECTED.get(c, c) for c in classes}))
    return out


def _load(cache: Path | None, key: str):
    import pickle

    if cache is None or not (cache / "frames.pkl").exists():
        return None
    with open(cache / "frames.pkl", "rb") as f:
        stored_key, data = pickle.load(f)
    return data if stored_key == key else None


def _save(cache: Path | None, key: str, data) -> None:
    import pickle

    if cache is None:
        return
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / "frames.pkl", "wb") as f:
        pickle.dump((key, data), f)


def main(argv: list[str] | None = None) -> int:
    from recast.models.face import FaceAnalyzer
    from recast.models.qc_defects import DEFECT_MEASURES, SUGGESTED_THRESHOLDS

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sample", type=int, default=len(PAIRS), help="the first N pairs")
    ap.add_argument("--frames", type=int, default=4, help="frames per pair (first 2 s)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--variants", type=int, default=1, help="random variants of each corruption per clean frame")
    ap.add_argument("--from", dest="from_dir", type=Path, help="plate/output frame pairs instead of in-process swaps")
    ap.add_argument("--labels", type=Path, help="CSV pair,frame,classes of real defects (with --from)")
    ap.add_argument("--sheet", type=Path, default=Path("/tmp/qc_detectors/sheet.png"))
    ap.add_argument("--modes", default="head,face")
    ap.add_argument("--fixed", action="store_true",
                    help="judge at recast.models.qc_defects.SUGGESTED_THRESHOLDS instead of proposing thresholds (a held-out check)")
    ap.add_argument("--cache", type=Path, help="keep the clean and corrupted frames here (pickles) to rerun the detectors only")
    args = ap.parse_args(argv)
    cv2.setNumThreads(1)
    rng = np.random.default_rng(args.seed)

    t0 = time.perf_counter()
    modes = tuple(args.modes.split(","))
    key = f"{args.sample}-{args.frames}-{args.modes}-{args.seed}-{args.variants}-{args.from_dir}"
    cached = _load(args.cache, key)
    if cached is not None:
        cases, made_all = cached
    else:
        cases = load_dir(args.from_dir) if args.from_dir else make_cases(PAIRS[: args.sample], args.frames, modes)
        made_all = None
    print(f"{len(cases)} clean frames ({time.perf_counter() - t0:.0f} s to make)")

    clean_vals = {m: [] for m in DEFECT_MEASURES}
    clean_rows = []
    times = []
    for case in cases:
        t = time.perf_counter()
        d = measure(case, case.output, case.olm)
        times.append((time.perf_counter() - t) * 1000)
        clean_rows.append((case, d))
        for m in DEFECT_MEASURES:
            clean_vals[m].append(d.values[m])

    if made_all is None:
        made_all = []
        with FaceAnalyzer(static_images=True, max_faces=2) as fa:
            for ci, case in enumerate(cases):
                for name, fn in CORRUPTIONS.items():
                    for _ in range(args.variants):
                        made = corrupt(fn, case, rng)
                        if made is not None:
                            made_all.append((name, ci, made[0], made[1], detect(fa, made[0])))
        _save(args.cache, key, (cases, made_all))
    bad: dict[str, list] = {c: [] for c in CORRUPTIONS}
    for name, ci, out, gt, olm in made_all:
        bad[name].append((cases[ci], out, gt, measure(cases[ci], out, olm)))

    print(f"\nmeasure_defects: {np.median(times):.0f} ms per frame median, {np.percentile(times, 90):.0f} ms p90 "
          f"(one thread, frames {WORK} px)")
    # which clean frames are clean: by the eye labels (in-process set) or the labels CSV (--from)
    if args.labels:
        csv_labels = read_labels(args.labels)
        label_of = {id(c): csv_labels.get((c.pair, c.frame)) for c in cases}
    elif args.from_dir:
        label_of = {id(c): () for c in cases}
    else:
        label_of = {id(c): EYE_LABELS.get((c.pair, c.mode)) for c in cases}
    eye_clean = [(c, d) for c, d in clean_rows if label_of[id(c)] == ()]
    print(f"{len(eye_clean)} of {len(clean_rows)} clean outputs labelled clean by eye, "
          f"{sum(label_of[id(c)] is None for c in cases)} unsure; a measure's false alarms are counted on the frames "
          "labelled without its class (clean or with other classes only)")

    def negatives(m: str) -> list:
        return [(c, d) for c, d in clean_rows if label_of[id(c)] is not None and m not in label_of[id(c)]]

    thresholds = {}
    print(f"\n{'measure':22s} {'threshold':>10s}  {'corruption':11s} {'detected':>9s} {'located':>8s}  {'false alarms':>12s}  "
          "clean median/p95/max")
    for m in DEFECT_MEASURES:
        low = m in LOW_IS_BAD
        cv = np.asarray([d.values[m] for _, d in negatives(m)], float)
        names = [c for c, e in EXPECTED.items() if e == m]
        bv = np.asarray([r[3].values[m] for c in names for r in bad[c]], float)
        t = SUGGESTED_THRESHOLDS[m] if args.fixed else propose(cv, bv, low, FLOOR.get(m))
        thresholds[m] = t
        fin = cv[np.isfinite(cv)]
        fa_rate = np.mean([flagged(v, t, low) for v in fin]) if fin.size else float("nan")
        stats = f"{np.median(fin):.3g}/{np.percentile(fin, 95):.3g}/{fin.max():.3g}" if fin.size else "-"
        for c in names:
            rows = bad[c]
            if not rows:
                print(f"{m:22s} {t:10.3g}  {c:11s} {'n/a':>9s}")
                continue
            det = [flagged(r[3].values[m], t, low) for r in rows]
            loc = [flagged(r[3].values[m], t, low) and (r[3].regions[m] & r[2]).any() for r in rows]
            print(f"{m:22s} {t:10.3g}  {c:11s} {np.mean(det):8.0%} {np.mean(loc):8.0%}  {fa_rate:11.1%}  {stats}   "
                  f"(n={len(rows)}, clean n={fin.size})")
    # cross-talk: which other measures fire on each corruption
    print("\nother measures flagged per corruption (share of frames):")
    for c, rows in bad.items():
        if not rows:
            continue
        others = []
        for m in DEFECT_MEASURES:
            if m == EXPECTED[c]:
                continue
            r = np.mean([flagged(x[3].values[m], thresholds[m], m in LOW_IS_BAD) for x in rows])
            if r > 0:
                others.append(f"{m} {r:.0%}")
        print(f"  {c:11s} " + (", ".join(others) or "none"))
    print("\nproposed thresholds (per frame):")
    for m, t in thresholds.items():
        print(f"  {m} {'<' if m in LOW_IS_BAD else '>'} {t:.3g}")
    fired = [(case, m, d.values[m]) for m in DEFECT_MEASURES for case, d in negatives(m) if flagged(d.values[m], thresholds[m], m in LOW_IS_BAD)]
    if fired:
        print("\nfalse alarms (frames labelled without the class):")
        for case, m, v in fired:
            print(f"  {case.pair} frame {case.frame} {case.mode}: {m} = {v:.3g}")
    # the real defects the labels name
    real = [(c, d, label_of[id(c)]) for c, d in clean_rows if label_of[id(c)]]
    if real:
        print("\nlabelled real defects (frames with the class / detected; other measures flagged on them):")
        for m in DEFECT_MEASURES:
            pos = [flagged(d.values[m], thresholds[m], m in LOW_IS_BAD) for c, d, cl in real if m in cl]
            extra = [flagged(d.values[m], thresholds[m], m in LOW_IS_BAD) for c, d, cl in real if m not in cl]
            if pos or any(extra):
                print(f"  {m:22s} detected {np.mean(pos) if pos else float('nan'):6.0%} of {len(pos):3d}; "
                      f"flagged on {sum(extra)} of {len(extra)} frames labelled with other classes only")

    examples = []
    for c, rows in bad.items():
        for case, out, gt, d in rows[:: max(1, len(rows) // 5)][:5]:
            examples.append((f"{c} {d.values[EXPECTED[c]]:.3g}", case, out, gt, d.regions[EXPECTED[c]]))
    contact_sheet(examples, args.sheet)
    print(f"\ncontact sheet: {args.sheet} ({time.perf_counter() - t0:.0f} s in all)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
