"""`coordinator serve`'s options: defaults < coordinator.toml < DARKBLOOM_COORDINATOR_* environment < flags.

    load_coordinator_config(path, env, flags) -> CoordinatorConfig

The file is the one `--config` (or DARKBLOOM_COORDINATOR_CONFIG) names; without either there is none. Its
keys are the options' names with underscores, flat (`requests_per_minute = 600`, `operator_token = "..."`),
and a `[settings]` table sets any of CoordinatorSettings' knobs by name (`first_token_base_s = 60`), as
`--set NAME=VALUE` does on the command line (flags win, name by name).
Each is also read from `DARKBLOOM_COORDINATOR_<NAME>` (DARKBLOOM_COORDINATOR_OPERATOR_TOKEN, ...), and
`flags` maps names to the command line's values, None meaning "not given". An unusable value is one
ConfigError line naming where it came from and the key.

Public names: CoordinatorConfig, load_coordinator_config, coordinator_settings, parse_set_flags, ENV_PREFIX.
"""

from __future__ import annotations

import dataclasses
import difflib
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from agent.coordinator.settings import CoordinatorSettings
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
    settings: dict[str, Any] = {}  # CoordinatorSettings by name: the file's [settings] table, then --set


def load_coordinator_config(path: Path | None, env: Mapping[str, str], flags: Mapping[str, Any]) -> CoordinatorConfig:
    path = path or (Path(env[f"{ENV_PREFIX}CONFIG"]) if env.get(f"{ENV_PREFIX}CONFIG") else None)
    layers: list[tuple[str, dict[str, Any]]] = []
    if path is not None:
        layers.append((str(path), _read_file(path)))
    fields = CoordinatorConfig.model_fields
    layers.append(("the environment", {name: env[key] for name in fields if (key := ENV_PREFIX + name.upper()) in env}))
    layers.append(("the command line", {name: value for name, value in flags.items() if value is not None}))
    merged: dict[str, Any] = {}
    knobs: dict[str, Any] = {}
    for where, values in layers:
        _check(where, values)
        knobs.update(values.get("settings") or {})
        merged.update(values)
    coordinator_settings(knobs)  # every name and value checked now, before anything starts
    return CoordinatorConfig(**(merged | {"settings": knobs}))


def parse_set_flags(pairs: Iterable[str]) -> dict[str, str]:
    """`--set NAME=VALUE` flags as a mapping (values stay strings; coordinator_settings types them)."""
    knobs: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise ConfigError(f"--set {pair!r}: give NAME=VALUE, e.g. --set first_token_base_s=60")
        knobs[name.strip()] = value.strip()
    return knobs


_SETTING_NAMES = tuple(field.name for field in dataclasses.fields(CoordinatorSettings))
_SETTINGS = TypeAdapter(CoordinatorSettings)


def coordinator_settings(knobs: Mapping[str, Any], base: CoordinatorSettings | None = None) -> CoordinatorSettings:
    """CoordinatorSettings with `knobs` applied by name; a ConfigError names an unknown or unusable one."""
    for name, value in knobs.items():
        if name not in _SETTING_NAMES:
            close = difflib.get_close_matches(name, _SETTING_NAMES, n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else " (see agent/coordinator/settings.py)"
            raise ConfigError(f"unknown coordinator setting {name!r}{hint}")
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
            raise ConfigError(f"coordinator setting {name!r}: must be >= 0 (got {value!r})")
    current = dataclasses.asdict(base or CoordinatorSettings())
    try:
        settings = _SETTINGS.validate_python(current | dict(knobs))
    except ValidationError as exc:
        error = exc.errors()[0]
        raise ConfigError(f"coordinator setting {'.'.join(map(str, error['loc']))!r}: {error['msg']}") from None
    for name in knobs:
        value = getattr(settings, name)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
            raise ConfigError(f"coordinator setting {name!r}: must be >= 0 (got {value!r})")
    return settings


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
