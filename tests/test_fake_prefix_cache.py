"""The fake engine's simulated prefix cache: keyed by the message chain, in the engine's own index and ledger."""

from __future__ import annotations

import pytest

from agent.catalog import load_catalog
from agent.engine import EngineConfig, FakeEngine, FakeScript, FakeTiming, RequestRefused
from agent.engine.fake_prompt import fake_prompt
from agent.engine.types import GenerationRequest, ImageInput
from agent.kvcost import prefix_entry_bytes
from agent.wire.chat_body import ChatCompletionBody
from agent.wire.prefix_chain import chain_key
from tests.engine_fixtures import run
from tests.test_fake_engine import VirtualTime

GIB = 1024**3
GPT_OSS = "gpt-oss-20b"
SPEC = load_catalog()[GPT_OSS]
TIMING = FakeTiming(prefill_tps=1000, decode_tps=50, batch_slowdown=0.0, load_seconds=1.0)
SYSTEM = {"role": "system", "content": "You are a helpful assistant."}


def request(request_id: str, *messages: dict, max_tokens: int = 8) -> GenerationRequest:
    return GenerationRequest(request_id, GPT_OSS, (SYSTEM, *messages), max_tokens=max_tokens, temperature=0.0)


def user(text: str, words: int = 200) -> dict:
    return {"role": "user", "content": " ".join([text] * words)}


def engine(clock: VirtualTime, **config) -> FakeEngine:
    return FakeEngine({GPT_OSS: SPEC}, memory_bytes=64 * GIB, timing=TIMING, clock=clock.clock, sleep=clock.sleep,
                      scripts=lambda r: FakeScript(output_tokens=8), config=EngineConfig(**config))


async def answer(fake: FakeEngine, clock: VirtualTime, req: GenerationRequest):
    started = clock.now
    stream = await fake.submit(req)
    done = await stream.collect()
    return done, clock.now - started


def test_a_turn_that_extends_the_previous_turn_prefills_only_its_new_messages():
    clock = VirtualTime()
    first = request("t1", user("hello"))

    async def scenario():
        async with engine(clock) as fake:
            await fake.load(GPT_OSS)
            one, first_seconds = await answer(fake, clock, first)
            second = request("t2", *first.messages[1:], {"role": "assistant", "content": one.content}, user("more"))
            two, second_seconds = await answer(fake, clock, second)
            return one, first_seconds, two, second_seconds, second, fake.snapshot().slot(GPT_OSS)

    one, first_seconds, two, second_seconds, second, slot = run(scenario())
    assert one.finish.usage.cached_tokens == 0
    # The whole first prompt but its last token is reused; the prefill covers only the rest.
    assert two.finish.usage.cached_tokens == one.finish.usage.prompt_tokens - 1
    new_tokens = two.finish.usage.prompt_tokens - two.finish.usage.cached_tokens
    assert second_seconds == pytest.approx(first_seconds + (new_tokens - one.finish.usage.prompt_tokens) / TIMING.prefill_tps)
    assert slot.prefix_hit_tokens == two.finish.usage.cached_tokens
    assert slot.prefix_hit_rate == 0.5  # two lookups, one hit
    # Both prompts are held (the first was pinned by the second while it was captured), the newest first.
    entries = (prefix_entry_bytes(SPEC, one.finish.usage.prompt_tokens)
               + prefix_entry_bytes(SPEC, two.finish.usage.prompt_tokens, cached_tokens=two.finish.usage.cached_tokens))
    assert slot.kv_cached_bytes == entries
    assert slot.prefix_chains == (fake_prompt(second)[2], fake_prompt(first)[2])


def test_the_fakes_chain_keys_are_the_coordinators_for_plain_chat():
    messages = (SYSTEM, user("hello", 3), {"role": "assistant", "content": "hi"}, user("again", 2))
    body = ChatCompletionBody.model_validate({"model": GPT_OSS, "messages": list(messages)})
    assert fake_prompt(GenerationRequest("r", GPT_OSS, messages))[2] == chain_key(body)


