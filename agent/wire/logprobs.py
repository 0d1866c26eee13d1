"""Token log-probabilities on the wire, in OpenAI's shape (`choices[].logprobs.content[]`).

One `TokenLogprob` per generated content token: its text, its log-probability, its UTF-8 bytes and up to
20 alternatives. Everything is bounded, so a chunk's logprobs cost at most its tokens × 21 short entries:
a token's text is at most 256 characters and 256 bytes (real tokens are a few), a log-probability is
finite and ≤ 0 (a masked token travels as FLOOR_LOGPROB, OpenAI's own -9999.0). What a hostile provider can
still get wrong (more entries than the chunk's tokens, more alternatives than asked) is checked by the
coordinator against the request (agent/coordinator/logprob_check.py).

Public names: TokenLogprob, TopLogprob, MAX_TOKEN_CHARS, MAX_TOKEN_BYTES, FLOOR_LOGPROB.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from agent.wire.body_options import MAX_TOP_LOGPROBS

MAX_TOKEN_CHARS = 256
MAX_TOKEN_BYTES = 256
FLOOR_LOGPROB = -9999.0

Logprob = Annotated[float, Field(ge=FLOOR_LOGPROB, le=0.0)]
TokenText = Annotated[str, Field(max_length=MAX_TOKEN_CHARS)]
TokenBytes = Annotated[tuple[Annotated[int, Field(ge=0, le=255)], ...], Field(max_length=MAX_TOKEN_BYTES)]


class _Part(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class TopLogprob(_Part):
    token: TokenText
    logprob: Logprob
    bytes: TokenBytes | None = None


class TokenLogprob(_Part):
    token: TokenText
    logprob: Logprob
    bytes: TokenBytes | None = None
    top_logprobs: Annotated[tuple[TopLogprob, ...], Field(max_length=MAX_TOP_LOGPROBS)] = ()
