"""A continuous batch's KV bytes on integers: mlx-lm's generation batch as rows join, step and leave.

kvcost replays one prefill; a running engine also joins prefilled groups into its generation batch
(`GenerationBatch.extend`: every cache right-aligned to the longest row and cut to the largest size)
and filters finished rows out (`filter`: the full caches drop the left padding every remaining row
shares, the sliding caches keep their size). `BatchKV` replays those operations, so the bytes of a
schedule are known exactly (tests/test_engine_batch_kv.py proves it against the real caches), and
`predicted_peak_bytes` runs the batch forward to the rows' expected ends to find the most it will hold.

Pure: standard library, the shared kvcost module and the schedule's grouping; the fake engine uses
it to hold exactly the bytes the real one would.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from agent.catalog import ModelSpec
from agent.engine.schedule import ScheduleLimits, form_groups
from agent.kvcost import (
    PREFILL_CHUNK_TOKENS,
    GrowingCacheShape,
    RotatingCacheShape,
    SequenceKV,
    engine_updates,
    kv_bytes_per_token,
    sliding_bytes_per_token,
)


@dataclass(slots=True)
class BatchKV:
    """The generation batch of one model: one entry per row in `ids` and `tokens` (tokens its caches hold)."""

    spec: ModelSpec
    ids: list[str] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    full: GrowingCacheShape = field(default_factory=GrowingCacheShape)
    sliding: RotatingCacheShape = None  # type: ignore[assignment]  # set in __post_init__ when not given
    _per_token: tuple[int, int] = (0, 0)  # (full, sliding) bytes per token of one row, computed once

    def __post_init__(self) -> None:
        if self.sliding is None:
            self.sliding = RotatingCacheShape(window=self.spec.sliding_window)
        self._per_token = _bytes_per_token(self.spec)

    @classmethod
    def prefilled(
        cls, spec: ModelSpec, ids: Sequence[str], prompts: Sequence[int], chunk: int = PREFILL_CHUNK_TOKENS
    ) -> tuple[BatchKV, int]:
        """A group prefilled together, after its first decode step, and the most it held on the way.

        The group's rows take the same number of chunks (the engine groups them so), so every update is
        as wide as the longest row's: the caches evolve as the longest prompt's, once per row.
        """
        replay = SequenceKV(spec, batch_size=len(prompts))
        longest = max(prompts)
        peak = max(replay.update(n) for n in engine_updates(longest, longest, chunk))
        group = cls(spec, list(ids), list(prompts), replay.full, replay.sliding)
        return group, peak

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def nbytes(self) -> int:
        full, sliding = self._per_token
        return len(self.ids) * (full * self.full.capacity + sliding * self.sliding.length)

    def copy(self) -> BatchKV:
        return BatchKV(self.spec, list(self.ids), list(self.tokens), replace(self.full), replace(self.sliding))

    def join(self, group: BatchKV) -> None:
        """GenerationBatch.extend: an empty batch takes the group's caches as they are."""
        if not self.ids:
            self.full, self.sliding = replace(group.full), replace(group.sliding)
        else:
            self.full.extend(group.full)
            self.sliding.extend(group.sliding)
        self.ids += group.ids
        self.tokens += group.tokens

    def step(self, num_steps: int = 1) -> None:
        """num_steps decode steps of every row."""
        if not self.ids or num_steps <= 0:
            return
        self.full.advance(num_steps)
        self.sliding.advance(num_steps)
        self.tokens = [n + num_steps for n in self.tokens]

    def leave(self, ids: set[str] | frozenset[str]) -> None:
        """GenerationBatch.filter: an emptied batch drops its caches."""
        keep = [i for i, row in enumerate(self.ids) if row not in ids]
        self.ids = [self.ids[i] for i in keep]
        self.tokens = [self.tokens[i] for i in keep]
        if not self.ids:
            self.full = GrowingCacheShape()
            self.sliding = RotatingCacheShape(window=self.spec.sliding_window)
            return
        shared_padding = self.full.idx - max(self.tokens)
        if shared_padding > 0:
            self.full.trim_left(shared_padding)


@functools.lru_cache(maxsize=64)
def _bytes_per_token(spec: ModelSpec) -> tuple[int, int]:
    return kv_bytes_per_token(spec), sliding_bytes_per_token(spec)


@dataclass(frozen=True, slots=True)
class PendingRow:
    """An admitted request not yet in the generation batch: it will join holding `prompt_tokens`."""

    id: str
    prompt_tokens: int
    end_tokens: int


def predicted_peak_bytes(
    batch: BatchKV, ends: dict[str, int], pending: Sequence[PendingRow] = (), limits: ScheduleLimits = ScheduleLimits()
) -> int:
    """The most the batch will hold if every row leaves when its caches hold `ends[id]` tokens.

    Pending rows are prefilled in the schedule's groups (equal chunk counts, capped rows) and join first;
    while a group prefills it holds more than it will once decoding (the sliding layers' prefill
    overhang), and that extra is added on top, which bounds every moment of the prefill.
    """
    chunk = limits.chunk_tokens
    future = batch.copy()
    ends = dict(ends)
    overhang = 0
    for group_rows in form_groups(pending, limits):
        group, prefill_peak = BatchKV.prefilled(
            batch.spec, [row.id for row in group_rows], [row.prompt_tokens for row in group_rows], chunk
        )
        overhang += max(0, prefill_peak - group.nbytes)
        future.join(group)
        ends.update((row.id, row.end_tokens) for row in group_rows)
    peak = future.nbytes
    remaining = {row: max(ends.get(row, n + 1), n + 1) - n for row, n in zip(future.ids, future.tokens)}
    elapsed = 0
    for when in sorted(set(remaining.values())):
        future.step(when - elapsed)
        elapsed = when
        peak = max(peak, future.nbytes)
        future.leave({row for row, left in remaining.items() if left == when})
    return peak + overhang

