"""Flooder: many links on one credential, each registering with the largest register the protocol allows and
then sending bad frames as fast as its rate lets it, reconnecting whenever the coordinator closes the link.

Per link, in a loop: an oversized frame before register, then a register listing MAX_MODELS made-up models
at the longest context a frame may say, then a cycle of frames the coordinator must refuse (not JSON, an
unknown type, a heartbeat with bad fields, 1 MiB of junk, a chunk for a request it was never sent). It
never heartbeats, so it is never placed. It reads what comes back (error frames) so it measures them.

    flooder = Flooder(url, token="...", num_links=4, max_frames_per_s=500)
    await flooder.start(); ...; await flooder.stop()
    flooder.num_frames_sent, num_links_opened, num_links_refused, num_error_frames

Public names: Flooder, BAD_FRAMES.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass, field

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from agent.catalog import load_catalog
from agent.testing.hostile.peer import HOSTILE_LIMITS, HUGE_BYTES
from agent.testing.model_entry import entry_for
from agent.wire.frames import MAX_CONTEXT_TOKENS, MAX_ID_CHARS, MAX_MODELS, Hardware, Register
from agent.wire.protocol import MAX_REGISTER_FRAME_BYTES, PROTOCOL_VERSION, encode

JUNK_FRAME_BYTES = 1 << 20
BAD_FRAMES: tuple[str, ...] = (
    "this is not json {",
    json.dumps({"type": "no_such_frame", "x": 1}),
    json.dumps({"type": "heartbeat", "seq": -1, "slots": "many", "memory": None}),
    "[" * 10_000,
    "x" * JUNK_FRAME_BYTES,
    json.dumps({"type": "inference_response_chunk", "request_id": "never-sent", "seq": 1,
                "delta": {"content": "hi", "reasoning": ""}, "num_tokens": 1}),
)


def largest_register(name: str) -> Register:
    """MAX_MODELS made-up models with the longest context and names a frame allows, within the register limit."""
    template = entry_for(load_catalog()["gpt-oss-20b"], limits=HOSTILE_LIMITS)
    models = tuple(template.model_copy(update={"id": f"{name}-{i:02d}-".ljust(MAX_ID_CHARS, "m"),
                                               "max_context": MAX_CONTEXT_TOKENS})
                   for i in range(MAX_MODELS))
    return Register(protocol_version=PROTOCOL_VERSION, agent_version="f" * MAX_ID_CHARS,
                    hardware=Hardware(chip="c" * MAX_ID_CHARS, memory_bytes=HUGE_BYTES, gpu_cores=2**31),
                    models=models)


@dataclass
class Flooder:
    url: str
    token: str = "any-token"
    num_links: int = 4
    max_frames_per_s: float = 500.0
    reconnect_delay_s: float = 0.05
    name: str = "flooder"
    num_frames_sent: int = 0
    num_registers_sent: int = 0
    num_links_opened: int = 0
    num_links_refused: int = 0
    num_links_closed_by_peer: int = 0
    num_error_frames: int = 0
    _tasks: list[asyncio.Task] = field(default_factory=list)

    async def start(self) -> Flooder:
        self._register = encode(largest_register(self.name))
        self._tasks = [asyncio.create_task(self._link_loop(), name=f"{self.name}-{i}") for i in range(self.num_links)]
        return self

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _link_loop(self) -> None:
        while True:
            try:
                async with connect(self.url, additional_headers={"Authorization": f"Bearer {self.token}"},
                                   max_size=None, open_timeout=10) as ws:
                    self.num_links_opened += 1
                    await self._flood(ws)
            except InvalidStatus:
                self.num_links_refused += 1
            except (ConnectionClosed, OSError, TimeoutError):
                self.num_links_closed_by_peer += 1
            await asyncio.sleep(self.reconnect_delay_s)

    async def _flood(self, ws) -> None:
        reader = asyncio.create_task(self._read(ws))
        try:
            await self._send(ws, "r" * (MAX_REGISTER_FRAME_BYTES + 1))
            await self._send(ws, self._register)
            self.num_registers_sent += 1
            while True:
                for frame in BAD_FRAMES:
                    await self._send(ws, frame)
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                await reader

    async def _send(self, ws, frame: str) -> None:
        await ws.send(frame)
        self.num_frames_sent += 1
        await asyncio.sleep(self.num_links / self.max_frames_per_s)

    async def _read(self, ws) -> None:
        async for data in ws:
            if isinstance(data, str) and '"type":"error"' in data.replace(" ", ""):
                self.num_error_frames += 1
