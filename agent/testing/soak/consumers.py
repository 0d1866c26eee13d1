"""The soak's consumers: M streaming clients in a loop, each on one account's key, recording every outcome.

A client gives up after `max_wait_s` (simulated) and counts that request as lost with no answer. Each
request's text carries a tag (`soak c<consumer> n<number>`), so a hostile peer's record of what it was sent
says which requests it took, even those whose response never started.

Public names: Outcome, ConsumerPool, classify, LOST_CAUSES, tag_of.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

import httpx

from agent.testing.fleet.sse import StreamResult, stream_chat
from agent.testing.soak.config import SoakConfig

NOT_LOST = frozenset({"ok", "refused_billing", "refused_rate"})  # served, or the account's own limits


@dataclass(slots=True)
class Outcome:
    tag: str
    account: str
    started_s: float  # real seconds since the soak's start
    latency_s: float  # real seconds
    cause: str
    status: int
    request_id: str | None
    usage: dict | None
    num_chunks: int
    finish_reason: str | None
    error_code: str | None

    @property
    def is_lost(self) -> bool:
        return self.cause not in NOT_LOST


def tag_of(consumer: int, number: int) -> str:
    return f"soak c{consumer} n{number}"


def classify(result: StreamResult, *, gave_up: bool) -> str:
    if gave_up:
        return "no_answer"
    if result.exception is not None:
        return "client_error"
    if result.status == 200:
        if result.error is not None:
            return f"stream_error:{result.error_code or 'unknown'}"
        if not (result.finish_reason in ("stop", "length") and result.is_done):
            return "stream_incomplete"
        return "ok" if result.content or result.reasoning else "empty_answer"
    if result.status == 429 and result.error_code == "insufficient_quota":
        return "refused_billing"
    if result.status == 429:
        return "saturated" if result.error_code == "capacity_saturated" else "refused_rate"
    if result.status == 503:
        return result.error_code or "no_provider"
    if result.status == 502:
        return "provider_failed"
    return f"http_{result.status}"


@dataclass
class ConsumerPool:
    base_url: str
    keys: list[tuple[str, str]]  # (account, key), shared round-robin by the consumers
    config: SoakConfig
    outcomes: list[Outcome] = field(default_factory=list)
    num_in_flight: int = 0

    async def run(self, stop: asyncio.Event, t0: float) -> list[Outcome]:
        """Run every consumer until `stop`, then let the requests in flight end (each within max_wait_s)."""
        limits = httpx.Limits(max_connections=self.config.num_consumers + 8, max_keepalive_connections=None)
        timeout = httpx.Timeout(self.config.real(self.config.max_wait_s) + 30, connect=10)
        async with httpx.AsyncClient(base_url=self.base_url, limits=limits, timeout=timeout) as http:
            await asyncio.gather(*(self._consumer(http, i, stop, t0) for i in range(self.config.num_consumers)))
        return self.outcomes

    async def _consumer(self, http: httpx.AsyncClient, index: int, stop: asyncio.Event, t0: float) -> None:
        account, key = self.keys[index % len(self.keys)]
        number = 0
        while not stop.is_set():
            number += 1
            outcome = await self._one(http, key, account, tag_of(index, number), t0)
            self.outcomes.append(outcome)
            if outcome.cause in ("refused_billing", "refused_rate", "saturated"):
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.config.real(self.config.refusal_pause_s)):
                        await stop.wait()

    async def _one(self, http: httpx.AsyncClient, key: str, account: str, tag: str, t0: float) -> Outcome:
        config = self.config
        body = {"model": config.model, "max_tokens": config.max_tokens, "stream_options": {"include_usage": True},
                "messages": [{"role": "user", "content": f"{tag}: explain briefly why the sky is blue"}]}
        result, started, gave_up = StreamResult(), time.monotonic(), False
        self.num_in_flight += 1
        try:
            async with asyncio.timeout(config.real(config.max_wait_s)):
                await stream_chat(http, body, key=key, into=result)
        except TimeoutError:
            gave_up = True
        finally:
            self.num_in_flight -= 1
        return Outcome(tag, account, started - t0, time.monotonic() - started, classify(result, gave_up=gave_up),
                       result.status, result.request_id, result.usage, result.num_chunks, result.finish_reason,
                       result.error_code)

