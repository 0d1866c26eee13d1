from __future__ import annotations

import pytest

from agent.admission import (
    GIB,
    SlotKV,
    Verdict,
    admit_request,
    expected_output_tokens,
    load_gate,
    memory_cap_bytes,
    min_kv_budget_bytes,
    reservation_bytes,
)
from agent.catalog import load_catalog
from agent.kvcost import kv_bytes_at, kv_peak_bytes_at

CATALOG = load_catalog()
GPT_OSS, GEMMA = CATALOG["gpt-oss-20b"], CATALOG["gemma-4-26b"]


def test_the_cap_leaves_ten_percent_or_two_gib_whichever_is_more():
    assert memory_cap_bytes(16 * GIB) == 14 * GIB  # 16 - 2 < 0.9 * 16
    assert memory_cap_bytes(64 * GIB) == int(0.9 * 64 * GIB)
    assert memory_cap_bytes(64 * GIB, operator_reserve_bytes=8 * GIB) == int(0.9 * 64 * GIB) - 8 * GIB
    assert memory_cap_bytes(64 * GIB, metal_limit_bytes=40 * GIB) == 40 * GIB


def test_a_model_fits_when_weights_activations_and_one_full_context_sequence_fit_the_cap():
    need = GPT_OSS.weights_bytes + GPT_OSS.activation_reserve_bytes + kv_peak_bytes_at(GPT_OSS, GPT_OSS.max_context)
    decision = load_gate(GPT_OSS, total_memory_bytes=24 * GIB)
    assert decision.fits and decision.need_bytes == need
    assert decision.kv_budget_bytes == memory_cap_bytes(24 * GIB) - GPT_OSS.weights_bytes - GPT_OSS.activation_reserve_bytes


def test_a_model_that_cannot_fit_says_how_much_it_needs_and_what_the_cap_is():
    decision = load_gate(GEMMA, total_memory_bytes=16 * GIB)
    assert not decision.fits and decision.kv_budget_bytes == 0
    assert "needs 24.33 GiB" in decision.reason and "cap is 14.00 GiB" in decision.reason


def test_what_is_already_loaded_counts_against_the_cap():
    alone = load_gate(GEMMA, total_memory_bytes=48 * GIB)
    beside = load_gate(GEMMA, total_memory_bytes=48 * GIB, loaded_bytes=30 * GIB)
    assert alone.fits and not beside.fits and "already loaded" in beside.reason


def test_the_os_must_agree_that_the_memory_is_free_now():
    decision = load_gate(GPT_OSS, total_memory_bytes=64 * GIB, available_bytes=10 * GIB)
    assert not decision.fits and "available now" in decision.reason


def test_more_minimum_sequences_need_more_kv():
    assert min_kv_budget_bytes(GPT_OSS, 4) == 4 * min_kv_budget_bytes(GPT_OSS, 1)
    assert min_kv_budget_bytes(GPT_OSS, context_tokens=4096) == kv_peak_bytes_at(GPT_OSS, 4096)


def test_expected_output_is_clipped_then_scaled_by_the_ratio():
    assert expected_output_tokens(512, 0.7) == 359
    assert expected_output_tokens(32768, 0.7) == 2868  # clipped at 4096 first
    assert expected_output_tokens(1, 0.1) == 1


def test_a_request_reserves_its_prompt_plus_expected_output_not_max_tokens():
    slot = SlotKV(budget_bytes=8 * GIB)
    decision = admit_request(GPT_OSS, slot, prompt_tokens=1000, max_tokens=32768, ratio=0.5)
    assert decision.admitted and decision.expected_output_tokens == 2048
    assert decision.reservation_bytes == kv_peak_bytes_at(GPT_OSS, 3048, prompt_tokens=1000)
    assert decision.reservation_bytes < kv_bytes_at(GPT_OSS, 1000 + 32768)


