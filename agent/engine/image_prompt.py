"""A request's images made into its prompt: each decoded (bounded), processed by mlx-vlm's image processor,
and its marker expanded into the tokens the model sees: begin-of-image, one image token per soft token,
end-of-image (as gemma-4's processor expands `<|image|>` in the prompt text).

The chat template writes one image token where each image part was; a text part that contains that token's
text itself would shift every image after it, so the count must equal the number of images.

Public names: expand_images, ImagePrompt, prepare_images.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from agent.errors import InvalidRequest
from agent.images import ImageLimits, decode_image

if TYPE_CHECKING:
    from agent.engine.types import GenerationRequest
    from agent.engine.vision import PreparedImage, VisionTower


@dataclass(frozen=True, slots=True)
class ImagePrompt:
    token_ids: list[int]
    positions: list[int]  # prompt indices of the soft tokens, ascending
    images: tuple[PreparedImage, ...] = ()  # in prompt order


def prepare_images(vision: VisionTower, request: GenerationRequest, token_ids: Sequence[int], limits: ImageLimits,
                   marker: str) -> ImagePrompt:
    """Plain CPU work (Pillow, numpy), off the MLX thread: a bad image fails here, before any KV."""
    images = tuple(vision.prepare(decode_image(image.data, limits, image.label).image) for image in request.images)
    files = vision.files
    expanded = expand_images(token_ids, [image.num_soft_tokens for image in images], boi=files.boi_token_id,
                             image=files.image_token_id, eoi=files.eoi_token_id, marker=marker)
    return ImagePrompt(expanded.token_ids, expanded.positions, images)


def expand_images(token_ids: Sequence[int], soft_tokens: Sequence[int], *, boi: int, image: int, eoi: int,
                  marker: str) -> ImagePrompt:
    markers = sum(1 for token in token_ids if token == image)
    if markers != len(soft_tokens):
        raise InvalidRequest(f"the prompt has {markers} image markers for {len(soft_tokens)} images: message text "
                             f"must not contain {marker!r}, the model's image token")
    out: list[int] = []
    positions: list[int] = []
    counts = iter(soft_tokens)
    for token in token_ids:
        if token != image:
            out.append(token)
            continue
        count = next(counts)
        out.append(boi)
        positions.extend(range(len(out), len(out) + count))
        out.extend([image] * count)
        out.append(eoi)
    return ImagePrompt(out, positions)
