"""Per-account rate limits: requests per minute and output tokens per minute, as token buckets.

A bucket holds up to one minute's allowance and refills continuously. The output-token bucket is
charged the EXPECTED output at admission (agent.admission.expected_output_tokens, the rule KV
admission uses), never the full max_tokens: charging max_tokens up front refused 32k × 16 requests
while the fleet sat idle (DESIGN.md §1, lesson 2). At completion the charge is reconciled with the
real output (the difference refunded, an overrun charged, even into debt); a failed request is
refunded what it did not produce.

A request is admitted when each bucket holds its cost (capped at the bucket's size, so a request
larger than a minute's allowance is admitted from a full bucket and leaves it in debt rather than
waiting forever). Pure and synchronous: time comes from an injected clock.

Public names: RateLimits, RateLimited, RateLimiter, TokenBucket, DEFAULT_REQUESTS_PER_MINUTE,
DEFAULT_OUTPUT_TOKENS_PER_MINUTE.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from agent.errors import DarkbloomError

Clock = Callable[[], float]
SECONDS_PER_MINUTE = 60.0
DEFAULT_REQUESTS_PER_MINUTE = 1_200  # generous for one person's scripts and tools
DEFAULT_OUTPUT_TOKENS_PER_MINUTE = 2_000_000


class RateLimited(DarkbloomError):
    code = "rate_limited"

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    @property
    def retry_after_header(self) -> str:
        """Whole seconds, rounded up, as Retry-After wants them."""
        return str(max(1, math.ceil(self.retry_after_s)))


@dataclass(frozen=True, slots=True)
class RateLimits:
    """None means unlimited; the default is no limit at all."""

    requests_per_minute: int | None = None
    output_tokens_per_minute: int | None = None

    @classmethod
    def generous(cls) -> RateLimits:
        return cls(DEFAULT_REQUESTS_PER_MINUTE, DEFAULT_OUTPUT_TOKENS_PER_MINUTE)

    @classmethod
    def from_cli(cls, requests_per_minute: int | None, output_tokens_per_minute: int | None) -> RateLimits:
        """The generous defaults, each replaced when given; 0 means unlimited."""
        default = cls.generous()
        rpm = default.requests_per_minute if requests_per_minute is None else requests_per_minute or None
        tpm = default.output_tokens_per_minute if output_tokens_per_minute is None else output_tokens_per_minute or None
        return cls(rpm, tpm)

    @property
    def is_unlimited(self) -> bool:
        return self.requests_per_minute is None and self.output_tokens_per_minute is None


@dataclass(slots=True)
class TokenBucket:
    capacity: float
    level: float
    updated_at: float

    @classmethod
    def full(cls, per_minute: int, now: float) -> TokenBucket:
        return cls(float(per_minute), float(per_minute), now)

    @property
    def refill_per_s(self) -> float:
        return self.capacity / SECONDS_PER_MINUTE

    def refill(self, now: float) -> None:
        elapsed = max(0.0, now - self.updated_at)
        self.level = min(self.capacity, self.level + elapsed * self.refill_per_s)
        self.updated_at = now

    def wait_s(self, cost: float, now: float) -> float:
        """Seconds until `cost` can be taken; 0.0 if it can be now."""
        self.refill(now)
        missing = min(cost, self.capacity) - self.level
        return 0.0 if missing <= 0 else missing / self.refill_per_s

    def take(self, cost: float) -> None:
        self.level -= cost

    def give(self, amount: float) -> None:
        self.level = min(self.capacity, self.level + amount)


@dataclass(slots=True)
class _Charge:
    account_id: str
    output_tokens: int


@dataclass(slots=True)
class _AccountBuckets:
    limits: RateLimits
    requests: TokenBucket | None
    output_tokens: TokenBucket | None


class RateLimiter:
    """Check with `retry_after_s`, commit with `admit`; then `reconcile` at completion or `release`."""

    def __init__(self, default: RateLimits | None = None, *, clock: Clock = time.monotonic) -> None:
        self.default = default or RateLimits()
        self._clock = clock
        self._accounts: dict[str, _AccountBuckets] = {}
        self._charges: dict[str, _Charge] = {}

    @property
    def num_outstanding(self) -> int:
        return len(self._charges)

    def retry_after_s(self, account_id: str, output_tokens: int, limits: RateLimits | None = None) -> float:
        buckets = self._buckets(account_id, limits or self.default)
        now = self._clock()
        waits = [0.0]
        if buckets.requests is not None:
            waits.append(buckets.requests.wait_s(1, now))
        if buckets.output_tokens is not None:
            waits.append(buckets.output_tokens.wait_s(output_tokens, now))
        return max(waits)

    def can_admit(self, account_id: str, output_tokens: int, limits: RateLimits | None = None) -> bool:
        return self.retry_after_s(account_id, output_tokens, limits) == 0.0

    def check(self, account_id: str, output_tokens: int, limits: RateLimits | None = None) -> None:
        """Raise RateLimited (with retry_after_s) unless the request may be admitted now."""
        wait = self.retry_after_s(account_id, output_tokens, limits)
        if wait > 0.0:
            raise RateLimited(
                f"account {account_id!r} is over its rate limit ({_describe(limits or self.default)}); "
                f"retry after {wait:.1f} s",
                wait,
            )

    def admit(self, request_id: str, account_id: str, output_tokens: int, limits: RateLimits | None = None) -> None:
        self.check(account_id, output_tokens, limits)
        buckets = self._accounts[account_id]
        if buckets.requests is not None:
            buckets.requests.take(1)
        if buckets.output_tokens is not None:
            buckets.output_tokens.take(output_tokens)
        self._charges[request_id] = _Charge(account_id, output_tokens)

    def reconcile(self, request_id: str, actual_output_tokens: int) -> int:
        """Charge the real output instead of the expected; returns the tokens refunded (< 0: overrun)."""
        charge = self._charges.pop(request_id, None)
        if charge is None:
            return 0
        refund = charge.output_tokens - actual_output_tokens
        bucket = self._accounts[charge.account_id].output_tokens
        if bucket is not None:
            bucket.refill(self._clock())
            if refund > 0:
                bucket.give(refund)
            else:
                bucket.take(-refund)
        return refund

    def release(self, request_id: str, *, produced_output_tokens: int = 0, refund_request: bool = True) -> bool:
        """A failed request: refund what it did not produce and, unless the client caused it, the request."""
        charge = self._charges.get(request_id)
        if charge is None:
            return False
        self.reconcile(request_id, produced_output_tokens)
        bucket = self._accounts[charge.account_id].requests
        if refund_request and bucket is not None:
            bucket.refill(self._clock())
            bucket.give(1)
        return True

    def _buckets(self, account_id: str, limits: RateLimits) -> _AccountBuckets:
        buckets = self._accounts.get(account_id)
        if buckets is None or buckets.limits != limits:
            # New account, or its limits changed: start (again) from full buckets of the new size.
            now = self._clock()
            buckets = _AccountBuckets(
                limits,
                None if limits.requests_per_minute is None else TokenBucket.full(limits.requests_per_minute, now),
                None if limits.output_tokens_per_minute is None
                else TokenBucket.full(limits.output_tokens_per_minute, now),
            )
            self._accounts[account_id] = buckets
        return buckets


def _describe(limits: RateLimits) -> str:
    parts = []
    if limits.requests_per_minute is not None:
        parts.append(f"{limits.requests_per_minute} requests/min")
    if limits.output_tokens_per_minute is not None:
        parts.append(f"{limits.output_tokens_per_minute} output tokens/min")
    return ", ".join(parts) or "unlimited"
