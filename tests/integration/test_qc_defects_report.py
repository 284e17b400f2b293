"""``recast qc --plate --output --source`` on a real short clip whose output has a piece of the
source photo's clothing pasted beside the head: the ``--json`` reasons carry a foreign_pieces
record with its frames, and the report's contact sheet row of such a frame outlines the piece in
the measure's colour on the output tile."""

from __future__ import annotations

import json
from fractions import Fraction

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from recast.cli import app
from tests.conftest import IMAGES

pytestmark = pytest.mark.slow  # ingest, segment and track of two 40-frame files

SOURCE = IMAGES / "deepface_img17.jpg"
PIECE = np.s_[260:340, 12:92]  # beside the head, over the background (512 x 512 plate)


def test_a_pasted_foreign_piece_is_a_reason_and_is_outlined_on_the_contact_sheet(recast_env, short_plate, tmp_path):
    from recast.media import read_frames
    from recast.media.qc_report import TILE_W
    from recast.media.synthetic import write_h264
    from recast.models.qc_rules import rule
    from recast.tasks.common import store

    plate = np.stack(list(read_frames(short_plate, role="plate")))
    src = cv2.cvtColor(cv2.imread(str(SOURCE)), cv2.COLOR_BGR2RGB)
    piece = cv2.resize(src[-120:, 300:420], (80, 80))  # the source photo's clothing
    out = plate.copy()
    out[:, PIECE[0], PIECE[1]] = piece
    out_path = write_h264(out, tmp_path / "pasted.mp4", rate=Fraction(25))

    r = CliRunner().invoke(app, ["qc", "--plate", str(short_plate), "--output", str(out_path), "--source", str(SOURCE), "--json"],
                           catch_exceptions=False)
    got = json.loads(r.stdout)
    # the output is the plate (no identity swapped) with a piece pasted: fails, and says both
    assert got["verdict"] == "fail" and r.exit_code == 5
    by = {x["metric"]: x for x in got["reasons"]}
    assert "identity_transfer_rate" in by
    fp = by["foreign_pieces"]
    assert set(fp) == {"metric", "value", "threshold", "outcome", "frames", "text"}
    assert fp["value"] == got["metrics"]["foreign_pieces"] > fp["threshold"] and fp["outcome"] in ("review", "fail")
    assert fp["frames"] and fp["text"].startswith("foreign pieces")

    # the contact sheet: the row of the piece's worst frame outlines it in the measure's colour
    summary = json.loads(store().fetch(got["report_json"]).read_text())
    frames = summary["report"]["frames"]
    worst = fp["frames"][0]
    assert worst in frames
    sheet = cv2.cvtColor(cv2.imread(str(store().fetch(got["contact_sheet"]))), cv2.COLOR_BGR2RGB)
    tile_h = int(round(plate.shape[1] * TILE_W / plate.shape[2]))
    y = 28 + frames.index(worst) * (tile_h + 22) + 22
    colour = np.array(rule("foreign_pieces").colour)
    scale = TILE_W / plate.shape[2]
    for k, expect in ((0, False), (1, True), (2, True)):  # plate | output | difference
        tile = sheet[y:y + tile_h, k * TILE_W:(k + 1) * TILE_W]
        hit = np.abs(tile.astype(int) - colour).sum(axis=2) < 60
        if not expect:
            assert hit.sum() < 5
            continue
        ys, xs = np.nonzero(hit)
        assert hit.sum() > 30
        # the outline surrounds the pasted piece (in tile pixels, a few pixels of slack)
        y0, y1, x0, x1 = (v * scale for v in (260, 340, 12, 92))
        near = (ys > y0 - 12) & (ys < y1 + 12) & (xs > x0 - 12) & (xs < x1 + 12)
        assert near.mean() > 0.6, (k, near.mean())
    # every other row without a foreign-pieces region has no such outline
    regionless = [f for f in frames if f not in fp["frames"]]
    for f in regionless[:2]:
        yy = 28 + frames.index(f) * (tile_h + 22) + 22
        tile = sheet[yy:yy + tile_h, TILE_W:2 * TILE_W]
        assert (np.abs(tile.astype(int) - colour).sum(axis=2) < 60).sum() < 5
    # the HTML report's table has the measure's row
    page = store().fetch(got["report"]).read_text()
    assert "foreign pieces" in page
