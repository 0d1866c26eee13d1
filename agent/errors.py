"""Errors that cross a boundary: the wire, the CLI, the operator's terminal.

    DarkbloomError (code)                 root; `code` is a stable string, never a traceback
    ├── CatalogError      catalog_invalid     models.toml / config.json unreadable or invalid (agent.catalog)
    ├── WeightsError      weights_invalid     a safetensors header that cannot be read (agent.safetensors_info)
    ├── ConfigError       config_invalid      agent configuration unusable (agent.config)
    ├── EngineError       engine_error        agent.engine.types: RequestRefused (kv_full | cannot_fit |
    │                                         model_not_ready | unknown_model), InvalidRequest, UnknownModel,
    │                                         LoadRefused, LoadFailed, EngineNotRunning
    ├── LinkAuthRefused   auth_refused        the coordinator refused the provider token (agent.link.client)
    └── ProtocolError     protocol_invalid    a frame or chat body that cannot be used (returned, not raised)
        ├── FrameTooLarge        frame_too_large
        ├── FrameNotJson         frame_not_json
        ├── UnknownMessageType   unknown_message_type
        └── InvalidField         invalid_field       .field = dotted path, .request_id if known

Later layers add their own branches under the root; `is_retryable` is the one place that decides
whether another attempt can help.
"""

from __future__ import annotations


class DarkbloomError(Exception):
    code = "internal_error"
    retryable = False


class ConfigError(DarkbloomError):
    code = "config_invalid"


def is_retryable(error: BaseException) -> bool:
    return isinstance(error, DarkbloomError) and error.retryable
