"""Source vetting through `recast swap`: a refused photo exits 3 with one line naming it, before
any run exists; a warned photo's findings are in the `--json` summary and in `recast show`."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from recast.cli import app
from tests.conftest import IMAGES


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def test_a_group_photo_without_source_face_exits_3_naming_the_photo_before_any_run(recast_env, short_plate, tmp_path):
    out = tmp_path / "out.mp4"
    group = IMAGES / "insightface_t1.jpg"
    r = invoke("swap", "--plate", short_plate, "--source", group, "--out", out, "--mode", "face", "--json")
    assert r.exit_code == 3, (r.exit_code, r.stderr)
    assert r.stdout == "" and not out.exists()
    errors = [line for line in r.stderr.splitlines() if line.startswith("recast: error")]
    assert len(errors) == 1 and str(group) in errors[0] and "6 faces" in errors[0] and "--source-face index:N" in errors[0], r.stderr
    from recast.db.migrate import ensure_schema
    from recast.services.runs import recent_runs

    ensure_schema()
    assert recent_runs(1) == []  # refused at submission: no shot, no run


@pytest.mark.slow
def test_a_small_source_face_is_warned_and_listed_in_the_json_summary_and_in_show(recast_env, short_plate, tmp_path):
    out = tmp_path / "out.mp4"
    small = IMAGES / "skimage_astronaut.png"  # a ~90 px face; the plate's is ~240 px
    r = invoke("swap", "--plate", short_plate, "--source", small, "--out", out, "--mode", "face", "--json", "--chunk-size", "20")
    assert r.exit_code == 0, r.stderr
    told = [line for line in r.stderr.splitlines() if line.startswith(f"[recast] source: {small}: ")]
    assert any("enlarged" in line for line in told), r.stderr

    summary = json.loads(r.stdout)
    (report,) = summary["source_vetting"]
    assert report["photo"] == str(small)
    by = {f["check"]: f for f in report["findings"]}
    assert by["upscale"]["outcome"] == "warn" and 2.2 < by["upscale"]["value"] < 3.2 and by["upscale"]["threshold"] == 2.0
    assert by["faces"]["outcome"] == "ok" and by["blur"]["outcome"] == "ok"
    assert not any(f["outcome"] == "refuse" for f in report["findings"])
    # a warning caps QC at review, with its own reason record
    assert summary["qc"]["verdict"] == "review"
    vetting = [x for x in summary["qc"]["reasons"] if x["metric"] == "source_vetting"]
    assert vetting and all(x["outcome"] == "review" and x["text"] for x in vetting), summary["qc"]["reasons"]
    assert any("enlarged" in x["text"] for x in vetting)

    shown = json.loads(invoke("show", summary["run_id"], "--json").stdout)
    assert shown["source_vetting"] == summary["source_vetting"]
    text = invoke("show", summary["run_id"]).stdout
    assert f"source {small}:" in text and "warn   upscale" in text


@pytest.mark.slow
def test_qc_of_files_never_refuses_a_source_photo(recast_env, short_plate, tmp_path):
    """`recast qc --plate --output --source` scores any vendor's output: a group photo is read by
    its largest face, the refusal only recorded."""
    import shutil

    output = tmp_path / "vendor.mp4"
    shutil.copy(short_plate, output)
    r = invoke("qc", "--plate", short_plate, "--output", output, "--source", IMAGES / "insightface_t1.jpg", "--json", "--mode", "face")
    assert not [x for x in r.stderr.splitlines() if x.startswith("recast: error")], (r.exit_code, r.stderr[-2000:])
    result = json.loads(r.stdout)
    # scored, not refused: the "output" is the plate itself, so QC fails it (exit 5, not 3)
    assert r.exit_code == 5 and result["verdict"] == "fail", (r.exit_code, r.stderr[-2000:])
    (report,) = result["source_vetting"]
    by = {f["check"]: f for f in report["findings"]}
    assert report["photo"] == str(IMAGES / "insightface_t1.jpg") and by["faces"]["outcome"] == "refuse", report  # only recorded


@pytest.mark.slow
def test_qc_of_files_reads_the_source_face_the_user_names(recast_env, short_plate, tmp_path):
    """`--source-face index:N` reaches the source analysis of `recast qc --plate`: an index the
    photo does not have is a usage error naming the photo, before any stage scores a frame."""
    import shutil

    output = tmp_path / "vendor.mp4"
    shutil.copy(short_plate, output)
    group = IMAGES / "insightface_t1.jpg"
    r = invoke("qc", "--plate", short_plate, "--output", output, "--source", group, "--source-face", "index:9", "--mode", "face")
    errors = [x for x in r.stderr.splitlines() if x.startswith("recast: error")]
    assert r.exit_code == 2 and len(errors) == 1 and "index:9" in errors[0] and "6 faces" in errors[0], (r.exit_code, r.stderr[-2000:])
    r = invoke("qc", "--plate", short_plate, "--output", output, "--source", group, "--source-face", "largest", "--mode", "face")
    assert r.exit_code == 2 and "--source-face 'largest': use index:N" in r.stderr, r.stderr[-2000:]
    r = invoke("qc", "--plate", short_plate, "--output", output, "--source", group, "--source-face", "index:1", "--json", "--mode", "face")
    assert r.exit_code == 5 and json.loads(r.stdout)["verdict"] == "fail", r.stderr[-2000:]  # the "output" is the plate itself
    vetting = json.dumps(json.loads(r.stdout)["source_vetting"])
    assert "using index:1" in vetting and "refuse" not in vetting, vetting  # the face was named: nothing ambiguous recorded
    r = invoke("qc", "--plate", short_plate, "--output", output, "--source", group, "--mode", "face")
    assert "source:     refuse faces:" in r.stdout and "--source-face index:N" in r.stdout, r.stdout  # recorded, not refused


def _occluded_source(tmp_path, occluder):
    from recast.media import read_image, write_png
    from recast.models.face import FaceAnalyzer

    rgb = read_image(IMAGES / "face_recognition_obama.jpg", role="source")
    with FaceAnalyzer(static_images=True) as fa:
        (face,) = fa.detect(rgb)
    path = tmp_path / f"obama_{occluder.__name__}.png"
    write_png(path, occluder(rgb, face.landmarks))
    return path


def _patch_coloured_pixels(video) -> int:
    """Pixels of the patch's violet (the swap's colour matching lightens it: its hue is tested)."""
    from recast.media import read_frames

    def violet(f):
        r, g, b = (f[..., i].astype(np.int16) for i in range(3))
        return int(((b - g > 60) & (r - g > 30)).sum())

    return sum(violet(f) for f in read_frames(video, role="video"))


@pytest.mark.slow
def test_an_object_over_the_source_cheek_is_not_carried_into_the_output(recast_env, short_plate, tmp_path):
    """Source repair: the coloured object over the photo's cheek is taken out before the swap,
    so the swapped face has none of its colour (without the repair the face swap pastes it in)."""
    from tests.unit.test_source_vetting import cheek_patch

    out = tmp_path / "out.mp4"
    source = _occluded_source(tmp_path, cheek_patch)
    # --deliver-on-fail: this pair's identity transfer fails QC with or without an object (0.17)
    r = invoke("swap", "--plate", short_plate, "--source", source, "--out", out, "--mode", "face", "--json", "--chunk-size", "20",
               "--deliver-on-fail")
    assert r.exit_code == 0, r.stderr[-2000:]
    summary = json.loads(r.stdout)
    (report,) = summary["source_vetting"]
    (occluder,) = [f for f in report["findings"] if f["check"] == "occluder"]
    assert occluder["outcome"] == "warn" and "taken out" in occluder["text"], occluder
    assert _patch_coloured_pixels(short_plate) == 0
    assert _patch_coloured_pixels(out) < 40 * 5, _patch_coloured_pixels(out)  # under 5 px a frame


@pytest.mark.slow
def test_a_microphone_over_the_source_mouth_is_refused_before_any_run(recast_env, short_plate, tmp_path):
    from tests.unit.test_source_vetting import microphone

    out = tmp_path / "out.mp4"
    source = _occluded_source(tmp_path, microphone)
    r = invoke("swap", "--plate", short_plate, "--source", source, "--out", out, "--mode", "face", "--json")
    errors = [line for line in r.stderr.splitlines() if line.startswith("recast: error")]
    assert r.exit_code == 3 and len(errors) == 1 and str(source) in errors[0] and "across its middle" in errors[0], r.stderr[-2000:]
    assert r.stdout == "" and not out.exists()
    from recast.db.migrate import ensure_schema
    from recast.services.runs import recent_runs

    ensure_schema()
    assert recent_runs(1) == []
