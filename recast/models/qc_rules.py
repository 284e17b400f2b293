"""QC's rule table: the one place that says which metric is judged, against which bounds, how it
is named, formatted, plotted and outlined. The verdict, its reason records, the report's metric
table, its per-frame plots and the regions drawn on its contact sheet are all derived from
:data:`RULES` (nothing else keeps a list of metrics).

A :class:`Rule` reads one shot-level value from the metrics dict (``QCReport.metrics``) and
compares it with :class:`recast.models.metrics.QCThresholds` fields named by ``review`` and
``fail`` (either may be None): ``worse="higher"`` flags a value above a bound, ``"lower"`` one
below it; beyond ``fail`` fails, beyond ``review`` asks for review. ``required`` rules ask for
review when the value is missing (QC cannot vouch for it: identity transfer, background PSNR);
the others are skipped when not measured. Rules with neither bound are reported, not judged.
A rule with ``fail_on`` compares another metric with its fail bound: ``foreign_pieces`` fails
on ``foreign_pieces_sustained`` (the value at least two sampled frames reach), so a piece that
stays fails while a one-frame glitch asks for review.

:func:`judge` evaluates every rule and returns the verdict with one reason record per flagged
rule (``{"metric", "value", "threshold", "outcome", "frames", "text"}``) even when another rule
already asks for review or fails: a supervisor sees every problem, not the first. ``extra``
records (source vetting warnings, :func:`vetting_records`) are added after them and raise the
verdict to at least their outcome.

Pure: no numpy beyond reading numbers, no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from recast.contracts import Verdict

__all__ = [
    "DEFECT_RULES",
    "REASON_FRAMES",
    "RULES",
    "Rule",
    "judge",
    "rule",
    "rule_frames",
    "vetting_records",
]

#: at most this many frames are named per reason
REASON_FRAMES = 12


@dataclass(frozen=True)
class Rule:
    """One QC measure: where its value is, how it is judged, named and drawn."""

    metric: str  # key in the metrics dict
    label: str  # for people, in reason texts and tables
    worse: str = "higher"  # "higher" | "lower": which direction is bad
    review: str | None = None  # QCThresholds field: beyond it asks for review
    fail: str | None = None  # QCThresholds field: beyond it fails
    fmt: str = "{:.2f}"  # value format, unit included (e.g. "{:.1f} dB")
    series: tuple[str, ...] = ()  # per-frame series it is plotted from (QCPerFrame.series names)
    series_labels: tuple[str, ...] = ()  # legend names of ``series`` (default: the label)
    sampled: bool = False  # the series is known on sampled frames only (drawn as points)
    plot_title: str | None = None  # title of its plot (default: the label with the unit)
    plot_bounds: tuple[str | float, ...] | None = None  # lines on its plot: None = review and fail bounds;
    #   str: a thresholds field or a QCPerFrame attribute; float: that value
    frame_bound: str | float | None = None  # per-frame bound for the frames a reason names (None: the review bound)
    fail_on: str | None = None  # the metric compared with the fail bound (default: ``metric``), e.g. a sustained value
    required: bool = False  # not measured asks for review
    region: bool = False  # the per-frame detector finds a region (outlined on the contact sheet)
    colour: tuple[int, int, int] = (255, 200, 80)  # RGB of its outline and label on the contact sheet
    group: str = "other"  # identity | motion | blend | defects | other
    table: bool = True  # a row of the report's metric table

    def __post_init__(self) -> None:
        if self.worse not in ("higher", "lower"):
            raise ValueError(f"rule {self.metric}: worse must be 'higher' or 'lower', not {self.worse!r}")

    @property
    def judged(self) -> bool:
        """Whether this rule can flag anything (has a bound)."""
        return self.review is not None or self.fail is not None

    def beyond(self, value: float, bound: float) -> bool:
        """Whether ``value`` is on the bad side of ``bound`` (strictly)."""
        return value > bound if self.worse == "higher" else value < bound

    def bounds(self, thresholds: Any) -> tuple[float | None, float | None]:
        """(review bound, fail bound) values from ``thresholds`` (a QCThresholds or a dict)."""
        return _bound(thresholds, self.review), _bound(thresholds, self.fail)

    def format(self, value: float) -> str:
        return self.fmt.format(value)

    def check(self, metrics: Mapping[str, Any], thresholds: Any, frames: Sequence[int] = ()) -> dict[str, Any] | None:
        """The reason record of this rule on ``metrics``, or None when it does not flag."""
        if not self.judged:
            return None
        rb, fb = self.bounds(thresholds)
        v = _num(metrics, self.metric)
        frames = [int(f) for f in frames][:REASON_FRAMES]
        if v is None:
            if not self.required:
                return None
            return _record(self.metric, metrics.get(self.metric), rb if rb is not None else fb, "review", [],
                           f"{self.label} not measured (review)")
        op = ">" if self.worse == "higher" else "<"
        if fb is not None and self.fail_on is not None:
            vf = _num(metrics, self.fail_on)
            if vf is not None and self.beyond(vf, fb):
                text = f"{self.label} {self.format(vf)} {op} {self.format(fb)} on 2 or more sampled frames (fail)"
                return _record(self.metric, metrics.get(self.fail_on), fb, "fail", frames, text)
            fb = None
        for outcome, bound in (("fail", fb), ("review", rb)):
            if bound is not None and self.beyond(v, bound):
                text = f"{self.label} {self.format(v)} {op} {self.format(bound)} ({outcome})"
                return _record(self.metric, metrics.get(self.metric), bound, outcome, frames, text)
        return None

    def status(self, metrics: Mapping[str, Any], thresholds: Any) -> str:
        """``fail``/``review``/``ok`` for a table row ('' when the rule judges nothing, 'n/a' when not measured)."""
        if not self.judged:
            return ""
        rec = self.check(metrics, thresholds)
        if rec is not None:
            return rec["outcome"]
        return "ok" if _num(metrics, self.metric) is not None else "n/a"


def _record(metric: str, value: Any, threshold: float | None, outcome: str, frames: list[int], text: str) -> dict[str, Any]:
    return {"metric": metric, "value": value, "threshold": threshold, "outcome": outcome, "frames": frames,
            "text": text + (f" at frames {', '.join(map(str, frames))}" if frames else "")}


def _bound(thresholds: Any, name: str | None) -> float | None:
    if name is None:
        return None
    v = thresholds.get(name) if isinstance(thresholds, Mapping) else getattr(thresholds, name, None)
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def _num(metrics: Mapping[str, Any], key: str) -> float | None:
    v = metrics.get(key)
    if v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


# --- the table --------------------------------------------------------------------------------
#: The rules, in the order reasons are listed (fail reasons first, then review ones, each in this
#: order) and the report's table rows. Units of the defect measures: see recast.models.qc_defects.
RULES: tuple[Rule, ...] = (
    Rule("identity_transfer_rate", "identity transfer", worse="lower", review="identity_pass", fail="identity_fail", required=True,
         series=("d_source", "d_plate"), series_labels=("to source", "to plate person"), sampled=True, plot_title="identity distance",
         plot_bounds=("identity_match_distance",), group="identity"),
    Rule("identity_similarity_source", "similarity to source", group="identity"),
    Rule("identity_similarity_plate", "similarity to plate person", group="identity"),
    Rule("background_psnr_db", "background PSNR", worse="lower", review="background_psnr_pass", fail="background_psnr_fail",
         fmt="{:.1f} dB", required=True, series=("background_psnr",), group="blend"),
    Rule("pose_error_deg", "pose error", review="pose_error_review", fmt="{:.1f} deg", series=("pose_error",), group="motion"),
    Rule("expression_error", "expression error", review="expression_review", fmt="{:.3f}", series=("expression_error",), group="motion"),
    Rule("jitter_ratio", "landmark jitter ratio", review="jitter_ratio_review", series=("jitter_excess",),
         series_labels=("output - plate acceleration (IOD)",), plot_title="landmark jitter excess (IOD)", plot_bounds=(0.0,),
         frame_bound=0.02, group="motion"),
    Rule("motion_ratio", "motion ratio", worse="lower", review="motion_ratio_review", series=("motion_ratio",),
         series_labels=("output / plate motion (1 s window)",), plot_title="motion ratio (1 s window)", group="motion"),
    Rule("flicker_ratio", "flicker ratio", review="flicker_ratio_review", series=("flicker_ratio",), group="blend"),
    Rule("seam_score", "seam score", review="seam_review", series=("seam",), sampled=True, group="blend"),
    # head mode: what the old head hid beside and under the jaw (long hair over the shoulders of
    # a plate that never moves), shown and never seen: the engine invented it, a person must look
    Rule("guessed_fill", "body beside the old jaw that no frame shows (filled by guesswork)", review="guessed_fill_review",
         fmt="{:.0f}% of the face box", series=("guessed_fill",), group="blend"),
    Rule("face_found_ratio", "face found ratio", worse="lower", review="face_found_review", group="other"),
    Rule("hair_transfer_rate", "hair transfer rate", group="identity"),
    # the defect measures (recast.models.qc_defects), worst sampled frame of the shot
    Rule("wrong_person", "wrong-person segments", fail="wrong_person_fail", fmt="{:.0f}", series=("wrong_person",),
         frame_bound=0.5, colour=(255, 40, 40), group="defects"),
    # gross pieces fail when they are sustained (the second-worst sampled frame beyond the fail bound): a one-frame glitch reviews
    Rule("foreign_pieces", "foreign pieces", review="foreign_pieces_review", fail="foreign_pieces_fail", fail_on="foreign_pieces_sustained",
         fmt="{:.1f}% of head",
         series=("foreign_pieces",), sampled=True, region=True, colour=(255, 0, 255), group="defects"),
    Rule("leftover_plate_head", "leftover plate head", review="leftover_plate_head_review", fmt="{:.1f}% of head",
         series=("leftover_plate_head",), sampled=True, region=True, colour=(0, 255, 255), group="defects"),
    Rule("fill_artefacts", "fill artefacts", review="fill_artefacts_review", fmt="{:.1f}% of head", series=("fill_artefacts",),
         sampled=True, region=True, colour=(255, 140, 0), group="defects"),
    Rule("inner_edges", "inner edges", review="inner_edges_review", fmt="{:.2f} face heights", series=("inner_edges",), sampled=True,
         region=True, colour=(80, 255, 80), group="defects"),
    Rule("colour_blotches", "colour blotches", review="colour_blotches_review", fmt="{:.1f}% of face", series=("colour_blotches",),
         sampled=True, region=True, colour=(60, 140, 255), group="defects"),
    Rule("hair_colour_de", "hair colour", review="hair_colour_de_review", fmt="dE {:.1f}", series=("hair_colour_de",), sampled=True,
         region=True, colour=(255, 255, 0), group="defects"),
    Rule("sharpness", "sharpness", worse="lower", review="sharpness_review", series=("sharpness",), sampled=True, region=True,
         colour=(200, 200, 255), group="defects"),
)

_BY_METRIC = {r.metric: r for r in RULES}
#: the rules of the per-frame defect detectors (recast.models.qc_defects.DEFECT_MEASURES)
DEFECT_RULES = tuple(r for r in RULES if r.region)


def rule(metric: str) -> Rule:
    """The rule of ``metric`` (KeyError when there is none)."""
    return _BY_METRIC[metric]


def rule_frames(r: Rule, values: np.ndarray, thresholds: Any, among: np.ndarray | None = None) -> list[int]:
    """The frames a reason of ``r`` names: per-frame ``values`` beyond the rule's frame bound
    (default its review bound, else its fail bound), worst first; ``among`` restricts them."""
    v = np.asarray(values, float)
    if isinstance(r.frame_bound, str):
        bound = _bound(thresholds, r.frame_bound)
    elif r.frame_bound is not None:
        bound = float(r.frame_bound)
    else:
        rb, fb = r.bounds(thresholds)
        bound = rb if rb is not None else fb
    if bound is None or v.size == 0:
        return []
    ok = np.isfinite(v)
    if among is not None:
        ok &= np.asarray(among, bool)
    with np.errstate(invalid="ignore"):
        hit = ok & ((v > bound) if r.worse == "higher" else (v < bound))
    idx = np.flatnonzero(hit)
    key = -v[idx] if r.worse == "higher" else v[idx]
    return [int(f) for f in idx[np.lexsort((idx, key))]]  # worst first, earlier frames first among equals


# --- judging ----------------------------------------------------------------------------------
def judge(metrics: Mapping[str, Any], thresholds: Any, frames_by_metric: Mapping[str, Sequence[int]] | None = None, *,
          extra: Iterable[Mapping[str, Any]] = ()) -> tuple[Verdict, list[dict[str, Any]]]:
    """The QC verdict of a shot and one reason record per flagged rule (fail reasons first, then
    review ones, in :data:`RULES` order), then the ``extra`` records (e.g. source vetting
    warnings): the verdict is the worst outcome among all records, pass when there is none.

    ``frames_by_metric``: the frames each metric's reason names (worst first; at most
    :data:`REASON_FRAMES` are kept and appended to the text)."""
    frames_by_metric = frames_by_metric or {}
    fails: list[dict[str, Any]] = []
    reviews: list[dict[str, Any]] = []
    for r in RULES:
        rec = r.check(metrics, thresholds, frames_by_metric.get(r.metric, ()))
        if rec is not None:
            (fails if rec["outcome"] == "fail" else reviews).append(rec)
    for rec in extra:
        rec = dict(rec)
        if rec.get("outcome") not in ("review", "fail"):
            continue
        (fails if rec["outcome"] == "fail" else reviews).append(rec)
    records = fails + reviews
    if fails:
        return Verdict.failed, records
    if reviews:
        return Verdict.review, records
    return Verdict.passed, records


def vetting_records(findings: Iterable[Any]) -> list[dict[str, Any]]:
    """One review record (``metric: "source_vetting"``) per source vetting finding whose outcome
    is ``warn`` (:class:`recast.contracts.SourceFinding` or a dict of its fields): a warned source
    photo caps the verdict at review."""
    out = []
    for f in findings:
        get = f.get if isinstance(f, Mapping) else (lambda k, _f=f: getattr(_f, k, None))
        if get("outcome") != "warn":
            continue
        check, text = get("check") or "source", get("text") or ""
        out.append({"metric": "source_vetting", "value": get("value"), "threshold": get("threshold"), "outcome": "review",
                    "frames": [], "text": f"source photo {check}: {text} (review)"})
    return out
