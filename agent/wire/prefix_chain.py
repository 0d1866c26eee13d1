"""A request's prefix chain, keyed by messages: the coordinator never tokenizes, and the agent reports the
chains whose KV it holds in the same keys, so both sides compute them here.

    prefix_keys(body)     the chain of a request: h0 = hash(what the template renders before the messages:
                          tools, reasoning effort, raw or templated), then h_i = hash(h_{i-1}, message i) over
                          each message's canonical JSON, deepest first; an explicit `prompt_cache_key` first
    chain_key(body)       the deepest key alone: the chain of the whole prompt, which the next turn extends
                          (what an agent remembers with the prompt's cached KV and reports from protocol
                          minor 5 on: heartbeat slots' `prefix_chains`)
    message_chain(head, messages)   the same chain over plain JSON values (messages as dicts), shallowest first

Pure: standard library and the wire's body model.
"""

from __future__ import annotations

import hashlib
import json

from agent.wire.chat_body import ChatCompletionBody

EXPLICIT = "k:"  # marks the explicit key among a request's keys


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


def _canonical(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def prefix_keys(body: ChatCompletionBody, prompt_cache_key: str | None = None) -> list[str]:
    """The request's keys, the explicit affinity key first, then the message chain from the deepest down
    (`body` as forwarded to a provider; `prompt_cache_key` the consumer's, which is not forwarded)."""
    head = {"tools": [t.model_dump(mode="json", exclude_none=True) for t in body.tools or ()],
            "reasoning_effort": body.reasoning_effort, "raw_prompt": bool(body.raw_prompt)}
    chain = message_chain(head, [message.model_dump(mode="json", exclude_none=True) for message in body.messages])
    explicit = [] if prompt_cache_key is None else [EXPLICIT + _digest("prompt_cache_key", prompt_cache_key)]
    return explicit + chain[::-1]


def chain_key(body: ChatCompletionBody) -> str | None:
    """The key of the request's whole message chain (None: no messages)."""
    keys = prefix_keys(body)
    return keys[0] if keys else None


def message_chain(head: object, messages: object) -> list[str]:
    """The chain over plain JSON values, shallowest first: h0 = hash(head), h_i = hash(h_{i-1}, message i), in
    one canonical form: `prefix_keys` runs it over a body's messages, and the fake engine, which holds them as
    dicts, keys its simulated prefix cache by it."""
    chain, key = [], _digest("head", _canonical(head))
    for message in messages:
        key = _digest(key, _canonical(message))
        chain.append(key)
    return chain
