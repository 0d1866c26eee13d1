"""Measures the agent's link on loopback: state-change heartbeat latency, reconnect time after the
coordinator restarts, and chunk frames per second.

    python scripts/bench_link.py [--samples 50] [--frames 20000] [--json]

Real websockets on 127.0.0.1: the agent's Link and LinkSession against a minimal coordinator.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.link.client import Link  # noqa: E402
from tests.link_support import MiniCoordinator, RecordingHandler  # noqa: E402


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {"p50_ms": round(1000 * statistics.median(ordered), 2),
            "p95_ms": round(1000 * ordered[int(0.95 * (len(ordered) - 1))], 2),
            "max_ms": round(1000 * ordered[-1], 2)}


@contextlib.asynccontextmanager
async def linked(heartbeat_interval_s: float = 30.0):
    """A minimal coordinator and one agent link to it, registered; both stopped on exit."""
    coordinator, handler = MiniCoordinator(heartbeat_interval_s=heartbeat_interval_s), RecordingHandler()
    await coordinator.start()
    link = Link(coordinator.url, "good-token", handler)
    task = asyncio.create_task(link.run())
    await coordinator.next_frame("register")
    try:
        yield coordinator, handler, link
    finally:
        link.stop()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await coordinator.stop()


async def heartbeat_latency(samples: int) -> dict[str, float]:
    async with linked(heartbeat_interval_s=60) as (coordinator, handler, _):
        await coordinator.next_frame("heartbeat")
        latencies = []
        for i in range(samples):
            handler.state = "running" if i % 2 == 0 else "idle"
            start = time.perf_counter()
            handler.state_changed.set()
            await coordinator.next_frame("heartbeat")
            latencies.append(time.perf_counter() - start)
    return percentiles(latencies)


async def reconnect_time(samples: int) -> dict[str, float]:
    """Coordinator down and straight back up: time until the agent has registered again."""
    async with linked() as (coordinator, _, _):
        times = []
        for _ in range(samples):
            port = coordinator.port
            await coordinator.stop()
            start = time.perf_counter()
            await coordinator.start(port)
            await coordinator.next_frame("register", timeout=60)
            times.append(time.perf_counter() - start)
    return percentiles(times)


async def frames_per_second(num_frames: int) -> float:
    async with linked() as (coordinator, handler, link):
        body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}
        await coordinator.send({"type": "inference_request", "request_id": "bench", "model": "m", "body": body})
        while not handler.events or handler.events[-1].type != "inference_request":
            await asyncio.sleep(0.001)
        start = time.perf_counter()
        for _ in range(num_frames):
            link.send(link.session.chunk("bench", " token"))
        for _ in range(num_frames):
            await coordinator.next_frame("inference_response_chunk", timeout=60)
        elapsed = time.perf_counter() - start
    return round(num_frames / elapsed)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=50)
    parser.add_argument("--reconnects", type=int, default=5)
    parser.add_argument("--frames", type=int, default=20000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = {
        "state_change_heartbeat": await heartbeat_latency(args.samples),
        "reconnect_after_restart": await reconnect_time(args.reconnects),
        "chunk_frames_per_second": await frames_per_second(args.frames),
    }
    if args.json:
        print(json.dumps(results))
    else:
        for name, value in results.items():
            print(f"{name:28} {value}")


if __name__ == "__main__":
    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    asyncio.run(main())
