"""The fields a peer sent that this release does not know: ignored, and each name reported once.

A peer one release ahead adds fields; refusing them would break a mixed fleet, so frames from the
other side drop what they do not know: when strict validation finds unknown fields inside frames (not
inside the consumer's chat body, which stays strict), `without_unknown_fields` removes exactly those
from the JSON and parse_message validates it again. Frames themselves stay extra="forbid", so our own
code cannot build one with a misspelt field.
One UnknownFields per link remembers the names already reported, so a field in every heartbeat is
logged once, not every few seconds; it remembers at most `max_names`, so a hostile peer that invents
a new name per frame cannot grow it without bound (past the limit it says so once, then stays quiet).

    unknown = UnknownFields()
    frame = parse_message(data, direction=..., unknown_fields=unknown)
    for name in unknown.drain(): log.info("link.unknown_field", field=name)

Public names: UnknownFields, without_unknown_fields, MAX_UNKNOWN_FIELD_NAMES, MAX_FIELD_NAME_CHARS.
"""

from __future__ import annotations

import json
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from agent.wire.frames import Frame

MAX_UNKNOWN_FIELD_NAMES = 64  # distinct names remembered per link; a real peer adds a handful per release
MAX_FIELD_NAME_CHARS = 64  # a name is clipped before it is remembered or logged


@dataclass(slots=True)
class UnknownFields:
    max_names: int = MAX_UNKNOWN_FIELD_NAMES
    names: set[str] = field(default_factory=set)
    is_full: bool = False
    _fresh: list[str] = field(default_factory=list)

    def add(self, where: str, name: str) -> None:
        """`name` arrived in a `where` (a frame type or a part's class name) and was dropped."""
        key = f"{where}.{_clip(name)}"
        if key in self.names or self.is_full:
            return
        if len(self.names) >= self.max_names:
            self.is_full = True
            self._fresh.append(f"(more than {self.max_names} unknown field names; the rest are not reported)")
            return
        self.names.add(key)
        self._fresh.append(key)

    def drain(self) -> list[str]:
        """The names not reported yet (each is returned once, ever)."""
        fresh, self._fresh = self._fresh, []
        return fresh


def without_unknown_fields(errors: list[dict[str, Any]], raw: bytes, frame_class: type[Frame],
                           unknown: UnknownFields) -> bytes | None:
    """`raw` without the unknown frame fields that `errors` (a strict validation of it as `frame_class`,
    tagged union locations) found, or None when there are none to drop."""
    drops = [error["loc"][1:] for error in errors
             if error["type"] == "extra_forbidden" and _is_in_frame(frame_class, error["loc"][1:])]
    if not drops:
        return None
    try:
        obj = json.loads(raw)
        for path in drops:
            parent = obj
            for part in path[:-1]:
                parent = parent[part]
            del parent[path[-1]]
        cleaned = json.dumps(obj, ensure_ascii=False, allow_nan=False).encode("utf-8", "surrogatepass")
    except (ValueError, RecursionError, LookupError, TypeError):
        return None  # not the shape the errors describe (or NaN / Infinity): let the first error stand
    for path in drops:
        owner = _owner(frame_class, path)
        unknown.add(owner.model_fields["type"].default if owner is frame_class else owner.__name__, str(path[-1]))
    return cleaned


def _is_in_frame(frame_class: type[Frame], path: tuple[Any, ...]) -> bool:
    owner = _owner(frame_class, path)
    return owner is not None and issubclass(owner, Frame)


def _owner(model: type[BaseModel] | None, path: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model that holds the last part of `path` (list indices skipped), or None if it is not a model."""
    for part in path[:-1]:
        if isinstance(part, int):
            continue
        info = model.model_fields.get(part) if model is not None else None
        model = _model_in(info.annotation) if info is not None else None
        if model is None:
            return None
    return model


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside an annotation such as `KVLayout | None` or `tuple[SlotStatus, ...]`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Annotated,):
        return _model_in(typing.get_args(annotation)[0])
    for arg in typing.get_args(annotation):
        if arg is not Ellipsis and not isinstance(arg, (str, int, types.NoneType)) and (found := _model_in(arg)):
            return found
    return None


def _clip(name: str) -> str:
    return name if len(name) <= MAX_FIELD_NAME_CHARS else name[: MAX_FIELD_NAME_CHARS - 1] + "…"
