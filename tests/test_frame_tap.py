"""A provider link's valid frames taken as uvicorn's websocket protocol reads them (http/frame_tap.py), on a real
uvicorn with scripted providers on real loopback websockets: the same streams as by the link's task, in order
with the bad frames the tap leaves to it, and the same answers to a hostile peer."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode

from agent.coordinator.http.frame_tap import FRAME_TAP, FrameTap, frame_tap
from agent.wire.frames import ChunkDelta, ToolCallDelta
from agent.wire.protocol import encode
from tests.dialect_support import openai_client
from tests.provider_support import GPT, Reply, ScriptedProvider, Slot, coordinator, entry_for, eventually, provider

MESSAGES = [{"role": "user", "content": "Count."}]


def tapped(server) -> float:
    return server.coordinator.metrics.registry.get_sample_value("darkbloom_tapped_provider_frames_total") or 0.0


async def stream(server, **ask) -> tuple[str, str, str | None]:
    """The stream's text, its tool-call arguments, its finish reason."""
    chunks = await openai_client(server).chat.completions.create(model=GPT.id, messages=MESSAGES, stream=True, **ask)
    text, arguments, finish = "", "", None
    async for chunk in chunks:
        if chunk.choices:
            choice = chunk.choices[0]
            text += choice.delta.content or ""
            arguments += "".join(call.function.arguments or "" for call in choice.delta.tool_calls or ())
            finish = choice.finish_reason or finish
    return text, arguments, finish


def test_the_tap_is_offered_only_by_the_scope_that_carries_it():
    tap = FrameTap()
    assert frame_tap({"type": "websocket", "extensions": {FRAME_TAP: tap}}) is tap
    assert frame_tap({"type": "websocket", "extensions": {}}) is None
    assert frame_tap({"type": "websocket"}) is None


async def test_a_links_valid_frames_are_taken_by_the_tap_and_the_streams_read_the_same():
    words = [f"w{i} " for i in range(16)]
    calls = [ChunkDelta(tool_calls=(ToolCallDelta(index=0, id="call_a", name="get_weather", arguments='{"city": '),)),
             ChunkDelta(tool_calls=(ToolCallDelta(index=0, arguments='"Paris"}'),))]
    async with coordinator() as server:
        agent = await provider(server, GPT, reply=Reply(chunks=words, chunk_delay_s=0.005, num_tokens=1))
        assert await stream(server) == ("".join(words), "", "stop")
        agent.reply = Reply(chunks=calls, chunk_delay_s=0.005, num_tokens=1)  # not hot: parse_message's, tapped too
        assert await stream(server) == ("", '{"city": "Paris"}', "tool_calls")
        await agent.stop()
        # Every frame of both answers: the accepted, the chunks, the complete (and the heartbeats).
        await eventually(lambda: tapped(server) >= 2 * 2 + len(words) + len(calls),
                         what="the tapped frames counted at the link's end")
        assert server.coordinator.accounts.num_holds == 0


@dataclass
class OneWriteProvider(ScriptedProvider):
    """Writes each answer's chunks and its end in one write to the socket, so the coordinator reads them in one
    go; its chunk `bad_at` goes as a batch beside a bad row (a negative seq), which the tap leaves to the link's
    read loop to answer."""
    bad_at: int = 2
    held: list[str] = field(default_factory=list)

    async def send(self, frame: Any) -> None:
        data = frame if isinstance(frame, str) else encode(frame)
        kind = json.loads(data)["type"]
        if kind == "inference_response_chunk":
            if len(self.held) == self.bad_at:
                bad = json.loads(data) | {"request_id": "nobody", "seq": -1}
                data = json.dumps({"type": "inference_response_chunks", "chunks": [json.loads(data), bad]})
            self.held.append(data)
        elif kind == "inference_complete":
            frames = [Frame(Opcode.TEXT, text.encode()).serialize(mask=True) for text in (*self.held, data)]
            self.held.clear()
            self.ws.transport.write(b"".join(frames))
        else:
            await super().send(frame)


async def test_frames_the_tap_leaves_to_the_links_task_keep_their_place_among_the_tapped_ones():
    # The batch with a bad row goes by the link's read loop (its good row on to the router, its bad one
    # answered), and the chunks read in the same go right behind it must not pass it: one that did would make
    # the batch's good row stale (a lower seq), and its text would be missing here.
    words = ["Look", "ing ", "up. ", "Do", "ne."]
    async with coordinator() as server:
        agent = await OneWriteProvider(server.ws_url, models=[entry_for(GPT)], slots={GPT.id: Slot()},
                                       reply=Reply(chunks=words, num_tokens=1)).start()
        for _ in range(3):
            assert await stream(server) == ("".join(words), "", "stop")
        await eventually(lambda: len(agent.errors) == 3, what="each bad row answered")
        assert all(error["field"] == "chunks.1.seq" for error in agent.errors)
        await agent.stop()
        await eventually(lambda: tapped(server) >= 3, what="the tapped frames counted at the link's end")
        assert server.coordinator.accounts.num_holds == 0


async def test_a_hot_looking_text_frame_of_invalid_utf8_is_closed_with_1007_and_the_coordinator_serves_on():
    async with coordinator() as server:
        hostile = await provider(server, GPT)
        frame = b'{"type":"inference_response_chunk","request_id":"r1","seq":1,"delta":{"content":"\xff"}}'
        await hostile.ws.send(frame, text=True)  # a text frame whose bytes are not UTF-8
        with pytest.raises(ConnectionClosed):
            async with asyncio.timeout(5):
                while True:
                    await hostile.ws.recv()
        assert hostile.ws.close_code == 1007  # uvicorn's answer, as without the tap
        await hostile.stop()
        agent = await provider(server, GPT, reply=Reply(chunks=["fine"], num_tokens=1))
        assert await stream(server) == ("fine", "", "stop")
        await agent.stop()
