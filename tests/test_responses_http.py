"""POST /v1/responses and /v1/completions over real HTTP with the official `openai` SDK, against the real
coordinator and a scripted provider on a real websocket (no MLX: the model's output is scripted, the
coordinator's path is real): reasoning, text, function calls and their outputs, usage, incomplete answers,
refusals naming the parameter, a provider failing mid-stream, and raw prompts."""

from __future__ import annotations

import json

import openai
import pytest

from tests.dialect_support import CALL, RESPONSES_TOOL, THINK_THEN_ANSWER, openai_client
from tests.provider_support import GPT, Reply, coordinator, eventually, provider


async def test_responses_create_returns_reasoning_then_a_message_with_usage():
    async with coordinator() as server:
        agent = await provider(server, GPT, reply=Reply(chunks=THINK_THEN_ANSWER, num_tokens=1))
        response = await openai_client(server).responses.create(model=GPT.id, input="Weather in Paris?",
                                                                instructions="Be brief.", max_output_tokens=50)
        assert response.status == "completed" and response.id.startswith("resp_")
        assert [item.type for item in response.output] == ["reasoning", "message"]
        assert response.output[0].content[0].text == "Let me think."
        assert response.output_text == "Sunny in Paris."
        assert response.usage.input_tokens == 11 and response.usage.output_tokens == 3
        sent = agent.received[0].body
        assert [m.role for m in sent.messages] == ["system", "user"] and sent.output_limit == 50
        await agent.stop()


async def test_responses_stream_sends_the_event_sequence_and_the_final_response_matches_it():
    async with coordinator() as server:
        agent = await provider(server, GPT, reply=Reply(chunks=THINK_THEN_ANSWER, num_tokens=1))
        async with openai_client(server).responses.stream(model=GPT.id, input="Weather in Paris?") as stream:
            events = [event async for event in stream]
            final = await stream.get_final_response()
        kinds = [event.type for event in events]
        assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
        # The two text chunks are one delta when they arrive in one read (delta_runs.py), two when apart.
        assert "response.reasoning_text.delta" in kinds and kinds.count("response.output_text.delta") in (1, 2)
        assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "Sunny in Paris."
        assert kinds.count("response.output_item.added") == kinds.count("response.output_item.done") == 2
        assert [event.sequence_number for event in events] == list(range(len(events)))
        assert final.output_text == "Sunny in Paris." and final.usage.output_tokens == 3
        await agent.stop()


async def test_responses_a_function_call_comes_back_and_its_output_reaches_the_next_turn():
    async with coordinator() as server:
        agent = await provider(server, GPT, reply=Reply(chunks=CALL, num_tokens=1))
        client = openai_client(server)
        ask = dict(model=GPT.id, tools=[RESPONSES_TOOL], tool_choice="required")
        first = await client.responses.create(input="Weather in Paris?", **ask)
        call = next(item for item in first.output if item.type == "function_call")
        assert call.call_id == "call_abc" and call.name == "get_weather"
        assert json.loads(call.arguments) == {"city": "Paris"}
        async with client.responses.stream(input="Weather in Paris?", **ask) as stream:
            events = [event async for event in stream]
        kinds = [event.type for event in events]
        arguments = [e.delta for e in events if e.type == "response.function_call_arguments.delta"]
        assert len(arguments) in (1, 2) and "".join(arguments) == '{"city": "Paris"}'  # merged when in one read
        assert "response.function_call_arguments.done" in kinds

        agent.reply = Reply(chunks=["Sunny."], num_tokens=1)
        history = [{"role": "user", "content": "Weather in Paris?"},
                   *first.output,  # the SDK's own objects, as the README's example sends them
                   {"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 24 C"}]
        second = await client.responses.create(input=history, **{**ask, "tool_choice": "auto"})
        assert second.output_text == "Sunny."
        sent = agent.received[-1].body.messages
        assert [m.role for m in sent] == ["user", "assistant", "tool"]
        assert sent[1].tool_calls[0].id == "call_abc" and sent[1].reasoning == "Need weather."
        assert sent[2].tool_call_id == "call_abc" and sent[2].content == "sunny, 24 C"
        await agent.stop()


async def test_responses_cut_at_max_output_tokens_is_incomplete():
    async with coordinator() as server:
        agent = await provider(server, GPT, reply=Reply(chunks=["a", "b"], num_tokens=1, finish_reason="length"))
        response = await openai_client(server).responses.create(model=GPT.id, input="Hi", max_output_tokens=2)
        assert response.status == "incomplete" and response.incomplete_details.reason == "max_output_tokens"
        await agent.stop()


@pytest.mark.parametrize("body, param", [
    ({"input": "Hi", "previous_response_id": "resp_1"}, "previous_response_id"),
    ({"input": "Hi", "tools": [{"type": "web_search"}]}, "tools"),
    ({"input": "Hi", "frequency_penalty": 1}, "frequency_penalty"),
    ({"input": [{"type": "item_reference", "id": "x"}]}, "input.0"),
    ({"input": [{"type": "function_call_output", "call_id": "nope", "output": "x"}]}, "messages"),
    ({"input": "Hi", "max_output_tokens": 0}, "max_tokens"),
])
async def test_responses_a_body_it_cannot_serve_is_a_400_naming_the_parameter(body, param):
    async with coordinator() as server:
        agent = await provider(server, GPT)
        with pytest.raises(openai.BadRequestError) as refused:
            await openai_client(server).responses.create(model=GPT.id, extra_body=body)
        assert refused.value.body["param"].startswith(param), refused.value.body
        assert not agent.received
        await agent.stop()


