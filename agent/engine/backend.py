"""What runs the models, as the engine sees it: the MLX thread, or the fake engine's simulation.

The engine (agent/engine/core.py) keeps the slots, the memory gate, the ledgers and the streams; a
backend loads models, turns requests into prompts, and runs admitted jobs, reporting after every step
what it generated and what its caches hold. Reports are delivered on the event loop, in order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from agent.catalog import ModelSpec
from agent.engine.batch_kv import BatchKV
from agent.engine.prefix_index import PrefixEntry, PrefixMatch
from agent.engine.types import Event, GenerationRequest


@dataclass(frozen=True, slots=True)
class Prompt:
    num_tokens: int
    payload: Any = None  # the backend's own form (token ids and where the channel splitter starts)
    token_ids: tuple[int, ...] = ()  # for the prefix cache: empty when the prompt may not be cached (images)


@dataclass(frozen=True, slots=True)
class Job:
    """An admitted request, for the backend to run."""

    request: GenerationRequest
    prompt: Prompt
    max_tokens: int
    reuse: PrefixMatch | None = None  # the cached prefix it starts from (pinned until it ends)
    keep_prefix: bool = False  # capture its KV at the end of its prompt for later requests


@dataclass(frozen=True, slots=True)
class Loaded:
    weights_bytes: int  # what the loaded weights really occupy (the vision tower's included)
    has_vision: bool = False  # the vision tower is loaded: the slot takes images


@dataclass(slots=True)
class StepReport:
    model: str
    events: list[tuple[str, Event]]  # (request_id, event), in order
    used_bytes: int  # every cache of the model, as allocated now
    batch: BatchKV | None  # the generation batch's shape, for the KV tracker's predictions (None: no model)
    prefill_tokens: int = 0
    prefill_seconds: float = 0.0
    decode_tokens: int = 0
    decode_seconds: float = 0.0
    captured: list[PrefixEntry] = field(default_factory=list)  # prefixes kept this step, for the slot's index


Deliver = Callable[[StepReport], None]


class Backend(Protocol):
    @property
    def is_running(self) -> bool: ...

    @property
    def supports_vision(self) -> bool: ...  # can load a model's vision tower (mlx-vlm is installed)

    async def start(self, deliver: Deliver) -> None: ...
    async def stop(self) -> None: ...
    async def load(self, model: str, spec: ModelSpec, source: Path | None, *, with_vision: bool = False) -> Loaded: ...
    async def unload(self, model: str) -> None: ...
    async def prepare(self, model: str, request: GenerationRequest) -> Prompt: ...
    def insert(self, model: str, job: Job) -> None: ...
    def cancel(self, model: str, request_id: str) -> None: ...
    def drop_prefixes(self, model: str, entry_ids: list[int]) -> None: ...  # evicted by the slot's index
