"""The prefix cache seen by a client: the official openai SDK, the real coordinator and a real agent on the MLX
engine (the tiny gpt-oss), over loopback. A conversation's second turn reports the reused prompt tokens as
`usage.prompt_tokens_details.cached_tokens`, streamed and not; the heartbeat carries the slot's cached bytes;
a provider claiming more cached tokens than the prompt is held to the prompt."""

from __future__ import annotations

import asyncio
import urllib.request

import openai

from agent.coordinator.usage import UsageMeter
from agent.wire.frames import UsageReport
from tests.engine_fixtures import run
from tests.provider_support import FAST, coordinator, eventually
from tests.test_logprobs_end_to_end import real_mlx_agent

MODEL = "gpt-oss-tiny"


def turn(history: list[dict], **fields) -> dict:
    return {"model": MODEL, "messages": history, "max_tokens": 6, "temperature": 0, **fields}


def test_the_second_turn_of_a_conversation_reports_its_cached_prompt_tokens_streamed_and_not(tiny_models_dir):
    async def scenario():
        async with coordinator(FAST) as server, real_mlx_agent(server, tiny_models_dir) as engine:
            registry = server.coordinator.router.registry
            await eventually(lambda: bool(registry.offers(MODEL)), timeout=10)
            sdk = openai.AsyncOpenAI(base_url=server.base_url + "/v1", api_key="local", max_retries=0)
            history = [{"role": "user", "content": "Tell me about the sea in a few words."}]
            first = await sdk.chat.completions.create(**turn(history))
            history += [{"role": "assistant", "content": first.choices[0].message.content or "waves"},
                        {"role": "user", "content": "And the mountains?"}]
            second = await sdk.chat.completions.create(**turn(history))
            history += [{"role": "assistant", "content": second.choices[0].message.content or "peaks"},
                        {"role": "user", "content": "And the sky?"}]
            stream = await sdk.chat.completions.create(**turn(history), stream=True,
                                                       stream_options={"include_usage": True})
            chunks = [chunk async for chunk in stream]
            slot = engine.snapshot().slot(MODEL)
            # The heartbeat carries the cached bytes (the coordinator's view of the slot).
            await eventually(lambda: any(offer.status is not None and offer.status.kv_cached_bytes > 0
                                         for _, offer in registry.offers(MODEL)), timeout=10, what="kv_cached_bytes")
            scrape = await asyncio.to_thread(urllib.request.urlopen, server.base_url + "/metrics")
            metrics = scrape.read().decode()
            return first, second, chunks[-1], slot, metrics

    first, second, last_chunk, slot, metrics = run(scenario())
    cached_line = next(line for line in metrics.splitlines() if line.startswith(f'darkbloom_kv_cached_bytes{{model="{MODEL}"'))
    assert float(cached_line.split()[-1]) > 0
    assert first.usage.prompt_tokens_details.cached_tokens == 0
    assert 0 < second.usage.prompt_tokens_details.cached_tokens == first.usage.prompt_tokens - 1
    streamed = last_chunk.usage
    assert 0 < second.usage.prompt_tokens - 1 == streamed.prompt_tokens_details.cached_tokens < streamed.prompt_tokens
    assert slot.kv_cached_bytes > 0 and slot.prefix_hit_tokens >= second.usage.prompt_tokens_details.cached_tokens


def test_a_claim_of_more_cached_tokens_than_the_prompt_is_held_to_the_prompt():
    meter = UsageMeter(max_tokens=10, prompt_bound=50)
    charge = meter.settle(UsageReport(prompt_tokens=40, completion_tokens=0, cached_tokens=1_000))
    assert charge.prompt_tokens == 40 and charge.cached_tokens == 40
    charge = meter.settle(UsageReport(prompt_tokens=500, completion_tokens=0, cached_tokens=400))
    assert charge.prompt_tokens == 50 and charge.cached_tokens == 50
