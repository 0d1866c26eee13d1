"""PERFORMANCE.md's section on issue 16 (the stack at engine speed), and its README line, from
scripts/results/before_after.json (scripts/bench_before_after.py). Every target is judged here from the
measured numbers."""

from __future__ import annotations

from bench_figures import f

TARGETS = {"stack": 0.95, "vs_mlx_tok_s": 0.95, "vs_mlx_ttft": 1.1, "cpu_us_per_token": 20.0,
           "heartbeat_share": 0.10, "routing_p99_ms": 5.0}


def _met(ok: bool) -> str:
    return "met" if ok else "**not met**"


def _stack_rows(part: dict) -> list[str]:
    b, a = part["before"], part["after"]
    return [
        f"| end-to-end ÷ engine tok/s, 8 streams × 200 tok (target ≥ {TARGETS['stack']}) | "
        f"{b['end_to_end_vs_engine']} ({b['end_to_end_tok_s_real']} vs {b['engine_tok_s_real']}) | "
        f"{a['end_to_end_vs_engine']} ({a['end_to_end_tok_s_real']} vs {a['engine_tok_s_real']}) | "
        f"{_met(a['end_to_end_vs_engine'] >= TARGETS['stack'])} |",
        f"| the stack's CPU per token (coordinator + agent + simulated engine, one process), µs | "
        f"{b['stack_cpu_us_per_token']} | {a['stack_cpu_us_per_token']} | |",
        f"| added TTFT p50, stack − engine, ms | {b['added_ttft_p50_ms']} | {a['added_ttft_p50_ms']} | |",
    ]


def _spread(part: dict, side: str, mode: str, key: str) -> str:
    """The range over every run of one side (the table's figure is the median run's)."""
    runs = part.get(f"{side}_runs") or [part[side]]
    values = [run["ours_vs_mlx_lm_server"][mode][key] for run in runs]
    return f"; {len(runs)} runs {min(values)}–{max(values)}" if len(runs) > 1 else ""


def _vs_mlx_rows(part: dict) -> list[str]:
    rows = []
    for mode in ("non_streaming", "streaming"):
        b, a = part["before"]["ours_vs_mlx_lm_server"][mode], part["after"]["ours_vs_mlx_lm_server"][mode]
        mlx_b, mlx_a = part["before"]["mlx_lm_server"][mode], part["after"]["mlx_lm_server"][mode]
        ours_b, ours_a = part["before"]["ours"][mode], part["after"]["ours"][mode]
        label = mode.replace("_", "-")
        rows += [
            f"| ours ÷ mlx_lm.server aggregate tok/s, {label} (target ≥ {TARGETS['vs_mlx_tok_s']}) | {b['tok_s']} "
            f"({ours_b['tok_s']} vs {mlx_b['tok_s']}{_spread(part, 'before', mode, 'tok_s')}) | {a['tok_s']} "
            f"({ours_a['tok_s']} vs {mlx_a['tok_s']}{_spread(part, 'after', mode, 'tok_s')}) | "
            f"{_met(a['tok_s'] >= TARGETS['vs_mlx_tok_s'])} |",
            f"| ours ÷ mlx_lm.server TTFT p50, {label} (target ≤ {TARGETS['vs_mlx_ttft']}) | {b['ttft_p50']} "
            f"({ours_b['ttft_p50_ms']} vs {mlx_b['ttft_p50_ms']} ms{_spread(part, 'before', mode, 'ttft_p50')}) | "
            f"{a['ttft_p50']} ({ours_a['ttft_p50_ms']} vs {mlx_a['ttft_p50_ms']} ms"
            f"{_spread(part, 'after', mode, 'ttft_p50')}) | {_met(a['ttft_p50'] <= TARGETS['vs_mlx_ttft'])} |"]
    return rows


