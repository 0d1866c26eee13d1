"""The daemon's status, kept in a small JSON file for `darkbloom-agent status` and `stop`.

A file rather than a socket: launchd restarts, crashes and a status read while the daemon is busy
all just work, and the pid in it is what `stop` signals. Written atomically (temp file + rename).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def write_status(path: Path, status: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".status-", suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump(status, f, indent=2, default=str)
    os.replace(tmp, path)


def read_status(path: Path) -> dict[str, Any] | None:
    """The last status the daemon wrote, with `is_alive` saying whether its process still runs."""
    try:
        status = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    status["is_alive"] = _is_alive(status.get("pid"))
    return status


def _is_alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
