"""A phone plate (pixels stored sideways under a -90° display matrix) through a whole swap.

The swap works on the upright picture, so QC sees an upright face and scores the identity as on
any plate; the deliverable stores its pixels as the plate stores them, under the plate's own
display matrix, so it plays the same way round and the pixels recast did not touch are the plate's.
"""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest
from typer.testing import CliRunner

from recast.cli import app
from recast.media import read_frames
from recast.media.orientation import orientation_from, to_stored
from recast.media.probe import read_orientation
from tests.conftest import IMAGES, VIDEOS

SOURCE = IMAGES / "deepface_img17.jpg"  # bearded man
PHONE_CLIP = VIDEOS / "liveportrait_d13.mp4"  # a selfie video, 720x1280, already turned upright
UPRIGHT = (360, 640)  # width, height of the plate as shown (half size keeps the test quick)
FRAMES = 40


def invoke(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def phone_plate(tmp_path_factory) -> Path:
    """40 frames of the selfie clip stored as the phone's sensor records them: landscape 640x360,
    tagged "rotate 90° clockwise to show" (display matrix -90°, what ffprobe reports for every
    phone video shot upright)."""
    path = tmp_path_factory.mktemp("phone") / "phone_plate.mp4"
    turn = orientation_from(-90)
    with av.open(str(PHONE_CLIP)) as src, av.open(str(path), "w") as dst:
        out = dst.add_stream("libx264", rate=src.streams.video[0].average_rate)
        out.width, out.height = UPRIGHT[1], UPRIGHT[0]  # stored: landscape
        out.pix_fmt = "yuv420p"
        out.codec_context.options = {"crf": "14", "preset": "veryfast"}
        out.set_display_rotation(-90)
        for n, frame in enumerate(src.decode(video=0)):
            if n == FRAMES:
                break
            upright = frame.reformat(width=UPRIGHT[0], height=UPRIGHT[1]).to_ndarray(format="rgb24")
            for p in out.encode(av.VideoFrame.from_ndarray(to_stored(upright, turn), format="rgb24")):
                dst.mux(p)
        for p in out.encode():
            dst.mux(p)
    return path


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


@pytest.mark.slow
def test_a_phone_plate_is_swapped_upright_and_delivered_as_it_was_stored(recast_env, phone_plate, tmp_path):
    out = tmp_path / "swapped.mp4"
    result = invoke("swap", "--plate", phone_plate, "--source", SOURCE, "--out", out, "--mode", "face", "--json", "--chunk-size", "20")
    assert result.exit_code == 0, result.stderr
    assert "ingest: plate 360x640 h264 (stored 640x360, rotated -90°" in result.stderr
    summary = json.loads(result.stdout)
    assert summary["frames"] == FRAMES
    # QC swapped and scored an upright face: the identity moved to the source (0.00 when sideways)
    qc = summary["qc"]
    assert qc["verdict"] != "fail", qc
    assert qc["identity_transfer_rate"] >= 0.5, qc

    # the plate's display matrix and stored size
    assert read_orientation(out).matrix == read_orientation(phone_plate).matrix is not None
    with av.open(str(out)) as a, av.open(str(phone_plate)) as b:
        assert (a.streams.video[0].width, a.streams.video[0].height) == (b.streams.video[0].width, b.streams.video[0].height) == (640, 360)

    # away from the face (the ceiling, top corners of the upright picture), the delivered stored
    # pixels are the plate's stored pixels, apart from the codec
    delivered = np.stack(list(read_frames(out, upright=False)))
    plate = np.stack(list(read_frames(phone_plate, upright=False)))
    assert delivered.shape == plate.shape == (FRAMES, 360, 640, 3)
    far = np.zeros((UPRIGHT[1], UPRIGHT[0]), bool)
    far[:80, :80] = far[:80, -80:] = True
    stored_far = to_stored(far, orientation_from(-90))
    assert psnr(delivered[:, stored_far], plate[:, stored_far]) > 35
    # and the face did change (in the upright picture's upper middle)
    face = np.zeros_like(far)
    face[160:400, 100:260] = True
    stored_face = to_stored(face, orientation_from(-90))
    assert psnr(delivered[:, stored_face], plate[:, stored_face]) < 30

    # the deliverable's manifest verifies (and any mark is read from the upright picture)
    v = invoke("verify", out, "--json")
    assert v.exit_code == 0 and json.loads(v.stdout)["result"] == "verified", v.stdout
