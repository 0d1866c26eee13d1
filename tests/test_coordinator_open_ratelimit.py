"""Rate limits in open mode (issue 11 point 5): no keys, so each client address has a request rate, taken
before the body is read; a flood from one address gets 429 with the coordinator's own Retry-After, and
everyone else, and one user at a normal pace, is served."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import httpx
import pytest

from agent.coordinator.billing.client_ratelimit import ClientRateLimiter
from agent.coordinator.billing.ratelimit import RateLimited
from tests.provider_support import FAST, GPT, coordinator, provider

CHAT = {"model": GPT.id, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}
REQUESTS_PER_MINUTE = 5


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_a_flood_from_one_address_in_open_mode_gets_429_with_a_bounded_retry_after():
    settings = replace(FAST, open_requests_per_minute_per_ip=REQUESTS_PER_MINUTE)
    async with coordinator(settings) as server, httpx.AsyncClient(base_url=server.base_url) as http:
        answers = [await http.post("/v1/chat/completions", json={}) for _ in range(REQUESTS_PER_MINUTE + 3)]
    assert [a.status_code for a in answers[:REQUESTS_PER_MINUTE]] == [400] * REQUESTS_PER_MINUTE  # read, judged
    for refused in answers[REQUESTS_PER_MINUTE:]:
        assert refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limit_exceeded"
        assert 1 <= int(refused.headers["retry-after"]) <= 60 / REQUESTS_PER_MINUTE
        assert "per address" in refused.json()["error"]["message"]


async def test_another_address_is_served_while_one_is_over_its_limit():
    settings = replace(FAST, open_requests_per_minute_per_ip=REQUESTS_PER_MINUTE)
    async with coordinator(settings) as server:
        agent = await provider(server, GPT)
        async with httpx.AsyncClient(base_url=server.base_url) as flooder:
            answers = [await flooder.post("/v1/chat/completions", json={}) for _ in range(REQUESTS_PER_MINUTE + 1)]
            assert answers[-1].status_code == 429
        other = httpx.AsyncHTTPTransport(local_address="127.0.0.2")
        async with httpx.AsyncClient(base_url=server.base_url, transport=other) as neighbour:
            served = await neighbour.post("/v1/chat/completions", json=CHAT)
        assert served.status_code == 200 and served.json()["choices"][0]["message"]["content"] == "Hello, world"
        await agent.stop()


async def test_one_local_user_at_a_brisk_pace_is_never_limited_by_the_default():
    async with coordinator(FAST) as server, httpx.AsyncClient(base_url=server.base_url) as http:
        assert server.coordinator.settings.open_requests_per_minute_per_ip is not None  # on by default
        agent = await provider(server, GPT)
        answers = await asyncio.gather(*(http.post("/v1/chat/completions", json=CHAT) for _ in range(40)))
        assert [a.status_code for a in answers] == [200] * 40
        await agent.stop()


def test_an_address_is_admitted_again_once_its_bucket_refills():
    clock = FakeClock()
    limiter = ClientRateLimiter(REQUESTS_PER_MINUTE, clock=clock)
    for _ in range(REQUESTS_PER_MINUTE):
        limiter.admit("10.0.0.1")
    with pytest.raises(RateLimited) as refused:
        limiter.admit("10.0.0.1")
    assert refused.value.retry_after_s == pytest.approx(60 / REQUESTS_PER_MINUTE)
    limiter.admit("10.0.0.2")  # a neighbour has its own bucket
    clock.now += 60 / REQUESTS_PER_MINUTE
    limiter.admit("10.0.0.1")


def test_a_spray_of_addresses_costs_bounded_memory():
    limiter = ClientRateLimiter(REQUESTS_PER_MINUTE, max_clients=100, clock=FakeClock())
    for n in range(5_000):
        limiter.admit(f"10.{n // 65536}.{n // 256 % 256}.{n % 256}")
    assert limiter.num_clients == 100


def test_no_limit_means_every_request_is_admitted_and_nothing_is_tracked():
    limiter = ClientRateLimiter(None, clock=FakeClock())
    for _ in range(1_000):
        limiter.admit("10.0.0.1")
    assert limiter.is_unlimited and limiter.num_clients == 0
