"""The provider: what the agent tells its coordinator, and what it does when asked.

It is the link's handler. Each `inference_request` becomes one task: engine admission first, then
`inference_accepted` (only after admission) and the stream's chunks, then `inference_complete` or
`inference_error`; a refusal is `inference_rejected` with the verdict, reason and code, at once. Every
code is agent.errors' stable one, and `retryable` is what agent.errors.is_retryable says of it. `cancel`,
`load_model` and `unload_model` go to the engine; a dropped link cancels every stream it carried.

Every slot transition the engine makes sets `state_changed` (an engine listener, on the event loop); the
link's heartbeat pump waits on it and clears it before it builds the frame, so a change goes out at
once and a burst of transitions in one turn of the loop is one heartbeat. Every task it starts is in
`tasks` (kept, failures logged) and `close()` cancels and awaits what is left.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from agent import __version__
from agent.admission import Verdict, load_gate, memory_cap_bytes
from agent.catalog import ModelSpec
from agent.engine.types import (
    Delta,
    EngineAPI,
    EngineError,
    Finish,
    FinishReason,
    GenerationRequest,
    RequestRefused,
    SlotState,
    SlotTransition,
)
from agent.errors import DarkbloomError, is_retryable
from agent.kvcost import kv_bytes_per_token, kv_fixed_bytes_per_sequence
from agent.link.session import Event, LinkSession
from agent.tasks import TaskSet
from agent.wire.frames import (
    Cancel,
    Hardware,
    InferenceAccepted,
    InferenceRejected,
    InferenceRequest,
    KVLayer,
    KVLayout,
    LoadModel,
    MemoryStatus,
    ModelEntry,
    Register,
    Registered,
    SlotStatus,
    UnloadModel,
    VisionOffer,
)
from agent.wire.protocol import PROTOCOL_VERSION

log = structlog.get_logger("agent.daemon.handler")

FULL_RETRY_AFTER_S = 1.0  # a full slot frees KV as soon as any stream ends


@dataclass(frozen=True, slots=True)
class MemoryReading:
    total_bytes: int
    available_bytes: int


@dataclass
class LinkHandler:
    engine: EngineAPI  # MLXEngine or FakeEngine
    specs: dict[str, ModelSpec]
    hardware: Hardware
    read_memory: Callable[[], MemoryReading]
    operator_reserve_bytes: int = 0
    state_changed: asyncio.Event = field(default_factory=asyncio.Event)
    draining: bool = False
    tasks: dict[str, asyncio.Task] = field(default_factory=dict)  # request id -> its task (also in background)
    cancelled: set[str] = field(default_factory=set)  # cancelled while still being admitted
    provider_id: str | None = None
    num_served: int = 0
    background: TaskSet = field(default_factory=lambda: TaskSet("provider"))

    def __post_init__(self) -> None:
        self.engine.add_listener(self._slot_changed)

    def _slot_changed(self, change: SlotTransition) -> None:
        self.state_changed.set()

    async def close(self) -> None:
        """Cancel and await every task still running (requests, loads, unloads)."""
        await self.background.close()

    # -- what the coordinator is told ------------------------------------------------------------
    def register_frame(self) -> Register:
        return Register(protocol_version=PROTOCOL_VERSION, agent_version=__version__, hardware=self.hardware,
                        models=tuple(self._model_entry(spec) for spec in self.specs.values()))

    def _model_entry(self, spec: ModelSpec) -> ModelEntry:
        gate = load_gate(spec, total_memory_bytes=self.hardware.memory_bytes,
                         operator_reserve_bytes=self.operator_reserve_bytes)
        layout = KVLayout(architecture=spec.architecture, kv_dtype=spec.kv_dtype, sliding_window=spec.sliding_window,
                          layers=tuple(KVLayer(kind=layer.kind.value, num_kv_heads=layer.num_kv_heads,
                                               head_dim=layer.head_dim) for layer in spec.kv_layers))
        return ModelEntry(id=spec.id, weights_bytes=spec.weights_bytes, max_context=spec.max_context,
                          kv_bytes_per_token=kv_bytes_per_token(spec),
                          kv_fixed_bytes_per_sequence=kv_fixed_bytes_per_sequence(spec), fits=gate.fits,
                          fit_reason=gate.reason, activation_reserve_bytes=spec.activation_reserve_bytes,
                          kv_layout=layout, admission=self.engine.admission_limits(spec.id),
                          vision=self._vision_offer(spec))

    def _vision_offer(self, spec: ModelSpec) -> VisionOffer | None:
        if spec.vision is None:
            return None
        gate = load_gate(spec.with_vision(), total_memory_bytes=self.hardware.memory_bytes,
                         operator_reserve_bytes=self.operator_reserve_bytes)
        rule = spec.vision
        return VisionOffer(max_soft_tokens=rule.max_soft_tokens, patch_size=rule.patch_size,
                           pooling_kernel_size=rule.pooling_kernel_size, weights_bytes=spec.vision_weights_bytes,
                           reserve_bytes=spec.vision_reserve_bytes, fits=gate.fits, fit_reason=gate.reason)

    def heartbeat_frame(self, session: LinkSession):
        slots = [self._slot_status(slot) for slot in self.engine.snapshot().slots]
        reading = self.read_memory()
        cap = memory_cap_bytes(reading.total_bytes, self.operator_reserve_bytes)
        memory = MemoryStatus(total_bytes=reading.total_bytes, available_bytes=reading.available_bytes, cap_bytes=cap,
                              engine_bytes=self.engine.allocated_bytes())
        return session.heartbeat(slots, memory, draining=self.draining)

    @staticmethod
    def _slot_status(slot) -> SlotStatus:
        observed = {"prefill_tps": slot.prefill_tps or None, "decode_tps": slot.decode_tps or None}  # None: not yet
        failure = slot.reason or None if slot.state is SlotState.FAILED else None
        return SlotStatus(**slot.heartbeat() | observed, weights_bytes=slot.weights_bytes, failure_reason=failure)

    # -- what the coordinator asks --------------------------------------------------------------
    async def handle(self, event: Event, link) -> None:
        if isinstance(event, Registered):
            self.provider_id = event.provider_id
        elif isinstance(event, InferenceRequest):
            # Its own task: admission may take a moment (tokenizing) and must not hold up a cancel.
            task = self.background.spawn(self._serve(event, link), name=f"request-{event.request_id}")
            self.tasks[event.request_id] = task
            task.add_done_callback(lambda _, rid=event.request_id: self._forget(rid))
        elif isinstance(event, Cancel):
            found = await self.cancel(event.request_id)
            log.info("request.cancel", request_id=event.request_id, found=found)
        elif isinstance(event, LoadModel):
            self.background.spawn(self._residency(self.engine.load, event.model, "load"), name=f"load-{event.model}")
        elif isinstance(event, UnloadModel):
            self.background.spawn(self._residency(self.engine.unload, event.model, "unload"),
                                  name=f"unload-{event.model}")

    async def link_lost(self, request_ids: list[str]) -> None:
        """The coordinator has retried or failed these already: stop them and free their KV."""
        for request_id in request_ids:
            await self.cancel(request_id)

    async def cancel(self, request_id: str) -> bool:
        """Stop a request wherever it is; one still being admitted is stopped as soon as it is in."""
        if await self.engine.cancel(request_id):
            return True
        if request_id in self.tasks:
            self.cancelled.add(request_id)
            return True
        return False

    def _forget(self, request_id: str) -> None:
        self.tasks.pop(request_id, None)
        self.cancelled.discard(request_id)

    async def _residency(self, action, model: str, verb: str) -> None:
        try:
            await action(model)
        except EngineError as exc:
            log.warning(f"slot.{verb}_refused", model=model, code=exc.code, reason=str(exc))
            self.state_changed.set()  # a refused load leaves the slot cold (no transition): say so now

    async def _serve(self, frame: InferenceRequest, link) -> None:
        request_id = frame.request_id
        started = time.perf_counter()
        if self.draining:
            return self._reject(link, request_id, Verdict.FULL, "the agent is draining before it stops", "draining")
        try:
            request = GenerationRequest.from_openai(request_id, frame.model, frame.body)
            stream = await self.engine.submit(request)
        except RequestRefused as exc:
            return self._reject(link, request_id, exc.verdict, exc.reason, exc.code)
        except DarkbloomError as exc:
            return self._reject(link, request_id, Verdict.NEVER, f"{exc.code}: {exc}", exc.code)
        if request_id in self.cancelled:  # the cancel came while the engine was admitting it
            await self.engine.cancel(request_id)
        self.state_changed.set()
        link.send(InferenceAccepted(request_id=request_id, prompt_tokens=stream.prompt_tokens,
                                    expected_output_tokens=stream.decision.expected_output_tokens,
                                    reservation_bytes=stream.decision.reservation_bytes))
        first_token_at = None
        async for event in stream:
            if isinstance(event, Delta):
                first_token_at = first_token_at or time.perf_counter()
                link.send(link.session.chunk(request_id, event.content, event.reasoning, event.num_tokens,
                                             logprobs=event.logprobs, tool_calls=event.tool_calls))
            else:
                self._finish(link, frame, event, started, first_token_at)
        self.state_changed.set()

    def _finish(self, link, frame: InferenceRequest, finish: Finish, started: float, first_token_at: float | None):
        session: LinkSession = link.session
        ttft = None if first_token_at is None else round(first_token_at - started, 4)
        if finish.reason is FinishReason.ERROR:
            code = finish.error_code or EngineError.code
            link.send(session.error(frame.request_id, code, finish.error_message or "generation failed",
                                    retryable=is_retryable(code)))
        else:
            link.send(session.complete(frame.request_id, finish.usage.prompt_tokens, finish.usage.completion_tokens,
                                       finish.reason.value, ttft_s=ttft, cached_tokens=finish.usage.cached_tokens))
        self.num_served += 1
        log.info("request.done", request_id=frame.request_id, model=frame.model, finish_reason=finish.reason.value,
                 prompt_tokens=finish.usage.prompt_tokens, completion_tokens=finish.usage.completion_tokens,
                 cached_tokens=finish.usage.cached_tokens,
                 ttft_s=ttft, duration_s=round(time.perf_counter() - started, 4), error=finish.error_code)

    def _reject(self, link, request_id: str, verdict: Verdict, reason: str, code: str) -> None:
        link.session.forget(request_id)
        retry_after = FULL_RETRY_AFTER_S if verdict is Verdict.FULL else None
        link.send(InferenceRejected(request_id=request_id, verdict=verdict.value, reason=reason[:4000],
                                    retry_after_s=retry_after, code=code, retryable=is_retryable(code)))
        log.info("request.rejected", request_id=request_id, verdict=verdict.value, code=code, reason=reason)

    @property
    def num_in_flight(self) -> int:
        return len(self.tasks)
