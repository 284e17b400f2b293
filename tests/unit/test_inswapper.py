"""The inswapper backend with small ONNX graphs of INSwapper's and ArcFace's signatures."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from recast.errors import InputError, ModelMissingError, PolicyError  # noqa: E402
from recast.models.inswapper import (  # noqa: E402
    InswapperBackend,
    align_face,
    arcface_template,
    five_points,
    tiled_upscale,
)
from recast.models.similarity import similarity_align, similarity_matrix  # noqa: E402
from recast.models.swap_classic import SwapFrame  # noqa: E402
from tests.conftest import IMAGES  # noqa: E402


def _save(graph, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # readable by any onnxruntime of the last years
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def make_inswapper(path: Path, seed: int = 0) -> dict[str, np.ndarray]:
    """target (1,3,128,128) + source (1,512) -> (1,3,128,128):
    0.5 * conv1x1(target) + 0.25 + broadcast(source @ P); emap is the last initializer."""
    rng = np.random.default_rng(seed)
    w = (np.eye(3)[::-1] * 0.5).astype(np.float32).reshape(3, 3, 1, 1)  # swaps R and B: visibly different
    p = (rng.standard_normal((512, 3)) * 0.3).astype(np.float32)
    emap = rng.standard_normal((512, 512)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["target", "W"], ["c"]),
        helper.make_node("MatMul", ["source", "P"], ["s"]),
        helper.make_node("Reshape", ["s", "shape"], ["s4"]),
        helper.make_node("Add", ["c", "s4"], ["a"]),
        helper.make_node("Add", ["a", "bias"], ["output"]),
    ]
    inits = [
        numpy_helper.from_array(w, "W"),
        numpy_helper.from_array(p, "P"),
        numpy_helper.from_array(np.array([1, 3, 1, 1], np.int64), "shape"),
        numpy_helper.from_array(np.array(0.25, np.float32), "bias"),
        numpy_helper.from_array(emap, "emap"),  # last, as in the release graph
    ]
    g = helper.make_graph(
        nodes, "inswapper_standin",
        [helper.make_tensor_value_info("target", TensorProto.FLOAT, [1, 3, 128, 128]),
         helper.make_tensor_value_info("source", TensorProto.FLOAT, [1, 512])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3, 128, 128])],
        inits,
    )
    _save(g, path)
    return {"W": w, "P": p, "emap": emap}


def make_arcface(path: Path, seed: int = 1) -> np.ndarray:
    """(1,3,112,112) -> (1,512): average-pool to 4x4, flatten, linear."""
    rng = np.random.default_rng(seed)
    lin = rng.standard_normal((48, 512)).astype(np.float32)
    nodes = [
        helper.make_node("AveragePool", ["input.1"], ["p"], kernel_shape=[28, 28], strides=[28, 28]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("MatMul", ["f", "L"], ["683"]),
    ]
    g = helper.make_graph(
        nodes, "arcface_standin",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, 112, 112])],
        [helper.make_tensor_value_info("683", TensorProto.FLOAT, [1, 512])],
        [numpy_helper.from_array(lin, "L")],
    )
    _save(g, path)
    return lin


@pytest.fixture(scope="module")
def face():
    from recast.models.face import analyze_source_photo

    rgb = cv2.cvtColor(cv2.imread(str(IMAGES / "skimage_astronaut.png")), cv2.COLOR_BGR2RGB)
    det = analyze_source_photo(rgb, role_name="astronaut")
    return rgb, det.landmarks.astype(np.float64)


@pytest.fixture()
def model_dir(tmp_path):
    weights = make_inswapper(tmp_path / "inswapper_128.onnx")
    make_arcface(tmp_path / "buffalo_l" / "w600k_r50.onnx")
    (tmp_path / "buffalo_l" / "det_10g.onnx").write_bytes(b"detector stand-in")
    pins = {}
    for name, rel in (("inswapper_128", "inswapper_128.onnx"), ("buffalo_l", "buffalo_l/w600k_r50.onnx"),
                      ("buffalo_l", "buffalo_l/det_10g.onnx")):
        pins.setdefault(name, {"files": {}})["files"][rel] = hashlib.sha256((tmp_path / rel).read_bytes()).hexdigest()
    (tmp_path / "models.json").write_text(json.dumps(pins))
    return tmp_path, weights


def test_alignment_template_and_transform():
    t = arcface_template(128)
    assert np.allclose(t[0], [38.2946 + 8, 51.6963])
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 100, (5, 2))
    ang, s, sh = 0.3, 1.7, np.array([5.0, -3.0])
    r = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]]) * s
    m = similarity_matrix(*similarity_align(src, src @ r.T + sh))
    assert np.allclose(m[:, :2], r) and np.allclose(m[:, 2], sh)


def test_five_points_land_on_the_template(face):
    rgb, lm = face
    crop, m = align_face(rgb, lm, 128)
    assert crop.shape == (128, 128, 3)
    kps = five_points(lm) @ m[:, :2].T + m[:, 2]
    # eyes left to right, nose between, mouth below: within a few pixels of the template
    assert np.abs(kps - arcface_template(128)).max() < 8


def test_loads_verifies_and_swaps(model_dir, face):
    root, _ = model_dir
    rgb, lm = face
    be = InswapperBackend.from_model_dir(root, commercial_project=False)
    assert [m.name for m in be.models] == ["inswapper_128", "buffalo_l"]
    assert all(len(m.sha256) == 64 for m in be.models)
    be.set_source((rgb, lm))
    res = be.swap(rgb, lm, lm)
    assert isinstance(res, SwapFrame) and res.frame.shape == rgb.shape and res.frame.dtype == np.uint8
    outside = res.mask == 0
    assert np.array_equal(res.frame[outside], rgb[outside])  # exactly untouched
    inside = res.mask > 0
    from recast.models.masks import face_oval_mask

    oval = face_oval_mask(lm, rgb.shape) > 0
    assert inside[oval].mean() > 0.9 and inside.sum() < 1.5 * oval.sum()
    diff = np.abs(res.frame.astype(int) - rgb.astype(int)).max(axis=2)
    assert (diff[inside] > 3).mean() > 0.3  # the face changed
    # the mask sits around the face oval, not over the whole frame
    ys, xs = np.nonzero(inside)
    assert xs.min() > 0.1 * rgb.shape[1] and ys.max() < rgb.shape[0] - 1


def test_emap_is_applied(model_dir, face):
    root, w = model_dir
    rgb, lm = face
    be = InswapperBackend(root / "inswapper_128.onnx", root / "buffalo_l" / "w600k_r50.onnx", providers=["CPUExecutionProvider"])
    emb = be.set_source((rgb, lm))
    assert np.isclose(np.linalg.norm(emb), 1.0)
    crop, _ = align_face(rgb, lm, 128)
    got = be.infer_aligned(crop)
    lat = emb @ w["emap"]
    lat /= np.linalg.norm(lat)
    x = crop.astype(np.float32) / 255.0
    ref = 0.5 * x[..., ::-1] + 0.25 + (lat @ w["P"])[None, None, :]
    ref = np.clip(ref * 255.0, 0, 255)
    assert np.abs(got - ref).max() < 1e-2
    # without the emap the source input would differ and so would the output
    plain = emb / np.linalg.norm(emb)
    assert np.abs((plain @ w["P"]) - (lat @ w["P"])).max() > 1e-3


def test_checksum_mismatch_refuses(model_dir):
    root, _ = model_dir
    pins = json.loads((root / "models.json").read_text())
    pins["inswapper_128"]["files"]["inswapper_128.onnx"] = "f" * 64
    (root / "models.json").write_text(json.dumps(pins))
    with pytest.raises(InputError, match="checksum mismatch.*inswapper_128.onnx"):
        InswapperBackend.from_model_dir(root, commercial_project=False)


def test_missing_model_and_licence(tmp_path, model_dir):
    with pytest.raises(ModelMissingError, match=r"model 'inswapper_128': missing inswapper_128.onnx in .* \(place the file there"):
        InswapperBackend.from_model_dir(tmp_path / "empty", commercial_project=False)
    with pytest.raises(PolicyError, match="non-commercial"):
        InswapperBackend.from_model_dir(model_dir[0], commercial_project=True, project="ad")


def test_passthrough_without_face(model_dir, face):
    root, _ = model_dir
    rgb, lm = face
    be = InswapperBackend(root / "inswapper_128.onnx", root / "buffalo_l" / "w600k_r50.onnx")
    be.set_source((rgb, lm))
    nan = np.full_like(lm, np.nan)
    out = be.swap_batch([rgb, rgb], [nan, lm], [lm, nan])
    for r in out:
        assert np.array_equal(r.frame, rgb) and not r.mask.any()


def test_large_face_is_upscaled_and_occluder_kept(model_dir, face):
    root, _ = model_dir
    rgb, lm = face
    big = cv2.resize(rgb, None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC)
    lm2 = lm * np.array([2.0, 2.0, 2.0])
    be = InswapperBackend(root / "inswapper_128.onnx", root / "buffalo_l" / "w600k_r50.onnx")
    be.set_source((rgb, lm))
    occ = np.zeros(big.shape[:2], np.uint8)
    cx, cy = lm2[1, :2].astype(int)  # the nose tip
    occ[cy - 20:cy + 20, cx - 20:cx + 20] = 255
    res = be.swap(big, lm2, lm2, occlusion_mask=occ)
    assert np.array_equal(res.frame[occ > 0], big[occ > 0])
    assert np.array_equal(res.frame[res.mask == 0], big[res.mask == 0])
    assert res.mask.sum() > 0


def test_tiled_upscale_matches_untiled_for_a_pointwise_model():
    rng = np.random.default_rng(0)
    img = rng.uniform(0, 255, (128, 128, 3)).astype(np.float32)

    def nearest2(t):
        return np.repeat(np.repeat(t, 2, axis=0), 2, axis=1)

    out = tiled_upscale(img, 2, nearest2, tile=48, overlap=6)
    assert out.shape == (256, 256, 3)
    assert np.allclose(out, nearest2(img), atol=1e-3)
