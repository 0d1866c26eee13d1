"""Errors that cross a boundary: the wire, the CLI, the operator's terminal.

    DarkbloomError (code)                 root; `code` is a stable string, never a traceback
    ├── CatalogError      catalog_invalid     models.toml / config.json unreadable or invalid (agent.catalog)
    ├── UnknownModel      unknown_model       the one way to say "no such model here" (catalog, engine, CLI;
    │                                         the consumer API says it in OpenAI's words: 404 model_not_found)
    ├── InvalidRequest    invalid_request     a request that cannot be served as written, anywhere
    ├── WeightsError      weights_invalid     a safetensors header that cannot be read (agent.safetensors_info)
    ├── ConfigError       config_invalid      agent configuration unusable (agent.daemon.config)
    ├── EngineError       engine_error        agent.engine.types: RequestRefused (kv_full | cannot_fit |
    │                                         model_not_ready), LoadRefused, LoadFailed, EngineNotRunning
    ├── LinkRefused                           agent.link.client: fatal for the daemon, each its exit code
    │   ├── LinkAuthRefused       auth_refused                    the provider token was refused
    │   └── LinkProtocolRefused   protocol_version_unsupported    no protocol version in common
    ├── ModelStoreError   model_*             agent.daemon.model_store (download_failed is retryable)
    ├── ServiceError      service_*           agent.daemon.launch_agent (launchd)
    ├── the coordinator's: ApiError (OpenAI-shaped, agent.coordinator.errors), RateLimited,
    │   InsufficientBalance, DuplicateRequest, UnknownAccount, KeyNotFound, InvalidAmount
    └── ProtocolError     protocol_invalid    a frame or chat body that cannot be used (returned, not raised)
        ├── FrameTooLarge               frame_too_large
        ├── FrameNotJson                frame_not_json
        ├── UnknownMessageType          unknown_message_type
        ├── InvalidField                invalid_field       .field = dotted path, .request_id if known
        └── ProtocolVersionUnsupported  protocol_version_unsupported

Codes cross the wire (`inference_rejected.code`, `inference_error.code`, `error.code`), so whether
another attempt can help is decided here, from the code, in `is_retryable`: the agent writes its
answer into the frame's `retryable`, and the coordinator retries on another provider exactly when
is_retryable says so (falling back to the frame's flag only for a code it does not know, i.e. one
from a newer agent). "Retryable" has one meaning: the request is not at fault, so another attempt
(on another provider, or here later) may succeed.
"""

from __future__ import annotations


class DarkbloomError(Exception):
    code = "internal_error"


class ConfigError(DarkbloomError):
    code = "config_invalid"


class UnknownModel(DarkbloomError):
    code = "unknown_model"


class InvalidRequest(DarkbloomError):
    code = "invalid_request"


# Not the request's fault: another provider (or this one, later) may well serve it.
RETRYABLE_CODES = frozenset({
    "kv_full", "cannot_fit", "model_not_ready", "unknown_model", "draining",  # admission said no here
    "no_vision",  # an image request to a slot loaded text-only: another provider may have vision
    "engine_error", "engine_not_running", "generation_error", "load_refused", "load_failed",  # this node failed
    "model_download_failed", "rate_limited",
    # the agent could not use a frame we sent it (an older agent, a frame cut short): another agent may
    "frame_too_large", "frame_not_json", "unknown_message_type", "invalid_field", "protocol_invalid",
    "duplicate_request",
})
# The request itself, or the setup, is at fault: every other attempt would fail the same way.
NOT_RETRYABLE_CODES = frozenset({
    "invalid_request", "internal_error", "auth_refused", "protocol_version_unsupported", "config_invalid",
    "catalog_invalid", "weights_invalid", "insufficient_balance",
})


def is_retryable(error: BaseException | str | None, *, default: bool = False) -> bool:
    """May another attempt succeed? `error` is an exception or a wire code; `default` answers for a code
    this release does not know (a newer peer's, which sends its own answer along)."""
    code = error if isinstance(error, str) or error is None else getattr(error, "code", None)
    if not isinstance(error, (str, type(None))) and not isinstance(error, DarkbloomError):
        return False  # a bug, not a refusal: never hide it behind a retry
    if code in RETRYABLE_CODES:
        return True
    if code in NOT_RETRYABLE_CODES:
        return False
    return default
