"""Batched chunk frames over real loopback websockets: the agent's link batches a step's chunks for a
coordinator that takes them (and not for an older one), and the real coordinator serves every good row
of a hostile batch while a bad row, a row for a request that is not this provider's, a duplicate or an
out-of-order seq, and a batch over its row limit cost nothing but themselves."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace

import httpx
import structlog.testing

from agent.link.client import Link
from agent.wire.chunk_batch import BATCHED_CHUNKS_MINOR, MAX_BATCH_ROWS
from agent.wire.frames import ChunkDelta, InferenceAccepted, InferenceComplete, InferenceResponseChunk, UsageReport
from agent.wire.protocol import PROTOCOL_VERSION, encode
from agent.testing.fleet.sse import stream_chat
from tests.link_support import MiniCoordinator, RecordingHandler
from tests.provider_support import FAST, GEMMA, GPT, Reply, coordinator, eventually, provider


async def no_sleep(_: float) -> None:
    await asyncio.sleep(0)


async def linked(minor: int) -> tuple[MiniCoordinator, RecordingHandler, Link, asyncio.Task]:
    mini = MiniCoordinator(registered_fields={"protocol_version": PROTOCOL_VERSION, "protocol_minor": minor})
    await mini.start()
    handler = RecordingHandler()
    link = Link(mini.url, "good-token", handler, sleep=no_sleep)
    task = asyncio.create_task(link.run())
    await handler.until(lambda: handler.events)  # registered
    for rid in ("a", "b", "c"):
        await mini.send({"type": "inference_request", "request_id": rid, "model": "gpt-oss-tiny",
                         "body": {"messages": [{"role": "user", "content": "hi"}]}})
    await handler.until(lambda: len(handler.events) == 4)
    return mini, handler, link, task


def one_step(link: Link) -> None:
    """What the handler does for one engine step of three rows, then one request's end, in one turn."""
    for rid in ("a", "b", "c"):
        link.send(link.session.chunk(rid, f"{rid}!", num_tokens=1))
    link.send(link.session.complete("a", 3, 1, "stop"))


async def close(mini: MiniCoordinator, link: Link, task: asyncio.Task) -> None:
    link.stop()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await mini.stop()


async def test_a_coordinator_that_takes_batches_gets_one_frame_for_the_step_and_the_end_after_it():
    mini, handler, link, task = await linked(BATCHED_CHUNKS_MINOR)
    one_step(link)
    batch = await mini.next_frame("inference_response_chunks")
    assert [(row["request_id"], row["seq"], row["delta"]["content"]) for row in batch["chunks"]] == [
        ("a", 1, "a!"), ("b", 1, "b!"), ("c", 1, "c!")]
    assert (await mini.next_frame("inference_complete"))["num_chunks"] == 1
    assert mini.drain_frames("inference_response_chunk") == []
    await close(mini, link, task)


async def test_an_older_coordinator_gets_the_same_chunks_one_frame_each():
    mini, handler, link, task = await linked(BATCHED_CHUNKS_MINOR - 1)
    one_step(link)
    singles = [await mini.next_frame("inference_response_chunk") for _ in range(3)]
    assert [row["request_id"] for row in singles] == ["a", "b", "c"]
    await mini.next_frame("inference_complete")
    assert mini.drain_frames("inference_response_chunks") == []
    await close(mini, link, task)


def row(rid: str, seq: int, text: str) -> dict:
    return json.loads(encode(InferenceResponseChunk(request_id=rid, seq=seq, delta=ChunkDelta(content=text),
                                                    num_tokens=1)))


def batch(*rows: dict) -> str:
    return json.dumps({"type": "inference_response_chunks", "chunks": list(rows)})


def done(rid: str, num_chunks: int) -> InferenceComplete:
    return InferenceComplete(request_id=rid, usage=UsageReport(prompt_tokens=11, completion_tokens=num_chunks),
                             finish_reason="stop", num_chunks=num_chunks)


