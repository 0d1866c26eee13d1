"""The inference engine: model slots, continuous batching, KV admission, streams.

Importing this package loads no MLX: the interface types, the engine core and the fake engine are
pure; `MLXEngine` (the only code that runs mlx / mlx_lm) is imported on first use.

    engine = MLXEngine({"gpt-oss-20b": Path(...)})   or   FakeEngine({...}, memory_bytes=..., timing=...)
    await engine.start(); await engine.load("gpt-oss-20b")
    stream = await engine.submit(GenerationRequest(...))    # RequestRefused at once if admission says no
    async for event in stream: ...                    # Delta(content, reasoning, num_tokens)..., Finish
    await engine.cancel(request_id); engine.snapshot(); await engine.unload(model); await engine.stop()
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agent.engine.core import Engine, EngineConfig
from agent.engine.fake import FakeEngine, FakeScript, FakeTiming
from agent.engine.memory import MemoryProbe, SimulatedMemory, SystemMemory
from agent.engine.models import ModelEntry
from agent.engine.stream import Completion, RequestStream
from agent.engine.types import (
    Delta,
    EngineError,
    EngineNotRunning,
    EngineSnapshot,
    Event,
    Finish,
    FinishReason,
    GenerationRequest,
    InvalidRequest,
    LoadFailed,
    LoadRefused,
    RequestRefused,
    SlotSnapshot,
    SlotState,
    SlotTransition,
    UnknownModel,
    Usage,
)

if TYPE_CHECKING:
    from agent.engine.mlx_engine import MLXEngine

__all__ = [
    "GenerationRequest", "Completion", "Delta", "Engine", "EngineConfig", "EngineError", "EngineNotRunning",
    "EngineSnapshot", "Event", "FakeEngine", "FakeScript", "FakeTiming", "Finish", "FinishReason", "InvalidRequest",
    "LoadFailed", "LoadRefused", "MLXEngine", "MemoryProbe", "ModelEntry", "RequestRefused", "RequestStream",
    "SimulatedMemory", "SlotSnapshot", "SlotState", "SlotTransition", "SystemMemory", "UnknownModel", "Usage",
]


def __getattr__(name: str) -> Any:
    if name == "MLXEngine":
        from agent.engine.mlx_engine import MLXEngine

        return MLXEngine
    raise AttributeError(f"module 'agent.engine' has no attribute {name!r}")
