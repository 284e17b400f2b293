"""recast's stage cache, without Prefect: :func:`run_stage` works once per work key, reuses finished
work across runs and shots while its outputs exist, and records every attempt as a ``stage_run``;
:func:`work_key` hashes what determines a stage's output and nothing else."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from sqlalchemy import select

from recast.contracts import AssetRef, ModelRef, Record, ShotParams
from recast.errors import NoFaceError

MODEL = ModelRef(name="toy-model", version="1", sha256="ab" * 32)


class Blurred(Record):
    """The record of the toy stage below: one stored output and a number."""

    output: AssetRef
    strength: int


class BlurredV2(Record):
    """The same stage's record after a change of its shape (a field added)."""

    output: AssetRef
    strength: int
    radius: int


@pytest.fixture()
def cache_env(recast_env):
    """A fresh data directory with its SQLite database at head and its local object store."""
    from recast.db.migrate import ensure_schema
    from recast.db.session import dispose_engines
    from recast.tasks.common import reset_stores

    ensure_schema()
    yield recast_env
    reset_stores()
    dispose_engines()


def new_run() -> tuple[str, str]:
    """A (run id, shot id) of a new shot in a new project."""
    from recast.db import repository as repo
    from recast.db.session import session_scope

    with session_scope() as s:
        project = repo.get_or_create_project(s, f"p-{uuid.uuid4().hex[:8]}", media_type="film")
        shot = repo.create_shot(s, project_id=project.id, code="sh010", plate_asset_id=None,
                                params=ShotParams(mode="face"), source_asset_ids=[])
        run = repo.create_run(s, shot.id)
        return str(run.id), str(shot.id)


def stored_input(tmp_path: Path, content: bytes) -> AssetRef:
    from recast.tasks.common import store_asset

    path = tmp_path / f"in-{uuid.uuid4().hex[:8]}.bin"
    path.write_bytes(content)
    return store_asset(path, media_type="application/octet-stream", role="plate_chunk", suffix=".bin")


class ToyStage:
    """A stage whose compute stores one output derived from its input and counts its calls."""

    def __init__(self, tmp_path: Path):
        self.tmp_path = tmp_path
        self.calls = 0

    def compute(self, source: AssetRef, strength: int):
        def work() -> Blurred:
            from recast.tasks.common import fetch, store_asset

            self.calls += 1
            data = fetch(source).read_bytes()
            out = self.tmp_path / f"out-{uuid.uuid4().hex[:8]}.bin"
            out.write_bytes(data[::-1] + bytes([strength]))
            ref = store_asset(out, media_type="application/octet-stream", role="blurred", suffix=".bin", parents=[source])
            return Blurred(output=ref, strength=strength)

        return work

    def run(self, source: AssetRef, *, strength: int = 3, run: tuple[str, str] | None = None, result_type=Blurred,
            compute=None):
        from recast.tasks.common import run_stage

        run_id, shot_id = run if run is not None else (None, None)
        return run_stage("blur", run_id=run_id, shot_id=shot_id, inputs=[source], params={"strength": strength},
                         models=[MODEL], result_type=result_type, compute=compute or self.compute(source, strength),
                         chunk_index=0, frames=(0, 9))


def rows(work_key: str | None = None):
    """Every ``blur`` stage_run row (of one work key), oldest first, as plain dicts."""
    from recast.db.orm import StageRun
    from recast.db.session import session_scope

    with session_scope() as s:
        q = select(StageRun).where(StageRun.stage == "blur")
        if work_key is not None:
            q = q.where(StageRun.work_key == work_key)
        return [
            {"id": str(r.id), "status": r.status, "run_id": None if r.run_id is None else str(r.run_id),
             "shot_id": None if r.shot_id is None else str(r.shot_id), "work_key": r.work_key, "params": r.params,
             "models": r.models, "inputs": r.input_asset_ids, "outputs": r.output_asset_ids, "result": r.result,
             "metrics": r.metrics, "error": r.error, "reused_from": None if r.reused_from_id is None else str(r.reused_from_id),
             "chunk": r.chunk_index, "frames": (r.frame_start, r.frame_end)}
            for r in s.scalars(q.order_by(StageRun.created))
        ]


def test_first_run_computes_and_records_the_work(cache_env, tmp_path):
    from recast.tasks.common import fetch

    stage = ToyStage(tmp_path)
    source = stored_input(tmp_path, b"plate bytes")
    run = new_run()
    result = stage.run(source, strength=3, run=run)

    assert stage.calls == 1
    assert fetch(result.output).read_bytes() == b"setyb etalp\x03"
    (row,) = rows()
    assert row["status"] == "done" and (row["run_id"], row["shot_id"]) == run
    assert row["outputs"] == [result.output.asset_id] and row["inputs"] == [source.asset_id]
    assert row["params"] == {"strength": 3} and row["models"][0]["sha256"] == MODEL.sha256
    assert row["chunk"] == 0 and row["frames"] == (0, 9)
    assert Blurred.model_validate(row["result"]) == result
    assert row["metrics"]["elapsed_ms"] >= 0 and row["error"] is None


