"""Issue 11 point 7: a provider gets what the model needs, a consumer gets aggregates, Retry-After is ours.

Real HTTP against a coordinator serving a scripted provider over the real websocket.
"""

from __future__ import annotations

from dataclasses import replace

import httpx
import openai
import pytest

from agent.coordinator.privacy import OPERATOR_HEADER
from tests.provider_support import FAST, GPT, Reply, coordinator, provider


def client(server) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{server.base_url}/v1", api_key="local", max_retries=0)


async def test_the_provider_never_sees_the_consumers_user_field_metadata_or_message_names():
    async with coordinator() as server:
        agent = await provider(server, GPT)
        messages = [{"role": "system", "content": "Be brief", "name": "acme-prod"},
                    {"role": "user", "content": "Say hello", "name": "alice@example.com"}]
        result = await client(server).chat.completions.create(model=GPT.id, messages=messages, user="end-user-42",
                                                              metadata={"team": "billing"}, store=False)
        assert result.choices[0].message.content == "Hello, world"
        body = agent.received[0].body
        assert body.user is None and body.metadata is None and [m.name for m in body.messages] == [None, None]
        assert [m.content for m in body.messages] == ["Be brief", "Say hello"]
        await agent.stop()


@pytest.mark.parametrize("path", ["/v1/models/capacity", "/metrics"])
async def test_a_consumer_sees_aggregates_and_only_the_operator_sees_each_provider(path):
    settings = replace(FAST, operator_token="op-secret", operator_on_loopback=False)
    async with coordinator(settings) as server:
        agent = await provider(server, GPT, reply=Reply(chunks=["x"] * 5, num_tokens=1, claimed_usage=(11, 2**31)))
        await client(server).chat.completions.create(model=GPT.id, messages=[{"role": "user", "content": "hi"}])
        async with httpx.AsyncClient(base_url=server.base_url) as http:
            consumer = (await http.get(path)).text
            wrong = (await http.get(path, headers={OPERATOR_HEADER: "guess"})).text
            operator = (await http.get(path, headers={OPERATOR_HEADER: "op-secret"})).text
        for text in (consumer, wrong):
            assert agent.provider_id not in text and "memory_bytes" not in text and '"chip"' not in text
        assert agent.provider_id in operator
        if path == "/metrics":
            assert 'darkbloom_usage_claims_clamped_total{model="gpt-oss-20b"} 1.0' in consumer
        else:
            assert '"free_kv_bytes"' in consumer and '"providers"' in consumer
        await agent.stop()


async def test_a_loopback_operator_sees_detail_but_not_a_client_behind_a_proxy_on_the_same_host():
    async with coordinator() as server:
        agent = await provider(server, GPT)
        async with httpx.AsyncClient(base_url=server.base_url) as http:
            local = (await http.get("/v1/models/capacity")).json()["data"][0]
            proxied = (await http.get("/v1/models/capacity", headers={"x-forwarded-for": "203.0.113.9"})).json()
        assert [row["provider_id"] for row in local["details"]] == [agent.provider_id]
        assert "details" not in proxied["data"][0] and proxied["data"][0]["providers"]["idle"] == 1
        await agent.stop()


async def test_a_providers_retry_after_of_an_hour_reaches_the_consumer_bounded():
    async with coordinator(replace(FAST, queue_max_wait_s=0.3, max_retry_after_s=7.0)) as server:
        agent = await provider(server, GPT, reply=Reply(reject="full", retry_after_s=3600))
        with pytest.raises(openai.RateLimitError) as saturated:
            await client(server).chat.completions.create(model=GPT.id, messages=[{"role": "user", "content": "hi"}])
        assert saturated.value.response.headers["retry-after"] == "7"  # not 3600, not the default 2
        await agent.stop()
