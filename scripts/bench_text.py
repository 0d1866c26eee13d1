"""The prose around PERFORMANCE.md's tables; the targets are judged here from the measured numbers."""

from __future__ import annotations

GEMMA = "gemma-4-26b"
REFUSALS = ("billing", "token_limit", "capacity_429")


def target_lines(loadtest: dict | None) -> list[str]:
    if not loadtest or "matrix" not in loadtest:
        return ["- The burst matrix has not been run into this report (run scripts/loadtest.py, then bench.py)."]
    lines = []
    bad = [c for c in loadtest["matrix"]["cells"] if any(c["classes"][k] for k in REFUSALS)
           and (c["capacity_after"].get("gpt-oss-20b", {}).get("idle", 0)
                + c["capacity_after"].get("gpt-oss-20b", {}).get("cold_fits", 0)) > 0]
    lines.append("- **No billing, token-limit or capacity refusal while capable providers sat idle**: "
                 + ("met — no such refusal in any cell." if not bad else "NOT met in "
                    + ", ".join(f"{c['max_tokens']}×{c['concurrency']}" for c in bad) + "."))
    others = [c for c in loadtest["matrix"]["cells"] if c["classes"]["capacity_429"]
              and (not c["all_429_have_retry_after"] or c["error_pct"] and any(
                  c["classes"][k] for k in ("billing", "token_limit", "no_provider_503", "dispatch_failure", "client")))]
    saturated = [c for c in loadtest["matrix"]["cells"] if c["classes"]["capacity_429"]]
    lines.append("- **Where the fleet saturates, only 429 with Retry-After**: "
                 + ("no cell saturated the fleet (no 429 at all)." if not saturated
                    else "met." if not others else "NOT met in " + ", ".join(
                        f"{c['max_tokens']}×{c['concurrency']}" for c in others) + "."))
    s = loadtest.get("sustained")
    if s:
        samples = [x for x in s["samples"] if GEMMA in x]
        scale = loadtest["args"]["time_scale"]
        start = samples[0][GEMMA]["warm"] if samples else None
        widened = next((x["t"] / scale for x in samples if x[GEMMA]["warm"] > start), None) if samples else None
        w, t = s[f"{GEMMA}_warm"], s[f"{GEMMA}_ttft"]
        verdict = "NOT met" if not widened else "see the PNG"
        lines.append(f"- **gemma's warm set widens before its TTFT grows**: {verdict}. Warm {start} at the start, median "
                     f"{w['median']}, max {w['max']}; first widened at t≈{_r(widened)} simulated s; gemma TTFT p50 "
                     f"{_r(t['p50'])} s, p95 {_r(t['p95'])} s (seed load test: median 8 warm, TTFT tail ~123 s). "
                     "See the PNG for the order of events." + (WHY_NOT_WIDENED if not widened else ""))
    return lines


WHY_NOT_WIDENED = (
    " Why: the coordinator pre-warms when warm free KV falls below 25 % or requests queue (prewarm.py), and "
    "neither happened — 16 long gemma streams over 4 warm large Macs used a fraction of their KV and every "
    "request was admitted at once. gemma's TTFT here is prefill: a ~2k-token prompt at 700 tok/s is ~3 s alone, "
    "and the p95 is the opening burst (16 prompts at t=0 sharing the chunked prefill of 3–4 slots, 6–12.6 s; "
    "flat at ~3 s afterwards, see the PNG). Pre-warming does not look at "
    "prefill load or TTFT, so the warm set stays narrow while TTFT is prefill-bound. Far below the seed's "
    "~123 s tail, but not the behaviour the target asks for.")


def _r(value) -> str:
    return "–" if value is None else f"{value:.1f}"


def render(sections: dict, results: dict, loadtest: dict | None) -> str:
    args = (loadtest or {}).get("args", {})
    return f"""# Performance

Every number below was produced by `python scripts/bench.py` (which runs the side-by-side benchmarks and
reads the load test's JSON) on a 2-core Linux VM with no GPU; raw results are in `scripts/results/`
(`bench.json`, `loadtest.json`, `loadtest.log`, `sustained.png`). Nothing here was measured on a Mac.

## Targets (issue #6)

{chr(10).join(target_lines(loadtest))}

## The seed load test, replayed on a simulated fleet

    python scripts/fleet.py --agents 60 --port 8000 --time-scale {args.get('time_scale', 0.5)}
    python scripts/loadtest.py --base-url http://127.0.0.1:8000/v1 --key KEY --time-scale {args.get('time_scale', 0.5)} \\
        --matrix full --rounds {args.get('rounds', 3)} --sustained-s {args.get('sustained_s', 150):g}

The fleet is the real coordinator (a keys database, one funded billed key, the default generous rate
limits: 1,200 requests and 2,000,000 output tokens per minute, so billing and limits are exercised) and
60 real agents (Provider, Link, engine core with its memory gate, admission and KV ledgers) whose backend
is simulated (`agent/sim/`): Macs of 16–128 GB (6×16, 9×24, 9×32, 8×36, 9×48, 10×64, 4×96, 5×128), gpt-oss
decoding 60–74 tok/s per stream alone (+3 % step time per extra stream), gemma 40–60 tok/s (+4.5 %),
prefill 1,500 / 700 tok/s, cold loads 12 / 20 s; answers of 100–1,100 tokens (long-tailed), capped by
max_tokens. These rates are assumptions for Apple Silicon, not Mac measurements. At start ~60 % of the
agents are warm on gpt-oss, every 15th on gemma, the rest cold. Simulated time runs
1 / time_scale times faster than real time; **all times and tok/s below are simulated** (real ÷ time_scale).
The client (`scripts/loadtest.py`, httpx, streaming, one key) runs each cell as `concurrency` workers ×
`rounds` sequential gpt-oss requests, on top of background loops from the same key (2 × gpt-oss 256
max_tokens, 2 × gemma 2,048 max_tokens with ~2k-token prompts). "idle capable after" is the capacity
endpoint's count of idle-warm and cold-but-fits gpt-oss providers when the cell ended.

### Burst matrix

{sections['matrix'] or '(not run)'}

### Sustained mixed run (gpt-oss short + gemma long, capacity sampled every 3 s)

{sections['sustained'] or '(not run)'}

![warm slots and TTFT over time](scripts/results/sustained.png)

## Side by side

{sections['bench']}

Engine vs bare mlx-lm and the batch gain are measured on the tiny random-weight models on this CPU (see
`scripts/bench_engine.py`); the end-to-end ratio and added TTFT use the same simulated engine read directly
and through client → coordinator (keys + billing) → websocket → agent → SSE, so they measure the stack's
overhead, not MLX's.

### Concurrent long requests admitted per warm slot: expected-output vs worst-case reservation

{sections['admission']}

### Routing decision time

{sections['routing']}

## Known gaps found while measuring

- When every agent's link drops at the same instant, a request waiting for its first token fails at once
  with 502 `provider_failed` instead of waiting for the agents to reconnect (the router finds no registered
  provider); a single dropped link is retried transparently (tests/test_chaos_links.py).
- In the sustained run gemma's 16 long streams sat on 3 of the 4 warm gemma slots while the fourth was idle
  (capacity samples: running 3, idle 1, free KV ~77 of ~82 GiB, queue 0): placement ranks by free KV and
  queue, not by prefill in progress, so 2k-token prompts queue behind each other's chunked prefill on one slot.
- The simulated fleet's frame rate is bounded by this 2-core VM (one websocket frame and one SSE event per
  token, coordinator, agents and client on the same two cores); TTFT in the largest cells includes that
  CPU queueing.
"""
