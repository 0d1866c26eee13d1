"""API keys: shown once, stored hashed, checked from memory, and revocable while the coordinator runs."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from agent.coordinator.billing.accounts import Accounts
from agent.coordinator.billing.keys import KEY_PREFIX, KeyNotFound, KeyStore, create_key, list_keys, revoke_key
from agent.coordinator.billing.store import connect, list_accounts


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "keys.sqlite"


def store(db: Path) -> KeyStore:
    conn = connect(db)
    try:
        return KeyStore.load(conn)
    finally:
        conn.close()


def test_a_created_key_authenticates_as_its_account(db):
    created = create_key(db, "alice", "laptop")
    assert created.key.startswith(f"{KEY_PREFIX}{created.info.id}_")
    account = store(db).authenticate(created.key)
    assert account is not None and account.id == "alice"


def test_creating_a_key_creates_its_account_and_every_key_is_different(db):
    keys = {create_key(db, "alice").key for _ in range(20)}
    assert len(keys) == 20
    assert [a.id for a in list_accounts(db)] == ["alice"]


def test_a_revoked_key_no_longer_authenticates(db):
    created = create_key(db, "alice")
    other = create_key(db, "alice")
    info = revoke_key(db, created.info.id)
    assert info.is_revoked
    keys = store(db)
    assert keys.authenticate(created.key) is None
    assert keys.authenticate(other.key) is not None


def test_a_key_revoked_from_the_cli_stops_working_on_a_running_coordinator(db):
    created = create_key(db, "alice")
    with Accounts.from_db(db) as accounts:
        assert accounts.authenticate(created.key) is not None
        revoke_key(db, created.key)  # the whole key works as well as its id
        assert accounts.flush()  # the writer noticed the other process's commit and reloaded
        assert accounts.authenticate(created.key) is None
        late = create_key(db, "bob")
        assert accounts.flush()
        assert accounts.authenticate(late.key).id == "bob"


def test_listing_keys_shows_no_secret_and_no_hash(db):
    created = create_key(db, "alice", "ci")
    listed = list_keys(db)
    assert [k.id for k in listed] == [created.info.id]
    dumped = listed[0].model_dump_json()
    secret = created.key.split("_", 2)[2]
    assert secret not in dumped and "sha" not in dumped and set(listed[0].model_dump()) == {
        "id", "account_id", "name", "created_at", "revoked_at"}


def test_the_database_stores_a_hash_and_never_the_key(db):
    created = create_key(db, "alice")
    stored = connect(db).execute("SELECT key_sha256 FROM api_keys").fetchone()[0]
    assert stored == hashlib.sha256(created.key.encode()).digest()
    assert created.key.encode() not in stored
    for path in db.parent.glob(db.name + "*"):  # the database, its WAL and shared memory files
        assert created.key.split("_", 2)[2].encode() not in path.read_bytes()


@pytest.mark.parametrize("presented", [None, "", "sk-something", "dbk_", "dbk_zz_", "Bearer dbk_1234"])
def test_missing_and_malformed_keys_do_not_authenticate(db, presented):
    create_key(db, "alice")
    assert store(db).authenticate(presented) is None


def test_a_key_with_a_known_id_and_a_wrong_secret_does_not_authenticate(db):
    created = create_key(db, "alice")
    forged = created.key[:-4] + ("AAAA" if not created.key.endswith("AAAA") else "BBBB")
    assert store(db).authenticate(forged) is None


def test_revoking_an_unknown_key_says_how_to_find_the_ids(db):
    with pytest.raises(KeyNotFound) as refused:
        revoke_key(db, "00000000")
    assert refused.value.code == "key_not_found" and "keys list" in str(refused.value)


def test_revoking_twice_keeps_the_first_revocation_time(db):
    created = create_key(db, "alice")
    first = revoke_key(db, created.info.id)
    assert revoke_key(db, created.info.id).revoked_at == first.revoked_at
