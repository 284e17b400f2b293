"""Lineage per stage run: a content-addressed asset shared by several runs shows, in each run's
deliverable lineage, only the inputs of that run; a stage output byte-identical to its input is
no self-parent; migration 0004 carries old links and duplicate shot codes over."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa

from recast.contracts import AssetRef, Record, ShotParams


class Stored(Record):
    """A toy stage's record: one stored output."""

    output: AssetRef


@pytest.fixture()
def lineage_env(recast_env, db_backend, request, monkeypatch):
    """A fresh data directory with its local object store, and a database at head: its own
    SQLite file, or the session's PostgreSQL database (when RECAST_TEST_POSTGRES_URL is set)."""
    from recast.db.migrate import ensure_schema
    from recast.db.session import dispose_engines
    from recast.settings import reset_settings
    from recast.tasks.common import reset_stores

    if db_backend == "postgresql":
        monkeypatch.setenv("RECAST_DATABASE_URL", request.getfixturevalue("db_pg_url"))
        reset_settings()
        dispose_engines()
    ensure_schema()
    yield recast_env
    reset_stores()
    dispose_engines()


def new_run() -> tuple[str, str]:
    from recast.db import repository as repo
    from recast.db.session import session_scope

    with session_scope() as s:
        project = repo.get_or_create_project(s, f"p-{uuid.uuid4().hex[:8]}", media_type="film")
        shot = repo.create_shot(s, project_id=project.id, code="sh010", plate_asset_id=None, params=ShotParams(mode="face"),
                                source_asset_ids=[])
        return str(repo.create_run(s, shot.id).id), str(shot.id)


def stored_input(tmp_path: Path, content: bytes, role: str) -> AssetRef:
    from recast.tasks.common import store_asset

    path = tmp_path / f"in-{uuid.uuid4().hex[:8]}.bin"
    path.write_bytes(content)
    return store_asset(path, media_type="application/octet-stream", role=role, suffix=".bin")


def stage(name: str, run: tuple[str, str], inputs: list[AssetRef], output: bytes, tmp_path: Path, role: str) -> AssetRef:
    """Run a toy stage through recast's cache: it stores ``output`` with ``inputs`` as parents."""
    from recast.tasks.common import run_stage, store_asset

    def compute() -> Stored:
        path = tmp_path / f"out-{uuid.uuid4().hex[:8]}.bin"
        path.write_bytes(output)
        return Stored(output=store_asset(path, media_type="application/octet-stream", role=role, suffix=".bin", parents=inputs))

    return run_stage(name, run_id=run[0], shot_id=run[1], inputs=inputs, params={}, models=[], result_type=Stored,
                     compute=compute).output


def ids_in(tree: dict) -> set[str]:
    out = {tree["asset"]["id"]}
    for p in tree["parents"]:
        out |= ids_in(p)
    return out


def one_run(tmp_path: Path, source: AssetRef, plate: AssetRef) -> tuple[tuple[str, str], AssetRef, AssetRef]:
    """A run: analyse the source (the same bytes whatever the photo), render plate + analysis."""
    run = new_run()
    analysis = stage("analyse_source", run, [source], b"the same analysis for every photo", tmp_path, "source_analysis")
    deliverable = stage("render", run, [plate, analysis], b"deliverable of " + plate.sha256.encode(), tmp_path, "deliverable")
    return run, analysis, deliverable


