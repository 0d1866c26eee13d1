"""The soak's books: consumer accounts made for it, and what the ledger charged against what clients were shown.

    keys = make_accounts(db_path, config)          # [(account, key)]: funded, small, and credit-line accounts
    books = check_books(db_path, outcomes, prices)  # after the ledger is flushed

The check matches the ledger's usage entries to the responses by request id:
  shown       responses that showed usage: each must be charged exactly that usage (no mismatch)
  unshown     charged requests whose client saw no usage (a stream that broke, or a client that gave up
              mid-stream: the coordinator charges what it delivered); counted, not hidden
  unknown     charges for a request no client has an id for (must be none)
so `ledger_usage_micros == shown_usage_micros + unshown_micros` whenever the books are right, and is
exactly `shown_usage_micros` when every charged stream ended normally.

Public names: make_accounts, check_books, account_floors.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from pathlib import Path

from agent.coordinator.billing.keys import create_key
from agent.coordinator.billing.ledger import credit_account
from agent.coordinator.billing.pricing import PriceTable
from agent.coordinator.billing.store import list_accounts, set_credit_limit
from agent.testing.soak.config import SoakConfig
from agent.testing.soak.consumers import Outcome

MICROS_PER_DOLLAR = 1_000_000


def make_accounts(db_path: str | Path, config: SoakConfig) -> list[tuple[str, str]]:
    keys = []
    for i in range(config.num_funded_accounts):
        keys.append(_account(db_path, f"funded-{i}", config.funded_dollars * MICROS_PER_DOLLAR))
    for i in range(config.num_small_accounts):
        keys.append(_account(db_path, f"small-{i}", config.small_balance_micros))
    for i in range(config.num_credit_accounts):
        keys.append(_account(db_path, f"credit-{i}", config.small_balance_micros))
        set_credit_limit(db_path, f"credit-{i}", config.credit_limit_micros)
    return keys


def _account(db_path: str | Path, account: str, micros: int) -> tuple[str, str]:
    key = create_key(db_path, account, name="soak").key
    credit_account(db_path, account, micros, note="soak funding")
    return account, key


def _usage_rows(db_path: str | Path) -> list[tuple[str, str, int, int, int, str]]:
    conn = sqlite3.connect(db_path)
    try:
        return conn.execute("SELECT request_id, account_id, -amount_micros, COALESCE(prompt_tokens, 0),"
                            " COALESCE(completion_tokens, 0), COALESCE(model, '') FROM ledger"
                            " WHERE kind = 'usage'").fetchall()
    finally:
        conn.close()


def check_books(db_path: str | Path, outcomes: Iterable[Outcome], prices: PriceTable) -> dict:
    by_id = {o.request_id: o for o in outcomes if o.request_id}
    rows = _usage_rows(db_path)
    shown = {rid: o for rid, o in by_id.items() if o.usage}
    charged_models = {row[0]: row[5] for row in rows}
    shown_micros = sum(prices.cost_micros(charged_models.get(rid, ""), o.usage["prompt_tokens"],
                                          o.usage["completion_tokens"]) for rid, o in shown.items())
    mismatched, unshown, unknown = [], [], []
    for request_id, _, micros, prompt, completion, _ in rows:
        outcome = by_id.get(request_id)
        if outcome is None:
            unknown.append(request_id)
        elif outcome.usage is None:
            unshown.append((request_id, micros, outcome.cause))
        elif (outcome.usage["prompt_tokens"], outcome.usage["completion_tokens"]) != (prompt, completion):
            mismatched.append({"request_id": request_id, "shown": outcome.usage,
                               "charged": {"prompt_tokens": prompt, "completion_tokens": completion}})
    not_charged = [rid for rid in shown if rid not in charged_models]
    ledger_micros = sum(row[2] for row in rows)
    unshown_micros = sum(m for _, m, _ in unshown)
    return {"ledger_usage_micros": ledger_micros, "shown_usage_micros": shown_micros,
            "num_charges": len(rows), "num_shown": len(shown), "num_mismatched": len(mismatched),
            "mismatched_sample": mismatched[:5], "num_unknown_charges": len(unknown),
            "num_shown_not_charged": len(not_charged),
            "num_unshown_charges": len(unshown), "unshown_micros": unshown_micros,
            "unshown_causes": sorted({cause for _, _, cause in unshown}),
            "is_balanced": ledger_micros == shown_micros + unshown_micros and not mismatched and not unknown
            and not not_charged,
            "is_exact": ledger_micros == shown_micros and not mismatched and not unknown and not not_charged}


def account_floors(db_path: str | Path) -> dict[str, dict[str, int]]:
    """Each soak account's balance (the ledger's sum) and credit limit, and how far above its floor it ended."""
    conn = sqlite3.connect(db_path)
    try:
        balances = dict(conn.execute("SELECT account_id, SUM(amount_micros) FROM ledger GROUP BY account_id"))
    finally:
        conn.close()
    return {a.id: {"balance_micros": balances.get(a.id, 0), "credit_limit_micros": a.credit_limit_micros,
                   "headroom_micros": balances.get(a.id, 0) + a.credit_limit_micros}
            for a in list_accounts(db_path)}
