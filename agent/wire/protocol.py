"""The wire protocol between agent and coordinator: JSON text frames discriminated by `"type"`.

The frames themselves are in agent.wire.frames (and the OpenAI body in agent.wire.chat_body); this module
is what a connection uses: the two direction unions, the size limit, and

    parse_message(data, direction=...)  -> a frame, or a ProtocolError (never raises on bad input)
    validate_chat_request(body)         -> a ChatCompletionBody, or a ProtocolError naming the parameter
    encode(frame) -> str;  json_schema() -> the whole protocol as one JSON Schema document

Frames are validated strictly (no "5" for 5). A frame's unknown fields are ignored (a peer one
release ahead adds fields: that is a new minor version, and it must not break the fleet), and their
names go to the link's UnknownFields to be logged once; a consumer's chat body stays strict, so a
misspelt parameter is an error naming it, never silently dropped. A ProtocolError's `to_frame()` is
the `error` frame to send back; a bad frame never closes the connection.

Versions: MAJOR.MINOR. A minor adds fields or frames (ignored by who does not know them); a major
changes a meaning. `register` says which majors the agent speaks (min_protocol_version ..
protocol_version), `negotiate` picks the newest one both speak, `registered` names it; no common
major is ProtocolVersionUnsupported, which the agent treats as fatal.

Public names: PROTOCOL_VERSION, PROTOCOL_MINOR, MIN_PROTOCOL_VERSION, LEGACY_PROTOCOL_VERSION,
MAX_FRAME_BYTES, MAX_REGISTER_FRAME_BYTES, Direction, Message, AgentMessage, CoordinatorMessage, ProtocolError, FrameTooLarge,
FrameNotJson, UnknownMessageType, InvalidField, ProtocolVersionUnsupported, parse_message, negotiate,
validate_chat_request, encode, json_schema; the frame classes are re-exported from agent.wire.frames (and the
batched chunks from agent.wire.chunk_batch). A batch with some bad rows parses to the batch of its good ones;
`frame.rejected_rows` names the others, so one bad row never breaks the other rows' streams.
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Annotated, Any, Union, get_args

from pydantic import Field, TypeAdapter, ValidationError

from agent.errors import DarkbloomError
from agent.wire.chat_body import ChatCompletionBody
from agent.wire.chunk_batch import InferenceResponseChunks, salvage_rows
from agent.wire.frames import (
    MAX_ID_CHARS,
    MAX_REASON_CHARS,
    Cancel,
    ErrorFrame,
    Heartbeat,
    InferenceAccepted,
    InferenceComplete,
    InferenceError,
    InferenceRejected,
    InferenceRequest,
    InferenceResponseChunk,
    LoadModel,
    Register,
    Registered,
    UnloadModel,
)
from agent.wire.unknown_fields import UnknownFields, without_unknown_fields

PROTOCOL_VERSION = 1  # the newest major version this release speaks
PROTOCOL_MINOR = 5  # 1: unknown fields ignored, version range in register, error codes on rejections; 2: num_tokens on
# chunks; 3: logprobs on chunks; 4: inference_response_chunks (agent/wire/chunk_batch.py), sent only to a coordinator of 4+;
# 5: the prefix cache on heartbeat slots (prefix_chains, prefix_hit_rate, prefix_hit_tokens, prefix_evictions), sent to
# every coordinator (an older one ignores them; an older agent's slots report none)
MIN_PROTOCOL_VERSION = 1  # the oldest major it still speaks
LEGACY_PROTOCOL_VERSION = 1  # what a peer that names no version (one from before negotiation) speaks
MAX_FRAME_BYTES = 8 * 1024 * 1024  # a full 262k-token prompt is ~1-3 MiB of JSON
MAX_REGISTER_FRAME_BYTES = 256 * 1024  # a register (and anything before it): 64 models with layouts is ~100 KiB

AgentMessage = Annotated[
    Union[Register, Heartbeat, InferenceAccepted, InferenceRejected, InferenceResponseChunk, InferenceResponseChunks,
          InferenceComplete, InferenceError, ErrorFrame],
    Field(discriminator="type"),
]
CoordinatorMessage = Annotated[
    Union[Registered, InferenceRequest, Cancel, LoadModel, UnloadModel, ErrorFrame], Field(discriminator="type")
]
Message = Union[Register, Heartbeat, InferenceAccepted, InferenceRejected, InferenceResponseChunk,
                InferenceResponseChunks, InferenceComplete, InferenceError, ErrorFrame, Registered, InferenceRequest,
                Cancel, LoadModel, UnloadModel]


class Direction(StrEnum):
    TO_COORDINATOR = "to_coordinator"  # what the agent sends
    TO_AGENT = "to_agent"  # what the coordinator sends


_ADAPTERS = {Direction.TO_COORDINATOR: TypeAdapter(AgentMessage), Direction.TO_AGENT: TypeAdapter(CoordinatorMessage)}
_CHAT_ADAPTER = TypeAdapter(ChatCompletionBody)
_CLASSES = {direction: {member.model_fields["type"].default: member for member in get_args(get_args(union)[0])}
            for direction, union in ((Direction.TO_COORDINATOR, AgentMessage), (Direction.TO_AGENT, CoordinatorMessage))}
_BATCH_TYPE = InferenceResponseChunks.model_fields["type"].default
_TYPES = {direction: set(classes) for direction, classes in _CLASSES.items()}


# ---- errors, parsing, encoding ------------------------------------------------------------------

class ProtocolError(DarkbloomError):
    """A frame (or chat body) that cannot be used. Returned, not raised, by the parsers."""

    code = "protocol_invalid"

    def __init__(self, message: str, *, field: str | None = None, request_id: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.request_id = request_id

    def to_frame(self) -> ErrorFrame:
        return ErrorFrame(code=self.code, message=_clip(self.message, MAX_REASON_CHARS),
                          request_id=self.request_id, field=self.field and _clip(self.field, MAX_ID_CHARS))


class FrameTooLarge(ProtocolError):
    code = "frame_too_large"


class FrameNotJson(ProtocolError):
    code = "frame_not_json"


class UnknownMessageType(ProtocolError):
    code = "unknown_message_type"


class InvalidField(ProtocolError):
    code = "invalid_field"


class ProtocolVersionUnsupported(ProtocolError):
    """No major version both sides speak: fatal for the agent (retrying cannot help)."""

    code = "protocol_version_unsupported"


def parse_message(data: str | bytes, *, direction: Direction | str,
                  unknown_fields: UnknownFields | None = None) -> Message | ProtocolError:
    """One frame received in `direction`, or the reason it is unusable. Never raises on bad input.

    Fields the frame does not know are dropped; their names are added to `unknown_fields` if given."""
    direction = direction if direction.__class__ is Direction else Direction(direction)  # the enum's call: ~0.3 µs
    raw = _bounded_bytes(data)
    if isinstance(raw, ProtocolError):
        return raw
    try:
        return _ADAPTERS[direction].validate_json(raw, strict=True)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        frame_class = _CLASSES[direction].get(errors[0]["loc"][0] if errors[0]["loc"] else None)
        unknown = unknown_fields if unknown_fields is not None else UnknownFields(max_names=0)
        tolerated = frame_class and without_unknown_fields(errors, raw, frame_class, unknown)
        if not tolerated:
            return _salvaged(errors, raw) or _explain(exc, raw, direction)
    try:  # again without them: what is left must be valid on its own
        return _ADAPTERS[direction].validate_json(tolerated, strict=True)
    except ValidationError as exc:
        return _salvaged(exc.errors(include_url=False, include_input=False), tolerated) or _explain(
            exc, tolerated, direction)


def _salvaged(errors: list[Any], raw: bytes) -> InferenceResponseChunks | None:
    """A batch whose only problems are in some of its rows keeps the others (chunk_batch.py)."""
    if not errors or not errors[0]["loc"] or errors[0]["loc"][0] != _BATCH_TYPE:
        return None
    return salvage_rows(raw, errors)


def negotiate(register: Register) -> int | ProtocolVersionUnsupported:
    """The newest major version both this coordinator and the registering agent speak."""
    agent_max = register.protocol_version
    agent_min = register.min_protocol_version if register.min_protocol_version is not None else agent_max
    chosen = min(agent_max, PROTOCOL_VERSION)
    if agent_min <= chosen and chosen >= MIN_PROTOCOL_VERSION:
        return chosen
    upgrade = "coordinator" if agent_min > PROTOCOL_VERSION else "agent"
    return ProtocolVersionUnsupported(
        f"the agent speaks protocol versions {_span(agent_min, agent_max)} and this coordinator "
        f"{_span(MIN_PROTOCOL_VERSION, PROTOCOL_VERSION)}: no version in common; upgrade the {upgrade}",
        field="protocol_version")


def _span(low: int, high: int) -> str:
    return str(high) if low == high else f"{low} to {high}"


def validate_chat_request(data: str | bytes | dict[str, Any]) -> ChatCompletionBody | ProtocolError:
    """A consumer's chat-completions body, or an error whose `field` is the offending parameter."""
    if isinstance(data, dict):
        try:
            data = json.dumps(data, allow_nan=False)
        except (TypeError, ValueError) as exc:
            return InvalidField(f"the request body is not plain JSON: {exc}")
    raw = _bounded_bytes(data)
    if isinstance(raw, ProtocolError):
        return raw
    try:
        return _CHAT_ADAPTER.validate_json(raw, strict=True)
    except ValidationError as exc:
        return _explain(exc, raw, None)


