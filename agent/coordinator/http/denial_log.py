"""uvicorn's websockets-sansio protocol (0.54) logs "ASGI callable returned without completing handshake."
at ERROR after an app answers an upgrade with a denial response (the 401 of a refused provider token): it
counts only an accepted handshake as complete. The refusal is ours and already logged once
(`provider.refused`), so that line is dropped, and only for a connection the endpoint denied: the endpoint
marks its task's context (`mark_denied`), which uvicorn's log call after the app returns still runs in.
tests/test_coordinator_access_log.py runs the real server to keep it so.

Public names: mark_denied, install_denial_filter.
"""

from __future__ import annotations

import contextvars
import logging

UVICORN_LOGGER = "uvicorn.error"
HANDSHAKE_MESSAGE = "ASGI callable returned without completing handshake"
_denied: contextvars.ContextVar[bool] = contextvars.ContextVar("darkbloom_ws_denied", default=False)


def mark_denied() -> None:
    _denied.set(True)


class _DeniedHandshakeFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (_denied.get() and record.getMessage().startswith(HANDSHAKE_MESSAGE))


def install_denial_filter() -> None:
    logger = logging.getLogger(UVICORN_LOGGER)
    if not any(isinstance(f, _DeniedHandshakeFilter) for f in logger.filters):
        logger.addFilter(_DeniedHandshakeFilter())
