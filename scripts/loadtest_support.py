"""What loadtest.py measures: error classes, percentiles, one cell's summary, capacity samples."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from agent.testing.fleet.sse import StreamResult

CLASSES = ("ok", "billing", "token_limit", "capacity_429", "no_provider_503", "dispatch_failure", "client")


def classify(r: StreamResult) -> str:
    if r.exception is not None:
        return "client"
    if r.status == 200:
        return "dispatch_failure" if r.error is not None or r.finish_reason == "error" else "ok"
    if r.status == 429 and r.error_code == "insufficient_quota":
        return "billing"
    if r.status == 429:
        return "capacity_429" if r.error_code == "capacity_saturated" else "token_limit"
    if r.status == 503:
        return "no_provider_503"
    if r.status == 502:
        return "dispatch_failure"
    return "client"


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class Tally:
    results: list[tuple[StreamResult, str]] = field(default_factory=list)

    def add(self, result: StreamResult) -> None:
        self.results.append((result, classify(result)))

    def summary(self, wall_s: float, time_scale: float) -> dict:
        ok = [r for r, c in self.results if c == "ok"]
        counts = {c: sum(1 for _, k in self.results if k == c) for c in CLASSES}
        n = len(self.results)
        tokens = sum(r.num_chunks for r, _ in self.results)
        sat = [r for r, c in self.results if c == "capacity_429"]
        return {
            "requests": n, "error_pct": round(100 * (n - counts["ok"]) / n, 2) if n else None,
            "classes": counts,
            "latency_p50_s": _sim(pct([r.latency_s for r in ok], 0.5), time_scale),
            "latency_p95_s": _sim(pct([r.latency_s for r in ok], 0.95), time_scale),
            "ttft_p50_s": _sim(pct([r.ttft_s for r in ok if r.ttft_s is not None], 0.5), time_scale),
            "ttft_p95_s": _sim(pct([r.ttft_s for r in ok if r.ttft_s is not None], 0.95), time_scale),
            "cluster_tok_s": round(tokens / wall_s * time_scale, 1) if wall_s else None,
            "wall_s": round(wall_s, 2), "tokens": tokens,
            "all_429_have_retry_after": all(r.retry_after for r in sat),
            "errors_sample": sorted({f"{c}: {(r.error or {}).get('message') or r.exception}"[:200]
                                     for r, c in self.results if c != "ok"})[:5],
        }


def _sim(real_s: float | None, time_scale: float) -> float | None:
    """Real seconds → simulated seconds (the fleet's clock runs 1/time_scale times faster)."""
    return None if real_s is None else round(real_s / time_scale, 3)


def capacity_row(report: dict) -> dict:
    """Per model: warm (idle + running), idle, running, loading, cold (fits now), and the queue."""
    out = {}
    for row in report["data"]:
        p = row["providers"]
        out[row["model"]] = {"warm": p["idle"] + p["running"], "idle": p["idle"], "running": p["running"],
                             "loading": p["loading"], "cold": p["cold_fits"] + p["cold_no_room"],
                             "cold_fits": p["cold_fits"], "queue": row["queue_depth"],
                             "free_kv_gib": round(row["free_kv_bytes"] / 2**30, 1)}
    return out


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None
