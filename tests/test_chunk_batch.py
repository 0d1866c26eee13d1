"""The batched chunk frame on its own: it round-trips, a bad row costs only itself, the whole-frame bounds
hold, and the agent's send pump batches runs of chunks without reordering anything (agent/link/batching.py)."""

from __future__ import annotations

import json

from agent.link.batching import encode_bounded, frames_to_send
from agent.wire.chunk_batch import MAX_BATCH_ROWS, InferenceResponseChunks
from agent.wire.frames import ChunkDelta, InferenceAccepted, InferenceComplete, InferenceResponseChunk, UsageReport
from agent.wire.protocol import Direction, InvalidField, encode, parse_message
from agent.wire.unknown_fields import UnknownFields


def chunk(rid: str, seq: int = 1, text: str = "hi", **kwargs) -> InferenceResponseChunk:
    return InferenceResponseChunk(request_id=rid, seq=seq, delta=ChunkDelta(content=text), num_tokens=1, **kwargs)


def parse(data: str | dict):
    return parse_message(data if isinstance(data, str) else json.dumps(data), direction=Direction.TO_COORDINATOR)


def test_a_batch_round_trips_and_each_row_is_exactly_the_single_chunk_frame():
    batch = InferenceResponseChunks(chunks=(chunk("a"), chunk("b", 4, "yo")))
    parsed = parse(encode(batch))
    assert parsed == batch and parsed.rejected_rows == ()
    assert json.loads(encode(batch))["chunks"][1] == json.loads(encode(chunk("b", 4, "yo")))


def test_one_bad_row_is_dropped_and_named_while_the_other_rows_parse():
    wire = json.loads(encode(InferenceResponseChunks(chunks=(chunk("a"), chunk("b"), chunk("c")))))
    wire["chunks"][1]["seq"] = -1
    wire["chunks"][2]["delta"]["content"] = 5
    parsed = parse(wire)
    assert [row.request_id for row in parsed.chunks] == ["a"]
    assert [(r.index, r.request_id, r.field) for r in parsed.rejected_rows] == [
        (1, "b", "chunks.1.seq"), (2, "c", "chunks.2.delta.content")]


def test_a_row_that_is_not_an_object_is_rejected_without_a_request_id():
    wire = json.loads(encode(InferenceResponseChunks(chunks=(chunk("a"),))))
    wire["chunks"].insert(0, "not a chunk")
    parsed = parse(wire)
    assert [row.request_id for row in parsed.chunks] == ["a"]
    assert [(r.index, r.request_id) for r in parsed.rejected_rows] == [(0, None)]


def test_unknown_fields_in_rows_are_ignored_beside_a_bad_row():
    wire = json.loads(encode(InferenceResponseChunks(chunks=(chunk("a"), chunk("b")))))
    wire["chunks"][0]["priority"] = 3
    wire["chunks"][1]["num_tokens"] = "many"
    unknown = UnknownFields()
    parsed = parse_message(json.dumps(wire), direction=Direction.TO_COORDINATOR, unknown_fields=unknown)
    assert [row.request_id for row in parsed.chunks] == ["a"] and parsed.rejected_rows[0].request_id == "b"
    assert unknown.names == {"InferenceResponseChunk.priority"}


def test_a_batch_with_more_rows_than_allowed_is_refused_whole_with_an_error_naming_the_field():
    rows = [json.loads(encode(chunk(f"r{i}"))) for i in range(MAX_BATCH_ROWS + 1)]
    error = parse({"type": "inference_response_chunks", "chunks": rows})
    assert isinstance(error, InvalidField) and error.field == "chunks"


def test_a_batch_whose_chunks_are_not_a_list_is_refused_whole():
    error = parse({"type": "inference_response_chunks", "chunks": {"request_id": "a"}})
    assert isinstance(error, InvalidField) and error.field == "chunks"


def test_consecutive_chunks_become_one_batch_and_every_other_frame_keeps_its_place():
    accepted = InferenceAccepted(request_id="c")
    complete = InferenceComplete(request_id="a", usage=UsageReport(prompt_tokens=1, completion_tokens=2),
                                 finish_reason="stop")
    waiting = [chunk("a"), chunk("b"), accepted, chunk("c"), chunk("a", 2), complete, chunk("b", 2)]
    out = frames_to_send(waiting, batch=True)
    assert [type(frame).__name__ for frame in out] == [
        "InferenceResponseChunks", "InferenceAccepted", "InferenceResponseChunks", "InferenceComplete",
        "InferenceResponseChunk"]
    assert [row for frame in out for row in getattr(frame, "chunks", (frame,))] == waiting


def test_an_older_coordinator_gets_every_chunk_on_its_own():
    waiting = [chunk("a"), chunk("b"), chunk("c")]
    assert frames_to_send(waiting, batch=False) == waiting


def test_a_run_longer_than_the_row_limit_is_split_into_full_batches():
    out = frames_to_send([chunk(f"r{i}") for i in range(7)], batch=True, max_rows=3)
    assert [len(frame.chunks) if isinstance(frame, InferenceResponseChunks) else 1 for frame in out] == [3, 3, 1]


def test_a_batch_whose_json_would_pass_the_frame_limit_goes_as_smaller_frames_that_each_fit():
    batch = InferenceResponseChunks(chunks=tuple(chunk(f"r{i}", text="x" * 300) for i in range(8)))
    texts = encode_bounded(batch, max_bytes=1500)
    assert len(texts) > 1 and all(len(text.encode()) <= 1500 for text in texts)
    rows = [row for text in texts for row in (parse(text).chunks if "chunks" in text else (parse(text),))]
    assert rows == list(batch.chunks)
