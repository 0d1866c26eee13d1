"""The prefix cache's bytes on real mlx-lm: the slot's ledger holds exactly what the cached arrays occupy
(kvcost predicts each entry byte for byte), and a slot full of cached prefixes admits a new request after
evicting the least recently used ones, freeing their arrays on the MLX thread."""

from __future__ import annotations

import pytest

from agent.catalog import ModelSpec
from agent.engine import MLXEngine
from agent.engine.core import EngineConfig
from agent.engine.schedule import ScheduleLimits
from agent.kvcost import prefix_entry_bytes
from tests.engine_fixtures import run
from tests.test_prefix_cache import OTHER, PLAIN, THIRD, outputs, prompt_of_tokens, raw

CHUNK = 16


def real_bytes(engine: MLXEngine, model: str) -> tuple[int, int]:
    """The store's cached arrays and the batch's caches, as the MLX thread holds them now."""
    batcher = engine.backend._batchers[model]
    return batcher.prefixes.nbytes, batcher.used_bytes()


@pytest.mark.parametrize("model", ["gpt-oss-tiny", "gemma-4-tiny"])
def test_the_ledger_holds_the_cached_prefixes_byte_for_byte_as_kvcost_predicts_them(tiny_models_dir, model):
    lengths = (9, 40, 75)  # within the window, past it in a few chunks, well past it

    async def scenario():
        config = EngineConfig(schedule=ScheduleLimits(chunk_tokens=CHUNK))
        async with MLXEngine({model: tiny_models_dir / model}, config=config) as engine:
            await engine.load(model)
            spec: ModelSpec = engine._slots[model].spec
            tracker = engine._slots[model].kv_tracker
            texts = [prompt_of_tokens(engine, model, n, vocab) for n, vocab in zip(lengths, (PLAIN, OTHER, THIRD))]
            reused = []
            for i, text in enumerate(texts):
                reused += (await outputs(engine, model, [raw(f"r{i}", model, text)]))[1]
            entries = sorted(tracker.prefixes.entries.values(), key=lambda e: len(e.tokens))
            return spec, entries, reused, tracker.prefixes.cached_bytes, tracker.used_bytes, real_bytes(engine, model)

    spec, entries, reused, cached, used, (store_bytes, batch_bytes) = run(scenario())
    assert [len(e.tokens) for e in entries] == [n - 1 for n in lengths]
    # (gemma's prompts share their BOS, so a later one starts from a reused token: kvcost replays that too)
    assert [e.nbytes for e in entries] == [prefix_entry_bytes(spec, n, CHUNK, r) for n, r in zip(lengths, reused)]
    assert cached == sum(e.nbytes for e in entries) == store_bytes
    assert used == batch_bytes == 0  # idle: the rows' caches are gone, the prefixes stay


def test_a_slot_full_of_cached_prefixes_admits_a_new_request_after_evicting_the_oldest(tiny_models_dir):
    model = "gpt-oss-tiny"

    async def scenario():
        async with MLXEngine({model: tiny_models_dir / model}) as engine:
            await engine.load(model)
            slot = engine._slots[model]
            tracker = slot.kv_tracker
            texts = [prompt_of_tokens(engine, model, 60 + 10 * i, vocab) for i, vocab in enumerate((PLAIN, OTHER))]
            for i, text in enumerate(texts):
                await outputs(engine, model, [raw(f"fill{i}", model, text)])
            cached_before = dict(tracker.prefixes.entries)
            # Shrink the slot to what the cache holds plus a little: the next request fits only after evictions.
            newcomer = raw("new", model, prompt_of_tokens(engine, model, 90, THIRD))
            check = tracker.check("probe", 90, 8)
            tracker.set_budget(tracker.budget_bytes - check.free_bytes + check.reservation_bytes // 2)
            assert tracker.take_evicted() == [] and tracker.check("probe", 90, 8).verdict.value == "full"
            assert engine.check(model, 90, 8).admitted  # as if the cache were evicted: what admit does
            out, cached = await outputs(engine, model, [newcomer])
            return cached_before, dict(tracker.prefixes.entries), tracker.prefixes.stats, real_bytes(engine, model), \
                tracker.prefixes.cached_bytes, out

    before, after, stats, (store_bytes, _), cached_bytes, out = run(scenario())
    oldest = next(iter(before))
    assert out[0][1] == 8  # admitted and served, not refused
    assert oldest not in after and stats.num_evictions >= 1
    assert store_bytes == cached_bytes  # the evicted arrays were dropped on the MLX thread
