"""Swap engines behind one interface: the registry's checks, the protocol, model refs without
loading, the per-process cache of loaded engines, and a classic swap through the interface."""

from __future__ import annotations

import av
import cv2
import numpy as np
import pytest

from recast.errors import InternalError, ModelMissingError, PolicyError, UsageError
from recast.models import engines
from recast.models.engines import (
    ENGINE_NAMES,
    PlateFrames,
    SwapEngine,
    SwapResult,
    SwapSource,
    check_engine,
    check_protocol,
    create_engine,
    engine_modes,
    engine_uses_gpu,
    loaded_engine,
)
from tests.conftest import IMAGES, VIDEOS


@pytest.fixture(autouse=True)
def _fresh_cache():
    engines.reset_loaded_engines()
    yield
    engines.reset_loaded_engines()


# --- registry ------------------------------------------------------------------------------------
def test_names_modes_and_gpu():
    assert ENGINE_NAMES == ("classic", "inswapper", "diffusion")
    assert engine_modes("classic") == ("face", "head")
    assert engine_modes("inswapper") == ("face",) and engine_modes("diffusion") == ("head",)
    assert not engine_uses_gpu("classic") and engine_uses_gpu("inswapper") and engine_uses_gpu("diffusion")
    for name in ENGINE_NAMES:
        for mode in engine_modes(name):
            check_engine(name, mode)  # no error


def test_unknown_engine_lists_the_names():
    with pytest.raises(UsageError, match=r"backend 'simswap': not available \(choose from classic, inswapper, diffusion\)"):
        check_engine("simswap", "face")
    with pytest.raises(UsageError, match="choose from classic, inswapper, diffusion"):
        create_engine("simswap", "face")


def test_wrong_mode_says_which_modes_the_engine_swaps():
    with pytest.raises(UsageError, match=r"backend 'inswapper' swaps faces only: use --mode face"):
        check_engine("inswapper", "head")
    with pytest.raises(UsageError, match=r"backend 'diffusion' repaints the whole head: use --mode head"):
        create_engine("diffusion", "face", model_dir="/nowhere")
    with pytest.raises(UsageError, match=r"mode 'body': choose from face, head"):
        check_engine("classic", "body")


def test_protocol_check_rejects_an_object_without_swap():
    class NoSwap:
        name, version, modes, mode, device, needs = "classic", "1", ("face",), "face", "cpu", frozenset()

        def model_refs(self):
            return ()

        def load(self):
            pass

    with pytest.raises(InternalError, match=r"NoSwap is not a SwapEngine \(missing swap\)"):
        check_protocol(NoSwap(), "classic")
    engine = create_engine("classic", "face")
    assert isinstance(engine, SwapEngine) and check_protocol(engine, "classic") is engine
    with pytest.raises(InternalError, match="calls itself 'classic'"):
        check_protocol(engine, "inswapper")


