"""Drawing a QC result for people: contact sheet, difference heat maps, per-frame plots, the
self-contained HTML page, the JSON summary and the rows of the Prefect UI's QC table.

Pure: QC's per-frame values (:class:`~recast.media.artifacts.QCPerFrame`), frames (RGB uint8
arrays) and records in, images, bytes and text out. Storing them is the ``report`` stage's job
(:mod:`recast.tasks.report`).

* contact sheet: one row per chosen frame, plate | output | difference heat map (absolute
  difference, max over channels, 0-64 grey levels mapped to the inferno colour map). Rows are the
  worst frames of every flagged defect measure (its region outlined in the measure's colour on
  the output and difference tiles, and labelled), then the frames named by the verdict's other
  reasons and the worst by pose error, seam, background PSNR and flicker, followed by frames at
  regular points of the shot;
* plots: one per-frame plot per rule of :data:`recast.models.qc_rules.RULES` that has a
  per-frame series, each with the bounds the verdict used;
* HTML: verdict, reasons, the rule table's metrics (value, bounds, status) and the other metrics,
  models, with both images embedded as base64 (one file a supervisor can mail or archive).

Which metrics exist, their names, bounds, formats and colours come from the rule table
(:mod:`recast.models.qc_rules`); nothing here keeps its own list.
"""

from __future__ import annotations

import base64
import html
import io
import re
from typing import Any, Mapping, Sequence

import cv2
import numpy as np

from recast.contracts import QCReport
from recast.media.artifacts import QCPerFrame
from recast.models.qc_rules import RULES, rule as _rule

#: rows of the contact sheet: at most this many worst frames, then regular points up to ROWS
WORST_ROWS = 4
ROWS = 8
#: width of one tile of the contact sheet
TILE_W = 320
#: the Prefect UI thumbnail (JPEG): small enough to embed as a data: URI in a markdown artifact
THUMB_W = 360
#: difference heat map: this many grey levels of difference saturate the colour map
HEAT_RANGE = 64.0


# --- what goes in -----------------------------------------------------------------------------
def choose_frames(pf: QCPerFrame, reasons: Sequence[Mapping[str, Any]], total: int) -> list[int]:
    """Contact sheet rows: the worst frames first (named by reasons, then by the cheap metrics),
    then frames at regular points, ``ROWS`` in all, in shot order."""
    worst: list[int] = []
    # first the worst frame of each flagged defect measure that found a region (then its second)
    region_frames = [int(f) for f in np.asarray(getattr(pf, "region_frames", ()), int)]
    region_measure = [str(m) for m in getattr(pf, "region_measure", ())]
    for rank in range(2):
        seen: dict[str, int] = {}
        for f, m in zip(region_frames, region_measure):
            seen[m] = seen.get(m, -1) + 1
            if seen[m] == rank and 0 <= f < total and f not in worst and len(worst) < WORST_ROWS + len(set(region_measure)):
                worst.append(f)
    limit = max(WORST_ROWS, len(worst))

    def add(fs) -> None:
        for f in fs:
            f = int(f)
            if 0 <= f < total and f not in worst and len(worst) < limit:
                worst.append(f)

    for r in reasons:
        add(r.get("frames", [])[:2])
    for key, low in (("pose_error", False), ("seam", False), ("background_psnr", True), ("flicker_ratio", False)):
        v = np.asarray(getattr(pf, key), float)
        ok = np.flatnonzero(np.isfinite(v))
        if ok.size:
            add(ok[np.argsort(v[ok])][: 1] if low else ok[np.argsort(v[ok])[::-1]][:1])
    rows = max(ROWS, len(worst) + 2)
    regular = [int(round(x)) for x in np.linspace(0, max(total - 1, 0), max(rows - len(worst), 1))] if total else []
    chosen = list(worst)
    for f in regular:
        if f not in chosen and len(chosen) < rows:
            chosen.append(f)
    return sorted(chosen)


def frame_regions(pf: QCPerFrame, f: int) -> list[tuple[str, np.ndarray, tuple[int, int, int]]]:
    """The outlines a contact sheet row of frame ``f`` draws: (label, mask, RGB colour) of every
    flagged defect region stored for that frame (colours and labels from the rule table)."""
    out = []
    for measure, mask in pf.regions(f):
        try:
            r = _rule(measure)
            out.append((r.label, mask, r.colour))
        except KeyError:
            out.append((measure, mask, (255, 200, 80)))
    return out


