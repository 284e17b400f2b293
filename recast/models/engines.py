"""Swap engines behind one interface, and the registry of them.

An engine turns a chunk of plate frames into swapped frames plus the matte of the pixels it
changed. Every engine, whatever it runs (mesh warps on the CPU, an ONNX graph, a diffusion
model), has the same life cycle, which the swap task relies on:

1. :func:`create_engine` builds it from a name and a mode: cheap, nothing is loaded. Unknown
   names and unsupported modes are refused here (and, earlier, by :func:`check_engine` when a
   shot is submitted).
2. :meth:`SwapEngine.model_refs` names the models it will run, with their checksums: resolved
   from the model registry and the checksum cache, without loading any weights, so the work key
   of a chunk can be looked up before anything expensive happens. Missing files and licences
   that do not allow the project's use are refused here.
3. :meth:`SwapEngine.load` loads the weights (idempotent). :func:`loaded_engine` keeps loaded
   engines per process, so a worker loads the same weights once for all the chunks it swaps.
4. :meth:`SwapEngine.swap` swaps a chunk.

Adding an engine: write its class (in its own module) and add one line to :data:`_REGISTRY`.
Engine modules are imported only when an engine is created, so checking a name at submission
does not import torch or onnxruntime.
"""

from __future__ import annotations

import importlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from recast.contracts import ModelRef
from recast.errors import InternalError, ModelMissingError, UsageError

__all__ = [
    "ENGINE_NAMES", "MODES", "NEEDS_BACKGROUND", "NEEDS_SKIN_STATS", "NEEDS_SOURCE_HEAD", "EngineOptions", "PlateFrames", "SwapEngine",
    "SwapResult", "SwapSource", "check_engine", "create_engine", "engine_modes", "engine_uses_gpu", "loaded_engine",
    "require_model_dir", "reset_loaded_engines", "swappable",
]

#: every mode an engine can support
MODES: tuple[str, ...] = ("face", "head")

#: optional inputs an engine may declare in :attr:`SwapEngine.needs`: the task fetches (and keys
#: the chunk's work on) only what the engine reads
NEEDS_BACKGROUND = "background"  # the clean plate and where it is known: PlateFrames.background*
NEEDS_SOURCE_HEAD = "source_head"  # the source's cut-out head: SwapSource.head
NEEDS_SKIN_STATS = "skin_stats"  # the plate's per-region skin colour: PlateFrames.skin_stats


# --- what an engine swaps ----------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class SwapSource:
    """The identity to put in: the source photo (RGB uint8), its face's (478, 3) landmarks in
    pixels, and, for engines that need it (:data:`NEEDS_SOURCE_HEAD`), the cut-out head (a
    :class:`recast.models.head.SourceHead`; typed loosely because head.py implements this
    module's interface, and an import back would be a cycle)."""

    rgb: np.ndarray
    landmarks: np.ndarray
    head: Any = None


@dataclass(frozen=True, eq=False)
class PlateFrames:
    """A chunk of the plate and what earlier stages found in it, frame by frame.

    ``frames``: N RGB uint8 frames. ``landmarks`` (N, 478, 3): the chosen person's face, NaN
    where absent. ``person`` (N, H, W) bool: the person's matte. ``skin_stats`` (N, R, 6): the
    face's per-region skin colour (see :func:`recast.models.head.skin_colour_stats`), smoothed
    over time. ``background`` (N frames) and ``background_known`` (N, H, W) bool: the clean
    plate and where it is real rather than guessed. Optional fields are given when the engine
    :attr:`~SwapEngine.needs` them.
    """

    frames: Sequence[np.ndarray]
    landmarks: np.ndarray
    person: np.ndarray
    skin_stats: np.ndarray | None = None
    background: Sequence[np.ndarray] | None = None
    background_known: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.frames)
        for name in ("landmarks", "person", "skin_stats", "background", "background_known"):
            value = getattr(self, name)
            if value is not None and len(value) != n:
                raise UsageError(f"plate chunk: {name} has {len(value)} entries for {n} frames")


@dataclass(frozen=True, eq=False)
class SwapResult:
    """A swapped chunk: the N output frames and the matte (N, H, W) bool of every pixel the swap
    may have changed; outside it every output pixel is the plate's, exactly. ``swapped`` frames
    were swapped, ``passthrough`` frames (no face, or no target) are the plate's. ``guessed``
    (N, H, W) bool, from engines that remove the old head: what the old head hid beside and under
    the jaw (the body: shoulders, clothing) that the output shows and no frame of the shot showed
    (invented by inpainting); None when the engine says nothing of it."""

    frames: list[np.ndarray]
    matte: np.ndarray
    swapped: int
    passthrough: int
    guessed: np.ndarray | None = None


