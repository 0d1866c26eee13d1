"""The consumer HTTP API: /v1/chat/completions (streaming and not), /v1/models and /v1/models/{id}
(model_routes.py), /v1/models/capacity, /v1/me (account_routes.py), /health and /metrics.

Chat completions is a plain ASGI app rather than a Starlette endpoint because it must notice the
client leaving at any moment (queued, waiting for the first token, streaming): the work runs in its own
task beside a watcher of `http.disconnect`; if the watcher wins, the work is cancelled and the flow
closed as a client disconnect (cancel to the agent, hold released). Errors before the first token are
HTTP errors in OpenAI's shape (the response has not started), except for a stream that has waited past
sse_keepalive_after_s: it has begun with keep-alive comments, so its error ends the stream, as errors
after the first token do (openai_format.py). n > 1 choices are served by choices_api.py.

Public names: ChatCompletions, routes, CAPPED_HEADER.
"""

from __future__ import annotations

import asyncio

import structlog
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from agent.coordinator.billing.accounts import ReleaseReason
from agent.coordinator.choices import Choices
from agent.coordinator.core import Coordinator
from agent.coordinator.errors import ApiError, ProviderFailed, RequestTimeout, RequestTooLarge, error_body
from agent.coordinator.flow import Broken, Finished, RequestFlow, Token, release_reason
from agent.coordinator.http.access_log import AccessRecord, access_record
from agent.coordinator.http.account_routes import account_routes
from agent.coordinator.http.capacity import capacity_report, consumer_view
from agent.coordinator.http.model_routes import model_routes
from agent.coordinator.http.openai_format import DONE, StreamFormat, completion_body, sse
from agent.coordinator.metrics import CONTENT_TYPE
from agent.coordinator.token_merge import merge
from agent.coordinator.privacy import is_operator
from agent.wire.chat_body import ChatCompletionBody
from agent.wire.protocol import MAX_FRAME_BYTES

log = structlog.get_logger("agent.coordinator.http.api")
MAX_BODY_BYTES = MAX_FRAME_BYTES - 64 * 1024  # room for the frame's envelope around the body
CAPPED_HEADER = "x-darkbloom-max-tokens-capped"  # the max_tokens a request was capped to by its balance
KEEPALIVE = b": waiting for the first token\n\n"  # an SSE comment
SSE_HEADERS = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache"),
               (b"x-accel-buffering", b"no")]


class ChatCompletions:
    def __init__(self, coordinator: Coordinator) -> None:
        self.coordinator = coordinator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        coordinator, model = self.coordinator, ""
        request, record = Request(scope, receive), access_record(scope)
        try:
            account = coordinator.authenticate(request.headers.get("authorization"))
            record.account_id = account.id
            # What the key (or, in open mode, the address) already decides is refused before the body is read.
            coordinator.precheck(account, request.client.host if request.client else None)
            body = coordinator.parse(await _read_body(request, coordinator.settings.body_read_timeout_s))
            model = record.model = body.model
            flow = coordinator.open(account, body) if (body.n or 1) == 1 else coordinator.open_choices(account, body)
        except ApiError as exc:
            coordinator.metrics.request(model, exc.outcome)
            await exc.response()(scope, receive, send)
            return
        except ClientDisconnect:
            return
        record.request_id = flow.exchange.request_id
        if isinstance(flow, Choices):
            from agent.coordinator.http.choices_api import serve_choices  # it imports this module's helpers
            work = asyncio.create_task(serve_choices(coordinator, flow, body, send))
        else:
            work = asyncio.create_task(self._serve(flow, body, send))
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
            _fill_record(record, flow)

    async def _serve(self, flow: RequestFlow, body: ChatCompletionBody, send: Send) -> None:
        metrics = self.coordinator.metrics
        started, is_open = asyncio.ensure_future(flow.start()), False
        try:
            is_open = body.stream and await self._keep_alive(started, flow, body, send)
            await started
        except ApiError as exc:
            flow.close(release_reason(exc))
            metrics.request(body.model, exc.outcome)
            if is_open:  # the stream began with keep-alive comments: the error ends it, as one after a token would
                await _part(send, sse(error_body(exc.message, exc.type, exc.code), event="error") + DONE, more=False)
            else:
                await _send_response(send, exc.response())
            return
        finally:
            if not started.done():  # the client left, or the server stops: the attempts stop with us
                started.cancel()
        metrics.ttft.labels(body.model).observe(max(0.0, self.coordinator.clock() - flow.exchange.created_at))
        if body.stream:
            await self._stream(flow, body, send, is_open=is_open)
        else:
            await self._complete(flow, body, send)

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
        await self._start_stream(flow, body, send)
        while not started.done():
            await _part(send, KEEPALIVE)
            await asyncio.wait({started}, timeout=settings.sse_keepalive_interval_s)
        return True

    async def _start_stream(self, flow: RequestFlow, body: ChatCompletionBody, send: Send) -> None:
        headers = [(name.encode(), value.encode()) for name, value in _response_headers(flow, body).items()]
        await send({"type": "http.response.start", "status": 200, "headers": [*SSE_HEADERS, *headers]})

    async def _stream(self, flow: RequestFlow, body: ChatCompletionBody, send: Send, *, is_open: bool) -> None:
        request_id = flow.exchange.request_id
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        fmt = StreamFormat(request_id, body.model, self.coordinator.settings.reasoning_field,
                           include_usage=include_usage)
        if not is_open:
            await self._start_stream(flow, body, send)
        head = fmt.role()  # goes out with the first token: one write instead of two
        while True:
            first = await flow.next()
            # What arrived with it (the rest of the step, or a slow client's backlog) goes in the same write.
            token, end = merge([first, *flow.ready()] if isinstance(first, Token) else [first])
            data = b""
            if token is not None and (token.content or token.reasoning or token.tool_calls):
                data, head = head + fmt.delta(token.content, token.reasoning, token.logprobs, token.tool_calls), b""
            if end is None:
                if data:
                    await _part(send, data)
                continue
            if isinstance(end, Finished):
                tail = fmt.finish(end.finish_reason) + (fmt.usage(end.usage) if include_usage else b"")
                outcome = "ok"
            else:
                flow.close(ReleaseReason.PROVIDER_ERROR)
                tail = fmt.finish("error") + fmt.error(end.message, end.code)
                outcome = "stream_error"
            await _part(send, data + head + tail + DONE, more=False)
            self.coordinator.metrics.request(body.model, outcome)
            return

    async def _complete(self, flow: RequestFlow, body: ChatCompletionBody, send: Send) -> None:
        content: list[str] = []
        reasoning: list[str] = []
        logprobs = [] if body.logprobs else None
        while True:
            event = await flow.next()
            if isinstance(event, Token):
                content.append(event.content)
                reasoning.append(event.reasoning)
                if logprobs is not None:
                    logprobs.extend(event.logprobs)
            elif isinstance(event, Finished):
                data = completion_body(flow.exchange.request_id, body.model, "".join(content), "".join(reasoning),
                                       event.finish_reason, event.usage, self.coordinator.settings.reasoning_field,
                                       logprobs, flow.tool_calls.calls)
                self.coordinator.metrics.request(body.model, "ok")
                await _send_response(send, JSONResponse(data, headers=_response_headers(flow, body)))
                return
            elif isinstance(event, Broken):
                flow.close(ReleaseReason.PROVIDER_ERROR)
                error = ProviderFailed(event.message, code=event.code)
                self.coordinator.metrics.request(body.model, "stream_error")
                await _send_response(send, error.response())
                return


