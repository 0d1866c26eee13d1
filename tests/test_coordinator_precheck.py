"""What the key alone decides is refused before the body is read (issue 11 point 5), over real HTTP: a key
with nothing to pay with, or over its request rate, gets its 429 (insufficient_quota or rate_limit_exceeded)
at once, however large or broken the body it is still sending."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from agent.coordinator.billing.accounts import Accounts
from agent.coordinator.billing.keys import create_key
from agent.coordinator.billing.ratelimit import RateLimits
from agent.coordinator.http.api import MAX_BODY_BYTES
from tests.metrics_support import counted
from tests.provider_support import GPT, coordinator, provider

DECLARED_BYTES = MAX_BODY_BYTES - 1  # as large as a body may be, so only the key can refuse it first
ANSWER_WITHIN_S = 5.0  # far below body_read_timeout_s (30 s): an answer this soon did not wait for the body


async def answer_to_a_body_that_never_arrives(port: int, key: str) -> tuple[int, dict[str, str]]:
    """Send a request head declaring a body of DECLARED_BYTES, then only a few bytes of broken JSON, and read
    the status and headers the server answers with (it cannot have parsed a body it never received)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write((f"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer {key}\r\n"
                  f"content-type: application/json\r\ncontent-length: {DECLARED_BYTES}\r\n\r\n{{not json").encode())
    await writer.drain()
    try:
        async with asyncio.timeout(ANSWER_WITHIN_S):
            head = await reader.readuntil(b"\r\n\r\n")
    finally:
        writer.close()
    status_line, *header_lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in header_lines if line)
    return int(status_line.split()[1]), {name.lower(): value for name, value in headers.items()}


def billed(tmp_path: Path, **kwargs) -> tuple[str, Accounts]:
    db = tmp_path / "accounts.sqlite"
    key = create_key(db, "acme").key
    return key, Accounts.from_db(db, **kwargs)


async def test_a_key_with_zero_balance_gets_insufficient_quota_before_its_body_arrives(tmp_path):
    key, accounts = billed(tmp_path)
    async with coordinator(accounts=accounts) as server:
        status, _ = await answer_to_a_body_that_never_arrives(server.port, key)
        assert status == 429  # not 400 (invalid JSON), not 408 (the body never came): it was never read
        assert counted(server.coordinator.metrics, "darkbloom_requests_total", model="",
                       outcome="insufficient_balance") == 1
    accounts.close()


async def test_a_key_with_zero_balance_sending_a_large_broken_body_gets_insufficient_quota_not_400(tmp_path):
    key, accounts = billed(tmp_path)
    async with coordinator(accounts=accounts) as server, httpx.AsyncClient(base_url=server.base_url) as http:
        response = await http.post("/v1/chat/completions", content=b"x" * 1_000_000,
                                   headers={"authorization": f"Bearer {key}", "content-type": "application/json"})
        assert response.status_code == 429
        assert response.json()["error"]["code"] == "insufficient_quota"
        assert "add credit" in response.json()["error"]["message"]
    accounts.close()


async def test_a_key_over_its_request_rate_gets_429_with_retry_after_before_its_body_arrives(tmp_path):
    key, accounts = billed(tmp_path, limits=RateLimits(requests_per_minute=1))
    accounts.credit("acme", 10_000_000)
    async with coordinator(accounts=accounts) as server, httpx.AsyncClient(base_url=server.base_url) as http:
        agent = await provider(server, GPT)
        first = await http.post("/v1/chat/completions", headers={"authorization": f"Bearer {key}"},
                                json={"model": GPT.id, "messages": [{"role": "user", "content": "hi"}],
                                      "max_tokens": 8})
        assert first.status_code == 200
        status, headers = await answer_to_a_body_that_never_arrives(server.port, key)
        assert status == 429 and 1 <= int(headers["retry-after"]) <= 60
        await agent.stop()
    accounts.close()


async def test_a_funded_key_within_its_rate_still_has_its_broken_body_read_and_refused_as_invalid_json(tmp_path):
    key, accounts = billed(tmp_path)
    accounts.credit("acme", 10_000_000)
    async with coordinator(accounts=accounts) as server, httpx.AsyncClient(base_url=server.base_url) as http:
        response = await http.post("/v1/chat/completions", content=b"{not json",
                                   headers={"authorization": f"Bearer {key}", "content-type": "application/json"})
        assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_json"
    accounts.close()


async def test_a_spent_balance_is_refused_unread_and_a_credited_one_has_its_body_judged(tmp_path):
    key, accounts = billed(tmp_path)
    accounts.credit("acme", 1_000)
    account = accounts.authenticate(key)
    accounts.admit(account, "spend", model=GPT.id, prompt_tokens=0, max_tokens=5_000)
    accounts.settle("spend", prompt_tokens=0, completion_tokens=5_000)  # $0.001 of gpt-oss output: all of it
    assert accounts.available_micros("acme") == 0
    broken = {"content": b"{not json", "headers": {"authorization": f"Bearer {key}"}}
    async with coordinator(accounts=accounts) as server, httpx.AsyncClient(base_url=server.base_url) as http:
        assert (await http.post("/v1/chat/completions", **broken)).status_code == 429
        accounts.credit("acme", 1_000)
        assert (await http.post("/v1/chat/completions", **broken)).status_code == 400
    accounts.close()
