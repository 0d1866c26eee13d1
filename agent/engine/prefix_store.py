"""The tensors of a slot's cached prompt prefixes, on the MLX thread.

`capture` copies one row's caches out of a prefilling batch at the end of its prompt (mlx-lm's
`extract`: each layer's own KVCache / RotatingKVCache in temporal order, left padding dropped) and
evaluates them, so the entry holds its own arrays and nothing of the batch. `reuse` hands a new row
caches standing for the first `num_tokens` of an entry: views of the same arrays, cut back where
needed (the entry itself is untouched); `PromptProcessingBatch` merges them into fresh batch arrays,
so a reusing row never writes into the entry.

How far a layer can be cut back exactly (`max_trim_tokens`):
    full (KVCache)              any amount (mlx-lm's `trim`: a shorter offset)
    sliding (RotatingKVCache)   while the keys left after the cut still cover what the next token sees:
                                all of them if it has never dropped a key (offset == keys held), else
                                at least a whole window (mlx-lm's own `trim` is refused once a rotating
                                cache is full, `is_trimmable`; an extracted one is in temporal order, so
                                cutting its newest keys is exact while a window remains)
    anything else               not at all (reused whole or not at all)
"""

from __future__ import annotations

import copy
import itertools
from typing import Any

import mlx.core as mx
from mlx_lm.models.cache import KVCache, RotatingKVCache

from agent.engine.prefix_index import PrefixEntry, PrefixMatch


def max_trim_tokens(cache: Any) -> int:
    if isinstance(cache, RotatingKVCache):
        held = 0 if cache.keys is None else cache.keys.shape[2]
        return cache.offset if held == cache.offset else max(0, held - cache.max_size)
    if isinstance(cache, KVCache):
        return cache.offset
    return 0


def cut_back(cache: Any, num_tokens: int) -> Any:
    """A copy of `cache` standing for `num_tokens` fewer tokens (within `max_trim_tokens`)."""
    cut = copy.copy(cache)
    if num_tokens <= 0:
        return cut
    if isinstance(cache, RotatingKVCache):
        held = cache.keys.shape[2] - num_tokens
        cut.keys, cut.values = cache.keys[..., :held, :], cache.values[..., :held, :]
        cut.offset, cut._idx = cache.offset - num_tokens, held
    else:
        cut.trim(num_tokens)
    return cut


class PrefixStore:
    def __init__(self) -> None:
        self._caches: dict[int, list[Any]] = {}
        self._ids = itertools.count(1)

    def __len__(self) -> int:
        return len(self._caches)

    @property
    def nbytes(self) -> int:
        return sum(c.nbytes for caches in self._caches.values() for c in caches)

    def capture(self, batch: Any, index: int, tokens: list[int], chain: str | None = None) -> PrefixEntry:
        """Row `index` of a `PromptProcessingBatch` whose caches hold exactly `tokens` (`chain`: its request's)."""
        caches = batch.extract_cache(index)
        mx.eval([c.state for c in caches])
        entry_id = next(self._ids)
        self._caches[entry_id] = caches
        return PrefixEntry(entry_id, tuple(tokens), sum(c.nbytes for c in caches),
                           min(max_trim_tokens(c) for c in caches), chain)

    def reuse(self, match: PrefixMatch) -> list[Any]:
        """Caches for a new row, standing for the entry's first `match.num_tokens` tokens."""
        return [cut_back(c, c.offset - match.num_tokens) for c in self._caches[match.entry_id]]

    def drop(self, entry_ids: list[int]) -> None:
        for entry_id in entry_ids:
            self._caches.pop(entry_id, None)
