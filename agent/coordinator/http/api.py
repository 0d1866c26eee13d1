"""The consumer HTTP API: /v1/chat/completions (streaming and not), the other dialects (dialect_routes.py:
/v1/responses, /v1/messages, /v1/completions), /v1/models and /v1/models/{id} (model_routes.py),
/v1/models/capacity, /v1/me (account_routes.py), /health and /metrics.

Every dialect shares one request life (request_life.py: the disconnect watcher, keep-alives, errors before
the first token); chat completions writes the flow's events in OpenAI's chat shapes (openai_format.py).
n > 1 choices are served by choices_api.py.

Public names: ChatCompletions, routes, CAPPED_HEADER, MAX_BODY_BYTES, SSE_HEADERS.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Send

from agent.coordinator.billing.accounts import ReleaseReason
from agent.coordinator.choices import Choices
from agent.coordinator.core import Coordinator
from agent.coordinator.errors import ApiError, BadRequest, ProviderFailed, error_body
from agent.coordinator.flow import Broken, Finished, RequestFlow, Token
from agent.coordinator.http.account_routes import account_routes
from agent.coordinator.http.body_writer import BodyWriter
from agent.coordinator.http.capacity import capacity_report, consumer_view
from agent.coordinator.http.choices_api import serve_choices
from agent.coordinator.http.dialect_routes import dialect_routes
from agent.coordinator.http.direct_stream import DirectStream
from agent.coordinator.http.error_pages import is_anthropic
from agent.coordinator.http.messages_api import anthropic_error, credentials
from agent.coordinator.http.model_routes import model_routes
from agent.coordinator.http.openai_format import DONE, StreamFormat, completion_body, sse
from agent.coordinator.http.request_life import (  # noqa: F401 (CAPPED_HEADER, MAX_BODY_BYTES: importers of this module)
    CAPPED_HEADER,
    MAX_BODY_BYTES,
    SSE_HEADERS,
    RequestLife,
    Translated,
)
from agent.coordinator.http.request_life import response_headers as _response_headers
from agent.coordinator.http.request_life import send_part as _part
from agent.coordinator.http.request_life import send_response as _send_response
from agent.coordinator.metrics import CONTENT_TYPE
from agent.coordinator.privacy import is_operator
from agent.coordinator.token_merge import merge
from agent.wire.chat_body import ChatCompletionBody


class ChatCompletions(RequestLife):
    """POST /v1/chat/completions: the body is the internal request itself (request_life.py serves it)."""

    def parse(self, raw: bytes, request: Request) -> Translated:
        body = self.coordinator.parse(raw)
        if body.raw_prompt:
            raise BadRequest("raw_prompt belongs to POST /v1/completions; send the prompt there",
                             param="raw_prompt", code="invalid_value")
        return Translated(body)

    def stream_error(self, exc: ApiError) -> bytes:
        return sse(error_body(exc.message, exc.type, exc.code), event="error") + DONE

    async def serve(self, flow: RequestFlow | Choices, request: Translated, send: Send, *,
                    writer: BodyWriter | None = None) -> None:
        if isinstance(flow, Choices):
            await serve_choices(self.coordinator, flow, request.body, send)
        else:
            await self._serve(flow, request, send, writer=writer)

    async def stream(self, flow: RequestFlow, request: Translated, send: Send, *, is_open: bool,
                     writer: BodyWriter | None = None) -> None:
        await self._stream(flow, request.body, send, is_open=is_open, writer=writer)

    async def complete(self, flow: RequestFlow, request: Translated, send: Send) -> None:
        await self._complete(flow, request.body, send)

    async def _stream(self, flow: RequestFlow, body: ChatCompletionBody, send: Send, *, is_open: bool,
                      writer: BodyWriter | None) -> None:
        request_id = flow.exchange.request_id
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        fmt = StreamFormat(request_id, body.model, self.coordinator.settings.reasoning_field,
                           include_usage=include_usage)
        if not is_open:
            await self.start_stream(flow, body, send)
        head = fmt.role()  # goes out with the first token: one write instead of two
        direct = DirectStream(flow, writer, fmt.token)
        try:
            while True:
                first = await flow.next()
                # What arrived with it (the rest of the step, or a slow client's backlog) goes in the same write.
                if isinstance(first, Token):
                    more = flow.ready()
                    token, end = merge([first, *more]) if more else (first, None)
                else:
                    token, end = None, first
                data = b""
                if token is not None and (token.content or token.reasoning or token.tool_calls):
                    data, head = head + fmt.delta(token.content, token.reasoning, token.logprobs,
                                                  token.tool_calls), b""
                if end is None:
                    if data:
                        await _part(send, data)
                        direct.open()  # the head is out: what comes while we wait may go straight out
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
        finally:
            direct.close()

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
        *dialect_routes(coordinator),
        Route("/v1/models/capacity", capacity, methods=["GET"]),
        *model_routes(coordinator, refuse=lambda request: _refuse(coordinator, request)),
        *account_routes(coordinator),
        Route("/health", health, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]


def _is_operator(coordinator: Coordinator, request: Request) -> bool:
    return is_operator(coordinator.settings, request.client.host if request.client else None, request.headers)


def _refuse(coordinator: Coordinator, request: Request) -> Response | None:
    """The key check of the GET routes: a Bearer key, or Anthropic's x-api-key (answered in its shape)."""
    try:
        coordinator.authenticate(credentials(request))
    except ApiError as exc:
        return anthropic_error(exc) if is_anthropic(request) else exc.response()
    return None
