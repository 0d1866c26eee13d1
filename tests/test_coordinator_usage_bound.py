"""Issue 11 point 1: a provider's usage claim is bounded by what the coordinator saw delivered.

Each test is an attack by a scripted provider over the real websocket, against a coordinator with keys and a
real SQLite ledger, driven by the official openai SDK or httpx over real HTTP.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import httpx
import openai
import pytest

from agent.coordinator.billing.accounts import Accounts
from agent.coordinator.billing.keys import create_key
from agent.coordinator.billing.ledger import EntryKind, ledger_sum
from agent.coordinator.billing.pricing import DEFAULT_PRICES
from agent.coordinator.routing.estimate import estimate_prompt
from agent.coordinator.settings import CoordinatorSettings
from agent.wire.chat_body import ChatCompletionBody
from tests.provider_support import GPT, Reply, coordinator, eventually, provider

MESSAGES = [{"role": "user", "content": "Say hello"}]
ESTIMATE = estimate_prompt(ChatCompletionBody(model=GPT.id, messages=MESSAGES))
HUGE = 2**31


def billed(tmp_path: Path) -> tuple[Path, str, Accounts]:
    db = tmp_path / "accounts.sqlite"
    key = create_key(db, "alice").key
    accounts = Accounts.from_db(db)
    accounts.credit("alice", 100_000_000)
    return db, key, accounts


def usage_rows(db: Path) -> list[tuple[int, int]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute("SELECT prompt_tokens, completion_tokens FROM ledger WHERE kind = ?",
                            [EntryKind.USAGE.value]).fetchall()
    finally:
        conn.close()


def client(server, key: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{server.base_url}/v1", api_key=key, max_retries=0)


async def charged(db: Path, accounts: Accounts) -> tuple[int, int]:
    assert accounts.flush()
    rows = usage_rows(db)
    assert len(rows) == 1, rows
    prompt, completion = rows[0]
    assert ledger_sum(db, "alice", EntryKind.USAGE) == -DEFAULT_PRICES.cost_micros(GPT.id, prompt, completion)
    return prompt, completion


async def test_a_provider_claiming_two_to_the_31_tokens_is_charged_the_coordinators_bound(tmp_path):
    db, key, accounts = billed(tmp_path)
    async with coordinator(accounts=accounts) as server:
        agent = await provider(server, GPT, reply=Reply(chunks=["Hello"], num_tokens=1, claimed_usage=(HUGE, HUGE)))
        result = await client(server, key).chat.completions.create(model=GPT.id, messages=MESSAGES, max_tokens=16)
        assert result.choices[0].message.content == "Hello"
        slack = CoordinatorSettings().usage_slack_tokens
        assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (ESTIMATE.max_tokens, 1 + slack)
        metrics = (await httpx.AsyncClient(base_url=server.base_url).get("/metrics")).text
        assert f'darkbloom_usage_claims_clamped_total{{model="{GPT.id}"}} 1.0' in metrics
        assert f'darkbloom_provider_usage_claims_clamped_total{{provider_id="{agent.provider_id}"}} 1.0' in metrics
        await agent.stop()
    assert await charged(db, accounts) == (ESTIMATE.max_tokens, 1 + slack)
    accounts.close()


async def test_a_provider_claiming_zero_tokens_is_charged_what_it_delivered(tmp_path):
    db, key, accounts = billed(tmp_path)
    async with coordinator(accounts=accounts) as server:
        agent = await provider(server, GPT, reply=Reply(chunks=["a", "b", "c"], num_tokens=2, claimed_usage=(0, 0)))
        result = await client(server, key).chat.completions.create(model=GPT.id, messages=MESSAGES, max_tokens=16)
        assert result.choices[0].message.content == "abc" and result.usage.completion_tokens == 6
        await agent.stop()
    assert await charged(db, accounts) == (ESTIMATE.floor_tokens, 6)
    accounts.close()


@pytest.mark.parametrize("num_tokens", [None, 1], ids=["older_agent", "counted"])
async def test_a_stream_past_max_tokens_is_cut_there_cancelled_at_the_agent_and_charged_max_tokens(tmp_path, num_tokens):
    db, key, accounts = billed(tmp_path)
    async with coordinator(accounts=accounts) as server:
        agent = await provider(server, GPT, reply=Reply(chunks=["t"] * 100, num_tokens=num_tokens,
                                                        claimed_usage=(11, HUGE), chunk_delay_s=0.001))
        stream = await client(server, key).chat.completions.create(
            model=GPT.id, messages=MESSAGES, max_tokens=16, stream=True, stream_options={"include_usage": True})
        chunks = [chunk async for chunk in stream]
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == "t" * 16
        assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["length"]
        assert chunks[-1].usage.completion_tokens == 16
        await eventually(lambda: agent.cancels == [agent.received[0].request_id])
        await agent.stop()
    assert await charged(db, accounts) == (11, 16)
    accounts.close()


async def test_a_chunk_claiming_more_tokens_than_max_tokens_is_refused_before_the_client_sees_it(tmp_path):
    db, key, accounts = billed(tmp_path)
    async with coordinator(accounts=accounts) as server:
        agent = await provider(server, GPT, reply=Reply(chunks=["x" * 1000], num_tokens=4096))
        result = await client(server, key).chat.completions.create(model=GPT.id, messages=MESSAGES, max_tokens=16)
        assert result.choices[0].message.content == "" and result.choices[0].finish_reason == "length"
        await agent.stop()
    assert await charged(db, accounts) == (11, 0)
    accounts.close()


async def test_a_stream_the_provider_ends_cancelled_is_charged_only_the_tokens_delivered(tmp_path):
    db, key, accounts = billed(tmp_path)
    async with coordinator(accounts=accounts) as server:
        agent = await provider(server, GPT, reply=Reply(chunks=["a", "b", "c"], num_tokens=1, finish_reason="cancelled",
                                                        claimed_usage=(HUGE, HUGE)))
        with pytest.raises(openai.APIStatusError) as failed:
            await client(server, key).chat.completions.create(model=GPT.id, messages=MESSAGES, max_tokens=16)
        assert failed.value.status_code == 502
        await agent.stop()
    assert await charged(db, accounts) == (11, 3)
    accounts.close()


async def test_a_client_that_leaves_a_stream_pays_only_for_the_tokens_it_was_sent(tmp_path):
    db, key, accounts = billed(tmp_path)
    async with coordinator(accounts=accounts) as server:
        agent = await provider(server, GPT, reply=Reply(chunks=["tok"] * 200, num_tokens=1, chunk_delay_s=0.02,
                                                        claimed_usage=(HUGE, HUGE)))
        async with httpx.AsyncClient(base_url=server.base_url, timeout=5.0) as http:
            body = {"model": GPT.id, "messages": MESSAGES, "stream": True, "max_tokens": 500}
            async with http.stream("POST", "/v1/chat/completions", json=body,
                                   headers={"Authorization": f"Bearer {key}"}) as response:
                async for line in response.aiter_lines():
                    if '"content":"tok"' in line:
                        break  # one token in, then leave
        await eventually(lambda: agent.cancels == [agent.received[0].request_id])
        await eventually(lambda: accounts.num_holds == 0)
        await agent.stop()
    prompt, completion = await charged(db, accounts)  # once: the agent's late complete adds no charge
    assert prompt == 11 and 1 <= completion < 200
    accounts.close()


async def test_a_chunk_claiming_more_tokens_than_one_chunk_can_carry_is_refused_as_a_bad_frame():
    async with coordinator() as server:
        agent = await provider(server, GPT)
        await agent.send('{"type": "inference_response_chunk", "request_id": "r1", "seq": 1, '
                         '"delta": {"content": "x"}, "num_tokens": 2147483648}')
        await eventually(lambda: len(agent.errors) == 1)
        assert agent.errors[0]["code"] == "invalid_field" and agent.errors[0]["field"] == "num_tokens"
        result = await client(server, "local").chat.completions.create(model=GPT.id, messages=MESSAGES)
        assert result.choices[0].message.content == "Hello, world"
        await agent.stop()
