"""The soak of issue 11, bounded: the real coordinator with honest and hostile providers under concurrent
consumers (agent/testing/soak), run once for the module, scaled so it takes ~15 s.

Every provider connects with its own identity. A client waits at most 90 s (simulated): longer than a
sinkhole's first-token deadline (first_token_base_s, 30 s) plus the retry on an honest agent, so a request
a sinkhole took is served late rather than lost; the served latency shows what that costs.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from agent.testing.soak.config import SoakConfig
from agent.testing.soak.report import render_markdown
from agent.testing.soak.run import run_soak

ROOT = Path(__file__).resolve().parent.parent
SMALL_BALANCE_MICROS = 60  # a few requests' worth: these accounts run dry during the run
CONFIG = SoakConfig(num_consumers=16, warmup_seconds=30, seconds=40, time_scale=0.1, max_wait_s=90,
                    small_balance_micros=SMALL_BALANCE_MICROS, flood_links=2, max_flood_frames_per_s=300)
MAX_PROBE_MS = 2_000  # on a shared 2-core test machine; PERFORMANCE-grade figures come from scripts/soak.py
MAX_RSS_GROWTH_BYTES = 150 * 2**20


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return asyncio.run(run_soak(CONFIG, tmp_path_factory.mktemp("soak")))


def test_every_charge_in_the_ledger_is_the_usage_its_client_was_shown(report):
    books = report["books"]
    assert books["num_charges"] > 0
    assert books["num_mismatched"] == 0, books["mismatched_sample"]
    assert books["num_unknown_charges"] == 0
    assert books["num_shown_not_charged"] == 0
    assert books["ledger_usage_micros"] == books["shown_usage_micros"] + books["unshown_micros"]
    assert report["num_unwritten_charges"] == 0


def test_no_account_ends_below_its_credit_limit(report):
    assert report["accounts_below_limit"] == []
    small = [a for name, a in report["accounts"].items() if name.startswith(("small-", "credit-"))]
    assert small and all(a["balance_micros"] < SMALL_BALANCE_MICROS for a in small)  # they were charged


def test_honest_agents_serve_and_nothing_is_left_held(report):
    assert report["first_placed"].get("honest-or-none", 0) > 0
    assert report["num_served"] > 0
    assert report["num_holds_left"] == 0


def test_the_coordinator_answers_health_and_metrics_fast_during_the_flood(report):
    for name in ("health", "metrics"):
        probe = report["probe"][name]
        assert probe["num"] > 10 and probe["num_failed"] == 0
        assert probe["max_ms"] < MAX_PROBE_MS, probe


def test_memory_stays_bounded_through_the_soak(report):
    rss = report["rss"]
    assert rss["max_bytes"] - rss["start_bytes"] < MAX_RSS_GROWTH_BYTES, rss


def test_the_flood_is_counted_as_bad_frames_and_never_served(report):
    flooder = report["cast"]["flooders"]["flooder-0"]
    assert flooder["num_frames_sent"] > 100 and flooder["num_registers_sent"] > 0
    assert sum(report["bad_frames"].values()) > 100
    assert not any(name.startswith("flooder") for name in report["first_placed"])


def test_requests_are_sent_in_the_window_after_the_warm_up(report):
    # A client stuck on a sinkhole gives up within max_wait_s, shorter than the window: it sends again.
    assert report["after_warmup"]["num_sent"] >= CONFIG.num_consumers


def test_no_request_is_lost_to_a_hostile_provider_after_the_warm_up(report):
    after = report["after_warmup"]
    assert after["num_lost_to_hostile"] == 0, after


def test_the_soak_figures_in_security_md_are_the_saved_results():
    saved = json.loads((ROOT / "scripts" / "results" / "soak.json").read_text())
    text = (ROOT / "SECURITY.md").read_text()
    block = text.split("<!-- soak:begin (rendered by scripts/soak.py) -->\n", 1)[1].split("\n<!-- soak:end -->")[0]
    assert block == render_markdown(saved, saved["command"])
