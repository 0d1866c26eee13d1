"""The ledger without a file, for `--open` mode and tests: the same uniqueness rule as SqliteLedger's table
(one entry per (request_id, kind)), kept in a list, always available.

Public names: MemoryLedger.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from agent.coordinator.billing.ledger_entries import LedgerEntry

if TYPE_CHECKING:
    from agent.coordinator.billing.ledger import LedgerListener


class MemoryLedger:
    num_backlog = 0
    error: str | None = None
    is_available = True

    def __init__(self) -> None:
        self.entries: list[LedgerEntry] = []
        self.loaded_balances: dict[str, int] = {}
        self._keys: set[tuple[str, str]] = set()
        self._listener: LedgerListener | None = None

    def start(self, listener: LedgerListener) -> None:
        self._listener = listener

    def append(self, entry: LedgerEntry) -> None:
        key = (entry.request_id, entry.kind.value)
        if entry.request_id is not None and key in self._keys:
            if self._listener is not None:
                self._listener.on_refused(entry)
            return
        if entry.request_id is not None:
            self._keys.add(key)
        self.entries.append(entry)

    def refusal(self) -> str | None:
        return None

    def flush(self, timeout_s: float | None = None) -> bool:
        return True

    def close(self, timeout_s: float | None = None) -> list[LedgerEntry]:
        return []
