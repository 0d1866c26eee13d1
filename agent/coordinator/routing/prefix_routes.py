"""Which provider last served a conversation's prefix, keyed by messages (the coordinator never tokenizes).

    prefix_keys(body)     the chain of a request: h0 = hash(what the template renders before the messages:
                          tools, reasoning effort, raw or templated), then h_i = hash(h_{i-1}, message i) over
                          each message's canonical JSON; an explicit `prompt_cache_key` comes first
    PrefixRoutes          a bounded LRU map key → provider id: `record` after a dispatch (the request's
                          whole chain, since the next turn's messages extend it), `find` the deepest key
                          of a new request that a connected provider was sent

The next turn of a conversation carries the previous turn's messages plus the reply and a new message, so
its chain contains the previous request's last key: the provider it went to holds that prompt's KV (the
agent keeps the state at the end of each prompt). What the agent really holds is its own business; this
map is the coordinator's record of where it sent what (an approximate scorer, as llm-d's), and placement
prefers that provider only while it has room and is not much busier than the least busy one.

Pure: standard library and the wire's body model.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from dataclasses import dataclass, field

from agent.wire.chat_body import ChatCompletionBody


EXPLICIT = "k:"  # marks the explicit key among a request's keys


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


def _canonical(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def prefix_keys(body: ChatCompletionBody, prompt_cache_key: str | None = None) -> list[str]:
    """The request's keys, the explicit affinity key first, then the message chain from the deepest down
    (`body` as forwarded to a provider; `prompt_cache_key` the consumer's, which is not forwarded)."""
    head = _canonical({"tools": [t.model_dump(mode="json", exclude_none=True) for t in body.tools or ()],
                       "reasoning_effort": body.reasoning_effort, "raw_prompt": bool(body.raw_prompt)})
    chain, key = [], _digest("head", head)
    for message in body.messages:
        key = _digest(key, _canonical(message.model_dump(mode="json", exclude_none=True)))
        chain.append(key)
    explicit = [] if prompt_cache_key is None else [EXPLICIT + _digest("prompt_cache_key", prompt_cache_key)]
    return explicit + chain[::-1]


@dataclass(slots=True)
class PrefixRoutes:
    max_keys: int  # the map's bound (CoordinatorSettings.max_prefix_routes)
    _routes: OrderedDict[str, str] = field(default_factory=OrderedDict)

    def __len__(self) -> int:
        return len(self._routes)

    def record(self, keys: list[str], provider_id: str) -> None:
        """The request went to `provider_id`: its explicit key and its whole chain now point there (its
        shorter prefixes stay where they were: the next turn finds the deepest key first)."""
        recorded = keys[:2] if keys and keys[0].startswith(EXPLICIT) else keys[:1]
        for key in recorded:
            self._routes[key] = provider_id
            self._routes.move_to_end(key)
        while len(self._routes) > self.max_keys:
            self._routes.popitem(last=False)

    def find(self, keys: list[str]) -> tuple[str, int] | None:
        """The provider of the first (deepest) key recorded, and that key's position (0: the deepest)."""
        for depth, key in enumerate(keys):
            provider_id = self._routes.get(key)
            if provider_id is not None:
                self._routes.move_to_end(key)
                return provider_id, depth
        return None

    def forget(self, provider_id: str) -> None:
        """A provider left: its prefixes left with it."""
        for key in [k for k, p in self._routes.items() if p == provider_id]:
            del self._routes[key]