def test_a_shared_asset_shows_only_the_inputs_of_the_run_that_made_the_deliverable(lineage_env, tmp_path):
    from recast.services.runs import lineage_tree
    from recast.tasks.common import fetch

    source_a = stored_input(tmp_path, b"photo of A", "source")
    source_b = stored_input(tmp_path, b"photo of B", "source")
    run_a, analysis_a, out_a = one_run(tmp_path, source_a, stored_input(tmp_path, b"plate 1", "plate"))
    run_b, analysis_b, out_b = one_run(tmp_path, source_b, stored_input(tmp_path, b"plate 2", "plate"))
    assert analysis_a.asset_id == analysis_b.asset_id  # content addressing: one asset, two producing runs

    tree_a = lineage_tree(str(fetch(out_a)))  # by the deliverable's path, as `recast lineage OUTPUT`
    tree_b = lineage_tree(out_b.asset_id)
    assert source_a.asset_id in ids_in(tree_a) and source_b.asset_id not in ids_in(tree_a)
    assert source_b.asset_id in ids_in(tree_b) and source_a.asset_id not in ids_in(tree_b)
    assert tree_a["run_id"] == run_a[0] and tree_b["run_id"] == run_b[0]

    # a third run with run A's inputs reuses every stage: its lineage is run A's inputs
    run_c = new_run()
    analysis_c = stage("analyse_source", run_c, [source_a], b"the same analysis for every photo", tmp_path, "source_analysis")
    plate_1 = stored_input(tmp_path, b"plate 1", "plate")
    out_c = stage("render", run_c, [plate_1, analysis_c], b"deliverable of " + plate_1.sha256.encode(), tmp_path, "deliverable")
    assert out_c == out_a
    tree_c = lineage_tree(out_c.asset_id, run_id=run_c[0])
    assert ids_in(tree_c) == ids_in(tree_a) and source_b.asset_id not in ids_in(tree_c)


def test_a_stage_output_identical_to_its_input_is_no_self_parent(lineage_env, tmp_path):
    from recast.db import repository as repo
    from recast.db.session import session_scope
    from recast.services.runs import lineage_tree, run_detail

    plate = stored_input(tmp_path, b"the plate", "plate")
    source = stored_input(tmp_path, b"photo", "source")
    run = new_run()
    plate_chunk = stage("ingest", run, [plate], b"a chunk in which nobody appears", tmp_path, "plate_chunk")
    analysis = stage("segment", run, [plate_chunk], b"no face in this chunk", tmp_path, "plate_analysis")
    # the swap of a chunk without the person passes it through untouched: the same bytes
    swapped = stage("swap", run, [plate_chunk, analysis, source], b"a chunk in which nobody appears", tmp_path, "swapped_chunk")
    assert swapped.asset_id == plate_chunk.asset_id
    with session_scope() as s:  # every link but the self-link is recorded
        assert repo.asset_parent_ids(s, swapped.asset_id) == sorted([plate.asset_id, analysis.asset_id, source.asset_id])
    # the chunk came from the plate; the swap's links (to the chunk's own analysis) would make it its own ancestor
    tree = lineage_tree(swapped.asset_id)
    assert [p["asset"]["id"] for p in tree["parents"]] == [plate.asset_id]
    assert "cycle" not in str(tree)
    (row,) = [st for st in run_detail(run[0])["stages"] if st["stage"] == "swap"]
    assert row["status"] == "done"
    assert [a["id"] for a in row["inputs"]] == [plate_chunk.asset_id, analysis.asset_id, source.asset_id]
    assert [a["id"] for a in row["outputs"]] == [plate_chunk.asset_id]


