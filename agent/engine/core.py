"""The engine: model slots under the memory gate, admission against each slot's live KV tracker, and
one stream per request. The same class runs MLX (MLXEngine) and the simulation (FakeEngine); only the
backend differs.

    load      load_gate(weights exact + activation reserve + one full-context sequence) beside what
              is loaded → cold → loading → idle, or the refusal's reason (still cold), or failed
    submit    encode the prompt off the loop → admit_request against the KV tracker → a stream, or
              RequestRefused at once with the verdict and reason
    cancel    the backend takes the request out at its next step; the stream ends `cancelled`
    reports   after every step: events to their streams, used bytes and batch shape to the KV tracker
    listen    add_listener(f): f(SlotTransition) after every slot state change, on the event loop (MLX
              thread reports arrive through call_soon_threadsafe, so every transition happens there)

With several models loaded, the KV room left beside all their weights and reserves is split in
proportion to their minimum budgets (one full-context sequence each), recomputed on every load and
unload; a slot whose rows already hold more than its new share admits nothing until they finish.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

import structlog

from agent.admission import AdmissionDecision, LoadDecision, Verdict, resolve_max_tokens
from agent.engine import room
from agent.engine.backend import Backend, Job, StepReport
from agent.engine.kv_tracker import KVTracker
from agent.engine.memory import MemoryProbe, SystemMemory
from agent.engine.models import model_entries
from agent.engine.ratio import OutputRatio
from agent.engine.schedule import ScheduleLimits
from agent.engine.slot import Slot, SlotListeners
from agent.engine.stream import RequestStream
from agent.engine.types import (
    Delta, EngineNotRunning, EngineSnapshot, Finish, FinishReason, GenerationRequest, InvalidRequest, LoadFailed,
    LoadRefused, RequestRefused, SlotListener, SlotSnapshot, SlotState, UnknownModel, Usage,
)
from agent.images import ImageLimits
from agent.tasks import TaskSet
from agent.wire.frames import AdmissionLimits

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class EngineConfig:
    operator_reserve_bytes: int = 0
    min_kv_sequences: int = 1  # full-context sequences a model must be able to hold to load
    max_kv_budget_bytes: int | None = None  # per slot, if the operator wants less than the gate allows
    kv_safety_margin: float = 0.05  # of the budget: transient copies when rows join, leave and grow
    max_num_seqs: int = 32  # admitted requests per slot
    default_max_tokens: int = 4096  # for a request without max_tokens (within the context)
    schedule: ScheduleLimits = ScheduleLimits()  # the backend's prefill steps; admission replays the same chunks
    idle_unload_after_s: float | None = None  # None: keep warm
    idle_check_interval_s: float = 5.0
    load_vision: bool = True  # load a model's vision tower when it has one and the gate affords it
    image_limits: ImageLimits = ImageLimits()  # the agent's own bounded decoder (bytes, pixels per image)
    # Per slot: KV of recent prompts kept for later requests that extend them (evicted before any refusal).
    max_prefix_cache_bytes: int = 2 << 30
    max_prefix_cache_entries: int = 256  # per slot; every lookup compares the prompt with each entry
    max_reported_prefix_chains: int = 64  # per slot: the chain keys its snapshot reports

    @property
    def prefill_chunk_tokens(self) -> int:
        return self.schedule.chunk_tokens


class Engine:
    def __init__(
        self,
        backend: Backend,
        models: Mapping[str, object],
        *,
        memory: MemoryProbe | None = None,
        config: EngineConfig = EngineConfig(),
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.backend, self.config, self.memory = backend, config, memory or SystemMemory()
        self._clock, self._sleep = clock, sleep
        self._listeners = SlotListeners()
        self._slots = {entry.spec.id: Slot(entry.spec.id, entry.spec, entry.source, on_transition=self._listeners)
                       for entry in model_entries(models)}
        self._requests: dict[str, Slot] = {}
        self._residency = asyncio.Lock()  # one load or unload at a time: each sees the others' memory
        self._running = False
        self._tasks = TaskSet("engine")

    async def __aenter__(self) -> Engine:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def models(self) -> list[str]:
        return list(self._slots)

    async def start(self) -> None:
        if self._running:
            return
        await self.backend.start(self._deliver)
        self._running = True
        if self.config.idle_unload_after_s is not None:
            self._tasks.spawn(self._unload_idle_slots(), name="engine-idle-unload")
        log.info("engine.start", models=self.models)

    async def stop(self) -> None:
        if not self._running:
            return
        self._running = False
        await self._tasks.close()
        await self.backend.stop()  # its last reports end every request it held
        for slot in self._slots.values():
            for request_id in list(slot.streams):
                self._finish(slot, request_id, Finish(FinishReason.CANCELLED, Usage(0, 0), "engine_stopped",
                                                      "the engine stopped"))
            if slot.state in (SlotState.IDLE, SlotState.RUNNING):
                slot.transition(SlotState.UNLOADING, "engine stopped")
            if slot.state in (SlotState.UNLOADING, SlotState.LOADING):
                slot.transition(SlotState.COLD, "engine stopped")
            slot.kv_tracker, slot.weights_bytes, slot.has_vision = None, 0, False
        log.info("engine.stop")

    def snapshot(self) -> EngineSnapshot:
        return EngineSnapshot(tuple(slot.snapshot() for slot in self._slots.values()))

    def admission_limits(self, model: str) -> AdmissionLimits:
        """What admission reads besides the slot's KV tracker: sent in `register`, so the coordinator runs the
        same check with the same numbers (the current ratio travels in every heartbeat)."""
        config = self.config
        return AdmissionLimits(kv_safety_margin=config.kv_safety_margin, max_num_seqs=config.max_num_seqs,
                               prefill_chunk_tokens=config.prefill_chunk_tokens,
                               default_max_tokens=config.default_max_tokens,
                               output_clip_tokens=self._slot(model).ratio.clip)

    def check(self, model: str, prompt_tokens: int, max_tokens: int | None = None) -> AdmissionDecision:
        """What admission says now about a request of this many prompt tokens; commits nothing."""
        slot = self._slot(model)
        if slot.kv_tracker is None:
            raise EngineNotRunning(f"{model} is {slot.state}; admission runs once it is loaded")
        limit = resolve_max_tokens(max_tokens, prompt_tokens, slot.spec.max_context, self.config.default_max_tokens)
        return slot.kv_tracker.check("check", prompt_tokens, limit, as_evicted=True)
    def add_listener(self, listener: SlotListener) -> Callable[[], None]:
        """`listener` is called after every slot transition, in order; the returned function removes it."""
        return self._listeners.add(listener)

    def allocated_bytes(self) -> int | None:
        """What the engine has allocated now by its memory probe (MLX's buffers); heartbeats carry it."""
        return self.memory.engine_bytes()

    def output_ratio(self, model: str) -> OutputRatio:
        """The slot's expected-output ratio and its history of changes (it outlives loads)."""
        return self._slot(model).ratio

    async def load(self, model: str) -> SlotSnapshot:
        slot = self._slot(model)
        async with self._residency:
            self._require_running()
            if slot.kv_tracker is not None:
                return slot.snapshot()
            decision, with_vision = self._gate_with_modalities(slot)
            if not decision.fits:
                slot.reason = decision.reason
                log.warning("slot.load_refused", model=model, reason=decision.reason)
                raise LoadRefused(decision)
            slot.transition(SlotState.LOADING)
            try:
                loaded = await self.backend.load(model, slot.spec, slot.source, with_vision=with_vision)
            except Exception as exc:
                if slot.state is SlotState.LOADING:  # else stop() got there first
                    slot.transition(SlotState.FAILED, f"load failed: {type(exc).__name__}: {exc}")
                raise LoadFailed(f"{model} failed to load: {exc}") from exc
            slot.weights_bytes, slot.has_vision = loaded.weights_bytes, loaded.has_vision
            slot.kv_tracker = KVTracker(slot.spec, 0, ratio=slot.ratio, max_num_seqs=self.config.max_num_seqs,
                                        schedule=self.config.schedule,
                                        max_prefix_cache_bytes=self.config.max_prefix_cache_bytes,
                                        max_prefix_cache_entries=self.config.max_prefix_cache_entries,
                                        max_reported_prefix_chains=self.config.max_reported_prefix_chains)
            self._rebalance()
            slot.transition(SlotState.IDLE)
            slot.idle_since = self._clock()
            return slot.snapshot()

    async def unload(self, model: str) -> SlotSnapshot:
        """Running requests are cancelled: the coordinator unloads idle slots, the operator means it."""
        slot = self._slot(model)
        async with self._residency:
            if slot.state is SlotState.FAILED:
                slot.transition(SlotState.COLD, slot.reason)
            if slot.kv_tracker is None:
                return slot.snapshot()
            slot.transition(SlotState.UNLOADING)
            try:
                await self.backend.unload(model)
            except Exception as exc:
                slot.transition(SlotState.FAILED, f"unload failed: {type(exc).__name__}: {exc}")
            else:
                slot.transition(SlotState.COLD)
            for request_id in list(slot.streams):
                self._finish(slot, request_id, Finish(FinishReason.CANCELLED, Usage(0, 0), "model_unloaded",
                                                      f"{model} was unloaded"))
            slot.kv_tracker, slot.weights_bytes, slot.has_vision = None, 0, False
            self._rebalance()
            return slot.snapshot()

    async def submit(self, request: GenerationRequest) -> RequestStream:
        slot = self._slots.get(request.model)
        if slot is None:
            raise UnknownModel(f"model {request.model!r} is not served here (known: {', '.join(self._slots) or 'none'})")
        self._require_serving(slot)
        if request.request_id in self._requests:
            raise InvalidRequest(f"request id {request.request_id!r} is already running")
        if request.images and not slot.has_vision:  # not this node: another may have it loaded with vision
            reason = slot.vision_reason or ("has no vision tower" if not slot.spec.has_vision else "is loaded text-only")
            raise RequestRefused(Verdict.NEVER, f"{request.images[0].label}: {slot.model} {reason} here; it cannot "
                                 "take images", code="no_vision")
        try:
            prompt = await self.backend.prepare(request.model, request)
        except EngineNotRunning:
            self._require_serving(slot)  # the model was unloaded meanwhile: refused as not ready
            raise
        self._require_serving(slot)  # encoding took a moment: the slot may have started unloading
        if request.request_id in self._requests:
            raise InvalidRequest(f"request id {request.request_id!r} is already running")
        max_tokens = resolve_max_tokens(request.max_tokens, prompt.num_tokens, slot.spec.max_context,
                                        self.config.default_max_tokens)
        tracker = slot.kv_tracker
        reuse = tracker.prefixes.match(prompt.token_ids) if prompt.token_ids and tracker.prefixes.max_bytes else None
        decision = tracker.admit(request.request_id, prompt.num_tokens, max_tokens, reuse)
        self._drop_evicted(slot)
        if not decision.admitted:
            log.info("admit.reject", model=slot.model, request_id=request.request_id, verdict=str(decision.verdict),
                     reason=decision.reason)
            raise RequestRefused(decision.verdict, decision.reason, decision=decision)
        stream = RequestStream(request.request_id, prompt.num_tokens, decision, self.cancel)
        slot.streams[request.request_id] = stream
        self._requests[request.request_id] = slot
        if slot.state is SlotState.IDLE:
            slot.transition(SlotState.RUNNING)
        keep_prefix = bool(prompt.token_ids) and tracker.keeps_prefix(prompt.num_tokens,
                                                                       reuse.num_tokens if reuse else 0)
        self.backend.insert(slot.model, Job(request, prompt, max_tokens, reuse, keep_prefix))
        log.debug("admit.accept", model=slot.model, request_id=request.request_id, prompt_tokens=prompt.num_tokens,
                  reservation_bytes=decision.reservation_bytes)
        return stream

    async def cancel(self, request_id: str) -> bool:
        slot = self._requests.get(request_id)
        if slot is None:
            return False
        self.backend.cancel(slot.model, request_id)
        return True

    def _deliver(self, report: StepReport) -> None:
        slot = self._slots.get(report.model)
        if slot is None:
            return
        for request_id, event in report.events:
            stream = slot.streams.get(request_id)
            if stream is None:
                continue
            if isinstance(event, Delta):
                stream.push(event)
                if slot.kv_tracker is not None:
                    slot.kv_tracker.progress(request_id, event.num_tokens)
            else:
                self._finish(slot, request_id, event)
        if slot.kv_tracker is not None and report.batch is not None:
            slot.kv_tracker.add_prefixes(report.captured)
            slot.kv_tracker.reconcile(report.used_bytes, report.batch)
            self._drop_evicted(slot)
        slot.prefill_rate.add(report.prefill_tokens, report.prefill_seconds)
        slot.decode_rate.add(report.decode_tokens, report.decode_seconds)

    def _finish(self, slot: Slot, request_id: str, finish: Finish) -> None:
        stream = slot.streams.pop(request_id)
        self._requests.pop(request_id, None)
        stream.push(finish)
        if slot.kv_tracker is not None:
            observed = finish.reason in (FinishReason.STOP, FinishReason.LENGTH, FinishReason.TOOL_CALLS)
            slot.kv_tracker.release(request_id, observed=observed, completion_tokens=finish.usage.completion_tokens)
        if finish.reason is FinishReason.ERROR:
            log.warning("request.failed", model=slot.model, request_id=request_id, code=finish.error_code,
                        message=finish.error_message)
        if not slot.streams and slot.state is SlotState.RUNNING:
            slot.transition(SlotState.IDLE)
            slot.idle_since = self._clock()

    def _drop_evicted(self, slot: Slot) -> None:
        """Prefixes the slot's index let go: the backend frees their tensors (in order with later inserts)."""
        evicted = slot.kv_tracker.take_evicted() if slot.kv_tracker is not None else []
        if evicted:
            self.backend.drop_prefixes(slot.model, evicted)

    def _slot(self, model: str) -> Slot:
        slot = self._slots.get(model)
        if slot is None:
            raise UnknownModel(f"model {model!r} is not served here (known: {', '.join(self._slots) or 'none'})")
        return slot

    def _require_running(self) -> None:
        if not self._running or not self.backend.is_running:
            raise EngineNotRunning("the engine is not running")

    def _require_serving(self, slot: Slot) -> None:
        self._require_running()
        if not slot.is_serving:
            why = f": {slot.reason}" if slot.reason else ""
            raise RequestRefused(Verdict.FULL, f"{slot.model} is {slot.state}{why}; it serves only once loaded",
                                 code="model_not_ready")

    def _gate(self, slot: Slot, *, with_vision: bool = False) -> LoadDecision:
        loaded = [s for s in self._slots.values() if s is not slot and s.kv_tracker is not None]
        return room.gate(slot, loaded, self.memory, operator_reserve_bytes=self.config.operator_reserve_bytes,
                         min_kv_sequences=self.config.min_kv_sequences, with_vision=with_vision)

    def _gate_with_modalities(self, slot: Slot) -> tuple[LoadDecision, bool]:
        """With vision when the model has it and the gate affords it; else text-only, saying why."""
        slot.vision_reason = ""
        if not (slot.spec.has_vision and self.config.load_vision):
            return self._gate(slot), False
        if not self.backend.supports_vision:
            slot.vision_reason = "loaded text-only: mlx-vlm is not installed (scripts/setup.sh installs it)"
            return self._gate(slot), False
        with_vision = self._gate(slot, with_vision=True)
        if with_vision.fits:
            return with_vision, True
        text_only = self._gate(slot)
        if text_only.fits:
            slot.vision_reason = f"loaded text-only: with its vision tower it {with_vision.reason}"
            log.warning("slot.text_only", model=slot.model, reason=slot.vision_reason)
        return text_only, False

    def _rebalance(self) -> None:
        config = self.config
        room.split_kv_room([s for s in self._slots.values() if s.kv_tracker is not None], self.memory,
                           operator_reserve_bytes=config.operator_reserve_bytes,
                           min_kv_sequences=config.min_kv_sequences, max_kv_budget_bytes=config.max_kv_budget_bytes,
                           kv_safety_margin=config.kv_safety_margin)

    async def _unload_idle_slots(self) -> None:
        limit = self.config.idle_unload_after_s
        while True:
            await self._sleep(self.config.idle_check_interval_s)
            now = self._clock()
            for slot in list(self._slots.values()):
                if slot.state is SlotState.IDLE and now - slot.idle_since >= limit:
                    log.info("slot.idle_unload", model=slot.model, idle_s=round(now - slot.idle_since, 1))
                    await self.unload(slot.model)