# --- learned engines: refs before weights -------------------------------------------------------
@pytest.fixture()
def inswapper_dir(tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from tests.e2e.test_backends import tiny_model_dir

    return tiny_model_dir(tmp_path / "models")


def test_model_refs_do_not_load_weights_and_loaded_engines_are_cached(inswapper_dir):
    engine = create_engine("inswapper", "face", model_dir=inswapper_dir)
    refs = engine.model_refs()
    names = [r.name for r in refs]
    assert names[:2] == ["inswapper_128", "buffalo_l"] and all(len(r.sha256) == 64 for r in refs[:2])
    assert any(n.startswith("mediapipe.") for n in names)  # the occlusion detector the swap runs
    assert not engine.loaded  # checksums from the registry, no ONNX session yet
    got = loaded_engine(engine)
    assert got is engine and engine.loaded
    # a second chunk in this process: a fresh engine object, the weights already loaded once
    again = create_engine("inswapper", "face", model_dir=inswapper_dir)
    assert again.model_refs() == refs
    assert loaded_engine(again) is engine and not again.loaded


def test_licence_and_missing_weights_refused_before_loading(inswapper_dir, tmp_path):
    engine = create_engine("inswapper", "face", model_dir=inswapper_dir, project="spot", commercial=True)
    with pytest.raises(PolicyError, match="non-commercial.*project 'spot' is commercial"):
        engine.model_refs()
    assert not engine.loaded
    with pytest.raises(ModelMissingError, match=r"model 'inswapper_128': missing inswapper_128.onnx"):
        create_engine("inswapper", "face", model_dir=tmp_path / "empty").model_refs()
    with pytest.raises(ModelMissingError, match="no model directory"):
        create_engine("inswapper", "face").model_refs()


def test_diffusion_refs_without_loading(tmp_path):
    pytest.importorskip("diffusers")
    from tests.unit.test_diffusion_swap import build_tiny_model_dir

    root = build_tiny_model_dir(tmp_path / "diffusion")
    engine = create_engine("diffusion", "head", model_dir=root, commercial=True)
    refs = engine.model_refs()
    assert [r.name for r in refs] == ["sd15_inpainting", "controlnet_mediapipe_face", "ip_adapter"]
    assert all(r.sha256 and len(r.sha256) == 64 for r in refs)
    assert not engine.loaded


# --- the classic engine through the interface ----------------------------------------------------
@pytest.fixture(scope="module")
def chunk():
    from recast.models.face import FaceAnalyzer, analyze_source_photo
    from recast.models.retarget import retarget_sequence

    src = cv2.cvtColor(cv2.imread(str(IMAGES / "skimage_astronaut.png")), cv2.COLOR_BGR2RGB)
    src_face = analyze_source_photo(src, role_name="astronaut")
    frames = []
    with av.open(str(VIDEOS / "liveportrait_d0.mp4")) as c:
        for i, f in enumerate(c.decode(video=0)):
            frames.append(f.to_ndarray(format="rgb24"))
            if i >= 2:
                break
    with FaceAnalyzer(static_images=False, max_faces=1) as fa:
        plate_lm = np.stack([fa.detect(f)[0].landmarks for f in frames]).astype(np.float64)
    targets = retarget_sequence(plate_lm, src_face.landmarks)
    targets[1] = np.nan  # no target on the middle frame: it must pass through
    h, w = frames[0].shape[:2]
    plate = PlateFrames(frames=frames, landmarks=plate_lm, person=np.ones((len(frames), h, w), bool))
    return plate, targets, SwapSource(rgb=src, landmarks=src_face.landmarks)


def test_classic_face_engine_changes_pixels_only_inside_its_matte(chunk):
    plate, targets, source = chunk
    engine = loaded_engine(create_engine("classic", "face"))
    done = []
    res = engine.swap(plate, targets, source, progress=done.append)
    assert isinstance(res, SwapResult) and (res.swapped, res.passthrough) == (2, 1)
    assert sum(done) == 3  # every frame counted, passed through or not
    assert res.matte.shape == (3, *plate.frames[0].shape[:2]) and res.matte.dtype == bool
    for plate_frame, out, matte in zip(plate.frames, res.frames, res.matte):
        assert np.array_equal(out[~matte], plate_frame[~matte])  # exactly the plate outside
    for i in (0, 2):
        changed = (res.frames[i] != plate.frames[i]).any(axis=2)
        assert changed.sum() > 0.5 * res.matte[i].sum() > 1000  # the face itself changed
    assert not res.matte[1].any() and np.array_equal(res.frames[1], plate.frames[1])


def test_classic_head_engine_needs_the_source_head(chunk):
    plate, targets, source = chunk
    engine = create_engine("classic", "head")
    assert engine.model_refs()[0].name == "classic-head"
    with pytest.raises(UsageError, match="source's cut-out head"):
        engine.swap(plate, targets, source)


def test_plate_frames_checks_lengths(chunk):
    plate, _, _ = chunk
    with pytest.raises(UsageError, match="person has 2 entries for 3 frames"):
        PlateFrames(frames=plate.frames, landmarks=plate.landmarks, person=plate.person[:2])
