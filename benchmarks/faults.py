"""Fault injection: `recast swap` killed with SIGKILL at seeded random points in every stage,
each kill followed by a rerun of the same command, then audited.

Every attempt is the installed ``recast`` executable in a session of its own with its embedded
Prefect server (no PREFECT_API_URL), as a terminal would run it. A kill point is a stage and a
delay: the attempt's stderr is read line by line, and once a progress line of that stage (or of
a later one) appears, the whole process group gets SIGKILL after the delay, a random fraction of
the first half of the stage's duration in an uninterrupted run (:data:`KILL_SPREAD`). The stages are those of the progress lines
(``[recast] <stage>: ...``), plus ``run`` (the run is recorded, its flow not yet started) and
``publish`` (the render's frames are written; muxing, signing, storing and publishing remain).

Kills are grouped into chains, one data directory each, with the kill points of a chain in
pipeline order (a stage may come twice in a chain when there are more kills than stages: the
second kill lands in the rerun's own pass through it): after each kill the same command runs again, and either reaches the chain's next kill
point (past the previous one, on the work the killed attempts left) or finishes. The last
attempt of a chain runs to the end. Then:

* every attempt ended by itself with exit 0, or was killed (never another exit code);
* the chain's swapped chunks (sha256 of the ``swapped_chunk`` outputs of its finished run's
  ``swap`` stage runs) are those of an uninterrupted run in a fresh data directory;
* no run is left ``running``, ``queued`` or ``awaiting_review`` (killed ones are ``crashed``,
  then ``superseded`` by the run that finished);
* no two asset rows share a uri and sha256, no object of the store lacks a live asset row, no
  live asset row of the store lacks its object, no temporary (``.tmp-*``) object is left;
* after each kill no temporary file is next to ``--out``, and ``--out`` is either absent or a
  whole deliverable recast recorded (a kill after the atomic publish, before the run's end);
  after the last attempt ``--out`` is the only file there;
* the embedded Prefect server of a killed attempt stops by itself (its watchdog).

``tests/e2e/test_faults.py`` runs this loop with 10 kills (and the object store and PostgreSQL
outages); run as a script it does 20 and prints kills survived, reruns identical, stuck rows,
orphans and the time lost per kill (the chain's attempts' wall time beyond one uninterrupted
run, per kill)::

    .venv/bin/python benchmarks/faults.py [--kills 20] [--seed 7] [--frames 40] [--chunk-size 12]

The test imports this module (``benchmarks`` is on pytest's ``pythonpath``): one loop, not two
copies; a benchmark never imports the test suite.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

EXE = Path(sys.executable).with_name("recast")

#: kill points, in pipeline order (see the module docstring)
STAGES = ("run", "consent", "ingest", "segment", "track", "swap", "qc", "report", "render", "publish")
#: a kill's delay is drawn from this first share of its stage's duration in the uninterrupted run:
#: a rerun's late stages can be shorter than that run's (work reused, caches warm), and a delay
#: longer than what is left of the process is a kill that never lands; over the whole duration,
#: three clean-clone CI runs in a row missed the render's kill point
KILL_SPREAD = 0.5
#: statuses that mean a process is (or will be) working on the run: none may be left
STUCK = ("running", "queued", "awaiting_review")


def stage_of(line: str) -> str | None:
    """The stage a progress line belongs to (``publish`` for the render's last frame), or None."""
    if not line.startswith("[recast] "):
        return None
    text = line[len("[recast] "):]
    word = text.split(":", 1)[0].split(" ", 1)[0]
    if word == "render" and "(100%)" in text:
        return "publish"
    return word if word in STAGES else None


@dataclass(frozen=True)
class KillPoint:
    stage: str
    delay_s: float

    def __str__(self) -> str:
        return f"{self.stage}+{self.delay_s:.2f}s"


@dataclass
class Attempt:
    rc: int
    wall_s: float
    killed_at: KillPoint | None
    stdout: str
    stderr: str
    events: list[tuple[float, str]]  # (seconds since start, stage) of each progress line
    server_left: bool = False  # the embedded Prefect server outlived a killed attempt

    @property
    def killed(self) -> bool:
        return self.killed_at is not None

    @property
    def summary(self) -> dict[str, Any]:
        return json.loads(self.stdout) if self.rc == 0 and self.stdout.strip() else {}

    def tail(self, chars: int = 2000) -> str:
        return self.stderr[-chars:]


@dataclass
class Config:
    """One data directory and the swap command run in it."""

    work: Path
    plate: Path
    source: Path
    chunk_size: int = 12
    mode: str = "face"
    env_extra: dict[str, str] = field(default_factory=dict)
    database_url: str | None = None
    storage_url: str | None = None  # None: the local store under the data directory

    @property
    def data(self) -> Path:
        return self.work / "data"

    @property
    def out(self) -> Path:
        return self.work / "out" / "shot.mp4"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "RECAST_"))}
        env["RECAST_DATA_DIR"] = str(self.data)
        if self.database_url:
            env["RECAST_DATABASE_URL"] = self.database_url
        if self.storage_url:
            env["RECAST_STORAGE_URL"] = self.storage_url
        if self.database_url or self.storage_url:
            # PostgreSQL or S3: recast runs as a service and signs only with the studio's keys
            env.update(self.studio_credentials())
        env.update(self.env_extra)
        return env

    def studio_credentials(self) -> dict[str, str]:
        """A development CA made once under the work directory, standing in for the studio's."""
        from recast.media.credentials import ensure_dev_signing_identity
        from recast.models.watermark import DEVELOPMENT_SEED

        ca = self.work / "studio-ca"
        ensure_dev_signing_identity(ca)
        return {"RECAST_C2PA_CERT": str(ca / "recast-dev-signer-chain.pem"), "RECAST_C2PA_KEY": str(ca / "recast-dev-signer-key.pem"),
                "RECAST_C2PA_TRUST_ANCHORS": str(ca / "recast-dev-root-ca.pem"), "RECAST_WATERMARK_SEED": str(DEVELOPMENT_SEED)}

    def command(self) -> list[str]:
        return [str(EXE), "swap", "--mode", self.mode, "--plate", str(self.plate), "--source", str(self.source), "--out", str(self.out),
                "--chunk-size", str(self.chunk_size), "--json"]

    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data.resolve() / 'recast.db'}"


