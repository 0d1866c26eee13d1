"""The log-probabilities of one row's tokens, read on the MLX thread from the step's own distribution.

mlx-lm's generation step already holds each row's normalised log-probabilities over the vocabulary (the
logits after the row's logits processors, before temperature and top-p/top-k): the distribution the token
was drawn from. A row that asked for logprobs reads its chosen token's entry and, with `top_logprobs`,
the k best by one partial sort of its own row; a row that did not ask has no reader and costs nothing.
A -inf (a token a processor masked) travels as OpenAI's floor, -9999.0.

Public names: LogprobReader.
"""

from __future__ import annotations

import math

import mlx.core as mx

from agent.engine.token_text import TokenText
from agent.wire.logprobs import FLOOR_LOGPROB, TokenLogprob, TopLogprob


class LogprobReader:
    """One row's reader. Which tokens are content is known only once the channel splitter lets their text
    through: a token that may begin a marker (`analy` of `<|channel|>analysis`) is held until the next ones
    decide, so its entry waits in `pending` and is shown with the content it turns out to be, or dropped
    with the markup or reasoning it turns out to be (OpenAI's logprobs are the content's tokens only)."""

    def __init__(self, token_text: TokenText, num_top: int) -> None:
        self.token_text, self.num_top = token_text, num_top
        self.pending: list[TokenLogprob] = []

    def settle(self, entry: TokenLogprob | None, *, has_content: bool, is_decided: bool) -> tuple[TokenLogprob, ...]:
        """Add this step's entry; the entries now known to be content (its text was shown as content)."""
        if entry is not None:
            self.pending.append(entry)
        if has_content:
            shown, self.pending = tuple(self.pending), []
            return shown
        if is_decided:
            self.pending = []
        return ()

    def entry(self, logprobs: mx.array, token: int) -> TokenLogprob:
        """`logprobs`: the row's log-probabilities over the vocabulary at the step that chose `token`."""
        text, raw = self.token_text.lookup(token)
        return TokenLogprob(token=text, logprob=_bounded(logprobs[token].item()), bytes=raw,
                            top_logprobs=self._top(logprobs))

    def _top(self, logprobs: mx.array) -> tuple[TopLogprob, ...]:
        k = min(self.num_top, logprobs.shape[-1])
        if k <= 0:
            return ()
        ids = mx.argpartition(-logprobs, kth=k - 1)[:k]
        values = logprobs[ids]
        ranked = sorted(zip(values.tolist(), ids.tolist()), key=lambda pair: -pair[0])
        return tuple(TopLogprob(token=text, logprob=_bounded(value), bytes=raw)
                     for value, (text, raw) in ((value, self.token_text.lookup(i)) for value, i in ranked))


def _bounded(value: float) -> float:
    if math.isnan(value):
        return FLOOR_LOGPROB
    return min(0.0, max(FLOOR_LOGPROB, value))
