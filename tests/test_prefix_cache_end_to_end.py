"""The prefix cache seen by a client: the official openai SDK, the real coordinator and a real agent on the MLX
engine (the tiny gpt-oss), over loopback. A conversation's second turn reports the reused prompt tokens as
`usage.prompt_tokens_details.cached_tokens`, streamed and not; the heartbeat carries the slot's cached bytes;
a provider claiming more cached tokens than the prompt is held to the prompt. The agent's heartbeat reports the
chain of the prompt it cached, and the coordinator routes the next turn by that report alone (its own record
of the dispatch cleared); an entry the slot evicts takes its chain off the report."""

from __future__ import annotations

import asyncio
import urllib.request

import openai

from agent.coordinator.usage import UsageMeter
from agent.engine import MLXEngine
from agent.engine.core import EngineConfig
from agent.engine.types import GenerationRequest
from agent.wire.chat_body import ChatCompletionBody
from agent.wire.frames import UsageReport
from agent.wire.prefix_chain import chain_key
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


def chain_of(history: list[dict]) -> str:
    return chain_key(ChatCompletionBody.model_validate(turn(history)))


def test_the_agents_heartbeat_reports_the_chain_it_cached_and_the_next_turn_is_routed_by_that_report(tiny_models_dir):
    async def scenario():
        async with coordinator(FAST) as server, real_mlx_agent(server, tiny_models_dir) as engine:
            router = server.coordinator.router
            await eventually(lambda: bool(router.registry.offers(MODEL)), timeout=10)
            sdk = openai.AsyncOpenAI(base_url=server.base_url + "/v1", api_key="local", max_retries=0)
            history = [{"role": "user", "content": "Tell me about the sea in a few words."}]
            first = await sdk.chat.completions.create(**turn(history))
            (provider, _), = router.registry.offers(MODEL)
            reports = router.prefixes.reports
            await eventually(lambda: provider.provider_id in reports.holders(MODEL, chain_of(history)), timeout=10,
                             what="a heartbeat reporting the first turn's chain")
            router.prefixes.routes.forget(provider.provider_id)  # no record of the dispatch: only the report
            assert router.prefixes.prefer(MODEL, [chain_of(history)]).source == "reported"
            history += [{"role": "assistant", "content": first.choices[0].message.content or "waves"},
                        {"role": "user", "content": "And the mountains?"}]
            second = await sdk.chat.completions.create(**turn(history))
            await eventually(lambda: provider.provider_id in reports.holders(MODEL, chain_of(history)), timeout=10,
                             what="a heartbeat reporting the second turn's chain")
            metrics = router.metrics
            return (second, metrics.prefix_sources.labels(MODEL, "reported")._value.get(),
                    metrics.prefix_routes.labels(MODEL, "held")._value.get(), engine.snapshot().slot(MODEL), history)

    second, reported, held, slot, history = run(scenario())
    assert reported == held == 1  # turn 2 went where the agent said it holds turn 1's prompt
    assert second.usage.prompt_tokens_details.cached_tokens > 0  # and it did hold it
    assert slot.prefix_chains[0] == chain_of(history)  # the newest entry first


def test_an_entry_the_slot_evicts_takes_its_chain_off_the_report(tiny_models_dir):
    def ask(request_id: str, text: str) -> GenerationRequest:
        # Raw prompts sharing no first token: the second reuses nothing of the first, so caching it evicts it.
        return GenerationRequest.from_openai(request_id, MODEL, turn([{"role": "user", "content": text}],
                                                                     raw_prompt=True))

    async def scenario():
        config = EngineConfig(max_prefix_cache_entries=1)
        async with MLXEngine({MODEL: tiny_models_dir / MODEL}, config=config) as engine:
            await engine.load(MODEL)
            seen = []
            for request in (ask("a", "Seas are deep and wide."), ask("b", "Mountains are high.")):
                await (await engine.submit(request)).collect()
                seen.append((request.prefix_chain, engine.snapshot().slot(MODEL)))
            return seen

    (chain_a, after_a), (chain_b, after_b) = run(scenario())
    assert after_a.prefix_chains == (chain_a,)
    assert after_b.prefix_chains == (chain_b,) and after_b.prefix_evictions == 1
