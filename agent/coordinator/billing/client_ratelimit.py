"""Request-rate limits per client address, for open mode: without keys the address is all that tells one
client from another.

Each address has one token bucket of `requests_per_minute` (ratelimit.TokenBucket: a minute's allowance,
refilled continuously), taken when the request's head arrives, before its body is read, so a flood costs
the coordinator a head each. At most `max_clients` addresses are tracked; past that the least recently seen
is forgotten (it starts again from a full bucket), so a spray of addresses costs bounded memory. Pure and
synchronous: time comes from an injected clock.

Public names: ClientRateLimiter, DEFAULT_OPEN_REQUESTS_PER_MINUTE_PER_IP, MAX_RATE_LIMITED_CLIENTS.
"""

from __future__ import annotations

import time
from collections import OrderedDict

from agent.coordinator.billing.ratelimit import Clock, RateLimited, TokenBucket

DEFAULT_OPEN_REQUESTS_PER_MINUTE_PER_IP = 6_000  # 100 a second sustained: far above one local user's tools
MAX_RATE_LIMITED_CLIENTS = 10_000


class ClientRateLimiter:
    """Check with `retry_after_s`, commit with `admit` (which checks too)."""

    def __init__(self, requests_per_minute: int | None = DEFAULT_OPEN_REQUESTS_PER_MINUTE_PER_IP, *,
                 max_clients: int = MAX_RATE_LIMITED_CLIENTS, clock: Clock = time.monotonic) -> None:
        self.requests_per_minute = requests_per_minute
        self.max_clients = max_clients
        self._clock = clock
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    @property
    def is_unlimited(self) -> bool:
        return self.requests_per_minute is None

    @property
    def num_clients(self) -> int:
        return len(self._buckets)

    def retry_after_s(self, client: str) -> float:
        """Seconds until `client` may send another request; 0.0 if it may now."""
        if self.requests_per_minute is None:
            return 0.0
        return self._bucket(client).wait_s(1, self._clock())

    def admit(self, client: str) -> None:
        """Take one request from `client`'s bucket, or raise RateLimited (with retry_after_s) taking nothing."""
        wait = self.retry_after_s(client)
        if wait > 0.0:
            raise RateLimited(f"client {client} is over the open coordinator's limit of {self.requests_per_minute} "
                              f"requests/min per address; retry after {wait:.1f} s", wait)
        if self.requests_per_minute is not None:
            self._buckets[client].take(1)

    def _bucket(self, client: str) -> TokenBucket:
        bucket = self._buckets.get(client)
        if bucket is None:
            bucket = TokenBucket.full(self.requests_per_minute, self._clock())
            self._buckets[client] = bucket
            while len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)
        self._buckets.move_to_end(client)
        return bucket
