"""`running` serves the app with uvicorn's public `Server.serve`, narrowed by two public hooks.

Pinned to the uvicorn range of pyproject.toml: `startup` must still be what binds the socket (the
`is_serving` event is set once it has), and `capture_signals` what takes SIGINT / SIGTERM (the host's
handlers stay in place while the server runs)."""

from __future__ import annotations

import signal

import httpx
import pytest

from agent.coordinator.http.app import EmbeddedServer, build_app, running
from agent.errors import ConfigError
from tests.pinned_versions import outside_pinned_range

pytestmark = pytest.mark.skipif(outside_pinned_range("uvicorn") is not None,
                                reason=outside_pinned_range("uvicorn") or "")


def host_handler(signum, frame) -> None:  # the host program's own handler; never called here
    raise AssertionError("not expected to run")


async def test_running_yields_a_server_that_already_answers_and_leaves_the_hosts_signal_handlers_alone():
    before = {sig: signal.signal(sig, host_handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        async with running(build_app()) as server:
            assert isinstance(server.server, EmbeddedServer) and server.server.is_serving.is_set()
            assert server.server.started and server.port > 0
            assert all(signal.getsignal(sig) is host_handler for sig in before)  # uvicorn took none of them
            async with httpx.AsyncClient(base_url=server.base_url) as http:
                assert (await http.get("/health")).json()["status"] == "ok"
        assert server.server.should_exit
        assert all(signal.getsignal(sig) is host_handler for sig in before)
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


async def test_a_port_already_taken_is_a_clear_error_from_running_not_an_exit_of_the_host():
    async with running(build_app()) as first:
        with pytest.raises(ConfigError, match=f"could not start on 127.0.0.1:{first.port}: .*address already in use"):
            async with running(build_app(), port=first.port):
                raise AssertionError("a second server on a taken port must not start")
        async with httpx.AsyncClient(base_url=first.base_url) as http:  # the first one and the loop live on
            assert (await http.get("/health")).status_code == 200
