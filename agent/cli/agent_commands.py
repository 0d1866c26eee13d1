"""`darkbloom-agent start | status | stop`: the daemon in the foreground, and questions to a running one."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from agent.cli.support import fail
from agent.errors import DarkbloomError


def start(
    coordinator: Annotated[Optional[str], typer.Option(help="Coordinator URL (wss://…, or ws:// on loopback).")] = None,
    model: Annotated[Optional[list[str]], typer.Option("--model", "-m", help="A catalog id or a model directory; repeat for more.")] = None,
    config: Annotated[Optional[Path], typer.Option(help="The agent.toml (default ~/.config/darkbloom/agent.toml).")] = None,
    token: Annotated[Optional[str], typer.Option(help="The provider token (prefer the config file or DARKBLOOM_PROVIDER_TOKEN).")] = None,
    reserve_gb: Annotated[Optional[float], typer.Option(help="Memory the owner keeps for other work (GiB).")] = None,
) -> None:
    """Run the agent in the foreground (launchd runs it this way) until SIGTERM / SIGINT, then drain."""
    import asyncio

    from agent.daemon.config import load_config
    from agent.daemon.instance_lock import instance_lock, lock_path_for
    from agent.daemon.main import Daemon, resolve_models
    from agent.hardware import probe_hardware
    from agent.logs import configure_logging

    flags = {"coordinator_url": coordinator, "models": tuple(model) if model else None, "provider_token": token,
             "reserve_gb": reserve_gb}
    try:
        cfg = load_config(config, os.environ, flags)
        if not cfg.coordinator_url:
            raise DarkbloomError("no coordinator: give --coordinator URL (or coordinator_url in the config)")
        if cfg.provider_token is None:
            raise DarkbloomError("no provider token: give --token, DARKBLOOM_PROVIDER_TOKEN or provider_token")
        with instance_lock(lock_path_for(cfg.status_path)):
            entries = resolve_models(cfg)
            configure_logging(cfg.log_format, cfg.log_level)
            daemon = Daemon(cfg, entries, probe_hardware().to_wire())
            code = asyncio.run(daemon.run())
    except DarkbloomError as error:
        fail(error)
    raise typer.Exit(code=code)


def _read_status(config: Path | None) -> tuple[Path, dict | None]:
    """Where the daemon keeps its status (from the same config it runs with), and what it last wrote."""
    from agent.daemon.config import load_config
    from agent.daemon.status_file import read_status

    try:
        path = load_config(config, os.environ, {}).status_path
    except DarkbloomError as error:
        fail(error)
    return path, read_status(path)


def status(
    config: Annotated[Optional[Path], typer.Option(help="The agent.toml whose status_path to read.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Slots, their states and KV, the link and the uptime of the running agent."""
    from agent.tables import human_bytes, render_table

    path, current = _read_status(config)
    if current is None:
        fail(f"no agent status at {path}: the agent has not run here (start it with `darkbloom-agent start`)")
    if as_json:
        typer.echo(json.dumps(current, indent=2))
        return
    alive = "running" if current["is_alive"] else "not running (last status below)"
    link = current["link"] if current["is_alive"] else "down"  # a killed agent's last word may say "ready"
    typer.echo(f"agent pid {current['pid']}: {alive}; state {current['state']}, up {current['uptime_s']:.0f} s, "
               f"link {link} to {current['coordinator_url']}, {current['num_served']} served, "
               f"{current['num_in_flight']} in flight")
    rows = [[s["model"], s["state"], s["num_running"], s["num_waiting"], human_bytes(s["kv_budget_bytes"]),
             human_bytes(s["kv_reserved_bytes"]), human_bytes(s["kv_used_bytes"]), human_bytes(s.get("kv_cached_bytes", 0)),
             f"{s.get('prefix_hit_rate', 0.0):.0%}", s.get("prefix_evictions", 0), s.get("reason") or ""]
            for s in current["slots"]]
    typer.echo(render_table(["model", "state", "running", "waiting", "KV budget", "reserved", "used", "cached",
                             "cache hits", "evictions", "note"], rows))


def stop(
    config: Annotated[Optional[Path], typer.Option(help="The agent.toml whose status_path to read.")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the drain to finish.")] = 180.0,
) -> None:
    """Ask the running agent to drain and exit (SIGTERM), and wait until it has."""
    from agent.daemon.status_file import read_status

    path, current = _read_status(config)
    if current is None or not current["is_alive"]:
        typer.echo("the agent is not running")
        return
    os.kill(current["pid"], signal.SIGTERM)
    typer.echo(f"asked agent pid {current['pid']} to drain and stop …")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        latest = read_status(path)
        if latest is None or not latest["is_alive"]:
            typer.echo("stopped")
            return
        time.sleep(0.2)
    fail(f"agent pid {current['pid']} is still draining after {timeout:.0f} s")


def logs(
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new lines as they come.")] = False,
    lines: Annotated[int, typer.Option("--lines", "-n", help="How many of the last lines to print first.")] = 50,
    log_dir: Annotated[Optional[Path], typer.Option(help="Another log directory.")] = None,
) -> None:
    """The agent's log as launchd keeps it (~/Library/Logs/darkbloom/agent.log and agent.err.log)."""
    from agent.daemon.launch_agent import log_dir as default_log_dir

    if log_dir is None and sys.platform != "darwin":
        fail("there is no launchd here, so no agent log file: a foreground `darkbloom-agent start` logs to its "
             "terminal (redirect it, e.g. `2>> agent.log`, then `logs --log-dir DIR` reads agent.log there)")
    directory = log_dir or default_log_dir(Path.home())
    files = [directory / "agent.log", directory / "agent.err.log"]
    present = [f for f in files if f.is_file()]
    if not present:
        fail(f"no agent log in {directory}: logs are written there when launchd runs the agent "
             "(`darkbloom-agent service install`); a foreground `start` logs to the terminal")
    for path in present:
        typer.echo(f"==> {path} <==")
        typer.echo("".join(path.read_text(errors="replace").splitlines(keepends=True)[-lines:]), nl=False)
    if not follow:
        return
    offsets = {path: path.stat().st_size for path in present}
    try:
        while True:
            for path in present:
                size = path.stat().st_size if path.exists() else 0
                if size < offsets[path]:
                    offsets[path] = 0  # rotated or truncated
                if size > offsets[path]:
                    with path.open(errors="replace") as f:
                        f.seek(offsets[path])
                        typer.echo(f.read(), nl=False)
                    offsets[path] = size
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
