"""``recast models list`` and ``recast db upgrade``: the model directory and the database schema."""

from __future__ import annotations

import json

import typer

from recast.cli.guard import guarded
from recast.settings import get_settings

db_app = typer.Typer(no_args_is_help=True, help="Database schema management.")
models_app = typer.Typer(no_args_is_help=True, help="Model weights in RECAST_MODEL_DIR (never downloaded).")


@models_app.command("list")
def models_list(as_json: bool = typer.Option(False, "--json")) -> None:
    """What each registered model needs, whether its files are present and their checksums verified."""

    def go() -> None:
        from recast.models.registry import list_models

        rows = list_models(get_settings().model_dir)
        if as_json:
            typer.echo(json.dumps([r.__dict__ for r in rows], default=str))
            return
        typer.echo(f"model directory: {get_settings().model_dir or '(RECAST_MODEL_DIR not set)'}")
        for r in rows:
            state = "verified" if r.verified else ("present" if r.present else "missing")
            use = "commercial use ok" if r.commercial_use else "NON-COMMERCIAL"
            typer.echo(f"{r.name:<28} {state:<9} {r.device:<5} {use:<18} {r.problem or ''}")

    guarded(go)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply the database migrations (the embedded SQLite is upgraded automatically)."""

    def go() -> None:
        from recast.db.migrate import current_revision, upgrade

        url = get_settings().resolved_database_url
        upgrade(url)
        typer.echo(f"database at revision {current_revision(url)}")

    guarded(go)
