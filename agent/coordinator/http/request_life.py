"""One consumer request's life over HTTP, whatever dialect it speaks (chat completions, Responses, Messages,
legacy completions): authenticate, precheck, read and translate the body onto the one internal request
(ChatCompletionBody), hold and route it (core.Coordinator.open), wait for the first token with keep-alives,
then hand the flow's events to the dialect's writer.

It is a plain ASGI app rather than a Starlette endpoint because it must notice the client leaving at any
moment (queued, waiting for the first token, streaming): the work runs in its own task beside a watcher of
`http.disconnect`; if the watcher wins, the work is cancelled and the flow closed as a client disconnect
(cancel to the agent, hold released). Errors before the first token are HTTP errors in the dialect's shape
(the response has not started), except for a stream that has waited past sse_keepalive_after_s: it has
begun with keep-alive comments, so its error ends the stream, as errors after the first token do.

A dialect subclasses RequestLife and says what differs: where the key is (`credentials`), how a body
becomes the internal request (`parse`), its error shape (`error_response`, `stream_error`), and how the
flow's Token / Finished / Broken events are written (`stream`, `complete`).

Public names: RequestLife, Translated, read_body, send_part, send_response, response_headers, fill_record,
SSE_HEADERS, KEEPALIVE, MAX_BODY_BYTES, CAPPED_HEADER.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import structlog
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from agent.coordinator.billing.accounts import Account, ReleaseReason
from agent.coordinator.core import Coordinator
from agent.coordinator.errors import ApiError, RequestTimeout, RequestTooLarge
from agent.coordinator.flow import RequestFlow, release_reason
from agent.coordinator.http.access_log import AccessRecord, access_record
from agent.coordinator.http.body_writer import BodyWriter, body_writer
from agent.coordinator.image_inputs import ImageFacts
from agent.wire.chat_body import ChatCompletionBody
from agent.wire.protocol import MAX_FRAME_BYTES

log = structlog.get_logger("agent.coordinator.http.request_life")
MAX_BODY_BYTES = MAX_FRAME_BYTES - 64 * 1024  # room for the frame's envelope around the body
CAPPED_HEADER = "x-darkbloom-max-tokens-capped"  # the max_tokens a request was capped to by its balance
KEEPALIVE = b": waiting for the first token\n\n"  # an SSE comment
SSE_HEADERS = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache"),
               (b"x-accel-buffering", b"no")]


@dataclass(frozen=True, slots=True)
class Translated:
    """A request as the flow runs it (`body`, the one internal request) and as its dialect wrote it (`source`,
    which the dialect's writer echoes: a Responses request's tools, instructions, ...)."""

    body: ChatCompletionBody
    source: Any = None


class RequestLife:
    """The request life every dialect shares; the methods under "what a dialect says" are its own."""

    def __init__(self, coordinator: Coordinator) -> None:
        self.coordinator = coordinator

    # -- what a dialect says
    def credentials(self, request: Request) -> str | None:
        """The `Authorization` value to authenticate with."""
        return request.headers.get("authorization")

    def parse(self, raw: bytes, request: Request) -> Translated:
        raise NotImplementedError

    def error_response(self, exc: ApiError) -> Response:
        return exc.response()

    def stream_error(self, exc: ApiError) -> bytes:
        """The end of a stream that began with keep-alives and then failed before its first token."""
        raise NotImplementedError

    def headers(self, flow: RequestFlow, body: ChatCompletionBody) -> dict[str, str]:
        """The answer's own headers (a stream's and a whole answer's)."""
        return response_headers(flow, body)

    def open(self, account: Account, body: ChatCompletionBody, images: tuple[ImageFacts, ...] = ()) -> Any:
        """A RequestFlow, or Choices for n > 1 (a dialect that serves n > 1 serves Choices in `serve`)."""
        if (body.n or 1) == 1:
            return self.coordinator.open(account, body, images=images)
        return self.coordinator.open_choices(account, body, images)

    async def serve(self, flow: Any, request: Translated, send: Send, *, writer: BodyWriter | None = None) -> None:
        await self._serve(flow, request, send, writer=writer)

    async def stream(self, flow: RequestFlow, request: Translated, send: Send, *, is_open: bool,
                     writer: BodyWriter | None = None) -> None:
        """`writer`: the response's direct body writer when the server offers one (direct_stream.py's fast path)."""
        raise NotImplementedError

    async def complete(self, flow: RequestFlow, request: Translated, send: Send) -> None:
        raise NotImplementedError

    # -- the life
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        coordinator, model = self.coordinator, ""
        request, record = Request(scope, receive), access_record(scope)
        try:
            account = coordinator.authenticate(self.credentials(request))
            record.account_id = account.id
            # What the key (or, in open mode, the address) already decides is refused before the body is read.
            coordinator.precheck(account, request.client.host if request.client else None)
            translated = self.parse(await read_body(request, coordinator.settings.body_read_timeout_s), request)
            model = record.model = translated.body.model
            body, images = await coordinator.inline_images(translated.body)  # a bad image: a 400 before any hold
            translated = Translated(body, translated.source)
            flow = self.open(account, body, images)
        except ApiError as exc:
            coordinator.metrics.request(model, exc.outcome)
            await self.error_response(exc)(scope, receive, send)
            return
        except ClientDisconnect:
            return
        record.request_id = flow.exchange.request_id
        work = asyncio.create_task(self.serve(flow, translated, send, writer=body_writer(scope)))
        gone = asyncio.create_task(_until_disconnect(receive))
        try:
            try:
                done, _ = await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
            except asyncio.CancelledError:  # the server is shutting down
                await _cancel(work, gone)
                flow.close(ReleaseReason.SHUTDOWN)
                raise
            if work in done:
                await _cancel(gone)
                work.result()
                return
            await _cancel(work)
            flow.close(ReleaseReason.CLIENT_DISCONNECT)
            coordinator.metrics.request(model, "client_disconnect")
            log.info("request.client_gone", request_id=flow.exchange.request_id, model=model)
        finally:
            flow.close(ReleaseReason.PROVIDER_ERROR)  # a no-op unless something above went wrong
            fill_record(record, flow)

    async def _serve(self, flow: RequestFlow, request: Translated, send: Send, *,
                     writer: BodyWriter | None = None) -> None:
        metrics, body = self.coordinator.metrics, request.body
        started, is_open = asyncio.ensure_future(flow.start()), False
        try:
            is_open = body.stream and await self._keep_alive(started, flow, body, send)
            await started
        except ApiError as exc:
            flow.close(release_reason(exc))
            metrics.request(body.model, exc.outcome)
            if is_open:  # the stream began with keep-alive comments: the error ends it, as one after a token would
                await send_part(send, self.stream_error(exc), more=False)
            else:
                await send_response(send, self.error_response(exc))
            return
        finally:
            if not started.done():  # the client left, or the server stops: the attempts stop with us
                started.cancel()
        metrics.ttft.labels(body.model).observe(max(0.0, self.coordinator.clock() - flow.exchange.created_at))
        if body.stream:
            await self.stream(flow, request, send, is_open=is_open, writer=writer)
        else:
            await self.complete(flow, request, send)

    async def _keep_alive(self, started: asyncio.Future, flow: RequestFlow, body: ChatCompletionBody,
                          send: Send) -> bool:
        """A stream still waiting (queued, or a long prefill) after sse_keepalive_after_s begins with its
        headers and an SSE comment every sse_keepalive_interval_s, so the client and the proxies between
        see it is alive (clients ignore comments, as OpenRouter's `: OPENROUTER PROCESSING`). Quick refusals
        (429, 503) keep their status codes. True when the response has begun."""
        settings = self.coordinator.settings
        await asyncio.wait({started}, timeout=settings.sse_keepalive_after_s)
        if started.done():
            return False
        await self.start_stream(flow, body, send)
        while not started.done():
            await send_part(send, KEEPALIVE)
            await asyncio.wait({started}, timeout=settings.sse_keepalive_interval_s)
        return True

    async def start_stream(self, flow: RequestFlow, body: ChatCompletionBody, send: Send) -> None:
        headers = [(name.encode(), value.encode()) for name, value in self.headers(flow, body).items()]
        await send({"type": "http.response.start", "status": 200, "headers": [*SSE_HEADERS, *headers]})


