from __future__ import annotations

import json

from agent.link.session import LinkSession, LinkState
from agent.wire.frames import FinishReason, Hardware, Register
from agent.wire.logprobs import TokenLogprob

REGISTER = Register(protocol_version=1, agent_version="t", hardware=Hardware(chip=None, memory_bytes=1, gpu_cores=None),
                    models=())
BODY = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}


def request(request_id: str) -> str:
    return json.dumps({"type": "inference_request", "request_id": request_id, "model": "m", "body": BODY})


def test_connecting_sends_register_and_registered_makes_the_session_ready():
    session = LinkSession(REGISTER)
    assert session.connected() == [REGISTER] and session.state is LinkState.REGISTERING
    events, replies = session.receive('{"type": "registered", "provider_id": "p", "heartbeat_interval_s": 0.5}')
    assert session.state is LinkState.READY and session.heartbeat_interval_s == 0.5 and replies == []


def test_chunks_are_numbered_per_request_and_complete_reports_how_many():
    session = LinkSession(REGISTER)
    session.receive(request("a"))
    session.receive(request("b"))
    assert [session.chunk("a", "x").seq, session.chunk("a", "y").seq, session.chunk("b", reasoning="z").seq] == [1, 2, 1]
    assert session.chunk("a") is None  # an empty delta is not a frame
    done = session.complete("a", 5, 2, FinishReason.STOP)
    assert done.num_chunks == 2 and done.usage.completion_tokens == 2
    assert session.complete("a", 5, 2, FinishReason.STOP) is None  # never twice
    assert session.chunk("a", "late") is None


def test_a_chunk_carries_its_tokens_and_those_of_the_textless_deltas_before_it():
    session = LinkSession(REGISTER)
    session.receive(request("a"))
    assert session.chunk("a", "", num_tokens=2) is None  # a held-back byte, a special token: no frame
    assert session.chunk("a", "x", num_tokens=1).num_tokens == 3
    assert session.chunk("a", "y", num_tokens=1).num_tokens == 1
    assert session.chunk("a", "z").num_tokens is None  # a caller that does not count sends none


def test_a_chunk_carries_the_logprobs_of_the_textless_deltas_before_it_and_none_when_there_are_none():
    session = LinkSession(REGISTER)
    session.receive(request("a"))
    held, shown = (TokenLogprob(token=t, logprob=-0.5, bytes=tuple(t.encode())) for t in ("<", "b"))
    assert session.chunk("a", "", num_tokens=1, logprobs=(held,)) is None
    assert session.chunk("a", "<b", num_tokens=1, logprobs=(shown,)).logprobs == (held, shown)
    assert session.chunk("a", "c", num_tokens=1).logprobs is None


def test_a_duplicate_request_id_is_refused_with_an_error_frame():
    session = LinkSession(REGISTER)
    session.receive(request("a"))
    events, replies = session.receive(request("a"))
    assert events == [] and replies[0].code == "duplicate_request" and replies[0].request_id == "a"


def test_a_malformed_frame_becomes_an_error_frame_not_an_exception():
    events, replies = LinkSession(REGISTER).receive(b"\xff\xfe")
    assert events == [] and replies[0].type == "error"


def test_losing_the_link_returns_every_request_still_in_flight():
    session = LinkSession(REGISTER)
    for request_id in "abc":
        session.receive(request(request_id))
    session.error("b", "engine_error", "boom")
    assert sorted(session.lost()) == ["a", "c"] and session.state is LinkState.DISCONNECTED
