"""Forced tool calls by constrained decoding, on tiny random-weight models: a call is always produced and parses."""

from __future__ import annotations

import json

import jsonschema
import mlx.core as mx
import pytest
from mlx_lm.tool_parsers.gemma4 import parse_tool_call

from agent.engine import FinishReason, InvalidRequest, MLXEngine
from agent.engine.constraint import ToolCallConstraint, ToolSchema
from agent.wire.response_format import schema_text
from tests.engine_fixtures import chat, run

WEATHER = {"type": "object", "properties": {
    "city": {"type": "string", "enum": ["Paris", "Rome"]}, "days": {"type": "integer", "minimum": 1, "maximum": 7},
    "units": {"type": "string", "maxLength": 4}}, "required": ["city", "days", "units"], "additionalProperties": False}
TIME = {"type": "object", "properties": {"zone": {"type": "string", "enum": ["UTC", "CET"]},
                                         "is_24h": {"type": "boolean"}}, "required": ["zone", "is_24h"],
        "additionalProperties": False}
TOOLS = (ToolSchema("get_weather", schema_text(WEATHER)), ToolSchema("get_time", schema_text(TIME)))
SCHEMAS = {"get_weather": WEATHER, "get_time": TIME}


class Recorder:
    """A logits processor (the request's in-process seam) that keeps the token context, to read the raw turn."""

    def __init__(self) -> None:
        self.tokens: mx.array | None = None

    def __call__(self, tokens: mx.array, logits: mx.array) -> mx.array:
        self.tokens = tokens
        return logits


def forced(request_id, name, seed, constraint, recorder):
    return chat(request_id, name, "Weather in Paris?", temperature=1.0, seed=seed, max_tokens=160,
                constraint=constraint, logits_processors=(recorder,))


async def served(name, models_dir, requests):
    async with MLXEngine({name: models_dir / name}) as engine:
        await engine.load(name)
        tokenizer = engine.chat_format(name).tokenizer
        streams = [await engine.submit(request) for request in requests]
        return [await stream.collect() for stream in streams], tokenizer


@pytest.mark.parametrize("forced_name", [None, "get_time"])
def test_gpt_oss_always_calls_a_tool_on_the_commentary_channel_with_arguments_that_validate(tiny_models_dir,
                                                                                              forced_name):
    name, recorders = "gpt-oss-tiny", [Recorder() for _ in range(3)]
    constraint = ToolCallConstraint(TOOLS, forced_name=forced_name)
    results, tokenizer = run(served(name, tiny_models_dir, [forced(f"t{i}", name, i, constraint, recorder)
                                                            for i, recorder in enumerate(recorders)]))
    for completion, recorder in zip(results, recorders):
        assert completion.finish.reason is FinishReason.STOP, completion  # `<|call|>` ended the turn
        raw = tokenizer.decode(recorder.tokens.tolist())
        called = raw.rsplit("commentary to=functions.", 1)[1].split(" ", 1)[0]
        assert called in SCHEMAS and forced_name in (None, called)
        jsonschema.validate(json.loads(completion.content), SCHEMAS[called])


def test_gemma_calls_in_its_own_notation_which_mlx_lms_parser_reads_into_arguments_that_validate(tiny_models_dir):
    name = "gemma-4-tiny"
    single = ToolCallConstraint(TOOLS, forced_name="get_weather")
    parallel = ToolCallConstraint(TOOLS, is_parallel=True)
    requests = [forced("one", name, 1, single, Recorder()), forced("many", name, 2, parallel, Recorder())]
    (one, many), _ = run(served(name, tiny_models_dir, requests))
    call = parse_tool_call(one.content)
    assert call["name"] == "get_weather"
    jsonschema.validate(call["arguments"], WEATHER)
    calls = parse_tool_call(many.content)
    for call in calls if isinstance(calls, list) else [calls]:
        jsonschema.validate(call["arguments"], SCHEMAS[call["name"]])


def test_a_tool_whose_schema_cannot_be_enforced_is_refused_naming_the_tool(tiny_models_dir):
    name = "gemma-4-tiny"
    cases = [(ToolCallConstraint(TOOLS, forced_name="no_such_tool"), "tool_choice"),
             (ToolCallConstraint((ToolSchema("f", schema_text({"type": "object", "properties": {
                 "a": {"$ref": "#/$defs/x"}}})),)), "tools.f"),
             (ToolCallConstraint((ToolSchema("f", schema_text({"type": "object", "properties": {
                 "a-b": {"type": "string"}}})),)), "tools.f")]

    async def scenario():
        async with MLXEngine({name: tiny_models_dir / name}) as engine:
            await engine.load(name)
            refusals = []
            for constraint, _ in cases:
                with pytest.raises(InvalidRequest) as refused:
                    await engine.submit(chat("bad", name, "Hi", max_tokens=8, constraint=constraint))
                refusals.append(refused.value)
            return refusals

    for refused, (_, param) in zip(run(scenario()), cases):
        assert refused.param == param and str(refused).startswith(param)