def test_an_edited_earlier_message_reuses_nothing_after_it():
    clock = VirtualTime()

    async def scenario():
        async with engine(clock) as fake:
            await fake.load(GPT_OSS)
            one, _ = await answer(fake, clock, request("t1", user("hello")))
            edited, _ = await answer(fake, clock, request("t2", user("HELLO"), {"role": "assistant", "content": "x"},
                                                          user("more")))
            return edited

    assert run(scenario()).finish.usage.cached_tokens == 0


def test_the_cache_keeps_at_most_its_entries_and_evicts_the_least_recently_used():
    clock = VirtualTime()
    firsts = [request(f"c{i}", user(f"conversation {i}")) for i in range(3)]

    async def scenario():
        async with engine(clock, max_prefix_cache_entries=2) as fake:
            await fake.load(GPT_OSS)
            for req in firsts:
                await answer(fake, clock, req)
            return fake.snapshot().slot(GPT_OSS)

    slot = run(scenario())
    assert slot.prefix_evictions == 1
    assert slot.prefix_chains == (fake_prompt(firsts[2])[2], fake_prompt(firsts[1])[2])


def test_the_cache_keeps_at_most_its_bytes():
    clock = VirtualTime()
    one = prefix_entry_bytes(SPEC, fake_prompt(request("c0", user("conversation 0")))[0])

    async def scenario():
        async with engine(clock, max_prefix_cache_bytes=2 * one + one // 2) as fake:
            await fake.load(GPT_OSS)
            for i in range(4):
                await answer(fake, clock, request(f"c{i}", user(f"conversation {i}")))
            return fake.snapshot().slot(GPT_OSS)

    slot = run(scenario())
    assert len(slot.prefix_chains) == 2 and slot.prefix_evictions == 2
    assert slot.kv_cached_bytes <= 2 * one + one // 2


def test_admission_evicts_cached_prefixes_before_it_refuses():
    clock = VirtualTime()
    long = [request(f"c{i}", user(f"conversation {i}", 1500), max_tokens=4) for i in range(4)]

    async def scenario():
        async with engine(clock, max_kv_budget_bytes=1 * GIB, kv_safety_margin=0.0) as fake:
            await fake.load(GPT_OSS)
            for req in long:
                await answer(fake, clock, req)
            held = fake.snapshot().slot(GPT_OSS)
            budget = held.kv_budget_bytes
            # A prompt that fits the budget only once some of the cached prefixes are gone.
            words = 1500
            while True:
                big = request("big", user("something else", words), max_tokens=4)
                tokens = fake_prompt(big)[0]
                if prefix_entry_bytes(SPEC, tokens) + held.kv_cached_bytes > budget:
                    break
                words += 500
            done, _ = await answer(fake, clock, big)
            return held, done, fake.snapshot().slot(GPT_OSS)

    try:
        held, done, after = run(scenario())
    except RequestRefused as refused:  # the point of the test: it must be admitted, not refused
        raise AssertionError(f"refused instead of evicting: {refused}") from refused
    assert len(held.prefix_chains) == 4 and held.prefix_evictions == 0
    assert done.finish.usage.completion_tokens == 4
    assert after.prefix_evictions > 0


def test_a_request_with_images_is_not_cached():
    image_request = GenerationRequest("i", GPT_OSS, (SYSTEM, user("look")), images=())
    num_tokens, ids, _ = fake_prompt(image_request)
    assert len(ids) == num_tokens  # text alone: cached
    with_image = GenerationRequest("i", GPT_OSS, (SYSTEM, user("look")),
                                   images=(ImageInput("messages[1].content[1]", "image/png", b"x"),))
    assert fake_prompt(with_image)[1] == ()


def test_a_prompt_past_the_context_builds_no_ids_and_is_refused_as_too_large():
    clock = VirtualTime()
    huge = request("huge", {"role": "user", "content": "x" * (4 * SPEC.max_context + 100)})
    assert fake_prompt(huge, SPEC.max_context)[1] == ()

    async def scenario():
        async with engine(clock) as fake:
            await fake.load(GPT_OSS)
            try:
                await fake.submit(huge)
            except RequestRefused as refused:
                return refused, fake.snapshot().slot(GPT_OSS)
            raise AssertionError("admitted a prompt longer than the context")

    refused, slot = run(scenario())
    assert refused.verdict.value == "never" and slot.kv_cached_bytes == 0
