"""QC catches broken swaps with the right reason; the review pause resumes to render.

The broken outputs are made from a real ``recast swap`` output of the short plate (40 frames)
and scored with ``recast qc --plate --output --source``, the path a studio uses for swaps made
by any tool.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from recast.cli import app
from tests.conftest import IMAGES

# every test here swaps the short plate through the flow (or uses a module fixture that does)
pytestmark = pytest.mark.slow

SOURCE = IMAGES / "deepface_img17.jpg"

def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def read_all(path: Path) -> list[np.ndarray]:
    from recast.media import read_frames

    return list(read_frames(path, role="plate"))


def write(frames: list[np.ndarray], path: Path) -> Path:
    from fractions import Fraction

    from recast.media.synthetic import write_h264

    return write_h264(np.stack(frames), path, rate=Fraction(25))


def face_boxes_and_hulls(frames: list[np.ndarray]):
    from recast.models.face import FaceAnalyzer

    out = []
    with FaceAnalyzer(static_images=True, max_faces=1) as fa:
        for f in frames:
            face = fa.detect(f)[0]
            out.append((np.asarray(face.box, int), cv2.convexHull(face.landmarks[:, :2].astype(np.int32))))
    return out


@pytest.fixture(scope="module")
def swapped(tmp_path_factory, short_plate):
    """A correct face swap of the short plate, and its own data directory."""
    import os

    from recast.settings import reset_settings

    base = tmp_path_factory.mktemp("qc-swap")
    old = os.environ.get("RECAST_DATA_DIR")
    os.environ["RECAST_DATA_DIR"] = str(base / "data")
    reset_settings()
    try:
        out = base / "swap.mp4"
        r = invoke("swap", "--plate", short_plate, "--source", SOURCE, "--out", out, "--mode", "face", "--json", "--chunk-size", "16")
        assert r.exit_code == 0, r.stderr
        yield {"out": out, "summary": json.loads(r.stdout), "data": base / "data", "dir": base}
    finally:
        if old is None:
            os.environ.pop("RECAST_DATA_DIR", None)
        else:
            os.environ["RECAST_DATA_DIR"] = old
        reset_settings()


@pytest.fixture()
def swap_env(swapped, monkeypatch):
    from recast.settings import reset_settings

    monkeypatch.setenv("RECAST_DATA_DIR", str(swapped["data"]))
    reset_settings()
    yield swapped
    reset_settings()


def test_a_correct_swap_passes_and_qc_shot_reports_it(swap_env):
    summary = swap_env["summary"]
    assert summary["qc"]["verdict"] == "pass", summary["qc"]
    assert summary["approved"] is True and summary["review"] is None
    r = invoke("qc", summary["shot_id"], "--json")
    assert r.exit_code == 0, r.stderr
    got = json.loads(r.stdout)
    assert got["verdict"] == "pass" and got["reasons"] == [] and got["approved"] is True
    assert got["identity_model"]["name"] == "dlib_face_recognition_resnet_model_v1" and len(got["identity_model"]["sha256"]) == 64
    assert got["report"].endswith(".html")
    from recast.tasks.common import store

    page = store().fetch(got["report"]).read_text()
    assert "data:image/png;base64," in page and "plate | output | difference" in page
    # the report's assets hang from the swapped chunks (lineage)
    lineage = json.loads(invoke("lineage", got["report"], "--json").stdout)
    roles = set()

    def walk(n):
        roles.add(n["asset"]["role"])
        for p in n.get("parents", []):
            walk(p)

    walk(lineage)
    assert {"qc_report", "qc_per_frame", "swapped_chunk", "qc_observations"} <= roles
    # QC's per-frame measurements ran inside the swap chunks, timed apart as QC's cost
    from recast.db import repository as repo
    from recast.db.session import session_scope

    with session_scope() as s:
        swaps = [r for r in repo.stage_runs_for_run(s, summary["run_id"]) if r.stage == "swap" and r.status == "done"]
        assert len(swaps) == 3  # 40 frames in chunks of 16
        assert all(0 < r.metrics["qc_observe_ms"] < r.metrics["elapsed_ms"] for r in swaps)


def _variant(kind: str, plate: list[np.ndarray], out: list[np.ndarray]) -> list[np.ndarray]:
    if kind == "correct":
        return out
    if kind == "identical":
        return plate
    frames = [f.copy() for f in out]
    if kind == "shifted":  # frame 20: the head jumps 20 px to the right for one frame
        (x0, y0, x1, y1), _ = face_boxes_and_hulls([out[20]])[0]
        gx, gy = (x1 - x0) // 4, (y1 - y0) // 4
        x0, y0, x1, y1 = max(0, x0 - gx), max(0, y0 - gy), min(out[20].shape[1] - 20, x1 + gx), min(out[20].shape[0], y1 + gy)
        frames[20][y0:y1, x0 + 20:x1 + 20] = out[20][y0:y1, x0:x1]
        return frames
    if kind == "seam":  # the face pasted with a hard edge and a colour step
        for f, (_, hull) in zip(frames, face_boxes_and_hulls(out)):
            m = np.zeros(f.shape[:2], np.uint8)
            cv2.fillConvexPoly(m, hull, 1)
            m = cv2.dilate(m, np.ones((9, 9), np.uint8)) > 0
            f[m] = np.clip(f[m].astype(int) + (28, 10, -22), 0, 255).astype(np.uint8)
        return frames
    if kind == "background":  # the scene outside the person changed (a grade applied to the edges)
        w = frames[0].shape[1]
        for f in frames:
            for sl in (np.s_[:, : w // 8], np.s_[:, w - w // 8:]):
                f[sl] = np.clip(f[sl].astype(int) + 45, 0, 255).astype(np.uint8)
        return frames
    raise AssertionError(kind)


@pytest.mark.parametrize(
    "kind, verdict, metric",
    [
        ("correct", "pass", None),
        ("identical", "fail", "identity_transfer_rate"),
        ("shifted", "review", "jitter_ratio"),
        ("seam", "review", "seam_score"),
        ("background", "fail", "background_psnr_db"),
    ],
)
def test_qc_of_files_catches_broken_outputs_with_the_right_reason(kind, verdict, metric, swap_env, short_plate, tmp_path):
    plate, out = read_all(short_plate), read_all(swap_env["out"])
    path = write(_variant(kind, plate, out), tmp_path / f"{kind}.mp4")
    r = invoke("qc", "--plate", short_plate, "--output", path, "--source", SOURCE, "--json")
    got = json.loads(r.stdout)  # printed whatever the verdict
    assert r.exit_code == (5 if verdict == "fail" else 0), (r.exit_code, r.stderr[-2000:])
    assert got["verdict"] == verdict, (got["verdict"], got["reasons"], got["metrics"])
    metrics_named = [x["metric"] for x in got["reasons"]]
    if metric is None:
        assert got["reasons"] == []
    else:
        assert metric in metrics_named, got["reasons"]
        reason = next(x for x in got["reasons"] if x["metric"] == metric)
        assert reason["threshold"] is not None and reason["value"] is not None and reason["text"]
        if kind == "shifted":
            assert 20 in reason["frames"] or 21 in reason["frames"], reason
    assert got["report"].endswith(".html")


def test_qc_exit_codes_and_usage(swap_env, short_plate):
    assert invoke("qc").exit_code == 2
    assert invoke("qc", "no-such-shot").exit_code == 3
    assert invoke("review", "no-such-shot", "--approve", "--reject").exit_code == 2


def _wait(cond, timeout=240.0, what="condition"):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        got = cond()
        if got:
            return got
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def test_review_pause_resumes_to_render_with_the_supervisors_decision(recast_env, short_plate, tmp_path):
    """A flow paused at review (typed input) is resumed with `recast review --approve` and renders."""
    from recast.contracts import Mode, ShotParams
    from recast.db import repository as repo
    from recast.db.session import session_scope
    from recast.flows.swap_shot import swap_shot
    from recast.settings import configure_prefect_environment
    from recast.services import shots

    configure_prefect_environment()
    shot_id, run_id = shots.submit_local_shot(plate=str(short_plate), sources=[str(SOURCE)], params=ShotParams(mode=Mode.face, chunk_size=20))
    with session_scope() as s:  # this project's bar: any visible seam asks for review
        repo.set_project_qc_thresholds(s, repo.get_shot(s, shot_id).project_id, {"seam_review": 0.2})
    result: dict = {}

    def run() -> None:
        try:
            result["summary"] = swap_shot(shot_id=shot_id, run_id=run_id, output_path=str(tmp_path / "approved.mp4"), review="pause").summary()
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            result["error"] = exc

    worker = threading.Thread(target=run, daemon=True)
    worker.start()

    def paused():
        with session_scope() as s:
            r = repo.get_run(s, run_id)
            return r.status == "awaiting_review" and r.prefect_flow_run_id

    flow_run_id = _wait(paused, what="the run to pause for review")
    with session_scope() as s:
        assert repo.renders_for_run(s, run_id) == []  # nothing rendered while waiting
        qc = repo.latest_qc(s, run_id)
        assert qc.verdict == "review" and any("seam score" in r["text"] and r["metric"] == "seam_score" for r in qc.reasons)

    from prefect.client.orchestration import get_client

    def prefect_paused():
        with get_client(sync_client=True) as c:
            st = c.read_flow_run(flow_run_id).state
            return st is not None and st.is_paused()

    _wait(prefect_paused, what="Prefect to show the flow run paused")
    r = invoke("review", shot_id, "--approve", "--note", "seam is under the collar, fine", "--reviewer", "sup.jane")
    assert r.exit_code == 0, r.stderr
    assert "resumed" in r.stdout
    worker.join(timeout=300)
    assert "error" not in result, result.get("error")
    summary = result["summary"]
    assert summary["review"]["decision"] == "approve" and summary["review"]["reviewer"] == "sup.jane"
    assert summary["approved"] is True and (tmp_path / "approved.mp4").exists()
    with session_scope() as s:
        assert repo.get_run(s, run_id).status == "done"
        renders = repo.renders_for_run(s, run_id)
        assert len(renders) == 1 and renders[0].approved
        reviews = repo.reviews_for_run(s, run_id)
        assert [(x.decision, x.reviewer, x.note) for x in reviews] == [("approve", "sup.jane", "seam is under the collar, fine")]
        actions = [e.action for e in repo.list_audit_events(s, subject_type="run", subject_id=run_id)]
        assert "review.requested" in actions and "review.approve" in actions and "qc.recorded" in actions


def _paused_flow_run(run_id: str) -> str | None:
    """The Prefect flow run id of ``run_id`` once Prefect shows it paused, else None."""
    from prefect.client.orchestration import get_client

    from recast.db import repository as repo
    from recast.db.session import session_scope

    with session_scope() as s:
        fid = repo.get_run(s, run_id).prefect_flow_run_id
    if not fid:
        return None
    with get_client(sync_client=True) as c:
        st = c.read_flow_run(fid).state
    return fid if st is not None and st.is_paused() else None


def _start_paused_shot(**run_kw):
    """Submit the short plate in a project whose bar sends it to review; run swap_shot with
    review=pause in a thread. Returns (shot id, run id, result dict, thread)."""
    from recast.contracts import Mode, ShotParams
    from recast.db import repository as repo
    from recast.db.session import session_scope
    from recast.flows.swap_shot import swap_shot
    from recast.settings import configure_prefect_environment
    from recast.services import shots

    configure_prefect_environment()
    plate = run_kw.pop("plate")
    shot_id, run_id = shots.submit_local_shot(plate=str(plate), sources=[str(SOURCE)], params=ShotParams(mode=Mode.face, chunk_size=20))
    with session_scope() as s:
        repo.set_project_qc_thresholds(s, repo.get_shot(s, shot_id).project_id, {"seam_review": 0.2})
    result: dict = {}

    def run() -> None:
        try:
            result["summary"] = swap_shot(shot_id=shot_id, run_id=run_id, review="pause", **run_kw).summary()
        except BaseException as exc:  # noqa: BLE001 - reported by the caller's assertion
            result["error"] = exc

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    return shot_id, run_id, result, worker


def test_review_input_rejects_programmatically(recast_env, short_plate, tmp_path):
    """resume_flow_run with run_input: reject ends the run as rejected; nothing is rendered."""
    from uuid import UUID

    from prefect.flow_runs import resume_flow_run

    from recast.db import repository as repo
    from recast.db.session import session_scope

    shot_id, run_id, result, worker = _start_paused_shot(plate=short_plate)
    fid = _wait(lambda: _paused_flow_run(run_id), what="the paused flow run")
    resume_flow_run(UUID(fid), run_input={"decision": "reject", "note": "wrong take", "reviewer": "sup.ana"})
    worker.join(timeout=120)
    assert "error" not in result, result.get("error")
    summary = result["summary"]
    assert summary["status"] == "rejected" and summary["output"] is None
    with session_scope() as s:
        run = repo.get_run(s, run_id)
        assert run.status == "rejected" and "sup.ana" in run.error
        assert repo.renders_for_run(s, run_id) == []
        assert [(x.decision, x.note) for x in repo.reviews_for_run(s, run_id)] == [("reject", "wrong take")]


def test_review_rerun_with_changed_parameters_reuses_the_cached_stages(recast_env, short_plate, tmp_path):
    """A re-run decision with changed parameters: the shot's parameters change, a new run of it
    starts (a subflow) and reuses every stage the change does not touch; the first run ends
    superseded, the new one is reviewed again and, approved, renders."""
    from uuid import UUID

    from prefect.flow_runs import resume_flow_run

    from recast.db import repository as repo
    from recast.db.session import session_scope

    out = tmp_path / "rerun.mp4"
    shot_id, run_id, result, worker = _start_paused_shot(plate=short_plate, output_path=str(out))
    fid = _wait(lambda: _paused_flow_run(run_id), what="the first run to pause")
    resume_flow_run(UUID(fid), run_input={"decision": "rerun", "note": "keep the actor's expression neutral", "reviewer": "sup.ana",
                                          "params": {"expression": "neutral"}})

    def second_run() -> str | None:
        with session_scope() as s:
            latest = repo.latest_run_for_shot(s, shot_id)
            rid = str(latest.id) if latest is not None else run_id
        return rid if rid != run_id and _paused_flow_run(rid) else None

    new_run_id = _wait(second_run, what="the re-run to pause for review")
    with session_scope() as s:
        first = repo.get_run(s, run_id)
        assert first.status == "rejected" and new_run_id in first.error and "neutral" in first.error
        assert repo.get_shot(s, shot_id).params["expression"] == "neutral"
        stages = {(r.stage, r.chunk_index): r.status for r in repo.stage_runs_for_run(s, new_run_id)}
        # the change touches the expression targets and what follows them; the rest is reused
        for stage in ("ingest", "segment", "track"):
            assert {st for (name, _), st in stages.items() if name == stage} == {"reused"}, (stage, stages)
        assert stages[("expression", None)] == "done"
        assert [(x.decision, x.reviewer) for x in repo.reviews_for_run(s, run_id)] == [("rerun", "sup.ana")]
    resume_flow_run(UUID(_paused_flow_run(new_run_id)), run_input={"decision": "approve", "reviewer": "sup.ana"})
    worker.join(timeout=300)
    assert "error" not in result, result.get("error")
    summary = result["summary"]
    assert summary["run_id"] == new_run_id and summary["params"]["expression"] == "neutral"
    assert summary["approved"] is True and out.exists()
    with session_scope() as s:
        assert repo.get_run(s, new_run_id).status == "done"
        assert [r.approved for r in repo.renders_for_run(s, new_run_id)] == [True]
        assert repo.renders_for_run(s, run_id) == []


def test_review_without_a_decision_times_out_as_rejected(recast_env, short_plate, tmp_path, monkeypatch):
    """RECAST_REVIEW_TIMEOUT_S: a paused run nobody decides on ends as rejected, nothing rendered,
    the timeout recorded as the decision (reviewer recast, via timeout)."""
    from recast.db import repository as repo
    from recast.db.session import session_scope
    from recast.settings import reset_settings

    monkeypatch.setenv("RECAST_REVIEW_TIMEOUT_S", "3")
    reset_settings()
    shot_id, run_id, result, worker = _start_paused_shot(plate=short_plate, output_path=str(tmp_path / "never.mp4"))
    worker.join(timeout=300)
    assert "error" not in result, result.get("error")
    assert result["summary"]["status"] == "rejected" and result["summary"]["output"] is None
    assert not (tmp_path / "never.mp4").exists()
    with session_scope() as s:
        run = repo.get_run(s, run_id)
        assert run.status == "rejected" and "no review decision within 3 s" in run.error
        assert repo.renders_for_run(s, run_id) == []
        assert [(x.decision, x.reviewer) for x in repo.reviews_for_run(s, run_id)] == [("reject", "recast")]
        events = [e for e in repo.list_audit_events(s, subject_type="run", subject_id=run_id) if e.action == "review.reject"]
        assert len(events) == 1 and events[0].detail["via"] == "timeout"
