"""The `darkbloom-agent` command line. Each command parses its flags and calls one function elsewhere."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from agent.cli.agent_commands import logs, start, status, stop
from agent.cli.coordinator_commands import coordinator_app
from agent.cli.model_commands import models_app
from agent.cli.service_commands import service_app
from agent.cli.support import fail as _fail
from agent.errors import DarkbloomError

app = typer.Typer(no_args_is_help=True, add_completion=False, help="A provider node for MLX inference on Apple Silicon.")


def _print_version(value: bool) -> None:
    if value:
        from agent import __version__
        from agent.wire.protocol import PROTOCOL_MINOR, PROTOCOL_VERSION

        typer.echo(f"darkbloom-agent {__version__} (protocol {PROTOCOL_VERSION}.{PROTOCOL_MINOR})")
        raise typer.Exit()


@app.callback()
def root(version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                               help="Print the version and exit.")] = False) -> None:
    """A provider node for MLX inference on Apple Silicon."""


app.add_typer(service_app, name="service")
app.add_typer(models_app, name="models")
app.add_typer(coordinator_app, name="coordinator")
app.command()(start)
app.command()(status)
app.command()(stop)
app.command()(logs)


@app.command()
def kv(
    model: Annotated[str, typer.Argument(help="A catalog id (see models.toml) or a model directory.")],
    context: Annotated[Optional[list[int]], typer.Option("--context", "-c", help="Context length(s) to report.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    catalog: Annotated[Optional[Path], typer.Option(help="A models.toml other than the bundled one.")] = None,
) -> None:
    """Exact KV cache bytes of MODEL: per token, per sequence, and what mlx-lm allocates at each context."""
    from agent.catalog import load_catalog, resolve_model
    from agent.cli.reports import DEFAULT_CONTEXTS, format_kv_report, kv_report

    try:
        spec = resolve_model(model, load_catalog(catalog))
    except DarkbloomError as error:
        _fail(error)
    contexts = tuple(context) if context else DEFAULT_CONTEXTS
    if any(n < 1 for n in contexts):
        _fail(DarkbloomError("--context must be at least 1 token"))
    report = kv_report(spec, contexts)
    typer.echo(json.dumps(report, indent=2) if as_json else format_kv_report(report))
    for n in (n for n in contexts if n > spec.max_context):
        typer.echo(f"warning: {n:,} tokens is beyond {spec.id}'s context of {spec.max_context:,}: "
                   "no request can reach it", err=True)


@app.command()
def doctor(
    memory_gb: Annotated[Optional[float], typer.Option(help="Evaluate a machine with this much RAM (GB = GiB here).")] = None,
    reserve_gb: Annotated[float, typer.Option(min=0, help="Memory the operator keeps for other work (GiB).")] = 0.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    catalog: Annotated[Optional[Path], typer.Option(help="A models.toml other than the bundled one.")] = None,
) -> None:
    """Which catalog models fit this machine (or one with --memory-gb), and how much KV each would have."""
    from agent.admission import GIB
    from agent.catalog import load_catalog
    from agent.cli.reports import doctor_report, format_doctor_report

    try:
        specs = load_catalog(catalog)
    except DarkbloomError as error:
        _fail(error)
    if memory_gb is not None and memory_gb <= 0:
        _fail(DarkbloomError("--memory-gb must be positive"))
    machine = None if memory_gb is not None else _machine_checks()
    memory = int(memory_gb * GIB) if memory_gb is not None else machine["memory_bytes"]
    metal = None if machine is None else machine["metal_working_set_bytes"]
    report = doctor_report(_from_downloaded_files(specs), memory, int(reserve_gb * GIB), metal_limit_bytes=metal)
    if machine is not None:
        report["machine"] = machine
    typer.echo(json.dumps(report, indent=2) if as_json else format_doctor_report(report))


def _from_downloaded_files(specs: dict) -> dict:
    """A downloaded model's spec from its own files (exact weights, and its vision tower when it has one), as
    the daemon loads it; the catalog's figures for the others."""
    from agent.daemon.model_store import snapshot_dir
    from agent.engine.models import ModelEntry

    out = {}
    for model_id, spec in specs.items():
        model_dir = snapshot_dir(spec.repo, spec.revision) if spec.repo and spec.revision else None
        try:
            has_files = model_dir is not None and (model_dir / "config.json").is_file()
            out[model_id] = ModelEntry.from_dir(model_id, model_dir, spec).spec if has_files else spec
        except DarkbloomError:
            out[model_id] = spec
    return out


def _machine_checks() -> dict:
    """This machine as the agent sees it: hardware, room for model weights, and the launchd service."""
    import platform
    import shutil

    from agent.daemon.model_store import cache_root
    from agent.hardware import probe_hardware

    hardware = probe_hardware()
    cache = cache_root(None)
    existing = next(p for p in (cache, *cache.parents) if p.exists())
    service = "macOS only"
    if platform.system() == "Darwin":
        from agent.daemon.launch_agent import LaunchAgentService

        try:
            service = LaunchAgentService.for_current_user().status().describe()
        except DarkbloomError as error:
            service = f"unknown: {error}"
    return {"chip": hardware.chip, "os_version": hardware.os_version, "memory_bytes": hardware.memory_bytes,
            "metal_working_set_bytes": hardware.metal_working_set_bytes, "model_cache": str(cache),
            "disk_free_bytes": shutil.disk_usage(existing).free, "launchd": service, "notes": hardware.notes}


@app.command()
def protocol(
    schema: Annotated[bool, typer.Option("--schema", help="Print the JSON Schema of every wire message.")] = False,
) -> None:
    """The agent <-> coordinator wire protocol."""
    from agent.wire.protocol import PROTOCOL_VERSION, json_schema

    if schema:
        typer.echo(json.dumps(json_schema(), indent=2))
    else:
        typer.echo(f"darkbloom protocol version {PROTOCOL_VERSION}; --schema prints its JSON Schema")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
