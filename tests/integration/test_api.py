"""The HTTP API against a real running server: uvicorn on loopback, the Prefect test harness with
the recast deployments registered, a process worker running the flow runs, S3 on moto's server.

The tests of this module share one stack and run in file order: the long one (a shot from
submission to a downloadable deliverable) comes after the quick refusals.
"""

from __future__ import annotations

import functools
import hashlib
import time
import uuid
from fractions import Fraction
from typing import Any

import httpx
import pytest

from tests.integration.conftest_api import *  # noqa: F403 - fixtures (api_stack) and helpers
from tests.integration.conftest_api import SOURCE_PHOTO, ApiStack, ServerThread, make_token, upload

pytestmark = pytest.mark.timeout(400)


def submit(stack: ApiStack, body: dict[str, Any], *, token: str | None = None, key: str | None = None) -> httpx.Response:
    headers = stack.headers(token)
    if key:
        headers["Idempotency-Key"] = key
    return httpx.post(f"{stack.url}/v1/shots", json=body, headers=headers, timeout=30)


def get_shot(stack: ApiStack, shot_id: str, token: str | None = None) -> httpx.Response:
    return httpx.get(f"{stack.url}/v1/shots/{shot_id}", headers=stack.headers(token), timeout=30)


def wait_for(stack: ApiStack, shot_id: str, statuses: set[str], timeout_s: float = 240, seen: list | None = None,
             token: str | None = None) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        r = get_shot(stack, shot_id, token)
        assert r.status_code == 200, r.text
        body = r.json()
        if seen is not None:
            seen.append((body["status"], body["progress"]["stages_done"] if body["progress"] else None,
                         body["progress"]["current"] if body["progress"] else None))
        if body["status"] in statuses:
            return body
        assert stack.worker.error is None, stack.worker.error
        time.sleep(0.5)
    raise AssertionError(f"shot {shot_id} not in {statuses} after {timeout_s} s: {body['status']} {body.get('run')}")


@pytest.fixture(scope="module")
def inputs(api_stack, s3_admin, short_plate) -> dict[str, str]:
    return {
        "plate": upload(s3_admin, api_stack.bucket, short_plate, "incoming/short_plate.mp4"),
        "source": upload(s3_admin, api_stack.bucket, SOURCE_PHOTO, "incoming/source.jpg"),
        "other_plate": upload(s3_admin, api_stack.other_bucket, short_plate, "incoming/short_plate.mp4"),
    }


# --- auth ---------------------------------------------------------------------------------------
def test_openapi_is_served(api_stack):
    spec = httpx.get(f"{api_stack.url}/openapi.json").json()
    assert {"/v1/shots", "/v1/shots/{shot_id}", "/v1/shots/{shot_id}/review", "/v1/shots/{shot_id}/cancel"} <= set(spec["paths"])
    assert httpx.get(f"{api_stack.url}/docs").status_code == 200


