"""The slot's KV tracker and expected-output ratio (pure: no MLX)."""

from __future__ import annotations

import pytest

from agent.admission import EXPECTED_OUTPUT_RATIO_FLOOR, EXPECTED_OUTPUT_RATIO_START, Verdict, reservation_bytes
from agent.catalog import load_catalog
from agent.engine.batch_kv import BatchKV, PendingRow, predicted_peak_bytes
from agent.engine.kv_tracker import KVTracker, TrackedRow
from agent.engine.ratio import OutputRatio
from agent.kvcost import kv_bytes_at, kv_peak_bytes_at

SPEC = load_catalog()["gpt-oss-20b"]
GEMMA = load_catalog()["gemma-4-26b"]
GIB = 1024**3


def test_the_ratio_starts_at_0_7_falls_towards_short_completions_and_never_below_the_floor():
    ratio = OutputRatio()
    assert ratio.value == EXPECTED_OUTPUT_RATIO_START
    values = []
    for _ in range(100):
        ratio.observe(completion_tokens=20, max_tokens=1000)  # 2 % of max_tokens
        values.append(ratio.value)
    assert values == sorted(values, reverse=True)
    assert min(values) >= EXPECTED_OUTPUT_RATIO_FLOOR and values[-1] == pytest.approx(EXPECTED_OUTPUT_RATIO_FLOOR, abs=1e-3)
    ratio.observe(completion_tokens=1000, max_tokens=1000)
    assert ratio.value > EXPECTED_OUTPUT_RATIO_FLOOR
    assert [change.reason for change in ratio.history][-1] == "observed"


def test_the_ratio_is_raised_halfway_to_one_when_memory_runs_short():
    ratio = OutputRatio(value=0.2)
    ratio.raise_for_memory()
    assert ratio.value == pytest.approx(0.6) and ratio.history[-1].reason == "memory_short"


def test_an_outgrown_row_is_expected_to_run_as_long_again_up_to_max_tokens():
    row = TrackedRow("r", prompt_tokens=100, max_tokens=1000, expected_output_tokens=300)
    assert not row.outgrow(cached_tokens=399) and row.end_tokens(399) == 400
    assert row.outgrow(cached_tokens=400) and row.expected_output_tokens == 600
    assert row.outgrow(cached_tokens=1050) and row.expected_output_tokens == 1000


def test_one_pending_row_is_predicted_at_least_its_own_engine_bytes():
    for spec in (SPEC, GEMMA):
        for prompt, end in [(1, 2), (300, 800), (5000, 6000)]:
            predicted = predicted_peak_bytes(BatchKV(spec), {}, [PendingRow("r", prompt, end)])
            assert kv_peak_bytes_at(spec, end, prompt_tokens=prompt) <= predicted
            assert predicted <= kv_peak_bytes_at(spec, end, prompt_tokens=prompt) * 1.5


def test_a_batch_is_predicted_with_every_row_padded_to_the_longest_live_row():
    batch, _ = BatchKV.prefilled(SPEC, ["long", "short"], [1000, 1000])
    batch.tokens = [1000, 1000]
    # Both live until 1100: two rows of 1100 tokens; then the long one alone to 3000.
    predicted = predicted_peak_bytes(batch, {"long": 3000, "short": 1100})
    assert predicted == max(2 * kv_bytes_at(SPEC, 1100, prompt_tokens=1000), kv_bytes_at(SPEC, 3000, prompt_tokens=1000))


def test_the_ledger_admits_until_full_refuses_with_the_reason_and_admits_again_after_a_release():
    ledger = KVTracker(SPEC, budget_bytes=2 * GIB, safety_margin_bytes=GIB // 10)
    admitted = 0
    while (decision := ledger.admit(f"r{admitted}", prompt_tokens=8000, max_tokens=4096)).admitted:
        admitted += 1
    assert admitted >= 3 and decision.verdict is Verdict.FULL and "free" in decision.reason
    assert ledger.reserved_bytes <= ledger.budget_bytes - ledger.safety_margin_bytes
    ledger.release("r0", observed=True, completion_tokens=4096)
    assert ledger.admit("again", prompt_tokens=8000, max_tokens=4096).admitted


def test_requests_that_can_never_fit_are_refused_as_never():
    ledger = KVTracker(SPEC, budget_bytes=GIB)
    assert ledger.check("ctx", prompt_tokens=130_000, max_tokens=10_000).verdict is Verdict.NEVER
    assert ledger.check("big", prompt_tokens=100_000, max_tokens=10_000).verdict is Verdict.NEVER


def test_a_short_request_beside_a_long_row_reserves_its_padding_and_says_so_when_refused():
    long_row, _ = BatchKV.prefilled(SPEC, ["long"], [20_000])
    alone = reservation_bytes(SPEC, 100, 70)
    roomy = KVTracker(SPEC, budget_bytes=8 * GIB)
    roomy.admit("long", 20_000, 1000)
    roomy.reconcile(long_row.nbytes, long_row)
    before = roomy.reserved_bytes
    decision = roomy.admit("short", 100, 100)
    assert decision.admitted and roomy.reserved_bytes - before >= 10 * alone  # padded to the long row
    tight = KVTracker(SPEC, budget_bytes=before + 20 * alone, safety_margin_bytes=0)
    tight.admit("long", 20_000, 1000)
    tight.reconcile(long_row.nbytes, long_row)
    refused = tight.check("short", 100, 100)
    assert refused.verdict is Verdict.FULL and "padded to the batch's longest row" in refused.reason


def test_rows_outgrowing_the_budget_raise_the_ratio_once_and_stop_admission():
    ledger = KVTracker(SPEC, budget_bytes=GIB, safety_margin_bytes=0, ratio=OutputRatio(value=0.1))
    for i in range(6):
        assert ledger.admit(f"r{i}", prompt_tokens=1000, max_tokens=8000).admitted
    batch, _ = BatchKV.prefilled(SPEC, [f"r{i}" for i in range(6)], [1000] * 6)
    batch.step(6000)  # every row far beyond its expected 410 tokens: 6 × 7000 tokens > 1 GiB
    ledger.reconcile(batch.nbytes, batch)
    ledger.reconcile(batch.nbytes, batch)
    assert ledger.is_overcommitted and ledger.ratio.value == pytest.approx(0.55)
    assert [c.reason for c in ledger.ratio.history] == ["memory_short"]
    assert ledger.check("more", 1000, 100).verdict is Verdict.FULL
