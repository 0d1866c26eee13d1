"""Fuzzing the consumer API: POST /v1/chat/completions with generated bodies and headers, against the real
app on a real socket with a funded key and a live simulated agent. Never a 500, never a hang; every
refusal is OpenAI-shaped with a message that says what was wrong."""

from __future__ import annotations

import asyncio
import json
import threading
from dataclasses import replace

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.coordinator.http.app import build_app, running
from agent.testing.fleet.agent import SimAgent
from agent.testing.fleet.harness import funded_accounts
from agent.testing.fleet.profiles import GEMMA, GPT_OSS
from tests.provider_support import FAST

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                        HealthCheck.function_scoped_fixture])
EXPECTED_STATUSES = {200, 400, 401, 404, 405, 409, 413, 415, 422, 429, 503}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=15)
messages = st.lists(st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "system", "assistant", "tool", "developer", "robot"]) | json_values,
     "content": st.text(max_size=200) | json_values}), max_size=4) | json_values
chat_bodies = st.fixed_dictionaries(
    {"model": st.sampled_from([GPT_OSS, GEMMA, "no-such-model", ""]) | json_values, "messages": messages},
    optional={"max_tokens": st.integers(-5, 300_000) | json_values,
              "max_completion_tokens": st.integers(-5, 300_000) | json_values,
              "stream": st.booleans() | json_values, "stream_options": json_values,
              "temperature": st.floats(-3, 5) | json_values, "top_p": st.floats(-1, 2) | json_values,
              "stop": st.text(max_size=5) | st.lists(st.text(max_size=5), max_size=6) | json_values,
              "seed": st.integers(-2**70, 2**70) | json_values, "n": st.integers(-1, 4) | json_values,
              "reasoning_effort": st.sampled_from(["low", "medium", "high", "none", "extreme"]) | json_values,
              "tools": json_values, "response_format": json_values, "logprobs": json_values,
              "user": json_values})
raw_bodies = (st.binary(max_size=300) | json_values.map(lambda v: json.dumps(v).encode())
              | chat_bodies.map(lambda b: json.dumps(b).encode()))


class Background:
    """The coordinator and one warm agent of each model, on their own event loop in a thread."""

    def __init__(self, db_path) -> None:
        self.accounts, self.key = funded_accounts(db_path, dollars=1)
        self.loop = asyncio.new_event_loop()
        self.ready, self.stop = threading.Event(), None
        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(self._main(),), daemon=True)
        self.thread.start()
        assert self.ready.wait(15), "the background coordinator did not come up"

    async def _main(self) -> None:
        self.stop = asyncio.Event()
        settings_ = replace(FAST, queue_max_wait_s=0.3)
        async with running(build_app(self.accounts, settings_)) as server:
            self.base_url = server.base_url
            agents = [await SimAgent(server.ws_url, memory_gb=128, preload=(GPT_OSS, GEMMA), time_scale=0.0005)
                      .start()]
            while not all(p.heartbeat and all(s.state == "idle" for s in p.heartbeat.slots)
                          for p in server.coordinator.router.registry) or not server.coordinator.router.registry:
                await asyncio.sleep(0.01)
            self.ready.set()
            await self.stop.wait()
            for agent in agents:
                await agent.stop()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(10)
        self.accounts.close()


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    background = Background(tmp_path_factory.mktemp("fuzz") / "keys.db")
    yield background
    background.close()


def check(response: httpx.Response) -> None:
    assert response.status_code in EXPECTED_STATUSES, (response.status_code, response.text[:300])
    if response.status_code != 200:
        error = response.json()["error"]
        assert isinstance(error["message"], str) and len(error["message"]) > 10 and error["type"]
        if response.status_code == 429:
            assert int(response.headers["retry-after"]) >= 1
    elif response.headers["content-type"].startswith("text/event-stream"):
        assert response.text.rstrip().endswith("data: [DONE]")
    else:
        assert response.json()["choices"][0]["finish_reason"] in ("stop", "length")


@FUZZ
@given(body=raw_bodies, content_type=st.sampled_from(["application/json", "text/plain", "", "application/x-www-form-urlencoded"]))
def test_no_body_makes_the_api_fail_with_a_500_and_every_refusal_says_why(api, body, content_type):
    headers = {"Authorization": f"Bearer {api.key}", "Content-Type": content_type}
    with httpx.Client(base_url=api.base_url, timeout=10) as http:
        check(http.post("/v1/chat/completions", content=body, headers=headers))


@FUZZ
@given(auth=st.one_of(st.none(), st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=60),
                      st.sampled_from(["Bearer", "Bearer  x", "bearer sk-x", "Basic abc", "Bearer dbk_00000000_x"])),
       body=chat_bodies)
def test_no_authorization_header_gets_past_authentication_unless_it_is_the_key(api, auth, body):
    headers = {} if auth is None else {"Authorization": auth}
    with httpx.Client(base_url=api.base_url, timeout=10) as http:
        response = http.post("/v1/chat/completions", content=json.dumps(body).encode(), headers=headers)
    if api.key not in (auth or ""):
        assert response.status_code == 401, response.text[:200]
    check(response)


def test_a_well_formed_request_is_served_between_the_fuzzing(api):
    body = {"model": GPT_OSS, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 20}
    with httpx.Client(base_url=api.base_url, timeout=10) as http:
        response = http.post("/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {api.key}"})
    assert response.status_code == 200 and response.json()["usage"]["completion_tokens"] == 20
