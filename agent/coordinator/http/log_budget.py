"""At most `max_lines` log lines per interval for one noisy source (a provider link's bad frames), so a
peer cannot fill the disk through our logs; the next line allowed says how many were suppressed.

Public names: LogBudget.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(slots=True)
class LogBudget:
    max_lines: int
    interval_s: float
    clock: Callable[[], float] = time.monotonic
    _window_start: float = field(default=float("-inf"))
    _lines: int = 0
    num_suppressed: int = 0

    def allow(self) -> bool:
        """True when this line may be logged; False counts it as suppressed."""
        now = self.clock()
        if now - self._window_start >= self.interval_s:
            self._window_start, self._lines = now, 0
        if self._lines < self.max_lines:
            self._lines += 1
            return True
        self.num_suppressed += 1
        return False

    def take_suppressed(self) -> int:
        """How many lines were suppressed since the last call (logged with the next line allowed)."""
        count, self.num_suppressed = self.num_suppressed, 0
        return count
