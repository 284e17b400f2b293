"""Drawing a QC result for people: contact sheet, difference heat maps, per-frame plots, the
self-contained HTML page, the JSON summary and the rows of the Prefect UI's QC table.

Pure: QC's per-frame values (:class:`~recast.media.artifacts.QCPerFrame`), frames (RGB uint8
arrays) and records in, images, bytes and text out. Storing them is the ``report`` stage's job
(:mod:`recast.tasks.report`).

* contact sheet: one row per chosen frame, plate | output | difference heat map (absolute
  difference, max over channels, 0-64 grey levels mapped to the inferno colour map). Rows are the
  worst frames (those named by the verdict's reasons, then the worst by pose error, seam,
  background PSNR and flicker) followed by frames at regular points of the shot;
* plots: per-frame plots (matplotlib, Agg backend) of identity distance (sampled frames), pose
  error, expression error, landmark jitter excess, flicker ratio, seam score and background PSNR,
  each with the threshold the verdict used;
* HTML: verdict, reasons, metrics table, models, with both images embedded as base64 (one file a
  supervisor can mail or archive).
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

    def add(fs) -> None:
        for f in fs:
            f = int(f)
            if 0 <= f < total and f not in worst and len(worst) < WORST_ROWS:
                worst.append(f)

    for r in reasons:
        add(r.get("frames", [])[:2])
    for key, low in (("pose_error", False), ("seam", False), ("background_psnr", True), ("flicker_ratio", False)):
        v = np.asarray(getattr(pf, key), float)
        ok = np.flatnonzero(np.isfinite(v))
        if ok.size:
            add(ok[np.argsort(v[ok])][: 1] if low else ok[np.argsort(v[ok])[::-1]][:1])
    regular = [int(round(x)) for x in np.linspace(0, max(total - 1, 0), max(ROWS - len(worst), 1))] if total else []
    chosen = list(worst)
    for f in regular:
        if f not in chosen and len(chosen) < ROWS:
            chosen.append(f)
    return sorted(chosen)


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


def contact_sheet(rows: Sequence[tuple[int, np.ndarray, np.ndarray, str]], tile_w: int = TILE_W) -> np.ndarray:
    """Rows of plate | output | difference, each row labelled; RGB uint8."""
    if not rows:
        return np.zeros((40, 3 * tile_w, 3), np.uint8)
    header_h, label_h = 28, 22
    h0, w0 = rows[0][1].shape[:2]
    tile_h = max(1, int(round(h0 * tile_w / w0)))
    sheet = np.full((header_h + len(rows) * (tile_h + label_h), 3 * tile_w, 3), 24, np.uint8)
    for k, title in enumerate(("plate", "output", "difference")):
        cv2.putText(sheet, title, (k * tile_w + 8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (235, 235, 235), 1, cv2.LINE_AA)
    for r, (_, plate, output, label) in enumerate(rows):
        y = header_h + r * (tile_h + label_h)
        cv2.putText(sheet, label, (8, y + 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 200, 80) if "!" in label else (200, 200, 200), 1, cv2.LINE_AA)
        for k, img in enumerate((plate, output, heat_map(plate, output))):
            sheet[y + label_h:y + label_h + tile_h, k * tile_w:(k + 1) * tile_w] = cv2.resize(img, (tile_w, tile_h), interpolation=cv2.INTER_AREA)
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
    panels = [
        ("identity distance (sampled)", [("to source", pf.d_source), ("to plate person", pf.d_plate)], [pf.identity_match_distance], True),
        ("pose error (deg)", [("pose error", pf.pose_error)], [t.get("pose_error_review")], False),
        ("expression error", [("expression", pf.expression_error)], [t.get("expression_review")], False),
        ("landmark jitter excess (IOD)", [("output - plate", pf.jitter_excess)], [0.0], False),
        ("flicker ratio", [("output / plate", pf.flicker_ratio)], [t.get("flicker_ratio_review")], False),
        ("seam score", [("seam", pf.seam)], [t.get("seam_review")], True),
        ("background PSNR (dB)", [("PSNR", np.minimum(np.asarray(pf.background_psnr, float), 100.0))],
         [t.get("background_psnr_pass"), t.get("background_psnr_fail")], False),
    ]
    fig = Figure(figsize=(10, 2.0 * len(panels)), dpi=90)
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


def render_html(shot: str, qc: QCReport, reasons: Sequence[Mapping[str, Any]], sheet_png: bytes, plots_png: bytes, frames: list[int]) -> str:
    """A self-contained HTML report (images as base64 data URIs)."""
    e = html.escape
    v = qc.verdict.value
    rows = "".join(f"<tr><td>{e(k)}</td><td>{e(fmt(val))}</td></tr>" for k, val in qc.metrics.items())
    reason_items = "".join(f"<li class='{e(r['outcome'])}'>{e(r['text'])}</li>" for r in reasons) or "<li>none</li>"
    models = "".join(f"<li>{e(m.name)} {e(m.version)} <code>sha256={e(m.sha256 or '-')}</code></li>" for m in qc.models)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>QC {e(shot)}: {e(v)}</title>
<style>body{{font-family:sans-serif;margin:2em;color:#222}} .verdict{{color:#fff;background:{_VERDICT_COLOUR.get(v, '#555')};padding:.2em .6em;border-radius:4px}}
table{{border-collapse:collapse}} td{{border-bottom:1px solid #ddd;padding:2px 10px}} li.fail{{color:#c62828}} li.review{{color:#ef6c00}} img{{max-width:100%}}</style>
</head><body>
<h1>QC of shot {e(shot)} <span class="verdict">{e(v)}</span></h1>
<h2>Reasons</h2><ul>{reason_items}</ul>
<h2>Contact sheet</h2><p>plate | output | difference, frames {e(', '.join(map(str, frames)))}</p>
<img alt="contact sheet" src="data:image/png;base64,{base64.b64encode(sheet_png).decode()}">
<h2>Per-frame metrics</h2><img alt="per-frame metrics" src="data:image/png;base64,{base64.b64encode(plots_png).decode()}">
<h2>Metrics</h2><table>{rows}</table>
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
_TABLE_METRICS = (
    ("identity_transfer_rate", "identity transfer rate", ("identity_pass", "identity_fail")),
    ("identity_similarity_source", "similarity to source", ()),
    ("identity_similarity_plate", "similarity to plate person", ()),
    ("pose_error_deg", "pose error (deg)", ("pose_error_review",)),
    ("expression_error", "expression error", ("expression_review",)),
    ("jitter_ratio", "landmark jitter ratio", ("jitter_ratio_review",)),
    ("flicker_ratio", "flicker ratio", ("flicker_ratio_review",)),
    ("seam_score", "seam score", ("seam_review",)),
    ("background_psnr_db", "background PSNR (dB)", ("background_psnr_pass", "background_psnr_fail")),
    ("face_found_ratio", "face found ratio", ("face_found_review",)),
    ("hair_transfer_rate", "hair transfer rate", ()),
)


def qc_table(qc: QCReport, thresholds: Mapping[str, float], reasons: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Rows of the QC table artifact: metric, value, threshold(s), status, frames.
    ``thresholds``: the verdict's bounds by QCThresholds field name."""
    by_metric = {r["metric"]: r for r in reasons if r.get("metric")}
    rows = [{"metric": "verdict", "value": qc.verdict.value.upper(), "threshold": "", "status": qc.verdict.value, "frames": ""}]
    for key, label, bounds in _TABLE_METRICS:
        if key not in qc.metrics:
            continue
        r = by_metric.get(key)
        rows.append({
            "metric": label,
            "value": fmt(qc.metrics.get(key)),
            "threshold": " / ".join(f"{float(thresholds[b]):g}" for b in bounds),
            "status": r["outcome"] if r else ("ok" if bounds else ""),
            "frames": ", ".join(map(str, r["frames"][:8])) if r else "",
        })
    return rows


def artifact_key(shot: str) -> str:
    """A Prefect artifact key from a shot code (lowercase letters, digits and dashes)."""
    return ("qc-" + re.sub(r"[^a-z0-9-]+", "-", shot.lower())).strip("-")[:120]
