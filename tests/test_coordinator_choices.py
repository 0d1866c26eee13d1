"""`n` > 1 through the real coordinator and the official SDK, with scripted providers: n choices fanned out as n
ordinary requests (agent/coordinator/choices.py), merged with their indexes, billed for the prompt once."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import httpx
import openai
import pytest

from agent.coordinator.billing.accounts import Accounts
from agent.coordinator.billing.keys import create_key
from agent.coordinator.billing.ledger import ledger_sum
from agent.coordinator.billing.ledger_entries import EntryKind
from agent.coordinator.billing.pricing import DEFAULT_PRICES
from agent.coordinator.choices import choice_seed
from agent.wire.frames import ChunkDelta, InferenceResponseChunk
from agent.wire.protocol import Direction, parse_message
from tests.provider_support import GPT, Reply, coordinator, eventually, provider

MESSAGES = [{"role": "user", "content": "Say hello."}]


def usage_rows(db: Path, account_id: str) -> list[tuple[str, int, int]]:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return conn.execute("SELECT model, prompt_tokens, completion_tokens FROM ledger WHERE account_id = ? AND kind = ?",
                            (account_id, EntryKind.USAGE.value)).fetchall()


def billed_tokens(db: Path, account_id: str) -> tuple[int, int]:
    """The ledger's usage entries summed: one per choice, the prompt on choice 0's alone."""
    rows = usage_rows(db, account_id)
    return sum(p for _, p, _ in rows), sum(c for _, _, c in rows)


def charged_micros(db: Path, account_id: str) -> int:
    """Each choice's charge is rounded up on its own (pricing.py): at most a micro-unit per choice over the total."""
    return sum(DEFAULT_PRICES.cost_micros(model, p, c) for model, p, c in usage_rows(db, account_id))


def by_seed(request) -> Reply:
    """A provider whose answer names the seed it was sent: one chunk per choice index it implies."""
    return Reply(chunks=[f"seed {request.body.seed}"] + ["!"] * (request.body.seed % 3))


async def test_three_choices_come_back_with_indexes_0_to_2_their_own_seeds_and_the_prompt_counted_once():
    async with coordinator() as server:
        agent = await provider(server, GPT, reply=by_seed)
        sdk = openai.AsyncOpenAI(base_url=f"{server.base_url}/v1", api_key="local", max_retries=0)
        whole = await sdk.chat.completions.create(model=GPT.id, messages=MESSAGES, n=3, seed=40)
        stream = await sdk.chat.completions.create(model=GPT.id, messages=MESSAGES, n=3, seed=40, stream=True,
                                                   stream_options={"include_usage": True})
        chunks = [chunk async for chunk in stream]
        received = list(agent.received)
        await agent.stop()
    assert [c.index for c in whole.choices] == [0, 1, 2]
    assert [c.message.content for c in whole.choices] == ["seed 40!", "seed 41!!", "seed 42"]
    assert all(c.finish_reason == "stop" for c in whole.choices)
    assert whole.usage.prompt_tokens == 11 and whole.usage.completion_tokens == 2 + 3 + 1
    streamed = {i: "".join(c.choices[0].delta.content or "" for c in chunks if c.choices and c.choices[0].index == i)
                for i in range(3)}
    assert streamed == {i: c.message.content for i, c in enumerate(whole.choices)}
    finishes = [c.choices[0].index for c in chunks if c.choices and c.choices[0].finish_reason]
    assert sorted(finishes) == [0, 1, 2] and chunks[-1].usage == whole.usage
    assert all(r.body.n is None for r in received) and sorted(r.body.seed for r in received) == [40, 40, 41, 41, 42, 42]
    assert len({r.request_id for r in received}) == 6


def test_a_choice_seed_differs_per_choice_stays_in_range_and_keeps_no_seed_random():
    assert [choice_seed(7, i) for i in range(3)] == [7, 8, 9]
    assert choice_seed(2**63 - 1, 1) == -(2**63)
    assert choice_seed(None, 5) is None


