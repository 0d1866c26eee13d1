"""How placement orders and filters a model's slots: pure functions of an offer, shared by the scan
(placement.py) and the router's index of warm slots (warm_index.py).

    slot_view(offer)               the slot's KV as the last heartbeat shows it, netted by the pending sends
    unusable(provider, offer)      why the slot can never serve (does not fit, no spec, draining); "" if it can
    rank(offer, trust_tier)        the order warm slots are tried in (smallest first)
    queue_rank(offer, trust_tier)  rank without its tie-break (the slot sent a request least recently first)
    by_turn_within_ties(warm)      warm slots sorted by queue_rank, in rank's order

Pure.
"""

from __future__ import annotations

from agent.admission import SlotKV
from agent.coordinator.routing.agent_limits import margin_bytes
from agent.coordinator.routing.registry import Offer, ProviderRecord


def slot_view(offer: Offer) -> SlotKV:
    status = offer.status
    if status is None:
        return SlotKV(0)
    return offer.pending.view(status.kv_budget_bytes, status.kv_reserved_bytes, status.kv_used_bytes,
                             margin_bytes(offer, status.kv_budget_bytes))


def unusable(provider: ProviderRecord, offer: Offer) -> str:
    heartbeat = provider.heartbeat
    if offer.entry.fits and offer.spec is not None and not (heartbeat is not None and heartbeat.draining):
        return ""  # the usual case, decided without a call per test: this runs for every provider per decision
    if not offer.entry.fits:
        return f"does not fit this machine: {offer.entry.fit_reason}"
    if offer.spec is None:
        return offer.spec_error
    if provider.is_draining:
        return "the agent is draining (stopping)"
    return ""


def rank(offer: Offer, trust_tier: int = 0) -> tuple:
    """Shortest queue first (the agent's waiting rows and what we sent since), then the fewest rows, then
    the most trusted, then the slot sent a request least recently (round robin among equals). Rows first:
    every extra row slows each stream of a batch and queues its prefill behind the others', so an idle warm
    slot beats a busy big one. Not free KV among equals: it is a claim, and at equal rows it sent each new
    conversation to the biggest Macs, where prefix routing then kept it (the fleet benchmark's busiest
    provider held 1.7x the mean rows; round robin, 1.41). Admission still decides what fits."""
    return *queue_rank(offer, trust_tier), offer.last_sent


def queue_rank(offer: Offer, trust_tier: int) -> tuple[int, int, int]:
    """rank without its tie-break: what the warm index files slots by."""
    status = offer.status
    rows = status.num_running + status.num_waiting
    delta = offer.pending.load_delta(rows)
    return status.num_waiting + max(0, delta), rows + delta, -trust_tier


def by_turn_within_ties(warm: list[tuple[tuple, ProviderRecord, Offer]]):
    """`warm` (sorted by queue_rank) in rank's order: each group of equal queue rank is ordered only when a
    lazy search reaches it, so a decision over 1,000 providers does not sort 1,000 slots."""
    start = 0
    while start < len(warm):
        end = start + 1
        while end < len(warm) and warm[end][0] == warm[start][0]:
            end += 1
        group = warm[start:end]
        if len(group) > 1:
            group.sort(key=lambda item: item[2].last_sent)
        for _, provider, offer in group:
            yield provider, offer
        start = end
