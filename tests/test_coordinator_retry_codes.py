"""The error tree crosses the wire: an agent's rejection or error code, over a real loopback link,
decides whether the coordinator tries another provider, exactly as agent.errors.is_retryable says; an
agent's "invalid_request" (the request itself at fault) is one stranger's word, believed (a 400 with its reason)
once a second provider says so or no other can take the request."""

from __future__ import annotations

import httpx
import pytest

from agent.errors import NOT_RETRYABLE_CODES, RETRYABLE_CODES, is_retryable
from tests.provider_support import FAST, GPT, Reply, coordinator, provider

CODES = ["kv_full", "cannot_fit", "unknown_model", "generation_error", "invalid_field", "invalid_request",
         "internal_error"]


def first_fails(how: str, code: str):
    """A reply script shared by two providers: whichever gets the request first fails it with `code`."""
    calls = []

    def reply(_request) -> Reply:
        calls.append(code)
        if len(calls) > 1:
            return Reply(chunks=("served", " elsewhere"))
        if how == "reject":
            return Reply(reject="never", reason=f"scripted {code}", code=code, retryable=not is_retryable(code))
        return Reply(error_after=0, code=code, retryable=not is_retryable(code))
    return reply, calls


def test_the_codes_on_the_grid_are_on_both_sides_of_the_decision():
    assert {c for c in CODES if is_retryable(c)} <= RETRYABLE_CODES
    assert {c for c in CODES if not is_retryable(c)} <= NOT_RETRYABLE_CODES
    assert not RETRYABLE_CODES & NOT_RETRYABLE_CODES
    assert is_retryable("a_code_from_a_newer_agent", default=True)
    assert not is_retryable("a_code_from_a_newer_agent", default=False)
    assert not is_retryable(ValueError("a bug"))


@pytest.mark.parametrize("how", ["reject", "error"])
@pytest.mark.parametrize("code", CODES)
async def test_a_code_from_the_agent_is_retried_on_another_provider_exactly_when_is_retryable_says(how, code):
    # Each provider's own `retryable` flag says the opposite: the code, known here, is what decides.
    reply, calls = first_fails(how, code)
    async with coordinator(FAST) as server:
        providers = [await provider(server, GPT, reply=reply) for _ in range(2)]
        async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as http:
            response = await http.post("/v1/chat/completions", json={
                "model": GPT.id, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8})
        received = [len(p.received) for p in providers]
        for p in providers:
            await p.stop()
    if is_retryable(code) or code == "invalid_request":  # one provider's invalid_request is tried elsewhere
        assert response.status_code == 200, response.text
        assert response.json()["choices"][0]["message"]["content"] == "served elsewhere"
        assert sorted(received) == [1, 1] and len(calls) == 2
    else:
        assert response.status_code == 502, response.text
        assert "not retried on another provider" in response.json()["error"]["message"]
        assert code in response.json()["error"]["message"]
        assert sorted(received) == [0, 1] and len(calls) == 1


def claims_invalid(_request) -> Reply:
    return Reply(reject="never", reason="logit_bias names token id 999999, which is not in this model's vocabulary",
                 code="invalid_request", retryable=False)


async def ask(server) -> httpx.Response:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as http:
        return await http.post("/v1/chat/completions", json={
            "model": GPT.id, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8})


@pytest.mark.parametrize("num_providers", [1, 2, 3])
async def test_a_request_its_providers_call_invalid_is_a_400_with_their_reason_after_at_most_two_tried_it(
        num_providers):
    async with coordinator(FAST) as server:
        providers = [await provider(server, GPT, reply=claims_invalid) for _ in range(num_providers)]
        response = await ask(server)
        received = sum(len(p.received) for p in providers)
        for p in providers:
            await p.stop()
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and "logit_bias names token id 999999" in error["message"]
    assert received == min(num_providers, 2)  # confirmed by a second provider when there is one, no further


async def test_a_code_this_coordinator_does_not_know_follows_the_agents_own_retryable_flag():
    for retryable, expected in ((True, 200), (False, 502)):
        calls = []

        def reply(_request, retryable=retryable):
            calls.append(1)
            return Reply(error_after=0, code="gpu_on_fire", retryable=retryable) if len(calls) == 1 else Reply()
        async with coordinator(FAST) as server:
            providers = [await provider(server, GPT, reply=reply) for _ in range(2)]
            async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as http:
                response = await http.post("/v1/chat/completions", json={
                    "model": GPT.id, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8})
            for p in providers:
                await p.stop()
        assert response.status_code == expected, response.text


async def test_the_real_agent_puts_the_stable_code_and_is_retryables_answer_on_its_rejections(tmp_path):
    from tests.test_daemon import BODY, running

    mini, daemon, task = await running(tmp_path)
    await mini.send({"type": "inference_request", "request_id": "r-1", "model": "no-such-model", "body": BODY})
    rejected = await mini.next_frame("inference_rejected")
    assert (rejected["code"], rejected["retryable"], rejected["verdict"]) == ("unknown_model", True, "never")
    assert "no-such-model" in rejected["reason"]
    daemon.should_exit.set()
    assert await task == 0
    await mini.stop()
