"""Holds, settlement and release: what a request may cost, what it did cost, and that failures cost nothing."""

from __future__ import annotations

import ast
import asyncio
import random
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from agent.admission import EXPECTED_OUTPUT_RATIO_START, expected_output_tokens
from agent.coordinator.billing.accounts import (
    LOCAL_ACCOUNT,
    Accounts,
    DuplicateRequest,
    InsufficientBalance,
    ReleaseReason,
    SettleStatus,
)
from agent.coordinator.billing.keys import create_key
from agent.coordinator.billing.ledger import EntryKind, ledger_sum
from agent.coordinator.billing.pricing import DEFAULT_PRICES
from agent.coordinator.billing.store import set_credit_limit
from agent.errors import DarkbloomError

MODEL = "gpt-oss-20b"
PROMPT = 200
MAX_TOKENS = 512
COORDINATOR = Path(__file__).resolve().parent.parent / "agent" / "coordinator"


def expected_cost(max_tokens: int = MAX_TOKENS, prompt: int = PROMPT) -> int:
    return DEFAULT_PRICES.cost_micros(MODEL, prompt, expected_output_tokens(max_tokens, EXPECTED_OUTPUT_RATIO_START))


def worst_cost(max_tokens: int = MAX_TOKENS, prompt: int = PROMPT) -> int:
    return DEFAULT_PRICES.cost_micros(MODEL, prompt, max_tokens)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "accounts.sqlite"


@pytest.fixture
def funded(db: Path):
    """(accounts, account, key) for an account holding exactly 64 expected costs: not 64 worst cases, with
    a credit line that covers the rest of 64 worst cases (so its holds are expected costs, holds.py)."""
    created = create_key(db, "alice")
    set_credit_limit(db, "alice", 64 * worst_cost())
    accounts = Accounts.from_db(db)
    accounts.credit("alice", 64 * expected_cost())
    yield accounts, accounts.authenticate(created.key), created.key
    accounts.close()


def admit(accounts: Accounts, account, request_id: str, max_tokens: int = MAX_TOKENS):
    return accounts.admit(account, request_id, model=MODEL, prompt_tokens=PROMPT, max_tokens=max_tokens)


def test_sixty_four_concurrent_requests_from_one_key_all_succeed_and_the_ledger_sums_to_their_costs(funded, db):
    accounts, _, key = funded
    assert 64 * worst_cost() > accounts.balance_micros("alice")  # holding max_tokens would refuse most of them
    rng = random.Random(7)
    completions = [rng.randint(1, expected_output_tokens(MAX_TOKENS, EXPECTED_OUTPUT_RATIO_START)) for _ in range(64)]
    all_held = asyncio.Barrier(64)
    peak_holds = 0

    async def one_request(i: int) -> int:
        nonlocal peak_holds
        account = accounts.authenticate(key)
        admit(accounts, account, f"req-{i}")
        await all_held.wait()
        peak_holds = max(peak_holds, accounts.num_holds)
        return accounts.settle(f"req-{i}", prompt_tokens=PROMPT, completion_tokens=completions[i]).cost_micros

    async def main() -> list[int | BaseException]:
        return await asyncio.gather(*(one_request(i) for i in range(64)), return_exceptions=True)

    results = asyncio.run(main())
    errors = [r for r in results if isinstance(r, BaseException)]
    assert errors == []
    assert peak_holds == 64
    assert accounts.flush()
    total = sum(DEFAULT_PRICES.cost_micros(MODEL, PROMPT, c) for c in completions)
    assert sum(results) == total
    assert ledger_sum(db, "alice", EntryKind.USAGE) == -total
    assert accounts.balance_micros("alice") == 64 * expected_cost() - total == ledger_sum(db, "alice")


def test_sixty_four_threads_from_one_key_settle_without_a_single_billing_error(funded, db):
    accounts, account, _ = funded
    barrier = threading.Barrier(64)

    def one_request(i: int) -> int:
        admit(accounts, account, f"t-{i}")
        barrier.wait(timeout=10)
        return accounts.settle(f"t-{i}", prompt_tokens=PROMPT, completion_tokens=100 + i).cost_micros

    with ThreadPoolExecutor(64) as pool:
        costs = list(pool.map(one_request, range(64)))
    assert accounts.flush()
    assert ledger_sum(db, "alice", EntryKind.USAGE) == -sum(costs)
    assert accounts.held_micros("alice") == 0


def test_a_duplicate_settlement_charges_nothing_the_second_time(funded, db):
    accounts, account, _ = funded
    admit(accounts, account, "r1")
    first = accounts.settle("r1", prompt_tokens=PROMPT, completion_tokens=300)
    second = accounts.settle("r1", prompt_tokens=PROMPT, completion_tokens=300)
    assert (first.status, second.status) == (SettleStatus.SETTLED, SettleStatus.DUPLICATE)
    assert first.cost_micros > 0 and second.cost_micros == 0
    assert accounts.flush()
    assert ledger_sum(db, "alice", EntryKind.USAGE) == -first.cost_micros


@pytest.mark.parametrize("reason", list(ReleaseReason))
def test_every_failure_path_releases_its_hold_and_charges_nothing(funded, db, reason):
    accounts, account, _ = funded
    before = accounts.available_micros("alice")
    admit(accounts, account, "r1")
    assert accounts.available_micros("alice") == before - expected_cost()
    assert accounts.release("r1", reason) is True
    assert accounts.available_micros("alice") == before
    assert accounts.num_holds == 0 and accounts.limiter.num_outstanding == 0
    assert accounts.flush()
    assert ledger_sum(db, "alice", EntryKind.USAGE) == 0


