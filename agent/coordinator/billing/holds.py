"""Balances and holds: the pure, synchronous bookkeeping behind per-account billing.

    available = balance − Σ outstanding holds                        (integer micro-units)
    exposure  = Σ outstanding bounds      (the most those requests can ever be charged)

Every hold carries two costs: its EXPECTED cost (prompt + expected output, the rule KV admission uses)
and its BOUND, the most the request can be charged (prompt upper bound + every output token it may
produce). What it holds depends on the account's credit limit (micro-units, default 0):

    credit limit 0   holds the bound: the balance covers the worst case, so it cannot be outrun
    credit limit > 0 holds the expected cost (a well-funded key runs as many concurrent requests as it
                     can pay for on average), and the bound must fit in balance + credit limit − exposure

Both rules are one invariant: balance − exposure ≥ −credit limit, so no account ends below −credit limit
under any interleaving. A charge that would still cross it (a settle above its bound, a late settle whose
hold was released) is cut to what fits and the cut is reported (`forgiven_micros`) for the caller to log.
Each hold ends exactly once, by request id:

    settle   charge the real cost (the caller bounds it by the request's bound)
    release  charge nothing (a failure path: provider error, disconnect, timeout, retry, ...)

Idempotency, decided here once:
- a second settle of the same request charges nothing (status DUPLICATE);
- a release after a settle, or a second release, is a no-op (returns None);
- a settle after a release charges the real cost once (status LATE): the provider did the work (a
  client that disconnected still consumed it), as far as balance + credit limit − exposure covers it;
- a settle for a request never held here (e.g. from before a restart) charges nothing (UNKNOWN).
Request ids of finished requests are remembered (bounded); across restarts the ledger's
UNIQUE (request_id, kind) is the backstop, and `apply` reverts an entry the ledger refused.

Check then commit: `refusal(...)` says why a hold cannot be taken, `hold(...)` takes it.

Public names: Hold, HoldBook, Settlement, SettleStatus, InsufficientBalance, DuplicateRequest.
"""

from __future__ import annotations

from collections import OrderedDict, defaultdict
from dataclasses import dataclass
from enum import StrEnum

from agent.coordinator.billing.pricing import format_micros
from agent.errors import DarkbloomError

MAX_FINISHED_REMEMBERED = 50_000  # minutes of traffic at hundreds of requests a second


class InsufficientBalance(DarkbloomError):
    code = "insufficient_balance"


class DuplicateRequest(DarkbloomError):
    code = "duplicate_request"


class SettleStatus(StrEnum):
    SETTLED = "settled"  # the normal end of a hold
    DUPLICATE = "duplicate"  # already settled: nothing charged
    LATE = "late"  # settled after its hold was released: charged once
    UNKNOWN = "unknown"  # never held here: nothing charged


@dataclass(frozen=True, slots=True)
class Hold:
    request_id: str
    account_id: str
    model: str
    prompt_tokens: int
    expected_output_tokens: int
    expected_cost_micros: int
    is_billed: bool = True  # an unbilled hold is never refused for money (local/free accounts)
    bound_cost_micros: int | None = None  # the most it can be charged (None: the expected cost)
    credit_limit_micros: int = 0  # of its account when it was taken
    max_output_tokens: int | None = None  # the output the bound counts (what the request may produce)

    @property
    def bound_micros(self) -> int:
        return self.expected_cost_micros if self.bound_cost_micros is None else self.bound_cost_micros

    @property
    def held_micros(self) -> int:
        """What it takes from the available balance: the bound without a credit line, else the expected cost."""
        return self.bound_micros if self.credit_limit_micros <= 0 else self.expected_cost_micros


@dataclass(frozen=True, slots=True)
class Settlement:
    request_id: str
    status: SettleStatus
    account_id: str | None
    cost_micros: int  # charged by this call
    balance_micros: int | None  # the account's balance after it
    hold: Hold | None = None
    forgiven_micros: int = 0  # asked for but not charged: it would have crossed the credit limit

    @property
    def is_charged(self) -> bool:
        return self.cost_micros > 0

    @property
    def is_overdrawn(self) -> bool:
        return self.balance_micros is not None and self.balance_micros < 0


@dataclass(frozen=True, slots=True)
class _Released:
    hold: Hold
    reason: str


