"""One request's attempts until its first token: dispatch or queue, the agent's answer, retries elsewhere.

    first()   dispatch (or wait in the queue) → the agent answers:
                rejected          → the next provider at once (a "full" one is skipped until its next heartbeat)
                                    if agent.errors.is_retryable(code) says another may serve it, else fails
                accepted          → the first-token deadline starts now (not at the send: a long prefill
                                    behind `accepted` must not look like a dead provider), sized by the
                                    prompt and the slot's prefill rate (deadlines.py)
                error / link lost / timeout before the first token → another provider, same request id,
                                    at most `max_attempts` failures and no new attempt after
                                    `first_token_total_s`; an error whose code is not retryable fails
                                    at once, but "invalid_request" (the agent says the request itself is
                                    at fault: a logit_bias id past its vocabulary, a tool schema its
                                    grammar cannot take) is one stranger's word: the request tries another
                                    provider, and is a 400 with the agent's reason once
                                    `invalid_request_confirmations` providers said so or no other can take it
              and returns once the first token (or an empty completion) is in. Raises ApiError before that.
              An empty chunk (a channel header, or a peer pretending to be alive) is not a first token: its
              tokens wait for the attempt's first text and are dropped with the attempt if it fails.

Public names: Attempts, DELIVERED.
"""

from __future__ import annotations

import asyncio

import structlog

from agent.coordinator.deadlines import first_token_window_s
from agent.coordinator.errors import BadRequest, NoProvider, ProviderFailed, Saturated
from agent.coordinator.routing.exchange import Exchange, LinkLost
from agent.coordinator.routing.reputation import Outcome
from agent.coordinator.routing.router import Router
from agent.coordinator.usage import UsageMeter
from agent.errors import InvalidRequest, is_retryable
from agent.wire.frames import (
    FinishReason,
    InferenceAccepted,
    InferenceComplete,
    InferenceError,
    InferenceRejected,
)
from agent.wire.hot_chunks import CHUNK_FRAMES, AnyChunk, with_num_tokens

log = structlog.get_logger("agent.coordinator.attempts")
DELIVERED = (FinishReason.STOP, FinishReason.LENGTH, FinishReason.TOOL_CALLS)
INVALID_REQUEST = InvalidRequest.code  # the agent says the request itself cannot be served


class Attempts:
    def __init__(self, router: Router, exchange: Exchange, meter: UsageMeter) -> None:
        self.router, self.exchange, self.meter = router, exchange, meter
        self.settings = router.settings
        self.arrived_at = 0.0  # the event loop's time when first() began
        self._empty_tokens = 0  # tokens of empty chunks before this attempt's first text

    async def first(self) -> AnyChunk | InferenceComplete:
        """The first token (or an empty completion) of the attempt that delivers one; ApiError if none does."""
        loop = asyncio.get_running_loop()
        self.arrived_at = loop.time()
        while True:
            await self._dispatch()
            first = await self._await_first()
            if first is not None:
                return first
            self._within_total_time(loop.time())

    def _within_total_time(self, now: float) -> None:
        """Another attempt only while the request is young: a client that meets several silent providers
        hears back within first_token_total_s (plus the last attempt's own deadline)."""
        elapsed = now - self.arrived_at
        if elapsed >= self.settings.first_token_total_s:
            raise ProviderFailed(f"no first token after {elapsed:.0f} s and {self.exchange.num_failures} "
                                 f"attempt(s); last: {self.exchange.last_failure}")

    async def _dispatch(self) -> None:
        router, exchange = self.router, self.exchange
        submission = router.submit(exchange)
        if submission.refusal is not None and exchange.invalid_claims:
            raise self._invalid()  # no other provider can take it: the one that tried it is believed
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

    async def _await_first(self) -> AnyChunk | InferenceComplete | None:
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
                if frame.code == INVALID_REQUEST:
                    self._claimed_invalid(frame.reason)
                    return None
                self._unless_retryable(frame.code, frame.retryable, f"{exchange.provider_id} refused it: {frame.reason}")
                return None  # the router marked the provider; the next placement skips it
            if isinstance(frame, InferenceAccepted):
                self.meter.prompt_claim = frame.prompt_tokens
                deadline = loop.time() + self._first_token_window(frame.prompt_tokens)
                waiting_for = "first token"
                self._empty_tokens = 0
            elif isinstance(frame, CHUNK_FRAMES):
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
                if frame.code == INVALID_REQUEST:
                    self._claimed_invalid(frame.message)
                    return None
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
        return first_token_window_s(prompt_tokens, prefill_tps, self.settings, self.exchange.ask.num_images)

    def _hold_empty(self, chunk: AnyChunk) -> bool:
        """Keep an empty chunk's tokens for the first text; False when they pass max_tokens (no more are due)."""
        self._empty_tokens += self.meter.tokens_of(chunk)
        return self._empty_tokens <= self.meter.max_tokens

    def _with_held_tokens(self, chunk: AnyChunk) -> AnyChunk:
        if not self._empty_tokens or chunk.num_tokens is None:
            return chunk
        return with_num_tokens(chunk, chunk.num_tokens + self._empty_tokens)

    def _unless_retryable(self, code: str | None, retryable: bool, message: str) -> None:
        """The agent's code decides (agent.errors.is_retryable); its own flag only for a code we do not know."""
        if code is None or is_retryable(code, default=retryable):
            return
        self.router.metrics.attempt(self.exchange.model, "not_retryable")
        log.warning("request.not_retried", request_id=self.exchange.request_id, provider_id=self.exchange.provider_id,
                    code=code, message=message)
        raise ProviderFailed(f"not retried on another provider: the request itself cannot be served ({message})")

    def _claimed_invalid(self, reason: str) -> None:
        """The agent says the request itself cannot be served: believed once enough providers said so (a 400
        with its reason), else tried elsewhere. Not a failure of the provider's (no reputation mark), but
        counted against max_attempts, so a request every provider refuses ends."""
        exchange = self.exchange
        self.router.metrics.attempt(exchange.model, "invalid_request")
        log.info("request.claimed_invalid", request_id=exchange.request_id, provider_id=exchange.provider_id,
                 reason=reason)
        exchange.invalid_claims.append(reason)
        exchange.excluded[exchange.provider_id] = f"refused it as invalid: {reason}"
        exchange.num_failures += 1
        if len(exchange.invalid_claims) >= self.settings.invalid_request_confirmations:
            raise self._invalid()
        if exchange.num_failures >= self.settings.max_attempts:
            raise ProviderFailed(f"the request failed {exchange.num_failures} times before its first token; "
                                 f"last: {reason}")

    def _invalid(self) -> BadRequest:
        return BadRequest(f"the provider cannot serve this request: {self.exchange.invalid_claims[-1]}")

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