def test_auth_failures_leak_nothing(api_stack, inputs):
    url = f"{api_stack.url}/v1/shots"
    assert httpx.get(url).status_code == 401
    assert httpx.get(url).headers["www-authenticate"] == "Bearer"
    assert httpx.get(url, headers={"Authorization": "Bearer rct_not-a-token"}).status_code == 401
    assert httpx.post(url, json={"plate": inputs["plate"]}).status_code == 401

    # a shot of project api-test, then the other project's token asks about it
    r = submit(api_stack, {"plate": inputs["plate"], "sources": [inputs["source"]], "mode": "face", "schedule": "batch"})
    assert r.status_code == 201, r.text
    shot_id = r.json()["id"]
    theirs = get_shot(api_stack, shot_id, api_stack.other_token)
    missing = get_shot(api_stack, str(uuid.uuid4()), api_stack.other_token)
    assert theirs.status_code == missing.status_code == 404  # another project's shot looks like no shot
    assert theirs.json()["detail"] == f"shot {shot_id} not found"
    assert httpx.post(f"{url}/{shot_id}/cancel", headers=api_stack.headers(api_stack.other_token)).status_code == 404
    assert httpx.post(f"{url}/{shot_id}/review", json={"decision": "approve"}, headers=api_stack.headers(api_stack.other_token)).status_code == 404
    # naming a project other than the token's: 403, for existing and made-up projects alike
    for project in ("api-test", "no-such-project"):
        r = httpx.get(url, params={"project": project}, headers=api_stack.headers(api_stack.other_token))
        assert r.status_code == 403 and "not valid for project" in r.json()["detail"]
    r = submit(api_stack, {"project": "api-other", "plate": inputs["plate"], "sources": [inputs["source"]]})
    assert r.status_code == 403
    listing = httpx.get(url, headers=api_stack.headers(api_stack.other_token)).json()
    assert shot_id not in {s["id"] for s in listing["items"]}
    # the batch-scheduled shot is queued and was not started
    mine = get_shot(api_stack, shot_id).json()
    assert mine["status"] == "queued" and mine["run"]["prefect_flow_run_id"] is None
    assert httpx.post(f"{url}/{shot_id}/cancel", headers=api_stack.headers()).json()["status"] == "cancelled"


# --- bad input ----------------------------------------------------------------------------------
def test_bad_input_is_refused_naming_the_field(api_stack, inputs):
    base = {"plate": inputs["plate"], "sources": [inputs["source"]], "mode": "face"}
    missing = f"s3://{api_stack.bucket}/incoming/nope.mp4"
    r = submit(api_stack, {**base, "plate": missing})
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["body", "plate"] and missing in r.json()["detail"][0]["msg"]

    r = submit(api_stack, {**base, "plate": inputs["other_plate"]})
    assert r.status_code == 403 and api_stack.other_bucket in r.json()["detail"] and r.json()["field"] == "plate"

    r = submit(api_stack, {**base, "plate": "/etc/passwd"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "plate"]

    for body, field in [({**base, "mode": "torso"}, "mode"), ({**base, "face": "tallest"}, "face"),
                        ({**base, "edits": ["grin=+9"]}, "edits"), ({**base, "priority": 10**6}, "priority"),
                        ({**base, "bogus": 1}, "bogus"), ({"sources": [inputs["source"]]}, "plate")]:
        r = submit(api_stack, body)
        assert r.status_code == 422, (field, r.text)
        assert field in r.json()["detail"][0]["loc"], (field, r.json())

    r = submit(api_stack, {**base, "sources": []})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "sources"]

    r = httpx.post(f"{api_stack.url}/v1/shots", content=b'{"plate": "' + b"x" * (2 * 1024 * 1024) + b'"}',
                   headers={**api_stack.headers(), "Content-Type": "application/json"})
    assert r.status_code == 413
    r = httpx.get(f"{api_stack.url}/v1/shots", params={"status": "sleeping"}, headers=api_stack.headers())
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "status"]
    r = httpx.get(f"{api_stack.url}/v1/shots", params={"page": 0}, headers=api_stack.headers())
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "page"]


def test_identity_without_consent_is_refused_with_409(api_stack, inputs):
    from recast.db import repository as repo
    from recast.db.session import session_scope

    token = make_token(api_stack.settings, "consent-film", consent_required=True)
    with session_scope(api_stack.settings) as s:
        repo.get_or_create_project(s, "another-film")
        nobody = str(repo.create_identity(s, name="Nobody Signed").id)
        elsewhere = repo.create_identity(s, name="Signed For Another Film")
        repo.add_consent(s, identity_id=elsewhere.id, scope={"projects": ["another-film"]})
        elsewhere_id = str(elsewhere.id)
    body = {"plate": f"s3://{api_stack.bucket}/incoming/short_plate.mp4", "sources": [inputs["source"]], "mode": "face"}
    r = submit(api_stack, {**body, "identity": nobody}, token=token)
    assert r.status_code == 409 and "no consent on record" in r.json()["detail"]
    r = submit(api_stack, {**body, "identity": elsewhere_id}, token=token)
    assert r.status_code == 409 and "does not cover project 'consent-film'" in r.json()["detail"]
    r = submit(api_stack, {**body, "identity": str(uuid.uuid4())}, token=token)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "identity"]
    listing = httpx.get(f"{api_stack.url}/v1/shots", headers=api_stack.headers(token)).json()
    assert listing["total"] == 0  # nothing was recorded


