"""A scripted provider on a real loopback websocket, and a coordinator served in the test's event loop.

ScriptedProvider is a small websockets CLIENT that behaves like an agent as far as the coordinator can
tell: it registers with the hardware and models it is given, heartbeats its slot states, answers each
inference_request as a `Reply` says (reject, accept then stream chunks, fail, drop the link, stay
silent), honours cancel, and loads models when asked. With `gate=True` it runs agent.admission's
admit_request on its own KV tracker, as the real agent does, instead of accepting whatever comes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from agent.admission import SlotKV, admit_request, memory_cap_bytes, safety_margin_bytes
from agent.catalog import ModelSpec, load_catalog
from agent.coordinator.billing.accounts import Accounts
from agent.coordinator.http.app import RunningServer, build_app, running
from agent.coordinator.settings import CoordinatorSettings
from agent.testing.model_entry import GIB, LIMITS, entry_for
from agent.wire.frames import (
    ChunkDelta,
    ErrorFrame,
    Hardware,
    Heartbeat,
    InferenceAccepted,
    InferenceComplete,
    InferenceError,
    InferenceRejected,
    InferenceRequest,
    InferenceResponseChunk,
    MemoryStatus,
    ModelEntry,
    Register,
    SlotState,
    SlotStatus,
    UsageReport,
)
from agent.wire.protocol import PROTOCOL_VERSION, Direction, encode, parse_message

CATALOG = load_catalog()
GPT = CATALOG["gpt-oss-20b"]
GEMMA = CATALOG["gemma-4-26b"]


@dataclass
class Reply:
    """How the provider answers one inference_request."""

    reject: str | None = None  # "full" | "never"
    reason: str = "scripted refusal"
    retry_after_s: float | None = None
    # content, (content, reasoning), or any delta
    chunks: Sequence[str | tuple[str, str] | ChunkDelta] = ("Hello", ", world")
    chunk_delay_s: float = 0.0
    accept_delay_s: float = 0.0
    first_token_delay_s: float = 0.0
    error_after: int | None = None  # inference_error after this many chunks
    retryable: bool = True
    code: str | None = None  # of the rejection or the error (None: no code on a rejection, engine_failed on an error)
    drop_link_after: int | None = None  # close the websocket after this many chunks
    hang_after: int | None = None  # say nothing more after this many chunks (a sinkhole: 0)
    silent: bool = False  # never answer
    error_frame: str | None = None  # answer with an `error` frame of this code (the request was unusable)
    finish_reason: str = "stop"
    prompt_tokens: int = 11
    num_tokens: int | None = None  # on each chunk (None: an older agent's chunk, without it)
    claimed_usage: tuple[int, int] | None = None  # the (prompt, completion) inference_complete claims
    chunk_logprobs: Sequence[Any] | None = None  # per chunk, the raw JSON of its `logprobs` (unchecked: may be hostile)


def _delta(chunk: str | tuple[str, str] | ChunkDelta) -> ChunkDelta:
    if isinstance(chunk, ChunkDelta):
        return chunk
    content, reasoning = (chunk, "") if isinstance(chunk, str) else chunk
    return ChunkDelta(content=content, reasoning=reasoning)


@dataclass
class Slot:
    state: SlotState = SlotState.IDLE
    budget_bytes: int = 8 * GIB
    reserved_bytes: int = 0
    used_bytes: int = 0
    num_running: int = 0
    num_waiting: int = 0
    ratio: float | None = 0.7
    modalities: tuple[str, ...] = ("text",)  # ("text", "image"): loaded with vision
    prefix_chains: tuple[str, ...] = ()  # the chain keys its heartbeat reports holding (agent/wire/prefix_chain.py)
    cached_bytes: int = 0
    prefix_hit_rate: float = 0.0
    prefix_hit_tokens: int = 0
    prefix_evictions: int = 0


@dataclass
class ScriptedProvider:
    url: str
    models: Sequence[ModelEntry] = ()
    slots: dict[str, Slot] = field(default_factory=dict)
    reply: Reply | Callable[[InferenceRequest], Reply] = field(default_factory=Reply)
    token: str = "any-token"
    memory_bytes: int = 64 * GIB
    gate: bool = False  # run admit_request on this provider's own ledger
    heartbeat_on_end: bool = True  # with the gate: a heartbeat after each request ends (a state change)
    specs: dict[str, ModelSpec] = field(default_factory=lambda: dict(CATALOG))
    load_delay_s: float = 0.0
    loads_succeed: bool = True
    heartbeats_on: bool = True
    received: list[InferenceRequest] = field(default_factory=list)
    cancels: list[str] = field(default_factory=list)
    loads: list[str] = field(default_factory=list)
    errors: list[dict] = field(default_factory=list)
    provider_id: str = ""
    ws: ClientConnection | None = None
    _seq: int = 0
    _tasks: set = field(default_factory=set)
    _cancelled: set = field(default_factory=set)
    _reservations: dict = field(default_factory=dict)
    _interval: float = 1.0

    async def start(self) -> ScriptedProvider:
        self.ws = await connect(self.url, additional_headers={"Authorization": f"Bearer {self.token}"})
        register = Register(protocol_version=PROTOCOL_VERSION, agent_version="scripted",
                            hardware=Hardware(chip="Test M4", memory_bytes=self.memory_bytes, gpu_cores=10),
                            models=tuple(self.models))
        await self.ws.send(encode(register))
        registered = json.loads(await self.ws.recv())
        assert registered["type"] == "registered", registered
        self.provider_id, self._interval = registered["provider_id"], registered["heartbeat_interval_s"]
        await self.heartbeat()
        self._spawn(self._receive)
        self._spawn(self._heartbeats)
        return self

    async def stop(self) -> None:
        others = [task for task in self._tasks if task is not asyncio.current_task()]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)
        if self.ws is not None:
            await self.ws.close()

    async def drop(self) -> None:
        """Lose the link abruptly (as a crash or a network cut would)."""
        self.ws.transport.abort()
        await self.stop()

    def heartbeat_frame(self) -> Heartbeat:
        self._seq += 1
        slots = tuple(SlotStatus(model=m, state=s.state, num_running=s.num_running, num_waiting=s.num_waiting, kv_budget_bytes=s.budget_bytes,
                                 kv_reserved_bytes=s.reserved_bytes, kv_used_bytes=s.used_bytes,
                                 expected_output_ratio=s.ratio, modalities=s.modalities, prefix_chains=s.prefix_chains,
                                 kv_cached_bytes=s.cached_bytes, prefix_hit_rate=s.prefix_hit_rate,
                                 prefix_hit_tokens=s.prefix_hit_tokens, prefix_evictions=s.prefix_evictions)
                      for m, s in self.slots.items())
        memory = MemoryStatus(total_bytes=self.memory_bytes, available_bytes=self.memory_bytes // 2,
                              cap_bytes=memory_cap_bytes(self.memory_bytes))
        return Heartbeat(seq=self._seq, slots=slots, memory=memory)

    async def heartbeat(self) -> None:
        await self.send(self.heartbeat_frame())

    def is_heard(self, server: RunningServer) -> bool:
        """The coordinator has applied this provider's latest heartbeat (and decided what follows from it)."""
        record = server.coordinator.router.registry.get(self.provider_id)
        return record is not None and record.seq >= self._seq

    async def set_slot(self, model: str, **fields: Any) -> None:
        slot = self.slots.setdefault(model, Slot())
        for name, value in fields.items():
            setattr(slot, name, value)
        await self.heartbeat()

    async def send(self, frame: Any) -> None:
        await self.ws.send(frame if isinstance(frame, str) else encode(frame))

    def _spawn(self, step: Callable[..., Any], *args: Any) -> None:
        task = asyncio.create_task(self._quietly(step, *args))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _quietly(step: Callable[..., Any], *args: Any) -> None:
        with contextlib.suppress(ConnectionClosed):  # the coordinator went away first: nothing to report
            await step(*args)

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            if self.heartbeats_on:
                await self.heartbeat()

    async def _receive(self) -> None:
        async for data in self.ws:
            frame = parse_message(data, direction=Direction.TO_AGENT)
            if getattr(frame, "type", None) == "error" or not hasattr(frame, "type"):
                self.errors.append(json.loads(data))
            elif frame.type == "inference_request":
                self.received.append(frame)
                self._spawn(self._serve, frame)
            elif frame.type == "cancel":
                self.cancels.append(frame.request_id)
                self._cancelled.add(frame.request_id)
            elif frame.type == "load_model":
                self.loads.append(frame.model)
                self._spawn(self._load, frame.model)

    async def _load(self, model: str) -> None:
        await self.set_slot(model, state=SlotState.LOADING, budget_bytes=0)
        await asyncio.sleep(self.load_delay_s)
        if self.loads_succeed:
            await self.set_slot(model, state=SlotState.IDLE, budget_bytes=8 * GIB)
        else:
            await self.set_slot(model, state=SlotState.COLD, budget_bytes=0)

    async def _serve(self, request: InferenceRequest) -> None:
        reply = self.reply(request) if callable(self.reply) else self.reply
        rid = request.request_id
        if reply.silent:
            return
        if reply.error_frame:
            return await self.send(ErrorFrame(code=reply.error_frame, message="scripted", request_id=rid))
        await asyncio.sleep(reply.accept_delay_s)
        refusal = self._admit(request) if self.gate and not reply.reject else None
        if reply.reject or refusal:
            verdict, reason = refusal or (reply.reject, reply.reason)
            await self.send(InferenceRejected(request_id=rid, verdict=verdict, reason=reason,
                                              retry_after_s=reply.retry_after_s, code=reply.code,
                                              retryable=reply.retryable))
            return
        await self.send(InferenceAccepted(request_id=rid, prompt_tokens=reply.prompt_tokens,
                                          reservation_bytes=self._reservations.get(rid)))
        await asyncio.sleep(reply.first_token_delay_s)
        sent = 0
        for i, chunk in enumerate(reply.chunks):
            if rid in self._cancelled:
                return await self._end(rid, reply, sent, "cancelled")
            if reply.error_after == i:
                self._release(rid)
                return await self.send(InferenceError(request_id=rid, code=reply.code or "engine_failed",
                                                      message="scripted failure",
                                                      retryable=reply.retryable))
            if reply.drop_link_after == i:
                return await self.drop()
            if reply.hang_after == i:
                return
            frame = InferenceResponseChunk(request_id=rid, seq=i + 1, num_tokens=reply.num_tokens, delta=_delta(chunk))
            if reply.chunk_logprobs is not None:
                frame = json.dumps(json.loads(encode(frame)) | {"logprobs": reply.chunk_logprobs[i]})
            await self.send(frame)
            sent += 1
            await asyncio.sleep(reply.chunk_delay_s)
        if rid in self._cancelled:
            return await self._end(rid, reply, sent, "cancelled")
        await self._end(rid, reply, sent, reply.finish_reason)

    async def _end(self, rid: str, reply: Reply, sent: int, finish_reason: str) -> None:
        self._release(rid)
        prompt, completion = reply.claimed_usage or (reply.prompt_tokens, sent)
        await self.send(InferenceComplete(request_id=rid, usage=UsageReport(prompt_tokens=prompt,
                                                                        completion_tokens=completion),
                                          finish_reason=finish_reason, num_chunks=sent))
        if self.gate and self.heartbeat_on_end:
            await self.heartbeat()

    def _admit(self, request: InferenceRequest) -> tuple[str, str] | None:
        """The agent's gate on this provider's own ledger; commits the reservation when it admits."""
        slot, spec = self.slots[request.model], self.specs[request.model]
        limits = next((e.admission for e in self.models if e.id == request.model), None) or LIMITS
        margin = safety_margin_bytes(slot.budget_bytes, limits.kv_safety_margin)
        prompt = request.reservation.prompt_tokens if request.reservation else 11
        decision = admit_request(spec, SlotKV(slot.budget_bytes, slot.reserved_bytes, slot.used_bytes, margin),
                                 prompt_tokens=prompt, max_tokens=request.body.output_limit or limits.default_max_tokens,
                                 ratio=slot.ratio or 1.0, clip=limits.output_clip_tokens,
                                 chunk=limits.prefill_chunk_tokens)
        if not decision.admitted:
            return decision.verdict.value, decision.reason
        slot.reserved_bytes += decision.reservation_bytes
        slot.num_running += 1
        self._reservations[request.request_id] = decision.reservation_bytes
        return None

    def _release(self, rid: str) -> None:
        reservation = self._reservations.pop(rid, None)
        if reservation is not None:
            for slot in self.slots.values():
                if slot.num_running:
                    slot.reserved_bytes -= reservation
                    slot.num_running -= 1
                    break


