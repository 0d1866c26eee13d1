"""Which provider routing prefers for a request's prefix: what providers report holding, then the record.

    PrefixHolders    the router's one view of prefixes: `prefer(model, keys)` → a PrefixChoice or None;
                      `dispatched`, `ended`, `heartbeat`, `forget` keep the two sources below current
    PrefixChoice      the provider, the key's depth and its source ("reported" | "recorded")

Two sources: PrefixReports (prefix_reports.py: the chain keys each provider's latest heartbeat lists) and
PrefixRoutes (prefix_routes.py: where the coordinator sent each request's chain). The order, by position
in the request's keys (the explicit prompt_cache_key first, which only the record knows, then the message
chain from the deepest key down):
    1. the deepest key a connected provider reports, or the deepest one recorded, whichever is deeper:
       the record covers the window between a dispatch and the provider's next heartbeat;
    2. at equal depth the report wins: it is what the agent holds, the record only where a request went;
    3. among providers reporting the same key, the one with the fewest requests in flight here.
A record is stale once the provider it names, one that reports keys, has heartbeated after the request
ended there without reporting its key, or stops reporting a key it reported (evicted): it is dropped then.
A provider that has never reported a key (an agent older than protocol minor 5, or one without a prefix
cache) says nothing by its silence, and its records stand as before.

The choice is only a preference: placement's `prefer_holder` (holder_preference.py) still weighs it against load, so a provider that
reports keys it does not hold gains no more than any real holder could.

Pure: standard library and the routing's registry.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.coordinator.routing.prefix_reports import PrefixReports
from agent.coordinator.routing.prefix_routes import PrefixRoutes
from agent.coordinator.routing.registry import ProviderRecord, Registry
from agent.wire.frames import Heartbeat


@dataclass(frozen=True, slots=True)
class PrefixChoice:
    provider_id: str
    depth: int  # the key's position in the request's keys (0: the first, deepest)
    source: str  # "reported": its heartbeat lists the key; "recorded": the coordinator sent the chain there


class PrefixHolders:
    def __init__(self, max_routes: int, registry: Registry) -> None:
        self.routes = PrefixRoutes(max_routes)
        self.reports = PrefixReports()
        self.registry = registry  # the connected providers

    def prefer(self, model: str, keys: list[str]) -> PrefixChoice | None:
        recorded = self.routes.find(keys)
        if recorded is not None and self.registry.get(recorded[0]) is None:
            recorded = None
        reported = self.reports.deepest(model, keys)
        if reported is not None and (recorded is None or reported[0] <= recorded[1]):
            depth, holders = reported
            provider_id = min(holders, key=lambda pid: (self._num_in_flight(pid, model), pid))
            return PrefixChoice(provider_id, depth, "reported")
        if recorded is not None:
            return PrefixChoice(recorded[0], recorded[1], "recorded")
        return None

    def _num_in_flight(self, provider_id: str, model: str) -> int:
        provider = self.registry.get(provider_id)
        offer = provider.offers.get(model) if provider is not None else None
        return offer.pending.num_in_flight if offer is not None else 0

    def dispatched(self, keys: list[str], provider_id: str) -> None:
        self.routes.record(keys, provider_id)

    def ended(self, provider_id: str, keys: list[str]) -> None:
        """A request ended at the provider: the next heartbeat of one that reports chains says if it holds it."""
        self.reports.ended(provider_id, keys)

    def heartbeat(self, provider: ProviderRecord, heartbeat: Heartbeat) -> None:
        """Its latest report, for the models it offers (a heartbeat may list others: they are not indexed)."""
        chains = {s.model: s.prefix_chains for s in heartbeat.slots if s.model in provider.offers}
        provider_id = provider.provider_id
        for key in self.reports.heartbeat(provider_id, chains):
            self.routes.drop(key, provider_id)

    def forget(self, provider_id: str) -> None:
        """The provider's link is gone: its reports go (its records stay: an identity reconnects as itself)."""
        self.reports.forget(provider_id)
