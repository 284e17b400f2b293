"""Consent-gated swaps, signed and watermarked deliverables, verify, revocation and the audit trail."""

from __future__ import annotations

import json
from pathlib import Path

import av
import pytest
from typer.testing import CliRunner

from recast.cli import app
from tests.conftest import IMAGES

PHOTO = IMAGES / "deepface_img17.jpg"


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture()
def release(tmp_path) -> Path:
    doc = tmp_path / "release.pdf"
    doc.write_bytes(b"%PDF-1.4\n% signed talent release for tests\n%%EOF\n")
    return doc


LONG_HAIR = IMAGES / "deepface_img45.jpg"


@pytest.fixture()
def studio(recast_env, release):
    """Project 'ad1' (ad, consent required) and identity 'actor' with consent for it."""
    assert invoke("project", "create", "ad1", "--media", "ad").exit_code == 0
    assert invoke("project", "create", "film2", "--media", "film").exit_code == 0
    # long hair: a large generated head carries a mark strong enough to survive a 720p re-encode
    r = invoke("identity", "add", "actor", "--photo", LONG_HAIR, "--consent", release, "--scope", "project=ad1,media=ad", "--valid-until", "2099-01-01")
    assert r.exit_code == 0, r.stderr
    return recast_env


def latest_run():
    from recast.services.runs import recent_runs

    return recent_runs(1)[0]


def no_run_recorded():
    from recast.services.runs import recent_runs

    return recent_runs(1) == []


def swap(plate, out, *extra, mode="face"):
    return invoke("swap", "--plate", plate, "--out", out, "--mode", mode, "--chunk-size", "20", "--json", *extra)


def test_project_requiring_consent_refuses_photos_without_identity(studio, short_plate, tmp_path):
    out = tmp_path / "o.mp4"
    r = swap(short_plate, out, "--project", "ad1", "--source", PHOTO)
    assert r.exit_code == 4, r.stderr
    assert "requires consent" in r.stderr and not out.exists()
    assert no_run_recorded()  # refused at submission, before the shot was recorded


def test_expired_consent_and_consent_for_another_project_are_refused(studio, short_plate, tmp_path, release):
    r = invoke("identity", "add", "lapsed", "--photo", PHOTO, "--consent", release, "--scope", "project=ad1",
               "--valid-from", "2020-01-01", "--valid-until", "2021-01-01")
    assert r.exit_code == 0
    out = tmp_path / "o.mp4"
    expired = swap(short_plate, out, "--project", "ad1", "--identity", "lapsed")
    assert expired.exit_code == 4 and "expired" in expired.stderr and not out.exists()
    other = swap(short_plate, out, "--project", "film2", "--identity", "actor")
    assert other.exit_code == 4 and "does not cover project 'film2'" in other.stderr and not out.exists()
    assert no_run_recorded()  # refused at submission, before the shot was recorded


@pytest.mark.slow
def test_revocation_between_swap_and_render_publishes_nothing(studio, short_plate, tmp_path, monkeypatch):
    import recast.services.trust as trust

    original = trust.require_consent
    calls = []

    def revoke_before_render(shot_id):
        calls.append(shot_id)
        if len(calls) == 2:  # the flow's second gate runs just before render
            trust.revoke("actor", reason="talent withdrew mid-run", actor="test")
        return original(shot_id)

    import recast.flows.swap_shot as flow_module

    monkeypatch.setattr(trust, "require_consent", revoke_before_render)
    monkeypatch.setattr(flow_module, "require_consent", revoke_before_render)
    out = tmp_path / "o.mp4"
    r = swap(short_plate, out, "--project", "ad1", "--identity", "actor")
    assert r.exit_code == 4, r.stderr
    assert "revoked" in r.stderr and not out.exists()
    from recast.db import repository as repo
    from recast.db.session import session_scope

    run = latest_run()
    assert run["status"] == "failed"
    with session_scope() as s:
        assert repo.renders_for_run(s, run["run_id"]) == []
        assert [x.stage for x in repo.stage_runs_for_run(s, run["run_id"])].count("render") == 0


