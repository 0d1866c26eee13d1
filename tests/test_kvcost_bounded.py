"""The KV replay is exact and its cost does not grow with the tokens: a provider that registers a huge
context cannot make the coordinator (admission, /metrics, capacity) replay KV growth token by token."""

from __future__ import annotations

import random
import time

from agent.catalog import KVLayer, LayerKind, ModelSpec, load_catalog
from agent.kvcost import SequenceKV, _replay, engine_updates


def _naive(spec: ModelSpec, total: int, prompt: int, chunk: int) -> tuple[int, int]:
    caches, peak = SequenceKV(spec), 0
    for n in engine_updates(prompt, total, chunk):
        peak = max(peak, caches.update(n))
    return caches.nbytes, peak


def _spec(window: int) -> ModelSpec:
    return ModelSpec(id="m", architecture="x", kv_dtype="bfloat16", sliding_window=window, max_context=2**22,
                     weights_bytes=1, kv_layers=(KVLayer(LayerKind.FULL, 2, 8), KVLayer(LayerKind.SLIDING, 4, 8)))


def test_the_skipping_replay_equals_the_step_by_step_replay_for_random_shapes():
    rng = random.Random(11)
    for _ in range(400):
        window, chunk = rng.choice([1, 7, 128, 300, 1024, 5000]), rng.choice([1, 2, 100, 256, 300, 512, 1000])
        prompt = rng.randint(1, 30_000)
        total = prompt + rng.choice([0, 1, rng.randint(0, 5000)])
        spec = _spec(window)
        _replay.cache_clear()
        assert _replay(spec, total, prompt, 1, chunk) == _naive(spec, total, prompt, chunk), \
            (window, chunk, prompt, total)


def test_a_replay_of_millions_of_tokens_takes_milliseconds():
    catalog = load_catalog()
    _replay.cache_clear()
    started = time.perf_counter()
    for spec in catalog.values():
        for chunk in (1, 256, 512, 300):
            _replay(spec, 2**30, None, 1, chunk)
            _replay(spec, 2**30, 1000, 1, chunk)
    assert time.perf_counter() - started < 0.1
