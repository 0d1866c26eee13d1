"""The router's index of every model's slots, kept as heartbeats and sends change them, so that a decision over
1,000 providers does not scan and sort 1,000 offers. Pure and synchronous.

Per model, each registered offer is in one of three places, decided by what only a heartbeat (or the
register) changes:

    never   slot_rank's `unusable` reason (does not fit, no spec, draining), in registry order
    warm    warm and usable: sorted by its queue rank without the trust tier, (waiting, rows), then registry order
    others  cold, loading, failed: in registry order

An offer tells its index when it changes (`Offer.on_change` on a heartbeat's status, `PendingSends.on_change`
when a send is added or ends, or a heartbeat counts them); the index re-files the changed offers at the next
decision. `place_indexed` then runs placement's own checks (`placement.search`) on the index: trust tiers and
the round-robin order are computed only for the groups of equal rank the search reaches, and what depends on the request
(excluded providers, images) or on the clock (quarantine) is applied per decision. Its Placement is the one
`place` computes from a scan of every offer (tests/test_warm_index.py compares them on random fleets).

Public names: WarmIndex, ModelIndex, place_indexed.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from dataclasses import dataclass, field
from math import inf

from agent.coordinator.routing.placement import Ask, Placement, place, search
from agent.coordinator.routing.holder_preference import prefer_holder
from agent.coordinator.routing.registry import Offer, ProviderRecord
from agent.coordinator.routing.slot_rank import by_turn_within_ties, queue_rank, unusable
from agent.coordinator.routing.reputation import ReputationBook
from agent.coordinator.settings import CoordinatorSettings

Entry = tuple[tuple[int, int], int, ProviderRecord, Offer]  # (waiting, rows), registry order, provider, offer


@dataclass(slots=True)
class _Member:
    order: int  # registry order: ties in rank keep it, as the scan's stable sort does
    provider: ProviderRecord
    offer: Offer
    never: str = ""
    key: tuple[int, int] | None = None  # its place in `warm`, while it is there


@dataclass(slots=True)
class ModelIndex:
    """One model's offers, filed by what only heartbeats and sends change."""

    model: str
    members: dict[str, _Member] = field(default_factory=dict)
    warm: list[Entry] = field(default_factory=list)
    _dirty: set[str] = field(default_factory=set)
    _never: list[tuple[str, str]] | None = None  # cached (provider id, reason) in registry order
    _others: list[tuple[ProviderRecord, Offer]] | None = None  # cached, in registry order

    def add(self, provider: ProviderRecord, order: int) -> None:
        pid, offer = provider.provider_id, provider.offers[self.model]
        self.remove(pid)  # a link the router did not remove first: the newest is the one indexed
        self.members[pid] = _Member(order, provider, offer)
        offer.on_change = offer.pending.on_change = lambda: self._dirty.add(pid)
        self._dirty.add(pid)

    def remove(self, provider_id: str) -> None:
        member = self.members.pop(provider_id, None)
        if member is None:
            return
        member.offer.on_change = member.offer.pending.on_change = None
        self._unfile(provider_id, member)
        self._dirty.discard(provider_id)

    def refresh(self) -> None:
        """File again the offers that changed since the last decision."""
        while self._dirty:
            pid = self._dirty.pop()
            member = self.members.get(pid)
            if member is not None:
                self._unfile(pid, member)
                self._file(member)

    def never(self) -> list[tuple[str, str]]:
        if self._never is None:
            found = sorted((m.order, pid, m.never) for pid, m in self.members.items() if m.never)
            self._never = [(pid, reason) for _, pid, reason in found]
        return self._never

    def others(self) -> list[tuple[ProviderRecord, Offer]]:
        if self._others is None:
            found = sorted((m for m in self.members.values() if not m.never and m.key is None),
                           key=lambda m: m.order)
            self._others = [(m.provider, m.offer) for m in found]
        return self._others

    def _file(self, member: _Member) -> None:
        provider, offer = member.provider, member.offer
        member.never = unusable(provider, offer)
        if member.never:
            self._never = None
        elif offer.is_warm:
            member.key = queue_rank(offer, 0)[:2]
            insort(self.warm, (member.key, member.order, provider, offer))
        else:
            self._others = None

    def _unfile(self, pid: str, member: _Member) -> None:
        if member.never:
            member.never, self._never = "", None
        elif member.key is not None:
            at = bisect_left(self.warm, (member.key, member.order))
            del self.warm[at]
            member.key = None
        else:
            self._others = None


