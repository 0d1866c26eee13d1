"""Routing by prefix: the coordinator keys a request by its messages (a chained hash; it never tokenizes) and
prefers the provider it sent the conversation's previous turn to, or the one an explicit `prompt_cache_key`
went to, while that provider is not much busier than the least busy one; otherwise it places by load."""

from __future__ import annotations

import openai
import pytest

from agent.coordinator.routing.prefix_routes import PrefixRoutes
from agent.wire.chat_body import MAX_PROMPT_CACHE_KEY_CHARS, ChatCompletionBody
from agent.wire.prefix_chain import prefix_keys
from tests.provider_support import GPT, coordinator, eventually, provider


def body(messages: list[dict], **fields) -> ChatCompletionBody:
    return ChatCompletionBody.model_validate({"model": GPT.id, "messages": messages, **fields})


TURN_1 = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a sea."}]
TURN_2 = TURN_1 + [{"role": "assistant", "content": "The Baltic."}, {"role": "user", "content": "Another?"}]


def test_the_next_turns_chain_holds_the_previous_requests_deepest_key():
    first, second = prefix_keys(body(TURN_1)), prefix_keys(body(TURN_2))
    assert len(first) == 2 and len(second) == 4
    assert second[2] == first[0]  # the previous request's whole history is a prefix of this one's
    assert prefix_keys(body(TURN_1)) == first  # deterministic


def test_what_the_template_renders_before_the_messages_is_part_of_the_chain():
    tool = {"type": "function", "function": {"name": "sea", "parameters": {"type": "object"}}}
    plain, with_tool = prefix_keys(body(TURN_1)), prefix_keys(body(TURN_1, tools=[tool]))
    effort = prefix_keys(body(TURN_1, reasoning_effort="high"))
    assert len({plain[-1], with_tool[-1], effort[-1]}) == 3


def test_an_explicit_prompt_cache_key_comes_first_and_is_bounded():
    keys = prefix_keys(body(TURN_1), "user-42")
    assert keys[1:] == prefix_keys(body(TURN_1)) and keys[0] != prefix_keys(body(TURN_1), "user-43")[0]
    with pytest.raises(ValueError):
        body(TURN_1, prompt_cache_key="k" * (MAX_PROMPT_CACHE_KEY_CHARS + 1))


def test_the_route_map_keeps_to_its_bound_least_recently_used_first():
    routes = PrefixRoutes(max_keys=4)
    for i in range(6):
        routes.record([f"k{i}"], f"p{i}")
    assert len(routes) == 4 and routes.find(["k0"]) is None and routes.find(["k9", "k5"]) == ("p5", 1)
    routes.forget("p5")
    assert routes.find(["k5"]) is None


def sdk(server) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=server.base_url + "/v1", api_key="local", max_retries=0)


async def all_heard(server, num_agents: int) -> None:
    offers = lambda: server.coordinator.router.registry.offers(GPT.id)  # noqa: E731
    await eventually(lambda: len(offers()) == num_agents and all(o.status is not None for _, o in offers()),
                     what="every agent's heartbeat")


async def show_running(server, agent, num_running: int) -> None:
    """The agent's heartbeat shows `num_running` rows, and the coordinator has read it."""
    await agent.set_slot(GPT.id, num_running=num_running)
    offer = server.coordinator.router.registry.get(agent.provider_id).offers[GPT.id]
    await eventually(lambda: offer.status.num_running == num_running, what="the heartbeat")


def served_by(agents, request_id: str) -> int:
    return next(i for i, agent in enumerate(agents) if any(r.request_id == request_id for r in agent.received))


async def test_a_conversations_next_turn_goes_back_to_the_provider_that_served_the_last_one():
    async with coordinator() as server:
        agents = [await provider(server, GPT) for _ in range(3)]
        await all_heard(server, 3)
        client, holders = sdk(server), []
        for talk in range(3):
            history = [{"role": "user", "content": f"Talk {talk}: name a sea."}]
            for turn in range(3):
                result = await client.chat.completions.create(model=GPT.id, messages=history, max_tokens=8)
                holder = served_by(agents, result.id)
                holders.append((talk, holder))
                # By load alone the next turn would go elsewhere: the holder now shows a row (within the slack).
                await show_running(server, agents[holder], 1)
                history += [{"role": "assistant", "content": result.choices[0].message.content},
                            {"role": "user", "content": f"And turn {turn}?"}]
        for agent in agents:
            await agent.stop()
    by_talk = {talk: {agent for t, agent in holders if t == talk} for talk, _ in holders}
    assert all(len(agents_of_talk) == 1 for agents_of_talk in by_talk.values())  # every turn on one provider
    assert len(set.union(*by_talk.values())) > 1  # and the first turns were placed by load (not all on one)


async def test_a_prompt_cache_key_sends_different_conversations_to_one_provider_until_it_is_busier():
    async with coordinator() as server:
        agents = [await provider(server, GPT) for _ in range(2)]
        await all_heard(server, 2)
        client = sdk(server)
        first = await client.chat.completions.create(model=GPT.id, messages=TURN_1, max_tokens=8,
                                                     extra_body={"prompt_cache_key": "tenant-7"})
        holder = served_by(agents, first.id)
        await show_running(server, agents[holder], 1)  # by load alone, the next would go to the other one
        other = [{"role": "user", "content": "Something else entirely."}]
        again = await client.chat.completions.create(model=GPT.id, messages=other, max_tokens=8,
                                                     extra_body={"prompt_cache_key": "tenant-7"})
        assert served_by(agents, again.id) == holder
        assert all(r.body.prompt_cache_key is None for agent in agents for r in agent.received)  # not forwarded
        await show_running(server, agents[holder], 5)  # beyond the slack: placed by load instead
        busy = await client.chat.completions.create(model=GPT.id, messages=other, max_tokens=8,
                                                    extra_body={"prompt_cache_key": "tenant-7"})
        assert served_by(agents, busy.id) != holder
        for agent in agents:
            await agent.stop()


async def test_a_prompt_cache_key_too_long_or_not_a_string_is_a_400_naming_it():
    async with coordinator() as server:
        agent = await provider(server, GPT)
        client = sdk(server)
        for bad in ("k" * (MAX_PROMPT_CACHE_KEY_CHARS + 1), 42, ""):
            with pytest.raises(openai.BadRequestError) as refused:
                await client.chat.completions.create(model=GPT.id, messages=TURN_1, max_tokens=8,
                                                     extra_body={"prompt_cache_key": bad})
            assert "prompt_cache_key" in refused.value.message
        assert agent.received == []  # refused before any provider saw it
        await agent.stop()
