"""Chunk tasks of a shot on a Dask cluster (2 worker processes) give the default runner's output;
SQLite is refused there."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from recast.cli import app
from recast.settings import reset_settings
from tests.conftest import IMAGES
from tests.studio_credentials import studio_credentials_env


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def swapped_frames(run_id: str):
    """The lossless swapped chunks of a run, decoded, in order (no watermark, no re-encode)."""
    import numpy as np

    from recast.media import read_all_frames
    from recast.storage import fetch_any

    shown = json.loads(invoke("show", run_id, "--json").stdout)
    uris = [o["uri"] for sr in sorted((x for x in shown["stages"] if x["stage"] == "swap"), key=lambda x: x["chunk_index"])
            for o in sr["outputs"] if o["role"] == "swapped_chunk"]
    return np.concatenate([read_all_frames(fetch_any(u)) for u in uris])


@pytest.mark.slow
def test_dask_cluster_gives_the_default_runners_output(tmp_path, monkeypatch, postgres_url, short_plate, prefect_server):
    from distributed import LocalCluster

    args = ["swap", "--plate", short_plate, "--source", IMAGES / "deepface_img17.jpg", "--mode", "face", "--chunk-size", "20", "--json"]
    monkeypatch.setenv("RECAST_DATA_DIR", str(tmp_path / "threads"))
    reset_settings()
    plain = invoke(*args, "--out", tmp_path / "threads.mp4")
    assert plain.exit_code == 0, plain.stderr
    baseline = swapped_frames(json.loads(plain.stdout)["run_id"])

    monkeypatch.setenv("RECAST_DATA_DIR", str(tmp_path / "dask"))
    monkeypatch.setenv("RECAST_DATABASE_URL", postgres_url)
    for name, value in studio_credentials_env(tmp_path / "studio-ca").items():  # PostgreSQL: a service
        monkeypatch.setenv(name, value)
    from recast.db.migrate import upgrade

    upgrade(postgres_url)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        monkeypatch.setenv("RECAST_DASK_ADDRESS", cluster.scheduler_address)
        reset_settings()
        on_dask = invoke(*args, "--out", tmp_path / "dask.mp4")
        assert on_dask.exit_code == 0, on_dask.stderr
        summary = json.loads(on_dask.stdout)
        frames = swapped_frames(summary["run_id"])
        # Dask workers run with one BLAS/OpenMP thread, which can change float rounding in a few
        # pixels at the blend edge; everything else must be the same
        from recast.models.metrics import psnr

        assert frames.shape == baseline.shape
        assert psnr(frames, baseline) >= 50.0
        assert (frames != baseline).any(axis=-1).mean() < 0.01
        shown = json.loads(invoke("show", summary["run_id"], "--json").stdout)
        hosts_ok = all(sr["status"] == "done" for sr in shown["stages"])
        assert hosts_ok
    reset_settings()


def test_dask_refuses_sqlite(recast_env, tmp_path, monkeypatch, short_plate, prefect_server):
    monkeypatch.setenv("RECAST_DASK_ADDRESS", "tcp://127.0.0.1:1")
    reset_settings()
    r = invoke("swap", "--plate", short_plate, "--source", IMAGES / "deepface_img17.jpg", "--out", tmp_path / "o.mp4", "--mode", "face")
    assert r.exit_code == 2 and "PostgreSQL" in r.stderr
    reset_settings()
