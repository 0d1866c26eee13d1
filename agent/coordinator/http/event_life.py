"""The request life of a dialect whose answer is a sequence of typed events (Responses, Messages): a state
(dialects/*_events.py) turns the flow's Token / Finished / Broken into the dialect's events; streamed, each
goes out as `event: <type>` + `data: <json>`; not streamed, the same state's whole object is the answer, so
both modes give the same output. A stream writes once per read of the flow: every event of the Tokens that
arrived together, their deltas merged into runs of one kind (delta_runs.py), in one body write; while it
waits, a step's token may go straight out as it arrives (direct_stream.py), as the state's events for it.

Public names: EventLife, DialectState, event_sse.
"""

from __future__ import annotations

from typing import Any, Protocol

from starlette.responses import JSONResponse
from starlette.types import Send

from agent.coordinator.billing.accounts import ReleaseReason
from agent.coordinator.delta_runs import runs, split
from agent.coordinator.errors import ProviderFailed
from agent.coordinator.flow import Broken, Finished, RequestFlow, Token
from agent.coordinator.http.body_writer import BodyWriter
from agent.coordinator.http.direct_stream import DirectStream
from agent.coordinator.http.openai_format import sse
from agent.coordinator.http.request_life import RequestLife, Translated, send_part, send_response


class DialectState(Protocol):
    def begin(self) -> list[dict[str, Any]]: ...
    def token(self, token: Token) -> list[dict[str, Any]]: ...
    def finish(self, finished: Finished) -> list[dict[str, Any]]: ...
    def fail(self, broken: Broken) -> list[dict[str, Any]]: ...


def event_sse(events: list[dict[str, Any]]) -> bytes:
    return b"".join(sse(event, event=event["type"]) for event in events)


class EventLife(RequestLife):
    def state(self, flow: RequestFlow, request: Translated) -> DialectState:
        raise NotImplementedError

    def whole(self, state: DialectState) -> dict[str, Any]:
        """The non-streamed answer, once the state has seen Finished."""
        raise NotImplementedError

    async def stream(self, flow: RequestFlow, request: Translated, send: Send, *, is_open: bool,
                     writer: BodyWriter | None = None) -> None:
        state, model = self.state(flow, request), request.body.model
        if not is_open:
            await self.start_stream(flow, request.body, send)
        head = event_sse(state.begin())  # goes out with the first token: one write instead of two
        direct = DirectStream(flow, writer, lambda token: event_sse(state.token(token)))
        try:
            while True:
                first = await flow.next()
                # What arrived with it (the rest of the step, or a slow client's backlog) goes in the same write,
                # its deltas merged into runs of one kind so that the events keep their order (delta_runs.py).
                tokens, end = split([first, *flow.ready()] if isinstance(first, Token) else [first])
                data = b"".join(event_sse(state.token(run)) for run in runs(tokens))
                if end is None:
                    if data:
                        await send_part(send, head + data)
                        head = b""
                        direct.open()  # the head is out: what comes while we wait may go straight out
                    continue
                if isinstance(end, Finished):
                    tail, outcome = event_sse(state.finish(end)), "ok"
                else:
                    flow.close(ReleaseReason.PROVIDER_ERROR)
                    tail, outcome = event_sse(state.fail(end)), "stream_error"
                await send_part(send, head + data + tail, more=False)
                self.coordinator.metrics.request(model, outcome)
                return
        finally:
            direct.close()

    async def complete(self, flow: RequestFlow, request: Translated, send: Send) -> None:
        state, model = self.state(flow, request), request.body.model
        while True:
            event = await flow.next()
            if isinstance(event, Token):
                state.token(event)
            elif isinstance(event, Finished):
                state.finish(event)
                self.coordinator.metrics.request(model, "ok")
                await send_response(send, JSONResponse(self.whole(state), headers=self.headers(flow, request.body)))
                return
            else:
                flow.close(ReleaseReason.PROVIDER_ERROR)
                self.coordinator.metrics.request(model, "stream_error")
                await send_response(send, self.error_response(ProviderFailed(event.message, code=event.code)))
                return
