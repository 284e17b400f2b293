"""Read-side views of runs, stage runs and lineage for the CLI and the API (plain dicts)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from recast.db import repository as repo
from recast.db.session import session_scope
from recast.errors import RecordNotFoundError
from recast.media import sha256_file


def _asset_dict(a: Any) -> dict[str, Any]:
    return {"id": str(a.id), "uri": a.uri, "sha256": a.sha256, "size": a.size, "media_type": a.media_type, "role": a.role}


def recent_runs(limit: int = 20) -> list[dict[str, Any]]:
    with session_scope() as s:
        return [
            {"run_id": str(run.id), "status": run.status, "shot": shot.code, "shot_id": str(shot.id), "project": project.name,
             "started": run.started, "ended": run.ended, "error": run.error}
            for run, shot, project in repo.list_runs(s, limit=limit)
        ]


def run_detail(run_id: str) -> dict[str, Any]:
    with session_scope() as s:
        run = repo.get_run(s, run_id)
        shot = repo.get_shot(s, run.shot_id)
        project = repo.get_project(s, shot.project_id)
        stages = []
        for sr in repo.stage_runs_for_run(s, run.id):
            inputs = [_asset_dict(a) for a in repo.get_assets(s, sr.input_asset_ids or [])]
            outputs = [_asset_dict(a) for a in repo.get_assets(s, sr.output_asset_ids or [])]
            stages.append({
                "id": str(sr.id), "stage": sr.stage, "status": sr.status, "chunk_index": sr.chunk_index,
                "frame_start": sr.frame_start, "frame_end": sr.frame_end, "work_key": sr.work_key,
                "params": sr.params, "models": sr.models or [], "code_version": sr.code_version,
                "inputs": inputs, "outputs": outputs, "started": sr.started, "ended": sr.ended,
                "elapsed_ms": (sr.metrics or {}).get("elapsed_ms"), "host": sr.host, "error": sr.error,
                "prefect_task_run_id": sr.prefect_task_run_id,
            })
        return {
            "run": {"run_id": str(run.id), "status": run.status, "shot": shot.code, "shot_id": str(shot.id), "project": project.name,
                    "started": run.started, "ended": run.ended, "error": run.error, "prefect_flow_run_id": run.prefect_flow_run_id,
                    "summary": run.summary},
            "stages": stages,
        }


def lineage_tree(target: str, run_id: str | None = None) -> dict[str, Any]:
    """The asset tree behind a deliverable path, asset id, URI or sha256: the inputs of the run
    that made it (``run_id``, by default the run that delivered or produced it), as
    ``recast show`` lists them, even where content addressing shares an asset between runs."""
    with session_scope() as s:
        asset = None
        p = Path(target)
        if p.is_file():
            asset = repo.find_asset(s, sha256_file(p))
            if asset is None:
                raise RecordNotFoundError(f"'{target}': this file is not a recast asset (no asset with its sha256)")
        else:
            asset = repo.find_asset(s, target)
            if asset is None:
                raise RecordNotFoundError(f"'{target}': no asset with this id, URI or sha256")
        return repo.asset_lineage(s, asset.id, run_id=run_id)
