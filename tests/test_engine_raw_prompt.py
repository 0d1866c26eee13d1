"""A raw prompt (/v1/completions' `raw_prompt`) on the tiny models' real tokenizers: tokenized as it is, without
the chat template; its output split as one plain text (no channels, no calls, stop strings still stop); its
detokenizer keeps the first token's leading space."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.engine.chat import ChatFormat
from agent.engine.types import GenerationRequest

TINY = ("gpt-oss-tiny", "gemma-4-tiny")
MARKUP = {"gpt-oss-tiny": "<|channel|>analysis<|message|>", "gemma-4-tiny": "<|channel>thought\n"}


def chat_format(model_dir: Path) -> ChatFormat:
    from mlx_lm.utils import load_tokenizer

    return ChatFormat(load_tokenizer(model_dir), json.loads((model_dir / "config.json").read_text())["model_type"])


def raw(prompt: str, **fields) -> GenerationRequest:
    return GenerationRequest.from_openai("r1", "tiny", {"messages": [{"role": "user", "content": prompt}],
                                                        "raw_prompt": True, **fields})


@pytest.mark.parametrize("name", TINY)
def test_a_raw_prompt_is_the_tokenizers_own_encoding_of_the_text(tiny_models_dir, name):
    fmt = chat_format(tiny_models_dir / name)
    prompt = "The capital of France is"
    assert fmt.encode(raw(prompt)).token_ids == list(fmt.tokenizer.encode(prompt))
    templated = GenerationRequest.from_openai("r1", "tiny", {"messages": [{"role": "user", "content": prompt}]})
    assert len(fmt.encode(templated).token_ids) > len(fmt.encode(raw(prompt)).token_ids)


@pytest.mark.parametrize("name", TINY)
def test_a_raw_prompts_output_is_plain_text_even_when_it_looks_like_markup_and_a_stop_string_stops_it(
        tiny_models_dir, name):
    fmt = chat_format(tiny_models_dir / name)
    request = raw("x", stop=["END"])
    splitter = fmt.splitter(fmt.encode(request), request.stop, request.tool_names)
    text = f"{MARKUP[name]}plain words"
    ids = fmt.tokenizer.encode(text + " END more", add_special_tokens=False)
    detokenizer, content, reasoning = fmt.detokenizer(request), [], []
    for token in ids:
        detokenizer.add_token(token)
        got = splitter.feed(detokenizer.last_segment)
        content.append(got[0])
        reasoning.append(got[1])
    assert "".join(reasoning) == "" and splitter.is_stopped
    shown = "".join(content)
    assert "plain words" in shown and "END" not in shown and "more" not in shown
    assert "thought" in shown or "analysis" in shown  # channel names are text here; special tokens are dropped


@pytest.mark.parametrize("name", TINY)
def test_a_raw_prompts_detokenizer_keeps_the_first_leading_space(tiny_models_dir, name):
    fmt = chat_format(tiny_models_dir / name)
    detokenizer = fmt.detokenizer(raw("x"))
    for token in fmt.tokenizer.encode(" Paris.", add_special_tokens=False):
        detokenizer.add_token(token)
    detokenizer.finalize()
    assert detokenizer.text == " Paris."
    chat = fmt.detokenizer(GenerationRequest.from_openai("r1", "tiny", {"messages": [{"role": "user", "content": "x"}]}))
    assert chat is not detokenizer and type(chat) is not type(detokenizer)
