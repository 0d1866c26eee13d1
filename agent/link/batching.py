"""What the link's send pump writes: the frames waiting on the outbox, with each run of chunks as one batch.

An engine step hands every row's delta to its request's task in one turn of the event loop, and the
pump runs after them, so what it finds waiting is one step's chunks (more when the socket is slow: a
batch then carries several steps, which is how a slow link catches up without a frame per token).
Consecutive `inference_response_chunk` frames become one `inference_response_chunks`; any other frame
ends the run and keeps its place, so the order the agent built its frames in is the order they arrive.

    frames_to_send(waiting, batch=True)   -> the frames to encode, in order
    encode_bounded(frame)                 -> JSON texts within MAX_FRAME_BYTES (a batch too big is split)

`batch=False` (a coordinator older than BATCHED_CHUNKS_MINOR) sends every chunk on its own, as before.

Public names: frames_to_send, encode_bounded.
"""

from __future__ import annotations

from collections.abc import Iterable

from agent.wire.chunk_batch import MAX_BATCH_ROWS, InferenceResponseChunks
from agent.wire.frames import InferenceResponseChunk
from agent.wire.protocol import MAX_FRAME_BYTES, Message, encode


def frames_to_send(waiting: Iterable[Message], *, batch: bool, max_rows: int = MAX_BATCH_ROWS) -> list[Message]:
    out: list[Message] = []
    run: list[InferenceResponseChunk] = []
    for frame in waiting:
        if batch and isinstance(frame, InferenceResponseChunk):
            run.append(frame)
            if len(run) == max_rows:
                out.append(_batch(run))
                run = []
            continue
        if run:
            out.append(_batch(run))
            run = []
        out.append(frame)
    if run:
        out.append(_batch(run))
    return out


def _batch(run: list[InferenceResponseChunk]) -> Message:
    return run[0] if len(run) == 1 else InferenceResponseChunks(chunks=tuple(run))


def encode_bounded(frame: Message, max_bytes: int = MAX_FRAME_BYTES) -> list[str]:
    """The frame's JSON; a batch whose JSON would pass max_bytes goes as two halves (each checked again),
    so rows of large deltas never make a frame the coordinator must refuse."""
    text = encode(frame)
    if len(text) * 4 <= max_bytes or len(text.encode()) <= max_bytes or not isinstance(frame, InferenceResponseChunks) or len(frame.chunks) < 2:
        return [text]
    half = len(frame.chunks) // 2
    return [part for rows in (frame.chunks[:half], frame.chunks[half:])
            for part in encode_bounded(_batch(list(rows)), max_bytes)]
