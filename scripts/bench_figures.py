"""The saved benchmark results, read once: which load-test runs exist, and the figures computed from them.

PERFORMANCE.md and the README's summary both quote `figures(...)`, so a number is formatted in one
place and the two documents cannot show different values for the same measure.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path

GPT, GEMMA = "gpt-oss-20b", "gemma-4-26b"
MODEL_KEYS = ((GPT, "gpt"), (GEMMA, "gemma"))
REFUSALS = ("billing", "token_limit", "capacity_429")
ERRORS = ("billing", "token_limit", "capacity_429", "no_provider_503", "dispatch_failure", "client")
SLOW_TTFT_FACTOR = 2  # a gemma first token this many times its run's median counts as "TTFT grew"

# The sustained runs, oldest first, and the change each one measured. The targets are judged on the last.
SUSTAINED_RUNS = (
    ("loadtest.json", "the run with the burst matrix (pre-warm on free KV below 25 % or a queue; placement "
                      "by queue, most free KV, rows)", ""),
    ("sustained_prefill_prewarm.json", "pre-warm also on a prefill backlog: when a model's warm slots average "
                                       "`prewarm_waiting_per_slot` (2) prompts waiting for prefill, one more cold "
                                       "provider loads it (`agent/coordinator/routing/prewarm.py`)", ""),
    ("sustained_spread_by_rows.json", "placement ranks by queue, **fewest rows**, most free KV, so an idle warm slot "
                                      "is chosen before a busy bigger one (`agent/coordinator/routing/placement.py`)",
     "load test started 40 s after the fleet was ready, so the initial loads had finished"),
)


@dataclass(frozen=True, slots=True)
class SustainedRun:
    file: str
    change: str
    note: str
    args: dict
    data: dict

    @property
    def scale(self) -> float:
        return self.args["time_scale"]

    def commands(self) -> tuple[str, str]:
        a, port = self.args, self.args["base_url"].rsplit(":", 1)[1].split("/")[0]
        rounds = f" --rounds {a['rounds']}" if a["matrix"] != "none" else ""
        return (f"python scripts/fleet.py --agents 60 --port {port} --time-scale {a['time_scale']}",
                f"python scripts/loadtest.py --base-url {a['base_url']} --key KEY --time-scale {a['time_scale']} "
                f"--matrix {a['matrix']}{rounds} --sustained-s {a['sustained_s']:g} --out scripts/results/{self.file}")

    def gemma_samples(self) -> list[tuple[float, dict]]:
        return [(s["t"] / self.scale, s[GEMMA]) for s in self.data["samples"] if GEMMA in s]

    def widened_at(self) -> float | None:
        """Simulated seconds until gemma first had more warm providers than at the start (None: never)."""
        samples = self.gemma_samples()
        return next((t for t, s in samples if s["warm"] > samples[0][1]["warm"]), None) if samples else None

    def slow_ttft_at(self) -> float | None:
        """Start time (simulated s) of the first gemma request whose TTFT was SLOW_TTFT_FACTOR × the median."""
        reqs = sorted((r for r in self.data["requests"] if r["model"] == GEMMA and r["ttft_s"]), key=lambda r: r["t"])
        if not reqs:
            return None
        median = statistics.median(r["ttft_s"] for r in reqs)
        return next((r["t"] / self.scale for r in reqs if r["ttft_s"] > SLOW_TTFT_FACTOR * median), None)

    def idle_beside_running(self) -> tuple[int, int]:
        """Capacity samples in which a warm gemma slot sat idle while another ran streams, and all samples."""
        samples = self.gemma_samples()
        return sum(1 for _, s in samples if s["running"] and s["idle"]), len(samples)


def load_runs(results_dir: Path) -> dict:
    """{"matrix": the burst matrix or None, "matrix_args": its load test's args, "sustained": [SustainedRun],
    "constrained": scripts/bench_constrained.py's result or None, "vision": scripts/bench_vision.py's or None,
    "vision_install": scripts/measure_vision_install.py's or None, "before_after": scripts/bench_before_after.py's
    results or None, "prefix": scripts/bench_prefix.py's or None}."""
    def saved(name: str) -> dict | None:
        path = results_dir / name
        return json.loads(path.read_text()) if path.exists() else None

    runs: dict = {"matrix": None, "matrix_args": {}, "sustained": [], "constrained": saved("constrained.json"),
                  "vision": saved("vision.json"), "vision_install": saved("vision_install.json"),
                  "before_after": saved("before_after.json"),  # scripts/bench_before_after.py (issue 16)
                  "prefix": saved("prefix.json"), "prefix_routing": saved("prefix_routing.json")}
    for file, change, note in SUSTAINED_RUNS:
        path = results_dir / file
        if not path.exists():
            continue
        data = json.loads(path.read_text())
        if "matrix" in data:
            runs["matrix"], runs["matrix_args"] = data["matrix"], data["args"]
        if "sustained" in data:
            runs["sustained"].append(SustainedRun(file, change, note, data["args"], data["sustained"]))
    return runs


def f(value, digits: int = 2) -> str:
    """One way to print a number: thousands separated, a fixed number of decimals for floats."""
    return "–" if value is None else f"{value:,.{digits}f}" if isinstance(value, float) else f"{value:,}"


def span(values: list[float], digits: int = 2) -> str:
    low, high = min(values), max(values)
    return f(float(low), digits) if low == high else f"{f(float(low), digits)}–{f(float(high), digits)}"


def figures(results: dict, runs: dict) -> dict[str, str]:
    """Every figure the README's summary quotes, formatted as PERFORMANCE.md prints it."""
    out: dict[str, str] = {}
    noted = {name: part["note"] for name, part in results.items() if isinstance(part, dict) and part.get("note")}
    out["notes"] = "; ".join(f"{', '.join(sorted(n for n in noted if noted[n] == note))}: {note}"
                             for note in sorted(set(noted.values())))
    if "kv" in results:
        kv = results["kv"]
        out["kv_error"] = f"{f(kv['max_error_bytes'])} bytes"
        out["kv_steps"] = f(kv["steps_compared"])
        out["kv_slack"] = f(kv["min_peak_slack_bytes"])
    if runs["matrix"]:
        cells = runs["matrix"]["cells"]
        out["matrix_cells"] = f(len(cells))
        out["matrix_requests"] = f(sum(c["requests"] for c in cells))
        out["matrix_errors"] = f(sum(c["classes"][k] for c in cells for k in ERRORS))
    if "admission" in results:
        for model, key in MODEL_KEYS:
            ratios = [r["ratio"] for r in results["admission"]["rows"] if r["model"] == model]
            out[f"admission_{key}"] = span(ratios) + "×"
    if "routing" in results:
        d = results["routing"]["dispatch"]
        out["routing_p50"], out["routing_p95"] = f(d["p50_us"], 0), f(d["p95_us"], 0)
    if "stack" in results:
        out["stack_added_ttft"] = f"{results['stack']['added_ttft_p50_ms']} ms"
    if "ttft" in results:
        t = results["ttft"]
        out["ttft_p50"] = f"{f(t['ttft_sequential']['p50_us'] / 1000)} ms"
        out["http_p50"] = f"{f(t['http_round_trip']['p50_us'] / 1000)} ms"
    if "ledger" in results:
        out["ledger_rate"] = f(results["ledger"]["settlements_per_s"])
        out["ledger_errors"] = f(results["ledger"]["errors"])
    if "link" in results:
        link = results["link"]
        out["link_state_p50"] = f"{f(link['state_change_heartbeat']['p50_ms'])} ms"
        out["link_reconnect_p50"] = f"{f(link['reconnect_after_restart']['p50_ms'] / 1000)} s"
        out["link_frames"] = f(link["chunk_frames_per_second"])
    return out