def recast(cfg: Config, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Another recast command on the same data directory (``db upgrade``, ``runs``)."""
    return subprocess.run([str(EXE), *args], capture_output=True, text=True, env=cfg.env(), timeout=timeout)


def _server_pid(data: Path) -> tuple[int, float] | None:
    try:
        state = json.loads((data / "prefect" / "server.json").read_text())
        return int(state["pid"]), float(state["started"])
    except (OSError, ValueError, KeyError):
        return None


def _gone(pid: int, started: float, within_s: float) -> bool:
    import psutil

    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            p = psutil.Process(pid)
            if abs(p.create_time() - started) >= 1.0 or p.status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.2)
    return False


def run_swap(cfg: Config, kill: KillPoint | None = None, *, on_stage: dict[str, Any] | None = None, timeout: float = 600) -> Attempt:
    """Run the swap once; with ``kill``, SIGKILL its process group at that point.

    ``on_stage`` maps a stage to a callable run (once, in the reading thread) when that stage's
    first line appears: how the outage scenarios stop a service mid-run.
    """
    cfg.out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    proc = subprocess.Popen(cfg.command(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=cfg.env(), start_new_session=True,
                            text=True, errors="replace")
    out_chunks: list[str] = []
    reader = threading.Thread(target=lambda: out_chunks.append(proc.stdout.read()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    lines: list[str] = []
    events: list[tuple[float, str]] = []
    fired = threading.Event()
    server: list[tuple[int, float] | None] = []
    hooks = dict(on_stage or {})

    def do_kill() -> None:
        if proc.poll() is not None:
            return
        server.append(_server_pid(cfg.data))
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
            fired.set()

    timer: threading.Timer | None = None
    watchdog = threading.Timer(timeout, lambda: proc.poll() is None and os.killpg(proc.pid, signal.SIGKILL))
    watchdog.daemon = True
    watchdog.start()
    try:
        for line in proc.stderr:  # type: ignore[union-attr]
            lines.append(line)
            stage = stage_of(line)
            if stage is None:
                continue
            events.append((time.monotonic() - t0, stage))
            if stage in hooks:
                hooks.pop(stage)()
            if kill is not None and timer is None and STAGES.index(stage) >= STAGES.index(kill.stage):
                timer = threading.Timer(kill.delay_s, do_kill)
                timer.daemon = True
                timer.start()
        rc = proc.wait()
    finally:
        watchdog.cancel()
        if timer is not None:
            timer.cancel()
    wall = time.monotonic() - t0
    reader.join(10)
    attempt = Attempt(rc=rc, wall_s=wall, killed_at=kill if fired.is_set() else None, stdout="".join(out_chunks),
                      stderr="".join(lines), events=events)
    if attempt.killed and server and server[0] is not None:
        attempt.server_left = not _gone(*server[0], within_s=15)
    return attempt


def stage_durations(baseline: Attempt) -> dict[str, float]:
    """Seconds from each stage's first line to the next stage's, in the uninterrupted run."""
    first: dict[str, float] = {}
    for t, stage in baseline.events:
        first.setdefault(stage, t)
    marks = sorted((t, s) for s, t in first.items())
    out: dict[str, float] = {}
    for i, (t, s) in enumerate(marks):
        end = marks[i + 1][0] if i + 1 < len(marks) else baseline.wall_s
        out[s] = max(0.05, end - t)
    return out


def plan_chains(kills: int, seed: int, durations: dict[str, float], chains: int | None = None) -> list[list[KillPoint]]:
    """``kills`` kill points over every stage (seeded: each stage once before any twice), dealt
    into ``chains`` chains (at least kills / stages), each in pipeline order."""
    rng = random.Random(seed)
    stages = [s for s in STAGES if s in durations]
    chains_n = max(1, math.ceil(kills / len(stages)), chains or 1)
    groups: list[list[KillPoint]] = [[] for _ in range(chains_n)]
    picked: list[str] = []
    while len(picked) < kills:
        rnd = stages[:]
        rng.shuffle(rnd)
        picked.extend(rnd)
    for i, stage in enumerate(picked[:kills]):
        groups[i % chains_n].append(KillPoint(stage, round(rng.uniform(0.0, KILL_SPREAD * durations[stage]), 3)))
    return [sorted(g, key=lambda p: STAGES.index(p.stage)) for g in groups if g]


# --- what the database and the store hold ----------------------------------------------------
def _session(cfg: Config):
    from sqlalchemy import create_engine
    from sqlalchemy.orm import Session

    engine = create_engine(cfg.db_url())
    return engine, Session(engine)


def swapped_chunk_shas(cfg: Config, run_id: str) -> list[str]:
    """sha256 of the ``swapped_chunk`` outputs of a run's swap stage runs, in chunk order."""
    import uuid

    from sqlalchemy import select

    from recast.db.orm import Asset, StageRun

    engine, s = _session(cfg)
    try:
        rows = s.scalars(select(StageRun).where(StageRun.run_id == uuid.UUID(run_id), StageRun.stage == "swap")
                         .order_by(StageRun.chunk_index)).all()
        shas = []
        for row in rows:
            for asset_id in row.output_asset_ids or []:
                asset = s.get(Asset, uuid.UUID(str(asset_id)))
                if asset is not None and asset.role == "swapped_chunk":
                    shas.append(asset.sha256)
        return shas
    finally:
        s.close()
        engine.dispose()


def is_a_render(cfg: Config, path: Path) -> bool:
    """Whether ``path`` holds exactly the bytes of a deliverable recast recorded (a kill after
    the atomic publish and before the run's end leaves a whole deliverable, never part of one)."""
    from sqlalchemy import select

    from recast.checksums import sha256_file
    from recast.db.orm import Asset

    engine, s = _session(cfg)
    try:
        return s.scalars(select(Asset.id).where(Asset.sha256 == sha256_file(path), Asset.role == "deliverable")).first() is not None
    finally:
        s.close()
        engine.dispose()


def _store_root_uri(cfg: Config) -> str:
    if cfg.storage_url:
        return cfg.storage_url.rstrip("/") + "/"
    return (cfg.data.resolve() / "store").as_uri() + "/"


def store_objects(cfg: Config) -> tuple[set[str], list[str]]:
    """(URIs of the store's objects, URIs of temporary objects left in it)."""
    root = _store_root_uri(cfg)
    if root.startswith("s3://"):
        import boto3

        bucket, _, prefix = root[len("s3://"):].partition("/")
        client = boto3.session.Session().client("s3", endpoint_url=cfg.env_extra.get("RECAST_S3_ENDPOINT_URL"), region_name="us-east-1")
        uris: set[str] = set()
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            uris |= {f"s3://{bucket}/{o['Key']}" for o in page.get("Contents", [])}
        return uris, []
    base = cfg.data.resolve() / "store"
    files = [p for p in base.rglob("*") if p.is_file()] if base.is_dir() else []
    tmp = [p.as_uri() for p in files if p.name.startswith(".tmp-")]
    return {p.as_uri() for p in files if not p.name.startswith(".tmp-")}, tmp


def run_statuses(cfg: Config) -> dict[str, int]:
    """How many runs have each status (the database only: the store may be down)."""
    from sqlalchemy import select

    from recast.db.orm import Run

    engine, s = _session(cfg)
    try:
        return dict(Counter(s.scalars(select(Run.status)).all()))
    finally:
        s.close()
        engine.dispose()


def audit(cfg: Config) -> dict[str, Any]:
    """Runs by status and the asset rows against the store's objects."""
    from sqlalchemy import func, select

    from recast.db.orm import Asset, Run

    engine, s = _session(cfg)
    try:
        statuses = Counter(s.scalars(select(Run.status)).all())
        duplicates = s.execute(select(Asset.uri, Asset.sha256, func.count()).group_by(Asset.uri, Asset.sha256)
                               .having(func.count() > 1)).all()
        rows = s.execute(select(Asset.uri, Asset.deleted_at)).all()
    finally:
        s.close()
        engine.dispose()
    root = _store_root_uri(cfg)
    live = {uri for uri, deleted in rows if deleted is None and uri.startswith(root)}
    every = {uri for uri, _ in rows}
    objects, tmp = store_objects(cfg)
    out_dir = cfg.out.parent
    return {
        "statuses": dict(statuses),
        "stuck": sum(statuses[s] for s in STUCK),
        "duplicate_assets": len(duplicates),
        "asset_rows": len(rows),
        "objects": len(objects),
        "objects_without_row": sorted(objects - every),
        "rows_without_object": sorted(live - objects),
        "temp_objects": tmp,
        "out_dir": sorted(p.name for p in out_dir.iterdir()) if out_dir.is_dir() else [],
    }


def orphans(report: dict[str, Any]) -> int:
    return len(report["objects_without_row"]) + len(report["rows_without_object"]) + len(report["temp_objects"])


# --- the loop ---------------------------------------------------------------------------------
@dataclass
class ChainResult:
    points: list[KillPoint]
    attempts: list[Attempt]
    shas: list[str]
    audit: dict[str, Any]
    problems: list[str]

    @property
    def kills(self) -> int:
        return sum(a.killed for a in self.attempts)

    @property
    def wall_s(self) -> float:
        return sum(a.wall_s for a in self.attempts)


def baseline(cfg: Config) -> tuple[Attempt, list[str]]:
    """The uninterrupted run (fresh data directory): its attempt and swapped chunk sha256s."""
    run = run_swap(cfg)
    if run.rc != 0:
        raise RuntimeError(f"the uninterrupted swap failed (exit {run.rc}): {run.tail()}")
    return run, swapped_chunk_shas(cfg, run.summary["run_id"])


def run_chain(cfg: Config, points: list[KillPoint], expected_shas: list[str]) -> ChainResult:
    """Kill at each point in turn (rerunning the same command each time), finish, audit."""
    attempts: list[Attempt] = []
    problems: list[str] = []
    for point in points:
        a = run_swap(cfg, point)
        attempts.append(a)
        if not a.killed:
            if a.rc != 0:
                problems.append(f"attempt before kill {point} ended by itself with exit {a.rc}: {a.tail(600)}")
            break  # it finished before reaching the kill point
        if a.server_left:
            problems.append(f"the embedded Prefect server outlived the kill at {point}")
        left = sorted(p.name for p in cfg.out.parent.iterdir()) if cfg.out.parent.is_dir() else []
        if [name for name in left if name != cfg.out.name]:
            problems.append(f"after the kill at {point}: {left} in the output directory")
        if cfg.out.exists() and not is_a_render(cfg, cfg.out):
            problems.append(f"after the kill at {point}: {cfg.out} is not a whole render of the run")
    if not attempts or attempts[-1].killed:
        attempts.append(run_swap(cfg))
    final = attempts[-1]
    shas: list[str] = []
    if final.rc != 0:
        problems.append(f"the rerun after the last kill ended with exit {final.rc}: {final.tail(1500)}")
    else:
        shas = swapped_chunk_shas(cfg, final.summary["run_id"])
        if shas != expected_shas:
            problems.append(f"swapped chunks differ from the uninterrupted run's: {shas} != {expected_shas}")
    report = audit(cfg)
    if report["stuck"]:
        problems.append(f"runs left {report['statuses']}")
    if report["duplicate_assets"]:
        problems.append(f"{report['duplicate_assets']} duplicated asset rows")
    if orphans(report):
        problems.append(f"orphans: objects without a row {report['objects_without_row']}, rows without an object "
                        f"{report['rows_without_object']}, temporary objects {report['temp_objects']}")
    if final.rc == 0 and report["out_dir"] != [cfg.out.name]:
        problems.append(f"output directory holds {report['out_dir']}, expected only {cfg.out.name}")
    return ChainResult(points=points, attempts=attempts, shas=shas, audit=report, problems=problems)


def run_chains(work: Path, plate: Path, source: Path, chains: list[list[KillPoint]], expected: list[str], *, chunk_size: int = 12,
               parallel: int = 1, log: Any = None) -> list[ChainResult]:
    """Each chain in its own data directory (``work/chainN``), ``parallel`` at a time."""
    from concurrent.futures import ThreadPoolExecutor

    say = log or (lambda _msg: None)

    def one(i: int) -> ChainResult:
        r = run_chain(Config(work / f"chain{i}", plate, source, chunk_size), chains[i], expected)
        say(f"chain {i}: kills {', '.join(str(a.killed_at) for a in r.attempts if a.killed)}; {len(r.attempts)} attempts, "
            f"{r.wall_s:.1f} s; {'OK' if not r.problems else '; '.join(r.problems)}")
        return r

    with ThreadPoolExecutor(max(1, parallel)) as pool:
        return list(pool.map(one, range(len(chains))))


def fault_loop(work: Path, plate: Path, source: Path, *, kills: int, seed: int, chunk_size: int = 12, chains: int | None = None,
               parallel: int = 1, log: Any = None) -> tuple[Attempt, list[ChainResult]]:
    """The uninterrupted run, then ``kills`` kills in chains (each in its own data directory)."""
    say = log or (lambda _msg: None)
    clean, expected = baseline(Config(work / "clean", plate, source, chunk_size))
    say(f"uninterrupted: {clean.wall_s:.1f} s, {len(expected)} swapped chunks")
    plan = plan_chains(kills, seed, stage_durations(clean), chains)
    return clean, run_chains(work, plate, source, plan, expected, chunk_size=chunk_size, parallel=parallel, log=say)


def _first_frames(src: Path, count: int, out: Path) -> Path:
    from recast.media.synthetic import first_frames

    return first_frames(src, count, out)


def cli(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--frames", type=int, default=40)
    ap.add_argument("--chunk-size", type=int, default=12)
    ap.add_argument("--chains", type=int, default=None, help="data directories the kills are spread over (default: kills / stages)")
    ap.add_argument("--parallel", type=int, default=1, help="chains run at the same time (1: time lost per kill is not skewed)")
    ap.add_argument("--media", type=Path, default=Path(os.environ.get("RECAST_TEST_MEDIA", REPO.parent / "shared" / "media")))
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="recast-faults-") as d:
        work = Path(d)
        plate = _first_frames(args.media / "videos" / "aniportrait_pose_ref_video.mp4", args.frames, work / "plate.mp4")
        source = args.media / "images" / "deepface_img17.jpg"
        t0 = time.monotonic()
        clean, chains = fault_loop(work, plate, source, kills=args.kills, seed=args.seed, chunk_size=args.chunk_size,
                                   chains=args.chains, parallel=args.parallel,
                                   log=lambda m: print(m, file=sys.stderr, flush=True))
        kills = sum(c.kills for c in chains)
        survived = sum(c.kills for c in chains if not any("exit" in p for p in c.problems))
        identical = sum(1 for c in chains if c.shas and not any("differ" in p for p in c.problems))
        stuck = sum(c.audit["stuck"] for c in chains)
        orphan_n = sum(orphans(c.audit) for c in chains)
        lost = [(c.wall_s - clean.wall_s) / c.kills for c in chains if c.kills]
        reruns = sum(len(c.attempts) - 1 for c in chains)
        print(f"plate: {args.frames} frames, chunk size {args.chunk_size}, face mode; seed {args.seed}; "
              f"uninterrupted run {clean.wall_s:.1f} s")
        print(f"kills survived:   {survived}/{kills} (planned {args.kills}, in {len(chains)} chains; {reruns} reruns)")
        print(f"kills per stage:  {dict(Counter(a.killed_at.stage for c in chains for a in c.attempts if a.killed_at))}")
        print(f"reruns identical: {identical}/{len(chains)} chains' finished runs have the uninterrupted run's swapped chunks")
        print(f"stuck rows:       {stuck}")
        print(f"orphans:          {orphan_n}; duplicated asset rows: {sum(c.audit['duplicate_assets'] for c in chains)}")
        if lost:
            print(f"time lost/kill:   {sum(lost) / len(lost):.1f} s on average (min {min(lost):.1f}, max {max(lost):.1f}), "
                  f"vs {clean.wall_s:.1f} s for the whole uninterrupted run")
        for i, c in enumerate(chains):
            for p in c.problems:
                print(f"problem (chain {i}): {p}")
        print(f"total wall time:  {time.monotonic() - t0:.0f} s")
        return 0 if all(not c.problems for c in chains) else 1


if __name__ == "__main__":
    sys.exit(cli())