async def test_n_beyond_max_choices_is_a_400_naming_n_before_anything_is_held():
    async with coordinator() as server, httpx.AsyncClient(base_url=server.base_url) as http:
        agent = await provider(server, GPT)
        beyond = await http.post("/v1/chat/completions", json={"model": GPT.id, "messages": MESSAGES, "n": 9})
        zero = await http.post("/v1/chat/completions", json={"model": GPT.id, "messages": MESSAGES, "n": 0})
        assert not agent.received
        await agent.stop()
    assert beyond.status_code == 400 and beyond.json()["error"]["param"] == "n"
    assert "at most 8" in beyond.json()["error"]["message"]
    assert zero.status_code == 400 and zero.json()["error"]["param"] == "n"


async def test_a_provider_claiming_more_usage_than_one_choice_may_is_clamped_per_choice_and_the_bill_is_the_usage(
        tmp_path: Path):
    db = tmp_path / "accounts.sqlite"
    key = create_key(db, "rich").key
    accounts = Accounts.from_db(db)
    accounts.credit("rich", 10_000_000)
    async with coordinator(accounts=accounts) as server:
        # Every choice claims the usage of all the choices and more: each is held to its own max_tokens.
        agent = await provider(server, GPT, reply=Reply(chunks=["a", "b"], claimed_usage=(11, 5000)))
        sdk = openai.AsyncOpenAI(base_url=f"{server.base_url}/v1", api_key=key, max_retries=0)
        whole = await sdk.chat.completions.create(model=GPT.id, messages=MESSAGES, n=3, max_tokens=4)
        await agent.stop()
    assert len(whole.choices) == 3 and whole.usage.completion_tokens <= 3 * 4
    assert accounts.flush()
    assert billed_tokens(db, "rich") == (whole.usage.prompt_tokens, whole.usage.completion_tokens)
    assert accounts.balance_micros("rich") == ledger_sum(db, "rich") == 10_000_000 - charged_micros(db, "rich")
    accounts.close()


async def test_a_poor_account_asking_for_three_long_choices_is_capped_or_refused_whole_never_overdrawn(tmp_path: Path):
    db = tmp_path / "accounts.sqlite"
    key = create_key(db, "poor").key
    accounts = Accounts.from_db(db)
    accounts.credit("poor", 1_000)
    async with coordinator(accounts=accounts) as server:
        agent = await provider(server, GPT, reply=lambda r: Reply(chunks=["x"] * r.body.output_limit,
                                                                  finish_reason="length"))
        sdk = openai.AsyncOpenAI(base_url=f"{server.base_url}/v1", api_key=key, max_retries=0)
        try:
            result = await sdk.chat.completions.create(model=GPT.id, messages=MESSAGES, n=3, max_tokens=120_000)
        except openai.APIStatusError as exc:
            result = exc
        asked = [r.body.output_limit for r in agent.received]
        await agent.stop()
    assert accounts.flush()
    if isinstance(result, openai.APIStatusError):
        assert result.status_code == 429 and result.code == "insufficient_quota" and not asked  # refused whole
        assert accounts.balance_micros("poor") == 1_000
    else:
        assert len(result.choices) == 3 and result.usage.completion_tokens == sum(asked)
        assert billed_tokens(db, "poor") == (result.usage.prompt_tokens, result.usage.completion_tokens)
        assert accounts.balance_micros("poor") == 1_000 - charged_micros(db, "poor") == ledger_sum(db, "poor") >= 0
    accounts.close()


async def test_a_choice_that_fails_before_its_first_token_fails_the_request_and_releases_every_hold(tmp_path: Path):
    db = tmp_path / "accounts.sqlite"
    key = create_key(db, "rich").key
    accounts = Accounts.from_db(db)
    accounts.credit("rich", 10_000_000)
    refuse_second = lambda r: Reply(reject="never", code="invalid_request", retryable=False) \
        if r.body.seed == 1 else Reply(chunks=["ok"], first_token_delay_s=0.2)
    async with coordinator(accounts=accounts) as server:
        agent = await provider(server, GPT, reply=refuse_second)
        sdk = openai.AsyncOpenAI(base_url=f"{server.base_url}/v1", api_key=key, max_retries=0)
        with pytest.raises(openai.APIStatusError):
            await sdk.chat.completions.create(model=GPT.id, messages=MESSAGES, n=3, seed=0)
        await agent.stop()
    assert accounts.flush()
    assert accounts.balance_micros("rich") == 10_000_000 == ledger_sum(db, "rich")
    accounts.close()


