"""Routing: which provider gets a request, retries before the first token (never after), pre-warming, 503s."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import httpx
import openai
import pytest

from agent.coordinator.routing.estimate import PromptEstimate, estimate_prompt
from agent.coordinator.routing.exchange import Exchange
from agent.coordinator.routing.placement import Ask
from agent.coordinator.routing.router import Router
from agent.wire.chat_body import ChatCompletionBody, ChatMessage
from agent.wire.frames import InferenceAccepted, SlotState
from tests.metrics_support import counted
from tests.provider_support import CATALOG, FAST, GEMMA, GIB, GPT, Reply, coordinator, entry_for, eventually, provider
from tests.test_coordinator_agreement import body, heartbeat, register

MESSAGES = [{"role": "user", "content": "Say hello."}]


def client(server) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=server.base_url + "/v1", api_key="local", max_retries=0)


async def test_a_request_refused_by_one_provider_goes_to_the_next_at_once_under_the_same_request_id():
    async with coordinator() as server:
        refuses = await provider(server, GPT, reply=Reply(reject="full", reason="KV full", retry_after_s=1))
        serves = await provider(server, GPT)
        # Make the refusing one look best to the router: more free KV than the other.
        await serves.set_slot(GPT.id, reserved_bytes=4 * GIB)
        result = await client(server).chat.completions.create(model=GPT.id, messages=MESSAGES)
        assert result.choices[0].message.content == "Hello, world"
        assert [r.request_id for r in refuses.received] == [r.request_id for r in serves.received] == [result.id]
        offer = server.coordinator.router.registry.get(refuses.provider_id).offers[GPT.id]
        assert offer.pending.is_marked_full  # not tried again before its next heartbeat
        for agent in (refuses, serves):
            await agent.stop()


async def test_a_link_lost_before_the_first_token_is_retried_on_another_provider():
    async with coordinator() as server:
        drops = await provider(server, GPT, reply=Reply(drop_link_after=0))
        serves = await provider(server, GPT)
        await serves.set_slot(GPT.id, reserved_bytes=4 * GIB)
        stream = await client(server).chat.completions.create(model=GPT.id, messages=MESSAGES, stream=True)
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        assert text == "Hello, world"
        assert drops.received[0].request_id == serves.received[0].request_id
        assert server.coordinator.accounts.num_holds == 0
        await serves.stop()


async def test_an_error_frame_about_a_request_ends_that_attempt_and_the_request_goes_elsewhere():
    async with coordinator() as server:
        confused = await provider(server, GPT, reply=Reply(error_frame="duplicate_request"))
        serves = await provider(server, GPT)
        await serves.set_slot(GPT.id, reserved_bytes=4 * GIB)
        result = await client(server).chat.completions.create(model=GPT.id, messages=MESSAGES)
        assert result.choices[0].message.content == "Hello, world" and len(confused.received) == 1
        for agent in (confused, serves):
            await agent.stop()


async def test_an_error_after_the_first_token_ends_the_stream_with_an_sse_error_and_is_never_retried():
    async with coordinator() as server:
        fails = await provider(server, GPT, reply=Reply(chunks=["Hel", "lo"], error_after=1))
        spare = await provider(server, GPT)
        await spare.set_slot(GPT.id, reserved_bytes=4 * GIB)
        async with httpx.AsyncClient(base_url=server.base_url) as http:
            response = await http.post("/v1/chat/completions", json={"model": GPT.id, "messages": MESSAGES,
                                                                     "stream": True})
        blocks = [b for b in response.text.split("\n\n") if b]
        assert response.status_code == 200 and blocks[-1] == "data: [DONE]"
        assert '"finish_reason":"error"' in blocks[-3] and blocks[-2].startswith("event: error\ndata: {\"error\"")
        assert '"content":"Hel"' in response.text and spare.received == []
        await spare.stop()  # the failure ranks `fails` below the spare now (reputation.py): leave it alone
        await eventually(lambda: server.coordinator.router.registry.get(spare.provider_id) is None)
        with pytest.raises(openai.APIError, match="failed mid-stream"):
            stream = await client(server).chat.completions.create(model=GPT.id, messages=MESSAGES, stream=True)
            [chunk async for chunk in stream]
        assert server.coordinator.accounts.num_holds == 0
        for agent in (fails, spare):
            await agent.stop()


async def test_the_first_token_timeout_starts_at_accepted_not_at_the_send():
    settings = replace(FAST, accept_timeout_s=0.8, first_token_timeout_s=0.8)
    async with coordinator(settings) as server:
        # 0.5 s to accept (tokenizing) + 0.5 s to the first token: 1 s in all, and no timeout.
        slow = await provider(server, GPT, reply=Reply(accept_delay_s=0.5, first_token_delay_s=0.5))
        result = await client(server).chat.completions.create(model=GPT.id, messages=MESSAGES)
        assert result.choices[0].message.content == "Hello, world" and len(slow.received) == 1
        await slow.stop()


async def test_a_provider_that_never_answers_is_given_up_after_the_accept_timeout_and_the_request_retried():
    async with coordinator(replace(FAST, accept_timeout_s=0.3)) as server:
        silent = await provider(server, GPT, reply=Reply(silent=True))
        serves = await provider(server, GPT)
        await serves.set_slot(GPT.id, reserved_bytes=4 * GIB)
        result = await client(server).chat.completions.create(model=GPT.id, messages=MESSAGES)
        assert result.choices[0].message.content == "Hello, world"
        assert silent.cancels == [result.id]  # the given-up attempt is cancelled at the agent
        for agent in (silent, serves):
            await agent.stop()


async def test_failures_before_the_first_token_are_bounded_and_end_in_a_502():
    async with coordinator(replace(FAST, max_attempts=2)) as server:
        agents = [await provider(server, GPT, reply=Reply(error_after=0)) for _ in range(3)]
        with pytest.raises(openai.InternalServerError) as failed:
            await client(server).chat.completions.create(model=GPT.id, messages=MESSAGES)
        assert failed.value.status_code == 502 and "failed 2 times" in failed.value.message
        assert sum(len(a.received) for a in agents) == 2
        assert server.coordinator.accounts.num_holds == 0
        for agent in agents:
            await agent.stop()


async def test_load_is_spread_across_warm_providers():
    async with coordinator() as server:
        agents = [await provider(server, GPT, reply=Reply(chunk_delay_s=0.2)) for _ in range(3)]
        requests = client(server)
        await asyncio.gather(*(requests.chat.completions.create(model=GPT.id, messages=MESSAGES) for _ in range(9)))
        assert sorted(len(a.received) for a in agents) == [3, 3, 3]
        for agent in agents:
            await agent.stop()


async def test_warm_slots_are_preferred_and_cold_ones_are_prewarmed_before_warm_capacity_runs_out():
    async with coordinator() as server:
        warm = await provider(server, GPT, reply=Reply(chunk_delay_s=0.3))
        cold = await provider(server, GPT, state=SlotState.COLD)
        await client(server).chat.completions.create(model=GPT.id, messages=MESSAGES)
        assert len(warm.received) == 1 and cold.received == [] and cold.loads == []
        # The warm slot is now 80 % reserved: below the pre-warm threshold, though it still admits requests.
        await warm.set_slot(GPT.id, reserved_bytes=int(8 * GIB * 0.8))
        await eventually(lambda: cold.loads == [GPT.id])
        result = await client(server).chat.completions.create(model=GPT.id, messages=MESSAGES)
        assert result.choices[0].message.content == "Hello, world"
        assert counted(server.coordinator.metrics, "darkbloom_load_requests_total", model=GPT.id) == 1
        for agent in (warm, cold):
            await agent.stop()


async def test_a_prefill_backlog_prewarms_a_cold_provider_while_kv_is_still_plentiful():
    async with coordinator() as server:
        warm = await provider(server, GPT)
        cold = await provider(server, GPT, state=SlotState.COLD)
        await warm.set_slot(GPT.id, num_running=1, num_waiting=1)
        await eventually(lambda: warm.is_heard(server), what="the coordinator applied the heartbeat")
        # The pre-warm decision is taken as the heartbeat is applied: one prompt waiting on one slot is
        # not yet a backlog, so no load was planned.
        assert counted(server.coordinator.metrics, "darkbloom_load_requests_total", model=GPT.id) == 0
        await warm.set_slot(GPT.id, num_running=1, num_waiting=3)  # KV still ~all free
        await eventually(lambda: cold.loads == [GPT.id])
        assert counted(server.coordinator.metrics, "darkbloom_load_requests_total", model=GPT.id) == 1
        for agent in (warm, cold):
            await agent.stop()


async def test_a_503_says_why_no_provider_can_serve_the_request_and_a_request_too_large_for_all_is_a_400():
    async with coordinator() as server:
        requests = client(server)
        with pytest.raises(openai.InternalServerError) as nobody:
            await requests.chat.completions.create(model=GEMMA.id, messages=MESSAGES)  # in the catalog, no provider
        assert nobody.value.status_code == 503 and "no connected provider serves gemma-4-26b" in nobody.value.message
        small = await provider(server, GPT)
        too_big = await provider(server, GEMMA, state=SlotState.COLD,
                                 models=[entry_for(GEMMA, fits=False, fit_reason="needs 24.33 GiB, cap 14.00 GiB")])
        with pytest.raises(openai.BadRequestError) as context:
            await requests.chat.completions.create(model=GPT.id, messages=MESSAGES, max_tokens=GPT.max_context)
        assert context.value.body["param"] == "max_tokens" and "context a connected provider serves is 131072" \
            in context.value.message
        with pytest.raises(openai.InternalServerError) as fits:
            await requests.chat.completions.create(model=GEMMA.id, messages=MESSAGES)
        assert "does not fit this machine: needs 24.33 GiB" in fits.value.message
        assert small.received == [] and too_big.received == []
        for agent in (small, too_big):
            await agent.stop()


async def test_the_capacity_endpoint_explains_every_providers_state():
    async with coordinator() as server:
        running = await provider(server, GPT, reply=Reply(chunk_delay_s=0.5))
        idle = await provider(server, GPT)
        cold = await provider(server, GPT, state=SlotState.COLD)
        never = await provider(server, GPT, state=SlotState.COLD, models=[entry_for(GPT, fits=False,
                                                                                    fit_reason="16 GiB is too small")])
        await running.set_slot(GPT.id, state=SlotState.RUNNING, num_running=1, reserved_bytes=GIB)
        async with httpx.AsyncClient(base_url=server.base_url) as http:
            report = (await http.get("/v1/models/capacity")).json()["data"][0]
        states = {row["provider_id"]: (row["state"], row["reason"]) for row in report["details"]}
        assert report["providers"] == {"running": 1, "idle": 1, "loading": 0, "cold_fits": 1, "cold_no_room": 0,
                                       "draining": 0, "never_fits": 1}
        assert states[running.provider_id] == ("running", "1 running, 0 waiting")
        assert states[idle.provider_id] == ("idle", "loaded, no requests")
        assert states[cold.provider_id][0] == "cold_fits" and "left for KV" in states[cold.provider_id][1]
        assert report["never_fits"] == [{"provider_id": never.provider_id,
                                         "reason": "does not fit this machine: 16 GiB is too small"}]
        margin = int(8 * GIB * 0.05)
        assert report["free_kv_bytes"] == (8 * GIB - margin - GIB) + (8 * GIB - margin)
        assert report["queue_depth"] == 0
        for agent in (running, idle, cold, never):
            await agent.stop()


def test_a_provider_without_a_kv_layout_is_admitted_for_with_the_catalogs_spec_and_unknown_ones_never():
    router = Router(catalog=CATALOG)
    reg = register(GPT)
    reg = reg.model_copy(update={"models": (entry_for(GPT, layout=False),
                                            entry_for(GPT, layout=False).model_copy(update={"id": "mystery"}))})
    provider_ = router.connect(reg, lambda frame: None)
    assert provider_.offers[GPT.id].spec.kv_layers == GPT.kv_layers
    assert provider_.offers["mystery"].spec is None
    assert "no kv_layout" in provider_.offers["mystery"].spec_error


def test_one_routing_decision_checks_admission_only_until_a_warm_slot_admits():
    router = Router()
    sent = []
    providers = [router.connect(register(GPT), sent.append) for _ in range(20)]
    for i, p in enumerate(providers):
        router.receive(p, heartbeat(1, GPT.id, 8 * GIB, i * 100 * 2**20, 0))
    exchange = Exchange("r1", body(256), Ask(GPT.id, 300, 40, 256), 0.0)
    placement = router.try_dispatch(exchange)
    assert exchange.provider is providers[0]  # equally idle, none sent a request yet: the first filed
    assert len(placement.admit) == 1 and placement.num_unchecked == 19
    assert sent[-1].request_id == "r1" and sent[-1].reservation.prompt_tokens == 300


def test_equally_busy_slots_take_turns_and_a_claim_of_more_free_kv_wins_no_tie():
    router = Router()
    providers = [router.connect(register(GPT), lambda frame: None) for _ in range(4)]
    for i, p in enumerate(providers):  # the last one claims 64x the KV of the others, all idle
        router.receive(p, heartbeat(1, GPT.id, (512 if i == 3 else 8) * GIB, 0, 0))
    chosen = []
    for n in range(8):
        exchange = Exchange(f"r{n}", body(64), Ask(GPT.id, 100, 20, 64), 0.0)
        router.try_dispatch(exchange)
        chosen.append(providers.index(exchange.provider))
        router.receive(exchange.provider, heartbeat(2 + n, GPT.id, (512 if chosen[-1] == 3 else 8) * GIB, 0, 0))
        exchange.provider.offers[GPT.id].pending.end(exchange.request_id)  # done: the slot is idle again
    assert sorted(chosen[:4]) == [0, 1, 2, 3] and chosen[4:] == chosen[:4]  # round robin, the big claim included


def test_a_heartbeat_that_undercounts_its_rows_hides_no_send_made_after_it():
    router = Router()
    lying = router.connect(register(GPT), lambda frame: None)
    router.receive(lying, heartbeat(1, GPT.id, 8 * GIB, 0, 0))
    for n in range(3):  # three requests it accepts, then a heartbeat saying it runs none of them
        exchange = Exchange(f"old{n}", body(64), Ask(GPT.id, 100, 20, 64), 0.0)
        router.try_dispatch(exchange)
        router.receive(lying, InferenceAccepted(request_id=exchange.request_id))
    router.receive(lying, heartbeat(2, GPT.id, 8 * GIB, 0, 0))
    for n in range(3):  # they end: credits for three rows its heartbeat never counted
        lying.offers[GPT.id].pending.end(f"old{n}")
    honest = router.connect(register(GPT), lambda frame: None)
    router.receive(honest, heartbeat(1, GPT.id, 8 * GIB, 0, 0))
    chosen = []
    for n in range(4):
        exchange = Exchange(f"r{n}", body(64), Ask(GPT.id, 100, 20, 64), 0.0)
        router.try_dispatch(exchange)
        chosen.append("lying" if exchange.provider is lying else "honest")
    # Netting the credits against its new sends would have shown it idle for three more: honest, lying x3.
    assert chosen == ["honest", "lying", "honest", "lying"]
    assert lying.offers[GPT.id].pending.load_delta(0) == 2  # its two new sends, nothing taken back


def test_a_prompt_only_the_conservative_estimate_finds_too_long_is_still_sent_for_the_agent_to_decide():
    router = Router()
    agent = router.connect(register(GPT), lambda frame: None)
    router.receive(agent, heartbeat(1, GPT.id, 8 * GIB, 0, 0))
    maybe = Exchange("r1", body(100), Ask(GPT.id, 140_000, 50_000, 100), 0.0)  # estimate > context > floor
    placement = router.try_dispatch(maybe)
    assert maybe.provider is agent and placement.best.is_uncertain
    never = Exchange("r2", body(100), Ask(GPT.id, 400_000, 140_000, 100), 0.0)  # even the floor is too long
    placement = router.try_dispatch(never)
    assert never.provider is None and not placement.can_ever
    assert "exceeds gpt-oss-20b's context of 131072" in placement.why_never()


def test_the_prompt_estimate_errs_high_for_holds_and_the_floor_errs_low_for_refusals():
    english = ChatCompletionBody(messages=(ChatMessage(role="system", content="Be brief."),
                                    ChatMessage(role="user", content="word " * 240)))
    cjk = ChatCompletionBody(messages=(ChatMessage(role="user", content="漢字" * 300),))
    assert estimate_prompt(english) == PromptEstimate(tokens=96 + 8 + 3 + 8 + 400, floor_tokens=2 + 150,
                                                      max_tokens=256 + 40 + 9 + 40 + 1200)  # bytes: a true bound
    assert estimate_prompt(cjk) == PromptEstimate(tokens=96 + 8 + 600, floor_tokens=225,  # ~1 token per character
                                                  max_tokens=256 + 40 + 1800)


def test_a_slot_running_the_engines_request_limit_counts_as_full_without_asking_the_agent():
    router = Router()
    busy, spare = (router.connect(register(GPT), lambda frame: None) for _ in range(2))
    for agent, running in ((busy, 32), (spare, 31)):
        status = heartbeat(1, GPT.id, 8 * GIB, 0, 0).slots[0].model_copy(update={"num_running": running})
        router.receive(agent, heartbeat(1, GPT.id, 8 * GIB, 0, 0).model_copy(update={"slots": (status,)}))
    placement = router.placement(Ask(GPT.id, 100, 40, 64))
    assert placement.full == {busy.provider_id: "gpt-oss-20b is running its limit of 32 requests"}
    assert [option.provider for option in placement.admit] == [spare]
