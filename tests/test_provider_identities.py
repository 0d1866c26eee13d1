"""Provider identities over the real websocket: bound ids, one live link each, revocation, and the shared token."""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import replace

import httpx
import pytest
from typer.testing import CliRunner
from websockets.exceptions import InvalidStatus

from agent.cli.main import app
from agent.coordinator.billing.accounts import Accounts
from agent.coordinator.billing.identities import create_identity, list_identities, revoke_identity
from agent.coordinator.billing.keys import create_key
from agent.coordinator.billing.store import SCHEMA_VERSION, connect, create_account
from tests.provider_support import FAST, GPT, Reply, ScriptedProvider, coordinator, entry_for, eventually, provider

MESSAGES = [{"role": "user", "content": "Say hello."}]


def cli(*args: str):
    return CliRunner().invoke(app, ["coordinator", "providers", *args])


def test_create_prints_the_credential_once_and_the_database_keeps_only_its_hash(tmp_path):
    db = tmp_path / "accounts.sqlite"
    created = cli("create", "studio-mac", "--db", str(db))
    assert created.exit_code == 0, created.output
    credential = created.output.strip().splitlines()[-1]
    assert credential.startswith("dbp_") and "prov-studio-mac" in created.output
    listed = cli("list", "--db", str(db))
    assert listed.exit_code == 0 and "prov-studio-mac" in listed.output and credential not in listed.output
    stored = connect(db).execute("SELECT * FROM providers").fetchall()
    assert len(stored) == 1 and not any(credential in str(value) for value in stored[0])


def test_names_are_unique_and_checked_and_revoking_an_unknown_identity_is_one_clear_error(tmp_path):
    db = str(tmp_path / "accounts.sqlite")
    assert cli("create", "mac-1", "--db", db).exit_code == 0
    again = cli("create", "mac-1", "--db", db)
    assert again.exit_code != 0 and "exists already" in again.output
    bad = cli("create", "Mac One!", "--db", db)
    assert bad.exit_code != 0 and "lowercase letters" in bad.output
    unknown = cli("revoke", "mac-2", "--db", db)
    assert unknown.exit_code != 0 and "no provider identity 'mac-2'" in unknown.output
    revoked = cli("revoke", "prov-mac-1", "--db", db)
    assert revoked.exit_code == 0 and list_identities(db)[0].is_revoked


def test_a_version_2_database_opens_and_gains_the_providers_table(tmp_path):
    db = tmp_path / "old.sqlite"
    old = sqlite3.connect(db, isolation_level=None)
    old.executescript(
        "CREATE TABLE accounts (id TEXT PRIMARY KEY, is_billed INTEGER NOT NULL DEFAULT 1, requests_per_minute"
        " INTEGER, output_tokens_per_minute INTEGER, created_at REAL NOT NULL, credit_limit_micros INTEGER NOT NULL"
        " DEFAULT 0); INSERT INTO accounts VALUES ('old', 1, NULL, NULL, 0, 0); PRAGMA user_version=2;")
    old.close()
    assert create_identity(db, "mac-1").info.name == "mac-1"
    assert connect(db).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def accounts_with_identities(tmp_path, *names: str) -> tuple[Accounts, dict[str, str]]:
    """Accounts with provider identities, and an unbilled consumer's API key under "consumer"."""
    db = tmp_path / "accounts.sqlite"
    credentials = {name: create_identity(db, name).credential for name in names}
    create_account(db, "free", is_billed=False)
    credentials["consumer"] = create_key(db, "free").key
    return Accounts.from_db(db, poll_interval_s=0.05), credentials


async def refused_status(server, token: str) -> int:
    with pytest.raises(InvalidStatus) as refused:
        await ScriptedProvider(server.ws_url, models=[entry_for(GPT)], token=token).start()
    return refused.value.response.status_code


async def test_an_identity_registers_under_its_stable_id_and_keeps_it_when_it_reconnects(tmp_path):
    accounts, credentials = accounts_with_identities(tmp_path, "mac-1")
    with accounts:
        async with coordinator(accounts=accounts) as server:
            first = await provider(server, GPT, token=credentials["mac-1"])
            assert first.provider_id == "prov-mac-1"
            await first.stop()
            await eventually(lambda: server.coordinator.router.registry.get("prov-mac-1") is None)
            again = await provider(server, GPT, token=credentials["mac-1"])
            assert again.provider_id == "prov-mac-1"
            assert server.coordinator.router.reputation.get("prov-mac-1").is_identity
            await again.stop()


