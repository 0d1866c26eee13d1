"""`darkbloom-agent coordinator`: the bundled coordinator, its API keys, provider identities, account credit and
the running coordinator's status (coordinator_status.py)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from agent.cli.coordinator_status import coordinator_status
from agent.cli.provider_commands import providers_app
from agent.cli.support import existing_db, fail
from agent.errors import DarkbloomError

coordinator_app = typer.Typer(invoke_without_command=True, no_args_is_help=False,
                              help="The bundled OpenAI-compatible coordinator (serves when run without a subcommand).")
keys_app = typer.Typer(no_args_is_help=True, help="Consumer API keys (stored hashed in the accounts database).")
coordinator_app.add_typer(keys_app, name="keys")
coordinator_app.add_typer(providers_app, name="providers")
coordinator_app.command("status")(coordinator_status)
DbOpt = Annotated[Path, typer.Option("--db", help="The accounts database (SQLite).")]


@coordinator_app.callback()
def coordinator(
    ctx: typer.Context,
    config: Annotated[Optional[Path], typer.Option(help="A coordinator.toml whose keys are these options' names (env DARKBLOOM_COORDINATOR_CONFIG).")] = None,
    host: Annotated[Optional[str], typer.Option(help="Address to bind; loopback unless you mean it (default 127.0.0.1).")] = None,
    port: Annotated[Optional[int], typer.Option(help="Port for the API and /ws/provider (default 8000).")] = None,
    db: Annotated[Optional[Path], typer.Option(help="Accounts database: enables API keys and billing.")] = None,
    open_mode: Annotated[Optional[bool], typer.Option("--open/--no-open", help="No keys, no billing (default without --db).", show_default=False)] = None,
    provider_token: Annotated[Optional[str], typer.Option(help="The token agents must present (default: any).")] = None,
    operator_token: Annotated[Optional[str], typer.Option(help="The x-darkbloom-operator token that sees per-provider detail beside loopback.")] = None,
    allow_open_remote: Annotated[Optional[bool], typer.Option("--allow-open-remote", help="Allow an open coordinator on a non-loopback address.", show_default=False)] = None,
    queue_depth: Annotated[Optional[int], typer.Option(help="Requests a model's queue holds.")] = None,
    queue_max_wait: Annotated[Optional[float], typer.Option(help="Seconds a request may wait in the queue.")] = None,
    heartbeat_interval: Annotated[Optional[float], typer.Option(help="Seconds between agent heartbeats.")] = None,
    requests_per_minute: Annotated[Optional[int], typer.Option(help="Per-account request limit with --db (default 1200; 0: unlimited).")] = None,
    output_tokens_per_minute: Annotated[Optional[int], typer.Option(help="Per-account output-token limit with --db (default 2000000; 0: unlimited).")] = None,
    open_requests_per_minute_per_ip: Annotated[Optional[int], typer.Option(help="Per-address request limit in open mode (default 6000; 0: unlimited).")] = None,
    log_level: Annotated[Optional[str], typer.Option(help="debug, info, warning or error (default info).")] = None,
    log_format: Annotated[Optional[str], typer.Option(help="auto, json or console (default auto).")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="NAME=VALUE for any coordinator setting (agent/coordinator/settings.py), e.g. first_token_base_s=60; repeat for more.")] = None,
) -> None:
    """Every option is also a key of --config's file and a DARKBLOOM_COORDINATOR_<NAME> variable (flags win)."""
    if ctx.invoked_subcommand is not None:
        return
    flags = {name: value for name, value in locals().items() if name not in ("ctx", "config", "set_")}
    from agent.cli.coordinator_config import coordinator_settings, load_coordinator_config, parse_set_flags
    from agent.coordinator.billing.ratelimit import RateLimits
    from agent.coordinator.http.app import serve
    from agent.logs import configure_logging

    try:
        options = load_coordinator_config(config, os.environ, flags | {"settings": parse_set_flags(set_ or ())})
        configure_logging(options.log_format, options.log_level)
        serve(options.host, options.port, options.db, open_mode=options.open_mode,
              provider_token=options.provider_token, operator_token=options.operator_token,
              allow_open_remote=options.allow_open_remote, queue_depth=options.queue_depth,
              queue_max_wait_s=options.queue_max_wait, heartbeat_interval_s=options.heartbeat_interval,
              rate_limits=RateLimits.from_cli(options.requests_per_minute, options.output_tokens_per_minute),
              open_requests_per_minute_per_ip=options.open_requests_per_minute_per_ip,
              settings=coordinator_settings(options.settings), log_level=options.log_level)
    except DarkbloomError as error:
        fail(error)


