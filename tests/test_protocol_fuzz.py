"""Fuzzing the wire: nothing a peer sends makes parse_message raise, and every frame the schema allows
survives encode → parse unchanged. Frames are generated from `json_schema()` itself, so the schema
and the models are checked against each other too."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from agent.wire.protocol import Direction, ProtocolError, encode, json_schema, parse_message, validate_chat_request

SCHEMA = json_schema()
DEFS = SCHEMA["$defs"]
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)


def from_schema(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values valid under `schema`, for the subset of JSON Schema pydantic writes for these models."""
    if schema is True or schema == {}:  # any JSON (a tool's or a response_format's JSON Schema, as the client sent it)
        return json_values
    if "$ref" in schema:
        return st.deferred(lambda: from_schema(DEFS[schema["$ref"].rsplit("/", 1)[1]]))
    if "const" in schema:
        return st.just(schema["const"])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    branches = schema.get("oneOf") or schema.get("anyOf")
    if branches:
        return st.one_of([from_schema(branch) for branch in branches])
    kind = schema["type"]
    if "pattern" in schema:  # function names: the one pattern the wire has
        return st.from_regex(schema["pattern"], fullmatch=True)
    if kind == "string":
        return st.text(min_size=schema.get("minLength", 0), max_size=min(schema.get("maxLength", 12), 12))
    if kind == "integer":
        return st.integers(schema.get("minimum"), schema.get("maximum"))
    if kind == "number":
        low = schema.get("minimum", schema.get("exclusiveMinimum"))
        return st.floats(low, schema.get("maximum"), exclude_min="exclusiveMinimum" in schema, allow_nan=False,
                         allow_infinity=False)
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    if kind == "array":
        return st.lists(from_schema(schema["items"]), min_size=schema.get("minItems", 0),
                        max_size=min(schema.get("maxItems", 3), 3))
    if "properties" in schema:
        required = set(schema.get("required", ()))
        props = schema["properties"]
        return st.fixed_dictionaries({k: from_schema(v) for k, v in props.items() if k in required},
                                     optional={k: from_schema(v) for k, v in props.items() if k not in required})
    return st.dictionaries(st.text(max_size=8), from_schema(schema["additionalProperties"]), max_size=3)


def valid_frames(direction: str) -> st.SearchStrategy[dict[str, Any]]:
    return from_schema(DEFS["ToAgent" if direction == Direction.TO_AGENT else "ToCoordinator"]).map(_tool_rules).map(_output_option_rules)


def _output_option_rules(frame: dict[str, Any]) -> dict[str, Any]:
    """The body's output-option rules the schema cannot state, made true: top_logprobs only with logprobs,
    logit_bias keys that are token ids, nothing stored."""
    body = frame.get("body")
    if not isinstance(body, dict):
        return frame
    if body.get("top_logprobs") is not None:
        body["logprobs"] = True
    if body.get("logit_bias"):
        body["logit_bias"] = {str(index): bias for index, bias in enumerate(body["logit_bias"].values())}
    if body.get("store"):
        body["store"] = False
    return frame


def _tool_rules(frame: dict[str, Any]) -> dict[str, Any]:
    """The body's tool rules the schema cannot state, made true: content only null (or absent) beside
    tool_calls, tool_calls on assistant turns and tool_call_id on tool messages answering an earlier call,
    unique tool names, a tool_choice that names one of them."""
    body = frame.get("body")
    if not isinstance(body, dict):
        return frame
    call_ids: set[str] = set()
    for message in body["messages"]:
        if message["role"] != "assistant":
            message.pop("tool_calls", None)
        call_ids.update(call["id"] for call in message.get("tool_calls") or ())
        if message["role"] == "tool" and call_ids:
            message["tool_call_id"] = sorted(call_ids)[0]
        elif message["role"] == "tool":
            message["role"] = "user"
        if message["role"] != "tool":
            message.pop("tool_call_id", None)
        if message.get("content") is None and not message.get("tool_calls"):
            message["content"] = ""
    names = {tool["function"]["name"]: tool for tool in body.get("tools") or ()}
    if body.get("tools"):
        body["tools"] = list(names.values())
    choice = body.get("tool_choice")
    if choice == "required" and not names or isinstance(choice, dict) and choice["function"]["name"] not in names:
        body["tool_choice"] = "auto"
    return frame


def assert_parses_or_explains(data: str | bytes) -> None:
    for direction in Direction:
        result = parse_message(data, direction=direction)
        if isinstance(result, ProtocolError):
            frame = result.to_frame()  # the error always makes a valid reply
            assert parse_message(encode(frame), direction=Direction.TO_AGENT) == frame


@FUZZ
@given(st.text(max_size=200))
def test_arbitrary_text_never_raises(text):
    assert_parses_or_explains(text)


@FUZZ
@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_raise(data):
    assert_parses_or_explains(data)


@FUZZ
@given(json_values)
def test_arbitrary_json_never_raises(value):
    assert_parses_or_explains(json.dumps(value))


@FUZZ
@given(st.sampled_from(sorted({*DEFS["ToAgent"]["discriminator"]["mapping"],
                                *DEFS["ToCoordinator"]["discriminator"]["mapping"]})),
       st.dictionaries(st.sampled_from(["request_id", "model", "body", "seq", "slots", "delta", "usage", "x"]),
                       json_values, max_size=5))
def test_frames_with_a_real_type_and_random_fields_never_raise(frame_type, fields):
    assert_parses_or_explains(json.dumps({**fields, "type": frame_type}))


@FUZZ
@given(st.sampled_from(list(Direction)).flatmap(lambda d: st.tuples(st.just(d), valid_frames(d))))
def test_every_frame_the_schema_allows_parses_and_round_trips(direction_and_frame):
    direction, frame = direction_and_frame
    body = frame.get("body", {})
    # The one rule the schema cannot state: max_tokens and max_completion_tokens agree when both are given.
    assume(None in (body.get("max_tokens"), body.get("max_completion_tokens"))
           or body["max_tokens"] == body["max_completion_tokens"])
    # Nor that a raw prompt is one plain user message (tests/test_completions_mapping.py and chat_body.py's
    # validator hold that), nor that only a user message may carry image parts.
    assume(not body.get("raw_prompt"))
    assume(not any(message.get("role") != "user" and isinstance(message.get("content"), list)
                   and any(isinstance(part, dict) and part.get("type") == "image_url" for part in message["content"])
                   for message in body.get("messages", ()) if isinstance(message, dict)))
    message = parse_message(json.dumps(frame), direction=direction)
    assert not isinstance(message, ProtocolError), f"{message} for {frame}"
    assert parse_message(encode(message), direction=direction) == message
    assert encode(parse_message(encode(message), direction=direction)) == encode(message)


@FUZZ
@given(json_values | st.dictionaries(st.sampled_from(["messages", "max_tokens", "stop", "tools", "n"]), json_values))
def test_arbitrary_chat_bodies_never_raise(body):
    result = validate_chat_request(json.dumps(body))
    assert not isinstance(result, ProtocolError) or result.to_frame().code
