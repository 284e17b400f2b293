"""The same swap with every asset in S3 (moto's server over HTTP) and the database on PostgreSQL."""

from __future__ import annotations

import json
import re
import urllib.request

import boto3
import pytest
from typer.testing import CliRunner

from recast.cli import app
from recast.settings import reset_settings
from tests.conftest import IMAGES
from tests.studio_credentials import studio_credentials_env


@pytest.mark.slow
def test_swap_on_s3_and_postgres(tmp_path, monkeypatch, s3_bucket, postgres_url, short_plate, prefect_server):
    endpoint, bucket = s3_bucket
    monkeypatch.setenv("RECAST_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("RECAST_STORAGE_URL", f"s3://{bucket}/studio")
    monkeypatch.setenv("RECAST_S3_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("RECAST_DATABASE_URL", postgres_url)
    for name, value in studio_credentials_env(tmp_path / "studio-ca").items():  # S3 and PostgreSQL: a service
        monkeypatch.setenv(name, value)
    reset_settings()
    from recast.db.migrate import upgrade

    upgrade(postgres_url)
    out = tmp_path / "out.mp4"
    result = CliRunner().invoke(app, ["swap", "--plate", str(short_plate), "--source", str(IMAGES / "deepface_img17.jpg"),
                                      "--out", str(out), "--chunk-size", "20", "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["frames"] == 40 and out.exists()
    assert summary["output_uri"].startswith(f"s3://{bucket}/studio/")

    # every asset of the run is in the bucket, and the database (PostgreSQL) knows each one
    keys = {o["Key"] for o in boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").list_objects_v2(Bucket=bucket)["Contents"]}
    from recast.db import repository as repo
    from recast.db.session import session_scope

    with session_scope() as s:
        stage_runs = repo.stage_runs_for_run(s, summary["run_id"])
        assert {r.stage for r in stage_runs} == {"ingest", "segment", "track", "background", "expression", "swap", "qc", "report", "render"}
        for r in stage_runs:
            for a in repo.get_assets(s, r.output_asset_ids or []):
                assert a.uri.startswith(f"s3://{bucket}/studio/")
                assert a.uri.split(f"s3://{bucket}/", 1)[1] in keys
        links = [e for e in repo.list_audit_events(s, subject_type="shot", subject_id=summary["shot_id"]) if e.action == "download_link.issued"]
        assert len(links) == 1 and links[0].detail["what"] == "qc_report" and links[0].detail["shown_in"] == "prefect_ui"

    # the Prefect UI's contact-sheet artifact links the HTML report through a presigned URL a
    # browser can open (a file:// or s3:// URI is not a link there)
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from recast.tasks.report import artifact_key

    with get_client(sync_client=True) as client:
        arts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[artifact_key(summary["shot"]) + "-sheet"])))
    assert arts, "no contact sheet artifact"
    url = re.search(r"\[Open the full report\]\((http[^)]+)\)", arts[0].data).group(1)
    assert url.startswith(endpoint)
    with urllib.request.urlopen(url, timeout=30) as resp:
        page = resp.read().decode()
    assert "plate | output | difference" in page and "data:image/png;base64," in page
    reset_settings()