@keys_app.command("create")
def keys_create(account: Annotated[str, typer.Argument(help="The account the key bills.")], db: DbOpt,
                name: Annotated[Optional[str], typer.Option(help="A label for the key.")] = None) -> None:
    """Create a key; it is printed once and stored only as a hash."""
    from agent.coordinator.billing.keys import create_key

    try:
        created = create_key(db, account, name)
    except DarkbloomError as error:
        fail(error)
    typer.echo(f"key {created.info.id} for account {account} (shown once, keep it safe):\n{created.key}")


@keys_app.command("list")
def keys_list(db: DbOpt, as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Every key's id, account, name, and when it was created or revoked (never the secret)."""
    from agent.coordinator.billing.keys import list_keys
    from agent.tables import render_table

    keys = list_keys(existing_db(db))
    if as_json:
        typer.echo(json.dumps([k.model_dump() for k in keys], indent=2))
        return
    def when(ts: float | None) -> str:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else ""

    typer.echo(render_table(["id", "account", "name", "created", "revoked"],
                            [[k.id, k.account_id, k.name or "", when(k.created_at), when(k.revoked_at)] for k in keys]))


@keys_app.command("revoke")
def keys_revoke(key_id: Annotated[str, typer.Argument(help="The key's id (or the key itself).")], db: DbOpt) -> None:
    """Revoke a key; a running coordinator refuses it within a second."""
    from agent.coordinator.billing.keys import revoke_key

    try:
        info = revoke_key(existing_db(db), key_id)
    except DarkbloomError as error:
        fail(error)
    typer.echo(f"revoked key {info.id} of account {info.account_id}")


# Unknown options pass through as arguments, so "-5" reaches the command and is refused in words, not as an option.
AMOUNT_CONTEXT = {"ignore_unknown_options": True}


@coordinator_app.command("credit", context_settings=AMOUNT_CONTEXT)
def credit(account: Annotated[str, typer.Argument(help="The account to credit.")],
           amount: Annotated[str, typer.Argument(help="Amount in dollars, e.g. 25.00.")], db: DbOpt,
           note: Annotated[Optional[str], typer.Option(help="Why.")] = None) -> None:
    """Add credit to an account (an append-only ledger entry)."""
    from agent.coordinator.billing.ledger_entries import credit_account
    from agent.coordinator.billing.pricing import format_micros, parse_amount

    try:
        micros = parse_amount(amount)
        if micros <= 0:
            fail(f"a credit only adds: {amount} is not above zero. The ledger has no debit; to stop an account "
                 "spending, revoke its keys (`darkbloom-agent coordinator keys revoke KEY_ID`), and to let it go "
                 "below zero, give it a credit line (`darkbloom-agent coordinator credit-limit ACCOUNT AMOUNT`)")
        credit_account(existing_db(db), account, micros, note=note)
    except (DarkbloomError, ValueError) as error:
        fail(str(error))
    typer.echo(f"credited {format_micros(micros)} to {account}")


@coordinator_app.command("credit-limit", context_settings=AMOUNT_CONTEXT)
def credit_limit(account: Annotated[str, typer.Argument(help="The account.")],
                 amount: Annotated[str, typer.Argument(help="How far below zero it may go, in dollars (0: none).")],
                 db: DbOpt) -> None:
    """Set an account's credit line. With 0 (the default) every hold covers the request's worst case."""
    from agent.coordinator.billing.pricing import format_micros, parse_amount
    from agent.coordinator.billing.store import set_credit_limit

    try:
        micros = parse_amount(amount)
        if micros < 0:
            fail(f"a credit limit is how far below zero an account may go: write it as a positive amount, not {amount}")
        set_credit_limit(existing_db(db), account, micros)
    except (DarkbloomError, ValueError) as error:
        fail(str(error))
    typer.echo(f"credit limit of {account}: {format_micros(micros)}")
