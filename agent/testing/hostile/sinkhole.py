"""Sinkhole: accepts every request and never serves it, in one of three ways (SinkholeMode).

    silent              inference_accepted, then nothing (the first-token deadline is all that ends it)
    empty_then_silent   accepted, one chunk with no text, then nothing (an empty chunk is not a token)
    trickle             accepted, then a chunk with no text every `trickle_interval_s` until cancelled
                        (no stall deadline fires; only an overall deadline or the client ends it)

Public names: Sinkhole, SinkholeMode.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from enum import StrEnum

from agent.testing.hostile.peer import HostilePeer
from agent.wire.frames import ChunkDelta, InferenceAccepted, InferenceRequest, InferenceResponseChunk


class SinkholeMode(StrEnum):
    SILENT = "silent"
    EMPTY_THEN_SILENT = "empty_then_silent"
    TRICKLE = "trickle"


@dataclass
class Sinkhole(HostilePeer):
    mode: SinkholeMode = SinkholeMode.SILENT
    trickle_interval_s: float = 1.0
    max_trickle_chunks: int = 100_000  # per request: the peer's own memory stays bounded too

    async def serve(self, request: InferenceRequest) -> None:
        rid = request.request_id
        await self.send(InferenceAccepted(request_id=rid, prompt_tokens=1))
        if self.mode is SinkholeMode.SILENT:
            return
        if self.mode is SinkholeMode.EMPTY_THEN_SILENT:
            await self.send(self._empty_chunk(rid, 1))
            return
        for seq in range(1, self.max_trickle_chunks + 1):
            if rid in self.cancels:
                return
            await self.send(self._empty_chunk(rid, seq))
            await asyncio.sleep(self.trickle_interval_s)

    @staticmethod
    def _empty_chunk(rid: str, seq: int) -> InferenceResponseChunk:
        return InferenceResponseChunk(request_id=rid, seq=seq, delta=ChunkDelta(content=""), num_tokens=0)
