"""What providers report holding: chain key → the providers (per model) whose latest heartbeat reports it.

Every warm slot's heartbeat status lists `prefix_chains`: the chain keys (agent/wire/prefix_chain.py, the
coordinator's own keys) of the prompts whose KV its prefix cache holds, most recently used first.

    PrefixReports   `heartbeat` replaces a provider's keys on each heartbeat and returns the keys it no longer
                    holds (reported before and dropped, or of a request that `ended` there and is not
                    reported; only once it `is_reporting`); `forget` drops a provider that left; `deepest` finds the first of a request's
                    keys some provider reports. Bounded by the wire: MAX_PREFIX_CHAINS keys per slot status,
                    MAX_MODELS slots per heartbeat, per connected provider.

How routing weighs these against the coordinator's own record is prefix_holders.py's.

Pure: standard library.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from agent.wire.prefix_chain import EXPLICIT


@dataclass(slots=True)
class PrefixReports:
    _holders: dict[tuple[str, str], set[str]] = field(default_factory=dict)  # (model, key) -> provider ids
    _reported: dict[str, dict[str, frozenset[str]]] = field(default_factory=dict)  # provider -> model -> keys
    _ended: dict[str, set[str]] = field(default_factory=dict)  # provider -> keys of requests ended since its heartbeat
    _reporting: set[str] = field(default_factory=set)  # providers that have reported a key: their silence counts

    def __len__(self) -> int:
        return len(self._holders)

    def holders(self, model: str, key: str) -> set[str]:
        return self._holders.get((model, key), set())

    def reported(self, provider_id: str, model: str) -> frozenset[str]:
        return self._reported.get(provider_id, {}).get(model, frozenset())

    def is_reporting(self, provider_id: str) -> bool:
        """Whether the provider has reported a key since it connected: an older agent, or one without a prefix
        cache, never does, and its silence says nothing about what it holds."""
        return provider_id in self._reporting

    def heartbeat(self, provider_id: str, chains: Mapping[str, Iterable[str]]) -> set[str]:
        """The provider's latest heartbeat: `chains` per model it lists (a model it omits keeps its keys, as
        the registry keeps its status). Returns the keys a reporting provider no longer holds: ones it
        reported and dropped, and keys of requests that ended there before this heartbeat that it does not
        report (none for a provider that has never reported a key)."""
        mine = self._reported.setdefault(provider_id, {})
        dropped: set[str] = set()
        for model, keys in chains.items():
            new, old = frozenset(keys), mine.get(model, frozenset())
            for key in old - new:
                self._remove(model, key, provider_id)
            for key in new - old:
                self._holders.setdefault((model, key), set()).add(provider_id)
            mine[model] = new
            dropped |= old - new
        held = set().union(*mine.values()) if mine else set()
        if held:
            self._reporting.add(provider_id)
        return (dropped | self._ended.pop(provider_id, set())) - held

    def ended(self, provider_id: str, keys: list[str]) -> None:
        """A request with `keys` ended at the provider: its next heartbeat says whether it keeps that prompt."""
        chain = next((key for key in keys if not key.startswith(EXPLICIT)), None)
        if chain is not None and provider_id in self._reporting:
            self._ended.setdefault(provider_id, set()).add(chain)

    def forget(self, provider_id: str) -> None:
        """The provider left: what it reported left with it (it reports again when it reconnects)."""
        for model, keys in self._reported.pop(provider_id, {}).items():
            for key in keys:
                self._remove(model, key, provider_id)
        self._ended.pop(provider_id, None)
        self._reporting.discard(provider_id)

    def deepest(self, model: str, keys: list[str]) -> tuple[int, set[str]] | None:
        """The first (deepest) of `keys` some provider reports, and who."""
        for depth, key in enumerate(keys):
            holders = self._holders.get((model, key))
            if holders:
                return depth, holders
        return None

    def _remove(self, model: str, key: str, provider_id: str) -> None:
        holders = self._holders.get((model, key))
        if holders is not None:
            holders.discard(provider_id)
            if not holders:
                del self._holders[(model, key)]