def frame_label(f: int, reasons: Sequence[Mapping[str, Any]]) -> str:
    """The label of a contact sheet row: the frame and the metrics whose reasons name it."""
    named = [r["metric"] for r in reasons if f in r.get("frames", []) and r.get("metric")]
    bits = [f"frame {f}"]
    if named:
        bits.append("! " + ", ".join(named))
    return "  ".join(bits)


# --- images ---------------------------------------------------------------------------------
def heat_map(plate: np.ndarray, output: np.ndarray) -> np.ndarray:
    """RGB heat map of |output - plate| (max over channels), :data:`HEAT_RANGE` levels saturate."""
    d = cv2.absdiff(plate, output).max(axis=2).astype(np.float32)
    d8 = np.clip(d * (255.0 / HEAT_RANGE), 0, 255).astype(np.uint8)
    return cv2.cvtColor(cv2.applyColorMap(d8, cv2.COLORMAP_INFERNO), cv2.COLOR_BGR2RGB)


def outline(tile: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int], label: str | None = None, thickness: int = 2) -> np.ndarray:
    """Draw the outline of ``mask`` (any size: scaled to the tile) on ``tile`` in ``colour``,
    with ``label`` beside its top; in place, returned for convenience."""
    th, tw = tile.shape[:2]
    m = cv2.resize(np.asarray(mask, np.uint8) * 255, (tw, th), interpolation=cv2.INTER_AREA) > 0
    if not m.any():
        return tile
    m8 = cv2.dilate(m.astype(np.uint8), np.ones((3, 3), np.uint8))  # a one-pixel speck stays visible
    contours, _ = cv2.findContours(m8, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(tile, contours, -1, tuple(int(c) for c in colour), thickness, cv2.LINE_AA)
    if label:
        x, y, _, _ = cv2.boundingRect(np.concatenate(contours))
        y = y - 4 if y > 14 else min(th - 4, y + 14)
        x = min(max(0, x), max(0, tw - 8 * len(label)))
        cv2.putText(tile, label, (x + 1, y + 1), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 2, cv2.LINE_AA)
        cv2.putText(tile, label, (x, y), cv2.FONT_HERSHEY_SIMPLEX, 0.4, tuple(int(c) for c in colour), 1, cv2.LINE_AA)
    return tile


def contact_sheet(rows: Sequence[tuple], tile_w: int = TILE_W) -> np.ndarray:
    """Rows of plate | output | difference, each row labelled; RGB uint8.

    A row is ``(frame, plate, output, label)`` or ``(frame, plate, output, label, regions)``
    with ``regions`` a list of (label, mask, RGB colour) (:func:`frame_regions`): each is
    outlined in its colour and labelled on the output and difference tiles."""
    if not rows:
        return np.zeros((40, 3 * tile_w, 3), np.uint8)
    header_h, label_h = 28, 22
    h0, w0 = rows[0][1].shape[:2]
    tile_h = max(1, int(round(h0 * tile_w / w0)))
    sheet = np.full((header_h + len(rows) * (tile_h + label_h), 3 * tile_w, 3), 24, np.uint8)
    for k, title in enumerate(("plate", "output", "difference")):
        cv2.putText(sheet, title, (k * tile_w + 8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (235, 235, 235), 1, cv2.LINE_AA)
    for r, row in enumerate(rows):
        _, plate, output, label = row[:4]
        regions = row[4] if len(row) > 4 else ()
        y = header_h + r * (tile_h + label_h)
        cv2.putText(sheet, label, (8, y + 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 200, 80) if "!" in label else (200, 200, 200), 1, cv2.LINE_AA)
        for k, img in enumerate((plate, output, heat_map(plate, output))):
            tile = cv2.resize(img, (tile_w, tile_h), interpolation=cv2.INTER_AREA)
            if k > 0:
                for name, mask, colour in regions:
                    outline(tile, mask, colour, name)
            sheet[y + label_h:y + label_h + tile_h, k * tile_w:(k + 1) * tile_w] = tile
    return sheet


def png_bytes(rgb: np.ndarray) -> bytes:
    """An RGB uint8 image as PNG bytes."""
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:  # pragma: no cover - OpenCV always encodes a uint8 image
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


def thumbnail_jpeg(sheet: np.ndarray, width: int = THUMB_W, quality: int = 60) -> bytes:
    """A small JPEG of the contact sheet (for a data: URI in the Prefect UI)."""
    h, w = sheet.shape[:2]
    small = cv2.resize(sheet, (width, max(1, int(round(h * width / w)))), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(small, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:  # pragma: no cover - OpenCV always encodes a uint8 image
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


def metric_plots(pf: QCPerFrame, qc: QCReport) -> bytes:
    """Per-frame metric plots as one PNG (matplotlib, Agg backend: no display needed), each with
    the thresholds the verdict was decided with (``pf.thresholds``)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    t = pf.thresholds
    total = len(pf)
    x = np.arange(total)
    panels = plot_panels(pf)
    fig = Figure(figsize=(10, 2.0 * len(panels)), dpi=90)
    if not panels:
        panels = [("no per-frame values", [("", np.full(total, np.nan))], [], False)]
    for k, (title, series, bounds, points) in enumerate(panels):
        ax = fig.add_subplot(len(panels), 1, k + 1)
        for name, values in series:
            v = np.asarray(values, float)
            if points:
                ok = np.isfinite(v)
                ax.plot(x[ok], v[ok], "o", ms=4, label=name)
            else:
                ax.plot(x, v, lw=1.2, label=name)
        for b in bounds:
            if b is not None:
                ax.axhline(float(b), color="tab:red", lw=0.8, ls="--")
        ax.set_title(title, fontsize=9, loc="left")
        ax.set_xlim(0, max(total - 1, 1))
        ax.tick_params(labelsize=7)
        if len(series) > 1:
            ax.legend(fontsize=7, loc="upper right")
    fig.axes[-1].set_xlabel("frame", fontsize=8)
    fig.suptitle(f"QC per frame: verdict {qc.verdict.value}", fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def plot_panels(pf: QCPerFrame) -> list[tuple[str, list[tuple[str, np.ndarray]], list[float | None], bool]]:
    """The per-frame plots the rule table asks for: (title, [(legend, values)], bounds, points)
    for every rule with a per-frame series that ``pf`` holds and that has a known value."""
    t = pf.thresholds
    panels = []
    for r in RULES:
        if not r.series:
            continue
        series = []
        for k, name in enumerate(r.series):
            v = pf.series(name)
            if v is None:
                continue
            v = np.asarray(v, float)
            if np.isfinite(v).any():
                series.append((r.series_labels[k] if k < len(r.series_labels) else r.label, v))
        if not series:
            continue
        if r.plot_bounds is None:
            bounds = [t.get(b) for b in (r.review, r.fail) if b is not None]
        else:
            bounds = [float(b) if not isinstance(b, str) else t.get(b, getattr(pf, b, None)) for b in r.plot_bounds]
        unit = r.fmt.replace("{:.0f}", "").replace("{:.1f}", "").replace("{:.2f}", "").replace("{:.3f}", "").strip()
        title = (r.plot_title or (r.label + (f" ({unit})" if unit else ""))) + (" (sampled)" if r.sampled else "")
        panels.append((title, series, bounds, r.sampled))
    return panels


# --- text ---------------------------------------------------------------------------------
def summary_dict(shot: str, qc: QCReport, reasons: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """JSON-ready QC facts: verdict, metrics, structured reasons, models with checksums."""
    return {
        "shot": shot,
        "verdict": qc.verdict.value,
        "metrics": qc.metrics,
        "reasons": [dict(r) for r in reasons],
        "identity_model": qc.models[0].model_dump() if qc.models else None,
        "models": [m.model_dump() for m in qc.models],
        "per_frame": qc.per_frame.uri if qc.per_frame else None,
    }


_VERDICT_COLOUR = {"pass": "#2e7d32", "review": "#ef6c00", "fail": "#c62828"}


def _value(r, v: Any) -> str:
    try:
        return r.format(float(v)) if v is not None else "n/a"
    except (TypeError, ValueError):
        return fmt(v)


def _bounds_text(r, thresholds: Mapping[str, Any]) -> str:
    """The rule's bounds as a table cell: review / fail values (``0.9 / 0.5``)."""
    return " / ".join(f"{float(thresholds[b]):g}" for b in (r.review, r.fail) if b is not None and b in thresholds)


def render_html(shot: str, qc: QCReport, reasons: Sequence[Mapping[str, Any]], sheet_png: bytes, plots_png: bytes, frames: list[int],
                thresholds: Mapping[str, Any] | None = None) -> str:
    """A self-contained HTML report (images as base64 data URIs)."""
    e = html.escape
    v = qc.verdict.value
    t = thresholds if thresholds is not None else {}
    ruled = [r for r in RULES if r.table and r.metric in qc.metrics]
    rows = "".join(f"<tr class='{e(r.status(qc.metrics, t))}'><td>{e(r.label)}</td><td>{e(_value(r, qc.metrics.get(r.metric)))}</td>"
                   f"<td>{e(_bounds_text(r, t))}</td><td>{e(r.status(qc.metrics, t))}</td></tr>" for r in ruled)
    known = {r.metric for r in ruled}
    flagged = {x.get("metric") for x in reasons}
    legend = ", ".join(f"<span style='color:rgb{r.colour}'>&#9632; {e(r.label)}</span>" for r in RULES if r.region and r.metric in flagged)
    legend = f"<p>outlined on the output and difference: {legend}</p>" if legend else ""
    rows += "".join(f"<tr><td>{e(k)}</td><td>{e(fmt(val))}</td><td></td><td></td></tr>" for k, val in qc.metrics.items() if k not in known)
    reason_items = "".join(f"<li class='{e(r['outcome'])}'>{e(r['text'])}</li>" for r in reasons) or "<li>none</li>"
    models = "".join(f"<li>{e(m.name)} {e(m.version)} <code>sha256={e(m.sha256 or '-')}</code></li>" for m in qc.models)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>QC {e(shot)}: {e(v)}</title>
<style>body{{font-family:sans-serif;margin:2em;color:#222}} .verdict{{color:#fff;background:{_VERDICT_COLOUR.get(v, '#555')};padding:.2em .6em;border-radius:4px}}
table{{border-collapse:collapse}} td{{border-bottom:1px solid #ddd;padding:2px 10px}} li.fail,tr.fail{{color:#c62828}} li.review,tr.review{{color:#ef6c00}} img{{max-width:100%}}</style>
</head><body>
<h1>QC of shot {e(shot)} <span class="verdict">{e(v)}</span></h1>
<h2>Reasons</h2><ul>{reason_items}</ul>
<h2>Contact sheet</h2><p>plate | output | difference, frames {e(', '.join(map(str, frames)))}</p>
{legend}<img alt="contact sheet" src="data:image/png;base64,{base64.b64encode(sheet_png).decode()}">
<h2>Per-frame metrics</h2><img alt="per-frame metrics" src="data:image/png;base64,{base64.b64encode(plots_png).decode()}">
<h2>Metrics</h2><table><tr><th>metric</th><th>value</th><th>review / fail bound</th><th>status</th></tr>{rows}</table>
<h2>Models</h2><ul>{models}</ul>
</body></html>
"""


def fmt(v: Any) -> str:
    """A metric value for people: 3 decimals, ``n/a`` when unknown."""
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


# --- the Prefect UI's QC table -------------------------------------------------------------------
def qc_table(qc: QCReport, thresholds: Mapping[str, float], reasons: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Rows of the QC table artifact: metric, value, threshold(s), status, frames, one per rule
    of the rule table whose metric the result has, then one per source vetting warning.
    ``thresholds``: the verdict's bounds by QCThresholds field name."""
    by_metric = {r["metric"]: r for r in reasons if r.get("metric")}
    rows = [{"metric": "verdict", "value": qc.verdict.value.upper(), "threshold": "", "status": qc.verdict.value, "frames": ""}]
    for rl in RULES:
        if not rl.table or rl.metric not in qc.metrics:
            continue
        r = by_metric.get(rl.metric)
        rows.append({
            "metric": rl.label if rl.label not in _TABLE_LABELS else _TABLE_LABELS[rl.label],
            "value": fmt(qc.metrics.get(rl.metric)),
            "threshold": _bounds_text(rl, thresholds),
            "status": r["outcome"] if r else ("ok" if rl.judged else ""),
            "frames": ", ".join(map(str, r["frames"][:8])) if r else "",
        })
    for r in reasons:
        if r.get("metric") == "source_vetting":
            rows.append({"metric": "source photo", "value": r.get("text", ""), "threshold": fmt(r.get("threshold")) if r.get("threshold") is not None else "",
                         "status": r.get("outcome", "review"), "frames": ""})
    return rows


#: table row names that the Prefect UI has always shown (units in the name rather than the value)
_TABLE_LABELS = {"identity transfer": "identity transfer rate", "background PSNR": "background PSNR (dB)", "pose error": "pose error (deg)"}


def artifact_key(shot: str) -> str:
    """A Prefect artifact key from a shot code (lowercase letters, digits and dashes)."""
    return ("qc-" + re.sub(r"[^a-z0-9-]+", "-", shot.lower())).strip("-")[:120]
