"""Production commands of the ``recast`` CLI: ``serve``, ``token``, ``deploy``, ``worker``.

* ``recast serve --host H --port P [--workers N]``: the HTTP API (uvicorn). Needs ``PREFECT_API_URL``.
* ``recast token create --project P [--name N]``: prints a new API token's secret once (stdout).
  ``recast token list``, ``recast token revoke ID|PREFIX``.
* ``recast deploy``: creates the ``cpu``/``gpu`` process work pools and registers the
  ``swap-shot`` and ``nightly-batch`` deployments on the Prefect server (``PREFECT_API_URL``);
  ``--nightly-project P`` (an existing project, else exit 3) schedules the batch.
* ``recast worker --pool cpu|gpu``: a Prefect process worker for that pool.

``serve`` and ``worker`` refuse to start (exit 2) without the studio's RECAST_C2PA_CERT,
RECAST_C2PA_KEY and RECAST_WATERMARK_SEED, whatever the database and store.
"""

from __future__ import annotations

import json
from typing import Optional

import typer

from recast.cli.guard import guarded, prepare

token_app = typer.Typer(no_args_is_help=True, help="API tokens (bearer tokens of the HTTP API, one project each).")


def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="address to listen on (0.0.0.0 for every interface)"),
    port: int = typer.Option(8000, "--port", min=1, max=65535),
    workers: int = typer.Option(1, "--workers", min=1, help="uvicorn worker processes (needs PostgreSQL when > 1)"),
    log_level: str = typer.Option("info", "--log-level"),
) -> None:
    """Serve the HTTP API (OpenAPI at /openapi.json, docs at /docs)."""

    def go() -> None:
        import uvicorn

        from recast.db.session import is_sqlite
        from recast.errors import UsageError
        from recast.flows.deployments import prefect_api_url
        from recast.settings import get_settings

        from recast.media.credentials import require_studio_credentials

        # on SQLite and a local store too: its renders are the studio's, and a development CA
        # made under this machine's data directory signs renders no other machine verifies
        require_studio_credentials("recast serve", serving="recast serve serves the studio's API")
        prepare()
        if workers > 1 and is_sqlite(get_settings().resolved_database_url):
            raise UsageError("--workers > 1 needs PostgreSQL (RECAST_DATABASE_URL): SQLite takes one writer at a time")
        try:
            typer.echo(f"[recast] Prefect API: {prefect_api_url()}", err=True)
        except Exception as exc:  # serve anyway: reads work, submissions answer 503 until it is set
            typer.echo(f"[recast] warning: {exc}", err=True)
        uvicorn.run("recast.api.app:create_app", factory=True, host=host, port=port, workers=workers, log_level=log_level)

    guarded(go)


@token_app.command("create")
def token_create(
    project: str = typer.Option(..., "--project", help="project name or id the token is for"),
    name: Optional[str] = typer.Option(None, "--name", help="a label (who or what uses the token)"),
    create_project: bool = typer.Option(False, "--create-project", help="create the project if it does not exist"),
) -> None:
    """Create an API token and print its secret once (it is stored only as a hash)."""

    def go() -> None:
        from recast.db import repository as repo
        from recast.db import tokens
        from recast.db.session import session_scope
        from recast.errors import RecordNotFoundError

        prepare()
        with session_scope() as s:
            proj = repo.get_or_create_project(s, project) if create_project else repo.find_project(s, project)
            if proj is None:
                raise RecordNotFoundError(f"--project {project}: no such project in the recast database (create it first: "
                                          f"recast project create {project}, or pass --create-project)")
            row, secret = tokens.create_token(s, project_id=proj.id, name=name)
            repo.add_audit_event(s, actor="cli", action="api_token.created", subject_type="api_token", subject_id=str(row.id),
                                 detail={"project": proj.name, "name": row.name, "prefix": row.prefix})
            typer.echo(f"[recast] token {row.name} ({row.prefix}…, id {row.id}) for project {proj.name}; "
                       f"the secret below is shown only now", err=True)
        typer.echo(secret)

    guarded(go)


@token_app.command("list")
def token_list(project: Optional[str] = typer.Option(None, "--project"), as_json: bool = typer.Option(False, "--json")) -> None:
    """List API tokens (never their secrets)."""

    def go() -> None:
        from recast.db import tokens
        from recast.db.session import session_scope

        prepare()
        with session_scope() as s:
            rows = [tokens.token_to_dict(t) for t in tokens.list_tokens(s, project)]
        if as_json:
            typer.echo(json.dumps(rows))
            return
        for r in rows:
            typer.echo(f"{r['id']}  {r['prefix']}…  {r['name']:<24} project {r['project_id']}  last used {r['last_used_at'] or '-'}"
                       + (f"  REVOKED {r['revoked_at']}" if r["revoked_at"] else ""))

    guarded(go)


