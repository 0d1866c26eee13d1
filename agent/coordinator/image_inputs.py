"""A request's images, checked and made inline before anything is held or routed.

For each `image_url` part, in order: the model must be one a connected provider serves with vision (else
a 400 naming the part: gpt-oss, or gemma served text-only everywhere); a `data:` URL is parsed within the
byte limit, an `http(s)` URL is fetched by the coordinator (image_fetch.py) and becomes a `data:` URL; then
the bounded decoder (agent/images.py) decodes it within the byte and pixel limits, off the event loop. So a
corrupt, oversized or unreachable image is a 400 that costs nothing: no hold, no KV, no provider.

The decoded sizes give each image's prompt tokens by the providers' image rule (agent/vision_tokens.py), a
rule whose soft-token budget is held to `max_soft_tokens_per_image` (a provider's rule is a claim too).

Public names: ImageInputs, ImageFacts.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from agent.coordinator.errors import BadRequest, RequestTooLarge
from agent.coordinator.image_fetch import ImageFetcher, ImageFetchRefused
from agent.coordinator.routing.registry import Registry
from agent.coordinator.settings import CoordinatorSettings
from agent.errors import InvalidRequest
from agent.images import ImageLimits, decode_image
from agent.vision_tokens import VisionRule
from agent.wire.chat_body import ChatCompletionBody, ChatMessage
from agent.wire.image_parts import ImagePart, ImageURL, data_url, parse_data_url
from agent.wire.protocol import MAX_FRAME_BYTES

MAX_INLINE_BODY_BYTES = MAX_FRAME_BYTES - 64 * 1024  # as the consumer's body (http/api.py): room for the frame


@dataclass(frozen=True, slots=True)
class ImageFacts:
    label: str
    width: int
    height: int


class ImageInputs:
    def __init__(self, settings: CoordinatorSettings, registry: Registry, fetcher: ImageFetcher | None = None) -> None:
        self.settings, self.registry = settings, registry
        self.limits = ImageLimits(max_bytes=settings.max_image_bytes, max_pixels=settings.max_image_pixels)
        self.fetcher = fetcher or ImageFetcher(
            max_bytes=settings.max_image_bytes, timeout_s=settings.image_fetch_timeout_s,
            max_redirects=settings.image_fetch_max_redirects,
            allowed_networks=settings.image_fetch_allowed_networks)

    def rules(self, model: str) -> set[VisionRule]:
        """The image rules the model's providers with vision claim (empty: none connected), budgets bounded."""
        bound = self.settings.max_soft_tokens_per_image
        return {VisionRule(min(v.max_soft_tokens, bound), v.patch_size, v.pooling_kernel_size)
                for v in (offer.entry.vision for _, offer in self.registry.offers(model)) if v is not None}

    def prompt_tokens(self, model: str, images: tuple[ImageFacts, ...]) -> int:
        """The most any connected provider's rule makes of these images: an estimate no honest agent's count
        exceeds, so its claim is never clamped, whatever a provider with a smaller rule said."""
        if not images:
            return 0
        return max((sum(rule.prompt_tokens(i.height, i.width) for i in images) for rule in self.rules(model)),
                   default=0)

    async def inline(self, body: ChatCompletionBody) -> tuple[ChatCompletionBody, tuple[ImageFacts, ...]]:
        parts = body.image_parts
        if not parts:
            return body, ()
        first = parts[0][0]
        if len(parts) > self.settings.max_images:
            raise _refused(parts[self.settings.max_images][0], f"is one of {len(parts)} images; at most "
                                                               f"{self.settings.max_images} are accepted per request")
        if not self.rules(body.model):
            raise _refused(first, f"is an image, and {body.model} does not take images here (no connected "
                                  "provider serves it with vision)", code="model_without_vision")
        inlined: dict[str, str] = {}
        facts = []
        for label, part in parts:
            media_type, data = await self._bytes(label, part)
            try:
                decoded = await asyncio.to_thread(decode_image, data, self.limits, label)
            except InvalidRequest as exc:
                raise BadRequest(str(exc), param=label, code="invalid_image") from None
            facts.append(ImageFacts(label, decoded.width, decoded.height))
            if not part.is_data_url:
                inlined[label] = data_url(media_type, data)
        body = _with_urls(body, inlined)
        if len(body.model_dump_json(exclude_none=True)) > MAX_INLINE_BODY_BYTES:
            raise RequestTooLarge(f"{first}: with its images inline the request is over the {MAX_INLINE_BODY_BYTES} "
                                  "bytes a provider accepts in one request", param=first)
        return body, tuple(facts)

    async def _bytes(self, label: str, part: ImagePart) -> tuple[str, bytes]:
        url = part.image_url.url
        if part.is_data_url:
            try:
                parsed = parse_data_url(url, max_bytes=self.settings.max_image_bytes)
            except ValueError as exc:
                raise _refused(label, f"the image {exc}") from None
            return parsed.media_type, parsed.data
        if not url[:8].lower().startswith(("http://", "https://")):
            raise _refused(label, "the image URL must be a data: URL or an http(s) URL")
        try:
            fetched = await self.fetcher.fetch(url)
        except ImageFetchRefused as exc:
            raise _refused(label, str(exc)) from None
        return fetched.media_type, fetched.data


def _refused(label: str, message: str, *, code: str = "invalid_image") -> BadRequest:
    return BadRequest(f"{label}: {message}", param=label, code=code)


def _with_urls(body: ChatCompletionBody, urls: dict[str, str]) -> ChatCompletionBody:
    if not urls:
        return body
    messages = []
    for i, message in enumerate(body.messages):
        if isinstance(message.content, (str, type(None))):
            messages.append(message)
            continue
        content = tuple(_inline(part, urls.get(f"messages[{i}].content[{j}]")) for j, part in enumerate(message.content))
        messages.append(ChatMessage.model_validate({**message.model_dump(exclude_none=True),
                                                    "content": [p.model_dump(exclude_none=True) for p in content]}))
    return body.model_copy(update={"messages": tuple(messages)})


def _inline(part, url: str | None):
    if url is None or not isinstance(part, ImagePart):
        return part
    return ImagePart(type="image_url", image_url=ImageURL(url=url, detail=part.image_url.detail))

