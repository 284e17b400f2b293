"""``recast gc``: remove stored intermediates nothing needs any more, and say what was freed.

What a run stores is mostly lossless video (plate chunks, swapped chunks, background plates) and
per-frame arrays (masks, landmarks, QC observations): several times the plate, and worth keeping
only while something may still use it. Kept, whatever their age:

* deliverables (render rows, run outputs) and QC reports;
* the plates and source photos of shots, identity photos and consent releases (photos under
  consent are removed only by ``recast consent revoke``);
* every input and output of the stage runs of a pending run (queued, running, or paused for
  review: an approval renders from them).

Everything else older than ``--older-than`` (counted from when the asset was first stored) is
removed from the object store and its asset row is marked deleted. The rows stay, so ``recast
lineage`` and ``recast show`` still list them with their checksums; the stage cache skips stage
runs whose outputs are deleted (``find_done_stage_run``) and a later run recomputes that work.
Scratch directories under the data directory left by killed runs are removed too when no run is
pending.
"""

from __future__ import annotations

import re
import shutil
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from recast.errors import UsageError

#: roles never collected by age (on top of what the database says is needed)
KEEP_ROLES = ("plate", "source", "deliverable", "identity_photo", "consent_release", "photo", "release", "qc_report")

_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNIT_S = {"": 86400, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_age(text: str) -> timedelta:
    """``30d``, ``12h``, ``2w``, ``90m``, ``0`` (a bare number is days)."""
    m = _AGE.match(text or "")
    if not m:
        raise UsageError(f"--older-than '{text}': expected an age like 30d, 12h, 2w or 0")
    return timedelta(seconds=float(m.group(1)) * _UNIT_S[m.group(2)])


def collect(*, older_than: str = "30d", dry_run: bool = False, actor: str = "cli") -> dict[str, Any]:
    """Remove (or with ``dry_run`` only list) the intermediates nothing needs; returns counts and bytes."""
    from recast.db import gc as gc_repo
    from recast.db import repository as repo
    from recast.db.session import session_scope
    from recast.settings import get_settings
    from recast.tasks.common import store

    age = parse_age(older_than)
    cutoff = datetime.now(timezone.utc) - age
    st = store()
    with session_scope() as s:
        needed = gc_repo.needed_asset_ids(s)
        pending = gc_repo.pending_run_count(s)
        doomed = [{"id": str(a.id), "uri": a.uri, "role": a.role, "size": int(a.size or 0), "sha256": a.sha256}
                  for a in gc_repo.live_assets_older_than(s, cutoff, keep_roles=KEEP_ROLES)
                  if a.id not in needed and st.owns(a.uri)]  # never a file outside the object store
    by_role: dict[str, dict[str, int]] = {}
    for d in doomed:
        r = by_role.setdefault(d["role"], {"count": 0, "bytes": 0})
        r["count"] += 1
        r["bytes"] += d["size"]
    scratch = _old_scratch(get_settings().resolved_data_dir / "tmp", cutoff) if pending == 0 else []
    scratch_bytes = sum(b for _, b in scratch)
    if not dry_run:
        removed = []
        for d in doomed:
            st.delete(d["uri"])
            removed.append(d)
        with session_scope() as s:
            for d in removed:
                repo.mark_asset_deleted(s, d["id"])
            repo.add_audit_event(s, actor=actor, action="gc.collected", subject_type="store", subject_id=st.describe(),
                                 detail={"older_than": older_than, "assets": len(removed), "bytes": sum(d["size"] for d in removed),
                                         "scratch_dirs": len(scratch), "scratch_bytes": scratch_bytes})
        for path, _ in scratch:
            shutil.rmtree(path, ignore_errors=True)
    return {"dry_run": dry_run, "older_than": older_than, "assets": len(doomed), "bytes": sum(d["size"] for d in doomed),
            "by_role": by_role, "scratch_dirs": len(scratch), "scratch_bytes": scratch_bytes,
            "kept_needed": len(needed), "pending_runs": pending, "removed": doomed}


def _old_scratch(base: Path, cutoff: datetime) -> list[tuple[Path, int]]:
    """Scratch directories (left by killed runs) last modified before ``cutoff``, with their bytes."""
    if not base.is_dir():
        return []
    limit = cutoff.timestamp()
    out = []
    for p in sorted(base.iterdir()):
        try:
            if p.is_dir() and not p.is_symlink() and p.stat().st_mtime <= min(limit, time.time()):
                out.append((p, sum(f.stat().st_size for f in p.rglob("*") if f.is_file() and not f.is_symlink())))
        except OSError:
            continue
    return out


__all__ = ["KEEP_ROLES", "collect", "parse_age"]