# --- migration 0004 -----------------------------------------------------------------------------
def test_migration_0004_upgrades_a_0003_database_with_data(db_empty_url):
    from recast.db import migrate
    from recast.db import repository as repo
    from recast.db.review import find_shot_by_ref
    from recast.db.session import make_engine, make_session

    assert migrate.upgrade(db_empty_url, "0003") == "0003"
    engine = make_engine(db_empty_url)
    md = sa.MetaData()
    U = sa.Uuid()
    now = datetime(2026, 11, 30, 5, 20, tzinfo=timezone.utc)
    project = sa.Table("project", md, sa.Column("id", U), sa.Column("name", sa.String), sa.Column("consent_required", sa.Boolean),
                       sa.Column("commercial", sa.Boolean), sa.Column("created", sa.DateTime(timezone=True)),
                       sa.Column("updated", sa.DateTime(timezone=True)))
    shot = sa.Table("shot", md, sa.Column("id", U), sa.Column("project_id", U), sa.Column("code", sa.String), sa.Column("params", sa.JSON),
                    sa.Column("status", sa.String), sa.Column("source_asset_ids", sa.JSON), sa.Column("priority", sa.Integer),
                    sa.Column("created", sa.DateTime(timezone=True)), sa.Column("updated", sa.DateTime(timezone=True)))
    asset = sa.Table("asset", md, sa.Column("id", U), sa.Column("uri", sa.String), sa.Column("sha256", sa.String), sa.Column("size", sa.Integer),
                     sa.Column("media_type", sa.String), sa.Column("role", sa.String), sa.Column("created", sa.DateTime(timezone=True)),
                     sa.Column("updated", sa.DateTime(timezone=True)))
    link = sa.Table("asset_parent", md, sa.Column("asset_id", U), sa.Column("parent_id", U), sa.Column("created", sa.DateTime(timezone=True)))
    pid = uuid.uuid4()
    shots = [uuid.uuid4() for _ in range(3)]
    plate, source, out = (uuid.uuid4() for _ in range(3))
    try:
        with engine.begin() as c:
            c.execute(project.insert().values(id=pid, name="old", consent_required=False, commercial=False, created=now, updated=now))
            for i, sid in enumerate(shots):  # two identical submissions in one second, before 0004
                c.execute(shot.insert().values(id=sid, project_id=pid, code="plate-20261130-051500" if i < 2 else "plate-20261130-051500-2",
                                               params={}, status="done", source_asset_ids=[], priority=0,
                                               created=datetime(2026, 11, 30, 5, 15, i, tzinfo=timezone.utc), updated=now))
            for aid, role in ((plate, "plate"), (source, "source"), (out, "deliverable")):
                c.execute(asset.insert().values(id=aid, uri=f"file:///o/{aid}", sha256=uuid.uuid4().hex * 2, size=1, media_type="x",
                                                role=role, created=now, updated=now))
            c.execute(link.insert(), [{"asset_id": out, "parent_id": plate, "created": now}, {"asset_id": out, "parent_id": source, "created": now}])

        assert migrate.upgrade(db_empty_url, "0004") == "0004"

        s = make_session(engine)
        try:
            codes = {str(r.id): r.code for r in s.scalars(sa.select(repo.Shot).where(repo.Shot.project_id == pid))}
            # the oldest keeps its code; the duplicate gets the next free suffix
            assert codes == {str(shots[0]): "plate-20261130-051500", str(shots[1]): "plate-20261130-051500-3",
                             str(shots[2]): "plate-20261130-051500-2"}
            assert find_shot_by_ref(s, "plate-20261130-051500").id == shots[0]
            # old links: kept, without a stage run, and the lineage still shows them
            assert repo.asset_parent_ids(s, out) == sorted([str(plate), str(source)])
            tree = repo.asset_lineage(s, out)
            assert {p["asset"]["id"] for p in tree["parents"]} == {str(plate), str(source)} and tree["run_id"] is None
            # new links are recorded once per stage run, old ones are not duplicated
            repo.add_asset_parents(s, out, [plate])
            assert len(s.execute(sa.select(repo.AssetParent).where(repo.AssetParent.asset_id == out)).all()) == 2
            # a taken code gets a suffix instead of a second shot with the same code
            again = repo.create_shot(s, project_id=pid, code="plate-20261130-051500", plate_asset_id=None, params={}, source_asset_ids=[])
            assert again.code == "plate-20261130-051500-4"
            s.commit()
        finally:
            s.close()
        with engine.begin() as c, pytest.raises(sa.exc.IntegrityError):
            c.execute(shot.insert().values(id=uuid.uuid4(), project_id=pid, code="plate-20261130-051500", params={}, status="new",
                                           source_asset_ids=[], priority=0, created=now, updated=now))
    finally:
        engine.dispose()
    # and back down: one link per (asset, parent) again
    assert migrate.downgrade(db_empty_url, "0003") == "0003"
