"""GET /v1/models/capacity: per model, every provider's state and why, free KV, and the queue.

    {"object": "list", "data": [{
        "model": "gpt-oss-20b",
        "providers": {"running": 2, "idle": 1, "loading": 0, "cold_fits": 3, "cold_no_room": 0,
                      "draining": 0, "never_fits": 1},
        "vision_slots": 1,               # warm slots loaded with vision: the ones image requests go to
        "free_kv_bytes": ...,            # Σ over warm slots of the coordinator's netted view
        "kv_budget_bytes": ...,          # Σ over warm slots
        "kv_cached_bytes": ..., "prefix_hit_tokens": ..., "prefix_evictions": ...,   # Σ over the slots' heartbeats
        "queue_depth": 0, "oldest_queued_s": 0.0,
        "never_fits": [{"provider_id": ..., "reason": ...}],
        "details": [{"provider_id", "state", "slot_state", "reason", "free_kv_bytes", "kv_budget_bytes",
                     "num_running", "num_waiting", "num_in_flight", "expected_output_ratio", "modalities", "chip",
                     "memory_bytes", "trust", "quarantine",        (trust and quarantine: routing/reputation.py)
                     "kv_cached_bytes", "prefix_hit_rate", "prefix_hit_tokens", "prefix_evictions",
                     "num_prefix_chains"}]}]}                      (the slot's prefix cache, as its heartbeat says)

States (placement.Residency): running (serving requests), idle (loaded, none), loading, cold_fits (the
load gate says it would load now), cold_no_room (it fits the machine but not beside what is loaded,
or the agent refused the last load), draining, never_fits (too big for the machine, or no KV layout).

A consumer (privacy.is_operator says no) gets `consumer_view`: the same numbers without `details` and
`never_fits`, which name each provider, its chip and its memory.

Public names: capacity_report, consumer_view, state_counts.
"""

from __future__ import annotations

from typing import Any

from agent.coordinator.routing.placement import Residency, classify, slot_view
from agent.coordinator.routing.router import Router
from agent.wire.frames import SlotStatus


SUMMED = ("kv_cached_bytes", "prefix_hit_tokens", "prefix_evictions")  # per model, over its slots


def capacity_report(router: Router) -> dict[str, Any]:
    models = sorted(set(router.registry.models()) | {m for m, q in router.queues.items() if len(q)})
    return {"object": "list", "data": [_model_report(router, model) for model in models]}


def consumer_view(report: dict[str, Any]) -> dict[str, Any]:
    per_provider = ("details", "never_fits")
    return {**report, "data": [{k: v for k, v in row.items() if k not in per_provider} for row in report["data"]]}


def state_counts(router: Router) -> dict[str, dict[str, int]]:
    return {row["model"]: row["providers"] for row in capacity_report(router)["data"]}


def _model_report(router: Router, model: str) -> dict[str, Any]:
    settings, now = router.settings, router.clock()
    counts = {residency.value: 0 for residency in Residency}
    details, never = [], []
    free = budget = vision = 0
    for provider, offer in router.registry.offers(model):
        residency, reason = classify(provider, offer, now, settings)
        counts[residency.value] += 1
        status = offer.status
        row = {"provider_id": provider.provider_id, "state": residency.value, "slot_state": offer.state.value,
               "reason": reason, "free_kv_bytes": 0, "kv_budget_bytes": 0,
               "num_running": status.num_running if status else 0, "num_waiting": status.num_waiting if status else 0,
               "num_in_flight": offer.pending.num_in_flight,
               **_prefix_cache(status),
               "expected_output_ratio": status.expected_output_ratio if status else None,
               "chip": provider.register.hardware.chip, "memory_bytes": provider.memory_bytes,
               "trust": round(router.reputation.trust(provider.provider_id), 4),
               "quarantine": router.reputation.quarantine_reason(provider.provider_id) or None}
        row["modalities"] = list(status.modalities) if status is not None and offer.is_warm else ["text"]
        vision += "image" in row["modalities"]
        if residency in (Residency.RUNNING, Residency.IDLE):
            view = slot_view(offer)
            row["free_kv_bytes"], row["kv_budget_bytes"] = max(0, view.free_bytes), view.budget_bytes
            free += row["free_kv_bytes"]
            budget += view.budget_bytes
            if offer.pending.is_marked_full:
                row["reason"] += "; refused a request as full since its last heartbeat"
        elif residency is Residency.NEVER_FITS:
            never.append({"provider_id": provider.provider_id, "reason": reason})
        details.append(row)
    queue = router.queues.get(model)
    return {"model": model, "providers": counts, "vision_slots": vision, "free_kv_bytes": free,
            "kv_budget_bytes": budget, **{name: sum(row[name] for row in details) for name in SUMMED},
            "queue_depth": len(queue) if queue else 0,
            "oldest_queued_s": round(queue.oldest_wait_s(now), 3) if queue else 0.0,
            "never_fits": never, "details": details}


def _prefix_cache(status: SlotStatus | None) -> dict[str, Any]:
    """The slot's prefix cache (its cached bytes are inside free_kv_bytes: the agent evicts them first)."""
    if status is None:
        return {"kv_cached_bytes": 0, "prefix_hit_rate": 0.0, "prefix_hit_tokens": 0, "prefix_evictions": 0,
                "num_prefix_chains": 0}
    return {"kv_cached_bytes": status.kv_cached_bytes, "prefix_hit_rate": status.prefix_hit_rate,
            "prefix_hit_tokens": status.prefix_hit_tokens, "prefix_evictions": status.prefix_evictions,
            "num_prefix_chains": len(status.prefix_chains)}
