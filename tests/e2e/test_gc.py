"""``recast gc``: old intermediates go, deliverables, plates, sources and what a pending review
needs stay; lineage keeps listing what was removed; the stage cache recomputes removed work.

The assets are made through the stage cache (``run_stage`` and ``store_asset``, as a swap makes
them) rather than by a whole swap: what gc decides depends on the database rows, not on pixels.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from recast.cli import app
from recast.contracts import AssetRef, ModelRef, Record, ShotParams

MODEL = ModelRef(name="toy", version="1", sha256="cd" * 32)


class Stored(Record):
    outputs: tuple[AssetRef, ...]


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture()
def gc_env(recast_env):
    from recast.db.migrate import ensure_schema
    from recast.db.session import dispose_engines
    from recast.tasks.common import reset_stores

    ensure_schema()
    yield recast_env
    reset_stores()
    dispose_engines()


def _file(tmp: Path, content: bytes, suffix: str = ".bin") -> Path:
    p = tmp / f"{uuid.uuid4().hex[:8]}{suffix}"
    p.write_bytes(content)
    return p


def _stage(tmp: Path, name: str, run_id: str, shot_id: str, inputs: list[AssetRef], role: str, n: int, tag: bytes) -> Stored:
    from recast.tasks.common import run_stage, store_asset

    def compute() -> Stored:
        outs = tuple(store_asset(_file(tmp, tag + bytes([i]) * (1000 + i)), media_type="application/octet-stream", role=role,
                                 suffix=".mkv", parents=inputs) for i in range(n))
        return Stored(outputs=outs)

    return run_stage(name, run_id=run_id, shot_id=shot_id, inputs=inputs, params={"tag": tag.decode()}, models=[MODEL],
                     result_type=Stored, compute=compute, chunk_index=0, frames=(0, 9))


def _shot(tmp: Path, tag: bytes, *, status: str) -> dict:
    """A shot made as a swap makes it: plate + source stored, chunks, swapped chunks, and (for a
    finished run) a signed deliverable with its render row; the run left at ``status``."""
    from recast.db import repository as repo
    from recast.db import trust as trust_repo
    from recast.db.session import session_scope
    from recast.tasks.common import store_asset

    plate = store_asset(_file(tmp, b"plate" + tag * 500, ".mp4"), media_type="video/mp4", role="plate", suffix=".mp4")
    source = store_asset(_file(tmp, b"source" + tag * 300, ".jpg"), media_type="image/jpeg", role="source", suffix=".jpg")
    with session_scope() as s:
        project = repo.get_or_create_project(s, "scratch", consent_required=False)
        shot = repo.create_shot(s, project_id=project.id, code=f"sh-{tag.decode()}", plate_asset_id=plate.asset_id,
                                params=ShotParams(mode="face"), source_asset_ids=[source.asset_id])
        run_id, shot_id = str(repo.create_run(s, shot.id).id), str(shot.id)
        repo.set_run_status(s, run_id, "running")
    chunks = _stage(tmp, "ingest", run_id, shot_id, [plate], "plate_chunk", 2, b"c" + tag)
    swapped = _stage(tmp, "swap", run_id, shot_id, [chunks.outputs[0], source], "swapped_chunk", 1, b"s" + tag)
    out = {"plate": plate, "source": source, "chunks": chunks.outputs, "swapped": swapped.outputs, "run_id": run_id}
    if status == "done":
        render = _stage(tmp, "render", run_id, shot_id, list(swapped.outputs) + [plate], "deliverable", 1, b"d" + tag)
        deliverable = render.outputs[0]
        with session_scope() as s:
            trust_repo.create_render(s, render_id=uuid.uuid4(), run_id=run_id, asset_id=deliverable.asset_id, approved=True,
                                     watermark_payload=None, consent_id=None, signed=True)
            repo.set_run_status(s, run_id, "done", output_asset_id=deliverable.asset_id)
        out["deliverable"] = deliverable
    else:
        with session_scope() as s:
            repo.set_run_status(s, run_id, status)
    return out


def _live(ref: AssetRef) -> bool:
    from recast.db import repository as repo
    from recast.db.session import session_scope
    from recast.tasks.common import store

    with session_scope() as s:
        row = repo.get_asset(s, ref.asset_id)
        alive = row.deleted_at is None
    in_store = store().exists(ref.uri)
    assert alive == in_store, f"{ref.uri}: row says {'live' if alive else 'deleted'}, store says {'present' if in_store else 'absent'}"
    return alive


def test_gc_frees_old_intermediates_and_keeps_what_is_needed(gc_env, tmp_path):
    done = _shot(tmp_path, b"a", status="done")
    paused = _shot(tmp_path, b"b", status="awaiting_review")
    intermediates = list(done["chunks"]) + list(done["swapped"])

    # nothing is 30 days old yet
    young = invoke("gc", "--json")
    assert young.exit_code == 0, young.stderr
    assert json.loads(young.stdout)["assets"] == 0

    dry = invoke("gc", "--older-than", "0", "--dry-run", "--json")
    plan = json.loads(dry.stdout)
    assert dry.exit_code == 0 and plan["dry_run"] and plan["assets"] == len(intermediates)
    assert set(plan["removed"]) == {a.uri for a in intermediates}
    assert plan["bytes"] == sum(a.size for a in intermediates)
    assert all(_live(a) for a in intermediates)  # a dry run removes nothing

    r = invoke("gc", "--older-than", "0")
    assert r.exit_code == 0, r.stderr
    assert r.stdout.startswith(f"freed {plan['bytes'] / 1024:.1f} KB: {len(intermediates)} stored intermediate(s)"), r.stdout
    assert "plate_chunk" in r.stdout and "swapped_chunk" in r.stdout
    assert not any(_live(a) for a in intermediates)
    for kept in (done["plate"], done["source"], done["deliverable"]):
        assert _live(kept), kept.role
    # the paused run's chunks and swapped chunks are what its approval renders from
    for kept in [paused["plate"], paused["source"], *paused["chunks"], *paused["swapped"]]:
        assert _live(kept), kept.role

    # the deliverable's lineage still lists the removed intermediates (rows are kept, marked deleted)
    lin = invoke("lineage", done["deliverable"].asset_id, "--json")
    assert lin.exit_code == 0, lin.stderr
    tree = json.loads(lin.stdout)
    seen = set()

    def walk(node):
        seen.add(node["asset"]["id"])
        for p in node.get("parents", []):
            walk(p)

    walk(tree)
    assert {a.asset_id for a in [*done["swapped"], done["chunks"][0], done["plate"], done["source"]]} <= seen

    # a second gc has nothing left to do; the stage cache no longer offers the removed work
    again = json.loads(invoke("gc", "--older-than", "0", "--json").stdout)
    assert again["assets"] == 0
    from recast.db import repository as repo
    from recast.db.session import session_scope

    with session_scope() as s:
        rows = [r for r in repo.stage_runs_for_run(s, done["run_id"]) if r.stage == "ingest"]
        assert rows and repo.find_done_stage_run(s, "ingest", rows[0].work_key) is None


def test_gc_recomputes_removed_work_on_the_next_run(gc_env, tmp_path):
    from recast.tasks.common import store

    done = _shot(tmp_path, b"c", status="done")
    assert invoke("gc", "--older-than", "0").exit_code == 0
    assert not store().exists(done["chunks"][0].uri)
    # the same stage with the same inputs runs again: computed anew, its outputs revived
    from recast.db import repository as repo
    from recast.db.session import session_scope

    with session_scope() as s:
        shot_id = str(repo.get_run(s, done["run_id"]).shot_id)
        run2 = str(repo.create_run(s, shot_id).id)
    again = _stage(tmp_path, "ingest", run2, shot_id, [done["plate"]], "plate_chunk", 2, b"cc")
    assert [a.sha256 for a in again.outputs] == [a.sha256 for a in done["chunks"]]
    assert all(_live(a) for a in again.outputs)


def test_gc_rejects_a_bad_age(gc_env):
    r = invoke("gc", "--older-than", "soon")
    assert r.exit_code == 2 and "--older-than 'soon'" in r.stderr
