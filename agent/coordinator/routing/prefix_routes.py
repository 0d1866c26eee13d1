"""Which provider last served a conversation's prefix, keyed by messages (the coordinator never tokenizes; the
keys are agent/wire/prefix_chain.py's `prefix_keys`, shared with the agent).

    PrefixRoutes          a bounded LRU map key → provider id: `record` after a dispatch (the request's
                          whole chain, since the next turn's messages extend it), `find` the deepest key
                          of a new request that a connected provider was sent, `drop` a stale record

The next turn of a conversation carries the previous turn's messages plus the reply and a new message, so
its chain contains the previous request's last key: the provider it went to holds that prompt's KV (the
agent keeps the state at the end of each prompt). What the agent really holds it reports on its heartbeats
(prefix_reports.py); this map is the coordinator's record of where it sent what (an approximate scorer, as
llm-d's), which covers the window until the next heartbeat and the explicit key the agent never sees
(prefix_holders.py weighs the two). Placement prefers that provider only while it has room and is not
much busier than the least busy one.

Pure: standard library.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from agent.wire.prefix_chain import EXPLICIT


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

    def drop(self, key: str, provider_id: str) -> None:
        """The record of `key` is stale if it still names `provider_id` (prefix_holders.py)."""
        if self._routes.get(key) == provider_id:
            del self._routes[key]

    def forget(self, provider_id: str) -> None:
        """A provider left: its prefixes left with it."""
        for key in [k for k, p in self._routes.items() if p == provider_id]:
            del self._routes[key]
