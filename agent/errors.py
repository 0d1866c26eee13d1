"""Errors that cross a boundary: the wire, the CLI, the operator's terminal.

    DarkbloomError (code)                 root; `code` is a stable string, never a traceback
    ├── CatalogError      catalog_invalid     models.toml / config.json / safetensors unreadable or invalid
    └── ConfigError       config_invalid      agent configuration unusable

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
