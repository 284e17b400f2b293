"""The registry of the larger models recast can use, and their resolution from a model directory.

Weights are never fetched from a hub. A studio places them in the model directory
(``RECAST_MODEL_DIR``; the orchestration passes it in as a :class:`~pathlib.Path`) or in an
object-store prefix that the orchestration mirrors into a local cache through a ``fetch``
callable. Every file is checked against its pinned sha256 before an engine loads it.

Layout of a model directory (paths of :class:`ModelFile` are relative to it)::

    inswapper_128.onnx                       insightface INSwapper (128 px)
    buffalo_l/w600k_r50.onnx                 insightface ArcFace R50 recogniser (WebFace600K)
    buffalo_l/det_10g.onnx                   insightface SCRFD-10G detector
    sd15_inpainting/{unet,vae,text_encoder,tokenizer,scheduler}/...   diffusers folder layout
    controlnet_mediapipe_face/{config.json,diffusion_pytorch_model.safetensors}
    ip_adapter/{ip-adapter_sd15.safetensors,image_encoder/...}
    models.json (or models.toml)             optional studio overrides (see below)

Checksums: the insightface files carry the sha256 that the community has published for the
original release files (``inswapper_128.onnx`` 554,253,681 bytes, ``w600k_r50.onnx``,
``det_10g.onnx``). For the diffusers-format weights recast does not pin a checksum: the same
model is distributed in several variants (fp32, fp16, ``.bin`` or ``.safetensors``, re-uploads
after the original repositories were withdrawn), so the studio pins the files it installed in
``models.json``. Until it does, the model resolves (its actual checksums are still computed and
recorded in provenance) but ``recast models list`` shows it as not verified.

``models.json`` (``models.toml`` with the same structure is read on Python 3.11+)::

    {
      "sd15_inpainting": {
        "files": {"sd15_inpainting/unet/diffusion_pytorch_model.fp16.safetensors": "<sha256>", ...},
        "replace": true,                      # the listed files replace the spec's file list
        "version": "fp16-2024-06"
      },
      "inswapper_128": {"commercial_use": true, "licence": "insightface commercial licence #123"}
    }

Without ``"replace"``, listed files override the checksum of a file of the same path or are
added to the list. ``commercial_use: true`` must come with a ``licence`` text (a studio that
bought a commercial licence says which); the override is recorded in the resolved spec.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from recast import checksums
from recast.contracts import ModelRef
from recast.errors import InputError, ModelMissingError, PolicyError, UsageError

Device = Literal["cpu", "cuda", "any"]

#: name of the checksum cache kept in the model directory (or the fetch cache)
HASH_CACHE_NAME = ".recast-sha256.json"
#: studio override files, looked for in this order
OVERRIDE_NAMES = ("models.json", "models.toml")


@dataclass(frozen=True)
class ModelFile:
    """One file of a model: path relative to the model directory, pinned sha256 (None: not
    pinned by recast, see the module docstring) and size in bytes (None: unknown)."""

    path: str
    sha256: str | None
    size: int | None = None


@dataclass(frozen=True)
class ModelSpec:
    """What a model is, where its files go, and under which terms it may be used."""

    name: str
    version: str
    files: tuple[ModelFile, ...]
    licence: str
    commercial_use: bool
    device: Device
    description: str
    where_to_get: str
    overridden: bool = False

    def model_ref(self, sha256: str | None = None) -> ModelRef:
        """A provenance record of this model (``sha256`` from :meth:`ResolvedModel.digest`)."""
        return ModelRef(name=self.name, version=self.version, sha256=sha256)


@dataclass(frozen=True)
class ResolvedModel:
    """A model whose files were found (and, when asked, verified) on local disk.

    ``root`` is the directory the spec's relative paths hang from; ``sha256_by_file`` maps each
    relative path to the checksum of the file actually there; ``verified`` is True when every
    file had a pinned checksum and matched it.
    """

    spec: ModelSpec
    root: Path
    sha256_by_file: dict[str, str] = field(default_factory=dict)
    verified: bool = False

    def path(self, rel: str) -> Path:
        """Local path of one of the model's files (or folders)."""
        return self.root / rel

    @property
    def digest(self) -> str | None:
        """One sha256 over the model's files (the sha256 of ``"path sha256\\n"`` lines in
        path order): the checksum recorded in provenance and in work keys."""
        if not self.sha256_by_file:
            return None
        h = hashlib.sha256()
        for rel in sorted(self.sha256_by_file):
            h.update(f"{rel} {self.sha256_by_file[rel]}\n".encode())
        return h.hexdigest()

    @property
    def model_ref(self) -> ModelRef:
        """:class:`~recast.contracts.ModelRef` for provenance."""
        return self.spec.model_ref(self.digest)


