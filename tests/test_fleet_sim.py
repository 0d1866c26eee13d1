"""The simulated fleet (agent.testing.fleet): real agents on the fake backend, a real coordinator with a funded key."""

from __future__ import annotations

import asyncio

import openai

from agent.engine.types import GenerationRequest
from agent.testing.fleet.agent import SimAgent
from agent.testing.fleet.harness import funded_accounts, leaks
from agent.testing.fleet.profiles import GEMMA, GPT_OSS, answer_tokens, fleet_memory_gb, timing_for
from tests.provider_support import FAST, coordinator, eventually

SCALE = 0.002  # one simulated second lasts 2 ms


def test_the_fleet_mix_has_sixty_macs_from_16_to_128_gb_and_any_prefix_is_mixed():
    sizes = fleet_memory_gb(60)
    assert len(sizes) == 60 and min(sizes) == 16 and max(sizes) == 128
    assert len(set(fleet_memory_gb(8))) >= 4


def test_gpt_oss_decodes_faster_than_gemma_on_every_mac_and_within_the_stated_ranges():
    for gb in (16, 36, 128):
        gpt, gemma = timing_for(GPT_OSS, gb), timing_for(GEMMA, gb)
        assert 60 <= gpt.decode_tps <= 74 and 40 <= gemma.decode_tps <= 60
        assert gpt.decode_tps > gemma.decode_tps and gpt.batch_slowdown < gemma.batch_slowdown


async def test_a_small_fleet_serves_a_burst_from_one_funded_key_without_a_refusal_and_balances_its_books(tmp_path):
    accounts, key = funded_accounts(tmp_path / "keys.db", dollars=10)
    async with coordinator(FAST, accounts) as server:
        sizes = (16, 24, 32, 48, 64, 128)
        agents = [await SimAgent(server.ws_url, memory_gb=gb, preload=(GEMMA,) if gb == 128 else (GPT_OSS,),
                                 time_scale=SCALE).start() for gb in sizes]
        router = server.coordinator.router
        await eventually(lambda: len(router.registry) == len(sizes) and all(p.heartbeat for p in router.registry),
                         timeout=5)
        client = openai.AsyncOpenAI(base_url=server.base_url + "/v1", api_key=key, max_retries=0, timeout=20)
        before = accounts.available_micros("loadtest")

        async def ask(i: int, model: str, max_tokens: int):
            messages = [{"role": "user", "content": f"question {i}"}]
            reply = await client.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens)
            expected = min(max_tokens, answer_tokens(GenerationRequest("x", model, tuple(messages))))
            return reply.usage.completion_tokens == expected

        results = await asyncio.gather(*(ask(i, GPT_OSS, 512) for i in range(24)),
                                       *(ask(i, GEMMA, 4096) for i in range(8)))
        assert all(results)
        await eventually(lambda: not leaks(server.coordinator, agents), timeout=3)
        assert accounts.available_micros("loadtest") < before  # billed, from settled usage
        capacity = (await client.get("/models/capacity", cast_to=object))["data"]
        never = {row["model"]: row["providers"]["never_fits"] for row in capacity}
        assert never[GPT_OSS] >= 1 and never[GEMMA] >= 2  # the 16 GB Mac (and the 24 GB one for gemma)
        for agent in agents:
            await agent.stop()
    accounts.close()
