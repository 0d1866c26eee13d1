"""The prefix cache on real mlx-lm (the tiny gpt-oss: sliding window 16; the tiny gemma-4: window 32).

Greedy output with reuse equals greedy output without (the same text and token count), for prefixes shorter than,
equal to and longer than the sliding window, single and batched, whole and cut back; a cut the
sliding layers cannot make exactly is refused (nothing reused, same output). The slot's ledger holds
the cached bytes exactly as the real arrays do.
"""

from __future__ import annotations

import pytest

from agent.engine import MLXEngine
from agent.engine.core import EngineConfig
from agent.engine.schedule import ScheduleLimits
from agent.engine.types import GenerationRequest
from tests.engine_fixtures import run

WINDOWS = {"gpt-oss-tiny": 16, "gemma-4-tiny": 32}
CACHE_BYTES = 1 << 30
SMALL_CHUNKS = ScheduleLimits(chunk_tokens=16)  # long prompts prefill in several chunks: sliding layers drop keys


def raw(request_id: str, model: str, text: str) -> GenerationRequest:
    return GenerationRequest(request_id, model, ({"role": "user", "content": text},), temperature=0.0,
                             max_tokens=8, ignore_eos=True, raw_prompt=True)


PLAIN = (" the", " a", " w", " one")  # one token each, in any order, for both tiny tokenizers
OTHER = (" one", " w", " the", " w")
THIRD = (" a", " a", " w", " the")


def words(n: int, start: int = 0, vocab: tuple[str, ...] = PLAIN) -> str:
    return "".join(vocab[(start + i) % len(vocab)] for i in range(n))


def prompt_of_tokens(engine: MLXEngine, model: str, num_tokens: int, vocab: tuple[str, ...] = PLAIN) -> str:
    """A raw text whose prompt is exactly `num_tokens` tokens."""
    encode = engine.chat_format(model).encode
    n = 1
    while len(encode(raw("x", model, words(n, vocab=vocab))).token_ids) < num_tokens:
        n += 1
    text = words(n, vocab=vocab)
    assert len(encode(raw("x", model, text)).token_ids) == num_tokens, "the tiny tokenizer is not one token a word"
    return text


async def outputs(engine: MLXEngine, model: str, requests: list[GenerationRequest]):
    streams = [await engine.submit(request) for request in requests]
    done = [await stream.collect() for stream in streams]
    return [(c.content, c.finish.usage.completion_tokens) for c in done], [c.finish.usage.cached_tokens for c in done]


def ledger(engine: MLXEngine, model: str) -> tuple[int, int]:
    """The slot index's cached bytes and what the store's real arrays occupy."""
    return engine._slots[model].kv_tracker.prefixes.cached_bytes, engine.backend._batchers[model].prefixes.nbytes


def scenario(tiny_models_dir, model: str, plan, schedule: ScheduleLimits = ScheduleLimits()):
    """Run `plan(engine)` (lists of request batches) without and with the cache; the outputs and cached tokens."""
    async def one(cache_bytes: int):
        config = EngineConfig(max_prefix_cache_bytes=cache_bytes, schedule=schedule)
        async with MLXEngine({model: tiny_models_dir / model}, config=config) as engine:
            await engine.load(model)
            results = []
            for batch in plan(engine):
                results.append(await outputs(engine, model, batch))
            return results, ledger(engine, model)

    async def both():
        return await one(0), await one(CACHE_BYTES)

    return run(both())


