"""The diffusion head swap on CPU with tiny seeded components saved in diffusers format."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from recast.errors import ModelMissingError, PolicyError  # noqa: E402
from recast.models.diffusion_swap import (  # noqa: E402
    CONTROLNET_FOLDER,
    IP_ADAPTER_FOLDER,
    IP_ADAPTER_WEIGHTS,
    SD15_FOLDER,
    DiffusionHeadSwapper,
    block_mask,
    draw_mediapipe_face,
    head_crop,
    make_ip_adapter_state_dict,
)
from recast.models.swap_classic import SwapFrame  # noqa: E402
from tests.conftest import IMAGES  # noqa: E402


def _tiny_tokenizer(folder: Path) -> None:
    from transformers import CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in "abcdefghijklmnopqrstuvwxyz,.":
        vocab[ch] = len(vocab)
        vocab[ch + "</w>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tok = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=16)
    tok.save_pretrained(folder)


def build_tiny_model_dir(root: Path, seed: int = 0) -> Path:
    """UNet (32, 64) / cross-attention 32 / sample 16 -> 128 px crops, tiny VAE, ControlNet,
    CLIP text and vision encoders and IP-Adapter weights, saved in diffusers layout."""
    from diffusers import AutoencoderKL, ControlNetModel, DDIMScheduler, UNet2DConditionModel
    from safetensors.torch import save_file
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(seed)
    blocks = dict(block_out_channels=(32, 64), layers_per_block=1, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                  cross_attention_dim=32, attention_head_dim=8, norm_num_groups=8)
    unet = UNet2DConditionModel(sample_size=16, in_channels=9, out_channels=4,
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), **blocks)
    controlnet = ControlNetModel(in_channels=4, conditioning_embedding_out_channels=(8, 8, 16, 16), **blocks)
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16, 16, 16), layers_per_block=1,
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=8,
                        sample_size=128)
    text = CLIPTextModel(CLIPTextConfig(vocab_size=64, hidden_size=32, intermediate_size=37, num_hidden_layers=1,
                                        num_attention_heads=4, max_position_embeddings=16, projection_dim=32))
    vision = CLIPVisionModelWithProjection(CLIPVisionConfig(hidden_size=32, intermediate_size=37, num_hidden_layers=1,
                                                            num_attention_heads=4, image_size=32, patch_size=8, projection_dim=24))
    sd = root / SD15_FOLDER
    unet.save_pretrained(sd / "unet")
    vae.save_pretrained(sd / "vae")
    text.save_pretrained(sd / "text_encoder")
    _tiny_tokenizer(sd / "tokenizer")
    DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False,
                  set_alpha_to_one=False, steps_offset=1).save_pretrained(sd / "scheduler")
    controlnet.save_pretrained(root / CONTROLNET_FOLDER)
    vision.save_pretrained(root / IP_ADAPTER_FOLDER / "image_encoder")
    ipa = make_ip_adapter_state_dict(unet, 24, seed=seed, std=0.2)
    save_file({k: v.contiguous() for k, v in ipa.items()}, str(root / IP_ADAPTER_FOLDER / IP_ADAPTER_WEIGHTS))
    return root


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    # the tiny models are too small to gain from threads, and the CPU is shared: two
    # oversubscribed torch threads turned a 1 s test into 18 s on a busy machine
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return build_tiny_model_dir(tmp_path_factory.mktemp("diffusion_models"))


@pytest.fixture(scope="module")
def face():
    from recast.models.face import analyze_source_photo

    rgb = cv2.cvtColor(cv2.imread(str(IMAGES / "skimage_astronaut.png")), cv2.COLOR_BGR2RGB)
    det = analyze_source_photo(rgb, role_name="astronaut")
    return rgb, det.landmarks.astype(np.float64)


def _swapper(root: Path, **kw) -> DiffusionHeadSwapper:
    opts = dict(device="cpu", steps=3, guidance=3.0, seed=7, batch_size=2)
    opts.update(kw)
    return DiffusionHeadSwapper(root, **opts)


def test_control_image_follows_the_annotator_style(face):
    rgb, lm = face
    img = draw_mediapipe_face(lm, (rgb.shape[0], rgb.shape[1]))
    assert img.shape == rgb.shape and img.dtype == np.uint8
    colours = {tuple(c) for c in img.reshape(-1, 3)[img.reshape(-1, 3).any(1)]}
    # face oval green, lips darker green, pupils (RGB after the annotator's channel flip)
    assert (10, 200, 10) in colours and (10, 180, 10) in colours
    assert (250, 200, 10) in colours and (10, 200, 250) in colours
    x, y = np.floor(lm[468, :2]).astype(int)
    assert tuple(img[y, x - 1]) == (250, 200, 10)  # right pupil square


def test_block_mask_is_coarse_and_covers_both_heads(face):
    rgb, lm = face
    t = lm.copy()
    t[:, 0] += 10  # a slightly different target head
    hc = head_crop(t, lm, 128)
    m = block_mask(hc.box, 128, 8)
    assert m.shape == (128, 128)
    ys, xs = np.nonzero(m)
    assert xs.min() % 8 == 0 and (xs.max() + 1) % 8 == 0 and ys.min() % 8 == 0
    x0, y0, x1, y1 = hc.box
    assert xs.min() <= max(0, x0) and xs.max() + 1 >= min(128, x1) and ys.min() <= max(0, y0)
    assert 0.1 < (m > 0).mean() < 0.8  # context left around the head


def test_round_trip_identical_outputs(tmp_path, tiny_dir):
    from diffusers import ControlNetModel, UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(tiny_dir / SD15_FOLDER / "unet")
    unet.save_pretrained(tmp_path / "unet")
    again = UNet2DConditionModel.from_pretrained(tmp_path / "unet")
    cn = ControlNetModel.from_pretrained(tiny_dir / CONTROLNET_FOLDER)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 9, 16, 16, generator=g)
    ehs = torch.randn(1, 5, 32, generator=g)
    with torch.no_grad():
        assert torch.equal(unet(x, 10, ehs).sample, again(x, 10, ehs).sample)
        down, mid = cn(x[:, :4], 10, ehs, controlnet_cond=torch.rand(1, 3, 128, 128, generator=g), return_dict=False)
    assert len(down) == 1 + 2 * len(unet.down_blocks) - 1 and mid.shape[1] == 64


def test_swap_shapes_determinism_and_untouched_outside(tiny_dir, face):
    rgb, lm = face
    frame = np.ascontiguousarray(rgb[:, 40:])  # not square, face off-centre
    plm = lm - (40, 0, 0)
    tgt = plm.copy()
    tgt[:, :2] = (tgt[:, :2] - tgt[:, :2].mean(0)) * 1.05 + tgt[:, :2].mean(0)  # a slightly larger head
    nan = np.full_like(plm, np.nan)
    sw = _swapper(tiny_dir)
    frames = [frame, frame[:, ::-1].copy(), frame]
    out = sw.swap_batch(frames, [tgt, tgt, nan], [plm, plm, plm], rgb, lm)
    assert len(out) == 3 and all(isinstance(o, SwapFrame) for o in out)
    for f, o in zip(frames, out):
        assert o.frame.shape == f.shape and o.frame.dtype == np.uint8 and o.mask.shape == f.shape[:2]
        assert np.array_equal(o.frame[o.mask == 0], f[o.mask == 0])  # exactly untouched
    assert out[0].mask.any() and (out[0].frame != frames[0]).any()
    assert not out[2].mask.any()  # no target: passthrough
    # the mask is the block mask mapped back: a rectangle around the head, not the whole frame
    ys, xs = np.nonzero(out[0].mask)
    box = (xs.max() - xs.min() + 1) * (ys.max() - ys.min() + 1)
    assert box == out[0].mask.astype(bool).sum() and box < 0.8 * out[0].mask.size
    # determinism under a seed: a new swapper, the same call -> the same pixels
    again = _swapper(tiny_dir).swap_batch(frames[:2], [tgt, tgt], [plm, plm], rgb, lm)
    assert all(np.array_equal(a.frame, o.frame) for a, o in zip(again, out))
    # alone in its batch, the frame gets the same noise: equal up to float reduction order
    alone = _swapper(tiny_dir).swap_batch([frame], [tgt], [plm], rgb, lm)[0]
    assert np.abs(alone.frame.astype(int) - out[0].frame.astype(int)).max() <= 2
    other = _swapper(tiny_dir, seed=8).swap_batch([frame], [tgt], [plm], rgb, lm)[0]
    assert not np.array_equal(other.frame, out[0].frame)


def test_identity_and_landmarks_condition_the_output(tiny_dir, face):
    rgb, lm = face
    sw = _swapper(tiny_dir, steps=2, guidance=1.0)
    base = sw.swap_batch([rgb], [lm], [lm], rgb, lm)[0].frame
    other_src = np.ascontiguousarray(rgb[:, ::-1])
    lm_flip = lm.copy()
    lm_flip[:, 0] = rgb.shape[1] - 1 - lm_flip[:, 0]
    changed_id = sw.swap_batch([rgb], [lm], [lm], other_src, lm_flip)[0].frame
    assert not np.array_equal(base, changed_id)
    moved = lm.copy()
    moved[:, 1] += 6
    changed_lm = sw.swap_batch([rgb], [moved], [lm], rgb, lm)[0].frame
    assert not np.array_equal(base, changed_lm)


def test_dpm_scheduler_runs(tiny_dir, face):
    rgb, lm = face
    out = _swapper(tiny_dir, scheduler="dpm", steps=2).swap_batch([rgb], [lm], [lm], rgb, lm)[0]
    assert np.array_equal(out.frame[out.mask == 0], rgb[out.mask == 0])


def test_missing_component_errors_clearly(tmp_path, tiny_dir):
    root = tmp_path / "models"
    shutil.copytree(tiny_dir, root)
    shutil.rmtree(root / SD15_FOLDER / "vae")
    with pytest.raises(ModelMissingError) as ei:
        _swapper(root)
    assert "missing component folder vae/" in str(ei.value) and SD15_FOLDER in str(ei.value)
    shutil.rmtree(root / CONTROLNET_FOLDER)
    shutil.copytree(tiny_dir / SD15_FOLDER / "vae", root / SD15_FOLDER / "vae")
    with pytest.raises(ModelMissingError, match=CONTROLNET_FOLDER):
        _swapper(root)
    shutil.copytree(tiny_dir / CONTROLNET_FOLDER, root / CONTROLNET_FOLDER)
    (root / IP_ADAPTER_FOLDER / IP_ADAPTER_WEIGHTS).unlink()
    with pytest.raises(ModelMissingError, match=IP_ADAPTER_WEIGHTS):
        _swapper(root)


def test_from_model_dir_resolves_and_checks_licence(tiny_dir, face):
    from recast.models.registry import REGISTRY

    # commercial models: allowed for a commercial project; checksums recorded
    sw = DiffusionHeadSwapper.from_model_dir(tiny_dir, commercial_project=True, steps=1, guidance=1.0)
    refs = sw.models
    assert [r.name for r in refs] == [SD15_FOLDER, CONTROLNET_FOLDER, IP_ADAPTER_FOLDER]
    assert all(r.sha256 and len(r.sha256) == 64 for r in refs)
    assert REGISTRY[SD15_FOLDER].commercial_use
    with pytest.raises(ModelMissingError, match="model 'sd15_inpainting': missing"):
        DiffusionHeadSwapper.from_model_dir(tiny_dir / "nowhere", commercial_project=False)


@pytest.mark.gpu
def test_cuda_bf16_matches_cpu_closely(tiny_dir, face):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    rgb, lm = face
    cpu = _swapper(tiny_dir).swap_batch([rgb], [lm], [lm], rgb, lm)[0]
    gpu = _swapper(tiny_dir, device="cuda").swap_batch([rgb], [lm], [lm], rgb, lm)[0]
    assert np.array_equal(gpu.frame[gpu.mask == 0], rgb[gpu.mask == 0])
    m = cpu.mask > 0
    err = np.abs(cpu.frame[m].astype(float) - gpu.frame[m].astype(float)).mean()
    assert err < 12.0  # bf16 vs fp32 on random tiny weights


def test_fast_decode_with_a_tiny_autoencoder(tmp_path, tiny_dir, face):
    from diffusers import AutoencoderTiny

    from recast.models.diffusion_swap import TAESD_FOLDER

    root = tmp_path / "models"
    shutil.copytree(tiny_dir, root)
    with pytest.raises(ModelMissingError, match="taesd"):
        _swapper(root, fast_decode=True)
    torch.manual_seed(0)
    AutoencoderTiny(encoder_block_out_channels=(8, 8, 8, 8), decoder_block_out_channels=(8, 8, 8, 8),
                    num_encoder_blocks=(1, 1, 1, 1), num_decoder_blocks=(1, 1, 1, 1)).save_pretrained(root / TAESD_FOLDER)
    rgb, lm = face
    out = _swapper(root, fast_decode=True, steps=1).swap_batch([rgb], [lm], [lm], rgb, lm)[0]
    assert out.mask.any() and np.array_equal(out.frame[out.mask == 0], rgb[out.mask == 0])
