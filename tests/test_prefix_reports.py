"""The coordinator routes by the prefix chains agents report on their heartbeats (the real coordinator, scripted
providers over loopback websockets): a conversation's next turn goes to a provider that reports holding its
chain, even with no record of a dispatch there; at equal depth a report beats the record; a record goes stale
once the provider's heartbeat after the request does not report it; a provider that leaves takes its reports
with it. A provider that reports keys it does not hold gains only the load-bounded preference, and one that
reports garbage gets an error frame and keeps its link. Operators see each slot's hit rate, cached bytes and
evictions in /v1/models/capacity and /metrics."""

from __future__ import annotations

import json

import httpx
import openai

from agent.wire.chat_body import ChatCompletionBody
from agent.wire.prefix_chain import chain_key
from tests.provider_support import GPT, coordinator, eventually, provider

TURN_1 = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a sea."}]


def sdk(server) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=server.base_url + "/v1", api_key="local", max_retries=0)


def chain_of(messages: list[dict]) -> str:
    return chain_key(ChatCompletionBody.model_validate({"model": GPT.id, "messages": messages}))


def served_by(agents, request_id: str):
    return next(agent for agent in agents if any(r.request_id == request_id for r in agent.received))


async def heard(server, agent, **slot) -> None:
    """The agent's heartbeat shows `slot`'s fields, and the coordinator has applied it."""
    await agent.set_slot(GPT.id, **slot)
    await eventually(lambda: agent.is_heard(server), what="the heartbeat")


async def fleet(server, num: int):
    agents = [await provider(server, GPT) for _ in range(num)]
    await eventually(lambda: all(agent.is_heard(server) for agent in agents), what="every heartbeat")
    return agents


def next_turn(history: list[dict], reply: str) -> list[dict]:
    return history + [{"role": "assistant", "content": reply}, {"role": "user", "content": "Another?"}]


async def test_the_next_turn_goes_to_the_provider_that_reports_the_chain_without_any_record_of_it():
    async with coordinator() as server:
        agents = await fleet(server, 3)
        first = await sdk(server).chat.completions.create(model=GPT.id, messages=TURN_1, max_tokens=8)
        sender = served_by(agents, first.id)
        holder = next(agent for agent in agents if agent is not sender)
        router = server.coordinator.router
        router.prefixes.routes.forget(sender.provider_id)  # no record: only the report can say where it is
        # The holder reports the chain and shows a row: by load alone the next turn would go elsewhere.
        await heard(server, holder, prefix_chains=(chain_of(TURN_1),), num_running=1)
        assert router.prefixes.reports.holders(GPT.id, chain_of(TURN_1)) == {holder.provider_id}
        second = await sdk(server).chat.completions.create(
            model=GPT.id, messages=next_turn(TURN_1, first.choices[0].message.content), max_tokens=8)
        assert served_by(agents, second.id) is holder
        sources = router.metrics.prefix_sources
        assert sources.labels(GPT.id, "reported")._value.get() == 1
        assert router.metrics.prefix_routes.labels(GPT.id, "held")._value.get() == 1
        for agent in agents:
            await agent.stop()


async def test_at_equal_depth_a_report_beats_the_coordinators_record_and_a_deeper_record_beats_both():
    async with coordinator() as server:
        sender, other = await fleet(server, 2)
        await heard(server, other, prefix_chains=(chain_of(TURN_1),))
        prefixes = server.coordinator.router.prefixes
        deeper = next_turn(TURN_1, "The Baltic.")
        keys = [chain_of(next_turn(deeper, "x")), chain_of(deeper), chain_of(TURN_1)]
        prefixes.dispatched([chain_of(TURN_1)], sender.provider_id)  # where the coordinator sent that prompt
        choice = prefixes.prefer(GPT.id, keys[2:])
        assert (choice.provider_id, choice.depth, choice.source) == (other.provider_id, 0, "reported")
        prefixes.dispatched([chain_of(deeper)], sender.provider_id)  # a later dispatch, not yet heartbeated
        choice = prefixes.prefer(GPT.id, keys)
        assert (choice.provider_id, choice.depth, choice.source) == (sender.provider_id, 1, "recorded")
        await sender.stop()
        await other.stop()


