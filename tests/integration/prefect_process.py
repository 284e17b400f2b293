"""A real ``prefect server start`` in a subprocess, and ``recast``/``prefect`` commands run against it.

Unlike the session's test harness (``prefect_server`` in tests/conftest.py), this is the server an
operator runs: its own PREFECT_HOME and database, its own services (the scheduler among them),
its own log. Used by the slow tests of schedules and deployment routes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx

from tests.integration.conftest_api import free_port

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[2]


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any PREFECT_*/RECAST_* setting, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "RECAST_"))}
    env.update(extra)
    return env


class PrefectServerProcess:
    """``prefect server start`` on 127.0.0.1:<free port> with PREFECT_HOME under ``home``.

    ``database_url`` (``postgresql+asyncpg://...``) puts its database on PostgreSQL; by default it
    is SQLite inside ``home``. The scheduler looks for work every ``scheduler_loop_s`` seconds
    (60 by default in Prefect; 1 here so a test sees the runs it creates at once).
    """

    def __init__(self, home: Path, *, database_url: str | None = None, scheduler_loop_s: int = 1) -> None:
        self.home = home
        self.home.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.api_url = f"http://127.0.0.1:{self.port}/api"
        self.log_path = home / "server.log"
        self.env = clean_env(
            PREFECT_HOME=str(home),
            PREFECT_API_DATABASE_CONNECTION_URL=database_url or f"sqlite+aiosqlite:///{home / 'prefect.db'}",
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
            PREFECT_UI_ENABLED="false",
            PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS=str(scheduler_loop_s),
        )
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> "PrefectServerProcess":
        log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(self.port)],
            env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=self.home, start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prefect server exited with {self.proc.returncode}:\n{self.log()[-4000:]}")
            try:
                if httpx.get(f"{self.api_url}/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        self.__exit__()
        raise RuntimeError(f"prefect server did not answer within 120 s:\n{self.log()[-4000:]}")

    def __exit__(self, *exc: Any) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    # --- what an operator would run, with PREFECT_API_URL pointing here ---------------------------
    def client_env(self, **extra: str) -> dict[str, str]:
        return clean_env(PREFECT_API_URL=self.api_url, PREFECT_HOME=str(self.home / "client"), **extra)

    def run(self, args: list[str], *, env: Mapping[str, str] | None = None, cwd: Path | None = None,
            timeout: float = 180) -> subprocess.CompletedProcess:
        """Run ``args`` (``args[0]`` a script of this virtual environment: recast, prefect)."""
        return subprocess.run([str(BIN / args[0]), *args[1:]], env=dict(env or self.client_env()), cwd=cwd,
                              capture_output=True, text=True, timeout=timeout)

    # --- the server's records -----------------------------------------------------------------------
    def get(self, path: str) -> Any:
        r = httpx.get(f"{self.api_url}{path}", timeout=10)
        r.raise_for_status()
        return r.json()

    def post(self, path: str, body: dict[str, Any]) -> Any:
        r = httpx.post(f"{self.api_url}{path}", json=body, timeout=10)
        r.raise_for_status()
        return r.json()

    def deployment(self, name: str) -> dict[str, Any]:
        """A deployment by ``flow/deployment`` name."""
        return self.get(f"/deployments/name/{name}")

    def scheduled_runs(self, deployment_id: str) -> list[dict[str, Any]]:
        return self.post("/flow_runs/filter", {
            "deployments": {"id": {"any_": [deployment_id]}},
            "flow_runs": {"state": {"type": {"any_": ["SCHEDULED"]}}},
            "sort": "EXPECTED_START_TIME_ASC",
            "limit": 200,
        })


__all__ = ["PrefectServerProcess", "REPO", "clean_env"]