def swappable(targets: np.ndarray, plate_landmarks: np.ndarray) -> np.ndarray:
    """(N,) bool: frames with both a target and a plate face (the others pass through)."""
    t = np.asarray(targets, np.float64).reshape(len(targets), -1)
    p = np.asarray(plate_landmarks, np.float64).reshape(len(plate_landmarks), -1)
    return ~(np.isnan(t).any(1) | np.isnan(p).any(1))


@dataclass(frozen=True)
class EngineOptions:
    """What the caller knows and an engine may need: where the weights are (``model_dir``; None
    when none is configured), the torch/onnx device, and the project and whether it is
    commercial (for the models' licences)."""

    model_dir: Path | None = None
    device: str = "cpu"
    project: str | None = None
    commercial: bool = False


# --- the interface -------------------------------------------------------------------------------
@runtime_checkable
class SwapEngine(Protocol):
    """One way of swapping a chunk (see the module docstring for the life cycle).

    ``name``: the user-facing backend name; ``version``: bumped when the engine's output changes
    (the swap task puts it in the work key); ``modes``: every mode engine ``name`` swaps (one
    class may implement only one of them); ``mode``: the one this instance swaps; ``device``:
    where it runs; ``needs``: the optional inputs it reads (``NEEDS_*``), so the task fetches,
    and keys the chunk's work on, only those.

    Implementations take ``(*, mode: str, options: EngineOptions)`` in their constructor (see
    :func:`create_engine`) and load nothing there.
    """

    name: str
    version: str
    modes: tuple[str, ...]
    mode: str
    device: str
    needs: frozenset[str]

    def model_refs(self) -> tuple[ModelRef, ...]:
        """The models the swap runs, with checksums, for provenance and the work key. Cheap:
        resolved from the registry and the checksum cache; never loads weights."""
        ...

    def load(self) -> None:
        """Load the weights (idempotent: a second call does nothing)."""
        ...

    def swap(self, plate: PlateFrames, targets: np.ndarray, source: SwapSource, *,
             progress: Callable[[int], None] | None = None) -> SwapResult:
        """Swap ``source`` into every frame of ``plate`` with the face shapes ``targets``
        (N, 478, 3; NaN where a frame has none); ``progress(n)`` is told of frames done."""
        ...


# --- the registry ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Entry:
    """An engine: its implementation per mode ("module:Class", imported when created), whether
    it runs on the GPU (and so inside the "gpu" concurrency slot), and what to tell a user who
    asks for a mode it lacks."""

    implementations: Mapping[str, str]
    gpu: bool
    hint: str = ""
    modes: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "modes", tuple(m for m in MODES if m in self.implementations))


_REGISTRY: dict[str, _Entry] = {
    "classic": _Entry({"face": "recast.models.swap_classic:ClassicFaceEngine", "head": "recast.models.head:ClassicHeadEngine"}, gpu=False),
    "inswapper": _Entry({"face": "recast.models.inswapper:InswapperEngine"}, gpu=True,
                        hint="backend 'inswapper' swaps faces only: use --mode face (or --backend classic|diffusion for heads)"),
    "diffusion": _Entry({"head": "recast.models.diffusion_swap:DiffusionEngine"}, gpu=True,
                        hint="backend 'diffusion' repaints the whole head: use --mode head"),
}

#: the engine names a user may choose (``--backend``)
ENGINE_NAMES: tuple[str, ...] = tuple(_REGISTRY)


def _entry(name: str) -> _Entry:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UsageError(f"backend '{name}': not available (choose from {', '.join(ENGINE_NAMES)})") from None


def check_engine(name: str, mode: str) -> None:
    """Refuse (:class:`~recast.errors.UsageError`) an unknown engine or a mode it does not swap."""
    entry = _entry(name)
    mode = getattr(mode, "value", mode)  # a contracts.Mode is a str enum
    if mode not in MODES:
        raise UsageError(f"mode '{mode}': choose from {', '.join(MODES)}")
    if mode not in entry.modes:
        raise UsageError(entry.hint or f"backend '{name}' swaps {' or '.join(entry.modes)} only: use --mode {entry.modes[0]}")


def engine_modes(name: str) -> tuple[str, ...]:
    """The modes engine ``name`` swaps."""
    return _entry(name).modes


def engine_uses_gpu(name: str) -> bool:
    """Whether engine ``name`` runs on a GPU (its chunks then occupy a "gpu" concurrency slot)."""
    return _entry(name).gpu


def create_engine(name: str, mode: str, *, model_dir: Path | None = None, device: str = "cpu", project: str | None = None,
                  commercial: bool = False) -> SwapEngine:
    """A new, unloaded engine ``name`` for ``mode``; checks it implements :class:`SwapEngine`."""
    check_engine(name, mode)
    mode = getattr(mode, "value", mode)
    target = _REGISTRY[name].implementations[mode]
    module, _, cls_name = target.partition(":")
    cls = getattr(importlib.import_module(module), cls_name)
    engine = cls(mode=mode, options=EngineOptions(model_dir=Path(model_dir) if model_dir is not None else None, device=device,
                                                  project=project, commercial=bool(commercial)))
    return check_protocol(engine, name)


