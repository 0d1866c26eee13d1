"""Constrained decoding: one grammar matcher per constrained row, as a logits processor inside the batch.

Why llguidance: its wheels are abi3 for macOS arm64 and Linux x86_64 with no torch dependency, it reads
an HF `tokenizer.json` directly, its lark grammars take special tokens as terminals (so one grammar
covers a whole harmony turn, reasoning included) and JSON schemas inline (`%json`), and a mask costs
tens of microseconds. xgrammar's MLX path is a Metal kernel and its Python package pulls torch in.

Rows without a constraint have no processor at all, so they pay nothing. For a constrained row the
processor starts the step's forward pass (`async_eval`) before it reads the previous token and
computes the grammar's mask, so the mask is computed on the CPU while the model runs; then the mask
is applied to the step's logits, lazily. The mask is applied with `mx.where`, which runs on every
MLX device (llguidance.mlx's kernel is Metal only).

Compiled grammars are cached by their text (so by schema and chat format): a row gets a copy of the
cached matcher, which is cheap, while compiling a schema can take milliseconds.

Public names: GrammarCache, ConstrainedDecoding, MaskTimes, DEFAULT_MAX_CACHED_GRAMMARS.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Collection
from dataclasses import dataclass, field

import llguidance
import mlx.core as mx
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


class ConstrainedDecoding:
    """One row's logits processor: only the tokens its grammar allows next keep their logits."""

    def __init__(self, matcher: llguidance.LLMatcher, vocab_size: int, eos_token_ids: Collection[int],
                 times: MaskTimes | None = None) -> None:
        self.matcher, self.vocab_size, self.times = matcher, vocab_size, times
        self.eos_token_ids = sorted(eos_token_ids)
        self._num_calls = 0

    def __call__(self, tokens: mx.array, logits: mx.array) -> mx.array:
        mx.async_eval(logits)  # the forward pass runs while the mask is computed below
        # The first call follows the prompt; every later one follows a sampled token (waits for it to exist).
        token = tokens[-1].item() if self._num_calls else None
        self._num_calls += 1
        started = time.perf_counter()
        if token is not None and not self.matcher.consume_token(token):
            raise RuntimeError(f"the grammar refused a token: {self.matcher.get_error()}"[:500])
        allowed = self._allowed(logits.shape[-1])
        if self.times is not None:
            self.times.add(time.perf_counter() - started)
        return mx.where(mx.array(allowed), logits, -mx.inf)

    def _allowed(self, width: int) -> np.ndarray:
        if self.matcher.is_error():
            raise RuntimeError(f"the grammar failed: {self.matcher.get_error()}"[:500])
        if self.matcher.is_stopped():  # the answer is complete; only an eos ends it (it goes on with ignore_eos)
            bits = np.zeros(width, dtype=bool)
            bits[[token for token in self.eos_token_ids if token < width]] = True
            return bits
        words = np.frombuffer(self.matcher.compute_bitmask(), dtype=np.uint8)
        bits = np.unpackbits(words, bitorder="little")[: min(width, self.vocab_size)].astype(bool)
        if not bits.any():
            raise RuntimeError("the grammar allows no token here")
        return np.pad(bits, (0, width - bits.size)) if bits.size < width else bits
