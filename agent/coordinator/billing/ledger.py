"""The append-only ledger: one INSERT per settlement or credit, written off the request path.

`append` only puts the entry on a queue. One writer thread owns the SQLite connection and commits
whatever has queued up as one transaction (a group commit: under load a batch holds many entries, so
64 concurrent requests from one account cost a handful of commits, and no request ever waits on a
row lock — the hot balance row that lost 20.9 % of requests, DESIGN.md §1). Balances are SUMs over
the entries, loaded once at startup and kept as running totals in memory by the caller.

UNIQUE (request_id, kind) makes a settlement idempotent across restarts: the writer INSERTs OR
IGNOREs, and tells its listener about an entry it refused so the running total can be put back.
The writer also notices commits by other processes (PRAGMA data_version: a CLI credit or key
revocation) and reports them, so the caller's caches follow without a restart.

Durability: `flush()` waits until everything appended so far is committed; `close()` flushes. A crash
loses at most the entries of the last few milliseconds (WAL, synchronous=NORMAL).

A write that fails (disk full, a lock held too long) keeps its entries and retries them with backoff; none
is ever dropped. While a write is failing, or the backlog passes `max_backlog_entries`, `refusal()` says
why, and the caller stops admitting billed work until the writer catches up (`ledger.state` logs each
change). The real SQLite error is logged, never the ROLLBACK's that may follow it. `close()` returns what
it could not write, so the shutdown reports it.

The entries themselves, and the functions that read or credit the file from outside (the CLI, tests),
are in ledger_entries.py; the ledger without a file in memory_ledger.py. Their names stay importable here.

Public names: LedgerListener, SqliteLedger, MemoryLedger, LedgerUnavailable (and from ledger_entries and
memory_ledger: LedgerEntry, EntryKind, load_balances, credit_account, ledger_sum, MemoryLedger).
"""

from __future__ import annotations

import queue
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import structlog

from agent.coordinator.billing.ledger_entries import (
    INSERT_ENTRY,
    EntryKind,
    LedgerEntry,
    credit_account,
    entry_row,
    ledger_sum,
    load_balances,
)
from agent.coordinator.billing.memory_ledger import MemoryLedger
from agent.coordinator.billing.store import connect
from agent.errors import DarkbloomError

__all__ = ["LedgerListener", "SqliteLedger", "MemoryLedger", "LedgerUnavailable", "LedgerEntry", "EntryKind",
           "load_balances", "credit_account", "ledger_sum", "MAX_BACKLOG_ENTRIES", "POLL_INTERVAL_S", "RETRY_MAX_S"]

log = structlog.get_logger(__name__)
POLL_INTERVAL_S = 0.5  # how often the writer looks for other processes' commits
MAX_BATCH = 4096
MAX_BACKLOG_ENTRIES = 100_000  # unwritten entries kept in memory before billed work is refused (~100 MB worst case)
RETRY_MIN_S = 0.05  # the first retry after a failed write; doubled per failure up to RETRY_MAX_S
RETRY_MAX_S = 5.0


class LedgerUnavailable(DarkbloomError):
    code = "ledger_unavailable"


class LedgerListener(Protocol):
    def on_refused(self, entry: LedgerEntry) -> None: ...  # a duplicate (request_id, kind): not written
    def on_external(self, account_id: str, amount_micros: int) -> None: ...  # another process's entry
    def on_changed(self, conn: sqlite3.Connection) -> None: ...  # another process committed something


