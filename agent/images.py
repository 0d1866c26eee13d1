"""The bounded image decoder both sides run: bytes in, an RGB image out, or a refusal naming the part.

A consumer's image is a stranger's file. It is refused before decoding when its bytes exceed the limit,
and before its pixels are allocated when its header declares more pixels than the limit (Pillow reads the
size from the header; a decompression bomb never gets to allocate). PNG, JPEG, WebP and GIF are accepted
(a GIF gives its first frame); anything else, or a file Pillow cannot decode whole, is refused.

The coordinator decodes every image before it takes a hold (so a corrupt image costs nothing and is a
400), and the agent decodes again before admission, because what it receives is a claim too.

Public names: ImageLimits, DecodedImage, decode_image, FORMATS.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from PIL import Image

from agent.errors import InvalidRequest

FORMATS = ("PNG", "JPEG", "WEBP", "GIF")


@dataclass(frozen=True, slots=True)
class ImageLimits:
    max_bytes: int = 5 * 1024 * 1024  # one image's encoded bytes
    max_pixels: int = 16 * 1024 * 1024  # width × height, checked from the header before decoding


@dataclass(frozen=True, slots=True)
class DecodedImage:
    image: Image.Image  # RGB, fully loaded
    format: str

    @property
    def width(self) -> int:
        return self.image.width

    @property
    def height(self) -> int:
        return self.image.height


def decode_image(data: bytes, limits: ImageLimits, label: str) -> DecodedImage:
    """Decode `data` within `limits`; InvalidRequest names the part (`label`) and what is wrong."""
    if len(data) > limits.max_bytes:
        raise InvalidRequest(f"{label}: the image is {len(data)} bytes, over the limit of {limits.max_bytes}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            opened = Image.open(io.BytesIO(data), formats=FORMATS)
            width, height = opened.size
            if width * height > limits.max_pixels:
                raise InvalidRequest(f"{label}: the image is {width}×{height} pixels, over the limit of "
                                     f"{limits.max_pixels} pixels")
            if width < 1 or height < 1:
                raise InvalidRequest(f"{label}: the image has no pixels")
            image_format = opened.format or ""
            opened.seek(0)  # a GIF's first frame
            rgb = opened.convert("RGB")
            rgb.load()
    except InvalidRequest:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:  # Pillow's own header check
        raise InvalidRequest(f"{label}: the image's header declares more pixels than the limit of "
                             f"{limits.max_pixels} pixels ({exc})") from exc
    except Exception as exc:  # Pillow raises many kinds (UnidentifiedImageError, OSError, SyntaxError, ...)
        raise InvalidRequest(f"{label}: the image cannot be decoded as {', '.join(FORMATS)} "
                             f"({type(exc).__name__}: {str(exc)[:200]})") from exc
    return DecodedImage(rgb, image_format)
