"""What each provider has shown: outcomes in, trust and quarantine out. Pure; the clock is injected.

A provider is a stranger whose heartbeats are claims. What it *does* with the requests it accepts is
not: the flow reports each attempt's outcome here (router.observe), and placement reads back

    trust(id)            in [0, 1]: (prior_good + good) / (prior_good + prior_bad + good + weight · bad),
                         good and bad being outcome counts that decay with `reputation_half_life_s`.
                         A new provider starts at 1 / (1 + 3) = 0.25: low, not zero, so it gets traffic
                         to prove itself; successes raise it slowly, each failure costs `weight` successes.
    tier(id)             trust in `num_trust_tiers` steps: placement orders equal-row slots by it (then
                         round robin), never by their claimed free KV.
    max_in_flight(id)    an unproven provider (fewer than `proven_after_first_tokens` first tokens shown)
                         holds `unproven_max_in_flight` requests before placement prefers any other slot
                         with room (placement.py's overflow): a sinkhole costs that many while others can serve.
    quarantine(id)       `quarantine_after_failures` failures within `quarantine_window_s` exclude it for
                         `quarantine_s`, doubled on each repeat up to `max_quarantine_s`; the reason says so.

A lost link lowers trust but does not count towards quarantine: a replaced or dropped link is often the
network, and it costs the client only an immediate retry. State is O(1) per provider, and at most
`max_reputations` providers are tracked (the least recently seen is forgotten first); a connection without
an identity is forgotten when it disconnects, since nothing can bring its id back.

Public names: Outcome, Reputation, ReputationBook, ReputationView, FAILURES.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from pydantic import BaseModel, ConfigDict

from agent.coordinator.settings import CoordinatorSettings

PRIOR_GOOD, PRIOR_BAD = 1.0, 3.0
FAILURE_WEIGHT = 4.0  # one failure undoes this many successes


class Outcome(StrEnum):
    FIRST_TOKEN = "first_token"
    COMPLETED = "completed"
    TIMEOUT = "timeout"  # no accepted, or no first token, in time
    ENDED = "ended"  # refused after accepting: ended, cancelled or rejected before a token (or cut short after)
    ERROR = "error"
    STALLED = "stalled"
    CLAMPED = "clamped"  # a usage claim over the bound, or a chunk past max_tokens
    LINK_LOST = "link_lost"
    EMPTY_FLOOD = "empty_flood"  # empty chunks past max_tokens before a token

    @classmethod
    def of(cls, name: str) -> Outcome:
        """An outcome by name; a name this module does not know is an error of the provider."""
        return cls._value2member_map_.get(name, cls.ERROR)  # type: ignore[return-value]


SUCCESSES = frozenset({Outcome.FIRST_TOKEN, Outcome.COMPLETED})
FAILURES = frozenset(Outcome) - SUCCESSES
NOT_QUARANTINING = frozenset({Outcome.LINK_LOST})


class ReputationView(BaseModel):
    """A provider's reputation as operators see it (`providers list`, /metrics) and as it is persisted."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    trust: float
    num_first_tokens: int
    good: float
    bad: float
    num_quarantines: int
    quarantine_left_s: float
    last_failure: str = ""
    ttft_s: float | None = None
    outcomes: dict[str, int] = {}


@dataclass(slots=True)
class Reputation:
    provider_id: str
    is_identity: bool
    decayed_at: float
    good: float = 0.0
    bad: float = 0.0
    num_first_tokens: int = 0
    recent_failures: deque = field(default_factory=deque)  # times, at most quarantine_after_failures
    quarantined_until: float = 0.0
    num_quarantines: int = 0
    last_failure: str = ""
    ttft_s: float | None = None  # exponentially weighted mean
    outcomes: dict[Outcome, int] = field(default_factory=dict)

    @property
    def trust(self) -> float:
        return (PRIOR_GOOD + self.good) / (PRIOR_GOOD + PRIOR_BAD + self.good + FAILURE_WEIGHT * self.bad)


