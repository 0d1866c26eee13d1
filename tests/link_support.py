"""A minimal coordinator on a real loopback websocket, and a recording LinkHandler, for link tests."""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from agent.link.session import Event, LinkSession
from agent.wire.frames import Hardware, MemoryStatus, Register, SlotStatus
from agent.wire.protocol import PROTOCOL_VERSION


@dataclass
class MiniCoordinator:
    """Accepts one token, answers register with registered, records every frame it receives."""

    token: str = "good-token"
    heartbeat_interval_s: float = 30.0
    frames: dict[str, asyncio.Queue] = field(default_factory=lambda: defaultdict(asyncio.Queue))  # by type
    connections: list[ServerConnection] = field(default_factory=list)
    server: Server | None = None
    port: int = 0
    registered_fields: dict = field(default_factory=dict)  # merged into `registered` (a newer coordinator's)
    refusal: dict | None = None  # answer register with this error frame, then close (no version in common)

    async def start(self, port: int = 0) -> None:
        self.server = await serve(self._handler, "127.0.0.1", port or self.port, process_request=self._auth)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        self.server.close()
        await self.server.wait_closed()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/provider"

    def _auth(self, connection, request):
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return connection.respond(HTTPStatus.UNAUTHORIZED, "bad provider token\n")
        return None

    async def _handler(self, ws: ServerConnection) -> None:
        self.connections.append(ws)
        try:
            async for data in ws:
                frame = json.loads(data)
                if frame.get("type") == "register" and self.refusal is not None:
                    await self.frames["register"].put(frame)
                    await ws.send(json.dumps({"type": "error", **self.refusal}))
                    await ws.close(1008, "protocol version")
                    return
                if frame.get("type") == "register":
                    await ws.send(json.dumps({"type": "registered", "provider_id": "p-1",
                                              "heartbeat_interval_s": self.heartbeat_interval_s,
                                              **self.registered_fields}))
                await self.frames[str(frame.get("type"))].put(frame)
        except ConnectionClosed:
            pass  # the agent went away; what it sent is recorded

    async def send(self, frame: dict | str | bytes) -> None:
        await self.connections[-1].send(frame if isinstance(frame, (str, bytes)) else json.dumps(frame))

    async def next_frame(self, frame_type: str, timeout: float = 5.0) -> dict:
        """The next frame of this type not returned yet (frames of other types stay queued)."""
        return await asyncio.wait_for(self.frames[frame_type].get(), timeout)

    def drain_frames(self, frame_type: str) -> list[dict]:
        queue, out = self.frames[frame_type], []
        while not queue.empty():
            out.append(queue.get_nowait())
        return out


@dataclass
class RecordingHandler:
    state: str = "idle"
    events: list[Event] = field(default_factory=list)
    lost: list[list[str]] = field(default_factory=list)
    state_changed: asyncio.Event = field(default_factory=asyncio.Event)
    recorded: asyncio.Condition = field(default_factory=asyncio.Condition)  # notified on every record

    async def until(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Wait until what was recorded satisfies `predicate`: woken by each record, not by polling."""
        async with asyncio.timeout(timeout), self.recorded:
            await self.recorded.wait_for(predicate)

    async def _record(self, into: list, item) -> None:
        async with self.recorded:
            into.append(item)
            self.recorded.notify_all()

    def register_frame(self) -> Register:
        return Register(protocol_version=PROTOCOL_VERSION, agent_version="test",
                        hardware=Hardware(chip="Test M0", memory_bytes=16 * 2**30, gpu_cores=8), models=())

    def heartbeat_frame(self, session: LinkSession):
        slots = [SlotStatus(model="gpt-oss-tiny", state=self.state)]
        return session.heartbeat(slots, MemoryStatus(total_bytes=16 * 2**30, available_bytes=8 * 2**30,
                                                     cap_bytes=14 * 2**30))

    async def handle(self, event: Event, link) -> None:
        await self._record(self.events, event)

    async def link_lost(self, request_ids: list[str]) -> None:
        await self._record(self.lost, request_ids)
