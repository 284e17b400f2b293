"""Progress reporting: the CLI's line format stays exact, a worker's lines say which shot and
when, and the API's stage count is known from the mode at the first poll."""

from __future__ import annotations

import re
import uuid
from types import SimpleNamespace

import pytest

LOCAL = re.compile(r"^\[recast\] segment: 10/40 frames \(25%\)$")
WORKER = re.compile(r"^\[recast\] \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ sh010 segment: 10/40 frames \(25%\)$")


def _lines(capsys) -> list[str]:
    return [x for x in capsys.readouterr().err.splitlines() if x.startswith("[recast]")]


@pytest.fixture()
def flow_run(monkeypatch):
    """Pretend to be inside a flow run; returns a setter for its deployment and parent."""
    from prefect.context import FlowRunContext

    from recast.tasks import common

    monkeypatch.setattr(common, "_deployment_runs", set())
    # the pretend flow run has no API behind it: no progress artifacts (their calls would be
    # coroutines nobody awaits)
    monkeypatch.setattr(common, "in_prefect_run", lambda: False)
    state: dict = {}
    monkeypatch.setattr(FlowRunContext, "get", classmethod(lambda cls: state.get("ctx")))

    def enter(*, deployment: bool, subflow: bool = False) -> None:
        fr = SimpleNamespace(id=uuid.uuid4(), name="sh010", deployment_id=uuid.uuid4() if deployment else None,
                             parent_task_run_id=uuid.uuid4() if subflow else None)
        state["ctx"] = SimpleNamespace(flow_run=fr)

    return enter


def test_local_progress_line_is_exactly_the_documented_format(flow_run, capsys):
    from recast.tasks.common import Progress

    Progress("segment", 40).advance(10)  # no flow run (unit tests, `recast qc --plate`)
    flow_run(deployment=False)  # `recast swap`: a local flow run, not a deployment's
    Progress("segment", 40).advance(10)
    assert [bool(LOCAL.match(x)) for x in _lines(capsys)] == [True, True]


def test_deployment_runs_prefix_time_and_shot_code(flow_run, capsys):
    from recast.tasks.common import Progress, emit_progress

    flow_run(deployment=True)
    Progress("segment", 40).advance(10)
    flow_run(deployment=False, subflow=True)  # a re-run in review: a subflow of the deployment run
    emit_progress("segment: 10/40 frames (25%)")
    lines = _lines(capsys)
    assert len(lines) == 2 and all(WORKER.match(x) for x in lines), lines


@pytest.mark.parametrize("mode,total", [("head", 9), ("face", 8)])
def test_stages_total_is_known_from_the_mode_before_any_stage_ran(mode, total):
    from recast.api.service import _progress

    def row(stage: str, status: str = "done", chunk: int | None = None, result=None):
        return SimpleNamespace(stage=stage, status=status, chunk_index=chunk, result=result)

    seen = [_progress([], mode)["stages_total"]]
    rows = [row("ingest", result={"chunks": [1, 2]})]
    seen.append(_progress(rows, mode)["stages_total"])
    rows += [row("segment", chunk=0), row("segment", chunk=1), row("track"), row("expression"), row("swap", chunk=0),
             row("swap", chunk=1), row("qc"), row("report")]
    seen.append(_progress(rows, mode)["stages_total"])
    rows.append(row("render"))
    done = _progress(rows, mode)
    seen.append(done["stages_total"])
    assert seen == [total] * 4
    assert done["stages_done"] == total - (1 if mode == "head" else 0)  # head: background never ran here
