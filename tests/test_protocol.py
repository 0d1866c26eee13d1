from __future__ import annotations

import json
from typing import get_args

import pytest

from agent.errors import DarkbloomError
from agent.wire.chat_body import ChatCompletionBody
from agent.wire.chunk_batch import InferenceResponseChunks
from agent.wire.frames import (
    Cancel,
    ChunkDelta,
    ErrorFrame,
    Hardware,
    Heartbeat,
    InferenceAccepted,
    InferenceComplete,
    InferenceError,
    InferenceRejected,
    InferenceRequest,
    InferenceResponseChunk,
    KVLayer,
    KVLayout,
    LoadModel,
    MemoryStatus,
    ModelEntry,
    Register,
    Registered,
    Reservation,
    SlotState,
    SlotStatus,
    UnloadModel,
    UsageReport,
)
from agent.wire.protocol import (
    MAX_FRAME_BYTES,
    MIN_PROTOCOL_VERSION,
    PROTOCOL_MINOR,
    PROTOCOL_VERSION,
    AgentMessage,
    CoordinatorMessage,
    Direction,
    FrameNotJson,
    FrameTooLarge,
    InvalidField,
    ProtocolError,
    ProtocolVersionUnsupported,
    UnknownMessageType,
    encode,
    json_schema,
    negotiate,
    parse_message,
)
from agent.wire.unknown_fields import MAX_FIELD_NAME_CHARS, UnknownFields

TO_AGENT, TO_COORDINATOR = Direction.TO_AGENT, Direction.TO_COORDINATOR
BODY = ChatCompletionBody.model_validate({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 64})

EXAMPLES = [
    Register(
        protocol_version=PROTOCOL_VERSION, agent_version="0.1.0",
        hardware=Hardware(chip="Apple M4 Max", memory_bytes=128 * 1024**3, gpu_cores=40),
        models=(ModelEntry(id="gpt-oss-20b", weights_bytes=12_000_000_000, max_context=131_072,
                           kv_bytes_per_token=24_576, kv_fixed_bytes_per_sequence=3 * 1024**2, fits=True,
                           fit_reason="fits", kv_layout=KVLayout(architecture="gpt_oss", kv_dtype="bfloat16",
                           sliding_window=128, layers=(KVLayer(kind="full", num_kv_heads=8, head_dim=64),))),),
    ),
    Heartbeat(seq=7, slots=(SlotStatus(model="gpt-oss-20b", state=SlotState.RUNNING, num_running=3,
                                       kv_budget_bytes=10**10, prefill_tps=900.5, decode_tps=61.0),),
              memory=MemoryStatus(total_bytes=2**37, available_bytes=2**36, cap_bytes=2**36 + 2**35)),
    InferenceAccepted(request_id="req-1", prompt_tokens=12, expected_output_tokens=45, reservation_bytes=9_437_184),
    InferenceRejected(request_id="req-1", verdict="full", reason="KV is full", retry_after_s=0.5),
    InferenceResponseChunk(request_id="req-1", seq=0, delta=ChunkDelta(content="Hel", reasoning="")),
    InferenceComplete(request_id="req-1", usage=UsageReport(prompt_tokens=12, completion_tokens=40), finish_reason="stop"),
    InferenceError(request_id="req-1", code="engine_failed", message="the engine stopped", retryable=True),
    ErrorFrame(code="invalid_field", message="bad", request_id="req-1", field="body.max_tokens"),
    Registered(provider_id="prov-1", heartbeat_interval_s=2.0, settings={"max_waiting": 8, "region": "eu"}),
    InferenceRequest(request_id="req-1", model="gpt-oss-20b", body=BODY,
                     reservation=Reservation(prompt_tokens=12, expected_output_tokens=45, bytes=9_437_184)),
    Cancel(request_id="req-1"),
    LoadModel(model="gemma-4-26b"),
    UnloadModel(model="gemma-4-26b"),
    InferenceResponseChunks(chunks=(InferenceResponseChunk(request_id="req-1", seq=1, delta=ChunkDelta(content="lo")),
                                    InferenceResponseChunk(request_id="req-2", seq=3, delta=ChunkDelta(reasoning="so"),
                                                           num_tokens=2))),
]

