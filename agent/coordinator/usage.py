"""What one request may be charged: the coordinator's own count of what it delivered, never the provider's word.

A provider is a stranger, so its `inference_complete` usage is a claim. The meter bounds it:

    per chunk     its `num_tokens`, at least 1 when it carries text or a tool call; an older agent's chunk
                  without `num_tokens` counts as 1 (a floor: a chunk is one decode step or more); never more
                  than one token per byte of the stream's text (tool calls' names and arguments included)
                  plus `textless_tokens` in all (a token decodes to a byte or more, bar a few markers), so a
                  chunk cannot claim 8 tokens for a word
    completion    min(max(claimed, counted), bound)   (a claim of 0 still pays for what was delivered)
    bound         min(max_tokens, counted + slack)    when every chunk carried num_tokens
                  max_tokens                          when some did not (the count is only a floor then)
    prompt        claimed, within [floor, estimate]   (routing/estimate.py: the estimate is the hold's own figure,
                                                       the floor stops a claim of 0 from serving the prompt free)

`slack` covers tokens after the last text (EOS, a held-back stop sequence) that no chunk carries. A chunk
that would take the count past max_tokens is refused (`admit` says no): the flow ends the request there
with finish_reason `length` and cancels it at the agent. A stream the client did not receive in full is
charged `delivered()`: the bounded prompt and the tokens the client was handed, nothing the provider claims.

Public names: UsageMeter, Charge.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.wire.frames import UsageReport
from agent.wire.hot_chunks import AnyChunk


def claimed_tokens(is_shown: bool, num_tokens: int | None) -> int:
    """What a chunk claims: its num_tokens, at least 1 when it shows anything; 1 or 0 from an older agent."""
    least = 1 if is_shown else 0
    return least if num_tokens is None or num_tokens < least else num_tokens


@dataclass(frozen=True, slots=True)
class Charge:
    prompt_tokens: int
    completion_tokens: int
    is_clamped: bool  # the provider claimed more than the bound
    cached_tokens: int = 0  # of prompt_tokens, served from the provider's prefix cache (never more than them)


@dataclass(slots=True)
class UsageMeter:
    max_tokens: int
    prompt_bound: int
    prompt_floor: int = 0
    slack_tokens: int = 4
    textless_tokens: int = 32  # tokens a stream may carry beyond one per byte of its text (markup, specials)
    num_tokens: int = 0  # counted, of the chunks admitted
    num_text_bytes: int = 0  # UTF-8 bytes of the text admitted
    num_inflated_tokens: int = 0  # claimed by chunks beyond what their text can carry: not counted
    is_exact: bool = True  # every admitted chunk carried num_tokens
    prompt_claim: int | None = None  # the agent's count from inference_accepted

    @staticmethod
    def tokens_of(chunk: AnyChunk) -> int:
        return claimed_tokens(not chunk.delta.is_empty, chunk.num_tokens)

    def admit(self, chunk: AnyChunk) -> bool:
        """Count the chunk, or False (counting nothing) when it would pass max_tokens. A token is at least
        one byte of text, apart from a stream's few textless ones (a channel header, an end marker), so a
        chunk claiming more tokens than that is counted only up to it."""
        delta = chunk.delta
        return self.count(delta.num_text_bytes, not delta.is_empty, chunk.num_tokens)

    def count(self, text_bytes: int, is_shown: bool, num_tokens: int | None) -> bool:
        """admit() of a chunk of `text_bytes` bytes, `is_shown` when it carries anything a client sees, claiming
        `num_tokens` (None: an older agent's); the flow's text lane (flow.py) calls it with what it read."""
        claimed = claimed_tokens(is_shown, num_tokens)
        counted = self.num_tokens
        ceiling = self.num_text_bytes + text_bytes + self.textless_tokens - counted
        tokens = claimed if claimed <= ceiling else min(claimed, max(ceiling, 1 if text_bytes else 0))
        if counted + tokens > self.max_tokens:
            return False
        self.num_tokens = counted + tokens
        self.num_text_bytes += text_bytes
        if claimed != tokens:
            self.num_inflated_tokens += claimed - tokens
        if num_tokens is None:
            self.is_exact = False
        return True

    @property
    def completion_bound(self) -> int:
        if self.is_exact:
            return min(self.max_tokens, self.num_tokens + self.slack_tokens)
        return self.max_tokens

    def settle(self, claimed: UsageReport) -> Charge:
        prompt = self._prompt(claimed.prompt_tokens)
        completion = min(max(claimed.completion_tokens, self.num_tokens), self.completion_bound)
        is_clamped = (claimed.prompt_tokens > self.prompt_bound or claimed.completion_tokens > self.completion_bound
                      or self.num_inflated_tokens > 0)
        return Charge(prompt, completion, is_clamped, min(claimed.cached_tokens, prompt))

    def delivered(self) -> Charge:
        """What the client received: its prompt (the agent's count when lower) and the counted tokens."""
        prompt = self.prompt_bound if self.prompt_claim is None else self._prompt(self.prompt_claim)
        return Charge(prompt, self.num_tokens, False)

    def _prompt(self, claimed: int) -> int:
        return min(max(claimed, self.prompt_floor), self.prompt_bound)
