"""`coordinator serve`'s options: defaults < coordinator.toml < DARKBLOOM_COORDINATOR_* environment < flags.

    load_coordinator_config(path, env, flags) -> CoordinatorConfig

The file is the one `--config` (or DARKBLOOM_COORDINATOR_CONFIG) names; without either there is none. Its
keys are the options' names with underscores, flat (`requests_per_minute = 600`, `operator_token = "..."`).
Each is also read from `DARKBLOOM_COORDINATOR_<NAME>` (DARKBLOOM_COORDINATOR_OPERATOR_TOKEN, ...), and
`flags` maps names to the command line's values, None meaning "not given". An unusable value is one
ConfigError line naming where it came from and the key.

Public names: CoordinatorConfig, load_coordinator_config, ENV_PREFIX.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agent.errors import ConfigError

ENV_PREFIX = "DARKBLOOM_COORDINATOR_"


class CoordinatorConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    db: Path | None = None
    open_mode: bool | None = None
    provider_token: str | None = Field(None, min_length=1)
    operator_token: str | None = Field(None, min_length=1)  # sent as x-darkbloom-operator (privacy.py)
    allow_open_remote: bool = False
    queue_depth: int | None = Field(None, ge=1)
    queue_max_wait: float | None = Field(None, gt=0)
    heartbeat_interval: float | None = Field(None, gt=0)
    requests_per_minute: int | None = Field(None, ge=0)  # per account with --db; 0: unlimited
    output_tokens_per_minute: int | None = Field(None, ge=0)
    open_requests_per_minute_per_ip: int | None = Field(None, ge=0)  # per address in open mode; 0: unlimited
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "json", "console"] = "auto"


def load_coordinator_config(path: Path | None, env: Mapping[str, str], flags: Mapping[str, Any]) -> CoordinatorConfig:
    path = path or (Path(env[f"{ENV_PREFIX}CONFIG"]) if env.get(f"{ENV_PREFIX}CONFIG") else None)
    layers: list[tuple[str, dict[str, Any]]] = []
    if path is not None:
        layers.append((str(path), _read_file(path)))
    fields = CoordinatorConfig.model_fields
    layers.append(("the environment", {name: env[key] for name in fields if (key := ENV_PREFIX + name.upper()) in env}))
    layers.append(("the command line", {name: value for name, value in flags.items() if value is not None}))
    merged: dict[str, Any] = {}
    for where, values in layers:
        _check(where, values)
        merged.update(values)
    return CoordinatorConfig(**merged)


def _read_file(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read the coordinator config {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None


def _check(where: str, values: dict[str, Any]) -> None:
    """Validate one layer on its own, so an error names the layer it came from."""
    try:
        CoordinatorConfig(**values)
    except ValidationError as exc:
        error = exc.errors()[0]
        name = ".".join(str(part) for part in error["loc"]) or "?"
        shown = f"{ENV_PREFIX}{name.upper()}" if where == "the environment" else name
        raise ConfigError(f"{shown} in {where}: {error['msg']}") from None
