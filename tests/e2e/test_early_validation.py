"""Bad input is refused before anything starts: no Prefect server, no run row, an answer in
seconds naming the input; shot codes are unique within a project, so `recast qc CODE` works on
each of two identical submissions made at once."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from recast.cli import app
from tests.conftest import IMAGES

SOURCE = IMAGES / "deepface_img17.jpg"


def invoke(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def no_runs(data_dir: Path) -> bool:
    """No run recorded (the database may not even exist: nothing was started)."""
    if not (data_dir / "recast.db").exists():
        return True
    from recast.services.runs import recent_runs

    return recent_runs(5) == []


@pytest.mark.parametrize(
    "case, extra, code, named",
    [
        ("missing plate", (), 3, ["missing.mp4", "file not found"]),
        ("unreadable plate", (), 3, ["notes.mp4", "plate"]),
        ("edit beyond the plate", ("--edit", "smile=0.3@100-200"), 2, ["smile=0.3@100-200", "40 frames"]),
        ("face index beyond the faces", ("--face", "index:99"), 2, ["index:99", "at most 1 face"]),
    ],
)
def test_bad_input_is_refused_before_a_run_exists(case, extra, code, named, recast_env, tmp_path, short_plate, text_as_mp4):
    plate = {"missing plate": tmp_path / "missing.mp4", "unreadable plate": text_as_mp4}.get(case, short_plate)
    out = tmp_path / "out.mp4"
    started = time.perf_counter()
    result = invoke("swap", "--plate", plate, "--source", SOURCE, "--out", out, *extra)
    elapsed = time.perf_counter() - started
    print(f"{case}: exit {result.exit_code} after {elapsed:.2f} s")
    assert result.exit_code == code, (result.exit_code, result.stderr)
    errors = [line for line in result.stderr.splitlines() if line.startswith("recast: error:")]
    assert len(errors) == 1 and all(n in errors[0] for n in named), result.stderr
    assert "Traceback" not in result.stderr and "[recast] run " not in result.stderr  # no run was announced
    assert not out.exists()
    assert no_runs(recast_env)
    # the flow took 17-30 s to say so (a Prefect server started first); a generous bound for a loaded machine
    assert elapsed < 10, f"{case}: {elapsed:.1f} s to the error"


def test_identical_submissions_at_once_get_distinct_codes_and_qc_finds_each(recast_env, short_plate, monkeypatch):
    from recast.db import repository as repo
    from recast.db.session import session_scope
    from recast.services import shots

    # the default code has a one-second resolution: make both submissions fall in the same second
    monkeypatch.setattr(shots, "time", SimpleNamespace(strftime=lambda fmt: "20261130-051500"))
    params = shots.ShotParams(mode="face", chunk_size=20)
    barrier = threading.Barrier(2)
    made: list[tuple[str, str]] = []
    failures: list[BaseException] = []

    def submit() -> None:
        try:
            barrier.wait()
            made.append(shots.submit_local_shot(plate=str(short_plate), sources=[str(SOURCE)], params=params))
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    threads = [threading.Thread(target=submit) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, failures
    with session_scope() as s:
        codes = {shot_id: repo.get_shot(s, shot_id).code for shot_id, _ in made}
        for _, run_id in made:
            repo.record_qc(s, run_id=run_id, verdict="pass", metrics={"identity_transfer_rate": 1.0})
    assert sorted(codes.values()) == ["short_plate-20261130-051500", "short_plate-20261130-051500-2"]
    for shot_id, code in codes.items():
        r = invoke("qc", code, "--json")
        assert r.exit_code == 0, r.stderr
        assert json.loads(r.stdout)["shot_id"] == shot_id


@pytest.fixture()
def plate_with_cut_away(tmp_path) -> Path:
    """12 frames of an empty scene (a cut-away), then 24 of a face: with chunks of 12 frames,
    chunk 0 has nobody in it and passes through the swap untouched."""
    import numpy as np
    import skimage.data

    from recast.media import read_image
    from recast.media.synthetic import camera_move_frames, write_h264

    empty = camera_move_frames(skimage.data.coffee(), size=256, frames=12)
    face = camera_move_frames(read_image(IMAGES / "face_recognition_obama.jpg"), size=256, frames=24)
    return write_h264(np.concatenate([empty, face]), tmp_path / "cut_away.mp4")


@pytest.mark.slow
def test_a_cut_away_as_long_as_a_chunk_swaps_and_its_lineage_has_no_self_parent(recast_env, tmp_path, plate_with_cut_away):
    out = tmp_path / "out.mp4"
    r = invoke("swap", "--plate", plate_with_cut_away, "--source", SOURCE, "--out", out, "--mode", "face", "--chunk-size", 12, "--json")
    assert r.exit_code == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["frames"] == 36 and out.exists()
    shown = json.loads(invoke("show", summary["run_id"], "--json").stdout)
    plate_chunks = [o["sha256"] for st in shown["stages"] if st["stage"] == "ingest" for o in st["outputs"] if o["role"] == "plate_chunk"]
    # (the output keeps the role it was first registered with: the passthrough chunk *is* the plate chunk)
    swapped = {st["chunk_index"]: {o["sha256"] for o in st["outputs"] if o["role"] in ("swapped_chunk", "plate_chunk")}
               for st in shown["stages"] if st["stage"] == "swap"}
    assert plate_chunks[0] in swapped[0]  # the cut-away passed through: the very same bytes, the same asset
    assert plate_chunks[1] not in swapped[1] and plate_chunks[2] not in swapped[2]
    lineage = invoke("lineage", out, "--json")
    assert lineage.exit_code == 0, lineage.stderr
    assert '"cycle"' not in lineage.stdout