def test_a_full_slot_refuses_now_and_admits_again_once_memory_is_freed():
    one = reservation_bytes(GEMMA, 4000, expected_output_tokens(1000, 0.7))
    busy = SlotKV(budget_bytes=10 * one, reserved_bytes=9 * one + 1)
    full = admit_request(GEMMA, busy, prompt_tokens=4000, max_tokens=1000)
    assert full.verdict is Verdict.FULL and "free now" in full.reason
    freed = SlotKV(budget_bytes=10 * one, reserved_bytes=9 * one)
    assert admit_request(GEMMA, freed, prompt_tokens=4000, max_tokens=1000).admitted


def test_caches_that_outgrew_their_reservations_count_as_used():
    one = reservation_bytes(GEMMA, 100, expected_output_tokens(100, 0.7))
    slot = SlotKV(budget_bytes=4 * one, reserved_bytes=one, used_bytes=4 * one)
    assert admit_request(GEMMA, slot, prompt_tokens=100, max_tokens=100).verdict is Verdict.FULL


def test_a_request_beyond_the_context_is_never_admitted_here():
    decision = admit_request(GPT_OSS, SlotKV(budget_bytes=100 * GIB), prompt_tokens=130_000, max_tokens=4096)
    assert decision.verdict is Verdict.NEVER and "context" in decision.reason


def test_a_request_whose_worst_case_exceeds_the_whole_budget_is_never_admitted_here():
    slot = SlotKV(budget_bytes=1 * GIB)
    decision = admit_request(GPT_OSS, slot, prompt_tokens=1000, max_tokens=60_000, ratio=0.1)
    assert decision.verdict is Verdict.NEVER and "whole budget" in decision.reason


def test_the_safety_margin_is_kept_free():
    one = reservation_bytes(GPT_OSS, 100, expected_output_tokens(100, 0.7))
    assert admit_request(GPT_OSS, SlotKV(budget_bytes=2 * one), prompt_tokens=100, max_tokens=100).admitted
    tight = SlotKV(budget_bytes=3 * one, reserved_bytes=one, safety_margin_bytes=one + 1)
    assert admit_request(GPT_OSS, tight, prompt_tokens=100, max_tokens=100).verdict is Verdict.FULL


def test_a_row_batched_beside_a_longer_one_is_charged_the_longer_length():
    alone = reservation_bytes(GPT_OSS, 24, 10)
    padded = reservation_bytes(GPT_OSS, 24, 10, pad_to_tokens=704)
    assert padded == kv_peak_bytes_at(GPT_OSS, 704, prompt_tokens=24) > alone


@pytest.mark.parametrize("ratio", [0.1, 0.4, 0.7, 1.0])
def test_a_lower_ratio_never_reserves_more(ratio):
    low = admit_request(GEMMA, SlotKV(budget_bytes=50 * GIB), prompt_tokens=2000, max_tokens=8000, ratio=ratio)
    high = admit_request(GEMMA, SlotKV(budget_bytes=50 * GIB), prompt_tokens=2000, max_tokens=8000, ratio=1.0)
    assert low.reservation_bytes <= high.reservation_bytes


def test_memory_other_processes_hold_is_not_counted_as_free():
    # 64 GiB machine; this engine holds 2 GiB of it; others hold 40 GiB, so the OS reports 22 GiB available.
    alone = load_gate(GPT_OSS, total_memory_bytes=64 * GIB)
    shared = load_gate(GPT_OSS, total_memory_bytes=64 * GIB, available_bytes=22 * GIB, engine_bytes=2 * GIB)
    fixed = GPT_OSS.weights_bytes + GPT_OSS.activation_reserve_bytes
    assert alone.kv_budget_bytes == memory_cap_bytes(64 * GIB) - fixed
    assert shared.fits and shared.kv_budget_bytes == 24 * GIB - fixed


def test_what_this_engine_promised_but_has_not_allocated_is_not_free_either():
    # 30 GiB promised to a loaded model (weights + KV budget), of which only 14 GiB is allocated yet.
    decision = load_gate(GEMMA, total_memory_bytes=64 * GIB, loaded_bytes=30 * GIB, available_bytes=40 * GIB,
                         engine_bytes=14 * GIB)
    assert not decision.fits and "other processes hold 10.00 GiB" in decision.reason