@dataclass(frozen=True)
class ModelStatus:
    """One line of ``recast models list``."""

    name: str
    present: bool
    verified: bool
    problem: str | None
    licence: str = ""
    commercial_use: bool = False
    device: str = "any"


def _diffusers_files(prefix: str, parts: dict[str, tuple[str, ...]]) -> tuple[ModelFile, ...]:
    return tuple(ModelFile(f"{prefix}/{sub}/{name}" if sub else f"{prefix}/{name}", None)
                 for sub, names in parts.items() for name in names)


_INSIGHTFACE_LICENCE = ("insightface pretrained models: non-commercial research use only "
                        "(commercial licences are sold separately by insightface)")

REGISTRY: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="inswapper_128",
            version="0.7",
            files=(ModelFile("inswapper_128.onnx",
                             "e4a3f08c753cb72d04e10aa0f7dbe3deebbf39567d4ead6dce08e98aa49e16af", 554_253_681),),
            licence=_INSIGHTFACE_LICENCE,
            commercial_use=False,
            device="any",
            description="insightface INSwapper: 128 px one-shot face swap driven by an ArcFace embedding",
            where_to_get="insightface release v0.7, file inswapper_128.onnx (fp32, 554,253,681 bytes)",
        ),
        ModelSpec(
            name="buffalo_l",
            version="0.7",
            files=(
                ModelFile("buffalo_l/w600k_r50.onnx", "4c06341c33c2ca1f86781dab0e829f88ad5b64be9fba56e56bc9ebdefc619e43"),
                ModelFile("buffalo_l/det_10g.onnx", "5838f7fe053675b1c7a08b633df49e7af5495cee0493c7dcf6697200b85b5b91"),
            ),
            licence=_INSIGHTFACE_LICENCE,
            commercial_use=False,
            device="any",
            description="insightface buffalo_l pack: ArcFace R50 (WebFace600K) recogniser and SCRFD-10G detector",
            where_to_get="insightface model pack buffalo_l.zip (release v0.7); unzip into buffalo_l/",
        ),
        ModelSpec(
            name="sd15_inpainting",
            version="1.5-inpainting",
            files=_diffusers_files("sd15_inpainting", {
                "unet": ("config.json", "diffusion_pytorch_model.safetensors"),
                "vae": ("config.json", "diffusion_pytorch_model.safetensors"),
                "text_encoder": ("config.json", "model.safetensors"),
                "tokenizer": ("vocab.json", "merges.txt"),
                "scheduler": ("scheduler_config.json",),
            }),
            licence="CreativeML OpenRAIL-M (commercial use allowed under its use restrictions)",
            commercial_use=True,
            device="cuda",
            description="Stable Diffusion 1.5 inpainting (9-channel UNet, VAE, CLIP text encoder) in diffusers format",
            where_to_get=("the 'stable-diffusion-inpainting' SD1.5 repository in diffusers format "
                          "(save_pretrained layout); place it in sd15_inpainting/ and pin its files in models.json"),
        ),
        ModelSpec(
            name="controlnet_mediapipe_face",
            version="sd15",
            files=_diffusers_files("controlnet_mediapipe_face", {"": ("config.json", "diffusion_pytorch_model.safetensors")}),
            licence="OpenRAIL (commercial use allowed under its use restrictions)",
            commercial_use=True,
            device="cuda",
            description="ControlNet conditioned on MediaPipe face-mesh drawings (contours and pupils), SD1.5",
            where_to_get=("CrucibleAI ControlNetMediaPipeFace, folder diffusion_sd15/ (diffusers format); "
                          "copy its contents into controlnet_mediapipe_face/"),
        ),
        ModelSpec(
            name="ip_adapter",
            version="sd15",
            files=(ModelFile("ip_adapter/ip-adapter_sd15.safetensors", None),
                   *_diffusers_files("ip_adapter", {"image_encoder": ("config.json", "model.safetensors")})),
            licence="Apache-2.0 (IP-Adapter); image encoder OpenCLIP ViT-H/14 (MIT)",
            commercial_use=True,
            device="cuda",
            description="IP-Adapter for SD1.5: CLIP image embedding of the source face projected to 4 extra cross-attention tokens",
            where_to_get=("h94 IP-Adapter repository: models/ip-adapter_sd15.safetensors and "
                          "models/image_encoder/ -> ip_adapter/"),
        ),
        ModelSpec(
            name="taesd",
            version="sd15",
            files=_diffusers_files("taesd", {"": ("config.json", "diffusion_pytorch_model.safetensors")}),
            licence="MIT",
            commercial_use=True,
            device="any",
            description="optional tiny VAE decoder (AutoencoderTiny) for fast previews / the fast decode option",
            where_to_get="madebyollin taesd (diffusers format) -> taesd/",
        ),
    )
}


