#!/usr/bin/env python3
"""The coordinator alone at fleet scale: how much of a core it spends relaying tokens and hearing heartbeats.

    scripts/bench_relay.py [--providers 50] [--streams 500] [--tokens 200] [--step-ms 50]
                           [--heartbeat-providers 1000] [--window-s 20] [--json]

One coordinator process (open mode: no keys, no request-rate limit, provider-link caps raised for one
address; on the event loop its `serve` runs on, uvloop when installed); lightweight scripted providers
in other processes (agent/testing/fleet/relay_peer.py: one warm gpt-oss-20b slot each, one token per row every --step-ms); streaming consumers in other processes
(agent/testing/fleet/light_client.py, raw HTTP). The coordinator's CPU is its own process time
(psutil on its pid, user + system), so what the peers and consumers burn on the same cores is not
counted; wall-clock rates are, and this machine's cores are shared, so read those with care.

  relay        --streams concurrent streams of --tokens tokens over --providers providers, twice in one
               run: providers sending batched chunk frames, then one frame per row (an older agent).
               Tokens relayed per second (the consumers' count), the coordinator's CPU µs per token (and its
               user and system parts).
  relay_bare   the same relay of batched frames through scripts/bare_relay.py instead of the coordinator: the
               least a relay in Python spends a token (uvloop, websockets' sans-I/O link, the hot decoder, one
               write a token), with none of the coordinator's checks, meter, deadlines, backpressure or billing.
               The coordinator's figure less this one is what all of that costs a token.
  socket_write the floor under it, in the same run: one 250-byte write to one of 500 loopback connections
               (scripts/bench_socket_write.py), each relayed token's one write. This machine's cores are shared,
               and the floor moves with them (3.9 to 7.1 µs of kernel time in runs on this machine), so a run's
               relay figure is read beside its own floor.
  heartbeat    --heartbeat-providers idle providers heartbeating at the coordinator's interval (2 s):
               the coordinator's share of one core over --window-s, and its CPU per heartbeat.
  routing      Router.try_dispatch p50 / p99 with 1,000 registered providers (scripts/bench_routing.py), by the
               wall clock and by the thread's own CPU time (which other processes on the cores do not inflate).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

BARE_RELAY = ROOT / "scripts" / "bare_relay.py"
NUM_WORKERS = 2  # processes for the peers, and for the consumers: one per core of this machine


def child(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, __file__, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, cwd=ROOT)


def cpu_s(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def cpu_split_s(pid: int) -> tuple[float, float]:
    times = psutil.Process(pid).cpu_times()
    return times.user, times.system


def coordinator_loop():
    """The event loop the coordinator's `serve` runs on (uvloop when installed); a tree from before
    event_loop_factory runs on asyncio's, as its `serve` did with its own HTTP settings."""
    try:
        from agent.coordinator.http.app import event_loop_factory
    except ImportError:
        return None
    return event_loop_factory()


# ---- the roles, each in its own process ---------------------------------------------------------

async def serve_coordinator() -> None:
    from agent.coordinator.http.app import build_app, running
    from agent.coordinator.settings import CoordinatorSettings

    settings = CoordinatorSettings(max_provider_links_per_ip=10_000, max_provider_links_per_credential=10_000,
                                   http_max_connections=10_000, open_requests_per_minute_per_ip=None,
                                   queue_depth=10_000)
    profile = os.environ.get("BENCH_RELAY_PROFILE")  # a path: the coordinator's cProfile stats go there
    profiler = cProfile.Profile() if profile else None
    app = build_app(None, settings)
    try:
        from agent.coordinator.http.gc_tuning import tune_gc
    except ImportError:  # a tree from before it (scripts/bench_before_after.py runs one): its `serve` did not
        pass
    else:
        tune_gc(settings)  # as `serve` does
    async with running(app) as server:
        print(server.base_url, flush=True)
        if profiler:
            profiler.enable()
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until the parent closes it
    if profiler:
        profiler.disable()
        profiler.dump_stats(profile)


