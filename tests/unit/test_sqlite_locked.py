"""SQLite held by another writer past the bounded wait: exit 6 with one line naming the database,
no traceback (the lock is real: another connection holds BEGIN EXCLUSIVE; only the wait is shortened)."""

from __future__ import annotations

import sqlite3
import time

from typer.testing import CliRunner

from recast.cli import app


def test_database_locked_past_the_busy_timeout_is_exit_6_naming_it(recast_env, monkeypatch):
    import recast.db.session as session
    from recast.db.migrate import ensure_schema

    ensure_schema()  # the schema exists: the command's only write is the one that must wait
    db = recast_env / "recast.db"
    assert db.is_file()
    # 1 s instead of 30 s; engines made before would keep the old timeout, so none are kept
    monkeypatch.setattr(session, "SQLITE_BUSY_TIMEOUT_MS", 1000)
    session.dispose_engines()

    other_writer = sqlite3.connect(str(db), isolation_level=None, timeout=0)
    try:
        other_writer.execute("BEGIN EXCLUSIVE")
        t0 = time.monotonic()
        r = CliRunner().invoke(app, ["project", "create", "locked-out"], catch_exceptions=False)
        took = time.monotonic() - t0
    finally:
        other_writer.execute("ROLLBACK")
        other_writer.close()
        session.dispose_engines()

    assert r.exit_code == 6, r.output
    lines = [x for x in r.stderr.strip().splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("recast: error: database"), r.stderr
    assert str(db) in lines[0] and "locked" in lines[0], lines[0]
    assert "Traceback" not in r.output
    # bounded: the wait, not the 30 s default or a retry loop (generous for a loaded machine)
    assert took < 15, f"took {took:.1f} s"
