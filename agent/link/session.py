"""The agent's side of the link, sans I/O: frames in, frames and events out. No socket, no clock.

The pump (agent.link.client) feeds it what the websocket receives and sends what it returns; the
daemon turns its events into engine calls and hands the engine's output back as frames built here,
so sequence numbers and per-request bookkeeping live in one place.

    session = LinkSession(register_frame)
    out = session.connected()                 -> [Register]
    events, replies = session.receive(text)   -> Registered / Submit / Cancel / Load / Unload / Error
                                                 events, and error frames for what could not be used
    session.state is REFUSED                  -> the coordinator speaks no protocol version we do:
                                                 fatal (session.refusal says why); reconnecting cannot help
    session.chunk(request_id, content, reasoning) -> InferenceResponseChunk with the next seq
    session.batches_chunks                    -> the coordinator takes a step's chunks as one frame
    session.complete(...) / session.error(...) end a request; session.lost() forgets all of them
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from agent.wire.chunk_batch import BATCHED_CHUNKS_MINOR
from agent.wire.frames import (
    MAX_CHUNK_TOKENS,
    Cancel,
    ChunkDelta,
    ErrorFrame,
    FinishReason,
    Heartbeat,
    InferenceComplete,
    InferenceError,
    InferenceRequest,
    InferenceResponseChunk,
    LoadModel,
    MemoryStatus,
    Register,
    Registered,
    SlotStatus,
    ThermalState,
    ToolCallDelta,
    UnloadModel,
    UsageReport,
)
from agent.wire.logprobs import TokenLogprob
from agent.wire.protocol import (
    LEGACY_PROTOCOL_VERSION,
    MIN_PROTOCOL_VERSION,
    PROTOCOL_VERSION,
    Direction,
    ProtocolError,
    ProtocolVersionUnsupported,
    parse_message,
)
from agent.wire.unknown_fields import UnknownFields

Event = Registered | InferenceRequest | Cancel | LoadModel | UnloadModel | ErrorFrame


class LinkState(StrEnum):
    DISCONNECTED = "disconnected"
    REGISTERING = "registering"  # register sent, registered not yet received
    READY = "ready"
    REFUSED = "refused"  # no protocol version in common: the link must not be retried


@dataclass(slots=True)
class _Stream:
    num_chunks: int = 0
    num_unsent_tokens: int = 0  # tokens of deltas without text, carried by the next chunk that has text
    unsent_logprobs: list = field(default_factory=list)  # the same for their logprobs entries


@dataclass(slots=True)
class LinkSession:
    register: Register
    heartbeat_interval_s: float = 2.0
    state: LinkState = LinkState.DISCONNECTED
    provider_id: str | None = None
    num_heartbeats: int = 0
    streams: dict[str, _Stream] = field(default_factory=dict)
    protocol_version: int | None = None  # chosen by the coordinator
    coordinator_minor: int = 0  # its minor of that version: from BATCHED_CHUNKS_MINOR it takes batched chunks
    refusal: str | None = None  # why the coordinator and this agent cannot talk, once REFUSED
    unknown_fields: UnknownFields = field(default_factory=UnknownFields)

    def connected(self) -> list[Register]:
        self.state = LinkState.REGISTERING
        return [self.register]

    def receive(self, data: str | bytes) -> tuple[list[Event], list[ErrorFrame]]:
        message = parse_message(data, direction=Direction.TO_AGENT, unknown_fields=self.unknown_fields)
        if isinstance(message, ProtocolError):
            return [], [message.to_frame()]
        if isinstance(message, ErrorFrame):
            if message.code == ProtocolVersionUnsupported.code and self.state is LinkState.REGISTERING:
                self._refuse(message.message)
            return [message], []  # the coordinator's complaint about one of ours; the pump logs it
        if isinstance(message, Registered):
            return self._registered(message), []
        if isinstance(message, InferenceRequest):
            if message.request_id in self.streams:
                return [], [ErrorFrame(code="duplicate_request", message="request_id is already running here",
                                       request_id=message.request_id)]
            self.streams[message.request_id] = _Stream()
        return [message], []

    def _registered(self, message: Registered) -> list[Event]:
        version = message.protocol_version if message.protocol_version is not None else LEGACY_PROTOCOL_VERSION
        if not MIN_PROTOCOL_VERSION <= version <= PROTOCOL_VERSION:
            self._refuse(f"the coordinator chose protocol version {version}, which this agent does not speak "
                         f"({MIN_PROTOCOL_VERSION} to {PROTOCOL_VERSION}); upgrade the agent")
            return []
        self.state, self.protocol_version = LinkState.READY, version
        self.coordinator_minor = message.protocol_minor
        self.provider_id = message.provider_id
        self.heartbeat_interval_s = message.heartbeat_interval_s
        return [message]

    @property
    def batches_chunks(self) -> bool:
        """May a step's chunks go as one inference_response_chunks frame (agent/link/batching.py)."""
        return self.state is LinkState.READY and self.coordinator_minor >= BATCHED_CHUNKS_MINOR

    def _refuse(self, reason: str) -> None:
        self.state, self.refusal = LinkState.REFUSED, reason

    def heartbeat(self, slots: list[SlotStatus], memory: MemoryStatus, *, thermal: ThermalState = ThermalState.UNKNOWN,
                  draining: bool = False) -> Heartbeat:
        self.num_heartbeats += 1
        return Heartbeat(seq=self.num_heartbeats, slots=tuple(slots), memory=memory, thermal=thermal,
                         draining=draining)

    def chunk(self, request_id: str, content: str = "", reasoning: str = "", num_tokens: int | None = None,
              logprobs: Sequence[TokenLogprob] = (),
              tool_calls: tuple[ToolCallDelta, ...] = ()) -> InferenceResponseChunk | None:
        stream = self.streams.get(request_id)
        if stream is None:
            return None
        if num_tokens is not None:
            stream.num_unsent_tokens += num_tokens
        stream.unsent_logprobs.extend(logprobs)
        if not (content or reasoning or tool_calls):
            return None
        stream.num_chunks += 1
        tokens, stream.num_unsent_tokens = stream.num_unsent_tokens, 0
        entries, stream.unsent_logprobs = stream.unsent_logprobs[:MAX_CHUNK_TOKENS], []
        return InferenceResponseChunk(request_id=request_id, seq=stream.num_chunks,
                                      delta=ChunkDelta(content=content, reasoning=reasoning, tool_calls=tool_calls),
                                      num_tokens=None if num_tokens is None else min(tokens, MAX_CHUNK_TOKENS),
                                      logprobs=tuple(entries) if entries else None)

    def complete(self, request_id: str, prompt_tokens: int, completion_tokens: int, finish_reason: FinishReason,
                 ttft_s: float | None = None, cached_tokens: int = 0) -> InferenceComplete | None:
        stream = self.streams.pop(request_id, None)
        if stream is None:
            return None
        return InferenceComplete(request_id=request_id, usage=UsageReport(prompt_tokens=prompt_tokens,
                                 completion_tokens=completion_tokens, cached_tokens=cached_tokens),
                                 finish_reason=finish_reason,
                                 num_chunks=stream.num_chunks, ttft_s=ttft_s)

    def error(self, request_id: str, code: str, message: str, retryable: bool = False) -> InferenceError | None:
        if self.streams.pop(request_id, None) is None:
            return None
        return InferenceError(request_id=request_id, code=code, message=message, retryable=retryable)

    def forget(self, request_id: str) -> None:
        """A request that ended without a frame (rejected at admission, cancelled by the coordinator)."""
        self.streams.pop(request_id, None)

    def lost(self) -> list[str]:
        """The link dropped: every in-flight request is the coordinator's to retry or fail now."""
        orphans = list(self.streams)
        self.streams.clear()
        self.state = LinkState.DISCONNECTED
        return orphans
