"""Per-frame defect detectors on real swaps: a clean swapped frame scores below each measure's
threshold, the matching corruption (seeded, from benchmarks/qc_detectors.py) above it, and the
region the detector returns lies where the corruption was."""

from __future__ import annotations

import math

import numpy as np
import pytest

from benchmarks import qc_detectors as bench
from recast.models.face import FaceAnalyzer
from recast.models.qc_defects import DEFECT_MEASURES, SUGGESTED_THRESHOLDS, FrameDefects, SourceLook, measure_defects
from tests.conftest import IMAGES, VIDEOS

pytestmark = pytest.mark.skipif(not (IMAGES.is_dir() and VIDEOS.is_dir()), reason="shared media not available")


@pytest.fixture(scope="module")
def cases():
    """A long-haired blonde source on a short-haired green-screen plate (head and face mode), and
    a short-haired source on a plate whose long hair the new head leaves uncovered (head mode) and
    a short-haired man on the green-screen plate (the place of its bun filled cleanly)."""
    made = bench.make_cases([("deepface_img3.jpg", "liveportrait_d0.mp4")], 1, ("head", "face"), log=lambda *a: None)
    made += bench.make_cases([("skimage_astronaut.png", "liveportrait_d3.mp4")], 1, ("head",), log=lambda *a: None)
    made += bench.make_cases([("face_recognition_obama.jpg", "liveportrait_d0.mp4")], 1, ("head",), log=lambda *a: None)
    by = {(c.pair.split("__")[0], c.mode): c for c in made}
    assert len(by) == 4, "test media: a swap could not be made"
    return by


@pytest.fixture(scope="module")
def fa():
    with FaceAnalyzer(static_images=True, max_faces=2) as analyzer:
        yield analyzer


def _flagged(name: str, value: float) -> bool:
    t = SUGGESTED_THRESHOLDS[name]
    return value < t if name in bench.LOW_IS_BAD else value > t


def _corrupted(case, kind: str, fa, seed: int = 3) -> tuple[FrameDefects, np.ndarray]:
    rng = np.random.default_rng(seed)
    made = bench.corrupt(bench.CORRUPTIONS[kind], case, rng)
    assert made is not None, f"{kind}: no visible corruption could be made"
    out, gt = made
    return bench.measure(case, out, bench.detect(fa, out)), gt


def test_interface_and_clean_frames(cases):
    for (src, mode), case in cases.items():
        d = bench.measure(case, case.output, case.olm)
        assert set(d.values) == set(DEFECT_MEASURES) == set(d.regions)
        for name, region in d.regions.items():
            assert region.shape == case.output.shape[:2] and region.dtype == np.bool_
        if mode == "face":
            assert math.isnan(d.values["leftover_plate_head"]) and math.isnan(d.values["hair_colour_de"])
        if src == "deepface_img3":  # a clean swap: nothing flagged
            flagged = [n for n in DEFECT_MEASURES if _flagged(n, d.values[n])]
            assert not flagged, f"{mode}: clean frame flagged for {flagged}: {d.values}"
    # the plate given as its own output, in face mode: nothing changed, nothing found
    case = cases[("deepface_img3", "face")]
    d = measure_defects(case.plate, case.plate, case.plm, case.plm, look=case.look, mode="face")
    assert d.values["foreign_pieces"] == 0 and d.values["colour_blotches"] == 0
    assert d.values["sharpness"] == pytest.approx(1.0, abs=0.05)
    # no face anywhere: every measure NaN, every region empty
    d = measure_defects(case.plate, case.output, None, None, look=case.look, mode="head")
    assert all(math.isnan(v) for v in d.values.values()) and not any(r.any() for r in d.regions.values())


