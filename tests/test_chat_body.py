from __future__ import annotations

import json

import pytest

from agent.wire.chat_body import MAX_MESSAGES, ChatCompletionBody
from agent.wire.frames import InferenceRequest
from agent.wire.protocol import (
    Direction,
    FrameNotJson,
    InvalidField,
    ProtocolError,
    encode,
    parse_message,
    validate_chat_request,
)


def chat(**fields):
    return validate_chat_request({"messages": [{"role": "user", "content": "hi"}], **fields})


def test_the_openai_sampling_fields_are_accepted():
    body = chat(model="gpt-oss-20b", max_completion_tokens=100, temperature=0.7, top_p=0.9, top_k=40, min_p=0.05,
                presence_penalty=0.5, frequency_penalty=-0.5, stop=["\n\n", "END"], seed=-3, stream=True,
                stream_options={"include_usage": True}, reasoning_effort="low", n=1, user="u-42")
    assert isinstance(body, ChatCompletionBody)
    assert body.output_limit == 100 and body.stop_sequences == ("\n\n", "END")
    assert body.stream_options.include_usage


def test_stop_may_be_one_string_and_content_may_be_text_parts():
    body = validate_chat_request({"messages": [{"role": "system", "content": [{"type": "text", "text": "be brief"}]},
                                               {"role": "user", "content": "hi"}], "stop": "END", "max_tokens": 5})
    assert body.stop_sequences == ("END",) and body.output_limit == 5


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_completion_tokens": -1}, "max_completion_tokens"),
        ({"temperature": 2.01}, "temperature"),
        ({"top_p": 1.5}, "top_p"),
        ({"top_k": -1}, "top_k"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"stop": [""]}, "stop.0"),
        ({"n": 0}, "n"),
        ({"n": 129}, "n"),
        ({"reasoning_effort": "extreme"}, "reasoning_effort"),
        ({"tools": [{"type": "function"}]}, "tools.0.function"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"tool_choice": {"type": "function", "function": {"name": "absent"}}}, "tool_choice"),
        ({"tools": [{"type": "function", "function": {"name": "a.b"}}]}, "tools.0.function.name"),
        ({"response_format": {"type": "xml"}}, "response_format"),
        ({"max_tokens": 10, "max_completion_tokens": 20}, "max_completion_tokens"),
        ({"stream_options": {"include_tokens": True}}, "stream_options.include_tokens"),
        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
        ({"logprobs": True, "top_logprobs": -1}, "top_logprobs"),
        ({"top_logprobs": 3}, "top_logprobs"),
        ({"logprobs": False, "top_logprobs": 3}, "top_logprobs"),
        ({"logprobs": "yes"}, "logprobs"),
        ({"logit_bias": {str(i): 1 for i in range(301)}}, "logit_bias"),
        ({"logit_bias": {"hello": 1}}, "logit_bias.hello"),
        ({"logit_bias": {"-5": 1}}, "logit_bias.-5"),
        ({"logit_bias": {"99999999999": 1}}, "logit_bias.99999999999"),
        ({"logit_bias": {"12": 100.5}}, "logit_bias.12"),
        ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata"),
        ({"metadata": {"k": "v" * 513}}, "metadata.k"),
        ({"metadata": {"k": 5}}, "metadata.k"),
        ({"store": True}, "store"),
        ({"max_tokens": "10"}, "max_tokens"),
    ],
)
def test_invalid_or_unsupported_parameters_are_refused_naming_the_parameter(fields, param):
    result = chat(**fields)
    assert isinstance(result, InvalidField), result
    assert result.field == param and f"'{param}'" in str(result)


def test_the_output_options_clients_send_are_accepted_within_openais_bounds():
    body = chat(logprobs=True, top_logprobs=20, logit_bias={str(i): (i % 201) - 100 for i in range(300)},
                metadata={f"k{i}": "v" * 512 for i in range(16)}, store=False,
                stream_options={"include_usage": True, "include_obfuscation": True})
    assert isinstance(body, ChatCompletionBody) and body.num_top_logprobs == 20
    assert chat(logprobs=True).num_top_logprobs == 0 and chat(logprobs=False).num_top_logprobs is None
    assert chat().num_top_logprobs is None


def test_storing_is_refused_with_what_to_send_instead():
    refused = chat(store=True)
    assert isinstance(refused, InvalidField) and "not stored here; send store: false" in str(refused)


