"""Tool calls from a provider, through the coordinator, in OpenAI's shapes: the SSE deltas (opening piece with
id, type and name, then argument fragments) and `message.tool_calls`; and a hostile provider's tool-call
deltas (out of order, reused ids, a call without a name, too many calls, oversized arguments) end the stream
with a clear error instead of reaching the client. A scripted provider over the real websocket."""

from __future__ import annotations

import json
from dataclasses import replace

import httpx
import openai
import pytest

from agent.wire.frames import ChunkDelta, ToolCallDelta
from tests.provider_support import FAST, GPT, Reply, coordinator, provider

MESSAGES = [{"role": "user", "content": "Weather in Paris?"}]
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]


def piece(index: int, arguments: str = "", *, call_id: str | None = None, name: str | None = None) -> ChunkDelta:
    return ChunkDelta(tool_calls=(ToolCallDelta(index=index, id=call_id, name=name, arguments=arguments),))


TWO_CALLS = [("", "Checking."), piece(0, call_id="call_a", name="get_weather"), piece(0, '{"city": '),
             piece(0, '"Paris"}'), piece(1, '{"city": "Rome"}', call_id="call_b", name="get_weather")]


def client(server) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{server.base_url}/v1", api_key="local", max_retries=0)


async def test_calls_come_back_as_message_tool_calls_with_finish_reason_tool_calls():
    async with coordinator() as server:
        agent = await provider(server, GPT, reply=Reply(chunks=TWO_CALLS, num_tokens=1, finish_reason="tool_calls"))
        result = await client(server).chat.completions.create(model=GPT.id, messages=MESSAGES, tools=TOOLS)
        choice = result.choices[0]
        assert choice.finish_reason == "tool_calls" and choice.message.content is None
        assert [(c.id, c.type, c.function.name, json.loads(c.function.arguments)) for c in choice.message.tool_calls] == [
            ("call_a", "function", "get_weather", {"city": "Paris"}), ("call_b", "function", "get_weather", {"city": "Rome"})]
        assert result.usage.completion_tokens == len(TWO_CALLS)  # a chunk of tool calls counts like text
        await agent.stop()


async def test_a_stream_carries_the_calls_in_openais_exact_sse_shape():
    async with coordinator() as server:
        agent = await provider(server, GPT, reply=Reply(chunks=TWO_CALLS, num_tokens=1, finish_reason="stop"))
        body = {"model": GPT.id, "messages": MESSAGES, "tools": TOOLS, "stream": True}
        async with httpx.AsyncClient(base_url=server.base_url, timeout=5) as http:
            response = await http.post("/v1/chat/completions", json=body)
        events = [json.loads(line[6:]) for line in response.text.splitlines()
                  if line.startswith("data: {")]
        deltas = [event["choices"][0]["delta"] for event in events]
        # Pieces that arrive together go out as one delta (token_merge.py), so how the text is cut may vary;
        # the shape may not: a call's first piece has its id, type and name, later ones only argument text.
        pieces = [entry for delta in deltas for entry in delta.get("tool_calls", [])]
        opening = {p["index"]: p for p in pieces if "id" in p}
        assert {i: (p["id"], p["type"], p["function"]["name"]) for i, p in opening.items()} == {
            0: ("call_a", "function", "get_weather"), 1: ("call_b", "function", "get_weather")}
        assert all(set(p) == {"index", "function"} and set(p["function"]) == {"arguments"}
                   for p in pieces if "id" not in p)
        assert [next(p for p in pieces if p["index"] == i) for i in (0, 1)] == [opening[0], opening[1]]
        arguments = {i: "".join(p["function"]["arguments"] for p in pieces if p["index"] == i) for i in (0, 1)}
        assert arguments == {0: '{"city": "Paris"}', 1: '{"city": "Rome"}'}
        # the provider said stop, but the response made calls: finish_reason says so, as OpenAI's does
        assert events[-1]["choices"][0]["finish_reason"] == "tool_calls"
        await agent.stop()


HOSTILE = {
    "an index that skips ahead": [piece(0, call_id="c1", name="get_weather"), piece(2, "{}")],
    "a piece of a call that never opened": [piece(0, "{}")],
    "an id reused by a second call": [piece(0, "{}", call_id="c1", name="f"), piece(1, "{}", call_id="c1", name="f")],
    "a call reopened with a new id": [piece(0, call_id="c1", name="f"), piece(0, "{}", call_id="c2", name="f")],
    "more calls than allowed": [piece(i, "{}", call_id=f"c{i}", name="f") for i in range(5)],
    "arguments past the bound": [piece(0, "x" * 600, call_id="c1", name="f"), piece(0, "x" * 600)],
}


@pytest.mark.parametrize("chunks", HOSTILE.values(), ids=HOSTILE.keys())
async def test_a_provider_sending_inconsistent_tool_calls_ends_the_stream_with_an_error(chunks):
    settings = replace(FAST, max_tool_calls=4, max_tool_argument_chars=1000)
    async with coordinator(settings) as server:
        agent = await provider(server, GPT, reply=Reply(chunks=chunks, num_tokens=1))
        with pytest.raises(openai.APIError, match="invalid tool call"):
            await client(server).chat.completions.create(model=GPT.id, messages=MESSAGES, tools=TOOLS)
        stream = await client(server).chat.completions.create(model=GPT.id, messages=MESSAGES, tools=TOOLS,
                                                              stream=True)
        with pytest.raises(openai.APIError, match="invalid tool call"):
            async for _ in stream:
                pass
        assert server.coordinator.accounts.num_holds == 0
        await agent.stop()
