"""One agent per HOME: an exclusive lock beside the status file, held for the daemon's whole life.

Two agents with one HOME would both register, each size its memory gate against the whole machine, and
overwrite one status file. The lock is an flock on `agent.lock` next to `status.json`: the kernel drops it
when the process dies (kill -9 included), so there is no stale lock to clean up. The file holds the
holder's pid for the error message.

Public names: instance_lock, AgentAlreadyRunning, lock_path_for.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from agent.errors import ConfigError


class AgentAlreadyRunning(ConfigError):
    code = "agent_already_running"


def lock_path_for(status_path: Path) -> Path:
    return status_path.with_name("agent.lock")


@contextmanager
def instance_lock(path: Path) -> Iterator[None]:
    """Hold the lock until the block ends; AgentAlreadyRunning (naming the holder's pid) if another has it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise AgentAlreadyRunning(
            f"another agent is already running with this HOME (pid {holder}, lock {path}): stop it first "
            "(`darkbloom-agent stop`, or `darkbloom-agent service uninstall` if launchd runs it)") from None
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the last descriptor releases the flock