class SqliteLedger:
    def __init__(self, db_path: str | Path, *, poll_interval_s: float = POLL_INTERVAL_S,
                 max_backlog_entries: int = MAX_BACKLOG_ENTRIES, retry_min_s: float = RETRY_MIN_S,
                 retry_max_s: float = RETRY_MAX_S) -> None:
        self.db_path = Path(db_path)
        self.max_backlog_entries = max_backlog_entries
        self._retry_min_s, self._retry_max_s = retry_min_s, retry_max_s
        self.source = secrets.token_hex(8)  # tells this process's entries from other writers'
        self._poll_interval_s = poll_interval_s
        self._queue: queue.SimpleQueue[LedgerEntry | threading.Event | None] = queue.SimpleQueue()
        self._listener: LedgerListener | None = None
        self._thread: threading.Thread | None = None
        self._closed = False
        self.conn = connect(self.db_path, check_same_thread=False)  # used by the writer thread only, once started
        self.loaded_balances, self._last_seq = load_balances(self.conn)  # as of startup
        self._data_version = self._read_data_version()
        self.num_written = 0
        self.num_commits = 0
        self.num_write_failures = 0
        self.num_backlog = 0  # appended, not yet committed (queued or pending a retry)
        self.error: str | None = None  # the last write's SQLite error while writes fail; None when they succeed
        self._backlog_lock = threading.Lock()
        self._stop_deadline = 0.0
        self.unwritten: list[LedgerEntry] = []  # what the writer still held when it stopped

    @property
    def is_available(self) -> bool:
        return self.refusal() is None

    def refusal(self) -> str | None:
        """Why billed work should not be admitted now, or None."""
        if self.error is not None:
            return f"the ledger cannot be written ({self.error}); charges are kept in memory and retried"
        if self.num_backlog >= self.max_backlog_entries:
            return f"the ledger is {self.num_backlog} entries behind (limit {self.max_backlog_entries})"
        return None

    def start(self, listener: LedgerListener) -> None:
        self._listener = listener
        self._thread = threading.Thread(target=self._run, name="ledger-writer", daemon=True)
        self._thread.start()

    def append(self, entry: LedgerEntry) -> None:
        if self._closed:
            raise RuntimeError("the ledger is closed")
        self._count(1)
        self._queue.put(entry)

    def flush(self, timeout_s: float | None = 10.0) -> bool:
        """Wait until every entry appended so far is committed and other processes' commits are read;
        False if a write failed first or that did not happen within the timeout (the writer keeps retrying)."""
        waiter = _Flush()
        self._queue.put(waiter)
        return waiter.done.wait(timeout_s) and waiter.is_ok

    def close(self, timeout_s: float = 10.0) -> list[LedgerEntry]:
        """Write what is queued, retrying for up to `timeout_s`; returns the entries that could not be
        written (also logged, one line each, as `ledger.unwritten_entry`)."""
        if self._closed:
            return self.unwritten
        self._closed = True
        if self._thread is not None:
            self._stop_deadline = time.monotonic() + timeout_s
            self._queue.put(None)
            self._thread.join(timeout_s + 1.0)
        self.conn.close()
        return self.unwritten

    def _count(self, delta: int) -> None:
        with self._backlog_lock:
            self.num_backlog += delta

    # -- the writer thread
    def _run(self) -> None:
        next_poll = time.monotonic() + self._poll_interval_s
        next_retry, retry_s = 0.0, self._retry_min_s
        pending: list[LedgerEntry] = []  # entries whose commit failed are retried, never dropped
        waiters: list[_Flush] = []  # flush() callers, answered once what preceded them is committed
        is_stopping = False
        while not (is_stopping and (not pending or time.monotonic() >= self._stop_deadline)):
            now = time.monotonic()
            wait_s = max(0.0, min(next_poll, next_retry) - now) if pending else self._poll_interval_s
            try:
                items = [self._queue.get(timeout=min(wait_s, self._poll_interval_s))]
            except queue.Empty:
                items = []
            while len(items) < MAX_BATCH:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            pending.extend(item for item in items if isinstance(item, LedgerEntry))
            waiters.extend(item for item in items if isinstance(item, _Flush))
            is_stopping = is_stopping or any(item is None for item in items)
            if pending and (time.monotonic() >= next_retry or is_stopping):
                if self._try_write(pending):
                    self._count(-len(pending))
                    pending, retry_s = [], self._retry_min_s
                else:
                    next_retry, retry_s = time.monotonic() + retry_s, min(retry_s * 2, self._retry_max_s)
                    for waiter in waiters:
                        waiter.answer(is_ok=False)
                    waiters = []
            if waiters or is_stopping or time.monotonic() >= next_poll:
                self._guarded(self._poll)
                next_poll = time.monotonic() + self._poll_interval_s
            if not pending:
                for waiter in waiters:
                    waiter.answer(is_ok=True)
                waiters = []
        for waiter in waiters:
            waiter.answer(is_ok=not pending)
        self.unwritten = pending
        if pending:
            log.error("ledger.unwritten", num_entries=len(pending), error=self.error, db_path=str(self.db_path),
                      sum_micros=sum(entry.amount_micros for entry in pending))
            for entry in pending:
                log.error("ledger.unwritten_entry", **entry.model_dump(mode="json"))

    def _try_write(self, entries: list[LedgerEntry]) -> bool:
        # A failed commit must not kill the writer nor lose the batch: keep it, say why, retry later.
        try:
            self._write(entries)
        except Exception as exc:
            self.num_write_failures += 1
            error = f"{type(exc).__name__}: {exc}"
            if error != self.error:
                log.error("ledger.state", state="unavailable", error=error, num_backlog=self.num_backlog,
                          db_path=str(self.db_path))
            self.error = error
            return False
        if self.error is not None:
            log.warning("ledger.state", state="available", was=self.error, num_written=len(entries))
            self.error = None
        return True

    def _guarded(self, step: Callable[..., None], *args: object) -> bool:
        try:
            step(*args)
            return True
        except Exception:
            log.exception("ledger.poll_failed", db_path=str(self.db_path))
            return False

    def _write(self, entries: list[LedgerEntry]) -> None:
        if not entries:
            return
        refused = []
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            for entry in entries:
                if self.conn.execute(INSERT_ENTRY, entry_row(entry, self.source)).rowcount == 0:
                    refused.append(entry)
            self.conn.execute("COMMIT")
        except BaseException:
            # SQLite may already have rolled back (SQLITE_FULL does): a ROLLBACK error must not hide the cause.
            if self.conn.in_transaction:
                try:
                    self.conn.execute("ROLLBACK")
                except sqlite3.Error as rollback_exc:
                    log.warning("ledger.rollback_failed", error=str(rollback_exc))
            raise
        self.num_written += len(entries) - len(refused)
        self.num_commits += 1
        for entry in refused:
            log.warning("ledger.duplicate", request_id=entry.request_id, kind=entry.kind.value)
            self._notify("on_refused", entry)

    def _poll(self) -> None:
        version = self._read_data_version()
        if version == self._data_version or self._listener is None:
            return
        self._data_version = version
        rows = self.conn.execute("SELECT seq, account_id, amount_micros, source FROM ledger WHERE seq > ? ORDER BY seq",
                                 (self._last_seq,)).fetchall()
        for seq, account_id, amount, source in rows:
            self._last_seq = seq
            if source != self.source:
                self._notify("on_external", account_id, amount)
        self._notify("on_changed", self.conn)

    def _notify(self, method: str, *args: object) -> None:
        # After a commit, a listener's failure must not make the writer retry (and so re-refuse) the batch.
        try:
            getattr(self._listener, method)(*args)
        except Exception:
            log.exception("ledger.listener_failed", method=method)

    def _read_data_version(self) -> int:
        return self.conn.execute("PRAGMA data_version").fetchone()[0]


class _Flush:
    """One flush() call: answered once, with whether everything before it was committed."""

    __slots__ = ("done", "is_ok")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.is_ok = False

    def answer(self, *, is_ok: bool) -> None:
        self.is_ok = is_ok
        self.done.set()
