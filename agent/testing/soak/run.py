"""One soak run: the real coordinator (keys, billing, rate limits) with honest and hostile providers and M
streaming consumers, for a warm-up and then a measured window; returns everything report.py summarises.

    report = await run_soak(SoakConfig(num_consumers=16, seconds=60, time_scale=0.1), workdir)

Public names: run_soak.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, replace
from pathlib import Path

from agent.coordinator.billing.accounts import Accounts
from agent.coordinator.core import Coordinator
from agent.coordinator.http.app import build_app, running
from agent.testing.fleet.harness import FLEET_LIMITS
from agent.testing.soak.books import account_floors, check_books, make_accounts
from agent.testing.soak.cast import Cast
from agent.testing.soak.config import SoakConfig, soak_settings
from agent.testing.soak.consumers import ConsumerPool
from agent.testing.soak.identities import SHARED_TOKEN, provider_credentials
from agent.testing.soak.probe import Probe, rss_bytes
from agent.testing.soak.report import summarize

READY_TIMEOUT_S = 30.0  # real seconds, beyond the honest agents' simulated load time
SETTLE_TIMEOUT_S = 10.0  # real seconds for the coordinator to close the flows of clients that gave up
SETTLE_POLL_S = 0.02
TEARDOWN_BUDGET_S = 60.0  # real seconds to stop the cast and the coordinator (websocket closes time out at 10 s)


def counter_totals(counter) -> dict[str, float]:
    """A labelled prometheus Counter's totals, keyed by its labels joined with '/'."""
    return {"/".join(sample.labels.values()): sample.value for metric in counter.collect()
            for sample in metric.samples if sample.name.endswith("_total")}


async def run_soak(config: SoakConfig, workdir: str | Path) -> dict:
    """The whole run, within a budget: a soak that hangs fails with the stage it hung in, never blocks."""
    stage = ["starting"]
    budget_s = (READY_TIMEOUT_S + config.real(60 + config.warmup_seconds + config.seconds + config.max_wait_s)
                + SETTLE_TIMEOUT_S + TEARDOWN_BUDGET_S)
    try:
        async with asyncio.timeout(budget_s):
            return await _run(config, workdir, stage)
    except TimeoutError:
        raise RuntimeError(f"the soak overran its {budget_s:.0f} s budget while {stage[0]}") from None


async def _run(config: SoakConfig, workdir: str | Path, stage: list[str]) -> dict:
    db_path = Path(workdir) / "soak.db"
    keys = make_accounts(db_path, config)
    # Before the coordinator opens the database: it admits identities it has loaded.
    credentials = provider_credentials(db_path, Cast.member_names(config), shared=not config.uses_identities)
    accounts = Accounts.from_db(db_path, limits=FLEET_LIMITS)
    settings = soak_settings(config.time_scale)
    if not config.uses_identities:
        settings = replace(settings, provider_token=SHARED_TOKEN)
    try:
        async with running(build_app(accounts, settings)) as server:
            stage[0] = "starting the cast"
            cast = await Cast.start(server, config, credentials)
            try:
                stage[0] = "waiting for the cast to be ready"
                await cast.until_ready(server, config.model, READY_TIMEOUT_S + config.real(60))
                stage[0] = "measuring"
                measured = await _measure(server.base_url, server.coordinator, keys, config)
                measured["first_hostile"] = cast.first_hostile()
                measured["cast"] = _cast_counts(cast)
            finally:
                stage[0] = "stopping the cast"
                await cast.stop()
            stage[0] = "stopping the coordinator"
    finally:
        unwritten = accounts.close()
    books = check_books(db_path, measured["outcomes"], accounts.prices)
    return summarize(config=asdict(config), books=books, floors=account_floors(db_path),
                     num_unwritten_charges=len(unwritten), **measured)


async def _measure(base_url: str, coordinator: Coordinator, keys: list[tuple[str, str]], config: SoakConfig) -> dict:
    rss_start = rss_bytes()
    probe = Probe(base_url, config.probe_interval_s).start()
    pool = ConsumerPool(base_url, keys, config)
    stop, t0 = asyncio.Event(), time.monotonic()
    consumers = asyncio.create_task(pool.run(stop, t0), name="soak-consumers")
    try:
        # The run's length is its definition, not a wait for something to happen.
        await asyncio.wait_for(asyncio.shield(consumers), config.real(config.warmup_seconds + config.seconds))
    except TimeoutError:
        pass
    stop.set()
    outcomes = await consumers  # the requests in flight end within max_wait_s
    wall_s = time.monotonic() - t0
    num_holds_left = await _holds_after_settling(coordinator)
    await probe.stop()
    metrics = coordinator.metrics
    return {"outcomes": outcomes, "wall_s": wall_s, "probe": probe.summary(),
            "rss": {"start_bytes": rss_start, "end_bytes": rss_bytes(), "max_bytes": probe.max_rss_bytes},
            "bad_frames": counter_totals(metrics.bad_frames), "clamped_claims": counter_totals(metrics.clamped),
            "attempts": counter_totals(metrics.attempts), "num_holds_left": num_holds_left}


async def _holds_after_settling(coordinator: Coordinator) -> int:
    """Holds still open once the coordinator has seen the last clients leave (it hears a disconnect a moment
    after the client closes), or after SETTLE_TIMEOUT_S: then what is left is a leak."""
    try:
        async with asyncio.timeout(SETTLE_TIMEOUT_S):
            while coordinator.accounts.num_holds:
                await asyncio.sleep(SETTLE_POLL_S)
    except TimeoutError:
        pass
    return coordinator.accounts.num_holds


def _cast_counts(cast: Cast) -> dict:
    peers = {peer.name: {"num_received": len(peer.received), "num_cancels": len(peer.cancels)} for peer in cast.hostile}
    flooders = {f.name: {"num_frames_sent": f.num_frames_sent, "num_registers_sent": f.num_registers_sent,
                         "num_links_opened": f.num_links_opened, "num_links_refused": f.num_links_refused,
                         "num_links_closed_by_peer": f.num_links_closed_by_peer,
                         "num_error_frames": f.num_error_frames} for f in cast.flooders}
    return {"uses_identities": cast.uses_identities, "num_honest": len(cast.honest), "hostile": peers,
            "flooders": flooders}
