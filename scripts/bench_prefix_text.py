"""scripts/bench_prefix.py's one run as text: PERFORMANCE.md's prefix-cache section and the README's block
(the same words and figures in both)."""

from __future__ import annotations


def prefix_table(result: dict) -> list[str]:
    lines = ["| turn | prompt tokens | of them cached | TTFT with cache (ms) | without (ms) | with ÷ without |",
             "|---:|---:|---:|---:|---:|---:|"]
    for row in result["per_turn"]:
        lines.append(f"| {row['turn']} | {row['prompt_tokens']:,} | {row['cached_tokens']:,} | "
                     f"{row['ttft_cached_ms']:,} | {row['ttft_uncached_ms']:,} | {row['ratio']} |")
    return lines


def prefix_section(result: dict | None) -> str:
    if result is None:
        return "(scripts/bench_prefix.py has not run yet)"
    rows = result["per_turn"]
    growth = round((rows[-1]["prompt_tokens"] - rows[0]["prompt_tokens"]) / max(1, len(rows) - 1))
    table = "\n".join(prefix_table(result))
    note = f"; {result['note']}" if result.get("note") else ""
    return f"""`{result['command']}` ({result['variant']}: random weights at the real attention widths, on this
shared 2-core CPU; {result['repeats']} conversation(s) of {result['turns']} turns, each turn about {growth} tokens longer, replies of
{result['reply_tokens']} greedy tokens; the two engines take each turn alternately, so load falls on both alike; the
1-minute load average was {result['load_average'][0]} before and {result['load_average'][1]} after{note}):

{table}

**TTFT with the cache ÷ without at turn {result['turns']}: {result['ratio_turn_last']}** (target ≤ 0.3). Both engines'
replies were the same text at every turn. A turn reuses all of the previous turn's prompt but its last
token (gpt-oss's template drops earlier reasoning from the history, but the previous prompt ends before the
reply, so it is still a prefix); turn 1 reuses the shared system preamble of the warm-up conversation."""


def prefix_routing_section(result: dict | None) -> str:
    """scripts/bench_prefix_routing.py's one run: later turns on their prefix, cached share, load, TTFT, the process."""
    if result is None:
        return "(scripts/bench_prefix_routing.py has not run yet)"
    rows = ["| prefix routing | later turns | on a provider holding their prefix (routed to it) | cached-token share "
            "| busiest ÷ mean rows (per sample) | TTFT p50 / p95, later turns (first turns) | CPU ÷ wall, loop lag p95 |",
            "|---|---:|---:|---:|---:|---|---|"]
    for name in ("with", "without"):
        r = result[name]
        rows.append(f"| {'on' if r['prefix_routing'] else 'off'} | {r['later_turns']:,} | {r['landed_on_prefix_pct']} % "
                    f"({r['routed_to_holder_pct']} %) | {r['cached_token_share']} | {r['busiest_over_mean_rows']} "
                    f"({r['busiest_over_mean_rows_now']}) | {r['ttft_p50_s']} / {r['ttft_p95_s']} s "
                    f"({r['first_turn_ttft_p50_s']} / {r['first_turn_ttft_p95_s']} s) | {r['process_cpu_over_wall']}, "
                    f"{r['loop_lag_p95_ms']} ms |")
    table = "\n".join(rows)
    on = result["with"]
    landed = "met in this run" if on["landed_on_prefix_pct"] >= 90 else "not met in this run"
    balanced = "met in this run" if on["busiest_over_mean_rows"] <= 1.5 else "not met in this run"
    note = f" {result['note']}" if result.get("note") else ""
    by_memory = ", ".join(f"{gb} GB {rows}" for gb, rows in on["mean_rows_by_memory_gb"].items())
    off_memory = ", ".join(f"{gb} GB {rows}" for gb, rows in result["without"]["mean_rows_by_memory_gb"].items())
    return f"""`{result['command']}` ({result['agents']} simulated agents, gpt-oss warm on each that fits it
({on['warm_providers']}); {result['conversations']} concurrent conversations of {result['turns']} turns, their starts spread over
{result['ramp_s']} s and up to {result['think_s']} s of thought between turns; each turn sends its whole history, a new
user message of about {result['user_tokens']} tokens and {result['max_tokens']} output tokens a turn, so later turns carry
{on['mean_prompt_tokens_later']} prompt tokens on average; times are simulated seconds, one lasting {result['time_scale']} s of
real time; the real coordinator and agent code, with the fake engine's simulated prefix cache, in one process
on this shared 2-core CPU):

{table}

**With prefix routing: {on['landed_on_prefix_pct']} % of later turns on a provider holding their prefix (target ≥ 90 %:
{landed}); the busiest provider held {on['busiest_over_mean_rows']} × the mean rows (target ≤ 1.5: {balanced}).**{note}

A later turn is on its prefix when its usage shows cached tokens (the fake engine reuses only a whole earlier
prompt of the same conversation); in brackets, the coordinator's own count of turns it sent to the provider of
the previous turn. Rows held per provider are its gpt-oss slot's running + waiting rows, read from the agents'
engines every 100 ms while rows are in flight; the busiest ÷ mean figure is the busiest provider's average
rows over the run ÷ the mean provider's, and in brackets the same taken per sample and averaged (the largest
of ~{on['warm_providers']} counts averaging {on['mean_rows_per_provider']} is several times the mean even for an even placement).
The mean rows a provider held, by its memory, with prefix routing: {by_memory}; without: {off_memory}. The
cached-token share is cached ÷ prompt tokens over later turns, from the streamed usage. CPU ÷ wall and
the event loop's lag say whether the one process kept up with simulated time."""
