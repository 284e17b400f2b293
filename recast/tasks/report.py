"""Report: the QC reports a supervisor reads (contact sheet, per-frame plots, a self-contained
HTML page, drawn by :mod:`recast.media.qc_report`), and the Prefect UI artifacts of a run.

:func:`build_report` is the ``report`` stage (through :func:`~recast.tasks.common.run_stage`, so it
is cached on its work key like every stage). It stores, as assets whose parents are the QC
per-frame values and the plate and output chunks (lineage):

* ``contact_sheet.png``: one row per chosen frame, plate | output | difference heat map (absolute
  difference, max over channels, 0-64 grey levels mapped to the inferno colour map). Rows are the
  worst frames of each flagged defect measure, its region outlined and labelled in the measure's
  colour, then those named by the verdict's other reasons and the worst by pose error, seam,
  background PSNR and flicker, followed by frames at regular points of the shot;
* ``metrics.png``: per-frame plots (matplotlib, Agg backend), one per rule of the QC rule table
  (:mod:`recast.models.qc_rules`) with a per-frame series, each with its bounds;
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
import dataclasses
import json
from typing import Any, Sequence

from recast.contracts import AssetRef, PlateChunk, QCReport, Record
from recast.db import repository as repo
from recast.db.session import session_scope
from recast.media import read_frames_in_chunks
from recast.media.artifacts import QCPerFrame
from recast.media.qc_report import (
    ROWS,
    TILE_W,
    artifact_key,
    choose_frames,
    contact_sheet,
    frame_label,
    frame_regions,
    metric_plots,
    png_bytes,
    qc_table,
    render_html,
    summary_dict,
    thumbnail_jpeg,
)
from recast.tasks.common import emit_progress, fetch, in_prefect_run, load_artifact, run_stage, scratch_dir, store, store_asset, thresholds_for_shot

REPORT_VERSION = "3"


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
    params = {"version": REPORT_VERSION, "shot": shot, "verdict": qc.verdict.value, "rows": ROWS, "tile_w": TILE_W,
              "per_frame_format": QCPerFrame.FORMAT_VERSION}

    def compute() -> QCReportFiles:
        pf = load_artifact(qc.per_frame, QCPerFrame)
        reasons = list(pf.reasons)
        total = len(pf)
        frames = choose_frames(pf, reasons, total)
        plate_frames = read_frames_in_chunks([(c.frames.start, fetch(c.video)) for c in plate], frames)
        starts = [c.frames.start for c in plate]
        out_frames = read_frames_in_chunks(list(zip(starts, [fetch(o) for o in outputs])), frames)
        labels = {f: frame_label(f, reasons) for f in frames}
        sheet = contact_sheet([(f, plate_frames[f], out_frames[f], labels[f], frame_regions(pf, f))
                               for f in frames if f in plate_frames and f in out_frames])
        plots_png = metric_plots(pf, qc)
        parents = [qc.per_frame] + list(outputs) + [c.video for c in plate]
        with scratch_dir("report-") as tmp:
            sheet_path = tmp / "contact_sheet.png"
            sheet_path.write_bytes(png_bytes(sheet))
            plots_path = tmp / "metrics.png"
            plots_path.write_bytes(plots_png)
            thumb_path = tmp / "thumbnail.jpg"
            thumb_path.write_bytes(thumbnail_jpeg(sheet))
            sheet_ref = store_asset(sheet_path, media_type="image/png", role="qc_report", suffix=".png", parents=parents)
            plots_ref = store_asset(plots_path, media_type="image/png", role="qc_report", suffix=".png", parents=[qc.per_frame])
            thumb_ref = store_asset(thumb_path, media_type="image/jpeg", role="qc_report", suffix=".jpg", parents=[sheet_ref])
            html_path = tmp / "report.html"
            html_path.write_text(render_html(shot, qc, reasons, sheet_path.read_bytes(), plots_png, frames, thresholds=pf.thresholds))
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


def _qc_details(qc: QCReport, shot_id: str | None) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """The structured reasons (metric, value, threshold, outcome, frames, text) of a QC result and
    the thresholds its verdict was decided with (those that apply to the shot now when the result
    has no stored per-frame values)."""
    if qc.per_frame is not None:
        pf = load_artifact(qc.per_frame, QCPerFrame)
        return list(pf.reasons), dict(pf.thresholds)
    reasons = [{"metric": None, "value": None, "threshold": None, "outcome": "review", "frames": [], "text": t} for t in qc.reasons]
    return reasons, dataclasses.asdict(thresholds_for_shot(shot_id))


# --- database record and Prefect UI -------------------------------------------------------------
def publish_qc(*, run_id: str | None, shot_id: str | None, shot: str, qc: QCReport, report: QCReportFiles | None) -> dict[str, Any]:
    """Record a QC result in the database (for a run) and show it in the Prefect UI.

    Returns what ``recast qc`` prints: verdict, metrics, reasons, report location.
    """
    reasons, thresholds = _qc_details(qc, shot_id)
    if run_id is not None:
        with session_scope() as s:
            row = repo.record_qc(s, run_id=run_id, verdict=qc.verdict, metrics=qc.metrics, reasons=reasons,
                                 report_asset_id=report.summary.asset_id if report else None, models=qc.models)
            repo.add_audit_event(s, actor="recast", action="qc.recorded", subject_type="run", subject_id=run_id,
                                 detail={"verdict": qc.verdict.value, "qc_result_id": str(row.id), "report": report.html.uri if report else None})
    out = {"shot": shot, "verdict": qc.verdict.value, "metrics": qc.metrics, "reasons": reasons,
           "identity_model": qc.models[0].model_dump() if qc.models else None,
           "report": report.html.uri if report else None, "report_json": report.summary.uri if report else None,
           "contact_sheet": report.contact_sheet.uri if report else None}
    if in_prefect_run():
        links = report_links(run_id, shot_id, report) if report is not None else {}
        create_qc_artifacts(shot, qc, thresholds, reasons, report, links=links)
    return out


#: how long the report links in the Prefect UI stay valid (S3 SigV4's longest: 7 days)
REPORT_LINK_EXPIRES_S = 7 * 24 * 3600


def report_links(run_id: str | None, shot_id: str | None, report: QCReportFiles) -> dict[str, str]:
    """Links a browser can open for the HTML report and the contact sheet: presigned URLs when
    the object store issues them (S3), each recorded as a ``download_link.issued`` audit event;
    empty for a local store (a Prefect UI page cannot open file:// links)."""
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


def create_qc_artifacts(shot: str, qc: QCReport, thresholds: dict[str, float], reasons: list[dict[str, Any]], report: QCReportFiles | None,
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
