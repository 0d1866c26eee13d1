#!/usr/bin/env bash
# The main job on the embedded default: set up, then show the memory gate and exact KV cost of the
# catalog models. No network (beyond the package index for the first setup), no Mac needed.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
echo
echo "== darkbloom-agent doctor (this machine) =="
.venv/bin/darkbloom-agent doctor
for gb in 24 64; do
  echo
  echo "== darkbloom-agent doctor --memory-gb $gb =="
  .venv/bin/darkbloom-agent doctor --memory-gb "$gb"
done
for model in gpt-oss-20b gemma-4-26b; do
  echo
  echo "== darkbloom-agent kv $model =="
  .venv/bin/darkbloom-agent kv "$model"
done
echo
echo "== a real local inference: coordinator + agent (tiny models on MLX) + the openai SDK =="
.venv/bin/python scripts/local_demo.py
