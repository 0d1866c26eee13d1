"""Deadlines a provider cannot stretch: the first-token window by prompt and prefill rate, empty chunks that are
not tokens, the stall and stream deadlines, and the total time of retries (issue 11 point 4)."""

from __future__ import annotations

import json
import time
from dataclasses import replace

import httpx
import openai
import pytest

from agent.coordinator.deadlines import first_token_window_s, stream_deadline
from agent.coordinator.settings import CoordinatorSettings
from tests.provider_support import FAST, GIB, GPT, Reply, coordinator, eventually, provider

MESSAGES = [{"role": "user", "content": "Say hello."}]
DEFAULTS = CoordinatorSettings()


def client(server) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=server.base_url + "/v1", api_key="local", max_retries=0)


# ---- the arithmetic ------------------------------------------------------------------------------------

def test_the_first_token_window_grows_with_the_prompt_at_the_reported_rate():
    short = first_token_window_s(100, 1_000.0, DEFAULTS)
    long = first_token_window_s(100_000, 1_000.0, DEFAULTS)
    assert short == pytest.approx(30.0 + 100 / 1_000 * 2)
    assert long == pytest.approx(30.0 + 100_000 / 1_000 * 2) and long > 180  # the 100k prompt of issue 17 fits


def test_a_provider_claiming_a_slow_prefill_gets_no_more_than_the_floor_rate_allows():
    claimed_slow = first_token_window_s(1_000, 0.001, DEFAULTS)
    assert claimed_slow == pytest.approx(30.0 + 1_000 / DEFAULTS.min_prefill_tps * 2)
    assert first_token_window_s(10**9, 0.001, DEFAULTS) == DEFAULTS.first_token_timeout_s  # and never past the cap


def test_each_image_adds_its_encoding_time_and_the_cap_still_holds():
    two_images = first_token_window_s(1_000, 1_000.0, DEFAULTS, num_images=2)
    assert two_images == pytest.approx(30.0 + 1_000 / 1_000 * 2 + 2 * DEFAULTS.first_token_s_per_image)
    assert first_token_window_s(1_000, 1_000.0, DEFAULTS, num_images=10**6) == DEFAULTS.first_token_timeout_s


def test_a_slot_with_no_reported_rate_is_given_the_assumed_one():
    assert first_token_window_s(2_000, None, DEFAULTS) == pytest.approx(30.0 + 2_000 / 200 * 2)


def test_the_stream_deadline_allows_max_tokens_at_the_floor_rate_but_never_past_the_request_limit():
    assert stream_deadline(100.0, 90.0, 16, DEFAULTS) == pytest.approx(100.0 + 60.0 + 8.0)
    assert stream_deadline(100.0, 90.0, 10**6, DEFAULTS) == pytest.approx(90.0 + DEFAULTS.max_request_s)


# ---- over the real websocket ---------------------------------------------------------------------------

async def test_a_sinkhole_claiming_a_huge_prompt_is_given_up_after_the_short_window_of_the_real_prompt():
    settings = replace(FAST, first_token_base_s=0.3, first_token_timeout_s=60.0)
    async with coordinator(settings) as server:
        sinkhole = await provider(server, GPT, reply=Reply(hang_after=0, prompt_tokens=10**7))
        honest = await provider(server, GPT)
        await honest.set_slot(GPT.id, reserved_bytes=4 * GIB)  # the sinkhole looks best
        started = time.monotonic()
        result = await client(server).chat.completions.create(model=GPT.id, messages=MESSAGES)
        assert result.choices[0].message.content == "Hello, world"
        assert time.monotonic() - started < 5.0  # the window of a ~20-token prompt, not of 10^7 claimed tokens
        assert len(honest.received) == 1
        await eventually(lambda: sinkhole.cancels == [result.id], what="the sinkhole's attempt cancelled")
        for agent in (sinkhole, honest):
            await agent.stop()


async def test_an_empty_chunk_is_not_a_first_token_so_a_provider_that_then_goes_silent_is_retried():
    settings = replace(FAST, first_token_base_s=0.3)
    async with coordinator(settings) as server:
        teaser = await provider(server, GPT, reply=Reply(chunks=["", "never sent"], hang_after=1, num_tokens=1))
        honest = await provider(server, GPT)
        await honest.set_slot(GPT.id, reserved_bytes=4 * GIB)
        result = await client(server).chat.completions.create(model=GPT.id, messages=MESSAGES)
        assert result.choices[0].message.content == "Hello, world"
        assert result.usage.completion_tokens == 2  # the teaser's empty token died with its attempt
        await eventually(lambda: teaser.cancels == [result.id], what="the given-up attempt cancelled")
        for agent in (teaser, honest):
            await agent.stop()


async def test_empty_chunks_before_the_first_text_are_charged_with_it():
    async with coordinator() as server:
        honest = await provider(server, GPT, reply=Reply(chunks=["", "", "Hi"], num_tokens=1))
        result = await client(server).chat.completions.create(model=GPT.id, messages=MESSAGES)
        assert result.choices[0].message.content == "Hi" and result.usage.completion_tokens == 3
        await honest.stop()


