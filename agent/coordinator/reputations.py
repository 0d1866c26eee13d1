"""Identities' reputations outside the router: restored at start, saved while running, shown to operators.

    restore(router, identities)      each identity's persisted ReputationView back into the router's book,
                                     so a coordinator restart neither forgives a quarantine nor forgets proof
    keep_saving(router, db_path)     every `reputation_save_interval_s`, the live identities' views are written
                                     to the providers table (off the event loop); `providers list` reads them
    operator_gauges(router)          per-provider trust, quarantine and outcome counts for /metrics (operator)

Public names: restore, keep_saving, save_final_reputations, save_rows, rows_to_save, operator_gauges.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from pathlib import Path

import structlog
from pydantic import ValidationError

from agent.coordinator.billing.identities import IdentityStore, provider_id_for, save_reputations
from agent.coordinator.billing.store import connect
from agent.coordinator.routing.reputation import ReputationView
from agent.coordinator.routing.router import Router

log = structlog.get_logger("agent.coordinator.reputations")


def restore(router: Router, identities: IdentityStore) -> int:
    num_restored = 0
    for identity in identities.identities():
        if identity.reputation is None or identity.is_revoked:
            continue
        try:
            view = ReputationView.model_validate_json(identity.reputation)
        except ValidationError as exc:
            log.warning("reputation.unreadable", provider_id=identity.provider_id, error=str(exc)[:200])
            continue
        router.reputation.restore(provider_id_for(identity.name), view)
        num_restored += 1
    return num_restored


def rows_to_save(router: Router) -> list[tuple[str, str]]:
    rows = []
    for reputation in router.reputation:
        view = router.reputation.view(reputation.provider_id)
        if reputation.is_identity and view is not None:
            rows.append((reputation.provider_id.removeprefix("prov-"), view.model_dump_json()))
    return rows


async def keep_saving(router: Router, db_path: str | Path) -> None:
    """Until cancelled. A failed write is logged and tried again next interval: reputation is not money."""
    while True:
        await asyncio.sleep(router.settings.reputation_save_interval_s)
        rows = rows_to_save(router)
        if not rows:
            continue
        try:
            await asyncio.to_thread(save_rows, db_path, rows)
        except Exception as exc:  # a locked or full disk must not stop routing
            log.warning("reputation.save_failed", error=str(exc)[:200])


def save_final_reputations(router: Router, db_path: str | Path) -> None:
    """At shutdown: what the identities showed since the last save is not lost with the process."""
    try:
        save_rows(db_path, rows_to_save(router))
    except Exception as exc:
        log.warning("reputation.save_failed", error=str(exc)[:200])


def save_rows(db_path: str | Path, rows: list[tuple[str, str]]) -> None:
    conn = connect(db_path)
    try:
        save_reputations(conn, rows)
    finally:
        conn.close()


def operator_gauges(router: Router) -> Iterable[tuple[str, str, list[str], list[tuple[list[str], float]]]]:
    book = router.reputation
    views = [(reputation.provider_id, book.view(reputation.provider_id)) for reputation in book]
    yield ("darkbloom_provider_trust", "Trust in [0, 1] from what the provider has shown", ["provider_id"],
           [([pid], view.trust) for pid, view in views])
    yield ("darkbloom_provider_quarantined", "1 while the provider is quarantined", ["provider_id"],
           [([pid], float(view.quarantine_left_s > 0)) for pid, view in views])
    yield ("darkbloom_provider_outcomes", "Attempt outcomes per provider (while its reputation is kept)",
           ["provider_id", "outcome"],
           [([pid, outcome], n) for pid, view in views for outcome, n in view.outcomes.items()])
