"""A provider's logprobs, checked against what the request asked before a client sees them.

The frame's own bounds (agent/wire/logprobs.py) already refuse a logprob above 0, a NaN, a token text or
byte list past its limit, or more than 20 alternatives. What only the request can tell is checked here:

    not asked            any logprobs are dropped (the client did not ask; nothing is shown)
    more entries than    a stream shows at most one entry per token it carried: more is a forgery (counted
      tokens             over the stream, not per chunk: a token held back as possible markup goes out in one
                         chunk and its entry, once the agent knows it is content, in a later one)
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


def checked_logprobs(chunk: InferenceResponseChunk, num_top_logprobs: int | None,
                     num_uncovered_tokens: int = 0) -> tuple[TokenLogprob, ...]:
    """The chunk's entries to show (none when the request did not ask); raises LogprobsRefused.
    `num_uncovered_tokens`: tokens of the stream's earlier chunks that no entry has covered yet."""
    entries = chunk.logprobs or ()
    if num_top_logprobs is None or not entries:
        return ()
    num_tokens = num_uncovered_tokens + UsageMeter.tokens_of(chunk)
    if len(entries) > num_tokens:
        raise LogprobsRefused(f"{len(entries)} logprobs entries where the stream has {num_tokens} tokens without one")
    for entry in entries:
        if len(entry.top_logprobs) != num_top_logprobs:
            raise LogprobsRefused(f"an entry with {len(entry.top_logprobs)} alternatives where "
                                  f"{num_top_logprobs} were asked")
    return entries
