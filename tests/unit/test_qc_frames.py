"""QC's per-frame measurements of a chunk (recast.models.qc_frames) on a real talking-head clip."""

from __future__ import annotations

import numpy as np
import pytest

from recast.media import read_all_frames
from recast.models.face import FaceAnalyzer
from recast.models.qc_frames import QC_POINTS, SEAM_EVERY, ChunkObservations, observe_chunk
from tests.conftest import VIDEOS

N = 12
SHIFTED = 7  # the frame whose face the "output" moves
SHIFT_PX = 12


@pytest.fixture(scope="module")
def plate(media_dir):
    frames = read_all_frames(VIDEOS / "liveportrait_d0.mp4", role="plate")[:N]
    with FaceAnalyzer(static_images=False, max_faces=1) as fa:
        faces = [fa.detect(f)[0] for f in frames]
    lms = np.stack([f.landmarks for f in faces]).astype(np.float32)
    boxes = np.array([f.box for f in faces], float)
    return frames, lms, boxes


def _output(frames: np.ndarray, boxes: np.ndarray):
    """A "swap" that changes a box around the face on every frame (a slight tint) and, on one
    frame, moves the face inside the box to the right."""
    x0, y0 = int(boxes[:, 0].min()) - 20, int(boxes[:, 1].min()) - 20
    x1, y1 = int(boxes[:, 2].max()) + 20, int(boxes[:, 3].max()) + 20
    change = np.zeros((N,) + frames.shape[1:3], bool)
    change[:, y0:y1, x0:x1] = True
    out = frames.copy()
    out[:, y0:y1, x0:x1] = np.clip(out[:, y0:y1, x0:x1].astype(int) + 6, 0, 255).astype(np.uint8)
    out[SHIFTED, y0:y1, x0 + SHIFT_PX:x1] = out[SHIFTED, y0:y1, x0:x1 - SHIFT_PX].copy()
    return out, change


def test_output_landmarks_come_from_the_output_pixels(plate, tmp_path):
    frames, lms, boxes = plate
    out, change = _output(frames, boxes)
    exclude = np.zeros_like(change)
    obs = observe_chunk(start=0, plate_frames=iter(frames), out_frames=iter(out), exclude=exclude, change=change,
                        plate_boxes=boxes, face_found=np.ones(N, bool), plate_landmarks=lms)
    assert obs.out_landmarks.shape == (N, QC_POINTS, 3) and np.isfinite(obs.out_landmarks).all()
    dx = obs.out_landmarks[:, :, 0].mean(axis=1) - lms[:, :QC_POINTS, 0].mean(axis=1)
    assert abs(dx[SHIFTED] - SHIFT_PX) < 3, dx
    others = np.delete(dx, SHIFTED)
    assert np.abs(others).max() < 3, dx
    assert obs.swapped.all()
    # nothing outside the changed box moved: background PSNR is the cap on every frame
    assert np.allclose(obs.background_psnr, 100.0)
    # the seam is measured on every SEAM_EVERY-th frame only
    measured = np.flatnonzero(np.isfinite(obs.seam))
    assert list(measured) == [i for i in range(N) if i % SEAM_EVERY == 0]
    # flicker: the moved face is a one-frame jump the plate does not have
    assert obs.flicker_output[SHIFTED] > 2 * obs.flicker_plate[SHIFTED]
    assert obs.flicker_sums[1] > 0 and obs.flicker_sums[3] > 0
    again = ChunkObservations.load(obs.save(tmp_path / "obs.npz"))
    assert again.start == 0 and len(again) == N
    assert np.array_equal(again.out_landmarks, obs.out_landmarks, equal_nan=True)
    assert np.array_equal(again.seam, obs.seam, equal_nan=True)


def test_background_change_outside_the_swap_lowers_that_frame_only(plate):
    frames, lms, boxes = plate
    out, change = _output(frames, boxes)
    out[3, :40, :40] = 0  # a corner of the background blacked out on frame 3
    obs = observe_chunk(start=100, plate_frames=frames, out_frames=out, exclude=np.zeros_like(change), change=change,
                        plate_boxes=boxes, face_found=np.ones(N, bool), plate_landmarks=lms, out_landmarks=lms)
    assert obs.background_psnr[3] < 40
    assert np.allclose(np.delete(obs.background_psnr, 3), 100.0)
    # known output landmarks are taken as given (468 points kept), no tracker runs
    assert np.array_equal(obs.out_landmarks, lms[:, :QC_POINTS])
    # the seam follows the shot's frame numbers, not the chunk's
    assert list(np.flatnonzero(np.isfinite(obs.seam))) == [i for i in range(N) if (100 + i) % SEAM_EVERY == 0]


def test_a_chunk_with_missing_frames_is_refused(plate):
    frames, lms, boxes = plate
    out, change = _output(frames, boxes)
    with pytest.raises(ValueError, match="11 frame pairs for 12 masks"):
        observe_chunk(start=0, plate_frames=frames[:11], out_frames=out[:11], exclude=np.zeros_like(change), change=change,
                      plate_boxes=boxes, face_found=np.ones(N, bool), plate_landmarks=lms, out_landmarks=lms)


def test_what_the_swap_invented_is_measured_in_percent_of_the_face_box_on_swapped_frames_only(plate, tmp_path):
    frames, lms, boxes = plate
    out, change = _output(frames, boxes)
    change[5] = False  # frame 5 passed through: nothing is judged there
    out[5] = frames[5]
    guessed = np.zeros_like(change)
    x0, y0, x1, y1 = boxes[2].astype(int)
    guessed[2, y0:y0 + (y1 - y0) // 2, x0:x1] = True  # half the face box's height invented on frame 2
    obs = observe_chunk(start=0, plate_frames=frames, out_frames=out, exclude=np.zeros_like(change), change=change,
                        plate_boxes=boxes, face_found=np.ones(N, bool), plate_landmarks=lms, out_landmarks=lms, guessed=guessed)
    area = (boxes[2, 2] - boxes[2, 0]) * (boxes[2, 3] - boxes[2, 1])
    assert obs.guessed_fill[2] == pytest.approx(100.0 * guessed[2].sum() / area) and 40 < obs.guessed_fill[2] < 60
    assert np.isnan(obs.guessed_fill[5]) and (np.delete(obs.guessed_fill, [2, 5]) == 0).all()
    again = ChunkObservations.load(obs.save(tmp_path / "obs.npz"))
    assert np.array_equal(again.guessed_fill, obs.guessed_fill, equal_nan=True)
    # an engine that says nothing about it (or a pair of files measured by `recast qc`): unknown
    unknown = observe_chunk(start=0, plate_frames=frames, out_frames=out, exclude=np.zeros_like(change), change=change,
                            plate_boxes=boxes, face_found=np.ones(N, bool), plate_landmarks=lms, out_landmarks=lms)
    assert np.isnan(unknown.guessed_fill).all()
