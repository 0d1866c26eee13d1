"""A streaming consumer that costs next to nothing, for load on a coordinator (scripts/bench_relay.py).

httpx parses every SSE event; hundreds of streams of it would take the cores the coordinator is being
measured on. This client writes one HTTP/1.1 request on its own connection and reads the response as
bytes until `data: [DONE]`, keeping only when the first content arrived and the final usage event's
`completion_tokens` (the coordinator's own count of what it relayed).

    result = await stream_once(host, port, body)   -> LightResult(tokens, ttft_s, seconds, ok)

Public names: LightResult, stream_once.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from dataclasses import dataclass

_USAGE = re.compile(rb'"completion_tokens":(\d+)')
_CONTENT = re.compile(rb'"content":"[^"]')  # a delta with text (the role chunk's content is "")
_TAIL_BYTES = 4096  # the usage event and [DONE] fit in it


@dataclass(frozen=True, slots=True)
class LightResult:
    tokens: int
    ttft_s: float | None
    seconds: float
    ok: bool


async def stream_once(host: str, port: int, body: dict, *, key: str = "bench", timeout_s: float = 300) -> LightResult:
    started = time.perf_counter()
    payload = json.dumps({**body, "stream": True, "stream_options": {"include_usage": True}}).encode()
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nhost: {host}:{port}\r\nauthorization: Bearer {key}\r\n"
            f"content-type: application/json\r\ncontent-length: {len(payload)}\r\nconnection: close\r\n\r\n").encode()
    ttft, tail = None, b""
    try:
        async with asyncio.timeout(timeout_s):
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(head + payload)
            while data := await reader.read(65536):
                if ttft is None and _CONTENT.search(data):
                    ttft = time.perf_counter() - started
                tail = (tail + data)[-_TAIL_BYTES:]
                if b"data: [DONE]" in tail:
                    break
            writer.close()
    except (OSError, TimeoutError):
        return LightResult(0, ttft, time.perf_counter() - started, False)
    found = _USAGE.findall(tail)
    ok = b"data: [DONE]" in tail and bool(found)
    return LightResult(int(found[-1]) if found else 0, ttft, time.perf_counter() - started, ok)
