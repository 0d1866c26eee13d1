"""Constrained decoding: one grammar matcher per constrained row inside the continuous batch.

Why llguidance: its wheels are abi3 for macOS arm64 and Linux x86_64 with no torch dependency, it reads
an HF `tokenizer.json` directly, its lark grammars take special tokens as terminals (so one grammar
covers a whole harmony turn, reasoning included) and JSON schemas inline (`%json`), and a mask costs
tens of microseconds. xgrammar's MLX path is a Metal kernel and its Python package pulls torch in.

A row's `ConstrainedRow` only consumes tokens and writes bitmask words; the batch applies every row's
mask in one operation per step (agent/engine/batch_mask.py), so rows without a constraint pay nothing.

Compiled grammars are cached by their text (so by schema and chat format): a row gets a copy of the
cached matcher, which is cheap, while compiling a schema can take milliseconds.

Public names: GrammarCache, ConstrainedRow, MaskTimes, DEFAULT_MAX_CACHED_GRAMMARS.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

import llguidance
import numpy as np

from agent.engine.constraint import Constraint
from agent.engine.grammar import GrammarInvalid, check_grammar, lark_for

DEFAULT_MAX_CACHED_GRAMMARS = 64  # compiled grammars kept per model (least recently used goes first)
REASONING_SHARE = 0.5  # of a constrained request's max_tokens that its reasoning may use
REASONING_BASIS_TOKENS = 4096  # the max_tokens that share is of when a request gives none


@dataclass(slots=True)
class MaskTimes:
    """Seconds the MLX thread spent on grammar masks (for the bench; bounded by `max_samples`)."""

    seconds: list[float] = field(default_factory=list)
    max_samples: int = 100_000

    def add(self, seconds: float) -> None:
        if len(self.seconds) < self.max_samples:
            self.seconds.append(seconds)


class GrammarCache:
    """One model's tokenizer for llguidance and its compiled grammars (bounded LRU, thread-safe)."""

    def __init__(self, tokenizer, family: str, *, max_grammars: int = DEFAULT_MAX_CACHED_GRAMMARS) -> None:
        self.family, self.max_grammars = family, max_grammars
        eos = sorted(tokenizer.eos_token_ids)
        self.tokenizer = llguidance.LLTokenizer(tokenizer.backend_tokenizer.to_str(), eos_token=eos)
        decoder = getattr(tokenizer, "added_tokens_decoder", {}) or {}
        self.specials: Collection[str] = frozenset(t.content for t in decoder.values() if t.special)
        self._matchers: OrderedDict[str, llguidance.LLMatcher] = OrderedDict()
        self._lock = threading.Lock()
        self.mask_times = MaskTimes()

    def matcher(self, constraint: Constraint, max_tokens: int | None, *, is_reasoning: bool = True
                ) -> llguidance.LLMatcher:
        """A fresh matcher for one request (off the MLX thread: compiling may take milliseconds).
        `is_reasoning` False: the prompt switched reasoning off, so the turn starts with the answer."""
        max_reasoning = max(1, int((max_tokens or REASONING_BASIS_TOKENS) * REASONING_SHARE)) if is_reasoning else 0
        lark = lark_for(constraint, self.family, self.specials, max_reasoning_tokens=max_reasoning)
        with self._lock:
            cached = self._matchers.get(lark)
            if cached is not None:
                self._matchers.move_to_end(lark)
                return cached.deep_copy()
        grammar = check_grammar(lark, constraint.param, self.tokenizer)
        compiled = llguidance.LLMatcher(self.tokenizer, grammar, log_level=0)
        if compiled.is_error():
            raise GrammarInvalid(constraint.param, compiled.get_error())
        with self._lock:
            self._matchers[lark] = compiled
            while len(self._matchers) > self.max_grammars:
                self._matchers.popitem(last=False)
        return compiled.deep_copy()

    def __len__(self) -> int:
        return len(self._matchers)


class ConstrainedRow:
    """One constrained row's matcher, as the batch's mask reads it (agent/engine/batch_mask.py)."""

    def __init__(self, matcher: llguidance.LLMatcher, vocab_size: int, eos_token_ids: Collection[int], guard: Any,
                 times: MaskTimes | None = None) -> None:
        self.matcher, self.vocab_size, self.times = matcher, vocab_size, times  # vocab_size: the tokenizer's
        self.guard = guard  # the row's sampling.Guard: a failure here ends this row only
        self.eos_token_ids = sorted(eos_token_ids)
        self.is_started = False  # the first mask follows the prompt; every later one follows a sampled token

    def is_masked(self) -> bool:
        """True when the grammar computes the next mask; False when the answer is complete and only an eos
        may follow (generation goes on with ignore_eos)."""
        if self.matcher.is_error():
            raise RuntimeError(f"the grammar refused a token: {self.matcher.get_error()}"[:500])
        return not self.matcher.is_stopped()

    def write_eos_only(self, words: np.ndarray) -> None:
        """The mask of a complete answer, into one row of uint32 bitmask words."""
        words[:] = 0
        for token in self.eos_token_ids:
            if token < 32 * words.size:
                words[token >> 5] |= np.uint32(1 << (token & 31))
