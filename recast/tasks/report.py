"""QC reports a supervisor reads: contact sheet, per-frame plots, a self-contained HTML page,
and the Prefect UI artifacts of a run.

:func:`build_report` is the ``report`` stage (through :func:`~recast.tasks.common.run_stage`, so it
is cached on its work key like every stage). It stores, as assets whose parents are the QC
per-frame values and the plate and output chunks (lineage):

* ``contact_sheet.png``: one row per chosen frame, plate | output | difference heat map (absolute
  difference, max over channels, 0-64 grey levels mapped to the inferno colour map). Rows are the
  worst frames (those named by the verdict's reasons, then the worst by pose error, seam,
  background PSNR and flicker) followed by frames at regular points of the shot;
* ``metrics.png``: per-frame plots (matplotlib, Agg backend) of identity distance (sampled
  frames), pose error, expression error, landmark jitter excess, flicker ratio, seam score and
  background PSNR, each with its threshold;
* ``report.html``: verdict, reasons, metrics table, models, with both images embedded as base64
  (one file a supervisor can mail or archive);
* ``qc.json``: the same facts for machines (the QC record in the database points at it);
* ``thumbnail.jpg``: a small JPEG of the contact sheet for the Prefect UI.

:func:`publish_qc` records the verdict in the database (per run, never cached) and, inside a
Prefect flow run, creates a table artifact (metrics and verdict) and a markdown artifact (the
contact sheet thumbnail as a ``data:`` URI image, plus where the full report is stored).
"""

from __future__ import annotations

import base64
import html
import io
import json
import re
from typing import Any, Sequence

import cv2
import numpy as np

from recast.contracts import AssetRef, PlateChunk, QCReport, Record
from recast.media import read_frames_in_chunks
from recast.models.metrics import QCThresholds
from recast.tasks.arrays import load_npz
from recast.tasks.common import emit_progress, fetch, run_stage, scratch_dir, store, store_asset

REPORT_VERSION = "2"
#: rows of the contact sheet: at most this many worst frames, then regular points up to ROWS
WORST_ROWS = 4
ROWS = 8
#: width of one tile of the contact sheet
TILE_W = 320
#: the Prefect UI thumbnail (JPEG): small enough to embed as a data: URI in a markdown artifact
THUMB_W = 360
#: difference heat map: this many grey levels of difference saturate the colour map
HEAT_RANGE = 64.0


class QCReportFiles(Record):
    """The stored report of a QC result."""

    summary: AssetRef
    html: AssetRef
    contact_sheet: AssetRef
    plots: AssetRef
    thumbnail: AssetRef
    frames: tuple[int, ...]