@pytest.mark.parametrize("kind,mode,src", [
    ("clothing", "head", "deepface_img3"),
    ("occluder", "head", "deepface_img3"),
    ("hair_back", "head", "skimage_astronaut"),
    # the long-haired source covers all of d0's old head now that its shoulders stay; a short-
    # haired one leaves the old hair's place to fill (d3's fill has artefacts of its own). Not the
    # astronaut (since her matte lost its collar, the draw lands on d0's jacket beside the neck, a
    # place the swap keeps and no fill artefact can be) nor Beckham (his clean frame reads 0.26-0.64,
    # at the bound)
    ("fill", "head", "face_recognition_obama"),
    ("outline", "face", "deepface_img3"),
    ("hue_blotch", "head", "deepface_img3"),
    ("grey_hair", "head", "deepface_img3"),
    ("blur", "face", "deepface_img3"),
])
def test_corruption_is_found_where_it_is(cases, fa, kind, mode, src):
    case = cases[(src, mode)]
    name = bench.EXPECTED[kind]
    clean = bench.measure(case, case.output, case.olm).values[name]
    assert not _flagged(name, clean), f"{kind}: the clean frame is flagged already ({name} = {clean:.3g})"
    d, gt = _corrupted(case, kind, fa)
    value = d.values[name]
    assert _flagged(name, value), f"{kind}: {name} = {value:.3g} (clean {clean:.3g}, threshold {SUGGESTED_THRESHOLDS[name]})"
    region = d.regions[name]
    assert region.any()
    if name not in ("hair_colour_de", "sharpness"):  # those outline the area they measured
        # most of what was found lies on the corruption (grown by a few pixels)
        assert (region & bench._grow(gt, 4)).sum() >= 0.5 * region.sum(), f"{kind}: region away from the corruption"
    else:
        assert (region & gt).any()


def test_the_verdict_judges_each_measure_at_the_bound_its_detector_was_proven_at():
    """QCThresholds keeps literals (models.head imports models.metrics, so metrics cannot import
    this module); they must be the detectors' frozen bounds, not drift from them."""
    from recast.models.metrics import QCThresholds

    t = QCThresholds()
    assert {name: getattr(t, f"{name}_review") for name in DEFECT_MEASURES} == SUGGESTED_THRESHOLDS


@pytest.mark.parametrize("mode", ["head", "face"])
def test_a_grey_patch_on_the_cheek_is_a_colour_blotch_where_it_is(cases, fa, mode):
    """A grey-green, darker patch on the new face's cheek (the skin's own texture kept, its
    colour taken away): near-zero chroma is common in any head's histogram (hair, shadows), so
    chroma alone cannot see it; the skin's colour at that lightness can."""
    import cv2

    case = cases[("deepface_img3", mode)]
    out = case.output.astype(np.float32)
    lm = case.olm
    h = float(np.ptp(lm[:, 1]))
    centre = lm[205, :2] * 0.7 + lm[50, :2] * 0.3  # the right cheek, below the eye, beside the nose
    yy, xx = np.mgrid[: out.shape[0], : out.shape[1]]
    inside = ((xx - centre[0]) / (0.09 * h)) ** 2 + ((yy - centre[1]) / (0.06 * h)) ** 2 <= 1.0
    alpha = cv2.GaussianBlur(inside.astype(np.float32), (0, 0), 0.01 * h)[..., None]
    grey = out.mean(axis=2, keepdims=True) * np.float32([0.72, 0.85, 0.72])
    patched = np.clip(out * (1 - alpha) + grey * alpha, 0, 255).astype(np.uint8)
    before = bench.measure(case, case.output, case.olm).values["colour_blotches"]
    d = bench.measure(case, patched, bench.detect(fa, patched))
    value = d.values["colour_blotches"]
    assert not _flagged("colour_blotches", before)
    assert _flagged("colour_blotches", value), f"{mode}: grey patch not flagged ({value:.3g}, clean {before:.3g})"
    region = d.regions["colour_blotches"]
    assert (region & bench._grow(inside, 4)).sum() >= 0.8 * region.sum(), "region away from the patch"
    assert (region & inside).sum() >= 0.3 * inside.sum(), "most of the patch not outlined"
