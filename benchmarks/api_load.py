"""Load on the HTTP API: 200 submissions from 20 concurrent clients over loopback.

    python benchmarks/api_load.py [--shots 200] [--clients 20] [--drain [--drain-limit 6]]

What it measures: the API alone. The app gets a stub ``start_run`` that only records the call, so
the latency is recast's (auth, validation, an S3 HEAD of the plate and source on moto's server,
three short SQLite transactions, the response), not Prefect's. Every tenth request is sent twice
with the same Idempotency-Key (a client retry) to check that retries create nothing.

Checks: every submission answered 201 (or 200 for a retry), every shot is recorded exactly once
(rows counted in the database), the stub was called once per shot. Prints p50/p95/max latency.

``--drain``: then registers the deployments with a temporary Prefect server (the test harness),
starts two process workers on the ``cpu`` pool and runs the ``nightly-batch`` deployment
(concurrency 2) over the first ``--drain-limit`` queued shots of a short sample clip, and prints
the throughput. Shots share the plate, so after the first one ingest and segmentation come from
recast's work-key cache; each shot has its own expression edit, so expression, swap, QC and
render are computed for every shot.

The server runs in a thread of this process (uvicorn), the clients are asyncio tasks of httpx in
the main thread: both share one interpreter, so the numbers are an upper bound of the latency a
separate client would see.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from fractions import Fraction
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
MEDIA = Path(os.environ.get("RECAST_TEST_MEDIA", REPO.parent / "shared" / "media"))


def cut_clip(src: Path, dst: Path, frames: int, width: int = 0) -> Path:
    """The first ``frames`` frames of ``src`` as H.264 (optionally scaled to ``width``)."""
    import av

    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        vin = inp.streams.video[0]
        vout = out.add_stream("libx264", rate=vin.average_rate or Fraction(25))
        w = width or vin.width
        h = int(round(vin.height * w / vin.width / 2) * 2)
        vout.width, vout.height, vout.pix_fmt = w, h, "yuv420p"
        vout.options = {"crf": "18", "preset": "veryfast"}
        for n, frame in enumerate(inp.decode(video=0)):
            if n >= frames:
                break
            frame = frame.reformat(width=w, height=h, format="yuv420p")
            frame.pts = None
            for p in vout.encode(frame):
                out.mux(p)
        for p in vout.encode():
            out.mux(p)
    return dst


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


async def load(url: str, token: str, bodies: list[dict], clients: int) -> tuple[list[float], list[int], int]:
    import httpx

    latencies: list[float] = []
    statuses: list[int] = []
    retries = 0
    queue: asyncio.Queue = asyncio.Queue()
    for i, body in enumerate(bodies):
        queue.put_nowait((i, body))

    async def client() -> None:
        nonlocal retries
        async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as c:
            while not queue.empty():
                i, body = queue.get_nowait()
                key = f"load-{i}"
                t = time.perf_counter()
                r = await c.post("/v1/shots", json=body, headers={"Idempotency-Key": key})
                latencies.append((time.perf_counter() - t) * 1000)
                statuses.append(r.status_code)
                if r.status_code not in (200, 201):
                    print(f"request {i}: {r.status_code} {r.text[:200]}", file=sys.stderr)
                if i % 10 == 0:  # a client retry of the same request
                    r2 = await c.post("/v1/shots", json=body, headers={"Idempotency-Key": key})
                    retries += 1
                    if r2.status_code != 200 or r2.json()["id"] != r.json().get("id"):
                        statuses.append(-r2.status_code)

    await asyncio.gather(*(client() for _ in range(clients)))
    return latencies, statuses, retries


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shots", type=int, default=200)
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--drain", action="store_true", help="then drain queued shots with the nightly-batch deployment and 2 workers")
    ap.add_argument("--drain-limit", type=int, default=6, help="how many of the queued shots the batch runs")
    ap.add_argument("--frames", type=int, default=12, help="frames of the sample clip")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="recast-api-load-"))
    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
                 "AWS_EC2_METADATA_DISABLED": "true"}.items():
        os.environ.setdefault(k, v)
    import subprocess

    import httpx

    from tests.integration.conftest_api import free_port

    # moto's S3 server in its own process, so it does not compete with the API for this GIL
    port = free_port()
    moto = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            httpx.get(endpoint, timeout=1)
            break
        except httpx.HTTPError:
            time.sleep(0.1)
    os.environ.update({"RECAST_DATA_DIR": str(tmp / "data"), "RECAST_S3_ENDPOINT_URL": endpoint, "RECAST_CHUNK_SIZE": "24"})
    os.environ.pop("RECAST_STORAGE_URL", None)
    os.environ.pop("RECAST_DATABASE_URL", None)

    import boto3

    from recast.api.app import create_app
    from recast.db import queue as dbq
    from recast.db import repository as repo
    from recast.db import tokens
    from recast.db.session import session_scope
    from recast.settings import get_settings
    from tests.integration.conftest_api import ServerThread, WorkerThread

    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    s3.create_bucket(Bucket="incoming")
    clip = cut_clip(MEDIA / "videos" / "aniportrait_pose_ref_video.mp4", tmp / "sample.mp4", args.frames, width=384)
    s3.upload_file(str(clip), "incoming", "sample.mp4")
    s3.upload_file(str(MEDIA / "images" / "deepface_img17.jpg"), "incoming", "source.jpg")

    settings = get_settings()
    calls: list[tuple[str, str]] = []
    calls_lock = threading.Lock()

    def stub_start(shot_id: str, run_id: str) -> None:
        with calls_lock:
            calls.append((shot_id, run_id))
        return None  # no flow run: the shots stay queued for the batch

    app = create_app(settings, start_run=stub_start, allowed_buckets={"incoming"})
    with session_scope(settings) as s:
        project = repo.get_or_create_project(s, "load-test", consent_required=False)
        project_id = str(project.id)
        _, token = tokens.create_token(s, project_id=project.id, name="load")

    bodies = [{"plate": "s3://incoming/sample.mp4", "sources": ["s3://incoming/source.jpg"], "mode": "face",
               "code": f"load_{i:04d}", "edits": [f"smile={(i % 20) / 20:+.2f}"]} for i in range(args.shots)]
    with ServerThread(app) as server:
        t0 = time.perf_counter()
        latencies, statuses, retries = asyncio.run(load(server.url, token, bodies, args.clients))
        wall = time.perf_counter() - t0

    with session_scope(settings) as s:
        rows = dbq.count_shots(s, project_id=project_id)
        codes = [sh.code for sh in repo.list_shots(s, project_id=project_id, limit=args.shots * 2)]
    ok = (rows == args.shots and len(set(codes)) == args.shots and len(calls) == args.shots
          and len({c[0] for c in calls}) == args.shots and all(st in (200, 201) for st in statuses))
    first = latencies  # includes the retries' first attempts only
    print(f"submissions: {args.shots} from {args.clients} concurrent clients (+{retries} retries with the same Idempotency-Key) "
          f"in {wall:.2f} s = {args.shots / wall:.0f}/s")
    print(f"submit latency ms: p50 {statistics.median(first):.1f}  p95 {percentile(first, 95):.1f}  max {max(first):.1f}")
    print(f"recorded: {rows} shot rows, {len(set(codes))} distinct codes, starter called {len(calls)} times; "
          f"statuses {sorted(set(statuses))} -> {'OK' if ok else 'MISMATCH'}")
    if not ok:
        moto.terminate()
        return 1

    if args.drain:
        from prefect.deployments import run_deployment
        from prefect.testing.utilities import prefect_test_harness

        from recast.flows.deployments import NIGHTLY_BATCH, register_deployments

        with prefect_test_harness(server_startup_timeout=120):
            register_deployments()
            with WorkerThread("cpu", limit=None), WorkerThread("cpu", limit=None):
                t0 = time.perf_counter()
                fr = run_deployment(NIGHTLY_BATCH, parameters={"project": "load-test", "limit": args.drain_limit, "concurrency": 2},
                                    timeout=3600, poll_interval=2)
                wall = time.perf_counter() - t0
            with session_scope(settings) as s:
                done = sum(1 for sh in repo.list_shots(s, project_id=project_id, status="done", limit=10_000))
                failed = sum(1 for sh in repo.list_shots(s, project_id=project_id, status="failed", limit=10_000))
        print(f"drain: nightly-batch {fr.state.type.value if fr.state else '?'}: {done} shots done, {failed} failed "
              f"({args.frames} frames each) in {wall:.1f} s with 2 workers -> {done / wall * 60:.1f} shots/min, "
              f"{done * args.frames / wall:.1f} frames/s (batch flow start included)")
    moto.terminate()
    moto.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
