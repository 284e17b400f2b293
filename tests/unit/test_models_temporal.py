"""Temporal smoothing, scene cuts and mask voting on real clips from ../shared/media."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter1d

from recast.errors import UsageError
from recast.models import temporal as tp

VIDEOS = Path(os.environ.get("RECAST_TEST_MEDIA", Path(__file__).resolve().parents[2].parent / "shared" / "media")) / "videos"


def _video(name: str) -> Path:
    p = VIDEOS / name
    if not p.exists():
        pytest.skip(f"test media missing: {p}")
    return p


@lru_cache(maxsize=None)
def signatures(name: str) -> np.ndarray:
    import av

    with av.open(str(_video(name))) as c:
        return np.stack([tp.frame_signature(f.to_ndarray(format="rgb24")) for f in c.decode(video=0)])


@lru_cache(maxsize=None)
def video_landmarks(name: str, n: int) -> np.ndarray:
    """(n, 478, 3) MediaPipe landmarks (static mode: every frame on its own, so they jitter)."""
    import av
    import mediapipe as mp

    fm = mp.solutions.face_mesh.FaceMesh(static_image_mode=True, refine_landmarks=True, max_num_faces=1)
    out = []
    with av.open(str(_video(name))) as c:
        for i, f in enumerate(c.decode(video=0)):
            if i >= n:
                break
            rgb = f.to_ndarray(format="rgb24")
            res = fm.process(rgb)
            h, w = rgb.shape[:2]
            out.append(np.full((478, 3), np.nan) if not res.multi_face_landmarks else
                       np.array([[p.x * w, p.y * h, p.z * w] for p in res.multi_face_landmarks[0].landmark]))
    fm.close()
    return np.stack(out)


def jitter(lm: np.ndarray, reference: np.ndarray) -> float:
    """Mean frame-to-frame change of the residual about a smooth trajectory (pixels, x/y)."""
    res = lm[..., :2] - reference[..., :2]
    return float(np.linalg.norm(np.diff(res, axis=0), axis=-1).mean())


# --- One-Euro --------------------------------------------------------------------------------------
def test_one_euro_vectorised_and_reset():
    f = tp.OneEuroFilter(30.0, min_cutoff=1.0, beta=0.0)
    x = np.zeros((478, 3))
    assert np.array_equal(f(x), x)
    y = f(x + 1.0)
    assert y.shape == (478, 3) and np.allclose(y, y.flat[0]) and 0 < y.flat[0] < 1  # low-passed
    f.reset()
    assert np.array_equal(f(x + 5.0), x + 5.0)
    # a higher beta follows a moving signal more closely
    ramp = np.arange(60, dtype=float)[:, None] * 2.0
    lag = {b: (ramp - tp.OneEuroFilter(30.0, 1.0, b).filter(ramp))[-1, 0] for b in (0.0, 1.0)}
    assert lag[1.0] < lag[0.0] / 3
    with pytest.raises(UsageError):
        tp.OneEuroFilter(0.0)


# --- landmarks -----------------------------------------------------------------------------------------
def _acceleration(lm: np.ndarray, smooth_passes: int = 0) -> float:
    """Mean |x[t+1] - 2 x[t] + x[t-1]| of the x/y landmarks, after ``smooth_passes`` of a 1-2-1
    binomial filter (two passes leave a talking head's 1-5 Hz motion and remove frame noise)."""
    xy = lm[..., :2]
    for _ in range(smooth_passes):
        xy = np.concatenate([xy[:1], (xy[:-2] + 2 * xy[1:-1] + xy[2:]) / 4.0, xy[-1:]])
    xy = xy[2:-2] if smooth_passes else xy
    return float(np.linalg.norm(xy[2:] - 2 * xy[1:-1] + xy[:-2], axis=-1).mean())


def test_smooth_landmarks_removes_frame_noise_and_keeps_the_actors_motion_on_real_video():
    lm = video_landmarks("sadtalker_WDA_AlexandriaOcasioCortez_000.mp4", 80)
    assert np.isfinite(lm).all()
    out = tp.smooth_landmarks(lm, 25.0)
    # frame-to-frame noise (the raw acceleration) goes down...
    noise = _acceleration(out) / _acceleration(lm)
    # ...while the motion (head turns, mouth), measured as QC's motion ratio does, stays: the
    # swap must move as the plate does (earlier defaults, 1 Hz / beta 2, kept only ~0.6 of it)
    motion = _acceleration(out, 2) / _acceleration(lm, 2)
    assert noise < 0.8 and motion > 0.8, (noise, motion)
    old = tp.smooth_landmarks(lm, 25.0, min_cutoff=1.0, beta=2.0)
    assert _acceleration(old, 2) / _acceleration(lm, 2) < 0.75  # what the test guards against
    # and it does not drift from the data
    assert np.linalg.norm(out - lm, axis=-1).mean() < 1.0


def test_fast_motion_followed_without_lag():
    fps = 30.0
    t = np.arange(90)
    x = np.where(t < 45, 0.0, 60.0)  # a 60 px (1 IOD) jump between frames 44 and 45
    lm = np.zeros((90, 478, 3))
    lm[:, :, 0] = x[:, None]
    lm[:, [263, 362], 0] += 60.0  # IOD of 60 px
    out = tp.smooth_landmarks(lm, fps)[:, 0, 0]
    half = np.flatnonzero(out >= 30.0)[0]
    assert abs((half - 0.5) - 44.5) < 1.0  # the 50 % crossing is within a frame of the jump
    # a fast sweep (3 IOD/s) is followed within 1 frame of motion
    sweep = np.zeros((60, 478, 3))
    sweep[:, :, 0] = (np.arange(60) * 6.0)[:, None]
    sweep[:, [263, 362], 0] += 60.0
    err = np.abs(tp.smooth_landmarks(sweep, fps)[5:-5, 0, 0] - sweep[5:-5, 0, 0])
    assert err.max() < 6.0


def test_cuts_and_gaps_reset_the_filter():
    lm = np.zeros((40, 478, 3))
    lm[:, [263, 362], 0] = 60.0
    lm[20:] += 100.0  # a different framing after the cut at 20
    out = tp.smooth_landmarks(lm, 25.0, cuts=[20])
    np.testing.assert_allclose(out, lm, atol=1e-9)  # nothing leaks across the cut
    lm[10:12] = np.nan
    out = tp.smooth_landmarks(lm, 25.0, cuts=[20])
    assert np.isnan(out[10:12]).all() and np.isfinite(out[:10]).all() and np.isfinite(out[12:]).all()
    np.testing.assert_allclose(out[19], lm[19], atol=1e-9)
    smeared = tp.smooth_landmarks(np.where(np.isnan(lm), 0, lm), 25.0)  # without the cut: smeared
    assert abs(smeared[19, 0, 0] - lm[19, 0, 0]) > 1.0


# --- series (colour statistics) ------------------------------------------------------------------
def test_smooth_series_removes_pumping_but_not_cuts():
    rng = np.random.default_rng(0)
    f = 100
    base = np.where(np.arange(f) < 50, 50.0, 70.0)[:, None] * np.ones((1, 6))
    noisy = base + rng.normal(0, 2.0, (f, 6))
    out = tp.smooth_series(noisy, 25.0, cuts=[50])
    assert np.abs(np.diff(out[5:45], axis=0)).mean() < 0.25 * np.abs(np.diff(noisy[5:45], axis=0)).mean()
    assert abs(out[49:45:-1].mean() - 50) < 2 and abs(out[50:54].mean() - 70) < 2
    noisy[30] = np.nan
    assert np.isnan(tp.smooth_series(noisy, 25.0)[30]).all()
    assert tp.smooth_series(noisy[:, 0], 25.0).shape == (f,)


# --- scene cuts --------------------------------------------------------------------------------------
def test_scene_cuts_on_music_video():
    sig = signatures("ghost_nggyup.mp4")
    d = tp.signature_distances(sig)
    cuts = tp.scene_cuts(sig)
    # the clip cuts from the brick-wall set to the white set at 22 and back at 93 (looked at);
    # within shots the largest distance is 0.29 (frame 202: flicker while he moves)
    assert cuts == [22, 93]
    assert all(d[c] > 0.5 for c in cuts)
    inside = np.delete(d, cuts)
    assert inside.max() < 0.35 and all(d[c] > 5 * np.median(d) for c in cuts)
    assert tp.detect_scene_cuts(sig) == cuts


def test_could_start_shot_flags_every_cut_and_few_other_frames():
    """The segment stage embeds faces where could_start_shot holds: it must hold on every cut
    scene_cuts finds (frame by frame, without the frames around), and rarely elsewhere (cost)."""
    sig = signatures("ghost_nggyup.mp4")
    flagged = [t for t in range(1, len(sig)) if tp.could_start_shot(sig[t - 1], sig[t])]
    assert set(tp.scene_cuts(sig)) <= set(flagged) and len(flagged) == 2
    steady = signatures("liveportrait_d0.mp4")
    assert not any(tp.could_start_shot(a, b) for a, b in zip(steady[:-1], steady[1:]))
    with pytest.raises(UsageError):
        tp.could_start_shot(sig[0], sig[0][:10])


def test_no_cuts_in_continuous_clips():
    for name in ("liveportrait_d0.mp4", "liveportrait_d6_first12s.mp4"):
        assert tp.scene_cuts(signatures(name)) == [], name


def test_detect_scene_cuts_from_frames():
    rng = np.random.default_rng(1)
    a = np.full((5, 48, 64, 3), (200, 40, 40), np.uint8)
    b = np.full((5, 48, 64, 3), (30, 60, 220), np.uint8)
    frames = np.concatenate([a, b]) + rng.integers(0, 6, (10, 48, 64, 3)).astype(np.uint8)
    assert tp.detect_scene_cuts(frames) == [5]
    assert tp.detect_scene_cuts(list(frames)) == [5]


# --- masks -----------------------------------------------------------------------------------------------
def test_smooth_masks_removes_flicker_not_across_cuts():
    m = np.zeros((12, 8, 8), bool)
    m[:, 2:6, 2:6] = True
    m[4, 2:6, 2:6] = False   # a one-frame dropout
    m[7, 0, 0] = True         # a one-frame speck
    m[9:, :, :] = False       # new shot at 9 with no mask
    m[9, 3, 3] = True
    out = tp.smooth_masks(m, cuts=[9], radius=1)
    assert out[4, 2:6, 2:6].all() and not out[7, 0, 0]
    assert not out[10:].any() and out[9].sum() == 1  # the old shot's mask does not leak past the cut
    assert out[8, 2:6, 2:6].all()              # nor the new shot's emptiness back
    assert out.dtype == bool
    soft = (m * 255).astype(np.uint8)
    outs = tp.smooth_masks(soft, cuts=[9])
    assert outs.dtype == np.uint8 and (outs[4, 2:6, 2:6] == 255).all()


def test_fill_gaps_interpolates_inside_and_holds_the_ends():
    from recast.models.temporal import fill_gaps

    v = np.array([[np.nan, np.nan], [1.0, np.nan], [np.nan, np.nan], [3.0, np.nan], [np.nan, np.nan]])
    out = fill_gaps(v)
    assert out[:, 0].tolist() == [1.0, 1.0, 2.0, 3.0, 3.0]
    assert out[:, 1].tolist() == [0.0] * 5  # a column never known: a flat zero signal
    assert np.isnan(v).sum() == 8  # the input is left as it was