def encode(message: Message) -> str:
    return message.model_dump_json()


def json_schema() -> dict[str, Any]:
    """One JSON Schema (2020-12) document: `ToAgent` and `ToCoordinator` unions and every frame."""
    defs: dict[str, Any] = {}
    for name, direction in (("ToCoordinator", Direction.TO_COORDINATOR), ("ToAgent", Direction.TO_AGENT)):
        schema = _ADAPTERS[direction].json_schema(ref_template="#/$defs/{model}")
        defs.update(schema.pop("$defs", {}))
        defs[name] = schema
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "darkbloom-agent wire protocol",
        "description": f"JSON text frames discriminated by 'type'; protocol version {PROTOCOL_VERSION}."
                       f"{PROTOCOL_MINOR}; at most {MAX_FRAME_BYTES} bytes per frame; a receiver ignores "
                       "frame fields it does not know (the chat body excepted).",
        "x-protocol-version": PROTOCOL_VERSION,
        "x-protocol-minor": PROTOCOL_MINOR,
        "anyOf": [{"$ref": "#/$defs/ToAgent"}, {"$ref": "#/$defs/ToCoordinator"}],
        "$defs": dict(sorted(defs.items())),
    }


def _bounded_bytes(data: str | bytes) -> bytes | ProtocolError:
    # A str has at most as many characters as UTF-8 bytes: refuse the giant ones before encoding them.
    if len(data) > MAX_FRAME_BYTES:
        return FrameTooLarge(f"frame of {len(data)}+ bytes exceeds the {MAX_FRAME_BYTES}-byte limit")
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else bytes(data)
    if len(raw) > MAX_FRAME_BYTES:
        return FrameTooLarge(f"frame of {len(raw)} bytes exceeds the {MAX_FRAME_BYTES}-byte limit")
    return raw


