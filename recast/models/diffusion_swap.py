"""The ``diffusion`` head swap: conditional inpainting of the head region, SwapAnyHead /
HS-Diffusion style, from components a studio can obtain and load with diffusers.

Components (diffusers format, loaded with ``from_pretrained`` from the model directory; the
folder names are the registry's, see :mod:`recast.models.registry`):

- ``sd15_inpainting/``: SD1.5-inpainting ``unet/`` (9 input channels: 4 noisy latents, 1 mask,
  4 latents of the masked image), ``vae/``, ``text_encoder/`` + ``tokenizer/`` (CLIP; used once
  per swapper for the fixed prompt and negative prompt), ``scheduler/``.
- ``controlnet_mediapipe_face/``: the public MediaPipe-face ControlNet (SD1.5, diffusers
  format), fed with recast's *retargeted* landmarks drawn as its annotator draws MediaPipe
  faces (see :func:`draw_mediapipe_face`).
- ``ip_adapter/``: IP-Adapter for SD1.5 (``ip-adapter_sd15.safetensors``: ``image_proj.*`` and
  ``ip_adapter.<n>.to_{k,v}_ip.weight`` keys) and its CLIP vision encoder ``image_encoder/``.
  The encoder's ``image_embeds`` of the source head crop are projected to 4 extra
  cross-attention tokens; diffusers' own ``UNet2DConditionModel._load_ip_adapter_weights`` (the
  routine behind ``pipeline.load_ip_adapter``) installs the projection and the IP attention
  processors, so the real weights load exactly as in a diffusers pipeline.

recast's own parts:

- **Block mask** (SwapAnyHead): the union of the plate's and the target's head boxes (face oval
  grown up for hair and sideways for ears) quantised to a coarse grid of blocks (default 16 x 16
  per crop, i.e. 32 px at 512): a blocky mask says nothing about the old head's outline, so the
  model cannot copy it, and a different head shape fits inside. Block edges fall on the latent
  grid (multiples of 8 px), so the latent mask is exact.
- **Landmark map**: the target landmarks (source geometry, plate pose and expression) in the
  crop, drawn in the MediaPipe-face ControlNet style.
- **Paste-back**: the generated crop is mapped back to the frame and composited with a feather
  that lies *inside* the block mask: every pixel outside the mask is the plate's, exactly.
- **Temporal consistency**: one initial noise tensor per swapper (per shot), the same for every
  frame, in *crop* coordinates. The crop follows the head, so the noise moves with the head:
  a cheap form of motion-compensated noise that removes most frame-to-frame flicker of
  independent sampling; with a deterministic scheduler (DDIM, eta 0, or DPM-Solver++) equal
  inputs give equal outputs.

Speed on a GPU: bf16 weights, PyTorch SDPA attention (diffusers' ``AttnProcessor2_0`` and
``IPAdapterAttnProcessor2_0``), channels-last UNet/ControlNet, frames batched (``batch_size``;
batch across chunks by passing more frames), optional ``torch.compile``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from recast.contracts import ModelRef
from recast.errors import InputError, ModelMissingError, UsageError
from recast.models.engines import EngineOptions, PlateFrames, SwapResult, SwapSource, require_model_dir, swappable
from recast.models.masks import feather_mask
from recast.models.mesh_topology import FACE_OVAL, NUM_LANDMARKS
from recast.models.swap_classic import SwapFrame

__all__ = [
    "DiffusionEngine", "DiffusionHeadSwapper", "HeadSwapComponents", "resolve_models", "HeadCrop", "draw_mediapipe_face", "head_crop",
    "block_mask", "make_ip_adapter_state_dict", "install_ip_adapter", "SD15_FOLDER", "CONTROLNET_FOLDER",
    "IP_ADAPTER_FOLDER", "TAESD_FOLDER",
]

SD15_FOLDER = "sd15_inpainting"
CONTROLNET_FOLDER = "controlnet_mediapipe_face"
IP_ADAPTER_FOLDER = "ip_adapter"
IP_ADAPTER_WEIGHTS = "ip-adapter_sd15.safetensors"
TAESD_FOLDER = "taesd"

_OVAL = np.asarray(FACE_OVAL, np.int32)
_CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], np.float32)
_CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711], np.float32)


# --- the landmark map ------------------------------------------------------------------------

def _annotator_spec() -> tuple[dict[tuple[int, int], tuple[int, int, int]], dict[int, tuple[int, int, int]]]:
    """Edge -> colour and pupil -> colour, as the MediaPipe-face ControlNet's annotator
    (``laion_face_common.py``) specifies them: colours in the BGR order MediaPipe's drawing
    utilities use; the annotator reverses the channels of the finished drawing."""
    from mediapipe.python.solutions import face_mesh_connections as c

    head, mouth = (10, 200, 10), (10, 180, 10)
    left_eye, left_brow, left_iris = (180, 200, 10), (180, 220, 10), (250, 200, 10)
    right_eye, right_brow, right_iris = (10, 200, 180), (10, 220, 180), (10, 200, 250)
    spec: dict[tuple[int, int], tuple[int, int, int]] = {}
    for edges, col in ((c.FACEMESH_FACE_OVAL, head), (c.FACEMESH_LEFT_EYE, left_eye), (c.FACEMESH_LEFT_EYEBROW, left_brow),
                       (c.FACEMESH_RIGHT_EYE, right_eye), (c.FACEMESH_RIGHT_EYEBROW, right_brow), (c.FACEMESH_LIPS, mouth)):
        for e in edges:
            spec[e] = col
    return spec, {468: right_iris, 473: left_iris}


_EDGE_SPEC, _PUPIL_SPEC = _annotator_spec()


def draw_mediapipe_face(landmarks: np.ndarray, size: int | tuple[int, int], *, thickness: int | None = None) -> np.ndarray:
    """RGB uint8 control image of a face, drawn like the MediaPipe-face ControlNet annotator.

    What is drawn (as in that model card's annotator): the face oval, eyes, eyebrows and lips
    as connected polylines (``FACEMESH_*`` contour sets, no tessellation), thickness 2 at
    512 px, in the annotator's colours, and the two pupils (468, 473) as filled squares of half
    width 2, on black. ``landmarks`` (478, 3) are in pixels of the control image; points
    outside the image are skipped as MediaPipe's drawing utilities skip them. Thickness scales
    with the image size (the ControlNet was trained at 512 px).
    """
    h, w = (size, size) if isinstance(size, int) else size
    lm = np.asarray(landmarks, np.float64)
    if lm.shape[0] < 478 or not np.isfinite(lm[:, :2]).all():
        raise UsageError(f"expected finite landmarks (478, 3), got {lm.shape}")
    th = thickness or max(1, round(2 * max(h, w) / 512))
    half = max(1, round(2 * max(h, w) / 512))
    canvas = np.zeros((h, w, 3), np.uint8)
    px = np.floor(lm[:, :2]).astype(np.int64)
    inside = (lm[:, 0] >= 0) & (lm[:, 0] < w) & (lm[:, 1] >= 0) & (lm[:, 1] < h)
    for (a, b), col in _EDGE_SPEC.items():
        if inside[a] and inside[b]:
            cv2.line(canvas, (int(px[a, 0]), int(px[a, 1])), (int(px[b, 0]), int(px[b, 1])), col, th)
    for i, col in _PUPIL_SPEC.items():
        if inside[i]:
            x, y = int(px[i, 0]), int(px[i, 1])
            canvas[max(0, y - half):y + half, max(0, x - half):x + half] = col
    return np.ascontiguousarray(canvas[..., ::-1])  # BGR-ordered colours -> RGB, as the annotator does


# --- crop and block mask ----------------------------------------------------------------------

@dataclass(frozen=True)
class HeadCrop:
    """A square crop of a frame around the head: ``matrix`` (2, 3) maps frame pixels to crop
    pixels (scale and shift only), ``box`` is the head box in the crop (x0, y0, x1, y1)."""

    matrix: np.ndarray
    size: int
    box: tuple[float, float, float, float]


def _head_box(lm: np.ndarray) -> np.ndarray:
    oval = lm[_OVAL, :2]
    x0, y0 = oval.min(0)
    x1, y1 = oval.max(0)
    fw, fh = x1 - x0, y1 - y0
    # hair above the oval's top, ears and hair at the sides, a little below the chin
    return np.array([x0 - 0.18 * fw, y0 - 0.45 * fh, x1 + 0.18 * fw, y1 + 0.06 * fh])


def head_crop(target_landmarks: np.ndarray, plate_landmarks: np.ndarray, size: int, *, context: float = 1.6) -> HeadCrop:
    """The crop of a frame that the diffusion model sees: a square ``context`` times the larger
    side of the union of the target's and the plate's head boxes, centred on it."""
    bt, bp = _head_box(np.asarray(target_landmarks, np.float64)), _head_box(np.asarray(plate_landmarks, np.float64))
    box = np.array([min(bt[0], bp[0]), min(bt[1], bp[1]), max(bt[2], bp[2]), max(bt[3], bp[3])])
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    side = max(box[2] - box[0], box[3] - box[1]) * context
    s = size / side
    m = np.array([[s, 0.0, size / 2 - s * cx], [0.0, s, size / 2 - s * cy]])
    cbox = (box[0] * s + m[0, 2], box[1] * s + m[1, 2], box[2] * s + m[0, 2], box[3] * s + m[1, 2])
    return HeadCrop(matrix=m, size=size, box=tuple(float(v) for v in cbox))


def block_mask(box: tuple[float, float, float, float], size: int, block: int) -> np.ndarray:
    """uint8 {0, 255} (size, size) mask of every ``block`` x ``block`` cell that the head box
    touches: SwapAnyHead's shape-agnostic block-wise mask."""
    if size % block:
        raise UsageError(f"block size {block} must divide the crop size {size}")
    n = size // block
    x0, y0, x1, y1 = box
    bx0 = int(np.clip(np.floor(x0 / block), 0, n))
    by0 = int(np.clip(np.floor(y0 / block), 0, n))
    bx1 = int(np.clip(np.ceil(x1 / block), 0, n))
    by1 = int(np.clip(np.ceil(y1 / block), 0, n))
    m = np.zeros((size, size), np.uint8)
    m[by0 * block:by1 * block, bx0 * block:bx1 * block] = 255
    return m


def _source_head(rgb: np.ndarray, lm: np.ndarray, size: int) -> np.ndarray:
    """Square crop of the source head (its head box, a little context), ``size`` px."""
    box = _head_box(np.asarray(lm, np.float64))
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    side = max(box[2] - box[0], box[3] - box[1]) * 1.1
    s = size / side
    m = np.array([[s, 0.0, size / 2 - s * cx], [0.0, s, size / 2 - s * cy]])
    return cv2.warpAffine(rgb, m, (size, size), flags=cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT101)


def resolve_models(model_dir: Path, *, commercial_project: bool, project: str | None = None, verify: bool = True,
                   fetch: Callable[[str], Path] | None = None) -> tuple[Path, tuple[ModelRef, ...]]:
    """The three models of the head swap resolved through the registry (files present,
    checksums, licence allowing the project's use): the folder they hang from and their refs.
    Loads nothing."""
    from recast.models import registry

    refs, root = [], Path(model_dir)
    for name in (SD15_FOLDER, CONTROLNET_FOLDER, IP_ADAPTER_FOLDER):
        r = registry.resolve(name, model_dir, verify=verify, fetch=fetch)
        registry.check_licence(r.spec, commercial_project=commercial_project, project=project)
        refs.append(r.model_ref)
        root = r.root
    return root, tuple(refs)


# --- components -------------------------------------------------------------------------------

def make_ip_adapter_state_dict(unet: Any, image_embed_dim: int, *, num_tokens: int = 4, seed: int = 0, std: float = 0.02) -> dict[str, Any]:
    """A random IP-Adapter (plain, 4 tokens) state dict in the published file's layout
    (``image_proj.proj.*``, ``image_proj.norm.*``, ``ip_adapter.<n>.to_{k,v}_ip.weight`` with
    ``n`` = 1, 3, 5 ... over the UNet's cross-attention processors), for tests and benchmarks."""
    import torch

    g = torch.Generator().manual_seed(seed)
    cad = unet.config.cross_attention_dim
    sd: dict[str, Any] = {
        "image_proj.proj.weight": torch.randn(cad * num_tokens, image_embed_dim, generator=g) * std,
        "image_proj.proj.bias": torch.zeros(cad * num_tokens),
        "image_proj.norm.weight": torch.ones(cad),
        "image_proj.norm.bias": torch.zeros(cad),
    }
    key_id = 1
    for name in unet.attn_processors.keys():
        if name.endswith("attn1.processor"):
            continue
        if name.startswith("mid_block"):
            hidden = unet.config.block_out_channels[-1]
        elif name.startswith("up_blocks"):
            hidden = list(reversed(unet.config.block_out_channels))[int(name[len("up_blocks.")])]
        else:
            hidden = unet.config.block_out_channels[int(name[len("down_blocks.")])]
        sd[f"ip_adapter.{key_id}.to_k_ip.weight"] = torch.randn(hidden, cad, generator=g) * std
        sd[f"ip_adapter.{key_id}.to_v_ip.weight"] = torch.randn(hidden, cad, generator=g) * std
        key_id += 2
    return sd


def _require(folder: Path, model: str, what: str) -> Path:
    if not folder.is_dir() or not any(folder.iterdir()):
        raise ModelMissingError(f"model {model!r}: missing component folder {what} in {folder.parent} "
                                "(place the diffusers-format folder there; see `recast models list`)")
    return folder


@dataclass
class HeadSwapComponents:
    """The loaded torch modules of the diffusion head swap."""

    unet: Any
    vae: Any
    controlnet: Any
    scheduler: Any
    text_encoder: Any
    tokenizer: Any
    image_encoder: Any | None = None
    tiny_decoder: Any | None = None

    @classmethod
    def load(cls, model_root: Path, *, scheduler: str = "ddim", ip_adapter: bool = True, dtype: Any = None) -> "HeadSwapComponents":
        """Load every component with ``from_pretrained`` from ``model_root`` (on CPU, in
        ``dtype``; :class:`DiffusionHeadSwapper` moves them to the device). A missing folder
        raises :class:`~recast.errors.ModelMissingError` naming it. An optional ``taesd/``
        folder (AutoencoderTiny) is loaded as the fast decoder."""
        import importlib.util

        import torch
        from diffusers import AutoencoderKL, AutoencoderTiny, ControlNetModel, UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTokenizer

        # without accelerate, diffusers initialises random weights first and then overwrites
        # them (slow for GB models, harmless); with it, it loads straight into empty modules
        kw = {"torch_dtype": dtype or torch.float32, "low_cpu_mem_usage": importlib.util.find_spec("accelerate") is not None}
        root = Path(model_root)
        sd = root / SD15_FOLDER
        for sub in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
            _require(sd / sub, SD15_FOLDER, f"{sub}/")
        _require(root / CONTROLNET_FOLDER, CONTROLNET_FOLDER, f"{CONTROLNET_FOLDER}/")
        try:
            unet = UNet2DConditionModel.from_pretrained(sd / "unet", **kw)
            vae = AutoencoderKL.from_pretrained(sd / "vae", **kw)
            controlnet = ControlNetModel.from_pretrained(root / CONTROLNET_FOLDER, **kw)
            text_encoder = CLIPTextModel.from_pretrained(sd / "text_encoder", torch_dtype=kw["torch_dtype"])
            tiny = AutoencoderTiny.from_pretrained(root / TAESD_FOLDER, **kw) if (root / TAESD_FOLDER / "config.json").is_file() else None
            tokenizer = CLIPTokenizer.from_pretrained(sd / "tokenizer")
            sched = _scheduler(sd / "scheduler", scheduler)
        except (OSError, ValueError) as e:
            raise InputError(f"{root}: cannot load the diffusion components ({str(e).splitlines()[0]})") from None
        if unet.config.in_channels != 9:
            raise InputError(f"{sd / 'unet'}: expected an inpainting UNet with 9 input channels, got {unet.config.in_channels}")
        image_encoder = None
        if ip_adapter:
            ipa = root / IP_ADAPTER_FOLDER
            _require(ipa / "image_encoder", IP_ADAPTER_FOLDER, "image_encoder/")
            weights = ipa / IP_ADAPTER_WEIGHTS
            if not weights.is_file():
                raise ModelMissingError(f"model {IP_ADAPTER_FOLDER!r}: missing {IP_ADAPTER_WEIGHTS} in {ipa} "
                                        "(place the file there; see `recast models list`)")
            from safetensors.torch import load_file
            from transformers import CLIPVisionModelWithProjection

            image_encoder = CLIPVisionModelWithProjection.from_pretrained(ipa / "image_encoder", torch_dtype=kw["torch_dtype"])
            install_ip_adapter(unet, load_file(str(weights)))
        return cls(unet=unet, vae=vae, controlnet=controlnet, scheduler=sched, text_encoder=text_encoder,
                   tokenizer=tokenizer, image_encoder=image_encoder, tiny_decoder=tiny)


def install_ip_adapter(unet: Any, flat_state_dict: dict[str, Any]) -> None:
    """Install IP-Adapter weights (the published flat key layout) into ``unet`` with diffusers'
    own conversion, as ``pipeline.load_ip_adapter`` does."""
    state = {"image_proj": {}, "ip_adapter": {}}
    for k, v in flat_state_dict.items():
        head, _, rest = k.partition(".")
        if head not in state:
            raise InputError(f"IP-Adapter weights: unexpected key {k!r} (expected image_proj.* and ip_adapter.*)")
        state[head][rest] = v
    unet._load_ip_adapter_weights([state], low_cpu_mem_usage=False)


def _scheduler(folder: Path, kind: str):
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

    if kind == "ddim":
        return DDIMScheduler.from_pretrained(folder)
    if kind == "dpm":
        return DPMSolverMultistepScheduler.from_pretrained(folder, algorithm_type="dpmsolver++")
    raise UsageError(f"scheduler must be 'ddim' or 'dpm', got {kind!r}")


# --- the swapper ------------------------------------------------------------------------------

class DiffusionHeadSwapper:
    """Head swap by conditional inpainting (see the module docstring).

    ``DiffusionHeadSwapper(model_dir, device="cuda")`` loads the components from the model
    directory; :meth:`swap_batch` swaps a list of frames and returns one
    :class:`~recast.models.swap_classic.SwapFrame` per frame. Frames without valid landmarks
    pass through unchanged with an empty mask.
    """

    PROMPT = "a photo of a person, natural skin, detailed hair, film still"
    NEGATIVE = "blurry, deformed, cartoon, painting, watermark"

    def __init__(
        self,
        model_root: Path | None = None,
        *,
        device: str = "cpu",
        dtype: Any = None,
        steps: int = 25,
        guidance: float = 5.0,
        seed: int = 0,
        compile: bool | str = False,
        fast_decode: bool = False,
        scheduler: str = "ddim",
        batch_size: int = 8,
        controlnet_scale: float = 1.0,
        ip_adapter_scale: float = 0.8,
        blocks: int = 16,
        context: float = 1.6,
        prompt: str | None = None,
        negative_prompt: str | None = None,
        components: HeadSwapComponents | None = None,
        model_refs: tuple[ModelRef, ...] | None = None,
    ) -> None:
        import torch

        if (model_root is None) == (components is None):
            raise UsageError("give either model_root or components")
        if steps < 1 or batch_size < 1:
            raise UsageError("steps and batch_size must be at least 1")
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise UsageError("device 'cuda' requested but torch sees no CUDA GPU")
        self.dtype = dtype or (torch.bfloat16 if self.device.type == "cuda" else torch.float32)
        c = components or HeadSwapComponents.load(Path(model_root), scheduler=scheduler, dtype=self.dtype)
        self.c = c
        if fast_decode and c.tiny_decoder is None:
            raise ModelMissingError(f"model 'taesd': fast_decode needs an AutoencoderTiny in {TAESD_FOLDER}/ of the model directory")
        self.fast_decode = bool(fast_decode)
        self.steps, self.guidance, self.seed = int(steps), float(guidance), int(seed)
        self.batch_size, self.controlnet_scale, self.context = int(batch_size), float(controlnet_scale), float(context)
        self.vae_scale = 2 ** (len(c.vae.config.block_out_channels) - 1)
        self.resolution = int(c.unet.config.sample_size) * self.vae_scale
        if self.resolution % blocks or (self.resolution // blocks) % self.vae_scale:
            raise UsageError(f"blocks={blocks} must split the {self.resolution} px crop into cells that are multiples of {self.vae_scale} px")
        self.block = self.resolution // blocks
        self._model_refs = model_refs or (ModelRef(name=SD15_FOLDER, version="diffusers"), ModelRef(name=CONTROLNET_FOLDER, version="diffusers"),
                                          ModelRef(name=IP_ADAPTER_FOLDER, version="diffusers"))

        for m in (c.unet, c.vae, c.controlnet, c.text_encoder, c.image_encoder, c.tiny_decoder):
            if m is not None:
                m.eval().requires_grad_(False)
                m.to(self.device)
                if next(m.parameters()).dtype != self.dtype:
                    m.to(dtype=self.dtype)
        if self.device.type == "cuda":
            # convolutions run in NHWC on tensor cores without layout transposes
            c.unet.to(memory_format=torch.channels_last)
            c.controlnet.to(memory_format=torch.channels_last)
        if c.image_encoder is not None:
            self.set_ip_adapter_scale(ip_adapter_scale)
        self._embeds = self._encode_prompts(prompt or self.PROMPT, negative_prompt if negative_prompt is not None else self.NEGATIVE)
        # one noise tensor for the whole shot (see the module docstring); drawn on the CPU so
        # that the same seed gives the same noise on any device
        g = torch.Generator("cpu").manual_seed(self.seed)
        h = self.resolution // self.vae_scale
        self._noise = torch.randn((1, c.unet.config.out_channels, h, h), generator=g, dtype=torch.float32)
        self._unet, self._controlnet = c.unet, c.controlnet
        if compile:
            # "max-autotune-no-cudagraphs" by default; "reduce-overhead" adds CUDA graphs (fixed
            # batch shapes: keep batch_size constant and pad the last batch)
            mode = compile if isinstance(compile, str) else "max-autotune-no-cudagraphs"
            self._unet = torch.compile(c.unet, mode=mode, fullgraph=False)
            self._controlnet = torch.compile(c.controlnet, mode=mode, fullgraph=False)

    # --- construction helpers ------------------------------------------------------------------
    @classmethod
    def from_model_dir(cls, model_dir: Path, *, commercial_project: bool, project: str | None = None, verify: bool = True,
                       fetch: Callable[[str], Path] | None = None, **kwargs) -> "DiffusionHeadSwapper":
        """Resolve the three models through the registry (files, checksums, licence), then load."""
        root, refs = resolve_models(model_dir, commercial_project=commercial_project, project=project, verify=verify, fetch=fetch)
        return cls(root, model_refs=refs, **kwargs)

    @property
    def models(self) -> tuple[ModelRef, ...]:
        """The models this swapper runs (with checksums when built by :meth:`from_model_dir`)."""
        return self._model_refs

    def set_ip_adapter_scale(self, scale: float) -> None:
        """Weight of the identity tokens in every IP-Adapter attention processor."""
        for proc in self.c.unet.attn_processors.values():
            if hasattr(proc, "scale") and isinstance(getattr(proc, "scale"), list):
                proc.scale = [float(scale)] * len(proc.scale)

    def _encode_prompts(self, prompt: str, negative: str):
        import torch

        tok = self.c.tokenizer
        with torch.inference_mode():
            out = []
            for text in (negative, prompt):
                ids = tok([text], padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt").input_ids
                out.append(self.c.text_encoder(ids.to(self.device))[0].to(self.dtype))
        return torch.cat(out)  # (2, L, D): negative, positive

    # --- identity --------------------------------------------------------------------------------
    def identity_embeds(self, source_rgb: np.ndarray, source_landmarks: np.ndarray):
        """(1, 1, E) IP-Adapter image embedding of the source head (CLIP vision ``image_embeds``)."""
        import torch

        enc = self.c.image_encoder
        if enc is None:
            return None
        size = int(enc.config.image_size)
        crop = _source_head(np.asarray(source_rgb), np.asarray(source_landmarks, np.float64), size).astype(np.float32) / 255.0
        x = torch.from_numpy(((crop - _CLIP_MEAN) / _CLIP_STD).transpose(2, 0, 1)[None].copy()).to(self.device, self.dtype)
        with torch.inference_mode():
            return enc(pixel_values=x).image_embeds[:, None]

    # --- the diffusion ---------------------------------------------------------------------------
    def generate(self, images, masks, control, id_embeds):
        """Batched inpainting on prepared tensors: ``images`` (B, 3, R, R) in -1..1, ``masks``
        (B, 1, R, R) in {0, 1} (1 = repaint), ``control`` (B, 3, R, R) in 0..1, ``id_embeds``
        (1, 1, E) or None. Returns (B, 3, R, R) float32 in -1..1."""
        import torch

        c, sched = self.c, self.c.scheduler
        b = images.shape[0]
        lat_h = self.resolution // self.vae_scale
        sf = c.vae.config.scaling_factor
        cfg = self.guidance > 1.0
        with torch.inference_mode():
            images = images.to(self.device, self.dtype)
            masked = images * (masks.to(self.device, self.dtype) < 0.5)
            # the distribution's mode, not a sample: encoding is then deterministic
            masked_lat = c.vae.encode(masked).latent_dist.mode() * sf
            m_lat = torch.nn.functional.interpolate(masks.to(self.device, self.dtype), size=(lat_h, lat_h), mode="nearest")
            control = control.to(self.device, self.dtype)
            sched.set_timesteps(self.steps, device=self.device)
            latents = (self._noise.to(self.device) * sched.init_noise_sigma).expand(b, -1, -1, -1).to(self.dtype).contiguous()
            text = self._embeds if cfg else self._embeds[1:]
            text = text.repeat_interleave(b, dim=0)  # (2B, L, D): B negatives then B positives
            reps = 2 if cfg else 1
            m_in, ml_in, ctl_in = (t.repeat(reps, 1, 1, 1) for t in (m_lat, masked_lat, control))
            added = None
            if id_embeds is not None:
                pos = id_embeds.to(self.device, self.dtype).expand(b, -1, -1)
                emb = torch.cat([torch.zeros_like(pos), pos]) if cfg else pos
                added = {"image_embeds": [emb]}
            if self.device.type == "cuda":
                ctl_in = ctl_in.contiguous(memory_format=torch.channels_last)
            for t in sched.timesteps:
                x = torch.cat([latents] * reps) if cfg else latents
                x = sched.scale_model_input(x, t)
                down, mid = self._controlnet(x, t, encoder_hidden_states=text, controlnet_cond=ctl_in,
                                             conditioning_scale=self.controlnet_scale, return_dict=False)
                unet_in = torch.cat([x, m_in, ml_in], dim=1)
                if self.device.type == "cuda":
                    unet_in = unet_in.contiguous(memory_format=torch.channels_last)
                eps = self._unet(unet_in, t, encoder_hidden_states=text, down_block_additional_residuals=down,
                                 mid_block_additional_residual=mid, added_cond_kwargs=added, return_dict=False)[0]
                if cfg:
                    neg, pos = eps.chunk(2)
                    eps = neg + self.guidance * (pos - neg)
                latents = sched.step(eps, t, latents, return_dict=False)[0]
            if self.fast_decode:
                # TAESD works on the scaled latents directly (its scaling factor is 1)
                out = c.tiny_decoder.decode(latents, return_dict=False)[0]
            else:
                out = c.vae.decode(latents / sf, return_dict=False)[0]
        return out.float().clamp(-1, 1)

    def prepare(self, frame: np.ndarray, target_landmarks: np.ndarray, plate_landmarks: np.ndarray):
        """Crop, block mask and landmark map of one frame: ``(HeadCrop, crop_rgb, mask, control)``."""
        r = self.resolution
        hc = head_crop(target_landmarks, plate_landmarks, r, context=self.context)
        crop = cv2.warpAffine(frame, hc.matrix, (r, r), flags=cv2.INTER_AREA if hc.matrix[0, 0] < 1 else cv2.INTER_CUBIC,
                              borderMode=cv2.BORDER_REFLECT101)
        mask = block_mask(hc.box, r, self.block)
        t = np.asarray(target_landmarks, np.float64).copy()
        t[:, :2] = t[:, :2] * hc.matrix[0, 0] + hc.matrix[:, 2]
        control = draw_mediapipe_face(t, r)
        return hc, crop, mask, control

    def paste(self, frame: np.ndarray, hc: HeadCrop, generated: np.ndarray, mask: np.ndarray) -> SwapFrame:
        """Map a generated crop back onto ``frame`` inside the block mask (feathered inwards);
        pixels outside the mask keep the plate's values exactly."""
        h, w = frame.shape[:2]
        inv = cv2.invertAffineTransform(hc.matrix)
        fmask = cv2.warpAffine(mask, inv, (w, h), flags=cv2.INTER_NEAREST, borderValue=0)
        ys, xs = np.nonzero(fmask)
        if len(xs) == 0:
            return SwapFrame(frame=frame.copy(), mask=np.zeros((h, w), np.uint8))
        x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
        inv_roi = inv.copy()
        inv_roi[:, 2] -= (x0, y0)
        scale = 1.0 / hc.matrix[0, 0]
        gen = cv2.warpAffine(generated, inv_roi, (x1 - x0, y1 - y0), flags=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_REPLICATE).astype(np.float32)
        m_roi = fmask[y0:y1, x0:x1]
        alpha = feather_mask(m_roi, max(1.0, 0.5 * self.block * scale))
        plate = frame[y0:y1, x0:x1].astype(np.float32)
        out = frame.copy()
        out[y0:y1, x0:x1] = np.clip(plate + alpha[..., None] * (gen - plate) + 0.5, 0, 255).astype(np.uint8)
        changed = np.zeros((h, w), np.uint8)
        changed[y0:y1, x0:x1][alpha > 0] = 255
        return SwapFrame(frame=out, mask=changed)

    def swap_batch(
        self,
        frames: Sequence[np.ndarray],
        target_landmarks: Sequence[np.ndarray],
        plate_landmarks: Sequence[np.ndarray],
        source_rgb: np.ndarray,
        source_landmarks: np.ndarray,
    ) -> list[SwapFrame]:
        """Swap the source head into each frame; frames go through the model ``batch_size`` at
        a time (pass the frames of several chunks to batch across chunks)."""
        import torch

        if not (len(frames) == len(target_landmarks) == len(plate_landmarks)):
            raise UsageError("frames, target_landmarks and plate_landmarks must have the same length")
        results: list[SwapFrame | None] = [None] * len(frames)
        work = []
        for i, (f, t, p) in enumerate(zip(frames, target_landmarks, plate_landmarks)):
            f = np.asarray(f)
            if f.ndim != 3 or f.shape[2] != 3 or f.dtype != np.uint8:
                raise UsageError(f"frame {i} must be RGB uint8 (H, W, 3), got {f.dtype} {f.shape}")
            t = np.asarray(t, np.float64)
            p = np.asarray(p, np.float64)
            if t.shape != (NUM_LANDMARKS, 3) or p.shape != (NUM_LANDMARKS, 3):
                raise UsageError(f"landmarks of frame {i} must be ({NUM_LANDMARKS}, 3)")
            if not (np.isfinite(t[:, :2]).all() and np.isfinite(p[:, :2]).all()):
                results[i] = SwapFrame(frame=f.copy(), mask=np.zeros(f.shape[:2], np.uint8))
                continue
            work.append((i, f, t, p))
        id_emb = self.identity_embeds(source_rgb, source_landmarks) if work else None
        for s in range(0, len(work), self.batch_size):
            part = work[s:s + self.batch_size]
            prep = [self.prepare(f, t, p) for _, f, t, p in part]
            imgs = torch.from_numpy(np.stack([c for _, c, _, _ in prep]).astype(np.float32) / 127.5 - 1.0).permute(0, 3, 1, 2)
            masks = torch.from_numpy(np.stack([m for _, _, m, _ in prep]).astype(np.float32) / 255.0)[:, None]
            ctl = torch.from_numpy(np.stack([k for _, _, _, k in prep]).astype(np.float32) / 255.0).permute(0, 3, 1, 2)
            out = self.generate(imgs, masks, ctl, id_emb)
            gen = ((out.permute(0, 2, 3, 1).cpu().numpy() + 1.0) * 127.5).clip(0, 255).astype(np.uint8)
            for (i, f, _, _), (hc, _, m, _), g in zip(part, prep, gen):
                results[i] = self.paste(f, hc, g, m)
        return results  # type: ignore[return-value]


class DiffusionEngine:
    """The ``diffusion`` engine (head mode) behind :class:`recast.models.engines.SwapEngine`:
    :class:`DiffusionHeadSwapper` on the weights of the model directory, on the configured
    device. The block mask repaints the whole head region, so no occlusion detector runs.

    The loaded swapper keeps the shot-wide noise and a scheduler whose state changes while it
    samples: chunks that share one loaded engine take turns (a lock), which costs nothing on a
    single GPU that runs one batch at a time anyway.
    """

    name = "diffusion"
    version = "1.0"
    modes = ("head",)
    needs: frozenset[str] = frozenset()

    def __init__(self, *, mode: str, options: EngineOptions) -> None:
        if mode not in self.modes:
            raise UsageError(f"backend '{self.name}' repaints heads, not '{mode}'")
        self.mode = mode
        self.options = options
        self.device = options.device
        self._resolved: tuple[Path, tuple[ModelRef, ...]] | None = None
        self._swapper: DiffusionHeadSwapper | None = None
        self._lock = threading.Lock()

    def _resolve(self) -> tuple[Path, tuple[ModelRef, ...]]:
        if self._resolved is None:
            model_dir = require_model_dir(self.options, self.name)
            self._resolved = resolve_models(model_dir, commercial_project=self.options.commercial, project=self.options.project)
        return self._resolved

    def model_refs(self) -> tuple[ModelRef, ...]:
        return self._resolve()[1]

    def load(self) -> None:
        with self._lock:
            if self._swapper is None:
                root, refs = self._resolve()
                self._swapper = DiffusionHeadSwapper(root, device=self.device, model_refs=refs)

    @property
    def loaded(self) -> bool:
        """Whether :meth:`load` has run (the components are in memory)."""
        return self._swapper is not None

    def swap(self, plate: PlateFrames, targets: np.ndarray, source: SwapSource, *,
             progress: Callable[[int], None] | None = None) -> SwapResult:
        self.load()
        frames = list(plate.frames)
        if len(targets) != len(frames):
            raise UsageError(f"plate chunk: {len(targets)} targets for {len(frames)} frames")
        with self._lock:
            results = self._swapper.swap_batch(frames, list(targets), list(plate.landmarks), source.rgb, source.landmarks)
        ok = swappable(targets, plate.landmarks)
        if progress is not None:
            progress(len(frames))
        h, w = frames[0].shape[:2] if frames else (0, 0)
        matte = np.stack([r.mask > 0 for r in results]) if results else np.zeros((0, h, w), bool)
        return SwapResult(frames=[r.frame for r in results], matte=matte, swapped=int(ok.sum()), passthrough=int((~ok).sum()))