class HoldBook:
    def __init__(self, balances: dict[str, int] | None = None, *, max_finished: int = MAX_FINISHED_REMEMBERED) -> None:
        self._balances: defaultdict[str, int] = defaultdict(int, balances or {})
        self._held: defaultdict[str, int] = defaultdict(int)
        self._exposure: defaultdict[str, int] = defaultdict(int)
        self._holds: dict[str, Hold] = {}
        self._finished: OrderedDict[str, Settlement | _Released] = OrderedDict()
        self._max_finished = max_finished

    # -- reading
    def balance_micros(self, account_id: str) -> int:
        return self._balances.get(account_id, 0)

    def held_micros(self, account_id: str) -> int:
        return self._held.get(account_id, 0)

    def available_micros(self, account_id: str) -> int:
        return self.balance_micros(account_id) - self.held_micros(account_id)

    def exposure_micros(self, account_id: str) -> int:
        return self._exposure.get(account_id, 0)

    def room_micros(self, account_id: str, credit_limit_micros: int) -> int:
        """The largest bound one more hold may have: balance + credit limit − exposure."""
        return self.balance_micros(account_id) + max(credit_limit_micros, 0) - self.exposure_micros(account_id)

    @property
    def num_holds(self) -> int:
        return len(self._holds)

    def hold_for(self, request_id: str) -> Hold | None:
        """The request's hold, outstanding or released (a late settle still needs its account and model)."""
        hold = self._holds.get(request_id)
        if hold is None:
            finished = self._finished.get(request_id)
            hold = finished.hold if isinstance(finished, _Released) else None
        return hold

    def can_hold(self, account_id: str, credit_limit_micros: int, cost_micros: int) -> bool:
        """Whether a hold whose held amount and bound are both `cost_micros` would be taken now."""
        return (cost_micros <= self.available_micros(account_id)
                and cost_micros <= self.room_micros(account_id, credit_limit_micros))

    # -- check, then commit
    def refusal(self, hold: Hold) -> DarkbloomError | None:
        if hold.request_id in self._holds or hold.request_id in self._finished:
            return DuplicateRequest(f"request id {hold.request_id!r} was already used; send each request once")
        if not hold.is_billed:
            return None
        available = self.available_micros(hold.account_id)
        room = self.room_micros(hold.account_id, hold.credit_limit_micros)
        if hold.held_micros > available or hold.bound_micros > room:
            if hold.credit_limit_micros <= 0:
                cost = f"could cost up to {format_micros(hold.bound_micros)}"
            else:
                cost = (f"is expected to cost {format_micros(hold.expected_cost_micros)} and could cost up to "
                        f"{format_micros(hold.bound_micros)} ({format_micros(max(room, 0))} left within the "
                        f"credit limit)")
            return InsufficientBalance(
                f"account {hold.account_id!r} has {format_micros(max(available, 0))} available "
                f"({format_micros(self.held_micros(hold.account_id))} held by requests in flight) but this request "
                f"{cost}: add credit, or lower max_tokens"
            )
        return None

    def hold(self, hold: Hold) -> None:
        refusal = self.refusal(hold)
        if refusal is not None:
            raise refusal
        self._holds[hold.request_id] = hold
        self._held[hold.account_id] += hold.held_micros
        self._exposure[hold.account_id] += hold.bound_micros

    def settle(self, request_id: str, cost_micros: int) -> Settlement:
        """End a hold with its real cost (computed by the caller from `hold_for(request_id)`)."""
        hold = self._holds.pop(request_id, None)
        if hold is not None:
            self._unhold(hold)
            return self._charge(hold, cost_micros, SettleStatus.SETTLED)
        finished = self._finished.get(request_id)
        if isinstance(finished, _Released):
            return self._charge(finished.hold, cost_micros, SettleStatus.LATE)
        if isinstance(finished, Settlement):
            return Settlement(request_id, SettleStatus.DUPLICATE, finished.account_id, 0,
                              self.balance_micros(finished.account_id) if finished.account_id else None, finished.hold)
        return Settlement(request_id, SettleStatus.UNKNOWN, None, 0, None)

    def release(self, request_id: str, reason: str) -> Hold | None:
        """End a hold charging nothing; None if there was no outstanding hold (settled, released, unknown)."""
        hold = self._holds.pop(request_id, None)
        if hold is None:
            return None
        self._unhold(hold)
        self._remember(request_id, _Released(hold, reason))
        return hold

    def apply(self, account_id: str, amount_micros: int) -> int:
        """Add a signed amount to a balance: a credit, another process's entry, or a reverted one."""
        self._balances[account_id] += amount_micros
        return self._balances[account_id]

    # -- internals
    def _charge(self, hold: Hold, cost_micros: int, status: SettleStatus) -> Settlement:
        charged = cost_micros
        if hold.is_billed:  # never below −credit limit, whatever the caller asks (its hold is already undone)
            charged = max(0, min(cost_micros, self.room_micros(hold.account_id, hold.credit_limit_micros)))
        balance = self.apply(hold.account_id, -charged)
        settlement = Settlement(hold.request_id, status, hold.account_id, charged, balance, hold,
                                forgiven_micros=cost_micros - charged)
        self._remember(hold.request_id, settlement)
        return settlement

    def _unhold(self, hold: Hold) -> None:
        for sums, amount in ((self._held, hold.held_micros), (self._exposure, hold.bound_micros)):
            sums[hold.account_id] -= amount
            if sums[hold.account_id] == 0:
                del sums[hold.account_id]

    def _remember(self, request_id: str, outcome: Settlement | _Released) -> None:
        self._finished[request_id] = outcome
        self._finished.move_to_end(request_id)
        while len(self._finished) > self._max_finished:
            self._finished.popitem(last=False)
