"""Images end to end: the official `openai` SDK → the coordinator → a real agent serving the tiny gemma-4 with
vision (mlx-vlm's tower in our batch), over a real websocket, billed in a real SQLite ledger."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import replace
from pathlib import Path

import httpx
import openai
import pytest

from agent.coordinator.billing.accounts import Accounts
from agent.coordinator.billing.keys import create_key
from agent.coordinator.billing.ledger import ledger_sum
from agent.coordinator.billing.pricing import DEFAULT_PRICES
from agent.vision_tokens import VisionRule
from tests.provider_support import FAST, GPT, coordinator, provider
from tests.test_structured_outputs_e2e import tiny_agent
from tests.vision_support import VISION_MODEL, image_part, image_server, noise_image

pytest.importorskip("mlx_vlm")  # scripts/setup.sh installs it; test_tiny_vision's pin test fails without it

RULE = VisionRule(70, 16, 3)
CREDIT = 10_000_000
# FAST's 2 s first-token cap is for scripted providers; a real agent encoding images on a shared 2-core CPU
# needs more, and a timeout here would test the machine, not the code.
SETTINGS = replace(FAST, first_token_timeout_s=60.0, stall_timeout_s=60.0)


@contextlib.asynccontextmanager
async def served(tmp_path: Path, tiny_models_dir: Path, settings=SETTINGS):
    db = tmp_path / "accounts.sqlite"
    key = create_key(db, "someone").key
    accounts = Accounts.from_db(db)
    accounts.credit("someone", CREDIT)
    async with coordinator(settings, accounts=accounts) as server, \
            tiny_agent(server, VISION_MODEL, tiny_models_dir / VISION_MODEL) as engine:
        client = openai.AsyncOpenAI(base_url=server.base_url + "/v1", api_key=key, max_retries=0)
        yield server, engine, client, accounts, db
    assert accounts.flush()  # every settlement on disk before the test reads the ledger


def asking(*parts: dict, text: str = "What is in the picture?") -> list[dict]:
    return [{"role": "user", "content": [{"type": "text", "text": text}, *parts]}]


def template_tokens(engine, messages: list[dict]) -> int:
    from agent.engine import GenerationRequest

    request = GenerationRequest.from_openai("count", VISION_MODEL, {"messages": messages})
    return len(engine.backend.chat_format(VISION_MODEL).encode(request).token_ids)


async def test_one_and_two_images_stream_answers_and_prompt_tokens_are_text_plus_soft_tokens(tmp_path,
                                                                                           tiny_models_dir):
    one, two = noise_image(96, 144, seed=1), noise_image(300, 100, seed=2)
    async with served(tmp_path, tiny_models_dir) as (server, engine, client, accounts, db):
        usages = []
        for images, sizes in (([one], [(144, 96)]), ([one, two], [(144, 96), (100, 300)])):
            messages = asking(*(image_part(image) for image in images))
            stream = await client.chat.completions.create(model=VISION_MODEL, messages=messages, max_tokens=8,
                                                          temperature=0, stream=True,
                                                          stream_options={"include_usage": True})
            chunks = [chunk async for chunk in stream]
            text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            usage = chunks[-1].usage
            expected = template_tokens(engine, messages) - len(images) + sum(RULE.prompt_tokens(h, w) for h, w in sizes)
            assert text and usage.prompt_tokens == expected and usage.completion_tokens >= 1
            usages.append(usage)
        both = await client.chat.completions.create(model=VISION_MODEL, messages=asking(image_part(one)), n=2,
                                                    max_tokens=4, temperature=0.8, seed=3)
        assert len(both.choices) == 2 and both.usage.prompt_tokens == usages[0].prompt_tokens  # the prompt once
        usages.append(both.usage)
        async with httpx.AsyncClient() as http_client:
            capacity = (await http_client.get(server.base_url + "/v1/models/capacity",
                                              headers={"authorization": f"Bearer {client.api_key}"})).json()
        row = next(r for r in capacity["data"] if r["model"] == VISION_MODEL)
        assert row["vision_slots"] == 1 and row["details"][0]["modalities"] == ["text", "image"]
        slot = engine.snapshot().slot(VISION_MODEL)
        assert slot.kv_reserved_bytes == 0 and slot.kv_used_bytes == 0
    charged = sum(DEFAULT_PRICES.cost_micros(VISION_MODEL, u.prompt_tokens, u.completion_tokens) for u in usages)
    assert charged > 0 and accounts.balance_micros("someone") == CREDIT - charged == ledger_sum(db, "someone")
    accounts.close()


async def test_bad_images_are_400s_naming_the_part_and_nothing_is_held_reserved_or_charged(tmp_path,
                                                                                         tiny_models_dir):
    settings = replace(SETTINGS, max_image_pixels=500_000)
    async with served(tmp_path, tiny_models_dir, settings) as (server, engine, client, accounts, db):
        gpt = await provider(server, GPT)
        cases = [
            (VISION_MODEL, {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgoAAAANSUhEUg=="}},
             "cannot be decoded"),
            (VISION_MODEL, image_part(noise_image(800, 800, seed=3)), "over the limit of 500000 pixels"),
            (VISION_MODEL, {"type": "image_url", "image_url": {"url": "http://127.0.0.1:9/cat.png"}},
             "private, loopback or link-local"),
            (VISION_MODEL, {"type": "image_url", "image_url": {"url": "http://169.254.169.254/latest"}},
             "private, loopback or link-local"),
            (GPT.id, image_part(noise_image(64, 64, seed=4)), "does not take images"),
        ]
        for model, part, complaint in cases:
            with pytest.raises(openai.BadRequestError) as refused:
                await client.chat.completions.create(model=model, messages=asking(part), max_tokens=8)
            body = refused.value.body
            assert body["param"] == "messages[0].content[1]" and complaint in body["message"], body
        assert gpt.received == []
        slot = engine.snapshot().slot(VISION_MODEL)
        assert slot.kv_reserved_bytes == 0 and slot.num_running == 0 and slot.num_waiting == 0
        assert accounts.num_holds == 0 and accounts.held_micros("someone") == 0
        await gpt.stop()
    assert accounts.balance_micros("someone") == CREDIT == ledger_sum(db, "someone")
    accounts.close()


async def test_an_image_url_is_fetched_by_the_coordinator_when_the_operator_allows_loopback(tmp_path,
                                                                                          tiny_models_dir):
    picture = noise_image(96, 144, seed=1)
    routes = {"/cat.png": (200, {"content-type": "image/png"}, picture),
              "/moved": (302, {"location": "/cat.png"}, b""),
              "/page": (200, {"content-type": "text/html"}, b"<html></html>"),
              "/huge.png": (200, {"content-type": "image/png"}, b"\x89PNG" + b"0" * 300_000)}
    settings = replace(SETTINGS, image_fetch_allowed_networks=("127.0.0.0/8",), max_image_bytes=200_000)
    with image_server(routes) as base:
        async with served(tmp_path, tiny_models_dir, settings) as (server, engine, client, accounts, db):
            inline = await client.chat.completions.create(model=VISION_MODEL, messages=asking(image_part(picture)),
                                                          max_tokens=6, temperature=0)
            for path in ("/cat.png", "/moved"):
                fetched = await client.chat.completions.create(
                    model=VISION_MODEL, messages=asking({"type": "image_url", "image_url": {"url": base + path}}),
                    max_tokens=6, temperature=0)
                assert fetched.choices[0].message.content == inline.choices[0].message.content
                assert fetched.usage.prompt_tokens == inline.usage.prompt_tokens
            for path, complaint in (("/page", "content-type is 'text/html'"), ("/huge.png", "over the limit"),
                                    ("/gone.png", "HTTP 404")):
                with pytest.raises(openai.BadRequestError) as refused:
                    await client.chat.completions.create(
                        model=VISION_MODEL, messages=asking({"type": "image_url", "image_url": {"url": base + path}}),
                        max_tokens=6)
                assert complaint in refused.value.body["message"] and refused.value.body["param"] == \
                    "messages[0].content[1]"
    assert accounts.balance_micros("someone") < CREDIT  # the three served requests were charged
    accounts.close()


async def test_through_the_sdk_a_seeded_text_request_is_unchanged_by_two_image_requests_and_a_cancel_frees_kv(
        tmp_path, tiny_models_dir):
    from tests.provider_support import eventually

    text = dict(model=VISION_MODEL, messages=[{"role": "user", "content": "Tell me about the sea."}], max_tokens=10,
                temperature=0.9, seed=7)
    images = [dict(model=VISION_MODEL, messages=asking(image_part(noise_image(120, 90 + 40 * i, seed=i))),
                   max_tokens=10, temperature=0) for i in range(2)]
    async with served(tmp_path, tiny_models_dir) as (server, engine, client, accounts, db):
        alone = await client.chat.completions.create(**text)
        together = await asyncio.gather(client.chat.completions.create(**images[0]),
                                        client.chat.completions.create(**text),
                                        client.chat.completions.create(**images[1]))
        assert together[1].choices[0].message.content == alone.choices[0].message.content
        counts = lambda usage: (usage.prompt_tokens, usage.completion_tokens)  # noqa: E731
        assert counts(together[1].usage) == counts(alone.usage)
        assert together[1].usage.prompt_tokens_details.cached_tokens == alone.usage.prompt_tokens - 1  # reused
        assert together[0].usage.prompt_tokens_details.cached_tokens == 0  # an image prompt never is

        stream = await client.chat.completions.create(**{**images[0], "max_tokens": 4000}, stream=True)
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                break
        assert engine.snapshot().slot(VISION_MODEL).kv_reserved_bytes > 0
        await stream.close()  # the client leaves: the coordinator cancels at the agent
        await eventually(lambda: engine.snapshot().slot(VISION_MODEL).kv_reserved_bytes == 0, timeout=20,
                         what="the cancelled image request's KV to be freed")
        slot = engine.snapshot().slot(VISION_MODEL)
        assert slot.kv_used_bytes == 0 and slot.num_running == 0
    accounts.close()


async def test_an_image_through_messages_and_responses_costs_the_same_prompt_tokens_as_through_chat(tmp_path,
                                                                                                  tiny_models_dir):
    import base64

    import anthropic

    picture = noise_image(96, 144, seed=1)
    encoded = base64.b64encode(picture).decode()
    async with served(tmp_path, tiny_models_dir) as (server, engine, client, accounts, db):
        chat = await client.chat.completions.create(model=VISION_MODEL, messages=asking(image_part(picture)),
                                                    max_tokens=4, temperature=0)
        claude = anthropic.AsyncAnthropic(base_url=server.base_url, api_key=client.api_key, max_retries=0)
        # Greedy, as the other two (random weights sample an empty answer now and then); sent as a body field:
        # the anthropic SDK refuses `temperature` as an argument.
        asked = [{"role": "user", "content": [{"type": "text", "text": "What is in the picture?"},
                                              {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                                                           "data": encoded}}]}]
        message = await claude.messages.create(model=VISION_MODEL, max_tokens=4, messages=asked,
                                               extra_body={"temperature": 0})
        response = await client.responses.create(model=VISION_MODEL, max_output_tokens=4, temperature=0, input=[
            {"role": "user", "content": [{"type": "input_text", "text": "What is in the picture?"},
                                         {"type": "input_image", "image_url": f"data:image/png;base64,{encoded}"}]}])
    assert message.usage.input_tokens == response.usage.input_tokens == chat.usage.prompt_tokens
    assert chat.usage.prompt_tokens > template_tokens(engine, asking({"type": "text", "text": ""})) + 2
    assert message.content and response.output
    accounts.close()
