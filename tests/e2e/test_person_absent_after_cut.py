"""`recast swap --face largest` on a plate that cuts from the chosen person to someone else: the
later shot passes through unchanged and the summary says which frames (issue 5/10)."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from typer.testing import CliRunner

from recast.cli import app
from tests.conftest import IMAGES, VIDEOS

SOURCE = IMAGES / "deepface_img17.jpg"  # bearded man
PERSON_A = VIDEOS / "aniportrait_pose_ref_video.mp4"  # older woman, 512x512 at 25 fps
PERSON_B = VIDEOS / "sadtalker_WDA_AlexandriaOcasioCortez_000.mp4"  # another woman, larger face, 512x512 at 25 fps
SECOND = 25  # frames of each clip: one second at 25 fps


def decode(path: Path, count: int | None = None) -> np.ndarray:
    with av.open(str(path)) as c:
        out = []
        for f in c.decode(video=0):
            if count is not None and len(out) >= count:
                break
            out.append(f.to_ndarray(format="rgb24"))
    return np.stack(out)


@pytest.fixture(scope="module")
def cut_plate(tmp_path_factory) -> Path:
    """One second of person A, a hard cut, one second of person B (whose face is the larger)."""
    from recast.media.synthetic import write_h264

    frames = np.concatenate([decode(PERSON_A, SECOND), decode(PERSON_B, SECOND)])
    return write_h264(frames, tmp_path_factory.mktemp("plates") / "cut_to_someone_else.mp4", rate=Fraction(SECOND))


@pytest.mark.slow
def test_largest_leaves_the_shot_after_a_cut_to_someone_else_untouched(recast_env, cut_plate, tmp_path):
    out = tmp_path / "out.mp4"
    # chunks of 32 frames: the cut (frame 25) falls inside the first chunk, so its embedding comes
    # from the segment stage's cut test, not from the start of a chunk
    result = CliRunner().invoke(app, ["swap", "--plate", str(cut_plate), "--source", str(SOURCE), "--out", str(out), "--mode", "face",
                                      "--face", "largest", "--json", "--chunk-size", "32", "--deliver-on-fail"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["frames"] == 2 * SECOND
    absent = [(r["start"], r["end"]) for r in summary["segments_without_person"]]
    assert absent == [(SECOND, 2 * SECOND)]
    assert f"not in frames {SECOND}-{2 * SECOND - 1} (left untouched)" in result.stderr
    assert summary["swapped_frames"] <= SECOND and summary["passthrough_frames"] >= SECOND
    # QC: the untouched shot is not a face lost (face found among the frames where the person is)
    assert summary["qc"]["frames_without_person"] == SECOND and summary["qc"]["face_found_ratio"] > 0.9, summary["qc"]
    assert "face_found_ratio" not in [r["metric"] for r in summary["qc"]["reasons"]], summary["qc"]["reasons"]

    # the segment stage embedded the face where each shot segment starts: frame 0 and the cut's
    # frame 25, found by its signature test inside chunk 0 (not at a chunk start), besides the
    # periodic frames 12 and 24
    from recast.media.artifacts import PlateAnalysis
    from recast.storage import fetch_any

    shown = json.loads(CliRunner().invoke(app, ["show", summary["run_id"], "--json"], catch_exceptions=False).stdout)
    first_chunk = [o for st in shown["stages"] if st["stage"] == "segment" and st["chunk_index"] == 0
                   for o in st["outputs"] if o["role"] == "plate_analysis"]
    assert len(first_chunk) == 1
    embedded_frames = set(PlateAnalysis.load(fetch_any(first_chunk[0]["uri"])).embedding_index[:, 0].tolist())
    assert embedded_frames == {0, 12, 24, SECOND}
    # and the source analysis holds the source face's embedding, which QC compares every output with
    from recast.media import read_image
    from recast.media.artifacts import SourceAnalysis
    from recast.models.identity import DlibFaceEmbedder

    source_uri = [o["uri"] for st in shown["stages"] for o in st["outputs"] if o["role"] == "source_analysis"]
    analysis = SourceAnalysis.load(fetch_any(source_uri[0]))
    expected = DlibFaceEmbedder.shared().embed(read_image(SOURCE, role="source"), analysis.box)
    assert analysis.embedding is not None and np.allclose(analysis.embedding, expected, atol=1e-6)

    plate, output = decode(cut_plate).astype(np.int16), decode(out).astype(np.int16)
    assert output.shape == plate.shape
    # B's shot is the plate's own frames, within the delivery re-encode's noise
    after = np.abs(output[SECOND:] - plate[SECOND:]).mean(axis=(1, 2, 3))
    assert after.max() < 2.0, after
    # A's face was swapped: its region changed well beyond that noise
    face = (slice(126, 417), slice(106, 351))  # A's face box on frame 0 (MediaPipe, x 106-351, y 126-417)
    before = np.abs(output[:SECOND][:, face[0], face[1]] - plate[:SECOND][:, face[0], face[1]]).mean(axis=(1, 2, 3))
    assert np.median(before) > 4.0, before


@pytest.mark.slow
def test_largest_follows_the_same_person_across_a_cut_from_close_up_to_wide(recast_env, tmp_path):
    """ghost_nggyup cuts at frame 22 from a close-up of the singer to a wide shot of him: the
    same person, his face half the size (one frame's descriptor 0.33-0.55 from the close-up's).
    Both segments are swapped, none is listed as left untouched. (On the quality matrix's
    CRF 16 plate of these frames, embeddings only where segments start put the wide shot at
    0.503 from the close-up, just refused; with the periodic ones 0.378.)"""
    from recast.media.synthetic import write_h264

    frames = decode(VIDEOS / "ghost_nggyup.mp4", 60)
    plate = write_h264(frames, tmp_path / "ghost_2s.mp4", rate=Fraction(30))
    out = tmp_path / "out.mp4"
    result = CliRunner().invoke(app, ["swap", "--plate", str(plate), "--source", str(SOURCE), "--out", str(out), "--mode", "face",
                                      "--face", "largest", "--json", "--deliver-on-fail"], catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["segments_without_person"] == [], summary["segments_without_person"]
    assert summary["swapped_frames"] == 60 and summary["qc"]["scene_cuts"] >= 1
