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
    """scripts/bench_prefix_routing.py's one run: later turns landing on their prefix, load, TTFT."""
    if result is None:
        return "(scripts/bench_prefix_routing.py has not run yet)"
    rows = ["| prefix routing | later turns | landed on their prefix's provider | busiest ÷ mean rows "
            "| TTFT p50 / p95 (simulated s) |", "|---|---:|---:|---:|---|"]
    for name in ("with", "without"):
        r = result[name]
        rows.append(f"| {'on' if r['prefix_routing'] else 'off'} | {r['later_turns']:,} | {r['landed_on_prefix_pct']} % "
                    f"| {r['busiest_over_mean_rows']} | {r['ttft_p50_s']} / {r['ttft_p95_s']} |")
    table = "\n".join(rows)
    note = f"; {result['note']}" if result.get("note") else ""
    return f"""`{result['command']}` ({result['agents']} simulated agents, gpt-oss warm on each; {result['conversations']}
concurrent conversations of {result['turns']} turns, {result['max_tokens']} output tokens a turn, each turn sending
its whole history; the real coordinator and agent code on this shared 2-core CPU{note}):

{table}

A later turn lands on its prefix when the coordinator sent it where its previous turn went; the load column is
the rows on the busiest warm slot ÷ the mean, averaged over 20 ms samples. The simulated engine keeps no
prefix cache, so the cached-token share and the TTFT it would save are not measured here (the real engine's
saving is the table above); the TTFT difference here is routing alone."""
