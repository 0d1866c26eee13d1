from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.catalog import load_catalog
from agent.kvcost import (
    SequenceKV,
    architecture_kv_bytes,
    engine_kv_trace,
    engine_updates,
    kv_bytes_at,
    kv_bytes_per_token,
    kv_fixed_bytes_per_sequence,
    kv_peak_bytes_at,
)

CATALOG = load_catalog()
GPT_OSS, GEMMA = CATALOG["gpt-oss-20b"], CATALOG["gemma-4-26b"]
MIB = 1024**2


def test_real_models_cost_what_their_layouts_say_per_token_and_per_sequence():
    # gpt-oss: 12 full layers x 8 heads x 64 dims x (K+V) x 2 bytes; 12 sliding layers hold 128 tokens.
    assert kv_bytes_per_token(GPT_OSS) == 12 * 8 * 64 * 2 * 2 == 24_576
    assert kv_fixed_bytes_per_sequence(GPT_OSS) == 12 * 8 * 64 * 2 * 2 * 128 == 3 * MIB
    # gemma-4: 5 full layers x 2 global heads x 512 dims x (K+V, cached apart though K=V) x 2 bytes.
    assert kv_bytes_per_token(GEMMA) == 5 * 2 * 512 * 2 * 2 == 20_480
    assert kv_fixed_bytes_per_sequence(GEMMA) == 25 * 8 * 256 * 2 * 2 * 1024 == 200 * MIB


def test_engine_bytes_equal_the_formula_where_mlx_lm_wastes_nothing():
    for spec in (GPT_OSS, GEMMA):
        for n in (4096, 8192, 32768):
            assert kv_bytes_at(spec, n) == architecture_kv_bytes(spec, n)


def test_full_layers_round_up_to_the_next_256_token_step():
    assert kv_bytes_at(GPT_OSS, 257) - kv_bytes_at(GPT_OSS, 256) == 256 * kv_bytes_per_token(GPT_OSS)
    assert kv_bytes_at(GPT_OSS, 300) == kv_bytes_at(GPT_OSS, 512)


def test_a_short_gemma_prompt_allocates_only_part_of_the_sliding_window():
    sliding = kv_bytes_at(GEMMA, 10) - 256 * kv_bytes_per_token(GEMMA)
    assert sliding == (9 + 256) * 25 * 8192  # the 9-token prefill plus one 256-token step, not 1024


def test_a_chunked_prefill_holds_window_minus_one_plus_a_chunk_in_sliding_layers():
    # 1,536 prompt tokens are prefilled in three 512-token chunks; the last prompt token is decoded.
    peak = kv_peak_bytes_at(GEMMA, 1537)
    assert peak == 1536 * kv_bytes_per_token(GEMMA) + (1023 + 512) * 25 * 8192
    assert kv_bytes_at(GEMMA, 1537) == 1792 * kv_bytes_per_token(GEMMA) + 1024 * 25 * 8192


def test_a_batch_costs_its_size_times_one_row():
    assert kv_bytes_at(GEMMA, 700, batch_size=3) == 3 * kv_bytes_at(GEMMA, 700)


def test_engine_updates_hold_back_the_last_prompt_token():
    assert engine_updates(1, 3) == [1, 1, 1]
    assert engine_updates(1100, 1102, chunk=512) == [512, 512, 75, 1, 1, 1]


@settings(max_examples=200, deadline=None)
@given(
    prompt=st.integers(1, 3000),
    extra=st.integers(0, 1500),
    window=st.sampled_from([16, 128, 300, 600, 1024]),
    chunk=st.sampled_from([256, 512, 2048]),
)
def test_the_fast_replay_equals_the_step_by_step_replay(prompt, extra, window, chunk):
    from dataclasses import replace

    spec = replace(GEMMA, sliding_window=window)
    trace = engine_kv_trace(spec, prompt, prompt + extra, chunk=chunk)
    assert kv_bytes_at(spec, prompt + extra, prompt_tokens=prompt, chunk=chunk) == trace[-1]
    assert kv_peak_bytes_at(spec, prompt + extra, prompt_tokens=prompt, chunk=chunk) == max(trace)


def test_replaying_a_full_context_is_fast_enough_for_the_admission_path():
    import time

    start = time.perf_counter()
    for _ in range(100):
        kv_peak_bytes_at(GEMMA, 262_144)
    assert time.perf_counter() - start < 2.0  # generous: about 1 ms a call here


def test_sequence_kv_starts_empty():
    assert SequenceKV(GPT_OSS).nbytes == 0
