"""The MLX engine on tiny real models: concurrent streams, chat formats, sampling, stops."""

from __future__ import annotations

import asyncio
import threading

import mlx.core as mx
import pytest

from agent.engine import Delta, FinishReason, GenerationRequest, MLXEngine, SlotState
from agent.engine.core import EngineConfig
from tests.engine_fixtures import NARROW, chat, run

QUESTIONS = [f"Question {i}: what is the capital of {place}?" for i, place in
             enumerate(["France", "Italy", "Spain", "Peru", "Chad", "Laos", "Fiji", "Oman", "Iran", "Mali"])]


def forcing(token_ids: list[int]):
    """A logits processor (mlx-lm's per-request seam) that makes the model emit exactly these tokens."""
    calls = iter(token_ids)

    def force(tokens: mx.array, logits: mx.array) -> mx.array:
        token = next(calls, token_ids[-1])
        return mx.where(mx.arange(logits.shape[-1]) == token, 0.0, -1e9).astype(logits.dtype)[None]

    return force


async def collect_all(engine, requests: list[GenerationRequest]):
    streams = [await engine.submit(request) for request in requests]
    return await asyncio.gather(*(stream.collect() for stream in streams))


def summary(completion):
    """What a stream produced (its usage's split into cached and prefilled prompt tokens depends on what ran before)."""
    usage = completion.finish.usage
    return completion.content, completion.reasoning, completion.finish.reason, (usage.prompt_tokens,
                                                                                usage.completion_tokens)


@pytest.mark.parametrize("name, count, max_tokens", [("gpt-oss-tiny", 10, 24), ("gemma-4-tiny", 8, 12)])
def test_eight_concurrent_greedy_streams_each_equal_the_same_prompt_run_alone(tiny_models_dir, name, count, max_tokens):
    # Without the prefix cache: the concurrent pass would reuse the solo pass's prompts, and the prefill rate
    # checked below needs prompts really prefilled (tests/test_prefix_cache.py runs batches with reuse).
    config = EngineConfig(max_prefix_cache_bytes=0)

    async def scenario():
        async with MLXEngine({name: tiny_models_dir / name}, config=config) as engine:
            await engine.load(name)
            requests = [chat(f"q{i}", name, text, max_tokens=max_tokens) for i, text in enumerate(QUESTIONS[:count])]
            alone = [summary((await collect_all(engine, [request]))[0]) for request in requests]
            together = [summary(c) for c in await collect_all(engine, requests)]
            return alone, together, engine.snapshot().slot(name)

    alone, together, slot = run(scenario())
    assert len(together) == count and together == alone
    assert len({content for content, *_ in alone}) > 1  # different prompts, different streams
    assert all(completion_tokens >= 1 for *_, (_, completion_tokens) in together)
    assert slot.state is SlotState.IDLE and slot.kv_used_bytes == 0 and slot.kv_reserved_bytes == 0
    assert slot.decode_tps > 0 and slot.prefill_tps > 0


@pytest.mark.parametrize("name, count", [("gemma-4-tiny-wide", 2)])
def test_at_the_real_attention_widths_batched_greedy_streams_equal_single_ones(tiny_models_dir, name, count):
    async def scenario():
        async with MLXEngine({name: tiny_models_dir / name}) as engine:
            await engine.load(name)
            requests = [chat(f"w{i}", name, text, max_tokens=4, ignore_eos=True)
                        for i, text in enumerate(QUESTIONS[:count])]
            alone = [summary((await collect_all(engine, [request]))[0]) for request in requests]
            return alone, [summary(c) for c in await collect_all(engine, requests)]

    alone, together = run(scenario())
    assert together == alone


def test_two_models_run_side_by_side_on_the_one_mlx_thread(tiny_models_dir):
    async def scenario():
        async with MLXEngine({name: tiny_models_dir / name for name in NARROW}) as engine:
            for name in NARROW:
                await engine.load(name)
            requests = [chat(f"{name}-{i}", name, QUESTIONS[i], max_tokens=12) for name in NARROW for i in range(3)]
            together = [summary(c) for c in await collect_all(engine, requests)]
            alone = [summary((await collect_all(engine, [request]))[0]) for request in requests]
            return together, alone

    together, alone = run(scenario())
    assert together == alone


def test_gpt_oss_harmony_analysis_is_reasoning_and_final_is_content_without_markup(tiny_models_dir):
    name = "gpt-oss-tiny"
    script = ("<|channel|>analysis<|message|>The user asks about France.<|end|>"
              "<|start|>assistant<|channel|>final<|message|>Paris is the capital.<|return|>")

    async def scenario():
        async with MLXEngine({name: tiny_models_dir / name}) as engine:
            await engine.load(name)
            tokenizer = engine.chat_format(name).tokenizer
            forced = tokenizer.encode(script, add_special_tokens=False)
            request = chat("h1", name, "What is the capital of France?", max_tokens=100,
                           logits_processors=(forcing(forced),), reasoning_effort="high")
            plain = chat("h2", name, "What is the capital of France?", max_tokens=8)
            stream = await engine.submit(request)
            deltas = [event async for event in stream]
            other = await (await engine.submit(plain)).collect()
            return forced, deltas, other

    forced, deltas, other = run(scenario())
    finish = deltas[-1]
    text = [event for event in deltas if isinstance(event, Delta)]
    assert "".join(d.reasoning for d in text) == "The user asks about France."
    assert "".join(d.content for d in text) == "Paris is the capital."
    assert not any("<|" in d.content + d.reasoning for d in text)
    assert all(not (d.content and d.reasoning) for d in text)  # each token went to one field
    assert finish.reason is FinishReason.STOP and finish.usage.completion_tokens == len(forced)
    assert other.finish.usage.completion_tokens >= 1


