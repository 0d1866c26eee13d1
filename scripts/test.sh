#!/usr/bin/env bash
# Set up, then run the whole test suite (real mlx-lm on tiny generated models; about six minutes on a 2-core CPU).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/python -m pytest -q "$@"
