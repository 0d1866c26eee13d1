"""The soak test of issue 11: the real coordinator (keys, billing, rate limits) on loopback with 4 honest
simulated Macs, 2 sinkholes, 1 usage inflater and 1 flooder, and 64 streaming consumers on funded, nearly
empty and credit-line accounts, for a warm-up minute and then 60 s.

    python scripts/soak.py [--consumers 64] [--seconds 60] [--warmup-seconds 60] [--time-scale 1.0]
                           [--max-wait-s 60] [--out scripts/results/soak.json] [--render SECURITY.md]

Prints a table (agent/testing/soak/report.py says what each row means), writes the JSON to --out, and,
with --render, rewrites the block between the soak markers in that file from the JSON just written.
Times are simulated seconds; the run takes (warm-up + seconds + max wait) × time scale real seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shlex
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.logs import configure_logging  # noqa: E402
from agent.testing.soak.config import SoakConfig  # noqa: E402
from agent.testing.soak.report import render_markdown, render_table  # noqa: E402
from agent.testing.soak.run import run_soak  # noqa: E402

BEGIN, END = "<!-- soak:begin (rendered by scripts/soak.py) -->", "<!-- soak:end -->"


def render_into(path: Path, report: dict, command: str) -> None:
    text = path.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{path} has no soak markers ({BEGIN} ... {END})")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    path.write_text(f"{head}{BEGIN}\n{render_markdown(report, command)}\n{END}{tail}")


def main() -> None:
    parser = argparse.ArgumentParser(description="soak: honest and hostile providers under concurrent consumers")
    parser.add_argument("--consumers", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=60.0, help="the measured window after the warm-up")
    parser.add_argument("--warmup-seconds", type=float, default=60.0)
    parser.add_argument("--time-scale", type=float, default=1.0, help="real seconds per simulated second")
    parser.add_argument("--max-wait-s", type=float, default=60.0, help="a client gives up after this")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--sinkholes", default="silent,trickle", help="modes: silent, empty_then_silent, trickle")
    parser.add_argument("--shared-token", action="store_true",
                        help="every provider presents one shared token instead of its own identity")
    parser.add_argument("--out", default="scripts/results/soak.json")
    parser.add_argument("--render", help="a markdown file with the soak markers to rewrite (e.g. SECURITY.md)")
    parser.add_argument("--log-level", default="error")
    args = parser.parse_args()
    configure_logging("auto", args.log_level, stream=sys.stderr)
    config = SoakConfig(num_consumers=args.consumers, seconds=args.seconds, warmup_seconds=args.warmup_seconds,
                        time_scale=args.time_scale, max_wait_s=args.max_wait_s, max_tokens=args.max_tokens,
                        sinkhole_modes=tuple(args.sinkholes.split(",")),
                        uses_identities=not args.shared_token)
    with tempfile.TemporaryDirectory(prefix="soak-") as workdir:
        report = asyncio.run(run_soak(config, workdir))
    command = "python scripts/soak.py " + shlex.join(sys.argv[1:])
    report["command"] = command.strip()
    print(render_table(report))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1, default=str))
    print(f"wrote {out}")
    if args.render:
        render_into(Path(args.render), report, report["command"])
        print(f"rendered into {args.render}")


if __name__ == "__main__":
    main()