def test_unsupported_message_shapes_are_refused_naming_the_message():
    audio = validate_chat_request({"messages": [{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}]}]})
    assert isinstance(audio, InvalidField) and audio.field.startswith("messages.0.content")
    assert "'text', 'image_url'" in str(audio)
    system_image = validate_chat_request({"messages": [{"role": "system", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}]})
    assert isinstance(system_image, InvalidField) and "only a user message may carry image_url" in str(system_image)
    tool = validate_chat_request({"messages": [{"role": "tool", "content": "42"}]})
    assert isinstance(tool, InvalidField) and tool.field == "messages.0" and "tool_call_id" in str(tool)
    numeric = validate_chat_request({"messages": [{"role": "user", "content": 5}]})
    assert isinstance(numeric, InvalidField) and numeric.field == "messages.0.content"
    assert "valid string or a valid array" in str(numeric)


def test_a_body_needs_between_one_and_the_maximum_number_of_messages():
    assert validate_chat_request({"messages": []}).field == "messages"
    too_many = [{"role": "user", "content": "x"}] * (MAX_MESSAGES + 1)
    assert validate_chat_request({"messages": too_many}).field == "messages"


def test_a_body_is_validated_from_bytes_text_or_a_parsed_dict_alike():
    raw = '{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}'
    assert validate_chat_request(raw) == validate_chat_request(raw.encode()) == validate_chat_request(json.loads(raw))
    assert isinstance(validate_chat_request({"messages": [], "temperature": float("nan")}), InvalidField)
    assert isinstance(validate_chat_request("{"), FrameNotJson)
    assert isinstance(validate_chat_request("[]"), ProtocolError)



def test_an_accepted_body_is_forwarded_to_the_agent_unchanged():
    body = chat(max_tokens=9, stop="x", reasoning_effort="high")
    request = InferenceRequest(request_id="r", model="gpt-oss-20b", body=body)
    assert parse_message(encode(request), direction=Direction.TO_AGENT).body == body


def test_an_assistant_message_echoed_back_with_empty_response_fields_is_accepted():
    body = validate_chat_request({"messages": [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello", "refusal": None, "tool_calls": None, "reasoning_content": "greet"},
        {"role": "user", "content": "again"}], "logprobs": False})
    assert isinstance(body, ChatCompletionBody)
    calls = validate_chat_request({"messages": [{"role": "assistant", "content": "", "tool_calls": [{"id": "1"}]}]})
    assert isinstance(calls, InvalidField) and calls.field == "messages.0.tool_calls.0.function"


TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather",
                                           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}


def test_a_tool_loop_is_accepted_with_null_assistant_content_and_a_tool_result_in_text_parts():
    body = validate_chat_request({"messages": [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": None, "tool_calls": [CALL], "reasoning": "Call it."},
        {"role": "tool", "tool_call_id": "call_1", "content": [{"type": "text", "text": "sun"}, {"type": "text", "text": "ny"}]},
        {"role": "assistant", "tool_calls": [{**CALL, "id": "call_2"}]},  # content absent, as SDKs send it
        {"role": "tool", "tool_call_id": "call_2", "content": "rain"}],
        "tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "parallel_tool_calls": False})
    assert isinstance(body, ChatCompletionBody), body
    assert body.messages[1].text == "" and body.messages[2].text == "sunny" and body.parallel_tool_calls is False
    assert body.tool_choice.function.name == "get_weather"
    for choice in ("auto", "none", "required"):
        assert isinstance(chat(tools=TOOLS, tool_choice=choice), ChatCompletionBody)


@pytest.mark.parametrize(("messages", "complaint"), [
    ([{"role": "assistant", "tool_calls": [CALL]}, {"role": "tool", "tool_call_id": "other", "content": "x"}],
     "which no earlier assistant message"),
    ([{"role": "user", "content": "x", "tool_calls": [CALL]}], "only an assistant message carries tool_calls"),
    ([{"role": "user", "content": "x", "tool_call_id": "call_1"}], "only a tool message has one"),
    ([{"role": "assistant", "content": None}], "content is required"),
])
def test_tool_turns_that_break_openais_rules_are_refused_saying_why(messages, complaint):
    result = validate_chat_request({"messages": messages})
    assert isinstance(result, InvalidField) and complaint in str(result) and result.field.startswith("messages")


def test_two_tools_with_one_name_are_refused_naming_tools():
    result = chat(tools=TOOLS * 2)
    assert isinstance(result, InvalidField) and result.field == "tools" and "same function name" in str(result)


@pytest.mark.parametrize("fields, says", [
    ({"messages": [{"role": "system", "content": "x"}]}, "exactly one user message"),
    ({"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]}, "exactly one user message"),
    ({"messages": [{"role": "user", "content": "a"}], "response_format": {"type": "json_object"}}, "plain text"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}}]}]},
     "or images"),
])
def test_a_raw_prompt_is_one_plain_user_message(fields, says):
    with pytest.raises(ValueError, match=says):
        ChatCompletionBody.model_validate({**fields, "raw_prompt": True})
    assert ChatCompletionBody.model_validate({"messages": [{"role": "user", "content": "a"}], "raw_prompt": True})