def test_no_deployment_answers_503_and_a_retry_can_start_it(api_stack, inputs):
    from recast.api.app import create_app
    from recast.flows.deployments import start_swap_shot_run

    broken = create_app(api_stack.settings, start_run=functools.partial(start_swap_shot_run, deployment="swap_shot/not-deployed"))
    body = {"plate": inputs["plate"], "sources": [inputs["source"]], "mode": "face", "schedule": "now"}
    with ServerThread(broken) as server:
        r = httpx.post(f"{server.url}/v1/shots", json=body, headers={**api_stack.headers(), "Idempotency-Key": "k-503"}, timeout=30)
    assert r.status_code == 503 and "swap_shot/not-deployed" in r.json()["detail"] and r.headers["retry-after"]
    # the shot was recorded but not started; the same key on a working server restarts it once
    r2 = submit(api_stack, {**body, "schedule": "now"}, key="k-503")
    assert r2.status_code == 200, r2.text
    assert r2.json()["run"]["status"] == "queued" and r2.json()["run"]["prefect_flow_run_id"]
    r3 = httpx.post(f"{api_stack.url}/v1/shots/{r2.json()['id']}/cancel", headers=api_stack.headers())
    assert r3.status_code == 200 and r3.json()["status"] == "cancelled"


def test_a_backend_that_cannot_swap_the_mode_is_refused_at_submission(api_stack, inputs):
    from recast.db import repository as repo
    from recast.db.session import session_scope

    with session_scope(api_stack.settings) as s:
        before = len(repo.list_shots(s, limit=10_000))
    base = {"plate": inputs["plate"], "sources": [inputs["source"]], "schedule": "batch"}
    for body, expected in [({**base, "mode": "head", "backend": "inswapper"}, "swaps faces only"),
                           ({**base, "mode": "face", "backend": "diffusion"}, "repaints the whole head"),
                           ({**base, "mode": "face", "backend": "morph"}, "backend 'morph': not available (choose from classic")]:
        r = submit(api_stack, body)
        assert r.status_code == 422, (body, r.text)
        (err,) = r.json()["detail"]
        assert err["loc"] == ["body", "backend"] and expected in err["msg"], err
    with session_scope(api_stack.settings) as s:
        assert len(repo.list_shots(s, limit=10_000)) == before  # nothing recorded


