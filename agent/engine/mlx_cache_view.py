"""The positions of mlx-lm's batch caches, read in one place.

The KV tracker needs to know where a batch cache writes next and how many tokens it has seen, and mlx-lm
keeps both private (`BatchKVCache._idx`, `BatchRotatingKVCache._idx` and `._offset`). This module is
their only reader, so an mlx-lm that renames them fails here and in tests/test_mlx_cache_view.py
(pinned to the mlx-lm range of pyproject.toml), not somewhere deep in the batcher.

    batch_shapes(caches, window)   the first full and the first sliding cache that hold keys, as the
                                   integers kvcost replays (every layer of one kind is alike)

Public names: batch_shapes, growing_shape, rotating_shape.
"""

from __future__ import annotations

from collections.abc import Iterable

from mlx_lm.models.cache import BatchKVCache, BatchRotatingKVCache

from agent.kvcost import GrowingCacheShape, RotatingCacheShape


def growing_shape(cache: BatchKVCache) -> GrowingCacheShape:
    """A full-attention batch cache: tokens allocated per row, tokens written."""
    if cache.keys is None:
        return GrowingCacheShape()
    return GrowingCacheShape(capacity=cache.keys.shape[2], idx=cache._idx)


def rotating_shape(cache: BatchRotatingKVCache, window: int) -> RotatingCacheShape:
    """A sliding-window batch cache: tokens allocated per row, write position, tokens seen, rotation."""
    if cache.keys is None:
        return RotatingCacheShape(window=window)
    return RotatingCacheShape(window=window, length=cache.keys.shape[2], idx=cache._idx, offset=cache._offset,
                              rotated=cache.rotated, is_empty=False)


def batch_shapes(caches: Iterable[object], window: int) -> tuple[GrowingCacheShape, RotatingCacheShape]:
    """The batch's full and sliding shapes (empty ones where no cache of that kind holds keys yet)."""
    caches = list(caches)
    full = next((c for c in caches if isinstance(c, BatchKVCache) and c.keys is not None), None)
    sliding = next((c for c in caches if isinstance(c, BatchRotatingKVCache) and c.keys is not None), None)
    return (GrowingCacheShape() if full is None else growing_shape(full),
            RotatingCacheShape(window=window) if sliding is None else rotating_shape(sliding, window))
