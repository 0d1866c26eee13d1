"""MLXEngine: the engine on MLX (agent.engine.core.Engine with the MLX thread as its backend)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping

import mlx.core as mx

from agent.engine.core import Engine, EngineConfig
from agent.engine.memory import MemoryProbe, SystemMemory
from agent.engine.mlx_backend import MLXBackend


class MLXEngine(Engine):
    def __init__(
        self,
        models: Mapping[str, object],
        *,
        config: EngineConfig = EngineConfig(),
        memory: MemoryProbe | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        super().__init__(
            MLXBackend(schedule=config.schedule, image_limits=config.image_limits), models,
            memory=memory or SystemMemory(metal_limit=_metal_limit(), allocated=_mlx_allocated), config=config,
            clock=clock, sleep=sleep,
        )

    def chat_format(self, model: str):
        """The loaded model's ChatFormat: how its prompts are encoded and its output split."""
        return self.backend.chat_format(model)


def _mlx_allocated() -> int:
    """What MLX holds now: live arrays and the buffer cache it keeps for reuse (both out of `available`)."""
    return mx.get_active_memory() + mx.get_cache_memory()


def _metal_limit() -> int | None:
    """Metal's recommended working set on a Mac: the GPU cannot keep more resident."""
    if not mx.metal.is_available():
        return None
    return int(mx.device_info()["max_recommended_working_set_size"])
