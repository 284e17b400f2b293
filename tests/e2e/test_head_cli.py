"""`recast swap` in head mode (the default): background, retargeting with edits, face selection,
parameters in provenance, and the source-photo errors."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from recast.cli import app
from tests.conftest import IMAGES


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.mark.slow
def test_head_swap_with_edits_records_parameters_and_moves_hair_and_identity(recast_env, short_plate, tmp_path):
    out = tmp_path / "head.mp4"
    r = invoke("swap", "--plate", short_plate, "--source", IMAGES / "deepface_img45.jpg", "--out", out, "--chunk-size", "20",
               "--face", "index:0", "--expression", "transfer", "--edit", "smile=+0.3", "--edit", "eye_open=-0.1@5-30", "--json")
    assert r.exit_code == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["mode"] == "head" and "background" in summary["stages"]
    qc = summary["qc"]
    assert qc["identity_transfer_rate"] >= 0.8 and qc["hair_transfer_rate"] is not None and qc["hair_transfer_rate"] >= 0.5
    assert qc["delivered_background_psnr_db"] >= 38.0
    shown = json.loads(invoke("show", summary["run_id"], "--json").stdout)
    by_stage = {sr["stage"]: sr for sr in shown["stages"]}
    assert by_stage["expression"]["params"]["edits"] == ["smile=+0.3", "eye_open=-0.1@5-30"]
    assert by_stage["expression"]["params"]["expression"] == "transfer"
    assert by_stage["track"]["params"]["face"] == "index:0"
    assert by_stage["swap"]["params"]["mode"] == "head"
    assert any(m["name"] == "classic-head" for m in by_stage["swap"]["models"])


def test_group_photo_source_needs_a_selector_and_bad_edits_are_usage_errors(recast_env, short_plate, tmp_path):
    r = invoke("swap", "--plate", short_plate, "--source", IMAGES / "insightface_t1.jpg", "--out", tmp_path / "o.mp4", "--chunk-size", "20")
    assert r.exit_code == 3
    line = [x for x in r.stderr.splitlines() if x.startswith("recast: error:")][0]
    assert "6 faces" in line and "--source-face index:N" in line and "#5" in line
    bad = invoke("swap", "--plate", short_plate, "--source", IMAGES / "deepface_img17.jpg", "--out", tmp_path / "o.mp4", "--edit", "grin=0.3")
    assert bad.exit_code == 2 and "grin=0.3" in bad.stderr
    bad_face = invoke("swap", "--plate", short_plate, "--source", IMAGES / "deepface_img17.jpg", "--out", tmp_path / "o.mp4", "--face", "tallest")
    assert bad_face.exit_code == 2 and "tallest" in bad_face.stderr
