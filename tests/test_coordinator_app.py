"""The coordinator end to end: the openai SDK on one side, scripted providers on real websockets on the other."""

from __future__ import annotations

import asyncio
import json
import random
from dataclasses import replace
from pathlib import Path

import httpx
import openai
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from agent.coordinator.billing.accounts import Accounts
from agent.coordinator.billing.keys import create_key
from agent.coordinator.billing.ledger import EntryKind, ledger_sum
from agent.coordinator.billing.pricing import DEFAULT_PRICES
from agent.coordinator.http.app import check_exposure, serve
from agent.errors import ConfigError
from tests.provider_support import CATALOG, FAST, GEMMA, GPT, Reply, coordinator, eventually, provider

MESSAGES = [{"role": "user", "content": "Say hello."}]
REASONED = Reply(chunks=[("", "The user "), ("", "greets."), "Hello", ", world"], prompt_tokens=21)


def clients(server, key: str = "local"):
    base = server.base_url + "/v1"
    return (openai.OpenAI(base_url=base, api_key=key, max_retries=0),
            openai.AsyncOpenAI(base_url=base, api_key=key, max_retries=0))


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_the_openai_sdk_gets_content_reasoning_and_usage_through_the_coordinator(use_async, stream):
    async with coordinator() as server:
        agent = await provider(server, GPT, reply=REASONED)
        sync_client, async_client = clients(server)
        kwargs = dict(model=GPT.id, messages=MESSAGES, max_tokens=64, stream=stream)
        if stream:
            kwargs["stream_options"] = {"include_usage": True}

        def run_sync():
            result = sync_client.chat.completions.create(**kwargs)
            return list(result) if stream else result

        async def run_async():
            result = await async_client.chat.completions.create(**kwargs)
            return [chunk async for chunk in result] if stream else result

        result = await run_async() if use_async else await asyncio.to_thread(run_sync)
        if stream:
            assert result[0].choices[0].delta.role == "assistant"
            text = "".join(c.choices[0].delta.content or "" for c in result if c.choices)
            thought = "".join((c.choices[0].delta.model_extra or {}).get("reasoning", "") for c in result if c.choices)
            finishes = [c.choices[0].finish_reason for c in result if c.choices and c.choices[0].finish_reason]
            usage = result[-1].usage
            assert result[-1].choices == [] and finishes == ["stop"]
        else:
            text, thought = result.choices[0].message.content, result.choices[0].message.model_extra["reasoning"]
            usage = result.choices[0].finish_reason == "stop" and result.usage
        assert (text, thought) == ("Hello, world", "The user greets.")
        assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (21, 4, 25)
        assert agent.received[0].body.max_tokens == 64 and agent.received[0].reservation.bytes > 0
        assert server.coordinator.accounts.num_holds == 0
        await agent.stop()


async def test_a_stream_is_exactly_openais_shape_with_one_done_at_the_end():
    async with coordinator() as server:
        agent = await provider(server, GPT, reply=REASONED)
        async with httpx.AsyncClient(base_url=server.base_url) as http:
            response = await http.post("/v1/chat/completions", json={
                "model": GPT.id, "messages": MESSAGES, "stream": True, "stream_options": {"include_usage": True}})
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [block for block in response.text.split("\n\n") if block]
        assert events[-1] == "data: [DONE]" and response.text.count("[DONE]") == 1
        chunks = [json.loads(e.removeprefix("data: ")) for e in events[:-1]]
        assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
        assert {c["id"] for c in chunks} == {response.headers["x-request-id"]} == {agent.received[0].request_id}
        # Deltas that arrive together go out as one (token_merge.py): only the text is fixed, not how it is cut.
        deltas = [c["choices"][0]["delta"] for c in chunks[1:-2]]
        assert deltas and all(set(d) <= {"reasoning", "content"} and d for d in deltas)
        assert "".join(d.get("reasoning", "") for d in deltas) == "The user greets."
        assert "".join(d.get("content", "") for d in deltas) == "Hello, world"
        assert chunks[-2]["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}
        assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] == 25
        await agent.stop()


async def test_reasoning_can_be_sent_as_reasoning_content_for_clients_that_read_that_name():
    async with coordinator(replace(FAST, reasoning_field="reasoning_content")) as server:
        agent = await provider(server, GPT, reply=REASONED)
        result = await clients(server)[1].chat.completions.create(model=GPT.id, messages=MESSAGES)
        assert result.choices[0].message.model_extra == {"reasoning_content": "The user greets."}
        await agent.stop()


