"""A ledger that never loses a charge: a full disk (SQLite's own page limit, deterministic) keeps every
entry, pauses billed work with a 503 and an unhealthy /health, and writes everything once space returns."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import httpx
import openai
import pytest
import structlog.testing

from agent.coordinator.billing.accounts import Accounts, LedgerUnavailable
from agent.coordinator.billing.keys import create_key
from agent.coordinator.billing.ledger import EntryKind, LedgerEntry, SqliteLedger, credit_account, ledger_sum
from agent.coordinator.billing.pricing import DEFAULT_PRICES
from agent.coordinator.billing.store import Account, connect
from tests.provider_support import GPT, Reply, coordinator, eventually, provider

MODEL = "gemma-4-26b"
ALICE = Account("alice")
MAX_REQUESTS_TO_FILL = 400  # the ledger's last free page holds a few dozen rows


class Recorder:
    def on_refused(self, entry: LedgerEntry) -> None: ...
    def on_external(self, account_id: str, amount_micros: int) -> None: ...
    def on_changed(self, conn: sqlite3.Connection) -> None: ...


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "ledger.sqlite"
    create_key(path, "alice")
    credit_account(path, "alice", 50_000_000, note="top-up")
    return path


def fill_disk(ledger: SqliteLedger) -> None:
    """The database may not grow by one page: SQLite answers SQLITE_FULL, as on a full disk."""
    pages = ledger.conn.execute("PRAGMA page_count").fetchone()[0]
    assert ledger.conn.execute(f"PRAGMA max_page_count = {pages}").fetchone()[0] == pages


def free_disk(ledger: SqliteLedger) -> None:
    ledger.conn.execute("PRAGMA max_page_count = 1073741823")


def usage(request_id: str, note_bytes: int = 5000) -> LedgerEntry:
    # A note longer than a page: each entry needs a new page, so the first write past the limit fails.
    return LedgerEntry(account_id="alice", kind=EntryKind.USAGE, amount_micros=-7, request_id=request_id,
                       note="n" * note_bytes)


def count_rows(db: Path) -> int:
    conn = connect(db)
    try:
        return conn.execute("SELECT COUNT(*) FROM ledger WHERE kind = 'usage'").fetchone()[0]
    finally:
        conn.close()


def test_a_full_disk_keeps_every_entry_reports_the_real_sqlite_error_and_writes_them_when_space_returns(db):
    ledger = SqliteLedger(db, poll_interval_s=0.02, retry_min_s=0.01, retry_max_s=0.05)
    ledger.start(Recorder())
    fill_disk(ledger)
    for i in range(5):
        ledger.append(usage(f"r{i}"))
    assert not ledger.flush()  # answered at the failed write, not at a timeout
    assert ledger.error is not None and "full" in ledger.error and "rollback" not in ledger.error.lower()
    assert not ledger.is_available and "cannot be written" in ledger.refusal()
    ledger.append(usage("r5"))  # appended while unavailable: kept too
    assert ledger.num_backlog == 6 and count_rows(db) == 0
    free_disk(ledger)
    assert ledger.flush()
    assert ledger.is_available and ledger.error is None and ledger.num_backlog == 0
    assert count_rows(db) == 6 and ledger.num_write_failures >= 1
    assert ledger.close() == []


def test_a_shutdown_with_the_disk_still_full_returns_what_it_could_not_write(db):
    ledger = SqliteLedger(db, poll_interval_s=0.02, retry_min_s=0.01, retry_max_s=0.05)
    ledger.start(Recorder())
    fill_disk(ledger)
    ledger.append(usage("a"))
    ledger.append(usage("b"))
    assert not ledger.flush()
    unwritten = ledger.close(timeout_s=0.2)
    assert [entry.request_id for entry in unwritten] == ["a", "b"] and count_rows(db) == 0


def test_the_log_names_the_sqlite_error_once_and_every_entry_a_shutdown_could_not_write(db):
    with structlog.testing.capture_logs() as logs:
        ledger = SqliteLedger(db, poll_interval_s=0.02, retry_min_s=0.01, retry_max_s=0.02)
        ledger.start(Recorder())
        fill_disk(ledger)
        ledger.append(usage("a"))
        assert not ledger.flush()
        ledger.append(usage("b"))
        assert not ledger.flush()  # a second failure with the same error: not logged again
        ledger.close(timeout_s=0.1)
    states = [e for e in logs if e["event"] == "ledger.state"]
    assert [(e["state"], e["error"]) for e in states] == [("unavailable", "OperationalError: database or disk is full")]
    assert not [e for e in logs if "rollback" in str(e).lower()]
    assert [e["request_id"] for e in logs if e["event"] == "ledger.unwritten_entry"] == ["a", "b"]
    assert [e["num_entries"] for e in logs if e["event"] == "ledger.unwritten"] == [2]


def test_a_backlog_past_its_limit_refuses_billed_work_until_the_writer_catches_up(db):
    ledger = SqliteLedger(db, max_backlog_entries=2)  # not started yet: the writer is "behind"
    ledger.append(usage("a", note_bytes=0))
    assert ledger.is_available
    ledger.append(usage("b", note_bytes=0))
    assert "2 entries behind (limit 2)" in ledger.refusal()
    ledger.start(Recorder())
    assert ledger.flush() and ledger.is_available and count_rows(db) == 2
    ledger.close()


def test_accounts_refuse_billed_admissions_while_the_ledger_cannot_be_written_but_not_unbilled_ones(db):
    accounts = Accounts.from_db(db, poll_interval_s=0.02)
    fill_disk(accounts.ledger)
    accounts.admit(ALICE, "r1", model=MODEL, prompt_tokens=50, max_tokens=64)
    cost = accounts.settle("r1", prompt_tokens=50, completion_tokens=1000).cost_micros
    accounts.ledger.append(usage("filler"))  # a page-sized entry: the write must fail
    assert not accounts.flush()
    with pytest.raises(LedgerUnavailable, match="cannot be written"):
        accounts.admit(ALICE, "r2", model=MODEL, prompt_tokens=50, max_tokens=64)
    accounts.admit(Account("free", is_billed=False), "r3", model=MODEL, prompt_tokens=50, max_tokens=64)
    assert accounts.num_holds == 1  # r2 took nothing
    free_disk(accounts.ledger)
    assert accounts.flush()
    accounts.admit(ALICE, "r4", model=MODEL, prompt_tokens=50, max_tokens=64)
    assert accounts.close() == []
    assert ledger_sum(db, "alice", EntryKind.USAGE) == -cost - 7


async def test_a_full_disk_pauses_billed_requests_with_a_503_and_loses_no_charge_across_a_restart(db):
    key = create_key(db, "bob").key
    credit_account(db, "bob", 50_000_000)
    accounts = Accounts.from_db(db, poll_interval_s=0.02)
    charged = 0

    async def chat(client: openai.AsyncOpenAI) -> int:
        done = await client.chat.completions.create(model=GPT.id, max_tokens=64, messages=[
            {"role": "user", "content": "Say hello."}])
        return DEFAULT_PRICES.cost_micros(GPT.id, done.usage.prompt_tokens, done.usage.completion_tokens)

    async with coordinator(accounts=accounts) as server:
        agent = await provider(server, GPT, reply=lambda request: Reply(chunks=["x"] * 8, prompt_tokens=40))
        client = openai.AsyncOpenAI(base_url=server.base_url + "/v1", api_key=key, max_retries=0)
        async with httpx.AsyncClient(base_url=server.base_url) as http:
            for _ in range(3):  # charges before the disk fills
                charged += await chat(client)
            assert accounts.flush()
            fill_disk(accounts.ledger)
            for _ in range(MAX_REQUESTS_TO_FILL):  # served and charged until a write fails
                charged += await chat(client)
                if not accounts.flush():
                    break
            assert not accounts.ledger.is_available

            with pytest.raises(openai.APIStatusError) as refused:
                await chat(client)
            assert refused.value.status_code == 503
            assert refused.value.body["code"] == "ledger_unavailable"
            assert "billing is paused" in refused.value.body["message"]
            health = await http.get("/health")
            assert health.status_code == 503 and health.json()["status"] == "ledger_unavailable"
            assert health.json()["ledger"]["num_backlog"] >= 1
            assert "darkbloom_ledger_available 0.0" in (await http.get("/metrics")).text

            free_disk(accounts.ledger)
            await eventually(lambda: accounts.ledger.is_available, what="the backlog written")
            charged += await chat(client)  # billing resumes
            assert (await http.get("/health")).json()["status"] == "ok"
        await agent.stop()
    assert accounts.flush()
    balance = accounts.balance_micros("bob")
    assert accounts.close() == []
    assert ledger_sum(db, "bob", EntryKind.USAGE) == -charged
    with Accounts.from_db(db) as reopened:
        assert reopened.balance_micros("bob") == balance == 50_000_000 - charged


async def test_a_stream_that_ends_while_the_disk_is_full_is_charged_once_space_returns(db):
    key = create_key(db, "bob").key
    credit_account(db, "bob", 50_000_000)
    accounts = Accounts.from_db(db, poll_interval_s=0.02)
    async with coordinator(accounts=accounts) as server:
        agent = await provider(server, GPT, reply=lambda request: Reply(chunks=["x"] * 6, prompt_tokens=40))
        client = openai.AsyncOpenAI(base_url=server.base_url + "/v1", api_key=key, max_retries=0)
        stream = await client.chat.completions.create(model=GPT.id, max_tokens=64, stream=True,
                                                      stream_options={"include_usage": True},
                                                      messages=[{"role": "user", "content": "Say hello."}])
        chunks = [await anext(stream)]  # admitted and streaming: then the disk fills
        fill_disk(accounts.ledger)
        accounts.ledger.append(usage("filler"))  # alice's page-sized entry: the next write fails
        assert not accounts.flush()
        chunks += [chunk async for chunk in stream]
        assert not accounts.flush() and not accounts.ledger.is_available
        assert accounts.ledger.num_backlog == 2  # the filler and the stream's charge, kept
        await agent.stop()
    done = chunks[-1].usage
    cost = DEFAULT_PRICES.cost_micros(GPT.id, done.prompt_tokens, done.completion_tokens)
    free_disk(accounts.ledger)
    assert accounts.flush()
    assert accounts.close() == []
    assert ledger_sum(db, "bob", EntryKind.USAGE) == -cost and cost > 0
