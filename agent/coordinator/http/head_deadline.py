"""uvicorn's HTTP protocol with a deadline for each request head, which uvicorn does not have: a client
must send a whole request head within `head_timeout_s` of connecting (or of its last response), else
the connection is closed. Without it, a slowloris client holds a connection open for as long as it likes.

Two variants, one per parser uvicorn ships: httptools (llhttp, in C) when it is installed, as uvicorn's own
`http="auto"` would pick, else h11 (pure Python; it costs several µs per body write of a stream). The h11
one bounds a head's size with h11's max incomplete event; httptools has no such bound, so its variant
counts a head's bytes itself and answers 400 past `max_head_bytes`, as h11 does.

The httptools variant also offers each request's BodyWriter in the ASGI scope's extensions (body_writer.py:
a stream's fast path writes body chunks straight to the transport).

This is the one adapter that reaches into uvicorn's H11Protocol and HttpToolsProtocol (their loop,
transport, parser and lifecycle methods), with body_writer.py for the request cycle;
tests/test_coordinator_bounds.py and tests/test_direct_stream.py pin the behaviour for the uvicorn of
pyproject.toml.

Public names: with_head_deadline, HAS_HTTPTOOLS.
"""

from __future__ import annotations

import asyncio

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from agent.coordinator.http.body_writer import BODY_WRITER, BodyWriter

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # httptools is not installed: h11 serves
    HttpToolsProtocol = None  # type: ignore[assignment,misc]

HAS_HTTPTOOLS = HttpToolsProtocol is not None


class _HeadDeadline:
    """The deadline's timer, armed on connecting and shared by both variants (each says when a head is awaited)."""

    head_timeout_s: float = 10.0
    _head_deadline: asyncio.TimerHandle | None = None
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport

    def connection_made(self, transport: asyncio.Transport) -> None:
        super().connection_made(transport)  # type: ignore[misc]  (the uvicorn protocol after this in the MRO)
        self._arm_head_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_deadline()
        super().connection_lost(exc)  # type: ignore[misc]

    def _arm_head_deadline(self) -> None:
        self._disarm_head_deadline()
        self._head_deadline = self.loop.call_later(self.head_timeout_s, self._head_too_slow)

    def _disarm_head_deadline(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_too_slow(self) -> None:
        self._head_deadline = None
        if not self.transport.is_closing() and self._is_awaiting_head():
            self.transport.close()

    def _is_awaiting_head(self) -> bool:
        raise NotImplementedError


class _H11HeadDeadline(_HeadDeadline, H11Protocol):
    def handle_events(self) -> None:
        super().handle_events()
        if self.conn.their_state is not h11.IDLE:  # the head arrived (or the connection is done with)
            self._disarm_head_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self._arm_head_deadline()

    def _is_awaiting_head(self) -> bool:
        return self.conn.their_state is h11.IDLE


if HttpToolsProtocol is not None:
    class _HttpToolsHeadDeadline(_HeadDeadline, HttpToolsProtocol):
        max_head_bytes: int = 64 * 1024
        _awaiting_head: bool = True  # from the connection, and from each request's end, to the next head
        _head_bytes: int = 0  # received while awaiting it

        def data_received(self, data: bytes) -> None:
            if not self._awaiting_head:
                super().data_received(data)
                return
            self._head_bytes += len(data)
            super().data_received(data)
            if self._awaiting_head and self._head_bytes > self.max_head_bytes and not self.transport.is_closing():
                self._disarm_head_deadline()
                self.send_400_response(f"Request head larger than {self.max_head_bytes} bytes.")

        def on_headers_complete(self) -> None:
            self._awaiting_head = False  # before uvicorn's own: a websocket upgrade leaves this protocol there
            self._disarm_head_deadline()
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            super().on_message_complete()
            self._awaiting_head, self._head_bytes = True, 0

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing() and self._awaiting_head:
                self._arm_head_deadline()

        def _is_awaiting_head(self) -> bool:
            return self._awaiting_head

        def _start_asgi_task(self, cycle, app) -> None:  # type: ignore[no-untyped-def]
            cycle.scope.setdefault("extensions", {})[BODY_WRITER] = BodyWriter(cycle)
            super()._start_asgi_task(cycle, app)


def with_head_deadline(head_timeout_s: float, max_head_bytes: int, *, httptools: bool = True) -> type:
    """The protocol class to give uvicorn.Config(http=...): httptools' when installed (unless told not), else h11's
    (whose head bound is uvicorn.Config's h11_max_incomplete_event_size, set to the same max_head_bytes)."""
    if httptools and HttpToolsProtocol is not None:
        return type("HeadDeadlineHttpToolsProtocol", (_HttpToolsHeadDeadline,),
                    {"head_timeout_s": head_timeout_s, "max_head_bytes": max_head_bytes})
    return type("HeadDeadlineH11Protocol", (_H11HeadDeadline,), {"head_timeout_s": head_timeout_s})
