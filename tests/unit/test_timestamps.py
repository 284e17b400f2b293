"""Plates whose frames all carry one timestamp are re-timed from the nominal rate at ingest, and
the ingest line says so (copied as they were, every frame of the deliverable sat at 0 s)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest


def zero_stamped_plate(path: Path, n: int = 12, rate: int = 25, *, zero: bool = True) -> Path:
    """An H.264 clip whose packets are all stamped pts = dts = 0 (what some muxers write, and
    what encoding frames without a pts gives); ``zero=False``: the encoder's own timestamps."""
    out = av.open(str(path), "w")
    s = out.add_stream("libx264", rate=rate)
    s.width, s.height, s.pix_fmt = 64, 64, "yuv420p"
    s.options = {"bf": "0"}
    packets = []
    for i in range(n):
        frame = av.VideoFrame.from_ndarray(np.full((64, 64, 3), 10 * i, np.uint8), format="rgb24")
        frame.pts = i
        packets += s.encode(frame)
    packets += s.encode()
    for p in packets:
        if zero:
            p.pts = p.dts = 0
        out.mux(p)
    out.close()
    return path


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_all_zero_timestamps_are_retimed_from_the_nominal_rate(tmp_path, suffix):
    from recast.media import probe_media, read_timing
    from recast.media.probe import timing_note

    plate = zero_stamped_plate(tmp_path / f"zero{suffix}")
    with av.open(str(plate)) as c:
        assert {p.pts for p in c.demux(c.streams.video[0]) if p.size} == {0}  # the file really says 0 for all
    pts, tb = read_timing(plate)
    seconds = [float(x * tb) for x in pts]
    assert seconds == pytest.approx([i / 25 for i in range(12)])
    info = probe_media(plate, role="plate")
    assert info.frame_count == 12 and not info.variable_frame_rate
    assert Fraction(info.avg_rate.num, info.avg_rate.den) == 25
    note = timing_note(plate)
    assert note is not None and "all 12 frames stamped 0" in note and "re-timed at 25 fps" in note


def test_a_normal_plate_keeps_its_own_timestamps(tmp_path):
    from recast.media import read_timing
    from recast.media.probe import timing_note

    plate = zero_stamped_plate(tmp_path / "normal.mp4", zero=False)
    with av.open(str(plate)) as c:
        stream = c.streams.video[0]
        own, own_tb = sorted(p.pts for p in c.demux(stream) if p.size), Fraction(stream.time_base)
    pts, tb = read_timing(plate)
    assert timing_note(plate) is None and list(pts) == own and tb == own_tb


@pytest.mark.slow
def test_ingest_line_says_the_plate_was_retimed(recast_env, tmp_path, capsys):
    from recast.db.migrate import ensure_schema
    from recast.media.artifacts import PlateTiming
    from recast.storage import open_store
    from recast.tasks.ingest import ingest
    from tests.conftest import IMAGES

    ensure_schema()
    plate = zero_stamped_plate(tmp_path / "zero.mp4")
    result = ingest(run_id=None, shot_id=None, plate=str(plate), sources=[str(IMAGES / "deepface_img17.jpg")], chunk_size=8)
    line = [x for x in capsys.readouterr().err.splitlines() if x.startswith("[recast] ingest: plate")]
    assert len(line) == 1 and "re-timed at 25 fps" in line[0], line
    timing = PlateTiming.load(open_store().fetch(result.timing.uri))
    assert [float(x * timing.time_base) for x in timing.pts] == pytest.approx([i / 25 for i in range(12)])