def build_report(*, run_id: str | None, shot_id: str | None, shot: str, plate: Sequence[PlateChunk], outputs: Sequence[AssetRef],
                 qc: QCReport) -> QCReportFiles:
    """The ``report`` stage: contact sheet, plots, HTML and JSON of a QC result (cached)."""
    if qc.per_frame is None:
        raise ValueError("a QC report without per-frame values cannot be drawn")
    params = {"version": REPORT_VERSION, "shot": shot, "verdict": qc.verdict.value, "rows": ROWS, "tile_w": TILE_W}

    def compute() -> QCReportFiles:
        from recast.tasks.qc import load_reasons

        pf = load_npz(fetch(qc.per_frame))
        reasons = load_reasons(qc)
        total = int(len(pf["swapped"]))
        frames = choose_frames(pf, reasons, total)
        plate_frames = read_frames_in_chunks([(c.frames.start, fetch(c.video)) for c in plate], frames)
        starts = [c.frames.start for c in plate]
        out_frames = read_frames_in_chunks(list(zip(starts, [fetch(o) for o in outputs])), frames)
        labels = {f: _frame_label(f, pf, reasons) for f in frames}
        sheet = contact_sheet([(f, plate_frames[f], out_frames[f], labels[f]) for f in frames if f in plate_frames and f in out_frames])
        plots_png = metric_plots(pf, qc)
        parents = [qc.per_frame] + list(outputs) + [c.video for c in plate]
        with scratch_dir("report-") as tmp:
            sheet_path = tmp / "contact_sheet.png"
            cv2.imwrite(str(sheet_path), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
            plots_path = tmp / "metrics.png"
            plots_path.write_bytes(plots_png)
            thumb_path = tmp / "thumbnail.jpg"
            thumb_path.write_bytes(thumbnail_jpeg(sheet))
            sheet_ref = store_asset(sheet_path, media_type="image/png", role="qc_report", suffix=".png", parents=parents)
            plots_ref = store_asset(plots_path, media_type="image/png", role="qc_report", suffix=".png", parents=[qc.per_frame])
            thumb_ref = store_asset(thumb_path, media_type="image/jpeg", role="qc_report", suffix=".jpg", parents=[sheet_ref])
            html_path = tmp / "report.html"
            html_path.write_text(render_html(shot, qc, reasons, sheet_path.read_bytes(), plots_png, frames))
            html_ref = store_asset(html_path, media_type="text/html", role="qc_report", suffix=".html", parents=[sheet_ref, plots_ref, qc.per_frame])
            summary = summary_dict(shot, qc, reasons)
            summary["report"] = {"html": html_ref.uri, "contact_sheet": sheet_ref.uri, "plots": plots_ref.uri, "thumbnail": thumb_ref.uri,
                                 "frames": frames}
            json_path = tmp / "qc.json"
            json_path.write_text(json.dumps(summary, indent=2, default=str))
            summary_ref = store_asset(json_path, media_type="application/json", role="qc_report", suffix=".json",
                                      parents=[html_ref, qc.per_frame])
        emit_progress(f"report: {html_ref.uri}")
        return QCReportFiles(summary=summary_ref, html=html_ref, contact_sheet=sheet_ref, plots=plots_ref, thumbnail=thumb_ref, frames=tuple(frames))

    return run_stage(
        "report",
        run_id=run_id,
        shot_id=shot_id,
        inputs=[qc.per_frame] + list(outputs) + [c.video for c in plate],
        params=params,
        models=[],
        result_type=QCReportFiles,
        compute=compute,
    )


# --- what goes in -----------------------------------------------------------------------------
def choose_frames(pf: dict[str, np.ndarray], reasons: list[dict[str, Any]], total: int) -> list[int]:
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
        v = np.asarray(pf.get(key, np.zeros(0)), float)
        ok = np.flatnonzero(np.isfinite(v))
        if ok.size:
            add(ok[np.argsort(v[ok])][: 1] if low else ok[np.argsort(v[ok])[::-1]][:1])
    regular = [int(round(x)) for x in np.linspace(0, max(total - 1, 0), max(ROWS - len(worst), 1))] if total else []
    chosen = list(worst)
    for f in regular:
        if f not in chosen and len(chosen) < ROWS:
            chosen.append(f)
    return sorted(chosen)


def _frame_label(f: int, pf: dict[str, np.ndarray], reasons: list[dict[str, Any]]) -> str:
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


def thumbnail_jpeg(sheet: np.ndarray, width: int = THUMB_W, quality: int = 60) -> bytes:
    """A small JPEG of the contact sheet (for a data: URI in the Prefect UI)."""
    h, w = sheet.shape[:2]
    small = cv2.resize(sheet, (width, max(1, int(round(h * width / w)))), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(small, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:  # pragma: no cover - OpenCV always encodes a uint8 image
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


def metric_plots(pf: dict[str, np.ndarray], qc: QCReport) -> bytes:
    """Per-frame metric plots as one PNG (matplotlib, Agg backend: no display needed)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    t = _thresholds(qc)
    total = len(pf["swapped"])
    x = np.arange(total)
    panels = [
        ("identity distance (sampled)", [("to source", pf.get("d_source")), ("to plate person", pf.get("d_plate"))],
         [float(pf["identity_match_distance"][0])] if "identity_match_distance" in pf else [], True),
        ("pose error (deg)", [("pose error", pf.get("pose_error"))], [t.get("pose_error_review")], False),
        ("expression error", [("expression", pf.get("expression_error"))], [t.get("expression_review")], False),
        ("landmark jitter excess (IOD)", [("output - plate", pf.get("jitter_excess"))], [0.0], False),
        ("flicker ratio", [("output / plate", pf.get("flicker_ratio"))], [t.get("flicker_ratio_review")], False),
        ("seam score", [("seam", pf.get("seam"))], [t.get("seam_review")], True),
        ("background PSNR (dB)", [("PSNR", np.minimum(np.asarray(pf.get("background_psnr"), float), 100.0))],
         [t.get("background_psnr_pass"), t.get("background_psnr_fail")], False),
    ]
    fig = Figure(figsize=(10, 2.0 * len(panels)), dpi=90)
    for k, (title, series, bounds, points) in enumerate(panels):
        ax = fig.add_subplot(len(panels), 1, k + 1)
        for name, values in series:
            if values is None:
                continue
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


def _thresholds(qc: QCReport) -> dict[str, Any]:
    # the thresholds the verdict used are in the qc stage's params; the report only draws them,
    # so the settings' values (and the project's, when the verdict came from them) are close enough
    from recast.tasks.qc import thresholds_from_settings

    try:
        return dict(thresholds_from_settings().__dict__)
    except Exception:  # pragma: no cover
        return dict(QCThresholds().__dict__)


# --- text ---------------------------------------------------------------------------------
def summary_dict(shot: str, qc: QCReport, reasons: list[dict[str, Any]]) -> dict[str, Any]:
    """JSON-ready QC facts: verdict, metrics, structured reasons, models with checksums."""
    return {
        "shot": shot,
        "verdict": qc.verdict.value,
        "metrics": qc.metrics,
        "reasons": reasons,
        "identity_model": qc.models[0].model_dump() if qc.models else None,
        "models": [m.model_dump() for m in qc.models],
        "per_frame": qc.per_frame.uri if qc.per_frame else None,
    }


_VERDICT_COLOUR = {"pass": "#2e7d32", "review": "#ef6c00", "fail": "#c62828"}


def render_html(shot: str, qc: QCReport, reasons: list[dict[str, Any]], sheet_png: bytes, plots_png: bytes, frames: list[int]) -> str:
    """A self-contained HTML report (images as base64 data URIs)."""
    e = html.escape
    v = qc.verdict.value
    rows = "".join(f"<tr><td>{e(k)}</td><td>{e(_fmt(val))}</td></tr>" for k, val in qc.metrics.items())
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


def _fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


# --- database record and Prefect UI -------------------------------------------------------------
_TABLE_METRICS = (
    ("identity_transfer_rate", "identity transfer rate", ("identity_pass", "identity_fail"), "min"),
    ("identity_similarity_source", "similarity to source", (), None),
    ("identity_similarity_plate", "similarity to plate person", (), None),
    ("pose_error_deg", "pose error (deg)", ("pose_error_review",), "max"),
    ("expression_error", "expression error", ("expression_review",), "max"),
    ("jitter_ratio", "landmark jitter ratio", ("jitter_ratio_review",), "max"),
    ("flicker_ratio", "flicker ratio", ("flicker_ratio_review",), "max"),
    ("seam_score", "seam score", ("seam_review",), "max"),
    ("background_psnr_db", "background PSNR (dB)", ("background_psnr_pass", "background_psnr_fail"), "min"),
    ("face_found_ratio", "face found ratio", ("face_found_review",), "min"),
    ("hair_transfer_rate", "hair transfer rate", (), None),
)


def qc_table(qc: QCReport, thresholds: QCThresholds, reasons: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows of the QC table artifact: metric, value, threshold(s), status, frames."""
    by_metric = {r["metric"]: r for r in reasons if r.get("metric")}
    rows = [{"metric": "verdict", "value": qc.verdict.value.upper(), "threshold": "", "status": qc.verdict.value, "frames": ""}]
    for key, label, bounds, _ in _TABLE_METRICS:
        if key not in qc.metrics:
            continue
        r = by_metric.get(key)
        rows.append({
            "metric": label,
            "value": _fmt(qc.metrics.get(key)),
            "threshold": " / ".join(f"{getattr(thresholds, b):g}" for b in bounds),
            "status": r["outcome"] if r else ("ok" if bounds else ""),
            "frames": ", ".join(map(str, r["frames"][:8])) if r else "",
        })
    return rows


def artifact_key(shot: str) -> str:
    """A Prefect artifact key from a shot code (lowercase letters, digits and dashes)."""
    return ("qc-" + re.sub(r"[^a-z0-9-]+", "-", shot.lower())).strip("-")[:120]


def publish_qc(*, run_id: str | None, shot_id: str | None, shot: str, qc: QCReport, report: QCReportFiles | None) -> dict[str, Any]:
    """Record a QC result in the database (for a run) and show it in the Prefect UI.

    Returns what ``recast qc`` prints: verdict, metrics, reasons, report location.
    """
    from recast.db import repository as repo
    from recast.db.session import session_scope
    from recast.tasks.common import _in_prefect_run
    from recast.tasks.qc import load_reasons, thresholds_for_shot

    reasons = load_reasons(qc)
    if run_id is not None:
        with session_scope() as s:
            row = repo.record_qc(s, run_id=run_id, verdict=qc.verdict, metrics=qc.metrics, reasons=qc.reasons,
                                 report_asset_id=report.summary.asset_id if report else None, models=qc.models)
            repo.add_audit_event(s, actor="recast", action="qc.recorded", subject_type="run", subject_id=run_id,
                                 detail={"verdict": qc.verdict.value, "qc_result_id": str(row.id), "report": report.html.uri if report else None})
    out = {"shot": shot, "verdict": qc.verdict.value, "metrics": qc.metrics, "reasons": reasons,
           "identity_model": qc.models[0].model_dump() if qc.models else None,
           "report": report.html.uri if report else None, "report_json": report.summary.uri if report else None,
           "contact_sheet": report.contact_sheet.uri if report else None}
    if _in_prefect_run():
        thresholds = thresholds_for_shot(shot_id)
        links = report_links(run_id, shot_id, report) if report is not None else {}
        create_qc_artifacts(shot, qc, thresholds, reasons, report, links=links)
    return out


#: how long the report links in the Prefect UI stay valid (S3 SigV4's longest: 7 days)
REPORT_LINK_EXPIRES_S = 7 * 24 * 3600


def report_links(run_id: str | None, shot_id: str | None, report: QCReportFiles) -> dict[str, str]:
    """Links a browser can open for the HTML report and the contact sheet: presigned URLs when
    the object store issues them (S3), each recorded as a ``download_link.issued`` audit event;
    empty for a local store (a Prefect UI page cannot open file:// links)."""
    from recast.db import repository as repo
    from recast.db.session import session_scope

    st = store()
    links = {}
    for name, ref in (("report", report.html), ("contact_sheet", report.contact_sheet)):
        url = st.presign(ref.uri, REPORT_LINK_EXPIRES_S)
        if url:
            links[name] = url
    if links and (run_id or shot_id):
        with session_scope() as s:
            repo.add_audit_event(s, actor="recast", action="download_link.issued", subject_type="shot" if shot_id else "run",
                                 subject_id=shot_id or run_id, detail={"what": "qc_report", "run_id": run_id, "uris": [report.html.uri,
                                 report.contact_sheet.uri], "expires_s": REPORT_LINK_EXPIRES_S, "shown_in": "prefect_ui"})
    return links


def create_qc_artifacts(shot: str, qc: QCReport, thresholds: QCThresholds, reasons: list[dict[str, Any]], report: QCReportFiles | None,
                        *, links: dict[str, str] | None = None) -> None:
    """The table and markdown artifacts of a QC result (needs a Prefect flow or task run)."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    key = artifact_key(shot)
    create_table_artifact(qc_table(qc, thresholds, reasons), key=key, description=f"QC of {shot}: verdict {qc.verdict.value}")
    lines = [f"## QC contact sheet: {shot}", "", f"**Verdict: {qc.verdict.value.upper()}**", ""]
    lines += [f"- {r['text']}" for r in reasons] or ["- no reasons: every metric within its bounds"]
    if report is not None:
        thumb = base64.b64encode(fetch(report.thumbnail).read_bytes()).decode()
        # a data: URI keeps the artifact self-contained (the UI cannot reach file:// object stores)
        # no "|" in the alt text or the caption: the UI's markdown reads a line with pipes as a
        # table row and then drops the image
        lines += ["", f"![QC contact sheet](data:image/jpeg;base64,{thumb})", "",
                  "Columns: plate, output, difference heat map. Frames " + ", ".join(map(str, report.frames)) + ".", ""]
        links = links or {}
        if "report" in links:
            days = REPORT_LINK_EXPIRES_S // 86400
            lines += [f"[Open the full report]({links['report']}) (link valid {days} days)", "",
                      f"[Contact sheet, full size]({links.get('contact_sheet', links['report'])})", ""]
        lines += [f"Full report: `{report.html.uri}`", "", f"Contact sheet: `{report.contact_sheet.uri}`", "",
                  f"From a terminal: `recast qc {shot}` prints the metrics and these locations."]
    create_markdown_artifact("\n".join(lines), key=f"{key}-sheet", description=f"QC contact sheet of {shot}")
