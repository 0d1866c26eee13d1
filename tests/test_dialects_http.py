"""The Responses, Messages and legacy completions dialects over real HTTP with the official `openai` and
`anthropic` SDKs, against the real coordinator and a scripted provider on a real websocket (no MLX: the model's
output is scripted, the coordinator's path is real): text, reasoning, tool calls, usage, stop reasons, errors
in each dialect's shape, hostile bodies and providers, and a client leaving each dialect's stream.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import anthropic
import httpx
import openai
import pytest

from agent.coordinator.billing.accounts import Accounts
from agent.coordinator.billing.keys import create_key
from agent.coordinator.billing.pricing import DEFAULT_PRICES
from agent.wire.frames import ChunkDelta, ToolCallDelta
from tests.provider_support import FAST, GPT, Reply, coordinator, eventually, provider

THINK_THEN_ANSWER = [("", "Let me think."), "Sunny", " in Paris."]
CALL = [("", "Need weather."), ChunkDelta(tool_calls=(ToolCallDelta(index=0, id="call_abc", name="get_weather"),)),
        ChunkDelta(tool_calls=(ToolCallDelta(index=0, arguments='{"city": '),)),
        ChunkDelta(tool_calls=(ToolCallDelta(index=0, arguments='"Paris"}'),))]
RESPONSES_TOOL = {"type": "function", "name": "get_weather", "description": "The weather in a city",
                  "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
ANTHROPIC_TOOL = {"name": "get_weather", "description": "The weather in a city",
                  "input_schema": RESPONSES_TOOL["parameters"]}


def openai_client(server, key: str = "local") -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{server.base_url}/v1", api_key=key, max_retries=0)


def anthropic_client(server, key: str = "local") -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=server.base_url, api_key=key, max_retries=0)


# -- Responses
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
        assert "response.reasoning_text.delta" in kinds and kinds.count("response.output_text.delta") == 2
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
            kinds = [event.type async for event in stream]
        assert kinds.count("response.function_call_arguments.delta") == 2
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


# -- Messages
async def test_messages_create_returns_thinking_and_text_with_usage_and_stop_reason():
    async with coordinator() as server:
        agent = await provider(server, GPT, reply=Reply(chunks=THINK_THEN_ANSWER, num_tokens=1))
        message = await anthropic_client(server).messages.create(
            model=GPT.id, max_tokens=50, system="Be brief.", messages=[{"role": "user", "content": "Weather?"}],
            thinking={"type": "enabled", "budget_tokens": 1024}, stop_sequences=["END"])
        assert [block.type for block in message.content] == ["thinking", "text"]
        assert message.content[0].thinking == "Let me think." and message.content[1].text == "Sunny in Paris."
        assert message.stop_reason == "end_turn" and message.id.startswith("msg_")
        assert message._request_id == agent.received[0].request_id  # the `request-id` header
        assert message.usage.input_tokens == 11 and message.usage.output_tokens == 3
        sent = agent.received[0].body
        assert sent.reasoning_effort == "low" and sent.stop_sequences == ("END",)
        assert [m.role for m in sent.messages] == ["system", "user"]
        await agent.stop()


async def test_messages_stream_sends_anthropic_events_and_the_final_message_matches_them():
    async with coordinator() as server:
        agent = await provider(server, GPT, reply=Reply(chunks=THINK_THEN_ANSWER, num_tokens=1))
        async with anthropic_client(server).messages.stream(
                model=GPT.id, max_tokens=50, messages=[{"role": "user", "content": "Weather?"}]) as stream:
            events = [event async for event in stream]
            final = await stream.get_final_message()
        kinds = [event.type for event in events]
        assert events[0].message.usage.input_tokens == 11  # the agent's count, known at the first token
        raw = [k for k in kinds if k in ("message_start", "content_block_start", "content_block_stop",
                                         "message_delta", "message_stop")]
        assert raw == ["message_start", "content_block_start", "content_block_stop", "content_block_start",
                       "content_block_stop", "message_delta", "message_stop"]
        assert final.content[1].text == "Sunny in Paris." and final.usage.output_tokens == 3
        assert final.usage.input_tokens == 11 and final.stop_reason == "end_turn"
        await agent.stop()


async def test_messages_a_tool_use_comes_back_and_its_tool_result_reaches_the_next_turn():
    async with coordinator() as server:
        agent = await provider(server, GPT, reply=Reply(chunks=CALL, num_tokens=1, finish_reason="tool_calls"))
        client = anthropic_client(server)
        ask = dict(model=GPT.id, max_tokens=50, tools=[ANTHROPIC_TOOL], tool_choice={"type": "any"})
        question = {"role": "user", "content": "Weather in Paris?"}
        first = await client.messages.create(messages=[question], **ask)
        assert first.stop_reason == "tool_use"
        use = next(block for block in first.content if block.type == "tool_use")
        assert use.id == "call_abc" and use.name == "get_weather" and use.input == {"city": "Paris"}
        async with client.messages.stream(messages=[question], **ask) as stream:
            streamed = await stream.get_final_message()
        assert [b.input for b in streamed.content if b.type == "tool_use"] == [{"city": "Paris"}]

        agent.reply = Reply(chunks=["Sunny."], num_tokens=1)
        history = [question, {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
                   {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "sunny"}]}]
        second = await client.messages.create(messages=history, **{**ask, "tool_choice": {"type": "auto"}})
        assert second.content[0].text == "Sunny." and second.stop_reason == "end_turn"
        sent = agent.received[-1].body
        assert [m.role for m in sent.messages] == ["user", "assistant", "tool"]
        assert json.loads(sent.messages[1].tool_calls[0].function.arguments) == {"city": "Paris"}
        assert agent.received[0].body.tool_choice == "required"
        await agent.stop()


async def test_messages_errors_are_anthropic_shaped_with_x_api_key_auth(tmp_path: Path):
    db = tmp_path / "accounts.sqlite"
    key = create_key(db, "acme").key
    accounts = Accounts.from_db(db)
    accounts.credit("acme", 10_000_000)
    async with coordinator(accounts=accounts) as server:
        agent = await provider(server, GPT)
        with pytest.raises(anthropic.AuthenticationError) as unauthorized:
            await anthropic_client(server, "wrong").messages.create(model=GPT.id, max_tokens=5,
                                                                    messages=[{"role": "user", "content": "x"}])
        assert unauthorized.value.body["error"]["type"] == "authentication_error"
        with pytest.raises(anthropic.BadRequestError) as refused:
            await anthropic_client(server, key).messages.create(model=GPT.id, max_tokens=5, messages=[],)
        assert refused.value.body["type"] == "error" and "messages" in refused.value.body["error"]["message"]
        with pytest.raises(anthropic.NotFoundError) as unknown:
            await anthropic_client(server, key).messages.create(model="nope", max_tokens=5,
                                                                messages=[{"role": "user", "content": "x"}])
        assert unknown.value.body["error"]["type"] == "not_found_error"
        message = await anthropic_client(server, key).messages.create(model=GPT.id, max_tokens=5,
                                                                      messages=[{"role": "user", "content": "x"}])
        assert message.content[0].text == "Hello, world"
        await agent.stop()
    accounts.close()


async def test_messages_a_provider_failing_mid_stream_ends_it_with_an_anthropic_error_event():
    async with coordinator() as server:
        agent = await provider(server, GPT, reply=Reply(chunks=["a", "b", "c"], error_after=1, num_tokens=1))
        with pytest.raises(anthropic.APIStatusError) as failed:
            async with anthropic_client(server).messages.stream(
                    model=GPT.id, max_tokens=5, messages=[{"role": "user", "content": "x"}]) as stream:
                async for _ in stream:
                    pass
        assert failed.value.body["error"]["type"] == "api_error"
        await agent.stop()


async def test_count_tokens_answers_an_estimate_and_says_so():
    async with coordinator() as server:
        agent = await provider(server, GPT)
        client = anthropic_client(server)
        short = await client.messages.count_tokens(model=GPT.id, messages=[{"role": "user", "content": "hi"}])
        long = await client.messages.count_tokens(model=GPT.id, messages=[{"role": "user", "content": "hi " * 300}])
        assert 0 < short.input_tokens < long.input_tokens
        async with httpx.AsyncClient(base_url=server.base_url) as http:
            response = await http.post("/v1/messages/count_tokens", headers={"x-api-key": "local"},
                                       json={"model": GPT.id, "messages": [{"role": "user", "content": "hi"}]})
        assert response.headers["x-darkbloom-token-count"] == "estimate"
        assert not agent.received
        await agent.stop()


async def test_unknown_paths_and_wrong_methods_answer_in_the_dialect_of_the_client():
    async with coordinator() as server, httpx.AsyncClient(base_url=server.base_url) as http:
        anthropic_404 = await http.post("/v1/nothing", headers={"anthropic-version": "2023-06-01"})
        openai_404 = await http.post("/v1/nothing")
        wrong_method = await http.get("/v1/messages")
        assert anthropic_404.status_code == 404 and anthropic_404.json()["error"]["type"] == "not_found_error"
        assert openai_404.json()["error"]["code"] == "unknown_url"
        assert wrong_method.status_code == 405 and wrong_method.json()["type"] == "error"
        assert "/v1/responses" in openai_404.json()["error"]["message"]
        wrong_responses_method = await http.get("/v1/responses")
        assert wrong_responses_method.status_code == 405
        assert wrong_responses_method.json()["error"]["code"] == "method_not_allowed"


async def test_retrieving_a_response_says_none_is_stored():
    async with coordinator() as server:
        with pytest.raises(openai.NotFoundError) as missing:
            await openai_client(server).responses.retrieve("resp_abc")
        assert missing.value.body["code"] == "not_stored" and "not stored" in missing.value.body["message"]


# -- legacy completions
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


@pytest.mark.parametrize("body", [{"prompt": "x", "echo": True}, {"prompt": "x", "n": 2}, {"prompt": [1, 2]},
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


# -- a client leaving, in each dialect
STREAMS = {
    "/v1/responses": ({"model": GPT.id, "input": "Hi", "stream": True}, {"Authorization": "Bearer local"}),
    "/v1/messages": ({"model": GPT.id, "max_tokens": 500, "stream": True,
                      "messages": [{"role": "user", "content": "Hi"}]},
                     {"x-api-key": "local", "anthropic-version": "2023-06-01"}),
    "/v1/completions": ({"model": GPT.id, "prompt": "Hi", "max_tokens": 500, "stream": True},
                        {"Authorization": "Bearer local"}),
}


@pytest.mark.parametrize("path", list(STREAMS))
async def test_a_client_leaving_a_dialects_stream_cancels_at_the_agent_and_releases_the_hold(path):
    body, headers = STREAMS[path]
    async with coordinator() as server:
        agent = await provider(server, GPT, reply=Reply(chunks=["tok"] * 200, num_tokens=1, chunk_delay_s=0.02))
        async with httpx.AsyncClient(base_url=server.base_url, timeout=5.0) as http:
            async with http.stream("POST", path, json=body, headers=headers) as response:
                assert response.status_code == 200
                async for line in response.aiter_lines():
                    if "tok" in line:
                        break  # one token in, then leave
        await eventually(lambda: agent.cancels == [agent.received[0].request_id])
        await eventually(lambda: server.coordinator.accounts.num_holds == 0)
        await agent.stop()


# -- the shared request life: keep-alives, billing
KEEPALIVE = replace(FAST, sse_keepalive_after_s=0.1, sse_keepalive_interval_s=0.1, first_token_base_s=0.5,
                    max_attempts=1)


@pytest.mark.parametrize("path", ["/v1/responses", "/v1/messages"])
async def test_a_dialects_stream_failing_after_keepalives_ends_with_an_error_event_in_its_own_shape(path):
    body, headers = STREAMS[path]
    async with coordinator(KEEPALIVE) as server:
        sinkhole = await provider(server, GPT, reply=Reply(hang_after=0))
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as http:
            response = await http.post(path, json=body, headers=headers)
        assert response.status_code == 200 and ": waiting for the first token" in response.text
        event, data = response.text.strip().split("\n")[-2:]
        error = json.loads(data.removeprefix("data: "))
        assert event == "event: error" and error["type"] == "error"
        assert ("first token" in error["message"]) if path == "/v1/responses" else (
            error["error"]["type"] == "api_error" and "first token" in error["error"]["message"])
        assert server.coordinator.accounts.num_holds == 0
        await sinkhole.stop()


async def test_a_billed_account_is_charged_a_messages_answer_exactly_its_usage(tmp_path: Path):
    db = tmp_path / "accounts.sqlite"
    key = create_key(db, "acme").key
    accounts = Accounts.from_db(db)
    accounts.credit("acme", 10_000_000)
    async with coordinator(accounts=accounts) as server:
        agent = await provider(server, GPT, reply=Reply(chunks=["a", "b", "c"], num_tokens=1))
        message = await anthropic_client(server, key).messages.create(
            model=GPT.id, max_tokens=9, messages=[{"role": "user", "content": "x"}])
        response = await openai_client(server, key).responses.create(model=GPT.id, input="x", max_output_tokens=9)
        await eventually(lambda: accounts.num_holds == 0)
        await agent.stop()
    assert accounts.flush()
    spent = 10_000_000 - accounts.balance_micros("acme")
    cost = DEFAULT_PRICES.cost_micros(GPT.id, 11, 3)
    assert (message.usage.input_tokens, message.usage.output_tokens) == (11, 3) == (
        response.usage.input_tokens, response.usage.output_tokens)
    assert spent == 2 * cost
    accounts.close()


async def test_the_anthropic_sdk_lists_and_retrieves_models_in_anthropics_shape():
    async with coordinator() as server:
        agent = await provider(server, GPT)
        client = anthropic_client(server)
        listed = [model async for model in client.models.list()]
        assert GPT.id in [model.id for model in listed] and all(model.type == "model" for model in listed)
        one = await client.models.retrieve(GPT.id)
        assert one.id == GPT.id and one.display_name == GPT.id and one.created_at.year >= 2024
        with pytest.raises(anthropic.NotFoundError) as missing:
            await client.models.retrieve("nope")
        assert missing.value.body["error"]["type"] == "not_found_error"
        assert (await openai_client(server).models.retrieve(GPT.id)).object == "model"  # OpenAI's, unchanged
        await agent.stop()


BAD_CALLS = [ChunkDelta(tool_calls=(ToolCallDelta(index=0, id="call_a", name="get_weather"),)),
             ChunkDelta(tool_calls=(ToolCallDelta(index=3, arguments="{}"),))]  # index 3 before 1 and 2


async def test_a_provider_sending_inconsistent_tool_calls_ends_each_dialect_with_its_error_and_pays_what_was_sent():
    async with coordinator() as server:
        agent = await provider(server, GPT, reply=Reply(chunks=BAD_CALLS, num_tokens=1))
        with pytest.raises(openai.InternalServerError) as whole:
            await openai_client(server).responses.create(model=GPT.id, input="x", tools=[RESPONSES_TOOL])
        assert whole.value.body["code"] == "provider_invalid_output"
        async with openai_client(server).responses.stream(model=GPT.id, input="x", tools=[RESPONSES_TOOL]) as stream:
            events = [event async for event in stream]
        assert events[-1].type == "response.failed"
        assert events[-1].response.error.code == "provider_invalid_output"
        with pytest.raises(anthropic.APIStatusError) as streamed:
            async with anthropic_client(server).messages.stream(
                    model=GPT.id, max_tokens=9, tools=[ANTHROPIC_TOOL],
                    messages=[{"role": "user", "content": "x"}]) as stream:
                async for _ in stream:
                    pass
        assert "invalid tool call" in streamed.value.body["error"]["message"]
        await eventually(lambda: server.coordinator.accounts.num_holds == 0)
        await agent.stop()
