"""SimEngine: the fake engine with one timing per model.

FakeEngine's backend has one FakeTiming for every model; a Mac decodes gpt-oss and gemma at different
rates and loads them in different times, so this backend keeps one per model. Everything else (slots,
gate, admission, KV ledgers, batching rules) is the real engine core's.

Public names: SimEngine.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

from agent.engine.backend import Loaded
from agent.engine.core import Engine, EngineConfig
from agent.engine.fake import FakeBackend, SimulatedTime
from agent.engine.fake_batch import FakeBatch
from agent.engine.fake_script import FakeScript, FakeTiming
from agent.engine.memory import SimulatedMemory
from agent.engine.types import ChatRequest


class SimBackend(FakeBackend):
    def __init__(self, timings: Mapping[str, FakeTiming], scripts: Callable[[ChatRequest], FakeScript],
                 sleep, fail_loads: Mapping[str, str]) -> None:
        super().__init__(FakeTiming(), scripts, sleep, fail_loads)
        self.timings = dict(timings)

    async def load(self, model: str, spec, source) -> Loaded:
        timing = self.timings.get(model, self.timing)
        await self.sleep(timing.load_seconds)
        if model in self.fail_loads:
            raise RuntimeError(self.fail_loads[model])
        self._batches[model] = FakeBatch(model, spec, timing, self.sleep, self._deliver)
        return Loaded(spec.weights_bytes)

    async def unload(self, model: str) -> None:
        batch = self._batches.pop(model, None)
        if batch is not None:
            await batch.close("model_unloaded", f"{model} was unloaded")
        await self.sleep(self.timings.get(model, self.timing).unload_seconds)


class SimEngine(Engine):
    def __init__(self, models: Mapping[str, object], *, memory_bytes: int, timings: Mapping[str, FakeTiming],
                 scripts: Callable[[ChatRequest], FakeScript], time_scale: float = 1.0,
                 config: EngineConfig = EngineConfig(), fail_loads: Mapping[str, str] | None = None) -> None:
        simulated = SimulatedTime(time_scale)
        self.thawed = asyncio.Event()  # cleared: every simulated step waits (a Mac that froze)
        self.thawed.set()

        async def sleep(seconds: float) -> None:
            await self.thawed.wait()
            await simulated.sleep(seconds)

        backend = SimBackend(timings, scripts, sleep, fail_loads or {})
        super().__init__(backend, models, memory=SimulatedMemory(memory_bytes), config=config,
                         clock=simulated.clock, sleep=sleep)

    def freeze(self) -> None:
        self.thawed.clear()

    def thaw(self) -> None:
        self.thawed.set()
