#!/usr/bin/env python3
"""What the hot path's encoding costs: a chunk frame parsed and encoded, one row of a batch, an SSE event.

    scripts/bench_codec.py [--rows 32] [--json]

All in one process, side by side (µs per chunk; a batch's figures are per row):
  parse_single   agent.wire.protocol.parse_message of one inference_response_chunk (pydantic, strict, JSON mode)
  parse_batch    the same for a batch of --rows rows, per row
  hot_single / hot_batch   agent.wire.hot_chunks.decode_hot (msgspec) of the same frames: what the coordinator's
                 provider link decodes text-only chunks with, before parse_message (a batch: per row)
  json_loads     json.loads of the single frame (and json_loads_batch: of the batch, per row): the stdlib's floor
                 for building the objects, without validation
  encode_single / encode_batch   encode() of one chunk frame / of the batch, per row
  sse_envelope   StreamFormat.delta: the per-stream envelope made once, only the delta encoded (openai_format.py)
  sse_dumps      the same event as one json.dumps of the whole chunk dict (what it did before)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.coordinator.http.openai_format import StreamFormat  # noqa: E402
from agent.wire.frames import ChunkDelta, InferenceResponseChunk  # noqa: E402
from agent.wire.protocol import Direction, encode, parse_message  # noqa: E402


def per_call_us(call, repeats: int) -> float:
    best = float("inf")
    for _ in range(5):  # the best of five: the least disturbed by whatever else runs on the cores
        started = time.perf_counter()
        for _ in range(repeats):
            call()
        best = min(best, (time.perf_counter() - started) / repeats * 1e6)
    return best


def _batch_class():
    """The batched frame, or None in a tree from before it (scripts/bench_before_after.py runs one)."""
    try:
        from agent.wire.chunk_batch import InferenceResponseChunks
    except ImportError:
        return None
    return InferenceResponseChunks


def _hot_decoder():
    """The link's msgspec decoder of text-only chunks, or None in a tree from before it."""
    try:
        from agent.wire.hot_chunks import decode_hot
    except ImportError:
        return None
    return decode_hot


def measure(num_rows: int, repeats: int = 2000) -> dict:
    rows = tuple(InferenceResponseChunk(request_id=f"chatcmpl-{i:024x}", seq=5, delta=ChunkDelta(content=" tok"),
                                        num_tokens=1) for i in range(num_rows))
    batch_class = _batch_class()
    single = encode(rows[0])
    batch = encode(batch_class(chunks=rows)) if batch_class else None
    fmt = StreamFormat("chatcmpl-0", "gpt-oss-20b", "reasoning", created=1)
    chunk = {"id": "chatcmpl-0", "object": "chat.completion.chunk", "created": 1, "model": "gpt-oss-20b",
             "system_fingerprint": None, "choices": [{"index": 0, "delta": {"content": " tok"}, "logprobs": None,
                                                      "finish_reason": None}]}
    to_coordinator = Direction.TO_COORDINATOR
    out = {
        "parse_single": per_call_us(lambda: parse_message(single, direction=to_coordinator), repeats),
        "json_loads": per_call_us(lambda: json.loads(single), repeats),
        "encode_single": per_call_us(lambda: encode(rows[0]), repeats),
        "sse_envelope": per_call_us(lambda: fmt.delta(" tok", ""), repeats),
        "sse_dumps": per_call_us(lambda: f"data: {json.dumps(chunk, ensure_ascii=False, separators=(',', ':'))}"
                                         "\n\n".encode(), repeats),
    }
    if (decode_hot := _hot_decoder()) is not None:
        assert decode_hot(single) is not None and decode_hot(batch) is not None  # both are hot frames
        out |= {"hot_single": per_call_us(lambda: decode_hot(single), repeats),
                "hot_batch": per_call_us(lambda: decode_hot(batch), repeats) / num_rows}
    if batch_class:
        out |= {"parse_batch": per_call_us(lambda: parse_message(batch, direction=to_coordinator), repeats) / num_rows,
                "json_loads_batch": per_call_us(lambda: json.loads(batch), repeats) / num_rows,
                "encode_batch": per_call_us(lambda: encode(batch_class(chunks=rows)), repeats) / num_rows}
    return {"rows": num_rows, "us": {name: round(value, 2) for name, value in out.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=32)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = measure(args.rows)
    print(json.dumps(result, indent=None if args.json else 1))


if __name__ == "__main__":
    main()
