"""Helpers for the engine tests (the tiny models come from conftest's `tiny_models_dir` fixture).

`run` drives a coroutine to its end on a fresh event loop (pytest-asyncio is not a dependency);
`chat` builds a one-message greedy request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from agent.engine.types import GenerationRequest

NARROW = ("gpt-oss-tiny", "gemma-4-tiny")
RUN_TIMEOUT_S = 120  # a hang fails the test instead of the whole session


def run(coroutine: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coroutine, RUN_TIMEOUT_S))


def chat(request_id: str, model: str, text: str, **fields: Any) -> GenerationRequest:
    fields.setdefault("temperature", 0.0)
    return GenerationRequest(request_id, model, ({"role": "user", "content": text},), **fields)
