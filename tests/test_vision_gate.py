"""The gate with vision: a Mac that affords the tower loads with it, one that does not loads text-only and says
so; register, heartbeats, doctor and the coordinator's routing all carry which slots see (FakeEngine, scripted
providers: none of this is about MLX)."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from agent.admission import GIB, load_gate
from agent.catalog import load_catalog
from agent.cli.reports import doctor_report, format_doctor_report
from agent.coordinator.image_inputs import ImageFacts, ImageInputs
from agent.coordinator.routing.placement import Ask, place
from agent.coordinator.settings import CoordinatorSettings
from agent.daemon.handler import LinkHandler, MemoryReading
from agent.engine import FakeEngine
from agent.vision_tokens import VisionRule
from agent.wire.frames import Hardware, SlotState, VisionOffer

GEMMA = load_catalog()["gemma-4-26b"]
SEEING = replace(GEMMA, vision=VisionRule(280, 16, 3), vision_weights_bytes=1_100_000_000,
                 vision_reserve_bytes=800_000_000)


def memory_between_text_and_vision() -> int:
    """A machine on which gemma loads text-only but not with its tower (searched in 128 MiB steps)."""
    memory = 16 * GIB
    while not load_gate(GEMMA, total_memory_bytes=memory).fits:
        memory += GIB // 8
    assert not load_gate(SEEING.with_vision(), total_memory_bytes=memory).fits
    return memory


def load(memory_bytes: int):
    async def scenario():
        engine = FakeEngine({GEMMA.id: SEEING}, memory_bytes=memory_bytes, time_scale=0.001)
        async with engine:
            return await engine.load(GEMMA.id)
    return asyncio.run(scenario())


def test_a_mac_that_cannot_afford_the_tower_loads_text_only_and_says_why():
    slot = load(memory_between_text_and_vision())
    assert slot.state is SlotState.IDLE and slot.modalities == ("text",)
    assert slot.vision_reason.startswith("loaded text-only: with its vision tower it needs")
    assert slot.weights_bytes == SEEING.weights_bytes


def test_a_mac_that_affords_it_loads_with_vision_and_counts_the_tower_and_its_reserve_exactly():
    with_vision, text_budget = load(64 * GIB), load_gate(SEEING, total_memory_bytes=64 * GIB).kv_budget_bytes
    assert with_vision.modalities == ("text", "image") and with_vision.vision_reason == ""
    assert with_vision.weights_bytes == SEEING.weights_bytes + SEEING.vision_weights_bytes
    assert text_budget - with_vision.kv_budget_bytes == SEEING.vision_weights_bytes + SEEING.vision_reserve_bytes


def test_register_offers_vision_per_machine_and_heartbeats_say_which_slots_see():
    async def scenario(memory_bytes: int):
        engine = FakeEngine({GEMMA.id: SEEING}, memory_bytes=memory_bytes, time_scale=0.001)
        async with engine:
            handler = LinkHandler(engine, {GEMMA.id: SEEING}, Hardware(chip="Fake M4", memory_bytes=memory_bytes,
                                                                         gpu_cores=10),
                                  lambda: MemoryReading(memory_bytes, memory_bytes // 2))
            await engine.load(GEMMA.id)
            entry = handler.register_frame().models[0]
            status = next(s for s in engine.snapshot().slots)
            return entry, handler._slot_status(status)

    big_entry, big_status = asyncio.run(scenario(64 * GIB))
    small_entry, small_status = asyncio.run(scenario(memory_between_text_and_vision()))
    assert big_entry.vision.fits and big_entry.vision.max_soft_tokens == 280
    assert big_entry.vision.weights_bytes == SEEING.vision_weights_bytes and big_status.modalities == ("text", "image")
    assert not small_entry.vision.fits and small_entry.fits and small_status.modalities == ("text",)


def test_doctor_shows_both_options_for_a_model_with_vision():
    small = doctor_report({GEMMA.id: SEEING}, memory_between_text_and_vision())
    big = doctor_report({GEMMA.id: SEEING}, 64 * GIB)
    assert small["models"][0]["fits"] and not small["models"][0]["vision"]["fits"]
    assert "with vision: loads text-only" in format_doctor_report(small)
    assert big["models"][0]["vision"]["fits"] and "with vision: loads with it" in format_doctor_report(big)
    assert doctor_report({GEMMA.id: GEMMA}, 64 * GIB)["models"][0]["vision"] is None


async def test_image_requests_are_routed_only_to_slots_that_see_and_a_claimed_rule_is_bounded():
    from agent.testing.model_entry import entry_for
    from tests.provider_support import FAST, coordinator, eventually, provider

    async with coordinator(FAST) as server:
        blind = await provider(server, GEMMA)
        router = server.coordinator.router
        inputs = ImageInputs(router.settings, router.registry)
        assert inputs.rules(GEMMA.id) == set()  # no provider with vision: image requests are 400s
        claims = VisionOffer(max_soft_tokens=60_000, patch_size=16, pooling_kernel_size=3, weights_bytes=1,
                             reserve_bytes=1, fits=True, fit_reason="fits")
        seeing = await provider(server, GEMMA, models=[entry_for(GEMMA).model_copy(update={"vision": claims})])
        await seeing.set_slot(GEMMA.id, modalities=("text", "image"))
        await eventually(lambda: seeing.is_heard(server) and blind.is_heard(server))
        offers = router.registry.offers(GEMMA.id)
        ask = Ask(GEMMA.id, 500, 100, 64, num_images=1)
        placement = place(offers, ask, router.settings, now=router.clock(), lazy=False)
        assert [o.provider.provider_id for o in placement.admit] == [seeing.provider_id]
        assert "text-only" in placement.never[blind.provider_id] or "no vision" in placement.never[blind.provider_id]
        text = place(offers, replace(ask, num_images=0), router.settings, now=router.clock(), lazy=False)
        assert len(text.admit) == 2
        # A provider's rule is a claim: its per-image budget is held to the coordinator's setting.
        assert {r.max_soft_tokens for r in inputs.rules(GEMMA.id)} == {CoordinatorSettings().max_soft_tokens_per_image}
        bounded = VisionRule(1120, 16, 3)
        assert inputs.prompt_tokens(GEMMA.id, (ImageFacts("m", 4000, 4000),)) == bounded.prompt_tokens(4000, 4000) <= 1122
        # One provider claiming a tiny rule cannot make the estimate (and so the usage bound) smaller than another's.
        stingy = await provider(server, GEMMA, models=[entry_for(GEMMA).model_copy(update={
            "vision": claims.model_copy(update={"max_soft_tokens": 1})})])
        await eventually(lambda: stingy.is_heard(server))
        assert inputs.prompt_tokens(GEMMA.id, (ImageFacts("m", 4000, 4000),)) == bounded.prompt_tokens(4000, 4000)
        await blind.stop()
        await seeing.stop()
        await stingy.stop()


@pytest.mark.parametrize("memory_gb", [24, 64])
def test_the_catalog_gemma_has_no_vision_until_its_files_say_so(memory_gb):
    # The catalog cannot know the tower's bytes; the downloaded files do (agent/catalog.spec_from_model_dir).
    assert doctor_report({GEMMA.id: GEMMA}, memory_gb * GIB)["models"][0]["vision"] is None


def test_the_fake_engine_counts_an_image_as_the_processor_rule_does_and_refuses_it_text_only():
    from agent.engine import GenerationRequest
    from agent.engine.types import RequestRefused
    from tests.vision_support import image_message, noise_image

    body = {"messages": [image_message("Look.", noise_image(300, 100, seed=1))], "max_tokens": 4}
    text_body = {"messages": [{"role": "user", "content": "Look."}], "max_tokens": 4}

    async def scenario(memory_bytes: int):
        engine = FakeEngine({GEMMA.id: SEEING}, memory_bytes=memory_bytes, time_scale=0.001)
        async with engine:
            await engine.load(GEMMA.id)
            try:
                image = await (await engine.submit(GenerationRequest.from_openai("i", GEMMA.id, body))).collect()
            except RequestRefused as refused:
                return refused.code, None
            text = await (await engine.submit(GenerationRequest.from_openai("t", GEMMA.id, text_body))).collect()
            return image.finish.usage.prompt_tokens, text.finish.usage.prompt_tokens

    image_tokens, text_tokens = asyncio.run(scenario(64 * GIB))
    assert image_tokens == text_tokens + SEEING.vision.prompt_tokens(100, 300)
    assert asyncio.run(scenario(memory_between_text_and_vision())) == ("no_vision", None)


async def test_a_coordinator_that_sends_a_bomb_or_a_url_gets_a_refusal_naming_the_part_and_the_agent_serves_on():
    # The agent's side of the link (a real websocket, the real LinkHandler) against frames no honest
    # coordinator sends: each refused before any KV, with a code that says retrying elsewhere will not help.
    from agent.link.client import Link
    from tests.link_support import MiniCoordinator
    from tests.test_image_inputs import png_claiming
    from tests.vision_support import data_url, image_message, noise_image

    coordinator = MiniCoordinator(heartbeat_interval_s=30)
    await coordinator.start()
    engine = FakeEngine({GEMMA.id: SEEING}, memory_bytes=64 * GIB, time_scale=0.001)
    await engine.start()
    await engine.load(GEMMA.id)
    handler = LinkHandler(engine, {GEMMA.id: SEEING}, Hardware(chip="Fake M4", memory_bytes=64 * GIB, gpu_cores=10),
                          lambda: MemoryReading(64 * GIB, 32 * GIB))
    link = Link(coordinator.url, "good-token", handler)
    task = asyncio.create_task(link.run())
    try:
        register = await coordinator.next_frame("register")
        assert register["models"][0]["vision"]["fits"] is True
        bodies = {
            "bomb": {"role": "user", "content": [{"type": "text", "text": "Look."}, {
                "type": "image_url", "image_url": {"url": data_url(png_claiming(100_000, 100_000))}}]},
            "url": {"role": "user", "content": [{"type": "text", "text": "Look."}, {
                "type": "image_url", "image_url": {"url": "http://169.254.169.254/latest"}}]},
            "ok": image_message("Look.", noise_image(64, 64, seed=3)),
        }
        for request_id, message in bodies.items():
            await coordinator.send({"type": "inference_request", "request_id": request_id, "model": GEMMA.id,
                                    "body": {"messages": [message], "max_tokens": 4}})
        refused = [await coordinator.next_frame("inference_rejected") for _ in range(2)]
        by_id = {frame["request_id"]: frame for frame in refused}
        assert set(by_id) == {"bomb", "url"}
        assert all("messages[0].content[1]" in f["reason"] and f["retryable"] is False for f in refused)
        assert "more pixels than the limit" in by_id["bomb"]["reason"]
        assert "only as data: URLs" in by_id["url"]["reason"]
        complete = await coordinator.next_frame("inference_complete")
        assert complete["request_id"] == "ok" and complete["usage"]["prompt_tokens"] > SEEING.vision.prompt_tokens(64, 64)
        assert engine.snapshot().slot(GEMMA.id).kv_reserved_bytes == 0
    finally:
        link.stop()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await engine.stop()
        await coordinator.stop()