@token_app.command("revoke")
def token_revoke(token: str = typer.Argument(..., help="token id or its displayed prefix")) -> None:
    """Revoke an API token (requests with it then answer 401)."""

    def go() -> None:
        from recast.db import repository as repo
        from recast.db import tokens
        from recast.db.session import session_scope

        prepare()
        with session_scope() as s:
            row = tokens.revoke_token(s, token)
            repo.add_audit_event(s, actor="cli", action="api_token.revoked", subject_type="api_token", subject_id=str(row.id),
                                 detail={"prefix": row.prefix})
        typer.echo(f"token {row.prefix}… revoked")

    guarded(go)


def deploy(
    swap_pool: str = typer.Option("cpu", "--swap-pool", help="work pool of the swap-shot deployment (gpu for GPU engines)"),
    batch_pool: str = typer.Option("cpu", "--batch-pool", help="work pool of the nightly-batch deployment"),
    nightly_project: Optional[str] = typer.Option(None, "--nightly-project", help="project the nightly batch drains (no schedule without it); must exist"),
    nightly_cron: str = typer.Option("0 2 * * *", "--nightly-cron", help="cron of the nightly batch"),
    nightly_timezone: str = typer.Option("UTC", "--nightly-timezone", help="IANA time zone of the cron (e.g. Europe/London)"),
    nightly_concurrency: int = typer.Option(2, "--nightly-concurrency", min=1, help="shots the batch runs at once"),
    nightly_limit: int = typer.Option(50, "--nightly-limit", min=1, help="most shots one nightly batch starts"),
) -> None:
    """Register the work pools and the swap-shot and nightly-batch deployments with the Prefect server."""

    def go() -> None:
        from recast.db import repository as repo
        from recast.db.session import session_scope
        from recast.errors import RecordNotFoundError
        from recast.flows.deployments import check_nightly_schedule, register_deployments

        prepare()
        check_nightly_schedule(nightly_cron, nightly_timezone)
        if nightly_project:
            # a batch scheduled for a project that does not exist would fail every night, unseen
            with session_scope() as s:
                if repo.find_project(s, nightly_project) is None:
                    raise RecordNotFoundError(f"--nightly-project {nightly_project}: no such project in the recast database "
                                              f"(create it first: recast project create {nightly_project})")
        ids = register_deployments(swap_pool=swap_pool, batch_pool=batch_pool, nightly_project=nightly_project,
                                   nightly_cron=nightly_cron, nightly_timezone=nightly_timezone,
                                   nightly_concurrency=nightly_concurrency, nightly_limit=nightly_limit)
        for name, dep_id in ids.items():
            typer.echo(f"{name}  {dep_id}")

    guarded(go)


def worker(
    pool: str = typer.Option("cpu", "--pool", help="work pool to take flow runs from: cpu or gpu"),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="flow runs at once on this machine (default: no limit)"),
    name: Optional[str] = typer.Option(None, "--name", help="worker name (default: generated)"),
) -> None:
    """Run a Prefect process worker for a work pool (each flow run is a subprocess on this machine)."""

    def go() -> None:
        import anyio
        from prefect.workers.process import ProcessWorker

        from recast.flows.deployments import prefect_api_url

        from recast.media.credentials import require_studio_credentials

        # on SQLite and a local store too: its renders are the studio's, and a development CA
        # made under this machine's data directory signs renders no other machine verifies
        require_studio_credentials("recast worker", serving="recast worker renders for the studio")
        prepare()
        prefect_api_url()  # a worker against a temporary server would wait forever for runs

        async def main() -> None:
            await ProcessWorker(work_pool_name=pool, limit=limit, name=name).start()

        anyio.run(main)

    guarded(go)


def register(app: typer.Typer) -> None:
    """Add ``serve``, ``token``, ``deploy`` and ``worker`` to the ``recast`` Typer app."""
    app.command("serve")(serve)
    app.add_typer(token_app, name="token")
    app.command("deploy")(deploy)
    app.command("worker")(worker)


__all__ = ["deploy", "register", "serve", "token_app", "worker"]
