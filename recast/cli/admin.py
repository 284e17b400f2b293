"""``recast models list``, ``recast db upgrade``, ``recast gc`` and ``recast reconcile``: the model directory,
the database schema, the object store's old intermediates and runs whose Prefect flow run ended unseen."""

from __future__ import annotations

import json

import typer

from recast.cli.guard import guarded, prepare
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


def gc(
    older_than: str = typer.Option("30d", "--older-than", help="remove intermediates first stored longer ago than this: 30d, 12h, 2w, 0"),
    dry_run: bool = typer.Option(False, "--dry-run", help="print what would be removed, remove nothing"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object on stdout"),
) -> None:
    """Remove stored intermediates (chunks, masks, analyses) that no deliverable, shot or pending
    review needs; never deliverables, plates, source or identity photos. Prints what was freed."""

    def go() -> None:
        from recast.services.gc import collect

        prepare()
        out = collect(older_than=older_than, dry_run=dry_run)
        if as_json:
            typer.echo(json.dumps({k: v for k, v in out.items() if k != "removed"} | {"removed": [d["uri"] for d in out["removed"]]}, default=str))
            return
        verb = "would free" if dry_run else "freed"
        typer.echo(f"{verb} {_size(out['bytes'] + out['scratch_bytes'])}: {out['assets']} stored intermediate(s) older than {older_than}"
                   + (f", {out['scratch_dirs']} scratch director{'y' if out['scratch_dirs'] == 1 else 'ies'}" if out["scratch_dirs"] else ""))
        for role, r in sorted(out["by_role"].items()):
            typer.echo(f"  {role:<18} {r['count']:>6}  {_size(r['bytes'])}")
        typer.echo(f"kept: {out['kept_needed']} asset(s) that deliverables, shots, identities or {out['pending_runs']} pending run(s) need")

    guarded(go)


def reconcile(as_json: bool = typer.Option(False, "--json", help="print one JSON object on stdout")) -> None:
    """Mark the runs whose Prefect flow run ended (crashed, failed, cancelled) without recast
    recording it, with Prefect's reason (the nightly batch and the API do this too). Needs
    PREFECT_API_URL: the server the deployments run on."""

    def go() -> None:
        from recast.flows.deployments import check_prefect_api
        from recast.services.dispatch import reconcile_dispatched_runs

        check_prefect_api()  # exit 6 naming the server when it does not answer
        prepare()
        ended = reconcile_dispatched_runs()
        if as_json:
            typer.echo(json.dumps({"reconciled": [r.__dict__ for r in ended]}))
            return
        for r in ended:
            typer.echo(f"run {r.run_id} (shot {r.shot_id}): {r.status}: {r.reason}")
        typer.echo(f"{len(ended)} run(s) marked from Prefect's state")

    guarded(go)


def _size(n: int) -> str:
    for unit, scale in (("GB", 1024**3), ("MB", 1024**2), ("KB", 1024)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def register(app: typer.Typer) -> None:
    """Add ``gc`` (``models`` and ``db`` are sub-apps added in :mod:`recast.cli`)."""
    app.command("gc")(gc)
    app.command("reconcile")(reconcile)
