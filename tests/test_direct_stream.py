"""The relay's fast path (http/direct_stream.py, http/body_writer.py): a stream's tokens written to the client as
the router takes the provider's frame, on a real uvicorn (httptools) with scripted providers on real websockets.
The same requests over h11, which offers no body writer, are the reference: every token by the stream's task."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
from dataclasses import replace

import httpx
import pytest
import uvicorn

from agent.coordinator.http.body_writer import body_writer
from agent.coordinator.http.head_deadline import HAS_HTTPTOOLS, with_head_deadline
from agent.wire.frames import ChunkDelta, ToolCallDelta
from tests.dialect_support import anthropic_client, openai_client
from tests.provider_support import FAST, GPT, Reply, coordinator, eventually, provider

pytestmark = pytest.mark.skipif(not HAS_HTTPTOOLS, reason="the body writer is offered by the httptools protocol")

MESSAGES = [{"role": "user", "content": "Count."}]
WORDS = [f"w{i} " for i in range(24)]
SPACED = Reply(chunks=WORDS, chunk_delay_s=0.01, num_tokens=1)  # a frame at a time: the stream's task waits between


def direct_tokens(server) -> float:
    return server.coordinator.metrics.registry.get_sample_value("darkbloom_direct_stream_tokens_total",
                                                                {"model": GPT.id}) or 0.0


async def chat_text(server, **ask) -> tuple[str, str | None]:
    stream = await openai_client(server).chat.completions.create(model=GPT.id, messages=MESSAGES, stream=True, **ask)
    text, finish = "", None
    async for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            finish = chunk.choices[0].finish_reason or finish
    return text, finish


@pytest.mark.parametrize("parser", ["httptools", "h11"])
async def test_a_chat_stream_reads_the_same_whether_its_tokens_went_straight_out_or_by_its_task(parser):
    async with coordinator(replace(FAST, http_parser=parser)) as server:
        agent = await provider(server, GPT, reply=SPACED)
        assert await chat_text(server) == ("".join(WORDS), "stop")
        if parser == "httptools":
            assert direct_tokens(server) >= len(WORDS) // 2  # most came while the task waited
        else:
            assert direct_tokens(server) == 0  # h11 offers no writer: all by the task
        assert server.coordinator.accounts.num_holds == 0
        await agent.stop()


async def test_responses_and_messages_streams_written_straight_out_carry_every_token_in_their_events():
    async with coordinator() as server:
        agent = await provider(server, GPT, reply=SPACED)
        async with openai_client(server).responses.stream(model=GPT.id, input="Count.") as stream:
            deltas = [event.delta async for event in stream if event.type == "response.output_text.delta"]
            response = await stream.get_final_response()
        assert "".join(deltas) == response.output_text == "".join(WORDS)
        after_responses = direct_tokens(server)
        assert after_responses >= len(WORDS) // 2
        async with anthropic_client(server).messages.stream(model=GPT.id, max_tokens=100,
                                                            messages=MESSAGES) as stream:
            texts = [event.delta.text async for event in stream
                     if event.type == "content_block_delta" and event.delta.type == "text_delta"]
            message = await stream.get_final_message()
        assert "".join(texts) == message.content[0].text == "".join(WORDS)
        assert message.usage.output_tokens == len(WORDS)
        assert direct_tokens(server) >= after_responses + len(WORDS) // 2
        await agent.stop()


async def test_a_chunk_past_max_tokens_taken_straight_out_ends_the_stream_as_length_and_cancels_the_provider():
    async with coordinator() as server:
        agent = await provider(server, GPT, reply=SPACED)
        text, finish = await chat_text(server, max_tokens=6)
        assert (text, finish) == ("".join(WORDS[:6]), "length")
        assert direct_tokens(server) >= 3
        await eventually(lambda: bool(agent.cancels), what="the cancel at the provider")
        assert server.coordinator.accounts.num_holds == 0
        await agent.stop()


async def test_an_invalid_tool_call_taken_straight_out_ends_the_stream_with_an_error_and_no_more_text():
    calls = [ChunkDelta(tool_calls=(ToolCallDelta(index=0, id="call_a", name="get_weather"),)),
             ChunkDelta(tool_calls=(ToolCallDelta(index=0, arguments='{"city": '),)),
             ChunkDelta(tool_calls=(ToolCallDelta(index=3, arguments="{}"),)),  # index 3 before 1 and 2
             ChunkDelta(tool_calls=(ToolCallDelta(index=0, arguments='"Paris"}'),))]
    async with coordinator() as server:
        agent = await provider(server, GPT, reply=Reply(chunks=calls, chunk_delay_s=0.02, num_tokens=1))
        stream = await openai_client(server).chat.completions.create(model=GPT.id, messages=MESSAGES, stream=True)
        arguments = ""
        with pytest.raises(Exception, match="invalid tool call"):
            async for chunk in stream:
                for call in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
                    arguments += call.function.arguments or ""
        assert arguments == '{"city": '  # the pieces before the bad one, not the one after it
        assert direct_tokens(server) >= 1
        await eventually(lambda: bool(agent.cancels), what="the cancel at the provider")
        assert server.coordinator.accounts.num_holds == 0
        await agent.stop()


async def test_a_client_that_stops_reading_holds_up_no_other_stream_and_gets_all_its_text_in_order_later():
    # ~6 MB each: past what loopback's socket buffers hold (a send buffer grows to 4 MB) and uvicorn's write limit
    big = ["x" * 10_000 + f"<{i}>" for i in range(600)]
    async with coordinator() as server:
        agent = await provider(server, GPT, reply=Reply(chunks=big, chunk_delay_s=0.001, num_tokens=1))
        stalled = socket.socket()
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)  # before connecting: the window's scale
        stalled.connect(("127.0.0.1", server.port))
        body = (b'{"model":"%s","messages":[{"role":"user","content":"Count."}],"stream":true}' % GPT.id.encode())
        stalled.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer local\r\n"
                        b"content-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
        text, finish = await chat_text(server)  # the reading stream, while the other's client reads nothing
        assert (text, finish) == ("".join(big), "stop")
        received = await asyncio.to_thread(_read_until_done, stalled)
        stalled.close()
        shown = "".join(_contents(received))
        assert shown == "".join(big)  # every token once, in order: merged while its client was backed up
        assert direct_tokens(server) < 2 * len(big) - 2  # some of the stalled stream's went by its task
        await eventually(lambda: server.coordinator.accounts.num_holds == 0, what="both settled")
        await agent.stop()


def _read_until_done(sock: socket.socket) -> bytes:
    sock.settimeout(30)
    data = b""
    while not data.endswith(b"0\r\n\r\n"):
        part = sock.recv(1 << 16)
        if not part:
            break
        data += part
    return data


def _contents(raw: bytes) -> list[str]:
    """The content deltas of a raw chunked SSE response (the chunk framing stripped)."""
    _, _, chunked = raw.partition(b"\r\n\r\n")
    body, rest = b"", chunked
    while rest:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            break
        body, rest = body + rest[:size], rest[size + 2:]
    return [json.loads(m)["choices"][0]["delta"].get("content") or ""
            for m in re.findall(rb"^data: (\{.*\})$", body, re.M) if json.loads(m).get("choices")]


async def _serve(app, *, httptools: bool) -> tuple[uvicorn.Server, asyncio.Task, int]:
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off",
                            http=with_head_deadline(10.0, 64 * 1024, httptools=httptools))
    server = uvicorn.Server(config)
    server.capture_signals = contextlib.nullcontext  # the test run keeps its signals
    task = asyncio.create_task(server.serve())
    await eventually(lambda: server.started, what="the server started")
    return server, task, server.servers[0].sockets[0].getsockname()[1]


@pytest.mark.parametrize("httptools", [True, False], ids=["httptools", "h11"])
async def test_the_body_writer_writes_chunks_only_between_the_response_start_and_its_end(httptools):
    seen: dict[str, object] = {}

    async def app(scope, receive, send):
        writer = seen["writer"] = body_writer(scope)
        if writer is None:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"by ASGI only", "more_body": False})
            return
        seen["before_start"] = writer.ready()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        seen["after_start"] = writer.ready()
        writer.write(b"straight ")
        writer.write(b"")  # nothing: no empty chunk, which would end a chunked body
        await send({"type": "http.response.body", "body": b"then ", "more_body": True})
        writer.write(b"out ")
        await send({"type": "http.response.body", "body": b"end", "more_body": False})
        seen["after_end"] = writer.ready()

    server, task, port = await _serve(app, httptools=httptools)
    try:
        async with httpx.AsyncClient() as http:
            first = await http.get(f"http://127.0.0.1:{port}/")
            second = await http.get(f"http://127.0.0.1:{port}/")  # the same kept-alive connection goes on
    finally:
        server.should_exit = True
        await task
    if not httptools:
        assert seen["writer"] is None and first.text == "by ASGI only"
        return
    assert first.text == second.text == "straight then out end"
    assert (seen["before_start"], seen["after_start"], seen["after_end"]) == (False, True, False)
