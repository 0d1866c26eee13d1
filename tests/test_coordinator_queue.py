"""The per-model queue: requests wait for capacity and go the moment it appears; 429 only when saturated."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import openai
import pytest

from agent.wire.frames import SlotState
from tests.provider_support import FAST, GIB, GPT, Reply, coordinator, eventually, provider

MESSAGES = [{"role": "user", "content": "Say hello."}]
FULL = 8 * GIB  # reserved = budget: nothing fits


def client(server) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=server.base_url + "/v1", api_key="local", max_retries=0)


def ask(server, **kwargs):
    return asyncio.create_task(client(server).chat.completions.create(model=GPT.id, messages=MESSAGES, **kwargs))


async def test_a_queued_request_is_dispatched_the_moment_a_heartbeat_shows_capacity():
    async with coordinator(replace(FAST, heartbeat_interval_s=30)) as server:
        agent = await provider(server, GPT)
        await agent.set_slot(GPT.id, state=SlotState.RUNNING, reserved_bytes=FULL)
        pending = ask(server)
        await eventually(lambda: len(server.coordinator.router.queue(GPT.id)) == 1)
        assert agent.received == []
        freed_at = time.perf_counter()
        await agent.set_slot(GPT.id, state=SlotState.IDLE, reserved_bytes=0)
        result = await pending
        assert result.choices[0].message.content == "Hello, world"
        assert time.perf_counter() - freed_at < FAST.queue_max_wait_s / 2  # on the heartbeat, not at the deadline
        await agent.stop()


async def test_a_queued_request_is_dispatched_when_a_running_one_completes_without_waiting_for_a_heartbeat():
    # The agent admits one request at a time (its own gate, a budget for one); no heartbeat comes after
    # the first request ends, so only the completion itself can free its KV in the coordinator's view.
    async with coordinator(replace(FAST, heartbeat_interval_s=30)) as server:
        agent = await provider(server, GPT, gate=True, heartbeat_on_end=False, reply=Reply(chunk_delay_s=0.1))
        await agent.set_slot(GPT.id, budget_bytes=15 * 2**20)  # a 9 MiB reservation fits once beside the margin
        ledger = server.coordinator.router.registry.get(agent.provider_id).offers[GPT.id].pending
        first = ask(server, max_tokens=64)
        await eventually(lambda: any(e.is_accepted for e in ledger.entries.values()))
        await agent.heartbeat()  # it counts the first request now: its end must be credited
        await eventually(lambda: any(e.is_counted for e in ledger.entries.values()))
        second = ask(server, max_tokens=64)
        await eventually(lambda: len(server.coordinator.router.queue(GPT.id)) == 1)
        results = await asyncio.gather(first, second)
        assert [r.choices[0].message.content for r in results] == ["Hello, world"] * 2
        assert len(agent.received) == 2  # the second went once the first ended, and was not refused
        await agent.stop()


async def test_a_request_for_a_model_only_cold_providers_have_loads_one_and_runs_there():
    async with coordinator() as server:
        small = await provider(server, GPT, state=SlotState.COLD, memory_bytes=32 * GIB, load_delay_s=0.2)
        large = await provider(server, GPT, state=SlotState.COLD, memory_bytes=128 * GIB, load_delay_s=0.2)
        result = await client(server).chat.completions.create(model=GPT.id, messages=MESSAGES)
        assert result.choices[0].message.content == "Hello, world"
        assert large.loads == [GPT.id] and small.loads == []  # the biggest machine first, and only one
        assert len(large.received) == 1
        for agent in (small, large):
            await agent.stop()


async def test_429_with_retry_after_only_when_every_capable_provider_stayed_full_for_the_whole_wait():
    async with coordinator(replace(FAST, queue_max_wait_s=0.3)) as server:
        agent = await provider(server, GPT)
        await agent.set_slot(GPT.id, state=SlotState.RUNNING, reserved_bytes=FULL)
        started = time.perf_counter()
        with pytest.raises(openai.RateLimitError) as saturated:
            await client(server).chat.completions.create(model=GPT.id, messages=MESSAGES)
        assert 0.3 <= time.perf_counter() - started < 1.5
        assert saturated.value.status_code == 429 and saturated.value.body["code"] == "capacity_saturated"
        assert saturated.value.response.headers["retry-after"] == "2"
        assert server.coordinator.accounts.num_holds == 0 and agent.received == []
        await agent.stop()


async def test_429_at_once_when_the_queue_is_full():
    async with coordinator(replace(FAST, queue_depth=2, queue_max_wait_s=5)) as server:
        agent = await provider(server, GPT)
        await agent.set_slot(GPT.id, state=SlotState.RUNNING, reserved_bytes=FULL)
        queued = [ask(server), ask(server)]
        await eventually(lambda: len(server.coordinator.router.queue(GPT.id)) == 2)
        with pytest.raises(openai.RateLimitError):
            await client(server).chat.completions.create(model=GPT.id, messages=MESSAGES)
        await agent.set_slot(GPT.id, state=SlotState.IDLE, reserved_bytes=0)
        assert [r.choices[0].message.content for r in await asyncio.gather(*queued)] == ["Hello, world"] * 2
        await agent.stop()


async def test_no_request_is_shed_while_a_capable_provider_sits_idle():
    async with coordinator(replace(FAST, queue_depth=1, queue_max_wait_s=0.2)) as server:
        full = await provider(server, GPT)
        await full.set_slot(GPT.id, state=SlotState.RUNNING, reserved_bytes=FULL)
        idle = await provider(server, GPT, reply=Reply(chunk_delay_s=0.02))
        requests = client(server)
        results = await asyncio.gather(*(requests.chat.completions.create(model=GPT.id, messages=MESSAGES)
                                         for _ in range(32)))
        assert all(r.choices[0].message.content == "Hello, world" for r in results)
        assert len(idle.received) == 32 and full.received == []
        for agent in (full, idle):
            await agent.stop()


async def test_a_client_that_leaves_while_queued_is_taken_off_the_queue_and_its_hold_released():
    async with coordinator(replace(FAST, queue_max_wait_s=5)) as server:
        agent = await provider(server, GPT)
        await agent.set_slot(GPT.id, state=SlotState.RUNNING, reserved_bytes=FULL)
        pending = ask(server)
        router = server.coordinator.router
        await eventually(lambda: len(router.queue(GPT.id)) == 1)
        pending.cancel()
        await asyncio.gather(pending, return_exceptions=True)
        await eventually(lambda: len(router.queue(GPT.id)) == 0 and server.coordinator.accounts.num_holds == 0)
        await agent.set_slot(GPT.id, state=SlotState.IDLE, reserved_bytes=0)
        # A request after the capacity came back is served; had the one that left still been queued
        # (first in line), it would have been sent to the agent before this one.
        after = [{"role": "user", "content": "asked after the first one left"}]
        await client(server).chat.completions.create(model=GPT.id, messages=after)
        assert [request.body.messages[0].content for request in agent.received] == [after[0]["content"]]
        await agent.stop()
