"""``recast runs``, ``recast show`` and ``recast lineage``: what ran, with what, from what."""

from __future__ import annotations

import json
from typing import Any

import typer

from recast.cli.guard import guarded, prepare


def runs(limit: int = typer.Option(20, "--limit", min=1), as_json: bool = typer.Option(False, "--json")) -> None:
    """List recent runs with their status."""

    def go() -> None:
        from recast.services.runs import recent_runs

        prepare()
        rows = recent_runs(limit)
        if as_json:
            typer.echo(json.dumps(rows, default=str))
            return
        if not rows:
            typer.echo("no runs yet")
        for r in rows:
            typer.echo(f"{r['run_id']}  {r['status']:<11} {str(r['started'] or '')[:19]:<19}  {r['project']}/{r['shot']}" + (f"  {r['error']}" if r.get("error") else ""))

    guarded(go)


def show(run_id: str = typer.Argument(..., help="a run id from `recast runs`"), as_json: bool = typer.Option(False, "--json")) -> None:
    """Print the stage runs of a run: parameters, models and checksums, inputs and outputs."""

    def go() -> None:
        from recast.services.runs import run_detail

        prepare()
        from recast.services.shots import source_vetting

        detail = run_detail(run_id)
        detail["source_vetting"] = source_vetting(detail["run"]["run_id"])
        if as_json:
            typer.echo(json.dumps(detail, default=str, indent=2))
            return
        r = detail["run"]
        typer.echo(f"run {r['run_id']}  {r['status']}  shot {r['shot']} ({r['shot_id']})  project {r['project']}")
        if r.get("error"):
            typer.echo(f"  error: {r['error']}")
        for item in detail["source_vetting"]:
            typer.echo(f"source {item['photo']}:")
            for f in item["findings"]:
                typer.echo(f"  {f['outcome']:<6} {f['check']:<11} {f['text'].split(': ', 1)[-1]}")
        for sr in detail["stages"]:
            where = f" chunk {sr['chunk_index']} [{sr['frame_start']},{sr['frame_end']})" if sr["chunk_index"] is not None else ""
            typer.echo(f"- {sr['stage']}{where}: {sr['status']}  {sr['elapsed_ms'] or '-'} ms  work {sr['work_key'][:12]}")
            typer.echo(f"    params: {json.dumps(sr['params'], sort_keys=True)}")
            for m in sr["models"]:
                typer.echo(f"    model:  {m['name']} {m['version']} sha256={m.get('sha256') or '-'}")
            for a in sr["inputs"]:
                typer.echo(f"    in:     {a['role']:<16} {a['uri']} sha256={a['sha256'][:16]}")
            for a in sr["outputs"]:
                typer.echo(f"    out:    {a['role']:<16} {a['uri']} sha256={a['sha256'][:16]}")
            if sr.get("error"):
                typer.echo(f"    error:  {sr['error']}")

    guarded(go)


def lineage(target: str = typer.Argument(..., help="a deliverable path, an asset id, a URI or a sha256"), as_json: bool = typer.Option(False, "--json")) -> None:
    """Print the tree of assets a file or asset came from."""

    def go() -> None:
        from recast.services.runs import lineage_tree

        prepare()
        tree = lineage_tree(target)
        if as_json:
            typer.echo(json.dumps(tree, default=str, indent=2))
            return

        seen: set[str] = set()

        def walk(node: dict[str, Any], depth: int) -> None:
            a = node["asset"]
            repeat = a["id"] in seen
            typer.echo(f"{'  ' * depth}{'└─ ' if depth else ''}{a['role']}  {a['uri']}  sha256={a['sha256'][:16]}  ({a['id']})" + ("  [above]" if repeat and node.get("parents") else ""))
            if repeat:
                return  # an asset shared by several branches is expanded once
            seen.add(a["id"])
            for p in node.get("parents", []):
                walk(p, depth + 1)

        walk(tree, 0)

    guarded(go)


def register(app: typer.Typer) -> None:
    """Add ``runs``, ``show`` and ``lineage``."""
    app.command("runs")(runs)
    app.command("show")(show)
    app.command("lineage")(lineage)