def fill_record(record: AccessRecord, flow: RequestFlow) -> None:
    record.provider_id = flow.exchange.provider_id
    if flow.charged is not None:
        record.prompt_tokens, record.completion_tokens = flow.charged.prompt_tokens, flow.charged.completion_tokens
    if flow.first_token_at is not None:
        record.ttft_s = max(0.0, flow.first_token_at - flow.exchange.created_at)


def response_headers(flow: RequestFlow, body: ChatCompletionBody) -> dict[str, str]:
    """x-request-id, and when the balance capped max_tokens (core.open), the cap: finish_reason `length`
    alone would not tell a capped request from one that used all the output it asked for."""
    headers = {"x-request-id": flow.exchange.request_id}
    sent = flow.exchange.body.output_limit
    if sent is not None and sent != body.output_limit:
        headers[CAPPED_HEADER] = str(sent)
    return headers


async def read_body(request: Request, timeout_s: float) -> bytes:
    """The body, refused from its Content-Length before reading, once it outgrows what one inference_request
    frame can carry, or when it does not arrive within timeout_s (a slow client holds no slot for long)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise RequestTooLarge(f"the request body of {declared} bytes exceeds {MAX_BODY_BYTES} bytes, the most one "
                              "request can carry to a provider")
    parts, size = [], 0
    try:
        async with asyncio.timeout(timeout_s):
            async for part in request.stream():
                size += len(part)
                if size > MAX_BODY_BYTES:
                    raise RequestTooLarge(f"the request body exceeds {MAX_BODY_BYTES} bytes, the most one request "
                                          "can carry to a provider")
                parts.append(part)
    except TimeoutError:
        raise RequestTimeout(f"the request body did not arrive within {timeout_s:g} s; send it at once") from None
    return b"".join(parts)


async def _until_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _cancel(*tasks: asyncio.Task) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def send_part(send: Send, data: bytes, *, more: bool = True) -> None:
    await send({"type": "http.response.body", "body": data, "more_body": more})


async def send_response(send: Send, response: Response) -> None:
    await send({"type": "http.response.start", "status": response.status_code, "headers": response.raw_headers})
    await send({"type": "http.response.body", "body": response.body, "more_body": False})