# --- the whole way ------------------------------------------------------------------------------
@pytest.mark.slow
def test_submit_run_qc_download_idempotency_review_and_cancel(api_stack, inputs):
    from recast.db import repository as repo
    from recast.db.session import session_scope
    from recast.flows.deployments import flow_run_state

    body = {"plate": inputs["plate"], "sources": [inputs["source"]], "mode": "face", "code": "sc010_0040", "priority": 5}
    key = f"editorial-{uuid.uuid4().hex}"
    first = submit(api_stack, body, key=key)
    assert first.status_code == 201, first.text
    shot_id = first.json()["id"]
    assert first.json()["status"] == "queued" and first.json()["run"]["prefect_flow_run_id"]

    # a retried request: the same shot, nothing new
    again = submit(api_stack, body, key=key)
    assert again.status_code == 200 and again.json()["id"] == shot_id
    assert again.json()["run"]["id"] == first.json()["run"]["id"]
    assert submit(api_stack, {**body, "priority": 6}, key=key).status_code == 409  # same key, other request

    # a second shot waits behind the first (the worker runs one at a time) and is cancelled
    second = submit(api_stack, {**body, "code": "sc010_0050"})
    assert second.status_code == 201
    cancel = httpx.post(f"{api_stack.url}/v1/shots/{second.json()['id']}/cancel", headers=api_stack.headers())
    assert cancel.status_code == 200, cancel.text
    assert cancel.json()["status"] == "cancelled" and cancel.json()["prefect_state"] == "CANCELLED"
    assert httpx.post(f"{api_stack.url}/v1/shots/{second.json()['id']}/cancel", headers=api_stack.headers()).status_code == 409

    seen: list = []
    done = wait_for(api_stack, shot_id, {"done", "failed", "awaiting_review", "rejected"}, seen=seen)
    assert done["status"] == "done", done["run"]
    running = [s for s in seen if s[0] == "running"]
    assert len({s[1] for s in running}) >= 2, seen  # status went through stages
    assert done["progress"]["stages_done"] == done["progress"]["stages_total"]
    # the same clean face swap as `recast swap` makes: QC passes it with nothing to flag
    assert done["qc"]["verdict"] == "pass" and done["qc"]["reasons"] == [] and done["qc"]["metrics"]["identity_transfer_rate"] >= 0.5

    # the deliverable: a presigned S3 link that downloads the recorded bytes
    (out,) = done["outputs"]
    assert out["uri"].startswith(f"s3://{api_stack.bucket}/studio/") and out["download_url"].startswith(api_stack.endpoint)
    got = httpx.get(out["download_url"], timeout=60)
    assert got.status_code == 200 and hashlib.sha256(got.content).hexdigest() == out["sha256"]
    with session_scope(api_stack.settings) as s:
        issued = repo.list_audit_events(s, subject_type="shot", subject_id=shot_id, action="download_link.issued")
        assert issued and issued[-1].actor.startswith("api-token:")
        assert len([sh for sh in repo.list_shots(s, limit=1000) if sh.code == "sc010_0040"]) == 1

    # a review of a run that already rendered (not paused): recorded, its deliverable approved
    review_url = f"{api_stack.url}/v1/shots/{shot_id}/review"
    review = httpx.post(review_url, json={"decision": "approve", "note": "looks right"}, headers=api_stack.headers(), timeout=60)
    assert review.status_code == 201 and review.json()["decision"] == "approve"
    assert review.json()["id"] and review.json()["status"] == "done" and review.json()["resumed_flow_run"] is None
    with session_scope(api_stack.settings) as s:
        assert repo.list_audit_events(s, subject_id=shot_id, action="shot.reviewed")
        assert [(x.decision, x.note) for x in repo.reviews_for_run(s, done["run"]["id"])] == [("approve", "looks right")]
        assert [r.approved for r in repo.renders_for_run(s, done["run"]["id"])] == [True]
    # re-run parameters are checked before anything happens; params go with rerun only
    bad = httpx.post(review_url, json={"decision": "rerun", "params": {"expression": "grin"}}, headers=api_stack.headers(), timeout=60)
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "params"], bad.text
    bad = httpx.post(review_url, json={"decision": "approve", "params": {"expression": "neutral"}}, headers=api_stack.headers())
    assert bad.status_code == 422, bad.text
    assert get_shot(api_stack, shot_id).json()["run"]["id"] == done["run"]["id"]  # no new run

    listing = httpx.get(f"{api_stack.url}/v1/shots", params={"status": "done", "page_size": 1}, headers=api_stack.headers()).json()
    assert listing["total"] >= 1 and len(listing["items"]) == 1

    # the cancelled shot never ran
    cancelled = get_shot(api_stack, second.json()["id"]).json()
    assert cancelled["status"] == "cancelled" and cancelled["progress"]["stages_done"] == 0
    assert flow_run_state(cancelled["run"]["prefect_flow_run_id"]) == "CANCELLED"


