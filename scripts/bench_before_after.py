#!/usr/bin/env python3
"""Issue 16's figures, before and after, in one run: the same benchmarks on an older commit's code and on this tree.

    python scripts/bench_before_after.py --base REV [--parts stack codec vs_mlx relay] [--note TEXT]

The older code is `git archive REV` in a temporary directory, with this tree's benchmark harnesses
(scripts/, and the lightweight peers and consumers in agent/testing/fleet/) copied over it, so both
sides run the same measurement and differ only in the code measured. Each part runs once on each side,
the base first, each in its own processes (PYTHONPATH names the tree); the parts whose figures swing with the
load of a shared machine (REPEATS) alternate base and this tree several times and keep each side's median. A coordinator before protocol
1.4 does not take batched chunks, so its relay runs with one frame per row only. Results go to
scripts/results/before_after.json; `scripts/bench.py --report-only` renders them into PERFORMANCE.md.

  stack    scripts/bench_stack.py        end-to-end ÷ engine, 8 streams (the client in its own process)
  codec    scripts/bench_codec.py --json a chunk frame's and an SSE event's encoding, µs
  vs_mlx   scripts/bench_vs_mlx_server.py --json   mlx_lm.server vs coordinator + agent, tiny model
  relay    scripts/bench_relay.py --json  the coordinator alone: relay, heartbeats, routing at 1,000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "scripts" / "results" / "before_after.json"
HARNESS = ("scripts", "agent/testing/fleet/relay_peer.py", "agent/testing/fleet/light_client.py")
PARTS = {
    "stack": ["scripts/bench_stack.py"],
    "codec": ["scripts/bench_codec.py", "--json"],
    "vs_mlx": ["scripts/bench_vs_mlx_server.py", "--json"],
    "relay": ["scripts/bench_relay.py", "--json"],
}
TIMEOUT_S = 3600
# Parts whose figure swings with what else runs on the shared cores: run alternately, base and this tree,
# REPEATS times each, and keep each side's median run by this measure (every run is kept too).
# The relay's CPU figures are its own process time, but even those move by a fifth between runs on these
# shared cores (cache and scheduling), so it alternates too, and the median is by its headline figure.
REPEATS = {"stack": 5, "vs_mlx": 5, "relay": 3}
MEDIAN_BY = {"stack": lambda r: r["end_to_end_vs_engine"],
             "vs_mlx": lambda r: r["ours"]["streaming"]["tok_s"] / r["mlx_lm_server"]["streaming"]["tok_s"],
             "relay": lambda r: (r.get("relay_batched") or r["relay_single"])["cpu_us_per_token"]}


def base_tree(rev: str) -> Path:
    tree = Path(tempfile.mkdtemp(prefix="bench-base-"))
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    for part in HARNESS:
        source, target = ROOT / part, tree / part
        if source.is_dir():
            shutil.copytree(source, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns("results"))
        else:
            shutil.copy2(source, target)
    return tree


def run(tree: Path, args: list[str]) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run([sys.executable, *args], cwd=tree, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(args)} in {tree} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def arguments(part: str, is_base: bool) -> list[str]:
    args = list(PARTS[part])
    if part == "relay" and is_base:
        args += ["--frames", "single", "--no-bare"]  # the bare relay is this tree's, with this tree's hot decoder
    return args


def median_run(part: str, runs: list[dict]) -> dict:
    if len(runs) == 1:
        return runs[0]
    return sorted(runs, key=MEDIAN_BY[part])[len(runs) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", required=True, help="the commit whose code is 'before'")
    parser.add_argument("--parts", nargs="+", choices=list(PARTS), default=list(PARTS))
    parser.add_argument("--note", default="", help="stored with the results, e.g. that the machine was shared")
    parser.add_argument("--repeats", type=int, help="runs a side for every part given (default: REPEATS, else 1)")
    args = parser.parse_args()
    saved = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True).stdout.strip()
    base = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", args.base], check=True,
                          capture_output=True, text=True).stdout.strip()
    tree = base_tree(args.base)
    try:
        for part in args.parts:
            print(f"running {part} (base {base}, then this tree) ...", flush=True)
            started = time.time()
            befores, afters = [], []
            for _ in range(args.repeats or REPEATS.get(part, 1)):
                befores.append(run(tree, arguments(part, True)))
                afters.append(run(ROOT, arguments(part, False)))
            saved[part] = {"before": median_run(part, befores), "after": median_run(part, afters),
                           "before_runs": befores, "after_runs": afters, "base": base, "head": head, "note": args.note,
                           "command": f"python scripts/bench_before_after.py --base {base} --parts {part}",
                           "measured_at": round(started), "seconds": round(time.time() - started, 1)}
            RESULTS.write_text(json.dumps(saved, indent=1) + "\n")
    finally:
        shutil.rmtree(tree, ignore_errors=True)
    print(f"wrote {RESULTS.relative_to(ROOT)}; render with: python scripts/bench.py --report-only")


if __name__ == "__main__":
    main()
