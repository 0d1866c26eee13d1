"""Setting up and checking a simulated fleet: a funded key on a real accounts database, and the books.

    accounts, key = funded_accounts(db_path, dollars=1_000)   # one billed account, one API key
    leaks(coordinator, agents)                                 # {} when nothing is held anywhere

`leaks` is the conservation check the chaos tests and the load test end with: no hold left on the
account, nothing in flight in the coordinator's per-provider ledgers, and no reservation, running
request or provider task left on any live agent.

Public names: funded_accounts, leaks, FLEET_LIMITS.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from agent.coordinator.billing.accounts import Accounts
from agent.coordinator.billing.keys import create_key
from agent.coordinator.billing.ledger_entries import credit_account
from agent.coordinator.billing.ratelimit import RateLimits
from agent.coordinator.core import Coordinator

MICROS_PER_DOLLAR = 1_000_000
FLEET_LIMITS = RateLimits.generous()  # 1,200 requests and 2,000,000 output tokens per minute per account


def funded_accounts(db_path: str | Path, *, dollars: int = 1_000, limits: RateLimits | None = FLEET_LIMITS,
                    account: str = "loadtest", poll_interval_s: float | None = None) -> tuple[Accounts, str]:
    """A keys database with one billed account holding `dollars`, its key, and Accounts open on it."""
    key = create_key(db_path, account, name="fleet").key
    credit_account(db_path, account, dollars * MICROS_PER_DOLLAR, note="fleet funding")
    extra = {"poll_interval_s": poll_interval_s} if poll_interval_s is not None else {}
    return Accounts.from_db(db_path, limits=limits, **extra), key


def leaks(coordinator: Coordinator, agents: Iterable[object] = ()) -> dict[str, object]:
    """Everything still held anywhere; empty when the books balance."""
    found: dict[str, object] = {}
    if coordinator.accounts.num_holds:
        found["holds"] = coordinator.accounts.num_holds
    in_flight = {f"{provider.provider_id}/{model}": offer.pending.num_in_flight
                 for model in coordinator.router.registry.models()
                 for provider, offer in coordinator.router.registry.offers(model) if offer.pending.num_in_flight}
    if in_flight:
        found["coordinator_in_flight"] = in_flight
    for agent in agents:
        engine, provider = agent.engine, agent.handler
        if not engine.backend.is_running:
            continue
        for slot in engine.snapshot().slots:
            if slot.kv_reserved_bytes or slot.num_running or slot.num_waiting:
                found[f"agent {provider.provider_id}/{slot.model}"] = {
                    "kv_reserved_bytes": slot.kv_reserved_bytes, "num_running": slot.num_running,
                    "num_waiting": slot.num_waiting}
        if provider.tasks:
            found[f"agent {provider.provider_id} tasks"] = len(provider.tasks)
    return found
