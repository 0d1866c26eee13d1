"""logprobs through the coordinator, from a scripted provider over the real websocket: OpenAI's shapes for an
honest one, and for a hostile one a refusal (an error to the client, or the frame refused) that never crashes."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from tests.provider_support import FAST, GPT, Reply, coordinator, eventually, provider


def entry(token: str, logprob: float, num_top: int = 2) -> dict:
    alternatives = [{"token": token, "logprob": logprob, "bytes": list(token.encode())}]
    alternatives += [{"token": f"alt{i}", "logprob": logprob - 1 - i, "bytes": None} for i in range(num_top - 1)]
    return {"token": token, "logprob": logprob, "bytes": list(token.encode()), "top_logprobs": alternatives[:num_top]}


HONEST = Reply(chunks=("Hel", "lo"), num_tokens=1, chunk_logprobs=[[entry("Hel", -0.5)], [entry("lo", -0.25)]])


def client(server) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{server.base_url}/v1", api_key="local", max_retries=0)


def ask(**fields) -> dict:
    return {"model": GPT.id, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8, **fields}


async def test_an_honest_providers_logprobs_reach_the_client_in_openais_shape_streamed_and_not():
    async with coordinator(FAST) as server:
        agent = await provider(server, GPT, reply=HONEST)
        whole = await client(server).chat.completions.create(**ask(logprobs=True, top_logprobs=2))
        content = whole.choices[0].logprobs.content
        assert [(e.token, e.logprob, len(e.top_logprobs)) for e in content] == [("Hel", -0.5, 2), ("lo", -0.25, 2)]
        assert content[0].bytes == list(b"Hel") and whole.choices[0].logprobs.refusal is None
        stream = await client(server).chat.completions.create(**ask(logprobs=True, top_logprobs=2), stream=True)
        streamed = [e.token async for chunk in stream if chunk.choices and chunk.choices[0].logprobs
                    for e in chunk.choices[0].logprobs.content]
        assert streamed == ["Hel", "lo"]
        unasked = await client(server).chat.completions.create(**ask())
        assert unasked.choices[0].logprobs is None and unasked.choices[0].message.content == "Hello"
        assert agent.received[0].body.top_logprobs == 2 and agent.received[2].body.logprobs is None
        await agent.stop()


async def test_an_entry_held_back_with_a_possible_marker_may_arrive_on_a_later_chunk():
    # The agent holds a token that may start markup: its chunk goes out without an entry, the entry comes later.
    async with coordinator(FAST) as server:
        agent = await provider(server, GPT, reply=Reply(chunks=("Hel", "", "lo"), num_tokens=1, chunk_logprobs=[
            [entry("Hel", -0.5)], [], [entry("<", -0.75), entry("lo", -0.25)]]))
        result = await client(server).chat.completions.create(**ask(logprobs=True, top_logprobs=2))
        assert [e.token for e in result.choices[0].logprobs.content] == ["Hel", "<", "lo"]
        await agent.stop()


@pytest.mark.parametrize("chunk_logprobs, problem", [
    ([[entry("Hel", -0.5), entry("x", -1.0)], [entry("lo", -0.25)]],
     "2 logprobs entries where the stream has 1 tokens without one"),
    ([[entry("Hel", -0.5, num_top=1)], [entry("lo", -0.25)]], "an entry with 1 alternatives where 2 were asked"),
])
async def test_logprobs_that_do_not_fit_the_chunk_or_the_request_end_the_stream_with_an_error(chunk_logprobs, problem):
    async with coordinator(FAST) as server:
        # The second chunk comes later: the attempt is still open when the first one is refused, so it is cancelled.
        agent = await provider(server, GPT, reply=Reply(chunks=("Hel", "lo"), num_tokens=1, chunk_delay_s=0.5,
                                                        chunk_logprobs=chunk_logprobs))
        with pytest.raises(openai.APIStatusError) as refused:
            await client(server).chat.completions.create(**ask(logprobs=True, top_logprobs=2))
        assert refused.value.status_code == 502 and problem in refused.value.message
        async with httpx.AsyncClient(base_url=server.base_url, timeout=5) as http:
            text = (await http.post("/v1/chat/completions", json=ask(logprobs=True, top_logprobs=2,
                                                                     stream=True))).text
        assert "provider_invalid_logprobs" in text and text.endswith("data: [DONE]\n\n")
        await eventually(lambda: server.coordinator.accounts.num_holds == 0 and len(agent.cancels) == 2)
        await agent.stop()


@pytest.mark.parametrize("bad, field", [
    ({"logprob": 0.5}, "logprob"),
    ({"logprob": float("nan")}, "logprob"),
    ({"token": "x" * 300}, "token"),
    ({"bytes": [256]}, "bytes"),
    ({"top_logprobs": [{"token": "a", "logprob": -1.0}] * 21}, "top_logprobs"),
])
async def test_a_chunk_with_impossible_logprobs_is_refused_as_a_frame_and_the_coordinator_goes_on(bad, field):
    hostile = [[entry("Hel", -0.5) | bad], [entry("lo", -0.25)]]
    async with coordinator(FAST) as server:
        agent = await provider(server, GPT, reply=Reply(chunks=("Hel", "lo"), num_tokens=1, chunk_logprobs=hostile))
        result = await client(server).chat.completions.create(**ask(logprobs=True, top_logprobs=2))
        assert result.choices[0].message.content == "lo"  # the refused chunk is not shown (nor billed)
        assert [e.token for e in result.choices[0].logprobs.content] == ["lo"]
        await eventually(lambda: bool(agent.errors))
        assert agent.errors[0]["type"] == "error" and field in json.dumps(agent.errors[0])
        await agent.stop()


async def test_top_logprobs_above_twenty_is_a_400_naming_the_parameter_before_any_provider_sees_it():
    async with coordinator(FAST) as server:
        agent = await provider(server, GPT)
        with pytest.raises(openai.BadRequestError) as refused:
            await client(server).chat.completions.create(**ask(logprobs=True, top_logprobs=21))
        assert refused.value.body["param"] == "top_logprobs"
        with pytest.raises(openai.BadRequestError) as oversized:
            await client(server).chat.completions.create(**ask(logit_bias={str(i): 1 for i in range(301)}))
        assert oversized.value.body["param"] == "logit_bias"
        assert agent.received == []
        await agent.stop()


async def test_include_usage_adds_a_null_usage_to_every_chunk_and_a_last_chunk_with_no_choices():
    async with coordinator(FAST) as server:
        agent = await provider(server, GPT)
        async with httpx.AsyncClient(base_url=server.base_url, timeout=5) as http:
            asked = await http.post("/v1/chat/completions", json=ask(stream=True,
                                                                     stream_options={"include_usage": True}))
            plain = await http.post("/v1/chat/completions", json=ask(stream=True))
        chunks = [json.loads(line[6:]) for line in asked.text.splitlines() if line.startswith("data: {")]
        assert all(chunk["usage"] is None for chunk in chunks[:-1]) and len(chunks) >= 3
        assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 2
        assert not any("usage" in json.loads(line[6:]) for line in plain.text.splitlines() if line.startswith("data: {"))
        stream = await client(server).chat.completions.create(**ask(), stream=True, stream_options={"include_usage": True})
        last = [chunk async for chunk in stream][-1]
        assert last.choices == [] and last.usage.total_tokens == last.usage.prompt_tokens + 2
        await agent.stop()
