"""Shared fixtures.

`tiny_models_dir`: a directory holding every tiny model (see agent/testing/tiny_models.py), one
subdirectory per variant name. Written once per test session into a temporary directory, or, when
DARKBLOOM_TINY_MODELS names a directory, kept there across sessions: variants already there and up to
date are reused, missing or stale ones are (re)written.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

TINY_MODELS_ENV = "DARKBLOOM_TINY_MODELS"


@pytest.fixture(scope="session")
def tiny_models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Imported here so test modules that never touch MLX do not pay for importing it.
    from agent.testing.tiny_models import VARIANTS, can_write, is_up_to_date, write_all

    cache = os.environ.get(TINY_MODELS_ENV)
    root = Path(cache) if cache else tmp_path_factory.mktemp("tiny-models")
    # Without mlx-vlm the vision model is not written, its tests skip, and test_tiny_vision's pin test fails.
    stale = [name for name in VARIANTS if can_write(name) and not is_up_to_date(root / name, name)]
    if stale:
        write_all(root, stale)
    return root
