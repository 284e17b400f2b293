"""Typed stage artefacts (recast.media.artifacts): what a stage saves is what the next one loads,
a file of another layout is refused, and masks are stored packed."""

from __future__ import annotations

import dataclasses
from fractions import Fraction

import cv2
import numpy as np
import pytest

from recast.errors import InputError
from recast.media import artifacts as A
from recast.models.head import SourceHead

N, H, W = 12, 240, 320  # a chunk of a small plate
M = 4  # face slots a frame


def _blobs(n: int, h: int, w: int, seed: int) -> np.ndarray:
    """Person-like masks: a filled ellipse per frame that drifts (what segmentation produces)."""
    rng = np.random.default_rng(seed)
    out = np.zeros((n, h, w), np.uint8)
    cx, cy = w // 2, h // 2
    for i in range(n):
        cx += int(rng.integers(-3, 4))
        cv2.ellipse(out[i], (cx, cy), (w // 6, h // 3), 0, 0, 360, 1, -1)
    return out.astype(bool)


def _landmarks(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.random((n, 478, 3)) * [W, H, 30]).astype(np.float32)


def _plate_analysis() -> A.PlateAnalysis:
    rng = np.random.default_rng(0)
    lms = np.full((N, M, 478, 3), np.nan, np.float32)
    lms[:, 0] = _landmarks(N, 1)
    lms[3:6, 1] = _landmarks(3, 2)
    counts = np.ones(N, np.int16)
    counts[3:6] = 2
    boxes = np.zeros((N, M, 4), np.int32)
    boxes[:, 0] = [100, 60, 200, 180]
    stats = np.full((N, M, 5, 6), np.nan, np.float32)
    stats[:, 0] = rng.random((N, 5, 6))
    return A.PlateAnalysis(faces_landmarks=lms, faces_boxes=boxes, face_count=counts, skin_stats=stats,
                           signatures=rng.random((N, 64)).astype(np.float32), embedding_index=np.array([[0, 0], [3, 0], [3, 1]], np.int32),
                           embeddings=rng.random((3, 128)).astype(np.float32), person_mask=_blobs(N, H, W, 3))


def _source(head: bool) -> A.SourceAnalysis:
    rng = np.random.default_rng(4)
    sh = None
    if head:
        alpha = cv2.GaussianBlur(_blobs(1, 200, 160, 5)[0].astype(np.float32), (9, 9), 0)
        sh = SourceHead(rgb=rng.integers(0, 256, (200, 160, 3), dtype=np.uint8), landmarks=_landmarks(1, 6)[0], alpha=alpha,
                        hair=_blobs(1, 200, 160, 7)[0], neck_line=np.array([[40.0, 180.0], [120.0, 182.0]], np.float32))
    return A.SourceAnalysis(landmarks=_landmarks(1, 8)[0], box=(30, 40, 150, 190), head=sh,
                            embedding=rng.random(128) if head else None)  # with and without the embedding


def _tracks() -> A.ShotTracks:
    raw = _landmarks(N, 9)
    raw[7] = np.nan
    chosen = np.zeros(N, np.int16)
    chosen[7] = -1
    return A.ShotTracks(landmarks=raw + 0.25, raw_landmarks=raw, chosen=chosen, boxes=np.tile(np.array([100, 60, 200, 180], np.int32), (N, 1)),
                        skin_stats=np.random.default_rng(10).random((N, 5, 6)).astype(np.float32), cuts=np.array([5], np.int32))


def _qc_per_frame() -> A.QCPerFrame:
    rng = np.random.default_rng(11)
    f = rng.random(N)
    nan = np.full(N, np.nan)
    d = nan.copy()
    d[::4] = 0.3
    return A.QCPerFrame(swapped=np.ones(N, bool), face_found=np.arange(N) != 7, sampled=np.array([0, 4, 8]), d_source=d, d_plate=d + 0.5,
                        similarity_source=nan, similarity_plate=nan, transferred=~np.isnan(d), pose_plate=rng.random((N, 3)),
                        pose_output=rng.random((N, 3)), pose_error=f, expression_error=f, jitter_excess=f, flicker_output=f,
                        flicker_plate=f, flicker_ratio=f, seam=nan, background_psnr=np.full(N, 45.0), hair=nan, badness=f,
                        identity_match_distance=0.6,
                        reasons=({"metric": "seam_score", "value": 1.9, "threshold": 1.5, "outcome": "review", "frames": [3, 4], "text": "seam"},),
                        thresholds={"seam_review": 1.5, "identity_pass": 0.9})


ARTEFACTS = {
    "PlateTiming": lambda: A.PlateTiming(pts=np.arange(0, N * 1001, 1001), time_base=Fraction(1, 30000)),
    "PlateAnalysis": _plate_analysis,
    "SourceAnalysis face": lambda: _source(False),
    "SourceAnalysis head": lambda: _source(True),
    "ShotTracks": _tracks,
    "ExpressionTargets": lambda: A.ExpressionTargets(targets=_landmarks(N, 12), valid=np.arange(N) != 7),
    "BackgroundKnown": lambda: A.BackgroundKnown(known=~_blobs(N, H, W, 13)),
    "SwapMatte": lambda: A.SwapMatte(mask=_blobs(N, H, W, 14)),
    "QCPerFrame": _qc_per_frame,
}


def _same(a, b) -> bool:
    if dataclasses.is_dataclass(a):
        return type(a) is type(b) and all(_same(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a))
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        a, b = np.asarray(a), np.asarray(b)
        return a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a, b, equal_nan=a.dtype.kind == "f")
    return a == b


@pytest.mark.parametrize("name", list(ARTEFACTS))
def test_what_a_stage_saves_is_what_the_next_loads(name, tmp_path):
    art = ARTEFACTS[name]()
    path = art.save(tmp_path / "artefact")
    assert path.suffix == ".npz" and path.is_file()
    back = type(art).load(path)
    assert _same(art, back), name


def test_masks_are_bool_in_memory_and_packed_on_disk(tmp_path):
    matte = A.SwapMatte(mask=_blobs(N, H, W, 14))
    path = matte.save(tmp_path / "matte.npz")
    raw = matte.mask.nbytes  # one byte a pixel
    assert path.stat().st_size < raw / 8  # packed bits, then compressed
    back = A.SwapMatte.load(path)
    assert back.mask.dtype == bool and back.mask.shape == (N, H, W)
    with np.load(path) as z:
        assert all(z[k].dtype != bool for k in z.files)  # nothing stored a byte a pixel


def test_a_file_of_another_format_version_is_refused(tmp_path, monkeypatch):
    path = A.SwapMatte(mask=_blobs(2, 20, 30, 1)).save(tmp_path / "matte.npz")
    monkeypatch.setattr(A.SwapMatte, "FORMAT_VERSION", A.SwapMatte.FORMAT_VERSION + 1)
    with pytest.raises(InputError, match=r"SwapMatte '.*matte.npz' has format version 1, this recast reads version 2: run the stage"):
        A.SwapMatte.load(path)


def test_a_file_of_another_kind_or_an_untyped_file_is_refused(tmp_path):
    path = A.SwapMatte(mask=_blobs(2, 20, 30, 1)).save(tmp_path / "matte.npz")
    with pytest.raises(InputError, match="holds SwapMatte, not a BackgroundKnown"):
        A.BackgroundKnown.load(path)
    # the layout stages wrote before artefacts were typed: keys only, no kind or version
    old = tmp_path / "old.npz"
    np.savez_compressed(old, mask_bits=np.packbits(np.ones(8, bool)), mask_shape=np.array([1, 2, 4]))
    with pytest.raises(InputError, match="holds an untyped array file, not a SwapMatte"):
        A.SwapMatte.load(old)
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip")
    with pytest.raises(InputError, match="not a readable npz"):
        A.SwapMatte.load(junk)


def test_inconsistent_arrays_are_refused_when_built():
    a = _plate_analysis()
    with pytest.raises(ValueError, match="PlateAnalysis.person_mask: 11 frames, expected 12"):
        dataclasses.replace(a, person_mask=a.person_mask[:11])
    with pytest.raises(ValueError, match="expected bool"):
        A.SwapMatte(mask=np.zeros((2, 4, 4), np.uint8))
    with pytest.raises(ValueError, match="ExpressionTargets.valid: 3 frames, expected 12"):
        A.ExpressionTargets(targets=_landmarks(N, 1), valid=np.ones(3, bool))


def test_tracks_present_follows_the_chosen_slot():
    t = _tracks()
    assert t.present.tolist() == [i != 7 for i in range(N)]


def test_chunk_analyses_concatenate_into_the_shot():
    a = _plate_analysis()
    no_faces = dataclasses.replace(a, skin_stats=np.zeros((N, M, 0, 6), np.float32))  # a chunk without faces: no regions
    shot = A.PlateAnalysis.concat([a, no_faces])
    assert len(shot) == 2 * N and np.array_equal(shot.person_mask, np.concatenate([a.person_mask, a.person_mask]))
    # the second chunk's embedding frames are counted from the shot's start
    assert shot.embedding_index.tolist() == [[0, 0], [3, 0], [3, 1], [N, 0], [N + 3, 0], [N + 3, 1]]
    assert np.array_equal(shot.embeddings[3:], a.embeddings)
    # the chunk measured in no region gets NaN statistics of the others' width
    assert shot.skin_stats.shape == (2 * N, M, 5, 6) and np.isnan(shot.skin_stats[N:]).all()
    assert np.array_equal(shot.skin_stats[:N], a.skin_stats, equal_nan=True)
    without = A.PlateAnalysis.concat([a, a], with_person_mask=False)
    assert without.person_mask.shape == (2 * N, 0, 0) and np.array_equal(without.faces_landmarks, shot.faces_landmarks, equal_nan=True)
