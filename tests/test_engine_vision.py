"""gemma-4 sees, in the continuous batch: mlx-vlm's tower and processor, our batched prefill, exact counts.

On the tiny vision model (a random tower in the release's layout): an image is its soft tokens plus two
markers in `prompt_tokens`; its features really reach the model; image rows batch with text rows without
changing them; and a bad image, or an image to a slot loaded text-only, is refused before any KV.
"""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from agent.engine import GenerationRequest, MLXEngine
from agent.engine.types import InvalidRequest, RequestRefused
from agent.errors import is_retryable
from agent.vision_tokens import VisionRule
from tests.engine_fixtures import run
from tests.vision_support import VISION_MODEL, image_message, image_part, noise_image

pytest.importorskip("mlx_vlm")  # scripts/setup.sh installs it; test_tiny_vision's pin test fails without it

RULE = VisionRule(max_soft_tokens=70, patch_size=16, pooling_kernel_size=3)  # the tiny processor's config


def request(request_id: str, message: dict, *, ignore_eos: bool = False, **fields) -> GenerationRequest:
    body = {"messages": [message], "temperature": 0, "max_tokens": 6, **fields}
    return dataclasses.replace(GenerationRequest.from_openai(request_id, VISION_MODEL, body), ignore_eos=ignore_eos)


async def answer(engine, generation_request: GenerationRequest):
    completion = await (await engine.submit(generation_request)).collect()
    return completion.content, completion.finish.reason, completion.finish.usage


def text_tokens(engine, generation_request: GenerationRequest) -> int:
    """The template's tokens with one image marker per image, as the chat format encodes them."""
    return len(engine.backend.chat_format(VISION_MODEL).encode(generation_request).token_ids)


def test_an_image_costs_its_soft_tokens_and_two_markers_and_really_reaches_the_model(tiny_models_dir):
    one, two = noise_image(96, 144, seed=1), noise_image(300, 100, seed=2)

    async def scenario():
        async with MLXEngine({VISION_MODEL: tiny_models_dir / VISION_MODEL}) as engine:
            slot = await engine.load(VISION_MODEL)
            single = request("one", image_message("What is this?", one))
            double = request("two", image_message("Compare them.", one, two))
            other = request("other", image_message("What is this?", two))
            return (slot, await answer(engine, single), await answer(engine, double), await answer(engine, other),
                    text_tokens(engine, single), text_tokens(engine, double))

    slot, single, double, other, single_text, double_text = run(scenario())
    assert slot.modalities == ("text", "image") and slot.vision_reason == ""
    assert single[2].prompt_tokens == single_text - 1 + RULE.prompt_tokens(144, 96)
    assert double[2].prompt_tokens == double_text - 2 + RULE.prompt_tokens(144, 96) + RULE.prompt_tokens(100, 300)
    assert single[0] != other[0]  # same text, another image: the features are what the model reads


def test_a_seeded_text_request_gives_the_same_tokens_alone_and_batched_with_two_image_requests(tiny_models_dir):
    text = request("text", {"role": "user", "content": "Tell me about the sea."}, temperature=0.9, seed=7,
                   max_tokens=10)

    async def scenario():
        async with MLXEngine({VISION_MODEL: tiny_models_dir / VISION_MODEL}) as engine:
            await engine.load(VISION_MODEL)
            alone = await answer(engine, text)
            images = [request(f"img{i}", image_message("Describe.", noise_image(120, 90 + 40 * i, seed=i)))
                      for i in range(2)]
            images_alone = [await answer(engine, r) for r in images]
            streams = [await engine.submit(r) for r in (images[0], text, images[1])]
            together = [(c.content, c.finish.reason, c.finish.usage)
                        for c in await asyncio.gather(*(s.collect() for s in streams))]
            return alone, images_alone, together, engine.snapshot().slot(VISION_MODEL)

    alone, images_alone, together, slot = run(scenario())
    content, reason, usage = together[1]
    assert (content, reason, usage.prompt_tokens, usage.completion_tokens) == (
        alone[0], alone[1], alone[2].prompt_tokens, alone[2].completion_tokens)
    assert usage.cached_tokens == usage.prompt_tokens - 1  # the second time from the prefix cache, beside images
    assert [together[0], together[2]] == images_alone  # image rows are not changed by their neighbours either
    assert all(usage.cached_tokens == 0 for *_, usage in images_alone + [together[0], together[2]])
    assert slot.kv_reserved_bytes == 0 and slot.kv_used_bytes == 0


