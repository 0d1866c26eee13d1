"""What a stranger's image can do, and cannot: the bounded decoder (agent/images.py) and the coordinator's
fetcher (agent/coordinator/image_fetch.py) against hostile files and URLs, on real sockets where it matters."""

from __future__ import annotations

import io
import struct
import zlib

import pytest
from PIL import Image

from agent.coordinator.image_fetch import ImageFetcher, ImageFetchRefused
from agent.errors import InvalidRequest
from agent.images import ImageLimits, decode_image
from agent.wire.image_parts import parse_data_url
from tests.vision_support import data_url, image_server, noise_image

LIMITS = ImageLimits(max_bytes=1024 * 1024, max_pixels=4096 * 4096)


def png_claiming(width: int, height: int) -> bytes:
    """A real 1×1 PNG whose header claims another size (its IHDR CRC fixed, so only the size lies)."""
    data = bytearray(noise_image(1, 1, seed=0))
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def encoded(image_format: str, **save) -> bytes:
    out = io.BytesIO()
    frames = [Image.new("RGB", (40, 30), color) for color in ((255, 0, 0), (0, 255, 0))]
    frames[0].save(out, image_format, **save, **({"save_all": True, "append_images": frames[1:]}
                                                  if image_format == "GIF" else {}))
    return out.getvalue()


def test_a_decompression_bomb_is_refused_from_its_header_before_any_pixel_is_decoded():
    with pytest.raises(InvalidRequest, match=r"part: the image is 5000×5000 pixels, over the limit of 16777216"):
        decode_image(png_claiming(5000, 5000), LIMITS, "part")
    with pytest.raises(InvalidRequest, match=r"part: the image's header declares more pixels than the limit"):
        decode_image(png_claiming(100_000, 100_000), LIMITS, "part")  # Pillow's own bomb check comes first


@pytest.mark.parametrize("image_format", ["PNG", "JPEG", "WEBP", "GIF"])
def test_each_accepted_format_decodes_to_rgb_and_a_gif_to_its_first_frame(image_format):
    decoded = decode_image(encoded(image_format), LIMITS, "part")
    assert (decoded.width, decoded.height, decoded.image.mode, decoded.format) == (40, 30, "RGB", image_format)
    if image_format == "GIF":
        assert decoded.image.getpixel((0, 0)) == (255, 0, 0)


@pytest.mark.parametrize("data, complaint", [
    (noise_image(64, 64, seed=1)[:200], "cannot be decoded"),  # cut short
    (encoded("BMP"), "cannot be decoded"),  # a format that is not accepted
    (b"GIF89a" + b"\x00" * 20, "cannot be decoded"),
    (b"\x00" * (2 * 1024 * 1024), "over the limit of 1048576"),
])
def test_a_file_that_is_not_a_whole_accepted_image_is_refused_naming_the_part(data, complaint):
    with pytest.raises(InvalidRequest, match=complaint) as refused:
        decode_image(data, LIMITS, "messages[0].content[3]")
    assert str(refused.value).startswith("messages[0].content[3]: ")


def test_a_data_url_is_refused_before_decoding_when_its_text_alone_is_over_the_limit():
    with pytest.raises(ValueError, match="larger than the limit of 1000 bytes"):
        parse_data_url(data_url(b"x" * 5000), max_bytes=1000)
    with pytest.raises(ValueError, match="invalid base64"):
        parse_data_url("data:image/png;base64,@@@@", max_bytes=1000)


def fetcher(*allowed: str, max_bytes: int = 100_000) -> ImageFetcher:
    return ImageFetcher(max_bytes=max_bytes, timeout_s=5, max_redirects=2, allowed_networks=allowed)


@pytest.mark.parametrize("url", ["http://localhost/cat.png", "http://127.0.0.1/cat.png", "http://[::1]/cat.png",
                                 "http://10.1.2.3/cat.png", "http://192.168.0.1/cat.png", "http://169.254.169.254/x",
                                 "http://0.0.0.0/x", "http://224.0.0.1/x", "https://user@127.0.0.1/x"])
async def test_private_loopback_link_local_and_special_addresses_are_never_fetched(url):
    with pytest.raises(ImageFetchRefused, match="private, loopback or link-local"):
        await fetcher().fetch(url)


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.com/a.png", "http:///nohost.png"])
async def test_only_http_and_https_urls_with_a_host_are_fetched(url):
    with pytest.raises(ImageFetchRefused, match="must be http"):
        await fetcher().fetch(url)


async def test_a_redirect_is_checked_like_the_first_hop_and_their_number_is_bounded():
    picture = noise_image(32, 32, seed=2)
    routes = {"/cat.png": (200, {"content-type": "image/png"}, picture),
              "/to-metadata": (302, {"location": "http://169.254.169.254/latest/meta-data"}, b""),
              "/to-private": (301, {"location": "http://10.0.0.1/cat.png"}, b""),
              "/loop": (302, {"location": "/loop"}, b""),
              "/lying-length": (200, {"content-type": "image/png"}, b"0" * 200_000)}
    with image_server(routes) as base:
        allowed = fetcher("127.0.0.1/32")  # this test's own server only
        assert (await allowed.fetch(base + "/cat.png")).data == picture
        for path, complaint in (("/to-metadata", "169.254.169.254"), ("/to-private", "10.0.0.1, a private"),
                                ("/loop", "more than 2 times"), ("/lying-length", "over the limit of 100000")):
            with pytest.raises(ImageFetchRefused, match=complaint):
                await allowed.fetch(base + path)
        with pytest.raises(ImageFetchRefused, match="private, loopback"):
            await fetcher().fetch(base + "/cat.png")  # the same server, not allowed: refused before connecting
