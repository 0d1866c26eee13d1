"""FakeEngine: the engine with a simulated backend, for the daemon's, the coordinator's and the fleet's tests.

Same class, same methods, same slots, memory gate, ledgers and admission as MLXEngine; only the
backend is simulated, on asyncio alone (no MLX, no threads). Each model's batch is simulated with the
real batching rules on integers (`BatchKV`) and the real schedule (agent/engine/schedule.py), so its
KV bytes are exactly what mlx-lm would allocate for the same schedule, and its time follows a
`FakeTiming`, one per model (`timings`) or the default (`timing`), as a Mac runs each model at its own rate:

    prefill      prompt tokens at `prefill_tps` (per slot, in 512-token chunks between decode steps)
    decode step  (1 + batch_slowdown · (n − 1)) / decode_tps seconds for n streams: one token each
    load/unload  load_seconds / unload_seconds

Prefix cache, simulated: the prompt's token ids stand for its messages (agent/engine/fake_prompt.py), so
the engine's own prefix index matches a turn against the previous turn's prompt; a row that reuses a
prefix prefills only the rest, its usage counts `cached_tokens`, and at the end of each prompt the batch
captures an entry of `kvcost.prefix_entry_bytes` (the bytes the real capture holds), evictable and bounded
by the same EngineConfig limits.

Output is deterministic (words chosen by a hash of the messages), or scripted per request by a
`FakeScript` (reasoning and content text, output length, a failure after k tokens, a first-token
delay). Loads can be scripted to fail. All delays are simulated seconds × `time_scale` of real time
(0.001 runs a minute in 60 ms); `clock` and `sleep` can be replaced for virtual time. `freeze()`
holds every simulated step until `thaw()`: a Mac that stopped answering.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping

from agent.engine.backend import Deliver, Job, Loaded, Prompt
from agent.engine.core import Engine, EngineConfig
from agent.engine.fake_batch import FakeBatch
from agent.engine.fake_prompt import fake_prompt
from agent.engine.fake_script import FakeScript, FakeTiming, script_seed
from agent.engine.memory import SimulatedMemory
from agent.engine.schedule import ScheduleLimits
from agent.images import ImageLimits, decode_image
from agent.engine.types import EngineNotRunning, GenerationRequest

__all__ = ["FakeEngine", "FakeScript", "FakeTiming", "SimulatedTime"]


def default_script(request: GenerationRequest) -> FakeScript:
    return FakeScript()


class SimulatedTime:
    """Simulated seconds from real time: one simulated second lasts `scale` real seconds."""

    def __init__(self, scale: float) -> None:
        if scale <= 0:
            raise ValueError("time_scale must be > 0 (pass clock and sleep for virtual time)")
        self.scale, self._origin = scale, time.monotonic()

    def clock(self) -> float:
        return (time.monotonic() - self._origin) / self.scale

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds) * self.scale)


class FakeBackend:
    def __init__(self, timing: FakeTiming, scripts: Callable[[GenerationRequest], FakeScript],
                 sleep: Callable[[float], Awaitable[None]], fail_loads: Mapping[str, str], *,
                 timings: Mapping[str, FakeTiming] | None = None, schedule: ScheduleLimits = ScheduleLimits()) -> None:
        self.timing, self.scripts, self.sleep, self.fail_loads = timing, scripts, sleep, dict(fail_loads)
        self.timings, self.schedule = dict(timings or {}), schedule
        self._batches: dict[str, FakeBatch] = {}
        self._deliver: Deliver | None = None
        self._running = False

    @property
    def is_running(self) -> bool:
        return self._running

    @property
    def supports_vision(self) -> bool:
        return True  # simulated: a spec with vision loads with it when the gate affords it

    async def start(self, deliver: Deliver) -> None:
        self._deliver, self._running = deliver, True

    async def stop(self) -> None:
        self._running = False
        for batch in self._batches.values():
            await batch.close("engine_stopped", "the engine stopped")
        self._batches.clear()

    def timing_for(self, model: str) -> FakeTiming:
        return self.timings.get(model, self.timing)

    async def load(self, model: str, spec, source, *, with_vision: bool = False) -> Loaded:
        timing = self.timing_for(model)
        await self.sleep(timing.load_seconds)
        if model in self.fail_loads:
            raise RuntimeError(self.fail_loads[model])
        self._batches[model] = FakeBatch(model, spec, timing, self.sleep, self._deliver, self.schedule)
        resident = spec.with_vision() if with_vision else spec
        return Loaded(resident.weights_bytes, has_vision=with_vision)

    async def unload(self, model: str) -> None:
        batch = self._batches.pop(model, None)
        if batch is not None:
            await batch.close("model_unloaded", f"{model} was unloaded")
        await self.sleep(self.timing_for(model).unload_seconds)

    async def prepare(self, model: str, request: GenerationRequest) -> Prompt:
        if not self._running:
            raise EngineNotRunning("the engine is not running")
        batch = self._batches.get(model)
        num_tokens, token_ids, chain = fake_prompt(request, batch.spec.max_context if batch is not None else 0)
        if request.images and batch is not None and batch.spec.vision is not None:  # as the real processor counts
            sizes = [decode_image(image.data, ImageLimits(), image.label) for image in request.images]
            num_tokens += sum(batch.spec.vision.prompt_tokens(size.height, size.width) for size in sizes)
        return Prompt(num_tokens, (self.scripts(request), script_seed(request), chain), token_ids)

    def insert(self, model: str, job: Job) -> None:
        self._batches[model].insert(job)

    def cancel(self, model: str, request_id: str) -> None:
        batch = self._batches.get(model)
        if batch is not None:
            batch.cancel(request_id)

    def drop_prefixes(self, model: str, entry_ids: list[int]) -> None:
        """Nothing to free: a simulated prefix is only its entry in the slot's index, which already let it go."""


class FakeEngine(Engine):
    def __init__(
        self,
        models: Mapping[str, object],
        *,
        memory_bytes: int,
        timing: FakeTiming = FakeTiming(),
        timings: Mapping[str, FakeTiming] | None = None,
        scripts: Callable[[GenerationRequest], FakeScript] = default_script,
        fail_loads: Mapping[str, str] | None = None,
        config: EngineConfig = EngineConfig(),
        time_scale: float = 1.0,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
    ) -> None:
        simulated = SimulatedTime(time_scale)
        clock, base_sleep = clock or simulated.clock, sleep or simulated.sleep
        self.thawed = asyncio.Event()  # cleared: every simulated step waits
        self.thawed.set()

        async def sleep_unless_frozen(seconds: float) -> None:
            await self.thawed.wait()
            await base_sleep(seconds)

        backend = FakeBackend(timing, scripts, sleep_unless_frozen, fail_loads or {}, timings=timings,
                              schedule=config.schedule)
        super().__init__(backend, models, memory=SimulatedMemory(memory_bytes), config=config, clock=clock,
                         sleep=sleep_unless_frozen)

    def freeze(self) -> None:
        self.thawed.clear()

    def thaw(self) -> None:
        self.thawed.set()


