"""POST /v1/messages and /v1/messages/count_tokens over real HTTP with the official `anthropic` SDK, against the
real coordinator and a scripted provider on a real websocket: thinking, text, tool_use and tool_result, usage
and stop reasons, x-api-key auth, errors in Anthropic's shape (also for unknown paths and models)."""

from __future__ import annotations

import json
from pathlib import Path

import anthropic
import httpx
import pytest

from agent.coordinator.billing.accounts import Accounts
from agent.coordinator.billing.keys import create_key
from tests.dialect_support import ANTHROPIC_TOOL, CALL, THINK_THEN_ANSWER, anthropic_client, openai_client
from tests.provider_support import GPT, Reply, coordinator, provider


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
