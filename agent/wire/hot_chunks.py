"""The relay's hot frames decoded by msgspec: text-only chunk rows, the bulk of what a provider sends.

Every relayed token arrives as a row of an `inference_response_chunks` frame (or as one
`inference_response_chunk`), and pydantic's validation of those rows was the largest piece of the
coordinator's own Python per token (scripts/bench_codec.py: 1.45 µs a row of a batch; msgspec: 0.24). The
coordinator's provider link (http/provider_ws.py) tries this decoder first and hands everything it does not
accept to agent.wire.protocol.parse_message, which stays the protocol's definition:

    decode_hot(data) -> HotChunk | HotChunks | None     (None: not hot; parse_message decides)

It accepts a frame only when every row is exactly what agent.wire.frames allows and carries nothing but text
(`delta.content`, `delta.reasoning`, no tool calls, no logprobs), with no field it does not know; anything
else (a tool-call piece, logprobs, an unknown field that parse_message logs, any invalid value, any other
frame type) is None, and parse_message decides, with its error frames, its salvage of good rows and its
pydantic models, exactly as before. So this decoder never accepts a frame parse_message would refuse
(tests/test_hot_chunks.py compares the two on generated frames), and a frame it accepts reads like the
pydantic one: the same attribute names, `delta.is_empty`, `delta.num_text_bytes`.

The three are not tracked by the collector (gc=False): a decoded frame holds strings, numbers and its own
rows, never a cycle, so a frame a step and a row a token are not young objects for it to walk.

Downstream, a chunk is either class (AnyChunk): CHUNK_FRAMES for isinstance, with_num_tokens() for a copy.

Public names: HotDelta, HotChunk, HotChunks, AnyChunk, CHUNK_FRAMES, decode_hot, with_num_tokens.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Union

import msgspec

from agent.wire.chat_body import MAX_TEXT_CHARS
from agent.wire.chunk_batch import MAX_BATCH_ROWS
from agent.wire.frames import MAX_CHUNK_TOKENS, MAX_ID_CHARS, InferenceResponseChunk
from agent.wire.protocol import MAX_FRAME_BYTES

_Text = Annotated[str, msgspec.Meta(max_length=MAX_TEXT_CHARS)]
_RequestId = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_CHARS)]
_Count = Annotated[int, msgspec.Meta(ge=0, le=2**31)]
_NumTokens = Annotated[int, msgspec.Meta(ge=0, le=MAX_CHUNK_TOKENS)]
_Nothing = Annotated[tuple[Any, ...], msgspec.Meta(max_length=0)]  # tool calls: a row with any is not hot


class HotDelta(msgspec.Struct, frozen=True, forbid_unknown_fields=True, gc=False):
    content: _Text = ""
    reasoning: _Text = ""
    tool_calls: _Nothing = ()

    @property
    def is_empty(self) -> bool:
        return not (self.content or self.reasoning)

    @property
    def num_text_bytes(self) -> int:
        content, reasoning = self.content, self.reasoning  # ASCII text is as many bytes as characters: no copy
        return ((len(content) if content.isascii() else len(content.encode()))
                + (len(reasoning) if reasoning.isascii() else len(reasoning.encode())))


class HotChunk(msgspec.Struct, frozen=True, forbid_unknown_fields=True, gc=False, tag="inference_response_chunk",
               tag_field="type"):
    type: ClassVar[str] = "inference_response_chunk"
    request_id: _RequestId
    seq: _Count
    delta: HotDelta
    num_tokens: _NumTokens | None = None
    logprobs: None = None  # a row with logprobs is not hot


class HotChunks(msgspec.Struct, frozen=True, forbid_unknown_fields=True, gc=False, tag="inference_response_chunks",
                tag_field="type"):
    type: ClassVar[str] = "inference_response_chunks"
    chunks: Annotated[tuple[HotChunk, ...], msgspec.Meta(max_length=MAX_BATCH_ROWS)]


AnyChunk = Union[InferenceResponseChunk, HotChunk]  # a chunk row, as either decoder gives it
CHUNK_FRAMES = (HotChunk, InferenceResponseChunk)  # the hot one first: isinstance tries them in order
_DECODER = msgspec.json.Decoder(Union[HotChunks, HotChunk])
_TAG = "inference_response_chunk"  # begins both hot frames' type tags: a frame without it is not hot
_TAG_BYTES = _TAG.encode()


def decode_hot(data: str | bytes) -> HotChunk | HotChunks | None:
    """The frame when it is a hot one, else None (parse_message decides): also when it may pass
    MAX_FRAME_BYTES (a str of more than a quarter of it, whose UTF-8 could), which parse_message measures,
    and when its text does not hold the hot tag (a heartbeat, an accepted: no decode to fail; a tag spelled
    with escapes is left to parse_message too)."""
    if isinstance(data, str):
        if len(data) > MAX_FRAME_BYTES // 4 or _TAG not in data:
            return None
    elif len(data) > MAX_FRAME_BYTES or (isinstance(data, (bytes, bytearray)) and _TAG_BYTES not in data):
        return None
    try:
        return _DECODER.decode(data)
    except (msgspec.DecodeError, RecursionError):
        return None


def with_num_tokens(chunk: AnyChunk, num_tokens: int) -> AnyChunk:
    if type(chunk) is HotChunk:
        return msgspec.structs.replace(chunk, num_tokens=num_tokens)
    return chunk.model_copy(update={"num_tokens": num_tokens})
