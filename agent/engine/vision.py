"""gemma-4's vision tower, projector and image processor, from mlx-vlm, on the model's own files.

mlx-lm loads gemma-4 text-only (it skips `vision_tower.*` and `embed_vision.*`); this module loads those
weights into mlx-vlm's `models.gemma4` classes (`VisionModel`, `MultimodalEmbedder`) and builds mlx-vlm's
`Gemma4ImageProcessor` from processor_config.json, so an image becomes the embeddings of its soft tokens in
the language model's width. The language model stays mlx-lm's, in our batch: the embeddings are fed into
its prefill (agent/engine/image_feed.py).

mlx-vlm's language side adds the image features to the sequence unscaled, while mlx-lm's gemma-4 multiplies
every input embedding by `embed_scale`; `encode` divides by it, so the product is mlx-vlm's.

Public names: VisionTower, VisionFiles, read_vision_files, vision_tower, PreparedImage.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np

from agent.engine.image_feed import RowImages
from agent.vision_cost import has_feedable_vision, read_image_processor
from agent.vision_tokens import MARKER_TOKENS_PER_IMAGE, VisionRule

VISION_PREFIXES = ("vision_tower.", "embed_vision.")


@dataclass(frozen=True, slots=True)
class VisionFiles:
    """What a model directory says about its vision, read without loading a tensor."""

    vision_config: dict[str, Any]
    image_processor: dict[str, Any]
    boi_token_id: int
    image_token_id: int
    eoi_token_id: int

    @property
    def rule(self) -> VisionRule:
        ip = self.image_processor
        return VisionRule(int(ip.get("max_soft_tokens", 280)), int(ip.get("patch_size", 16)),
                          int(ip.get("pooling_kernel_size", 3)))


def read_vision_files(model_dir: Path) -> VisionFiles | None:
    """The model's vision description, or None when it has no vision tower or no image processor config."""
    config = json.loads((model_dir / "config.json").read_text())
    image_processor = read_image_processor(model_dir)
    if not has_feedable_vision(config) or image_processor is None:
        return None
    try:
        return VisionFiles(config["vision_config"], image_processor, int(config["boi_token_id"]),
                           int(config["image_token_id"]), int(config["eoi_token_id"]))
    except KeyError:
        return None


@dataclass(frozen=True, slots=True)
class PreparedImage:
    pixel_values: np.ndarray  # [1, 3, H, W] float32, as the processor made it
    num_soft_tokens: int

    @property
    def num_prompt_tokens(self) -> int:
        return self.num_soft_tokens + MARKER_TOKENS_PER_IMAGE


class VisionTower:
    """The processor is built at once (`prepare` is plain numpy and runs on any thread); the tower's weights
    are read by `load`, on the MLX thread, beside the text model they feed."""

    def __init__(self, files: VisionFiles) -> None:
        from mlx_vlm.models.gemma4.processing_gemma4 import Gemma4ImageProcessor

        self.files = files
        settings = {k: v for k, v in files.image_processor.items() if k not in ("image_processor_type", "processor_class")}
        self.processor = Gemma4ImageProcessor(**settings)
        self._text_model: Any = None
        self.tower: Any = None
        self.projector: Any = None

    def load(self, model_dir: Path, text_model: Any) -> int:
        """Read the tower's weights (MLX thread); returns their bytes."""
        self._text_model = text_model
        from mlx_vlm.models.gemma4.config import VisionConfig
        from mlx_vlm.models.gemma4.gemma4 import MultimodalEmbedder
        from mlx_vlm.models.gemma4.vision import VisionModel

        config = VisionConfig.from_dict(self.files.vision_config)
        text_width = int(self._text_model.args.text_config["hidden_size"])
        tower, projector = VisionModel(config), MultimodalEmbedder(config.hidden_size, text_width,
                                                                    eps=config.rms_norm_eps)
        weights = _vision_weights(model_dir)
        tower.load_weights([(k.removeprefix("vision_tower."), v) for k, v in weights.items()
                            if k.startswith("vision_tower.")])
        projector.load_weights([(k.removeprefix("embed_vision."), v) for k, v in weights.items()
                                if k.startswith("embed_vision.")])
        mx.eval(tower.parameters(), projector.parameters())
        tower.eval()
        projector.eval()
        self.tower, self.projector = tower, projector
        return sum(array.nbytes for array in weights.values())

    def prepare(self, image: Any) -> PreparedImage:
        """An RGB PIL image -> the processor's pixels and its soft-token count (mlx-vlm's own rule)."""
        data, counts = self.processor.preprocess([image])
        pixels = data["pixel_values"]
        pixels = pixels if isinstance(pixels, np.ndarray) else np.stack(pixels)
        return PreparedImage(pixels.astype(np.float32), int(counts[0]))

    def encode(self, image: PreparedImage) -> mx.array:
        """The image's soft-token embeddings, [num_soft_tokens, text width], scaled for mlx-lm's input."""
        features = self.projector(self.tower(mx.array(image.pixel_values)))[0]
        if features.shape[0] != image.num_soft_tokens:
            raise RuntimeError(f"the vision tower made {features.shape[0]} soft tokens, the processor counted "
                               f"{image.num_soft_tokens}")
        return features / self._text_model.language_model.model.embed_scale

    def row_images(self, images: Sequence[PreparedImage], positions: Sequence[int]) -> RowImages:
        """One request's images, encoded (MLX thread), with the prompt indices their soft tokens take."""
        features = mx.concatenate([self.encode(image) for image in images], axis=0)
        mx.eval(features)
        return RowImages(features, list(positions))


def vision_tower(source: Path) -> VisionTower:
    files = read_vision_files(source)
    if files is None:
        raise FileNotFoundError(f"{source}: no vision tower or processor_config.json to load vision from")
    return VisionTower(files)


def _vision_weights(model_dir: Path) -> dict[str, mx.array]:
    weights: dict[str, mx.array] = {}
    for path in sorted(model_dir.glob("*.safetensors")):
        for key, value in mx.load(str(path)).items():
            key = key.removeprefix("model.")
            if key.startswith(VISION_PREFIXES):
                weights[key] = value
    if not weights:
        raise ValueError(f"{model_dir}: config.json has a vision_config but no vision_tower weights")
    return weights
