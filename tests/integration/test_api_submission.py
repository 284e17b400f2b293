"""Submission checks, identities, review mode and download links of the HTTP API, through a real
uvicorn server with S3 on moto's server. No Prefect here: the API's flow-run starter is a
recorder, so these run in seconds (the whole way through a worker is in ``test_api.py``).

The store's S3 endpoint is ``http://localhost:PORT`` (the "internal" address) and the public one
``http://127.0.0.1:PORT``: the same moto server under two names, so a download link must carry the
public host and still download the object.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import pytest

from tests.integration.conftest_api import SOURCE_PHOTO, ServerThread, make_token

pytestmark = pytest.mark.timeout(120)


class Recorder:
    """Stands in for the ``swap-shot`` deployment: remembers what each start was asked."""

    def __init__(self) -> None:
        self.starts: list[dict[str, Any]] = []

    def start(self, shot_id: str, run_id: str, *, tags: list[str] = (), review: str | None = None) -> str:
        self.starts.append({"shot_id": shot_id, "run_id": run_id, "review": review})
        return str(uuid.uuid4())

    def cancel(self, flow_run_id: str) -> str:
        return "CANCELLED"


@pytest.fixture(scope="module")
def stack(s3_server, s3_admin, tmp_path_factory) -> Any:
    from recast.api.app import create_app
    from recast.settings import Settings

    port = urlparse(s3_server).port
    bucket = f"recast-sub-{uuid.uuid4().hex[:10]}"
    s3_admin.create_bucket(Bucket=bucket)
    settings = Settings(data_dir=tmp_path_factory.mktemp("api-sub") / "data", storage_url=f"s3://{bucket}/studio",
                        s3_endpoint_url=f"http://localhost:{port}", s3_public_endpoint_url=f"http://127.0.0.1:{port}")
    recorder = Recorder()
    app = create_app(settings, start_run=recorder.start, cancel_run=recorder.cancel)
    plate = f"s3://{bucket}/incoming/plate.mp4"
    s3_admin.put_object(Bucket=bucket, Key="incoming/plate.mp4", Body=b"a plate the API only checks exists")
    s3_admin.upload_file(str(SOURCE_PHOTO), bucket, "incoming/source.jpg")
    with ServerThread(app) as server:
        yield {"url": server.url, "settings": settings, "bucket": bucket, "recorder": recorder, "plate": plate,
               "source": f"s3://{bucket}/incoming/source.jpg", "public": f"127.0.0.1:{port}"}


def _post(stack: dict, token: str, **kw: Any) -> httpx.Response:
    return httpx.post(f"{stack['url']}/v1/shots", headers={"Authorization": f"Bearer {token}"}, timeout=30, **kw)


def _stored(s3_admin: Any, bucket: str) -> list[str]:
    return [o["Key"] for o in s3_admin.list_objects_v2(Bucket=bucket, Prefix="studio/").get("Contents", [])]


def _shots(settings: Any) -> int:
    from recast.db import repository as repo
    from recast.db.session import session_scope

    with session_scope(settings) as s:
        return len(repo.list_shots(s, limit=10_000))


def test_a_consent_project_refuses_a_shot_without_identity_before_storing_the_upload(stack, s3_admin):
    token = make_token(stack["settings"], "spot-consent", consent_required=True)
    before_objects, before_shots = _stored(s3_admin, stack["bucket"]), _shots(stack["settings"])
    with open(SOURCE_PHOTO, "rb") as photo:
        r = _post(stack, token, data={"plate": stack["plate"], "mode": "face"}, files={"sources": ("actor.jpg", photo, "image/jpeg")})
    assert r.status_code == 409, r.text
    detail = r.json()["detail"]
    assert "project 'spot-consent' requires consent" in detail and '"identity"' in detail and "GET /v1/identities" in detail
    assert "--identity" not in detail and r.json()["field"] == "identity"
    # nothing stored, nothing recorded
    assert _stored(s3_admin, stack["bucket"]) == before_objects
    assert _shots(stack["settings"]) == before_shots


def test_the_scratch_project_turned_off_refuses_a_shot_before_storing_the_upload(stack, s3_admin):
    """The project's policy is checked at submission too: 409 naming the project, nothing stored."""
    from recast.settings import reset_settings

    token = make_token(stack["settings"], "scratch")
    before_objects, before_shots = _stored(s3_admin, stack["bucket"]), _shots(stack["settings"])
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RECAST_SCRATCH_ENABLED", "false")
        reset_settings()  # the policy is read from the process's settings, as in `recast serve`
        try:
            with open(SOURCE_PHOTO, "rb") as photo:
                r = _post(stack, token, data={"plate": stack["plate"], "mode": "face"},
                          files={"sources": ("actor.jpg", photo, "image/jpeg")})
        finally:
            mp.undo()
            reset_settings()
    assert r.status_code == 409, r.text
    assert r.json()["field"] == "project" and "scratch project is turned off" in r.json()["detail"], r.text
    assert _stored(s3_admin, stack["bucket"]) == before_objects
    assert _shots(stack["settings"]) == before_shots


