"""The model registry: resolution, checksums and their cache, studio overrides, licences."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from recast.errors import InputError, ModelMissingError, PolicyError, UsageError
from recast.models import registry
from recast.models.registry import REGISTRY, check_licence, list_models, resolve


def _write(path: Path, data: bytes) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def test_registry_has_the_real_specs():
    assert {"inswapper_128", "buffalo_l", "sd15_inpainting", "controlnet_mediapipe_face", "ip_adapter"} <= set(REGISTRY)
    ins = REGISTRY["inswapper_128"]
    assert ins.files[0].path == "inswapper_128.onnx" and len(ins.files[0].sha256) == 64
    assert ins.files[0].size == 554_253_681
    assert not ins.commercial_use and not REGISTRY["buffalo_l"].commercial_use
    assert REGISTRY["sd15_inpainting"].commercial_use
    paths = {f.path for f in REGISTRY["sd15_inpainting"].files}
    assert "sd15_inpainting/unet/config.json" in paths and "sd15_inpainting/scheduler/scheduler_config.json" in paths


def test_missing_model_error_names_files_and_place(tmp_path):
    with pytest.raises(ModelMissingError) as ei:
        resolve("inswapper_128", tmp_path)
    msg = str(ei.value)
    assert "\n" not in msg
    assert msg.startswith(f"model 'inswapper_128': missing inswapper_128.onnx in {tmp_path} (place the file there")
    assert "recast models list" in msg
    assert isinstance(ei.value, FileNotFoundError)


def test_unknown_model_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="unknown model 'nope'"):
        resolve("nope", tmp_path)


def test_checksum_mismatch_and_override(tmp_path):
    # a file that is not the real inswapper: the pinned size catches it before any hashing
    sha = _write(tmp_path / "inswapper_128.onnx", b"not the real model")
    with pytest.raises(InputError, match="expected 554253681"):
        resolve("inswapper_128", tmp_path)
    # the studio pins its own file: it resolves and verifies
    (tmp_path / "models.json").write_text(json.dumps({"inswapper_128": {"files": {"inswapper_128.onnx": sha}}}))
    res = resolve("inswapper_128", tmp_path)
    assert res.verified and res.sha256_by_file == {"inswapper_128.onnx": sha}
    assert res.spec.overridden and res.model_ref.sha256 == res.digest and len(res.digest) == 64
    # a wrong pin: both hashes in the message
    bad = "0" * 64
    (tmp_path / "models.json").write_text(json.dumps({"inswapper_128": {"files": {"inswapper_128.onnx": bad}}}))
    with pytest.raises(InputError) as ei:
        resolve("inswapper_128", tmp_path)
    assert bad in str(ei.value) and sha in str(ei.value) and "inswapper_128.onnx" in str(ei.value)
    # presence only
    assert resolve("inswapper_128", tmp_path, verify=False).sha256_by_file == {}


def test_hash_cache_avoids_rehash_and_notices_changes(tmp_path, monkeypatch):
    sha = _write(tmp_path / "inswapper_128.onnx", b"a" * 1000)
    (tmp_path / "models.json").write_text(json.dumps({"inswapper_128": {"files": {"inswapper_128.onnx": sha}}}))
    resolve("inswapper_128", tmp_path)
    cache = json.loads((tmp_path / registry.HASH_CACHE_NAME).read_text())
    assert cache["inswapper_128.onnx"]["sha256"] == sha
    calls = []
    real = hashlib.sha256
    monkeypatch.setattr(registry.hashlib, "sha256", lambda *a: calls.append(1) or real(*a))
    resolve("inswapper_128", tmp_path)
    assert not calls  # the file hash came from the cache (digest hashing is not per file)
    _write(tmp_path / "inswapper_128.onnx", b"b" * 1001)
    with pytest.raises(InputError, match="checksum mismatch"):
        resolve("inswapper_128", tmp_path)


def test_unpinned_files_resolve_but_are_not_verified(tmp_path):
    for f in REGISTRY["controlnet_mediapipe_face"].files:
        _write(tmp_path / f.path, b"{}")
    res = resolve("controlnet_mediapipe_face", tmp_path)
    assert not res.verified and len(res.sha256_by_file) == 2
    status = {s.name: s for s in list_models(tmp_path)}
    cn = status["controlnet_mediapipe_face"]
    assert cn.present and not cn.verified and "models.json" in cn.problem
    assert not status["inswapper_128"].present and "missing" in status["inswapper_128"].problem


def test_replace_files_override(tmp_path):
    sha = _write(tmp_path / "controlnet_mediapipe_face/diffusion_pytorch_model.fp16.safetensors", b"w")
    sha2 = _write(tmp_path / "controlnet_mediapipe_face/config.json", b"{}")
    (tmp_path / "models.json").write_text(json.dumps({"controlnet_mediapipe_face": {"replace": True, "version": "fp16", "files": {
        "controlnet_mediapipe_face/diffusion_pytorch_model.fp16.safetensors": sha,
        "controlnet_mediapipe_face/config.json": {"sha256": sha2}}}}))
    res = resolve("controlnet_mediapipe_face", tmp_path)
    assert res.verified and res.spec.version == "fp16" and len(res.spec.files) == 2
    assert [s for s in list_models(tmp_path) if s.name == "controlnet_mediapipe_face"][0].verified


def test_fetch_fills_a_cache(tmp_path):
    store = {"inswapper_128.onnx": b"remote model bytes"}
    cache = tmp_path / "cache"
    cache.mkdir()
    sha = hashlib.sha256(store["inswapper_128.onnx"]).hexdigest()
    (cache / "models.json").write_text(json.dumps({"inswapper_128": {"files": {"inswapper_128.onnx": sha}}}))
    fetched = []

    def fetch(rel: str) -> Path:
        if rel not in store:
            raise FileNotFoundError(rel)
        fetched.append(rel)
        _write(cache / rel, store[rel])
        return cache / rel

    res = resolve("inswapper_128", cache, fetch=fetch)
    assert fetched == ["inswapper_128.onnx"] and res.verified and res.root == cache
    resolve("inswapper_128", cache, fetch=fetch)
    assert fetched == ["inswapper_128.onnx"]  # already local: not fetched again
    with pytest.raises(ModelMissingError, match="buffalo_l/w600k_r50.onnx"):
        resolve("buffalo_l", cache, fetch=fetch)


def test_licence_policy(tmp_path):
    with pytest.raises(PolicyError) as ei:
        check_licence(REGISTRY["inswapper_128"], commercial_project=True, project="X")
    assert str(ei.value).startswith("model 'inswapper_128' is licensed for non-commercial use only (")
    assert str(ei.value).endswith("project 'X' is commercial")
    check_licence(REGISTRY["inswapper_128"], commercial_project=False)
    check_licence(REGISTRY["sd15_inpainting"], commercial_project=True)
    # a studio with a commercial licence says so, and must say which
    (tmp_path / "models.json").write_text(json.dumps({"inswapper_128": {"commercial_use": True}}))
    with pytest.raises(InputError, match="licence"):
        registry.get_spec("inswapper_128", tmp_path)
    (tmp_path / "models.json").write_text(json.dumps({"inswapper_128": {"commercial_use": True, "licence": "insightface commercial #42"}}))
    spec = registry.get_spec("inswapper_128", tmp_path)
    check_licence(spec, commercial_project=True)
    assert spec.licence == "insightface commercial #42"


def test_list_models_without_a_model_dir():
    rows = list_models(None)
    assert {r.name for r in rows} == set(REGISTRY)
    assert all(not r.present and "RECAST_MODEL_DIR" in r.problem for r in rows)
