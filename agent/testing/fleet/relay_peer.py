"""Lightweight scripted providers for measuring a coordinator alone (scripts/bench_relay.py).

Each is one websocket client that registers one warm model, heartbeats at the interval the coordinator
names, accepts every request at once and streams it from a script: one token per row every `step_s`,
all its rows in one `inference_response_chunks` frame (or one frame per row, `batched=False`, as an
older agent sends them), then `inference_complete`. Frames are built as plain JSON, not pydantic models,
so hundreds of them fit in one process and the coordinator is what the measurement sees.

    peers = await start_peers(url, count, batched=True, step_s=0.05)   -> once every one is registered
    await stop_peers(peers)

Public names: RelayPeer, start_peers, stop_peers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass, field

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from agent.catalog import load_catalog
from agent.testing.model_entry import GIB, entry_for
from agent.wire.frames import Hardware, Register
from agent.wire.protocol import MAX_FRAME_BYTES, PROTOCOL_VERSION, encode

MODEL = "gpt-oss-20b"
TOKEN_TEXT = " tok"
BUDGET_BYTES = 64 * GIB  # so KV never decides where a stream goes: rows do
REGISTER_TIMEOUT_S = 30.0  # for the `registered` answer, as for the handshake (open_timeout)


@dataclass(slots=True)
class _Row:
    request_id: str
    remaining: int
    seq: int = 0


@dataclass
class RelayPeer:
    url: str
    batched: bool = True
    step_s: float = 0.05
    register_timeout_s: float = REGISTER_TIMEOUT_S
    ws: ClientConnection | None = None
    rows: dict[str, _Row] = field(default_factory=dict)
    num_heartbeats: int = 0
    num_frames: int = 0
    _interval_s: float = 2.0
    _tasks: list[asyncio.Task] = field(default_factory=list)
    _wake: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> RelayPeer:
        self.ws = await connect(self.url, additional_headers={"Authorization": "Bearer bench"},
                                max_size=MAX_FRAME_BYTES, ping_interval=None, compression=None, open_timeout=30)
        register = Register(protocol_version=PROTOCOL_VERSION, agent_version="relay-peer",
                            hardware=Hardware(chip="Bench M4", memory_bytes=128 * GIB, gpu_cores=40),
                            models=(entry_for(load_catalog()[MODEL]),))
        await self.ws.send(encode(register))
        async with asyncio.timeout(self.register_timeout_s):  # a coordinator that never answers leaves this peer out
            registered = json.loads(await self.ws.recv())
        if registered.get("type") != "registered":
            raise RuntimeError(f"not registered: {registered}")
        self._interval_s = registered["heartbeat_interval_s"]
        await self._heartbeat()
        self._tasks = [asyncio.create_task(self._quietly(loop)) for loop in (self._receive, self._beat, self._steps)]
        return self

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.ws is not None:
            await self.ws.close()

    @staticmethod
    async def _quietly(loop) -> None:
        with contextlib.suppress(ConnectionClosed):
            await loop()

    async def _heartbeat(self) -> None:
        self.num_heartbeats += 1
        running = len(self.rows)
        slot = {"model": MODEL, "state": "running" if running else "idle", "num_running": running,
                "kv_budget_bytes": BUDGET_BYTES, "kv_reserved_bytes": 0, "kv_used_bytes": 0,
                "expected_output_ratio": 0.7}
        memory = {"total_bytes": 128 * GIB, "available_bytes": 64 * GIB, "cap_bytes": 115 * GIB}
        await self.ws.send(json.dumps({"type": "heartbeat", "seq": self.num_heartbeats, "slots": [slot],
                                       "memory": memory}))

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            await self._heartbeat()

    async def _receive(self) -> None:
        async for data in self.ws:
            frame = json.loads(data)
            kind = frame.get("type")
            if kind == "inference_request":
                rid = frame["request_id"]
                tokens = frame["body"].get("max_completion_tokens") or frame["body"].get("max_tokens") or 16
                self.rows[rid] = _Row(rid, tokens)
                await self.ws.send(json.dumps({"type": "inference_accepted", "request_id": rid, "prompt_tokens": 8}))
                self._wake.set()
            elif kind == "cancel":
                self.rows.pop(frame["request_id"], None)

    async def _steps(self) -> None:
        """One engine step every step_s while any row runs: a token for each row, then the rows that ended."""
        while True:
            if not self.rows:
                self._wake.clear()
                await self._wake.wait()
            await asyncio.sleep(self.step_s)
            chunks, ended = [], []
            for row in list(self.rows.values()):
                row.seq += 1
                row.remaining -= 1
                chunks.append({"type": "inference_response_chunk", "request_id": row.request_id, "seq": row.seq,
                               "delta": {"content": TOKEN_TEXT, "reasoning": "", "tool_calls": []}, "num_tokens": 1,
                               "logprobs": None})
                if row.remaining <= 0:
                    ended.append(self.rows.pop(row.request_id))
            await self._send_chunks(chunks)
            for row in ended:
                await self.ws.send(json.dumps({"type": "inference_complete", "request_id": row.request_id,
                                               "usage": {"prompt_tokens": 8, "completion_tokens": row.seq},
                                               "finish_reason": "stop", "num_chunks": row.seq, "ttft_s": None}))

    async def _send_chunks(self, chunks: list[dict]) -> None:
        if self.batched and chunks:
            self.num_frames += 1
            await self.ws.send(json.dumps({"type": "inference_response_chunks", "chunks": chunks}))
            return
        for chunk in chunks:
            self.num_frames += 1
            await self.ws.send(json.dumps(chunk))


async def start_peers(url: str, count: int, *, batched: bool = True, step_s: float = 0.05,
                      max_connecting: int = 32, register_timeout_s: float = REGISTER_TIMEOUT_S) -> list[RelayPeer]:
    """Up to `count` registered peers (at most `max_connecting` handshakes at once, so the accept queue
    holds); a peer the coordinator does not register in time is left out, so a saturated coordinator is
    measured as such instead of failing the run."""
    gate = asyncio.Semaphore(max_connecting)

    async def one() -> RelayPeer | None:
        async with gate:
            peer = RelayPeer(url, batched=batched, step_s=step_s, register_timeout_s=register_timeout_s)
            try:
                return await peer.start()
            except (OSError, TimeoutError, ConnectionClosed, RuntimeError):
                if peer.ws is not None:
                    await peer.ws.close()
                return None

    return [peer for peer in await asyncio.gather(*(one() for _ in range(count))) if peer is not None]


async def stop_peers(peers: list[RelayPeer]) -> None:
    await asyncio.gather(*(peer.stop() for peer in peers), return_exceptions=True)
