"""The dialects' pure mappings on their own: a Responses / Messages / completions body in → the chat-completions
body the flow runs (checked by the wire's own model); the flow's Token / Finished / Broken in → the dialect's
events and whole object. Hostile bodies are refused with the parameter named, never a crash."""

from __future__ import annotations

import json

import pytest

from agent.coordinator.dialects import completions, messages_request, responses_request
from agent.coordinator.dialects.messages_events import MessageState, tool_input
from agent.coordinator.dialects.responses_events import ResponseState
from agent.coordinator.dialects.strict_body import read_json, validated
from agent.coordinator.errors import BadRequest
from agent.coordinator.flow import Broken, Finished, Token
from agent.wire.chat_body import ChatCompletionBody
from agent.wire.frames import ToolCallDelta, UsageReport
from agent.wire.protocol import validate_chat_request

USAGE = UsageReport(prompt_tokens=7, completion_tokens=5)
TOOL = {"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {}}}


def chat(translated: dict) -> ChatCompletionBody:
    body = validate_chat_request(translated)
    assert isinstance(body, ChatCompletionBody), body
    return body


def responses(**body) -> ChatCompletionBody:
    return chat(responses_request.to_chat(validated(responses_request.ResponsesBody, {"model": "m", **body})))


def messages(**body) -> ChatCompletionBody:
    return chat(messages_request.to_chat(validated(messages_request.MessagesBody,
                                                   {"model": "m", "max_tokens": 9, **body})))


# -- Responses in
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


# -- Responses out
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


# -- Messages in
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


# -- Messages out
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


# -- completions
def test_a_completions_body_is_a_raw_prompt_with_openais_default_of_16_tokens():
    body = chat(completions.to_chat(validated(completions.CompletionsBody, {"model": "m", "prompt": ["Once"],
                                                                            "stop": ["\n"], "seed": 3})))
    assert body.raw_prompt and body.messages[0].content == "Once" and body.output_limit == 16
    assert body.stop_sequences == ("\n",) and body.seed == 3


def test_a_raw_prompt_is_one_user_message_and_nothing_else():
    assert not isinstance(validate_chat_request({"messages": [{"role": "system", "content": "x"}],
                                                 "raw_prompt": True}), ChatCompletionBody)
    assert not isinstance(validate_chat_request({"messages": [{"role": "user", "content": "x"}], "raw_prompt": True,
                                                 "tools": [{"type": "function", "function": {"name": "f"}}]}),
                          ChatCompletionBody)


def test_completion_chunks_carry_text_then_the_finish_and_usage_only_when_asked():
    chunks = completions.CompletionChunks("chatcmpl-abc", "m", include_usage=False)
    first = json.loads(chunks.text("Hi").decode().removeprefix("data: "))
    assert first["object"] == "text_completion" and first["id"] == "cmpl-abc" and first["choices"][0]["text"] == "Hi"
    assert chunks.usage(USAGE) == b""
    whole = completions.completion_object("chatcmpl-abc", "m", "Hi", "stop", USAGE)
    assert whole["choices"][0]["finish_reason"] == "stop" and whole["usage"]["total_tokens"] == 12


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


def test_reasoning_before_a_user_message_belongs_to_no_turn_and_an_empty_prompt_is_refused():
    body = responses(input=[{"type": "reasoning", "summary": [{"type": "summary_text", "text": "stale"}]},
                            {"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}])
    assert body.messages[1].reasoning is None
    with pytest.raises(BadRequest) as refused:
        validated(completions.CompletionsBody, {"model": "m", "prompt": ""})
    assert refused.value.param == "prompt"


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
