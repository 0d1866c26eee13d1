"""Background tasks with one owner.

asyncio keeps only a weak reference to a task: one started and forgotten can be collected mid-run, and
its exception is printed at garbage collection, if ever. A `TaskSet` keeps every task it spawns until
it ends, logs the failure of any that raises (`task.failed`), and on `close()` cancels and awaits
what is still running, so nothing outlives its owner.

    tasks = TaskSet("provider")
    tasks.spawn(do_work(), name="load-gpt-oss")
    await tasks.close()
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import structlog

log = structlog.get_logger("agent.tasks")


class TaskSet:
    def __init__(self, owner: str) -> None:
        self.owner = owner
        self._tasks: set[asyncio.Task] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def spawn(self, coroutine: Coroutine[Any, Any, Any], *, name: str) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coroutine, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._ended)
        return task

    def _ended(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            log.error("task.failed", owner=self.owner, task=task.get_name(), error=f"{type(error).__name__}: {error}",
                      exc_info=error)

    async def close(self) -> None:
        """Cancel what is still running and wait until it has ended."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