def _explain(exc: ValidationError, raw: bytes, direction: Direction | None) -> ProtocolError:
    errors = exc.errors(include_url=False, include_input=False)
    peek = _peek(raw)
    request_id = peek.get("request_id")
    request_id = request_id if isinstance(request_id, str) and 0 < len(request_id) <= MAX_ID_CHARS else None
    kind = errors[0]["type"]
    if kind == "json_invalid":
        return FrameNotJson(f"not valid JSON: {errors[0]['ctx']['error']}")
    if direction is not None and kind in ("union_tag_invalid", "union_tag_not_found", "dict_type"):
        return _unknown_type(peek.get("type"), direction, request_id)
    loc, message, num_problems = _first_problem(errors)
    field = ".".join(_clip(str(part), 64) for part in loc[1 if direction is not None else 0:]) or None
    what = f"{_clip(str(peek.get('type')), 64)} frame" if direction is not None else "request"
    where = f"field {field!r}" if field else "body"
    tail = f" (and {num_problems - 1} more problem{'s' * (num_problems > 2)})" if num_problems > 1 else ""
    return InvalidField(f"{what}: {where}: {message}{tail}", field=field, request_id=request_id)


def _first_problem(errors: list[Any]) -> tuple[tuple[Any, ...], str, int]:
    """The first bad field, its path without union-branch labels, and one message for it.

    A value that fits no branch of a union (a message `content`, `stop`) fails in every branch; the
    branch where it failed deepest, or for a reason other than its JSON type, is the one it meant."""
    first = errors[0]
    cut = next((i for i, part in enumerate(first["loc"]) if _is_branch_label(part)), None)
    if cut is None:
        return first["loc"], _message(first), len(errors)
    site = first["loc"][:cut]
    group = [e for e in errors if e["loc"][:cut] == site and len(e["loc"]) > cut and _is_branch_label(e["loc"][cut])]
    meant = [e for e in group if not e["type"].endswith("_type")]
    if meant:
        best = max(meant, key=lambda e: len(e["loc"]))
        loc = tuple(part for part in best["loc"] if not _is_branch_label(part))
        return loc, _message(best), len(errors) - len(group) + 1
    expected = " or ".join(_message(e).removeprefix("Input should be ") for e in group)
    return site, f"Input should be {expected}", len(errors) - len(group) + 1


def _is_branch_label(part: Any) -> bool:
    return isinstance(part, str) and (part in _SCALAR_LABELS or "[" in part)


_SCALAR_LABELS = {"str", "constrained-str", "int", "constrained-int", "float", "constrained-float", "bool"}


def _unknown_type(tag: Any, direction: Direction, request_id: str | None) -> ProtocolError:
    if not isinstance(tag, str):
        return UnknownMessageType("a frame must be a JSON object with a string 'type'", request_id=request_id)
    other = Direction.TO_AGENT if direction is Direction.TO_COORDINATOR else Direction.TO_COORDINATOR
    if tag in _TYPES[other]:
        return UnknownMessageType(f"'{tag}' frames are sent {other.value.replace('_', ' ')}, not "
                                  f"{direction.value.replace('_', ' ')}", request_id=request_id)
    known = ", ".join(sorted(_TYPES[direction]))
    return UnknownMessageType(f"unknown frame type {_clip(tag, 64)!r} (known: {known})", request_id=request_id)


def _message(error: dict[str, Any]) -> str:
    if error["type"] == "extra_forbidden":
        return "unknown or unsupported field"
    # The wire is JSON: say "array" where pydantic, validating into tuples, says "tuple".
    message = error["msg"].removeprefix("Value error, ")
    return message.replace("valid tuple", "valid array").replace("Tuple should", "Array should")


def _peek(raw: bytes) -> dict[str, Any]:
    try:
        obj = json.loads(raw)
    except (ValueError, RecursionError):
        return {}
    return obj if isinstance(obj, dict) else {}


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"