class WarmIndex:
    """Every model's ModelIndex; the router adds a provider as it registers and removes it as it leaves."""

    def __init__(self) -> None:
        self._models: dict[str, ModelIndex] = {}
        self._num_added = 0

    def add(self, provider: ProviderRecord) -> None:
        self._num_added += 1
        for model in provider.offers:
            self._models.setdefault(model, ModelIndex(model)).add(provider, self._num_added)

    def remove(self, provider: ProviderRecord) -> None:
        for model in provider.offers:
            index = self._models.get(model)
            if index is not None:
                index.remove(provider.provider_id)
                if not index.members:
                    del self._models[model]

    def model(self, model: str) -> ModelIndex:
        return self._models.get(model) or ModelIndex(model)


def place_indexed(index: ModelIndex, ask: Ask, settings: CoordinatorSettings, *, now: float,
                  exclude: dict[str, str] | None = None, reputation: ReputationBook | None = None,
                  preferred: str | None = None) -> Placement:
    """placement.place(lazy=True) over the index's offers, without scanning them all."""
    index.refresh()
    if ask.num_images:  # whether a slot can see images depends on the request: the scan decides
        offers = [(m.provider, m.offer) for m in sorted(index.members.values(), key=lambda m: m.order)]
        return place(offers, ask, settings, now=now, exclude=exclude, reputation=reputation, preferred=preferred)
    placement = Placement(ask.model)
    extra = _per_request_never(index, exclude or {}, reputation)
    placement.never = _never(index, extra)
    warm = [entry for entry in index.warm if entry[2].provider_id not in extra] if extra else index.warm
    others = [(p, o) for p, o in index.others() if p.provider_id not in extra] if extra else index.others()
    first = None
    if preferred is not None and preferred in index.members and preferred not in extra:
        first = prefer_holder([(key, p, o) for key, _, p, o in warm], preferred,
                              settings.prefix_affinity_slack_rows, settings.prefix_affinity_max_load)
    tier_now = reputation.clock() if reputation is not None else 0.0
    ordered = _ranked(warm, first[2] if first is not None else None, reputation, tier_now)
    return search(placement, ask, settings, first, len(warm), ordered, others, now=now, lazy=True,
                  reputation=reputation)


def _per_request_never(index: ModelIndex, exclude: dict[str, str], reputation: ReputationBook | None) -> dict:
    """The providers this request cannot use beyond the index's own never: excluded ones, quarantined ones."""
    extra = {pid: reason for pid, reason in exclude.items() if pid in index.members}
    for pid in reputation.quarantined_ids() if reputation is not None else ():
        member = index.members.get(pid)
        if member is not None and pid not in extra and not member.never:
            if reason := reputation.quarantine_reason(pid):
                extra[pid] = reason
    return extra


def _never(index: ModelIndex, extra: dict[str, str]) -> dict[str, str]:
    """The scan's `never` in its order (the registry's): the index's reasons, with the request's beside them."""
    if not extra:
        return dict(index.never())
    reasons = dict(index.never()) | extra  # an excluded provider is never for the exclusion's reason
    return dict(sorted(reasons.items(), key=lambda item: index.members[item[0]].order))


def _ranked(warm: list[Entry], skip: Offer | None, reputation: ReputationBook | None, tier_now: float):
    """`warm` in slot_rank's rank order, the trust tier and the round-robin order computed only for the groups it reaches."""
    start = 0
    while start < len(warm):
        key = warm[start][0]
        end = bisect_right(warm, (key, inf), lo=start)
        group = []
        for _, order, provider, offer in warm[start:end]:
            if offer is not skip:
                tier = reputation.tier(provider.provider_id, tier_now) if reputation is not None else 0
                group.append(((*key, -tier), provider, offer))
        group.sort(key=lambda item: item[0])  # stable: registry order within a rank, as the scan's
        yield from by_turn_within_ties(group)
        start = end
