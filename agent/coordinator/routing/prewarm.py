"""Pre-warming: which cold providers to ask to load a model, before requests pile up. Pure.

Demand outruns a model's warm capacity when requests are queued for it, when the KV its warm slots
have free (the coordinator's netted view) falls below `prewarm_free_fraction` of their budgets, or
when their prompts back up: `prewarm_waiting_per_slot` admitted prompts per warm slot still waiting
for prefill means time to first token is about to grow although KV is plentiful (a long-prompt model
saturates on prefill long before it runs out of KV).
Then cold providers that fit (load_gate beside what they hold, as in placement.classify) are asked
to load it, the largest machines first: one load at a time while nothing is queued, one more for
every `prewarm_queue_per_load` queued requests. A load that is already on its way counts.

The coordinator never unloads: warm slots cool only by the agent's own idle policy.

Public names: LoadPlan, plan_loads.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from agent.coordinator.routing.placement import Residency, classify, slot_view
from agent.coordinator.routing.registry import Offer, ProviderRecord
from agent.coordinator.settings import CoordinatorSettings


@dataclass(frozen=True, slots=True)
class LoadPlan:
    model: str
    providers: tuple[ProviderRecord, ...]
    reason: str


def plan_loads(offers: Iterable[tuple[ProviderRecord, Offer]], *, model: str, num_queued: int, now: float,
               settings: CoordinatorSettings) -> LoadPlan:
    warm_budget = warm_free = num_loading = num_warm = num_waiting = 0
    others: list[tuple[ProviderRecord, Offer]] = []
    for provider, offer in offers:
        if provider.is_draining or offer.spec is None or not offer.entry.fits:
            continue
        if offer.is_warm:
            view = slot_view(offer)
            warm_budget += view.budget_bytes - view.safety_margin_bytes
            warm_free += max(0, view.free_bytes)
            num_warm += 1
            num_waiting += offer.status.num_waiting
        elif offer.is_loading(now, settings.load_timeout_s):
            num_loading += 1
        else:
            others.append((provider, offer))
    if num_queued:
        wanted = 1 + num_queued // max(1, settings.prewarm_queue_per_load)
        reason = f"{num_queued} request(s) queued"
    elif warm_budget and warm_free < settings.prewarm_free_fraction * warm_budget:
        wanted = 1
        reason = f"warm slots have {warm_free / warm_budget:.0%} of their KV free"
    elif num_warm and num_waiting >= settings.prewarm_waiting_per_slot * num_warm:
        wanted = 1
        reason = f"{num_waiting} prompt(s) waiting for prefill on {num_warm} warm slot(s)"
    else:
        return LoadPlan(model, (), "")
    num_new = wanted - num_loading
    if num_new <= 0 or not others:
        return LoadPlan(model, (), reason)
    # Only now, with demand, run the load gate on the cold ones (cached per heartbeat).
    cold = [p for p, offer in others if classify(p, offer, now, settings)[0] is Residency.COLD_FITS]
    cold.sort(key=lambda p: (-p.memory_bytes, p.provider_id))
    return LoadPlan(model, tuple(cold[:num_new]), reason)
