"""Trust commands of the ``recast`` CLI: projects, identities and consent, ``verify``, ``audit``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer

from recast.cli.guard import guarded, prepare

VERIFY_HELP = """Check a file's provenance: its C2PA manifest (valid? signed by the studio CA?) and its invisible
watermark, and print the render id, shot, identity, consent (or that none was on record), models and lineage.

\b
Result codes:
  0  verified        manifest valid and trusted; the watermark, where readable, names the same render
  7  watermark-only  no usable manifest (e.g. stripped by a re-encode); the watermark identifies the render
  8  tampered        a manifest is present but the content no longer matches it (the mark may still identify the render)
  9  unknown         neither a manifest nor a known watermark
  3  the file is missing, or not a video of which any frame decodes
A cut or damaged file is checked on the frames that still decode; the output says it is truncated
and how many frames were read (a cut deliverable no longer matches its manifest: tampered).
"""


project_app = typer.Typer(no_args_is_help=True, help="Projects (consent policy, media type).")
identity_app = typer.Typer(no_args_is_help=True, help="People whose head or face may be used, with their consent.")
consent_app = typer.Typer(no_args_is_help=True, help="Consent records.")


@project_app.command("create")
def project_create(
    name: str = typer.Argument(...),
    media: Optional[str] = typer.Option(None, "--media", help="film | ad"),
    no_consent_required: bool = typer.Option(False, "--no-consent-required", help="explicitly allow swaps without consent (audited)"),
    commercial: bool = typer.Option(False, "--commercial", help="commercial work: non-commercial models are refused"),
    actor: str = typer.Option("cli", "--actor"),
) -> None:
    """Create a project; projects require consent unless --no-consent-required is given."""

    def go() -> None:
        from recast.services.trust import create_project

        prepare()
        typer.echo(json.dumps(create_project(name, media=media, consent_required=not no_consent_required, commercial=commercial, actor=actor)))

    guarded(go)


@identity_app.command("add")
def identity_add(
    name: str = typer.Argument(...),
    photo: list[Path] = typer.Option(..., "--photo", help="reference photo (repeatable)"),
    consent: Optional[Path] = typer.Option(None, "--consent", help="the signed release document (stored with its sha256)"),
    scope: Optional[str] = typer.Option(None, "--scope", help="project=P[,media=ad|film][,territory=T]"),
    valid_from: Optional[str] = typer.Option(None, "--valid-from", help="date (default: now)"),
    valid_until: Optional[str] = typer.Option(None, "--valid-until", help="date the consent ends"),
    actor: str = typer.Option("cli", "--actor"),
) -> None:
    """Register a person with reference photos and, with --consent and --scope, their consent."""

    def go() -> None:
        from recast.services.trust import add_identity

        prepare()
        typer.echo(json.dumps(add_identity(name, photos=photo, consent_doc=consent, scope=scope, valid_from=valid_from,
                                           valid_until=valid_until, actor=actor)))

    guarded(go)


@consent_app.command("revoke")
def consent_revoke(
    identity: str = typer.Argument(..., help="identity name or id"),
    reason: str = typer.Option(..., "--reason"),
    actor: str = typer.Option("cli", "--actor"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Revoke an identity's consent: withdraw every render made with it, block new ones, delete its photos and face data."""

    def go() -> None:
        from recast.services.trust import revoke

        prepare()
        out = revoke(identity, reason=reason, actor=actor)
        if as_json:
            typer.echo(json.dumps(out, default=str))
            return
        typer.echo(f"revoked {out['consents_revoked']} consent(s) of {identity}; {len(out['renders'])} render(s) withdrawn:")
        for r in out["renders"]:
            typer.echo(f"  render {r['render_id']}  shot {r['shot']}  {r['output_uri']}  delivered to: {r['delivered_to'] or 'unknown'}")
        typer.echo(f"deleted {len(out['deleted'])} stored asset(s) (photos, landmarks, head mattes); their checksums stay on record")

    guarded(go)


