"""Fuzzing the other dialects (POST /v1/responses, /v1/messages, /v1/messages/count_tokens, /v1/completions)
with generated bodies, against the real app on a real socket with a funded key and a live simulated agent
(test_fuzz_api.py's). Never a 500, never a hang; every refusal is in the dialect's own error shape with a
message that says what was wrong; every stream ends as its dialect ends one."""

from __future__ import annotations

import json

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.testing.fleet.profiles import GEMMA, GPT_OSS
from tests.test_fuzz_api import EXPECTED_STATUSES, Background, json_values

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                        HealthCheck.function_scoped_fixture])
models = st.sampled_from([GPT_OSS, GEMMA, "no-such-model"]) | json_values
texts = st.text(max_size=40)
items = st.fixed_dictionaries({"type": st.sampled_from(["message", "function_call", "function_call_output",
                                                        "reasoning", "item_reference"]) | json_values},
                              optional={"role": st.sampled_from(["user", "assistant", "system", "robot"]),
                                        "content": texts | json_values, "call_id": texts, "name": texts,
                                        "arguments": texts, "output": texts | json_values})
responses_bodies = st.fixed_dictionaries(
    {"model": models, "input": texts | st.lists(items, max_size=4) | json_values},
    optional={"instructions": texts | json_values, "max_output_tokens": st.integers(-5, 5000) | json_values,
              "stream": st.booleans(), "tools": json_values, "tool_choice": json_values, "text": json_values,
              "reasoning": json_values, "previous_response_id": texts, "store": json_values})
blocks = st.fixed_dictionaries({"type": st.sampled_from(["text", "image", "tool_use", "tool_result", "thinking",
                                                         "document"]) | json_values},
                               optional={"text": texts, "id": texts, "name": texts, "input": json_values,
                                         "tool_use_id": texts, "content": texts | json_values,
                                         "source": json_values, "thinking": texts})
messages_bodies = st.fixed_dictionaries(
    {"model": models, "messages": st.lists(st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "assistant", "system"]) | json_values,
         "content": texts | st.lists(blocks, max_size=3) | json_values}), max_size=3) | json_values},
    optional={"max_tokens": st.integers(-5, 5000) | json_values, "system": texts | json_values,
              "stream": st.booleans(), "tools": json_values, "tool_choice": json_values, "thinking": json_values,
              "stop_sequences": json_values, "temperature": st.floats(-1, 3) | json_values})
completions_bodies = st.fixed_dictionaries(
    {"model": models, "prompt": texts | st.lists(texts, max_size=2) | json_values},
    optional={"max_tokens": st.integers(-5, 500) | json_values, "stream": st.booleans(), "echo": json_values,
              "n": json_values, "stop": json_values, "logprobs": json_values})
requests = (st.tuples(st.just("/v1/responses"), responses_bodies) | st.tuples(st.just("/v1/messages"), messages_bodies)
            | st.tuples(st.just("/v1/messages/count_tokens"), messages_bodies)
            | st.tuples(st.just("/v1/completions"), completions_bodies)
            | st.tuples(st.sampled_from(["/v1/responses", "/v1/messages", "/v1/completions"]),
                        st.binary(max_size=100)))


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    background = Background(tmp_path_factory.mktemp("fuzz-dialects") / "keys.db")
    yield background
    background.close()


def check(path: str, response: httpx.Response) -> None:
    assert response.status_code in EXPECTED_STATUSES, (response.status_code, response.text[:300])
    is_anthropic = path.startswith("/v1/messages")
    if response.status_code != 200:
        body = response.json()
        error = body["error"]
        assert isinstance(error["message"], str) and len(error["message"]) > 10 and error["type"]
        assert (body["type"] == "error") if is_anthropic else ("code" in error)
    elif response.headers["content-type"].startswith("text/event-stream"):
        ends = {"/v1/responses": ("response.completed", "response.incomplete", "response.failed"),
                "/v1/messages": ("message_stop", "error"), "/v1/completions": ("[DONE]",)}[path]
        last = response.text.rstrip().split("\n")[-1]
        assert any(end in last for end in ends), last[:200]


@FUZZ
@given(request=requests)
def test_no_dialect_body_makes_the_api_fail_with_a_500_and_every_refusal_is_in_the_dialects_shape(api, request):
    path, body = request
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"x-api-key": api.key} if path.startswith("/v1/messages") else {"Authorization": f"Bearer {api.key}"}
    with httpx.Client(base_url=api.base_url, timeout=10) as http:
        check(path, http.post(path, content=content, headers={**headers, "Content-Type": "application/json"}))


def test_a_well_formed_request_in_each_dialect_is_served_between_the_fuzzing(api):
    with httpx.Client(base_url=api.base_url, timeout=10) as http:
        bearer = {"Authorization": f"Bearer {api.key}"}
        responses = http.post("/v1/responses", json={"model": GPT_OSS, "input": "hi", "max_output_tokens": 20},
                              headers=bearer)
        messages = http.post("/v1/messages", headers={"x-api-key": api.key},
                             json={"model": GEMMA, "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]})
        completions = http.post("/v1/completions", json={"model": GPT_OSS, "prompt": "hi"}, headers=bearer)
    assert responses.status_code == 200 and responses.json()["usage"]["output_tokens"] == 20
    assert messages.status_code == 200 and messages.json()["usage"]["output_tokens"] == 20
    assert completions.status_code == 200 and completions.json()["usage"]["completion_tokens"] == 16
