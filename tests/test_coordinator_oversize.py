"""A request too large for every provider of its model (issue 17 point 2) is a 400 naming the parameter, with
the coordinator's prompt estimate, over real HTTP with the openai SDK (which retries a 503 but not a 400);
503 stays for "no provider right now"."""

from __future__ import annotations

import httpx
import openai
import pytest

from agent.wire.frames import SlotState
from tests.provider_support import GEMMA, GPT, coordinator, entry_for, provider

MESSAGES = [{"role": "user", "content": "Say hello."}]


def client(server, max_retries: int = 0) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=server.base_url + "/v1", api_key="local", max_retries=max_retries)


async def test_a_max_tokens_no_provider_could_ever_serve_is_a_400_naming_it_with_the_prompt_estimate():
    async with coordinator() as server:
        agent = await provider(server, GPT)
        with pytest.raises(openai.BadRequestError) as refused:
            await client(server, max_retries=2).chat.completions.create(model=GPT.id, messages=MESSAGES,
                                                                        max_tokens=1_000_000)
        body = refused.value.body
        assert body["param"] == "max_tokens" and body["code"] == "context_length_exceeded"
        assert "about 108 tokens" in body["message"] and "131072" in body["message"]
        assert "prompt 1 " not in body["message"]
        assert agent.received == []
        await agent.stop()


async def test_a_prompt_longer_than_every_context_is_a_400_naming_the_messages():
    async with coordinator() as server:
        agent = await provider(server, GPT)
        huge = [{"role": "user", "content": "word " * 200_000}]  # a floor of 125,000 tokens, a context of 131,072
        with pytest.raises(openai.BadRequestError) as refused:
            await client(server).chat.completions.create(model=GPT.id, messages=huge, max_tokens=10_000)
        assert refused.value.body["param"] == "max_tokens"  # the prompt alone fits: max_tokens is what to lower
        huger = [{"role": "user", "content": "word " * 220_000}]
        with pytest.raises(openai.BadRequestError) as too_long:
            await client(server).chat.completions.create(model=GPT.id, messages=huger, max_tokens=16)
        assert too_long.value.body["param"] == "messages" and "shorten the messages" in too_long.value.message
        await agent.stop()


async def test_a_request_that_fits_no_machine_stays_a_503_with_retry_after():
    async with coordinator() as server:
        small = await provider(server, GEMMA, state=SlotState.COLD,
                               models=[entry_for(GEMMA, fits=False, fit_reason="needs 24.33 GiB, cap 14.00 GiB")])
        async with httpx.AsyncClient(base_url=server.base_url) as http:
            response = await http.post("/v1/chat/completions", json={"model": GEMMA.id, "messages": MESSAGES})
        assert response.status_code == 503 and response.headers["retry-after"] == "2"
        assert "does not fit this machine" in response.json()["error"]["message"]
        await small.stop()
