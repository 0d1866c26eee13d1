"""Several of a stream's Tokens as runs of one kind, in order: what the event dialects (Responses, Messages,
legacy completions) write for a step, or for a slow client's backlog, in one body write.

token_merge.py merges a step's Tokens into one, which suits chat completions (a client accumulates content,
reasoning and each tool call apart, so their order between each other is lost without harm). The event
dialects open an item or block per kind of text, so order is what they are made of: here consecutive deltas
of the same kind merge, and a change of kind starts a new run.

    content     text (and its logprobs) after text
    reasoning   reasoning after reasoning
    tool call   a call's argument text after that same call's piece (its first piece, with the id and name,
                or a later one); a piece with an id always starts a new call

Within one Token the parts are taken in the order the dialect states read them: reasoning, content, tool
calls. A Token's logprobs go with its content; a Token without content keeps them on its first run (the
writers show logprobs only beside content, so they are not shown, as before). Each run is a Token with one
part, so a writer feeds the runs to its state exactly as it fed the Tokens, and gets the same text in the
same order in fewer events.

    tokens, end = split(events)   the Tokens, and the Finished or Broken that ended them (None: it goes on)
    runs(tokens)                  the runs, in order

Public names: runs, split.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from agent.coordinator.flow import Broken, Finished, Token
from agent.wire.frames import ToolCallDelta
from agent.wire.logprobs import TokenLogprob


def split(events: Sequence[Token | Finished | Broken]) -> tuple[list[Token], Finished | Broken | None]:
    tokens = [event for event in events if isinstance(event, Token)]
    return tokens, next((event for event in events if not isinstance(event, Token)), None)


def runs(tokens: Sequence[Token]) -> list[Token]:
    found: list[_Run] = []
    for token in tokens:
        logprobs = token.logprobs
        for kind, text, call in _parts(token):
            last = found[-1] if found else None
            if last is None or last.kind != kind or (call is not None and call.id is not None):
                last = _Run(kind, call)
                found.append(last)
            last.texts.append(text)
            if kind == "content" or (logprobs and not token.content):
                last.logprobs += logprobs
                logprobs = ()
    return [run.token() for run in found]


@dataclass(slots=True)
class _Run:
    kind: str | int  # "content", "reasoning", or a tool call's index
    call: ToolCallDelta | None  # a call's first piece in this run
    texts: list[str] = field(default_factory=list)  # joined once: a long backlog is not copied per piece
    logprobs: list[TokenLogprob] = field(default_factory=list)

    def token(self) -> Token:
        text, logprobs = "".join(self.texts), tuple(self.logprobs)
        if self.kind == "content":
            return Token(text, "", logprobs)
        if self.kind == "reasoning":
            return Token("", text, logprobs)
        # model_copy: the joined arguments are the flow's checked pieces, bounded by max_tool_argument_chars
        return Token("", "", logprobs, (self.call.model_copy(update={"arguments": text}),))


def _parts(token: Token) -> list[tuple[str | int, str, ToolCallDelta | None]]:
    """(kind, text, tool call piece) in the order the dialect states read a Token."""
    parts: list[tuple[str | int, str, ToolCallDelta | None]] = [("reasoning", token.reasoning, None)] \
        if token.reasoning else []
    if token.content:
        parts.append(("content", token.content, None))
    return parts + [(piece.index, piece.arguments, piece) for piece in token.tool_calls]
