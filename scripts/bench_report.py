"""Turns the saved results (bench.json, the load tests' JSON) into PERFORMANCE.md's tables, the README's
performance blocks and the sustained-run PNG. Rendering is pure; only `plot` needs matplotlib."""

from __future__ import annotations

import re
from pathlib import Path

from bench_figures import ERRORS, GEMMA, GPT, MODEL_KEYS, SustainedRun, f, figures, load_runs

__all__ = ["load_runs", "render_performance", "render_readme", "update_readme", "write_report"]

# The README blocks this script owns: everything between a start and an end marker is rewritten.
README_BLOCKS = ("engine", "summary", "prefix", "vision")


def plot(run: SustainedRun, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    for model, colour in ((GPT, "tab:blue"), (GEMMA, "tab:orange")):
        samples = [s for s in run.data["samples"] if model in s]
        ts = [s["t"] / run.scale for s in samples]
        top.plot(ts, [s[model]["warm"] for s in samples], color=colour, label=f"{model} warm")
        top.plot(ts, [s[model]["loading"] for s in samples], color=colour, ls=":", label=f"{model} loading")
        reqs = [r for r in run.data["requests"] if r["model"] == model and r["ttft_s"]]
        bottom.scatter([r["t"] / run.scale for r in reqs], [r["ttft_s"] / run.scale for r in reqs], s=6,
                       color=colour, label=f"{model} TTFT")
    top.set_ylabel("providers warm / loading")
    top.legend(fontsize=8)
    bottom.set_ylabel("TTFT (simulated s)")
    bottom.set_yscale("log")
    bottom.set_xlabel("simulated seconds since start (request start time for TTFT)")
    bottom.legend(fontsize=8)
    fig.suptitle(f"Sustained mixed run on the 60-agent simulated fleet ({run.file})")
    fig.tight_layout()
    fig.savefig(png, dpi=110)


def matrix_table(matrix: dict) -> list[str]:
    lines = ["| max_tokens × conc. | requests | error % | billing | token limit | capacity 429 | no-provider 503 "
             "| dispatch | client | latency p50 / p95 (s) | TTFT p50 / p95 (s) | cluster tok/s | idle capable at cell end |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---:|---:|"]
    for c in matrix["cells"]:
        k = c["classes"]
        cap = c["capacity_after"].get(GPT, {})
        lines.append(f"| {c['max_tokens']:,} × {c['concurrency']} | {c['requests']} | {f(c['error_pct'])} | "
                     + " | ".join(str(k[name]) for name in ERRORS) + " | "
                     f"{f(c['latency_p50_s'])} / {f(c['latency_p95_s'])} | "
                     f"{f(c['ttft_p50_s'], 3)} / {f(c['ttft_p95_s'], 3)} | {f(c['cluster_tok_s'], 0)} | "
                     f"{cap.get('idle', '–')} idle + {cap.get('cold_fits', '–')} cold |")
    return lines


def sustained_table(runs: list[SustainedRun]) -> list[str]:
    lines = ["| run | model | warm median / min / max | TTFT p50 / p95 (s) | requests | error % "
             "| gemma widened at (simulated s) | samples with a warm gemma slot idle beside a running one |",
             "|---|---|---|---|---:|---:|---:|---:|"]
    for run in runs:
        idle, total = run.idle_beside_running()
        for model, key in MODEL_KEYS:
            w, t, m = run.data[f"{model}_warm"], run.data[f"{model}_ttft"], run.data[key]
            extra = (f"{f(run.widened_at(), 1) if run.widened_at() is not None else 'never'} | {idle} of {total}"
                     if model == GEMMA else " | ")
            lines.append(f"| `{run.file}` | {model} | {f(w['median'], 1)} / {w['min']} / {w['max']} | "
                         f"{f(t['p50'], 3)} / {f(t['p95'], 3)} | {m['requests']:,} | {f(m['error_pct'])} | {extra} |")
    return lines


def runs_list(runs: list[SustainedRun]) -> list[str]:
    lines = []
    for run in runs:
        fleet, loadtest = run.commands()
        note = f" ({run.note})" if run.note else ""
        lines += [f"- `{run.file}`: {run.change}{note}.", "", f"      {fleet}", f"      {loadtest}", ""]
    return lines


def side_by_side(results: dict) -> list[str]:
    lines = ["| measurement | value | command |", "|---|---|---|"]
    engine = results.get("engine")
    if engine:
        for key in ("engine_vs_bare_1", "engine_vs_bare_8", "batch_gain_8"):
            lines.append(f"| {key} ({engine['primary']}) | {f(engine[key], 3)} | `{engine['command']}` |")
    if "stack" in results:
        s = results["stack"]
        lines += [f"| end-to-end ÷ engine tok/s (8 streams × 200 tok, same simulated engine) | "
                  f"{s['end_to_end_vs_engine']} ({s['end_to_end_tok_s_real']} vs {s['engine_tok_s_real']} real tok/s at "
                  f"time_scale {s['time_scale']}) | `{s['command']}` |",
                  f"| added TTFT p50, full stack (keys + billing + websocket + SSE) − engine | {s['added_ttft_p50_ms']} ms "
                  f"({s['end_to_end_ttft_p50_ms']} vs {s['engine_ttft_p50_ms']} ms) | `{s['command']}` |"]
    if "ttft" in results:
        t = results["ttft"]
        concurrent = next(k for k in t if k.startswith("ttft_") and k.endswith("_concurrent"))
        lines.append(f"| first token through the coordinator on loopback, instant provider, p50 sequential / "
                     f"{concurrent.split('_')[1]} concurrent | {f(t['ttft_sequential']['p50_us'] / 1000)} ms / "
                     f"{f(t[concurrent]['p50_us'] / 1000)} ms (HTTP round trip alone "
                     f"{f(t['http_round_trip']['p50_us'] / 1000)} ms) | `{t['command']}` |")
    if "ledger" in results:
        g = results["ledger"]
        lines.append(f"| ledger settlements/s, {g['requesters']} concurrent requesters on one account | "
                     f"{f(g['settlements_per_s'])} ({g['errors']} errors, {g['commits']} commits for "
                     f"{f(g['settlements'])} entries) | `{g['command']}` |")
    if "link" in results:
        k = results["link"]
        lines.append(f"| link: state change → coordinator p50 / reconnect after a restart p50 / chunk frames/s | "
                     f"{f(k['state_change_heartbeat']['p50_ms'])} ms / "
                     f"{f(k['reconnect_after_restart']['p50_ms'] / 1000)} s / {f(k['chunk_frames_per_second'])} | "
                     f"`{k['command']}` |")
    if "kv" in results:
        kv = results["kv"]
        lines.append(f"| KV prediction max error (vs the real caches' nbytes, every step) | "
                     f"{f(kv['max_error_bytes'])} bytes over {f(kv['steps_compared'])} steps; predicted peak ≥ real "
                     f"peak by {f(kv['min_peak_slack_bytes'])} B or more | `{kv['command']}` |")
    return lines


def kv_table(kv: dict) -> list[str]:
    lines = ["| model | case | steps compared | max error (bytes) |", "|---|---|---:|---:|"]
    for model, m in kv["models"].items():
        for case, row in m["cases"].items():
            lines.append(f"| {model} | {case} | {row['steps_compared']} | {f(row['max_error_bytes'])} |")
    return lines


def engine_table(engine: dict) -> list[str]:
    lines = ["| model | paired repeats | engine ÷ bare mlx-lm, 1 stream | 8 streams | 8-stream ÷ 1-stream (engine) "
             "| same, bare mlx-lm |", "|---|---:|---:|---:|---:|---:|"]
    for name, v in engine["variants"].items():
        lines.append(f"| {name} | {v['repeats']} | {f(v['engine_vs_bare_1'], 3)} | {f(v['engine_vs_bare_8'], 3)} | "
                     f"{f(v['batch_gain_8'])} | {f(v['bare_batch_gain_8'])} |")
    return lines


def admission_table(a: dict) -> list[str]:
    lines = [f"Requests of {a['prompt_tokens']:,} prompt + {a['max_tokens']:,} max_tokens, expected-output ratio "
             f"{a['ratio']} (`{a['command']}`). KV-bound counts, before the engine's 32-rows-per-slot cap:", "",
             "| model | Mac | KV budget (GiB) | admitted (expected output) | admitted (worst case) | ratio |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in a["rows"]:
        lines.append(f"| {r['model']} | {r['memory_gb']} GB | {r['kv_budget_gib']} | {r['admitted_expected']} | "
                     f"{r['admitted_worst_case']} | {f(r['ratio'])}× |")
    return lines


def routing_table(r: dict) -> list[str]:
    lines = [f"`{r['command']}` (60 providers, µs):", "", "| path | n | p50 | p95 | p99 |", "|---|---:|---:|---:|---:|"]
    for name, row in r.items():
        if isinstance(row, dict) and "p50_us" in row:
            lines.append(f"| {name} | {row['n']} | {f(row['p50_us'], 0)} | {f(row['p95_us'], 0)} | "
                         f"{f(row['p99_us'], 0)} |")
    return lines


def sections(results: dict, runs: dict) -> dict[str, str]:
    """Every table, rendered; an empty string where its results are missing."""
    def join(lines: list[str]) -> str:
        return "\n".join(lines)

    return {
        "matrix": join(matrix_table(runs["matrix"])) if runs["matrix"] else "",
        "sustained": join(sustained_table(runs["sustained"])) if runs["sustained"] else "",
        "runs": join(runs_list(runs["sustained"])).rstrip(),
        "bench": join(side_by_side(results)),
        "kv": join(kv_table(results["kv"])) if "kv" in results else "",
        "engine": join(engine_table(results["engine"])) if "engine" in results else "",
        "admission": join(admission_table(results["admission"])) if "admission" in results else "",
        "routing": join(routing_table(results["routing"])) if "routing" in results else "",
    }


def render_performance(results: dict, runs: dict) -> str:
    from bench_text import performance

    return performance(sections(results, runs), figures(results, runs), results, runs)


def render_readme(results: dict, runs: dict) -> dict[str, str]:
    """The README blocks this script owns, by name."""
    from bench_prefix_text import prefix_section
    from bench_text import readme_engine, readme_summary, readme_vision
    from bench_text_speed import readme_line

    figs, tables = figures(results, runs), sections(results, runs)
    speed = readme_line(runs.get("before_after"))
    summary = readme_summary(figs)
    if speed:  # before the notes paragraph, with the other bullets
        head, sep, notes = summary.partition("\n\nNotes on the runs")
        summary = head + "\n" + speed + sep + notes
    return {"engine": readme_engine(tables, results), "summary": summary,
            "prefix": prefix_section(runs.get("prefix")),
            "vision": readme_vision(runs.get("vision"), runs.get("vision_install"))}


def readme_block(text: str, name: str) -> re.Match[str]:
    pattern = rf"(<!-- bench\.py:{name} start[^\n]*-->\n)(.*?)(<!-- bench\.py:{name} end -->)"
    match = re.search(pattern, text, flags=re.S)
    if match is None:
        raise SystemExit(f"README.md has no '<!-- bench.py:{name} start -->' ... end block")
    return match


def update_readme(results: dict, runs: dict, path: Path) -> None:
    text = path.read_text()
    for name, body in render_readme(results, runs).items():
        match = readme_block(text, name)
        text = text[: match.start(2)] + body + "\n" + text[match.end(2):]
    path.write_text(text)


def write_report(results: dict, runs: dict, path: Path, png: Path) -> None:
    if runs["sustained"]:
        plot(runs["sustained"][-1], png)
    path.write_text(render_performance(results, runs))
