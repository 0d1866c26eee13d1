"""What every CLI command shares: one clear error line and a distinct exit code, never a traceback."""

from __future__ import annotations

from typing import NoReturn

import typer

from agent.errors import DarkbloomError

EXIT_USAGE = 2


def fail(error: DarkbloomError | str) -> NoReturn:
    typer.echo(f"error: {error}", err=True)
    raise typer.Exit(code=EXIT_USAGE)
