"""What every CLI command shares: one clear error line and a distinct exit code, never a traceback."""

from __future__ import annotations

from pathlib import Path
from typing import NoReturn

import typer

from agent.errors import DarkbloomError

EXIT_USAGE = 2


def fail(error: DarkbloomError | str) -> NoReturn:
    typer.echo(f"error: {error}", err=True)
    raise typer.Exit(code=EXIT_USAGE)


def existing_db(db: Path) -> Path:
    """The accounts database of a command that reads or changes it: a mistyped path must not create an empty one."""
    if not db.is_file():
        fail(f"the accounts database {db} does not exist (check --db); `darkbloom-agent coordinator keys create "
             f"ACCOUNT --db {db}` creates one")
    return db
