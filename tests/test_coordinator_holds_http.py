"""Holds that cannot be outrun, end to end: real HTTP, the official SDK, a scripted provider, a real ledger."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import openai

from agent.coordinator.billing.accounts import Accounts
from agent.coordinator.billing.keys import create_key
from agent.coordinator.billing.ledger import ledger_sum
from agent.coordinator.billing.pricing import DEFAULT_PRICES
from agent.coordinator.http.api import CAPPED_HEADER
from tests.provider_support import GPT, Reply, coordinator, provider

MESSAGES = [{"role": "user", "content": "Say hello."}]


def every_token_it_may(request) -> Reply:
    """A provider that produces all the output it is allowed, and says so (finish_reason length)."""
    return Reply(chunks=["x"] * request.body.output_limit, finish_reason="length")


async def test_a_poor_account_asking_for_120000_tokens_four_times_at_once_is_capped_or_refused_never_overdrawn(
        tmp_path: Path):
    db = tmp_path / "accounts.sqlite"
    key = create_key(db, "poor").key
    accounts = Accounts.from_db(db)
    accounts.credit("poor", 1_000)  # $0.001, the attack of issue 11
    async with coordinator(accounts=accounts) as server:
        agent = await provider(server, GPT, reply=every_token_it_may)
        client = openai.AsyncOpenAI(base_url=f"{server.base_url}/v1", api_key=key, max_retries=0)

        async def one() -> object:
            try:
                return await client.chat.completions.create(model=GPT.id, messages=MESSAGES, max_tokens=120_000)
            except openai.APIStatusError as exc:
                return exc

        results = await asyncio.gather(*(one() for _ in range(4)))
        served = [r for r in results if not isinstance(r, openai.APIStatusError)]
        refused = [r for r in results if isinstance(r, openai.APIStatusError)]
        assert served and all(r.choices[0].finish_reason == "length" for r in served)
        assert all(r.status_code == 429 and r.body["code"] == "insufficient_quota" for r in refused)
        # Named either with this request's bound, or (refused before its body was read) the cheapest request's cost.
        assert all("could cost up to" in r.body["message"] or "less than any request costs" in r.body["message"]
                   for r in refused)
        asked = [request.body.output_limit for request in agent.received]
        assert asked and all(16 <= n < 120_000 for n in asked)  # the provider was told the capped max_tokens
        assert sum(r.usage.completion_tokens for r in served) == sum(asked)
        await agent.stop()
    assert accounts.flush()
    charged = sum(DEFAULT_PRICES.cost_micros(GPT.id, r.usage.prompt_tokens, r.usage.completion_tokens)
                  for r in served)
    assert accounts.balance_micros("poor") == 1_000 - charged == ledger_sum(db, "poor") >= 0
    accounts.close()


async def test_a_capped_request_says_its_cap_in_a_header_streaming_or_not_and_keeps_openais_body(tmp_path: Path):
    db = tmp_path / "accounts.sqlite"
    key = create_key(db, "poor").key
    accounts = Accounts.from_db(db)
    accounts.credit("poor", 1_000)
    async with coordinator(accounts=accounts) as server, httpx.AsyncClient(base_url=server.base_url) as http:
        agent = await provider(server, GPT)
        ask = {"model": GPT.id, "messages": MESSAGES, "max_tokens": 120_000}
        auth = {"authorization": f"Bearer {key}"}
        whole = await http.post("/v1/chat/completions", headers=auth, json=ask)
        async with http.stream("POST", "/v1/chat/completions", headers=auth, json={**ask, "stream": True}) as stream:
            events = [line async for line in stream.aiter_lines() if line.startswith("data: {")]
        capped = [int(r.headers[CAPPED_HEADER]) for r in (whole, stream)]
        assert capped == [request.body.output_limit for request in agent.received]
        assert all(16 <= n < 120_000 for n in capped)
        assert "capped" not in whole.text and events and "capped" not in "".join(events)  # OpenAI's shape, as is
        await agent.stop()
    accounts.close()


async def test_a_request_the_balance_covers_has_no_cap_header(tmp_path: Path):
    db = tmp_path / "accounts.sqlite"
    key = create_key(db, "rich").key
    accounts = Accounts.from_db(db)
    accounts.credit("rich", 100_000_000)
    async with coordinator(accounts=accounts) as server, httpx.AsyncClient(base_url=server.base_url) as http:
        agent = await provider(server, GPT)
        answer = await http.post("/v1/chat/completions", headers={"authorization": f"Bearer {key}"},
                                 json={"model": GPT.id, "messages": MESSAGES, "max_tokens": 120_000})
        assert answer.status_code == 200 and CAPPED_HEADER not in answer.headers
        assert agent.received[0].body.output_limit == 120_000
        await agent.stop()
    accounts.close()
