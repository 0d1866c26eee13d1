"""Turns bench.json and loadtest.json into PERFORMANCE.md tables and the sustained-run PNG."""

from __future__ import annotations

from pathlib import Path

GPT, GEMMA = "gpt-oss-20b", "gemma-4-26b"


def _f(value, digits: int = 2) -> str:
    return "–" if value is None else f"{value:,.{digits}f}" if isinstance(value, float) else f"{value:,}"


def plot(sustained: dict, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scale = sustained_scale(sustained)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    for model, colour in ((GPT, "tab:blue"), (GEMMA, "tab:orange")):
        ts = [s["t"] / scale for s in sustained["samples"] if model in s]
        top.plot(ts, [s[model]["warm"] for s in sustained["samples"] if model in s], color=colour, label=f"{model} warm")
        top.plot(ts, [s[model]["loading"] for s in sustained["samples"] if model in s], color=colour, ls=":",
                 label=f"{model} loading")
        reqs = [r for r in sustained["requests"] if r["model"] == model and r["ttft_s"]]
        bottom.scatter([r["t"] / scale for r in reqs], [r["ttft_s"] / scale for r in reqs], s=6, color=colour,
                       label=f"{model} TTFT")
    top.set_ylabel("providers warm / loading")
    top.legend(fontsize=8)
    bottom.set_ylabel("TTFT (simulated s)")
    bottom.set_yscale("log")
    bottom.set_xlabel("simulated seconds since start (request start time for TTFT)")
    bottom.legend(fontsize=8)
    fig.suptitle("Sustained mixed run on the 60-agent simulated fleet")
    fig.tight_layout()
    fig.savefig(png, dpi=110)


def sustained_scale(sustained: dict) -> float:
    return sustained.get("time_scale", 0.5)


def matrix_table(matrix: dict) -> list[str]:
    lines = ["| max_tokens × conc. | requests | error % | billing | token limit | capacity 429 | no-provider 503 "
             "| dispatch | client | latency p50 / p95 (s) | TTFT p50 / p95 (s) | cluster tok/s | idle capable at cell end |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---:|---:|"]
    for c in matrix["cells"]:
        k = c["classes"]
        cap = c["capacity_after"].get(GPT, {})
        lines.append(f"| {c['max_tokens']:,} × {c['concurrency']} | {c['requests']} | {_f(c['error_pct'])} | "
                     f"{k['billing']} | {k['token_limit']} | {k['capacity_429']} | {k['no_provider_503']} | "
                     f"{k['dispatch_failure']} | {k['client']} | {_f(c['latency_p50_s'])} / {_f(c['latency_p95_s'])} | "
                     f"{_f(c['ttft_p50_s'], 3)} / {_f(c['ttft_p95_s'], 3)} | {_f(c['cluster_tok_s'], 0)} | "
                     f"{cap.get('idle', '–')} idle + {cap.get('cold_fits', '–')} cold |")
    return lines


def bench_tables(results: dict) -> list[str]:
    lines = ["| measurement | value | command |", "|---|---|---|"]
    engine = results.get("engine")
    if engine:
        for key in ("engine_vs_bare_1", "engine_vs_bare_8", "batch_gain_8"):
            if key in engine:
                lines.append(f"| {key} | {_f(engine[key], 3)} | `{engine['command']}` |")
    s = results["stack"]
    lines += [f"| end-to-end ÷ engine tok/s (8 streams × 200 tok, same simulated engine) | "
              f"{s['end_to_end_vs_engine']} ({s['end_to_end_tok_s_real']} vs {s['engine_tok_s_real']} real tok/s at "
              f"time_scale {s['time_scale']}) | `{s['command']}` |",
              f"| added TTFT p50 (full stack − engine) | {s['added_ttft_p50_ms']} ms ({s['end_to_end_ttft_p50_ms']} vs "
              f"{s['engine_ttft_p50_ms']} ms) | `{s['command']}` |",
              f"| KV prediction max error | {results['kv']['max_error_bytes']} bytes ({results['kv']['tests_passed']} "
              f"exact-equality tests passed) | `{results['kv']['command']}` |"]
    return lines


def admission_table(results: dict) -> list[str]:
    a = results["admission"]
    lines = [f"Requests of {a['prompt_tokens']:,} prompt + {a['max_tokens']:,} max_tokens, expected-output ratio "
             f"{a['ratio']} (`{a['command']}`). KV-bound counts, before the engine's 32-rows-per-slot cap:", "",
             "| model | Mac | KV budget (GiB) | admitted (expected output) | admitted (worst case) | ratio |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in a["rows"]:
        lines.append(f"| {r['model']} | {r['memory_gb']} GB | {r['kv_budget_gib']} | {r['admitted_expected']} | "
                     f"{r['admitted_worst_case']} | {_f(r['ratio'])}× |")
    return lines


def routing_lines(results: dict) -> list[str]:
    r = results["routing"]
    lines = [f"`{r['command']}` (60 providers, µs):", "", "| path | n | p50 | p95 | p99 |", "|---|---:|---:|---:|---:|"]
    for name, row in r.items():
        if isinstance(row, dict) and "p50_us" in row:
            lines.append(f"| {name} | {row['n']} | {_f(row['p50_us'], 0)} | {_f(row['p95_us'], 0)} | "
                         f"{_f(row['p99_us'], 0)} |")
    return lines


def write_report(results: dict, loadtest: dict | None, path: Path, png: Path) -> None:
    from bench_text import render

    sections = {"bench": "\n".join(bench_tables(results)), "admission": "\n".join(admission_table(results)),
                "routing": "\n".join(routing_lines(results)), "matrix": "", "sustained": ""}
    if loadtest and "matrix" in loadtest:
        sections["matrix"] = "\n".join(matrix_table(loadtest["matrix"]))
    if loadtest and "sustained" in loadtest:
        s = loadtest["sustained"]
        s.setdefault("time_scale", loadtest["args"]["time_scale"])
        plot(s, png)
        rows = ["| model | warm median | warm min | warm max | TTFT p50 (s) | TTFT p95 (s) | requests | error % |",
                "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for model, key in ((GPT, "gpt"), (GEMMA, "gemma")):
            w, t, m = s[f"{model}_warm"], s[f"{model}_ttft"], s[key]
            rows.append(f"| {model} | {w['median']} | {w['min']} | {w['max']} | {_f(t['p50'], 3)} | {_f(t['p95'], 3)} | "
                        f"{m['requests']} | {_f(m['error_pct'])} |")
        sections["sustained"] = "\n".join(rows)
    path.write_text(render(sections, results, loadtest))
