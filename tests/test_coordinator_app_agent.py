"""The coordinator with the real agent side (link, provider, fake engine) instead of the scripted provider."""

from __future__ import annotations

import asyncio

import httpx
import openai

from agent.daemon.handler import LinkHandler, MemoryReading
from agent.engine import FakeEngine
from agent.link.client import Link
from agent.wire.frames import Hardware
from tests.metrics_support import counted
from tests.provider_support import FAST, GIB, GPT, coordinator, eventually


async def real_agent(server, *, warm: bool):
    engine = FakeEngine({GPT.id: GPT}, memory_bytes=64 * GIB, time_scale=0.01)
    await engine.start()
    if warm:
        await engine.load(GPT.id)
    agent = LinkHandler(engine, {GPT.id: GPT}, Hardware(chip="Fake M4", memory_bytes=64 * GIB, gpu_cores=10),
                     lambda: MemoryReading(64 * GIB, 60 * GIB))
    link = Link(server.ws_url, "any-token", agent)
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
        assert counted(metrics, "darkbloom_attempts_total", model=GPT.id, outcome="rejected_full") == 0  # the view matched the agents
        assert counted(metrics, "darkbloom_load_requests_total", model=GPT.id) == 1  # 40 > 32 rows: the cold one was pre-warmed
        async with httpx.AsyncClient(base_url=server.base_url, timeout=5) as http:
            body = {"model": GPT.id, "messages": [{"role": "user", "content": "go on"}], "max_tokens": 4000,
                    "stream": True}
            async with http.stream("POST", "/v1/chat/completions", json=body) as response:
                async for line in response.aiter_lines():
                    if '"content"' in line and '"role"' not in line:
                        break
        await eventually(lambda: server.coordinator.accounts.num_holds == 0
                         and all(o.pending.num_in_flight == 0 for _, o in router.registry.offers(GPT.id)))
        for engine, _, link, task in agents:
            link.stop()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await engine.stop()
