"""The I/O shell around LinkSession: one outbound websocket, kept up for as long as the agent runs.

    loop: backoff → connect (Authorization: Bearer) → register with the current state → pump until error

A refused credential (HTTP 401/403 at the upgrade) is fatal: retrying would only hammer the
coordinator with a token it has already said no to. So is a coordinator that speaks no protocol
version this agent does (an `error` frame protocol_version_unsupported in answer to register): only
an upgrade helps. Each has its own exit code, so launchd and the operator can tell. Anything else — refused connection, dropped link,
missed keepalive pongs — is retried with jittered exponential backoff, reset after a good register.

`close()` ends it cleanly: no more reconnects, the frames already on the outbox are sent (bounded by
`flush_timeout_s`), then the websocket is closed and `run()` returns; the daemon's drain ends with it,
so the last `inference_complete` of a drained stream reaches the coordinator.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

import structlog
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from agent.errors import DarkbloomError
from agent.link.batching import encode_bounded, frames_to_send
from agent.link.session import Event, LinkSession, LinkState
from agent.wire.frames import ErrorFrame, Registered
from agent.wire.protocol import MAX_FRAME_BYTES, Message, encode

log = structlog.get_logger("agent.link")

EXIT_AUTH_REFUSED = 77  # EX_NOPERM: launchd must not restart us into the same refusal
EXIT_PROTOCOL_REFUSED = 76  # EX_PROTOCOL: the coordinator and this agent share no protocol version
KEEPALIVE_INTERVAL_S = 10.0  # a ping every 10 s, 10 s to answer: a dead link is found within 20 s
KEEPALIVE_TIMEOUT_S = 10.0
FLUSH_TIMEOUT_S = 5.0  # close(): how long the frames still on the outbox get to go out


class LinkRefused(DarkbloomError):
    """The coordinator said no in a way that reconnecting cannot change: the daemon exits with exit_code."""

    exit_code = 1


class LinkAuthRefused(LinkRefused):
    code = "auth_refused"
    exit_code = EXIT_AUTH_REFUSED


class LinkProtocolRefused(LinkRefused):
    code = "protocol_version_unsupported"
    exit_code = EXIT_PROTOCOL_REFUSED


class LinkHandler(Protocol):
    """What the daemon gives the link: its current state, and what to do with the coordinator's asks."""

    state_changed: asyncio.Event

    def register_frame(self) -> Message: ...
    def heartbeat_frame(self, session: LinkSession) -> Message: ...
    async def handle(self, event: Event, link: Link) -> None: ...
    async def link_lost(self, request_ids: list[str]) -> None: ...


@dataclass(slots=True)
class Backoff:
    """Jittered exponential delays: about 0.5 s, 1 s, 2 s, … up to the cap."""

    base_s: float = 0.5
    cap_s: float = 30.0
    attempts: int = 0
    rng: random.Random = field(default_factory=random.Random)

    def next_delay(self) -> float:
        delay = min(self.cap_s, self.base_s * 2**self.attempts)
        self.attempts += 1
        return min(self.cap_s, delay * self.rng.uniform(0.8, 1.2))

    def reset(self) -> None:
        self.attempts = 0


