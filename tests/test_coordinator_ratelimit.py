"""Rate limits charge the expected output, reconcile with the real one, and say when to come back."""

from __future__ import annotations

import pytest

from agent.admission import EXPECTED_OUTPUT_RATIO_START, expected_output_tokens
from agent.coordinator.billing.accounts import Accounts, ReleaseReason
from agent.coordinator.billing.keys import KeyStore
from agent.coordinator.billing.ledger import MemoryLedger
from agent.coordinator.billing.pricing import PriceTable
from agent.coordinator.billing.ratelimit import RateLimited, RateLimiter, RateLimits
from agent.coordinator.billing.store import Account
from agent.errors import is_retryable


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def limiter(clock: FakeClock, rpm: int | None = None, tpm: int | None = None) -> RateLimiter:
    return RateLimiter(RateLimits(rpm, tpm), clock=clock)


def accounts_with(clock: FakeClock, **limits: int) -> Accounts:
    return Accounts(ledger=MemoryLedger(), keys=KeyStore(), prices=PriceTable.free(), limits=RateLimits(**limits),
                    clock=clock)


def test_nothing_is_limited_when_no_limit_is_configured(clock):
    free = RateLimiter(clock=clock)
    for i in range(10_000):
        free.admit(f"r{i}", "alice", 4096)
    assert free.retry_after_s("alice", 10**9) == 0.0


def test_a_request_over_the_per_minute_count_is_refused_with_retry_after_and_admitted_once_it_refills(clock):
    limits = limiter(clock, rpm=2)
    limits.admit("r1", "alice", 1)
    limits.admit("r2", "alice", 1)
    with pytest.raises(RateLimited) as limited:
        limits.admit("r3", "alice", 1)
    assert limited.value.code == "rate_limited" and is_retryable(limited.value)
    assert limited.value.retry_after_s == pytest.approx(30.0)  # one request refills every 60/2 s
    assert limited.value.retry_after_header == "30"
    clock.advance(29.9)
    assert not limits.can_admit("alice", 1)
    clock.advance(0.1)
    limits.admit("r3", "alice", 1)
    clock.advance(60)
    limits.admit("r4", "alice", 1)
    limits.admit("r5", "alice", 1)  # a whole window later the bucket is full again


def test_accounts_are_limited_separately(clock):
    limits = limiter(clock, rpm=1)
    limits.admit("r1", "alice", 1)
    limits.admit("r2", "bob", 1)
    assert not limits.can_admit("alice", 1)


def test_sixteen_32k_requests_are_charged_their_expected_output_not_max_tokens(clock):
    expected = expected_output_tokens(32_768, EXPECTED_OUTPUT_RATIO_START)
    accounts = accounts_with(clock, output_tokens_per_minute=16 * expected)  # far below 16 × 32,768
    account = Account("alice")
    for i in range(16):
        admission = accounts.admit(account, f"r{i}", model="m", prompt_tokens=10, max_tokens=32_768)
        assert admission.expected_output_tokens == expected
    with pytest.raises(RateLimited):
        accounts.admit(account, "r16", model="m", prompt_tokens=10, max_tokens=32_768)


def test_completion_refunds_the_difference_between_expected_and_actual_output(clock):
    limits = limiter(clock, tpm=1000)
    limits.admit("r1", "alice", 700)
    with pytest.raises(RateLimited) as limited:
        limits.admit("r2", "alice", 700)
    assert limited.value.retry_after_s == pytest.approx(400 / (1000 / 60))
    assert limits.reconcile("r1", 100) == 600
    limits.admit("r2", "alice", 700)


def test_completion_charges_an_output_longer_than_expected(clock):
    limits = limiter(clock, tpm=1000)
    limits.admit("r1", "alice", 300)
    assert limits.reconcile("r1", 1000) == -700
    assert limits.retry_after_s("alice", 1) == pytest.approx(1 / (1000 / 60))
    assert limits.reconcile("r1", 1000) == 0  # reconciled once


def test_a_request_larger_than_a_minutes_allowance_is_admitted_from_a_full_bucket(clock):
    limits = limiter(clock, tpm=1000)
    limits.admit("r1", "alice", 2868)
    with pytest.raises(RateLimited) as limited:
        limits.admit("r2", "alice", 2868)
    assert limited.value.retry_after_s == pytest.approx((1000 + 1868) / (1000 / 60))  # pays off its debt first


def test_a_failed_request_is_refunded_what_it_did_not_produce(clock):
    limits = limiter(clock, rpm=1, tpm=1000)
    limits.admit("r1", "alice", 700)
    assert limits.release("r1", produced_output_tokens=200)
    assert limits.release("r1") is False
    limits.admit("r2", "alice", 800)  # 1000 − 200 produced; the request itself was refunded too


def test_a_client_that_disconnects_keeps_its_request_counted_but_not_its_tokens(clock):
    accounts = accounts_with(clock, requests_per_minute=1, output_tokens_per_minute=1000)
    account = Account("alice")
    accounts.admit(account, "r1", model="m", prompt_tokens=1, max_tokens=1000)
    accounts.release("r1", ReleaseReason.CLIENT_DISCONNECT)
    with pytest.raises(RateLimited) as limited:
        accounts.admit(account, "r2", model="m", prompt_tokens=1, max_tokens=1000)
    assert limited.value.retry_after_s == pytest.approx(60.0)  # waiting for a request, not for tokens
    clock.advance(60)
    accounts.admit(account, "r2", model="m", prompt_tokens=1, max_tokens=1000)  # the full 1000 tokens were back
    accounts.release("r2", ReleaseReason.PROVIDER_ERROR)
    accounts.admit(account, "r3", model="m", prompt_tokens=1, max_tokens=1000)  # our failure is not counted


def test_a_rate_limited_request_takes_no_hold(clock):
    accounts = accounts_with(clock, requests_per_minute=1)
    account = Account("alice")
    accounts.admit(account, "r1", model="m", prompt_tokens=1, max_tokens=10)
    with pytest.raises(RateLimited):
        accounts.admit(account, "r2", model="m", prompt_tokens=1, max_tokens=10)
    assert accounts.num_holds == 1 and accounts.limiter.num_outstanding == 1


def test_an_accounts_own_limits_override_the_default(clock):
    accounts = accounts_with(clock, requests_per_minute=1000)
    strict = Account("strict", requests_per_minute=1)
    accounts.admit(strict, "r1", model="m", prompt_tokens=1, max_tokens=10)
    with pytest.raises(RateLimited):
        accounts.admit(strict, "r2", model="m", prompt_tokens=1, max_tokens=10)
    for i in range(100):
        accounts.admit(Account("relaxed"), f"x{i}", model="m", prompt_tokens=1, max_tokens=10)


def test_the_generous_defaults_admit_sixty_four_concurrent_512_token_requests(clock):
    generous = RateLimits.generous()
    accounts = accounts_with(clock, requests_per_minute=generous.requests_per_minute,
                             output_tokens_per_minute=generous.output_tokens_per_minute)
    for i in range(64):
        accounts.admit(Account("alice"), f"r{i}", model="m", prompt_tokens=1, max_tokens=512)
