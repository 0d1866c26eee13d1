"""One frame for a whole engine step: `inference_response_chunks`, the chunks of every row at once.

An agent decoding 32 rows would otherwise send 32 `inference_response_chunk` frames a step, and the
coordinator parse and route each on its own. The batch carries the same chunks, each one exactly the
per-request frame (`type` included), so everything after parsing handles a row as it handles a single
chunk; the single frame stays accepted for peers that send it.

    InferenceResponseChunks(chunks=(chunk, ...))   at most MAX_BATCH_ROWS rows, within MAX_FRAME_BYTES
    salvage_rows(raw, errors, ...)                  a batch with its valid rows when some rows are bad:
                                                    one bad row never costs the others their tokens

It is sent only to a coordinator whose `registered.protocol_minor` is BATCHED_CHUNKS_MINOR or newer
(agent/link/batching.py); an older one is sent single chunks, as before.

Public names: InferenceResponseChunks, ChunkRowError, salvage_rows, MAX_BATCH_ROWS, BATCHED_CHUNKS_MINOR.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import Field, PrivateAttr, TypeAdapter, ValidationError

from agent.wire.frames import MAX_ID_CHARS, Frame, InferenceResponseChunk

MAX_BATCH_ROWS = 1024  # rows one batch may carry: a Mac runs a few slots of at most a few dozen rows each
BATCHED_CHUNKS_MINOR = 4  # the first protocol minor (of major 1) whose coordinators accept the batch


@dataclass(frozen=True, slots=True)
class ChunkRowError:
    """One row of a batch that could not be used: answered with an `error` frame naming its request."""

    index: int
    request_id: str | None
    field: str | None
    message: str


class InferenceResponseChunks(Frame):
    type: Literal["inference_response_chunks"] = "inference_response_chunks"
    chunks: Annotated[tuple[InferenceResponseChunk, ...], Field(max_length=MAX_BATCH_ROWS)]
    _rejected: tuple[ChunkRowError, ...] = PrivateAttr(default=())

    @property
    def rejected_rows(self) -> tuple[ChunkRowError, ...]:
        """The rows dropped as unusable when this batch was parsed (salvage_rows); () for a clean one."""
        # Read from the model's own dict of private values: `self._rejected` goes through pydantic's
        # __getattr__ (~1.4 µs, and the link asks of every batch).
        return self.__pydantic_private__["_rejected"]


_ADAPTER = TypeAdapter(InferenceResponseChunks)


def salvage_rows(raw: bytes, errors: list[dict[str, Any]]) -> InferenceResponseChunks | None:
    """The batch without the rows `errors` (a strict validation of `raw`) found bad, or None when the
    problem is not confined to rows (not JSON, not a list of chunks, too many rows)."""
    bad = {_row_of(error["loc"]) for error in errors}
    if None in bad:
        return None
    try:
        obj = json.loads(raw)
        rows = obj["chunks"]
        kept = [row for i, row in enumerate(rows) if i not in bad]
        rejected = tuple(_row_error(i, rows[i], [e for e in errors if _row_of(e["loc"]) == i]) for i in sorted(bad))
        cleaned = json.dumps({**obj, "chunks": kept}, ensure_ascii=False, allow_nan=False)
        frame = _ADAPTER.validate_json(cleaned.encode("utf-8", "surrogatepass"), strict=True)
    except (ValueError, RecursionError, LookupError, TypeError, ValidationError):
        return None
    frame._rejected = rejected
    return frame


def _row_of(loc: tuple[Any, ...]) -> int | None:
    """The row index of an error inside one chunk (the union tag first), else None."""
    parts = loc[1:] if loc and loc[0] == "inference_response_chunks" else loc
    if len(parts) >= 2 and parts[0] == "chunks" and isinstance(parts[1], int):
        return parts[1]
    return None


def _row_error(index: int, row: Any, errors: list[dict[str, Any]]) -> ChunkRowError:
    request_id = row.get("request_id") if isinstance(row, dict) else None
    request_id = request_id if isinstance(request_id, str) and 0 < len(request_id) <= MAX_ID_CHARS else None
    loc = errors[0]["loc"]
    parts = loc[1:] if loc and loc[0] == "inference_response_chunks" else loc
    field = ".".join(str(part)[:64] for part in parts) or None
    return ChunkRowError(index, request_id, field, str(errors[0]["msg"])[:512])
