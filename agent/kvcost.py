"""KV cache bytes: architecture-exact and engine-exact.

Architecture-exact: a full-attention layer holds K and V for every token, a sliding layer for at most
`window` tokens, so one sequence of n tokens costs

    Σ_full (2 · kv_heads · head_dim · dtype_bytes) · n  +  Σ_sliding (2 · kv_heads · head_dim · dtype_bytes) · min(n, window)

Engine-exact: mlx-lm allocates more than that, and admission must count what it really allocates.
Its growing caches (KVCache / BatchKVCache) extend in 256-token steps; its rotating caches
(RotatingKVCache / BatchRotatingKVCache) keep `window − 1 + chunk` tokens while a prompt is prefilled
in chunks, then grow in 256-token steps up to the window; and a batch holds every row at the size of
its longest row. `CacheShape` classes replay mlx-lm's allocation rules on integers, so the bytes of any
prefill/decode schedule are predicted exactly (tests/test_kvcost_engine.py proves it against the real
caches' `nbytes`).

This module is pure: standard library only, shared by the agent and the coordinator.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

from agent.catalog import LayerKind, ModelSpec

CACHE_STEP_TOKENS = 256  # mlx-lm's KVCache.step / RotatingKVCache.step
PREFILL_CHUNK_TOKENS = 512  # the engine's prefill_step_size: multiple of 256, and the sliding peak is window − 1 + this


def kv_bytes_per_token(spec: ModelSpec) -> int:
    """Bytes every further token adds to one sequence (the full-attention layers)."""
    return sum(layer.bytes_per_token(spec.kv_dtype_bytes) for layer in spec.layers_of(LayerKind.FULL))


def sliding_bytes_per_token(spec: ModelSpec) -> int:
    return sum(layer.bytes_per_token(spec.kv_dtype_bytes) for layer in spec.layers_of(LayerKind.SLIDING))


def kv_fixed_bytes_per_sequence(spec: ModelSpec) -> int:
    """Bytes the sliding layers hold per sequence once it is longer than the window (steady state)."""
    return sliding_bytes_per_token(spec) * spec.sliding_window


def architecture_kv_bytes(spec: ModelSpec, num_tokens: int) -> int:
    """The textbook cost of one sequence of num_tokens tokens, with no allocation rounding."""
    full = kv_bytes_per_token(spec) * num_tokens
    return full + sliding_bytes_per_token(spec) * min(num_tokens, spec.sliding_window)


@dataclass(slots=True)
class GrowingCacheShape:
    """mlx-lm's BatchKVCache on integers: `capacity` tokens allocated per row, `idx` filled."""

    capacity: int = 0
    idx: int = 0

    def update(self, num_tokens: int) -> None:
        if self.idx + num_tokens > self.capacity:
            if self.capacity and self.idx % CACHE_STEP_TOKENS:
                self.capacity = self.idx  # the unused tail is sliced off before growing
            self.capacity += math.ceil(num_tokens / CACHE_STEP_TOKENS) * CACHE_STEP_TOKENS
        self.idx += num_tokens

    def advance(self, num_steps: int) -> None:
        """num_steps one-token updates at once: a one-token update only grows a full cache, by one step."""
        end = self.idx + num_steps
        if end > self.capacity:
            self.capacity += math.ceil((end - self.capacity) / CACHE_STEP_TOKENS) * CACHE_STEP_TOKENS
        self.idx = end

    def extend(self, other: GrowingCacheShape) -> None:
        """Join another batch: rows are right-aligned to the larger idx and cut to the larger capacity."""
        self.capacity = max(self.capacity, other.capacity)
        self.idx = max(self.idx, other.idx)

    def trim_left(self, num_tokens: int) -> None:
        """After rows leave, the padding every remaining row shares is sliced off."""
        self.capacity -= num_tokens
        self.idx -= num_tokens