# --- checksums -------------------------------------------------------------------------------

def _load_cache(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _save_cache(path: Path, cache: dict) -> None:
    # atomic replace: parallel workers resolving the same model must not read half a file
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".recast-sha256-", suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump(cache, f, indent=0, sort_keys=True)
        os.replace(tmp, path)
    except OSError:
        # a read-only model directory: hash again next time rather than fail
        try:
            os.unlink(tmp)  # type: ignore[possibly-undefined]
        except (OSError, NameError):
            pass


def sha256_file(path: Path, *, cache_root: Path | None = None, rel: str | None = None) -> str:
    """:func:`recast.checksums.sha256_file` of a model file, optionally remembered.

    With ``cache_root``, the result is remembered in ``cache_root/.recast-sha256.json`` under
    ``rel`` keyed by (size, mtime_ns), so multi-GB weights are not hashed again each run; a
    replaced or touched file is hashed again.
    """
    st = path.stat()
    cache_file = cache_root / HASH_CACHE_NAME if cache_root is not None else None
    key = rel or str(path)
    if cache_file is not None:
        hit = _load_cache(cache_file).get(key)
        if isinstance(hit, dict) and hit.get("size") == st.st_size and hit.get("mtime_ns") == st.st_mtime_ns:
            return str(hit["sha256"])
    digest = checksums.sha256_file(path)
    if cache_file is not None:
        cache = _load_cache(cache_file)  # re-read: another worker may have added entries
        cache[key] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest}
        _save_cache(cache_file, cache)
    return digest


# --- studio overrides ------------------------------------------------------------------------

def load_overrides(model_dir: Path) -> dict[str, dict]:
    """The studio's ``models.json`` / ``models.toml`` in ``model_dir`` ({} when there is none)."""
    for name in OVERRIDE_NAMES:
        p = Path(model_dir) / name
        if not p.is_file():
            continue
        try:
            if name.endswith(".json"):
                data = json.loads(p.read_text())
            else:
                import tomllib  # Python 3.11+

                data = tomllib.loads(p.read_text())
        except ImportError:
            raise UsageError(f"{p}: models.toml needs Python 3.11 or newer; use models.json") from None
        except (OSError, ValueError) as e:
            raise InputError(f"{p}: cannot read the model overrides ({e})") from None
        if not isinstance(data, dict):
            raise InputError(f"{p}: expected a mapping of model name to overrides")
        return data
    return {}


def apply_override(spec: ModelSpec, override: dict | None) -> ModelSpec:
    """``spec`` with a studio override applied (see the module docstring)."""
    if not override:
        return spec
    if not isinstance(override, dict):
        raise InputError(f"model overrides for {spec.name!r} must be a mapping")
    files = list(spec.files)
    listed = override.get("files") or {}
    if not isinstance(listed, dict):
        raise InputError(f"model overrides for {spec.name!r}: 'files' must map relative path to sha256")
    if override.get("replace"):
        files = []
    by_path = {f.path: i for i, f in enumerate(files)}
    for rel, entry in listed.items():
        sha, size = (entry.get("sha256"), entry.get("size")) if isinstance(entry, dict) else (entry, None)
        if sha is not None and (not isinstance(sha, str) or len(sha) != 64):
            raise InputError(f"model overrides for {spec.name!r}: sha256 of {rel} must be 64 hex digits")
        mf = ModelFile(str(rel), sha.lower() if sha else None, size)
        if rel in by_path:
            files[by_path[rel]] = mf
        else:
            by_path[rel] = len(files)
            files.append(mf)
    changes: dict = {"files": tuple(files), "overridden": True}
    if "version" in override:
        changes["version"] = str(override["version"])
    if "commercial_use" in override:
        commercial = bool(override["commercial_use"])
        if commercial and not spec.commercial_use and not override.get("licence"):
            raise InputError(f"model overrides for {spec.name!r}: commercial_use needs a 'licence' saying which licence allows it")
        changes["commercial_use"] = commercial
    if "licence" in override:
        changes["licence"] = str(override["licence"])
    return replace(spec, **changes)


def get_spec(name: str, model_dir: Path | None = None) -> ModelSpec:
    """The spec of ``name``, with the studio's overrides in ``model_dir`` applied."""
    try:
        spec = REGISTRY[name]
    except KeyError:
        raise UsageError(f"unknown model {name!r}; known: {', '.join(sorted(REGISTRY))}") from None
    if model_dir is None:
        return spec
    return apply_override(spec, load_overrides(Path(model_dir)).get(name))


