"""Tool calling through every layer: the openai SDK → the coordinator → the link → a real agent running the MLX
engine on the tiny models → the chat template and the call parser → back as `tool_calls`.

Random weights never choose to call, so a test-only logits processor makes the model write a given text,
in its own format (harmony's commentary call, gemma-4's `<|tool_call>`); everything after the logits is
the real path: sampling, stop tokens (<|call|>, <|tool_response>), detokenizing, parsing, the wire, SSE.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace

import mlx.core as mx
import openai
import pytest

from agent.daemon.handler import LinkHandler, MemoryReading
from agent.engine import MLXEngine
from agent.engine.models import ModelEntry
from agent.link.client import Link
from agent.wire.frames import Hardware
from tests.provider_support import FAST, GIB, coordinator, eventually

TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "The city"}},
                   "required": ["city"]}}}]
SLOW_CPU = replace(FAST, accept_timeout_s=30.0, first_token_timeout_s=30.0, stall_timeout_s=30.0)  # MLX on 2 shared cores
QUESTION = [{"role": "user", "content": "Weather in Paris?"}]
CALL = {  # what each model writes to call get_weather(city="Paris"), up to its stop token
    "gpt-oss-tiny": ('<|channel|>analysis<|message|>Need weather.<|end|><|start|>assistant<|channel|>commentary'
                     ' to=functions.get_weather <|constrain|>json<|message|>{"city": "Paris"}<|call|>'),
    "gemma-4-tiny": '<|tool_call>call:get_weather{city:<|"|>Paris<|"|>}<tool_call|><|tool_response>',
}
ANSWER = {"gpt-oss-tiny": "<|channel|>final<|message|>Sunny in Paris.<|return|>",
          "gemma-4-tiny": "Sunny in Paris.<turn|>"}


def forcing(token_ids: list[int]):
    calls = iter(token_ids)

    def force(tokens: mx.array, logits: mx.array) -> mx.array:
        token = next(calls, token_ids[-1])
        return mx.where(mx.arange(logits.shape[-1]) == token, 0.0, -1e9).astype(logits.dtype)[None]

    return force


class ScriptedOutputs:
    """The real engine, each submitted request made to write the next script (a test-only processor)."""

    def __init__(self, engine: MLXEngine, model: str) -> None:
        self.engine, self.model, self.scripts, self.num_forced = engine, model, [], []

    def __getattr__(self, name):
        return getattr(self.engine, name)

    async def submit(self, request):
        tokenizer = self.engine.backend.chat_format(self.model).tokenizer
        forced = tokenizer.encode(self.scripts.pop(0), add_special_tokens=False)
        self.num_forced.append(len(forced))
        return await self.engine.submit(replace(request, logits_processors=(forcing(forced),)))


async def serve(name: str, model_dir):
    engine = MLXEngine({name: model_dir})
    await engine.start()
    await engine.load(name)
    scripted = ScriptedOutputs(engine, name)
    agent = LinkHandler(scripted, {name: ModelEntry.from_dir(name, model_dir).spec},
                        Hardware(chip="Test", memory_bytes=64 * GIB, gpu_cores=10),
                        lambda: MemoryReading(64 * GIB, 60 * GIB))
    return engine, scripted, agent


def streamed_calls(chunks) -> tuple[list[dict], list[str]]:
    calls: dict[int, dict] = {}
    finish = []
    for chunk in chunks:
        for choice in chunk.choices:
            finish += [choice.finish_reason] if choice.finish_reason else []
            for piece in choice.delta.tool_calls or ():
                call = calls.setdefault(piece.index, {"id": None, "name": "", "arguments": ""})
                call["id"] = call["id"] or piece.id
                call["name"] += piece.function.name or ""
                call["arguments"] += piece.function.arguments or ""
    return [calls[i] for i in sorted(calls)], finish


@pytest.mark.parametrize("name", ["gpt-oss-tiny", "gemma-4-tiny"])
async def test_a_forced_call_comes_back_as_tool_calls_streamed_or_not_and_a_three_turn_loop_is_answered(
        tiny_models_dir, name):
    engine, scripted, agent = await serve(name, tiny_models_dir / name)
    async with coordinator(SLOW_CPU) as server:
        link = Link(server.ws_url, "any-token", agent)
        task = asyncio.create_task(link.run())
        try:
            await eventually(lambda: server.coordinator.router.registry.offers(name), timeout=10)
            client = openai.AsyncOpenAI(base_url=server.base_url + "/v1", api_key="local", max_retries=0)
            ask = dict(model=name, messages=QUESTION, tools=TOOLS, max_tokens=80, temperature=0)

            scripted.scripts += [CALL[name], CALL[name]]
            whole = await client.chat.completions.create(**ask)
            stream = await client.chat.completions.create(**ask, stream=True, stream_options={"include_usage": True})
            chunks = [chunk async for chunk in stream]

            choice = whole.choices[0]
            assert choice.finish_reason == "tool_calls" and choice.message.content is None
            (call,) = choice.message.tool_calls
            assert call.type == "function" and call.id.startswith("call_") and call.function.name == "get_weather"
            assert json.loads(call.function.arguments) == {"city": "Paris"}
            assert whole.usage.completion_tokens == scripted.num_forced[0]  # every generated token, markup included
            pieces, finish = streamed_calls(chunks)
            assert [(p["name"], json.loads(p["arguments"])) for p in pieces] == [("get_weather", {"city": "Paris"})]
            assert pieces[0]["id"].startswith("call_") and finish == ["tool_calls"]
            assert chunks[-1].usage.completion_tokens == scripted.num_forced[1]

            scripted.scripts.append(ANSWER[name])
            echoed = choice.message.model_dump(exclude_none=True)  # as a client sends it back: no content, reasoning kept
            assert "content" not in echoed and echoed["tool_calls"][0]["id"] == call.id
            history = [*QUESTION, echoed, {"role": "tool", "tool_call_id": call.id, "content": "sunny, 24 C"}]
            answer = await client.chat.completions.create(**{**ask, "messages": history})
            assert answer.choices[0].message.content == "Sunny in Paris." and answer.choices[0].finish_reason == "stop"
            assert not answer.choices[0].message.tool_calls
            assert answer.usage.prompt_tokens > whole.usage.prompt_tokens  # the call and its result were rendered
        finally:
            link.stop()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await engine.stop()
