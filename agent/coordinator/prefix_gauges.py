"""The prefix cache in /metrics, read from the providers' latest heartbeats at scrape time.

    model_gauges(router)      per model, summed over its providers' slots (every scraper sees these):
                              darkbloom_kv_cached_bytes, darkbloom_prefix_hit_tokens, darkbloom_prefix_evictions
    provider_gauges(router)   per provider and model (an operator only, as every per-provider series):
                              darkbloom_provider_kv_cached_bytes, darkbloom_provider_prefix_hit_rate,
                              darkbloom_provider_prefix_hit_tokens, darkbloom_provider_prefix_evictions,
                              darkbloom_provider_prefix_chains (the chain keys its heartbeat reports)

Hit tokens and evictions are the agent's counts since its slot loaded: summed, they are gauges (a
provider leaving takes its share with it), not counters.

Public names: model_gauges, provider_gauges.
"""

from __future__ import annotations

from collections.abc import Iterable

from agent.coordinator.routing.router import Router
from agent.wire.frames import SlotStatus

Gauge = tuple[str, str, list[str], list[tuple[list[str], float]]]

MODEL_FIELDS = (
    ("darkbloom_kv_cached_bytes", "kv_cached_bytes", "Prefix-cache bytes the providers hold per model (free-able room)"),
    ("darkbloom_prefix_hit_tokens", "prefix_hit_tokens", "Prompt tokens served from the providers' prefix caches "
                                                         "per model (since each slot loaded)"),
    ("darkbloom_prefix_evictions", "prefix_evictions", "Prefix-cache entries the providers evicted per model "
                                                       "(since each slot loaded)"),
)
PROVIDER_FIELDS = (
    ("darkbloom_provider_kv_cached_bytes", "kv_cached_bytes", "Prefix-cache bytes per provider and model"),
    ("darkbloom_provider_prefix_hit_rate", "prefix_hit_rate", "Admitted requests that reused a cached prefix, of "
                                                              "lookups, per provider and model"),
    ("darkbloom_provider_prefix_hit_tokens", "prefix_hit_tokens", "Prompt tokens served from the prefix cache, per "
                                                                  "provider and model"),
    ("darkbloom_provider_prefix_evictions", "prefix_evictions", "Prefix-cache evictions per provider and model"),
)


def _statuses(router: Router, model: str) -> list[tuple[str, SlotStatus]]:
    return [(p.provider_id, o.status) for p, o in router.registry.offers(model) if o.status is not None]


def model_gauges(router: Router) -> Iterable[Gauge]:
    models = router.registry.models()
    for name, field, help_text in MODEL_FIELDS:
        yield (name, help_text, ["model"],
               [([model], sum(getattr(s, field) for _, s in _statuses(router, model))) for model in models])


def provider_gauges(router: Router) -> Iterable[Gauge]:
    rows = [(pid, model, status) for model in router.registry.models() for pid, status in _statuses(router, model)]
    for name, field, help_text in PROVIDER_FIELDS:
        yield (name, help_text, ["provider_id", "model"], [([pid, m], getattr(s, field)) for pid, m, s in rows])
    yield ("darkbloom_provider_prefix_chains", "Chain keys the provider's latest heartbeat reports holding, per model",
           ["provider_id", "model"], [([pid, m], len(s.prefix_chains)) for pid, m, s in rows])
