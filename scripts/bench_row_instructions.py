#!/usr/bin/env python3
"""Instructions the coordinator executes per relayed row, counted by valgrind: a figure the shared cores do not move.

    scripts/bench_row_instructions.py [--providers 50] [--streams 500] [--rounds 40] [--tree PATH] [--json]

This machine's cores are shared, and timings of the relay swing by ±30 % from one minute to the next (the
floor in scripts/bench_relay.py shows it), so a change of a few per cent to the hot path cannot be seen in them.
An instruction count can: it is the same on every run of the same code. The workload is one relayed row
in process, as a stream that is written straight out takes it (http/direct_stream.py, the relay's fast path):

    a provider's batched chunk frame (raw JSON, one row per stream it serves, scripts/bench_row_path.py's fleet)
    → agent.wire.hot_chunks.decode_hot → Router.receive → each row's exchange → its DirectStream.take
    → RequestFlow.take (seq, usage meter, stall deadline) → the chat dialect's SSE bytes (openai_format.py)
    → BodyWriter.write to a transport that drops them (no system call: that is the kernel's, and bench_relay's)

Each stream's flow is parked as RequestFlow.next() leaves it while it waits for its next frame. The count is
cachegrind's `I refs` of a run that handles the frames, less that of a run that only builds them, over the
rows handled: instructions per row, interpreter included. --tree counts another checkout's code (a worktree
of an older commit) with this script's workload. Needs valgrind (Debian: apt-get install valgrind).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


class _DroppingTransport:
    num_writes = 0  # of every stream's: each row handled must have been written, or the count is of another path

    def write(self, data: bytes) -> None:
        _DroppingTransport.num_writes += 1


class _FlowControl:
    write_paused = False


class _OpenCycle:
    """What BodyWriter reads of uvicorn's httptools cycle, for a chunked response under way."""
    response_started, chunked_encoding, response_complete, disconnected = True, True, False, False

    def __init__(self) -> None:
        self.transport, self.flow = _DroppingTransport(), _FlowControl()


async def _workload(num_providers: int, num_streams: int, num_rounds: int, handle: bool) -> None:
    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))  # warnings only, as bench_relay
    from bench_row_path import fleet, frame_texts

    from agent.coordinator.flow import RequestFlow
    from agent.coordinator.http.body_writer import BodyWriter
    from agent.coordinator.http.direct_stream import DirectStream
    from agent.coordinator.http.openai_format import StreamFormat
    from agent.wire.hot_chunks import decode_hot

    router, held = fleet(num_providers, num_streams)
    loop = asyncio.get_running_loop()
    for _, exchanges in held:
        for exchange in exchanges:
            flow = RequestFlow(router, None, exchange, max_tokens=num_rounds + 1)
            flow._loop, flow._is_waiting = loop, True  # parked in next(), as start() and next() leave it
            fmt = StreamFormat(exchange.request_id, exchange.ask.model, "reasoning")
            encode = getattr(fmt, "token", None) or (  # as api.py's chat stream (a tree before StreamFormat.token:
                lambda t, fmt=fmt: fmt.delta(t.content, t.reasoning, t.logprobs, t.tool_calls))  # its lambda)
            DirectStream(flow, BodyWriter(_OpenCycle()), encode).open()
    frames = [(provider, text) for seq in range(1, num_rounds + 1) for provider, exchanges in held
              for text in frame_texts(exchanges, seq, False)]
    if handle:
        receive = router.receive
        for provider, text in frames:
            receive(provider, decode_hot(text))
        if _DroppingTransport.num_writes != num_rounds * num_streams:
            raise SystemExit(f"{_DroppingTransport.num_writes} of {num_rounds * num_streams} rows were written "
                             "straight out: the workload missed the relay's fast path")


def _instructions(tree: Path, args: argparse.Namespace, handle: bool) -> int:
    command = ["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null",
               sys.executable, __file__, "--tree", str(tree), "--providers", str(args.providers),
               "--streams", str(args.streams), "--rounds", str(args.rounds), "--workload", "handle" if handle else "build"]
    done = subprocess.run(command, capture_output=True, text=True, cwd=tree,
                          env={**os.environ, "PYTHONHASHSEED": "0"})
    match = re.search(r"I\s+refs:\s+([\d,]+)", done.stderr)
    if done.returncode != 0 or match is None:
        raise SystemExit(f"valgrind failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return int(match.group(1).replace(",", ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--providers", type=int, default=50)
    parser.add_argument("--streams", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--tree", type=Path, default=HERE.parent, help="the checkout whose code is counted")
    parser.add_argument("--workload", choices=["build", "handle"], help=argparse.SUPPRESS)  # one counted run
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    tree = args.tree.resolve()
    if args.workload:
        sys.path[:0] = [str(tree), str(tree / "scripts")]  # its bench_row_path puts its own tree first too
        asyncio.run(_workload(args.providers, args.streams, args.rounds, args.workload == "handle"))
        return
    rows = args.rounds * args.streams
    per_row = (_instructions(tree, args, True) - _instructions(tree, args, False)) / rows
    result = {"tree": str(tree), "providers": args.providers, "streams": args.streams, "rounds": args.rounds,
              "instructions_per_row": round(per_row)}
    print(json.dumps(result, indent=None if args.json else 1))


if __name__ == "__main__":
    main()
