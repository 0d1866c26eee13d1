"""One request's life after admission: dispatch or queue, attempts until the first token, then the stream.

    start()   the attempts until the first token (attempts.py: dispatch, retries, the first-token deadline);
              raises ApiError when there is none.
    next()    Token ... then Finished (settled from the agent's usage) or Broken (an error after the first
              token: never retried, the stream ends with finish_reason "error"). A stall (no text for
              `stall_timeout_s`) or the stream's own deadline ends it Broken too. A chunk whose seq is not
              past the last one (a duplicate, or out of order) is dropped: its text was shown, or is stale.
    ready()   the events next() would return without waiting (what arrived since), so a writer can send
              a step's worth, or a slow client's backlog, in one write; it ends after a Finished or Broken.
    close()   every exit: cancels the attempt at the agent if one is open, and releases the hold unless
              the request was settled. Idempotent.

Live tokens (a stream's fast path, http/direct_stream.py): while next() waits with nothing pending
(`is_parked`), a writer may take a frame as the router pushes it: `take(frame)` converts it exactly as next()
would (the same checks and counts) and moves the stall deadline; a Finished or Broken it gives is handed to the
waiting next() with `hold(event)`. next() returns only what the writer did not take.

A hot chunk (agent/wire/hot_chunks.py: text only, by its decoder's schema) takes the text lane, `_text`: the
checks every chunk gets (seq, the usage meter's bounds), none for what it cannot carry (logprobs, tool calls);
tests/test_flow_text_lane.py holds it to the general path's events and counts for the same chunk.

Public names: RequestFlow, Token, Finished, Broken.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import msgspec
import structlog

from agent.coordinator.attempts import DELIVERED, Attempts
from agent.coordinator.billing.accounts import Accounts, ReleaseReason
from agent.coordinator.deadlines import stream_deadline
from agent.coordinator.errors import ApiError, ProviderFailed
from agent.coordinator.logprob_check import LogprobsRefused, checked_logprobs
from agent.coordinator.routing.exchange import Exchange, LinkLost
from agent.coordinator.routing.reputation import Outcome
from agent.coordinator.routing.router import Router
from agent.coordinator.tool_calls import InvalidToolCall, ToolCallLedger
from agent.coordinator.usage import Charge, UsageMeter
from agent.wire.frames import (
    FinishReason,
    InferenceComplete,
    InferenceError,
    ToolCallDelta,
    UsageReport,
)
from agent.wire.hot_chunks import CHUNK_FRAMES, AnyChunk, HotChunk
from agent.wire.logprobs import TokenLogprob

log = structlog.get_logger("agent.coordinator.flow")


class Token(msgspec.Struct, gc=False):
    """A run of a stream's output. A msgspec Struct, made in C: a third of a slotted dataclass's cost, once per
    relayed token; not tracked by the collector (its fields are strings and tuples of frames: no cycle)."""

    content: str
    reasoning: str
    logprobs: tuple[TokenLogprob, ...] = ()  # checked (logprob_check.py); only when the request asked
    tool_calls: tuple[ToolCallDelta, ...] = ()  # checked by the flow's ToolCallLedger (tool_calls.py)


@dataclass(frozen=True, slots=True)
class Finished:
    finish_reason: str
    usage: UsageReport


@dataclass(frozen=True, slots=True)
class Broken:
    message: str
    code: str = "provider_failed"


class RequestFlow:
    def __init__(self, router: Router, accounts: Accounts, exchange: Exchange, *, max_tokens: int | None = None,
                 max_prompt_tokens: int | None = None) -> None:
        self.router, self.accounts, self.exchange = router, accounts, exchange
        self.settings = router.settings
        # The most output this request may be charged or streamed (usage.py): its max_tokens, else the model's
        # context as the coordinator knows it.
        bound = max_tokens or exchange.ask.max_tokens or self.settings.uncatalogued_context_tokens
        self.meter = UsageMeter(max_tokens=bound, prompt_bound=max_prompt_tokens or exchange.ask.prompt_tokens,
                                prompt_floor=exchange.ask.floor_prompt_tokens,
                                slack_tokens=self.settings.usage_slack_tokens,
                                textless_tokens=self.settings.usage_textless_tokens)
        self.num_chunks = 0
        self.tool_calls = ToolCallLedger(max_calls=self.settings.max_tool_calls,
                                         max_argument_chars=self.settings.max_tool_argument_chars,
                                         keep_arguments=not exchange.body.stream)  # a stream keeps only lengths
        self.is_closed = False  # settled or released
        self.charged: UsageReport | None = None  # what it was settled for (the access log's tokens)
        self.first_token_at: float | None = None  # the router's clock when start() returned
        self._first: AnyChunk | InferenceComplete | None = None
        self._stream_deadline = float("inf")
        self._num_logprob_entries = 0  # shown so far: a stream has at most one per token
        self._num_top_logprobs = exchange.body.num_top_logprobs  # read once: each chunk's check needs it
        self._last_seq = -1  # of the last chunk taken: a row's seq only grows
        self._num_stale_chunks = 0
        self._stall_at = float("inf")  # no text since before it: the stream stalled
        self._stall_timeout_s = self.settings.stall_timeout_s  # read once: take() moves the stall deadline per token
        self._wait_until = float("inf")  # the current next()'s deadline: a stall, or the stream's own
        self._alarm: asyncio.TimerHandle | None = None
        self._is_waiting = False
        self._held: Token | Finished | Broken | None = None  # an event a live take() gave, for next() to return
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- before the first token (attempts.py)
    async def start(self) -> None:
        attempts = Attempts(self.router, self.exchange, self.meter)
        self._first = await attempts.first()
        self._loop = asyncio.get_running_loop()
        self.first_token_at = self.router.clock()
        self._stream_deadline = stream_deadline(asyncio.get_running_loop().time(), attempts.arrived_at,
                                                self.meter.max_tokens, self.settings)

    # -- after it
    async def next(self) -> Token | Finished | Broken:
        loop = asyncio.get_running_loop()
        self._stall_at = loop.time() + self.settings.stall_timeout_s  # empty chunks do not move it
        self._wait_until = min(self._stall_at, self._stream_deadline)
        while True:
            frame, self._first = self._first, None
            if frame is None:
                frame = await self._frame_by_deadline(loop)
                if frame is None:
                    if (held := self._held) is not None:
                        self._held = None
                        return held
                    return self._timed_out(is_stall=self._stall_at <= self._stream_deadline)
            event = self._convert(frame)
            if event is not None:
                return event

    async def _frame_by_deadline(self, loop: asyncio.AbstractEventLoop) -> object | None:
        """The next frame, or None once `_wait_until` passes or a live take() held an event. One alarm per flow
        rather than a timer per token: the deadline only moves later, so an alarm that rings early sets itself
        again for the new one (_ring)."""
        exchange = self.exchange
        while self._held is None and (frame := exchange.next_event_nowait()) is None:
            if loop.time() >= self._wait_until:
                return None
            if self._alarm is None:
                self._alarm = loop.call_at(self._wait_until, self._ring)
            self._is_waiting = True
            try:
                await exchange.arrival()
            finally:
                self._is_waiting = False
        return None if self._held is not None else frame

    def _ring(self) -> None:
        self._alarm = None
        if not self._is_waiting or self.is_closed:
            return  # the next wait sets it again
        loop = asyncio.get_running_loop()
        if loop.time() >= self._wait_until:
            self.exchange.wake()  # the wait sees the deadline passed
        else:
            self._alarm = loop.call_at(self._wait_until, self._ring)

    @property
    def is_parked(self) -> bool:
        """next() waits, with nothing arrived or held for it: a frame taken now is the stream's next."""
        return self._is_waiting and self._held is None and not self.exchange.events

    def take(self, frame: object) -> Token | Finished | Broken | None:
        """A frame converted as next() would, while it is parked; a Token moves the stall deadline."""
        event = self._text(frame) if type(frame) is HotChunk else self._convert(frame)
        if type(event) is Token:
            stall_at = self._stall_at = self._loop.time() + self._stall_timeout_s
            self._wait_until = stall_at if stall_at < self._stream_deadline else self._stream_deadline
        return event

    def hold(self, event: Token | Finished | Broken) -> None:
        """The waiting next() returns `event` (a take() gave it, and the writer leaves it to the stream's task)."""
        self._held = event
        self.exchange.wake()

    def ready(self) -> list[Token | Finished | Broken]:
        events: list[Token | Finished | Broken] = []
        while (frame := self._first or self.exchange.next_event_nowait()) is not None:
            self._first = None
            event = self._convert(frame)
            if event is not None:
                events.append(event)
                if not isinstance(event, Token):
                    break
        return events

    def _timed_out(self, *, is_stall: bool) -> Broken:
        self.router.observe(self.exchange, Outcome.STALLED if is_stall else Outcome.TIMEOUT)
        self.router.abandon(self.exchange, reason="stalled" if is_stall else "deadline")
        self._release(ReleaseReason.TIMEOUT)  # as for a provider error mid-stream: not charged
        if is_stall:
            return Broken(f"the provider stalled: no token for {self.settings.stall_timeout_s:g} s", "provider_stalled")
        return Broken("the provider did not finish within the request's deadline", "provider_too_slow")

    def _convert(self, frame: object) -> Token | Finished | Broken | None:
        if type(frame) is HotChunk:
            return self._text(frame)
        if isinstance(frame, CHUNK_FRAMES):
            if frame.seq <= self._last_seq:
                return self._stale(frame)
            self._last_seq = frame.seq
            logprobs = ()
            if frame.logprobs:  # most chunks carry none: no check to call
                try:
                    uncovered = self.meter.num_tokens - self._num_logprob_entries
                    logprobs = checked_logprobs(frame, self._num_top_logprobs, uncovered)
                    self._num_logprob_entries += len(logprobs)
                except LogprobsRefused as exc:
                    return self._refuse_logprobs(str(exc))
            if not self.meter.admit(frame):
                return self._cut()
            delta = frame.delta
            if delta.tool_calls:
                try:
                    self.tool_calls.admit(delta.tool_calls)
                except InvalidToolCall as exc:
                    return self._invalid_output(str(exc))
            self.num_chunks += 1
            if delta.is_empty:
                return None
            return Token(delta.content, delta.reasoning, logprobs, delta.tool_calls)
        if isinstance(frame, InferenceComplete):
            if frame.finish_reason in DELIVERED:
                charge = self.meter.settle(frame.usage)
                if charge.is_clamped:
                    self._clamped(frame.usage, charge)
                self.router.observe(self.exchange, Outcome.COMPLETED)
                return Finished(self._finish_reason(frame.finish_reason), self._settle(charge))
            self._settle(self.meter.delivered())  # only what the client received, whatever the agent claims
            self.router.observe(self.exchange, Outcome.ENDED, f"ended mid-stream ({frame.finish_reason})")
            return Broken(f"the provider ended the stream early ({frame.finish_reason})", "provider_ended")
        if isinstance(frame, InferenceError):
            self._release(ReleaseReason.PROVIDER_ERROR)
            self.router.observe(self.exchange, Outcome.ERROR, f"mid-stream: {frame.code}")
            return Broken(f"the provider failed mid-stream: {frame.code}: {frame.message}")
        if isinstance(frame, LinkLost):
            self._release(ReleaseReason.PROVIDER_ERROR)
            self.router.observe(self.exchange, Outcome.LINK_LOST, frame.reason)
            return Broken(f"the provider's link dropped mid-stream ({frame.reason})", "provider_link_lost")
        return None

    def _text(self, chunk: HotChunk) -> Token | Finished | None:
        """_convert of a hot chunk: text only (its decoder's schema: no logprobs, no tool calls to check), so
        the usage meter is given what it counts directly and no check for what the chunk cannot carry is run."""
        seq = chunk.seq
        if seq <= self._last_seq:
            return self._stale(chunk)
        self._last_seq = seq
        delta = chunk.delta
        text_bytes = delta.num_text_bytes
        if not self.meter.count(text_bytes, text_bytes > 0, chunk.num_tokens):
            return self._cut()
        self.num_chunks += 1
        return Token(delta.content, delta.reasoning) if text_bytes else None

    def _stale(self, frame: AnyChunk) -> None:
        self._num_stale_chunks += 1
        if self._num_stale_chunks == 1:  # once per request: a peer repeating itself is not worth a line each
            log.warning("request.stale_chunk", request_id=self.exchange.request_id,
                        provider_id=self.exchange.provider_id, seq=frame.seq, last_seq=self._last_seq)
        return None

    def _finish_reason(self, claimed: FinishReason) -> str:
        """`tool_calls` exactly when the response made calls (and was not cut at max_tokens), as OpenAI says."""
        if claimed is FinishReason.LENGTH:
            return claimed.value
        return (FinishReason.TOOL_CALLS if self.tool_calls.num_calls else FinishReason.STOP).value

    def _invalid_output(self, message: str) -> Broken:
        """A provider's tool-call delta broke the rules: the stream ends, it pays only what was delivered."""
        exchange = self.exchange
        self.router.observe(exchange, Outcome.ERROR, "an invalid tool call")
        log.warning("request.invalid_tool_call", request_id=exchange.request_id, provider_id=exchange.provider_id,
                    message=message)
        self.router.abandon(exchange, reason="invalid_output")
        self._settle(self.meter.delivered())
        return Broken(f"the provider sent an invalid tool call: {message}", "provider_invalid_output")

    def _cut(self) -> Finished:
        """A chunk would pass max_tokens: the stream ends here as `length`, the agent is told to stop."""
        exchange = self.exchange
        log.warning("usage.past_max_tokens", request_id=exchange.request_id, provider_id=exchange.provider_id,
                    max_tokens=self.meter.max_tokens, counted=self.meter.num_tokens)
        self.router.metrics.usage_clamped(exchange.model, exchange.provider_id)
        self.router.observe(exchange, Outcome.CLAMPED, "a chunk past max_tokens")
        self.router.abandon(exchange, reason="max_tokens")
        return Finished(FinishReason.LENGTH.value, self._settle(self.meter.delivered()))

    def _refuse_logprobs(self, problem: str) -> Broken:
        """Invented logprobs are not shown: the stream ends with an error, the attempt is cancelled, no charge."""
        exchange = self.exchange
        log.warning("logprobs.refused", request_id=exchange.request_id, provider_id=exchange.provider_id,
                    problem=problem)
        self.router.abandon(exchange, reason="invalid_logprobs")
        self._release(ReleaseReason.PROVIDER_ERROR)
        return Broken(f"the provider sent invalid logprobs ({problem})", "provider_invalid_logprobs")

    def _clamped(self, claimed: UsageReport, charge: Charge) -> None:
        exchange = self.exchange
        log.warning("usage.clamped", request_id=exchange.request_id, provider_id=exchange.provider_id,
                    claimed_prompt=claimed.prompt_tokens, claimed_completion=claimed.completion_tokens,
                    charged_prompt=charge.prompt_tokens, charged_completion=charge.completion_tokens)
        self.router.metrics.usage_clamped(exchange.model, exchange.provider_id)
        self.router.observe(exchange, Outcome.CLAMPED, "a usage claim over the bound")

    # -- the end, whichever it is
    def close(self, reason: ReleaseReason) -> None:
        if self._alarm is not None:
            self._alarm.cancel()
            self._alarm = None
        if self.exchange.provider is not None:
            self.router.abandon(self.exchange, reason=reason.value)
        if reason is ReleaseReason.CLIENT_DISCONNECT and self.exchange.body.stream and self.meter.num_tokens:
            self._settle(self.meter.delivered())  # the client left: it pays for the tokens it was sent
        self._release(reason)

    def _settle(self, charge: Charge) -> UsageReport:
        usage = UsageReport(prompt_tokens=charge.prompt_tokens, completion_tokens=charge.completion_tokens,
                            cached_tokens=charge.cached_tokens)
        if not self.is_closed:
            self.is_closed = True
            self.charged = usage
            self.accounts.settle(self.exchange.request_id, prompt_tokens=usage.prompt_tokens,
                                 completion_tokens=usage.completion_tokens, cached_tokens=usage.cached_tokens)
        return usage

    def _release(self, reason: ReleaseReason) -> None:
        if not self.is_closed:
            self.is_closed = True
            self.accounts.release(self.exchange.request_id, reason, produced_output_tokens=self.meter.num_tokens)


def release_reason(error: ApiError) -> ReleaseReason:
    return ReleaseReason.PROVIDER_ERROR if isinstance(error, ProviderFailed) else ReleaseReason.NO_CAPACITY