def verify(file: Path = typer.Argument(...), as_json: bool = typer.Option(False, "--json")) -> None:
    # the help text is VERIFY_HELP (result codes laid out as a table)
    def go() -> int:
        from recast.services.trust import verify_file

        prepare()
        out = verify_file(file)
        if as_json:
            typer.echo(json.dumps(out, default=str))
        else:
            _print_verify(out)
        return out["exit_code"]

    code = guarded(go)
    raise typer.Exit(code)


def audit(since: Optional[str] = typer.Option(None, "--since", help="date/time, or a duration like 24h or 7d"),
          limit: Optional[int] = typer.Option(None, "--limit"), as_json: bool = typer.Option(False, "--json")) -> None:
    """The append-only audit trail: who did what, oldest first."""

    def go() -> None:
        from recast.services.trust import audit as audit_events, since_value

        prepare()
        events = audit_events(since_value(since), limit)
        if as_json:
            typer.echo(json.dumps(events, default=str))
            return
        for e in events:
            typer.echo(f"{str(e['created'])[:19]}  {e['actor']:<10} {e['action']:<24} {e['subject_type']} {e['subject_id']}")

    guarded(go)


def _print_verify(out: dict[str, Any]) -> None:
    m, w, r = out["manifest"], out["watermark"], out["render"]
    typer.echo(f"{out['file']}: {out['result'].upper()}")
    typer.echo(f"  manifest:  {'present' if m['present'] else 'none'}" + (f", {'valid' if m['valid'] else 'INVALID'}, {'trusted' if m['trusted'] else 'untrusted'}"
                                                                         f"{', TAMPERED' if m['tampered'] else ''}; signer {m['signer']}" if m["present"] else ""))
    found = f"found {w['payload']} (confidence {w['confidence']})" if w["found"] else "not found"
    typer.echo(f"  watermark: {found} over {w['frames_used']} frames")
    d = out.get("decode") or {}
    if d.get("truncated"):
        of = f" of {d['frames_declared']}" if d.get("frames_declared") else ""
        typer.echo(f"  file:      TRUNCATED or damaged: {d['frames_decodable']}{of} frames decodable ({d.get('first_error') or 'fewer frames than declared'})")
    if r is None:
        typer.echo("  render:    not identified")
        return
    typer.echo(f"  render:    {r['render_id']}  shot {r['shot']} ({r['project']})  run {r['run_id']}" + ("  REVOKED" if r.get("revoked_at") else ""))
    typer.echo(f"  identity:  {r['identity'] or '-'}")
    c = r.get("consent")
    typer.echo(f"  consent:   {c['id'] + ' scope ' + json.dumps(c['scope']) if c else 'none on record (scratch project)'}")
    for mm in r.get("models", []):
        typer.echo(f"  model:     {mm.get('name')} {mm.get('version')} sha256={mm.get('sha256') or '-'}")

    roles: dict[str, set[str]] = {}

    def walk(node: dict[str, Any]) -> None:
        a = node["asset"]
        roles.setdefault(a["role"], set()).add(a["uri"])
        for p in node.get("parents", []):
            walk(p)

    walk(r["lineage"])
    typer.echo(f"  output:    {r['output_uri']} sha256={r['output_sha256']}")
    for role in ("plate", "source", "identity_photo"):
        for uri in sorted(roles.get(role, ())):
            typer.echo(f"  {role + ':':<10} {uri}")
    typer.echo("  lineage:   " + ", ".join(f"{n} {role}" for role, n in sorted((k, len(v)) for k, v in roles.items())) + "  (recast lineage FILE for the tree)")


def register(app: typer.Typer) -> None:
    """Add ``project``, ``identity``, ``consent``, ``verify`` and ``audit`` to the main app."""
    app.add_typer(project_app, name="project")
    app.add_typer(identity_app, name="identity")
    app.add_typer(consent_app, name="consent")
    app.command("verify", help=VERIFY_HELP)(verify)
    app.command("audit")(audit)
