"""The performance report: runs the benchmarks, keeps their results, and writes PERFORMANCE.md and the
README's performance summary from them (one source for every figure either quotes).

    python scripts/bench.py [--parts kv ledger ...] [--note TEXT] [--report-only]

  engine      engine vs bare mlx-lm, batch gain        scripts/bench_engine.py --json (tiny models, CPU)
  stack       end-to-end vs engine, added TTFT         bench_stack.stack_vs_engine (same simulated engine)
  admission   long requests admitted per warm slot     bench_stack.admission_counts (expected vs worst case)
  routing     routing decision time                    scripts/bench_routing.py --json
  ttft        first token through the coordinator      scripts/bench_routing.py --ttft --json (loopback)
  ledger      settlements per second, one account      scripts/bench_ledger.py --json
  link        state change, reconnect, frames/s        scripts/bench_link.py --json
  kv          KV prediction error vs real caches       scripts/bench_kv.py --json (tiny models)
  burst matrix + sustained runs are read from the load test's JSON files (scripts/loadtest.py)
  issue 16's before / after (stack, codec, mlx_lm.server, relay) is read from results/before_after.json,
  written by scripts/bench_before_after.py

`--parts` re-runs only those parts and keeps the others' saved results (each part records when it ran,
its command and `--note`, e.g. that the machine was shared); `--report-only` re-renders from saved results.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "scripts" / "results"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench_report import load_runs, update_readme, write_report  # noqa: E402

ENGINE_ARGS = ["scripts/bench_engine.py", "--json", "--variants", "gpt-oss-tiny", "gemma-4-tiny", "--repeats", "3"]
PART_TIMEOUT_S = 1800


def run_json(args: list[str]) -> dict:
    """Runs one benchmark script and parses the JSON object it prints last."""
    out = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=PART_TIMEOUT_S)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{out.stderr[-2000:]}")
    text = out.stdout.strip()
    return json.loads(text[text.index("{"):] if text.startswith("{") else text.splitlines()[-1])


def script_part(args: list[str]) -> Callable[[], dict]:
    return lambda: {"command": "python " + " ".join(args), **run_json(args)}


def stack_part() -> dict:
    import bench_stack

    return {"command": "python scripts/bench.py --parts stack (bench_stack.stack_vs_engine)",
            **asyncio.run(bench_stack.stack_vs_engine())}


def admission_part() -> dict:
    import bench_stack

    return {"command": "python scripts/bench.py --parts admission (bench_stack.admission_counts)",
            "prompt_tokens": 1000, "max_tokens": 32768, "ratio": 0.7, "rows": bench_stack.admission_counts()}


PARTS: dict[str, Callable[[], dict]] = {
    "engine": script_part(ENGINE_ARGS),
    "stack": stack_part,
    "admission": admission_part,
    "routing": script_part(["scripts/bench_routing.py", "--json"]),
    "ttft": script_part(["scripts/bench_routing.py", "--ttft", "--json"]),
    "ledger": script_part(["scripts/bench_ledger.py", "--json"]),
    "link": script_part(["scripts/bench_link.py", "--json"]),
    "kv": script_part(["scripts/bench_kv.py", "--json"]),
}


def measure(results: dict, parts: list[str], note: str | None) -> dict:
    for name in parts:
        print(f"running {name} ...", flush=True)
        started = time.time()
        results[name] = PARTS[name]() | {"measured_at": round(started), "seconds": round(time.time() - started, 1)}
        if note:
            results[name]["note"] = note
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", nargs="+", choices=sorted(PARTS), help="re-run only these (default: all)")
    parser.add_argument("--note", help="stored with each part run now, e.g. 'machine shared with other jobs'")
    parser.add_argument("--report-only", action="store_true", help="re-render from the saved results")
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    saved = RESULTS / "bench.json"
    results = json.loads(saved.read_text()) if saved.exists() else {}
    if not args.report_only:
        results = measure(results, args.parts or list(PARTS), args.note)
        saved.write_text(json.dumps(results, indent=1) + "\n")
    runs = load_runs(RESULTS)
    write_report(results, runs, ROOT / "PERFORMANCE.md", RESULTS / "sustained.png")
    update_readme(results, runs, ROOT / "README.md")
    print("wrote PERFORMANCE.md, the README's performance summary and scripts/results/sustained.png")


if __name__ == "__main__":
    main()
