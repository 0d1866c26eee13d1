"""Holds that cannot be outrun: no account ends below −credit limit under any interleaving (holds.py)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.coordinator.billing.accounts import Accounts, InsufficientBalance
from agent.coordinator.billing.holds import Hold, HoldBook
from agent.coordinator.billing.keys import create_key
from agent.coordinator.billing.pricing import DEFAULT_PRICES
from agent.coordinator.billing.store import SCHEMA_VERSION, connect, get_account, set_credit_limit

MODEL = "gpt-oss-20b"
ACCOUNTS = ("a", "b")

step = st.one_of(
    st.tuples(st.just("open"), st.sampled_from(ACCOUNTS), st.integers(0, 5_000), st.integers(0, 1.0e4)),
    st.tuples(st.just("settle"), st.integers(0, 40), st.floats(0, 1.5)),  # 1.5: a settle above its bound
    st.tuples(st.just("release"), st.integers(0, 40)),
    st.tuples(st.just("late"), st.integers(0, 40), st.floats(0, 1.0)),  # after its release
)


@settings(max_examples=300, deadline=None)
@given(balances=st.tuples(st.integers(0, 20_000), st.integers(0, 20_000)),
       credit_limits=st.tuples(st.sampled_from([0, 0, 1_000, 10_000]), st.sampled_from([0, 5_000])),
       steps=st.lists(step, max_size=80))
def test_no_account_ends_below_minus_its_credit_limit_under_any_interleaving(balances, credit_limits, steps):
    book = HoldBook(dict(zip(ACCOUNTS, balances, strict=True)))
    limit = dict(zip(ACCOUNTS, credit_limits, strict=True))
    opened: list[Hold] = []
    for action in steps:
        if action[0] == "open":
            _, account, expected, extra = action
            hold = Hold(f"r{len(opened)}", account, MODEL, 0, 0, expected, True, expected + int(extra), limit[account])
            if book.refusal(hold) is None:
                book.hold(hold)
                opened.append(hold)
        elif opened and action[0] in ("settle", "late"):
            hold = opened[action[1] % len(opened)]
            if action[0] == "late":
                book.release(hold.request_id, "client_disconnect")
            book.settle(hold.request_id, int(hold.bound_micros * action[2]))
        elif opened:
            book.release(opened[action[1] % len(opened)].request_id, "timeout")
        for account in ACCOUNTS:
            assert book.balance_micros(account) - book.exposure_micros(account) >= -limit[account]
            assert book.balance_micros(account) >= -limit[account]


def test_an_account_without_a_credit_line_holds_the_worst_case_and_a_settle_within_it_never_overdraws():
    book = HoldBook({"a": 1_000})
    first = Hold("r1", "a", MODEL, 0, 0, 100, True, 900)
    assert book.refusal(first) is None
    book.hold(first)
    assert book.available_micros("a") == 100  # the bound is held, not the expected cost
    refusal = book.refusal(Hold("r2", "a", MODEL, 0, 0, 100, True, 900))
    assert isinstance(refusal, InsufficientBalance) and "could cost up to 0.000900" in str(refusal)
    assert book.settle("r1", 900).balance_micros == 100


def test_a_settle_above_the_bound_is_cut_to_what_the_credit_line_allows_and_says_so():
    book = HoldBook({"a": 100})
    book.hold(Hold("r1", "a", MODEL, 0, 0, 50, True, 100))
    settled = book.settle("r1", 250)
    assert (settled.cost_micros, settled.forgiven_micros, settled.balance_micros) == (100, 150, 0)


def test_a_tiny_balance_with_a_huge_max_tokens_is_capped_to_what_it_covers_and_never_ends_below_zero(tmp_path):
    db = tmp_path / "accounts.sqlite"
    created = create_key(db, "poor")
    with Accounts.from_db(db) as accounts:
        account = accounts.authenticate(created.key)
        accounts.credit("poor", 1_000)  # $0.001
        admission = accounts.admit(account, "r1", model=MODEL, prompt_tokens=200, max_tokens=120_000,
                                   max_output_tokens=120_000, can_cap=True)
        assert admission.is_capped and 16 <= admission.max_tokens < 120_000
        assert admission.bound_cost_micros <= 1_000
        assert DEFAULT_PRICES.cost_micros(MODEL, 200, admission.max_tokens + 1) > 1_000  # the largest that fits
        settled = accounts.settle("r1", prompt_tokens=200, completion_tokens=admission.max_tokens)
        assert settled.forgiven_micros == 0 and accounts.balance_micros("poor") >= 0


def test_a_balance_below_the_smallest_cap_is_refused_naming_what_the_request_could_cost(tmp_path):
    db = tmp_path / "accounts.sqlite"
    created = create_key(db, "poorer")
    with Accounts.from_db(db) as accounts:
        account = accounts.authenticate(created.key)
        accounts.credit("poorer", 11)
        try:
            accounts.admit(account, "r1", model=MODEL, prompt_tokens=200, max_tokens=1_000, can_cap=True)
        except InsufficientBalance as refused:
            assert "could cost up to 0.000210" in str(refused) and accounts.num_holds == 0
        else:
            raise AssertionError("a balance covering fewer than 16 tokens was admitted")


def test_a_version_1_database_gains_a_zero_credit_limit_and_keeps_its_accounts(tmp_path):
    db = tmp_path / "old.sqlite"
    old = sqlite3.connect(db, isolation_level=None)
    old.executescript(
        "CREATE TABLE accounts (id TEXT PRIMARY KEY, is_billed INTEGER NOT NULL DEFAULT 1, requests_per_minute"
        " INTEGER, output_tokens_per_minute INTEGER, created_at REAL NOT NULL);"
        " INSERT INTO accounts VALUES ('old', 1, 5, NULL, 0); PRAGMA user_version=1;")
    old.close()
    assert get_account(db, "old").credit_limit_micros == 0
    assert set_credit_limit(db, "old", 2_500_000).credit_limit_micros == 2_500_000
    assert connect(db).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert get_account(Path(db), "old").requests_per_minute == 5


def test_the_cli_sets_a_credit_limit_that_a_running_coordinator_uses_for_the_accounts_next_request(tmp_path):
    from typer.testing import CliRunner

    from agent.cli.main import app

    db = tmp_path / "accounts.sqlite"
    created = create_key(db, "firm")
    result = CliRunner().invoke(app, ["coordinator", "credit-limit", "firm", "2.50", "--db", str(db)])
    assert result.exit_code == 0, result.output
    assert "2.500000" in result.output and get_account(db, "firm").credit_limit_micros == 2_500_000
    with Accounts.from_db(db) as accounts:
        assert accounts.authenticate(created.key).credit_limit_micros == 2_500_000
    unknown = CliRunner().invoke(app, ["coordinator", "credit-limit", "nobody", "1", "--db", str(db)])
    assert unknown.exit_code != 0 and "no account 'nobody'" in unknown.output
