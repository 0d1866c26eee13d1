"""The HTTP side of `n` > 1 (agent/coordinator/choices.py): the n choices in one OpenAI response.

Streamed, each chunk carries one choice by its `index`, each choice its own role chunk (with its first token)
and finish chunk, then one usage chunk (with `stream_options.include_usage`) and [DONE] once every choice has
finished. Not streamed, `choices` lists all n in index order. Usage: the prompt once plus every choice's
completion tokens, which is what the account was charged. A choice that breaks after its first token ends
the whole response as one request's break does (the other choices are cancelled; what was delivered is paid).

Public names: serve_choices.
"""

from __future__ import annotations

from starlette.responses import JSONResponse
from starlette.types import Send

from agent.coordinator.billing.accounts import ReleaseReason
from agent.coordinator.choices import Choices, merged_usage
from agent.coordinator.core import Coordinator
from agent.coordinator.errors import ApiError, ProviderFailed
from agent.coordinator.flow import Broken, Finished, Token, release_reason
from agent.coordinator.http.openai_format import DONE, StreamFormat, completion_body
from agent.coordinator.http.request_life import CAPPED_HEADER, SSE_HEADERS
from agent.coordinator.http.request_life import send_part as _part
from agent.coordinator.http.request_life import send_response as _send_response
from agent.wire.chat_body import ChatCompletionBody
from agent.wire.frames import UsageReport


async def serve_choices(coordinator: Coordinator, choices: Choices, body: ChatCompletionBody, send: Send) -> None:
    try:
        await choices.start()
    except ApiError as exc:
        choices.close(release_reason(exc))
        coordinator.metrics.request(body.model, exc.outcome)
        await _send_response(send, exc.response())
        return
    coordinator.metrics.ttft.labels(body.model).observe(max(0.0, coordinator.clock() - choices.exchange.created_at))
    if body.stream:
        await _stream(coordinator, choices, body, send)
    else:
        await _complete(coordinator, choices, body, send)


async def _stream(coordinator: Coordinator, choices: Choices, body: ChatCompletionBody, send: Send) -> None:
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    fmt = StreamFormat(choices.exchange.request_id, body.model, coordinator.settings.reasoning_field,
                       include_usage=include_usage)
    headers = [(name.encode(), value.encode()) for name, value in _headers(choices, body).items()]
    await send({"type": "http.response.start", "status": 200, "headers": [*SSE_HEADERS, *headers]})
    unopened = set(range(len(choices.flows)))  # choices whose role chunk has not gone out yet
    usages: dict[int, UsageReport] = {}
    while len(usages) < len(choices.flows):
        index, event = await choices.next()
        head = b""
        if index in unopened and (not isinstance(event, Token) or event.content or event.reasoning
                                  or event.tool_calls):
            unopened.discard(index)
            head = fmt.role(index)
        if isinstance(event, Token):
            if head:
                await _part(send, head + fmt.delta(event.content, event.reasoning, event.logprobs,
                                                   event.tool_calls, index))
            elif event.content or event.reasoning or event.tool_calls:
                await _part(send, fmt.delta(event.content, event.reasoning, event.logprobs, event.tool_calls, index))
        elif isinstance(event, Finished):
            usages[index] = event.usage
            await _part(send, head + fmt.finish(event.finish_reason, index))
        else:
            choices.close(ReleaseReason.PROVIDER_ERROR)
            await _part(send, head + fmt.finish("error", index) + fmt.error(event.message, event.code) + DONE,
                        more=False)
            coordinator.metrics.request(body.model, "stream_error")
            return
    usage = merged_usage([usages[index] for index in range(len(choices.flows))])
    await _part(send, (fmt.usage(usage) if include_usage else b"") + DONE, more=False)
    coordinator.metrics.request(body.model, "ok")


async def _complete(coordinator: Coordinator, choices: Choices, body: ChatCompletionBody, send: Send) -> None:
    num = len(choices.flows)
    content: list[list[str]] = [[] for _ in range(num)]
    reasoning: list[list[str]] = [[] for _ in range(num)]
    logprobs: list[list | None] = [[] if body.logprobs else None for _ in range(num)]
    finished: dict[int, Finished] = {}
    while len(finished) < num:
        index, event = await choices.next()
        if isinstance(event, Token):
            content[index].append(event.content)
            reasoning[index].append(event.reasoning)
            if logprobs[index] is not None:
                logprobs[index].extend(event.logprobs)
        elif isinstance(event, Finished):
            finished[index] = event
        elif isinstance(event, Broken):
            choices.close(ReleaseReason.PROVIDER_ERROR)
            coordinator.metrics.request(body.model, "stream_error")
            await _send_response(send, ProviderFailed(event.message, code=event.code).response())
            return
    usage = merged_usage([finished[index].usage for index in range(num)])
    request_id, field = choices.exchange.request_id, coordinator.settings.reasoning_field
    bodies = [completion_body(request_id, body.model, "".join(content[i]), "".join(reasoning[i]),
                              finished[i].finish_reason, usage, field, logprobs[i], choices.flows[i].tool_calls.calls,
                              index=i) for i in range(num)]
    data = {**bodies[0], "choices": [choice for one in bodies for choice in one["choices"]]}
    coordinator.metrics.request(body.model, "ok")
    await _send_response(send, JSONResponse(data, headers=_headers(choices, body)))


def _headers(choices: Choices, body: ChatCompletionBody) -> dict[str, str]:
    """x-request-id (choice 0's; the others are `<id>-<i>`), and the smallest cap a balance set, if any."""
    headers = {"x-request-id": choices.exchange.request_id}
    sent = [flow.exchange.body.output_limit for flow in choices.flows]
    capped = [limit for limit in sent if limit is not None and limit != body.output_limit]
    if capped:
        headers[CAPPED_HEADER] = str(min(capped))
    return headers
