"""HostilePeer: a provider that speaks the wire protocol correctly and lies about everything it may.

It connects with the credential it is given (the shared provider token, or an identity's secret), registers
the catalog's models with the most rows the protocol allows, and heartbeats slots that claim all the KV a
frame can carry, always idle and always empty, so it wins placement wherever claimed free KV decides.
What it does with each request is its subclass's `serve`; it records what it was sent.

    peer = await Sinkhole(url, token="...").start()
    peer.received            {request_id: loop time it arrived}
    peer.texts               {request_id: the start of its last message's text} (which request it was)
    await peer.stop()

Public names: HostilePeer, HUGE_BYTES, HOSTILE_LIMITS.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from agent.catalog import ModelSpec, load_catalog
from agent.kvcost import PREFILL_CHUNK_TOKENS
from agent.testing.model_entry import entry_for
from agent.wire.frames import (
    MAX_BYTES,
    MAX_ROWS,
    AdmissionLimits,
    Hardware,
    Heartbeat,
    InferenceRequest,
    MemoryStatus,
    Register,
    SlotState,
    SlotStatus,
)
from agent.wire.protocol import PROTOCOL_VERSION, Direction, encode, parse_message

MAX_TEXT_CHARS = 80  # of each request's text kept, to tell requests apart
HUGE_BYTES = MAX_BYTES  # the most any byte field of a frame may say
HOSTILE_LIMITS = AdmissionLimits(kv_safety_margin=0.0, max_num_seqs=MAX_ROWS,
                                 prefill_chunk_tokens=PREFILL_CHUNK_TOKENS, default_max_tokens=4096,
                                 output_clip_tokens=4096)


def _catalog_models() -> tuple[ModelSpec, ...]:
    catalog = load_catalog()
    return (catalog["gpt-oss-20b"], catalog["gemma-4-26b"])


@dataclass
class HostilePeer:
    url: str
    token: str = "any-token"
    specs: Sequence[ModelSpec] = field(default_factory=_catalog_models)
    name: str = "hostile"
    received: dict[str, float] = field(default_factory=dict)
    texts: dict[str, str] = field(default_factory=dict)
    cancels: set[str] = field(default_factory=set)
    provider_id: str = ""
    ws: ClientConnection | None = None
    _seq: int = 0
    _interval_s: float = 1.0
    _tasks: set[asyncio.Task] = field(default_factory=set)

    async def start(self) -> HostilePeer:
        self.ws = await connect(self.url, additional_headers={"Authorization": f"Bearer {self.token}"},
                                max_size=None)
        await self.ws.send(encode(self.register_frame()))
        registered = json.loads(await self.ws.recv())
        if registered.get("type") != "registered":
            raise ConnectionError(f"{self.name} was not registered: {registered}")
        self.provider_id, self._interval_s = registered["provider_id"], registered["heartbeat_interval_s"]
        await self.heartbeat()
        self.spawn(self._receive())
        self.spawn(self._heartbeats())
        return self

    async def stop(self) -> None:
        tasks = [task for task in self._tasks if task is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.ws is not None:
            await self.ws.close()

    def register_frame(self) -> Register:
        return Register(protocol_version=PROTOCOL_VERSION, agent_version=f"hostile-{self.name}",
                        hardware=Hardware(chip="Apple M9 Ultra", memory_bytes=HUGE_BYTES, gpu_cores=1024),
                        models=tuple(entry_for(spec, limits=HOSTILE_LIMITS) for spec in self.specs))

    def heartbeat_frame(self) -> Heartbeat:
        """Every slot idle, empty and as large as a frame can say: it counts none of what it was sent."""
        self._seq += 1
        slots = tuple(SlotStatus(model=spec.id, state=SlotState.IDLE, kv_budget_bytes=HUGE_BYTES,
                                 expected_output_ratio=0.1) for spec in self.specs)
        memory = MemoryStatus(total_bytes=HUGE_BYTES, available_bytes=HUGE_BYTES, cap_bytes=HUGE_BYTES)
        return Heartbeat(seq=self._seq, slots=slots, memory=memory)

    async def heartbeat(self) -> None:
        await self.send(self.heartbeat_frame())

    async def send(self, frame: object) -> None:
        await self.ws.send(frame if isinstance(frame, str | bytes) else encode(frame))

    def spawn(self, work) -> None:
        task = asyncio.create_task(self._quietly(work))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _quietly(work) -> None:
        with contextlib.suppress(ConnectionClosed):  # the coordinator closed the link: nothing to report
            await work

    async def serve(self, request: InferenceRequest) -> None:
        """What the peer does with a request; the subclass decides."""

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            await self.heartbeat()

    async def _receive(self) -> None:
        loop = asyncio.get_running_loop()
        async for data in self.ws:
            frame = parse_message(data, direction=Direction.TO_AGENT)
            kind = getattr(frame, "type", None)
            if kind == "inference_request":
                self.received[frame.request_id] = loop.time()
                content = frame.body.messages[-1].content
                self.texts[frame.request_id] = (content if isinstance(content, str) else "")[:MAX_TEXT_CHARS]
                self.spawn(self.serve(frame))
            elif kind == "cancel":
                self.cancels.add(frame.request_id)
