"""The API's edges as a client meets them (issue 17 points 3 and 9), over real HTTP with the openai SDK:
a model whose providers left is still listed and answers 503 with Retry-After; models.retrieve, JSON
404/405s, real `created` times, OpenAI's 429 insufficient_quota, and a consumer's own balance and usage
at /v1/me."""

from __future__ import annotations

import time
from dataclasses import replace

import httpx
import openai
import pytest

from agent.coordinator.billing.accounts import Accounts
from agent.coordinator.billing.keys import create_key
from tests.provider_support import GEMMA, GPT, coordinator, eventually, provider

MESSAGES = [{"role": "user", "content": "Say hello."}]


def client(server, key: str = "local", max_retries: int = 0) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=server.base_url + "/v1", api_key=key, max_retries=max_retries)


async def test_a_model_whose_last_provider_left_is_listed_and_answers_503_with_retry_after_not_404():
    uncatalogued = replace(GPT, id="tiny-seen-once")
    async with coordinator(catalog={GPT.id: GPT}) as server:
        agent = await provider(server, uncatalogued)
        await agent.stop()
        await eventually(lambda: len(server.coordinator.router.registry) == 0)
        listed = await client(server).models.list()
        assert [m.id for m in listed.data] == [GPT.id, "tiny-seen-once"]
        with pytest.raises(openai.InternalServerError) as unserved:
            await client(server).chat.completions.create(model="tiny-seen-once", messages=MESSAGES)
        assert unserved.value.status_code == 503 and unserved.value.response.headers["retry-after"] == "2"
        assert "no connected provider serves tiny-seen-once right now" in unserved.value.message
        with pytest.raises(openai.NotFoundError):
            await client(server).chat.completions.create(model="never-seen", messages=MESSAGES)
        async with httpx.AsyncClient(base_url=server.base_url) as http:
            health = (await http.get("/health")).json()
        assert health["providers_per_model"] == {GPT.id: 0, "tiny-seen-once": 0}


async def test_health_counts_the_providers_serving_each_model():
    async with coordinator() as server:
        agents = [await provider(server, GPT), await provider(server, GPT, GEMMA)]
        async with httpx.AsyncClient(base_url=server.base_url) as http:
            health = (await http.get("/health")).json()
        assert health["providers_per_model"] == {GPT.id: 2, GEMMA.id: 1}
        for agent in agents:
            await agent.stop()


async def test_models_retrieve_answers_a_known_model_and_an_openai_404_for_an_unknown_one():
    before = int(time.time())
    async with coordinator() as server:
        agent = await provider(server, GPT)
        model = await client(server).models.retrieve(GPT.id)
        assert (model.id, model.object, model.owned_by) == (GPT.id, "model", "darkbloom")
        assert before <= model.created <= time.time() + 1
        listed = {m.id: m.created for m in (await client(server).models.list()).data}
        assert listed[GPT.id] == model.created and listed[GEMMA.id] >= before  # the catalog's: loaded at start
        with pytest.raises(openai.NotFoundError) as missing:
            await client(server).models.retrieve("no-such-model")
        assert missing.value.body["code"] == "model_not_found" and missing.value.body["param"] == "model"
        await agent.stop()


async def test_an_unknown_path_or_a_wrong_method_is_an_openai_shaped_json_error():
    async with coordinator() as server, httpx.AsyncClient(base_url=server.base_url) as http:
        unknown = await http.get("/v1/nope")
        wrong = await http.get("/v1/chat/completions")
        wrong_models = await http.post("/v1/models", json={})
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "unknown_url"
    error = unknown.json()["error"]
    assert error["type"] == "invalid_request_error" and "GET /v1/nope" in error["message"]
    assert wrong.status_code == 405 and wrong.headers["allow"] == "POST"
    assert wrong.json()["error"]["code"] == "method_not_allowed" and "use POST" in wrong.json()["error"]["message"]
    assert wrong_models.status_code == 405 and "GET" in wrong_models.headers["allow"]


def keyed(tmp_path, amount_micros: int) -> tuple[str, Accounts]:
    db = tmp_path / "accounts.sqlite"
    key = create_key(db, "alice").key
    accounts = Accounts.from_db(db)
    if amount_micros:
        accounts.credit("alice", amount_micros)
    return key, accounts


async def test_an_exhausted_balance_is_openais_429_insufficient_quota_and_the_sdk_does_not_retry_it(tmp_path):
    key, accounts = keyed(tmp_path, 0)
    async with coordinator(accounts=accounts) as server:
        agent = await provider(server, GPT)
        started = time.monotonic()
        with pytest.raises(openai.RateLimitError) as refused:
            await client(server, key, max_retries=2).chat.completions.create(model=GPT.id, messages=MESSAGES)
        assert time.monotonic() - started < 0.5  # no backoff: the SDK was told not to retry
        assert refused.value.status_code == 429
        assert refused.value.body["type"] == "insufficient_quota" and refused.value.body["code"] == "insufficient_quota"
        assert refused.value.response.headers["x-should-retry"] == "false"
        await agent.stop()
    accounts.close()


async def test_a_consumer_sees_its_own_balance_and_usage_at_v1_me(tmp_path):
    key, accounts = keyed(tmp_path, 10_000_000)
    create_key(tmp_path / "accounts.sqlite", "bob")
    async with coordinator(accounts=accounts) as server:
        agent = await provider(server, GPT)
        await client(server, key).chat.completions.create(model=GPT.id, messages=MESSAGES, max_tokens=16)
        accounts.flush()
        async with httpx.AsyncClient(base_url=server.base_url) as http:
            me = await http.get("/v1/me", headers={"authorization": f"Bearer {key}"})
            anonymous = await http.get("/v1/me")
        await agent.stop()
    accounts.close()
    assert anonymous.status_code == 401
    data = me.json()
    assert data["id"] == "alice" and data["object"] == "account" and data["credit_limit_micros"] == 0
    [usage] = data["usage"]
    assert usage["model"] == GPT.id and usage["requests"] == 1 and usage["completion_tokens"] > 0
    assert data["balance_micros"] == 10_000_000 - usage["cost_micros"] == data["available_micros"]


async def test_v1_me_in_open_mode_says_there_are_no_accounts():
    async with coordinator() as server, httpx.AsyncClient(base_url=server.base_url) as http:
        me = await http.get("/v1/me")
    assert me.status_code == 404 and me.json()["error"]["code"] == "open_mode"