@pytest.mark.parametrize("model", list(WINDOWS))
@pytest.mark.parametrize("relation", ["shorter", "equal", "longer, in chunks"])
def test_greedy_output_with_a_reused_prefix_equals_the_output_without_it(tiny_models_dir, model, relation):
    window = WINDOWS[model]
    prefix = {"shorter": window // 2, "equal": window}.get(relation, 3 * window + 5)
    schedule = SMALL_CHUNKS if relation.endswith("chunks") else ScheduleLimits()

    def plan(engine):
        first = prompt_of_tokens(engine, model, prefix + 1)  # its captured KV holds `prefix` tokens
        return [[raw("a", model, first)], [raw("b", model, first + words(9, start=3))]]

    (without, _), (with_cache, (cached_bytes, real_bytes)) = scenario(tiny_models_dir, model, plan, schedule)
    assert [out for out, _ in with_cache] == [out for out, _ in without]
    assert [cached for _, cached in with_cache] == [[0], [prefix]]
    assert [cached for _, cached in without] == [[0], [0]]
    assert cached_bytes == real_bytes > 0


@pytest.mark.parametrize("model", list(WINDOWS))
def test_batched_rows_reusing_different_prefixes_beside_a_fresh_row_equal_their_uncached_runs(tiny_models_dir, model):
    window = WINDOWS[model]

    def plan(engine):
        short = prompt_of_tokens(engine, model, window // 2, OTHER)  # two unrelated histories
        long = prompt_of_tokens(engine, model, 2 * window + 3)
        return [[raw("a", model, short), raw("b", model, long)],
                [raw("c", model, short + words(5)), raw("d", model, long + words(6, start=2)),
                 raw("e", model, words(11, vocab=THIRD))]]

    (without, _), (with_cache, _) = scenario(tiny_models_dir, model, plan)
    assert [out for out, _ in with_cache] == [out for out, _ in without]
    first, second = with_cache[0][1], with_cache[1][1]
    assert first == [0, 0] and second[0] > 0 and second[1] > 0
    assert second[2] <= 1  # an unrelated prompt shares at most the tokenizer's BOS with them


@pytest.mark.parametrize("model", list(WINDOWS))
def test_a_prompt_that_diverges_before_the_cached_end_reuses_a_cut_back_prefix_only_where_exact(
        tiny_models_dir, model):
    window = WINDOWS[model]

    def plan(engine):
        short = prompt_of_tokens(engine, model, window // 2)  # never dropped a key: any cut is exact
        long = prompt_of_tokens(engine, model, 3 * window, OTHER)  # prefilled in chunks: keys dropped
        cut_short, cut_long = short[: -len(" one the")], long[: len(long) // 2]
        return [[raw("a", model, short)], [raw("b", model, cut_short + words(4, vocab=THIRD))],
                [raw("c", model, long)], [raw("d", model, cut_long + words(4, vocab=THIRD))]]

    (without, _), (with_cache, _) = scenario(tiny_models_dir, model, plan, SMALL_CHUNKS)
    assert [out for out, _ in with_cache] == [out for out, _ in without]
    cached = [c for _, c in with_cache]
    assert 0 < cached[1][0] < window // 2 - 1  # cut back within the window
    # Cutting the long entry back by half would be inexact (its sliding layers dropped keys): refused; at most
    # the BOS it shares with the short entry is reused.
    assert cached[3][0] <= 1


def test_a_prompt_with_images_is_neither_kept_nor_served_from_the_cache(tiny_models_dir):
    pytest.importorskip("mlx_vlm")
    from tests.vision_support import VISION_MODEL, image_message, noise_image

    def ask(request_id: str, message: dict) -> GenerationRequest:
        return GenerationRequest.from_openai(request_id, VISION_MODEL, {"messages": [message], "temperature": 0,
                                                                        "max_tokens": 4})

    async def scenario():
        async with MLXEngine({VISION_MODEL: tiny_models_dir / VISION_MODEL}) as engine:
            await engine.load(VISION_MODEL)
            runs = []
            for request_id, image in (("a", noise_image(96, 96, seed=1)), ("b", noise_image(96, 96, seed=2))):
                runs.append(await outputs(engine, VISION_MODEL, [ask(request_id, image_message("What?", image))]))
            image_cached_bytes = ledger(engine, VISION_MODEL)
            text = ask("t", {"role": "user", "content": "What?"})
            runs.append(await outputs(engine, VISION_MODEL, [text]))
            return runs, image_cached_bytes, ledger(engine, VISION_MODEL)

    runs, after_images, after_text = run(scenario())
    assert [cached for _, cached in runs[:2]] == [[0], [0]]  # the same text with another image: nothing reused
    assert runs[0][0] != runs[1][0]  # the features are what the model read
    assert after_images == (0, 0)  # nothing kept of either image prompt
    assert after_text[0] == after_text[1] > 0  # a text prompt is kept as usual
