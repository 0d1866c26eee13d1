"""POST /v1/completions: OpenAI's legacy completions, a prompt in and text out without the chat template
(dialects/completions.py). Errors are OpenAI's shape; an error after the first token ends the stream with an
`event: error` and [DONE], as chat completions' does. `n` > 1 is n held, routed, retried requests
(coordinator/choices.py), as for chat completions: each chunk names its choice by `index`, the usage is the
prompt once plus every choice's output. A stream writes once per read of the flow: the text of the tokens that
arrived together is one chunk per choice (delta_runs.py), before that choice's finish chunk.

Public names: Completions.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import Send

from agent.coordinator.billing.accounts import ReleaseReason
from agent.coordinator.choices import Choices, merged_usage
from agent.coordinator.delta_runs import runs
from agent.coordinator.dialects.completions import (
    CompletionChunks,
    CompletionsBody,
    completion_choice,
    completion_object,
    to_chat,
)
from agent.coordinator.dialects.strict_body import checked, read_json, validated
from agent.coordinator.errors import ApiError, ProviderFailed, error_body
from agent.coordinator.flow import Broken, Finished, RequestFlow, Token, release_reason
from agent.coordinator.http.body_writer import BodyWriter
from agent.coordinator.http.direct_stream import DirectStream
from agent.coordinator.http.openai_format import DONE, sse
from agent.coordinator.http.request_life import RequestLife, Translated, send_part, send_response
from agent.wire.frames import UsageReport

Events = Callable[[], Awaitable[tuple[int, Token | Finished | Broken]]]  # the next (choice index, event)
Ready = Callable[[], list[tuple[int, Token | Finished | Broken]]]  # what arrived with it


class Completions(RequestLife):
    def parse(self, raw: bytes, request: Request) -> Translated:
        source = validated(CompletionsBody, read_json(raw))
        return Translated(checked(self.coordinator, to_chat(source), "completions"), source)

    def stream_error(self, exc: ApiError) -> bytes:
        return sse(error_body(exc.message, exc.type, exc.code), event="error") + DONE

    async def serve(self, flow: RequestFlow | Choices, request: Translated, send: Send, *,
                    writer: BodyWriter | None = None) -> None:
        if not isinstance(flow, Choices):
            await self._serve(flow, request, send, writer=writer)
            return
        try:
            await flow.start()
        except ApiError as exc:
            flow.close(release_reason(exc))
            self.coordinator.metrics.request(request.body.model, exc.outcome)
            await send_response(send, exc.response())
            return
        self.coordinator.metrics.ttft.labels(request.body.model).observe(
            max(0.0, self.coordinator.clock() - flow.exchange.created_at))
        if request.body.stream:
            await self._stream(flow.next, flow.ready, flow, request, send, is_open=False, writer=None)
        else:
            await self._complete(flow.next, flow, request, send)

    async def stream(self, flow: RequestFlow, request: Translated, send: Send, *, is_open: bool,
                     writer: BodyWriter | None = None) -> None:
        await self._stream(_one(flow), lambda: [(0, event) for event in flow.ready()], flow, request, send,
                           is_open=is_open, writer=writer)

    async def complete(self, flow: RequestFlow, request: Translated, send: Send) -> None:
        await self._complete(_one(flow), flow, request, send)

    async def _stream(self, events: Events, ready: Ready, flow: RequestFlow | Choices, request: Translated,
                      send: Send, *, is_open: bool, writer: BodyWriter | None) -> None:
        """`writer`: n = 1 only (a RequestFlow), whose tokens may go straight out (direct_stream.py)."""
        source: CompletionsBody = request.source
        chunks = CompletionChunks(flow.exchange.request_id, request.body.model,
                                  include_usage=bool(source.stream_options and source.stream_options.include_usage))
        if not is_open:
            await self.start_stream(flow, request.body, send)
        usages: dict[int, UsageReport] = {}
        direct = DirectStream(flow, writer, lambda token: sse(chunks.text(token.content, logprobs=token.logprobs))
                              if token.content else b"")
        try:
            await self._chunks(events, ready, flow, request, send, chunks, usages, direct)
        finally:
            direct.close()

    async def _chunks(self, events: Events, ready: Ready, flow: RequestFlow | Choices, request: Translated,
                      send: Send, chunks: CompletionChunks, usages: dict[int, UsageReport],
                      direct: DirectStream) -> None:
        source: CompletionsBody = request.source
        while True:
            # What arrived with a token (the rest of the step, a slow client's backlog) goes in the same write.
            first = await events()
            data, broken = _written(chunks, [first, *ready()] if isinstance(first[1], Token) else [first], usages)
            if broken is not None:
                flow.close(ReleaseReason.PROVIDER_ERROR)
                error = sse(error_body(broken.message, "server_error", broken.code), event="error")
                await send_part(send, data + error + DONE, more=False)
                self.coordinator.metrics.request(request.body.model, "stream_error")
                return
            if len(usages) == (source.n or 1):
                break
            if data:
                await send_part(send, data)
                direct.open()
        usage = chunks.usage(merged_usage([usages[i] for i in sorted(usages)]))
        await send_part(send, data + (sse(usage) if usage is not None else b"") + DONE, more=False)
        self.coordinator.metrics.request(request.body.model, "ok")

    async def _complete(self, events: Events, flow: RequestFlow | Choices, request: Translated, send: Send) -> None:
        num = request.source.n or 1
        texts: list[list[str]] = [[] for _ in range(num)]
        logprobs: list[list | None] = [[] if request.body.logprobs else None for _ in range(num)]
        finished: dict[int, Finished] = {}
        while len(finished) < num:
            index, event = await events()
            if isinstance(event, Token):
                texts[index].append(event.content)
                if logprobs[index] is not None:
                    logprobs[index].extend(event.logprobs)
            elif isinstance(event, Finished):
                finished[index] = event
            else:
                flow.close(ReleaseReason.PROVIDER_ERROR)
                self.coordinator.metrics.request(request.body.model, "stream_error")
                await send_response(send, ProviderFailed(event.message, code=event.code).response())
                return
        choices = [completion_choice("".join(texts[i]), finished[i].finish_reason, logprobs[i], i) for i in range(num)]
        usage = merged_usage([finished[i].usage for i in range(num)])
        data = completion_object(flow.exchange.request_id, request.body.model, choices, usage)
        self.coordinator.metrics.request(request.body.model, "ok")
        await send_response(send, JSONResponse(data, headers=self.headers(flow, request.body)))


def _written(chunks: CompletionChunks, batch: list[tuple[int, Token | Finished | Broken]],
             usages: dict[int, UsageReport]) -> tuple[bytes, Broken | None]:
    """A read's events as SSE chunks: each choice's text in one chunk (delta_runs.py), before its finish chunk;
    the Broken that ends the stream, if one came (what came before it is written, what came after is not)."""
    parts: list[bytes] = []
    texts: dict[int, list[Token]] = {}

    def flush(index: int) -> None:
        for run in runs([token for token in texts.pop(index, ()) if token.content]):
            parts.append(sse(chunks.text(run.content, logprobs=run.logprobs, index=index)))

    for index, event in batch:
        if isinstance(event, Token):
            texts.setdefault(index, []).append(event)
            continue
        flush(index)
        if isinstance(event, Broken):
            for other in list(texts):
                flush(other)
            return b"".join(parts), event
        usages[index] = event.usage
        parts.append(sse(chunks.text("", event.finish_reason, index=index)))
    for index in list(texts):
        flush(index)
    return b"".join(parts), None


def _one(flow: RequestFlow) -> Events:
    async def next_event() -> tuple[int, Token | Finished | Broken]:
        return 0, await flow.next()

    return next_event
