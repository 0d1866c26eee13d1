"""A simulated fleet: the real coordinator (keys DB, one funded key, real billing and limits) and N real
agents (LinkHandler + Link + engine core, gate and admission; simulated backend) over real websockets.

    python scripts/fleet.py --agents 60 --port 8000 [--workers 2] [--time-scale 0.5] [--open]

Prints `ready agents=N base_url=... key=...` once every agent is registered and heartbeating, then serves
until interrupted. The coordinator runs in this process; the agents in `--workers` processes, each running
its share on one asyncio loop (agent.testing.fleet.SimAgent). Mac sizes, timings and answer lengths: agent/testing/fleet/profiles.py.
Start-up residency (as a fleet looks after a quiet hour): ~60 % of the agents warm on gpt-oss, every 15th
warm on gemma, the rest cold; the coordinator pre-warms more as load needs.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.coordinator.billing.accounts import Accounts  # noqa: E402
from agent.coordinator.http.app import build_app, running  # noqa: E402
from agent.coordinator.settings import CoordinatorSettings  # noqa: E402
from agent.logs import configure_logging  # noqa: E402
from agent.testing.fleet.agent import SimAgent  # noqa: E402
from agent.testing.fleet.harness import funded_accounts  # noqa: E402
from agent.testing.fleet.profiles import GEMMA, GPT_OSS, fleet_memory_gb  # noqa: E402


def preload_for(index: int) -> tuple[str, ...]:
    if index % 15 == 7:
        return (GEMMA,)
    return (GPT_OSS,) if index % 5 in (0, 1, 3) else ()


async def worker(args: argparse.Namespace) -> None:
    sizes = fleet_memory_gb(args.agents)
    agents = [await SimAgent(args.url, memory_gb=sizes[i], preload=preload_for(i), time_scale=args.time_scale)
              .start() for i in range(args.worker, args.agents, args.workers)]
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await stop.wait()
    for agent in agents:
        await agent.stop()


async def coordinator(args: argparse.Namespace) -> None:
    if args.open:
        accounts, key = Accounts.open(), "local"
    else:
        db = Path(args.db or tempfile.mkdtemp(prefix="fleet-") + "/keys.db")
        accounts, key = funded_accounts(db, dollars=args.dollars)
    settings = CoordinatorSettings(heartbeat_interval_s=args.heartbeat_s)
    async with running(build_app(accounts, settings), port=args.port) as server:
        cmd = [sys.executable, __file__, "--agents", str(args.agents), "--workers", str(args.workers),
               "--time-scale", str(args.time_scale), "--url", server.ws_url]
        workers = [subprocess.Popen([*cmd, "--worker", str(i)]) for i in range(args.workers)]
        router = server.coordinator.router
        try:
            while not (len(router.registry) == args.agents and all(p.heartbeat for p in router.registry)):
                if any(w.poll() is not None for w in workers):
                    raise SystemExit("a worker process exited during start-up")
                await asyncio.sleep(0.2)
            print(f"ready agents={args.agents} base_url={server.base_url}/v1 key={key} "
                  f"time_scale={args.time_scale}", flush=True)
            stop = asyncio.Event()
            for sig in (signal.SIGTERM, signal.SIGINT):
                asyncio.get_running_loop().add_signal_handler(sig, stop.set)
            await stop.wait()
        finally:
            for w in workers:
                w.send_signal(signal.SIGTERM)
            for w in workers:
                w.wait(30)
    accounts.close()


def main() -> None:
    parser = argparse.ArgumentParser(description="a simulated fleet on loopback")
    parser.add_argument("--agents", type=int, default=60)
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--workers", type=int, default=2, help="agent processes")
    parser.add_argument("--time-scale", type=float, default=0.5, help="real seconds per simulated second")
    parser.add_argument("--open", action="store_true", help="open mode: no keys, no billing")
    parser.add_argument("--db", help="keys database (default: a new one in a temp dir)")
    parser.add_argument("--dollars", type=int, default=10_000, help="credit on the one account")
    parser.add_argument("--heartbeat-s", type=float, default=2.0)
    parser.add_argument("--log-level", default="warning")
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    configure_logging("auto", args.log_level, stream=sys.stderr)
    asyncio.run(worker(args) if args.worker is not None else coordinator(args))


if __name__ == "__main__":
    main()
