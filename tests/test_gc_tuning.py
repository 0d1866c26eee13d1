"""The collector's tuning for `serve`'s process (http/gc_tuning.py), in a child process: it is process-wide."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

CHILD = """
import gc, json, sys
from agent.coordinator.http.gc_tuning import tune_gc
from agent.coordinator.settings import CoordinatorSettings
before = gc.get_threshold()
tune_gc(CoordinatorSettings(gc_young_threshold=int(sys.argv[1])))
print(json.dumps({"before": before, "after": gc.get_threshold(), "frozen": gc.get_freeze_count()}))
"""


def tuned(young: int) -> dict:
    done = subprocess.run([sys.executable, "-c", CHILD, str(young)], capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def test_serve_freezes_the_startup_heap_and_collects_the_young_generation_less_often():
    facts = tuned(20_000)
    assert facts["after"] == [20_000, 50, 100] and facts["before"] != facts["after"]
    assert facts["frozen"] > 10_000  # modules, pydantic's schemas, the settings: never walked again


@pytest.mark.parametrize("young", [0, -1])
def test_a_threshold_of_zero_or_less_leaves_pythons_collector_as_it_was(young):
    facts = tuned(young)
    assert facts["after"] == facts["before"] and facts["frozen"] == 0
