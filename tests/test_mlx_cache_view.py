"""The one reader of mlx-lm's private cache positions reads what the caches really did.

Real BatchKVCache / BatchRotatingKVCache objects are fed prefill chunks and decode steps; after every
update the adapter's reading must equal kvcost's integer replay of the same updates and the plain facts
(every token fed was seen, the allocation grows in 256-token steps, the window rotates).
"""

from __future__ import annotations

import mlx.core as mx
import pytest
from mlx_lm.models.cache import BatchKVCache, BatchRotatingKVCache

from agent.engine.mlx_cache_view import batch_shapes, growing_shape, rotating_shape
from agent.kvcost import CACHE_STEP_TOKENS, GrowingCacheShape, RotatingCacheShape
from tests.pinned_versions import outside_pinned_range

pytestmark = pytest.mark.skipif(outside_pinned_range("mlx-lm") is not None,
                                reason=outside_pinned_range("mlx-lm") or "")

ROWS, HEADS, HEAD_DIM = 2, 1, 4
UPDATES = [5, 1, 1, 300, 1, 1, 1, 40, *[1] * 30, 512, 1]  # chunks and steps across 256 and the window
WINDOW = 16


def feed(cache, num_tokens: int) -> None:
    keys = mx.ones((ROWS, HEADS, num_tokens, HEAD_DIM))
    cache.update_and_fetch(keys, keys)
    mx.eval(cache.keys)


def test_the_full_cache_reading_follows_every_chunk_and_step_as_kvcost_replays_them():
    cache, replay, fed = BatchKVCache([0] * ROWS), GrowingCacheShape(), 0
    assert growing_shape(cache) == GrowingCacheShape()  # nothing allocated before the first update
    for num_tokens in UPDATES:
        feed(cache, num_tokens)
        replay.update(num_tokens)
        fed += num_tokens
        shape = growing_shape(cache)
        assert shape == replay, f"after {fed} tokens"
        assert shape.idx == fed and shape.capacity >= fed


def test_the_full_cache_allocates_in_whole_steps_until_a_partial_one_is_cut():
    cache = BatchKVCache([0] * ROWS)
    feed(cache, 5)
    assert growing_shape(cache) == GrowingCacheShape(capacity=CACHE_STEP_TOKENS, idx=5)


def test_the_sliding_cache_reading_follows_every_chunk_and_step_as_kvcost_replays_them():
    cache, replay, fed, was_rotated = BatchRotatingKVCache(WINDOW, [0] * ROWS), RotatingCacheShape(WINDOW), 0, False
    assert rotating_shape(cache, WINDOW) == RotatingCacheShape(WINDOW)
    for num_tokens in UPDATES:
        feed(cache, num_tokens)
        replay.update(num_tokens)
        fed += num_tokens
        shape = rotating_shape(cache, WINDOW)
        assert shape == replay, f"after {fed} tokens"
        assert shape.offset == fed and not shape.is_empty
        was_rotated = was_rotated or shape.rotated
    assert was_rotated, "the decode steps past the window must have rotated it at least once"


def test_the_batch_shapes_come_from_the_first_cache_of_each_kind_that_holds_keys():
    empty_full, full = BatchKVCache([0] * ROWS), BatchKVCache([0] * ROWS)
    empty_sliding, sliding = BatchRotatingKVCache(WINDOW, [0] * ROWS), BatchRotatingKVCache(WINDOW, [0] * ROWS)
    feed(full, 20)
    feed(sliding, 3)
    got_full, got_sliding = batch_shapes([empty_full, empty_sliding, full, sliding], window=WINDOW)
    assert got_full == GrowingCacheShape(capacity=CACHE_STEP_TOKENS, idx=20)
    assert (got_sliding.offset, got_sliding.idx, got_sliding.is_empty) == (3, 3, False)


def test_a_batch_without_keys_yet_reads_as_empty_shapes():
    assert batch_shapes([BatchKVCache([0]), BatchRotatingKVCache(WINDOW, [0])], window=WINDOW) == (
        GrowingCacheShape(), RotatingCacheShape(WINDOW))
