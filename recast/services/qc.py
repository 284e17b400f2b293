"""QC results for people: the latest QC of a shot, and QC of any plate/output pair of files."""

from __future__ import annotations

import json
from typing import Any


def reason_records(reasons: Any) -> list[dict[str, Any]]:
    """QC reasons as records (``metric, value, threshold, outcome, frames, text``): stored rows
    and stage results written before records were kept hold only the texts."""
    out = []
    for r in reasons or []:
        if isinstance(r, dict):
            out.append(dict(r))
        else:
            out.append({"metric": None, "value": None, "threshold": None, "outcome": None, "frames": [], "text": str(r)})
    return out


def qc_of_shot(ref: str) -> dict[str, Any]:
    """The latest QC result of a shot (id or code): verdict, metrics, reasons, report, approval and reviews."""
    from recast.db import repository as repo
    from recast.db import review as review_repo
    from recast.db.session import session_scope
    from recast.errors import RecordNotFoundError
    from recast.tasks.common import store

    with session_scope() as s:
        shot = review_repo.find_shot_by_ref(s, ref)
        found = review_repo.latest_run_with_qc(s, shot.id)
        if found is None:
            raise RecordNotFoundError(f"shot {shot.code} has no QC result yet (run `recast swap` or submit it first)")
        run, row = found
        report_uri = repo.get_asset(s, row.report_asset_id).uri if row.report_asset_id else None
        renders = repo.renders_for_run(s, run.id)
        out: dict[str, Any] = {"shot": shot.code, "shot_id": str(shot.id), "run_id": str(run.id), "run_status": run.status,
                               "verdict": row.verdict, "metrics": dict(row.metrics or {}),
                               "reasons": reason_records(row.reasons), "models": row.models,
                               "approved": bool(renders and renders[-1].approved),
                               "reviews": [{"decision": r.decision, "reviewer": r.reviewer, "note": r.note, "at": str(r.created)}
                                           for r in repo.reviews_for_run(s, run.id)]}
    if report_uri:
        summary = json.loads(store().fetch(report_uri).read_text())
        out["reasons"] = summary.get("reasons", out["reasons"])
        out["identity_model"] = summary.get("identity_model")
        out["report"] = summary.get("report", {}).get("html")
        out["contact_sheet"] = summary.get("report", {}).get("contact_sheet")
        out["report_json"] = report_uri
    return out


def qc_of_files(plate: str, output: str, source: str, *, mode: str, face: str, project: str | None,
                source_face: str | None = None) -> dict[str, Any]:
    """Score any plate/output pair (a swap made by recast or by another tool) and publish its report."""
    from pathlib import Path

    from recast.flows.score_files import score_files
    from recast.tasks.report import build_report, publish_qc

    scored = score_files(plate=plate, output=output, source=source, mode=mode, face=face, project=project, source_face=source_face)
    name = f"{Path(output).stem}-vs-{Path(plate).stem}"
    report = build_report(run_id=None, shot_id=None, shot=name, plate=list(scored.plate.chunks),
                          outputs=[c.video for c in scored.output.chunks], qc=scored.qc)
    out = publish_qc(run_id=None, shot_id=None, shot=name, qc=scored.qc, report=report)
    out.update(plate=str(plate), output=str(output), source=str(source), mode=mode,
               # the source report, shaped as a swap's summary shows it (never a refusal here: recorded)
               source_vetting=[{"photo": str(source), "findings": [f.model_dump() for f in scored.source.vetting]}])
    return out
