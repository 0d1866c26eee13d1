"""The per-model wait queue: requests no warm slot can take right now, in arrival order.

Bounded in depth and in wait. The router walks a model's queue whenever capacity may have appeared
(a heartbeat, a request ending, a load finishing) and dispatches every waiter that now fits, in
order; a small request may pass a large one that does not fit yet, but only while the large one has
waited less than half the maximum wait (so it is not starved for ever by a stream of small ones).

Public names: Waiter, WaitQueue.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True, eq=False)
class Waiter:
    exchange: Any
    enqueued_at: float
    deadline: float
    future: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())

    @property
    def is_done(self) -> bool:
        return self.future.done()

    def may_be_passed(self, now: float, max_wait_s: float) -> bool:
        return now - self.enqueued_at < max_wait_s / 2


class WaitQueue:
    def __init__(self, model: str, max_depth: int) -> None:
        self.model = model
        self.max_depth = max_depth
        self._waiters: list[Waiter] = []

    def __len__(self) -> int:
        return len(self._waiters)

    def __iter__(self) -> Iterator[Waiter]:
        return iter(list(self._waiters))

    @property
    def is_full(self) -> bool:
        return len(self._waiters) >= self.max_depth

    def add(self, waiter: Waiter) -> None:
        if self.is_full:
            raise OverflowError(f"the {self.model} queue is full ({self.max_depth})")
        self._waiters.append(waiter)

    def remove(self, waiter: Waiter) -> bool:
        try:
            self._waiters.remove(waiter)
        except ValueError:
            return False
        return True

    def oldest_wait_s(self, now: float) -> float:
        return now - self._waiters[0].enqueued_at if self._waiters else 0.0
