"""Logging: structlog key-value events with dotted names (`slot.state`, `link.reconnect`, `admit.reject`).

JSON lines when the output is not a terminal (under launchd it is a file), a readable console
renderer on a terminal. The standard library's loggers (websockets, asyncio) go through the same
renderer, so a JSON log stays JSON. Bind `provider_id`, `model` and `request_id` once, with
`bind_ids` on a logger or structlog.contextvars.bound_contextvars for a task.

Public names: configure_logging, bind_ids, get_logger, LogFormat.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, Literal, TextIO

import structlog

LogFormat = Literal["auto", "json", "console"]
get_logger = structlog.get_logger


def configure_logging(fmt: LogFormat = "auto", level: str = "info", *, stream: TextIO | None = None) -> None:
    stream = stream or sys.stdout
    is_tty = bool(getattr(stream, "isatty", lambda: False)())
    level_no = logging.getLevelNamesMapping()[level.upper()]
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if fmt == "json" or (fmt == "auto" and not is_tty):
        renderer: Any = structlog.processors.JSONRenderer()
        shared.append(structlog.processors.format_exc_info)
    else:
        # Plain tracebacks: the rich formatter would print local variables, provider token included.
        renderer = structlog.dev.ConsoleRenderer(colors=is_tty, exception_formatter=structlog.dev.plain_traceback)
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level_no),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name], processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer]
    ))
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level_no)


def bind_ids(
    logger: Any, *, provider_id: str | None = None, model: str | None = None, request_id: str | None = None
) -> Any:
    """`logger` with whichever of the three ids are known bound to every event it logs."""
    ids = {"provider_id": provider_id, "model": model, "request_id": request_id}
    return logger.bind(**{key: value for key, value in ids.items() if value is not None})
