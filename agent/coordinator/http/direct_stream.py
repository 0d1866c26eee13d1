"""The relay's fast path: a stream's tokens written to its client while the router handles the provider's frame.

Without it, each relayed token wakes the stream's task, which converts the frame (flow.py), encodes it in the
dialect's shape and sends it down the ASGI chain: most of the coordinator's CPU per token. With it, the router's
push of a chunk frame (routing/exchange.py: the exchange's `sink`) is taken here, synchronously, when

    the stream's task is parked in flow.next() with nothing pending (so everything it wrote has gone out,
    and this frame is the stream's next), the frame is a chunk, and the client's transport takes a write
    at once (body_writer.py: started, chunked, not ended, not backed up)

and then: flow.take() converts it (the same checks and counts as next(): seq, max_tokens, logprobs, tool
calls) and moves the stall deadline; a Token is encoded by the dialect's `encode` and written as one body chunk;
a Finished or Broken (a chunk past max_tokens, invalid logprobs, an invalid tool call) is held for the task,
which ends the stream as it always does. Anything else (an inference_complete, an error, a lost link, a chunk
for a backed-up client) goes on the deque and wakes the task, as before: the end of a stream, and a slow
client's merged backlog, keep their one path. An encoding failure here ends this stream (held as Broken) and
never reaches the provider's link, which carries other streams.

    direct = DirectStream(flow, writer, encode)   # writer None (no fast path offered): open() does nothing
    direct.open()     after the stream's first write (its head went out with it)
    direct.close()    when the stream's loop ends, whichever way

Public names: DirectStream.
"""

from __future__ import annotations

from collections.abc import Callable

import structlog

from agent.coordinator.flow import Broken, RequestFlow, Token
from agent.coordinator.http.body_writer import BodyWriter
from agent.wire.hot_chunks import CHUNK_FRAMES

log = structlog.get_logger("agent.coordinator.http.direct_stream")


class DirectStream:
    __slots__ = ("flow", "writer", "encode", "num_tokens")

    def __init__(self, flow: RequestFlow, writer: BodyWriter | None, encode: Callable[[Token], bytes]) -> None:
        self.flow, self.writer, self.encode = flow, writer, encode
        self.num_tokens = 0  # Tokens taken and written here (counted once, at close: not a metric call per token)

    def open(self) -> None:
        if self.writer is not None and self.flow.exchange.sink is None:
            self.flow.exchange.sink = self.take

    def close(self) -> None:
        if self.writer is not None:
            self.flow.exchange.sink = None
        if self.num_tokens:
            self.flow.router.metrics.direct_stream_tokens.labels(self.flow.exchange.model).inc(self.num_tokens)
            self.num_tokens = 0

    def take(self, frame: object) -> bool:
        flow = self.flow
        if not isinstance(frame, CHUNK_FRAMES) or not flow.is_parked or not self.writer.ready():
            return False
        try:
            event = flow.take(frame)
            if type(event) is Token:
                self.writer.write(self.encode(event))
                self.num_tokens += 1
            elif event is not None:
                flow.hold(event)
        except Exception as exc:  # a bug of ours for this stream: it ends, the provider's link goes on
            log.exception("stream.direct_write_failed", request_id=flow.exchange.request_id)
            flow.hold(Broken(f"the coordinator failed to write the stream ({type(exc).__name__})", "internal_error"))
        return True
