"""logprobs and logit_bias end to end: the official openai SDK, the real coordinator, and a real agent running
the MLX engine on both tiny architectures, over a real loopback websocket and HTTP."""

from __future__ import annotations

import asyncio
import contextlib

import openai
import pytest

from agent.daemon.handler import LinkHandler, MemoryReading
from agent.engine import MLXEngine
from agent.engine.models import ModelEntry
from agent.link.client import Link
from agent.wire.frames import Hardware
from tests.engine_fixtures import NARROW, run
from tests.provider_support import FAST, GIB, coordinator, eventually


@contextlib.asynccontextmanager
async def real_mlx_agent(server, models_dir):
    entries = {name: ModelEntry.from_dir(name, models_dir / name) for name in NARROW}
    async with MLXEngine(entries) as engine:
        for name in NARROW:
            await engine.load(name)
        handler = LinkHandler(engine, {name: entry.spec for name, entry in entries.items()},
                              Hardware(chip="Linux CPU", memory_bytes=64 * GIB, gpu_cores=None),
                              lambda: MemoryReading(64 * GIB, 32 * GIB))
        link = Link(server.ws_url, "any-token", handler)
        task = asyncio.create_task(link.run())
        try:
            yield engine
        finally:
            link.stop()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await handler.close()


def ask(name: str, **fields) -> dict:
    return {"model": name, "messages": [{"role": "user", "content": "Hello there"}], "max_tokens": 6,
            "temperature": 0, **fields}


def test_the_sdk_gets_three_alternatives_per_greedy_token_none_likelier_than_it_streamed_and_not(tiny_models_dir):
    async def scenario():
        async with coordinator(FAST) as server, real_mlx_agent(server, tiny_models_dir) as engine:
            registry = server.coordinator.router.registry
            await eventually(lambda: all(registry.offers(name) for name in NARROW), timeout=10)
            sdk = openai.AsyncOpenAI(base_url=server.base_url + "/v1", api_key="local", max_retries=0)
            results = {}
            for name in NARROW:
                whole = await sdk.chat.completions.create(**ask(name, logprobs=True, top_logprobs=3))
                stream = await sdk.chat.completions.create(**ask(name, logprobs=True, top_logprobs=3), stream=True,
                                                           stream_options={"include_usage": True})
                chunks = [chunk async for chunk in stream]
                text = engine.chat_format(name).token_text
                forced_id = next(i for i in range(200, 400) if text.lookup(i)[0].strip())
                biased = await sdk.chat.completions.create(**ask(name, logprobs=True, logit_bias={forced_id: 100}))
                results[name] = whole, chunks, biased, text.lookup(forced_id)[0]
            # Only the agent knows the vocabulary: it refuses the id before admitting; the only provider's word is a 400.
            with pytest.raises(openai.APIStatusError) as outside:
                await sdk.chat.completions.create(**ask(NARROW[0], logit_bias={"999999": 5}))
            return results, outside.value

    results, outside = run(scenario())
    assert outside.status_code == 400 and "logit_bias names token id 999999" in outside.message
    for name, (whole, chunks, biased, forced_text) in results.items():
        entries = whole.choices[0].logprobs.content
        assert entries, name
        for entry in entries:
            assert len(entry.top_logprobs) == 3 and entry.top_logprobs[0].token == entry.token
            assert all(alt.logprob <= entry.logprob <= 0 for alt in entry.top_logprobs)
        streamed = [e for chunk in chunks if chunk.choices and chunk.choices[0].logprobs
                    for e in chunk.choices[0].logprobs.content]
        assert [(e.token, e.top_logprobs[1].token) for e in streamed] == [(e.token, e.top_logprobs[1].token)
                                                                           for e in entries]
        assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
        assert [e.token for e in biased.choices[0].logprobs.content] == [forced_text] * 6
        assert biased.choices[0].logprobs.content[0].top_logprobs == []
