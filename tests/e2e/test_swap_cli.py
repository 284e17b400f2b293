"""`recast swap` end to end through the real Prefect engine, SQLite and the local object store."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import av
import pytest
from typer.testing import CliRunner

from recast.cli import app
from tests.conftest import IMAGES, VIDEOS

SOURCE = IMAGES / "deepface_img17.jpg"  # bearded man; the plate is an older woman


def invoke(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def video_pts_seconds(path: Path) -> list[Fraction]:
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        return sorted(Fraction(p.pts) * s.time_base for p in c.demux(s) if p.pts is not None)


def run_rows(run_id: str):
    from recast.db import repository as repo
    from recast.db.session import session_scope

    with session_scope() as s:
        run = repo.get_run(s, run_id)
        stages = [(r.stage, r.chunk_index, r.status) for r in repo.stage_runs_for_run(s, run_id)]
        return run.status, run.error, stages


def swapped_chunk_shas(run_id: str) -> list[str]:
    shown = json.loads(invoke("show", run_id, "--json").stdout)
    return [o["sha256"] for sr in sorted((x for x in shown["stages"] if x["stage"] == "swap"), key=lambda x: x["chunk_index"])
            for o in sr["outputs"] if o["role"] == "swapped_chunk"]


def latest_run():
    from recast.services.runs import recent_runs

    return recent_runs(1)[0]


@pytest.mark.slow
def test_swap_face_json_keeps_frames_timing_audio_and_records_provenance(recast_env, short_plate, tmp_path):
    out = tmp_path / "out.mp4"
    result = invoke("swap", "--plate", short_plate, "--source", SOURCE, "--out", out, "--mode", "face", "--json", "--chunk-size", "16")
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    for key in ("run_id", "shot_id", "output", "frames", "fps", "qc", "stages"):
        assert key in summary
    assert summary["frames"] == 40 and summary["fps"] == "25/1"
    assert set(summary["stages"]) == {"ingest", "segment", "track", "expression", "swap", "qc", "render"}
    # a clean swap of a frontal face: QC passes it and has nothing to flag
    assert summary["qc"]["verdict"] == "pass" and summary["qc"]["reasons"] == []
    assert Path(summary["output"]) == out.absolute() and out.exists()

    # same frame count and the plate's own timestamps; audio carried over
    assert video_pts_seconds(out) == video_pts_seconds(short_plate)
    with av.open(str(out)) as c:
        assert len(c.streams.audio) == 1
        assert c.streams.video[0].codec_context.name == "h264"
    # the face changed and the identity moved towards the source
    assert summary["swapped_frames"] >= 36
    assert summary["qc"]["identity_transfer_rate"] >= 0.5
    assert summary["qc"]["delivered_background_psnr_db"] >= 38.0

    status, error, stages = run_rows(summary["run_id"])
    assert status == "done" and error is None
    names = [s for s, _, _ in stages]
    assert names.count("segment") == 3 + 1  # 3 chunks + the source photo
    assert names.count("swap") == 3 and names.count("ingest") == 1 and names.count("render") == 1
    assert all(st == "done" for _, _, st in stages)

    shown = invoke("show", summary["run_id"])
    assert shown.exit_code == 0
    assert "dlib_face_recognition_resnet_model_v1" in shown.stdout and "sha256=" in shown.stdout

    tree = json.loads(invoke("lineage", out, "--json").stdout)
    roles = set()

    def walk(n):
        roles.add(n["asset"]["role"])
        for p in n.get("parents", []):
            walk(p)

    walk(tree)
    assert tree["asset"]["role"] == "deliverable"
    assert {"plate", "plate_chunk", "swapped_chunk", "source", "target_landmarks"} <= roles

    listed = invoke("runs")
    assert summary["run_id"] in listed.stdout and "done" in listed.stdout


@pytest.mark.slow
def test_a_crashed_run_resumes_without_redoing_finished_chunks(recast_env, short_plate, tmp_path, monkeypatch):
    import recast.tasks.swap as swap_mod

    original = swap_mod.run_stage

    def crash_in_chunk_1(stage, *, compute, chunk_index=None, **kw):
        if chunk_index == 1:
            def boom():
                raise RuntimeError("simulated worker crash in chunk 1")
            return original(stage, compute=boom, chunk_index=chunk_index, **kw)
        return original(stage, compute=compute, chunk_index=chunk_index, **kw)

    monkeypatch.setattr(swap_mod, "run_stage", crash_in_chunk_1)
    out = tmp_path / "resumed.mp4"
    args = ("swap", "--plate", short_plate, "--source", SOURCE, "--out", out, "--chunk-size", "16", "--json")
    first = invoke(*args)
    assert first.exit_code == 1 and not out.exists()
    failed_run = latest_run()
    assert failed_run["status"] == "failed" and "simulated worker crash" in failed_run["error"]

    monkeypatch.setattr(swap_mod, "run_stage", original)
    second = invoke(*args)
    assert second.exit_code == 0, second.stderr
    summary = json.loads(second.stdout)
    _, _, stages = run_rows(summary["run_id"])
    by = {(s, c): st for s, c, st in stages}
    assert by[("ingest", None)] == "reused"
    assert all(by[("segment", c)] == "reused" for c in range(3))
    assert by[("swap", 0)] == "reused" and by[("swap", 2)] == "reused"
    assert by[("swap", 1)] == "done"

    # the resumed output is the one an uninterrupted run makes
    resumed_chunks = swapped_chunk_shas(summary["run_id"])
    monkeypatch.setenv("RECAST_DATA_DIR", str(tmp_path / "fresh-data"))
    from recast.settings import reset_settings

    reset_settings()
    clean_out = tmp_path / "clean.mp4"
    clean = invoke("swap", "--plate", short_plate, "--source", SOURCE, "--out", clean_out, "--chunk-size", "16", "--json")
    assert clean.exit_code == 0, clean.stderr
    # every swapped pixel is the same (each deliverable carries its own render id in its mark
    # and manifest, so the mp4 bytes differ by design)
    assert swapped_chunk_shas(json.loads(clean.stdout)["run_id"]) == resumed_chunks


@pytest.fixture()
def truncated_mp4(tmp_path) -> Path:
    data = (VIDEOS / "videoretalking_1.mp4").read_bytes()
    path = tmp_path / "truncated.mp4"
    path.write_bytes(data[: int(len(data) * 0.6)])
    return path


@pytest.mark.parametrize(
    "case, expected",
    [
        ("missing_plate", "file not found"),
        ("not_media", "not a readable media file"),
        ("truncated", "plate"),
        ("source_without_face", "no face"),
        pytest.param("plate_without_face", "no face found in any", marks=pytest.mark.slow),  # runs ingest and segment
        ("unwritable_output", "output"),
    ],
)
def test_bad_input_fails_cleanly(case, expected, recast_env, tmp_path, short_plate, truncated_mp4, text_as_mp4, no_face_clip, no_face_photo):
    plate, source, out = short_plate, SOURCE, tmp_path / "out.mp4"
    if case == "missing_plate":
        plate = tmp_path / "missing.mp4"
    elif case == "not_media":
        plate = text_as_mp4
    elif case == "truncated":
        plate = truncated_mp4
    elif case == "source_without_face":
        source = no_face_photo
    elif case == "plate_without_face":
        plate = no_face_clip
    elif case == "unwritable_output":
        out = tmp_path / "no-such-dir" / "out.mp4"
    result = invoke("swap", "--plate", plate, "--source", source, "--out", out, "--json")
    assert result.exit_code == 3, (result.exit_code, result.stderr)
    assert result.stdout == ""
    lines = [line for line in result.stderr.splitlines() if line.startswith("recast: error:")]
    assert len(lines) == 1 and expected in lines[0], result.stderr
    assert not out.exists()
    if case in ("missing_plate", "not_media", "truncated", "unwritable_output", "source_without_face"):
        # found before the run would exist: none is recorded (the database may not even be created)
        assert not (recast_env / "recast.db").exists() or invoke("runs", "--json").stdout.strip() == "[]"
        return
    run = latest_run()
    assert run["status"] == "failed" and run["error"]


@pytest.mark.parametrize(
    "backend, mode, expected",
    [("morph", "face", "--backend 'morph': choose from classic"), ("inswapper", "head", "swaps faces only"),
     ("diffusion", "face", "repaints the whole head")],
)
def test_a_backend_that_cannot_swap_the_mode_is_refused_before_anything_runs(backend, mode, expected, recast_env, short_plate, tmp_path):
    out = tmp_path / "out.mp4"
    r = invoke("swap", "--plate", short_plate, "--source", SOURCE, "--out", out, "--mode", mode, "--backend", backend, "--json")
    assert r.exit_code == 2, (r.exit_code, r.stderr)
    assert r.stdout == "" and expected in r.stderr and not out.exists()
    from recast.db.migrate import ensure_schema
    from recast.services.runs import recent_runs

    ensure_schema()
    assert recent_runs(1) == []  # refused at submission: no shot, no run, no failed swap stage


@pytest.mark.slow
def test_demo_runs_on_public_domain_samples(recast_env):
    result = invoke("demo", "--json")
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert Path(summary["output"]).exists() and summary["frames"] == 75
    assert summary["swapped_frames"] >= 60


@pytest.mark.slow
def test_acceptance_vfr_plate_through_the_installed_command(tmp_path):
    """The issue's acceptance run, through the real `recast` executable in a fresh process."""
    import os
    import subprocess
    import sys

    plate = VIDEOS / "videoretalking_1.mp4"  # variable frame rate, with audio
    out = tmp_path / "swap.mp4"
    exe = Path(sys.executable).with_name("recast")
    env = {**os.environ, "RECAST_DATA_DIR": str(tmp_path / "data")}
    env.pop("PREFECT_API_URL", None)  # no server configured: recast runs its own temporary one
    proc = subprocess.run([str(exe), "swap", "--json", "--mode", "face", "--plate", str(plate), "--source", str(IMAGES / "deepface_img17.jpg"),
                           "--out", str(out)], capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)
    with av.open(str(plate)) as c:
        plate_frames = sum(1 for _ in c.demux(c.streams.video[0]) if _.size)
    assert summary["frames"] == plate_frames
    assert video_pts_seconds(out) == video_pts_seconds(plate)
    assert summary["fps"] == "30/1" and summary["avg_fps"] != summary["fps"]  # nominal vs average of a VFR plate
    with av.open(str(out)) as c, av.open(str(plate)) as p:
        assert [s.codec_context.name for s in c.streams.audio] == [s.codec_context.name for s in p.streams.audio]
    assert summary["audio_copied"] is True
    qc = summary["qc"]
    assert qc["identity_transfer_rate"] > 0.5, qc
    assert qc["delivered_background_psnr_db"] >= 40.0, qc
