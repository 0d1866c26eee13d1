"""A provider's logprobs, checked against what the request asked before a client sees them.

The frame's own bounds (agent/wire/logprobs.py) already refuse a logprob above 0, a NaN, a token text or
byte list past its limit, or more than 20 alternatives. What only the request can tell is checked here:

    not asked            any logprobs are dropped (the client did not ask; nothing is shown)
    more entries than    a chunk shows at most one entry per token it carries: more is a forgery
      tokens
    alternatives ≠ asked each entry carries exactly `top_logprobs` alternatives, as the agent computes them

A chunk that fails is refused: the flow ends the stream with an error rather than show invented numbers.

Public names: checked_logprobs, LogprobsRefused.
"""

from __future__ import annotations

from agent.coordinator.usage import UsageMeter
from agent.wire.frames import InferenceResponseChunk
from agent.wire.logprobs import TokenLogprob


class LogprobsRefused(ValueError):
    """The provider's logprobs do not fit the chunk or the request."""


def checked_logprobs(chunk: InferenceResponseChunk, num_top_logprobs: int | None) -> tuple[TokenLogprob, ...]:
    """The chunk's entries to show (none when the request did not ask); raises LogprobsRefused."""
    entries = chunk.logprobs or ()
    if num_top_logprobs is None or not entries:
        return ()
    num_tokens = UsageMeter.tokens_of(chunk)
    if len(entries) > num_tokens:
        raise LogprobsRefused(f"{len(entries)} logprobs entries for a chunk of {num_tokens} tokens")
    for entry in entries:
        if len(entry.top_logprobs) != num_top_logprobs:
            raise LogprobsRefused(f"an entry with {len(entry.top_logprobs)} alternatives where "
                                  f"{num_top_logprobs} were asked")
    return entries