async def test_empty_chunks_before_the_first_token_cannot_pass_max_tokens():
    settings = replace(FAST, first_token_base_s=5.0)
    async with coordinator(settings) as server:
        flooder = await provider(server, GPT, reply=Reply(chunks=[""] * 50, num_tokens=1))
        honest = await provider(server, GPT)
        await honest.set_slot(GPT.id, reserved_bytes=4 * GIB)
        result = await client(server).chat.completions.create(model=GPT.id, messages=MESSAGES, max_tokens=8)
        assert result.choices[0].message.content == "Hello, world" and result.usage.completion_tokens == 2
        await eventually(lambda: flooder.cancels == [result.id], what="the given-up attempt cancelled")
        for agent in (flooder, honest):
            await agent.stop()


async def test_empty_chunks_after_the_first_token_do_not_keep_a_stalled_stream_alive():
    settings = replace(FAST, stall_timeout_s=0.5)
    async with coordinator(settings) as server:
        trickler = await provider(server, GPT, reply=Reply(chunks=["Hi"] + [""] * 2_000, chunk_delay_s=0.02,
                                                           num_tokens=0))
        started = time.monotonic()
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as http:
            response = await http.post("/v1/chat/completions", json={"model": GPT.id, "messages": MESSAGES,
                                                                     "stream": True})
        assert time.monotonic() - started < 10.0  # 2,000 empty chunks 20 ms apart would have taken 40 s
        assert '"content":"Hi"' in response.text and "stalled" in response.text
        assert response.text.count('"delta":{"content"') == 1  # after the role chunk, no empty deltas were relayed
        await eventually(lambda: bool(trickler.cancels), what="the cancel at the provider")
        assert server.coordinator.accounts.num_holds == 0
        await trickler.stop()


async def test_a_stream_that_goes_silent_after_streaming_past_the_stall_time_ends_one_stall_time_after_its_last_text():
    # The flow's one alarm is set at the first wait and rings before the stall while text still flows: it must
    # set itself again for the moved deadline, neither cutting the live stream nor missing the silence after it.
    settings = replace(FAST, stall_timeout_s=0.4)
    async with coordinator(settings) as server:
        quitter = await provider(server, GPT, reply=Reply(chunks=["a"] * 40, chunk_delay_s=0.03, hang_after=30))
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as http:
            async with http.stream("POST", "/v1/chat/completions", json={"model": GPT.id, "messages": MESSAGES,
                                                                         "stream": True}) as response:
                last_text_at, shown, text = None, "", ""
                async for line in response.aiter_lines():
                    text += line + "\n"
                    chunk = json.loads(line.removeprefix("data: ")) if line.startswith("data: {") else {}
                    if content := (chunk.get("choices") or [{}])[0].get("delta", {}).get("content"):
                        last_text_at, shown = time.monotonic(), shown + content
                ended_at = time.monotonic()
        assert shown == "a" * 30 and "stalled" in text  # all 30 (0.9 s: past the first alarm), then the stall
        assert 0.3 <= ended_at - last_text_at < 3.0  # one stall time after the last text, not at the first alarm
        await eventually(lambda: bool(quitter.cancels), what="the cancel at the provider")
        assert server.coordinator.accounts.num_holds == 0
        await quitter.stop()


async def test_a_stream_that_trickles_text_forever_ends_at_its_deadline():
    settings = replace(FAST, stall_timeout_s=0.5, max_request_s=1.0)
    async with coordinator(settings) as server:
        trickler = await provider(server, GPT, reply=Reply(chunks=["a"] * 2_000, chunk_delay_s=0.05))
        with pytest.raises(openai.APIError, match="deadline"):
            stream = await client(server).chat.completions.create(model=GPT.id, messages=MESSAGES, stream=True)
            [chunk async for chunk in stream]
        await eventually(lambda: bool(trickler.cancels), what="the cancel at the provider")
        assert server.coordinator.accounts.num_holds == 0
        await trickler.stop()


async def test_retries_stop_once_the_request_has_waited_the_total_first_token_time():
    settings = replace(FAST, first_token_base_s=0.4, first_token_total_s=0.6, max_attempts=10)
    async with coordinator(settings) as server:
        sinkholes = [await provider(server, GPT, reply=Reply(hang_after=0)) for _ in range(4)]
        started = time.monotonic()
        with pytest.raises(openai.InternalServerError, match="no first token after"):
            await client(server).chat.completions.create(model=GPT.id, messages=MESSAGES)
        assert time.monotonic() - started < 5.0
        assert sum(len(s.received) for s in sinkholes) == 2  # 0.4 s each: the third would start past 0.6 s
        assert server.coordinator.accounts.num_holds == 0
        for agent in sinkholes:
            await agent.stop()