async def serve_peers(ws_url: str, count: int, batched: bool, step_s: float) -> None:
    from agent.testing.fleet.relay_peer import start_peers, stop_peers

    peers = await start_peers(ws_url, count, batched=batched, step_s=step_s)
    print(f"ready {len(peers)}", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    print(json.dumps({"frames": sum(p.num_frames for p in peers), "heartbeats": sum(p.num_heartbeats for p in peers)}),
          flush=True)
    await stop_peers(peers)


async def run_consumers(base_url: str, count: int, tokens: int) -> None:
    from agent.testing.fleet.light_client import stream_once

    host, port = base_url.removeprefix("http://").split(":")
    body = {"model": "gpt-oss-20b", "messages": [{"role": "user", "content": "relay"}], "max_tokens": tokens}
    results = await asyncio.gather(*(stream_once(host, int(port), body) for _ in range(count)))
    ttfts = sorted(r.ttft_s for r in results if r.ttft_s is not None)
    print(json.dumps({"tokens": sum(r.tokens for r in results), "ok": sum(r.ok for r in results),
                      "ttft_p50_s": ttfts[len(ttfts) // 2] if ttfts else None}), flush=True)


# ---- the phases -----------------------------------------------------------------------------------

def start_fleet(num_peers: int, batched: bool, step_s: float, relay_script: Path | None = None
                ) -> tuple[subprocess.Popen, str, list[subprocess.Popen], int]:
    """The coordinator (or `relay_script`, another relay run as a script that prints its base URL), and the peers."""
    coordinator = child("--role", "coordinator") if relay_script is None else subprocess.Popen(
        [sys.executable, str(relay_script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    base_url = coordinator.stdout.readline().strip()
    ws_url = base_url.replace("http://", "ws://") + "/ws/provider"
    shares = [num_peers // NUM_WORKERS + (i < num_peers % NUM_WORKERS) for i in range(NUM_WORKERS)]
    peers = [child("--role", "peers", ws_url, str(n), str(int(batched)), str(step_s)) for n in shares if n]
    registered = 0
    for proc in peers:
        line = proc.stdout.readline()
        if not line.startswith("ready"):
            raise SystemExit("the scripted providers did not start")
        registered += int(line.split()[1])
    return coordinator, base_url, peers, registered


def stop_fleet(coordinator: subprocess.Popen, peers: list[subprocess.Popen]) -> dict:
    totals = {"frames": 0, "heartbeats": 0}
    for proc in peers:
        proc.stdin.close()
        stats = json.loads(proc.stdout.readline())
        totals = {k: totals[k] + stats[k] for k in totals}
        proc.wait(timeout=30)
    coordinator.stdin.close()
    try:  # its figures are in: a coordinator slow to close a thousand links (an older tree's) is only stopped
        coordinator.wait(timeout=120)
    except subprocess.TimeoutExpired:
        coordinator.kill()
        coordinator.wait()
    return totals


def consume(base_url: str, streams: int, tokens: int) -> list[dict]:
    shares = [streams // NUM_WORKERS + (i < streams % NUM_WORKERS) for i in range(NUM_WORKERS)]
    consumers = [child("--role", "consumers", base_url, str(n), str(tokens)) for n in shares if n]
    return [json.loads(proc.communicate(timeout=1800)[0].strip().splitlines()[-1]) for proc in consumers]


def relay(num_peers: int, streams: int, tokens: int, step_s: float, batched: bool,
          relay_script: Path | None = None) -> dict:
    coordinator, base_url, peers, _ = start_fleet(num_peers, batched, step_s, relay_script)
    try:
        # Unmeasured: every provider shows its first tokens, so it is proven (reputation.py) as in a running
        # fleet, not a fresh one whose every request is an overflow search past unproven providers.
        consume(base_url, num_peers * 8, 4)
        (user_before, system_before), started = cpu_split_s(coordinator.pid), time.perf_counter()
        results = consume(base_url, streams, tokens)
        user, system = (now - then for now, then in zip(cpu_split_s(coordinator.pid), (user_before, system_before)))
        seconds, cpu = time.perf_counter() - started, user + system
    finally:
        frames = stop_fleet(coordinator, peers)
    relayed = sum(r["tokens"] for r in results)
    ttfts = [r["ttft_p50_s"] for r in results if r["ttft_p50_s"] is not None]
    return {"frames": "batched" if batched else "one per row", "providers": num_peers, "streams": streams,
            "tokens_per_stream": tokens, "step_ms": step_s * 1000, "streams_ok": sum(r["ok"] for r in results),
            "tokens_relayed": relayed, "seconds": round(seconds, 2), "tokens_per_s": round(relayed / seconds),
            "coordinator_cpu_s": round(cpu, 3), "cpu_us_per_token": round(cpu / max(1, relayed) * 1e6, 2),
            "user_us_per_token": round(user / max(1, relayed) * 1e6, 2),
            "system_us_per_token": round(system / max(1, relayed) * 1e6, 2), "provider_frames": frames["frames"],
            "ttft_p50_ms": round(1000 * sorted(ttfts)[len(ttfts) // 2], 1) if ttfts else None}


def heartbeats(num_peers: int, window_s: float) -> dict:
    coordinator, _, peers, registered = start_fleet(num_peers, True, 0.05)
    try:
        time.sleep(2 * 2.0)  # two intervals: every peer's first heartbeats are in, the registers' cost is behind
        cpu_before, started = cpu_s(coordinator.pid), time.perf_counter()
        time.sleep(window_s)
        cpu, seconds = cpu_s(coordinator.pid) - cpu_before, time.perf_counter() - started
    finally:
        stop_fleet(coordinator, peers)
    num_heartbeats = max(1, registered) * seconds / 2.0
    return {"providers": num_peers, "registered": registered, "interval_s": 2.0, "window_s": round(seconds, 1),
            "coordinator_cpu_s": round(cpu, 3), "share_of_one_core": round(cpu / seconds, 4),
            "cpu_us_per_heartbeat": round(cpu / num_heartbeats * 1e6, 1)}


def routing(num_providers: int) -> dict:
    import structlog

    import bench_routing

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    wall = bench_routing.bench_decisions(2000, 1, num_providers=num_providers)["dispatch"]
    cpu = bench_routing.bench_decisions(2000, 1, num_providers=num_providers, clock=time.thread_time)["dispatch"]
    return {"providers": num_providers, "wall": wall, "cpu": cpu}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--providers", type=int, default=50)
    parser.add_argument("--streams", type=int, default=500)
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--step-ms", type=float, default=50.0)
    parser.add_argument("--heartbeat-providers", type=int, default=1000)
    parser.add_argument("--window-s", type=float, default=20.0)
    parser.add_argument("--frames", choices=["both", "batched", "single"], default="both",
                        help="what the providers send (a coordinator before protocol 1.4 takes only single)")
    parser.add_argument("--no-bare", action="store_true", help="leave out relay_bare (a tree without the hot decoder)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--role", help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args()
    if args.role:
        import structlog
        structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))  # warnings: not a log per request
        role = {"coordinator": lambda: serve_coordinator(),
                "peers": lambda: serve_peers(rest[0], int(rest[1]), rest[2] == "1", float(rest[3])),
                "consumers": lambda: run_consumers(rest[0], int(rest[1]), int(rest[2]))}[args.role]
        with asyncio.Runner(loop_factory=coordinator_loop() if args.role == "coordinator" else None) as runner:
            return runner.run(role())
    import bench_socket_write

    step_s = args.step_ms / 1000
    results = {f"relay_{frames}": relay(args.providers, args.streams, args.tokens, step_s, frames == "batched")
               for frames in ("batched", "single") if args.frames in ("both", frames)}
    if not args.no_bare:
        results["relay_bare"] = relay(args.providers, args.streams, args.tokens, step_s, True, BARE_RELAY)
    results |= {"heartbeat": heartbeats(args.heartbeat_providers, args.window_s),
                "routing": routing(args.heartbeat_providers),
                "socket_write": bench_socket_write.measure(args.streams, 100_000, 250)}
    print(json.dumps(results, indent=None if args.json else 1))


if __name__ == "__main__":
    main()
