"""The performance report: runs the side-by-side benchmarks and writes PERFORMANCE.md + scripts/results/.

    python scripts/bench.py [--skip-mlx] [--report-only] [--loadtest scripts/results/loadtest.json]

  engine vs bare mlx-lm, batch gain      scripts/bench_engine.py --json (tiny models, CPU)
  end-to-end vs engine, added TTFT       scripts/bench_stack.py (same simulated engine, direct vs full stack)
  KV prediction error                    pytest tests/test_kvcost_engine.py (byte equality at every step)
  long requests admitted per provider    scripts/bench_stack.admission_counts (expected vs worst case)
  routing decision time                  scripts/bench_routing.py --json
  burst matrix + sustained run           read from the load test's JSON (scripts/loadtest.py); PNG drawn here
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "scripts" / "results"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import bench_stack  # noqa: E402
from bench_report import write_report  # noqa: E402


def run(cmd: list[str], timeout: float) -> tuple[str, float]:
    started = time.monotonic()
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stderr[-2000:]}")
    return out.stdout, time.monotonic() - started


def kv_exactness() -> dict:
    cmd = [sys.executable, "-m", "pytest", "-q", "tests/test_kvcost_engine.py"]
    out, seconds = run(cmd, 600)
    passed = int(re.search(r"(\d+) passed", out).group(1))
    return {"command": "python " + " ".join(cmd[1:]), "tests_passed": passed, "max_error_bytes": 0, "seconds": round(seconds, 1),
            "note": "each test asserts predicted == sum of the real caches' nbytes after every prefill and decode step"}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--skip-mlx", action="store_true")
    parser.add_argument("--report-only", action="store_true", help="re-render PERFORMANCE.md from saved results")
    parser.add_argument("--loadtest", default=str(RESULTS / "loadtest.json"))
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    previous = RESULTS / "bench.json"
    if args.report_only and previous.exists():
        results = json.loads(previous.read_text())
        loadtest = json.loads(Path(args.loadtest).read_text()) if Path(args.loadtest).exists() else None
        write_report(results, loadtest, ROOT / "PERFORMANCE.md", RESULTS / "sustained.png")
        return
    results: dict = {"started": time.time()}
    if not args.skip_mlx:
        cmd = [sys.executable, "scripts/bench_engine.py", "--json", "--variants", "gpt-oss-tiny", "gemma-4-tiny",
               "--repeats", "3"]
        out, _ = run(cmd, 900)
        results["engine"] = {"command": "python scripts/bench_engine.py --json --variants gpt-oss-tiny gemma-4-tiny "
                                        "--repeats 3", **json.loads(out.strip().splitlines()[-1])}
    results["stack"] = {"command": "python scripts/bench.py (bench_stack.stack_vs_engine)",
                        **asyncio.run(bench_stack.stack_vs_engine())}
    results["admission"] = {"command": "python scripts/bench.py (bench_stack.admission_counts)",
                            "prompt_tokens": 1000, "max_tokens": 32768, "ratio": 0.7,
                            "rows": bench_stack.admission_counts()}
    out, _ = run([sys.executable, "scripts/bench_routing.py", "--json"], 600)
    results["routing"] = {"command": "python scripts/bench_routing.py --json", **json.loads(out)}
    results["kv"] = kv_exactness()
    results["finished"] = time.time()
    (RESULTS / "bench.json").write_text(json.dumps(results, indent=1))
    loadtest = json.loads(Path(args.loadtest).read_text()) if Path(args.loadtest).exists() else None
    write_report(results, loadtest, ROOT / "PERFORMANCE.md", RESULTS / "sustained.png")
    print("wrote PERFORMANCE.md, scripts/results/bench.json, scripts/results/sustained.png")


if __name__ == "__main__":
    main()
