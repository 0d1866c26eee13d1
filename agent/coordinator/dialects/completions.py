"""POST /v1/completions (OpenAI's legacy completions): a prompt in, text out, no chat template.

The body becomes a chat-completions body with `raw_prompt` (agent/wire/chat_body.py): the agent tokenizes the
prompt as it is and returns the model's text as one plain text, without channels or tool calls. max_tokens
defaults to 16, as OpenAI's does. `logprobs` (0 to 5 alternatives) returns the legacy shape: `tokens`,
`token_logprobs`, `top_logprobs` as {token: logprob}, `text_offset`. One prompt per request (a string, or a
list holding one string); `n` > 1 is served as chat completions' n is (coordinator/choices.py: n held, routed
requests, the prompt charged once); `best_of` above 1, `echo`, `suffix` and token-id prompts are refused by name.

Out, as OpenAI sends it: `{"object": "text_completion", "choices": [{"text", "index", "logprobs": null,
"finish_reason"}], "usage"}`; streamed, chunks of the same object, then a usage chunk (with
`stream_options.include_usage`), then `data: [DONE]`.

Public names: CompletionsBody, to_chat, CompletionChunks, completion_object, completion_choice, legacy_logprobs,
DEFAULT_MAX_TOKENS.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Annotated, Any, Literal

from pydantic import Field

from agent.coordinator.dialects.strict_body import Body
from agent.wire.chat_body import MAX_CHOICES, MAX_OUTPUT_TOKENS, MAX_TEXT_CHARS
from agent.wire.frames import UsageReport
from agent.wire.logprobs import TokenLogprob

DEFAULT_MAX_TOKENS = 16  # OpenAI's default for this endpoint
MAX_LEGACY_LOGPROBS = 5  # OpenAI's limit for this endpoint
Prompt = Annotated[str, Field(min_length=1, max_length=MAX_TEXT_CHARS)]  # an empty prompt has no tokens to continue


class StreamOptions(Body):
    include_usage: bool = False


class CompletionsBody(Body):
    model: Annotated[str, Field(min_length=1, max_length=256)] | None = None
    prompt: Prompt | Annotated[tuple[Prompt], Field(min_length=1, max_length=1)]
    max_tokens: Annotated[int, Field(ge=1, le=MAX_OUTPUT_TOKENS)] = DEFAULT_MAX_TOKENS
    temperature: float | None = None
    top_p: float | None = None
    n: Annotated[int, Field(ge=1, le=MAX_CHOICES)] | None = None  # the coordinator's max_choices binds first
    best_of: Literal[1] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | tuple[str, ...] | None = None
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    user: str | None = None
    echo: Literal[False] | None = None
    suffix: None = None
    logprobs: Annotated[int, Field(ge=0, le=MAX_LEGACY_LOGPROBS)] | None = None  # alternatives per token


def to_chat(body: CompletionsBody) -> dict[str, Any]:
    prompt = body.prompt if isinstance(body.prompt, str) else body.prompt[0]
    chat: dict[str, Any] = {"model": body.model, "messages": [{"role": "user", "content": prompt}],
                            "raw_prompt": True, "max_tokens": body.max_tokens, "stream": body.stream}
    optional = {"n": body.n, "temperature": body.temperature, "top_p": body.top_p, "stop": body.stop, "seed": body.seed,
                "presence_penalty": body.presence_penalty, "frequency_penalty": body.frequency_penalty,
                "logit_bias": body.logit_bias, "user": body.user}
    chat.update({name: value for name, value in optional.items() if value is not None})
    if body.logprobs is not None:
        chat.update(logprobs=True, top_logprobs=body.logprobs)
    if body.stream:
        chat["stream_options"] = {"include_usage": True}  # the flow's usage; shown only when the client asked
    return chat


def completion_id(request_id: str) -> str:
    return "cmpl-" + request_id.rpartition("-")[2]


def legacy_logprobs(entries: Sequence[TokenLogprob], offset: int) -> dict[str, Any]:
    """The legacy shape: parallel lists of tokens, their logprobs, their alternatives as {token: logprob}, and
    each token's character offset in the completion's text (from `offset`, where these entries begin)."""
    offsets = []
    for entry in entries:
        offsets.append(offset)
        offset += len(entry.token)
    return {"tokens": [entry.token for entry in entries], "token_logprobs": [entry.logprob for entry in entries],
            "top_logprobs": [{alt.token: alt.logprob for alt in entry.top_logprobs} for entry in entries],
            "text_offset": offsets}


def completion_choice(text: str, finish_reason: str, logprobs: Sequence[TokenLogprob] | None = None,
                      index: int = 0) -> dict[str, Any]:
    """`logprobs`: the text's entries when the request asked for them (None: it did not)."""
    return {"text": text, "index": index, "logprobs": None if logprobs is None else legacy_logprobs(logprobs, 0),
            "finish_reason": finish_reason}


def completion_object(request_id: str, model: str, choices: list[dict[str, Any]], usage: UsageReport) -> dict[str, Any]:
    return {"id": completion_id(request_id), "object": "text_completion", "created": int(time.time()), "model": model,
            "system_fingerprint": None, "choices": choices, "usage": usage_body(usage)}


def usage_body(usage: UsageReport) -> dict[str, Any]:
    return {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.prompt_tokens + usage.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": usage.cached_tokens}}


class CompletionChunks:
    """The chunks of one streamed completion (the endpoint sends each as an SSE `data:` line)."""

    def __init__(self, request_id: str, model: str, *, include_usage: bool) -> None:
        self.id, self.model, self.include_usage = completion_id(request_id), model, include_usage
        self.created = int(time.time())
        self.num_chars: dict[int, int] = {}  # per choice, of the text sent so far: where its next tokens begin

    def text(self, text: str, finish_reason: str | None = None, logprobs: Sequence[TokenLogprob] = (),
             index: int = 0) -> dict[str, Any]:
        offset = self.num_chars.get(index, 0)
        entries = legacy_logprobs(logprobs, offset) if logprobs else None
        self.num_chars[index] = offset + len(text)
        return {"id": self.id, "object": "text_completion", "created": self.created, "model": self.model,
                "system_fingerprint": None,
                "choices": [{"text": text, "index": index, "logprobs": entries, "finish_reason": finish_reason}]}

    def usage(self, usage: UsageReport) -> dict[str, Any] | None:
        """The usage chunk, when the client asked for one (stream_options.include_usage)."""
        if not self.include_usage:
            return None
        return {"id": self.id, "object": "text_completion", "created": self.created, "model": self.model,
                "system_fingerprint": None, "choices": [], "usage": usage_body(usage)}