# DESIGN.md §5: the names other coordinators rely on.
FIXED_FIELDS = {
    "register": {"protocol_version", "agent_version", "hardware", "models"},
    "heartbeat": {"seq", "slots", "memory"},
    "inference_request": {"request_id", "model", "body", "reservation"},
    "registered": {"provider_id", "heartbeat_interval_s"},
    "cancel": {"request_id"}, "load_model": {"model"}, "unload_model": {"model"},
    "inference_accepted": {"request_id"}, "inference_rejected": {"request_id", "reason"},
    "inference_response_chunk": {"request_id", "seq", "delta"},
    "inference_response_chunks": {"chunks"},
    "inference_complete": {"request_id", "usage", "finish_reason"},
    "inference_error": {"request_id", "code", "message", "retryable"},
}


def direction_of(message) -> Direction:
    return TO_COORDINATOR if isinstance(message, get_args(get_args(AgentMessage)[0])) else TO_AGENT


def test_there_is_one_example_of_every_frame_type_in_both_directions():
    members = {*get_args(get_args(AgentMessage)[0]), *get_args(get_args(CoordinatorMessage)[0])}
    assert {type(m) for m in EXAMPLES} == members


@pytest.mark.parametrize("message", EXAMPLES, ids=lambda m: m.type)
def test_every_frame_survives_encode_and_parse_unchanged(message):
    text = encode(message)
    assert parse_message(text, direction=direction_of(message)) == message
    assert parse_message(text.encode(), direction=direction_of(message)) == message
    assert encode(parse_message(text, direction=direction_of(message))) == text


@pytest.mark.parametrize("message", EXAMPLES, ids=lambda m: m.type)
def test_frames_carry_the_field_names_other_coordinators_rely_on(message):
    fields = set(json.loads(encode(message)))
    assert FIXED_FIELDS.get(message.type, set()) <= fields


def test_nested_fixed_names_are_on_the_wire_too():
    register, heartbeat = json.loads(encode(EXAMPLES[0])), json.loads(encode(EXAMPLES[1]))
    assert {"chip", "memory_bytes", "gpu_cores"} <= set(register["hardware"])
    assert {"id", "weights_bytes", "max_context", "kv_bytes_per_token", "kv_fixed_bytes_per_sequence", "fits",
            "fit_reason"} <= set(register["models"][0])
    assert {"model", "state", "num_running", "num_waiting", "kv_bytes_per_token", "kv_budget_bytes",
            "kv_reserved_bytes", "kv_used_bytes", "prefill_tps", "decode_tps"} <= set(heartbeat["slots"][0])
    assert set(heartbeat["memory"]) == {"total_bytes", "available_bytes", "cap_bytes", "engine_bytes"}
    assert set(json.loads(encode(EXAMPLES[4]))["delta"]) == {"content", "reasoning", "tool_calls"}
    assert set(json.loads(encode(EXAMPLES[5]))["usage"]) == {"prompt_tokens", "completion_tokens", "cached_tokens"}


def test_a_frame_sent_the_wrong_way_is_an_unknown_type_not_a_crash():
    result = parse_message(encode(EXAMPLES[1]), direction=TO_AGENT)
    assert isinstance(result, UnknownMessageType)
    assert "heartbeat" in str(result) and "to coordinator" in str(result)


def test_error_frames_travel_both_ways():
    text = encode(ErrorFrame(code="frame_not_json", message="x"))
    assert isinstance(parse_message(text, direction=TO_AGENT), ErrorFrame)
    assert isinstance(parse_message(text, direction=TO_COORDINATOR), ErrorFrame)


@pytest.mark.parametrize(
    ("frame", "error_type", "code"),
    [
        ("{not json", FrameNotJson, "frame_not_json"),
        (b"\xff\xfe{}", FrameNotJson, "frame_not_json"),
        ("", FrameNotJson, "frame_not_json"),
        ('{"type": "hello"}', UnknownMessageType, "unknown_message_type"),
        ('{"request_id": "r"}', UnknownMessageType, "unknown_message_type"),
        ('{"type": 5}', UnknownMessageType, "unknown_message_type"),
        ("[1, 2]", UnknownMessageType, "unknown_message_type"),
        ('"cancel"', UnknownMessageType, "unknown_message_type"),
        ('{"type": "cancel"}', InvalidField, "invalid_field"),
    ],
)
def test_unusable_frames_are_returned_as_typed_errors_with_stable_codes(frame, error_type, code):
    result = parse_message(frame, direction=TO_AGENT)
    assert isinstance(result, error_type) and isinstance(result, DarkbloomError)
    assert result.code == code


