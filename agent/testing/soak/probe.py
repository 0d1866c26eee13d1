"""Is the coordinator still responsive? /health and /metrics timed every interval, and the process's memory.

    probe = Probe(base_url, interval_s=0.25); task = probe.start()
    ... ; await probe.stop()
    probe.summary()   # {"health": {"num": .., "p50_ms": .., "p99_ms": .., "max_ms": .., "num_failed": ..}, ...}

The coordinator runs in the soak's own process, so the RSS sampled is that process's: an upper bound on the
coordinator's (the simulated fleet and the clients live beside it).

Public names: Probe, rss_bytes.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import httpx
import psutil

PROBE_TIMEOUT_S = 10.0
PATHS = {"health": "/health", "metrics": "/metrics"}


def rss_bytes() -> int:
    return psutil.Process().memory_info().rss


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class Probe:
    base_url: str
    interval_s: float = 0.25
    latencies_s: dict[str, list[float]] = field(default_factory=lambda: {name: [] for name in PATHS})
    num_failed: dict[str, int] = field(default_factory=lambda: {name: 0 for name in PATHS})
    max_rss_bytes: int = 0
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task | None = None

    def start(self) -> Probe:
        self._task = asyncio.create_task(self._run(), name="soak-probe")
        return self

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task

    async def _run(self) -> None:
        async with httpx.AsyncClient(base_url=self.base_url, timeout=PROBE_TIMEOUT_S) as http:
            while not self._stop.is_set():
                for name, path in PATHS.items():
                    started = time.perf_counter()
                    try:
                        response = await http.get(path)
                        is_ok = response.status_code == 200
                    except httpx.HTTPError:
                        is_ok = False
                    self.latencies_s[name].append(time.perf_counter() - started)
                    self.num_failed[name] += not is_ok
                self.max_rss_bytes = max(self.max_rss_bytes, rss_bytes())
                try:
                    async with asyncio.timeout(self.interval_s):
                        await self._stop.wait()
                except TimeoutError:
                    pass

    def summary(self) -> dict:
        out = {}
        for name, values in self.latencies_s.items():
            ms = [v * 1000 for v in values]
            out[name] = {"num": len(ms), "num_failed": self.num_failed[name],
                         "p50_ms": _round(_percentile(ms, 0.5)), "p99_ms": _round(_percentile(ms, 0.99)),
                         "max_ms": _round(max(ms, default=None))}
        return out


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)