@pytest.mark.slow
def test_unsupported_media_fails_the_shot_with_the_reason(api_stack, s3_admin, tmp_path):
    import av
    import numpy as np

    audio_only = tmp_path / "sound_only.mp4"
    with av.open(str(audio_only), "w") as out:
        stream = out.add_stream("aac", rate=48000)
        samples = np.zeros((1, 1024), dtype=np.float32)
        for i in range(20):
            frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
            frame.sample_rate, frame.pts, frame.time_base = 48000, i * 1024, Fraction(1, 48000)
            for p in stream.encode(frame):
                out.mux(p)
        for p in stream.encode():
            out.mux(p)
    plate = upload(s3_admin, api_stack.bucket, audio_only, "incoming/sound_only.mp4")
    source = f"s3://{api_stack.bucket}/incoming/source.jpg"
    r = submit(api_stack, {"plate": plate, "sources": [source], "mode": "face"})
    assert r.status_code == 201, r.text
    failed = wait_for(api_stack, r.json()["id"], {"done", "failed"}, timeout_s=120)
    assert failed["status"] == "failed"
    assert "no video stream" in failed["run"]["error"] and "sound_only.mp4" in failed["run"]["error"]


# --- review of a run paused for review ------------------------------------------------------------
@pytest.fixture(scope="module")
def review_token(api_stack) -> str:
    """A token of a project whose QC bar sends the short plate to review (any visible seam)."""
    from recast.db import repository as repo
    from recast.db.session import session_scope

    token = make_token(api_stack.settings, "api-review")
    with session_scope(api_stack.settings) as s:
        repo.set_project_qc_thresholds(s, repo.get_project(s, "api-review").id, {"seam_review": 0.2})
    return token


def _paused_shot(stack: ApiStack, inputs: dict[str, str], token: str, code: str) -> dict[str, Any]:
    """Submit the short plate in the review project; the deployment run pauses for review."""
    r = submit(stack, {"plate": inputs["plate"], "sources": [inputs["source"]], "mode": "face", "code": code}, token=token)
    assert r.status_code == 201, r.text
    paused = wait_for(stack, r.json()["id"], {"awaiting_review", "done", "failed", "rejected"}, token=token)
    assert paused["status"] == "awaiting_review", paused["run"]
    assert paused["qc"]["verdict"] == "review" and paused["outputs"] == []
    return paused


def _review(stack: ApiStack, shot_id: str, token: str, body: dict[str, Any]) -> dict[str, Any]:
    r = httpx.post(f"{stack.url}/v1/shots/{shot_id}/review", json=body, headers=stack.headers(token), timeout=60)
    assert r.status_code == 201, r.text
    return r.json()


@pytest.mark.slow
def test_a_paused_run_rejected_through_the_api_ends_with_nothing_rendered(api_stack, inputs, review_token):
    from recast.db import repository as repo
    from recast.db.session import session_scope

    paused = _paused_shot(api_stack, inputs, review_token, "sc020_0010")
    shot_id, run_id = paused["id"], paused["run"]["id"]
    got = _review(api_stack, shot_id, review_token, {"decision": "reject", "note": "wrong take", "reviewer": "sup.ana"})
    assert got["resumed_flow_run"] == paused["run"]["prefect_flow_run_id"] and got["id"] is None  # the flow records it
    ended = wait_for(api_stack, shot_id, {"rejected", "done", "failed"}, token=review_token)
    assert ended["status"] == "rejected" and ended["outputs"] == [] and "sup.ana" in ended["run"]["error"]
    with session_scope(api_stack.settings) as s:
        assert repo.renders_for_run(s, run_id) == []
        assert [(x.decision, x.reviewer, x.note) for x in repo.reviews_for_run(s, run_id)] == [("reject", "sup.ana", "wrong take")]
        sent = repo.list_audit_events(s, subject_type="shot", subject_id=shot_id, action="shot.reviewed")
        assert len(sent) == 1 and sent[0].detail["via"] == "api" and sent[0].actor.startswith("api-token:")


