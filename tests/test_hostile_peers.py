"""The hostile peers the soak uses (agent/testing/hostile) do what they claim, against the real coordinator
over real loopback websockets and HTTP, each with short deadlines."""

from __future__ import annotations

from dataclasses import replace

import httpx
import pytest
from websockets.exceptions import InvalidStatus

from agent.testing.fleet.sse import StreamResult, stream_chat
from agent.testing.hostile.flooder import Flooder, largest_register
from agent.testing.hostile.inflater import UsageInflater
from agent.testing.hostile.sinkhole import Sinkhole, SinkholeMode
from agent.wire.protocol import MAX_REGISTER_FRAME_BYTES, encode
from tests.provider_support import FAST, coordinator, eventually

SHORT = replace(FAST, first_token_timeout_s=0.3, stall_timeout_s=0.3, max_attempts=1, provider_token="secret")
BODY = {"model": "gpt-oss-20b", "max_tokens": 16, "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": "hello"}]}


async def chat(server, into: StreamResult | None = None) -> StreamResult:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as http:
        return await stream_chat(http, BODY, key="local", into=into)


async def test_a_silent_sinkhole_accepts_and_never_answers_so_the_client_gets_a_502():
    async with coordinator(SHORT) as server:
        sink = await Sinkhole(server.ws_url, token="secret", mode=SinkholeMode.SILENT).start()
        result = await chat(server)
        assert result.status == 502 and len(sink.received) == 1
        await sink.stop()


async def test_a_sinkhole_that_sends_one_empty_chunk_still_meets_the_first_token_deadline():
    async with coordinator(SHORT) as server:
        sink = await Sinkhole(server.ws_url, token="secret", mode=SinkholeMode.EMPTY_THEN_SILENT).start()
        result = await chat(server)
        assert result.status == 502 and result.content == [] and len(sink.received) == 1
        await sink.stop()


async def test_a_trickling_sinkhole_cannot_stretch_the_first_token_deadline_and_hears_the_cancel():
    async with coordinator(SHORT) as server:
        sink = await Sinkhole(server.ws_url, token="secret", mode=SinkholeMode.TRICKLE, trickle_interval_s=0.05).start()
        result = await chat(server)  # empty chunks every 0.05 s, a 0.3 s first-token deadline: they do not reset it
        assert result.status == 502 and result.content == []
        await eventually(lambda: len(sink.cancels) == 1, what="the cancel after the deadline")
        await sink.stop()


async def test_an_inflaters_claims_are_clamped_to_max_tokens_and_counted():
    async with coordinator(SHORT) as server:
        inflater = await UsageInflater(server.ws_url, token="secret", claimed_tokens_per_chunk=4).start()
        result = await chat(server)
        assert result.status == 200 and result.finish_reason == "length" and len(result.content) == 4
        assert result.usage["completion_tokens"] == BODY["max_tokens"]
        assert result.usage["prompt_tokens"] < 2**31
        await inflater.stop()


async def test_a_hostile_peer_with_the_wrong_credential_is_refused_before_the_websocket_opens():
    async with coordinator(SHORT) as server:
        with pytest.raises(InvalidStatus):
            await Sinkhole(server.ws_url, token="wrong").start()


def test_the_flooders_register_is_the_largest_the_register_limit_lets_through():
    assert len(encode(largest_register("flooder"))) <= MAX_REGISTER_FRAME_BYTES


async def test_a_flooders_frames_are_counted_as_bad_and_it_is_never_placed():
    async with coordinator(SHORT) as server:
        flooder = await Flooder(server.ws_url, token="secret", num_links=2, max_frames_per_s=400).start()
        bad = server.coordinator.metrics.bad_frames
        await eventually(lambda: sum(s.value for m in bad.collect() for s in m.samples if s.name.endswith("_total")) > 50,
                         what="bad frames counted")
        async with httpx.AsyncClient(base_url=server.base_url, timeout=5) as http:
            assert (await http.get("/health")).status_code == 200
        result = await chat(server)
        assert result.status == 503  # registered many times, heartbeated never: nothing to place on
        assert flooder.num_registers_sent > 0 and flooder.num_error_frames > 0
        await flooder.stop()
