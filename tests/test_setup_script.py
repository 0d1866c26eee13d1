"""scripts/setup.sh: a complete .venv whose stamp matches the dependency spec is not reinstalled (offline re-runs)."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _sandbox(tmp_path: Path) -> Path:
    """A copy of setup.sh and pyproject.toml, with a .venv whose python logs each call and runs this one."""
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "setup.sh", tmp_path / "scripts" / "setup.sh")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    python = tmp_path / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(f'#!/bin/sh\necho "$*" >> "{tmp_path}/calls"\nexec "{sys.executable}" "$@"\n')
    python.chmod(python.stat().st_mode | stat.S_IEXEC)
    return tmp_path


def _run(sandbox: Path) -> subprocess.CompletedProcess:
    env = os.environ | {"PYTHONPATH": str(ROOT), "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(sandbox / "none")}
    return subprocess.run(["bash", "scripts/setup.sh"], cwd=sandbox, env=env, capture_output=True, text=True,
                          timeout=120)


def test_setup_with_a_matching_stamp_installs_nothing_and_needs_no_network(tmp_path):
    sandbox = _sandbox(tmp_path)
    first = _run(sandbox)  # no stamp yet: it tries to install, and offline that fails loudly
    assert first.returncode != 0 and "pip install" in first.stderr
    digest = subprocess.run("(cat pyproject.toml; .venv/bin/python --version) | sha256sum | cut -d' ' -f1",
                            shell=True, cwd=sandbox, capture_output=True, text=True).stdout
    (sandbox / ".venv" / ".darkbloom-setup").write_text(digest)
    (sandbox / "calls").unlink()
    again = _run(sandbox)
    assert again.returncode == 0 and again.stdout == "" and again.stderr == ""
    assert "-m pip" not in (sandbox / "calls").read_text()


def test_a_changed_dependency_spec_reinstalls(tmp_path):
    sandbox = _sandbox(tmp_path)
    (sandbox / ".venv" / ".darkbloom-setup").write_text("a stamp of another pyproject.toml\n")
    result = _run(sandbox)
    assert "-m pip install" in (sandbox / "calls").read_text() and result.returncode != 0  # offline: it tried