async def test_responses_a_provider_failing_mid_stream_ends_it_with_response_failed():
    async with coordinator() as server:
        agent = await provider(server, GPT, reply=Reply(chunks=["a", "b", "c"], error_after=1, num_tokens=1))
        async with openai_client(server).responses.stream(model=GPT.id, input="Hi") as stream:
            events = [event async for event in stream]
        assert events[-1].type == "response.failed" and events[-1].response.error.code == "provider_failed"
        await agent.stop()


async def test_retrieving_a_response_says_none_is_stored():
    async with coordinator() as server:
        with pytest.raises(openai.NotFoundError) as missing:
            await openai_client(server).responses.retrieve("resp_abc")
        assert missing.value.body["code"] == "not_stored" and "not stored" in missing.value.body["message"]


async def test_completions_send_a_raw_prompt_and_return_text_completion_objects():
    async with coordinator() as server:
        agent = await provider(server, GPT, reply=Reply(chunks=["Paris", "."], num_tokens=1))
        client = openai_client(server)
        whole = await client.completions.create(model=GPT.id, prompt="The capital of France is")
        assert whole.object == "text_completion" and whole.choices[0].text == "Paris."
        assert whole.choices[0].finish_reason == "stop" and whole.usage.completion_tokens == 2
        stream = await client.completions.create(model=GPT.id, prompt="x", stream=True,
                                                 stream_options={"include_usage": True})
        chunks = [chunk async for chunk in stream]
        assert "".join(c.choices[0].text for c in chunks if c.choices) == "Paris."
        assert chunks[-1].usage.completion_tokens == 2
        sent = agent.received[0].body
        assert sent.raw_prompt and sent.messages[0].content == "The capital of France is" and sent.output_limit == 16
        await agent.stop()


@pytest.mark.parametrize("body", [{"prompt": "x", "echo": True}, {"prompt": "x", "best_of": 2}, {"prompt": [1, 2]},
                                  {"prompt": "x", "n": 99},
                                  {"prompt": ["a", "b"]}, {"prompt": "x", "suffix": "y"}])
async def test_completions_a_body_it_cannot_serve_is_a_400(body):
    async with coordinator() as server:
        agent = await provider(server, GPT)
        with pytest.raises(openai.BadRequestError):
            await openai_client(server).completions.create(model=GPT.id, **body)
        assert not agent.received
        await agent.stop()


async def test_chat_completions_refuses_raw_prompt():
    async with coordinator() as server:
        agent = await provider(server, GPT)
        with pytest.raises(openai.BadRequestError) as refused:
            await openai_client(server).chat.completions.create(
                model=GPT.id, messages=[{"role": "user", "content": "x"}], extra_body={"raw_prompt": True})
        assert refused.value.body["param"] == "raw_prompt"
        await agent.stop()


async def test_completions_with_n_choices_return_each_by_index_and_the_prompt_once_in_usage():
    async with coordinator() as server:
        agent = await provider(server, GPT, reply=Reply(chunks=["Paris", "."], num_tokens=1))
        client = openai_client(server)
        whole = await client.completions.create(model=GPT.id, prompt="The capital of France is", n=2, seed=1)
        assert [(c.index, c.text, c.finish_reason) for c in whole.choices] == [(0, "Paris.", "stop"), (1, "Paris.", "stop")]
        assert (whole.usage.prompt_tokens, whole.usage.completion_tokens) == (11, 4)
        stream = await client.completions.create(model=GPT.id, prompt="x", n=2, stream=True,
                                                 stream_options={"include_usage": True})
        chunks = [chunk async for chunk in stream]
        texts = {i: "".join(c.choices[0].text for c in chunks if c.choices and c.choices[0].index == i) for i in (0, 1)}
        assert texts == {0: "Paris.", 1: "Paris."} and chunks[-1].usage.completion_tokens == 4
        assert sorted(r.body.seed for r in agent.received[:2]) == [1, 2] and len(agent.received) == 4
        await agent.stop()


async def test_responses_a_prompt_cache_key_sends_different_inputs_to_the_provider_that_served_the_key():
    async with coordinator() as server:
        agents = [await provider(server, GPT) for _ in range(2)]
        offers = lambda: server.coordinator.router.registry.offers(GPT.id)  # noqa: E731
        await eventually(lambda: len(offers()) == 2 and all(o.status is not None for _, o in offers()),
                         what="both heartbeats")
        client = openai_client(server)
        first = await client.responses.create(model=GPT.id, input="Name a sea.", prompt_cache_key="tenant-7")
        holder = next(a for a in agents if a.received)
        await holder.set_slot(GPT.id, num_running=1)  # by load alone, the next would go to the other one
        offer = server.coordinator.router.registry.get(holder.provider_id).offers[GPT.id]
        await eventually(lambda: offer.status.num_running == 1, what="the holder's heartbeat")
        again = await client.responses.create(model=GPT.id, input="Something else.", prompt_cache_key="tenant-7")
        assert first.status == again.status == "completed"
        assert len(holder.received) == 2 and all(r.body.prompt_cache_key is None for r in holder.received)
        for agent in agents:
            await agent.stop()