@dataclass(slots=True)
class Link:
    """One agent's link to its coordinator. `send` never blocks; frames go out in order."""

    url: str
    token: str
    handler: LinkHandler
    backoff: Backoff = field(default_factory=Backoff)
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    session: LinkSession | None = None
    outbox: asyncio.Queue[Message] = field(default_factory=asyncio.Queue)
    num_connects: int = 0
    stopping: bool = False
    flush_timeout_s: float = FLUSH_TIMEOUT_S
    _ws: ClientConnection | None = field(default=None, init=False, repr=False)  # while connected

    @property
    def state(self) -> LinkState:
        return self.session.state if self.session else LinkState.DISCONNECTED

    def send(self, frame: Message | None) -> None:
        if frame is not None and self.state is not LinkState.DISCONNECTED:
            self.outbox.put_nowait(frame)

    async def run(self) -> None:
        """Until stop(), a refused credential or no common protocol version (raises a LinkRefused)."""
        while not self.stopping:
            try:
                await self._connect_once()
            except InvalidStatus as exc:
                status = exc.response.status_code
                if status in (401, 403):
                    raise LinkAuthRefused(f"the coordinator refused the provider token (HTTP {status}); "
                                          "check provider_token in the agent config") from exc
                log.warning("link.refused", status=status)
            except (OSError, InvalidHandshake, ConnectionClosed, TimeoutError) as exc:
                log.warning("link.down", error=f"{type(exc).__name__}: {exc}")
            await self._drop()
            if not self.stopping:
                delay = self.backoff.next_delay()
                log.info("link.reconnect", in_s=round(delay, 2), attempt=self.backoff.attempts)
                await self.sleep(delay)

    def stop(self) -> None:
        """No reconnect after the current connection ends (what is on the outbox may be lost: see close)."""
        self.stopping = True

    async def close(self) -> None:
        """Stop reconnecting, send what is on the outbox (within flush_timeout_s), then close the websocket."""
        self.stopping = True
        ws = self._ws
        if ws is None:
            return
        # Every frame put on the outbox has been written once join() returns; a link that drops meanwhile
        # has nothing left to flush to.
        flushed = asyncio.ensure_future(self.outbox.join())
        dropped = asyncio.ensure_future(ws.wait_closed())
        try:
            await asyncio.wait({flushed, dropped}, timeout=self.flush_timeout_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in (flushed, dropped):
                waiter.cancel()
            await asyncio.gather(flushed, dropped, return_exceptions=True)
        if flushed.cancelled():
            log.warning("link.flush_incomplete", unsent=self.outbox.qsize(), timeout_s=self.flush_timeout_s)
        await ws.close()

    async def _connect_once(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        async with connect(self.url, additional_headers=headers, max_size=MAX_FRAME_BYTES, open_timeout=10,
                           ping_interval=KEEPALIVE_INTERVAL_S, ping_timeout=KEEPALIVE_TIMEOUT_S) as ws:
            self.num_connects += 1
            self.session = LinkSession(self.handler.register_frame())
            self.outbox, self._ws = asyncio.Queue(), ws
            for frame in self.session.connected():
                await ws.send(encode(frame))
            log.info("link.connected", url=self.url)
            pumps = [self._receive(ws), self._send(ws), self._heartbeat()]
            tasks = [asyncio.create_task(p) for p in pumps]
            try:
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    task.result()  # re-raise what ended the connection
            finally:
                self._ws = None
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

    async def _receive(self, ws: ClientConnection) -> None:
        async for data in ws:
            events, replies = self.session.receive(data)
            for name in self.session.unknown_fields.drain():
                log.info("link.unknown_field", field=name)
            if self.session.state is LinkState.REFUSED:
                raise LinkProtocolRefused(f"the coordinator cannot talk to this agent: {self.session.refusal}")
            for reply in replies:
                log.warning("link.bad_frame", code=reply.code, message=reply.message)
                self.send(reply)
            for event in events:
                if isinstance(event, ErrorFrame):
                    log.warning("link.complaint", code=event.code, message=event.message, request_id=event.request_id)
                    continue
                if isinstance(event, Registered):
                    self.backoff.reset()
                    self.handler.state_changed.set()  # first heartbeat right away
                    log.info("link.registered", provider_id=event.provider_id,
                             heartbeat_interval_s=event.heartbeat_interval_s,
                             protocol_version=self.session.protocol_version)
                try:
                    await self.handler.handle(event, self)
                except Exception:  # one bad ask never takes the link down
                    log.exception("link.handle_failed", frame=event.type)

    async def _send(self, ws: ClientConnection) -> None:
        """Everything waiting goes out in one pass: a step's chunks as one batch (batching.py)."""
        while True:
            waiting = [await self.outbox.get()]
            while not self.outbox.empty():
                waiting.append(self.outbox.get_nowait())
            for frame in frames_to_send(waiting, batch=self.session.batches_chunks):
                for text in encode_bounded(frame):
                    await ws.send(text)
            for _ in waiting:
                self.outbox.task_done()

    async def _heartbeat(self) -> None:
        """Every heartbeat_interval_s, and at once on every slot state change."""
        while True:
            try:
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancel that races it.
                async with asyncio.timeout(self.session.heartbeat_interval_s):
                    await self.handler.state_changed.wait()
            except TimeoutError:
                pass
            self.handler.state_changed.clear()
            if self.session.state is LinkState.READY:
                self.send(self.handler.heartbeat_frame(self.session))

    async def _drop(self) -> None:
        if self.session is None:
            return
        orphans = self.session.lost()
        if orphans:
            log.warning("link.lost_requests", count=len(orphans))
        await self.handler.link_lost(orphans)
