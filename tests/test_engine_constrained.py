"""Constrained decoding in the MLX engine on tiny random-weight models: the output matches the schema."""

from __future__ import annotations

import json
import math

import jsonschema
import pytest

from agent.engine import FinishReason, InvalidRequest, MLXEngine
from agent.engine.constraint import JsonConstraint
from agent.wire.logprobs import FLOOR_LOGPROB
from agent.wire.response_format import schema_text
from tests.engine_fixtures import NARROW, chat, run
from tests.test_engine import forcing

# Bounded fields, so that random weights finish the object well within max_tokens.
WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "enum": ["Paris", "Rome", "Lima"]},
        "is_raining": {"type": "boolean"},
        "celsius": {"type": "integer", "minimum": -40, "maximum": 50},
        "note": {"type": "string", "maxLength": 6},
    },
    "required": ["city", "is_raining", "celsius", "note"],
    "additionalProperties": False,
}


def weather_request(request_id: str, name: str, seed: int, **fields):
    fields.setdefault("max_tokens", 192)
    return chat(request_id, name, "What is the weather?", temperature=1.0, seed=seed,
                constraint=JsonConstraint(schema_text(WEATHER)), **fields)


async def completions(engine, requests):
    streams = [await engine.submit(request) for request in requests]
    return [await stream.collect() for stream in streams]


@pytest.mark.parametrize("name", NARROW)
def test_a_constrained_request_answers_json_that_validates_against_its_schema(tiny_models_dir, name):
    async def scenario():
        async with MLXEngine({name: tiny_models_dir / name}) as engine:
            await engine.load(name)
            return await completions(engine, [weather_request(f"w{seed}", name, seed) for seed in range(4)])

    results = run(scenario())
    for completion in results:
        assert completion.finish.reason is FinishReason.STOP, completion
        jsonschema.validate(json.loads(completion.content), WEATHER)
        assert "<|" not in completion.content and "<|" not in completion.reasoning  # no markup leaks
    if name == "gpt-oss-tiny":  # reasoning stayed free: the answer came after it, on the final channel
        assert any(completion.reasoning for completion in results)


def test_a_schema_the_grammar_cannot_enforce_is_refused_naming_response_format_before_admission(tiny_models_dir):
    name = "gemma-4-tiny"
    schemas = [({"type": "strin"}, "strin"),  # no such type
               ({"type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}}, "missing")]

    async def scenario():
        async with MLXEngine({name: tiny_models_dir / name}) as engine:
            await engine.load(name)
            refusals = []
            for schema, _ in schemas:
                request = chat("bad", name, "Hi", max_tokens=8, constraint=JsonConstraint(schema_text(schema)))
                with pytest.raises(InvalidRequest) as refused:
                    await engine.submit(request)
                refusals.append(str(refused.value))
            slot = engine.snapshot().slot(name)
            return refusals, slot.kv_reserved_bytes, slot.num_running + slot.num_waiting

    refusals, reserved_bytes, num_admitted = run(scenario())
    for message, (_, word) in zip(refusals, schemas):
        assert message.startswith("response_format:") and word in message
    assert reserved_bytes == 0 and num_admitted == 0


def test_a_seeded_unconstrained_request_gets_the_same_tokens_alone_and_batched_with_seven_constrained_ones(
        tiny_models_dir):
    name = "gemma-4-tiny"
    free = chat("free", name, "Tell me a story.", temperature=1.0, seed=11, max_tokens=24, ignore_eos=True)

    async def scenario():
        async with MLXEngine({name: tiny_models_dir / name}) as engine:
            await engine.load(name)
            alone = (await completions(engine, [free]))[0]
            together = await completions(engine, [free, *(weather_request(f"c{seed}", name, seed, max_tokens=24)
                                                        for seed in range(7))])
            return alone, together, engine.backend.grammar_cache(name)

    alone, together, grammars = run(scenario())
    usage, alone_usage = together[0].finish.usage, alone.finish.usage
    assert together[0].content == alone.content
    assert (usage.prompt_tokens, usage.completion_tokens) == (alone_usage.prompt_tokens, alone_usage.completion_tokens)
    assert usage.cached_tokens == alone_usage.prompt_tokens - 1  # batched with constrained rows, from the cache
    assert len(grammars) == 1  # seven rows, one schema: compiled once
    assert len(grammars.mask_times.seconds) >= 7  # the seven constrained rows ran under their masks


def test_a_complete_answer_under_ignore_eos_goes_on_with_eos_tokens_only_and_never_fails(tiny_models_dir):
    name = "gemma-4-tiny"
    request = chat("done", name, "Yes or no?", temperature=1.0, seed=3, max_tokens=12, ignore_eos=True,
                   constraint=JsonConstraint(schema_text({"type": "boolean"})))

    async def scenario():
        async with MLXEngine({name: tiny_models_dir / name}) as engine:
            await engine.load(name)
            return (await completions(engine, [request]))[0]

    completion = run(scenario())
    assert completion.finish.reason is FinishReason.LENGTH and completion.finish.usage.completion_tokens == 12
    assert completion.content in ("true", "false"), completion


def test_a_constrained_rows_logprobs_are_renormalised_over_the_tokens_its_grammar_allows(tiny_models_dir):
    name = "gemma-4-tiny"
    request = chat("lp", name, "Yes or no?", temperature=1.0, seed=5, max_tokens=12, num_top_logprobs=20,
                   constraint=JsonConstraint(schema_text({"type": "boolean"})))

    async def scenario():
        async with MLXEngine({name: tiny_models_dir / name}) as engine:
            await engine.load(name)
            return (await completions(engine, [request]))[0]

    completion = run(scenario())
    assert completion.content in ("true", "false") and completion.logprobs, completion
    for entry in completion.logprobs:
        allowed = [alt.logprob for alt in entry.top_logprobs if alt.logprob > FLOOR_LOGPROB]
        assert entry.logprob > FLOOR_LOGPROB and len(allowed) < len(entry.top_logprobs)  # the others were masked
        assert math.isclose(sum(math.exp(value) for value in allowed), 1.0, abs_tol=1e-2)  # bfloat16 logprobs


def test_a_row_forced_past_its_grammar_fails_alone_and_its_constrained_neighbour_still_answers(tiny_models_dir):
    name = "gemma-4-tiny"

    async def scenario():
        async with MLXEngine({name: tiny_models_dir / name}) as engine:
            await engine.load(name)
            brace = engine.chat_format(name).tokenizer.encode("}", add_special_tokens=False)[-1]
            # The request's own processor runs after the batch's mask, so it can force a token the grammar bans.
            broken = weather_request("broken", name, 1, logits_processors=(forcing([brace]),))
            return await completions(engine, [broken, weather_request("fine", name, 2)])

    broken, fine = run(scenario())
    assert broken.finish.reason is FinishReason.ERROR and "grammar" in broken.finish.error_message, broken.finish
    assert fine.finish.reason is FinishReason.STOP, fine
    jsonschema.validate(json.loads(fine.content), WEATHER)
