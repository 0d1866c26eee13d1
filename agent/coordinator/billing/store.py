"""The accounts database: one SQLite file holding accounts, API keys (hashed) and the ledger.

    accounts  id, is_billed, requests_per_minute, output_tokens_per_minute, created_at,
              credit_limit_micros (how far below zero it may go; 0: holds cover the worst case)
    api_keys  id (visible), account_id, name, key_sha256, created_at, revoked_at
    providers id (visible), name (unique), secret_sha256, created_at, revoked_at,
              reputation (JSON, written by the running coordinator), reputation_at
    ledger    seq, account_id, kind (usage | credit), request_id, amount_micros (signed), model,
              prompt_tokens, completion_tokens, note, source, created_at;  UNIQUE (request_id, kind)

The ledger is append-only (triggers refuse UPDATE and DELETE): a balance is the SUM of an account's
entries, never a row that every request rewrites (DESIGN.md §1, lesson 1). WAL lets the CLI and the
running coordinator read while the ledger writer appends.

Schema versions: 1 (the first), 2 (accounts.credit_limit_micros, added to a version 1 file in place),
3 (the providers table: provider identities, billing/identities.py).

Public names: Account, UnknownAccount, connect, create_account, get_account, list_accounts, set_credit_limit.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from agent.errors import DarkbloomError

SCHEMA_VERSION = 3
BUSY_TIMEOUT_MS = 5000

SCHEMA = """
CREATE TABLE IF NOT EXISTS accounts (
    id TEXT PRIMARY KEY,
    is_billed INTEGER NOT NULL DEFAULT 1,
    requests_per_minute INTEGER,
    output_tokens_per_minute INTEGER,
    created_at REAL NOT NULL,
    credit_limit_micros INTEGER NOT NULL DEFAULT 0 CHECK (credit_limit_micros >= 0)
);
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts(id),
    name TEXT,
    key_sha256 BLOB NOT NULL,
    created_at REAL NOT NULL,
    revoked_at REAL
);
CREATE TABLE IF NOT EXISTS providers (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    secret_sha256 BLOB NOT NULL,
    created_at REAL NOT NULL,
    revoked_at REAL,
    reputation TEXT,
    reputation_at REAL
);
CREATE TABLE IF NOT EXISTS ledger (
    seq INTEGER PRIMARY KEY,
    account_id TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('usage', 'credit')),
    request_id TEXT,
    amount_micros INTEGER NOT NULL,
    model TEXT,
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    note TEXT,
    source TEXT NOT NULL,
    created_at REAL NOT NULL,
    UNIQUE (request_id, kind)
);
CREATE INDEX IF NOT EXISTS ledger_by_account ON ledger (account_id);
CREATE TRIGGER IF NOT EXISTS ledger_no_update BEFORE UPDATE ON ledger
    BEGIN SELECT RAISE(ABORT, 'the ledger is append-only'); END;
CREATE TRIGGER IF NOT EXISTS ledger_no_delete BEFORE DELETE ON ledger
    BEGIN SELECT RAISE(ABORT, 'the ledger is append-only'); END;
"""


class UnknownAccount(DarkbloomError):
    code = "account_not_found"


@dataclass(frozen=True, slots=True)
class Account:
    """Who a key belongs to. Limits of None mean the coordinator's defaults."""

    id: str
    is_billed: bool = True
    requests_per_minute: int | None = None
    output_tokens_per_minute: int | None = None
    credit_limit_micros: int = 0  # how far below zero its balance may go (holds.py)


def connect(db_path: str | Path, *, check_same_thread: bool = True) -> sqlite3.Connection:
    """Open (creating if needed) the accounts database in WAL mode with synchronous=NORMAL."""
    path = Path(db_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # isolation_level=None: we issue BEGIN/COMMIT ourselves, so a batch is exactly one transaction.
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=check_same_thread,
                           timeout=BUSY_TIMEOUT_MS / 1000)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version < SCHEMA_VERSION:
        # A version 1 file keeps its accounts table (CREATE IF NOT EXISTS): the new column is added to it.
        # A version 2 file gains the providers table from SCHEMA's CREATE IF NOT EXISTS.
        migrate = MIGRATION_TO_2 if version == 1 else ""
        conn.executescript(f"BEGIN; {SCHEMA} {migrate} PRAGMA user_version={SCHEMA_VERSION}; COMMIT;")
    return conn


MIGRATION_TO_2 = ("ALTER TABLE accounts ADD COLUMN credit_limit_micros INTEGER NOT NULL DEFAULT 0"
                  " CHECK (credit_limit_micros >= 0);")


def create_account(
    db_path: str | Path,
    account_id: str,
    *,
    is_billed: bool = True,
    requests_per_minute: int | None = None,
    output_tokens_per_minute: int | None = None,
) -> Account:
    """Create an account, or return the existing one unchanged."""
    if not account_id or not account_id.strip():
        raise UnknownAccount("an account id must not be empty")
    conn = connect(db_path)
    try:
        conn.execute(
            "INSERT OR IGNORE INTO accounts (id, is_billed, requests_per_minute, output_tokens_per_minute, created_at)"
            " VALUES (?, ?, ?, ?, ?)",
            (account_id, int(is_billed), requests_per_minute, output_tokens_per_minute, time.time()),
        )
        return _get(conn, account_id)
    finally:
        conn.close()


def set_credit_limit(db_path: str | Path, account_id: str, credit_limit_micros: int) -> Account:
    """How far below zero the account may go (0: every hold covers its worst case). Not a ledger entry."""
    if credit_limit_micros < 0:
        raise ValueError("a credit limit is zero or more micro-units")
    conn = connect(db_path)
    try:
        conn.execute("UPDATE accounts SET credit_limit_micros = ? WHERE id = ?", (credit_limit_micros, account_id))
        return _get(conn, account_id)
    finally:
        conn.close()


def get_account(db_path: str | Path, account_id: str) -> Account:
    conn = connect(db_path)
    try:
        return _get(conn, account_id)
    finally:
        conn.close()


def list_accounts(db_path: str | Path) -> list[Account]:
    conn = connect(db_path)
    try:
        return [_account(row) for row in conn.execute(f"SELECT {_ACCOUNT_COLUMNS} FROM accounts ORDER BY id")]
    finally:
        conn.close()


_ACCOUNT_COLUMNS = "id, is_billed, requests_per_minute, output_tokens_per_minute, credit_limit_micros"


def _get(conn: sqlite3.Connection, account_id: str) -> Account:
    row = conn.execute(f"SELECT {_ACCOUNT_COLUMNS} FROM accounts WHERE id = ?", (account_id,)).fetchone()
    if row is None:
        raise UnknownAccount(f"no account {account_id!r}: create it first (or create a key for it)")
    return _account(row)


def _account(row: tuple) -> Account:
    return Account(row[0], bool(row[1]), row[2], row[3], row[4])
