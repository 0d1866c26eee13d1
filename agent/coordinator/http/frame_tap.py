"""A provider link's frames handed to its endpoint as uvicorn's websocket protocol reads them, past ASGI's receive.

Every frame a provider sends used to go uvicorn's protocol → an ASGI message on the connection's queue →
the link's task (woken) → up through the app's coroutines (uvicorn's receive, Starlette's WebSocket, the
middlewares) → the endpoint's read loop (provider_ws.py): a queue, a wake-up and a dozen coroutine frames
resumed per frame. With the tap, the endpoint's `handler` is offered each whole text or binary message in the
protocol's own callback, and a message it takes (True) is done: no queue, no task. It is offered only while
the read loop has nothing queued ahead of it, so the link's frames keep their order:

    the app is past its handshake and not closing, the message is whole (its last fragment), and the
    connection's receive queue is empty (the read loop has taken and handled every earlier message: it
    handles each without awaiting, so an empty queue means it waits in receive())

A message the handler leaves (False) goes on the queue as before, and the read loop handles it as it always
did; provider_ws.py takes every valid frame once the link is registered and leaves the bad ones to the loop,
so the error frames, the flood budget and the disconnect keep their one path. The handler must not raise: it
runs inside uvicorn's data_received.

    tap = frame_tap(scope)        # None: this server offers no tap (another websocket implementation)
    tap.open(handler)             # handler(data: bytes | bytearray | memoryview) -> bool; raw UTF-8 for text
    tap.close()

with_frame_tap() gives the protocol class for uvicorn.Config(ws=...): uvicorn's websockets-sansio protocol
with the tap in each connection's scope extensions. It reaches into that protocol's message assembly
(`frames`, `queue`, `close_sent`, `scope`); tests/test_frame_tap.py pins it for the uvicorn of pyproject.toml.

Public names: FrameTap, frame_tap, with_frame_tap, FRAME_TAP.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.types import Scope

try:
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
except ImportError:  # a uvicorn without it: its own websocket protocol, no tap
    WebSocketsSansIOProtocol = None  # type: ignore[assignment,misc]

FRAME_TAP = "darkbloom.frame_tap"

Handler = Callable[[Any], bool]


class FrameTap:
    __slots__ = ("handler", "num_taken")

    def __init__(self) -> None:
        self.handler: Handler | None = None
        self.num_taken = 0  # messages the handler took (the rest went by the queue)

    def open(self, handler: Handler) -> None:
        self.handler = handler

    def close(self) -> None:
        self.handler = None


def frame_tap(scope: Scope) -> FrameTap | None:
    extensions = scope.get("extensions")
    return extensions.get(FRAME_TAP) if extensions else None


if WebSocketsSansIOProtocol is not None:
    class _TappedWebSockets(WebSocketsSansIOProtocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.frame_tap = FrameTap()

        def handle_connect(self, event: Any) -> None:
            super().handle_connect(event)
            scope = getattr(self, "scope", None)  # none when the handshake was refused
            if scope is not None:  # the app's task is created but has not run yet: it sees the tap
                scope["extensions"][FRAME_TAP] = self.frame_tap

        def send_receive_event_to_app(self) -> None:
            tap, frames = self.frame_tap, self.frames
            if (tap.handler is not None and len(frames) == 1 and not self.close_sent and self.queue.empty()
                    and tap.handler(frames[0])):
                self.frames = []
                tap.num_taken += 1
                return
            super().send_receive_event_to_app()


def with_frame_tap() -> Any:
    """The protocol class for uvicorn.Config(ws=...): "auto" (uvicorn's choice, no tap) without the sansio one."""
    return _TappedWebSockets if WebSocketsSansIOProtocol is not None else "auto"
