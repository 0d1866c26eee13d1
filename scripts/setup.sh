#!/usr/bin/env bash
# Creates .venv (Python >= 3.11) and installs the project with its test extra. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"

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
want="$( (cat pyproject.toml; .venv/bin/python --version) | digest | cut -d' ' -f1)"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && .venv/bin/python -c "import agent, pytest" 2>/dev/null; then
  exit 0
fi
echo "setup: installing darkbloom-agent and its dependencies (mlx[cpu] on Linux, mlx on macOS)"
pip_install --upgrade pip
pip_install -e ".[test,bench]"
# gemma-4 vision: mlx-vlm without its own requirements (pyproject.toml's [tool.darkbloom.no-deps] pins it); its
# gemma4 path needs only mlx, numpy, transformers, Pillow and requests, which the line above installed.
for pinned in $(.venv/bin/python -c 'import tomllib; t = tomllib.load(open("pyproject.toml", "rb"))
print(" ".join(f"{k}=={v}" for k, v in t["tool"]["darkbloom"]["no-deps"].items()))'); do
  pip_install --no-deps "$pinned"
done
echo "$want" > "$STAMP"
