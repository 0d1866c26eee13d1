"""SimAgent: one simulated Mac — a FakeEngine (one timing per model) + the real LinkHandler + the real Link — in the current event loop.

    agent = SimAgent(url, memory_gb=64, preload=("gpt-oss-20b",), time_scale=0.5)
    await agent.start()        # engine up, link connecting, preloads loading (as the daemon does)
    await agent.kill()         # as a crash: the link goes down at once, the engine with it
    await agent.stop()         # as a clean stop
Slot-state changes become immediate heartbeats as in the daemon: the LinkHandler listens to the engine.

Public names: SimAgent, fleet_catalog.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from agent.catalog import ModelSpec, load_catalog
from agent.daemon.handler import LinkHandler, MemoryReading
from agent.engine.core import EngineConfig
from agent.engine.fake import FakeEngine
from agent.engine.fake_script import FakeScript
from agent.engine.types import EngineError, GenerationRequest
from agent.link.client import Backoff, Link
from agent.testing.fleet.profiles import GEMMA, GPT_OSS, sim_script, timing_for
from agent.wire.frames import Hardware

GIB = 2**30


def fleet_catalog() -> dict[str, ModelSpec]:
    catalog = load_catalog()
    return {GPT_OSS: catalog[GPT_OSS], GEMMA: catalog[GEMMA]}


def chip_for(memory_gb: int) -> str:
    return "Apple M4" if memory_gb <= 32 else "Apple M4 Pro" if memory_gb <= 48 else "Apple M4 Max"


@dataclass
class SimAgent:
    url: str
    memory_gb: int = 64
    preload: Sequence[str] = (GPT_OSS,)
    time_scale: float = 1.0
    token: str = "fleet"
    scripts: Callable[[GenerationRequest], FakeScript] = sim_script
    specs: dict[str, ModelSpec] = field(default_factory=fleet_catalog)
    backoff_base_s: float = 0.5
    decode_factor: float = 1.0  # < 1: a slow Mac (a thermally throttled or overloaded one)
    engine: FakeEngine = field(init=False)
    handler: LinkHandler = field(init=False)
    link: Link = field(init=False)
    _tasks: list[asyncio.Task] = field(default_factory=list)

    def __post_init__(self) -> None:
        memory = self.memory_gb * GIB
        timings = {model: timing_for(model, self.memory_gb) for model in self.specs}
        timings = {m: replace(t, decode_tps=t.decode_tps * self.decode_factor) for m, t in timings.items()}
        self.engine = FakeEngine(self.specs, memory_bytes=memory, timings=timings, scripts=self.scripts,
                                 time_scale=self.time_scale, config=EngineConfig())
        hardware = Hardware(chip=chip_for(self.memory_gb), memory_bytes=memory, gpu_cores=10)
        self.handler = LinkHandler(self.engine, dict(self.specs), hardware,
                                 lambda: MemoryReading(memory, memory * 3 // 4))
        self.link = Link(self.url, self.token, self.handler,
                         backoff=Backoff(base_s=self.backoff_base_s, cap_s=max(2.0, self.backoff_base_s * 8)))

    @property
    def provider_id(self) -> str | None:
        return self.handler.provider_id

    async def start(self) -> SimAgent:
        await self.engine.start()
        self._tasks = [asyncio.create_task(self.link.run(), name="sim-link"),
                       asyncio.create_task(self._preload(), name="sim-preload")]
        return self

    async def _preload(self) -> None:
        for model in self.preload:
            with contextlib.suppress(EngineError):  # the gate said no: the agent stays up, the slot cold
                await self.engine.load(model)
            self.handler.state_changed.set()

    async def kill(self) -> None:
        """A crash: link and engine end without a drain."""
        self.link.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        await self.engine.stop()
        await self.handler.close()

    async def stop(self) -> None:
        await self.kill()
