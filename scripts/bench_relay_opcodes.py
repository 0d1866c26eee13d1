#!/usr/bin/env python3
"""Where a relayed token's and a request's Python goes, function by function: bytecodes counted in a live relay.

    scripts/bench_relay_opcodes.py [--providers 20] [--streams 100] [--tokens 40 10] [--top 25] [--bare] [--json]

scripts/bench_relay_instructions.py counts what the whole coordinator executes, but valgrind cannot say which
Python function ran it. This counts the interpreter's own unit of work: every bytecode the coordinator's event
loop thread executes (sys.settrace with opcode events, which makes it some 50x slower), by the function it ran
in. Work done in C (msgspec's decode, pydantic's validation, a json encode, uvloop's write) is not a bytecode
and shows only as the call that asked for it. The fleet is bench_relay's, smaller so the traced coordinator
keeps up: --providers scripted providers (a token a row every 50 ms) and --streams streaming consumers, in
other processes; every provider first serves a few untraced requests.
Two traced runs, of T1 and T2 tokens a stream, separate the costs with bench_relay_instructions' split_cost:

    per_token     (B(T1) - B(T2)) / (tokens(T1) - tokens(T2)), in all and for each function
    per_request   (B(T2) - tokens(T2) * per_token) / streams

The same code and load count within a few per cent (heartbeats and the interleaving of frames vary). --bare
counts scripts/bare_relay.py instead, the least a relay in Python runs (bench_relay's relay_bare).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import bench_relay  # noqa: E402
from bench_relay_instructions import split_cost, stream_lengths  # noqa: E402

ROLE = "--traced-relay"  # this script as the relay's process: the relay, with a counter the parent turns on and off
SETTLE_S = 0.5  # for a signal to be handled between the counter's switch and the load it is meant to see


# ---- in the relay's process -------------------------------------------------------------------------------

class OpcodeCounter:
    """Bytecodes executed by function, while on; SIGUSR1 turns it on, SIGUSR2 off and writes the counts out."""

    def __init__(self, out: Path) -> None:
        self.out, self.counts = out, collections.Counter()

    def _local(self, frame, event, arg):
        if event == "opcode":
            self.counts[frame.f_code] += 1
        return self._local

    def _call(self, frame, event, arg):
        frame.f_trace_opcodes, frame.f_trace_lines = True, False
        return self._local

    def on(self) -> None:
        self.counts.clear()
        sys.settrace(self._call)

    def off(self) -> None:
        sys.settrace(None)
        counts = {f"{_short(code.co_filename)}:{code.co_firstlineno}:{code.co_qualname}": n
                  for code, n in self.counts.items()}
        self.out.write_text(json.dumps(counts))


def _short(path: str) -> str:
    for marker in ("site-packages/", f"{HERE.parent}/", "python3.11/"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


def serve_traced(kind: str, out: Path) -> None:
    counter = OpcodeCounter(out)

    async def run() -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGUSR1, counter.on)
        loop.add_signal_handler(signal.SIGUSR2, counter.off)
        if kind == "bare":
            import bare_relay
            await bare_relay.serve()
        else:
            await bench_relay.serve_coordinator()

    import structlog
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))  # as bench_relay's coordinator
    with asyncio.Runner(loop_factory=bench_relay.coordinator_loop()) as runner:
        runner.run(run())


# ---- in the parent ------------------------------------------------------------------------------------------

def _count(kind: str, num_providers: int, streams: int, tokens: int) -> dict:
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "opcodes.json"
        relay = subprocess.Popen([sys.executable, __file__, ROLE, kind, str(out)], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True, cwd=HERE.parent)
        base_url = relay.stdout.readline().strip()
        if not base_url:
            raise SystemExit("the traced relay did not start")
        ws_url = base_url.replace("http://", "ws://") + "/ws/provider"
        peers = [bench_relay.child("--role", "peers", ws_url, str(num_providers), "1", "0.05")]
        try:
            if not peers[0].stdout.readline().startswith("ready"):
                raise SystemExit("the scripted providers did not start")
            bench_relay.consume(base_url, num_providers * 8, 4)  # untraced: every provider proven
            os.kill(relay.pid, signal.SIGUSR1)
            time.sleep(SETTLE_S)
            results = bench_relay.consume(base_url, streams, tokens)
            os.kill(relay.pid, signal.SIGUSR2)
            deadline = time.monotonic() + 60
            while not out.exists() and time.monotonic() < deadline:
                time.sleep(0.1)
            counts = json.loads(out.read_text()) if out.exists() else {}
        finally:
            bench_relay.stop_fleet(relay, peers)
    relayed, ok = sum(r["tokens"] for r in results), sum(r["ok"] for r in results)
    if ok != streams or relayed != streams * tokens or not counts:
        raise SystemExit(f"the traced relay was not whole: {ok} of {streams} streams, {relayed} of "
                         f"{streams * tokens} tokens, {len(counts)} functions counted")
    return {"tokens": relayed, "counts": counts}


def split(long: dict, short: dict, streams: int) -> tuple[dict[str, float], dict[str, float]]:
    """Each function's bytecodes per token and per request, from two runs of different stream lengths."""
    per_token, per_request = {}, {}
    for name in long["counts"].keys() | short["counts"].keys():
        per_token[name], per_request[name] = split_cost(long["counts"].get(name, 0), long["tokens"],
                                                        short["counts"].get(name, 0), short["tokens"], streams)
    return per_token, per_request


def _top(costs: dict[str, float], top: int) -> list[tuple[str, float]]:
    return [(name, round(cost, 1)) for name, cost in sorted(costs.items(), key=lambda item: -item[1])[:top]]


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == ROLE:
        return serve_traced(sys.argv[2], Path(sys.argv[3]))
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--providers", type=int, default=20)
    parser.add_argument("--streams", type=int, default=100)
    parser.add_argument("--tokens", type=int, nargs=2, default=[40, 10], metavar=("T1", "T2"))
    parser.add_argument("--top", type=int, default=25, help="functions listed for each cost")
    parser.add_argument("--bare", action="store_true", help="count scripts/bare_relay.py, not the coordinator")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    long_tokens, short_tokens = stream_lengths(args.tokens)
    kind = "bare" if args.bare else "coordinator"
    long = _count(kind, args.providers, args.streams, long_tokens)
    short = _count(kind, args.providers, args.streams, short_tokens)
    per_token, per_request = split(long, short, args.streams)
    result = {"relay": kind, "providers": args.providers, "streams": args.streams, "tokens": args.tokens,
              "per_token": round(sum(per_token.values())), "per_request": round(sum(per_request.values())),
              "top_per_token": _top(per_token, args.top), "top_per_request": _top(per_request, args.top)}
    if args.json:
        print(json.dumps(result))
        return
    print(f"{kind}: {result['per_token']:,} bytecodes a token, {result['per_request']:,} a request")
    for title, rows in (("a token", result["top_per_token"]), ("a request", result["top_per_request"])):
        print(f"\nper {title}:")
        for name, cost in rows:
            print(f"  {cost:10,.1f}  {name}")


if __name__ == "__main__":
    main()
