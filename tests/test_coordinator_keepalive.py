"""A stream that waits long for its first token shows it is alive: SSE comments, then the tokens or an SSE error
(issue 17 point 4). Quick refusals keep their HTTP status."""

from __future__ import annotations

from dataclasses import replace

import httpx
import openai
import pytest

from tests.provider_support import FAST, GPT, Reply, coordinator, provider

MESSAGES = [{"role": "user", "content": "Say hello."}]
KEEPALIVE = replace(FAST, sse_keepalive_after_s=0.1, sse_keepalive_interval_s=0.1)


async def test_a_slow_first_token_is_preceded_by_keepalive_comments_and_the_sdk_reads_the_stream():
    async with coordinator(KEEPALIVE) as server:
        slow = await provider(server, GPT, reply=Reply(first_token_delay_s=0.6))
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as http:
            response = await http.post("/v1/chat/completions", json={"model": GPT.id, "messages": MESSAGES,
                                                                     "stream": True})
        assert response.status_code == 200 and response.headers["x-request-id"]
        head, _, rest = response.text.partition("data: ")
        assert head.count(": waiting for the first token\n\n") >= 2  # comments, before any data
        assert '"content":"Hello' in rest and rest.endswith("data: [DONE]\n\n")
        client = openai.AsyncOpenAI(base_url=server.base_url + "/v1", api_key="local", max_retries=0)
        stream = await client.chat.completions.create(model=GPT.id, messages=MESSAGES, stream=True)
        assert "".join([c.choices[0].delta.content or "" async for c in stream if c.choices]) == "Hello, world"
        await slow.stop()


async def test_a_failure_after_the_keepalives_began_ends_the_stream_with_an_sse_error_and_no_charge():
    settings = replace(KEEPALIVE, first_token_base_s=0.5, max_attempts=1)
    async with coordinator(settings) as server:
        sinkhole = await provider(server, GPT, reply=Reply(hang_after=0))
        client = openai.AsyncOpenAI(base_url=server.base_url + "/v1", api_key="local", max_retries=0)
        with pytest.raises(openai.APIError, match="first token"):
            stream = await client.chat.completions.create(model=GPT.id, messages=MESSAGES, stream=True)
            [chunk async for chunk in stream]
        assert server.coordinator.accounts.num_holds == 0
        await sinkhole.stop()


async def test_a_quick_refusal_keeps_its_http_status_even_for_a_stream():
    async with coordinator(KEEPALIVE) as server:  # no provider: a 503 at once, before any keepalive
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as http:
            response = await http.post("/v1/chat/completions", json={"model": GPT.id, "messages": MESSAGES,
                                                                     "stream": True})
        assert response.status_code == 503 and response.json()["error"]["message"]
