"""Invisible, codec-robust watermark carrying a 64-bit payload inside the swapped head region.

What is marked is what was generated: the mark is added only where ``region_mask`` is set, and
every pixel outside it is returned bit-identical. The decoder needs neither the original nor the
mask, and it reads the mark back from H.264 deliverables and from aspect-preserving rescales of
them (a 1080p master re-encoded to 720p, a 512x512 clip upscaled to 720x720).

How it works
------------
* **A grid tied to the frame, not to pixels.** The frame is mapped onto a canonical grid of
  ``GRID_ROWS`` rows of 8x8 blocks (the column count follows the aspect ratio). Any rescale that
  keeps the aspect ratio maps this grid onto itself, so the decoder finds the blocks again by
  resizing whatever it gets to the canonical size: no scale search, no synchronisation step.
* **Spread spectrum in mid-frequency DCT coefficients of the luma.** Each block has
  ``len(COEFFS)`` low-to-mid frequency coefficients ("chips"). A keyed random map assigns every
  chip of the grid to either the pilot or one coded bit, with a keyed random sign. The mark adds
  ``+-alpha`` to each chip (sign = chip sign x bit value; pilot chips always +). The same delta
  is added to R, G and B, which changes luma only. Because the delta does not depend on the
  picture, it is computed once per frame size and cached; embedding a frame is one multiply-add.
* **Redundancy across frames, soft decoding.** The decoder correlates every chip with its sign,
  normalises by local block energy (so textured background does not dominate), weights each
  block by the spatially smoothed pilot correlation (blocks that carry the mark count, the rest
  of the frame hardly does), and accumulates soft evidence per coded bit over all frames it is
  given. Coded bits are a rate-1/2, K=7 convolutional code (soft Viterbi) of the payload plus a
  CRC-24; the CRC tells "mark = X" from "no mark" (false-positive rate ~6e-8 per decode).

Limits: cropping, letterboxing/pillarboxing, rotation or a non-uniform rescale move the grid and
the mark is not found; so does a different key. A mark needs enough marked area x frames; see
``benchmarks/trust.py`` and the tests for the numbers measured on real clips.
"""

from __future__ import annotations

import functools
import hashlib
import operator
from dataclasses import dataclass

import cv2
import numpy as np

from recast.errors import UsageError

__all__ = [
    "WatermarkKey",
    "WatermarkEmbedder",
    "WatermarkDecoder",
    "WatermarkReading",
    "payload_from_id",
    "watermark_psnr",
    "PAYLOAD_BITS",
    "GRID_ROWS",
]

PAYLOAD_BITS = 64
CRC_BITS = 24
_CRC_POLY = 0x864CFB  # CRC-24/OpenPGP
_CRC_INIT = 0xB704CE
GRID_ROWS = 96  # canonical rows of 8x8 blocks, whatever the frame height
_BLOCK = 8
_MAX_ASPECT = 4  # grid columns are generated for frames up to 4:1
# Low-to-mid DCT frequencies (u + v in 2..4): high enough to stay out of the picture's own
# dominant energy, low enough to survive H.264 quantisation and a 0.67x rescale.
COEFFS: tuple[tuple[int, int], ...] = (
    (0, 2), (1, 1), (2, 0), (0, 3), (1, 2), (2, 1), (3, 0), (1, 3), (2, 2), (3, 1), (0, 4), (4, 0),
)
_PILOT_SHARE = 0.25
# Convolutional code, K=7, rate 1/2, the usual generators (171, 133 octal).
_K = 7
_G = (0o171, 0o133)
_INFO_BITS = PAYLOAD_BITS + CRC_BITS
_CODED_BITS = 2 * (_INFO_BITS + _K - 1)
_NORM_FLOOR = 2.0  # luma levels: keeps flat blocks from being blown up by the normalisation
_PILOT_SMOOTH = 5  # blocks: the marked region is contiguous, so pilot evidence is pooled
# Minimum codeword margin (see WatermarkReading.snr) on top of the CRC: noise reaches ~0.96 at
# most, so this gate costs no sensitivity worth having and guards against a lucky CRC.
_MIN_SNR = 1.2


def payload_from_id(render_id: str) -> int:
    """The 64-bit watermark payload for a render id: the first 8 bytes of its SHA-256.

    The mark cannot hold a whole UUID with the robustness asked of it; the caller stores this
    value with the render and looks the render up by it.
    """
    if not isinstance(render_id, str) or not render_id:
        raise UsageError(f"render id must be a non-empty string, got {render_id!r}")
    return int.from_bytes(hashlib.sha256(render_id.encode("utf-8")).digest()[:8], "big")