def test_a_chunk_naming_a_choice_index_is_read_as_a_chunk_of_the_one_choice_its_request_id_names():
    frame = ('{"type": "inference_response_chunk", "request_id": "r-1", "seq": 1, "index": 3,'
             ' "delta": {"content": "x"}}')
    chunk = parse_message(frame, direction=Direction.TO_COORDINATOR)
    assert isinstance(chunk, InferenceResponseChunk) and chunk.request_id == "r-1" and "index" not in InferenceResponseChunk.model_fields


async def test_a_provider_sending_chunks_for_a_choice_beyond_n_changes_nothing_in_the_answer():
    async with coordinator() as server:
        agent = await provider(server, GPT)

        def with_a_stray(request) -> Reply:
            if request.request_id.endswith("-2"):  # the last of three choices: invent choices 3 and 7
                for stray in ("-3", "-7"):
                    rid = request.request_id[:-2] + stray
                    agent._spawn(agent.send, InferenceResponseChunk(request_id=rid, seq=1, num_tokens=50,
                                                                    delta=ChunkDelta(content="stray")))
            return Reply(chunks=["fine"])

        agent.reply = with_a_stray
        sdk = openai.AsyncOpenAI(base_url=f"{server.base_url}/v1", api_key="local", max_retries=0)
        whole = await sdk.chat.completions.create(model=GPT.id, messages=MESSAGES, n=3)
        await agent.stop()
    assert [(c.index, c.message.content) for c in whole.choices] == [(0, "fine"), (1, "fine"), (2, "fine")]
    assert whole.usage.completion_tokens == 3


async def test_a_client_leaving_mid_stream_cancels_every_choice_at_the_agent_and_pays_what_it_was_sent(tmp_path: Path):
    db = tmp_path / "accounts.sqlite"
    key = create_key(db, "rich").key
    accounts = Accounts.from_db(db)
    accounts.credit("rich", 10_000_000)
    async with coordinator(accounts=accounts) as server, httpx.AsyncClient(base_url=server.base_url) as http:
        agent = await provider(server, GPT, reply=Reply(chunks=["tick"] * 200, chunk_delay_s=0.02))
        ask = {"model": GPT.id, "messages": MESSAGES, "n": 3, "stream": True}
        async with http.stream("POST", "/v1/chat/completions", json=ask,
                               headers={"authorization": f"Bearer {key}"}) as stream:
            seen: set[int] = set()
            async for line in stream.aiter_lines():
                if line.startswith("data: {") and '"content":"tick"' in line:
                    seen.add(int(line.split('"index":')[1].split(",")[0]))
                if len(seen) == 3:
                    break
        await eventually(lambda: len(agent._cancelled) == 3, what="every choice cancelled at the agent")
        await agent.stop()
    assert accounts.flush()
    prompt, completion = billed_tokens(db, "rich")
    assert prompt == 11 and 3 <= completion < 600  # the prompt once, and each choice's ticks it was sent
    assert accounts.balance_micros("rich") == ledger_sum(db, "rich") == 10_000_000 - charged_micros(db, "rich")
    accounts.close()


async def test_a_choice_that_stalls_mid_stream_ends_the_stream_with_its_index_and_an_error_and_stops_the_others():
    async with coordinator() as server, httpx.AsyncClient(base_url=server.base_url) as http:
        agent = await provider(server, GPT)
        agent.reply = lambda r: Reply(chunks=["a", "b"], hang_after=1) if r.request_id.endswith("-1") \
            else Reply(chunks=["a"] * 500, chunk_delay_s=0.01)
        ask = {"model": GPT.id, "messages": MESSAGES, "n": 3, "stream": True}
        async with http.stream("POST", "/v1/chat/completions", json=ask) as stream:
            lines = [line async for line in stream.aiter_lines() if line]
        await eventually(lambda: len(agent._cancelled) >= 2, what="the other choices cancelled")
        await agent.stop()
    errors = [line for line in lines if '"finish_reason":"error"' in line]
    assert len(errors) == 1 and '"index":1' in errors[0]
    assert "event: error" in lines and lines[-1] == "data: [DONE]"
    assert any("provider_stalled" in line for line in lines)
