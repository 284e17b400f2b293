"""``recast deploy``, the one way to register recast's deployments, and what it stores.

There used to be a second route, ``prefect deploy --all --prefect-file deploy/prefect.yaml``. It
stored ``set_working_directory: <the folder it was run from>`` as a pull step, so a worker on any
other machine crashed with ``FileNotFoundError`` before the flow started, and its schedule had
another time zone. It is gone: ``recast deploy`` also checks the project, creates the pools and
the "gpu" concurrency limit, which the YAML could not. The slow test here checks, against a real
``prefect server``, that what ``recast deploy`` stores depends on nothing of the deploying
machine: no pull step, no path, module-path entrypoints, an explicit time zone.

The quick tests: the refusals before anything is registered (no Prefect server needed).
"""

from __future__ import annotations

import json
import shutil

import pytest

from tests.integration.prefect_process import REPO, PrefectServerProcess


# --- refusals, before any Prefect call ----------------------------------------------------------
def cli(*args: str):
    from typer.testing import CliRunner

    from recast.cli import app

    return CliRunner().invoke(app, list(args))


def error_lines(r) -> list[str]:
    return [x for x in r.stderr.splitlines() if x.startswith("recast: error")]


def test_deploy_refuses_a_nightly_project_that_does_not_exist(recast_env, monkeypatch):
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")  # never reached: refused before
    r = cli("deploy", "--nightly-project", "no-such-film")
    assert r.exit_code == 3, r.stderr
    (line,) = error_lines(r)
    assert "--nightly-project no-such-film: no such project" in line and "recast project create no-such-film" in line


@pytest.mark.parametrize("args, expected", [
    (["--nightly-timezone", "Mars/Olympus"], "--nightly-timezone 'Mars/Olympus': not an IANA time zone"),
    (["--nightly-cron", "0 25 * * *"], "--nightly-cron '0 25 * * *': not a cron expression"),
])
def test_deploy_refuses_a_bad_schedule(recast_env, monkeypatch, args, expected):
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")
    r = cli("deploy", *args)
    assert r.exit_code == 2, r.stderr
    (line,) = error_lines(r)
    assert expected in line


def test_token_create_names_the_missing_project_and_the_way_out(recast_env):
    r = cli("token", "create", "--project", "no-such-film")
    assert r.exit_code == 3, r.stderr
    (line,) = error_lines(r)
    assert "--project no-such-film: no such project" in line and "recast project create no-such-film" in line
    assert r.stdout == ""  # no secret printed


def test_there_is_one_deployment_route():
    assert not (REPO / "deploy" / "prefect.yaml").exists()
    assert "prefect deploy " not in (REPO / "deploy" / "README.md").read_text()


# --- what recast deploy stores ------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_recast_deploy_stores_nothing_of_the_deploying_machine(tmp_path):
    deployer = tmp_path / "deploying-checkout"
    deployer.mkdir()
    with PrefectServerProcess(tmp_path / "prefect", scheduler_loop_s=60) as server:
        env = server.client_env(RECAST_DATA_DIR=str(tmp_path / "data"))
        for args in (["project", "create", "film-x", "--media", "film"],
                     ["deploy", "--nightly-project", "film-x", "--swap-pool", "gpu"]):
            r = server.run(["recast", *args], env=env, cwd=deployer)
            assert r.returncode == 0, f"{args}: {r.stdout}\n{r.stderr}"
        swap = server.deployment("swap_shot/swap-shot")
        batch = server.deployment("nightly_batch/nightly-batch")
        pools = {p["name"]: p["type"] for p in server.post("/work_pools/filter", {})}
        limits = {c["name"]: c["limit"] for c in server.post("/v2/concurrency_limits/filter", {})}
        deployments = server.post("/deployments/filter", {})

    assert len(deployments) == 2
    for dep in (swap, batch):
        assert not dep["pull_steps"] and dep["path"] in (None, "", ".") and dep["storage_document_id"] is None, dep
        assert dep["concurrency_limit"] is None and not dep["paused"]
        assert str(deployer) not in json.dumps(dep) and str(tmp_path) not in json.dumps(dep)
    assert swap["entrypoint"] == "recast.flows.swap_shot.swap_shot" and swap["work_pool_name"] == "gpu"
    assert swap["schedules"] == [] and swap["parameters"] == {}
    assert batch["entrypoint"] == "recast.flows.deployments.nightly_batch" and batch["work_pool_name"] == "cpu"
    assert batch["parameters"] == {"project": "film-x", "limit": 50, "concurrency": 2}
    (schedule,) = batch["schedules"]
    assert schedule["active"] and schedule["schedule"]["cron"] == "0 2 * * *" and schedule["schedule"]["timezone"] == "UTC"
    assert pools == {"cpu": "process", "gpu": "process"}
    assert limits.get("gpu", 0) >= 1
    shutil.rmtree(deployer)  # nothing refers to it
