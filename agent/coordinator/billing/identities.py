"""Provider identities: a credential per provider, created once and shown once, stored hashed.

A credential reads `dbp_<id>_<secret>` (the agent sends it as its provider token, `Authorization:
Bearer`): `id` (8 hex digits) is the visible handle, `secret` 32 random bytes; the database keeps only
sha256(credential), for the reasons keys.py gives. Each identity has a unique `name` the operator picks,
and its provider id on the wire is `prov-<name>`: stable across reconnects, so what the provider has
shown (routing/reputation.py) follows it, and one live link per identity can be enforced.

`IdentityStore` is the coordinator's in-memory copy (no SQLite on the connect path), reloaded when the
database changes like the KeyStore; once the database holds any identity (revoked ones too) the shared
provider token no longer admits. The running coordinator writes each identity's reputation back
(`save_reputations`), so `providers list` shows it.

Public names: IDENTITY_PREFIX, ProviderIdentity, CreatedIdentity, IdentityNotFound, IdentityStore,
create_identity, list_identities, revoke_identity, save_reputations, provider_id_for.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from agent.coordinator.billing.store import connect
from agent.errors import DarkbloomError

IDENTITY_PREFIX = "dbp_"
ID_HEX_CHARS = 8
SECRET_BYTES = 32
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")


class IdentityNotFound(DarkbloomError):
    code = "provider_identity_not_found"


class BadIdentityName(DarkbloomError):
    code = "invalid_provider_name"


class ProviderIdentity(BaseModel):
    """An identity as `providers list` shows it: never its secret or its hash."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    name: str
    created_at: float
    revoked_at: float | None
    reputation: str | None = None  # JSON of routing.reputation.ReputationView, as the coordinator last wrote it
    reputation_at: float | None = None

    @property
    def provider_id(self) -> str:
        return provider_id_for(self.name)

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None


class CreatedIdentity(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    info: ProviderIdentity
    credential: str  # the plaintext: shown once, stored nowhere


def provider_id_for(name: str) -> str:
    return f"prov-{name}"


def hash_credential(credential: str) -> bytes:
    return hashlib.sha256(credential.encode()).digest()


def identity_id_of(credential: str) -> str | None:
    """The visible id inside a well-formed credential, else None."""
    if not credential.startswith(IDENTITY_PREFIX):
        return None
    identity_id, sep, secret = credential[len(IDENTITY_PREFIX):].partition("_")
    return identity_id if sep and len(identity_id) == ID_HEX_CHARS and secret else None


def create_identity(db_path: str | Path, name: str) -> CreatedIdentity:
    if not NAME_PATTERN.match(name):
        raise BadIdentityName(f"a provider name is 1-32 lowercase letters, digits and '-' (got {name!r})")
    conn = connect(db_path)
    try:
        if conn.execute("SELECT 1 FROM providers WHERE name = ?", (name,)).fetchone():
            raise BadIdentityName(f"a provider named {name!r} exists already: `providers list` shows it")
        while True:
            identity_id = secrets.token_hex(ID_HEX_CHARS // 2)
            credential = f"{IDENTITY_PREFIX}{identity_id}_{secrets.token_urlsafe(SECRET_BYTES)}"
            now = time.time()
            try:
                conn.execute("INSERT INTO providers (id, name, secret_sha256, created_at) VALUES (?, ?, ?, ?)",
                             (identity_id, name, hash_credential(credential), now))
                break
            except sqlite3.IntegrityError:
                continue  # the visible id collided: draw again (a name clash was ruled out above)
        return CreatedIdentity(info=ProviderIdentity(id=identity_id, name=name, created_at=now, revoked_at=None),
                               credential=credential)
    finally:
        conn.close()


_COLUMNS = "id, name, created_at, revoked_at, reputation, reputation_at"


def list_identities(db_path: str | Path) -> list[ProviderIdentity]:
    conn = connect(db_path)
    try:
        return [_identity(row) for row in conn.execute(f"SELECT {_COLUMNS} FROM providers ORDER BY created_at")]
    finally:
        conn.close()


def revoke_identity(db_path: str | Path, handle: str) -> ProviderIdentity:
    """Revoke by visible id, name, provider id or the credential itself. Revoking twice keeps the first time."""
    handle = identity_id_of(handle) or handle.removeprefix("prov-")
    conn = connect(db_path)
    try:
        conn.execute("UPDATE providers SET revoked_at = ? WHERE (id = ? OR name = ?) AND revoked_at IS NULL",
                     (time.time(), handle, handle))
        row = conn.execute(f"SELECT {_COLUMNS} FROM providers WHERE id = ? OR name = ?", (handle, handle)).fetchone()
    finally:
        conn.close()
    if row is None:
        raise IdentityNotFound(f"no provider identity {handle!r}: `providers list` shows them")
    return _identity(row)


def save_reputations(conn: sqlite3.Connection, rows: Iterable[tuple[str, str]]) -> None:
    """(name, reputation JSON) of live identities, written in one transaction."""
    now = time.time()
    conn.execute("BEGIN")
    try:
        conn.executemany("UPDATE providers SET reputation = ?, reputation_at = ? WHERE name = ?",
                         [(reputation, now, name) for name, reputation in rows])
        conn.execute("COMMIT")
    except sqlite3.Error:
        conn.execute("ROLLBACK")
        raise


def _identity(row: tuple) -> ProviderIdentity:
    return ProviderIdentity(id=row[0], name=row[1], created_at=row[2], revoked_at=row[3], reputation=row[4],
                            reputation_at=row[5])


@dataclass(frozen=True, slots=True)
class _Record:
    secret_sha256: bytes
    identity: ProviderIdentity


class IdentityStore:
    """Every identity, in memory: the live ones authenticate, revoked ones are remembered to say so."""

    def __init__(self) -> None:
        self._records: dict[str, _Record] = {}

    @classmethod
    def load(cls, conn: sqlite3.Connection) -> IdentityStore:
        store = cls()
        store.reload(conn)
        return store

    def reload(self, conn: sqlite3.Connection) -> None:
        rows = conn.execute(f"SELECT {_COLUMNS}, secret_sha256 FROM providers").fetchall()
        # Built aside and swapped in one assignment, so a concurrent authenticate sees old or new, never half.
        self._records = {row[0]: _Record(bytes(row[6]), _identity(row[:6])) for row in rows}

    @property
    def num_identities(self) -> int:
        return len(self._records)

    def authenticate(self, credential: str) -> ProviderIdentity | None:
        """The identity of a valid credential (revoked or not: the caller says why it refuses), else None."""
        record = self._records.get(identity_id_of(credential) or "")
        if record is None or not hmac.compare_digest(record.secret_sha256, hash_credential(credential)):
            return None
        return record.identity

    def is_live(self, identity_id: str) -> bool:
        record = self._records.get(identity_id)
        return record is not None and not record.identity.is_revoked

    def identities(self) -> list[ProviderIdentity]:
        return [record.identity for record in self._records.values()]