async def test_errors_come_in_openais_shape_naming_the_bad_parameter():
    async with coordinator() as server:
        agent = await provider(server, GPT)
        client = clients(server)[1]
        with pytest.raises(openai.BadRequestError) as bad:
            await client.chat.completions.create(model=GPT.id, messages=MESSAGES, temperature=5)
        assert bad.value.body["param"] == "temperature" and bad.value.body["type"] == "invalid_request_error"
        with pytest.raises(openai.BadRequestError) as unknown_tool:
            await client.chat.completions.create(model=GPT.id, messages=MESSAGES,
                                                 tools=[{"type": "function", "function": {"name": "f"}}],
                                                 tool_choice={"type": "function", "function": {"name": "g"}})
        assert unknown_tool.value.body["param"] == "tool_choice"
        with pytest.raises(openai.NotFoundError) as missing:
            await client.chat.completions.create(model="no-such-model", messages=MESSAGES)
        assert missing.value.body["code"] == "model_not_found" and missing.value.body["param"] == "model"
        async with httpx.AsyncClient(base_url=server.base_url) as http:
            not_json = await http.post("/v1/chat/completions", content=b"{nope")
            no_model = await http.post("/v1/chat/completions", json={"messages": MESSAGES})
            huge = await http.post("/v1/chat/completions", json={"model": GPT.id, "messages": [
                {"role": "user", "content": "x" * (8 * 2**20)}]})
        assert not_json.status_code == 400 and not_json.json()["error"]["code"] == "invalid_json"
        assert no_model.status_code == 400 and no_model.json()["error"]["param"] == "model"
        assert huge.status_code == 413 and huge.json()["error"]["code"] == "request_too_large"
        assert agent.received == []
        await agent.stop()


async def test_with_keys_configured_a_request_without_a_valid_key_gets_401(tmp_path: Path):
    db = tmp_path / "accounts.sqlite"
    key = create_key(db, "alice").key
    accounts = Accounts.from_db(db)
    accounts.credit("alice", 10_000_000)
    async with coordinator(accounts=accounts) as server:
        agent = await provider(server, GPT)
        with pytest.raises(openai.AuthenticationError) as refused:
            await clients(server, "dbk_00000000_wrong")[1].chat.completions.create(model=GPT.id, messages=MESSAGES)
        assert refused.value.status_code == 401 and refused.value.body["code"] == "invalid_api_key"
        ok = await clients(server, key)[1].chat.completions.create(model=GPT.id, messages=MESSAGES)
        assert ok.choices[0].message.content == "Hello, world"
        async with httpx.AsyncClient(base_url=server.base_url) as http:
            assert (await http.get("/v1/models")).status_code == 401
            models = await http.get("/v1/models", headers={"Authorization": f"Bearer {key}"})
            assert (await http.get("/health")).json()["mode"] == "keys"
        assert [m["id"] for m in models.json()["data"]] == sorted(CATALOG)  # the catalog's, served or not
        await agent.stop()
    accounts.close()


async def test_a_provider_with_a_wrong_token_is_refused_with_401_before_the_websocket_opens():
    async with coordinator(replace(FAST, provider_token="s3cret")) as server:
        with pytest.raises(InvalidStatus) as refused:
            await connect(server.ws_url, additional_headers={"Authorization": "Bearer wrong"})
        assert refused.value.response.status_code == 401
        agent = await provider(server, GPT, token="s3cret")
        assert len(server.coordinator.router.registry) == 1
        await agent.stop()


async def test_a_bad_frame_is_answered_with_an_error_frame_and_the_link_stays_up():
    async with coordinator() as server:
        agent = await provider(server, GPT)
        await agent.send('{"type": "heartbeat", "seq": "seven"}')
        await agent.send('{"type": "warp_drive"}')
        await agent.send("not json at all")
        await eventually(lambda: len(agent.errors) == 3)
        assert [e["code"] for e in agent.errors] == ["invalid_field", "unknown_message_type", "frame_not_json"]
        assert agent.errors[0]["field"] == "seq"
        result = await clients(server)[1].chat.completions.create(model=GPT.id, messages=MESSAGES)
        assert result.choices[0].message.content == "Hello, world"
        await agent.stop()


async def test_a_provider_that_misses_heartbeats_is_evicted_and_its_link_closed():
    async with coordinator(replace(FAST, heartbeat_interval_s=0.05, missed_heartbeats=3)) as server:
        agent = await provider(server, GPT)
        router = server.coordinator.router
        assert len(router.registry) == 1
        agent.heartbeats_on = False
        await eventually(lambda: len(router.registry) == 0, timeout=2.0)
        async with asyncio.timeout(2.0):
            await agent.ws.wait_closed()
        assert agent.ws.close_code == 4000
        await agent.stop()


