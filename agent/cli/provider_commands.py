"""`darkbloom-agent coordinator providers create|list|revoke`: provider identities and their reputation."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer

from agent.cli.support import existing_db, fail
from agent.errors import DarkbloomError

providers_app = typer.Typer(no_args_is_help=True, help="Provider identities (credentials stored hashed in the "
                                                      "accounts database) and what each has shown.")
DbOpt = Annotated[Path, typer.Option("--db", help="The accounts database (SQLite).")]


@providers_app.command("create")
def providers_create(name: Annotated[str, typer.Argument(help="A unique name: lowercase letters, digits, '-'.")],
                     db: DbOpt) -> None:
    """Create a provider identity; its credential is printed once and stored only as a hash."""
    from agent.coordinator.billing.identities import create_identity

    try:
        created = create_identity(db, name)
    except DarkbloomError as error:
        fail(error)
    typer.echo(f"provider {created.info.provider_id} (id {created.info.id}); set it as provider_token in that "
               f"agent's config (shown once, keep it safe):\n{created.credential}")


@providers_app.command("list")
def providers_list(db: DbOpt, as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Every identity: id, name, when created or revoked, and its reputation as the coordinator last saved it."""
    from agent.coordinator.billing.identities import list_identities
    from agent.coordinator.routing.reputation import ReputationView
    from agent.tables import render_table

    identities = list_identities(existing_db(db))
    views = [ReputationView.model_validate_json(i.reputation) if i.reputation else None for i in identities]
    if as_json:
        typer.echo(json.dumps([{**i.model_dump(exclude={"reputation"}), "provider_id": i.provider_id,
                                "reputation": v.model_dump() if v else None} for i, v in zip(identities, views)],
                              indent=2))
        return

    def when(ts: float | None) -> str:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else ""

    rows = []
    for identity, view in zip(identities, views):
        standing = ["", "", "", ""] if view is None else [
            f"{view.trust:.2f}", str(view.num_first_tokens),
            f"{view.quarantine_left_s:.0f} s" if view.quarantine_left_s else "", view.last_failure[:40]]
        rows.append([identity.id, identity.provider_id, when(identity.created_at), when(identity.revoked_at),
                     *standing, when(identity.reputation_at)])
    typer.echo(render_table(["id", "provider", "created", "revoked", "trust", "first tokens", "quarantined",
                             "last failure", "as of"], rows))


@providers_app.command("revoke")
def providers_revoke(handle: Annotated[str, typer.Argument(help="The identity's id, name or provider id.")],
                     db: DbOpt) -> None:
    """Revoke an identity; a running coordinator refuses it and closes its live link within a heartbeat."""
    from agent.coordinator.billing.identities import revoke_identity

    try:
        info = revoke_identity(existing_db(db), handle)
    except DarkbloomError as error:
        fail(error)
    typer.echo(f"revoked provider {info.provider_id} (id {info.id})")
