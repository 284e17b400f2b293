"""Watermark on real clips: survives H.264 crf 18 and a 720p crf 23 re-encode, invisible outside
the region, PSNR >= 38 dB inside it, and says "no mark" for unmarked video and a wrong key."""

from __future__ import annotations

import io

import av
import cv2
import numpy as np
import pytest

from recast.errors import UsageError
from recast.models.watermark import (
    WatermarkDecoder,
    WatermarkEmbedder,
    WatermarkKey,
    payload_from_id,
    watermark_psnr,
)

KEY = WatermarkKey(seed=20240611)
PAYLOAD = payload_from_id("3f2c9a4e-0b7d-4a51-9d1e-6c0f2b8a7e11")
FRAMES = 24  # decoding needs ~5 frames on these clips; the rest is margin


def _read(path, n, size=None):
    out = []
    with av.open(str(path)) as c:
        for i, f in enumerate(c.decode(video=0)):
            if i >= n:
                break
            a = f.to_ndarray(format="rgb24")
            out.append(a if size is None else cv2.resize(a, size, interpolation=cv2.INTER_CUBIC))
    return out


def _h264(frames, crf, size=None):
    """Encode with libx264 (yuv420p) in mp4, optionally scaled by swscale, and decode back."""
    buf = io.BytesIO()
    h, w = frames[0].shape[:2]
    with av.open(buf, "w", format="mp4") as out:
        s = out.add_stream("libx264", rate=25)
        s.width, s.height = size or (w, h)
        s.pix_fmt = "yuv420p"
        s.codec_context.options = {"crf": str(crf), "preset": "veryfast"}
        for a in frames:
            f = av.VideoFrame.from_ndarray(a, format="rgb24")
            f = f.reformat(width=s.width, height=s.height, format="yuv420p", interpolation="BICUBIC")
            for p in s.encode(f):
                out.mux(p)
        for p in s.encode(None):
            out.mux(p)
    buf.seek(0)
    with av.open(buf) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def _head_masks(n, shape, center, axes):
    """A face-sized ellipse drifting like a moving head."""
    out = []
    for i in range(n):
        m = np.zeros(shape, np.uint8)
        c = (int(center[0] + 0.08 * axes[0] * np.sin(i / 7)), int(center[1] + 0.05 * axes[1] * np.cos(i / 9)))
        cv2.ellipse(m, c, axes, 0, 0, 360, 255, -1)
        out.append(m)
    return out


def _decode(frames, key=KEY):
    d = WatermarkDecoder(key)
    for f in frames:
        d.add_frame(f)
    return d.result()


@pytest.fixture(scope="module")
def square_clip(media_dir):
    """512x512 talking head, marked inside a moving face ellipse."""
    frames = _read(media_dir / "videos" / "liveportrait_d0.mp4", FRAMES)
    masks = _head_masks(len(frames), frames[0].shape[:2], (256, 250), (110, 145))
    emb = WatermarkEmbedder(PAYLOAD, KEY)
    marked = [emb.embed(f, m, i) for i, (f, m) in enumerate(zip(frames, masks))]
    return frames, masks, marked


@pytest.fixture(scope="module")
def hd_clip(media_dir):
    """A 1280x720 shot upscaled to a 1920x1080 'master' and marked on the head."""
    frames = _read(media_dir / "videos" / "liveportrait_s18.mp4", FRAMES, size=(1920, 1080))
    masks = _head_masks(len(frames), frames[0].shape[:2], (1140, 330), (150, 200))
    emb = WatermarkEmbedder(PAYLOAD, KEY)
    marked = [emb.embed(f, m, i) for i, (f, m) in enumerate(zip(frames, masks))]
    return frames, masks, marked


@pytest.mark.slow
def test_only_the_region_changes_and_psnr_inside_is_high(square_clip, hd_clip):
    for frames, masks, marked in (square_clip, hd_clip):
        for f, m, g in zip(frames, masks, marked):
            assert np.array_equal(f[m == 0], g[m == 0])  # bit-identical outside the head
            assert watermark_psnr(f, g, m) >= 38.0
            assert not np.array_equal(f[m > 0], g[m > 0])


def test_decodes_after_h264_crf18(square_clip, hd_clip):
    for _, _, marked in (square_clip, hd_clip):
        r = _decode(_h264(marked, 18))
        assert r.found and r.payload == PAYLOAD
        assert r.frames_used == FRAMES and r.confidence > 0.3


def test_decodes_from_few_frames(square_clip):
    r = _decode(_h264(square_clip[2][:6], 18))
    assert r.found and r.payload == PAYLOAD


@pytest.mark.slow
def test_decodes_after_720p_crf23_reencode(square_clip, hd_clip):
    # delivery: the crf 18 deliverable re-encoded to 720p at crf 23 (1080p -> 1280x720;
    # the square 512 clip -> 720x720); the decoder is not told the original size
    hd = _h264(_h264(hd_clip[2], 18), 23, size=(1280, 720))
    assert hd[0].shape[:2] == (720, 1280)
    r = _decode(hd)
    assert r.found and r.payload == PAYLOAD
    sq = _h264(_h264(square_clip[2], 18), 23, size=(720, 720))
    r = _decode(sq)
    assert r.found and r.payload == PAYLOAD


def test_unmarked_video_and_wrong_key_find_nothing(square_clip):
    frames, _, marked = square_clip
    r = _decode(_h264(frames, 18))
    assert not r.found and r.payload is None and r.confidence < 0.1
    coded = _h264(marked, 18)
    for seed in (KEY.seed + 1, 7):
        r = _decode(coded, WatermarkKey(seed=seed))
        assert not r.found and r.payload is None


def test_empty_mask_and_bad_inputs(square_clip):
    frames = square_clip[0]
    emb = WatermarkEmbedder(PAYLOAD, KEY)
    empty = np.zeros(frames[0].shape[:2], np.uint8)
    assert np.array_equal(emb.embed(frames[0], empty, 0), frames[0])
    assert not WatermarkDecoder(KEY).result().found
    with pytest.raises(UsageError):
        emb.embed(frames[0], empty[:10], 0)
    with pytest.raises(UsageError):
        WatermarkEmbedder(2**64, KEY)
    with pytest.raises(UsageError):
        WatermarkKey(seed=1, strength=0)
    with pytest.raises(UsageError):
        watermark_psnr(frames[0], frames[0], empty)


def test_payload_from_id_is_stable_64_bit():
    a = payload_from_id("3f2c9a4e-0b7d-4a51-9d1e-6c0f2b8a7e11")
    assert a == PAYLOAD and 0 <= a < 2**64
    assert payload_from_id("another") != a
