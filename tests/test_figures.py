"""The figures the documents quote are the saved measurements, rendered by the one script that writes them.

PERFORMANCE.md and the README's performance blocks must equal what scripts/bench_report.py renders from
scripts/results/, so a number edited by hand, or a result re-run without re-rendering, fails here.
"""

from __future__ import annotations

import copy
import json
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "scripts" / "results"
sys.path.insert(0, str(ROOT / "scripts"))

import bench_report  # noqa: E402

RENDER = "python scripts/bench.py --report-only"


@pytest.fixture(scope="module")
def saved() -> tuple[dict, dict]:
    return json.loads((RESULTS / "bench.json").read_text()), bench_report.load_runs(RESULTS)


def numbers(text: str) -> set[str]:
    return {n.replace(",", "") for n in re.findall(r"\d[\d,]*(?:\.\d+)?", text)}


def test_performance_md_is_exactly_what_the_saved_results_render_to(saved):
    assert (ROOT / "PERFORMANCE.md").read_text() == bench_report.render_performance(*saved), f"run `{RENDER}`"


@pytest.mark.parametrize("block", bench_report.README_BLOCKS)
def test_each_readme_performance_block_is_what_the_saved_results_render_to(saved, block):
    readme = (ROOT / "README.md").read_text()
    written = bench_report.readme_block(readme, block).group(2)
    assert written == bench_report.render_readme(*saved)[block] + "\n", f"run `{RENDER}`"


def test_every_number_the_readme_summary_quotes_appears_in_performance_md(saved):
    summary = bench_report.render_readme(*saved)["summary"]
    missing = numbers(summary) - numbers((ROOT / "PERFORMANCE.md").read_text())
    assert not missing, f"the README quotes figures PERFORMANCE.md does not have: {sorted(missing)}"


def test_the_kv_error_quoted_is_the_measured_one_not_a_constant(saved):
    results, runs = saved
    assert results["kv"]["steps_compared"] > 0 and "models" in results["kv"]
    skewed = copy.deepcopy(results)
    skewed["kv"]["max_error_bytes"] = 4096
    assert "4,096 bytes" in bench_report.render_readme(skewed, runs)["summary"]
    assert "4,096 bytes" in bench_report.render_performance(skewed, runs)


def test_the_widening_target_is_judged_on_the_latest_sustained_run_with_its_time_filled_in(saved):
    results, runs = saved
    report = bench_report.render_performance(results, runs)
    latest = runs["sustained"][-1]
    assert f"judged on the latest run, `{latest.file}`" in report
    assert "t≈–" not in report and "(not run)" not in report


def test_the_documents_never_point_outside_the_repository():
    for doc in ("README.md", "PERFORMANCE.md", "DESIGN.md"):
        text = (ROOT / doc).read_text()
        assert "../" not in text and "shared/" not in text, doc
        assert not re.search(r"(?<![\w.])/(?:work|tmp|home|Users)/", text), doc
    for link in re.findall(r"\]\(([^)#]+)\)", (ROOT / "README.md").read_text()):
        assert link.startswith("http") or (ROOT / link).exists(), link
