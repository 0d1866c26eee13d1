"""UsageInflater: serves real-looking text but overstates what it cost.

Each chunk carries one short word and claims `claimed_tokens_per_chunk` tokens; inference_complete
claims `claimed_usage` (the most a frame may say by default). An honest agent's chunk claims the tokens
it decoded, one or two per word. The stream ends `stop` after `num_chunks` chunks, or earlier when the
coordinator cancels it (it cut the stream at max_tokens).

Public names: UsageInflater, MAX_CLAIM_TOKENS.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from agent.testing.hostile.peer import HostilePeer
from agent.wire.frames import (
    MAX_CHUNK_TOKENS,
    ChunkDelta,
    FinishReason,
    InferenceAccepted,
    InferenceComplete,
    InferenceRequest,
    InferenceResponseChunk,
    UsageReport,
)

MAX_CLAIM_TOKENS = 2**31  # the most a usage field may say


@dataclass
class UsageInflater(HostilePeer):
    num_chunks: int = 24
    chunk_interval_s: float = 0.01
    claimed_tokens_per_chunk: int = 8
    claimed_usage: tuple[int, int] = (MAX_CLAIM_TOKENS, MAX_CLAIM_TOKENS)  # (prompt, completion)

    async def serve(self, request: InferenceRequest) -> None:
        rid = request.request_id
        await self.send(InferenceAccepted(request_id=rid, prompt_tokens=self.claimed_usage[0]))
        sent = 0
        for seq in range(1, self.num_chunks + 1):
            if rid in self.cancels:
                break
            await self.send(InferenceResponseChunk(request_id=rid, seq=seq, delta=ChunkDelta(content=f" w{seq}"),
                                                   num_tokens=min(self.claimed_tokens_per_chunk, MAX_CHUNK_TOKENS)))
            sent += 1
            await asyncio.sleep(self.chunk_interval_s)
        finish = FinishReason.CANCELLED if rid in self.cancels else FinishReason.STOP
        prompt, completion = self.claimed_usage
        await self.send(InferenceComplete(request_id=rid, usage=UsageReport(prompt_tokens=prompt,
                                                                            completion_tokens=completion),
                                          finish_reason=finish, num_chunks=sent))