#: the watermark key of local trials (no RECAST_WATERMARK_SEED): public, since it is in this
#: source, so a mark made with it proves nothing; a studio sets its own secret seed
DEVELOPMENT_SEED = 0x5EC4A57
#: seeds are 64-bit (the chip map's generator takes them modulo 2**64: larger ones would alias)
SEED_BITS = 64


def parse_seed(value: object) -> int:
    """A watermark seed from an int or a decimal/``0x`` hexadecimal string; UsageError naming the
    value when it is not a whole number in [0, 2**64)."""
    if isinstance(value, bool):
        raise UsageError(f"watermark seed {value!r}: not a whole number")
    if isinstance(value, str):
        text = value.strip().replace("_", "")
        try:
            value = int(text, 16) if text.lower().startswith("0x") else int(text, 10)
        except ValueError:
            raise UsageError(f"watermark seed {value!r}: not a whole number (decimal, or hexadecimal with 0x)") from None
    if not isinstance(value, int):
        try:
            value = operator.index(value)  # numpy integers
        except TypeError:
            raise UsageError(f"watermark seed {value!r}: not a whole number") from None
    if not 0 <= value < 1 << SEED_BITS:
        raise UsageError(f"watermark seed {value}: must be between 0 and 2**{SEED_BITS} - 1")
    return value


@dataclass(frozen=True)
class WatermarkKey:
    """The secret that places the mark: ``seed`` keys the chip map and signs.

    ``strength`` is the RMS luma change inside the marked region in 8-bit levels; 2.5 gives
    a PSNR of about 40 dB against the unmarked frame there.
    """

    seed: int
    strength: float = 2.5

    def __post_init__(self) -> None:
        object.__setattr__(self, "seed", parse_seed(self.seed))
        if not 0 < self.strength <= 16:
            raise UsageError(f"watermark strength must be in (0, 16], got {self.strength}")


@dataclass(frozen=True)
class WatermarkReading:
    """What the decoder concluded.

    ``found`` is True only when the decoded word passes its CRC-24 and the codeword margin
    ``snr`` (mean over standard deviation of the soft evidence along the decoded codeword) is
    at least 1.2; noise gives ``snr`` of 0.88 +- 0.03. ``confidence`` maps ``snr`` linearly to
    0..1: 0 at 1.0 (no better than noise), 1 from 2.5 (a wide margin).
    """

    found: bool
    payload: int | None
    confidence: float
    frames_used: int
    snr: float = 0.0


# --- coding -----------------------------------------------------------------------------------
def _crc24(value: int, nbits: int) -> int:
    crc = _CRC_INIT
    for i in range(nbits - 1, -1, -1):
        bit = (value >> i) & 1
        top = (crc >> 23) & 1
        crc = (crc << 1) & 0xFFFFFF
        if top ^ bit:
            crc ^= _CRC_POLY
    return crc


def _int_to_bits(value: int, n: int) -> np.ndarray:
    return np.array([(value >> (n - 1 - i)) & 1 for i in range(n)], dtype=np.uint8)


def _bits_to_int(bits: np.ndarray) -> int:
    v = 0
    for b in bits:
        v = (v << 1) | int(b)
    return v


def _parity(x: np.ndarray) -> np.ndarray:
    x = x.copy()
    out = np.zeros_like(x)
    while x.any():
        out ^= x & 1
        x >>= 1
    return out