@pytest.mark.parametrize("stream", [True, False], ids=["streamed", "whole"])
async def test_a_client_that_goes_away_gets_its_request_cancelled_at_the_provider_and_its_hold_released(stream):
    async with coordinator() as server:
        agent = await provider(server, GPT, reply=Reply(chunks=["tok"] * 200, chunk_delay_s=0.02))
        accounts = server.coordinator.accounts
        async with httpx.AsyncClient(base_url=server.base_url, timeout=0.3) as http:
            body = {"model": GPT.id, "messages": MESSAGES, "stream": stream}
            if stream:
                async with http.stream("POST", "/v1/chat/completions", json=body) as response:
                    async for line in response.aiter_lines():
                        if '"content":"tok"' in line:
                            break  # one token in, then leave
            else:
                with pytest.raises(httpx.ReadTimeout):
                    await http.post("/v1/chat/completions", json=body)
        await eventually(lambda: agent.cancels == [agent.received[0].request_id])
        assert accounts.num_holds == 0
        await eventually(lambda: server.coordinator.router.registry.offers(GPT.id)[0][1].pending.num_in_flight == 0)
        await agent.stop()


async def test_sixty_four_concurrent_requests_from_one_key_all_succeed_and_the_ledger_sums_to_their_usage(tmp_path):
    db = tmp_path / "accounts.sqlite"
    key = create_key(db, "alice").key
    accounts = Accounts.from_db(db)
    accounts.credit("alice", 5_000_000)
    rng = random.Random(5)
    lengths = {}

    def reply(request):
        n = lengths.setdefault(request.request_id, rng.randint(1, 40))
        return Reply(chunks=["x"] * n, prompt_tokens=30 + n, chunk_delay_s=0.001)

    async with coordinator(accounts=accounts) as server:
        agent = await provider(server, GPT, reply=reply)
        client = clients(server, key)[1]

        async def one(i: int):
            return await client.chat.completions.create(model=GPT.id, max_tokens=512, stream=i % 2 == 0,
                                                        messages=[{"role": "user", "content": f"request {i}"}],
                                                        stream_options={"include_usage": True} if i % 2 == 0 else None)

        async def usage_of(result):
            if isinstance(result, openai.types.chat.ChatCompletion):
                return result.usage
            return [chunk async for chunk in result][-1].usage

        results = await asyncio.gather(*(one(i) for i in range(64)), return_exceptions=True)
        assert [r for r in results if isinstance(r, BaseException)] == []
        usages = [await usage_of(r) for r in results]
        assert len(agent.received) == 64 and accounts.num_holds == 0
        await agent.stop()
    assert accounts.flush()
    expected = sum(DEFAULT_PRICES.cost_micros(GPT.id, u.prompt_tokens, u.completion_tokens) for u in usages)
    assert sorted(u.completion_tokens for u in usages) == sorted(lengths.values())
    assert ledger_sum(db, "alice", EntryKind.USAGE) == -expected
    assert accounts.balance_micros("alice") == 5_000_000 - expected == ledger_sum(db, "alice")
    accounts.close()


async def test_health_models_and_metrics_describe_the_running_coordinator():
    async with coordinator() as server:
        agent = await provider(server, GPT)
        await clients(server)[1].chat.completions.create(model=GPT.id, messages=MESSAGES)
        async with httpx.AsyncClient(base_url=server.base_url) as http:
            health = (await http.get("/health")).json()
            models = (await http.get("/v1/models")).json()
            metrics = (await http.get("/metrics")).text
        assert health == {"status": "ok", "mode": "open", "providers": 1, "models": [GPT.id], "queued": 0,
                          "providers_per_model": {GPT.id: 1, GEMMA.id: 0},
                          "ledger": {"is_available": True, "reason": None, "num_backlog": 0}}
        assert GPT.id in [m["id"] for m in models["data"]] and models["object"] == "list"
        assert f'darkbloom_requests_total{{model="{GPT.id}",outcome="ok"}} 1.0' in metrics
        assert f'darkbloom_time_to_first_token_seconds_count{{model="{GPT.id}"}} 1.0' in metrics
        assert f'darkbloom_providers{{model="{GPT.id}",state="idle"}} 1.0' in metrics
        assert f'darkbloom_queue_depth{{model="{GPT.id}"}} 0.0' in metrics
        await agent.stop()


def test_an_open_coordinator_refuses_a_non_loopback_address_unless_told_it_is_meant():
    check_exposure("127.0.0.1", is_open=True, provider_token=None, allow_open_remote=False)
    check_exposure("::1", is_open=True, provider_token=None, allow_open_remote=False)
    with pytest.raises(ConfigError, match="consumer API keys .* and a provider token"):
        check_exposure("0.0.0.0", is_open=True, provider_token=None, allow_open_remote=False)
    with pytest.raises(ConfigError, match="without a provider token"):
        check_exposure("10.0.0.5", is_open=False, provider_token=None, allow_open_remote=False)
    check_exposure("0.0.0.0", is_open=False, provider_token="s3cret", allow_open_remote=False)
    check_exposure("0.0.0.0", is_open=True, provider_token=None, allow_open_remote=True)
    with pytest.raises(ConfigError, match="exclude each other"):
        serve("127.0.0.1", 0, "accounts.sqlite", open_mode=True)
