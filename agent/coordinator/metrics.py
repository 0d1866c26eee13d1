"""Prometheus metrics, one registry per app (so tests can build many apps in one process).

Counters and histograms are updated where things happen; gauges (queue depth, providers by state,
free KV, requests in flight) are read from the router when scraped, so they can never drift.

    darkbloom_requests_total{model,outcome}            consumer requests by how they ended
    darkbloom_time_to_first_token_seconds{model}       arrival at the coordinator -> first token
    darkbloom_queue_wait_seconds{model}                time queued before dispatch
    darkbloom_attempts_total{model,outcome}            sends to a provider by how they ended
    darkbloom_load_requests_total{model}               load_model frames sent (pre-warming)
    darkbloom_prewarm_plan_seconds{model}              how long each pre-warm plan took (its count: how many ran)
    darkbloom_provider_evictions_total                 providers dropped for missed heartbeats
    darkbloom_bad_frames_total{code}                   agent frames that failed validation
    darkbloom_provider_quarantines_total               providers quarantined for repeated failures
    darkbloom_prefix_routes_total{model,outcome}       dispatches by where the prefix was (held, elsewhere, none)
    darkbloom_prefix_route_sources_total{model,source} ... with a known prefix: reported (heartbeat) or recorded
    darkbloom_direct_stream_tokens_total{model}        streamed tokens written as the router took the provider's
                                                       frame (http/direct_stream.py); the rest went by the stream's task
    darkbloom_tapped_provider_frames_total             provider frames the link's endpoint took as uvicorn read them
                                                       (http/frame_tap.py), counted when the link ends; the rest by its task
    darkbloom_providers_quarantined                    (gauge) providers in quarantine now
    operator only: darkbloom_provider_trust{provider_id}, darkbloom_provider_quarantined{provider_id},
    darkbloom_provider_outcomes{provider_id,outcome}   (gauges from the reputation book, at scrape time)
    darkbloom_queue_depth{model}, darkbloom_providers{model,state}, darkbloom_free_kv_bytes{model},
    darkbloom_requests_in_flight{model}, darkbloom_kv_cached_bytes{model}, darkbloom_prefix_hit_tokens{model},
    darkbloom_prefix_evictions{model}                  (gauges, at scrape time: sums of the providers' heartbeats)
    operator only: darkbloom_provider_kv_cached_bytes, darkbloom_provider_prefix_hit_rate,
    darkbloom_provider_prefix_evictions, darkbloom_provider_prefix_chains {provider_id,model}   (gauges)

Public names: Metrics, CONTENT_TYPE.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

CONTENT_TYPE = CONTENT_TYPE_LATEST
TTFT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64, 128, 256)
PLAN_BUCKETS = (0.0001, 0.0003, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("darkbloom_requests", "Consumer requests by outcome", ["model", "outcome"], registry=r)
        self.ttft = Histogram("darkbloom_time_to_first_token_seconds", "Arrival to first token", ["model"],
                              buckets=TTFT_BUCKETS, registry=r)
        self.queue_wait = Histogram("darkbloom_queue_wait_seconds", "Time queued before dispatch", ["model"],
                                    buckets=TTFT_BUCKETS, registry=r)
        self.attempts = Counter("darkbloom_attempts", "Sends to a provider by outcome", ["model", "outcome"],
                                registry=r)
        self.loads = Counter("darkbloom_load_requests", "load_model frames sent", ["model"], registry=r)
        self.prewarm_plans = Histogram("darkbloom_prewarm_plan_seconds", "Time a pre-warm plan took (it reads "
                                       "every provider of the model)", ["model"], buckets=PLAN_BUCKETS, registry=r)
        self.evictions = Counter("darkbloom_provider_evictions", "Providers evicted for missed heartbeats",
                                 registry=r)
        self.bad_frames = Counter("darkbloom_bad_frames", "Agent frames that failed validation", ["code"],
                                  registry=r)
        self.quarantines = Counter("darkbloom_provider_quarantines", "Providers quarantined for repeated failures",
                                   registry=r)
        self.clamped = Counter("darkbloom_usage_claims_clamped", "Usage claims above the coordinator's bound",
                               ["model"], registry=r)
        self.prefix_routes = Counter("darkbloom_prefix_routes", "Dispatches by where the request's prefix was "
                                     "(held: to the provider that served it; elsewhere; none: no known prefix)",
                                     ["model", "outcome"], registry=r)
        self.prefix_sources = Counter("darkbloom_prefix_route_sources", "Dispatches with a known prefix by how it "
                                      "was known (reported: the provider's heartbeat lists it; recorded: where "
                                      "the coordinator sent it)", ["model", "source"], registry=r)
        self.direct_stream_tokens = Counter("darkbloom_direct_stream_tokens", "Streamed tokens written straight "
                                            "out as the provider's frame was handled (the relay's fast path)",
                                            ["model"], registry=r)
        self.tapped_provider_frames = Counter("darkbloom_tapped_provider_frames", "Provider frames taken as the "
                                              "websocket protocol read them, past the link's task (counted when "
                                              "the link ends)", registry=r)
        # Per-provider series: rendered for an operator only (consumers see aggregates, see http/operator.py).
        self.operator_registry = CollectorRegistry()
        self.clamped_by_provider = Counter("darkbloom_provider_usage_claims_clamped",
                                           "Usage claims above the coordinator's bound, per provider",
                                           ["provider_id"], registry=self.operator_registry)

    def watch(self, gauges: Callable[[], Iterable[tuple[str, str, list[str], list[tuple[list[str], float]]]]]) -> None:
        """Add gauges computed at scrape time: (name, help, label names, [(label values, value)])."""
        self.registry.register(_ScrapeTimeGauges(gauges))

    def watch_operator(self, gauges: Callable[[], Iterable[tuple[str, str, list[str], list[tuple[list[str], float]]]]]
                       ) -> None:
        """Like `watch`, for per-provider gauges only an operator sees."""
        self.operator_registry.register(_ScrapeTimeGauges(gauges))

    def render(self, *, is_operator: bool = False) -> bytes:
        text = generate_latest(self.registry)
        return text + generate_latest(self.operator_registry) if is_operator else text

    def usage_clamped(self, model: str, provider_id: str) -> None:
        self.clamped.labels(model).inc()
        self.clamped_by_provider.labels(provider_id).inc()

    def prefix_route(self, model: str, outcome: str, source: str = "") -> None:
        self.prefix_routes.labels(model, outcome).inc()
        if source:
            self.prefix_sources.labels(model, source).inc()

    def request(self, model: str, outcome: str) -> None:
        self.requests.labels(model or "", outcome).inc()

    def attempt(self, model: str, outcome: str) -> None:
        self.attempts.labels(model, outcome).inc()


class _ScrapeTimeGauges:
    def __init__(self, gauges: Callable[[], Iterable[Any]]) -> None:
        self._gauges = gauges

    def collect(self) -> Iterable[GaugeMetricFamily]:
        for name, help_text, labels, samples in self._gauges():
            family = GaugeMetricFamily(name, help_text, labels=labels)
            for values, value in samples:
                family.add_metric(values, value)
            yield family

    def describe(self) -> Iterable[GaugeMetricFamily]:
        return []