def test_a_bad_field_is_named_by_its_path_and_the_request_id_is_kept():
    frame = json.loads(encode(EXAMPLES[9]))
    frame["body"]["temperature"] = 2.5
    result = parse_message(json.dumps(frame), direction=TO_AGENT)
    assert isinstance(result, InvalidField)
    assert result.field == "body.temperature" and result.request_id == "req-1"
    assert "body.temperature" in str(result) and "less than or equal to 2" in str(result)
    reply = result.to_frame()
    assert (reply.code, reply.request_id, reply.field) == ("invalid_field", "req-1", "body.temperature")
    assert parse_message(encode(reply), direction=TO_COORDINATOR) == reply


def test_unknown_fields_of_a_newer_peer_are_ignored_in_both_directions_and_named_once():
    unknown = UnknownFields()
    cancel = '{"type": "cancel", "request_id": "r", "urgent": true}'
    assert parse_message(cancel, direction=TO_AGENT, unknown_fields=unknown) == Cancel(request_id="r")
    heartbeat = json.loads(encode(EXAMPLES[1]))
    heartbeat["gpu_temp_c"] = 61
    heartbeat["slots"][0]["prefix_cache_bytes"] = 5
    heartbeat["memory"]["swap_bytes"] = 0
    assert parse_message(json.dumps(heartbeat), direction=TO_COORDINATOR, unknown_fields=unknown) == EXAMPLES[1]
    assert sorted(unknown.drain()) == ["MemoryStatus.swap_bytes", "SlotStatus.prefix_cache_bytes", "cancel.urgent",
                                       "heartbeat.gpu_temp_c"]
    parse_message(cancel, direction=TO_AGENT, unknown_fields=unknown)
    parse_message(json.dumps(heartbeat), direction=TO_COORDINATOR, unknown_fields=unknown)
    assert unknown.drain() == []  # each name is reported once per link, not once per frame


def test_an_unknown_field_does_not_hide_a_real_error_in_the_same_frame():
    result = parse_message('{"type": "cancel", "urgent": true}', direction=TO_AGENT)
    assert isinstance(result, InvalidField) and result.field == "request_id"


def test_the_consumer_body_inside_a_frame_stays_strict_about_unknown_parameters():
    frame = json.loads(encode(EXAMPLES[9]))
    frame["body"]["temprature"] = 0.5
    frame["priority"] = "high"  # the frame's own unknown field is ignored; the body's is not
    result = parse_message(json.dumps(frame), direction=TO_AGENT)
    assert isinstance(result, InvalidField) and result.field == "body.temprature"
    assert "unknown or unsupported field" in str(result) and result.request_id == "req-1"


def test_a_peer_inventing_a_new_field_name_per_frame_cannot_grow_what_is_remembered():
    unknown = UnknownFields(max_names=8)
    for i in range(100):
        parse_message(json.dumps({"type": "cancel", "request_id": "r", f"x{i}": 1}), direction=TO_AGENT,
                      unknown_fields=unknown)
    reported = unknown.drain()
    assert len(unknown.names) == 8 and len(reported) == 9 and "the rest are not reported" in reported[-1]


def test_numbers_in_strings_are_refused_because_the_wire_is_strict():
    result = parse_message('{"type": "registered", "provider_id": "p", "heartbeat_interval_s": "2"}',
                           direction=TO_AGENT)
    assert isinstance(result, InvalidField) and result.field == "heartbeat_interval_s"


