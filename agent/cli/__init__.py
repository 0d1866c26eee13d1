"""The `darkbloom-agent` command line."""

from agent.cli.main import app

__all__ = ["app"]