@dataclass(slots=True)
class RotatingCacheShape:
    """mlx-lm's BatchRotatingKVCache on integers: `length` tokens allocated per row."""

    window: int
    length: int = 0
    idx: int = 0
    offset: int = 0
    rotated: bool = False
    is_empty: bool = True

    def update(self, num_tokens: int) -> None:
        if num_tokens == 1:
            self._update_in_place()
        else:
            self._update_concat(num_tokens)
        self.is_empty = False

    def advance(self, num_steps: int) -> None:
        """num_steps one-token updates, skipping over the steps that neither grow, trim nor rotate."""
        while num_steps > 0:
            if not self.is_empty and self.length == self.window and 1 <= self.idx and num_steps > 2 * self.window:
                # Fully allocated: every `window` steps rotate once and bring idx back (O(1), not O(steps)).
                skipped = (num_steps // self.window - 1) * self.window
                self.offset += skipped
                self.rotated = True
                num_steps -= skipped
            quiet = self.window - self.idx
            if self.length < self.window:
                quiet = min(quiet, self.length - self.offset)
            if self.is_empty or self.length > self.window or quiet <= 0:
                self.update(1)
                num_steps -= 1
                continue
            run = min(num_steps, quiet)
            self.offset += run
            self.idx += run
            num_steps -= run

    def _update_concat(self, num_tokens: int) -> None:
        # A prefill chunk: keep the last window − 1 tokens so every new token sees a full window.
        if not self.is_empty:
            if self.rotated:
                self.idx, self.rotated = self.length, False
            self.length = min(self.length, self.idx)
            self.length -= max(0, self.idx - self.window + 1)
        self.length += num_tokens
        self.offset += num_tokens
        self.idx = self.length

    def extend(self, other: RotatingCacheShape) -> None:
        """Join another batch (BatchRotatingKVCache.extend): both are put in temporal order unless
        they are aligned already, then right-aligned to the larger idx and cut to the larger length."""
        if self.is_empty and other.is_empty:
            return
        if self.rotated != other.rotated or self.idx != other.idx:
            for shape in (self, other):
                if shape.rotated:
                    shape.idx, shape.rotated = shape.length, False
        self.length = max(self.length, other.length)
        self.idx = max(self.idx, other.idx)
        self.offset = max(self.offset, other.offset)
        self.is_empty = False

    def _update_in_place(self) -> None:
        # A decode step: grow by up to 256 tokens until the window is allocated, then rotate.
        if self.is_empty or (self.offset >= self.length and self.length < self.window):
            self.length += min(CACHE_STEP_TOKENS, self.window - self.offset)
            self.idx = self.offset
        if self.length > self.window:
            self.length = self.idx = self.window
        if self.idx == self.window:
            self.rotated, self.idx = True, 0
        self.offset += 1
        self.idx += 1


@dataclass(slots=True)
class SequenceKV:
    """The caches of one batch of rows of one model, replayed on integers."""

    spec: ModelSpec
    batch_size: int = 1
    full: GrowingCacheShape = field(default_factory=GrowingCacheShape)
    sliding: RotatingCacheShape = field(init=False)

    def __post_init__(self) -> None:
        self.sliding = RotatingCacheShape(window=self.spec.sliding_window)

    def update(self, num_tokens: int) -> int:
        self.full.update(num_tokens)
        self.sliding.update(num_tokens)
        return self.nbytes

    def advance(self, num_steps: int) -> int:
        """As num_steps one-token updates, in time independent of num_steps for the full layers."""
        self.full.advance(num_steps)
        self.sliding.advance(num_steps)
        return self.nbytes

    @property
    def nbytes(self) -> int:
        full = kv_bytes_per_token(self.spec) * self.full.capacity
        sliding = sliding_bytes_per_token(self.spec) * self.sliding.length
        return self.batch_size * (full + sliding)


def engine_updates(prompt_tokens: int, total_tokens: int, chunk: int = PREFILL_CHUNK_TOKENS) -> list[int]:
    """The cache updates mlx-lm's BatchGenerator makes for one request, in order.

    All prompt tokens but the last are prefilled in chunks; the last prompt token and every generated
    token are then fed one at a time. `total_tokens` is how many tokens the cache holds at the end.
    """
    if prompt_tokens < 1 or total_tokens < prompt_tokens:
        raise ValueError(f"need 1 <= prompt_tokens <= total_tokens, got {prompt_tokens}, {total_tokens}")
    prefill = prompt_tokens - 1
    chunks = [min(chunk, prefill - start) for start in range(0, prefill, chunk)]
    return chunks + [1] * (total_tokens - prefill)


def prefix_entry_bytes(spec: ModelSpec, prompt_tokens: int, chunk: int = PREFILL_CHUNK_TOKENS,
                       cached_tokens: int = 0) -> int:
    """What the prefix cache keeps of a prompt prefilled alone: every token in the full layers, and what its
    last prefill chunk left in the sliding ones (up to window − 1 + that chunk), as mlx-lm's `extract` copies.
    `cached_tokens`: it started from a reused prefix (merged as its last min(cached, window) keys)."""
    sliding, prefill = RotatingCacheShape(window=spec.sliding_window), prompt_tokens - 1
    if cached_tokens:
        held = min(cached_tokens, spec.sliding_window)
        sliding = RotatingCacheShape(spec.sliding_window, held, held, cached_tokens, is_empty=False)
    for start in range(cached_tokens, prefill, chunk):
        sliding.update(min(chunk, prefill - start))
    return prefill * kv_bytes_per_token(spec) + sliding.length * sliding_bytes_per_token(spec)


def engine_kv_trace(
    spec: ModelSpec, prompt_tokens: int, total_tokens: int, *, batch_size: int = 1,
    chunk: int = PREFILL_CHUNK_TOKENS,
) -> list[int]:
    """Cache bytes after each update, for `batch_size` rows prefilled together to the same length."""
    caches = SequenceKV(spec, batch_size)
    return [caches.update(n) for n in engine_updates(prompt_tokens, total_tokens, chunk)]


def kv_bytes_at(
    spec: ModelSpec, total_tokens: int, *, prompt_tokens: int | None = None, batch_size: int = 1,
    chunk: int = PREFILL_CHUNK_TOKENS,
) -> int:
    """Bytes held once the cache holds total_tokens (the prompt is all of them unless given)."""
    return _replay(spec, total_tokens, prompt_tokens, batch_size, chunk)[0]


def kv_peak_bytes_at(
    spec: ModelSpec, total_tokens: int, *, prompt_tokens: int | None = None, batch_size: int = 1,
    chunk: int = PREFILL_CHUNK_TOKENS,
) -> int:
    """The most bytes held at any step on the way to total_tokens (a chunked prefill's sliding peak)."""
    return _replay(spec, total_tokens, prompt_tokens, batch_size, chunk)[1]


@functools.lru_cache(maxsize=65536)  # admission asks the same few shapes again and again
def _replay(
    spec: ModelSpec, total_tokens: int, prompt_tokens: int | None, batch_size: int, chunk: int
) -> tuple[int, int]:
    """(final bytes, peak bytes). Decode only grows the caches once the first token has trimmed the
    prefill's sliding overhang, so the peak is the larger of the prefill's peak and the final bytes."""
    prompt = total_tokens if prompt_tokens is None else prompt_tokens
    if prompt < 1 or total_tokens < prompt:
        raise ValueError(f"need 1 <= prompt_tokens <= total_tokens, got {prompt}, {total_tokens}")
    caches = SequenceKV(spec, batch_size)
    peak = _prefill(caches, prompt - 1, chunk)
    peak = max(peak, caches.update(1))
    final = caches.advance(total_tokens - prompt)
    return final, max(peak, final)


def _prefill(caches: SequenceKV, num_tokens: int, chunk: int) -> int:
    """The peak bytes of prefilling num_tokens in chunks, in O(window / chunk + 256) updates whatever
    num_tokens is: once the sliding layers hold window − 1 + chunk tokens they stay there, and the growing
    cache's (idx mod 256, slack) repeats, so whole repeats are skipped (its bytes only grow, so the skipped
    steps never hold the peak)."""
    if chunk == 1:  # one-token updates only grow the caches: the peak is the end
        return caches.advance(num_tokens) if num_tokens else 0
    peak, num_full, last = 0, num_tokens // chunk, num_tokens % chunk
    seen: dict[tuple[int, int], tuple[int, int, int]] = {}
    step = 0
    while step < num_full:
        peak = max(peak, caches.update(chunk))
        step += 1
        full, sliding = caches.full, caches.sliding
        is_steady = sliding.length == sliding.window - 1 + chunk  # trimmed to the window each chunk
        is_linear = sliding.length == sliding.offset < sliding.window  # never trimmed yet: grows by chunk
        if step >= num_full or not (is_steady or is_linear):
            continue
        key = (full.idx % CACHE_STEP_TOKENS, full.capacity - full.idx, is_steady)
        if key not in seen:
            seen[key] = (step, full.capacity, full.idx)
            continue
        first, capacity, idx = seen.pop(key)
        period = step - first
        repeats = (num_full - step) // period
        if is_linear:  # only as far as the sliding layers stay untrimmed
            repeats = min(repeats, max(0, sliding.window - 1 - sliding.length - chunk) // (period * chunk))
        full.capacity += repeats * (full.capacity - capacity)
        full.idx += repeats * (full.idx - idx)
        sliding.offset += repeats * period * chunk
        if is_linear:
            sliding.length += repeats * period * chunk
            sliding.idx = sliding.length
        step += repeats * period
        peak = max(peak, caches.nbytes)
        seen.clear()
    if last:
        peak = max(peak, caches.update(last))
    return peak
