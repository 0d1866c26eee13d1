"""API keys: created once and shown once, stored hashed, checked from memory.

A key reads `dbk_<id>_<secret>`: `id` (8 hex digits) is the visible handle that `list` shows and
`revoke` takes; `secret` is 32 random bytes (256 bits) from the OS. The database keeps only
sha256(key). A plain fast hash is enough here, unlike for passwords: a slow hash (scrypt, argon2)
only protects guessable secrets, and nobody can search a 2²⁵⁶ space, so a stolen database reveals no
key; a slow hash would only add milliseconds to every cache miss.

`KeyStore.authenticate` runs per request from an in-memory map (no SQLite on the request path): it
finds the record by the visible id and compares hashes with hmac.compare_digest (constant time). The
map is reloaded when the database changes (the ledger writer notices other processes' commits), so a
key revoked from the CLI stops working on a running coordinator within a poll interval.

Public names: KEY_PREFIX, KeyInfo, CreatedKey, KeyNotFound, KeyStore, create_key, list_keys, revoke_key.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from agent.coordinator.billing.store import Account, connect, create_account
from agent.errors import DarkbloomError

KEY_PREFIX = "dbk_"
KEY_ID_HEX_CHARS = 8
SECRET_BYTES = 32


class KeyNotFound(DarkbloomError):
    code = "key_not_found"


class KeyInfo(BaseModel):
    """A key as `keys list` shows it: never its secret or its hash."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    account_id: str
    name: str | None
    created_at: float
    revoked_at: float | None

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None


class CreatedKey(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    info: KeyInfo
    key: str  # the plaintext: shown once, stored nowhere


def hash_key(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def key_id_of(key: str) -> str | None:
    """The visible id inside a well-formed key, else None."""
    if not key.startswith(KEY_PREFIX):
        return None
    key_id, sep, secret = key[len(KEY_PREFIX):].partition("_")
    if not sep or len(key_id) != KEY_ID_HEX_CHARS or not secret:
        return None
    return key_id


def create_key(db_path: str | Path, account: str, name: str | None = None) -> CreatedKey:
    """A new key for `account` (created if it does not exist yet); the only time the key is visible."""
    create_account(db_path, account)
    conn = connect(db_path)
    try:
        while True:
            key_id = secrets.token_hex(KEY_ID_HEX_CHARS // 2)
            key = f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(SECRET_BYTES)}"
            now = time.time()
            try:
                conn.execute("INSERT INTO api_keys (id, account_id, name, key_sha256, created_at)"
                             " VALUES (?, ?, ?, ?, ?)", (key_id, account, name, hash_key(key), now))
                break
            except sqlite3.IntegrityError:
                continue  # the 32-bit visible id collided with an existing key: draw again
        return CreatedKey(info=KeyInfo(id=key_id, account_id=account, name=name, created_at=now, revoked_at=None),
                          key=key)
    finally:
        conn.close()


def list_keys(db_path: str | Path, *, account: str | None = None) -> list[KeyInfo]:
    conn = connect(db_path)
    try:
        sql = "SELECT id, account_id, name, created_at, revoked_at FROM api_keys"
        rows = conn.execute(sql + " WHERE account_id = ? ORDER BY created_at", (account,)) if account \
            else conn.execute(sql + " ORDER BY created_at")
        return [KeyInfo(id=r[0], account_id=r[1], name=r[2], created_at=r[3], revoked_at=r[4]) for r in rows]
    finally:
        conn.close()


def revoke_key(db_path: str | Path, key_id: str) -> KeyInfo:
    """Revoke by visible id (a whole key is accepted too). Revoking twice keeps the first time."""
    key_id = key_id_of(key_id) or key_id
    conn = connect(db_path)
    try:
        conn.execute("UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", (time.time(), key_id))
        row = conn.execute("SELECT id, account_id, name, created_at, revoked_at FROM api_keys WHERE id = ?",
                           (key_id,)).fetchone()
    finally:
        conn.close()
    if row is None:
        raise KeyNotFound(f"no key with id {key_id!r}: `keys list` shows the ids")
    return KeyInfo(id=row[0], account_id=row[1], name=row[2], created_at=row[3], revoked_at=row[4])


@dataclass(frozen=True, slots=True)
class _KeyRecord:
    key_sha256: bytes
    account: Account


class KeyStore:
    """Live keys and their accounts, in memory."""

    def __init__(self, records: dict[str, _KeyRecord] | None = None) -> None:
        self._records = records or {}

    @classmethod
    def load(cls, conn: sqlite3.Connection) -> KeyStore:
        store = cls()
        store.reload(conn)
        return store

    def reload(self, conn: sqlite3.Connection) -> None:
        rows = conn.execute(
            "SELECT k.id, k.key_sha256, a.id, a.is_billed, a.requests_per_minute, a.output_tokens_per_minute,"
            " a.credit_limit_micros"
            " FROM api_keys k JOIN accounts a ON a.id = k.account_id WHERE k.revoked_at IS NULL"
        )
        # Built aside and swapped in one assignment, so a concurrent authenticate sees old or new, never half.
        self._records = {r[0]: _KeyRecord(bytes(r[1]), Account(r[2], bool(r[3]), r[4], r[5], r[6])) for r in rows}

    @property
    def num_keys(self) -> int:
        return len(self._records)

    def authenticate(self, key: str | None) -> Account | None:
        """The key's account, or None for a missing, malformed, unknown, revoked or wrong key."""
        if not key:
            return None
        record = self._records.get(key_id_of(key) or "")
        # The visible id is no secret (it is printed by `keys list`), so looking it up openly leaks nothing.
        if record is None or not hmac.compare_digest(record.key_sha256, hash_key(key)):
            return None
        return record.account
