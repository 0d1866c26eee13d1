"""Chaos on the agent side: a Mac dies before its first token or mid-stream, or is too slow.

Real agents (LinkHandler + Link + engine core on the simulated backend) against the real coordinator with a
funded key. Every test ends with the books balanced: no hold, nothing in flight at the coordinator, no
KV reserved on a live agent; and the text the client got is the agent's text, in order, each token once.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

import httpx

from agent.engine.fake_script import FakeScript, script_seed, script_tokens
from agent.engine.types import GenerationRequest
from agent.testing.fleet.agent import SimAgent
from agent.testing.fleet.harness import funded_accounts, leaks
from agent.testing.fleet.profiles import GPT_OSS
from agent.testing.fleet.sse import stream_chat
from tests.metrics_support import counted
from tests.provider_support import FAST, coordinator, eventually

SCALE = 0.01  # one simulated second lasts 10 ms: 400 tokens at ~65 tok/s stream for ~60 ms
SETTINGS = replace(FAST, first_token_timeout_s=0.5, stall_timeout_s=0.5)
NUM_TOKENS = 400


def long_answer(delay_s: float = 0.0):
    def script(request: GenerationRequest) -> FakeScript:
        return FakeScript(output_tokens=NUM_TOKENS, first_token_delay_s=delay_s)
    return script


def expected_text(content: str) -> str:
    request = GenerationRequest("x", GPT_OSS, ({"role": "user", "content": content},))
    return "".join(script_tokens(FakeScript(output_tokens=NUM_TOKENS), script_seed(request))[1])


def body(content: str) -> dict:
    return {"model": GPT_OSS, "messages": [{"role": "user", "content": content}], "max_tokens": 1000}


async def fleet(server, *agents_kwargs) -> list[SimAgent]:
    agents = [await SimAgent(server.ws_url, time_scale=SCALE, backoff_base_s=0.05, **kw).start()
              for kw in agents_kwargs]
    router = server.coordinator.router
    await eventually(lambda: len(router.registry) == len(agents) and all(
        p.heartbeat and any(s.state == "idle" for s in p.heartbeat.slots) for p in router.registry), timeout=5)
    return agents


def holder(agents: list[SimAgent]) -> SimAgent | None:
    return next((agent for agent in agents if agent.handler.tasks), None)


async def balanced(server, agents) -> None:
    await eventually(lambda: not leaks(server.coordinator, agents), timeout=3, what="books balanced")


async def test_an_agent_killed_before_its_first_token_is_replaced_transparently_and_the_answer_is_whole(tmp_path):
    accounts, key = funded_accounts(tmp_path / "keys.db")
    async with coordinator(SETTINGS, accounts) as server:
        agents = await fleet(server, {"scripts": long_answer(delay_s=20)}, {"scripts": long_answer(delay_s=20)})
        async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as http:
            request = asyncio.create_task(stream_chat(http, body("kill me early"), key=key))
            await eventually(lambda: holder(agents) is not None, what="an agent holds the request")
            victim = holder(agents)
            await victim.kill()
            result = await request
        assert result.status == 200 and result.finish_reason in ("length", "stop")
        assert result.text == expected_text("kill me early") and result.num_chunks == NUM_TOKENS
        assert result.error is None and result.is_done
        await balanced(server, agents)
        assert counted(server.coordinator.metrics, "darkbloom_attempts_total", model=GPT_OSS, outcome="link_lost") == 1
        for agent in agents:
            await agent.stop()
    accounts.close()


async def test_an_agent_killed_mid_stream_ends_the_stream_with_a_clean_sse_error_and_no_token_twice(tmp_path):
    accounts, key = funded_accounts(tmp_path / "keys.db")
    async with coordinator(SETTINGS, accounts) as server:
        agents = await fleet(server, {"scripts": long_answer()}, {"scripts": long_answer()})
        killed = asyncio.Event()

        def kill_at_tenth(result) -> None:
            if result.num_chunks == 10 and not killed.is_set():
                killed.set()
                asyncio.get_running_loop().create_task(holder(agents).kill())

        async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as http:
            result = await stream_chat(http, body("kill me late"), key=key, on_chunk=kill_at_tenth)
        assert killed.is_set() and result.status == 200
        assert result.finish_reason == "error" and result.error["code"] == "provider_link_lost" and result.is_done
        assert 10 <= result.num_chunks < NUM_TOKENS
        assert expected_text("kill me late").startswith(result.text)  # a prefix: nothing lost, nothing twice
        await balanced(server, agents)
        for agent in agents:
            await agent.stop()
    accounts.close()


async def test_a_slow_agent_that_misses_the_first_token_deadline_is_cancelled_and_another_serves(tmp_path):
    accounts, key = funded_accounts(tmp_path / "keys.db")
    async with coordinator(SETTINGS, accounts) as server:
        slow, fast = await fleet(server, {"scripts": long_answer(delay_s=1000), "memory_gb": 128},
                                 {"scripts": long_answer(), "memory_gb": 32})
        async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as http:
            result = await stream_chat(http, body("be quick"), key=key)
        assert result.status == 200 and result.text == expected_text("be quick") and result.error is None
        await balanced(server, [slow, fast])  # the slow one freed its KV when the coordinator cancelled
        metrics = server.coordinator.metrics
        # The slow one (most free KV) was tried first and ran out of time; then the fast one streamed.
        assert counted(metrics, "darkbloom_attempts_total", model=GPT_OSS, outcome="timeout") == 1
        assert counted(metrics, "darkbloom_attempts_total", model=GPT_OSS, outcome="streamed") == 1
        assert (slow.handler.num_served, fast.handler.num_served) == (1, 1)  # slow: ended by the cancel
        for agent in (slow, fast):
            await agent.stop()
    accounts.close()


async def test_an_agent_that_freezes_mid_stream_ends_the_stream_cleanly_and_frees_its_reservation(tmp_path):
    accounts, key = funded_accounts(tmp_path / "keys.db")
    async with coordinator(SETTINGS, accounts) as server:
        (agent,) = await fleet(server, {"scripts": long_answer()})

        def freeze_at_fifth(result) -> None:
            if result.num_chunks == 5:
                agent.engine.freeze()

        async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as http:
            result = await stream_chat(http, body("stall"), key=key, on_chunk=freeze_at_fifth)
        assert result.status == 200 and result.is_done
        assert result.finish_reason == "error" and result.error["code"] == "provider_stalled"
        assert expected_text("stall").startswith(result.text) and result.num_chunks >= 5
        await balanced(server, [agent])  # the coordinator's cancel freed the KV, frozen or not
        agent.engine.thaw()
        async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as http:
            again = await stream_chat(http, body("again"), key=key)
        assert again.text == expected_text("again")  # the thawed agent serves again
        await balanced(server, [agent])
        await agent.stop()
    accounts.close()
