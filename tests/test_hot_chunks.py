"""The msgspec decoder of text-only chunk frames (agent/wire/hot_chunks.py) against parse_message, the
protocol's definition: it never accepts a frame parse_message refuses, what it accepts reads the same, and it
does take the frames the relay carries (a fast path that is never taken would hide behind the fallback)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.wire.chunk_batch import InferenceResponseChunks
from agent.wire.frames import ChunkDelta, InferenceResponseChunk, ToolCallDelta
from agent.wire.hot_chunks import HotChunk, HotChunks, decode_hot, with_num_tokens
from agent.wire.logprobs import TokenLogprob
from agent.wire.protocol import MAX_FRAME_BYTES, Direction, FrameTooLarge, ProtocolError, encode, parse_message
from tests.test_chunk_batch import chunk
from tests.test_protocol_fuzz import DEFS, from_schema

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def parse(data: str | bytes):
    return parse_message(data, direction=Direction.TO_COORDINATOR)


def fields(row: Any) -> tuple:
    delta = row.delta
    return (row.type, row.request_id, row.seq, row.num_tokens, row.logprobs, delta.content, delta.reasoning,
            tuple(delta.tool_calls), delta.is_empty, delta.num_text_bytes)


def rows_of(frame: Any) -> list[tuple]:
    return [fields(row) for row in frame.chunks] if hasattr(frame, "chunks") else [fields(frame)]


def test_a_text_only_batch_decodes_hot_and_reads_as_parse_message_reads_it():
    batch = InferenceResponseChunks(chunks=(chunk("a"), chunk("b", 4, "yó"),
                                            InferenceResponseChunk(request_id="c", seq=2,
                                                                   delta=ChunkDelta(reasoning="think"))))
    hot = decode_hot(encode(batch))
    assert type(hot) is HotChunks and hot.type == "inference_response_chunks"
    assert rows_of(hot) == rows_of(parse(encode(batch)))


def test_a_single_chunk_decodes_hot_from_text_and_from_bytes():
    frame = chunk("r1", 7, "tok")
    for data in (encode(frame), encode(frame).encode()):
        hot = decode_hot(data)
        assert type(hot) is HotChunk and fields(hot) == fields(frame)


def test_rows_with_tool_calls_logprobs_or_unknown_fields_are_left_to_parse_message():
    with_call = InferenceResponseChunk(request_id="a", seq=1, num_tokens=1, delta=ChunkDelta(
        tool_calls=(ToolCallDelta(index=0, id="call_1", name="get"),)))
    with_logprobs = chunk("b", logprobs=(TokenLogprob(token="hi", logprob=-0.5),))
    unknown = json.loads(encode(chunk("c")))
    unknown["priority"] = 3
    for frame in (encode(with_call), encode(with_logprobs), json.dumps(unknown),
                  encode(InferenceResponseChunks(chunks=(chunk("d"), with_call)))):
        assert decode_hot(frame) is None
        assert not isinstance(parse(frame), ProtocolError)  # valid: the protocol's own path takes it


def test_other_frames_and_broken_json_are_left_to_parse_message():
    for data in ('{"type": "heartbeat"}', "not json", "[]", '{"type": "inference_response_chunk"}', "",
                 '{"type":"inference_response_chunk","request_id":"r","seq":1,"delta":{"content":"\\ud800"}}',
                 b'{"type":"inference_response_chunk","request_id":"r","seq":1,"delta":{"content":"\xff"}}',
                 '{"type":"inference_response_chunks","chunks":' + "[" * 5000 + "]" * 5000 + "}"):
        assert decode_hot(data) is None


def test_a_frame_past_the_frame_limit_is_left_to_parse_message_which_refuses_it():
    head = '{"type":"inference_response_chunk","request_id":"r","seq":1,"delta":{"content":"'
    data = head + "x" * (MAX_FRAME_BYTES + 1 - len(head) - 3) + '"}}'
    assert len(data) == MAX_FRAME_BYTES + 1
    assert decode_hot(data.encode()) is None and isinstance(parse(data.encode()), FrameTooLarge)
    # A str of more characters than a quarter of the limit might pass it in UTF-8: parse_message measures it.
    quarter = head + "x" * (MAX_FRAME_BYTES // 4) + '"}}'
    assert decode_hot(quarter) is None and isinstance(parse(quarter), InferenceResponseChunk)


def test_with_num_tokens_copies_either_kind_of_chunk():
    frame = chunk("r1", 3)
    hot = decode_hot(encode(frame))
    assert with_num_tokens(hot, 9).num_tokens == 9 and with_num_tokens(frame, 9).num_tokens == 9
    assert hot.num_tokens == frame.num_tokens == 1  # copies: the originals are unchanged
    assert fields(with_num_tokens(hot, 9)) == fields(with_num_tokens(frame, 9))


# ---- generated frames: valid ones, and ones with a single field at or past its bounds --------------------

TEXTS = [None, 1, "", "\x00", ["x"], {}, "x" * 300, "é" * 300]
AT_BOUNDS = {  # per field: values at, just past and beside its bounds (agent/wire/frames.py)
    "type": [None, "", "inference_response_chunks", "heartbeat", 1],
    "request_id": [None, 1, "", "x", "x" * 256, "x" * 257, "é" * 256, "é" * 257, ["x"]],
    "seq": [None, -1, 0, 2**31, 2**31 + 1, 2**63, 1.0, 1e400, True, "1"],
    "num_tokens": [None, -1, 0, 4096, 4097, 1.0, True, "1", []],
    "logprobs": [None, [], [{}], {}, 0, "", [{"token": "a", "logprob": -1.0}]],
    "delta": [None, [], "x", {}, {"content": None}, 1],
    "delta.content": TEXTS, "delta.reasoning": TEXTS,
    "delta.tool_calls": [None, [], {}, [{}], [{"index": 0}], "x", [None]],
    "extra": [None, 1, "x", {}], "delta.extra": [None, 1, "x"],
}
odd_values = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8)
valid_rows = st.fixed_dictionaries(
    {"type": st.just("inference_response_chunk"), "request_id": st.text(min_size=1, max_size=8),
     "seq": st.integers(0, 2**31), "delta": st.fixed_dictionaries(
         {}, optional={"content": st.text(max_size=6), "reasoning": st.text(max_size=6), "tool_calls": st.just([])})},
    optional={"num_tokens": st.none() | st.integers(0, 4096), "logprobs": st.none()})


@st.composite
def rows(draw) -> dict:
    """A valid text-only row, or one with one field (or a new one) set to an odd value."""
    row = draw(valid_rows)
    if draw(st.booleans()):
        name = draw(st.sampled_from(sorted(AT_BOUNDS)))
        parent = row["delta"] if name.startswith("delta.") else row
        parent[name.removeprefix("delta.")] = draw(st.sampled_from(AT_BOUNDS[name]) if draw(st.booleans()) else odd_values)
    return row


@st.composite
def frames(draw) -> Any:
    if draw(st.booleans()):
        return draw(rows())
    chunks: Any = draw(st.lists(valid_rows, max_size=3))
    chunks.insert(draw(st.integers(0, len(chunks))), draw(rows()))  # one row that may be odd
    frame = {"type": "inference_response_chunks", "chunks": chunks}
    if draw(st.integers(0, 5)) == 0:  # the batch's own fields
        frame[draw(st.sampled_from(("type", "chunks", "extra")))] = draw(st.sampled_from(AT_BOUNDS["delta"]))
    return frame


def agrees(text: str) -> bool:
    """decode_hot either leaves the frame to parse_message or reads it exactly as parse_message does."""
    hot, parsed = decode_hot(text), parse(text)
    if hot is None:
        return True
    return not isinstance(parsed, ProtocolError) and getattr(parsed, "rejected_rows", ()) == () \
        and rows_of(hot) == rows_of(parsed)


@pytest.mark.parametrize("name", sorted(AT_BOUNDS))
def test_each_field_at_and_past_its_bounds_is_read_as_parse_message_reads_it_or_left_to_it(name):
    for value in AT_BOUNDS[name]:
        row = {"type": "inference_response_chunk", "request_id": "r", "seq": 1, "delta": {"content": "a"}}
        parent = row["delta"] if name.startswith("delta.") else row
        parent[name.removeprefix("delta.")] = value
        for frame in (row, {"type": "inference_response_chunks", "chunks": [row]}):
            assert agrees(json.dumps(frame)), (name, value)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames(), st.booleans())
def test_the_hot_decoder_accepts_no_frame_parse_message_refuses_and_reads_what_it_accepts_the_same(frame, ascii_only):
    assert agrees(json.dumps(frame, ensure_ascii=ascii_only))


@FUZZ
@given(from_schema(DEFS["InferenceResponseChunk"]) | from_schema(DEFS["InferenceResponseChunks"]))
def test_every_valid_text_only_chunk_frame_is_decoded_hot(frame):
    rows = frame["chunks"] if "chunks" in frame else [frame]
    for row in rows:  # the hot rows: text only
        row["delta"].pop("tool_calls", None)
        row.pop("logprobs", None)
    text = json.dumps(frame)
    parsed = parse(text)
    assert not isinstance(parsed, ProtocolError)
    hot = decode_hot(text)
    assert hot is not None and rows_of(hot) == rows_of(parsed)
