"""recast.db: migrations, repository, SQLite concurrency, error translation.

Every backend-dependent test runs on SQLite and, with RECAST_TEST_POSTGRES_URL set, on
PostgreSQL (see tests/unit/conftest.py for the variable's meaning).
"""

from __future__ import annotations

import hashlib
import threading
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, select, text

from recast.contracts import AssetRef, FrameRange, ModelRef, Rate, SegmentResult, ShotParams, Verdict
from recast.db import migrate
from recast.db import repository as repo
from recast.db import trust as trust_db
from recast.db.orm import AuditEvent, Base
from recast.db.session import make_engine, make_session, safe_url, session_scope
from recast.errors import (
    ConsentError,
    DatabaseUnavailableError,
    InputError,
    InternalError,
    RecordNotFoundError,
    UsageError,
)

TABLES = {
    "project",
    "identity",
    "identity_photo",
    "consent",
    "api_token",
    "shot",
    "run",
    "asset",
    "asset_parent",
    "stage_run",
    "qc_result",
    "review",
    "render",
    "audit_event",
}


def sha(text_: str) -> str:
    return hashlib.sha256(text_.encode()).hexdigest()


def uniq(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def asset(s, name: str, role: str = "plate", parents=()):
    return repo.register_asset(
        s,
        uri=f"file:///objects/{name}",
        sha256=sha(name),
        size=len(name),
        media_type="video/mp4",
        role=role,
        parent_ids=parents,
    )


def no_diff(conn) -> list:
    mc = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": True})
    return compare_metadata(mc, Base.metadata)


# --- migrations --------------------------------------------------------------------------------
def test_upgrade_creates_every_table_and_reaches_head(db_empty_url):
    assert migrate.current_revision(db_empty_url) is None
    assert migrate.upgrade(db_empty_url) == migrate.head_revision()
    assert migrate.current_revision(db_empty_url) == migrate.head_revision()
    engine = make_engine(db_empty_url)
    try:
        with engine.connect() as conn:
            assert set(inspect(conn).get_table_names()) == TABLES | {"alembic_version"}
            assert no_diff(conn) == []
    finally:
        engine.dispose()
    # downgrade drops everything and upgrade rebuilds it
    assert migrate.downgrade(db_empty_url, "base") is None
    engine = make_engine(db_empty_url)
    try:
        with engine.connect() as conn:
            assert set(inspect(conn).get_table_names()) <= {"alembic_version"}
    finally:
        engine.dispose()
    assert migrate.upgrade(db_empty_url) == migrate.head_revision()


def test_orm_and_migrated_schema_do_not_differ(db_engine):
    with db_engine.connect() as conn:
        assert no_diff(conn) == []


def test_constraint_names_follow_the_convention(db_engine):
    with db_engine.connect() as conn:
        insp = inspect(conn)
        assert insp.get_pk_constraint("asset_parent")["constrained_columns"] == ["id"]
        assert "fk_asset_parent_stage_run_id_stage_run" in {fk["name"] for fk in insp.get_foreign_keys("asset_parent")}
        fks = {fk["name"] for fk in insp.get_foreign_keys("stage_run")}
        assert "fk_stage_run_run_id_run" in fks
        assert "ix_stage_run_work_key" in {ix["name"] for ix in insp.get_indexes("stage_run")}
        assert "ix_asset_sha256" in {ix["name"] for ix in insp.get_indexes("asset")}
        uqs = {uq["name"] for uq in insp.get_unique_constraints("asset")}
        if conn.dialect.name == "postgresql":  # SQLite's reflection names only some of them
            assert "uq_asset_uri_sha256" in uqs
            assert insp.get_pk_constraint("asset")["name"] == "pk_asset"


def test_migrations_ship_inside_the_package():
    root = migrate.MIGRATIONS_DIR
    assert (root / "env.py").is_file() and (root / "script.py.mako").is_file()
    assert (root / "versions" / "0001_initial.py").is_file()
    assert root.parent.name == "db" and root.parent.parent.name == "recast"
    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    text_ = pyproject.read_text()
    for pattern in ("db/migrations/*.py", "db/migrations/*.mako", "db/migrations/versions/*.py"):
        assert pattern in text_


def test_ensure_schema_upgrades_embedded_sqlite(recast_env):
    from recast.settings import get_settings

    migrate.forget_schema_checks()
    settings = get_settings()
    url = settings.resolved_database_url
    assert url.startswith("sqlite:///") and not (recast_env / "recast.db").exists()
    migrate.ensure_schema(settings)
    assert migrate.current_revision(url) == migrate.head_revision()
    migrate.ensure_schema(settings)  # cached: no work the second time
    with session_scope(settings) as s:
        repo.get_or_create_project(s, "p")
    with session_scope(settings) as s:
        assert repo.get_project(s, "p").consent_required is True
    migrate.forget_schema_checks()
    from recast.db.session import dispose_engines

    dispose_engines()


@pytest.mark.postgres
def test_ensure_schema_refuses_unmigrated_server_database(db_pg_new_database, monkeypatch, recast_env):
    from recast.settings import get_settings, reset_settings

    url = db_pg_new_database()
    monkeypatch.setenv("RECAST_DATABASE_URL", url)
    reset_settings()
    migrate.forget_schema_checks()
    with pytest.raises(DatabaseUnavailableError, match=r"not at the current schema revision .*run `recast db upgrade`"):
        migrate.ensure_schema(get_settings())
    migrate.upgrade(url)
    migrate.ensure_schema(get_settings())
    migrate.forget_schema_checks()


def test_unknown_revision_is_reported(tmp_path):
    url = f"sqlite:///{tmp_path / 'x.db'}"
    migrate.upgrade(url)
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = 'ffff'"))
    engine.dispose()
    with pytest.raises(DatabaseUnavailableError, match="revision ffff, which this version of recast does not know"):
        migrate.upgrade(url)


# --- connection errors ---------------------------------------------------------------------------
def test_unreachable_postgres_raises_one_line_without_password():
    url = "postgresql+psycopg://u:secret@127.0.0.1:1/x"
    engine = make_engine(url)
    with pytest.raises(DatabaseUnavailableError) as info:
        with session_scope(engine=engine) as s:
            s.execute(text("SELECT 1"))
    msg = str(info.value)
    assert msg.startswith("database postgresql+psycopg://u@127.0.0.1:1/x: cannot connect (")
    assert msg.endswith(")") and "\n" not in msg and "secret" not in msg
    assert isinstance(info.value, ConnectionError)
    with pytest.raises(DatabaseUnavailableError, match="cannot connect"):
        migrate.current_revision(url)
    with pytest.raises(DatabaseUnavailableError, match="cannot connect"):
        migrate.upgrade(url)
    assert safe_url(url) == "postgresql+psycopg://u@127.0.0.1:1/x"


def test_ensure_schema_on_unreachable_server(monkeypatch, recast_env):
    from recast.settings import get_settings, reset_settings

    monkeypatch.setenv("RECAST_DATABASE_URL", "postgresql+psycopg://u:pw@127.0.0.1:1/x")
    reset_settings()
    migrate.forget_schema_checks()
    with pytest.raises(DatabaseUnavailableError, match=r"^database postgresql\+psycopg://u@127.0.0.1:1/x: cannot connect"):
        migrate.ensure_schema(get_settings())


def test_bad_url_is_a_usage_error():
    with pytest.raises(UsageError):
        make_engine("not a url")


# --- SQLite specifics ----------------------------------------------------------------------------
def test_sqlite_runs_in_wal_mode_with_busy_timeout(tmp_path):
    url = f"sqlite:///{tmp_path / 'a' / 'b' / 'recast.db'}"
    engine = make_engine(url)  # creates the parent directories
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert (tmp_path / "a" / "b").is_dir()
    finally:
        engine.dispose()


def test_concurrent_writers_do_not_fail(db_url):
    """4 threads, each with its own sessions, read-then-write the same tables at once."""
    engine = make_engine(db_url)
    errors: list[BaseException] = []
    tag = uuid.uuid4().hex[:8]
    with session_scope(engine=engine) as s:
        project = repo.get_or_create_project(s, f"conc-{tag}")
        shot = repo.create_shot(
            s, project_id=project.id, code="sh010", plate_asset_id=None, params={}, source_asset_ids=[]
        )
        run_id = repo.create_run(s, shot.id, params={}).id
    start = threading.Barrier(4)

    def work(worker: int) -> None:
        try:
            start.wait()
            for i in range(25):
                with session_scope(engine=engine) as s:
                    # read first, then write: the pattern that trips SQLite's snapshot upgrade
                    repo.get_run(s, run_id)
                    repo.find_done_stage_run(s, "segment", f"{tag}-{i}")
                    # the same object registered by every thread, and one of its own
                    shared = asset(s, f"{tag}/shared-{i}", role="plate_chunk")
                    own = asset(s, f"{tag}/w{worker}-{i}", role="landmarks", parents=[shared.id])
                    key = f"{tag}-{i}"
                    if repo.find_done_stage_run(s, "segment", key) is None:
                        row = repo.start_stage_run(
                            s, run_id=run_id, shot_id=None, stage="segment", work_key=key, chunk_index=i,
                            params={}, models=[], code_version="t", input_asset_ids=[shared.id], host=f"w{worker}",
                        )
                        repo.finish_stage_run(s, row.id, status="done", output_asset_ids=[own.id])
                    repo.add_audit_event(s, actor=f"w{worker}", action="test", subject_type="asset", subject_id=own.id, detail={"i": i})
                    repo.set_run_status(s, run_id, "running")
        except BaseException as exc:  # noqa: BLE001 - collected and re-raised in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    try:
        assert not errors, errors[0]
        with session_scope(engine=engine) as s:
            shared_rows = [repo.find_asset(s, sha(f"{tag}/shared-{i}")) for i in range(25)]
            assert all(r is not None for r in shared_rows)
            assert len({r.id for r in shared_rows}) == 25
            events = [e for e in repo.list_audit_events(s, action="test") if e.detail and str(e.subject_id)]
            assert sum(1 for e in events if e.actor.startswith("w")) >= 100
            assert len(repo.stage_runs_for_run(s, run_id)) >= 25
            for i in range(25):
                assert repo.find_done_stage_run(s, "segment", f"{tag}-{i}") is not None
    finally:
        engine.dispose()


# --- assets and lineage --------------------------------------------------------------------------
def test_register_asset_is_idempotent(db_session):
    s = db_session
    tag = uniq("idem")
    plate = asset(s, f"{tag}/plate.mp4")
    other = asset(s, f"{tag}/other.mp4")
    again = repo.register_asset(
        s, uri=plate.uri, sha256=plate.sha256.upper(), size=plate.size, media_type="video/mp4",
        role="plate", media_info={"codec": "h264"}, parent_ids=[other.id],
    )
    assert again.id == plate.id
    assert again.media_info == {"codec": "h264"}  # filled in when missing
    assert repo.asset_parent_ids(s, plate.id) == [str(other.id)]
    # once more with the same parent: no duplicate link, no error
    repo.register_asset(s, uri=plate.uri, sha256=plate.sha256, size=1, media_type="x", role="x", parent_ids=[str(other.id)])
    assert repo.asset_parent_ids(s, plate.id) == [str(other.id)]
    # same URI, new content: a new row
    changed = repo.register_asset(s, uri=plate.uri, sha256=sha("new"), size=3, media_type="video/mp4", role="plate")
    assert changed.id != plate.id
    # lookups
    assert repo.find_asset(s, str(plate.id)).id == plate.id
    assert repo.find_asset(s, plate.id.hex).id == plate.id
    assert repo.find_asset(s, plate.sha256).id == plate.id
    assert repo.find_asset(s, plate.sha256[:16]).id == plate.id
    assert repo.find_asset(s, plate.uri).id == changed.id  # newest at that URI
    assert repo.find_asset(s, "file:///nowhere") is None
    assert repo.find_asset(s, str(uuid.uuid4())) is None
    ref = repo.asset_ref(plate)
    assert isinstance(ref, AssetRef) and ref.asset_id == str(plate.id) and ref.sha256 == plate.sha256
    with pytest.raises(InputError, match="not 64 hex digits"):
        repo.register_asset(s, uri="x", sha256="abc", size=1, media_type="x", role="x")
    # a bug of the caller, not the user's bad input (exit 1, not 3)
    with pytest.raises(InternalError, match="to itself"):
        repo.add_asset_parents(s, plate.id, [plate.id])
    # content addressing: a stage output byte-identical to its input is that input, no self-link
    assert repo.register_asset(s, uri=plate.uri, sha256=plate.sha256, size=1, media_type="x", role="x",
                               parent_ids=[plate.id, other.id]).id == plate.id
    assert repo.asset_parent_ids(s, plate.id) == [str(other.id)]
    with pytest.raises(RecordNotFoundError):
        repo.get_asset(s, "nonsense")
    with pytest.raises(RecordNotFoundError):
        repo.get_asset(s, uuid.uuid4())
    # soft delete and revival
    repo.mark_asset_deleted(s, other.id)
    assert repo.get_asset(s, other.id).deleted_at is not None
    revived = asset(s, f"{tag}/other.mp4")
    assert revived.id == other.id and revived.deleted_at is None


def test_lineage_tree_and_descendants(db_session):
    s = db_session
    tag = uniq("lin")
    plate = asset(s, f"{tag}/plate")
    source = asset(s, f"{tag}/source", role="source")
    chunks = [asset(s, f"{tag}/chunk{i}", "plate_chunk", [plate.id]) for i in range(2)]
    swapped = [asset(s, f"{tag}/swap{i}", "swapped_chunk", [chunks[i].id, source.id]) for i in range(2)]
    final = asset(s, f"{tag}/final", "deliverable", [w.id for w in swapped] + [plate.id])

    tree = repo.asset_lineage(s, final.id)
    assert tree["asset"]["id"] == str(final.id) and tree["asset"]["role"] == "deliverable"
    parents = {p["asset"]["id"]: p for p in tree["parents"]}
    assert set(parents) == {str(swapped[0].id), str(swapped[1].id), str(plate.id)}
    sw0 = parents[str(swapped[0].id)]
    assert {p["asset"]["id"] for p in sw0["parents"]} == {str(chunks[0].id), str(source.id)}
    chunk0 = next(p for p in sw0["parents"] if p["asset"]["id"] == str(chunks[0].id))
    assert [p["asset"]["id"] for p in chunk0["parents"]] == [str(plate.id)]
    assert chunk0["parents"][0]["parents"] == []

    down = repo.asset_descendants(s, plate.id)
    children = {c["asset"]["id"]: c for c in down["children"]}
    assert set(children) == {str(chunks[0].id), str(chunks[1].id), str(final.id)}
    grand = children[str(chunks[1].id)]["children"]
    assert [g["asset"]["id"] for g in grand] == [str(swapped[1].id)]
    assert [g["asset"]["id"] for g in grand[0]["children"]] == [str(final.id)]

    # a loop (which recast never makes) must not recurse forever
    a = asset(s, f"{tag}/a")
    b = asset(s, f"{tag}/b", parents=[a.id])
    repo.add_asset_parents(s, a.id, [b.id])
    loop = repo.asset_lineage(s, a.id)
    assert loop["parents"][0]["asset"]["id"] == str(b.id)
    assert loop["parents"][0]["parents"][0]["cycle"] is True
    assert repo.asset_descendants(s, b.id)["children"][0]["children"][0]["cycle"] is True
    # depth limit
    shallow = repo.asset_lineage(s, final.id, max_depth=1)
    assert all(p.get("truncated") or p["parents"] == [] for p in shallow["parents"])


# --- shots, runs, stage runs ---------------------------------------------------------------------
def _shot(s, tag: str, **kw):
    project = repo.get_or_create_project(s, f"proj-{tag}", media_type="film")
    plate = asset(s, f"{tag}/plate.mp4")
    src = asset(s, f"{tag}/src.jpg", role="source")
    return project, repo.create_shot(
        s, project_id=project.id, code="sh010", plate_asset_id=plate.id,
        params=ShotParams(mode="head"), source_asset_ids=[src.id], **kw,
    )


def test_projects_shots_and_runs(db_session):
    s = db_session
    tag = uniq("run")
    project, shot = _shot(s, tag, priority=5)
    assert repo.get_or_create_project(s, project.name, media_type="ad").id == project.id
    assert repo.get_project(s, str(project.id)).media_type == "film"  # not overwritten
    assert repo.get_or_create_project(s, uniq("ad"), media_type="ad", consent_required=False).consent_required is False
    with pytest.raises(UsageError):
        repo.get_or_create_project(s, uniq("x"), media_type="tv")
    assert shot.params["mode"] == "head" and shot.status == "new" and shot.priority == 5
    assert repo.find_shot(s, project_id=project.id, code="sh010").id == shot.id

    keyed = repo.create_shot(s, project_id=project.id, code="sh020", plate_asset_id=None, params={}, source_asset_ids=[], idempotency_key=f"k-{tag}")
    assert repo.create_shot(s, project_id=project.id, code="other", plate_asset_id=None, params={}, source_asset_ids=[], idempotency_key=f"k-{tag}").id == keyed.id

    run = repo.create_run(s, str(shot.id), params={"chunk_size": 48})
    assert run.status == "queued" and repo.get_shot(s, shot.id).status == "queued"
    repo.set_run_status(s, run.id, "running", prefect_flow_run_id="flow-1")
    started = repo.get_run(s, run.id).started
    assert started is not None and started.tzinfo is not None
    repo.set_run_status(s, str(run.id), "awaiting_review")
    assert repo.get_run(s, run.id).ended is None
    out = asset(s, f"{tag}/out.mp4", "deliverable")
    repo.set_run_status(s, run.id, "done", output_asset_id=out.id, summary={"frames": 10})
    done = repo.get_run(s, run.id)
    assert done.ended >= done.started and done.started == started
    assert done.summary == {"frames": 10} and done.output_asset_id == out.id
    assert repo.get_shot(s, shot.id).status == "done"
    assert repo.find_run_by_flow_run(s, "flow-1").id == run.id
    assert repo.latest_run_for_shot(s, shot.id).id == run.id
    with pytest.raises(UsageError, match="run status 'bogus'"):
        repo.set_run_status(s, run.id, "bogus")
    with pytest.raises(RecordNotFoundError, match="run .* not found"):
        repo.get_run(s, uuid.uuid4())
    runs = repo.list_runs(s, limit=5, project_id=project.id)
    assert [(r.id, sh.id, p.id) for r, sh, p in runs] == [(run.id, shot.id, project.id)]
    d = repo.run_to_dict(*runs[0])
    assert d["shot"]["code"] == "sh010" and d["project"]["name"] == project.name and d["status"] == "done"
    second = repo.create_run(s, shot.id)
    assert [r.id for r, _, _ in repo.list_runs(s, project_id=project.name)] == [second.id, run.id]


def test_stage_run_lifecycle_and_cache_lookup(db_session):
    s = db_session
    tag = uniq("stage")
    _, shot = _shot(s, tag)
    run = repo.create_run(s, shot.id)
    key = f"wk-{tag}"
    chunk = asset(s, f"{tag}/chunk0", "plate_chunk")
    models = [ModelRef(name="face_mesh", version="0.10.21", sha256=sha("m"))]

    def start(k=key, stage="segment"):
        return repo.start_stage_run(
            s, run_id=run.id, shot_id=shot.id, stage=stage, work_key=k, chunk_index=0, frame_start=0, frame_end=48,
            params={"face": "largest"}, models=models, code_version="0.1.0", input_asset_ids=[chunk.id],
            host="h1", prefect_flow_run_id="f", prefect_task_run_id="t",
        )

    first = start()
    assert first.status == "running" and first.started is not None and first.ended is None
    assert first.models == [{"name": "face_mesh", "version": "0.10.21", "sha256": sha("m")}]
    assert repo.find_done_stage_run(s, "segment", key) is None  # running rows are not reusable
    out1 = asset(s, f"{tag}/lm1", "landmarks", [chunk.id])
    result = SegmentResult(
        chunk=FrameRange(start=0, end=48, rate=Rate(num=24, den=1)), analysis=repo.asset_ref(out1),
        faces_found=48, max_faces_in_frame=1, models=tuple(models),
    )
    repo.finish_stage_run(s, first.id, status="done", output_asset_ids=[out1.id], result=result, metrics={"seconds": 1.5})
    second = start()
    out2 = asset(s, f"{tag}/lm2", "landmarks", [chunk.id])
    repo.finish_stage_run(s, second.id, status="done", output_asset_ids=[out2.id], result=result)
    failed = start()
    repo.finish_stage_run(s, failed.id, status="failed", error="boom")
    start(k=f"other-{tag}")  # another key, still running
    start(stage="swap")  # same key, other stage
    with pytest.raises(UsageError):
        repo.finish_stage_run(s, failed.id, status="reused")

    found = repo.find_done_stage_run(s, "segment", key)
    assert found.id == second.id  # the newest done row, not the newer failed one
    assert SegmentResult.model_validate(found.result) == result  # the frozen record survives the round trip
    assert repo.find_done_stage_run(s, "swap", key) is None
    assert repo.find_done_stage_run(s, "segment", f"nope-{tag}") is None
    # outputs gone from the store: fall back to the older row whose outputs still exist
    repo.mark_asset_deleted(s, out2.id)
    assert repo.find_done_stage_run(s, "segment", key).id == first.id
    assert repo.find_done_stage_run(s, "segment", key, require_live_outputs=False).id == second.id

    run2 = repo.create_run(s, shot.id)
    reused = repo.record_reused_stage_run(s, first, run_id=run2.id, shot_id=shot.id, host="h2")
    assert reused.status == "reused" and reused.reused_from_id == first.id
    assert reused.output_asset_ids == [str(out1.id)] and reused.result == first.result
    assert reused.chunk_index == 0 and reused.work_key == key and reused.started == reused.ended
    again = repo.record_reused_stage_run(s, str(reused.id), run_id=run2.id, shot_id=shot.id)
    assert again.reused_from_id == first.id  # points at the row that did the work
    assert repo.find_done_stage_run(s, "segment", key).id == first.id  # reuse rows are not "done"
    # the other way of calling it: start_stage_run's keywords plus the outputs and result
    by_key = repo.record_reused_stage_run(
        s, run_id=run2.id, shot_id=shot.id, stage="segment", work_key=key, chunk_index=0, frame_start=0,
        frame_end=48, params={"face": "largest"}, models=[m.model_dump() for m in models], code_version="0.1.0",
        input_asset_ids=[str(chunk.id)], host="h3", output_asset_ids=[str(out1.id)], result=result.model_dump(mode="json"),
    )
    assert by_key.reused_from_id == first.id and by_key.output_asset_ids == [str(out1.id)]
    assert by_key.models == first.models and SegmentResult.model_validate(by_key.result) == result

    rows = repo.stage_runs_for_run(s, run.id)
    assert [r.id for r in rows][:3] == [first.id, second.id, failed.id]
    assert all(r.run_id == run.id for r in rows)
    d = repo.stage_run_to_dict(rows[0])
    assert d["seconds"] >= 0 and d["status"] == "done" and d["input_asset_ids"] == [str(chunk.id)]
    assert [r.id for r in repo.stage_runs_for_run(s, run2.id)] == [reused.id, again.id, by_key.id]
    assert [a.id for a in repo.get_assets(s, [out1.id, str(uuid.uuid4()), chunk.id])] == [out1.id, chunk.id]


def test_qc_review_and_render(db_session):
    s = db_session
    tag = uniq("qc")
    _, shot = _shot(s, tag)
    run = repo.create_run(s, shot.id)
    report = asset(s, f"{tag}/report.pdf", "qc_report")
    qc = repo.record_qc(s, run_id=run.id, verdict=Verdict.review, metrics={"identity": 0.7, "psnr": None},
                        reasons=("identity below 0.9",), report_asset_id=report.id, models=[ModelRef(name="dlib", version="1")])
    assert qc.verdict == "review" and qc.shot_id == shot.id and qc.reasons == ["identity below 0.9"]
    assert repo.latest_qc(s, run.id).id == qc.id
    with pytest.raises(UsageError):
        repo.record_qc(s, run_id=run.id, verdict="meh", metrics={})
    review = repo.record_review(s, run_id=run.id, decision="approve", reviewer="ana", note="ok")
    assert review.shot_id == shot.id and [r.id for r in repo.reviews_for_run(s, run.id)] == [review.id]
    out = asset(s, f"{tag}/out.mp4", "deliverable")
    render = trust_db.create_render(s, render_id=uuid.uuid4(), run_id=run.id, asset_id=out.id, approved=False,
                                    watermark_payload=None, consent_id=None, signed=False)
    assert render.approved is False and render.shot_id == shot.id and repo.get_run(s, run.id).output_asset_id == out.id
    assert repo.set_render_approved(s, render.id).approved is True
    assert repo.revoke_render(s, render.id).revoked_at is not None
    assert [r.id for r in repo.renders_for_run(s, run.id)] == [render.id]


def test_consent_scope_and_validity(db_session):
    s = db_session
    tag = uniq("consent")
    film = repo.get_or_create_project(s, f"film-{tag}", media_type="film")
    ad = repo.get_or_create_project(s, f"ad-{tag}", media_type="ad")
    photo = asset(s, f"{tag}/photo.jpg", "photo")
    person = repo.create_identity(s, name=f"Ann {tag}", photo_asset_ids=[photo.id])
    assert repo.identity_photo_ids(s, person.id) == [str(photo.id)]
    assert repo.find_identity(s, person.name).id == person.id
    with pytest.raises(ConsentError, match="no consent on record"):
        repo.check_consent(s, person.id, film.id)
    now = datetime.now(timezone.utc)
    c = repo.add_consent(s, identity_id=person.id, scope={"projects": [film.name], "media": ["film"], "territory": ["EU"]},
                         valid_from=now - timedelta(days=1), valid_until=now + timedelta(days=30))
    assert repo.check_consent(s, person.id, film.id).id == c.id
    assert repo.check_consent(s, person.id, film.name, territory="EU").id == c.id
    with pytest.raises(ConsentError, match="territory 'US'"):
        repo.check_consent(s, person.id, film.id, territory="US")
    with pytest.raises(ConsentError, match="does not cover project"):
        repo.check_consent(s, person.id, ad.id)
    with pytest.raises(ConsentError, match="expired"):
        repo.check_consent(s, person.id, film.id, at=now + timedelta(days=31))
    wide = repo.add_consent(s, identity_id=person.id, scope={"projects": ["*"], "media": ["ad"]})
    assert repo.check_consent(s, person.id, ad.id).id == wide.id
    repo.revoke_consent(s, wide.id, reason="withdrawn")
    with pytest.raises(ConsentError, match="revoked"):
        repo.check_consent(s, person.id, ad.id)
    assert repo.find_covering_consent(s, person.id, ad.id) is None
    with pytest.raises(UsageError):
        repo.add_consent(s, identity_id=person.id, scope={"planets": ["mars"]})


# --- audit and timestamps ------------------------------------------------------------------------
def test_audit_events_are_ordered(db_session):
    s = db_session
    subject = uniq("subj")
    before = datetime.now(timezone.utc) - timedelta(seconds=1)
    events = [
        repo.add_audit_event(s, actor="op", action=f"step{i}", subject_type="shot", subject_id=subject, detail={"i": i})
        for i in range(30)
    ]
    listed = repo.list_audit_events(s, subject_type="shot", subject_id=subject)
    assert [e.id for e in listed] == [e.id for e in events]
    assert [e.detail["i"] for e in listed] == list(range(30))
    later = repo.list_audit_events(s, since=events[9].created, subject_id=subject)
    assert [e.detail["i"] for e in later] == list(range(10, 30))
    assert len(repo.list_audit_events(s, since=before, subject_id=subject, limit=5)) == 5
    assert repo.audit_event_to_dict(listed[0])["created"].endswith("+00:00")
    assert not hasattr(repo, "update_audit_event") and not hasattr(repo, "delete_audit_event")


def test_timestamps_are_aware_utc_and_updated_moves(db_engine):
    tag = uniq("ts")
    with session_scope(engine=db_engine) as s:
        pid = repo.get_or_create_project(s, tag).id
    s = make_session(db_engine)
    try:
        p = repo.get_project(s, pid)
        assert p.created.tzinfo is not None and p.created.utcoffset() == timedelta(0)
        first_updated = p.updated
        repo.set_project_qc_thresholds(s, pid, {"identity_pass": 0.8})
        s.commit()
        s.expire_all()
        p = repo.get_project(s, pid)
        assert p.updated > first_updated and p.qc_thresholds == {"identity_pass": 0.8}
        # a row written by plain SQL gets its timestamps from the server defaults
        s.execute(text("INSERT INTO audit_event (id, actor, action, subject_type) VALUES (:id, 'sql', 'raw', 'x')"),
                  {"id": uuid.uuid4().hex if db_engine.dialect.name == "sqlite" else str(uuid.uuid4())})
        raw = s.scalars(select(AuditEvent).where(AuditEvent.actor == "sql")).first()
        assert raw.created.tzinfo is not None
        s.rollback()
    finally:
        s.close()


def test_session_scope_commits_and_rolls_back(db_engine):
    tag = uniq("scope")
    with pytest.raises(RuntimeError):
        with session_scope(engine=db_engine) as s:
            repo.get_or_create_project(s, tag)
            raise RuntimeError("boom")
    with session_scope(engine=db_engine) as s:
        assert repo.find_project(s, tag) is None
        repo.get_or_create_project(s, tag)
    with session_scope(engine=db_engine) as s:
        assert repo.find_project(s, tag) is not None


def test_get_engine_is_cached_per_url(recast_env):
    from recast.db.session import dispose_engines, get_engine
    from recast.settings import get_settings

    try:
        assert get_engine() is get_engine(get_settings())
        assert str(get_engine().url).endswith("recast.db")
    finally:
        dispose_engines()


def test_foreign_keys_are_enforced(db_session):
    from sqlalchemy.exc import IntegrityError

    with pytest.raises(IntegrityError):
        repo.start_stage_run(
            db_session, run_id=uuid.uuid4(), shot_id=None, stage="x", work_key="k", params={}, models=[],
            code_version=None, input_asset_ids=[], host=None,
        )


def test_db_package_imports_no_orchestration_or_storage():
    """recast.db sits below tasks and flows: it must not pull in prefect, boto3 or their layers."""
    import subprocess
    import sys

    code = (
        "import sys, recast.db, recast.db.orm, recast.db.session, recast.db.migrate, recast.db.repository\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('prefect', 'boto3', 'botocore')\n"
        "       or m.startswith(('recast.tasks', 'recast.flows', 'recast.models', 'recast.storage', 'recast.media'))]\n"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
