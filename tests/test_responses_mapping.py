"""Responses' pure mappings on their own: a body in → the chat-completions body the flow runs (checked by the
wire's own model); the flow's Token / Finished / Broken in → Responses' events and the response object.
Hostile bodies are refused with the parameter named, never a crash."""

from __future__ import annotations

import pytest

from agent.coordinator.dialects import responses_request
from agent.coordinator.dialects.responses_events import ResponseState
from agent.coordinator.dialects.strict_body import read_json, validated
from agent.coordinator.errors import BadRequest
from agent.coordinator.flow import Broken, Finished, Token
from agent.wire.chat_body import MAX_PROMPT_CACHE_KEY_CHARS, ChatCompletionBody
from agent.wire.frames import ToolCallDelta
from tests.dialect_support import USAGE, chat

TOOL = {"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {}}}


def responses(**body) -> ChatCompletionBody:
    return chat(responses_request.to_chat(validated(responses_request.ResponsesBody, {"model": "m", **body})))


def test_a_responses_string_input_with_instructions_is_a_system_and_a_user_message():
    body = responses(input="Hi", instructions="Be brief.", max_output_tokens=5, reasoning={"effort": "high"},
                     temperature=0.5, store=True)
    assert [(m.role, m.content) for m in body.messages] == [("system", "Be brief."), ("user", "Hi")]
    assert body.output_limit == 5 and body.reasoning_effort == "high" and body.temperature == 0.5 and not body.store


def test_responses_items_become_one_assistant_turn_with_its_reasoning_calls_and_then_tool_messages():
    body = responses(tools=[TOOL], input=[
        {"role": "user", "content": [{"type": "input_text", "text": "Weather?"}]},
        {"type": "reasoning", "id": "rs_1", "summary": [], "content": [{"type": "reasoning_text", "text": "Think."}]},
        {"type": "message", "role": "assistant", "id": "msg_1", "status": "completed",
         "content": [{"type": "output_text", "text": "Checking.", "annotations": [], "logprobs": []}]},
        {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": "{}", "id": "fc_1"},
        {"type": "function_call", "call_id": "c2", "name": "get_weather", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
        {"type": "function_call_output", "call_id": "c2", "output": [{"type": "input_text", "text": "rainy"}]},
    ])
    user, assistant, first, second = body.messages
    assert user.content == "Weather?" or user.text == "Weather?"
    assert assistant.content == "Checking." and assistant.reasoning == "Think."
    assert [call.id for call in assistant.tool_calls] == ["c1", "c2"]
    assert (first.tool_call_id, first.content, second.tool_call_id, second.content) == ("c1", "sunny", "c2", "rainy")


def test_responses_tools_tool_choice_and_a_json_schema_format_map_onto_chat_fields():
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    body = responses(input="x", tools=[TOOL], tool_choice={"type": "function", "name": "get_weather"},
                     text={"format": {"type": "json_schema", "name": "out", "schema": schema, "strict": True}},
                     parallel_tool_calls=False)
    assert body.tools[0].function.name == "get_weather" and body.tool_choice.function.name == "get_weather"
    assert body.response_format.json_schema.json_schema == schema and body.parallel_tool_calls is False


@pytest.mark.parametrize("body, param", [
    ({"input": "x", "previous_response_id": "resp_1"}, "previous_response_id"),
    ({"input": "x", "conversation": "conv_1"}, "conversation"),
    ({"input": "x", "tools": [{"type": "file_search"}]}, "tools"),
    ({"input": "x", "tools": True}, "tools"),  # not a list (the fuzz test's 500, fixed)
    ({"input": "x", "tools": {"type": "function"}}, "tools"),
    ({"input": "x", "include": ["file_search_call.results"]}, "include"),
    ({"input": "x", "background": True}, "background"),
    ({"input": "x", "seed": 1}, "seed"),
    ({"input": "x", "top_logprobs": 21}, "top_logprobs"),
    ({"input": []}, "input"),
    ({"input": [{"role": "robot", "content": "x"}]}, "input.0"),
    ({"input": [{"type": "reasoning", "summary": [], "encrypted_content": 7}]}, "input.0"),
])
def test_a_responses_body_it_cannot_serve_is_refused_naming_the_parameter(body, param):
    with pytest.raises(BadRequest) as refused:
        responses_request.to_chat(validated(responses_request.ResponsesBody, {"model": "m", **body}))
    assert refused.value.param.startswith(param), refused.value.message


def test_a_hostile_body_is_refused_not_crashed_on():
    with pytest.raises(BadRequest):
        read_json(b'{"input": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")
    deep = read_json(b'{"input": ' + b"[" * 500 + b"]" * 500 + b"}")  # parses; the body's model refuses it
    with pytest.raises(BadRequest):
        validated(responses_request.ResponsesBody, {"model": "m", **deep})
    for raw in (b"[1]", b"not json", b'"x"'):
        with pytest.raises(BadRequest):
            read_json(raw)


def test_a_response_state_writes_reasoning_message_and_call_items_in_order_with_usage():
    body = validated(responses_request.ResponsesBody, {"model": "m", "input": "x", "tools": [TOOL]})
    state = ResponseState("chatcmpl-abc", body, "m")
    events = state.begin()
    events += state.token(Token("", "Think."))
    events += state.token(Token("Hello", ""))
    events += state.token(Token("", "", tool_calls=(ToolCallDelta(index=0, id="call_1", name="get_weather",
                                                                  arguments='{"a"'),)))
    events += state.token(Token("", "", tool_calls=(ToolCallDelta(index=0, arguments=": 1}"),)))
    events += state.finish(Finished("tool_calls", USAGE))
    kinds = [e["type"] for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    added = [e["item"]["type"] for e in events if e["type"] == "response.output_item.added"]
    assert added == ["reasoning", "message", "function_call"]
    whole = state.response()
    assert whole["id"] == "resp_abc" and whole["status"] == "completed"
    assert [item["type"] for item in whole["output"]] == ["reasoning", "message", "function_call"]
    assert whole["output"][1]["content"][0]["text"] == "Hello" and whole["output"][2]["arguments"] == '{"a": 1}'
    assert whole["usage"]["input_tokens"] == 7 and whole["usage"]["total_tokens"] == 12


def test_a_response_cut_at_its_limit_is_incomplete_and_one_broken_after_a_token_is_failed():
    body = validated(responses_request.ResponsesBody, {"model": "m", "input": "x"})
    cut = ResponseState("chatcmpl-1", body, "m")
    cut.token(Token("a", ""))
    assert cut.finish(Finished("length", USAGE))[-1]["type"] == "response.incomplete"
    assert cut.response()["incomplete_details"] == {"reason": "max_output_tokens"}
    broken = ResponseState("chatcmpl-2", body, "m")
    broken.token(Token("a", ""))
    failed = broken.fail(Broken("the provider failed", "provider_failed"))
    assert failed[-1]["type"] == "response.failed" and failed[-1]["response"]["error"]["code"] == "provider_failed"
    assert "response.output_item.done" in [e["type"] for e in failed]  # the open item is closed first


def test_a_stateless_client_gets_its_reasoning_back_as_encrypted_content_and_it_reaches_the_next_turn():
    body = validated(responses_request.ResponsesBody, {"model": "m", "input": "x", "store": False,
                                                       "include": ["reasoning.encrypted_content"]})
    state = ResponseState("chatcmpl-1", body, "m")
    state.token(Token("", "Think."))
    state.token(Token("Hi", ""))
    state.finish(Finished("stop", USAGE))
    reasoning = state.response()["output"][0]
    assert reasoning["encrypted_content"] == "Think."
    echoed = {"type": "reasoning", "id": reasoning["id"], "summary": [], "encrypted_content": "Think."}
    turn = responses(input=[{"role": "user", "content": "x"}, echoed, {"role": "assistant", "content": "Hi"},
                            {"role": "user", "content": "more"}])
    assert turn.messages[1].reasoning == "Think." and turn.messages[1].content == "Hi"


def test_reasoning_before_a_user_message_belongs_to_no_later_turn():
    body = responses(input=[{"type": "reasoning", "summary": [{"type": "summary_text", "text": "stale"}]},
                            {"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}])
    assert body.messages[1].reasoning is None


def test_responses_text_logprobs_are_asked_for_by_include_and_come_back_on_the_text():
    from agent.wire.logprobs import TokenLogprob

    asked = responses(input="x", include=["message.output_text.logprobs"], top_logprobs=2)
    assert asked.logprobs and asked.top_logprobs == 2
    assert not responses(input="x", top_logprobs=2).logprobs  # as OpenAI: without include, none
    body = validated(responses_request.ResponsesBody, {"model": "m", "input": "x",
                                                       "include": ["message.output_text.logprobs"]})
    state = ResponseState("chatcmpl-1", body, "m")
    entry = TokenLogprob(token="Hi", logprob=-0.5, bytes=[72, 105])
    delta = state.token(Token("Hi", "", logprobs=(entry,)))[-1]
    state.finish(Finished("stop", USAGE))
    assert delta["logprobs"] == [entry.model_dump()]
    assert state.response()["output"][0]["content"][0]["logprobs"] == [entry.model_dump()]


def test_a_responses_prompt_cache_key_reaches_routing_as_chats_and_is_bounded_as_chats():
    assert responses(input="Hi", prompt_cache_key="tenant-7").prompt_cache_key == "tenant-7"
    assert responses(input="Hi").prompt_cache_key is None
    for bad in ("k" * (MAX_PROMPT_CACHE_KEY_CHARS + 1), "", 42):
        with pytest.raises(BadRequest) as refused:
            responses(input="Hi", prompt_cache_key=bad)
        assert "prompt_cache_key" in str(refused.value)
