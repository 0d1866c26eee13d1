"""Messages' pure mappings on their own: a body in → the chat-completions body the flow runs (checked by the
wire's own model); the flow's events in → Anthropic's events and the message. Hostile bodies are refused with
the parameter named."""

from __future__ import annotations

import json

import pytest

from agent.coordinator.dialects import messages_request, responses_request
from agent.coordinator.dialects.messages_events import MessageState, tool_input
from agent.coordinator.dialects.responses_events import ResponseState
from agent.coordinator.dialects.strict_body import validated
from agent.coordinator.errors import BadRequest
from agent.coordinator.flow import Broken, Finished, Token
from agent.wire.chat_body import ChatCompletionBody
from agent.wire.frames import ToolCallDelta
from agent.wire.protocol import validate_chat_request
from tests.dialect_support import USAGE, chat


def messages(**body) -> ChatCompletionBody:
    return chat(messages_request.to_chat(validated(messages_request.MessagesBody,
                                                   {"model": "m", "max_tokens": 9, **body})))


def test_a_messages_body_maps_system_thinking_stop_sequences_tools_and_tool_choice():
    body = messages(system=[{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
                    messages=[{"role": "user", "content": "Hi"}], stop_sequences=["END"], top_k=5,
                    thinking={"type": "enabled", "budget_tokens": 20_000}, metadata={"user_id": "u1"},
                    tools=[{"name": "get_weather", "input_schema": {"type": "object"}}],
                    tool_choice={"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True})
    assert [(m.role, m.content) for m in body.messages] == [("system", "Be brief."), ("user", "Hi")]
    assert body.stop_sequences == ("END",) and body.top_k == 5 and body.reasoning_effort == "high"
    assert body.tool_choice.function.name == "get_weather" and body.parallel_tool_calls is False
    assert body.user == "u1" and body.output_limit == 9


def test_messages_tool_use_and_tool_result_blocks_become_calls_and_tool_messages_in_order():
    body = messages(tools=[{"name": "f", "input_schema": {"type": "object"}}], messages=[
        {"role": "user", "content": "Go"},
        {"role": "assistant", "content": [{"type": "thinking", "thinking": "Hmm.", "signature": ""},
                                          {"type": "text", "text": "Calling."},
                                          {"type": "tool_use", "id": "t1", "name": "f", "input": {"x": 1}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "bad", "is_error": True},
                                     {"type": "text", "text": "Go on."}]},
    ])
    roles = [m.role for m in body.messages]
    assert roles == ["user", "assistant", "tool", "user"]
    assistant, result = body.messages[1], body.messages[2]
    assert assistant.reasoning == "Hmm." and assistant.content == "Calling."
    assert json.loads(assistant.tool_calls[0].function.arguments) == {"x": 1}
    assert result.tool_call_id == "t1" and result.content == "Error: bad"


@pytest.mark.parametrize("thinking, effort", [(None, None), ({"type": "disabled"}, "none"),
                                              ({"type": "enabled", "budget_tokens": 1024}, "low"),
                                              ({"type": "enabled", "budget_tokens": 8000}, "medium")])
def test_thinking_budgets_map_onto_reasoning_efforts(thinking, effort):
    parsed = None if thinking is None else messages_request.Thinking.model_validate(thinking)
    assert messages_request.effort_for(parsed) == effort


@pytest.mark.parametrize("body, param", [
    ({"messages": [{"role": "user", "content": "x"}], "max_tokens": None}, "max_tokens"),
    ({"messages": [{"role": "system", "content": "x"}]}, "messages.0.role"),
    ({"messages": [{"role": "user", "content": [{"type": "document", "source": {}}]}]}, "messages.0.content"),
    ({"messages": [{"role": "user", "content": "x"}], "mcp_servers": []}, "mcp_servers"),
    ({"messages": [{"role": "user", "content": "x"}], "tool_choice": {"type": "tool"}}, "tool_choice.name"),
    ({"messages": [{"role": "user", "content": "x"}], "temperature": 1.5}, "temperature"),
])
def test_a_messages_body_it_cannot_serve_is_refused_naming_the_parameter(body, param):
    with pytest.raises(BadRequest) as refused:
        messages_request.to_chat(validated(messages_request.MessagesBody, {"model": "m", "max_tokens": 9, **body}))
    assert refused.value.param.startswith(param), refused.value.message


def test_a_tool_result_answering_no_tool_use_is_refused_by_the_chat_body():
    translated = messages_request.to_chat(validated(messages_request.MessagesBody, {
        "model": "m", "max_tokens": 9,
        "messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "nope", "content": "x"}]}]}))
    assert not isinstance(validate_chat_request(translated), ChatCompletionBody)


def test_a_message_state_writes_blocks_in_order_and_parses_tool_input():
    state = MessageState("chatcmpl-abc", "m")
    events = state.begin()
    events += state.token(Token("", "Hmm."))
    events += state.token(Token("Hi", ""))
    events += state.token(Token("", "", tool_calls=(ToolCallDelta(index=0, id="call_1", name="f", arguments='{"x"'),)))
    events += state.token(Token("", "", tool_calls=(ToolCallDelta(index=0, arguments=": 1}"),)))
    events += state.finish(Finished("tool_calls", USAGE))
    kinds = [e["type"] for e in events]
    assert kinds[:2] == ["message_start", "ping"] and kinds[-2:] == ["message_delta", "message_stop"]
    starts = [e["content_block"]["type"] for e in events if e["type"] == "content_block_start"]
    assert starts == ["thinking", "text", "tool_use"] and kinds.count("content_block_stop") == 3
    assert events[-2]["delta"]["stop_reason"] == "tool_use" and events[-2]["usage"]["output_tokens"] == 5
    whole = state.message()
    assert whole["id"] == "msg_abc" and whole["content"][2]["input"] == {"x": 1}
    assert whole["usage"] == {"input_tokens": 7, "output_tokens": 5, "cache_creation_input_tokens": 0,
                              "cache_read_input_tokens": 0}


def test_stop_reasons_and_arguments_that_are_not_an_object_are_kept_whole():
    state = MessageState("chatcmpl-1", "m")
    state.token(Token("a", ""))
    assert state.finish(Finished("length", USAGE))[-2]["delta"]["stop_reason"] == "max_tokens"
    assert tool_input("[1, 2") == {"_raw_arguments": "[1, 2"} and tool_input("") == {}
    assert MessageState("chatcmpl-2", "m").fail(Broken("gone", "provider_link_lost"))[0]["error"]["type"] == "api_error"


def test_the_newer_messages_knobs_map_or_are_accepted_without_effect():
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    body = messages(messages=[{"role": "user", "content": "x"}], cache_control={"type": "ephemeral"},
                    context_management={"edits": [{"type": "clear_tool_uses_20250919"}]},
                    output_config={"effort": "max", "format": {"type": "json_schema", "schema": schema}},
                    thinking={"type": "adaptive", "display": "summarized"})
    assert body.reasoning_effort == "high" and body.response_format.json_schema.json_schema == schema
    with pytest.raises(BadRequest) as refused:
        validated(messages_request.MessagesBody, {"model": "m", "max_tokens": 9, "thinking": {
            "type": "enabled", "budget_tokens": 2048, "display": "omitted"}, "messages": [{"role": "user", "content": "x"}]})
    assert refused.value.param.startswith("thinking")


def test_image_blocks_and_parts_become_the_chat_bodys_image_url_parts():
    messages_body = validated(messages_request.MessagesBody, {"model": "m", "max_tokens": 9, "messages": [
        {"role": "user", "content": [{"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                                                  "data": "iVBORw0K"}},
                                     {"type": "text", "text": "What is this?"}]}]})
    responses_body = validated(responses_request.ResponsesBody, {"model": "m", "input": [
        {"role": "user", "content": [{"type": "input_image", "image_url": "https://example.com/a.png"},
                                     {"type": "input_text", "text": "What is this?"}]}]})
    assert messages_request.to_chat(messages_body)["messages"][0]["content"] == [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0K"}},
        {"type": "text", "text": "What is this?"}]
    assert responses_request.to_chat(responses_body)["messages"][0]["content"][0] == {
        "type": "image_url", "image_url": {"url": "https://example.com/a.png"}}


def test_a_calls_arguments_after_text_came_between_still_reach_its_own_item_and_block():
    opening = Token("", "", tool_calls=(ToolCallDelta(index=0, id="call_1", name="f", arguments='{"x"'),))
    rest = Token("", "", tool_calls=(ToolCallDelta(index=0, arguments=": 1}"),))
    body = validated(responses_request.ResponsesBody, {"model": "m", "input": "x"})
    response, message = ResponseState("chatcmpl-1", body, "m"), MessageState("chatcmpl-1", "m")
    for state in (response, message):
        state.token(opening)
        state.token(Token("between", ""))
        state.token(rest)
        state.finish(Finished("tool_calls", USAGE))
    assert response.response()["output"][0]["arguments"] == '{"x": 1}'
    assert message.message()["content"][0]["input"] == {"x": 1}
