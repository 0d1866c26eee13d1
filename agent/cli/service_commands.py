"""`darkbloom-agent service ...`: the macOS LaunchAgent."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Optional

import typer

from agent.cli.support import fail as _fail
from agent.errors import DarkbloomError

service_app = typer.Typer(no_args_is_help=True, help="The macOS LaunchAgent that keeps the agent running.")
ConfigOpt = Annotated[Optional[Path], typer.Option("--config", help="The agent.toml `start` reads "
                                                   "(default ~/.config/darkbloom/agent.toml).")]
ProgramOpt = Annotated[Optional[Path], typer.Option(help="The darkbloom-agent executable launchd runs "
                                                    "(default: the installed one).")]


@service_app.command("install")
def service_install(config: ConfigOpt = None, program: ProgramOpt = None) -> None:
    """Write ~/Library/LaunchAgents/com.darkbloom.agent.plist and (re)start the agent under launchd."""
    from agent.daemon.launch_agent import install_service

    try:
        status = install_service(config, program=program)
    except DarkbloomError as error:
        _fail(error)
    typer.echo(status.describe())


@service_app.command("uninstall")
def service_uninstall() -> None:
    """Stop the agent and remove its LaunchAgent (logs in ~/Library/Logs/darkbloom are kept)."""
    from agent.daemon.launch_agent import LaunchAgentService

    try:
        removed = LaunchAgentService.for_current_user().uninstall()
    except DarkbloomError as error:
        _fail(error)
    typer.echo("removed the LaunchAgent" if removed else "the LaunchAgent was not installed")


@service_app.command("status")
def service_status(as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False) -> None:
    """Is the LaunchAgent installed and loaded, its state, pid and last exit code (from `launchctl print`)."""
    from agent.daemon.launch_agent import LaunchAgentService

    try:
        status = LaunchAgentService.for_current_user().status()
    except DarkbloomError as error:
        _fail(error)
    typer.echo(json.dumps(asdict(status), default=str, indent=2) if as_json else status.describe())


@service_app.command("restart")
def service_restart() -> None:
    """Stop the agent (it drains), then start it again from the installed plist."""
    from agent.daemon.launch_agent import LaunchAgentService

    try:
        status = LaunchAgentService.for_current_user().restart()
    except DarkbloomError as error:
        _fail(error)
    typer.echo(status.describe())


@service_app.command("render")
def service_render(config: ConfigOpt = None, program: ProgramOpt = None) -> None:
    """Print the LaunchAgent plist that `service install` would write (works on any OS)."""
    from agent.daemon.config import default_config_path
    from agent.daemon.launch_agent import default_program, launch_agent, render_plist

    try:
        plist = launch_agent((program or default_program()).absolute(),
                             (config or default_config_path()).expanduser().absolute(), Path.home())
    except DarkbloomError as error:
        _fail(error)
    typer.echo(render_plist(plist).decode(), nl=False)
