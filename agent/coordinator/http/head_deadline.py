"""uvicorn's h11 protocol with a deadline for each request head, which uvicorn does not have: a client
must send a whole request head within `head_timeout_s` of connecting (or of its last response), else
the connection is closed. Without it, a slowloris client holds a connection open for as long as it likes.

This is the one adapter that reaches into uvicorn's H11Protocol (its loop, transport, h11 connection and
lifecycle methods); tests/test_coordinator_bounds.py pins the behaviour for the uvicorn of pyproject.toml.

Public names: with_head_deadline.
"""

from __future__ import annotations

import asyncio

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol


class _HeadDeadlineProtocol(H11Protocol):
    head_timeout_s: float = 10.0
    _head_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_deadline()
        super().connection_lost(exc)

    def handle_events(self) -> None:
        super().handle_events()
        if self.conn.their_state is not h11.IDLE:  # the head arrived (or the connection is done with)
            self._disarm_head_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self._arm_head_deadline()

    def _arm_head_deadline(self) -> None:
        self._disarm_head_deadline()
        self._head_deadline = self.loop.call_later(self.head_timeout_s, self._head_too_slow)

    def _disarm_head_deadline(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_too_slow(self) -> None:
        self._head_deadline = None
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self.transport.close()


def with_head_deadline(head_timeout_s: float) -> type[H11Protocol]:
    """The protocol class to give uvicorn.Config(http=...)."""
    return type("HeadDeadlineH11Protocol", (_HeadDeadlineProtocol,), {"head_timeout_s": head_timeout_s})