# Fast heartbeats, but eviction only after 2 s of silence: a loaded test machine must not evict by accident.
FAST = CoordinatorSettings(heartbeat_interval_s=0.2, missed_heartbeats=10, accept_timeout_s=2.0,
                           first_token_timeout_s=2.0, stall_timeout_s=2.0, queue_max_wait_s=2.0, cancel_grace_s=1.0)


@asynccontextmanager
async def coordinator(settings: CoordinatorSettings = FAST, accounts: Accounts | None = None,
                      **kwargs: Any) -> AsyncIterator[RunningServer]:
    app = build_app(accounts, settings, **kwargs)
    async with running(app) as server:
        yield server


async def provider(server: RunningServer, *models: ModelSpec, state: SlotState = SlotState.IDLE,
                   **kwargs: Any) -> ScriptedProvider:
    """A started provider serving `models` (warm unless `state` says otherwise)."""
    slots = {spec.id: Slot(state=state, budget_bytes=8 * GIB if state in (SlotState.IDLE, SlotState.RUNNING) else 0)
             for spec in models}
    kwargs.setdefault("models", [entry_for(spec) for spec in models])
    return await ScriptedProvider(server.ws_url, slots=slots, **kwargs).start()


async def eventually(predicate: Callable[[], bool], timeout: float = 3.0, what: str = "condition") -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)
