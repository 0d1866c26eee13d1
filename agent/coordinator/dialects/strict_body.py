"""What every dialect's request body shares: strict models (an unknown parameter is refused and named, as the
chat body does), JSON read with the body's own errors, and the translated body checked by the coordinator.

Public names: Body, read_json, validated, checked.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from agent.coordinator.errors import BadRequest
from agent.wire.chat_body import ChatCompletionBody

M = TypeVar("M", bound=BaseModel)


class Body(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False, populate_by_name=True)


def read_json(raw: bytes) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise BadRequest(f"the request body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(data, dict):
        raise BadRequest("the request body must be a JSON object")
    return data


def validated(model: type[M], data: dict[str, Any]) -> M:
    """`data` as `model`, or a BadRequest naming the first offending parameter by its path."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        # Of a union's alternatives, the one that got furthest is the one the client meant.
        error = max(exc.errors(include_url=False), key=lambda e: len(e["loc"]))
        where = ".".join(str(part) for part in error["loc"] if not _is_union_tag(part))
        what = "is not a parameter here" if error["type"] == "extra_forbidden" else error["msg"]
        raise BadRequest(f"{where or 'the body'}: {what}", param=where or None, code="invalid_value") from None
    except RecursionError:
        raise BadRequest("the request body nests too deeply", code="invalid_value") from None


def checked(coordinator: Any, translated: dict[str, Any], dialect: str) -> ChatCompletionBody:
    """The translation checked as any chat-completions body is (bounds, schema, model); its errors say they
    are about the translation, since the client never wrote those field names."""
    try:
        return coordinator.validate(translated)
    except BadRequest as exc:
        if exc.param is None or exc.param == "model":
            raise
        raise type(exc)(f"{exc.message} (in the {dialect} request as translated to chat completions)",
                        param=exc.param, code=exc.code) from None


def _is_union_tag(part: Any) -> bool:
    """pydantic names the union member it tried in the location (`function_call`, `str`): not the client's path."""
    return isinstance(part, str) and (part in {"str", "list", "tuple", "dict", "int", "float", "bool"}
                                      or "[" in part or "-" in part)