class ReputationBook:
    def __init__(self, settings: CoordinatorSettings, clock: Callable[[], float]) -> None:
        self.settings, self.clock = settings, clock
        self._by_id: dict[str, Reputation] = {}
        self._ever_quarantined: set[str] = set()  # ids with a quarantine time set, past or present
        self.on_quarantine: Callable[[Reputation, float], None] = lambda reputation, seconds: None

    def __len__(self) -> int:
        return len(self._by_id)

    def __iter__(self):
        return iter(list(self._by_id.values()))

    def get(self, provider_id: str) -> Reputation | None:
        return self._by_id.get(provider_id)

    def track(self, provider_id: str, *, is_identity: bool) -> Reputation:
        reputation = self._by_id.pop(provider_id, None)  # re-inserted last: the dict's order is recency
        if reputation is None:
            reputation = Reputation(provider_id, is_identity, decayed_at=self.clock())
            while len(self._by_id) >= self.settings.max_reputations:
                self.forget(next(iter(self._by_id)))
        self._by_id[provider_id] = reputation
        return reputation

    def forget(self, provider_id: str) -> None:
        self._by_id.pop(provider_id, None)
        self._ever_quarantined.discard(provider_id)

    def record(self, provider_id: str, outcome: Outcome, *, ttft_s: float | None = None, detail: str = "") -> None:
        reputation = self._by_id.get(provider_id)
        if reputation is None:
            return  # not a provider we track (forgotten, or never connected)
        now = self.clock()
        self._decay(reputation, now)
        reputation.outcomes[outcome] = reputation.outcomes.get(outcome, 0) + 1
        if outcome in SUCCESSES:
            reputation.good += 1.0
            if outcome is Outcome.FIRST_TOKEN:
                reputation.num_first_tokens += 1
                if ttft_s is not None:
                    previous = reputation.ttft_s
                    reputation.ttft_s = ttft_s if previous is None else 0.8 * previous + 0.2 * ttft_s
            return
        reputation.bad += 1.0
        reputation.last_failure = f"{outcome.value}: {detail}"[:200] if detail else outcome.value
        if outcome not in NOT_QUARANTINING and not self._is_quarantined(reputation, now):
            self._count_failure(reputation, now)

    # -- what placement reads
    def trust(self, provider_id: str, now: float | None = None) -> float:
        reputation = self._by_id.get(provider_id)
        if reputation is None:
            return PRIOR_GOOD / (PRIOR_GOOD + PRIOR_BAD)
        self._decay(reputation, self.clock() if now is None else now)
        return reputation.trust

    def tier(self, provider_id: str, now: float | None = None) -> int:
        """`now`: the clock read once by a caller that asks this of many providers in one step."""
        num_tiers = self.settings.num_trust_tiers
        return min(num_tiers - 1, int(self.trust(provider_id, now) * num_tiers))

    def max_in_flight(self, provider_id: str) -> int | None:
        """How many requests it may hold at once while it is unproven (None: no such cap)."""
        reputation = self._by_id.get(provider_id)
        shown = reputation.num_first_tokens if reputation is not None else 0
        return None if shown >= self.settings.proven_after_first_tokens else self.settings.unproven_max_in_flight

    def quarantine_reason(self, provider_id: str) -> str:
        reputation = self._by_id.get(provider_id)
        if reputation is None or not reputation.quarantined_until:  # never quarantined: no clock read (placement
            return ""                                                # asks this of every provider, every decision)
        now = self.clock()
        if not self._is_quarantined(reputation, now):
            return ""
        return (f"quarantined for {reputation.quarantined_until - now:.0f} s more after "
                f"{self.settings.quarantine_after_failures} failures within {self.settings.quarantine_window_s:g} s "
                f"(last: {reputation.last_failure.partition(':')[0]})")  # the detail is for operators only

    def quarantined_ids(self) -> set[str]:
        """The providers that were ever quarantined: only these can be now (quarantine_reason says whether)."""
        return self._ever_quarantined

    def num_quarantined(self) -> int:
        now = self.clock()
        return sum(1 for reputation in self._by_id.values() if self._is_quarantined(reputation, now))

    def view(self, provider_id: str) -> ReputationView | None:
        reputation = self._by_id.get(provider_id)
        if reputation is None:
            return None
        now = self.clock()
        self._decay(reputation, now)
        return ReputationView(trust=round(reputation.trust, 4), num_first_tokens=reputation.num_first_tokens,
                              good=round(reputation.good, 4), bad=round(reputation.bad, 4),
                              num_quarantines=reputation.num_quarantines,
                              quarantine_left_s=round(max(0.0, reputation.quarantined_until - now), 3),
                              last_failure=reputation.last_failure, ttft_s=reputation.ttft_s,
                              outcomes={o.value: n for o, n in reputation.outcomes.items()})

    def restore(self, provider_id: str, view: ReputationView) -> Reputation:
        """An identity's reputation as it was persisted: a restart forgives nothing and forgets no proof."""
        reputation = self.track(provider_id, is_identity=True)
        now = self.clock()
        reputation.good, reputation.bad, reputation.decayed_at = view.good, view.bad, now
        reputation.num_first_tokens, reputation.num_quarantines = view.num_first_tokens, view.num_quarantines
        reputation.quarantined_until = now + view.quarantine_left_s if view.quarantine_left_s else 0.0
        if reputation.quarantined_until:
            self._ever_quarantined.add(provider_id)
        reputation.last_failure, reputation.ttft_s = view.last_failure, view.ttft_s
        reputation.outcomes = {Outcome.of(name): n for name, n in view.outcomes.items()}
        return reputation

    # -- inside
    def _decay(self, reputation: Reputation, now: float) -> None:
        elapsed = now - reputation.decayed_at
        if elapsed > 0:
            if reputation.good or reputation.bad:  # nothing to halve for a provider with no outcomes yet
                factor = 0.5 ** (elapsed / self.settings.reputation_half_life_s)
                reputation.good *= factor
                reputation.bad *= factor
            reputation.decayed_at = now

    @staticmethod
    def _is_quarantined(reputation: Reputation, now: float) -> bool:
        return reputation.quarantined_until > now

    def _count_failure(self, reputation: Reputation, now: float) -> None:
        settings, recent = self.settings, reputation.recent_failures
        recent.append(now)
        while recent and (now - recent[0] > settings.quarantine_window_s
                          or len(recent) > settings.quarantine_after_failures):
            recent.popleft()
        if len(recent) < settings.quarantine_after_failures:
            return
        recent.clear()
        if reputation.quarantined_until and now - reputation.quarantined_until > settings.max_quarantine_s:
            reputation.num_quarantines = 0  # clean for longer than the longest quarantine: a first offence again
        reputation.num_quarantines += 1
        seconds = min(settings.max_quarantine_s, settings.quarantine_s * 2 ** (reputation.num_quarantines - 1))
        reputation.quarantined_until = now + seconds
        self._ever_quarantined.add(reputation.provider_id)
        self.on_quarantine(reputation, seconds)
