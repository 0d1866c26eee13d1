"""One request's life after admission: dispatch or queue, attempts until the first token, then the stream.

    start()   dispatch (or wait in the queue) → the agent answers:
                rejected          → the next provider at once (a "full" one is skipped until its next heartbeat)
                                    if agent.errors.is_retryable(code) says another may serve it, else fails
                accepted          → the first-token deadline starts now (not at the send: a long prefill
                                    behind `accepted` must not look like a dead provider), sized by the
                                    prompt and the slot's prefill rate (deadlines.py)
                error / link lost / timeout before the first token → another provider, same request id,
                                    at most `max_attempts` failures and no new attempt after
                                    `first_token_total_s`; an error whose code is not retryable (the
                                    request itself is at fault) fails at once
              and returns once the first token (or an empty completion) is in. Raises ApiError before that.
              An empty chunk (a channel header, or a peer pretending to be alive) is not a first token: its
              tokens wait for the attempt's first text and are dropped with the attempt if it fails.
    next()    Token ... then Finished (settled from the agent's usage) or Broken (an error after the first
              token: never retried, the stream ends with finish_reason "error"). A stall (no text for
              `stall_timeout_s`) or the stream's own deadline ends it Broken too.
    close()   every exit: cancels the attempt at the agent if one is open, and releases the hold unless
              the request was settled. Idempotent.

Public names: RequestFlow, Token, Finished, Broken.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import structlog

from agent.coordinator.billing.accounts import Accounts, ReleaseReason
from agent.coordinator.deadlines import first_token_window_s, stream_deadline
from agent.coordinator.errors import ApiError, BadRequest, NoProvider, ProviderFailed, Saturated
from agent.coordinator.logprob_check import LogprobsRefused, checked_logprobs
from agent.coordinator.routing.exchange import Exchange, LinkLost
from agent.coordinator.routing.reputation import Outcome
from agent.coordinator.routing.router import Router
from agent.coordinator.tool_calls import InvalidToolCall, ToolCallLedger
from agent.coordinator.usage import Charge, UsageMeter
from agent.errors import is_retryable
from agent.wire.frames import (
    FinishReason,
    InferenceAccepted,
    InferenceComplete,
    InferenceError,
    InferenceRejected,
    InferenceResponseChunk,
    ToolCallDelta,
    UsageReport,
)
from agent.wire.logprobs import TokenLogprob

log = structlog.get_logger("agent.coordinator.flow")
DELIVERED = (FinishReason.STOP, FinishReason.LENGTH, FinishReason.TOOL_CALLS)


@dataclass(frozen=True, slots=True)
class Token:
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
        self._first: InferenceResponseChunk | InferenceComplete | None = None
        self._empty_tokens = 0  # tokens of empty chunks before this attempt's first text
        self._arrived_at = 0.0  # the event loop's time when start() began
        self._stream_deadline = float("inf")

    # -- before the first token
    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._arrived_at = loop.time()
        while True:
            await self._dispatch()
            first = await self._await_first()
            if first is not None:
                self._first = first
                self.first_token_at = self.router.clock()
                self._stream_deadline = stream_deadline(loop.time(), self._arrived_at, self.meter.max_tokens,
                                                        self.settings)
                return
            self._within_total_time(loop.time())

    def _within_total_time(self, now: float) -> None:
        """Another attempt only while the request is young: a client that meets several silent providers
        hears back within first_token_total_s (plus the last attempt's own deadline)."""
        elapsed = now - self._arrived_at
        if elapsed >= self.settings.first_token_total_s:
            raise ProviderFailed(f"no first token after {elapsed:.0f} s and {self.exchange.num_failures} "
                                 f"attempt(s); last: {self.exchange.last_failure}")

    async def _dispatch(self) -> None:
        router, exchange = self.router, self.exchange
        submission = router.submit(exchange)
        if submission.refusal is not None and exchange.last_failure:
            submission = await self._await_reconnect(submission)
        if submission.refusal is not None:
            if exchange.last_failure:
                raise ProviderFailed(f"the request failed on every provider that could serve it; "
                                     f"last: {exchange.last_failure}")
            if (size := submission.oversize) is not None:  # a retry cannot help: the request must change
                raise BadRequest(size.message, param=size.param, code=size.code)
            raise NoProvider(submission.refusal, retry_after_s=self.settings.retry_after_s)
        if submission.is_saturated:
            raise Saturated(f"every provider that can serve {exchange.model} is full and its queue is full "
                            f"({self.settings.queue_depth} requests); retry later",
                            retry_after_s=router.retry_after_s(exchange))
        waiter = submission.waiter
        if waiter is None:
            return
        try:
            # Shielded: a timeout racing the wake-up must not cancel a future that says "dispatched".
            async with asyncio.timeout(max(0.0, waiter.deadline - router.clock())):
                await asyncio.shield(waiter.future)
        except TimeoutError:
            pass
        finally:
            if not waiter.future.done():
                router.dequeue(waiter)
        if not waiter.future.done():
            self._after_wait()

    async def _await_reconnect(self, submission):
        """A retry found no provider at all: when every link dropped at once (a network blip, a coordinator
        hiccup) the agents are reconnecting now, so wait for one, bounded by the queue's max wait, before
        giving up. Each registration of the model wakes it (Registry.arrival) to try again at once. A
        request that never had a provider still gets its 503 at once."""
        router, exchange = self.router, self.exchange
        deadline = router.clock() + self.settings.queue_max_wait_s
        while submission.refusal is not None:
            arrival = router.registry.arrival(exchange.model)
            try:
                async with asyncio.timeout(max(0.0, deadline - router.clock())):
                    await arrival
            except TimeoutError:
                return submission
            finally:
                arrival.cancel()
            submission = router.submit(exchange)
        return submission

    def _after_wait(self) -> None:
        """The queue wait ran out: one last look, then 429 (capable but full) or 503 (none can)."""
        exchange = self.exchange
        placement = self.router.try_dispatch(exchange)
        if exchange.provider is not None:
            return
        if placement.can_ever:
            raise Saturated(f"every provider that can serve {exchange.model} stayed full for "
                            f"{self.settings.queue_max_wait_s:g} s; retry later",
                            retry_after_s=self.router.retry_after_s(exchange))
        raise NoProvider(placement.why_never())

    async def _await_first(self) -> InferenceResponseChunk | InferenceComplete | None:
        """The current attempt's first token, or None when it failed and another attempt should follow."""
        exchange, loop = self.exchange, asyncio.get_running_loop()
        deadline, waiting_for = loop.time() + self.settings.accept_timeout_s, "accepted"
        while True:
            try:
                async with asyncio.timeout_at(deadline):
                    frame = await exchange.next_event()
            except TimeoutError:
                self.router.abandon(exchange, reason="timeout")
                self._failed("timeout", f"{self.exchange.provider_id} sent no {waiting_for} in time")
                return None
            if isinstance(frame, InferenceRejected):
                self._unless_retryable(frame.code, frame.retryable, f"{exchange.provider_id} refused it: {frame.reason}")
                return None  # the router marked the provider; the next placement skips it
            if isinstance(frame, InferenceAccepted):
                self.meter.prompt_claim = frame.prompt_tokens
                deadline = loop.time() + self._first_token_window(frame.prompt_tokens)
                waiting_for = "first token"
                self._empty_tokens = 0
            elif isinstance(frame, InferenceResponseChunk):
                if frame.delta.is_empty:
                    if self._hold_empty(frame):
                        continue
                    self.router.abandon(exchange, reason="max_tokens")
                    self._failed("empty_flood", f"{exchange.provider_id} sent more than max_tokens of empty chunks")
                    return None
                self.router.metrics.attempt(exchange.model, "streamed")
                self.router.observe(exchange, Outcome.FIRST_TOKEN)
                return self._with_held_tokens(frame)
            elif isinstance(frame, InferenceComplete):
                if frame.finish_reason in DELIVERED:
                    self.router.metrics.attempt(exchange.model, "streamed")
                    self.router.observe(exchange, Outcome.FIRST_TOKEN)
                    return frame
                self._failed("ended", f"{self.exchange.provider_id} ended it ({frame.finish_reason}) before a token")
                return None
            elif isinstance(frame, InferenceError):
                message = f"{exchange.provider_id}: {frame.code}: {frame.message}"
                self._unless_retryable(frame.code, frame.retryable, message)
                self._failed("error", message)  # max_attempts bounds a request that fails everywhere
                return None
            elif isinstance(frame, LinkLost):
                self._failed("link_lost", f"{frame.provider_id}'s link dropped ({frame.reason})")
                return None

    def _first_token_window(self, claimed_prompt_tokens: int) -> float:
        """deadlines.py: the agent's prompt count within the coordinator's bound, at the slot's reported rate."""
        provider = self.exchange.provider
        offer = provider.offers.get(self.exchange.model) if provider is not None else None
        prefill_tps = offer.status.prefill_tps if offer is not None and offer.status is not None else None
        prompt_tokens = min(claimed_prompt_tokens, self.meter.prompt_bound)
        return first_token_window_s(prompt_tokens, prefill_tps, self.settings)

    def _hold_empty(self, chunk: InferenceResponseChunk) -> bool:
        """Keep an empty chunk's tokens for the first text; False when they pass max_tokens (no more are due)."""
        self._empty_tokens += self.meter.tokens_of(chunk)
        return self._empty_tokens <= self.meter.max_tokens

    def _with_held_tokens(self, chunk: InferenceResponseChunk) -> InferenceResponseChunk:
        if not self._empty_tokens or chunk.num_tokens is None:
            return chunk
        return chunk.model_copy(update={"num_tokens": chunk.num_tokens + self._empty_tokens})

    def _unless_retryable(self, code: str | None, retryable: bool, message: str) -> None:
        """The agent's code decides (agent.errors.is_retryable); its own flag only for a code we do not know."""
        if code is None or is_retryable(code, default=retryable):
            return
        self.router.metrics.attempt(self.exchange.model, "not_retryable")
        log.warning("request.not_retried", request_id=self.exchange.request_id, provider_id=self.exchange.provider_id,
                    code=code, message=message)
        raise ProviderFailed(f"not retried on another provider: the request itself cannot be served ({message})")

    def _failed(self, outcome: str, message: str) -> None:
        exchange = self.exchange
        self.router.metrics.attempt(exchange.model, outcome)
        self.router.observe(exchange, outcome, message)
        exchange.num_failures += 1
        exchange.last_failure = message
        exchange.excluded[self.exchange.provider_id] = f"failed this request: {message}"
        log.warning("request.attempt_failed", request_id=exchange.request_id, provider_id=self.exchange.provider_id,
                    outcome=outcome, message=message, attempt=exchange.num_failures)
        if exchange.num_failures >= self.settings.max_attempts:
            raise ProviderFailed(f"the request failed {exchange.num_failures} times before its first token; "
                                 f"last: {message}")

    # -- after it
    async def next(self) -> Token | Finished | Broken:
        loop = asyncio.get_running_loop()
        stall_at = loop.time() + self.settings.stall_timeout_s  # empty chunks do not move it
        while True:
            frame, self._first = self._first, None
            if frame is None:
                try:
                    async with asyncio.timeout_at(min(stall_at, self._stream_deadline)):
                        frame = await self.exchange.next_event()
                except TimeoutError:
                    return self._timed_out(is_stall=stall_at <= self._stream_deadline)
            event = self._convert(frame)
            if event is not None:
                return event

    def _timed_out(self, *, is_stall: bool) -> Broken:
        self.router.observe(self.exchange, Outcome.STALLED if is_stall else Outcome.TIMEOUT)
        self.router.abandon(self.exchange, reason="stalled" if is_stall else "deadline")
        self._release(ReleaseReason.TIMEOUT)  # as for a provider error mid-stream: not charged
        if is_stall:
            return Broken(f"the provider stalled: no token for {self.settings.stall_timeout_s:g} s", "provider_stalled")
        return Broken("the provider did not finish within the request's deadline", "provider_too_slow")

    def _convert(self, frame: object) -> Token | Finished | Broken | None:
        if isinstance(frame, InferenceResponseChunk):
            try:
                logprobs = checked_logprobs(frame, self.exchange.body.num_top_logprobs)
            except LogprobsRefused as exc:
                return self._refuse_logprobs(str(exc))
            if not self.meter.admit(frame):
                return self._cut()
            try:
                self.tool_calls.admit(frame.delta.tool_calls)
            except InvalidToolCall as exc:
                return self._invalid_output(str(exc))
            self.num_chunks += 1
            if frame.delta.is_empty:
                return None
            return Token(frame.delta.content, frame.delta.reasoning, logprobs, frame.delta.tool_calls)
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
        if self.exchange.provider is not None:
            self.router.abandon(self.exchange, reason=reason.value)
        if reason is ReleaseReason.CLIENT_DISCONNECT and self.exchange.body.stream and self.meter.num_tokens:
            self._settle(self.meter.delivered())  # the client left: it pays for the tokens it was sent
        self._release(reason)

    def _settle(self, charge: Charge) -> UsageReport:
        usage = UsageReport(prompt_tokens=charge.prompt_tokens, completion_tokens=charge.completion_tokens)
        if not self.is_closed:
            self.is_closed = True
            self.charged = usage
            self.accounts.settle(self.exchange.request_id, prompt_tokens=usage.prompt_tokens,
                                 completion_tokens=usage.completion_tokens)
        return usage

    def _release(self, reason: ReleaseReason) -> None:
        if not self.is_closed:
            self.is_closed = True
            self.accounts.release(self.exchange.request_id, reason, produced_output_tokens=self.meter.num_tokens)


def release_reason(error: ApiError) -> ReleaseReason:
    return ReleaseReason.PROVIDER_ERROR if isinstance(error, ProviderFailed) else ReleaseReason.NO_CAPACITY
