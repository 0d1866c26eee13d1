"""What an image costs on gemma-4: TTFT of an image request ÷ TTFT of a text request of the same prompt-token
count, and the vision encoder's time per image, on the tiny vision model (CPU).

    python scripts/bench_vision.py [--json] [--repeats 15] [--width 640 --height 480]

One engine serves both halves, alternating: an image request (one image, `--width` × `--height`, a short
question), then a text request whose prompt the chat format encodes to exactly as many tokens (filler
words added until it does). TTFT is submit → first token event; the ratio is the median of the paired
ratios, so drift on a shared machine cancels out. The encoder time is mlx-vlm's tower and projector on
the processed image (`VisionTower.encode`, evaluated), and the processor's time (resize, rescale) apart,
p50 over `--repeats` runs each, measured after the engine stopped. Results go to scripts/results/vision.json
with --json.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # runnable from a checkout
sys.path.insert(0, str(ROOT / "scripts"))

import structlog  # noqa: E402
from bench_engine import models_dir, say  # noqa: E402

from agent.engine import GenerationRequest, MLXEngine  # noqa: E402
from tests.vision_support import VISION_MODEL, image_message, noise_image  # noqa: E402

RESULTS = ROOT / "scripts" / "results" / "vision.json"
QUESTION = "What is in this picture?"
FILLER = "the quick brown fox jumps over the lazy dog "


def image_request(tag: str, image: bytes) -> GenerationRequest:
    return GenerationRequest.from_openai(tag, VISION_MODEL, {"messages": [image_message(QUESTION, image)],
                                                             "temperature": 0, "max_tokens": 1})


def text_request(tag: str, text: str) -> GenerationRequest:
    return GenerationRequest.from_openai(tag, VISION_MODEL, {"messages": [{"role": "user", "content": text}],
                                                             "temperature": 0, "max_tokens": 1})


def text_of(engine: MLXEngine, num_tokens: int) -> str:
    """A text prompt the chat format encodes to exactly `num_tokens` tokens (words, then single characters)."""
    chat = engine.backend.chat_format(VISION_MODEL)
    words = FILLER.split()
    text = QUESTION
    while len(chat.encode(text_request("n", text + " " + " ".join(words))).token_ids) <= num_tokens:
        text += " " + " ".join(words)
    for word in words * 64:
        candidate = f"{text} {word}"
        if len(chat.encode(text_request("n", candidate)).token_ids) > num_tokens:
            break
        text = candidate
    while len(chat.encode(text_request("n", text)).token_ids) < num_tokens:
        text += "."
    found = len(chat.encode(text_request("n", text)).token_ids)
    if found != num_tokens:
        raise SystemExit(f"could not make a text prompt of exactly {num_tokens} tokens (got {found})")
    return text


async def ttft(engine: MLXEngine, request: GenerationRequest) -> tuple[float, int]:
    started = time.perf_counter()
    stream = await engine.submit(request)
    async for _ in stream:
        first = time.perf_counter() - started
        break
    completion = await stream.collect()
    return first, completion.finish.usage.prompt_tokens


async def ttft_pairs(model_dir: Path, image: bytes, repeats: int) -> dict:
    async with MLXEngine({VISION_MODEL: model_dir}) as engine:
        await engine.load(VISION_MODEL)
        _, prompt_tokens = await ttft(engine, image_request("warm-image", image))
        text = text_of(engine, prompt_tokens)
        await ttft(engine, text_request("warm-text", text))
        pairs = []
        for repeat in range(repeats):
            with_image, image_tokens = await ttft(engine, image_request(f"i{repeat}", image))
            text_only, text_tokens = await ttft(engine, text_request(f"t{repeat}", text))
            assert image_tokens == text_tokens == prompt_tokens
            pairs.append((with_image, text_only))
            say(f"run {repeat + 1}/{repeats}: image {with_image * 1000:.1f} ms, text {text_only * 1000:.1f} ms")
    return {"prompt_tokens": prompt_tokens,
            "image_ttft_ms_p50": round(1000 * statistics.median(p[0] for p in pairs), 2),
            "text_ttft_ms_p50": round(1000 * statistics.median(p[1] for p in pairs), 2),
            "image_vs_text_ttft": round(statistics.median(p[0] / p[1] for p in pairs), 3)}


def encoder_times(model_dir: Path, image: bytes, repeats: int) -> dict:
    import mlx.core as mx
    from mlx_lm.utils import load_model
    from PIL import Image

    from agent.engine.vision import VisionTower, read_vision_files

    text_model, _ = load_model(model_dir)
    tower = VisionTower(read_vision_files(model_dir))
    tower.load(model_dir, text_model)
    rgb = Image.open(io.BytesIO(image)).convert("RGB")
    prepared = tower.prepare(rgb)
    mx.eval(tower.encode(prepared))  # warm up
    process, encode = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        prepared = tower.prepare(rgb)
        process.append(time.perf_counter() - started)
        started = time.perf_counter()
        mx.eval(tower.encode(prepared))
        encode.append(time.perf_counter() - started)
    return {"soft_tokens": prepared.num_soft_tokens, "pixels": list(prepared.pixel_values.shape[-2:]),
            "processor_ms_p50": round(1000 * statistics.median(process), 2),
            "encoder_ms_p50": round(1000 * statistics.median(encode), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print one JSON object and save it to " + str(RESULTS))
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    model_dir = models_dir() / VISION_MODEL
    image = noise_image(args.width, args.height, seed=1)
    load_before = os.getloadavg()[0]
    result = {"command": "python scripts/bench_vision.py --json --repeats " + str(args.repeats),
              "model": VISION_MODEL, "image": f"{args.width}×{args.height} PNG", "repeats": args.repeats,
              **asyncio.run(ttft_pairs(model_dir, image, args.repeats)), **encoder_times(model_dir, image, args.repeats),
              "load_average_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)], "measured_at": round(time.time())}
    if args.json:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
