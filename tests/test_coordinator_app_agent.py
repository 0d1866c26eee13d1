"""The coordinator with the real agent side (link, provider, fake engine) instead of the scripted provider.

Skipped while the agent's daemon pieces are not importable (they are built beside the coordinator).
"""

from __future__ import annotations

import asyncio

import httpx
import openai
import pytest

from tests.provider_support import FAST, GIB, GPT, coordinator, eventually

provider_module = pytest.importorskip("agent.provider")
engine_module = pytest.importorskip("agent.engine")
link_module = pytest.importorskip("agent.link.client")


async def real_agent(server, *, warm: bool):
    from agent.frames import Hardware

    engine = engine_module.FakeEngine({GPT.id: GPT}, memory_bytes=64 * GIB, time_scale=0.01)
    await engine.start()
    if warm:
        await engine.load(GPT.id)
    agent = provider_module.Provider(engine, {GPT.id: GPT}, Hardware(chip="Fake M4", memory_bytes=64 * GIB, gpu_cores=10),
                                     lambda: provider_module.MemoryReading(64 * GIB, 60 * GIB))
    link = link_module.Link(server.ws_url, "any-token", agent)
    return engine, agent, link, asyncio.create_task(link.run())


async def test_real_agents_serve_a_burst_prewarm_on_demand_and_honour_a_cancel_without_a_single_refusal():
    async with coordinator(FAST) as server:
        agents = [await real_agent(server, warm=True), await real_agent(server, warm=False)]
        router = server.coordinator.router
        await eventually(lambda: len(router.registry) == 2 and all(p.heartbeat for p in router.registry))
        client = openai.AsyncOpenAI(base_url=server.base_url + "/v1", api_key="local", max_retries=0)
        results = await asyncio.gather(*(client.chat.completions.create(
            model=GPT.id, messages=[{"role": "user", "content": f"hello {i}"}], max_tokens=40) for i in range(40)))
        assert all(0 < r.usage.completion_tokens <= 40 and r.choices[0].message.content for r in results)
        assert {r.choices[0].finish_reason for r in results} <= {"stop", "length"}
        metrics = server.coordinator.metrics
        assert metrics.attempts.labels(GPT.id, "rejected_full")._value.get() == 0  # the view matched the agents
        assert metrics.loads.labels(GPT.id)._value.get() == 1  # 40 > 32 rows: the cold one was pre-warmed
        async with httpx.AsyncClient(base_url=server.base_url, timeout=5) as http:
            body = {"model": GPT.id, "messages": [{"role": "user", "content": "go on"}], "max_tokens": 4000,
                    "stream": True}
            async with http.stream("POST", "/v1/chat/completions", json=body) as response:
                async for line in response.aiter_lines():
                    if '"content"' in line and '"role"' not in line:
                        break
        await eventually(lambda: server.coordinator.accounts.num_holds == 0
                         and all(o.ledger.num_in_flight == 0 for _, o in router.registry.offers(GPT.id)))
        for engine, _, link, task in agents:
            link.stop()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await engine.stop()
