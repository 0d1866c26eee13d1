"""Where the engine's memory numbers come from: the machine (psutil, and Metal's working set on a
Mac) or a simulated size for the fake engine and tests."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import psutil


class MemoryProbe(Protocol):
    def total_bytes(self) -> int: ...
    def available_bytes(self) -> int | None: ...  # the OS's live view; None when there is none
    def metal_limit_bytes(self) -> int | None: ...


@dataclass(frozen=True, slots=True)
class SystemMemory:
    metal_limit: int | None = None  # the MLX engine passes Metal's recommended working set

    def total_bytes(self) -> int:
        return psutil.virtual_memory().total

    def available_bytes(self) -> int | None:
        return psutil.virtual_memory().available

    def metal_limit_bytes(self) -> int | None:
        return self.metal_limit


@dataclass(frozen=True, slots=True)
class SimulatedMemory:
    total: int

    def total_bytes(self) -> int:
        return self.total

    def available_bytes(self) -> int | None:
        return None

    def metal_limit_bytes(self) -> int | None:
        return None