def _relay_rows(part: dict) -> list[str]:
    b, a = part["before"], part["after"]
    old = b["relay_single"]
    rows = []
    for key, label in (("relay_batched", "batched frames"), ("relay_single", "one frame per row")):
        if key not in a:
            continue
        r = a[key]
        rows.append(f"| coordinator CPU per relayed token, {r['streams']} streams over {r['providers']} providers "
                    f"({label} after; one frame per row before), µs (target ≤ {f(TARGETS['cpu_us_per_token'], 0)}) | "
                    f"{old['cpu_us_per_token']} ({f(old['tokens_per_s'])} tok/s"
                    f"{_relay_spread(part, 'before', 'relay_single')}) | {r['cpu_us_per_token']} "
                    f"({f(r['tokens_per_s'])} tok/s{_cpu_split(r)}{_relay_spread(part, 'after', key)}) | "
                    f"{_met(r['cpu_us_per_token'] <= TARGETS['cpu_us_per_token'])} |")
    if "relay_bare" in a:  # the same relay through scripts/bare_relay.py: the least a relay in Python spends
        r = a["relay_bare"]
        rows.append(f"| the same batched relay through scripts/bare_relay.py (decode and write only: none of the "
                    f"coordinator's checks, meter, deadlines, backpressure or billing), µs a token | – | "
                    f"{r['cpu_us_per_token']} ({f(r['tokens_per_s'])} tok/s{_cpu_split(r)}"
                    f"{_relay_spread(part, 'after', 'relay_bare')}) | |")
    if "socket_write" in a:  # the floor of the same runs (bench_relay.py): the shared cores' state that day
        floor_b, floor_a = b.get("socket_write"), a["socket_write"]
        cell_b = f"{floor_b['system_us_per_write']} + {floor_b['user_us_per_write']}" if floor_b else "–"
        rows.append(f"| its floor in the same run: one 250-byte write to one of {f(floor_a['connections'])} loopback "
                    f"connections, kernel + user µs (scripts/bench_socket_write.py) | {cell_b} | "
                    f"{floor_a['system_us_per_write']} + {floor_a['user_us_per_write']} | |")
    hb_b, hb_a = b["heartbeat"], a["heartbeat"]
    rows.append(f"| {f(hb_a['providers'])} providers heartbeating every {f(hb_a['interval_s'], 0)} s: share of one "
                f"core (target ≤ {f(TARGETS['heartbeat_share'], 2)}) | {_heartbeat_cell(hb_b)} | "
                f"{_heartbeat_cell(hb_a)} | {_met(hb_a['share_of_one_core'] <= TARGETS['heartbeat_share'] and _all_in(hb_a))} |")
    for clock in ("wall", "cpu"):
        rb, ra = b["routing"][clock], a["routing"][clock]
        rows.append(f"| routing decision with {f(a['routing']['providers'])} providers, p50 / p99 ({clock} clock), "
                    f"ms (target p99 < {f(TARGETS['routing_p99_ms'], 0)}) | {f(rb['p50_us'] / 1000)} / "
                    f"{f(rb['p99_us'] / 1000)} | {f(ra['p50_us'] / 1000)} / {f(ra['p99_us'] / 1000)} | "
                    f"{_met(ra['p99_us'] / 1000 < TARGETS['routing_p99_ms'])} |")
    return rows


def _relay_spread(part: dict, side: str, key: str) -> str:
    """The range of CPU µs per token over every run of one side (the table's row is the median run's)."""
    values = [run[key]["cpu_us_per_token"] for run in part.get(f"{side}_runs") or () if key in run]
    return f"; {len(values)} runs {min(values)}–{max(values)} µs" if len(values) > 1 else ""


def _cpu_split(run: dict) -> str:
    """A relay run's user and system parts (runs from before bench_relay.py measured them have none)."""
    if "user_us_per_token" not in run:
        return ""
    return f"; user {run['user_us_per_token']} + system {run['system_us_per_token']}"


def _all_in(hb: dict) -> bool:
    return hb.get("registered", hb["providers"]) >= hb["providers"]


def _heartbeat_cell(hb: dict) -> str:
    cell = f"{hb['share_of_one_core']} ({f(hb['cpu_us_per_heartbeat'])} µs each)"
    if not _all_in(hb):  # the coordinator was too busy to register them all in time: it was saturated
        cell += f", only {f(hb['registered'])} of {f(hb['providers'])} registered in time"
    return cell


