"""GPU swap benchmark: the diffusion head swap against stock diffusers, and inswapper at 1080p.

    python benchmarks/gpu_swap.py --smoke            # CPU, tiny shapes, seconds: checks the script
    python benchmarks/gpu_swap.py --device cuda      # full SD1.5-inpainting shapes at 512x512
    python benchmarks/gpu_swap.py --device cuda --only unet --batches 1,8,16,32

No pretrained weights are needed: every model is built from its config with seeded random weights
(diffusers builds models from config this way), at the real SD1.5-inpainting shapes: UNet 9-ch
(320, 640, 1280, 1280), cross-attention 768; VAE (128, 256, 512, 512); ControlNet from the UNet;
CLIP ViT-L text encoder shape; CLIP ViT-H/14 image encoder shape; IP-Adapter (4 tokens). Timings
therefore equal those of the real weights; quality numbers (PSNR) only compare two computations
on the same weights. The VAE's posterior log-variance is forced low (as in the trained VAE, whose
posterior is nearly deterministic) so that stock diffusers' *sampled* masked-image latents equal
recast's *mode* latents and the two paths are comparable pixel for pixel.

Reported (JSON to stdout, and --out FILE):

- ``unet``: UNet ms per step at each batch, stock (eager, NCHW) and optimised (channels-last +
  torch.compile), FLOPs per frame-step (torch.utils.flop_counter on one eager step) and achieved
  TFLOP/s, and the fraction of ``--peak-tflops`` (default 800, bf16 dense H100 SXM class).
- ``e2e``: frames/s at ``--steps`` including VAE encode + decode, ControlNet and CFG, for stock
  ``StableDiffusionControlNetInpaintPipeline`` built from the same components, and for recast's
  path (``DiffusionHeadSwapper.generate``) with: same steps (PSNR vs stock, target >= 35 dB);
  ``--batch-big`` frames per batch (batching across chunks); AutoencoderTiny decoder; fewer
  steps with DPM-Solver++ — each with its PSNR against stock.
- ``inswapper``: frames/s of the whole inswapper backend at 1080p (alignment, ONNX run, upscale,
  colour match, multi-band paste) with a **stand-in** ONNX graph of INSwapper's input/output
  signature and roughly its compute; CPU always, CUDA when onnxruntime has the CUDA provider.

Stand-in for inswapper_128: the release graph is ~554 MB of fp32 weights (~138 M parameters),
almost all in a bottleneck of 3x3 1024-channel convolutions (12 of them hold ~113 M parameters).
The stand-in has: 7x7 stem to 64 ch at 128 px, three stride-2 3x3 convs to 1024 ch at 16 px,
six residual blocks of two 3x3 1024-ch convs modulated per channel by a projection of the 512-D
source vector, and three 2x upsampling 3x3 convs back to 3 ch at 128 px: ~126 M parameters,
~44 GMAC (~89 GFLOP) per face (the script prints its exact count). Whether the release bottleneck runs at 16 px or 32 px is not
known here; at 32 px it would be ~4x the bottleneck compute, so treat the stand-in's frames/s as
an upper bound (labelled "stand-in" in the output).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


# --- model configs ------------------------------------------------------------------------------

def configs(smoke: bool) -> dict:
    """Component configs: SD1.5-inpainting shapes, or tiny ones for --smoke."""
    if smoke:
        blocks = dict(block_out_channels=(32, 64), layers_per_block=1, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                      cross_attention_dim=32, attention_head_dim=8, norm_num_groups=8)
        return dict(
            unet=dict(sample_size=16, in_channels=9, out_channels=4, up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), **blocks),
            controlnet_extra=dict(conditioning_embedding_out_channels=(8, 8, 16, 16)),
            vae=dict(block_out_channels=(8, 16, 16, 16), layers_per_block=1, down_block_types=("DownEncoderBlock2D",) * 4,
                     up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=8, latent_channels=4, sample_size=128),
            taesd=dict(encoder_block_out_channels=(8, 8, 8, 8), decoder_block_out_channels=(8, 8, 8, 8),
                       num_encoder_blocks=(1, 1, 1, 1), num_decoder_blocks=(1, 1, 1, 1)),
            text=dict(vocab_size=64, hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=4,
                      max_position_embeddings=77, projection_dim=32),
            vision=dict(hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=4, image_size=32,
                        patch_size=8, projection_dim=24),
            image_embed_dim=24,
        )
    return dict(
        unet=dict(sample_size=64, in_channels=9, out_channels=4, block_out_channels=(320, 640, 1280, 1280), layers_per_block=2,
                  down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                  up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3, cross_attention_dim=768, attention_head_dim=8),
        controlnet_extra=dict(conditioning_embedding_out_channels=(16, 32, 96, 256)),
        vae=dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2, down_block_types=("DownEncoderBlock2D",) * 4,
                 up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=4, sample_size=512),
        taesd=dict(),  # diffusers' defaults are TAESD's architecture
        text=dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                  max_position_embeddings=77, projection_dim=768, hidden_act="quick_gelu"),
        vision=dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=16, image_size=224,
                    patch_size=14, projection_dim=1024, hidden_act="gelu"),
        image_embed_dim=1024,
    )


def _tokenizer(folder: Path):
    """A CLIP tokenizer with a character vocabulary (the real BPE vocabulary is not here; the
    prompt is encoded once per swapper, so its content does not affect timings)."""
    from transformers import CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in "abcdefghijklmnopqrstuvwxyz,.":
        vocab[ch] = len(vocab)
        vocab[ch + "</w>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77)


def build_components(cfg: dict, tmp: Path, seed: int = 0):
    import torch
    from diffusers import AutoencoderKL, AutoencoderTiny, ControlNetModel, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPVisionConfig, CLIPVisionModelWithProjection

    from recast.models.diffusion_swap import HeadSwapComponents, install_ip_adapter, make_ip_adapter_state_dict

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**cfg["unet"])
    # the ControlNet of SD1.5 takes the 4 noisy latent channels (not the inpainting UNet's 9)
    ucfg = {k: v for k, v in cfg["unet"].items() if k in ("block_out_channels", "layers_per_block", "down_block_types",
                                                          "cross_attention_dim", "attention_head_dim", "norm_num_groups")}
    controlnet = ControlNetModel(in_channels=4, **ucfg, **cfg["controlnet_extra"])
    # a real ControlNet starts from zero convs and learns them; random zero convs would leave
    # the ControlNet without effect, so give them small random weights
    with torch.no_grad():
        for name, p in controlnet.named_parameters():
            if "controlnet_down_blocks" in name or "controlnet_mid_block" in name or "conv_out" in name:
                p.normal_(0, 0.01)
    vae = AutoencoderKL(**cfg["vae"])
    with torch.no_grad():  # nearly deterministic posterior, as in the trained VAE (see docstring)
        lat = vae.config.latent_channels
        vae.quant_conv.weight[lat:] = 0
        vae.quant_conv.bias[lat:] = -30.0
    taesd = AutoencoderTiny(**cfg["taesd"])
    text = CLIPTextModel(CLIPTextConfig(**cfg["text"]))
    vision = CLIPVisionModelWithProjection(CLIPVisionConfig(**cfg["vision"]))
    install_ip_adapter(unet, make_ip_adapter_state_dict(unet, cfg["image_embed_dim"], seed=seed))
    sched = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False,
                          set_alpha_to_one=False, steps_offset=1)
    return HeadSwapComponents(unet=unet, vae=vae, controlnet=controlnet, scheduler=sched, text_encoder=text,
                              tokenizer=_tokenizer(tmp / "tokenizer"), image_encoder=vision, tiny_decoder=taesd)


# --- helpers -------------------------------------------------------------------------------------

def _sync(device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def timeit(fn, device, *, warmup: int, iters: int) -> float:
    """Median seconds of ``fn()``."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * math.log10(255.0 ** 2 / mse)