def test_frames_over_the_size_limit_are_refused_before_parsing():
    huge = '{"type": "cancel", "request_id": "' + "x" * MAX_FRAME_BYTES + '"}'
    assert isinstance(parse_message(huge, direction=TO_AGENT), FrameTooLarge)
    assert isinstance(parse_message(huge.encode(), direction=TO_AGENT), FrameTooLarge)
    # Multi-byte characters count as bytes, not characters.
    wide = '{"type": "cancel", "request_id": "' + "é" * (MAX_FRAME_BYTES // 2) + '"}'
    assert len(wide) < MAX_FRAME_BYTES and isinstance(parse_message(wide, direction=TO_AGENT), FrameTooLarge)


def test_a_huge_unknown_field_name_is_ignored_and_remembered_clipped():
    unknown = UnknownFields()
    result = parse_message(json.dumps({"type": "cancel", "request_id": "r", "k" * 100_000: 1}), direction=TO_AGENT,
                           unknown_fields=unknown)
    assert result == Cancel(request_id="r")
    assert [len(name) for name in unknown.drain()] == [len("cancel.") + MAX_FIELD_NAME_CHARS]


def test_an_error_about_a_huge_unknown_body_parameter_stays_small():
    frame = json.loads(encode(EXAMPLES[9]))
    frame["body"]["k" * 100_000] = 1
    reply = parse_message(json.dumps(frame), direction=TO_AGENT).to_frame()
    assert len(reply.message) < 500 and len(reply.field) <= 256


def test_an_oversized_request_id_is_not_echoed_back():
    result = parse_message(json.dumps({"type": "cancel", "request_id": "r" * 1000}), direction=TO_AGENT)
    assert isinstance(result, InvalidField) and result.request_id is None


def test_a_direction_that_does_not_exist_is_a_programming_error():
    with pytest.raises(ValueError):
        parse_message("{}", direction="sideways")


# ---- the schema ----

def test_the_json_schema_describes_both_directions_and_every_frame():
    schema = json_schema()
    json.dumps(schema)
    assert schema["x-protocol-version"] == PROTOCOL_VERSION
    to_agent = schema["$defs"]["ToAgent"]["discriminator"]["mapping"]
    to_coordinator = schema["$defs"]["ToCoordinator"]["discriminator"]["mapping"]
    assert set(to_agent) == {"registered", "inference_request", "cancel", "load_model", "unload_model", "error"}
    assert set(to_coordinator) == {"register", "heartbeat", "inference_accepted", "inference_rejected",
                                   "inference_response_chunk", "inference_response_chunks", "inference_complete",
                                   "inference_error", "error"}
    for ref in {*to_agent.values(), *to_coordinator.values()}:
        definition = schema["$defs"][ref.rsplit("/", 1)[1]]
        assert "type" in definition["required"] and "additionalProperties" not in definition  # ignored if unknown
    assert schema["$defs"]["ChatCompletionBody"]["additionalProperties"] is False  # the consumer's body stays strict
    body = schema["$defs"]["ChatCompletionBody"]["properties"]
    assert {"tools", "tool_choice", "response_format", "logprobs"} <= set(body)  # served, so described
    assert "functions" not in body  # OpenAI's legacy function calling is refused, not described


# ---- versions ----

def register(max_version: int, min_version: int | None = None, minor: int = 0) -> Register:
    return EXAMPLES[0].model_copy(update={"protocol_version": max_version, "min_protocol_version": min_version,
                                          "protocol_minor": minor})


def test_an_agent_at_a_newer_minor_or_with_a_newer_major_range_gets_the_newest_common_major():
    assert negotiate(register(PROTOCOL_VERSION, minor=PROTOCOL_MINOR + 5)) == PROTOCOL_VERSION
    assert negotiate(register(PROTOCOL_VERSION + 2, min_version=PROTOCOL_VERSION)) == PROTOCOL_VERSION
    assert negotiate(register(PROTOCOL_VERSION)) == PROTOCOL_VERSION  # an agent from before ranges


def test_an_agent_with_no_major_in_common_is_refused_with_which_side_to_upgrade():
    newer = negotiate(register(PROTOCOL_VERSION + 3, min_version=PROTOCOL_VERSION + 1))
    assert isinstance(newer, ProtocolVersionUnsupported) and newer.code == "protocol_version_unsupported"
    assert f"{PROTOCOL_VERSION + 1} to {PROTOCOL_VERSION + 3}" in newer.message
    assert "upgrade the coordinator" in newer.message
    older = negotiate(register(MIN_PROTOCOL_VERSION - 1))
    assert isinstance(older, ProtocolVersionUnsupported) and "upgrade the agent" in older.message
    assert older.to_frame().code == "protocol_version_unsupported"


def test_a_frame_with_an_unknown_field_and_an_infinite_number_is_an_error_not_a_crash():
    result = parse_message('{"type": "cancel", "request_id": Infinity, "model": null}', direction="to_agent")
    assert isinstance(result, ProtocolError)
