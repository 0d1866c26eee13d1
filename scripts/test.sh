#!/usr/bin/env bash
# Set up, then run the whole test suite (real mlx-lm on tiny generated models; about a minute or two here).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/python -m pytest -q "$@"