def check_protocol(engine: object, name: str) -> SwapEngine:
    """``engine`` when it has everything :class:`SwapEngine` asks for; else an
    :class:`~recast.errors.InternalError` naming what is missing (a registry line pointing at
    a class that is not an engine is a bug, not a user error)."""
    missing = [a for a in ("name", "version", "modes", "mode", "device", "needs", "model_refs", "load", "swap") if not hasattr(engine, a)]
    missing += [a for a in ("model_refs", "load", "swap") if hasattr(engine, a) and not callable(getattr(engine, a))]
    if missing or not isinstance(engine, SwapEngine):
        raise InternalError(f"engine '{name}': {type(engine).__name__} is not a SwapEngine (missing {', '.join(missing) or '?'})")
    if engine.name != name:
        raise InternalError(f"engine '{name}': {type(engine).__name__} calls itself '{engine.name}'")
    if name in _REGISTRY and set(engine.modes) != set(_REGISTRY[name].modes):
        raise InternalError(f"engine '{name}': {type(engine).__name__} says it swaps {', '.join(engine.modes)}, "
                            f"the registry says {', '.join(_REGISTRY[name].modes)}")
    return engine


def require_model_dir(options: EngineOptions, name: str) -> Path:
    """The model directory of ``options``; :class:`~recast.errors.ModelMissingError` when none is set."""
    if options.model_dir is None:
        raise ModelMissingError(f"backend '{name}': no model directory is configured; place the model files in one "
                                "(see `recast models list`)")
    return options.model_dir


# --- loaded engines, per process -----------------------------------------------------------------
#: learned engines hold GBs of weights: a worker keeps this many loaded at most (the oldest goes)
MAX_LOADED = 2

_loaded: OrderedDict[tuple, SwapEngine] = OrderedDict()
_loaded_lock = threading.Lock()
_load_locks: dict[tuple, threading.Lock] = {}


def _cache_key(engine: SwapEngine) -> tuple:
    refs = tuple((r.name, r.version, r.sha256) for r in engine.model_refs())
    return (engine.name, type(engine).__qualname__, engine.mode, engine.device, refs)


def loaded_engine(engine: SwapEngine) -> SwapEngine:
    """A loaded engine equal to ``engine`` (same name, mode, device and model checksums): the one
    this process loaded before, or ``engine`` itself, loaded now. Call it where the weights may
    be loaded (inside the GPU slot). Threads asking for the same engine wait for one load."""
    key = _cache_key(engine)
    with _loaded_lock:
        hit = _loaded.get(key)
        if hit is not None:
            _loaded.move_to_end(key)
            return hit
        lock = _load_locks.setdefault(key, threading.Lock())
    with lock:
        with _loaded_lock:
            hit = _loaded.get(key)
        if hit is not None:
            return hit
        engine.load()
        with _loaded_lock:
            _loaded[key] = engine
            while len(_loaded) > MAX_LOADED:
                old, _ = _loaded.popitem(last=False)
                _load_locks.pop(old, None)
        return engine


def reset_loaded_engines() -> None:
    """Forget every loaded engine of this process (their memory goes with the last reference)."""
    with _loaded_lock:
        _loaded.clear()
        _load_locks.clear()


# --- shared by per-frame engines ------------------------------------------------------------------
def swap_frames(plate: PlateFrames, targets: np.ndarray, swap_one: Callable[[int, np.ndarray], tuple[np.ndarray, ...]],
                progress: Callable[[int], None] | None = None) -> SwapResult:
    """Run ``swap_one(i, frame) -> (frame, mask)`` or ``(frame, mask, guessed)`` on each swappable
    frame of ``plate``; the other frames pass through with empty mattes. For engines that swap one
    frame at a time."""
    if len(targets) != len(plate.frames):
        raise UsageError(f"plate chunk: {len(targets)} targets for {len(plate.frames)} frames")
    ok = swappable(targets, plate.landmarks)
    h, w = (plate.frames[0].shape[:2] if len(plate.frames) else (0, 0))
    frames: list[np.ndarray] = []
    matte = np.zeros((len(plate.frames), h, w), bool)
    guessed: np.ndarray | None = None
    for i, frame in enumerate(plate.frames):
        if ok[i]:
            out, mask, *invented = swap_one(i, frame)
            frames.append(out)
            matte[i] = np.asarray(mask) > 0
            if invented:
                if guessed is None:
                    guessed = np.zeros_like(matte)
                guessed[i] = np.asarray(invented[0]) > 0
        else:
            frames.append(frame)
        if progress is not None:
            progress(1)
    return SwapResult(frames=frames, matte=matte, swapped=int(ok.sum()), passthrough=int((~ok).sum()), guessed=guessed)