@pytest.mark.slow
def test_signed_watermarked_deliverable_verifies_and_copies_are_told_apart(studio, short_plate_glasses, tmp_path, monkeypatch):
    short_plate = short_plate_glasses
    out = tmp_path / "deliverable.mp4"
    # head mode: the mark lives in the generated head, large enough to survive a 720p re-encode
    r = swap(short_plate, out, "--project", "ad1", "--identity", "actor", mode="head")
    assert r.exit_code == 0, r.stderr
    summary = json.loads(r.stdout)

    v = invoke("verify", out, "--json")
    report = json.loads(v.stdout)
    assert v.exit_code == 0 and report["result"] == "verified", report
    assert report["render"]["identity"] == "actor" and report["render"]["consent"]["scope"]["projects"] == ["ad1"]
    assert report["manifest"]["trusted"] and report["watermark"]["found"]
    assert report["render"]["run_id"] == summary["run_id"]

    # a copy with modified frame bytes: the manifest no longer matches
    data = bytearray(out.read_bytes())
    at = data.find(b"mdat") + 4096
    data[at:at + 256] = bytes(b ^ 0xFF for b in data[at:at + 256])
    tampered = tmp_path / "tampered.mp4"
    tampered.write_bytes(bytes(data))
    t = invoke("verify", tampered, "--json")
    assert t.exit_code == 8 and json.loads(t.stdout)["result"] == "tampered"

    # a delivery re-encode to 720p at crf 23 strips the manifest; the mark still names the render
    reencoded = tmp_path / "reencoded_720p.mp4"
    with av.open(str(out)) as src, av.open(str(reencoded), "w") as dst:
        s = dst.add_stream("libx264", rate=30)
        s.width = s.height = 720
        s.pix_fmt = "yuv420p"
        s.options = {"crf": "23"}  # x264 default preset (medium), as a delivery re-encode would use
        for f in src.decode(video=0):
            f = f.reformat(width=720, height=720)
            f.pts = None
            for p in s.encode(f):
                dst.mux(p)
        for p in s.encode():
            dst.mux(p)
    w = invoke("verify", reencoded, "--json")
    wr = json.loads(w.stdout)
    assert w.exit_code == 7 and wr["result"] == "watermark-only", wr
    assert wr["render"]["render_id"] == report["render"]["render_id"]

    u = invoke("verify", short_plate, "--json")
    assert u.exit_code == 9 and json.loads(u.stdout)["result"] == "unknown"

    # the audit trail lists the run's events in order
    events = [e["action"] for e in json.loads(invoke("audit", "--json").stdout)]
    order = ["project.created", "identity.added", "consent.added", "shot.submitted", "render.created", "render.done"]
    positions = [events.index(a) for a in order]
    assert positions == sorted(positions), events

    # revocation withdraws the render, deletes the reference photos, and blocks new swaps
    rv = invoke("consent", "revoke", "actor", "--reason", "talent request", "--json")
    assert rv.exit_code == 0
    revoked = json.loads(rv.stdout)
    assert [x["render_id"] for x in revoked["renders"]] == [report["render"]["render_id"]]
    assert {d["role"] for d in revoked["deleted"]} >= {"identity_photo"}
    for d in revoked["deleted"]:
        assert not Path(d["uri"].removeprefix("file://")).exists()
    again = swap(short_plate, tmp_path / "again.mp4", "--project", "ad1", "--identity", "actor")
    assert again.exit_code == 4
    assert json.loads(invoke("verify", out, "--json").stdout)["render"]["revoked_at"] is not None


@pytest.mark.slow
def test_scratch_renders_say_no_consent_and_scratch_can_be_turned_off(recast_env, short_plate, tmp_path, monkeypatch):
    out = tmp_path / "scratch.mp4"
    r = swap(short_plate, out, "--source", PHOTO)
    assert r.exit_code == 0, r.stderr
    report = json.loads(invoke("verify", out, "--json").stdout)
    assert report["result"] == "verified" and report["render"]["consent"] is None
    assert report["manifest"]["consent"] == {"consent": "none on record (scratch project)"}

    monkeypatch.setenv("RECAST_SCRATCH_ENABLED", "false")
    from recast.settings import reset_settings

    reset_settings()
    off = swap(short_plate, tmp_path / "off.mp4", "--source", PHOTO)
    assert off.exit_code == 4 and "scratch" in off.stderr
