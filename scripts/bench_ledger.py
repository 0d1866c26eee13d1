"""Settlements per second with 64 concurrent requesters from ONE account (DESIGN.md §1, lesson 1).

    python scripts/bench_ledger.py [--requesters 64] [--requests 20000] [--hot-row]

Each requester loops: authenticate → admit (hold on expected cost, rate-limit charge) → yield to the
event loop → settle (ledger entry queued). The clock stops after the final flush, so every
settlement counted is committed to the SQLite file (WAL, synchronous=NORMAL). `--hot-row` also runs
the design this replaces: the same number of threads each doing one `UPDATE balance` + commit per
request on a single account row, and counts the requests that failed on the lock.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.coordinator.billing.accounts import Accounts  # noqa: E402
from agent.coordinator.billing.keys import create_key  # noqa: E402
from agent.coordinator.billing.ledger import EntryKind, credit_account, ledger_sum  # noqa: E402
from agent.coordinator.billing.ratelimit import RateLimits  # noqa: E402


def bench_ledger(db: Path, requesters: int, requests: int) -> tuple[float, int, int]:
    key = create_key(db, "bench").key
    credit_account(db, "bench", 10**15)
    accounts = Accounts.from_db(db, limits=RateLimits(10**9, 10**12))  # limits checked, never hit
    per_requester = requests // requesters
    errors = 0

    async def requester(r: int) -> int:
        nonlocal errors
        spent = 0
        for i in range(per_requester):
            account = accounts.authenticate(key)
            request_id = f"{r}-{i}"
            try:
                accounts.admit(account, request_id, model="gpt-oss-20b", prompt_tokens=200, max_tokens=512)
                await asyncio.sleep(0)  # other requesters run while this one "streams"
                spent += accounts.settle(request_id, prompt_tokens=200, completion_tokens=1 + i % 512).cost_micros
            except Exception:
                errors += 1
        return spent

    async def main() -> list[int]:
        return await asyncio.gather(*(requester(r) for r in range(requesters)))

    start = time.perf_counter()
    spent = sum(asyncio.run(main()))
    accounts.flush()
    elapsed = time.perf_counter() - start
    commits = accounts.ledger.num_commits
    accounts.close()
    assert ledger_sum(db, "bench", EntryKind.USAGE) == -spent, "ledger SUM differs from the costs settled"
    return per_requester * requesters / elapsed, errors, commits


def bench_hot_row(db: Path, requesters: int, requests: int, busy_timeout_s: float) -> tuple[float, int]:
    setup = sqlite3.connect(db)
    setup.execute("PRAGMA journal_mode=WAL")
    setup.execute("CREATE TABLE balances (account TEXT PRIMARY KEY, balance INTEGER NOT NULL)")
    setup.execute("INSERT INTO balances VALUES ('bench', 1000000000000000)")
    setup.commit()
    setup.close()
    per_requester = requests // requesters
    failures = [0] * requesters

    def requester(r: int) -> None:
        conn = sqlite3.connect(db, timeout=busy_timeout_s, isolation_level=None)
        conn.execute("PRAGMA synchronous=NORMAL")
        for i in range(per_requester):
            try:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute("UPDATE balances SET balance = balance - ? WHERE account = 'bench'", (1 + i % 100,))
                conn.execute("COMMIT")
            except sqlite3.OperationalError:
                failures[r] += 1
        conn.close()

    threads = [threading.Thread(target=requester, args=(r,)) for r in range(requesters)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return per_requester * requesters / (time.perf_counter() - start), sum(failures)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requesters", type=int, default=64)
    parser.add_argument("--requests", type=int, default=20_000, help="total settlements")
    parser.add_argument("--hot-row", action="store_true", help="also measure one UPDATEd balance row")
    parser.add_argument("--busy-timeout", type=float, default=0.05, help="hot-row lock wait before failing, s")
    parser.add_argument("--json", action="store_true", help="one JSON object instead of the lines")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        rate, errors, commits = bench_ledger(Path(tmp) / "ledger.sqlite", args.requesters, args.requests)
        if args.json:
            print(json.dumps({"settlements_per_s": round(rate), "requesters": args.requesters, "errors": errors,
                              "commits": commits, "settlements": args.requests // args.requesters * args.requesters}))
            return
        print(f"ledger: {rate:,.0f} settlements/s, {args.requesters} concurrent requesters from one account, "
              f"{errors} errors, {commits} commits for {args.requests // args.requesters * args.requesters} entries")
        if args.hot_row:
            rate, failures = bench_hot_row(Path(tmp) / "hot.sqlite", args.requesters, args.requests, args.busy_timeout)
            print(f"hot row: {rate:,.0f} updates/s, {failures} of {args.requests} requests failed on the lock "
                  f"(busy timeout {args.busy_timeout * 1000:.0f} ms)")


if __name__ == "__main__":
    main()
