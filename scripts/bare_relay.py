#!/usr/bin/env python3
"""The least a relay written in Python spends a token: the floor under the coordinator's own relay figure.

    scripts/bare_relay.py      -> prints its base URL, serves until stdin closes (as bench_relay's coordinator role)

Not a coordinator, and not for anything but scripts/bench_relay_floor.py. It speaks just enough of the
provider protocol and of the chat API for bench_relay's scripted providers and light consumers, with the
same libraries the coordinator's relay uses, and does nothing a coordinator must do on top:

    the link     uvloop; each provider's websocket through websockets' sans-I/O protocol (as uvicorn's
                 websockets-sansio link); a `register` answered `registered`, heartbeats read and dropped
    a request    read whole (content-length), its JSON parsed, sent to the provider with the fewest rows
    a frame      decoded by agent.wire.hot_chunks.decode_hot (the coordinator's hot decoder); each row's text
                 written at once to its stream as one chunk of a chunked body holding one SSE event, in the
                 coordinator's bytes for it (the role chunk first; the finish, usage and [DONE] at the end)

No keys, no admission, no queue, no seq or usage checks, no meter, no stall deadlines, no backpressure (a
write never waits), no metrics, no logs, no billing. A row for a stream it does not know is dropped. What the
coordinator spends beyond this, per token, is the price of everything a coordinator of strangers must do.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
import time
from pathlib import Path

import uvloop
from websockets.frames import Opcode
from websockets.http11 import Request
from websockets.server import ServerProtocol

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.wire.hot_chunks import HotChunks, decode_hot  # noqa: E402
from agent.wire.protocol import MAX_FRAME_BYTES  # noqa: E402

MODEL = "gpt-oss-20b"
HEAD_LIMIT_BYTES = 65_536  # of a request's head and body: the scripted consumers send a few hundred
_quote = json.encoder.encode_basestring  # as the coordinator's SSE encoding (http/openai_format.py)
_SSE_HEAD = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\ncache-control: no-cache\r\n"
             b"connection: close\r\ntransfer-encoding: chunked\r\n\r\n")


class Stream:
    """One consumer's streamed completion: its transport, the text around each content delta, its count. As the
    coordinator writes them, the role chunk goes with the first token, and the finish, usage and [DONE] together."""

    __slots__ = ("transport", "head", "tail", "num_tokens", "completion_id", "created", "role")

    def __init__(self, transport: asyncio.Transport, completion_id: str) -> None:
        self.transport, self.completion_id, self.num_tokens = transport, completion_id, 0
        self.created = int(time.time())
        self.head = (f'data: {{"id":"{completion_id}","object":"chat.completion.chunk","created":{self.created},'
                     f'"model":"{MODEL}","system_fingerprint":null,"choices":[{{"index":0,"delta":{{"content":')
        self.tail = '},"logprobs":null,"finish_reason":null}],"usage":null}\n\n'
        self.role = f'{self.head}""{self.tail}'.replace('{"content":""', '{"role":"assistant","content":""', 1)

    def write(self, data: bytes) -> None:
        self.transport.write(b"%x\r\n%b\r\n" % (len(data), data))

    def start(self) -> None:
        self.transport.write(_SSE_HEAD)

    def token(self, text: str) -> None:
        self.num_tokens += 1
        event = f"{self.head}{_quote(text)}{self.tail}"
        if self.role:
            event, self.role = self.role + event, ""
        self.write(event.encode())

    def end(self, prompt_tokens: int) -> None:
        envelope = {"id": self.completion_id, "object": "chat.completion.chunk", "created": self.created,
                    "model": MODEL, "system_fingerprint": None}
        finish = {**envelope, "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}],
                  "usage": None}
        usage = {**envelope, "choices": [], "usage": {"prompt_tokens": prompt_tokens,
                                                       "completion_tokens": self.num_tokens,
                                                       "total_tokens": prompt_tokens + self.num_tokens}}
        events = "".join(f"data: {json.dumps(event, separators=(',', ':'))}\n\n" for event in (finish, usage))
        data = f"{self.role}{events}data: [DONE]\n\n".encode()
        self.transport.write(b"%x\r\n%b\r\n0\r\n\r\n" % (len(data), data))
        self.transport.close()


class Relay:
    """The providers' links and the streams under way, by request id."""

    def __init__(self) -> None:
        self.providers: list[ProviderLink] = []
        self.streams: dict[str, Stream] = {}
        self._ids = itertools.count()

    def open(self, transport: asyncio.Transport, body: dict) -> None:
        if not self.providers:
            transport.write(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            transport.close()
            return
        request_id = f"{next(self._ids):024x}"  # as long as the coordinator's ids
        provider = min(self.providers, key=lambda link: link.num_rows)
        stream = self.streams[request_id] = Stream(transport, f"chatcmpl-{request_id}")
        stream.start()
        provider.num_rows += 1
        provider.send({"type": "inference_request", "request_id": request_id,
                       "body": {"model": MODEL, "max_tokens": body.get("max_tokens") or 16}})

    def rows(self, frame) -> None:
        streams = self.streams
        for row in frame.chunks if isinstance(frame, HotChunks) else (frame,):
            stream = streams.get(row.request_id)
            if stream is not None:
                stream.token(row.delta.content)

    def complete(self, provider: ProviderLink, frame: dict) -> None:
        stream = self.streams.pop(frame.get("request_id"), None)
        if stream is not None:
            provider.num_rows -= 1
            stream.end(int((frame.get("usage") or {}).get("prompt_tokens") or 0))


class ProviderLink:
    """One provider's websocket, over websockets' sans-I/O protocol."""

    def __init__(self, relay: Relay, transport: asyncio.Transport) -> None:
        self.relay, self.transport, self.num_rows = relay, transport, 0
        self.protocol = ServerProtocol(max_size=MAX_FRAME_BYTES)

    def send(self, frame: dict) -> None:
        self.protocol.send_text(json.dumps(frame).encode())
        self._flush()

    def _flush(self) -> None:
        for data in self.protocol.data_to_send():
            if data:
                self.transport.write(data)
            else:
                self.transport.close()

    def receive(self, data: bytes) -> None:
        self.protocol.receive_data(data)
        for event in self.protocol.events_received():
            if isinstance(event, Request):
                self.protocol.send_response(self.protocol.accept(event))
                self.relay.providers.append(self)
            elif event.opcode is Opcode.TEXT:
                self._message(event.data)
        self._flush()

    def _message(self, data: bytes) -> None:
        hot = decode_hot(data)
        if hot is not None:
            self.relay.rows(hot)
            return
        frame = json.loads(data)
        kind = frame.get("type")
        if kind == "register":
            self.send({"type": "registered", "heartbeat_interval_s": 2.0})
        elif kind == "inference_complete":
            self.relay.complete(self, frame)

    def lost(self) -> None:
        if self in self.relay.providers:
            self.relay.providers.remove(self)


class Connection(asyncio.Protocol):
    """A TCP connection: a provider's websocket (a GET with an upgrade) or a consumer's chat request."""

    def __init__(self, relay: Relay) -> None:
        self.relay, self.buffer, self.link = relay, b"", None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.link is not None:
            self.link.receive(data)
            return
        self.buffer += data
        head, found, body = self.buffer.partition(b"\r\n\r\n")
        if not found:
            if len(self.buffer) > HEAD_LIMIT_BYTES:
                self.transport.close()
            return
        if head.startswith(b"GET "):
            self.link = ProviderLink(self.relay, self.transport)
            self.link.receive(self.buffer)
            return
        length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")[1:]
                       if line.lower().startswith(b"content-length:")), 0)
        if len(body) >= length:
            self.buffer = b""
            self.relay.open(self.transport, json.loads(body[:length]))

    def connection_lost(self, exc: Exception | None) -> None:
        if self.link is not None:
            self.link.lost()


async def serve() -> None:
    relay = Relay()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Connection(relay), "127.0.0.1", 0, backlog=4096)
    port = server.sockets[0].getsockname()[1]
    print(f"http://127.0.0.1:{port}", flush=True)
    await loop.run_in_executor(None, sys.stdin.read)  # until the parent closes it
    server.close()


if __name__ == "__main__":
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(serve())
