"""Backend choice per shot through the flow: the inswapper engine on a tiny ONNX model built here,
its checksums in provenance, and the licence policy for commercial projects."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from recast.cli import app
from tests.conftest import IMAGES
from tests.unit.test_inswapper import make_arcface, make_inswapper


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def tiny_model_dir(root):
    root.mkdir(parents=True, exist_ok=True)
    make_inswapper(root / "inswapper_128.onnx")
    make_arcface(root / "buffalo_l" / "w600k_r50.onnx")
    (root / "buffalo_l" / "det_10g.onnx").write_bytes(b"detector not used by recast")
    # a studio pins the checksums of the files it placed (the tiny stand-ins are not the public files)
    from recast.models.registry import sha256_file

    pins = {"inswapper_128": {"files": {"inswapper_128.onnx": sha256_file(root / "inswapper_128.onnx")}},
            "buffalo_l": {"files": {"buffalo_l/w600k_r50.onnx": sha256_file(root / "buffalo_l" / "w600k_r50.onnx"),
                                    "buffalo_l/det_10g.onnx": sha256_file(root / "buffalo_l" / "det_10g.onnx")}}}
    (root / "models.json").write_text(json.dumps(pins))
    return root


@pytest.mark.slow
def test_inswapper_backend_runs_through_the_flow_and_is_refused_for_commercial_projects(recast_env, tmp_path, short_plate, monkeypatch):
    models = tiny_model_dir(tmp_path / "models")
    monkeypatch.setenv("RECAST_MODEL_DIR", str(models))
    from recast.settings import reset_settings

    reset_settings()
    out = tmp_path / "o.mp4"
    # tiny random weights paint no real face, so QC may well say fail: deliver anyway to inspect it
    r = invoke("swap", "--plate", short_plate, "--source", IMAGES / "deepface_img17.jpg", "--out", out, "--mode", "face",
               "--backend", "inswapper", "--chunk-size", "20", "--json", "--deliver-on-fail")
    assert r.exit_code == 0, r.stderr
    summary = json.loads(r.stdout)
    assert out.is_file() and summary["published"] is True
    assert summary["params"]["backend"] == "inswapper" and summary["swapped_frames"] > 30
    shown = json.loads(invoke("show", summary["run_id"], "--json").stdout)
    swap_models = [m for sr in shown["stages"] if sr["stage"] == "swap" for m in sr["models"]]
    assert {"inswapper_128", "buffalo_l"} <= {m["name"] for m in swap_models}
    assert all(m["sha256"] for m in swap_models if m["name"] in ("inswapper_128", "buffalo_l"))

    # a commercial project may not use a non-commercial model
    assert invoke("project", "create", "spot", "--media", "ad", "--commercial", "--no-consent-required").exit_code == 0
    refused = invoke("swap", "--plate", short_plate, "--source", IMAGES / "deepface_img17.jpg", "--out", tmp_path / "c.mp4",
                     "--mode", "face", "--backend", "inswapper", "--project", "spot")
    assert refused.exit_code == 4 and "non-commercial" in refused.stderr and not (tmp_path / "c.mp4").exists()


@pytest.mark.slow
def test_missing_weights_name_the_files(recast_env, tmp_path, short_plate, monkeypatch):
    monkeypatch.setenv("RECAST_MODEL_DIR", str(tmp_path / "empty"))
    (tmp_path / "empty").mkdir()
    from recast.settings import reset_settings

    reset_settings()
    r = invoke("swap", "--plate", short_plate, "--source", IMAGES / "deepface_img17.jpg", "--out", tmp_path / "o.mp4",
               "--mode", "head", "--backend", "diffusion")
    assert r.exit_code == 3
    assert "sd15_inpainting" in r.stderr and "unet" in r.stderr