async def test_a_record_is_stale_once_a_reporting_providers_heartbeat_after_the_request_does_not_report_it():
    async with coordinator() as server:
        reporting, silent = await fleet(server, 2)
        other = chain_of([{"role": "user", "content": "Another conversation."}])
        await heard(server, reporting, prefix_chains=(other,))  # it reports what it holds: its silence counts
        routes = server.coordinator.router.prefixes.routes
        for agent, talk in ((reporting, "a"), (silent, "b")):
            for each in (reporting, silent):  # each conversation placed on `agent`: the other one looks busy
                await heard(server, each, num_running=0 if each is agent else 9)
            messages = [{"role": "user", "content": f"Talk {talk}."}]
            answer = await sdk(server).chat.completions.create(model=GPT.id, messages=messages, max_tokens=8)
            assert served_by([agent], answer.id) is agent  # recorded there at dispatch (router._commit)
            await heard(server, agent)  # after the request ended, and without its chain
        assert routes.find([chain_of([{"role": "user", "content": "Talk a."}])]) is None  # stale: dropped
        # A provider that has never reported a key (an older agent, no prefix cache) says nothing by its silence.
        assert routes.find([chain_of([{"role": "user", "content": "Talk b."}])])[0] == silent.provider_id
        await reporting.stop()
        await silent.stop()


async def test_a_record_goes_when_the_provider_stops_reporting_the_key_it_reported():
    async with coordinator() as server:
        agents = await fleet(server, 1)
        first = await sdk(server).chat.completions.create(model=GPT.id, messages=TURN_1, max_tokens=8)
        routes = server.coordinator.router.prefixes.routes
        await heard(server, agents[0], prefix_chains=(chain_of(TURN_1),))
        assert routes.find([chain_of(TURN_1)])[0] == agents[0].provider_id == served_by(agents, first.id).provider_id
        await heard(server, agents[0], prefix_chains=())  # evicted
        assert routes.find([chain_of(TURN_1)]) is None
        assert server.coordinator.router.prefixes.prefer(GPT.id, [chain_of(TURN_1)]) is None
        await agents[0].stop()


async def test_a_provider_that_leaves_takes_its_reports_with_it():
    async with coordinator() as server:
        agents = await fleet(server, 2)
        await heard(server, agents[0], prefix_chains=(chain_of(TURN_1),))
        reports = server.coordinator.router.prefixes.reports
        assert reports.holders(GPT.id, chain_of(TURN_1)) == {agents[0].provider_id}
        await agents[0].drop()
        await eventually(lambda: server.coordinator.router.registry.get(agents[0].provider_id) is None)
        assert len(reports) == 0 and reports.reported(agents[0].provider_id, GPT.id) == frozenset()
        await agents[1].stop()


async def test_chains_reported_for_a_model_the_provider_did_not_register_are_not_indexed():
    async with coordinator() as server:
        agent, = await fleet(server, 1)
        await agent.set_slot("not-registered", prefix_chains=(chain_of(TURN_1),))
        await eventually(lambda: agent.is_heard(server), what="the heartbeat")
        reports = server.coordinator.router.prefixes.reports
        assert len(reports) == 0 and reports.holders("not-registered", chain_of(TURN_1)) == set()
        await agent.stop()


async def test_a_provider_claiming_every_chain_gets_only_the_load_bounded_preference():
    async with coordinator() as server:
        liar, honest = await fleet(server, 2)
        talks = [[{"role": "user", "content": f"Talk {i}."}] for i in range(6)]
        # It claims every conversation's prompt and is far busier than the slack allows.
        await heard(server, liar, prefix_chains=tuple(chain_of(t) for t in talks), num_running=9)
        await heard(server, honest, num_running=0)
        client = sdk(server)
        for talk in talks:
            await client.chat.completions.create(model=GPT.id, messages=next_turn(talk, "x"), max_tokens=8)
        assert len(liar.received) == 0 and len(honest.received) == len(talks)
        assert server.coordinator.router.metrics.prefix_routes.labels(GPT.id, "elsewhere")._value.get() == len(talks)
        await liar.stop()
        await honest.stop()


