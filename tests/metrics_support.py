"""Read the coordinator's Prometheus counters through prometheus_client's public API."""

from __future__ import annotations

from agent.coordinator.metrics import Metrics


def counted(metrics: Metrics, name: str, **labels: str) -> float:
    """A sample's value (`darkbloom_attempts_total`, model=..., outcome=...); 0 for labels never counted.

    A name the registry does not have is an error, so a typo cannot pass for "counted nothing"."""
    families = {family.name for family in metrics.registry.collect()}
    if name.removesuffix("_total") not in families:
        raise KeyError(f"no metric {name!r}; the registry has {sorted(families)}")
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value
