"""POST /v1/completions: OpenAI's legacy completions, a prompt in and text out without the chat template
(dialects/completions.py). Errors are OpenAI's shape; an error after the first token ends the stream with an
`event: error` and [DONE], as chat completions' does.

Public names: Completions.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import Send

from agent.coordinator.billing.accounts import ReleaseReason
from agent.coordinator.dialects.completions import CompletionChunks, CompletionsBody, completion_object, to_chat
from agent.coordinator.dialects.strict_body import checked, read_json, validated
from agent.coordinator.errors import ApiError, ProviderFailed, error_body
from agent.coordinator.flow import Finished, RequestFlow, Token
from agent.coordinator.http.openai_format import DONE, sse
from agent.coordinator.http.request_life import RequestLife, Translated, response_headers, send_part, send_response


class Completions(RequestLife):
    def parse(self, raw: bytes, request: Request) -> Translated:
        source = validated(CompletionsBody, read_json(raw))
        return Translated(checked(self.coordinator, to_chat(source), "completions"), source)

    def stream_error(self, exc: ApiError) -> bytes:
        return sse(error_body(exc.message, exc.type, exc.code), event="error") + DONE

    async def stream(self, flow: RequestFlow, request: Translated, send: Send, *, is_open: bool) -> None:
        source: CompletionsBody = request.source
        chunks = CompletionChunks(flow.exchange.request_id, request.body.model,
                                  include_usage=bool(source.stream_options and source.stream_options.include_usage))
        if not is_open:
            await self.start_stream(flow, request.body, send)
        while True:
            event = await flow.next()
            if isinstance(event, Token):
                if event.content:
                    await send_part(send, sse(chunks.text(event.content, logprobs=event.logprobs)))
                continue
            if isinstance(event, Finished):
                usage = chunks.usage(event.usage)
                tail = sse(chunks.text("", event.finish_reason)) + (sse(usage) if usage is not None else b"")
                outcome = "ok"
            else:
                flow.close(ReleaseReason.PROVIDER_ERROR)
                tail = sse(error_body(event.message, "server_error", event.code), event="error")
                outcome = "stream_error"
            await send_part(send, tail + DONE, more=False)
            self.coordinator.metrics.request(request.body.model, outcome)
            return

    async def complete(self, flow: RequestFlow, request: Translated, send: Send) -> None:
        text: list[str] = []
        logprobs = [] if request.body.logprobs else None
        while True:
            event = await flow.next()
            if isinstance(event, Token):
                text.append(event.content)
                if logprobs is not None:
                    logprobs.extend(event.logprobs)
            elif isinstance(event, Finished):
                data = completion_object(flow.exchange.request_id, request.body.model, "".join(text),
                                         event.finish_reason, event.usage, logprobs)
                self.coordinator.metrics.request(request.body.model, "ok")
                await send_response(send, JSONResponse(data, headers=response_headers(flow, request.body)))
                return
            else:
                flow.close(ReleaseReason.PROVIDER_ERROR)
                self.coordinator.metrics.request(request.body.model, "stream_error")
                await send_response(send, ProviderFailed(event.message, code=event.code).response())
                return
