"""Helpers for the vision tests: images as bytes and data URLs, a local HTTP server of images, and a Batcher on
the tiny vision model with mlx-vlm's tower beside it (the engine's own pieces, without the engine around them)."""

from __future__ import annotations

import base64
import contextlib
import http.server
import io
import threading
from pathlib import Path

import numpy as np
from PIL import Image

VISION_MODEL = "gemma-4-tiny-vision"


def noise_image(width: int, height: int, seed: int, image_format: str = "PNG") -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, image_format)
    return out.getvalue()


class _Images(http.server.BaseHTTPRequestHandler):
    routes: dict[str, tuple[int, dict[str, str], bytes]] = {}

    def do_GET(self) -> None:  # noqa: N802 (the standard library's name)
        status, headers, body = self.routes.get(self.path, (404, {}, b""))
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@contextlib.contextmanager
def image_server(routes: dict):
    _Images.routes = routes
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Images)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def data_url(data: bytes, media_type: str = "image/png") -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode('ascii')}"


def image_part(data: bytes, media_type: str = "image/png") -> dict:
    return {"type": "image_url", "image_url": {"url": data_url(data, media_type)}}


def image_message(text: str, *images: bytes) -> dict:
    return {"role": "user", "content": [{"type": "text", "text": text}, *(image_part(image) for image in images)]}


class VisionBatcher:
    """mlx-lm's text model in our Batcher, mlx-vlm's tower beside it, and the prompts the engine would make."""

    def __init__(self, model_dir: Path, chunk_tokens: int = 512) -> None:
        from mlx_lm import load

        from agent.catalog import spec_from_model_dir
        from agent.engine.batcher import Batcher
        from agent.engine.chat import ChatFormat
        from agent.engine.schedule import ScheduleLimits
        from agent.engine.vision import VisionTower, read_vision_files

        model, tokenizer = load(str(model_dir))
        self.spec = spec_from_model_dir(model_dir)
        self.vision = VisionTower(read_vision_files(model_dir))
        self.vision.load(model_dir, model)
        self.chat = ChatFormat(tokenizer, "gemma4")
        self.chat.image_marker = tokenizer.convert_ids_to_tokens(self.vision.files.image_token_id)
        self.batcher = Batcher(model, self.spec, ScheduleLimits(chunk_tokens=chunk_tokens),
                               self.vision.files.image_token_id)

    def row(self, uid: int, text: str, images: list[bytes], max_tokens: int):
        from mlx_lm.generate import StopSequences
        from mlx_lm.sample_utils import greedy_sampler

        import mlx.core as mx

        from agent.engine.batcher import Row
        from agent.engine.chat import EncodedPrompt
        from agent.engine.image_feed import RowImages
        from agent.engine.image_prompt import expand_images
        from agent.engine.sampling import Guard
        from agent.engine.types import GenerationRequest
        from agent.images import ImageLimits, decode_image

        request = GenerationRequest.from_openai(f"r{uid}", VISION_MODEL, {"messages": [image_message(text, *images)]})
        encoded = self.chat.encode(request)
        prepared = [self.vision.prepare(decode_image(image.data, ImageLimits(), image.label).image)
                    for image in request.images]
        files = self.vision.files
        expanded = expand_images(encoded.token_ids, [p.num_soft_tokens for p in prepared], boi=files.boi_token_id,
                                 image=files.image_token_id, eoi=files.eoi_token_id, marker="<|image|>")
        features = mx.concatenate([self.vision.encode(p) for p in prepared]) if prepared else None
        images_of_row = None if features is None else RowImages(features, expanded.positions)
        prompt = expanded.token_ids
        return Row(f"r{uid}", uid, prompt, max_tokens, greedy_sampler, [], StopSequences(),
                   self.chat.tokenizer.detokenizer, self.chat.splitter(EncodedPrompt(prompt, "normal")), Guard(),
                   images=images_of_row)
