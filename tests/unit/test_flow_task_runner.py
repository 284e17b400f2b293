"""The swap flow's task runner is chosen from the settings in force when a run starts."""

from __future__ import annotations

import threading

import pytest
from prefect import flow, task
from prefect.context import FlowRunContext

from recast.errors import UsageError
from recast.flows.swap_shot import SettingsTaskRunner


@task
def _thread_name(i: int) -> str:
    return threading.current_thread().name


@flow(task_runner=SettingsTaskRunner(), persist_result=False)
def _probe_flow(n: int) -> dict:
    runner = FlowRunContext.get().task_runner
    futures = _thread_name.map(list(range(n)))
    names = {f.result() for f in futures}
    inner = runner.runner
    return {"runner": type(inner).__name__, "max_workers": getattr(inner, "_max_workers", None), "threads": len(names)}


def test_worker_count_follows_settings_changed_after_import(recast_env, monkeypatch, prefect_server):
    from recast.settings import reset_settings

    monkeypatch.setenv("RECAST_WORKERS", "1")
    reset_settings()
    one = _probe_flow(6)
    monkeypatch.setenv("RECAST_WORKERS", "3")
    reset_settings()
    three = _probe_flow(6)
    assert one == {"runner": "ThreadPoolTaskRunner", "max_workers": 1, "threads": 1}
    assert three["max_workers"] == 3 and 1 <= three["threads"] <= 3


def test_dask_with_sqlite_is_refused_when_work_is_submitted(recast_env, monkeypatch, prefect_server):
    from recast.settings import reset_settings

    monkeypatch.setenv("RECAST_DASK_ADDRESS", "tcp://127.0.0.1:1")
    reset_settings()
    with pytest.raises(UsageError, match="RECAST_DASK_ADDRESS=tcp://127.0.0.1:1 needs a shared database"):
        _probe_flow(2)


def test_a_runner_is_not_used_before_its_run_starts():
    with pytest.raises(RuntimeError, match="before its flow run started"):
        SettingsTaskRunner().runner
