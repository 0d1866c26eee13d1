"""Structured outputs end to end: the `openai` SDK → the coordinator → a real agent on a tiny MLX model."""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import replace
from typing import Literal

import openai
from openai.lib._pydantic import to_strict_json_schema
import pytest
from pydantic import BaseModel, Field

from agent.daemon.handler import LinkHandler, MemoryReading
from agent.engine import MLXEngine
from agent.engine.models import ModelEntry
from agent.link.client import Link
from agent.wire.frames import Hardware
from tests.engine_fixtures import NARROW
from tests.provider_support import FAST, GIB, GPT, coordinator, eventually


NESTED: list = []
for _ in range(40):
    NESTED = [NESTED]


class Weather(BaseModel):  # bounded fields: random weights finish the object well within max_tokens
    city: Literal["Paris", "Rome", "Lima"]
    is_raining: bool
    celsius: int = Field(ge=-40, le=50)
    note: str = Field(max_length=6)


@contextlib.asynccontextmanager
async def tiny_agent(server, name: str, model_dir):
    entry = ModelEntry.from_dir(name, model_dir)
    engine = MLXEngine({name: entry})
    await engine.start()
    await engine.load(name)
    handler = LinkHandler(engine, {name: entry.spec}, Hardware(chip="Linux CPU", memory_bytes=64 * GIB, gpu_cores=1),
                          lambda: MemoryReading(64 * GIB, 60 * GIB))
    link = Link(server.ws_url, "any-token", handler)
    task = asyncio.create_task(link.run())
    try:
        await eventually(lambda: server.coordinator.router.registry.offers(name), timeout=20, what="the agent")
        yield engine
    finally:
        link.stop()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await engine.stop()


@pytest.mark.parametrize("name", NARROW)
async def test_the_sdks_parse_returns_a_valid_instance_and_streaming_the_same_seed_streams_the_same_json(
        tiny_models_dir, name):
    async with coordinator(FAST) as server, tiny_agent(server, name, tiny_models_dir / name):
        client = openai.AsyncOpenAI(base_url=server.base_url + "/v1", api_key="local", max_retries=0)
        asked = dict(model=name, messages=[{"role": "user", "content": "What is the weather?"}], max_tokens=192,
                     temperature=1.0, seed=7)
        completion = await client.chat.completions.parse(response_format=Weather, **asked)
        choice = completion.choices[0]
        assert choice.finish_reason == "stop", choice
        assert isinstance(choice.message.parsed, Weather)
        assert Weather.model_validate_json(choice.message.content) == choice.message.parsed
        schema = {"type": "json_schema", "json_schema": {"name": "Weather", "strict": True,
                                                         "schema": to_strict_json_schema(Weather)}}
        stream = await client.chat.completions.create(response_format=schema, stream=True, **asked)
        streamed = "".join([chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices])
        assert streamed == choice.message.content


@pytest.mark.parametrize("response_format, word", [
    ({"type": "json_schema", "json_schema": {"name": "w", "schema": {"type": "strin"}}}, "strin"),
    ({"type": "json_schema", "json_schema": {"name": "w", "schema": {"a": NESTED}}}, "deep"),
    ({"type": "json_schema", "json_schema": {"name": "w", "schema": {"enum": ["x" * 1000] * 100}}}, "bytes"),
    ({"type": "xml"}, "xml"),
])
async def test_a_schema_that_cannot_be_enforced_is_a_400_naming_response_format_before_any_provider(
        response_format, word):
    async with coordinator(FAST) as server:  # no provider at all: the check comes first
        client = openai.AsyncOpenAI(base_url=server.base_url + "/v1", api_key="local", max_retries=0)
        with pytest.raises(openai.BadRequestError) as refused:
            await client.chat.completions.create(model=GPT.id, messages=[{"role": "user", "content": "Hi"}],
                                                 response_format=response_format, max_tokens=8)
        error = refused.value.body
        assert error["param"].startswith("response_format") and word in error["message"]
        assert server.coordinator.accounts.num_holds == 0


WEATHER_TOOL = {"type": "function", "function": {"name": "get_weather", "strict": True, "parameters": {
    "type": "object", "additionalProperties": False, "required": ["city", "days"],
    "properties": {"city": {"type": "string", "enum": ["Paris", "Rome"]},
                   "days": {"type": "integer", "minimum": 1, "maximum": 7}}}}}
TIME_TOOL = {"type": "function", "function": {"name": "get_time", "parameters": {
    "type": "object", "required": ["zone"], "properties": {"zone": {"type": "string", "enum": ["UTC", "CET"]}}}}}


@pytest.mark.parametrize("name", NARROW)
async def test_tool_choice_required_and_named_force_a_call_whose_arguments_validate_against_the_schema(
        tiny_models_dir, name):
    import jsonschema

    slow_cpu = replace(FAST, first_token_timeout_s=30.0, stall_timeout_s=30.0)  # a call's first text comes late
    async with coordinator(slow_cpu) as server, tiny_agent(server, name, tiny_models_dir / name):
        client = openai.AsyncOpenAI(base_url=server.base_url + "/v1", api_key="local", max_retries=0)
        asked = dict(model=name, messages=[{"role": "user", "content": "Weather in Paris?"}], max_tokens=160,
                     tools=[WEATHER_TOOL, TIME_TOOL], temperature=1.0, seed=3)
        for choice_param, names in (("required", {"get_weather", "get_time"}),
                                    ({"type": "function", "function": {"name": "get_time"}}, {"get_time"})):
            completion = await client.chat.completions.create(tool_choice=choice_param, **asked)
            choice = completion.choices[0]
            assert choice.finish_reason == "tool_calls", choice
            for call in choice.message.tool_calls:
                assert call.function.name in names
                tool = WEATHER_TOOL if call.function.name == "get_weather" else TIME_TOOL
                jsonschema.validate(json.loads(call.function.arguments), tool["function"]["parameters"])


async def test_a_forced_call_to_a_tool_whose_parameters_cannot_be_enforced_is_a_400_naming_the_tool():
    broken = {"type": "function", "function": {"name": "broken", "parameters": {"type": "strin"}}}
    async with coordinator(FAST) as server:
        client = openai.AsyncOpenAI(base_url=server.base_url + "/v1", api_key="local", max_retries=0)
        with pytest.raises(openai.BadRequestError) as refused:
            await client.chat.completions.create(model=GPT.id, messages=[{"role": "user", "content": "Hi"}],
                                                 tools=[broken], tool_choice="required", max_tokens=8)
        assert refused.value.body["param"] == "tools[0].function.parameters"
        assert "broken" in refused.value.body["message"] and server.coordinator.accounts.num_holds == 0