def _fill_record(record: AccessRecord, flow: RequestFlow) -> None:
    record.provider_id = flow.exchange.provider_id
    if flow.charged is not None:
        record.prompt_tokens, record.completion_tokens = flow.charged.prompt_tokens, flow.charged.completion_tokens
    if flow.first_token_at is not None:
        record.ttft_s = max(0.0, flow.first_token_at - flow.exchange.created_at)


def _response_headers(flow: RequestFlow, body: ChatCompletionBody) -> dict[str, str]:
    """x-request-id, and when the balance capped max_tokens (core.open), the cap: finish_reason `length`
    alone would not tell a capped request from one that used all the output it asked for."""
    headers = {"x-request-id": flow.exchange.request_id}
    sent = flow.exchange.body.output_limit
    if sent is not None and sent != body.output_limit:
        headers[CAPPED_HEADER] = str(sent)
    return headers


def routes(coordinator: Coordinator) -> list[Route]:
    async def capacity(request: Request) -> Response:
        if (refusal := _refuse(coordinator, request)) is not None:
            return refusal
        report = capacity_report(coordinator.router)
        if not _is_operator(coordinator, request):
            report = consumer_view(report)
        return JSONResponse(report)

    async def health(request: Request) -> Response:
        router, ledger = coordinator.router, coordinator.accounts.ledger
        # Not "ok" while charges cannot be written: billed work is refused until they can (ledger.py).
        ledger_refusal = ledger.refusal()
        return JSONResponse({"status": "ok" if ledger_refusal is None else "ledger_unavailable",
                             "mode": "open" if coordinator.accounts.is_open else "keys",
                             "providers": len(router.registry), "models": router.registry.models(),
                             "providers_per_model": {m: router.registry.num_providers(m)
                                                     for m in coordinator.known_models()},
                             "queued": sum(len(q) for q in router.queues.values()),
                             "ledger": {"is_available": ledger_refusal is None, "reason": ledger_refusal,
                                        "num_backlog": ledger.num_backlog}},
                            status_code=200 if ledger_refusal is None else 503)

    async def metrics(request: Request) -> Response:
        return Response(coordinator.metrics.render(is_operator=_is_operator(coordinator, request)),
                        media_type=CONTENT_TYPE)

    return [
        Route("/v1/chat/completions", ChatCompletions(coordinator), methods=["POST"]),
        Route("/v1/models/capacity", capacity, methods=["GET"]),
        *model_routes(coordinator, refuse=lambda request: _refuse(coordinator, request)),
        *account_routes(coordinator),
        Route("/health", health, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]


def _is_operator(coordinator: Coordinator, request: Request) -> bool:
    return is_operator(coordinator.settings, request.client.host if request.client else None, request.headers)


def _refuse(coordinator: Coordinator, request: Request) -> Response | None:
    try:
        coordinator.authenticate(request.headers.get("authorization"))
    except ApiError as exc:
        return exc.response()
    return None


async def _read_body(request: Request, timeout_s: float) -> bytes:
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


async def _part(send: Send, data: bytes, *, more: bool = True) -> None:
    await send({"type": "http.response.body", "body": data, "more_body": more})


async def _send_response(send: Send, response: Response) -> None:
    await send({"type": "http.response.start", "status": response.status_code, "headers": response.raw_headers})
    await send({"type": "http.response.body", "body": response.body, "more_body": False})
