"""`n` = 3 end to end: the official openai SDK, a keyed coordinator, and a real agent running the MLX engine on both
tiny architectures, over a real loopback websocket and HTTP; streamed and not, seeded, billed as the usage says."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import openai

from agent.coordinator.billing.accounts import Accounts
from agent.coordinator.billing.keys import create_key
from agent.coordinator.billing.ledger import ledger_sum
from tests.engine_fixtures import NARROW, run
from tests.provider_support import FAST, coordinator, eventually
from tests.test_coordinator_choices import billed_tokens, charged_micros
from tests.test_logprobs_end_to_end import real_mlx_agent

CREDIT = 10_000_000
# A model's first requests on a busy 2-core machine can take longer than FAST's 2 s to their first token (MLX
# compiles as it first runs): the choices, not the deadline, are under test here.
PATIENT = replace(FAST, first_token_timeout_s=30.0)


def ask(name: str, **fields) -> dict:
    return {"model": name, "messages": [{"role": "user", "content": "Hello there"}], "max_tokens": 8, "n": 3,
            "temperature": 1.0, "seed": 7, **fields}


def said(choice) -> tuple[str | None, str | None]:
    return choice.message.content, (choice.message.model_extra or {}).get("reasoning")


def test_the_sdk_gets_three_seeded_choices_streamed_and_not_and_the_account_pays_exactly_their_usage(
        tiny_models_dir, tmp_path: Path):
    db = tmp_path / "accounts.sqlite"
    key = create_key(db, "consumer").key
    accounts = Accounts.from_db(db)
    accounts.credit("consumer", CREDIT)

    async def scenario():
        async with coordinator(PATIENT, accounts=accounts) as server, real_mlx_agent(server, tiny_models_dir):
            registry = server.coordinator.router.registry
            await eventually(lambda: all(registry.offers(name) for name in NARROW), timeout=10)
            sdk = openai.AsyncOpenAI(base_url=server.base_url + "/v1", api_key=key, max_retries=0)
            results = {}
            for name in NARROW:
                whole = await sdk.chat.completions.create(**ask(name))
                again = await sdk.chat.completions.create(**ask(name))
                stream = await sdk.chat.completions.create(**ask(name), stream=True,
                                                           stream_options={"include_usage": True})
                # Choice i is what one request with seed 7 + i gets alone: its tokens, and its usage.
                alone = [await sdk.chat.completions.create(**ask(name, n=1, seed=7 + i))
                         for i in range(3)]
                results[name] = whole, again, [chunk async for chunk in stream], alone
            return results

    results = run(scenario())
    usages = []
    for name, (whole, again, chunks, alone) in results.items():
        assert [choice.index for choice in whole.choices] == [0, 1, 2], name
        texts = [said(choice) for choice in whole.choices]
        assert len(set(texts)) > 1, (name, texts)  # seed + i: the choices differ ...
        assert [said(choice) for choice in again.choices] == texts  # ... and reproduce
        assert all(choice.finish_reason in ("stop", "length") for choice in whole.choices)
        assert [said(one.choices[0]) for one in alone] == texts
        assert whole.usage.completion_tokens == sum(one.usage.completion_tokens for one in alone) <= 3 * 8
        assert whole.usage.prompt_tokens == alone[0].usage.prompt_tokens
        usage = chunks[-1].usage
        assert chunks[-1].choices == [] and usage.prompt_tokens == whole.usage.prompt_tokens
        streamed = {i: "".join(c.choices[0].delta.content or "" for c in chunks
                               if c.choices and c.choices[0].index == i) for i in range(3)}
        assert streamed == {i: choice.message.content for i, choice in enumerate(whole.choices)}, name
        finishes = sorted(c.choices[0].index for c in chunks if c.choices and c.choices[0].finish_reason)
        assert finishes == [0, 1, 2]
        # The same counts; which prompt tokens came from the agent's prefix cache depends on what ran before.
        assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (
            whole.usage.prompt_tokens, whole.usage.completion_tokens, whole.usage.total_tokens)
        usages += [whole.usage, again.usage, usage, *(one.usage for one in alone)]
    assert accounts.flush()
    assert billed_tokens(db, "consumer") == (sum(u.prompt_tokens for u in usages),
                                             sum(u.completion_tokens for u in usages))
    assert accounts.balance_micros("consumer") == ledger_sum(db, "consumer") == CREDIT - charged_micros(db, "consumer")
    accounts.close()
