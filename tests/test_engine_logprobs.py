"""logprobs and logit_bias in the MLX engine, on the tiny real models: what OpenAI returns, for the rows that ask."""

from __future__ import annotations

import math

import mlx.core as mx
import pytest
from mlx_lm.utils import load

from agent.engine import InvalidRequest, MLXEngine
from agent.engine.token_text import TokenText
from tests.engine_fixtures import NARROW, chat, run
from tests.pinned_versions import outside_pinned_range
from tests.test_engine import forcing

PROMPT = "Hello there"


def direct_logprobs(model, token_ids: list[int]) -> mx.array:
    """The next token's log-probabilities from one plain forward pass over the whole sequence."""
    logits = model(mx.array([token_ids]))[0, -1].astype(mx.float32)
    return logits - mx.logsumexp(logits)


@pytest.mark.parametrize("name", NARROW)
def test_each_greedy_tokens_logprob_is_the_direct_forwards_and_its_three_alternatives_are_no_likelier(
        tiny_models_dir, name):
    async def scenario():
        async with MLXEngine({name: tiny_models_dir / name}) as engine:
            await engine.load(name)
            request = chat("lp", name, PROMPT, max_tokens=4, ignore_eos=True, num_top_logprobs=3)
            prompt = engine.chat_format(name).encode(request).token_ids
            return prompt, await (await engine.submit(request)).collect(), engine.chat_format(name).token_text

    prompt, completion, token_text = run(scenario())
    model, _ = load(str(tiny_models_dir / name))
    tokens = list(prompt)
    assert len(completion.logprobs) >= 3  # the tiny models' first tokens are plain text
    for entry in completion.logprobs[:3]:
        expected = direct_logprobs(model, tokens)
        chosen = int(mx.argmax(expected).item())
        assert (entry.token, entry.bytes) == token_text.lookup(chosen)
        assert math.isclose(entry.logprob, expected[chosen].item(), abs_tol=0.05)
        assert len(entry.top_logprobs) == 3 and entry.top_logprobs[0].token == entry.token
        assert all(alt.logprob <= entry.logprob for alt in entry.top_logprobs)
        assert [a.logprob for a in entry.top_logprobs] == sorted((a.logprob for a in entry.top_logprobs), reverse=True)
        tokens.append(chosen)


def test_rows_that_do_not_ask_get_no_logprobs_and_the_same_tokens_beside_one_that_does(tiny_models_dir):
    name = "gpt-oss-tiny"

    async def scenario():
        async with MLXEngine({name: tiny_models_dir / name}) as engine:
            await engine.load(name)
            alone = await (await engine.submit(chat("a", name, PROMPT, max_tokens=6))).collect()
            streams = [await engine.submit(chat("b", name, PROMPT, max_tokens=6)),
                       await engine.submit(chat("c", name, PROMPT, max_tokens=6, num_top_logprobs=0))]
            return alone, [await stream.collect() for stream in streams]

    alone, (plain, asking) = run(scenario())
    assert plain.content == asking.content == alone.content
    assert plain.logprobs == () and alone.logprobs == ()
    assert asking.logprobs and all(entry.top_logprobs == () for entry in asking.logprobs)


def test_gpt_oss_gives_logprobs_for_the_final_channels_tokens_only(tiny_models_dir):
    name = "gpt-oss-tiny"
    script = ("<|channel|>analysis<|message|>The user asks about France.<|end|>"
              "<|start|>assistant<|channel|>final<|message|>Paris is the capital.<|return|>")

    async def scenario():
        async with MLXEngine({name: tiny_models_dir / name}) as engine:
            await engine.load(name)
            forced = engine.chat_format(name).tokenizer.encode(script, add_special_tokens=False)
            request = chat("h", name, "Capital of France?", max_tokens=100, num_top_logprobs=2,
                           logits_processors=(forcing(forced),))
            return await (await engine.submit(request)).collect()

    completion = run(scenario())
    assert completion.reasoning == "The user asks about France." and completion.content == "Paris is the capital."
    assert "".join(entry.token for entry in completion.logprobs) == completion.content
    assert all(entry.logprob == 0.0 for entry in completion.logprobs)  # forced: every other token is masked
    assert all(alt.logprob == -9999.0 for entry in completion.logprobs for alt in entry.top_logprobs[1:])


@pytest.mark.parametrize("name", NARROW)
def test_a_plus_100_logit_bias_forces_a_token_and_minus_100_bans_the_greedy_one(tiny_models_dir, name):
    async def scenario():
        async with MLXEngine({name: tiny_models_dir / name}) as engine:
            await engine.load(name)
            text = engine.chat_format(name).token_text
            plain = await (await engine.submit(chat("p", name, PROMPT, max_tokens=3, ignore_eos=True,
                                                    num_top_logprobs=0))).collect()
            greedy_first = plain.logprobs[0].token
            forced_id = next(i for i in range(200, 400) if text.lookup(i)[0] not in (greedy_first, ""))
            forced = await (await engine.submit(chat("f", name, PROMPT, max_tokens=3, ignore_eos=True,
                                                     num_top_logprobs=0, logit_bias=((forced_id, 100.0),)))).collect()
            greedy_id = next(i for i in range(len(engine.chat_format(name).tokenizer))
                             if text.lookup(i)[0] == greedy_first)
            banned = await (await engine.submit(chat("b", name, PROMPT, max_tokens=3, ignore_eos=True,
                                                     num_top_logprobs=0, logit_bias=((greedy_id, -100.0),)))).collect()
            return text.lookup(forced_id)[0], greedy_first, forced, banned

    forced_text, greedy_first, forced, banned = run(scenario())
    assert [entry.token for entry in forced.logprobs] == [forced_text] * 3
    assert greedy_first not in [entry.token for entry in banned.logprobs]


def test_a_logit_bias_outside_the_vocabulary_is_refused_before_admission(tiny_models_dir):
    name = "gemma-4-tiny"

    async def scenario():
        async with MLXEngine({name: tiny_models_dir / name}) as engine:
            await engine.load(name)
            with pytest.raises(InvalidRequest, match="logit_bias names token id 999999"):
                await engine.submit(chat("x", name, PROMPT, max_tokens=3, logit_bias=((999999, 5.0),)))
            slot = engine.snapshot().slot(name)
            return slot.kv_reserved_bytes, await (await engine.submit(chat("y", name, PROMPT, max_tokens=2))).collect()

    reserved, after = run(scenario())
    assert reserved == 0 and after.finish.usage.completion_tokens >= 1


@pytest.mark.skipif(outside_pinned_range("mlx-lm") is not None, reason=outside_pinned_range("mlx-lm") or "")
@pytest.mark.parametrize("name", NARROW)
def test_each_tokens_own_bytes_join_to_the_decoded_text_and_half_a_character_is_named_by_its_bytes(
        tiny_models_dir, name):
    from mlx_lm.utils import load_tokenizer

    tokenizer = load_tokenizer(tiny_models_dir / name)
    text = TokenText(tokenizer)
    sentence = "The capital of France is Paris: café, naïve, 日本."
    ids = tokenizer.encode(sentence, add_special_tokens=False)
    assert b"".join(bytes(text.lookup(i)[1]) for i in ids).decode() == tokenizer.decode(ids) == sentence
    partial = [i for i in ids if text.lookup(i)[0].startswith("bytes:")]
    assert partial and all(len(text.lookup(i)[1]) == text.lookup(i)[0].count("\\x") for i in partial)
