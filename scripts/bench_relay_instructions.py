#!/usr/bin/env python3
"""Instructions the whole coordinator executes per relayed token and per request, counted by valgrind in a live relay.

    scripts/bench_relay_instructions.py [--providers 20] [--streams 200] [--tokens 50 10] [--step-ms 500]
                                        [--tree PATH] [--json]

scripts/bench_relay.py times the coordinator's process, and on this machine's shared cores those times swing
by ±30 % from one minute to the next, so a change of a few per cent cannot be read off them.
scripts/bench_row_instructions.py counts one relayed row in process, which is repeatable but leaves out
everything around the row: the websocket layer, the event loop, each request's own work (parse, hold,
placement, the head and tail of its stream, the access log). This counts all of it, in the running relay:

    the coordinator process (bench_relay's, open mode, uvloop) runs under valgrind's callgrind with its
    instrumentation off; scripted providers and streaming consumers run in other processes, as in
    bench_relay; every provider first serves a few unmeasured requests (proven, as in a running fleet); then
    instrumentation goes on (callgrind_control) for --streams streams of T tokens, and off again

Its count is of the coordinator's user space only (the kernel's part of each write is bench_relay's
`socket_write` floor). Under valgrind the coordinator runs some 50x slower, so the fleet is smaller and slower
than bench_relay's (the same 10 streams a provider, one token a row every --step-ms) to stay within what it
can keep up with. Two runs, one for each of --tokens (T1 > T2), separate the two costs:

    per_token     (I(T1) - I(T2)) / (tokens(T1) - tokens(T2)): what one more token of a stream costs
    per_request   (I(T2) - tokens(T2) * per_token) / streams: a request's own work, paid once
    at_200        per_token + per_request / 200: a relayed token at bench_relay's 200 tokens a stream

A heartbeat's cost lands in per_token (heartbeats come with time, and a longer stream takes longer): at
--step-ms 500 that is a few per cent of it. The same code and load count within about 1 % from run to run.
--tree counts another checkout (a worktree of an older commit) with the same load; --bare counts
scripts/bare_relay.py instead of the coordinator, the least a relay in Python executes (bench_relay's
relay_bare). Needs valgrind.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_relay  # noqa: E402


def _count(relay_command: list[str], tree: Path, num_providers: int, streams: int, tokens: int, step_s: float) -> dict:
    """One measured relay of `streams` streams of `tokens` tokens: the relay's instructions meanwhile."""
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "callgrind.out"
        coordinator = subprocess.Popen(
            ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
             sys.executable, *relay_command],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=tree,
            env={**os.environ, "PYTHONHASHSEED": "0"})
        base_url = coordinator.stdout.readline().strip()
        if not base_url:
            raise SystemExit("the coordinator did not start under valgrind")
        ws_url = base_url.replace("http://", "ws://") + "/ws/provider"
        peers = [bench_relay.child("--role", "peers", ws_url, str(num_providers), "1", str(step_s))]
        try:
            if not peers[0].stdout.readline().startswith("ready"):
                raise SystemExit("the scripted providers did not start")
            bench_relay.consume(base_url, num_providers * 8, 4)  # unmeasured: every provider proven
            _instrument(coordinator.pid, "on")
            results = bench_relay.consume(base_url, streams, tokens)
            _instrument(coordinator.pid, "off")
        finally:
            bench_relay.stop_fleet(coordinator, peers)
        instructions = max((int(m.group(1)) for m in re.finditer(r"^(?:summary|totals): (\d+)", out.read_text(),
                                                                 re.MULTILINE)), default=0)
    relayed, ok = sum(r["tokens"] for r in results), sum(r["ok"] for r in results)
    if ok != streams or relayed != streams * tokens or instructions == 0:
        raise SystemExit(f"the measured relay was not whole: {ok} of {streams} streams, {relayed} of "
                         f"{streams * tokens} tokens, {instructions} instructions")
    return {"tokens": relayed, "instructions": instructions}


def stream_lengths(tokens: list[int]) -> tuple[int, int]:
    """--tokens T1 T2: the two stream lengths whose counts split_cost separates."""
    long_tokens, short_tokens = tokens
    if long_tokens <= short_tokens:
        raise SystemExit("--tokens T1 T2 needs T1 > T2")
    return long_tokens, short_tokens


def split_cost(long: float, long_tokens: int, short: float, short_tokens: int, streams: int) -> tuple[float, float]:
    """(per token, per request) from what two relays of `streams` streams cost in all, `long_tokens` and
    `short_tokens` relayed: one more token's cost, and what is left of the short run's over its streams."""
    per_token = (long - short) / (long_tokens - short_tokens)
    return per_token, (short - short_tokens * per_token) / streams


def _instrument(pid: int, state: str) -> None:
    subprocess.run(["callgrind_control", "--instr=" + state, str(pid)], check=True, capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--providers", type=int, default=20)
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--tokens", type=int, nargs=2, default=[50, 10], metavar=("T1", "T2"))
    parser.add_argument("--step-ms", type=float, default=500.0)
    parser.add_argument("--tree", type=Path, default=HERE.parent, help="the checkout whose coordinator is counted")
    parser.add_argument("--bare", action="store_true", help="count scripts/bare_relay.py, not the coordinator")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    long_tokens, short_tokens = stream_lengths(args.tokens)
    tree, step_s = args.tree.resolve(), args.step_ms / 1000
    relay_command = ([str(tree / "scripts" / "bare_relay.py")] if args.bare
                     else [str(tree / "scripts" / "bench_relay.py"), "--role", "coordinator"])
    long = _count(relay_command, tree, args.providers, args.streams, long_tokens, step_s)
    short = _count(relay_command, tree, args.providers, args.streams, short_tokens, step_s)
    per_token, per_request = split_cost(long["instructions"], long["tokens"], short["instructions"], short["tokens"],
                                        args.streams)
    result = {"tree": str(tree), "relay": "bare" if args.bare else "coordinator", "providers": args.providers,
              "streams": args.streams, "step_ms": args.step_ms,
              "runs": {str(long_tokens): long, str(short_tokens): short},
              "per_token": round(per_token), "per_request": round(per_request),
              "at_200": round(per_token + per_request / 200)}
    print(json.dumps(result, indent=None if args.json else 1))


if __name__ == "__main__":
    main()
