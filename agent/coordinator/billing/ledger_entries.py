"""Ledger entries, and what reads or writes them outside the coordinator's writer thread.

A ledger entry is one signed amount for one account: a settlement (usage, < 0) or a credit (> 0). With
its kind, the request id is the idempotency key (UNIQUE (request_id, kind) in the table, store.py).
Balances are SUMs over the entries. The CLI credits an account here directly; a running coordinator
notices within a poll interval (ledger.py).

Public names: LedgerEntry, EntryKind, INSERT_ENTRY, entry_row, load_balances,
credit_account, ledger_sum, usage_by_model.
"""

from __future__ import annotations

import sqlite3
import time
from enum import StrEnum
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from agent.coordinator.billing.store import connect, get_account

class EntryKind(StrEnum):
    USAGE = "usage"  # a settlement: amount < 0
    CREDIT = "credit"  # money in: amount > 0


class LedgerEntry(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    account_id: str = Field(min_length=1)
    kind: EntryKind
    amount_micros: int
    request_id: str | None = None  # with kind, the idempotency key
    model: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    note: str | None = None
    created_at: float = Field(default_factory=time.time)


INSERT_ENTRY = ("INSERT OR IGNORE INTO ledger (account_id, kind, request_id, amount_micros, model, prompt_tokens,"
                " completion_tokens, note, source, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")


def entry_row(entry: LedgerEntry, source: str) -> tuple:
    return (entry.account_id, entry.kind.value, entry.request_id, entry.amount_micros, entry.model,
            entry.prompt_tokens, entry.completion_tokens, entry.note, source, entry.created_at)


def load_balances(conn: sqlite3.Connection) -> tuple[dict[str, int], int]:
    """Every account's balance (the SUM of its entries) and the last sequence number read."""
    balances = dict(conn.execute("SELECT account_id, SUM(amount_micros) FROM ledger GROUP BY account_id"))
    last_seq = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM ledger").fetchone()[0]
    return balances, last_seq


def ledger_sum(db_path: str | Path, account_id: str, kind: EntryKind | None = None) -> int:
    conn = connect(db_path)
    try:
        sql, args = "SELECT COALESCE(SUM(amount_micros), 0) FROM ledger WHERE account_id = ?", [account_id]
        if kind is not None:
            sql, args = sql + " AND kind = ?", [*args, kind.value]
        return conn.execute(sql, args).fetchone()[0]
    finally:
        conn.close()


def credit_account(db_path: str | Path, account_id: str, amount_micros: int, *, note: str | None = None,
                   credit_id: str | None = None) -> bool:
    """Add credit from outside the coordinator (the CLI); a repeated `credit_id` is credited once.
    Returns whether the entry was written. A running coordinator picks it up within a poll interval."""
    if amount_micros <= 0:
        raise ValueError("a credit must be a positive number of micro-units")
    get_account(db_path, account_id)  # raises UnknownAccount
    entry = LedgerEntry(account_id=account_id, kind=EntryKind.CREDIT, amount_micros=amount_micros,
                        request_id=credit_id, note=note)
    conn = connect(db_path)
    try:
        return conn.execute(INSERT_ENTRY, entry_row(entry, "cli")).rowcount == 1
    finally:
        conn.close()


def usage_by_model(db_path: str | Path, account_id: str) -> dict[str, tuple[int, int, int, int]]:
    """Per model, what the account's written settlements add up to: (requests, prompt tokens, completion
    tokens, cost in micro-units)."""
    conn = connect(db_path)
    try:
        rows = conn.execute("SELECT COALESCE(model, ''), COUNT(*), COALESCE(SUM(prompt_tokens), 0), "
                            "COALESCE(SUM(completion_tokens), 0), -COALESCE(SUM(amount_micros), 0) FROM ledger "
                            "WHERE account_id = ? AND kind = ? GROUP BY model ORDER BY model",
                            (account_id, EntryKind.USAGE.value))
        return {model: (n, prompt, completion, cost) for model, n, prompt, completion, cost in rows}
    finally:
        conn.close()