def synthetic_inputs(res: int, n: int, seed: int = 0):
    """n crops (smooth random images), block masks over the centre, face-like control drawings."""
    import torch

    from recast.models.diffusion_swap import block_mask

    rng = np.random.default_rng(seed)
    imgs, masks, ctls = [], [], []
    for i in range(n):
        low = rng.uniform(0, 255, (8, 8, 3)).astype(np.float32)
        import cv2

        img = np.clip(cv2.resize(low, (res, res), interpolation=cv2.INTER_CUBIC), 0, 255)
        imgs.append(img)
        c = res / 2 + rng.uniform(-res / 16, res / 16, 2)
        masks.append(block_mask((c[0] - res / 4, c[1] - res / 3, c[0] + res / 4, c[1] + res / 4), res, res // 16))
        ctl = np.zeros((res, res, 3), np.uint8)
        cv2.ellipse(ctl, (int(c[0]), int(c[1])), (res // 6, res // 4), 0, 0, 360, (10, 200, 10), max(1, res // 256))
        ctls.append(ctl)
    images = torch.from_numpy(np.stack(imgs) / 127.5 - 1.0).permute(0, 3, 1, 2).float()
    mask_t = torch.from_numpy(np.stack(masks).astype(np.float32) / 255.0)[:, None]
    control = torch.from_numpy(np.stack(ctls).astype(np.float32) / 255.0).permute(0, 3, 1, 2)
    return images, mask_t, control


# --- UNet per-step ---------------------------------------------------------------------------------

def bench_unet(comp, device, dtype, batches, *, compile_mode, warmup, iters, peak):
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    unet = comp.unet
    cad = unet.config.cross_attention_dim
    h = unet.config.sample_size
    emb_dim = comp.image_encoder.config.projection_dim

    def inputs(b, cl=False):
        g = torch.Generator("cpu").manual_seed(0)
        x = torch.randn(b, 9, h, h, generator=g).to(device, dtype)
        if cl:
            x = x.contiguous(memory_format=torch.channels_last)
        ehs = torch.randn(b, 77, cad, generator=g).to(device, dtype)
        ie = {"image_embeds": [torch.randn(b, 1, emb_dim, generator=g).to(device, dtype)]}
        return x, ehs, ie

    with torch.inference_mode():
        x, ehs, ie = inputs(1)
        with FlopCounterMode(display=False) as fc:
            unet(x, 500, ehs, added_cond_kwargs=ie)
        flops = fc.get_total_flops()
    out = {"flops_per_frame_step": flops, "gflop_per_frame_step": flops / 1e9, "batches": {}}
    stock = {}
    with torch.inference_mode():
        for b in batches:
            x, ehs, ie = inputs(b)
            stock[b] = timeit(lambda: unet(x, 500, ehs, added_cond_kwargs=ie), device, warmup=warmup, iters=iters)
    unet.to(memory_format=torch.channels_last)
    fast = torch.compile(unet, mode=compile_mode) if compile_mode else unet
    with torch.inference_mode():
        for b in batches:
            x, ehs, ie = inputs(b, cl=True)
            t = timeit(lambda: fast(x, 500, ehs, added_cond_kwargs=ie), device, warmup=warmup + (2 if compile_mode else 0), iters=iters)
            row = {"stock_ms": stock[b] * 1e3, "ours_ms": t * 1e3, "speedup": stock[b] / t,
                   "stock_tflops": flops * b / stock[b] / 1e12, "ours_tflops": flops * b / t / 1e12}
            row["ours_fraction_of_peak"] = row["ours_tflops"] / peak
            row["stock_fraction_of_peak"] = row["stock_tflops"] / peak
            out["batches"][str(b)] = row
    unet.to(memory_format=torch.contiguous_format)
    return out


# --- end to end ------------------------------------------------------------------------------------

def stock_pipeline(comp, device, dtype):
    from diffusers import StableDiffusionControlNetInpaintPipeline

    pipe = StableDiffusionControlNetInpaintPipeline(
        vae=comp.vae, text_encoder=comp.text_encoder, tokenizer=comp.tokenizer, unet=comp.unet, controlnet=comp.controlnet,
        scheduler=comp.scheduler, safety_checker=None, feature_extractor=None, image_encoder=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run_stock(pipe, swapper, images, masks, control, id_emb, steps):
    """Stock diffusers on the same crops, masks, control images, prompt embeddings, identity
    embedding, scheduler and initial noise as recast's path."""
    import torch

    b = images.shape[0]
    emb = swapper._embeds
    noise = swapper._noise.expand(b, -1, -1, -1).to(swapper.device, swapper.dtype)
    pos = id_emb.expand(b, -1, -1)
    out = pipe(prompt_embeds=emb[1:].repeat(b, 1, 1), negative_prompt_embeds=emb[:1].repeat(b, 1, 1),
               image=(images + 1) / 2, mask_image=masks, control_image=control, num_inference_steps=steps,
               guidance_scale=swapper.guidance, controlnet_conditioning_scale=swapper.controlnet_scale,
               latents=noise, ip_adapter_image_embeds=[torch.cat([torch.zeros_like(pos), pos])],
               height=images.shape[2], width=images.shape[3], output_type="np", strength=1.0)
    return (out.images * 255).round().clip(0, 255).astype(np.uint8)


def to_u8(t):
    return ((t.permute(0, 2, 3, 1).cpu().numpy() + 1.0) * 127.5).round().clip(0, 255).astype(np.uint8)


def bench_e2e(comp, device, dtype, args):
    import torch

    from recast.models.diffusion_swap import DiffusionHeadSwapper

    res = comp.unet.config.sample_size * 2 ** (len(comp.vae.config.block_out_channels) - 1)
    n = args.frames
    images, masks, control = synthetic_inputs(res, n)
    base = dict(components=comp, device=str(device), dtype=dtype, steps=args.steps, guidance=5.0, seed=0, batch_size=args.batch)
    sw = DiffusionHeadSwapper(**base)
    src = (np.random.default_rng(1).uniform(0, 255, (256, 256, 3))).astype(np.uint8)
    with torch.inference_mode():
        size = int(comp.image_encoder.config.image_size)
        x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(3)).to(device, dtype)
        id_emb = comp.image_encoder(pixel_values=x).image_embeds[:, None]
    del src
    results = {"resolution": res, "frames": n, "steps": args.steps}

    def run_ours(swapper, bs):
        outs = []
        for s in range(0, n, bs):
            outs.append(to_u8(swapper.generate(images[s:s + bs], masks[s:s + bs], control[s:s + bs], id_emb)))
        return np.concatenate(outs)

    # stock diffusers, eager, same batch
    pipe = stock_pipeline(comp, device, dtype)

    def stock_all():
        return np.concatenate([run_stock(pipe, sw, images[s:s + args.batch], masks[s:s + args.batch], control[s:s + args.batch], id_emb, args.steps)
                               for s in range(0, n, args.batch)])

    ref = stock_all()
    t_stock = timeit(stock_all, device, warmup=0, iters=args.iters)
    results["stock"] = {"fps": n / t_stock, "batch": args.batch}
    # ours, eager, same batch and steps: must match stock
    ours = run_ours(sw, args.batch)
    t = timeit(lambda: run_ours(sw, args.batch), device, warmup=0, iters=args.iters)
    results["ours_eager"] = {"fps": n / t, "speedup": t_stock / t, "psnr_vs_stock": psnr(ours, ref)}
    variants = [
        ("ours_optimised", dict(compile=args.compile or False), args.batch_big, args.steps),
        ("ours_tiny_vae", dict(compile=args.compile or False, fast_decode=True), args.batch_big, args.steps),
        ("ours_dpm_fewer_steps", dict(compile=args.compile or False, scheduler_kind="dpm"), args.batch_big, args.fewer_steps),
        ("ours_dpm_fewer_steps_tiny_vae", dict(compile=args.compile or False, scheduler_kind="dpm", fast_decode=True), args.batch_big, args.fewer_steps),
    ]
    if device.type == "cuda":
        comp.unet.to(memory_format=torch.channels_last)
        comp.controlnet.to(memory_format=torch.channels_last)
    for name, extra, bs, steps in variants:
        kind = extra.pop("scheduler_kind", "ddim")
        c2 = comp
        if kind == "dpm":
            from diffusers import DPMSolverMultistepScheduler

            c2 = type(comp)(**{**comp.__dict__, "scheduler": DPMSolverMultistepScheduler.from_config(comp.scheduler.config, algorithm_type="dpmsolver++")})
        s2 = DiffusionHeadSwapper(**{**base, "components": c2, "batch_size": bs, "steps": steps, **extra})
        out = run_ours(s2, bs)  # also warms up / compiles
        t = timeit(lambda: run_ours(s2, bs), device, warmup=0, iters=args.iters)
        results[name] = {"fps": n / t, "speedup": t_stock / t, "psnr_vs_stock": psnr(out, ref), "batch": bs, "steps": steps,
                         "compile": extra.get("compile", False), "fast_decode": extra.get("fast_decode", False)}
    results["note"] = ("random weights: PSNR of 'ours_eager'/'ours_optimised' vs stock checks that the computation is the same; "
                       "the tiny-VAE and fewer-step PSNRs on random weights only bound the change, measure them on real weights")
    return results


# --- inswapper stand-in --------------------------------------------------------------------------

def build_inswapper_standin(path: Path, *, width: int = 1024, blocks: int = 6, seed: int = 0) -> dict:
    """An ONNX graph with INSwapper's signature and roughly its compute (see the docstring)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    macs = 0
    params = 0

    def w(name, shape, scale=None):
        nonlocal params
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else shape[0]
        arr = (rng.standard_normal(shape) * (scale or 1.0 / math.sqrt(fan_in))).astype(np.float32)
        params += arr.size
        inits.append(numpy_helper.from_array(arr, name))
        return name

    def conv(x, cin, cout, k, stride, res_out, name, act=True):
        nonlocal macs
        y = f"{name}_y"
        nodes.append(helper.make_node("Conv", [x, w(f"{name}_w", (cout, cin, k, k)), w(f"{name}_b", (cout,), 0.01)], [y],
                                      pads=[k // 2] * 4, strides=[stride, stride]))
        macs += cout * cin * k * k * res_out * res_out
        if act:
            nodes.append(helper.make_node("Relu", [y], [f"{name}_r"]))
            return f"{name}_r"
        return y

    x = conv("target", 3, 64, 7, 1, 128, "stem")
    chans = [64, 256, 512, width]
    res = 128
    for i in range(3):
        res //= 2
        x = conv(x, chans[i], chans[i + 1], 3, 2, res, f"down{i}")
    # source modulation: a per-channel scale from the 512-D source vector
    nodes.append(helper.make_node("MatMul", ["source", w("mod_w", (512, width))], ["mod"]))
    nodes.append(helper.make_node("Reshape", ["mod", "mod_shape"], ["mod4"]))
    inits.append(numpy_helper.from_array(np.array([1, width, 1, 1], np.int64), "mod_shape"))
    for i in range(blocks):
        h1 = conv(x, width, width, 3, 1, res, f"res{i}a")
        nodes.append(helper.make_node("Mul", [h1, "mod4"], [f"res{i}m"]))
        h2 = conv(f"res{i}m", width, width, 3, 1, res, f"res{i}b", act=False)
        nodes.append(helper.make_node("Add", [x, h2], [f"res{i}o"]))
        x = f"res{i}o"
    ups = [width, 512, 256, 64]
    for i in range(3):
        res *= 2
        nodes.append(helper.make_node("Resize", [x, "", "up_scales"], [f"up{i}_x"], mode="nearest"))
        x = conv(f"up{i}_x", ups[i], ups[i + 1], 3, 1, res, f"up{i}")
    inits.append(numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "up_scales"))
    y = conv(x, 64, 3, 3, 1, 128, "head", act=False)
    nodes.append(helper.make_node("Sigmoid", [y], ["output"]))
    inits.append(numpy_helper.from_array(rng.standard_normal((512, 512)).astype(np.float32), "emap"))  # last initializer
    g = helper.make_graph(nodes, "inswapper_standin",
                          [helper.make_tensor_value_info("target", TensorProto.FLOAT, [1, 3, 128, 128]),
                           helper.make_tensor_value_info("source", TensorProto.FLOAT, [1, 512])],
                          [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3, 128, 128])], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return {"gmac": macs / 1e9, "gflop": 2 * macs / 1e9, "mparams": params / 1e6}


def build_arcface_standin(path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    lin = np.random.default_rng(1).standard_normal((48, 512)).astype(np.float32)
    g = helper.make_graph(
        [helper.make_node("AveragePool", ["input.1"], ["p"], kernel_shape=[28, 28], strides=[28, 28]),
         helper.make_node("Flatten", ["p"], ["f"]), helper.make_node("MatMul", ["f", "L"], ["683"])],
        "arcface_standin", [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, 112, 112])],
        [helper.make_tensor_value_info("683", TensorProto.FLOAT, [1, 512])], [numpy_helper.from_array(lin, "L")])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def bench_inswapper(tmp: Path, args) -> dict:
    import cv2

    from recast.models.face import analyze_source_photo
    from recast.models.inswapper import InswapperBackend, onnx_providers

    width = 256 if args.smoke else 1024
    info = build_inswapper_standin(tmp / "inswapper_standin.onnx", width=width)
    build_arcface_standin(tmp / "arcface_standin.onnx")
    photo = cv2.cvtColor(cv2.imread(str(REPO.parent / "shared" / "media" / "images" / "skimage_astronaut.png")), cv2.COLOR_BGR2RGB)
    lm = analyze_source_photo(photo, role_name="astronaut").landmarks.astype(np.float64)
    # a 1080p plate with the portrait scaled to the frame height (a ~300 px face: the upscale path)
    frame = np.zeros((1080, 1920, 3), np.uint8)
    big = cv2.resize(photo, (1080, 1080), interpolation=cv2.INTER_CUBIC)
    frame[:, 420:1500] = big
    plm = lm * (1080 / photo.shape[0])
    plm[:, 0] += 420
    out = {"stand_in": {"label": "stand-in graph with INSwapper's I/O signature, not the real weights", "bottleneck_channels": width, **info}}
    kinds = [("cpu", ["CPUExecutionProvider"])]
    if "CUDAExecutionProvider" in onnx_providers():
        kinds.append(("cuda", ["CUDAExecutionProvider", "CPUExecutionProvider"]))
    for kind, providers in kinds:
        be = InswapperBackend(tmp / "inswapper_standin.onnx", tmp / "arcface_standin.onnx", providers=providers)
        be.set_source((photo, lm))
        n = 2 if args.smoke else 10
        be.swap(frame, plm, plm)  # warm-up (session allocation, CUDA kernels)
        t0 = time.perf_counter()
        for _ in range(n):
            be.swap(frame, plm, plm)
        t = (time.perf_counter() - t0) / n
        from recast.models.inswapper import align_face

        crop, _ = align_face(frame, plm, 128)
        t_model = timeit(lambda: be.infer_aligned(crop), type("D", (), {"type": "cpu"})(), warmup=1, iters=n)
        out[kind] = {"fps_1080p": 1.0 / t, "ms_per_frame": t * 1e3, "ms_model": t_model * 1e3, "ms_paste_etc": (t - t_model) * 1e3}
    return out


# --- main ------------------------------------------------------------------------------------------

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--smoke", action="store_true", help="tiny shapes on CPU, a few seconds: checks that the script runs")
    ap.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    ap.add_argument("--dtype", default=None, choices=["bf16", "fp16", "fp32"])
    ap.add_argument("--batches", default="1,8,16", help="UNet batch sizes to time")
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--fewer-steps", type=int, default=12, help="steps of the DPM-Solver++ variant")
    ap.add_argument("--frames", type=int, default=32, help="frames for the end-to-end runs")
    ap.add_argument("--batch", type=int, default=8, help="stock and eager batch")
    ap.add_argument("--batch-big", type=int, default=16, help="recast's batch (frames of several chunks)")
    ap.add_argument("--compile", default="max-autotune-no-cudagraphs",
                    help="torch.compile mode for the optimised path ('' for none; 'reduce-overhead' adds CUDA graphs)")
    ap.add_argument("--peak-tflops", type=float, default=800.0)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--only", choices=["unet", "e2e", "inswapper"], action="append")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)

    import torch

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.smoke:
        args.steps, args.fewer_steps, args.frames, args.batch, args.batch_big, args.iters = 2, 1, 2, 1, 2, 1
        args.batches = "1,2"
        args.compile = ""  # compiling costs minutes on CPU
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}.get(
        args.dtype or ("bf16" if device.type == "cuda" else "fp32"))
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    report = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu", "dtype": str(dtype),
              "torch": torch.__version__, "smoke": args.smoke}
    only = set(args.only or ["unet", "e2e", "inswapper"])
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        if only & {"unet", "e2e"}:
            comp = build_components(configs(args.smoke), tmp)
            for m in (comp.unet, comp.vae, comp.controlnet, comp.text_encoder, comp.image_encoder, comp.tiny_decoder):
                m.to(device, dtype).eval().requires_grad_(False)
            if "unet" in only:
                report["unet"] = bench_unet(comp, device, dtype, [int(b) for b in args.batches.split(",")],
                                            compile_mode=args.compile or None, warmup=1 if args.smoke else 3,
                                            iters=args.iters if args.smoke else 10, peak=args.peak_tflops)
            if "e2e" in only:
                report["e2e"] = bench_e2e(comp, device, dtype, args)
                fpf = report.get("unet", {}).get("flops_per_frame_step")
                if fpf:
                    # UNet FLOPs only (ControlNet adds ~40%, VAE ~1.2 TFLOP per frame): the limit the brief quotes
                    limit = args.peak_tflops * 1e12 / (fpf * 2 * args.steps)  # x2: classifier-free guidance
                    report["e2e"]["unet_flop_limit_fps"] = limit
                    for k, v in report["e2e"].items():
                        if isinstance(v, dict) and "fps" in v and v.get("steps", args.steps) == args.steps:
                            v["fraction_of_unet_flop_limit"] = v["fps"] / limit
            del comp
        if "inswapper" in only:
            report["inswapper"] = bench_inswapper(tmp, args)
    text = json.dumps(report, indent=2, default=float)
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