def test_cancelling_an_image_request_frees_its_kv_at_once(tiny_models_dir):
    async def scenario():
        async with MLXEngine({VISION_MODEL: tiny_models_dir / VISION_MODEL}) as engine:
            await engine.load(VISION_MODEL)
            stream = await engine.submit(request("img", image_message("Describe.", noise_image(200, 200, seed=3)),
                                                 max_tokens=2000, ignore_eos=True))
            reserved = engine.snapshot().slot(VISION_MODEL).kv_reserved_bytes
            async for _ in stream:
                break
            await engine.cancel("img")
            completion = await stream.collect()
            return reserved, completion.finish.reason, engine.snapshot().slot(VISION_MODEL)

    reserved, reason, slot = run(scenario())
    assert reserved > 0 and str(reason) == "cancelled"
    assert slot.kv_reserved_bytes == 0 and slot.kv_used_bytes == 0


@pytest.mark.parametrize("part, complaint", [
    ({"type": "image_url", "image_url": {"url": "data:image/png;base64,aGVsbG8gd29ybGQ="}}, "cannot be decoded"),
    (image_part(noise_image(1200, 1200, seed=4)), "over the limit of 1000000 pixels"),
    ({"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}, "only as data: URLs"),
    ({"type": "image_url", "image_url": {"url": "data:text/plain;base64,aGk="}}, "media type 'text/plain'"),
])
def test_a_bad_image_is_refused_naming_its_part_before_any_kv_is_reserved(tiny_models_dir, part, complaint):
    from agent.engine.core import EngineConfig
    from agent.images import ImageLimits

    async def scenario():
        config = EngineConfig(image_limits=ImageLimits(max_pixels=1_000_000))
        async with MLXEngine({VISION_MODEL: tiny_models_dir / VISION_MODEL}, config=config) as engine:
            await engine.load(VISION_MODEL)
            message = {"role": "user", "content": [{"type": "text", "text": "Look."}, part]}
            with pytest.raises(InvalidRequest, match=complaint) as refused:
                await engine.submit(request("bad", message))
            return str(refused.value), engine.snapshot().slot(VISION_MODEL)

    message, slot = run(scenario())
    assert "messages[0].content[1]" in message
    assert slot.kv_reserved_bytes == 0 and slot.num_waiting == 0 and slot.num_running == 0


def test_a_slot_loaded_text_only_refuses_images_and_still_serves_text(tiny_models_dir):
    from agent.engine.core import EngineConfig

    async def scenario():
        async with MLXEngine({VISION_MODEL: tiny_models_dir / VISION_MODEL},
                             config=EngineConfig(load_vision=False)) as engine:
            slot = await engine.load(VISION_MODEL)
            with pytest.raises(RequestRefused, match=r"messages\[0\].content\[1\]: .* text-only") as refused:
                await engine.submit(request("img", image_message("Look.", noise_image(64, 64, seed=5))))
            assert refused.value.code == "no_vision" and is_retryable("no_vision")
            text = await answer(engine, request("text", {"role": "user", "content": "Hello"}))
            return slot, text

    slot, text = run(scenario())
    assert slot.modalities == ("text",) and text[2].completion_tokens >= 1


def test_text_that_spells_the_image_token_cannot_shift_the_images(tiny_models_dir):
    async def scenario():
        async with MLXEngine({VISION_MODEL: tiny_models_dir / VISION_MODEL}) as engine:
            await engine.load(VISION_MODEL)
            message = image_message("Here <|image|> is a fake one.", noise_image(64, 64, seed=6))
            with pytest.raises(InvalidRequest, match="2 image markers for 1 images"):
                await engine.submit(request("spoof", message))
            return engine.snapshot().slot(VISION_MODEL)

    assert run(scenario()).kv_reserved_bytes == 0