@functools.lru_cache(maxsize=1)
def _trellis() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each next state: its two predecessor states and the +-1 outputs of those branches."""
    ns = np.arange(64)
    prev = np.stack([ns >> 1, (ns >> 1) | 32], axis=1)  # (64, 2)
    reg = (prev << 1 | (ns[:, None] & 1)) & 0x7F  # the 7-bit register on that branch
    outs = np.stack([_parity(reg & g) for g in _G], axis=-1).astype(np.float64) * 2 - 1  # (64,2,2)
    return prev, outs, ns & 1


def _conv_encode(bits: np.ndarray) -> np.ndarray:
    reg = 0
    out = []
    for b in list(bits) + [0] * (_K - 1):  # tail bits end the trellis in state 0
        reg = ((reg << 1) | int(b)) & 0x7F
        for g in _G:
            out.append(bin(reg & g).count("1") & 1)
    return np.array(out, dtype=np.uint8)


def _viterbi(soft: np.ndarray) -> np.ndarray:
    """Soft-decision Viterbi: ``soft`` (coded bits) > 0 means 1. Returns the info bits."""
    prev, outs, inbit = _trellis()
    steps = soft.size // 2
    sym = soft.reshape(steps, 2)
    metric = np.full(64, -np.inf)
    metric[0] = 0.0
    choice = np.zeros((steps, 64), dtype=np.uint8)
    for t in range(steps):
        cand = metric[prev] + outs @ sym[t]  # (64, 2)
        c = np.argmax(cand, axis=1)
        choice[t] = c
        metric = cand[np.arange(64), c]
    state = 0  # the tail forces the final state to 0
    bits = np.zeros(steps, dtype=np.uint8)
    for t in range(steps - 1, -1, -1):
        bits[t] = inbit[state]
        state = prev[state, choice[t, state]]
    return bits[: steps - (_K - 1)]


def _codeword(payload: int) -> np.ndarray:
    crc = _crc24(payload, PAYLOAD_BITS)
    info = np.concatenate([_int_to_bits(payload, PAYLOAD_BITS), _int_to_bits(crc, CRC_BITS)])
    return _conv_encode(info)


# --- the keyed grid ---------------------------------------------------------------------------
@functools.lru_cache(maxsize=8)
def _chip_map(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(bit index or -1 for pilot, sign +-1) for every chip of the widest grid, from the key."""
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFFFFFFFFFF, 0x7265636173]) # "recas"
    shape = (GRID_ROWS, GRID_ROWS * _MAX_ASPECT, len(COEFFS))
    n = int(np.prod(shape))
    # Every coded bit gets the same number of chips in each stretch of the grid: a balanced
    # sequence, shuffled, rather than independent draws that leave some bits short.
    n_pilot = int(round(n * _PILOT_SHARE))
    per_bit = -(-(n - n_pilot) // _CODED_BITS)
    labels = np.concatenate([np.full(n_pilot, -1), np.tile(np.arange(_CODED_BITS), per_bit)[: n - n_pilot]])
    labels = rng.permutation(labels).astype(np.int16).reshape(shape)
    signs = (rng.integers(0, 2, size=shape, dtype=np.int8) * 2 - 1).astype(np.int8)
    return labels, signs


def _grid_cols(height: int, width: int) -> int:
    cols = int(round(width * GRID_ROWS / height))
    if height < 16 or width < 16 or cols < 1 or cols > GRID_ROWS * _MAX_ASPECT:
        raise UsageError(f"frame size {width}x{height} is not supported by the watermark grid")
    return cols


@functools.lru_cache(maxsize=1)
def _dct_matrix() -> np.ndarray:
    n = _BLOCK
    k = np.arange(n)
    d = np.cos(np.pi * (2 * k[None, :] + 1) * k[:, None] / (2 * n)) * np.sqrt(2.0 / n)
    d[0] /= np.sqrt(2.0)
    return d.astype(np.float32)  # orthonormal: coefs = D @ X @ D.T


_CU = np.array([c[0] for c in COEFFS])
_CV = np.array([c[1] for c in COEFFS])


def _luma(rgb: np.ndarray) -> np.ndarray:
    # BT.601 weights; the exact matrix does not matter, only that it is the same at decode
    f = rgb.astype(np.float32)
    return f[..., 0] * 0.299 + f[..., 1] * 0.587 + f[..., 2] * 0.114


def _check_rgb(rgb: np.ndarray, what: str) -> np.ndarray:
    a = np.asarray(rgb)
    if a.ndim != 3 or a.shape[2] != 3 or a.dtype != np.uint8:
        raise UsageError(f"{what}: expected an HxWx3 uint8 RGB frame, got {a.dtype} {a.shape}")
    return a


# --- embedding --------------------------------------------------------------------------------
class WatermarkEmbedder:
    """Adds the mark for one payload to frames, only inside each frame's region mask."""

    def __init__(self, payload: int, key: WatermarkKey) -> None:
        if not isinstance(payload, (int, np.integer)) or not 0 <= int(payload) < 2**PAYLOAD_BITS:
            raise UsageError(f"watermark payload must be an integer in [0, 2^{PAYLOAD_BITS}), got {payload!r}")
        self.payload = int(payload)
        self.key = key
        self._bits = _codeword(self.payload).astype(np.int8) * 2 - 1  # +-1 per coded bit
        self._values_cache: dict[int, np.ndarray] = {}
        self._deltas: dict[tuple[int, int], np.ndarray] = {}

    def _values(self, cols: int) -> np.ndarray:
        """+-1 target sign of every chip of a grid ``cols`` wide (pilot chips: their sign)."""
        v = self._values_cache.get(cols)
        if v is None:
            labels, signs = _chip_map(self.key.seed)
            labels, signs = labels[:, :cols], signs[:, :cols]
            v = (np.where(labels < 0, 1, self._bits[np.maximum(labels, 0)]) * signs).astype(np.float32)
            self._values_cache[cols] = v
        return v

    def delta(self, height: int, width: int) -> np.ndarray:
        """The full-frame float32 luma pattern (RMS = ``key.strength``) for frames of this size.

        The mark does not depend on the picture, so it is built once per frame size: chips on
        the canonical grid, inverse DCT, resampled onto the frame. (Cancelling the picture's own
        chip values at embed time was tried; it bought little on real faces for its cost.)
        """
        shape = (int(height), int(width))
        full = self._deltas.get(shape)
        if full is None:
            full = _to_frame(_idct_chips(self._values(_grid_cols(*shape))), shape)
            full *= self.key.strength / max(float(np.sqrt(np.mean(full * full))), 1e-6)
            self._deltas[shape] = full
        return full

    def embed(self, rgb: np.ndarray, region_mask: np.ndarray, frame_index: int) -> np.ndarray:
        """Return a marked copy of ``rgb`` (HxWx3 uint8); pixels where the mask is 0 are unchanged.

        ``region_mask`` is HxW (bool, or uint8 with nonzero = marked). The mark fades in over a
        few pixels inside the mask edge so its border is not a visible step, and its RMS inside
        the mask never exceeds ``key.strength``. ``frame_index`` is accepted for callers that
        track it; the mark carries the same bits on every frame, which is what lets the decoder
        pool frames without knowing their indices.
        """
        rgb = _check_rgb(rgb, "watermark embed")
        m = np.asarray(region_mask)
        if m.shape != rgb.shape[:2]:
            raise UsageError(f"watermark embed: mask {m.shape} does not match frame {rgb.shape[:2]}")
        m8 = (m > 0).astype(np.uint8)
        if not m8.any():
            return rgb.copy()
        ys, xs = np.nonzero(m8)
        y0, y1, x0, x1 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
        delta = self.delta(*rgb.shape[:2])[y0:y1, x0:x1].copy()
        sub = m8[y0:y1, x0:x1]
        # distance to the nearest unmarked pixel; pad so the crop border is not taken as an edge
        dist = cv2.distanceTransform(np.pad(sub, 1, constant_values=1), cv2.DIST_L2, 3)[1:-1, 1:-1]
        alpha = np.clip(dist / 3.0, 0.0, 1.0) * sub
        delta *= alpha
        keep = sub.astype(bool)
        rms = float(np.sqrt(np.mean(delta[keep] ** 2)))
        if rms > self.key.strength:  # the PSNR promise holds whatever the content
            delta *= self.key.strength / rms
        out = rgb.copy()
        patch = out[y0:y1, x0:x1].astype(np.float32) + delta[..., None]
        marked = np.clip(np.rint(patch), 0, 255).astype(np.uint8)
        # write back only mask pixels: the rest stays bit-identical by construction
        region = out[y0:y1, x0:x1]
        region[keep] = marked[keep]
        return out


def _idct_chips(chips: np.ndarray) -> np.ndarray:
    """(R, C, M) chip values -> canonical-resolution luma pattern (R*8, C*8)."""
    rows, cols = chips.shape[:2]
    coefs = np.zeros((rows, cols, _BLOCK, _BLOCK), np.float32)
    coefs[:, :, _CU, _CV] = chips
    d = _dct_matrix()
    blocks = np.einsum("ui,rcuv,vj->rcij", d, coefs, d, optimize=True)
    return blocks.transpose(0, 2, 1, 3).reshape(rows * _BLOCK, cols * _BLOCK)


def _to_frame(canon: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    # Cubic resampling keeps the pattern's frequencies where the decoder looks for them and
    # softens block edges a little.
    return cv2.resize(canon.astype(np.float32), (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)


def _frame_chips(y: np.ndarray, cols: int, rows: int = GRID_ROWS) -> np.ndarray:
    """Luma (any size) -> (rows, cols, M) chip values on the canonical grid, as decoded."""
    h, w = y.shape[:2]
    ch, cw = rows * _BLOCK, cols * _BLOCK
    interp = cv2.INTER_AREA if (h > ch and w > cw) else cv2.INTER_LINEAR
    canon = cv2.resize(y.astype(np.float32), (cw, ch), interpolation=interp)
    blocks = canon.reshape(rows, _BLOCK, cols, _BLOCK).transpose(0, 2, 1, 3)
    d = _dct_matrix()
    return np.einsum("ui,rcij,vj->rcuv", d, blocks, d, optimize=True)[:, :, _CU, _CV]


# --- decoding ---------------------------------------------------------------------------------
class WatermarkDecoder:
    """Accumulates soft evidence for the mark over frames; :meth:`result` decodes it."""

    def __init__(self, key: WatermarkKey) -> None:
        self.key = key
        self._llr = np.zeros(_CODED_BITS)
        self._var = np.zeros(_CODED_BITS)
        self._frames = 0

    def add_frame(self, rgb: np.ndarray, frame_index: int | None = None) -> None:
        """Add one decoded frame (HxWx3 uint8 RGB, any size with the marked video's aspect)."""
        rgb = _check_rgb(rgb, "watermark decode")
        cols = _grid_cols(*rgb.shape[:2])
        coefs = _frame_chips(_luma(rgb), cols)  # (R, C, M)
        labels, signs = _chip_map(self.key.seed)
        labels, signs = labels[:, :cols], signs[:, :cols]
        # local normalisation: a chip counts as much in a flat face as in busy background
        energy = np.mean(coefs * coefs, axis=2, keepdims=True)
        chips = coefs * signs / np.sqrt(energy + _NORM_FLOOR**2)
        pilot = labels < 0
        n_pilot = np.maximum(pilot.sum(axis=2), 1)
        p = np.where(pilot, chips, 0.0).sum(axis=2) / n_pilot
        p = cv2.blur(p.astype(np.float32), (_PILOT_SMOOTH, _PILOT_SMOOTH), borderType=cv2.BORDER_REFLECT)
        weight = np.maximum(p, 0.0)[:, :, None]
        data = ~pilot
        idx = labels[data].astype(np.int64)
        contrib = (chips * weight)[data]
        self._llr += np.bincount(idx, weights=contrib, minlength=_CODED_BITS)
        self._var += np.bincount(idx, weights=contrib * contrib, minlength=_CODED_BITS)
        self._frames += 1

    @property
    def frames_used(self) -> int:
        return self._frames

    def soft_bits(self) -> np.ndarray:
        """Per coded bit z-scores so far (positive = 1)."""
        return self._llr / np.sqrt(self._var + 1e-12)

    def result(self) -> WatermarkReading:
        """Decode what has been accumulated: found only when the CRC checks out."""
        if self._frames == 0 or not np.any(self._var > 0):
            return WatermarkReading(False, None, 0.0, self._frames, 0.0)
        z = self.soft_bits()
        info = _viterbi(z)
        payload = _bits_to_int(info[:PAYLOAD_BITS])
        crc = _bits_to_int(info[PAYLOAD_BITS:])
        ok = crc == _crc24(payload, PAYLOAD_BITS)
        # Self-calibrated margin: mean over spread of the evidence along the decoded codeword.
        # It does not trust the per-bit variances (static picture content is correlated across
        # frames, which inflates z-scores); pure noise gives 0.88 +- 0.03 here.
        agree = (_conv_encode(info).astype(np.float64) * 2 - 1) * z
        snr = float(np.mean(agree) / max(float(np.std(agree)), 1e-12))
        found = bool(ok) and snr >= _MIN_SNR
        confidence = float(np.clip((snr - 1.0) / 1.5, 0.0, 1.0))
        return WatermarkReading(found, payload if found else None, confidence, self._frames, snr)


def watermark_psnr(original: np.ndarray, marked: np.ndarray, mask: np.ndarray) -> float:
    """PSNR in dB of ``marked`` against ``original`` over the pixels of ``mask`` (all channels).

    Returns inf when the region is unchanged, and raises UsageError when the mask is empty.
    """
    a = np.asarray(original, dtype=np.float64)
    b = np.asarray(marked, dtype=np.float64)
    if a.shape != b.shape:
        raise UsageError(f"watermark_psnr: shapes differ {a.shape} vs {b.shape}")
    m = np.asarray(mask) > 0
    if m.shape != a.shape[:2]:
        raise UsageError(f"watermark_psnr: mask {m.shape} does not match frame {a.shape[:2]}")
    if not m.any():
        raise UsageError("watermark_psnr: empty mask")
    mse = float(np.mean((a[m] - b[m]) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0**2 / mse)
