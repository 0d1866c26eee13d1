"""An OpenAI-compatible streaming client on httpx, keeping what a load test and a chaos test look at.

    result = await stream_chat(http, body, key=...)
    result.status, result.content, result.num_chunks, result.finish_reason, result.error, result.is_done,
    result.ttft_s, result.latency_s, result.retry_after, result.error_code, result.request_id

Pass `into=StreamResult()` to keep what arrived when the caller gives up (a timeout cancels the call).

Only a base URL and a key: nothing here knows the coordinator's internals.

Public names: StreamResult, stream_chat.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

import httpx


@dataclass(slots=True)
class StreamResult:
    status: int = 0
    content: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    finish_reason: str | None = None
    error: dict | None = None  # the error object: the HTTP error body, or the in-stream error event
    error_code: str | None = None
    is_done: bool = False  # saw data: [DONE]
    ttft_s: float | None = None
    latency_s: float = 0.0
    retry_after: str | None = None
    usage: dict | None = None
    exception: str | None = None  # a client-side failure (connection refused, reset, timeout)
    request_id: str | None = None  # the coordinator's x-request-id (sent with the first token)

    @property
    def text(self) -> str:
        return "".join(self.content)

    @property
    def num_chunks(self) -> int:
        return len(self.content)


async def stream_chat(http: httpx.AsyncClient, body: dict, *, key: str, on_chunk=None,
                      into: StreamResult | None = None) -> StreamResult:
    """POST /v1/chat/completions with stream=true and read it to the end (or the first failure)."""
    result, started = into if into is not None else StreamResult(), time.perf_counter()
    headers = {"Authorization": f"Bearer {key}"}
    try:
        async with http.stream("POST", "/v1/chat/completions", json={**body, "stream": True},
                               headers=headers) as response:
            result.status = response.status_code
            result.retry_after = response.headers.get("retry-after")
            result.request_id = response.headers.get("x-request-id")
            if response.status_code != 200:
                data = json.loads(await response.aread())
                result.error = data.get("error")
                result.error_code = (result.error or {}).get("code")
                return result
            async for line in response.aiter_lines():
                if not line.startswith("data: "):
                    continue
                payload = line[6:]
                if payload == "[DONE]":
                    result.is_done = True
                    continue
                _take(result, json.loads(payload), started, on_chunk)
    except (httpx.HTTPError, OSError) as exc:
        result.exception = f"{type(exc).__name__}: {exc}"
    finally:
        result.latency_s = time.perf_counter() - started
    return result


def _take(result: StreamResult, event: dict, started: float, on_chunk) -> None:
    if "error" in event:
        result.error = event["error"]
        result.error_code = result.error.get("code")
        return
    if event.get("usage"):
        result.usage = event["usage"]
    for choice in event.get("choices", ()):
        delta = choice.get("delta") or {}
        if delta.get("content") or delta.get("reasoning"):
            if result.ttft_s is None:
                result.ttft_s = time.perf_counter() - started
            if delta.get("content"):
                result.content.append(delta["content"])
                if on_chunk is not None:
                    on_chunk(result)
            if delta.get("reasoning"):
                result.reasoning.append(delta["reasoning"])
        if choice.get("finish_reason"):
            result.finish_reason = choice["finish_reason"]
