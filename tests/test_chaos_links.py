"""Chaos on the wire: every agent link cut at once (before and after the first token), and a coordinator
restart under live agents. Agents dial through a relay that can cut every connection (agent.testing.fleet.proxy)."""

from __future__ import annotations

import asyncio

import httpx

from agent.coordinator.billing.accounts import Accounts
from agent.coordinator.http.app import build_app, running
from agent.testing.fleet.agent import SimAgent
from agent.testing.fleet.harness import funded_accounts, leaks
from agent.testing.fleet.proxy import Relay
from agent.testing.fleet.sse import stream_chat
from tests.provider_support import coordinator, eventually
from tests.test_chaos_agents import NUM_TOKENS, SCALE, SETTINGS, body, expected_text, holder, long_answer


async def through_relays(server, count: int, **kwargs) -> tuple[list[SimAgent], list[Relay]]:
    """`count` agents, each dialling the coordinator through its own relay (its own network path)."""
    relays = [await Relay.start("127.0.0.1", server.port) for _ in range(count)]
    agents = [await SimAgent(f"ws://127.0.0.1:{relay.port}/ws/provider", time_scale=SCALE, backoff_base_s=0.02,
                             **kwargs).start() for relay in relays]
    await registered(server, agents)
    return agents, relays


async def registered(server, agents, timeout: float = 5.0) -> None:
    router = server.coordinator.router
    await eventually(lambda: len(router.registry) == len(agents) and all(
        p.heartbeat and any(s.state in ("idle", "running") for s in p.heartbeat.slots) for p in router.registry),
        timeout=timeout, what="agents registered and warm")


async def test_a_link_cut_before_the_first_token_is_retried_transparently_on_another_agent(tmp_path):
    accounts, key = funded_accounts(tmp_path / "keys.db")
    async with coordinator(SETTINGS, accounts) as server:
        agents, relays = await through_relays(server, 2, scripts=long_answer(delay_s=20))
        async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as http:
            request = asyncio.create_task(stream_chat(http, body("cut early"), key=key))
            await eventually(lambda: holder(agents) is not None)
            cut = agents.index(holder(agents))
            relays[cut].cut()
            result = await request
        assert result.status == 200 and result.text == expected_text("cut early") and result.error is None
        await registered(server, agents)
        assert agents[cut].link.num_connects == 2  # the cut agent came back
        await eventually(lambda: not leaks(server.coordinator, agents), timeout=3)
        for agent in agents:
            await agent.stop()
        for relay in relays:
            await relay.close()
    accounts.close()


async def test_every_link_cut_at_once_before_the_first_token_waits_for_a_reconnect_and_retries(tmp_path):
    # No provider is registered at that instant: the coordinator waits (bounded by the queue's max wait)
    # for the agents to reconnect, then retries the same request id transparently.
    accounts, key = funded_accounts(tmp_path / "keys.db")
    async with coordinator(SETTINGS, accounts) as server:
        agents, relays = await through_relays(server, 2, scripts=long_answer(delay_s=20))
        async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as http:
            request = asyncio.create_task(stream_chat(http, body("cut all"), key=key))
            await eventually(lambda: holder(agents) is not None)
            for relay in relays:
                relay.cut()
            result = await request
            assert result.status == 200, result.error
            assert result.text == expected_text("cut all") and result.is_done
            await registered(server, agents)
            await eventually(lambda: not leaks(server.coordinator, agents), timeout=3)
            after = await stream_chat(http, body("after"), key=key)
        assert after.text == expected_text("after")
        for agent in agents:
            await agent.stop()
        for relay in relays:
            await relay.close()
    accounts.close()


async def test_links_cut_mid_stream_end_the_stream_cleanly_and_free_the_agents_kv(tmp_path):
    accounts, key = funded_accounts(tmp_path / "keys.db")
    async with coordinator(SETTINGS, accounts) as server:
        agents, relays = await through_relays(server, 2, scripts=long_answer())

        def cut_at_tenth(result) -> None:
            if result.num_chunks == 10:
                relays[agents.index(holder(agents))].cut()

        async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as http:
            result = await stream_chat(http, body("cut late"), key=key, on_chunk=cut_at_tenth)
            assert result.finish_reason == "error" and result.error["code"] == "provider_link_lost"
            assert result.is_done and expected_text("cut late").startswith(result.text)
            assert 10 <= result.num_chunks < NUM_TOKENS
            await eventually(lambda: not leaks(server.coordinator, agents), timeout=3)  # link_lost cancelled it
            await registered(server, agents)
            after = await stream_chat(http, body("after the cut"), key=key)
        assert after.text == expected_text("after the cut")
        for agent in agents:
            await agent.stop()
        for relay in relays:
            await relay.close()
    accounts.close()


async def test_a_coordinator_restart_releases_every_hold_and_the_agents_come_back_and_serve(tmp_path):
    db = tmp_path / "keys.db"
    accounts, key = funded_accounts(db)
    async with running(build_app(accounts, SETTINGS)) as server:
        port = server.port
        agents = [await SimAgent(server.ws_url, time_scale=SCALE, backoff_base_s=0.02, scripts=long_answer(delay_s=5))
                  .start() for _ in range(2)]
        await registered(server, agents)
        async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as http:
            in_flight = asyncio.create_task(stream_chat(http, body("during the restart"), key=key))
            await eventually(lambda: holder(agents) is not None)
            server.server.should_exit = True  # a restart: this process's coordinator goes away now
        interrupted = await in_flight
    assert interrupted.error is not None or interrupted.exception is not None or interrupted.text
    assert accounts.num_holds == 0  # the shutdown released the request's hold
    await eventually(lambda: all(not leaks_on(agent) for agent in agents), timeout=3)
    accounts.flush()
    accounts.close()
    restarted = Accounts.from_db(db)
    async with running(build_app(restarted, SETTINGS), port=port) as server:
        await registered(server, agents, timeout=10)
        async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as http:
            result = await stream_chat(http, body("after the restart"), key=key)
        assert result.status == 200 and result.text == expected_text("after the restart")
        await eventually(lambda: not leaks(server.coordinator, agents), timeout=3)
        for agent in agents:
            await agent.stop()
    restarted.close()


def leaks_on(agent: SimAgent) -> bool:
    return bool(agent.handler.tasks) or any(s.kv_reserved_bytes for s in agent.engine.snapshot().slots)
