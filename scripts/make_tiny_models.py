"""Write the tiny random-weight test models (see agent/testing/tiny_models.py).

    python scripts/make_tiny_models.py --out tiny-models [--only gpt-oss-tiny gemma-4-tiny ...]

Point DARKBLOOM_TINY_MODELS at the output directory to let test sessions reuse it.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

# Runnable from a checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.testing.tiny_models import VARIANTS, write_tiny_model  # noqa: E402


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="directory to write one subdirectory per model in")
    parser.add_argument(
        "--only", action="extend", nargs="+", choices=sorted(VARIANTS), metavar="NAME",
        help=f"write only these models (repeatable); from: {', '.join(VARIANTS)}",
    )
    return parser.parse_args(argv)


def _weights_bytes(model_dir: Path) -> int:
    return sum(path.stat().st_size for path in model_dir.glob("*.safetensors"))


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    names = list(dict.fromkeys(args.only or VARIANTS))  # in order, each once
    started = time.perf_counter()
    for index, name in enumerate(names, start=1):
        print(f"[{index}/{len(names)}] {name}: building ...", flush=True)
        model_started = time.perf_counter()
        model_dir = write_tiny_model(name, args.out)
        elapsed = time.perf_counter() - model_started
        weights = f"{_weights_bytes(model_dir):,} B of weights"
        print(f"[{index}/{len(names)}] {name}: wrote {model_dir} ({weights}, {elapsed:.2f} s)")
    print(f"wrote {len(names)} model(s) to {args.out} in {time.perf_counter() - started:.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
