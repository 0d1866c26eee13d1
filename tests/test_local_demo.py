"""scripts/local_demo.py's last line: a graceful SIGTERM stop reads as a clean stop, a real failure as its code."""

from __future__ import annotations

import importlib.util
import signal
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "local_demo.py"


def load_demo():
    spec = importlib.util.spec_from_file_location("local_demo", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_sigterm_stop_reads_as_clean_and_a_failure_shows_its_exit_code():
    demo = load_demo()
    assert demo._ended(0) == demo._ended(-signal.SIGTERM) == "stopped cleanly"
    assert demo._ended(1) == "exit 1" and demo._ended(-9) == "exit -9"
