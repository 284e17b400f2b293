"""The QC rule table: every judged metric flags just beyond its bound (not at it), every flagged
measure gets its own reason record with its frames, wrong_person fails, a warned source photo
caps the verdict at review; the per-frame values keep the flagged regions and the contact sheet
outlines them."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from recast.contracts import SourceFinding, Verdict
from recast.models.metrics import QCThresholds, decide_verdict
from recast.models.qc_rules import DEFECT_RULES, REASON_FRAMES, RULES, judge, rule, rule_frames, vetting_records

# a shot every rule passes
GOOD = {
    "identity_transfer_rate": 0.97, "background_psnr_db": 48.0, "pose_error_deg": 1.2, "expression_error": 0.012, "jitter_ratio": 1.1,
    "motion_ratio": 1.0, "flicker_ratio": 1.2, "seam_score": 1.05, "face_found_ratio": 1.0, "wrong_person": 0,
    "foreign_pieces": 0.0, "leftover_plate_head": 0.0, "fill_artefacts": 0.0, "inner_edges": 0.0, "colour_blotches": 0.0,
    "hair_colour_de": 3.0, "sharpness": 1.0, "guessed_fill": 2.0,
}
T = QCThresholds()
# fixed bounds for the tests that quote texts and frames (the defaults are frozen elsewhere)
TT = QCThresholds(foreign_pieces_review=1.0, foreign_pieces_fail=10.0, sharpness_review=0.5, inner_edges_review=1.0, colour_blotches_review=2.0,
                  motion_ratio_review=0.8)


def _nudge(r, bound: float, beyond: bool) -> float:
    step = max(abs(bound) * 1e-3, 1e-3)
    bad = 1.0 if r.worse == "higher" else -1.0
    return bound + (bad * step if beyond else -bad * step)


def test_the_table_names_every_threshold_once_and_every_judged_metric_passes_on_a_good_shot():
    fields = {f.name for f in dataclasses.fields(QCThresholds)}
    named = [b for r in RULES for b in (r.review, r.fail) if b is not None]
    assert set(named) == fields and len(named) == len(set(named))  # no bound unused, none shared
    assert {r.metric for r in RULES if r.judged} <= set(GOOD)
    assert judge(GOOD, T) == (Verdict.passed, [])
    assert {r.metric for r in DEFECT_RULES} == {"foreign_pieces", "leftover_plate_head", "fill_artefacts", "inner_edges",
                                                "colour_blotches", "hair_colour_de", "sharpness"}


@pytest.mark.parametrize("r", [r for r in RULES if r.judged], ids=lambda r: r.metric)
def test_each_rule_flags_just_beyond_its_bound_and_not_at_it(r):
    rb, fb = r.bounds(T)
    for outcome, bound in (("review", rb), ("fail", fb)):
        if bound is None:
            continue
        def at(v):
            return {**GOOD, r.metric: v, **({r.fail_on: v} if r.fail_on else {})}

        # at the bound: at most the milder outcome (a fail bound beyond the review bound still reviews)
        verdict, records = judge(at(bound), T, {r.metric: [7, 3]})
        mine = [x for x in records if x["metric"] == r.metric]
        assert not mine or (outcome == "fail" and mine[0]["outcome"] == "review"), (r.metric, bound, mine)
        verdict, records = judge(at(_nudge(r, bound, True)), T, {r.metric: [7, 3]})
        assert [x["metric"] for x in records] == [r.metric]
        rec = records[0]
        assert rec["outcome"] == outcome and rec["threshold"] == bound and rec["frames"] == [7, 3]
        assert rec["text"].startswith(r.label) and rec["text"].endswith(f"({outcome}) at frames 7, 3"), rec["text"]
        assert verdict is (Verdict.failed if outcome == "fail" else Verdict.review)


def test_every_flagged_measure_gets_its_own_record_even_when_the_verdict_is_already_decided():
    bad = {**GOOD, "identity_transfer_rate": 0.3, "pose_error_deg": 9.0, "foreign_pieces": 4.0, "colour_blotches": 5.0,
           "sharpness": 0.2, "motion_ratio": 0.6, "wrong_person": 1}
    frames = {"foreign_pieces": [12, 30], "colour_blotches": [30], "sharpness": [4], "wrong_person": list(range(40, 60))}
    verdict, records = judge(bad, TT, frames)
    assert verdict is Verdict.failed
    by = {r["metric"]: r for r in records}
    assert set(by) == {"identity_transfer_rate", "pose_error_deg", "foreign_pieces", "colour_blotches", "sharpness", "motion_ratio",
                       "wrong_person"}
    # fail reasons first, each rule in table order
    assert [r["outcome"] for r in records] == ["fail", "fail"] + ["review"] * 5
    assert by["foreign_pieces"]["frames"] == [12, 30] and by["foreign_pieces"]["value"] == 4.0
    assert by["foreign_pieces"]["text"] == "foreign pieces 4.0% of head > 1.0% of head (review) at frames 12, 30"
    assert by["sharpness"]["text"].startswith("sharpness 0.20 < 0.50 (review)")
    assert by["wrong_person"]["outcome"] == "fail" and by["wrong_person"]["frames"] == list(range(40, 40 + REASON_FRAMES))
    assert set(records[0]) == {"metric", "value", "threshold", "outcome", "frames", "text"}


def test_wrong_person_and_gross_foreign_pieces_fail():
    verdict, records = judge({**GOOD, "wrong_person": 1}, T, {"wrong_person": [50, 51]})
    assert verdict is Verdict.failed and records[0]["metric"] == "wrong_person" and records[0]["frames"] == [50, 51]
    # gross pieces on two or more sampled frames fail; on one frame (a glitch) they ask for review
    gross = T.foreign_pieces_fail + 1
    verdict, records = judge({**GOOD, "foreign_pieces": gross, "foreign_pieces_sustained": gross - 0.5}, T, {"foreign_pieces": [4, 9]})
    assert verdict is Verdict.failed and records[0]["outcome"] == "fail" and records[0]["value"] == gross - 0.5
    assert records[0]["text"] == "foreign pieces 10.5% of head > 10.0% of head on 2 or more sampled frames (fail) at frames 4, 9"
    verdict, records = judge({**GOOD, "foreign_pieces": gross, "foreign_pieces_sustained": 0.2}, T)
    assert verdict is Verdict.review and records[0]["outcome"] == "review" and records[0]["value"] == gross
    verdict, _ = judge({**GOOD, "wrong_person": 0}, T)
    assert verdict is Verdict.passed


def test_unmeasured_defects_are_skipped_and_required_metrics_ask_for_review():
    metrics = {**GOOD, "foreign_pieces": None, "sharpness": float("nan"), "wrong_person": None}
    assert judge(metrics, T) == (Verdict.passed, [])
    verdict, records = judge({**GOOD, "identity_transfer_rate": None}, T)
    assert verdict is Verdict.review and records[0]["text"] == "identity transfer not measured (review)"


def test_a_warned_source_photo_caps_the_verdict_at_review_with_one_record_per_warning():
    findings = (SourceFinding(check="face_size", outcome="warn", value=82.0, threshold=128.0, text="face is 82 px high, upscaled 3.1x"),
                SourceFinding(check="blur", outcome="ok", value=140.0, threshold=60.0, text="sharp"),
                SourceFinding(check="occluder", outcome="warn", value=0.12, threshold=0.05, text="a hand covers 12% of the face"))
    recs = vetting_records(findings)
    assert [r["metric"] for r in recs] == ["source_vetting", "source_vetting"]
    assert recs[0]["value"] == 82.0 and recs[0]["threshold"] == 128.0 and recs[0]["outcome"] == "review" and recs[0]["frames"] == []
    assert "face_size" in recs[0]["text"] and "upscaled 3.1x" in recs[0]["text"]
    verdict, records = judge(GOOD, T, extra=recs)
    assert verdict is Verdict.review and records == recs
    # a fail elsewhere stays a fail, the warnings are still listed
    verdict, records = judge({**GOOD, "wrong_person": 2}, T, extra=recs)
    assert verdict is Verdict.failed and [r["metric"] for r in records] == ["wrong_person", "source_vetting", "source_vetting"]
    assert vetting_records([{"check": "pose", "outcome": "ok", "text": "frontal"}]) == []


def test_rule_frames_are_the_frames_beyond_the_bound_worst_first():
    v = np.array([0.1, 3.0, np.nan, 1.5, 3.0, 0.9])
    assert rule_frames(rule("foreign_pieces"), v, TT) == [1, 4, 3]
    assert rule_frames(rule("foreign_pieces"), v, TT, among=np.array([1, 0, 1, 1, 1, 1], bool)) == [4, 3]
    s = np.array([1.0, 0.2, 0.45, np.nan, 0.7])
    assert rule_frames(rule("sharpness"), s, TT) == [1, 2]
    assert rule_frames(rule("jitter_ratio"), np.array([0.0, 0.05, 0.01]), TT) == [1]  # its own per-frame bound


def test_decide_verdict_is_the_rule_table_without_frames():
    metrics = {**GOOD, "seam_score": 2.5, "inner_edges": 3.0}
    verdict, texts = decide_verdict(metrics, TT)
    v2, records = judge(metrics, TT, {"seam_score": [1]})
    assert verdict is v2 is Verdict.review
    assert texts == ("seam score 2.50 > 1.50 (review)", "inner edges 3.00 face heights > 1.00 face heights (review)")
    assert [r["text"].split(" at frames")[0] for r in records] == list(texts)


def test_thresholds_dict_works_like_the_dataclass():
    t = dataclasses.asdict(QCThresholds(sharpness_review=0.7))
    verdict, records = judge({**GOOD, "sharpness": 0.6}, t)
    assert verdict is Verdict.review and records[0]["threshold"] == 0.7


# --- per-frame values and the report ------------------------------------------------------------
def _per_frame(total=20, h=60, w=80):
    from recast.media.artifacts import QCPerFrame

    nan = np.full(total, np.nan)
    names = ("foreign_pieces", "sharpness")
    defects = np.full((total, 2), np.nan)
    defects[[2, 9, 15], 0] = [0.2, 6.0, 2.5]
    defects[[2, 9, 15], 1] = [1.0, 0.9, 1.1]
    mask = np.zeros((2, h, w), bool)
    mask[0, 20:40, 55:75] = True
    mask[1, 30:45, 50:70] = True
    reasons = ({"metric": "foreign_pieces", "value": 6.0, "threshold": 1.0, "outcome": "review", "frames": [9, 15],
                "text": "foreign pieces 6.0% of head > 1.0% of head (review) at frames 9, 15"},)
    return QCPerFrame(swapped=np.ones(total, bool), face_found=np.ones(total, bool), sampled=np.array([2, 9, 15]), d_source=nan,
                      d_plate=nan, similarity_source=nan, similarity_plate=nan, transferred=np.zeros(total, bool),
                      pose_plate=np.zeros((total, 3)), pose_output=np.zeros((total, 3)), pose_error=np.zeros(total),
                      expression_error=np.zeros(total), jitter_excess=np.zeros(total), flicker_output=np.ones(total),
                      flicker_plate=np.ones(total), flicker_ratio=np.ones(total), seam=nan, background_psnr=np.full(total, 45.0),
                      hair=nan, badness=nan, identity_match_distance=0.6, motion_ratio=np.ones(total), wrong_person=np.zeros(total),
                      defects=defects, defect_names=names, region_frames=[9, 15], region_measure=["foreign_pieces", "foreign_pieces"],
                      region_masks=mask, reasons=reasons, thresholds=dataclasses.asdict(TT))


def test_per_frame_values_keep_defects_and_flagged_regions(tmp_path):
    from recast.media.artifacts import QCPerFrame

    pf = _per_frame()
    back = QCPerFrame.load(pf.save(tmp_path / "qc"))
    assert list(back.defect_names) == ["foreign_pieces", "sharpness"]
    assert np.array_equal(back.series("foreign_pieces"), pf.defects[:, 0], equal_nan=True)
    assert back.series("motion_ratio").shape == (20,) and back.series("nope") is None
    assert back.region_masks.dtype == bool and back.region_masks.shape == (2, 60, 80)
    assert [m for m, _ in back.regions(9)] == ["foreign_pieces"] and back.regions(3) == []
    assert np.array_equal(back.regions(15)[0][1], pf.region_masks[1])
    with pytest.raises(ValueError, match="region"):
        dataclasses.replace(pf, region_frames=[9])


def test_contact_sheet_puts_the_flagged_frames_first_and_outlines_their_regions():
    from recast.media.qc_report import TILE_W, choose_frames, contact_sheet, frame_label, frame_regions, plot_panels, qc_table

    pf = _per_frame()
    reasons = list(pf.reasons)
    frames = choose_frames(pf, reasons, len(pf))
    assert 9 in frames and 15 in frames
    rng = np.random.default_rng(3)
    plate = (rng.integers(90, 110, (60, 80, 3))).astype(np.uint8)
    rows = [(f, plate, plate, frame_label(f, reasons), frame_regions(pf, f)) for f in frames]
    sheet = contact_sheet(rows, tile_w=160)
    colour = np.array(rule("foreign_pieces").colour)
    tile_h = 120
    for r, f in enumerate(frames):
        y = 28 + r * (tile_h + 22) + 22
        out_tile = sheet[y:y + tile_h, 160:320]
        plate_tile = sheet[y:y + tile_h, :160]
        hit = (np.abs(out_tile.astype(int) - colour).sum(axis=2) < 40)
        if f in (9, 15):
            # outlined around the region (rows 20-40, cols 55-75 of 60x80, scaled x2), not inside it
            ys, xs = np.nonzero(hit)
            assert hit.sum() > 40 and ys.min() >= 25 and xs.max() <= 155, f
            assert not (np.abs(plate_tile.astype(int) - colour).sum(axis=2) < 40).any()  # the plate tile stays clean
        else:
            assert not hit.any(), f
    assert "foreign_pieces" in frame_label(9, reasons)
    assert TILE_W > 0
    # plots and table come from the rule table
    titles = [p[0] for p in plot_panels(pf)]
    assert any(t.startswith("foreign pieces") for t in titles) and any(t.startswith("motion ratio") for t in titles)
    from recast.contracts import QCReport

    qc = QCReport(metrics={"foreign_pieces": 6.0, "sharpness": 0.9, "wrong_person": 0}, verdict=Verdict.review,
                  reasons=(reasons[0]["text"],))
    rows = qc_table(qc, pf.thresholds, reasons + vetting_records([SourceFinding(check="blur", outcome="warn", text="blurred")]))
    by = {r["metric"]: r for r in rows}
    assert by["foreign pieces"]["status"] == "review" and by["foreign pieces"]["frames"] == "9, 15"
    assert by["foreign pieces"]["threshold"] == "1 / 10" and by["sharpness"]["status"] == "ok"
    assert by["wrong-person segments"]["status"] == "ok" and by["source photo"]["status"] == "review"
    from recast.media.qc_report import render_html

    page = render_html("SH010", qc, reasons, b"png", b"png", frames, thresholds=pf.thresholds)
    assert "outlined on the output and difference" in page and "foreign pieces" in page
    assert "<td>foreign pieces</td><td>6.0% of head</td><td>1 / 10</td><td>review</td>" in page