@pytest.mark.slow
def test_a_paused_run_rerun_then_approved_through_the_api_reuses_stages_and_renders(api_stack, inputs, review_token):
    """rerun with changed parameters: a new run of the shot reusing the stages the change does not
    touch, paused for review in turn; approve: it renders and its deliverable is approved."""
    from recast.db import repository as repo
    from recast.db.session import session_scope

    paused = _paused_shot(api_stack, inputs, review_token, "sc020_0020")
    shot_id, run_id = paused["id"], paused["run"]["id"]
    got = _review(api_stack, shot_id, review_token, {"decision": "rerun", "params": {"expression": "neutral"},
                                                     "note": "keep the actor's expression neutral", "reviewer": "sup.ana"})
    assert got["resumed_flow_run"] == paused["run"]["prefect_flow_run_id"]

    deadline = time.monotonic() + 240
    while True:
        again = get_shot(api_stack, shot_id, review_token).json()
        # the shot's status follows whichever run changed last (the first one ends rejected): watch the new run
        if again["run"]["id"] != run_id and again["run"]["status"] in ("awaiting_review", "done", "failed", "rejected"):
            break
        assert time.monotonic() < deadline, again
        time.sleep(0.5)
    new_run_id = again["run"]["id"]
    assert again["run"]["status"] == "awaiting_review" and again["params"]["expression"] == "neutral", again["run"]
    with session_scope(api_stack.settings) as s:
        first = repo.get_run(s, run_id)
        assert first.status == "rejected" and new_run_id in first.error and "neutral" in first.error
        stages = {(r.stage, r.chunk_index): r.status for r in repo.stage_runs_for_run(s, new_run_id)}
        for stage in ("ingest", "segment", "track"):
            assert {st for (name, _), st in stages.items() if name == stage} == {"reused"}, (stage, stages)
        assert stages[("expression", None)] == "done"
        assert [(x.decision, x.reviewer) for x in repo.reviews_for_run(s, run_id)] == [("rerun", "sup.ana")]

    got = _review(api_stack, shot_id, review_token, {"decision": "approve", "reviewer": "sup.ana"})
    assert got["run_id"] == new_run_id and got["resumed_flow_run"]
    done = wait_for(api_stack, shot_id, {"done", "failed", "rejected"}, token=review_token)
    assert done["status"] == "done" and done["run"]["id"] == new_run_id and len(done["outputs"]) == 1, done["run"]
    with session_scope(api_stack.settings) as s:
        assert [r.approved for r in repo.renders_for_run(s, new_run_id)] == [True]
        assert repo.renders_for_run(s, run_id) == []
        assert [(x.decision, x.reviewer) for x in repo.reviews_for_run(s, new_run_id)] == [("approve", "sup.ana")]


@pytest.mark.slow
def test_review_never_delivers_the_shot_unapproved_and_reaches_the_flow_run(api_stack, inputs, review_token):
    """``review: never`` in a project whose QC says review: the deployment run gets the parameter,
    renders without pausing, and the shot view says the deliverable was not approved."""
    from prefect import get_client

    r = submit(api_stack, {"plate": inputs["plate"], "sources": [inputs["source"]], "mode": "face", "code": "sc020_0030",
                           "review": "never"}, token=review_token)
    assert r.status_code == 201, r.text
    with get_client(sync_client=True) as client:
        assert client.read_flow_run(r.json()["run"]["prefect_flow_run_id"]).parameters["review"] == "never"
    done = wait_for(api_stack, r.json()["id"], {"done", "failed", "awaiting_review", "rejected"}, token=review_token)
    assert done["status"] == "done" and done["qc"]["verdict"] == "review" and done["review"] == "never", done["run"]
    (out,) = done["outputs"]
    assert out["approved"] is False and out["download_url"]
