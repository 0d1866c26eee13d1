"""Exact weight bytes and activation dtype from safetensors headers, without loading any tensor.

A safetensors file starts with an 8-byte little-endian header length and a JSON header that gives
every tensor's dtype, shape and byte range, so a 12 GB model is measured by reading a few kilobytes.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

from agent.errors import DarkbloomError

_DTYPE_NAMES = {"BF16": "bfloat16", "F16": "float16", "F32": "float32"}
_MAX_HEADER_BYTES = 100 * 1024 * 1024
# Tensors of other modalities that mlx-lm drops when it loads a text model (gemma4.Model.sanitize).
_NOT_LOADED_PREFIXES = ("vision_tower", "multi_modal_projector", "audio_tower", "embed_audio", "embed_vision")
_VISION_PREFIXES = ("vision_tower.", "embed_vision.")  # what a load with vision reads (agent/engine/vision.py)


class WeightsError(DarkbloomError):
    code = "weights_invalid"


@dataclass(frozen=True, slots=True)
class SafetensorsInfo:
    total_bytes: int
    activation_dtype: str
    num_files: int
    vision_bytes: int = 0  # the vision tower's and its projector's tensors (mlx-lm skips them; mlx-vlm reads them)


def read_header(path: Path) -> dict:
    with path.open("rb") as f:
        prefix = f.read(8)
        if len(prefix) != 8:
            raise WeightsError(f"{path}: not a safetensors file (shorter than its header length)")
        (length,) = struct.unpack("<Q", prefix)
        if length > _MAX_HEADER_BYTES:
            raise WeightsError(f"{path}: safetensors header of {length} bytes is implausible")
        try:
            return json.loads(f.read(length))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise WeightsError(f"{path}: unreadable safetensors header: {exc}") from exc


def read_safetensors_info(model_dir: Path) -> SafetensorsInfo:
    """Bytes of the tensors mlx-lm loads from every *.safetensors file, and the dtype the model computes
    (and caches KV) in."""
    files = sorted(Path(model_dir).glob("*.safetensors"))
    tensors: dict[str, dict] = {}
    total = vision = 0
    for path in files:
        header = read_header(path)
        header.pop("__metadata__", None)
        for name, info in header.items():
            start, end = info["data_offsets"]
            if name.removeprefix("model.").startswith(_NOT_LOADED_PREFIXES):
                vision += (end - start) if name.removeprefix("model.").startswith(_VISION_PREFIXES) else 0
                continue
            total += end - start
            tensors[name] = info
    return SafetensorsInfo(total, _activation_dtype(tensors), len(files), vision)


def _activation_dtype(tensors: dict[str, dict]) -> str:
    # Activations (and so K/V) take the dtype of the embedding output: the scales of a quantized
    # embedding, the weight of a plain one.
    for suffix in ("embed_tokens.scales", "embed_tokens.weight"):
        for name, info in tensors.items():
            if name.endswith(suffix) and info["dtype"] in _DTYPE_NAMES:
                return _DTYPE_NAMES[info["dtype"]]
    # No recognisable embedding: assume the widest float, so the KV cost is never understated.
    return "float32"