async def test_a_heartbeat_with_garbage_prefix_chains_gets_an_error_frame_and_the_link_stays():
    async with coordinator() as server:
        agent, = await fleet(server, 1)
        await heard(server, agent, prefix_chains=(chain_of(TURN_1),))
        for bad in (["zz" * 16], ["0" * 31], ["0" * 32] * 10_000, 7, [{"key": 1}]):
            frame = agent.heartbeat_frame().model_dump(mode="json")
            frame["slots"][0]["prefix_chains"] = bad
            await agent.send(json.dumps(frame))
        await eventually(lambda: len(agent.errors) == 5, what="an error frame for each")
        assert all(e["code"] == "invalid_field" and "prefix_chains" in e.get("field", "") for e in agent.errors)
        router = server.coordinator.router
        assert router.prefixes.reports.holders(GPT.id, chain_of(TURN_1)) == {agent.provider_id}  # the last good one
        answer = await sdk(server).chat.completions.create(model=GPT.id, messages=TURN_1, max_tokens=8)
        assert answer.choices[0].message.content  # still served over the same link
        await agent.stop()


async def test_capacity_and_metrics_show_each_slots_hit_rate_cached_bytes_and_evictions():
    async with coordinator() as server:
        a, b = await fleet(server, 2)
        await heard(server, a, cached_bytes=1000, prefix_hit_rate=0.5, prefix_hit_tokens=300, prefix_evictions=2,
                    prefix_chains=(chain_of(TURN_1),))
        await heard(server, b, cached_bytes=24, prefix_hit_rate=0.25, prefix_hit_tokens=20, prefix_evictions=1)
        async with httpx.AsyncClient(base_url=server.base_url) as http:
            capacity = (await http.get("/v1/models/capacity")).json()["data"][0]
            metrics = (await http.get("/metrics")).text
        assert (capacity["kv_cached_bytes"], capacity["prefix_hit_tokens"], capacity["prefix_evictions"]) == \
            (1024, 320, 3)
        row = next(d for d in capacity["details"] if d["provider_id"] == a.provider_id)
        assert (row["kv_cached_bytes"], row["prefix_hit_rate"], row["prefix_hit_tokens"], row["prefix_evictions"],
                row["num_prefix_chains"]) == (1000, 0.5, 300, 2, 1)
        assert f'darkbloom_prefix_hit_tokens{{model="{GPT.id}"}} 320.0' in metrics
        assert f'darkbloom_prefix_evictions{{model="{GPT.id}"}} 3.0' in metrics
        assert f'darkbloom_kv_cached_bytes{{model="{GPT.id}"}} 1024.0' in metrics
        assert f'darkbloom_provider_prefix_hit_rate{{model="{GPT.id}",provider_id="{a.provider_id}"}} 0.5' in metrics
        assert f'darkbloom_provider_prefix_chains{{model="{GPT.id}",provider_id="{a.provider_id}"}} 1.0' in metrics
        await a.stop()
        await b.stop()


async def test_coordinator_status_prints_each_slots_prefix_cache_beside_its_load():
    import asyncio

    from typer.testing import CliRunner

    from agent.cli.main import app

    async with coordinator() as server:
        agent, = await fleet(server, 1)
        await heard(server, agent, cached_bytes=3 * 2**20, prefix_hit_rate=0.75, prefix_hit_tokens=1234,
                    prefix_evictions=5, prefix_chains=(chain_of(TURN_1),))
        result = await asyncio.to_thread(CliRunner().invoke, app, ["coordinator", "status", "--url", server.base_url])
        as_json = await asyncio.to_thread(CliRunner().invoke, app, ["coordinator", "status", "--url", server.base_url,
                                                                    "--json"])
        await agent.stop()
    assert result.exit_code == 0, result.output
    row = next(line for line in result.output.splitlines() if line.startswith(agent.provider_id))
    assert "3.00 MiB" in row and row.split()[9:13] == ["75%", "1,234", "5", "1"]  # hit rate, tokens, evictions, chains
    assert "1,234 tokens served from it, 5 evictions" in result.output
    printed = as_json.output[as_json.output.index("{\n"):]  # after the in-process coordinator's own log lines
    assert json.loads(printed)["data"][0]["details"][0]["prefix_hit_tokens"] == 1234


def test_coordinator_status_without_a_coordinator_is_one_clear_error():
    from typer.testing import CliRunner

    from agent.cli.main import app

    result = CliRunner().invoke(app, ["coordinator", "status", "--url", "http://127.0.0.1:9"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "could not read" in result.output and "--url" in result.output
