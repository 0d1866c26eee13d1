"""Logs an operator reads (issue 17 point 8), from the real server: one `http.access` line per request with
its ids, status, tokens and timings and nothing of the body, 4xx included; an ordinary client cancel warns
of nothing; a refused provider token is one `provider.refused` line, not an ASGI handshake error."""

from __future__ import annotations

import logging
from dataclasses import replace

import httpx
import openai
import pytest
import structlog.testing
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from agent.coordinator.billing.accounts import Accounts
from agent.coordinator.billing.keys import create_key
from tests.provider_support import FAST, GPT, Reply, coordinator, eventually, provider

SECRET = "a very private question"
MESSAGES = [{"role": "user", "content": SECRET}]


def access_lines(logs: list[dict]) -> list[dict]:
    return [e for e in logs if e["event"] == "http.access"]


async def test_a_served_request_logs_one_access_line_with_ids_tokens_and_timings_and_nothing_of_the_body(tmp_path):
    db = tmp_path / "accounts.sqlite"
    key = create_key(db, "alice").key
    accounts = Accounts.from_db(db)
    accounts.credit("alice", 10_000_000)
    with structlog.testing.capture_logs() as logs:
        async with coordinator(accounts=accounts) as server:
            agent = await provider(server, GPT, reply=Reply(chunks=["Hello", ", world"], prompt_tokens=21))
            client = openai.AsyncOpenAI(base_url=server.base_url + "/v1", api_key=key, max_retries=0)
            raw = await client.chat.completions.with_raw_response.create(model=GPT.id, messages=MESSAGES)
            await agent.stop()
    accounts.close()
    [line] = [e for e in access_lines(logs) if e["path"] == "/v1/chat/completions"]
    assert line["request_id"] == raw.headers["x-request-id"] and line["status"] == 200
    assert (line["account_id"], line["model"], line["provider_id"]) == ("alice", GPT.id, agent.provider_id)
    assert (line["prompt_tokens"], line["completion_tokens"]) == (21, 2)
    assert 0 <= line["ttft_s"] <= line["duration_s"] and line["method"] == "POST" and line["log_level"] == "info"
    assert SECRET not in repr(logs)


async def test_refused_requests_are_logged_with_their_status(tmp_path):
    db = tmp_path / "accounts.sqlite"
    create_key(db, "alice")
    accounts = Accounts.from_db(db)
    with structlog.testing.capture_logs() as logs:
        async with coordinator(accounts=accounts) as server, httpx.AsyncClient(base_url=server.base_url) as http:
            await http.post("/v1/chat/completions", json={"model": GPT.id, "messages": MESSAGES})
            await http.get("/v1/nowhere")
    accounts.close()
    assert [(e["path"], e["status"]) for e in access_lines(logs)] == [("/v1/chat/completions", 401),
                                                                      ("/v1/nowhere", 404)]


@pytest.mark.parametrize("stream", [True, False], ids=["streamed", "whole"])
async def test_an_ordinary_client_cancel_warns_of_nothing_and_logs_499(stream):
    with structlog.testing.capture_logs() as logs:
        async with coordinator() as server:
            agent = await provider(server, GPT, reply=Reply(chunks=["tok"] * 200, chunk_delay_s=0.02))
            async with httpx.AsyncClient(base_url=server.base_url, timeout=0.3) as http:
                body = {"model": GPT.id, "messages": MESSAGES, "stream": stream}
                if stream:
                    async with http.stream("POST", "/v1/chat/completions", json=body) as response:
                        async for line in response.aiter_lines():
                            if '"content":"tok"' in line:
                                break
                else:
                    with pytest.raises(httpx.ReadTimeout):
                        await http.post("/v1/chat/completions", json=body)
            await eventually(lambda: agent.cancels == [agent.received[0].request_id])
            await eventually(lambda: access_lines(logs) != [])
            await agent.stop()
    assert [e for e in logs if e["log_level"] in ("warning", "error")] == []
    [line] = access_lines(logs)
    assert line["status"] == (200 if stream else 499)  # a stream had started its response when the client left


async def test_a_refused_provider_token_logs_the_refusal_and_no_asgi_handshake_error(caplog):
    caplog.set_level(logging.INFO)
    with structlog.testing.capture_logs() as logs:
        async with coordinator(replace(FAST, provider_token="s3cret")) as server:
            with pytest.raises(InvalidStatus) as refused:
                await connect(server.ws_url, additional_headers={"Authorization": "Bearer wrong"})
            agent = await provider(server, GPT, token="s3cret")
            await agent.stop()
    assert refused.value.response.status_code == 401
    assert [e["event"] for e in logs if e["log_level"] == "warning"] == ["provider.refused"]
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
