#!/usr/bin/env python3
"""What the coordinator's provider side costs per relayed row: a batched chunk frame parsed and routed.

    scripts/bench_row_path.py [--providers 50] [--streams 500] [--rounds 200] [--single] [--pydantic] [--json]

One Router in-process (no network) with --providers warm providers and --streams requests dispatched and
accepted among them. Each round, every provider's next batched `inference_response_chunks` frame (one row
per request it serves, as agent/testing/fleet/relay_peer.py sends them) goes from its raw JSON text the way
provider_ws.py takes it: agent.wire.hot_chunks.decode_hot (msgspec) for a text-only frame, else parse_message
(--pydantic: parse_message for every frame, as the link did before), then Router.receive (--single: one
`inference_response_chunk` frame per row instead, as an agent older than protocol 1.4 sends them). CPU µs per row (time.process_time, which other
processes on the shared cores do not inflate; the clock's own cost is taken off), the best of --repeats runs:

  parse    the link's decoding of the frame and its checks of it (unknown fields, bad rows), per row
  route    Router.receive of the parsed frame, per row (offer lookup, pending count, the exchange's push)
  row      both: the provider side of one relayed row
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.catalog import load_catalog  # noqa: E402
from agent.coordinator.routing.exchange import Exchange  # noqa: E402
from agent.coordinator.routing.placement import Ask  # noqa: E402
from agent.coordinator.routing.router import Router  # noqa: E402
from agent.coordinator.settings import CoordinatorSettings  # noqa: E402
from agent.testing.model_entry import GIB, entry_for  # noqa: E402
from agent.wire.chat_body import ChatCompletionBody, ChatMessage  # noqa: E402
from agent.wire.frames import (  # noqa: E402
    Hardware,
    Heartbeat,
    InferenceAccepted,
    MemoryStatus,
    Register,
    SlotState,
    SlotStatus,
)
from agent.wire.protocol import PROTOCOL_VERSION, Direction, parse_message  # noqa: E402

try:
    from agent.wire.hot_chunks import decode_hot
except ImportError:  # a tree from before it: the link parsed every frame with parse_message
    def decode_hot(data: str) -> None:
        return None
from agent.wire.unknown_fields import UnknownFields  # noqa: E402

MODEL = "gpt-oss-20b"


def fleet(num_providers: int, num_streams: int) -> tuple[Router, list]:
    """A router whose providers each hold their share of the streams, accepted: [(provider, [exchange, ...])]."""
    spec = load_catalog()[MODEL]
    router = Router(CoordinatorSettings(queue_depth=num_streams))
    providers = []
    for _ in range(num_providers):
        register = Register(protocol_version=PROTOCOL_VERSION, agent_version="bench",
                            hardware=Hardware(chip="M4", memory_bytes=128 * GIB, gpu_cores=40),
                            models=(entry_for(spec),))
        provider = router.connect(register, lambda frame: None)
        router.receive(provider, Heartbeat(seq=1, slots=(SlotStatus(
            model=MODEL, state=SlotState.RUNNING, kv_budget_bytes=80 * GIB),), memory=MemoryStatus(
            total_bytes=128 * GIB, available_bytes=64 * GIB, cap_bytes=115 * GIB)))
        providers.append(provider)
    body = ChatCompletionBody(messages=(ChatMessage(role="user", content="relay"),))
    held = [(provider, []) for provider in providers]
    for i in range(num_streams):
        exchange = Exchange(f"chatcmpl-{i:024x}", body, Ask(MODEL, 8, 8, 200), 0.0)
        router.try_dispatch(exchange, providers[i % num_providers])
        if exchange.provider is None:
            raise SystemExit(f"request {i} was not dispatched: raise the fleet's KV budget")
        router.receive(exchange.provider, InferenceAccepted(request_id=exchange.request_id, prompt_tokens=8))
        held[i % num_providers][1].append(exchange)
    for _, exchanges in held:
        for exchange in exchanges:
            exchange.events.clear()
    return router, held


def row_dict(exchange: Exchange, seq: int) -> dict:
    return {"type": "inference_response_chunk", "request_id": exchange.request_id, "seq": seq,
            "delta": {"content": " tok", "reasoning": "", "tool_calls": []}, "num_tokens": 1, "logprobs": None}


def frame_texts(exchanges: list, seq: int, single: bool) -> list[str]:
    """One provider's step as the frames it sends: one batch, or (single) a frame per row."""
    if single:
        return [json.dumps(row_dict(exchange, seq)) for exchange in exchanges]
    return [json.dumps({"type": "inference_response_chunks", "chunks": [row_dict(e, seq) for e in exchanges]})]


def clock_cost_s(num: int = 20_000) -> float:
    """What one time.process_time() call costs (a system call here, ~0.5 µs): taken off each timed span."""
    started = time.process_time()
    for _ in range(num):
        time.process_time()
    return (time.process_time() - started) / num


def run(num_providers: int, num_streams: int, num_rounds: int, single: bool = False,
        pydantic_only: bool = False) -> dict[str, float]:
    router, held = fleet(num_providers, num_streams)
    unknown = UnknownFields()
    to_coordinator = Direction.TO_COORDINATOR
    spent = {"parse": 0.0, "route": 0.0}
    num_rows, clock_cost = 0, clock_cost_s()
    for seq in range(1, num_rounds + 1):
        for provider, exchanges in held:
            for text in frame_texts(exchanges, seq, single):
                started = time.process_time()
                frame = None if pydantic_only else decode_hot(text)
                if frame is None:
                    frame = parse_message(text, direction=to_coordinator, unknown_fields=unknown)
                for _ in unknown.drain():  # what provider_ws._next_frame asks of every frame
                    pass
                if getattr(frame, "rejected_rows", ()):
                    raise SystemExit("the benchmark's batch was not clean")
                parsed = time.process_time()
                router.receive(provider, frame)
                routed = time.process_time()
                spent["parse"] += parsed - started - clock_cost
                spent["route"] += routed - parsed - clock_cost
                num_rows += len(frame.chunks) if hasattr(frame, "chunks") else 1
            for exchange in exchanges:  # what the client side takes off each exchange soon after: not measured
                exchange.events.clear()
    return {name: seconds / num_rows * 1e6 for name, seconds in spent.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--providers", type=int, default=50)
    parser.add_argument("--streams", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--single", action="store_true", help="one frame per row (an agent before protocol 1.4)")
    parser.add_argument("--pydantic", action="store_true", help="parse_message for every frame (the link before msgspec)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    import structlog
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))  # warnings only, as bench_relay
    runs = [run(args.providers, args.streams, args.rounds, args.single, args.pydantic) for _ in range(args.repeats)]
    best = {name: min(r[name] for r in runs) for name in runs[0]}
    best["row"] = min(r["parse"] + r["route"] for r in runs)
    result = {"providers": args.providers, "streams": args.streams, "rows_per_frame": 1 if args.single else args.streams / args.providers,
              "rounds": args.rounds, "decoder": "parse_message" if args.pydantic else "the link's",
              "cpu_us_per_row": {name: round(value, 3) for name, value in best.items()}}
    print(json.dumps(result, indent=None if args.json else 1))


if __name__ == "__main__":
    main()
