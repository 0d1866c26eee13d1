"""The append-only SQLite ledger: restarts restore balances, settlement stays idempotent, writes batch."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from agent.coordinator.billing.accounts import Accounts, SettleStatus
from agent.coordinator.billing.keys import create_key
from agent.coordinator.billing.ledger import EntryKind, LedgerEntry, SqliteLedger, credit_account, ledger_sum
from agent.coordinator.billing.store import Account, UnknownAccount, connect

MODEL = "gemma-4-26b"
ALICE = Account("alice")


class Recorder:
    """A LedgerListener that remembers what it was told."""

    def __init__(self) -> None:
        self.refused: list[LedgerEntry] = []
        self.external: list[tuple[str, int]] = []
        self.num_changes = 0

    def on_refused(self, entry: LedgerEntry) -> None:
        self.refused.append(entry)

    def on_external(self, account_id: str, amount_micros: int) -> None:
        self.external.append((account_id, amount_micros))

    def on_changed(self, conn: sqlite3.Connection) -> None:
        self.num_changes += 1


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "ledger.sqlite"
    create_key(path, "alice")
    credit_account(path, "alice", 5_000_000, note="top-up")
    return path


def run_requests(accounts: Accounts, ids: list[str], completion_tokens: int = 100) -> int:
    total = 0
    for request_id in ids:
        accounts.admit(ALICE, request_id, model=MODEL, prompt_tokens=50, max_tokens=256)
        total += accounts.settle(request_id, prompt_tokens=50, completion_tokens=completion_tokens).cost_micros
    return total


def test_the_database_runs_in_wal_mode_with_synchronous_normal(db):
    conn = connect(db)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    conn.close()


def test_reopening_the_database_restores_every_balance(db):
    with Accounts.from_db(db) as accounts:
        spent = run_requests(accounts, [f"r{i}" for i in range(20)])
        balance = accounts.balance_micros("alice")
    assert balance == 5_000_000 - spent
    with Accounts.from_db(db) as reopened:
        assert reopened.balance_micros("alice") == balance == ledger_sum(db, "alice")


def test_a_settlement_repeated_after_a_restart_is_not_charged_twice(db):
    with Accounts.from_db(db) as accounts:
        spent = run_requests(accounts, ["r1"])
    with Accounts.from_db(db) as reopened:
        run_requests(reopened, ["r1"])  # its memory of r1 is gone; the ledger's UNIQUE (request_id, kind) is not
        assert reopened.flush()
        assert reopened.balance_micros("alice") == 5_000_000 - spent == ledger_sum(db, "alice")
    conn = connect(db)
    assert conn.execute("SELECT COUNT(*) FROM ledger WHERE request_id = 'r1'").fetchone()[0] == 1


def test_closing_writes_everything_queued(db):
    accounts = Accounts.from_db(db)
    spent = run_requests(accounts, [f"r{i}" for i in range(1000)], completion_tokens=3)
    accounts.close()
    assert ledger_sum(db, "alice", EntryKind.USAGE) == -spent
    assert connect(db).execute("SELECT COUNT(*) FROM ledger WHERE kind = 'usage'").fetchone()[0] == 1000


def test_each_settlement_is_one_inserted_row_and_no_balance_row_exists(db):
    with Accounts.from_db(db) as accounts:
        run_requests(accounts, ["a", "b", "c"])
    conn = connect(db)
    assert conn.execute("SELECT COUNT(*) FROM ledger").fetchone()[0] == 1 + 3  # the credit, three settlements
    columns = {row[1] for table in ("accounts", "api_keys") for row in conn.execute(f"PRAGMA table_info({table})")}
    assert not any("balance" in column for column in columns)


def test_the_ledger_refuses_updates_and_deletes(db):
    conn = connect(db)
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("UPDATE ledger SET amount_micros = 0")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("DELETE FROM ledger")


def test_entries_appended_together_are_committed_in_few_transactions(db):
    ledger = SqliteLedger(db)
    ledger.start(Recorder())
    for i in range(500):
        ledger.append(LedgerEntry(account_id="alice", kind=EntryKind.USAGE, amount_micros=-1, request_id=f"r{i}"))
    assert ledger.flush()
    assert ledger.num_written == 500 and ledger.num_commits < 50
    ledger.close()


def test_the_writer_reports_an_entry_the_unique_constraint_refused(db):
    ledger, recorder = SqliteLedger(db), Recorder()
    ledger.start(recorder)
    entry = LedgerEntry(account_id="alice", kind=EntryKind.USAGE, amount_micros=-7, request_id="same")
    ledger.append(entry)
    ledger.append(entry)
    assert ledger.flush()
    assert recorder.refused == [entry] and ledger.num_written == 1
    ledger.close()


def test_a_credit_added_from_the_cli_reaches_a_running_coordinator(db):
    with Accounts.from_db(db) as accounts:
        credit_account(db, "alice", 1_000_000, credit_id="invoice-1")
        assert credit_account(db, "alice", 1_000_000, credit_id="invoice-1") is False  # credited once
        assert accounts.flush()  # a flush also reads other processes' commits
        assert accounts.balance_micros("alice") == 6_000_000


def test_a_credit_for_an_unknown_account_is_refused(db):
    with pytest.raises(UnknownAccount) as refused:
        credit_account(db, "nobody", 1)
    assert refused.value.code == "account_not_found"


def test_a_credit_in_process_survives_a_restart_and_a_repeated_credit_id_counts_once(db):
    with Accounts.from_db(db) as accounts:
        accounts.credit("alice", 250, credit_id="gift")
        accounts.credit("alice", 250, credit_id="gift")
        assert accounts.flush()
        assert accounts.balance_micros("alice") == 5_000_250
    with Accounts.from_db(db) as reopened:
        assert reopened.balance_micros("alice") == 5_000_250


def test_a_late_settlement_is_recorded_once_across_a_restart(db):
    with Accounts.from_db(db) as accounts:
        accounts.admit(ALICE, "r1", model=MODEL, prompt_tokens=50, max_tokens=256)
        accounts.release("r1", "client_disconnect")
        late = accounts.settle("r1", prompt_tokens=50, completion_tokens=40)
        assert late.status is SettleStatus.LATE
    assert ledger_sum(db, "alice", EntryKind.USAGE) == -late.cost_micros
