"""/ws/provider: the agents' websocket.

    upgrade    Authorization: Bearer <provider identity credential, or the shared provider token>
               (provider_auth.py); refused with HTTP 401 before the websocket is accepted (the agent
               treats 401 as fatal: no retry storm). Without a configured token or any identity, any
               token is accepted (local use). An identity's link replaces its earlier live one.
    register   the first frame; answered with `registered` (provider id, heartbeat interval, the protocol
               version chosen), or, when the agent speaks no version this coordinator does, with an
               `error` frame (protocol_version_unsupported, saying which side to upgrade) and a close
    then       every frame is validated with agent.wire.protocol (text-only chunks by agent.wire.hot_chunks'
               msgspec decoder first, which accepts no frame the protocol refuses); a bad one is answered with
               an `error` frame and the link stays up; fields of a newer release are ignored, each name logged
               once. Frames go to the router; the router's frames for the agent go out through one outbox, in
               order. Once registered, valid frames reach the router as uvicorn reads them (frame_tap.py), in
               order with the bad ones, which the read loop answers.
    end        link closed, or evicted for missed heartbeats: its in-flight requests are retried
               elsewhere before their first token, or end with an error after it.

Public names: ProviderEndpoint.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog
from starlette.responses import PlainTextResponse
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketState

from agent.coordinator.core import Coordinator
from agent.coordinator.http.denial_log import mark_denied
from agent.coordinator.http.frame_tap import FrameTap, frame_tap
from agent.coordinator.http.link_caps import LinkCaps, credential_key
from agent.coordinator.http.log_budget import LogBudget
from agent.coordinator.http.provider_auth import ProviderCredential, admit_provider
from agent.coordinator.routing.registry import ProviderRecord
from agent.wire.chunk_batch import InferenceResponseChunks
from agent.wire.frames import ErrorFrame, Register, Registered
from agent.wire.hot_chunks import HotChunk, HotChunks, decode_hot
from agent.wire.protocol import (
    MAX_REGISTER_FRAME_BYTES,
    PROTOCOL_MINOR,
    Direction,
    FrameTooLarge,
    InvalidField,
    Message,
    ProtocolError,
    encode,
    negotiate,
    parse_message,
)
from agent.wire.unknown_fields import UnknownFields

log = structlog.get_logger("agent.coordinator.http.provider_ws")
CLOSE_POLICY = 1008
CLOSE_EVICTED = 4000
CLOSE_INTERNAL = 1011


@dataclass(frozen=True, slots=True)
class _Close:
    reason: str
    code: int = CLOSE_EVICTED


@dataclass(frozen=True, slots=True)
class _BadFrames:
    log: LogBudget  # how many are logged
    flood: LogBudget  # how many are answered before the link is closed


class ProviderEndpoint:
    def __init__(self, coordinator: Coordinator) -> None:
        self.coordinator = coordinator
        self.links: set[asyncio.Queue] = set()  # one outbox per live link, for shutdown
        settings = coordinator.settings
        self.caps = LinkCaps(settings.max_provider_links_per_ip, settings.max_provider_links_per_credential)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        websocket = WebSocket(scope, receive, send)
        credential = admit_provider(self.coordinator.settings, self.coordinator.accounts.identities,
                                    websocket.headers.get("authorization"))
        if credential.refusal:
            log.warning("provider.refused", client=str(websocket.client), reason=credential.refusal)
            mark_denied()  # uvicorn would log the denial as an unfinished handshake (denial_log.py)
            await websocket.send_denial_response(PlainTextResponse(credential.refusal + "\n", 401))
            return
        ip = websocket.client.host if websocket.client else ""
        key = credential_key(websocket.headers.get("authorization"))
        refusal = self.caps.refusal(ip, key)
        if refusal:
            log.warning("provider.refused", client=str(websocket.client), reason=refusal)
            mark_denied()
            await websocket.send_denial_response(PlainTextResponse(refusal + "\n", 429))
            return
        self.caps.open(ip, key)
        try:
            await self._serve(websocket, credential)
        finally:
            self.caps.close(ip, key)

    async def _serve(self, websocket: WebSocket, credential: ProviderCredential) -> None:
        await websocket.accept()
        outbox: asyncio.Queue[Message | _Close] = asyncio.Queue()
        self.links.add(outbox)
        pump = asyncio.create_task(self._pump(websocket, outbox))
        provider: ProviderRecord | None = None
        tap: FrameTap | None = None
        unknown = UnknownFields()
        settings = self.coordinator.settings
        budget = _BadFrames(LogBudget(settings.bad_frame_log_lines, settings.bad_frame_log_interval_s),
                            LogBudget(settings.max_bad_frames, settings.bad_frame_log_interval_s))
        try:
            register = await self._await_register(websocket, outbox, unknown, budget)
            if register is None:
                return
            version = negotiate(register)
            if isinstance(version, ProtocolError):
                log.warning("provider.protocol_refused", client=str(websocket.client), message=version.message)
                outbox.put_nowait(version.to_frame())
                outbox.put_nowait(_Close("protocol version", CLOSE_POLICY))
                return
            identity = credential.identity
            provider = self.coordinator.router.connect(
                register, outbox.put_nowait, lambda reason: outbox.put_nowait(_Close(reason)),
                provider_id=identity.provider_id if identity else None, identity_id=identity.id if identity else None)
            outbox.put_nowait(Registered(provider_id=provider.provider_id,
                                         heartbeat_interval_s=self.coordinator.settings.heartbeat_interval_s,
                                         protocol_version=version, protocol_minor=PROTOCOL_MINOR))
            tap = frame_tap(websocket.scope)
            if tap is not None:
                tap.open(self._tapped_frames(websocket, provider, outbox, tap, unknown, budget))
            while (frame := await self._next_frame(websocket, outbox, unknown, budget)) is not None:
                self.coordinator.router.receive(provider, frame)
        finally:
            if tap is not None:
                tap.close()
                self.coordinator.metrics.tapped_provider_frames.inc(tap.num_taken)
            if provider is not None:
                self.coordinator.router.disconnect(provider, "link closed")
            self.links.discard(outbox)
            outbox.put_nowait(_Close("link closed", 1000))
            await asyncio.gather(pump, return_exceptions=True)

    def _tapped_frames(self, websocket: WebSocket, provider: ProviderRecord, outbox: asyncio.Queue, tap: FrameTap,
                       unknown: UnknownFields, budget: _BadFrames) -> Callable[[Any], bool]:
        """The link's frame tap (frame_tap.py): a valid frame goes to the router as uvicorn reads it (a hot
        chunk frame by msgspec, any other by parse_message). A bad one, or a batch with bad rows, is left to the
        read loop (False), which parses it again and answers it with its error frames and its flood budget, as
        ever. A failure of ours closes the link, as one in the loop does."""
        receive = self.coordinator.router.receive

        def take(data: Any) -> bool:
            try:
                frame = decode_hot(data)
                if frame is None:
                    frame = parse_message(data, direction=Direction.TO_COORDINATOR, unknown_fields=unknown)
                    if isinstance(frame, ProtocolError) or (isinstance(frame, InferenceResponseChunks)
                                                            and frame.rejected_rows):
                        return False
                    self._log_unknown(websocket, unknown, budget)
                receive(provider, frame)
            except Exception:  # inside uvicorn's data_received: it must not raise there
                log.exception("provider.frame_failed", provider_id=provider.provider_id)
                tap.close()
                outbox.put_nowait(_Close("internal error", CLOSE_INTERNAL))
            return True

        return take

    @staticmethod
    def _log_unknown(websocket: WebSocket, unknown: UnknownFields, budget: _BadFrames) -> None:
        for name in unknown.drain():
            if budget.log.allow():
                log.info("provider.unknown_field", client=str(websocket.client), field=name)

    def close_all(self, reason: str) -> None:
        for outbox in list(self.links):
            outbox.put_nowait(_Close(reason, 1001))

    async def _await_register(self, websocket: WebSocket, outbox: asyncio.Queue,
                              unknown: UnknownFields, budget: _BadFrames) -> Register | None:
        try:
            async with asyncio.timeout(self.coordinator.settings.register_timeout_s):
                while (frame := await self._next_frame(websocket, outbox, unknown, budget,
                                                       max_bytes=MAX_REGISTER_FRAME_BYTES)) is not None:
                    if isinstance(frame, Register):
                        return frame
                    outbox.put_nowait(ErrorFrame(code="not_registered", message=(
                        f"send register first (got {frame.type})")))
        except TimeoutError:
            outbox.put_nowait(_Close("no register frame in time", CLOSE_POLICY))
        return None

    async def _next_frame(self, websocket: WebSocket, outbox: asyncio.Queue,
                          unknown: UnknownFields, budget: _BadFrames,
                          max_bytes: int | None = None) -> Message | HotChunk | HotChunks | None:
        """The next valid frame, answering bad ones with an error frame; None when the link is closed.
        Before register, frames are held to the smaller register limit (max_bytes), checked before parsing."""
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return None
            data = message.get("text")
            data = data if data is not None else message.get("bytes") or b""
            if max_bytes is None and (hot := decode_hot(data)) is not None:
                return hot  # a text-only chunk row or batch (hot_chunks.py): the relay's bulk, without pydantic
            if max_bytes is not None and len(data) > max_bytes:
                frame: Message | ProtocolError = FrameTooLarge(
                    f"frame of {len(data)}+ bytes before register exceeds the {max_bytes}-byte register limit")
            else:
                frame = parse_message(data, direction=Direction.TO_COORDINATOR, unknown_fields=unknown)
            self._log_unknown(websocket, unknown, budget)
            if isinstance(frame, InferenceResponseChunks) and frame.rejected_rows:
                if not self._answer_rows(websocket, outbox, frame, budget):
                    return None
            if not isinstance(frame, ProtocolError):
                return frame
            self.coordinator.metrics.bad_frames.labels(frame.code).inc()
            if not budget.flood.allow():  # answering each one would queue without bound for a peer that never reads
                log.warning("provider.bad_frame_flood", client=str(websocket.client))
                outbox.put_nowait(_Close("too many bad frames", CLOSE_POLICY))
                return None
            if budget.log.allow():
                log.warning("provider.bad_frame", code=frame.code, message=frame.message[:256],
                            client=str(websocket.client), num_suppressed=budget.log.take_suppressed())
            outbox.put_nowait(frame.to_frame())

    def _answer_rows(self, websocket: WebSocket, outbox: asyncio.Queue, frame: InferenceResponseChunks,
                     budget: _BadFrames) -> bool:
        """An error frame for each bad row of a batch (its good rows go on); False once they are a flood."""
        for row in frame.rejected_rows:
            self.coordinator.metrics.bad_frames.labels(InvalidField.code).inc()
            if not budget.flood.allow():
                log.warning("provider.bad_frame_flood", client=str(websocket.client))
                outbox.put_nowait(_Close("too many bad frames", CLOSE_POLICY))
                return False
            if budget.log.allow():
                log.warning("provider.bad_row", field=row.field, message=row.message[:256], request_id=row.request_id,
                            client=str(websocket.client), num_suppressed=budget.log.take_suppressed())
            outbox.put_nowait(InvalidField(f"inference_response_chunks frame: row {row.index}: field {row.field!r}: "
                                           f"{row.message}", field=row.field, request_id=row.request_id).to_frame())
        return True

    async def _pump(self, websocket: WebSocket, outbox: asyncio.Queue) -> None:
        while True:
            item = await outbox.get()
            if isinstance(item, _Close):
                if websocket.application_state is WebSocketState.CONNECTED:
                    try:
                        await websocket.close(item.code, item.reason)
                    except Exception:  # the peer is gone already: nothing left to close
                        pass
                return
            await websocket.send_text(encode(item))