def test_releasing_twice_or_after_settling_or_an_unknown_request_is_a_no_op(funded):
    accounts, account, _ = funded
    admit(accounts, account, "r1")
    settled = accounts.settle("r1", prompt_tokens=PROMPT, completion_tokens=10)
    assert accounts.release("r1", ReleaseReason.TIMEOUT) is False
    assert accounts.release("never-seen", "provider_error") is False
    admit(accounts, account, "r2")
    assert accounts.release("r2", ReleaseReason.TIMEOUT) is True
    assert accounts.release("r2", ReleaseReason.TIMEOUT) is False
    assert accounts.balance_micros("alice") == 64 * expected_cost() - settled.cost_micros


def test_a_settlement_after_a_release_charges_the_real_usage_once(funded, db):
    accounts, account, _ = funded
    admit(accounts, account, "r1")
    accounts.release("r1", ReleaseReason.CLIENT_DISCONNECT)
    late = accounts.settle("r1", prompt_tokens=PROMPT, completion_tokens=50)
    again = accounts.settle("r1", prompt_tokens=PROMPT, completion_tokens=50)
    assert (late.status, again.status) == (SettleStatus.LATE, SettleStatus.DUPLICATE)
    assert late.cost_micros == DEFAULT_PRICES.cost_micros(MODEL, PROMPT, 50) and again.cost_micros == 0
    assert accounts.flush()
    assert ledger_sum(db, "alice", EntryKind.USAGE) == -late.cost_micros


def test_a_settlement_for_a_request_never_held_charges_nothing(funded):
    accounts, _, _ = funded
    before = accounts.balance_micros("alice")
    settled = accounts.settle("from-before-a-restart", prompt_tokens=10, completion_tokens=10)
    assert settled.status is SettleStatus.UNKNOWN
    assert accounts.balance_micros("alice") == before


def test_a_request_costing_more_than_the_available_balance_is_refused_with_insufficient_balance(db):
    created = create_key(db, "bob")
    with Accounts.from_db(db) as accounts:
        bob = accounts.authenticate(created.key)
        with pytest.raises(InsufficientBalance) as refused:
            admit(accounts, bob, "r1")
        assert refused.value.code == "insufficient_balance"
        assert "add credit" in str(refused.value)
        assert accounts.num_holds == 0 and accounts.limiter.num_outstanding == 0


def test_worst_case_holds_in_flight_count_against_the_available_balance_until_they_end(db):
    created = create_key(db, "carol")
    with Accounts.from_db(db) as accounts:
        carol = accounts.authenticate(created.key)
        one_token = DEFAULT_PRICES.cost_micros(MODEL, PROMPT, 1)
        accounts.credit("carol", 2 * worst_cost() + one_token)
        admit(accounts, carol, "r1")
        admit(accounts, carol, "r2")
        with pytest.raises(InsufficientBalance):
            admit(accounts, carol, "r3")
        accounts.settle("r1", prompt_tokens=PROMPT, completion_tokens=1)  # frees its hold, charges one token
        assert accounts.available_micros("carol") == worst_cost()
        admit(accounts, carol, "r3")


def test_a_settlement_above_its_expected_hold_is_charged_in_full_within_the_credit_line_and_flags_it(db):
    created = create_key(db, "dave")
    set_credit_limit(db, "dave", worst_cost())
    with Accounts.from_db(db) as accounts:
        dave = accounts.authenticate(created.key)
        accounts.credit("dave", expected_cost())
        admit(accounts, dave, "r1")
        settled = accounts.settle("r1", prompt_tokens=PROMPT, completion_tokens=MAX_TOKENS)
        assert settled.cost_micros == worst_cost() and settled.forgiven_micros == 0
        assert settled.is_overdrawn and accounts.balance_micros("dave") < 0
        with pytest.raises(InsufficientBalance):
            admit(accounts, dave, "r2", max_tokens=1)


def test_a_request_id_is_admitted_once(funded):
    accounts, account, _ = funded
    admit(accounts, account, "r1")
    with pytest.raises(DuplicateRequest) as duplicate:
        admit(accounts, account, "r1")
    assert duplicate.value.code == "duplicate_request"
    accounts.settle("r1", prompt_tokens=PROMPT, completion_tokens=1)
    with pytest.raises(DuplicateRequest):
        admit(accounts, account, "r1")


def test_open_mode_is_one_local_account_that_is_never_billed_or_limited():
    accounts = Accounts.open()
    assert accounts.is_open
    account = accounts.authenticate(None)
    assert account is LOCAL_ACCOUNT and accounts.authenticate("anything") is LOCAL_ACCOUNT
    for i in range(2000):
        admit(accounts, account, f"r{i}", max_tokens=32_768)
    for i in range(2000):
        assert accounts.settle(f"r{i}", prompt_tokens=PROMPT, completion_tokens=32_768).cost_micros == 0
    assert accounts.balance_micros("local") == 0 and accounts.ledger.entries == []


def test_an_unbilled_account_is_never_refused_for_money(db):
    from agent.coordinator.billing.store import create_account

    create_account(db, "team", is_billed=False)
    created = create_key(db, "team")
    with Accounts.from_db(db) as accounts:
        team = accounts.authenticate(created.key)
        admit(accounts, team, "r1")
        assert accounts.settle("r1", prompt_tokens=PROMPT, completion_tokens=500).cost_micros == 0


def test_every_accounts_error_has_a_stable_code_under_the_root():
    assert issubclass(InsufficientBalance, DarkbloomError) and issubclass(DuplicateRequest, DarkbloomError)
    assert {InsufficientBalance.code, DuplicateRequest.code} == {"insufficient_balance", "duplicate_request"}


def test_no_coordinator_module_imports_the_engine_or_mlx():
    for path in COORDINATOR.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            for name in names:
                assert not name.startswith(("agent.engine", "mlx")), f"{path.name} imports {name}"
