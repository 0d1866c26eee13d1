"""Accounts: who may send a request, what it may cost, and what it did cost.

The one object the API layer talks to, non-blocking and safe to call from the event loop:

    account = accounts.authenticate(bearer_key)                     # memory only; None -> 401
    accounts.precheck(account)                 # before the body is read: what admit would refuse whatever it says
    admission = accounts.admit(account, request_id, model=..., prompt_tokens=..., max_tokens=...,
                               max_output_tokens=..., can_cap=True)
        # raises InsufficientBalance (429 insufficient_quota), RateLimited (429 + Retry-After), DuplicateRequest (409),
        # LedgerUnavailable (503) for a billed account while the ledger cannot be written;
        # admission.max_tokens may be below the ask when the balance covers only that much output
    accounts.settle(request_id, prompt_tokens=..., completion_tokens=...)   # on inference_complete
    accounts.release(request_id, ReleaseReason.TIMEOUT)                     # on every failure path

Admission charges the rate limiter the EXPECTED output (agent.admission.expected_output_tokens, the
rule KV admission uses, DESIGN.md §4) and holds what holds.py says: the worst case (prompt bound +
`max_output_tokens`, all the output the request may produce) for an account without a credit line, the
expected cost within the worst case's credit line otherwise. When the balance cannot cover the worst case
and the caller `can_cap`, the request's output is capped to the most the balance covers (binary search
on the book's own check) and it ends with finish_reason "length"; below `min_capped_output_tokens` it is
refused instead (429 insufficient_quota, naming what it could cost). Settlement appends
one ledger entry; the SQLite write happens later on the ledger's writer thread. A retry of the same
consumer request on another provider keeps its hold; release only when the request itself ends
without a usage report (or is re-admitted under a new request id: ReleaseReason.RETRY).

`Accounts.open()` is `--open` mode: one implicit local account, no keys, no billing, no limits.

Public names: Accounts, Admission, ReleaseReason, LOCAL_ACCOUNT (and re-exported: Account,
InsufficientBalance, DuplicateRequest, LedgerUnavailable, RateLimited, RateLimits, Settlement, SettleStatus).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import structlog

from agent.admission import EXPECTED_OUTPUT_RATIO_START, expected_output_tokens
from agent.coordinator.billing.holds import (
    DuplicateRequest,
    Hold,
    HoldBook,
    InsufficientBalance,
    Settlement,
    SettleStatus,
)
from agent.coordinator.billing.identities import IdentityStore
from agent.coordinator.billing.keys import KeyStore
from agent.coordinator.billing.ledger import (
    MAX_BACKLOG_ENTRIES,
    POLL_INTERVAL_S,
    RETRY_MAX_S,
    LedgerUnavailable,
    SqliteLedger,
)
from agent.coordinator.billing.ledger_entries import EntryKind, LedgerEntry
from agent.coordinator.billing.memory_ledger import MemoryLedger
from agent.coordinator.billing.pricing import DEFAULT_PRICES, PriceTable, format_micros
from agent.coordinator.billing.ratelimit import Clock, RateLimited, RateLimiter, RateLimits
from agent.coordinator.billing.store import Account
from agent.coordinator.settings import MIN_CAPPED_OUTPUT_TOKENS

__all__ = ["Accounts", "Admission", "ReleaseReason", "LOCAL_ACCOUNT", "Account", "InsufficientBalance",
           "DuplicateRequest", "LedgerUnavailable", "RateLimited", "RateLimits", "Settlement", "SettleStatus"]

log = structlog.get_logger(__name__)
LOCAL_ACCOUNT = Account("local", is_billed=False)


class ReleaseReason(StrEnum):
    PROVIDER_ERROR = "provider_error"
    CLIENT_DISCONNECT = "client_disconnect"
    TIMEOUT = "timeout"
    RETRY = "retry"  # abandoned, to be admitted again under a new request id
    NO_CAPACITY = "no_capacity"
    CANCELLED = "cancelled"  # by the client
    SHUTDOWN = "shutdown"

    @property
    def is_client_caused(self) -> bool:
        # Requests the client itself abandoned still count towards its requests-per-minute.
        return self in (ReleaseReason.CLIENT_DISCONNECT, ReleaseReason.CANCELLED)


@dataclass(frozen=True, slots=True)
class Admission:
    request_id: str
    account: Account
    model: str
    prompt_tokens: int
    max_tokens: int
    expected_output_tokens: int
    expected_cost_micros: int
    bound_cost_micros: int = 0  # the most it can be charged: prompt bound + max_tokens of output
    is_capped: bool = False  # max_tokens was lowered to what the balance covers


class Accounts:
    def __init__(self, *, ledger: SqliteLedger | MemoryLedger, keys: KeyStore, prices: PriceTable = DEFAULT_PRICES,
                 limits: RateLimits | None = None, clock: Clock = time.monotonic,
                 open_account: Account | None = None, identities: IdentityStore | None = None) -> None:
        self.prices = prices
        self.keys = keys
        self.identities = identities or IdentityStore()  # provider credentials live in the same database
        self.limiter = RateLimiter(limits, clock=clock)
        self.ledger = ledger
        self.open_account = open_account
        self._book = HoldBook(dict(ledger.loaded_balances))
        self._lock = threading.Lock()  # the ledger writer's callbacks run on its thread
        ledger.start(self)

    @classmethod
    def open(cls, *, clock: Clock = time.monotonic) -> Accounts:
        return cls(ledger=MemoryLedger(), keys=KeyStore(), prices=PriceTable.free(), clock=clock,
                   open_account=LOCAL_ACCOUNT)

    @classmethod
    def from_db(cls, db_path: str | Path, *, prices: PriceTable = DEFAULT_PRICES, limits: RateLimits | None = None,
                clock: Clock = time.monotonic, poll_interval_s: float = POLL_INTERVAL_S,
                max_backlog_entries: int = MAX_BACKLOG_ENTRIES, retry_max_s: float = RETRY_MAX_S) -> Accounts:
        ledger = SqliteLedger(db_path, poll_interval_s=poll_interval_s, max_backlog_entries=max_backlog_entries,
                              retry_max_s=retry_max_s)
        return cls(ledger=ledger, keys=KeyStore.load(ledger.conn), prices=prices, limits=limits, clock=clock,
                   identities=IdentityStore.load(ledger.conn))

    @property
    def is_open(self) -> bool:
        return self.open_account is not None

    # -- the request path
    def authenticate(self, key: str | None) -> Account | None:
        return self.open_account if self.open_account is not None else self.keys.authenticate(key)

    def precheck(self, account: Account) -> None:
        """Refuse, from the account alone and before the body is read, what `admit` would refuse whatever the
        body says (in admit's order: the ledger, the balance, the request rate). Takes nothing."""
        if account.is_billed and (reason := self.ledger.refusal()) is not None:
            raise LedgerUnavailable(reason)
        with self._lock:
            cheapest = self.prices.cheapest_request_micros
            if account.is_billed and not self._book.can_hold(account.id, account.credit_limit_micros, cheapest):
                available = self._book.available_micros(account.id)
                raise InsufficientBalance(
                    f"account {account.id!r} has {format_micros(max(available, 0))} available "
                    f"({format_micros(self._book.held_micros(account.id))} held by requests in flight), less than "
                    f"any request costs ({format_micros(cheapest)}): add credit")
            self.limiter.check(account.id, 0, self._limits(account))

    def admit(self, account: Account, request_id: str, *, model: str, prompt_tokens: int, max_tokens: int,
              ratio: float = EXPECTED_OUTPUT_RATIO_START, max_output_tokens: int | None = None,
              can_cap: bool = False, min_capped_output_tokens: int = MIN_CAPPED_OUTPUT_TOKENS) -> Admission:
        """Hold the request's cost (see holds.py) and charge the expected output, or raise and take nothing.

        `max_tokens` sizes the expected output; `max_output_tokens` (default: max_tokens) is all the output
        the request may produce, the bound's output. `prompt_tokens` is the prompt's upper bound."""
        bound_tokens = max_tokens if max_output_tokens is None else max_output_tokens
        limits = self._limits(account)
        if account.is_billed and (reason := self.ledger.refusal()) is not None:
            # A charge that could not be written would be lost on a restart: serve no new billed work.
            log.info("accounts.refuse", account_id=account.id, request_id=request_id, code=LedgerUnavailable.code)
            raise LedgerUnavailable(reason)
        with self._lock:
            hold = self._hold(account, request_id, model, prompt_tokens, max_tokens, bound_tokens, ratio)
            # Money first: a request the balance can never pay for should not be told to retry later.
            refusal = self._book.refusal(hold)
            if refusal is not None and can_cap and refusal.code == InsufficientBalance.code:
                capped = self._largest_affordable(account, request_id, model, prompt_tokens, bound_tokens, ratio)
                if capped >= min(min_capped_output_tokens, bound_tokens):
                    hold = self._hold(account, request_id, model, prompt_tokens, capped, capped, ratio)
                    refusal = None
            if refusal is not None:
                log.info("accounts.refuse", account_id=account.id, request_id=request_id, code=refusal.code)
                raise refusal
            self.limiter.admit(request_id, account.id, hold.expected_output_tokens, limits)
            self._book.hold(hold)
        is_capped = hold.max_output_tokens is not None and hold.max_output_tokens < bound_tokens
        if is_capped:
            log.info("accounts.cap", account_id=account.id, request_id=request_id, max_tokens=hold.max_output_tokens,
                     asked_tokens=bound_tokens)
        return Admission(request_id, account, model, prompt_tokens,
                         hold.max_output_tokens if is_capped else max_tokens, hold.expected_output_tokens,
                         hold.expected_cost_micros, hold.bound_micros, is_capped)

    def _hold(self, account: Account, request_id: str, model: str, prompt_tokens: int, max_tokens: int,
              bound_tokens: int, ratio: float) -> Hold:
        expected = min(expected_output_tokens(max_tokens, ratio), bound_tokens)
        billed = account.is_billed
        cost = self.prices.cost_micros(model, prompt_tokens, expected) if billed else 0
        bound = self.prices.cost_micros(model, prompt_tokens, bound_tokens) if billed else 0
        return Hold(request_id, account.id, model, prompt_tokens, expected, cost, billed, bound,
                    account.credit_limit_micros, bound_tokens)

    def _largest_affordable(self, account: Account, request_id: str, model: str, prompt_tokens: int,
                            bound_tokens: int, ratio: float) -> int:
        """The most output tokens (≤ bound_tokens) whose hold the book accepts now; 0 if none."""
        low, high = 0, bound_tokens - 1  # bound_tokens itself was just refused
        while low < high:
            mid = (low + high + 1) // 2
            if self._book.refusal(self._hold(account, request_id, model, prompt_tokens, mid, mid, ratio)) is None:
                low = mid
            else:
                high = mid - 1
        return low

    def settle(self, request_id: str, *, prompt_tokens: int, completion_tokens: int,
               cached_tokens: int = 0) -> Settlement:
        """Charge the real usage once (see holds.py for duplicates, late and unknown settlements)."""
        with self._lock:
            hold = self._book.hold_for(request_id)
            cost = self.prices.cost_micros(hold.model, prompt_tokens, completion_tokens, cached_tokens) \
                if hold is not None and hold.is_billed else 0
            settlement = self._book.settle(request_id, cost)
            if settlement.status is SettleStatus.SETTLED:
                self.limiter.reconcile(request_id, completion_tokens)
        if hold is not None and hold.is_billed and settlement.status in (SettleStatus.SETTLED, SettleStatus.LATE):
            self.ledger.append(LedgerEntry(
                account_id=hold.account_id, kind=EntryKind.USAGE, amount_micros=-settlement.cost_micros,
                request_id=request_id,
                model=hold.model, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens))
        if settlement.status is not SettleStatus.SETTLED or settlement.is_overdrawn or settlement.forgiven_micros:
            log.warning("accounts.settle", request_id=request_id, status=settlement.status.value,
                        account_id=settlement.account_id, cost_micros=settlement.cost_micros,
                        forgiven_micros=settlement.forgiven_micros, balance_micros=settlement.balance_micros)
        return settlement

    def release(self, request_id: str, reason: ReleaseReason | str, *, produced_output_tokens: int = 0) -> bool:
        """End a request without charging it; False if it had no outstanding hold (a no-op)."""
        reason = ReleaseReason(reason)
        with self._lock:
            hold = self._book.release(request_id, reason.value)
            if hold is not None:
                self.limiter.release(request_id, produced_output_tokens=produced_output_tokens,
                                     refund_request=not reason.is_client_caused)
        if hold is not None:
            log.info("accounts.release", request_id=request_id, account_id=hold.account_id, reason=reason.value)
        return hold is not None

    # -- money in, and reading
    def credit(self, account_id: str, amount_micros: int, *, note: str | None = None,
               credit_id: str | None = None) -> int:
        if amount_micros <= 0:
            raise ValueError("a credit must be a positive number of micro-units")
        with self._lock:
            balance = self._book.apply(account_id, amount_micros)
        self.ledger.append(LedgerEntry(account_id=account_id, kind=EntryKind.CREDIT, amount_micros=amount_micros,
                                       request_id=credit_id, note=note))
        return balance

    def balance_micros(self, account_id: str) -> int:
        return self._book.balance_micros(account_id)

    def held_micros(self, account_id: str) -> int:
        return self._book.held_micros(account_id)

    def available_micros(self, account_id: str) -> int:
        with self._lock:
            return self._book.available_micros(account_id)

    @property
    def num_holds(self) -> int:
        return self._book.num_holds

    # -- lifecycle
    def flush(self, timeout_s: float | None = 10.0) -> bool:
        return self.ledger.flush(timeout_s)

    def close(self) -> list[LedgerEntry]:
        """Close the ledger; returns the entries it could not write (logged by the ledger)."""
        return self.ledger.close()

    def __enter__(self) -> Accounts:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- LedgerListener: called on the ledger writer's thread
    def on_refused(self, entry: LedgerEntry) -> None:
        with self._lock:
            self._book.apply(entry.account_id, -entry.amount_micros)

    def on_external(self, account_id: str, amount_micros: int) -> None:
        with self._lock:
            self._book.apply(account_id, amount_micros)

    def on_changed(self, conn: sqlite3.Connection) -> None:
        self.keys.reload(conn)
        self.identities.reload(conn)

    def _limits(self, account: Account) -> RateLimits:
        default = self.limiter.default
        return RateLimits(
            default.requests_per_minute if account.requests_per_minute is None else account.requests_per_minute,
            default.output_tokens_per_minute if account.output_tokens_per_minute is None
            else account.output_tokens_per_minute,
        )
