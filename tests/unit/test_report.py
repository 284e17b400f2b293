"""QC pieces without a flow: identity model choice (ArcFace from a tiny ONNX graph), thresholds,
reasons with frames, contact sheet, plots, HTML, progress artifacts outside Prefect."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import numpy as np
import pytest

from recast.contracts import AssetRef, ModelRef, QCReport, Verdict
from recast.media.artifacts import QCPerFrame
from recast.models.metrics import QCThresholds


def _arcface_model_dir(tmp_path, *, pin: bool = True):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(1)
    lin = rng.standard_normal((48, 512)).astype(np.float32)
    nodes = [
        helper.make_node("AveragePool", ["input.1"], ["p"], kernel_shape=[28, 28], strides=[28, 28]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("MatMul", ["f", "L"], ["683"]),
    ]
    g = helper.make_graph(nodes, "arcface_standin",
                          [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, 112, 112])],
                          [helper.make_tensor_value_info("683", TensorProto.FLOAT, [1, 512])],
                          [numpy_helper.from_array(lin, "L")])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "buffalo_l" / "w600k_r50.onnx"
    path.parent.mkdir(parents=True)
    onnx.save(model, str(path))
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    # the studio pins the recogniser it placed (the detector of the pack is not needed by QC)
    (tmp_path / "models.json").write_text(json.dumps({"buffalo_l": {"replace": True, "files": {"buffalo_l/w600k_r50.onnx": sha if pin else "0" * 64}}}))
    return tmp_path, sha


def test_identity_model_is_arcface_when_its_file_is_in_the_model_dir(tmp_path):
    import cv2

    from recast.models.face import analyze_source_photo
    from recast.models.qc import ArcFaceIdentity, DlibIdentity, identity_model
    from tests.conftest import IMAGES

    model_dir, sha = _arcface_model_dir(tmp_path)
    ident = identity_model(model_dir)
    assert isinstance(ident, ArcFaceIdentity)
    assert ident.model.name == "buffalo_l" and len(ident.model.sha256) == 64
    rgb = cv2.cvtColor(cv2.imread(str(IMAGES / "skimage_astronaut.png")), cv2.COLOR_BGR2RGB)
    det = analyze_source_photo(rgb, role_name="astronaut")
    e = ident.embed(rgb, det.landmarks, det.box)
    assert e.shape == (512,) and abs(float(np.linalg.norm(e)) - 1.0) < 1e-4
    assert ident.distance(e, e) == pytest.approx(0.0, abs=1e-6)
    shifted = np.roll(rgb, 40, axis=1)
    assert ident.distance(e, ident.embed(shifted, det.landmarks, det.box)) > 0.0

    # no model dir, or no recogniser in it: dlib
    assert isinstance(identity_model(tmp_path / "empty"), DlibIdentity)
    # a file whose checksum is not the pinned one is refused, not silently replaced by dlib
    from recast.errors import InputError

    bad_dir = tmp_path / "bad"
    bad_dir.mkdir()
    _arcface_model_dir(bad_dir, pin=False)
    with pytest.raises(InputError, match="checksum"):
        identity_model(bad_dir)


def test_thresholds_project_over_settings_over_defaults(monkeypatch):
    from recast.errors import UsageError
    from recast.settings import reset_settings
    from recast.tasks.common import thresholds_from_settings

    monkeypatch.setenv("RECAST_QC_POSE_ERROR_REVIEW", "7.5")
    reset_settings()
    try:
        t = thresholds_from_settings()
        assert t.pose_error_review == 7.5 and t.seam_review == QCThresholds().seam_review
        t = thresholds_from_settings({"seam_review": 2.0, "qc_identity_pass": 0.95})
        assert t.seam_review == 2.0 and t.identity_pass == 0.95 and t.pose_error_review == 7.5
        with pytest.raises(UsageError, match="not one of"):
            thresholds_from_settings({"sharpness": 1})
    finally:
        reset_settings()


def test_reasons_name_metric_value_threshold_and_frames():
    from recast.models.qc import explain_verdict

    metrics = {"identity_transfer_rate": 0.4, "background_psnr_db": 45.0, "seam_score": 1.9, "face_found_ratio": 1.0}
    verdict, reasons = explain_verdict(metrics, QCThresholds(), {"identity_transfer_rate": [3, 9], "seam_score": [12, 4]})
    assert verdict is Verdict.failed
    first = reasons[0]
    assert first["metric"] == "identity_transfer_rate" and first["value"] == 0.4 and first["threshold"] == 0.5
    assert first["outcome"] == "fail" and first["frames"] == [3, 9] and first["text"].endswith("at frames 3, 9")
    seam = next(r for r in reasons if r["metric"] == "seam_score")
    assert seam["outcome"] == "review" and seam["threshold"] == 1.5 and seam["frames"] == [12, 4]


def test_contact_sheet_plots_and_html_are_self_contained():
    from recast.media.qc_report import choose_frames, contact_sheet, heat_map, metric_plots, render_html, thumbnail_jpeg

    rng = np.random.default_rng(0)
    plate = rng.integers(0, 255, (90, 120, 3), dtype=np.uint8)
    out = plate.copy()
    out[30:60, 40:80] = 255
    hm = heat_map(plate, out)
    assert hm.shape == plate.shape and hm[0, 0].sum() < hm[45, 60].sum()
    sheet = contact_sheet([(0, plate, out, "frame 0"), (7, plate, out, "frame 7  ! seam_score")], tile_w=100)
    assert sheet.shape[1] == 300 and sheet.shape[0] > 2 * 75
    assert thumbnail_jpeg(sheet, width=80)[:2] == b"\xff\xd8"

    total = 30
    nan = np.full(total, np.nan)
    d_source = nan.copy()
    d_source[::10] = 0.4
    reasons = [{"metric": "seam_score", "frames": [17, 5], "text": "seam score 1.90 > 1.50 (review) at frames 17, 5", "outcome": "review"}]
    pf = QCPerFrame(swapped=np.ones(total, bool), face_found=np.ones(total, bool), sampled=np.arange(0, total, 10), d_source=d_source,
                    d_plate=nan, similarity_source=nan, similarity_plate=nan, transferred=np.zeros(total, bool),
                    pose_plate=np.zeros((total, 3)), pose_output=np.zeros((total, 3)), pose_error=np.linspace(0, 3, total),
                    expression_error=np.zeros(total), jitter_excess=np.zeros(total), flicker_output=np.ones(total),
                    flicker_plate=np.ones(total), flicker_ratio=np.ones(total), seam=np.full(total, 1.1),
                    background_psnr=np.full(total, 45.0), hair=nan, badness=nan, identity_match_distance=0.6,
                    reasons=tuple(reasons), thresholds=dataclasses.asdict(QCThresholds()))
    frames = choose_frames(pf, reasons, total)
    assert 17 in frames and 5 in frames and 29 in frames and 0 in frames and len(frames) <= 8 and frames == sorted(frames)
    qc = QCReport(metrics={"seam_score": 1.9}, verdict=Verdict.review, reasons=(reasons[0]["text"],),
                  models=(ModelRef(name="dlib", version="1", sha256="a" * 64),))
    png = metric_plots(pf, qc)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    page = render_html("SH010", qc, reasons, b"\x89PNG-sheet", png, frames)
    assert page.count("data:image/png;base64,") == 2 and "seam score 1.90" in page and "sha256=" + "a" * 64 in page
    assert "src=\"http" not in page and "src=\"file" not in page  # nothing outside the file


def test_qc_table_rows_and_artifact_keys():
    from recast.media.qc_report import artifact_key, qc_table

    qc = QCReport(metrics={"identity_transfer_rate": 0.7, "seam_score": 1.2, "background_psnr_db": 50.0}, verdict=Verdict.review,
                  reasons=("identity transfer 0.70 < 0.90 (review)",))
    rows = qc_table(qc, dataclasses.asdict(QCThresholds()), [{"metric": "identity_transfer_rate", "outcome": "review", "frames": [2, 8]}])
    assert rows[0] == {"metric": "verdict", "value": "REVIEW", "threshold": "", "status": "review", "frames": ""}
    ident = next(r for r in rows if r["metric"] == "identity transfer rate")
    assert ident["status"] == "review" and ident["threshold"] == "0.9 / 0.5" and ident["frames"] == "2, 8"
    assert next(r for r in rows if r["metric"] == "seam score")["status"] == "ok"
    assert artifact_key("SH_010 v2 (final)") == "qc-sh-010-v2-final"


def test_progress_outside_a_flow_run_makes_no_artifact(monkeypatch):
    from recast.tasks import common

    calls = []
    monkeypatch.setattr("prefect.artifacts.create_progress_artifact", lambda **kw: calls.append(kw))
    p = common.progress_for("run-x", "swap", 10)
    p.advance(10)
    assert calls == [] and p.done == 10
    # a finished counter is not reused by the next file's stage
    assert common.progress_for("run-x", "swap", 10) is not p


def test_progress_artifact_created_once_and_updated_throttled(monkeypatch):
    from recast.tasks import common

    created, updated = [], []
    monkeypatch.setattr(common, "in_prefect_run", lambda: True)
    monkeypatch.setattr("prefect.artifacts.create_progress_artifact", lambda **kw: created.append(kw) or "art-1")
    monkeypatch.setattr("prefect.artifacts.update_progress_artifact", lambda aid, **kw: updated.append((aid, kw)))
    p = common.Progress("segment", 100, "run-y")
    for _ in range(99):
        p.advance()
    assert len(created) == 1 and created[0]["key"] == "segment-progress"
    assert len(updated) <= 2  # throttled: not one call per frame
    p.advance()
    assert updated[-1] == ("art-1", {"progress": 100.0, "description": "segment: 100/100 frames"})