def test_identities_are_listed_for_the_project_and_named_where_unambiguous(stack, s3_admin):
    from recast.db import repository as repo
    from recast.db.session import session_scope
    from recast.storage import open_store

    settings = stack["settings"]
    token = make_token(settings, "spot-ids", consent_required=True)
    other_token = make_token(settings, "spot-ids-other", consent_required=True)
    photo = open_store(settings).put_file(SOURCE_PHOTO, media_type="image/jpeg", suffix=".jpg")
    now = datetime.now(timezone.utc)
    with session_scope(settings) as s:
        asset = repo.register_asset(s, uri=photo.uri, sha256=photo.sha256, size=photo.size, media_type="image/jpeg", role="identity_photo")
        jane = repo.create_identity(s, name="Jane Doe", photo_asset_ids=[asset.id])
        repo.add_consent(s, identity_id=jane.id, scope={"projects": ["spot-ids", "secret-film"]},
                         valid_until=now + timedelta(days=365))
        lapsed = repo.create_identity(s, name="Lapsed")
        repo.add_consent(s, identity_id=lapsed.id, scope={"projects": ["spot-ids"]}, valid_from=now - timedelta(days=400),
                         valid_until=now - timedelta(days=30))
        elsewhere = repo.create_identity(s, name="Elsewhere")
        repo.add_consent(s, identity_id=elsewhere.id, scope={"projects": ["spot-ids-other"]})
        twins = [repo.create_identity(s, name="Twin") for _ in range(2)]
        for twin in twins:
            repo.add_consent(s, identity_id=twin.id, scope={"projects": ["spot-ids"]})
        jane_id, lapsed_id, elsewhere_id, twin_ids = str(jane.id), str(lapsed.id), str(elsewhere.id), {str(t.id) for t in twins}

    r = httpx.get(f"{stack['url']}/v1/identities", headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert r.status_code == 200, r.text
    listing = r.json()
    assert listing["project"] == "spot-ids" and listing["consent_required"] is True
    by_id = {i["id"]: i for i in listing["items"]}
    assert set(by_id) == {jane_id, lapsed_id, *twin_ids}  # not the identity whose consent names another project
    assert by_id[jane_id]["name"] == "Jane Doe" and by_id[jane_id]["covered"] is True and by_id[jane_id]["valid_until"]
    assert by_id[jane_id]["reference_photos"] == 1 and by_id[jane_id]["consents"][0]["status"] == "active"
    assert by_id[lapsed_id]["covered"] is False and "expired" in by_id[lapsed_id]["reason"]
    assert by_id[lapsed_id]["consents"][0]["status"] == "expired"
    assert photo.uri not in r.text and "secret-film" not in r.text  # no photos, no other projects' names
    assert httpx.get(f"{stack['url']}/v1/identities").status_code == 401
    theirs = httpx.get(f"{stack['url']}/v1/identities", headers={"Authorization": f"Bearer {other_token}"}, timeout=30).json()
    assert [i["id"] for i in theirs["items"]] == [elsewhere_id]

    # a name works where one identity the project sees has it; the identity's photos are the sources
    starts = len(stack["recorder"].starts)
    r = _post(stack, token, json={"plate": stack["plate"], "identity": "Jane Doe", "mode": "face"})
    assert r.status_code == 201, r.text
    assert r.json()["identity_id"] == jane_id and len(stack["recorder"].starts) == starts + 1
    before = _shots(settings)
    for name, status, words in [("Twin", 422, "2 identities have that name"), ("Elsewhere", 422, "GET /v1/identities"),
                                ("Lapsed", 409, "expired")]:
        r = _post(stack, token, json={"plate": stack["plate"], "sources": [stack["source"]], "identity": name, "mode": "face"})
        assert r.status_code == status, (name, r.text)
        detail = r.json()["detail"]
        text = detail[0]["msg"] if status == 422 else detail
        assert words in text, (name, detail)
        if status == 422:
            assert detail[0]["loc"] == ["body", "identity"]
    assert _shots(settings) == before


def test_the_review_mode_reaches_the_flow_run_and_openapi_lists_422(stack):
    spec = httpx.get(f"{stack['url']}/openapi.json").json()
    post = spec["paths"]["/v1/shots"]["post"]["responses"]
    assert {"201", "409", "422"} <= set(post)
    assert spec["components"]["schemas"]["ShotSubmission"]["properties"]["review"]["enum"] == ["auto", "pause", "never"]
    assert "/v1/identities" in spec["paths"]

    token = make_token(stack["settings"], "spot-review")
    body = {"plate": stack["plate"], "sources": [stack["source"]], "mode": "face"}
    r = _post(stack, token, json={**body, "review": "pause"})
    assert r.status_code == 201, r.text
    assert stack["recorder"].starts[-1] == {"shot_id": r.json()["id"], "run_id": r.json()["run"]["id"], "review": "pause"}
    assert r.json()["review"] == "pause"
    form = [("plate", (None, stack["plate"])), ("sources", (None, stack["source"])), ("mode", (None, "face")), ("review", (None, "never"))]
    r = _post(stack, token, files=form)  # the same field in a multipart form
    assert r.status_code == 201, r.text
    assert stack["recorder"].starts[-1]["review"] == "never"
    for bad in ({**body, "review": "sometimes"}, {**body, "review": "never", "schedule": "batch"}):
        r = _post(stack, token, json=bad)
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "review"], r.text


