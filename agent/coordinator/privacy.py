"""What a provider and a consumer may learn: the least each needs.

    for_provider(body)   the body the coordinator forwards: no `user` (the consumer's end-user id), no
                         `metadata` (the consumer's own labels), no `prompt_cache_key` (routing's), and no
                         message `name` (no chat template we serve renders it; a provider is a stranger)
    is_operator(...)     per-provider detail in /v1/models/capacity and /metrics: only for a request that
                         carries the operator token (`x-darkbloom-operator`), or, when
                         `operator_on_loopback` is set, one from a loopback address with no proxy header
                         (a reverse proxy on the same host makes every client look local)
    bounded_retry_after  a Retry-After is the coordinator's own figure, capped by `max_retry_after_s`: a
                         provider's `retry_after_s=3600` never reaches the consumer as is

Public names: for_provider, is_operator, bounded_retry_after, OPERATOR_HEADER.
"""

from __future__ import annotations

import hmac

from agent.coordinator.settings import CoordinatorSettings, is_loopback_host
from agent.wire.chat_body import ChatCompletionBody

OPERATOR_HEADER = "x-darkbloom-operator"
PROXY_HEADERS = ("forwarded", "x-forwarded-for", "x-real-ip")


def for_provider(body: ChatCompletionBody) -> ChatCompletionBody:
    if (body.user is None and body.metadata is None and body.prompt_cache_key is None
            and all(message.name is None for message in body.messages)):
        return body
    messages = [m if m.name is None else m.model_copy(update={"name": None}) for m in body.messages]
    return body.model_copy(update={"user": None, "metadata": None, "prompt_cache_key": None,
                                   "messages": tuple(messages)})


def is_operator(settings: CoordinatorSettings, client_host: str | None, headers) -> bool:
    token = headers.get(OPERATOR_HEADER)
    if settings.operator_token and token is not None:
        return hmac.compare_digest(token.encode(), settings.operator_token.encode())
    if not settings.operator_on_loopback or client_host is None:
        return False
    return is_loopback_host(client_host) and not any(h in headers for h in PROXY_HEADERS)


def bounded_retry_after(settings: CoordinatorSettings, seconds: float) -> float:
    return min(max(seconds, 0.0), settings.max_retry_after_s)
