"""What every dialect shares with chat completions (http/request_life.py), over real HTTP: a client leaving
cancels at the agent and releases the hold; a failure after keep-alives ends the stream in the dialect's own
shape; billing charges what the usage says; a provider's inconsistent tool calls end each dialect with its
error."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import anthropic
import httpx
import openai
import pytest

from agent.coordinator.billing.accounts import Accounts
from agent.coordinator.billing.keys import create_key
from agent.coordinator.billing.pricing import DEFAULT_PRICES
from tests.dialect_support import (
    ANTHROPIC_TOOL,
    BAD_CALLS,
    RESPONSES_TOOL,
    STREAMS,
    anthropic_client,
    openai_client,
)
from tests.provider_support import FAST, GPT, Reply, coordinator, eventually, provider


KEEPALIVE = replace(FAST, sse_keepalive_after_s=0.1, sse_keepalive_interval_s=0.1, first_token_base_s=0.5,
                    max_attempts=1)


@pytest.mark.parametrize("path", list(STREAMS))
async def test_a_client_leaving_a_dialects_stream_cancels_at_the_agent_and_releases_the_hold(path):
    body, headers = STREAMS[path]
    async with coordinator() as server:
        agent = await provider(server, GPT, reply=Reply(chunks=["tok"] * 200, num_tokens=1, chunk_delay_s=0.02))
        async with httpx.AsyncClient(base_url=server.base_url, timeout=5.0) as http:
            async with http.stream("POST", path, json=body, headers=headers) as response:
                assert response.status_code == 200
                async for line in response.aiter_lines():
                    if "tok" in line:
                        break  # one token in, then leave
        await eventually(lambda: agent.cancels == [agent.received[0].request_id])
        await eventually(lambda: server.coordinator.accounts.num_holds == 0)
        await agent.stop()


@pytest.mark.parametrize("path", ["/v1/responses", "/v1/messages"])
async def test_a_dialects_stream_failing_after_keepalives_ends_with_an_error_event_in_its_own_shape(path):
    body, headers = STREAMS[path]
    async with coordinator(KEEPALIVE) as server:
        sinkhole = await provider(server, GPT, reply=Reply(hang_after=0))
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as http:
            response = await http.post(path, json=body, headers=headers)
        assert response.status_code == 200 and ": waiting for the first token" in response.text
        event, data = response.text.strip().split("\n")[-2:]
        error = json.loads(data.removeprefix("data: "))
        assert event == "event: error" and error["type"] == "error"
        assert ("first token" in error["message"]) if path == "/v1/responses" else (
            error["error"]["type"] == "api_error" and "first token" in error["error"]["message"])
        assert server.coordinator.accounts.num_holds == 0
        await sinkhole.stop()


async def test_a_billed_account_is_charged_a_messages_answer_exactly_its_usage(tmp_path: Path):
    db = tmp_path / "accounts.sqlite"
    key = create_key(db, "acme").key
    accounts = Accounts.from_db(db)
    accounts.credit("acme", 10_000_000)
    async with coordinator(accounts=accounts) as server:
        agent = await provider(server, GPT, reply=Reply(chunks=["a", "b", "c"], num_tokens=1))
        message = await anthropic_client(server, key).messages.create(
            model=GPT.id, max_tokens=9, messages=[{"role": "user", "content": "x"}])
        response = await openai_client(server, key).responses.create(model=GPT.id, input="x", max_output_tokens=9)
        await eventually(lambda: accounts.num_holds == 0)
        await agent.stop()
    assert accounts.flush()
    spent = 10_000_000 - accounts.balance_micros("acme")
    cost = DEFAULT_PRICES.cost_micros(GPT.id, 11, 3)
    assert (message.usage.input_tokens, message.usage.output_tokens) == (11, 3) == (
        response.usage.input_tokens, response.usage.output_tokens)
    assert spent == 2 * cost
    accounts.close()


async def test_a_provider_sending_inconsistent_tool_calls_ends_each_dialect_with_its_error_and_pays_what_was_sent():
    async with coordinator() as server:
        agent = await provider(server, GPT, reply=Reply(chunks=BAD_CALLS, num_tokens=1))
        with pytest.raises(openai.InternalServerError) as whole:
            await openai_client(server).responses.create(model=GPT.id, input="x", tools=[RESPONSES_TOOL])
        assert whole.value.body["code"] == "provider_invalid_output"
        async with openai_client(server).responses.stream(model=GPT.id, input="x", tools=[RESPONSES_TOOL]) as stream:
            events = [event async for event in stream]
        assert events[-1].type == "response.failed"
        assert events[-1].response.error.code == "provider_invalid_output"
        with pytest.raises(anthropic.APIStatusError) as streamed:
            async with anthropic_client(server).messages.stream(
                    model=GPT.id, max_tokens=9, tools=[ANTHROPIC_TOOL],
                    messages=[{"role": "user", "content": "x"}]) as stream:
                async for _ in stream:
                    pass
        assert "invalid tool call" in streamed.value.body["error"]["message"]
        await eventually(lambda: server.coordinator.accounts.num_holds == 0)
        await agent.stop()


async def test_a_client_leaving_an_n_choice_completions_stream_cancels_every_choice_and_releases_every_hold():
    async with coordinator() as server:
        agent = await provider(server, GPT, reply=Reply(chunks=["tok"] * 200, num_tokens=1, chunk_delay_s=0.02))
        body = {"model": GPT.id, "prompt": "Hi", "max_tokens": 500, "stream": True, "n": 2}
        async with httpx.AsyncClient(base_url=server.base_url, timeout=5.0) as http:
            async with http.stream("POST", "/v1/completions", json=body, headers={"Authorization": "Bearer local"}) as r:
                assert r.status_code == 200
                async for line in r.aiter_lines():
                    if "tok" in line:
                        break
        await eventually(lambda: sorted(agent.cancels) == sorted(request.request_id for request in agent.received))
        assert len(agent.received) == 2
        await eventually(lambda: server.coordinator.accounts.num_holds == 0)
        await agent.stop()
