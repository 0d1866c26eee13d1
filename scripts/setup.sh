#!/usr/bin/env bash
# Creates .venv (Python >= 3.11) and installs the project with its test extra. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
MLX_VLM_VERSION=0.7.10  # tests/test_tiny_vision.py runs mlx-vlm's own loader on the tiny model at this version

pip_install() {
  # Silent on success (pip and setuptools warnings are noise to a newcomer); everything on failure.
  local out
  if ! out=$(.venv/bin/python -m pip install --quiet --disable-pip-version-check "$@" 2>&1); then
    printf '%s\n' "$out" >&2
    echo "setup: pip install $* failed" >&2
    exit 1
  fi
}

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
# A stamp of what was installed (the dependency spec and the interpreter): when it matches, nothing is
# fetched, so a complete .venv re-runs the demo and the tests offline.
STAMP=.venv/.darkbloom-setup
digest() { if command -v sha256sum >/dev/null; then sha256sum; else shasum -a 256; fi; }
want="$( (cat pyproject.toml "$0"; .venv/bin/python --version) | digest | cut -d' ' -f1)"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && .venv/bin/python -c "import agent, pytest" 2>/dev/null; then
  exit 0
fi
echo "setup: installing darkbloom-agent and its dependencies (mlx[cpu] on Linux, mlx on macOS)"
pip_install --upgrade pip
pip_install -e ".[test,bench]"
# gemma-4 vision: mlx-vlm without its own requirements (see pyproject.toml); its gemma4 path needs only mlx,
# numpy, transformers, Pillow and requests, which the line above installed.
pip_install --no-deps "mlx-vlm==$MLX_VLM_VERSION"
echo "$want" > "$STAMP"
