"""A burst of mixed deltas that reaches the coordinator in one read (one batched chunk frame, as an agent sends
a step) comes out of each event dialect with the official SDKs as the same text in the same order, one delta
per run of one kind instead of one per token (delta_runs.py): Responses, Anthropic Messages, legacy completions."""

from __future__ import annotations

import asyncio

from agent.wire.chunk_batch import InferenceResponseChunks
from agent.wire.frames import (
    ChunkDelta,
    InferenceAccepted,
    InferenceComplete,
    InferenceResponseChunk,
    ToolCallDelta,
    UsageReport,
)
from tests.dialect_support import ANTHROPIC_TOOL, RESPONSES_TOOL, anthropic_client, openai_client
from tests.provider_support import GPT, Reply, coordinator, eventually, provider

BURST = [ChunkDelta(reasoning="Let me "), ChunkDelta(reasoning="think."), ChunkDelta(content="Sunny"),
         ChunkDelta(content=" in Paris."),
         ChunkDelta(tool_calls=(ToolCallDelta(index=0, id="call_abc", name="get_weather"),)),
         ChunkDelta(tool_calls=(ToolCallDelta(index=0, arguments='{"city": '),)),
         ChunkDelta(tool_calls=(ToolCallDelta(index=0, arguments='"Paris"}'),))]
WORDS = [ChunkDelta(content="Sun"), ChunkDelta(content="ny"), ChunkDelta(reasoning="(aside)"),
         ChunkDelta(content=" day.")]


async def answer_in_one_frame(agent, deltas: list[ChunkDelta]) -> None:
    """Accept the request, then send all its deltas as one inference_response_chunks frame, then complete it."""
    await eventually(lambda: agent.received, what="the request")
    rid = agent.received[-1].request_id
    rows = tuple(InferenceResponseChunk(request_id=rid, seq=i + 1, num_tokens=1, delta=delta)
                 for i, delta in enumerate(deltas))
    await agent.send(InferenceAccepted(request_id=rid, prompt_tokens=11))
    await agent.send(InferenceResponseChunks(chunks=rows))
    await agent.send(InferenceComplete(request_id=rid, usage=UsageReport(prompt_tokens=11, completion_tokens=len(rows)),
                                       finish_reason="stop", num_chunks=len(rows)))


async def test_a_responses_stream_writes_a_burst_as_one_delta_per_run_in_order():
    async with coordinator() as server:
        agent = await provider(server, GPT, reply=Reply(silent=True))

        async def read():
            async with openai_client(server).responses.stream(model=GPT.id, input="Weather in Paris?",
                                                              tools=[RESPONSES_TOOL]) as stream:
                return [event async for event in stream], await stream.get_final_response()

        reading = asyncio.create_task(read())
        await answer_in_one_frame(agent, BURST)
        events, final = await reading
        deltas = [(e.type, e.delta) for e in events if e.type.endswith(".delta")]
        assert deltas == [("response.reasoning_text.delta", "Let me think."),
                          ("response.output_text.delta", "Sunny in Paris."),
                          ("response.function_call_arguments.delta", '{"city": "Paris"}')]
        assert [item.type for item in final.output] == ["reasoning", "message", "function_call"]
        assert final.output_text == "Sunny in Paris." and final.output[2].arguments == '{"city": "Paris"}'
        assert [event.sequence_number for event in events] == list(range(len(events)))
        await agent.stop()


async def test_a_messages_stream_writes_a_burst_as_one_delta_per_block_in_order():
    async with coordinator() as server:
        agent = await provider(server, GPT, reply=Reply(silent=True))

        async def read():
            async with anthropic_client(server).messages.stream(
                    model=GPT.id, max_tokens=50, tools=[ANTHROPIC_TOOL],
                    messages=[{"role": "user", "content": "Weather in Paris?"}]) as stream:
                return [event async for event in stream], await stream.get_final_message()

        reading = asyncio.create_task(read())
        await answer_in_one_frame(agent, BURST)
        events, final = await reading
        deltas = [(e.index, e.delta.type) for e in events if e.type == "content_block_delta"]
        assert deltas == [(0, "thinking_delta"), (1, "text_delta"), (2, "input_json_delta")]
        assert [block.type for block in final.content] == ["thinking", "text", "tool_use"]
        assert final.content[0].thinking == "Let me think." and final.content[1].text == "Sunny in Paris."
        assert final.content[2].input == {"city": "Paris"} and final.stop_reason == "tool_use"
        await agent.stop()


async def test_a_legacy_completions_stream_writes_a_burst_as_one_text_chunk():
    async with coordinator() as server:
        agent = await provider(server, GPT, reply=Reply(silent=True))

        async def read():
            stream = await openai_client(server).completions.create(model=GPT.id, prompt="The weather:", stream=True)
            return [chunk async for chunk in stream]

        reading = asyncio.create_task(read())
        await answer_in_one_frame(agent, WORDS)
        chunks = await reading
        assert [c.choices[0].text for c in chunks if c.choices and c.choices[0].text] == ["Sunny day."]
        assert chunks[-1].choices[0].finish_reason == "stop"
        await agent.stop()


async def test_a_burst_that_ends_in_an_invalid_tool_call_writes_its_text_then_the_failure_in_order():
    async with coordinator() as server:
        agent = await provider(server, GPT, reply=Reply(silent=True))

        async def read():
            async with openai_client(server).responses.stream(model=GPT.id, input="Hi", tools=[RESPONSES_TOOL]) \
                    as stream:
                return [event async for event in stream]

        reading = asyncio.create_task(read())
        hostile = [ChunkDelta(content="Hi"), ChunkDelta(content=" there"),
                   ChunkDelta(tool_calls=(ToolCallDelta(index=3, arguments="{}"),)),  # a call that never opened
                   ChunkDelta(content="never shown")]
        await answer_in_one_frame(agent, hostile)
        events = await reading
        assert [(e.type, e.delta) for e in events if e.type.endswith(".delta")] == \
            [("response.output_text.delta", "Hi there")]
        assert events[-1].type == "response.failed" and events[-1].response.error.code == "provider_invalid_output"
        assert [event.sequence_number for event in events] == list(range(len(events)))
        await agent.stop()
