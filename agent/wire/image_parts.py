"""Image content parts of a chat message, in OpenAI's shape, and the `data:` URLs they travel in.

    {"type": "image_url", "image_url": {"url": "data:image/png;base64,...", "detail": "auto"}}

A consumer may send a `data:` URL or an `http(s)` URL; the coordinator fetches the second kind itself
(agent/coordinator/image_fetch.py) and forwards every image to the agent as a `data:` URL, so an agent
never fetches anything: it refuses any other scheme. `detail` is accepted and has no effect: gemma-4's
image processor has one budget of soft tokens per image.

Only the bytes and the media type are checked here (pure, no decoder): the pixels are checked by the
bounded decoder (agent/images.py) on both sides.

Public names: ImagePart, ImageURL, DataURL, parse_data_url, part_label, MAX_IMAGE_URL_CHARS, MEDIA_TYPES.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_IMAGE_URL_CHARS = 8 * 1024 * 1024  # the frame limit binds first; the coordinator's byte limit before it
MEDIA_TYPES = ("image/png", "image/jpeg", "image/webp", "image/gif")


class _Part(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ImageURL(_Part):
    url: Annotated[str, Field(min_length=1, max_length=MAX_IMAGE_URL_CHARS)]
    detail: Literal["auto", "low", "high"] | None = None


class ImagePart(_Part):
    type: Literal["image_url"]
    image_url: ImageURL

    @property
    def is_data_url(self) -> bool:
        return self.image_url.url[:5].lower() == "data:"


@dataclass(frozen=True, slots=True)
class DataURL:
    media_type: str
    data: bytes


def part_label(message_index: int, part_index: int) -> str:
    """How an error names the part: the body's own path to it."""
    return f"messages[{message_index}].content[{part_index}]"


def parse_data_url(url: str, *, max_bytes: int) -> DataURL:
    """`data:image/<type>;base64,<payload>`, decoded; ValueError says what is wrong (the caller adds the part)."""
    if url[:5].lower() != "data:":
        raise ValueError("is not a data: URL")
    header, comma, payload = url[5:].partition(",")
    if not comma:
        raise ValueError("is a data: URL without a comma before its data")
    media_type, *params = header.split(";")
    media_type = media_type.strip().lower()
    if "base64" not in (p.strip().lower() for p in params):
        raise ValueError("is a data: URL that is not base64-encoded (`;base64,` is required)")
    if media_type not in MEDIA_TYPES:
        raise ValueError(f"has media type {media_type or 'none'!r}; an image must be one of {', '.join(MEDIA_TYPES)}")
    if len(payload) > (max_bytes + 2) // 3 * 4 + 4:  # refuse before decoding what cannot fit
        raise ValueError(f"is larger than the limit of {max_bytes} bytes per image")
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"has invalid base64 data ({exc})") from exc
    if len(data) > max_bytes:
        raise ValueError(f"is {len(data)} bytes, over the limit of {max_bytes} bytes per image")
    if not data:
        raise ValueError("is an empty image")
    return DataURL(media_type, data)


def data_url(media_type: str, data: bytes) -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode('ascii')}"
