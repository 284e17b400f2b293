"""The quality matrix benchmark (benchmarks/quality_matrix.py): its frozen standard set covers the
shared media as promised, ``--sample`` is seeded and spread, and the plain-warp reference puts
the source face on the plate's face and leaves the rest of the frame alone."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))

import quality_matrix as qm  # noqa: E402


def test_standard_set_uses_every_shared_photo_and_clip_at_least_twice(media_dir):
    photos = sorted(p.name for p in (media_dir / "images").iterdir() if p.is_file())
    clips = sorted(p.name for p in (media_dir / "videos").iterdir() if p.is_file())
    assert len(qm.STANDARD_SET) == 60 and len(set(qm.STANDARD_SET)) == 60
    by_photo, by_clip = Counter(p for p, _ in qm.STANDARD_SET), Counter(c for _, c in qm.STANDARD_SET)
    assert set(by_photo) == set(photos) and min(by_photo.values()) >= 2
    assert set(by_clip) == set(clips) and min(by_clip.values()) >= 2
    assert set(qm.SOURCE_FACE) <= set(photos)


def test_sample_is_seeded_and_spread_over_clips_and_photos():
    a = qm.spread_sample(qm.STANDARD_SET, 12, 14)
    assert a == qm.spread_sample(qm.STANDARD_SET, 12, 14)
    assert len(a) == 12 and set(a) <= set(qm.STANDARD_SET)
    assert len({c for _, c in a}) == 12 and len({p for p, _ in a}) == 12
    assert qm.spread_sample(qm.STANDARD_SET, 12, 15) != a


def test_montage_frames_put_reason_frames_first_and_spread_the_rest():
    assert qm.montage_frames([], 50) == [0, 16, 33, 49]
    assert qm.montage_frames([{"frames": [7, 8]}, {"frames": [40]}], 50) == [0, 7, 16, 40]
    assert qm.montage_frames([], 3) == [0, 1, 2]


def test_plain_warp_replaces_the_face_and_keeps_the_background(media_dir, tmp_path):
    from plain_warp import plain_warp

    from recast.media.synthetic import first_frames

    plate = first_frames(media_dir / "videos" / "dreamtalk_W009_front_happy_level3_001.mp4", 8, tmp_path / "plate.mp4", crf=16)
    out = tmp_path / "ref.mp4"
    info = plain_warp(media_dir / "images" / "deepface_img17.jpg", plate, out)
    assert info == {"frames": 8, "warped_frames": 8}
    a, b = qm.read_video(plate), qm.read_video(out)
    assert sorted(b) == list(range(8)) and b[0].shape == a[0].shape
    diff = np.abs(a[4].astype(int) - b[4].astype(int)).max(axis=2)
    h, w = diff.shape
    centre, corner = diff[h // 3: 2 * h // 3, w // 3: 2 * w // 3], diff[: h // 8, : w // 8]
    assert np.mean(centre > 24) > 0.3  # the face is another person's
    assert np.mean(corner > 24) < 0.01  # the background is the plate's (up to H.264)