async def test_a_second_connection_of_one_identity_replaces_the_first_and_its_request_is_retried(tmp_path):
    accounts, credentials = accounts_with_identities(tmp_path, "mac-1")
    with accounts:
        async with coordinator(accounts=accounts) as server:
            stuck = await provider(server, GPT, token=credentials["mac-1"], reply=Reply(first_token_delay_s=30))
            async with httpx.AsyncClient(base_url=server.base_url, timeout=10,
                                         headers={"Authorization": f"Bearer {credentials['consumer']}"}) as http:
                pending = asyncio.create_task(http.post("/v1/chat/completions",
                                                        json={"model": GPT.id, "messages": MESSAGES}))
                await eventually(lambda: len(stuck.received) == 1)
                fresh = await provider(server, GPT, token=credentials["mac-1"])
                response = await pending
            assert response.status_code == 200, response.text
            assert response.json()["choices"][0]["message"]["content"] == "Hello, world"
            assert fresh.received[0].request_id == stuck.received[0].request_id
            await asyncio.wait_for(stuck.ws.wait_closed(), 3)
            assert "replaced" in stuck.ws.close_reason
            assert server.coordinator.router.registry.get("prov-mac-1").is_connected
            for agent in (stuck, fresh):
                await agent.stop()


async def test_a_revoked_identity_is_refused_with_401_and_its_live_link_is_closed(tmp_path):
    accounts, credentials = accounts_with_identities(tmp_path, "mac-1")
    with accounts:
        async with coordinator(accounts=accounts) as server:
            live = await provider(server, GPT, token=credentials["mac-1"])
            revoke_identity(tmp_path / "accounts.sqlite", "mac-1")
            await asyncio.wait_for(live.ws.wait_closed(), 3)
            assert "revoked" in live.ws.close_reason
            assert server.coordinator.router.registry.get("prov-mac-1") is None
            assert await refused_status(server, credentials["mac-1"]) == 401
            await live.stop()


async def test_the_shared_token_admits_while_no_identity_exists_and_never_after(tmp_path):
    db = tmp_path / "accounts.sqlite"
    settings = replace(FAST, provider_token="shared")
    with Accounts.from_db(db, poll_interval_s=0.05) as accounts:
        async with coordinator(settings, accounts=accounts) as server:
            shared = await provider(server, GPT, token="shared")
            assert shared.provider_id.startswith("prov-1-")
            assert await refused_status(server, "wrong") == 401
            create_identity(db, "mac-1")
            await eventually(lambda: accounts.identities.num_identities == 1)
            assert await refused_status(server, "shared") == 401
            await shared.stop()


async def test_a_setting_requires_identities_even_before_any_exists():
    async with coordinator(replace(FAST, require_provider_identity=True)) as server:
        assert await refused_status(server, "anything") == 401


def test_provider_identities_stand_in_for_the_shared_token_on_a_public_address():
    from agent.coordinator.http.app import check_exposure
    from agent.errors import ConfigError

    check_exposure("0.0.0.0", is_open=False, provider_token=None, allow_open_remote=False,
                   has_provider_identities=True)
    with pytest.raises(ConfigError, match="or provider identities"):
        check_exposure("0.0.0.0", is_open=False, provider_token=None, allow_open_remote=False)


async def test_a_forged_or_malformed_credential_is_refused_with_401(tmp_path):
    accounts, credentials = accounts_with_identities(tmp_path, "mac-1")
    real = credentials["mac-1"]
    forged = real[: real.rindex("_") + 1] + "x" * 43  # the visible id is no secret; the rest is
    with accounts:
        async with coordinator(accounts=accounts) as server:
            for token in (forged, "dbp_", "dbp_zz_", "Bearer", "x" * 1000):
                assert await refused_status(server, token) == 401
            assert len(server.coordinator.router.registry) == 0