async def test_a_hostile_batch_costs_only_its_bad_rows_and_every_other_stream_reads_as_sent():
    async with coordinator(FAST) as server:
        hostile = await provider(server, GPT, reply=Reply(silent=True))
        other = await provider(server, GEMMA, reply=Reply(chunks=("not", " yours"), chunk_delay_s=0.2))
        async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as http:
            def ask(model: str, text: str):
                return asyncio.create_task(stream_chat(http, {"model": model, "messages": [
                    {"role": "user", "content": text}], "max_tokens": 32}, key="local"))
            streams = [ask(GPT.id, "one"), ask(GPT.id, "two"), ask(GEMMA.id, "three")]
            await eventually(lambda: len(hostile.received) == 2 and other.received, what="three requests placed")
            a, b = (r.request_id for r in hostile.received)
            theirs = other.received[0].request_id
            for rid in (a, b):
                await hostile.send(InferenceAccepted(request_id=rid, prompt_tokens=11))
            bad = row(b, 1, "x") | {"seq": -1}
            await hostile.send(batch(row(a, 1, "Hel"), bad, row(b, 1, "Ok"), row("nobody", 1, "?"),
                                     row(theirs, 1, " injected")))
            await hostile.send(batch(row(a, 1, "Hel"), row(a, 3, "lo"), row(b, 2, "!"), row(a, 2, "late")))
            await hostile.send(batch(*[row(a, 9, "x")] * (MAX_BATCH_ROWS + 1)))  # over the row limit: refused
            await eventually(lambda: len(hostile.errors) >= 2, what="the bad row and the oversized batch answered")
            await hostile.send(done(a, 2))
            await hostile.send(done(b, 2))
            one, two, three = await asyncio.gather(*streams)
        assert (one.text, one.finish_reason) == ("Hello", "stop")  # the duplicate and the late seq dropped
        assert (two.text, two.finish_reason) == ("Ok!", "stop")
        assert (three.text, three.finish_reason) == ("not yours", "stop")  # another provider's row never reached it
        assert {a, b} & set(hostile.cancels) == set() and {"nobody", theirs} <= set(hostile.cancels)
        row_error = next(e for e in hostile.errors if e.get("request_id") == b)
        assert row_error["code"] == "invalid_field" and row_error["field"] == "chunks.1.seq"
        assert any(e.get("field") == "chunks" for e in hostile.errors)  # the oversized batch, named
        assert server.coordinator.router.registry.get(hostile.provider_id) is not None  # the link stayed up
        assert server.coordinator.accounts.num_holds == 0
        await hostile.stop()
        await other.stop()


async def test_a_flood_of_bad_rows_closes_the_link_as_a_flood_of_bad_frames_would():
    settings = replace(FAST, max_bad_frames=5)
    async with coordinator(settings) as server:
        hostile = await provider(server, GPT, reply=Reply(silent=True))
        bad = row("r", 1, "x") | {"seq": -1}
        await hostile.send(batch(*[bad] * 50))
        await eventually(lambda: server.coordinator.router.registry.get(hostile.provider_id) is None,
                         what="the flooding link closed")
        assert len(hostile.errors) <= 6
        await hostile.stop()



async def test_rows_decoded_hot_and_rows_left_to_the_protocol_make_one_stream_in_order():
    """Text-only rows take the link's msgspec decoder (wire/hot_chunks.py); a row with a field of a newer
    release, or with logprobs, takes parse_message's. One stream of both reads as sent, and the unknown field is
    still logged by name."""
    async with coordinator(FAST) as server:
        peer = await provider(server, GPT, reply=Reply(silent=True))
        async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as http:
            stream = asyncio.create_task(stream_chat(http, {"model": GPT.id, "messages": [
                {"role": "user", "content": "mixed"}], "max_tokens": 32}, key="local"))
            await eventually(lambda: peer.received, what="the request placed")
            rid = peer.received[0].request_id
            await peer.send(InferenceAccepted(request_id=rid, prompt_tokens=11))
            with structlog.testing.capture_logs() as logs:
                await peer.send(batch(row(rid, 1, "Hel")))  # hot
                await peer.send(batch(row(rid, 2, "l") | {"priority": 3}))  # a newer release's field: parse_message
                await peer.send(json.dumps(row(rid, 3, "o")))  # a single chunk frame, hot
                await peer.send(batch(row(rid, 4, "!") | {"logprobs": [{"token": "!", "logprob": -0.1}]}))
                await peer.send(done(rid, 4))
                reply = await stream
        assert (reply.text, reply.finish_reason) == ("Hello!", "stop")
        assert peer.errors == []
        assert [e["field"] for e in logs if e["event"] == "provider.unknown_field"] == [
            "InferenceResponseChunk.priority"]
        assert server.coordinator.accounts.num_holds == 0
        await peer.stop()