def test_the_same_work_in_another_shot_is_reused_not_computed(cache_env, tmp_path):
    stage = ToyStage(tmp_path)
    source = stored_input(tmp_path, b"plate bytes")
    first = stage.run(source, run=new_run())
    other_shot = new_run()
    again = stage.run(source, run=other_shot)

    assert stage.calls == 1 and again == first
    done, reused = rows()
    assert reused["status"] == "reused" and reused["reused_from"] == done["id"]
    assert (reused["run_id"], reused["shot_id"]) == other_shot
    assert reused["work_key"] == done["work_key"] and reused["outputs"] == done["outputs"]

    # a third reuse still points at the row that did the work, not at the reuse before it
    stage.run(source, run=new_run())
    assert stage.calls == 1 and rows()[-1]["reused_from"] == done["id"]


def test_a_changed_parameter_or_input_computes_again(cache_env, tmp_path):
    stage = ToyStage(tmp_path)
    source = stored_input(tmp_path, b"plate bytes")
    base = stage.run(source, strength=3)
    stronger = stage.run(source, strength=4)
    other_plate = stage.run(stored_input(tmp_path, b"another plate"), strength=3)

    assert stage.calls == 3
    assert len({base.output.sha256, stronger.output.sha256, other_plate.output.sha256}) == 3
    assert [r["status"] for r in rows()] == ["done", "done", "done"]
    assert len({r["work_key"] for r in rows()}) == 3


def test_a_deleted_output_makes_the_work_run_again(cache_env, tmp_path):
    from recast.tasks.common import fetch, store

    stage = ToyStage(tmp_path)
    source = stored_input(tmp_path, b"plate bytes")
    first = stage.run(source)
    store().delete(first.output.uri)
    assert not store().exists(first.output.uri)

    again = stage.run(source)
    assert stage.calls == 2
    # the same bytes again, so the same content-addressed object, stored anew
    assert again.output.uri == first.output.uri and store().exists(again.output.uri)
    assert fetch(again.output).read_bytes() == b"setyb etalp\x03"
    assert [r["status"] for r in rows()] == ["done", "done"]


def test_a_record_of_an_older_shape_is_not_trusted(cache_env, tmp_path):
    stage = ToyStage(tmp_path)
    source = stored_input(tmp_path, b"plate bytes")
    stage.run(source)

    def work_v2() -> BlurredV2:
        stage.calls += 1
        v1 = stage.compute(source, 3)()
        return BlurredV2(output=v1.output, strength=3, radius=2)

    result = stage.run(source, result_type=BlurredV2, compute=work_v2)
    assert isinstance(result, BlurredV2) and result.radius == 2
    assert [r["status"] for r in rows()] == ["done", "done"]


def test_a_failing_compute_records_the_error_and_raises_it(cache_env, tmp_path):
    stage = ToyStage(tmp_path)
    source = stored_input(tmp_path, b"plate bytes")
    run = new_run()

    def no_face() -> Blurred:
        raise NoFaceError("no face found in any frame of chunk 0")

    with pytest.raises(NoFaceError, match="no face found in any frame of chunk 0"):
        stage.run(source, run=run, compute=no_face)

    def crash() -> Blurred:
        raise ValueError("bad pixel format yuv444p12le")

    with pytest.raises(ValueError, match="yuv444p12le"):
        stage.run(source, run=run, compute=crash)

    failed_recast, failed_other = rows()
    assert failed_recast["status"] == "failed" and failed_recast["error"] == "no face found in any frame of chunk 0"
    assert failed_other["status"] == "failed" and failed_other["error"] == "ValueError: bad pixel format yuv444p12le"
    assert failed_recast["run_id"] == run[0] and failed_recast["outputs"] == []

    # a failure is not cached: the next attempt works
    stage.run(source, run=run)
    assert stage.calls == 1 and rows()[-1]["status"] == "done"


# --- work_key --------------------------------------------------------------------------------------
def key(**changes):
    from recast.tasks.common import work_key

    kw = {"inputs": ["a" * 64, "b" * 64], "params": {"strength": 3, "mode": "face"}, "models": [MODEL]}
    stage = changes.pop("stage", "blur")
    kw.update(changes)
    return work_key(stage, **kw)


def test_work_key_changes_with_everything_that_determines_the_output():
    base = key()
    assert key() == base and len(base) == 64
    variants = {
        "stage": key(stage="sharpen"),
        "inputs": key(inputs=["a" * 64, "c" * 64]),
        "input order": key(inputs=["b" * 64, "a" * 64]),
        "params": key(params={"strength": 4, "mode": "face"}),
        "extra param": key(params={"strength": 3, "mode": "face", "radius": 1}),
        "model checksum": key(models=[MODEL.model_copy(update={"sha256": "cd" * 32})]),
        "model version": key(models=[MODEL.model_copy(update={"version": "2"})]),
        "no model": key(models=[]),
    }
    assert all(v != base for v in variants.values()), [k for k, v in variants.items() if v == base]
    assert len(set(variants.values())) == len(variants)


def test_work_key_changes_with_the_recast_version(monkeypatch):
    import recast.tasks.common as common

    base = key()
    monkeypatch.setattr(common, "__version__", "999.0.0")
    assert key() != base


def test_work_key_ignores_dict_ordering():
    # (that it knows no run or shot is shown by the reuse across shots above)
    assert key(params={"mode": "face", "strength": 3}) == key()
    assert key(params={"outer": {"b": 1, "a": [1, 2]}}) == key(params={"outer": {"a": [1, 2], "b": 1}})