def test_a_download_link_is_signed_for_the_public_endpoint_and_says_whether_it_was_approved(stack, tmp_path):
    from recast.db import repository as repo
    from recast.db import trust as trust_repo
    from recast.db.session import session_scope
    from recast.storage import open_store

    settings = stack["settings"]
    token = make_token(settings, "spot-links")
    deliverable = tmp_path / "sc030_0010.mp4"
    deliverable.write_bytes(b"\x00\x00\x00\x18ftypmp42" + uuid.uuid4().bytes * 64)
    stored = open_store(settings).put_file(deliverable, media_type="video/mp4", suffix=".mp4")
    with session_scope(settings) as s:
        project = repo.get_project(s, "spot-links")
        shot = repo.create_shot(s, project_id=project.id, code="sc030_0010", plate_asset_id=None,
                                params={"plate": stack["plate"], "sources": [stack["source"]], "mode": "face"}, source_asset_ids=[])
        run = repo.create_run(s, shot.id)
        asset = repo.register_asset(s, uri=stored.uri, sha256=stored.sha256, size=stored.size, media_type="video/mp4", role="deliverable")
        # a run whose QC said review and that nobody approved (review: never) renders unapproved
        trust_repo.create_render(s, render_id=trust_repo.new_render_id(), run_id=run.id, asset_id=asset.id, approved=False,
                                 watermark_payload=None, consent_id=None, signed=True)
        repo.set_run_status(s, run.id, "done", output_asset_id=asset.id)
        shot_id = str(shot.id)

    r = httpx.get(f"{stack['url']}/v1/shots/{shot_id}", headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert r.status_code == 200, r.text
    (out,) = r.json()["outputs"]
    assert out["approved"] is False and out["withdrawn"] is False
    link = urlparse(out["download_url"])
    assert link.netloc == stack["public"], out["download_url"]  # not the internal localhost address
    got = httpx.get(out["download_url"], timeout=30)
    assert got.status_code == 200 and hashlib.sha256(got.content).hexdigest() == stored.sha256


def test_allowed_buckets_are_read_as_deploy_readme_sets_them(monkeypatch):
    """deploy/README.md §1: ``RECAST_API_ALLOWED_BUCKETS='["editorial-dropbox"]'`` (a JSON list)
    adds to the store's own bucket the ones plates may come from."""
    from recast.api.service import default_allowed_buckets
    from recast.settings import Settings

    monkeypatch.setenv("RECAST_API_ALLOWED_BUCKETS", '["editorial-dropbox"]')
    monkeypatch.setenv("RECAST_STORAGE_URL", "s3://studio-recast/prod")
    assert default_allowed_buckets(Settings()) == {"studio-recast", "editorial-dropbox"}
