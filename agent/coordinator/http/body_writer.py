"""A streamed response's body bytes written straight to the client's transport, past the ASGI send chain.

Every relayed token of a stream used to go router → the stream's task (woken) → the dialect's writer →
four ASGI send layers (Starlette's two, the access log, uvicorn's) → transport.write. The relay's fast path
(direct_stream.py) writes a step's text for a stream while the router handles the provider's frame:
no task wakes, no ASGI message is built. It may only while uvicorn would have written the same bytes at once:

    ready()    the response has started, is chunked, has not ended, the client is still there, and its
               transport is not backed up (uvicorn's flow control has not paused writing)
    write(b)   one chunk of the chunked body, exactly the bytes uvicorn's send writes for it

When not ready, the caller sends through ASGI as before, whose send waits for the transport to drain: a slow
client's text waits in its flow and merges (flow.ready()), and slows no one else. A response's last chunk always
goes through ASGI, so uvicorn's own state (response_complete, keep-alive, the next pipelined request) stays its own.

The writer is offered in the ASGI scope's extensions (BODY_WRITER) by the httptools protocol (head_deadline.py);
it reaches into uvicorn's httptools RequestResponseCycle (its transport, flow control and response state), and
tests/test_direct_stream.py pins that for the uvicorn of pyproject.toml. With h11, no writer is offered, and
every write goes through ASGI.

Public names: BodyWriter, body_writer, BODY_WRITER.
"""

from __future__ import annotations

from typing import Any

from starlette.types import Scope

BODY_WRITER = "darkbloom.body_writer"


class BodyWriter:
    __slots__ = ("_cycle", "_transport", "_flow")

    def __init__(self, cycle: Any) -> None:
        """`cycle`: uvicorn's httptools RequestResponseCycle of one request."""
        self._cycle, self._transport, self._flow = cycle, cycle.transport, cycle.flow

    def ready(self) -> bool:
        cycle = self._cycle
        return (cycle.response_started and cycle.chunked_encoding is True and not cycle.response_complete
                and not cycle.disconnected and not self._flow.write_paused)

    def write(self, data: bytes) -> None:
        """One body chunk; only after ready() said True (nothing awaits in between, so it still holds)."""
        if data:
            self._transport.write(b"%x\r\n%b\r\n" % (len(data), data))


def body_writer(scope: Scope) -> BodyWriter | None:
    extensions = scope.get("extensions")
    return extensions.get(BODY_WRITER) if extensions else None
