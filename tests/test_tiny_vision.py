"""The tiny gemma-4 with vision is in the release's layout: mlx-vlm's own loader reads the whole directory,
mlx-lm's reads it text-only, and the engine's tower (mlx-vlm's classes on the same weights) gives the
features mlx-vlm's model gives."""

from __future__ import annotations

import json

import numpy as np
import pytest

from agent.catalog import spec_from_model_dir
from agent.safetensors_info import read_header
from tests.vision_support import VISION_MODEL, noise_image


def test_the_vision_model_directory_has_the_release_layout(tiny_models_dir):
    pytest.importorskip("mlx_vlm")
    model_dir = tiny_models_dir / VISION_MODEL
    config = json.loads((model_dir / "config.json").read_text())
    processor = json.loads((model_dir / "processor_config.json").read_text())
    keys = set(read_header(model_dir / "model.safetensors")) - {"__metadata__"}
    assert config["architectures"] == ["Gemma4ForConditionalGeneration"] and "vision_config" in config
    assert processor["image_processor"]["image_processor_type"] == "Gemma4ImageProcessor"
    assert any(k.startswith("vision_tower.encoder.layers.") for k in keys)
    assert any(k.startswith("embed_vision.embedding_projection") for k in keys)
    assert any(k.startswith("language_model.model.layers.") for k in keys)
    spec = spec_from_model_dir(model_dir)
    vision_bytes = sum(end - start for key, info in read_header(model_dir / "model.safetensors").items()
                       if key.startswith(("vision_tower.", "embed_vision.")) for start, end in [info["data_offsets"]])
    assert spec.has_vision and spec.vision_weights_bytes == vision_bytes > 0 and spec.vision.max_soft_tokens == 70


def test_mlx_vlm_loads_the_directory_and_the_engines_tower_gives_its_features(tiny_models_dir):
    pytest.importorskip("mlx_vlm")
    import mlx.core as mx
    from mlx_lm.utils import load_model
    from mlx_vlm.utils import load_model as load_vision_language_model
    from PIL import Image
    import io

    from agent.engine.vision import VisionTower, read_vision_files

    model_dir = tiny_models_dir / VISION_MODEL
    text_model, _ = load_model(model_dir)  # mlx-lm: text only, the vision keys skipped
    reference = load_vision_language_model(model_dir)
    tower = VisionTower(read_vision_files(model_dir))
    tower.load(model_dir, text_model)
    prepared = tower.prepare(Image.open(io.BytesIO(noise_image(150, 100, seed=8))).convert("RGB"))
    ours = tower.encode(prepared) * text_model.language_model.model.embed_scale
    theirs = reference.encode_image(mx.array(prepared.pixel_values))[0]
    assert ours.shape == theirs.shape == (prepared.num_soft_tokens, 64)
    assert np.allclose(np.array(ours.astype(mx.float32)), np.array(theirs.astype(mx.float32)), atol=0.05)


def test_the_installed_mlx_vlm_is_the_version_setup_installs():
    # The engine's vision adapter (agent/engine/vision.py) is tested against this version only.
    import tomllib
    from importlib.metadata import version
    from pathlib import Path

    pyproject = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text())
    pinned = pyproject["tool"]["darkbloom"]["no-deps"]["mlx-vlm"]
    assert version("mlx-vlm") == pinned, f"scripts/setup.sh installs mlx-vlm {pinned}; run it again"


def test_a_flat_preprocessor_config_is_read_and_a_directory_without_one_is_text_only(tiny_models_dir, tmp_path):
    pytest.importorskip("mlx_vlm")
    import shutil

    from agent.engine.vision import read_vision_files

    flat, bare = tmp_path / "flat", tmp_path / "bare"
    for target in (flat, bare):
        shutil.copytree(tiny_models_dir / VISION_MODEL, target)
        (target / "processor_config.json").unlink()
    nested = json.loads((tiny_models_dir / VISION_MODEL / "processor_config.json").read_text())
    (flat / "preprocessor_config.json").write_text(json.dumps(nested["image_processor"]))
    assert read_vision_files(flat).rule == read_vision_files(tiny_models_dir / VISION_MODEL).rule
    assert spec_from_model_dir(flat).has_vision
    assert read_vision_files(bare) is None and not spec_from_model_dir(bare).has_vision