# --- resolution ------------------------------------------------------------------------------

def resolve(
    name: str,
    model_dir: Path,
    *,
    verify: bool = True,
    fetch: Callable[[str], Path] | None = None,
) -> ResolvedModel:
    """Find the files of model ``name`` under ``model_dir`` and check their checksums.

    ``fetch``: for a model store in an object-store prefix, the orchestration passes a callable
    that downloads one relative path into a local cache and returns the local file; it must
    place it at ``<cache>/<rel>`` (the diffusers loaders need the folder layout), and ``model_dir``
    is then that cache. It is called only for files missing locally.

    Raises :class:`~recast.errors.ModelMissingError` naming every missing file and where to put
    it, and :class:`~recast.errors.InputError` when a file's checksum (or size) differs from the
    pinned one. With ``verify=False`` only presence is checked (no hashing).
    """
    model_dir = Path(model_dir)
    spec = get_spec(name, model_dir)
    root = model_dir
    missing: list[str] = []
    for f in spec.files:
        p = root / f.path
        if p.is_file():
            continue
        if fetch is not None:
            try:
                got = Path(fetch(f.path))
            except FileNotFoundError:
                missing.append(f.path)
                continue
            if got.resolve() != p.resolve():
                # derive the cache root from where fetch put the file
                if got.as_posix().endswith("/" + f.path):
                    root = Path(got.as_posix()[: -len(f.path) - 1])
                else:
                    raise UsageError(f"fetch of {f.path} returned {got}, which is not <cache>/{f.path}")
            if not (root / f.path).is_file():
                missing.append(f.path)
            continue
        missing.append(f.path)
    if missing:
        raise ModelMissingError(
            f"model {name!r}: missing {', '.join(missing)} in {model_dir} "
            f"(place the file{'s' if len(missing) > 1 else ''} there; get: {spec.where_to_get}; see `recast models list`)"
        )
    shas: dict[str, str] = {}
    verified = verify
    for f in spec.files:
        p = root / f.path
        if f.size is not None and p.stat().st_size != f.size:
            # a truncated copy: say so without reading gigabytes
            raise InputError(f"model {name!r}: {p} is {p.stat().st_size} bytes, expected {f.size} (truncated or wrong file)")
        if not verify:
            continue
        digest = sha256_file(p, cache_root=root, rel=f.path)
        shas[f.path] = digest
        if f.sha256 is None:
            verified = False
        elif digest != f.sha256.lower():
            raise InputError(f"model {name!r}: checksum mismatch for {p}: expected sha256 {f.sha256}, got {digest}")
    return ResolvedModel(spec=spec, root=root, sha256_by_file=shas, verified=verified)


def check_licence(spec: ModelSpec, *, commercial_project: bool, project: str | None = None) -> None:
    """Refuse a non-commercial model for a commercial project (:class:`~recast.errors.PolicyError`)."""
    if commercial_project and not spec.commercial_use:
        who = f"project {project!r}" if project else "the project"
        raise PolicyError(f"model {spec.name!r} is licensed for non-commercial use only ({spec.licence}); {who} is commercial")


def list_models(model_dir: Path | None, *, verify: bool = True) -> list[ModelStatus]:
    """Status of every registered model in ``model_dir``, for ``recast models list``."""
    out: list[ModelStatus] = []
    for name in REGISTRY:
        base = REGISTRY[name]
        if model_dir is None:
            out.append(ModelStatus(name, False, False, "RECAST_MODEL_DIR is not set", base.licence, base.commercial_use, base.device))
            continue
        try:
            spec = get_spec(name, model_dir)
        except InputError as e:
            out.append(ModelStatus(name, False, False, str(e), base.licence, base.commercial_use, base.device))
            continue
        try:
            res = resolve(name, model_dir, verify=verify)
        except ModelMissingError as e:
            out.append(ModelStatus(name, False, False, str(e), spec.licence, spec.commercial_use, spec.device))
            continue
        except InputError as e:
            out.append(ModelStatus(name, True, False, str(e), spec.licence, spec.commercial_use, spec.device))
            continue
        problem = None
        if verify and not res.verified:
            unpinned = [f.path for f in spec.files if f.sha256 is None]
            problem = f"no pinned sha256 for {len(unpinned)} file(s) (e.g. {unpinned[0]}): pin them in models.json"
        elif not verify:
            problem = "not verified (presence only)"
        out.append(ModelStatus(name, True, res.verified, problem, spec.licence, spec.commercial_use, spec.device))
    return out