def _codec_rows(part: dict) -> list[str]:
    b, a = part["before"]["us"], part["after"]["us"]
    names = {"parse_single": "parse one chunk frame (pydantic, strict JSON mode)",
             "parse_batch": f"parse a batch of {part['after']['rows']}, per row",
             "hot_single": "decode one text-only chunk frame as the provider link does (msgspec, hot_chunks.py)",
             "hot_batch": "the same for the batch, per row",
             "json_loads": "json.loads of one chunk frame (no validation: the stdlib's floor)",
             "json_loads_batch": "json.loads of the batch, per row",
             "encode_single": "encode one chunk frame", "encode_batch": "encode the batch, per row",
             "sse_envelope": "one SSE content event as the stream writes it",
             "sse_dumps": "the same event as one json.dumps of the whole chunk"}
    return [f"| {label}, µs | {b.get(name, '–')} | {a.get(name, '–')} | |" for name, label in names.items()
            if name in b or name in a]  # a figure neither side measured (its code is newer than both) has no row


def speed_section(results: dict | None) -> str:
    if not results:
        return "(scripts/bench_before_after.py has not been run)"
    lines = ["| measurement | before | after | target |", "|---|---|---|---|"]
    builders = (("stack", _stack_rows), ("vs_mlx", _vs_mlx_rows), ("relay", _relay_rows), ("codec", _codec_rows))
    commands, notes = [], set()
    for name, build in builders:
        if name in results:
            lines += build(results[name])
            part = results[name]
            commands.append(f"    {part['command']}    # base {part['base']}, after {part['head']}")
            if part.get("note"):
                notes.add(part["note"])
    note = f" Runs: {'; '.join(sorted(notes))}." if notes else ""
    return "\n".join(["Each part ran on the base commit's code and on this tree's, one after the other in one run, "
                      f"with the same harness.{note}", "", *commands, "", *lines])


def readme_line(results: dict | None) -> str:
    if not results or "stack" not in results or "relay" not in results:
        return ""
    stack, relay = results["stack"]["after"], results["relay"]["after"]
    batched = relay.get("relay_batched") or relay["relay_single"]
    vs = results["vs_mlx"]["after"]["ours_vs_mlx_lm_server"]["streaming"] if "vs_mlx" in results else None
    mlx = f"; ours ÷ `mlx_lm.server` {vs['tok_s']} in streaming tok/s" if vs else ""
    return (f"- **The stack's overhead** (`scripts/bench_before_after.py`): end-to-end ÷ engine "
            f"{stack['end_to_end_vs_engine']} at 8 streams{mlx}; the coordinator spends "
            f"{batched['cpu_us_per_token']} µs of CPU per relayed token at {batched['streams']} streams and "
            f"{relay['heartbeat']['share_of_one_core']} of a core on {f(relay['heartbeat']['providers'])} "
            f"heartbeating providers (PERFORMANCE.md, before and after).")


