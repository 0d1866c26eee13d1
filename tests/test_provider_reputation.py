"""Reputation over the real websocket: a sinkhole advertising 1000 GiB is found out, quarantined and shown."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import httpx
import openai
import pytest
from typer.testing import CliRunner

from agent.cli.main import app
from agent.coordinator.billing.accounts import Accounts
from agent.coordinator.billing.identities import create_identity, list_identities
from agent.coordinator.billing.keys import create_key
from agent.coordinator.billing.store import create_account
from tests.metrics_support import counted
from tests.provider_support import FAST, GIB, GPT, Reply, coordinator, eventually, provider

MESSAGES = [{"role": "user", "content": "Say hello."}]
SINKHOLE = Reply(first_token_delay_s=60)  # accepts, then never answers
QUICK = replace(FAST, first_token_timeout_s=0.3, quarantine_after_failures=2, unproven_max_in_flight=2,
                queue_max_wait_s=3.0)


def client(server, key: str = "local") -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=server.base_url + "/v1", api_key=key, max_retries=0)


async def ask(server, key: str = "local") -> str:
    result = await client(server, key).chat.completions.create(model=GPT.id, messages=MESSAGES)
    return result.choices[0].message.content


async def test_a_sinkhole_advertising_1000_gib_costs_a_bounded_few_requests_then_is_quarantined():
    async with coordinator(QUICK) as server:
        honest = await provider(server, GPT, reply=Reply(chunk_delay_s=0.2))
        assert await asyncio.gather(*(ask(server) for _ in range(4))) == ["Hello, world"] * 4  # proven now
        sinkhole = await provider(server, GPT, reply=SINKHOLE)
        await sinkhole.set_slot(GPT.id, budget_bytes=1000 * GIB)
        # Both are heard before the race: the sinkhole's 1000 GiB claim, and a heartbeat of the honest one's after
        # its four ended (it runs without a gate, so it says 0 rows; pending.py caps their credits at that).
        await honest.heartbeat()
        await eventually(lambda: honest.is_heard(server) and sinkhole.is_heard(server),
                         what="both providers' latest heartbeats at the coordinator")
        # Rows come first, so while the honest one is busy the idle-looking sinkhole is tried: up to its cap.
        answers = await asyncio.gather(*(ask(server) for _ in range(6)))
        assert answers == ["Hello, world"] * 6
        assert len(sinkhole.received) == 2  # its in-flight cap while unproven, each retried on the honest one
        router = server.coordinator.router
        assert router.reputation.quarantine_reason(sinkhole.provider_id).startswith("quarantined for 60 s")
        assert counted(server.coordinator.metrics, "darkbloom_provider_quarantines_total") == 1
        assert counted(server.coordinator.metrics, "darkbloom_providers_quarantined") == 1
        async with httpx.AsyncClient(base_url=server.base_url) as http:  # loopback: the operator's view
            details = (await http.get("/v1/models/capacity")).json()["data"][0]["details"]
        standing = {row["provider_id"]: (row["trust"], row["quarantine"]) for row in details}
        assert standing[sinkhole.provider_id][1].startswith("quarantined") and standing[honest.provider_id][1] is None
        assert standing[honest.provider_id][0] > 0.5 > standing[sinkhole.provider_id][0]
        assert await asyncio.gather(*(ask(server) for _ in range(3))) == ["Hello, world"] * 3
        assert len(sinkhole.received) == 2
        await honest.stop()
        await eventually(lambda: router.registry.get(honest.provider_id) is None)
        with pytest.raises(openai.APIStatusError) as refused:
            await ask(server)
        assert refused.value.status_code == 503 and "quarantined" in refused.value.message
        await sinkhole.stop()


async def test_a_proven_provider_is_not_outbid_by_a_newcomer_claiming_1000_gib_free():
    async with coordinator(QUICK) as server:
        honest = await provider(server, GPT)
        for _ in range(4):
            assert await ask(server) == "Hello, world"
        newcomer = await provider(server, GPT, reply=SINKHOLE)
        await newcomer.set_slot(GPT.id, budget_bytes=1000 * GIB)
        for _ in range(3):
            assert await ask(server) == "Hello, world"
        assert newcomer.received == [] and len(honest.received) == 7
        for agent in (honest, newcomer):
            await agent.stop()


async def test_only_an_operator_sees_each_providers_trust_and_quarantine_in_metrics():
    settings = replace(QUICK, operator_on_loopback=False, operator_token="op-secret")
    async with coordinator(settings) as server:
        agent = await provider(server, GPT)
        assert await ask(server) == "Hello, world"
        async with httpx.AsyncClient(base_url=server.base_url) as http:
            consumer = (await http.get("/metrics")).text
            operator = (await http.get("/metrics", headers={"x-darkbloom-operator": "op-secret"})).text
        assert "darkbloom_providers_quarantined 0.0" in consumer and agent.provider_id not in consumer
        assert f'darkbloom_provider_trust{{provider_id="{agent.provider_id}"}}' in operator
        assert f'darkbloom_provider_outcomes{{outcome="first_token",provider_id="{agent.provider_id}"}} 1.0' in operator
        await agent.stop()


async def test_an_identitys_reputation_is_saved_for_providers_list_and_restored_by_the_next_coordinator(tmp_path):
    db = tmp_path / "accounts.sqlite"
    credential = create_identity(db, "mac-1").credential
    create_account(db, "free", is_billed=False)
    key = create_key(db, "free").key
    settings = replace(QUICK, reputation_save_interval_s=0.05)
    with Accounts.from_db(db, poll_interval_s=0.05) as accounts:
        async with coordinator(settings, accounts=accounts) as server:
            agent = await provider(server, GPT, token=credential)
            assert await ask(server, key) == "Hello, world"
            await eventually(lambda: '"num_first_tokens":1' in (list_identities(db)[0].reputation or ""))
            await agent.stop()
    listed = CliRunner().invoke(app, ["coordinator", "providers", "list", "--db", str(db)])
    assert listed.exit_code == 0 and "prov-mac-1" in listed.output and "0.50" in listed.output
    with Accounts.from_db(db) as accounts:
        async with coordinator(settings, accounts=accounts) as server:
            assert server.coordinator.router.reputation.view("prov-mac-1").num_first_tokens == 1
