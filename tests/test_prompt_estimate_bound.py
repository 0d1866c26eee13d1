"""The coordinator's prompt bound is a true upper bound (issue 11): random message lists rendered through the
tiny models' real chat templates and tokenizers, exactly as the agent counts them (agent/engine/chat.py), never
have more tokens than `estimate_prompt(...).max_tokens`. The coordinator never imports the engine; this test may."""

from __future__ import annotations

import functools
import json
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.coordinator.routing.estimate import estimate_prompt
from agent.wire.chat_body import ChatCompletionBody

TINY = ("gpt-oss-tiny", "gemma-4-tiny")
# Any text, surrogates aside (JSON cannot carry them); control characters, CJK and emoji are the worst case:
# one token per byte in a small vocabulary.
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=200)
TURN = st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant"]), "content": TEXT})
FIRST = st.none() | st.fixed_dictionaries({"role": st.sampled_from(["system", "developer"]), "content": TEXT})
EFFORT = st.sampled_from([None, "none", "minimal", "low", "medium", "high"])


@functools.cache
def chat_format(model_dir: str):
    from mlx_lm.utils import load_tokenizer

    from agent.engine.chat import ChatFormat

    model_type = json.loads((Path(model_dir) / "config.json").read_text())["model_type"]
    return ChatFormat(load_tokenizer(Path(model_dir)), model_type)


def agent_count(model_dir: str, body: ChatCompletionBody) -> int:
    from agent.engine.types import GenerationRequest

    request = GenerationRequest.from_openai("r1", "tiny", body)
    return len(chat_format(model_dir).encode(request).token_ids)


@settings(max_examples=60, deadline=None)
@given(first=FIRST, turns=st.lists(TURN, min_size=1, max_size=6), effort=EFFORT)
def test_no_message_list_renders_to_more_tokens_than_the_bound(tiny_models_dir, first, turns, effort):
    body = ChatCompletionBody(model="tiny", messages=[*([first] if first else []), *turns], reasoning_effort=effort)
    estimate = estimate_prompt(body)
    for name in TINY:
        count = agent_count(str(tiny_models_dir / name), body)
        assert count <= estimate.max_tokens, (name, count, estimate)
        assert estimate.floor_tokens <= estimate.tokens <= estimate.max_tokens


def test_the_demos_one_line_prompt_that_counted_122_against_113_is_now_within_the_bound(tiny_models_dir):
    body = ChatCompletionBody(model="tiny", messages=[{"role": "system", "content": "Be brief."},
                                                      {"role": "user", "content": "Say hello in one word."}])
    estimate = estimate_prompt(body)
    counts = {name: agent_count(str(tiny_models_dir / name), body) for name in TINY}
    assert max(counts.values()) <= estimate.max_tokens <= 3 * max(counts.values())  # a bound, not a wild one
    assert counts["gpt-oss-tiny"] > estimate.tokens  # why the routing estimate could not be the charge bound
