"""Several of a stream's events as one write: the Tokens that arrived together merged into one.

A client is written once per engine step with all its new text, and a client that reads slowly gets
what piled up meanwhile as one event rather than one per token (the engine's own streams merge deltas
for a slow reader the same way), so it never makes the coordinator encode and send a backlog piece
by piece, and never slows the other streams. Content, reasoning, logprobs and tool-call pieces are
concatenated in order; OpenAI's clients accumulate each of them separately, so one merged delta
reads exactly as its parts would.

    token, end = merge(events)   -> the merged Token (None when there was none) and the Finished or
                                    Broken that ended them (None when the stream goes on)

Public names: merge.
"""

from __future__ import annotations

from collections.abc import Sequence

from agent.coordinator.flow import Broken, Finished, Token


def merge(events: Sequence[Token | Finished | Broken]) -> tuple[Token | None, Finished | Broken | None]:
    tokens = [event for event in events if isinstance(event, Token)]
    end = next((event for event in events if not isinstance(event, Token)), None)
    if len(tokens) <= 1:
        return (tokens[0] if tokens else None), end
    return Token("".join(t.content for t in tokens), "".join(t.reasoning for t in tokens),
                 tuple(entry for t in tokens for entry in t.logprobs),
                 tuple(piece for t in tokens for piece in t.tool_calls)), end
