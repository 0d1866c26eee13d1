"""Where the engine's memory numbers come from: the machine (psutil, and Metal's working set on a
Mac) or a simulated size for the fake engine and tests.

`engine_bytes` is what the engine itself has allocated now (MLX's active and cached buffers): the OS's
`available` already excludes it, so the gate adds it back to tell this engine's memory from every other
process's (another agent, an app) and never counts theirs as free."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import psutil


class MemoryProbe(Protocol):
    def total_bytes(self) -> int: ...
    def available_bytes(self) -> int | None: ...  # the OS's live view; None when there is none
    def metal_limit_bytes(self) -> int | None: ...
    def engine_bytes(self) -> int | None: ...  # what the engine has allocated now; None when unknown


@dataclass(frozen=True, slots=True)
class SystemMemory:
    metal_limit: int | None = None  # the MLX engine passes Metal's recommended working set
    allocated: Callable[[], int] | None = None  # the MLX engine passes MLX's active + cached bytes

    def total_bytes(self) -> int:
        return psutil.virtual_memory().total

    def available_bytes(self) -> int | None:
        return psutil.virtual_memory().available

    def metal_limit_bytes(self) -> int | None:
        return self.metal_limit

    def engine_bytes(self) -> int | None:
        return self.allocated() if self.allocated is not None else None


@dataclass(frozen=True, slots=True)
class SimulatedMemory:
    total: int

    def total_bytes(self) -> int:
        return self.total

    def available_bytes(self) -> int | None:
        return None

    def metal_limit_bytes(self) -> int | None:
        return None

    def engine_bytes(self) -> int | None:
        return None