@pytest.mark.parametrize("effort, thinks", [("high", True), (None, False)])
def test_gemma_thinks_only_when_asked_and_its_thought_channel_is_reasoning(tiny_models_dir, effort, thinks):
    name = "gemma-4-tiny"

    async def scenario():
        async with MLXEngine({name: tiny_models_dir / name}) as engine:
            await engine.load(name)
            chat_format = engine.chat_format(name)
            request = chat("g1", name, "Capital of France?", reasoning_effort=effort, max_tokens=60)
            prompt = chat_format.encode(request)
            tokenizer = chat_format.tokenizer
            body = "<|channel>thought\nIt is Paris.<channel|>Paris.<turn|>" if thinks else "Paris.<turn|>"
            forced = tokenizer.encode(body, add_special_tokens=False)
            request = chat("g1", name, "Capital of France?", reasoning_effort=effort, max_tokens=60,
                           logits_processors=(forcing(forced),))
            return tokenizer.decode(prompt.token_ids), await (await engine.submit(request)).collect()

    prompt_text, completion = run(scenario())
    assert ("<|think|>" in prompt_text) is thinks
    assert completion.reasoning == ("It is Paris." if thinks else "")
    assert completion.content == "Paris." and completion.finish.reason is FinishReason.STOP


def test_a_stop_string_ends_the_stream_before_the_stop_text(tiny_models_dir):
    name = "gpt-oss-tiny"

    async def scenario():
        async with MLXEngine({name: tiny_models_dir / name}) as engine:
            await engine.load(name)
            tokenizer = engine.chat_format(name).tokenizer
            forced = tokenizer.encode("<|channel|>final<|message|>One two STOP three four", add_special_tokens=False)
            request = chat("s1", name, "Count", max_tokens=50, stop=("STOP",), logits_processors=(forcing(forced),))
            return await (await engine.submit(request)).collect()

    completion = run(scenario())
    assert completion.content == "One two " and completion.finish.reason is FinishReason.STOP


def test_seeded_sampling_is_per_request_whatever_the_batch(tiny_models_dir):
    name = "gpt-oss-tiny"

    async def scenario():
        async with MLXEngine({name: tiny_models_dir / name}) as engine:
            await engine.load(name)
            seeded = chat("seeded", name, QUESTIONS[0], temperature=1.0, top_p=0.9, top_k=50, seed=7, max_tokens=16)
            alone = await collect_all(engine, [seeded])
            crowd = [chat(f"c{i}", name, QUESTIONS[i], temperature=0.8, max_tokens=16) for i in range(1, 5)]
            crowded = await collect_all(engine, [*crowd[:2], seeded, *crowd[2:]])
            other_seed = await collect_all(engine, [chat("s8", name, QUESTIONS[0], temperature=1.0, top_p=0.9,
                                                         top_k=50, seed=8, max_tokens=16)])
            return summary(alone[0]), summary(crowded[2]), summary(other_seed[0])

    alone, crowded, other_seed = run(scenario())
    assert alone == crowded
    assert other_seed[0] != alone[0]


def test_generation_runs_on_the_mlx_thread_while_the_event_loop_stays_free(tiny_models_dir):
    name = "gpt-oss-tiny"
    seen: dict[str, object] = {}

    async def scenario():
        loop = asyncio.get_running_loop()
        answered = threading.Event()

        async def answer() -> None:
            answered.set()

        def processor(tokens, logits):
            # Inside a step on the MLX thread: only a free event loop can answer.
            if "thread" not in seen:
                seen["thread"] = threading.current_thread().name
                asyncio.run_coroutine_threadsafe(answer(), loop)
                seen["answered"] = answered.wait(timeout=30)
            return logits

        async with MLXEngine({name: tiny_models_dir / name}) as engine:
            await engine.load(name)
            request = chat("t", name, "Hello", max_tokens=4, logits_processors=(processor,))
            return await (await engine.submit(request)).collect()

    completion = run(scenario())
    assert seen == {"thread": "mlx-engine", "answered": True}
    assert completion.finish.usage.completion_tokens >= 1


def test_presence_and_frequency_penalties_change_only_the_request_that_asks(tiny_models_dir):
    name = "gpt-oss-tiny"

    async def scenario():
        async with MLXEngine({name: tiny_models_dir / name}) as engine:
            await engine.load(name)
            plain = chat("p", name, QUESTIONS[0], max_tokens=24, ignore_eos=True)
            penalized = chat("q", name, QUESTIONS[0], max_tokens=24, ignore_eos=True, presence_penalty=1.5,
                             frequency_penalty=1.0)
            together = await collect_all(engine, [plain, penalized])
            alone = await collect_all(engine, [chat("p2", name, QUESTIONS[0], max_tokens=24, ignore_eos=True)])
            return [c.content for c in together], alone[0].content

    (plain, penalized), alone = run(scenario())
    assert plain == alone and penalized != plain


def test_max_tokens_ends_with_length_and_counts_usage(tiny_models_dir):
    name = "gemma-4-tiny"

    async def scenario():
        async with MLXEngine({name: tiny_models_dir / name}) as engine:
            await engine.load(name)
            request = chat("l1", name, QUESTIONS[1], max_tokens=5, ignore_eos=True)
            return await (await engine.submit(request)).collect()

    completion = run(scenario())
    assert completion.finish.reason is FinishReason.LENGTH
    assert completion.finish.usage.completion_tokens == 5 and completion.finish.usage.prompt_tokens > 5