SPEED_NOTES = """What changed between the two columns: the agent sends a step's chunks as one `inference_response_chunks`
frame (protocol 1.4, agent/link/batching.py; a coordinator before 1.4 still gets one frame per row); the
coordinator serves each row as a single chunk, writes each client once per read with every delta that arrived
(agent/coordinator/token_merge.py) and encodes an SSE event into an envelope made once per stream; a model's
pre-warm plan, a scan of every provider, runs at most every `prewarm_heartbeat_interval_s` from heartbeats
instead of on each (and no more often than keeps those plans within `prewarm_max_core_share`, 1 % of a
core: about once a second at 1,000 providers); placement nets free KV only for the rank ties a search
reaches, and a ModelSpec hashes once (admission's caches hashed every layer of it per call).

How to read it. The stack benchmark runs the coordinator, the agent and the simulated engine in one process
and the consumer (a raw-bytes client, agent/testing/fleet/light_client.py) in another; the engine's sleeps
are paced against a deadline (`bench_stack.PacedSleep`), as MLX's thread runs whatever the event loop does,
so the stack can fall behind the engine and has to catch up by merging. Both columns use this same harness
(the base commit's code with this tree's scripts). The relay runs one coordinator process (open mode, logs
at warning) against scripted providers and consumers in other processes; its CPU figures are the
coordinator's own process time, so they hold on a shared machine, while tok/s, TTFT and ratios are wall-clock
and move with whatever else ran on the two shared cores (the stack and the mlx comparison are therefore the
median of alternating runs, every run kept in before_after.json; the codec rows whose code did not change,
one chunk frame parsed or encoded and json.loads, show the same noise). mlx_lm.server and our stack serve the same
narrow random-weight tiny model on this CPU, so that comparison is of the serving code, not of a Mac. Since
the prefix cache (issue 14) the after column includes it: every request has its own prompt, but the prompts
share the template's head and their first words ("Request i of round r ..."), which the agent reuses from a
cached prefix and mlx_lm.server did not in these runs. With the cache off
(`DARKBLOOM_MAX_PREFIX_CACHE_BYTES=0 python scripts/bench_vs_mlx_server.py --json`, one run on 42cd607) ours ÷
mlx_lm.server was 1.156 in streaming tok/s and 1.159 in streaming TTFT p50 (806.1 vs 695.7 ms), 1.074 and 0.939
non-streaming: the serving code alone meets the tok/s targets, not the streaming TTFT's 1.1.

Where the rest goes. Since 42cd607 (33.7 µs a token then), a stream's tokens are written as the router takes
the provider's frame (http/direct_stream.py, DESIGN.md §6): the flow's own checks, the dialect's encode and one
body chunk straight to the client's transport, with no task wake-up and no ASGI send per token (the task's
path is kept for a stream's end, errors, lost links and a backed-up client, whose text merges); the router
routes a batch's rows with each lookup done once (`scripts/bench_row_path.py`, the provider side of one
row in-process: 1.64 µs, was 2.30); and `serve`'s process tunes its collector (http/gc_tuning.py: py-spy had
about 8 % of the coordinator's CPU in gc_collect_main). Since 076beb5 the provider link
decodes a frame whose rows carry only text with msgspec before pydantic (wire/hot_chunks.py; the codec rows
above: 0.24 µs a row of a batch, against parse_message's 1.45; `scripts/bench_row_path.py`, the provider side of
a row in-process: 0.93 µs, 2.72 with `--pydantic`), and a flow's Token is no longer a frozen dataclass (timeit:
0.17 µs to build instead of 0.50). Since a33f7d2 the fast path runs 19.8 % fewer instructions a row (38,993 to
31,278 by `scripts/bench_row_instructions.py`, valgrind's count, which the shared cores do not move: the hot chunk
class checked first, no min()/max() calls in the usage meter and the stall deadline). Since 200fb1e a registered
link's valid frames reach the router as uvicorn's websocket protocol reads them (http/frame_tap.py), not by way of
the connection's queue, a woken task and ASGI's receive chain (bad frames still take the read loop, in order);
since e86f43a a chat token is encoded in one call (StreamFormat.token), and since 2abd892 a frame without the
hot tag is not tried by msgspec. Since 6694ecd a hot chunk takes the flow's text lane (`RequestFlow._text`: the
seq and the usage meter's bounds, no check for the logprobs and tool calls it cannot carry), a content token is
one string join, and a flow's Token and the hot frames' structs are msgspec Structs the collector does not
track. `scripts/bench_relay_instructions.py` counts the whole coordinator's user-space instructions in a live
relay under valgrind (20 providers, 200 streams, a token every 500 ms; the same code counts within 1 to 3 %):
from 40fb0fe to aaa7ede, 43,548 to 38,707 a token and 2.45M to 2.43M a request, so 55,797 to 50,840 a token at
200 tokens a stream (−8.9 %); from a02577b to 8d15a92, side by side on the day of this run, 39,897 to 34,398 a
token and 2.38M to 2.42M a request, so 51,796 to 46,489 at 200 tokens (−10.2 %); one relayed row in process
(`scripts/bench_row_instructions.py`, the same day): 32,231 to 27,249 (−15.5 %). The after column's three runs
were 29.3, 24.8 and 31.7 µs a token (user 19.0 + system 10.3 in the median one), beside floors of 6.6, 6.87
and 5.12 µs of kernel time for one loopback write in the same runs; the before side's three were 104.0, 102.5
and 105.0. The coordinator's code is that of 8d15a92, whose own run earlier the same day gave 33.3 (runs 27.8
to 35.0; 109.1 before): the two differ by this machine's state alone (json.loads of one chunk frame, the
stdlib's unchanged code, took 4.92 µs in this run, 4.23 in that one and 2.17 on the day of aaa7ede's 27.4),
and the instruction counts, which it does not move, are the measure of a change. Heartbeats:
a pre-warm plan reads every provider of its model, some 10 ms at 1,000 providers here, and since 8d15a92 those
plans keep within `prewarm_max_core_share` (1 % of a core a model), so heartbeats plan about once a second
there rather than every 0.25 s (bench_relay's heartbeat phase, two runs a side, by hand: 0.097 and 0.086 of a
core before, 0.079 and 0.076 after, 0.055 to 0.062 with no plans at all).
What is left: in one `perf record -F 2000 -g -p <coordinator pid>` of the batched relay (on 0dba565; `perf report --children --sort sym`), 33 % of the coordinator's samples are in the kernel, 26 % in
write(), one per stream per step, and 12.6 % in net_rx_action under those writes: loopback delivers each packet
to the consumer's socket (its TCP receive and its wake-up) inside the sender's system call, work a network
card leaves to the client's machine, counted here as the coordinator's. The Python interpreter has 56 %, spread
over the websocket layer (uvicorn's websockets-sansio), the fast path (the flow's checks, the usage meter, the
SSE encode), each request's own path (HTTP, keys, hold, placement, its first token and its end: 2.42M
instructions a request by `scripts/bench_relay_instructions.py`, a quarter of a relayed token's at 200 tokens a
stream, spread thin: placement is the largest piece, about a sixth of it under cProfile) and the event loop;
py-spy finds no piece above a few per cent. The CPU per token moves by a fifth or more between runs of the same tree here, so one run's figure is
read beside its own floor.
The floor of a relay in Python, measured: `scripts/bare_relay.py` relays the same batched frames from the same
providers to the same consumers with the coordinator's libraries (uvloop, websockets' sans-I/O link, the hot
decoder, one chunk write a token in the coordinator's SSE bytes) and does nothing else: no keys, admission,
holds, seq or usage checks, stall deadlines, backpressure, metrics, logs or billing. bench_relay runs it
beside the coordinator (the relay_bare row): 16.1 to 16.6 µs a token in this run's three, user 7.0 to 7.6 and
system 8.9 to 9.5, while the coordinator's system part was 9.3 to 11.1. The kernel's share is the same for
both, about 9 to 10 µs a token, one loopback write per stream per step; it is half of the 20 µs target before
any Python runs. Counted by valgrind, side by side on d036343 (`scripts/bench_relay_instructions.py`, with and
without `--bare`): the bare relay executes 18,363 instructions a token and 391,861 a request (20,322 a token
at 200 tokens a stream), the coordinator 34,584 and 2,384,930 (46,509). So the coordinator's own work is
26,187 instructions a relayed token at 200 tokens a stream, 56 % of what it executes: 16,221 a token (the
flow's checks, the meter, the stall deadline, the direct write's readiness, the router's lookups) and 2.0M
a request (HTTP and its middleware, the body's validation, the hold, placement, attempts, metrics, the
stream's head and tail), a tenth of that a token. `scripts/bench_relay_opcodes.py` names the functions, by
the bytecodes each runs (the coordinator of 8a1a508, two runs: 603 and 625 a token, 19,427 and 18,900 a request; the bare
relay 192 and 2,873): a token's largest are the usage meter's count, the direct stream's take, the websocket
frame parse (websockets' Python, a share of a frame a row), the flow's text lane and take, and the router's
rows, 40 to 55 each; a request's are spread over uvicorn's send, json encodes, websocket parses, prometheus
labels and placement's reputation and holder checks, none above 3 %. Against the target, the bare relay leaves 3.4 to 3.9 µs a
token in this run: at the rate the median run executed the coordinator's instructions (46,509 in 19.0 µs of
user time), about 9,000 instructions, a third of the coordinator's work, and less than its per-request part
alone. No rearrangement of that Python fits there; a relay that meets 20 µs on this machine keeps its
per-token path out of the interpreter (a compiled relay core, or the Go coordinator the issue names).
Routing at 1,000 providers was a scan in Python, a microsecond or two per provider every decision (the
profile put the time in the scan and its sort, not in the admission checks); a dispatch now reads the router's
index of warm slots by rank (routing/warm_index.py), refiled as heartbeats and sends change a slot's rank, so
a decision checks only the few best-ranked slots a lazy search reaches, and the Placement equals the scan's
(tests/test_warm_index.py compares them on random fleets). The non-lazy placement (the capacity view) still
scans: about 15 ms at 1,000 providers."""
