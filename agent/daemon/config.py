"""The agent's configuration: defaults < agent.toml < DARKBLOOM_* environment < command-line flags.

    load_config(path, env, flags) -> AgentConfig

The file is `~/.config/darkbloom/agent.toml` unless `path` (--config) or DARKBLOOM_CONFIG names
another; a missing default file is no error, a missing named one is. Its keys are AgentConfig's
fields, flat. Each field is also read from `DARKBLOOM_<FIELD>` (DARKBLOOM_COORDINATOR_URL,
DARKBLOOM_MODELS="a,b", ...; other DARKBLOOM_* variables are not ours and are left alone) and from
`flags`, a mapping of field names to values where None means "not given". `reserve_gb` (GiB) may
stand for `operator_reserve_bytes` in any layer.

An unusable value is one ConfigError line naming where it came from (file, variable or flag) and
the field. A plain ws:// coordinator that is not loopback is refused unless allow_insecure_remote:
the provider token and every prompt would cross the network in clear.

Public names: AgentConfig, load_config, default_config_path, default_status_path, ENV_PREFIX.
"""

from __future__ import annotations

import ipaddress
import os
import platform
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, ValidationInfo, field_validator

from agent.errors import ConfigError
from agent.wire.frames import MAX_PREFIX_CHAINS

ENV_PREFIX = "DARKBLOOM_"
GIB = 1024**3


def default_config_path(env: Mapping[str, str] | None = None) -> Path:
    return _home(env) / ".config" / "darkbloom" / "agent.toml"


def default_status_path(env: Mapping[str, str] | None = None) -> Path:
    if platform.system() == "Darwin":
        return _home(env) / "Library" / "Application Support" / "darkbloom" / "status.json"
    env = os.environ if env is None else env
    state = Path(env["XDG_STATE_HOME"]) if env.get("XDG_STATE_HOME") else _home(env) / ".local" / "state"
    return state / "darkbloom" / "status.json"


class AgentConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    allow_insecure_remote: bool = False  # before coordinator_url, whose check reads it
    coordinator_url: str | None = None  # wss://host[:port]/path; required by `start`, not by `doctor`
    provider_token: SecretStr | None = None
    models: tuple[str, ...] = ()  # catalog ids or model directories; empty: every catalog model that fits
    catalog: Path | None = None  # a models.toml other than the bundled one
    heartbeat_interval_s: float = Field(2.0, gt=0, le=60)
    operator_reserve_bytes: int = Field(0, ge=0)  # memory the owner keeps for other work
    idle_policy: Literal["keep_warm", "unload_after_minutes"] = "keep_warm"
    unload_after_minutes: float = Field(30.0, gt=0, le=7 * 24 * 60)
    drain_deadline_s: float = Field(120.0, ge=0, le=3600)  # on stop, how long running streams may finish
    status_path: Path = Field(default_factory=default_status_path)  # JSON status the daemon keeps current
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # images (gemma-4 vision): load a model's vision tower when the gate affords it, and the agent's own bounds
    # on each image it decodes (the coordinator checked them too; what it sends is still a claim)
    load_vision: bool = True
    max_image_bytes: int = Field(5 * 1024 * 1024, ge=1024, le=64 * 1024 * 1024)
    max_image_pixels: int = Field(16 * 1024 * 1024, ge=64 * 64, le=256 * 1024 * 1024)
    # per loaded model: KV of recent prompts kept for the next turn (0: no prefix cache); evicted before a refusal
    max_prefix_cache_bytes: int = Field(2 << 30, ge=0)
    # per loaded model: chain keys of its cached prompts each heartbeat reports (the coordinator routes by them)
    max_reported_prefix_chains: int = Field(64, ge=0, le=MAX_PREFIX_CHAINS)

    @field_validator("models", mode="before")
    @classmethod
    def _split_comma_list(cls, value: Any) -> Any:
        return tuple(part.strip() for part in value.split(",") if part.strip()) if isinstance(value, str) else value

    @field_validator("provider_token")
    @classmethod
    def _token_not_empty(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().strip():
            raise ValueError("is empty; unset it or give the token the coordinator issued")
        return value

    @field_validator("catalog", "status_path")
    @classmethod
    def _expand_home(cls, value: Path | None) -> Path | None:
        return value.expanduser() if value is not None else None

    @field_validator("coordinator_url")
    @classmethod
    def _secure_url(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("ws", "wss") or not parts.hostname:
            raise ValueError("must be a ws:// or wss:// URL with a host")
        if parts.scheme == "ws" and not _is_loopback(parts.hostname) and not info.data.get("allow_insecure_remote"):
            raise ValueError(f"plain ws:// to {parts.hostname} would send the token and prompts in clear; "
                             "use wss:// (or set allow_insecure_remote if you really mean it)")
        return value

    @property
    def unload_after_idle_s(self) -> float | None:
        return self.unload_after_minutes * 60 if self.idle_policy == "unload_after_minutes" else None


def load_config(
    path: Path | None = None, env: Mapping[str, str] | None = None, flags: Mapping[str, Any] | None = None
) -> AgentConfig:
    env = os.environ if env is None else env
    layers = [("default", {"status_path": default_status_path(env)})]
    layers.append(_file_layer(path, env))
    layers.append(("env", _env_layer(env)))
    layers.append(("flag", {name: value for name, value in (flags or {}).items() if value is not None}))
    merged: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for kind, layer in layers:
        for name, value in _normalize(layer, lambda name: _source(kind, name, path, env)).items():
            merged[name] = value
            origin[name] = _source(kind, name, path, env)
    try:
        return AgentConfig.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, origin)) from None


def _file_layer(path: Path | None, env: Mapping[str, str]) -> tuple[str, dict[str, Any]]:
    named = path or (Path(env[f"{ENV_PREFIX}CONFIG"]) if env.get(f"{ENV_PREFIX}CONFIG") else None)
    file = (named or default_config_path(env)).expanduser()
    if named is None and not file.exists():
        return "file", {}
    try:
        return "file", tomllib.loads(file.read_text())
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read the config file: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: not valid TOML: {exc}") from None


def _env_layer(env: Mapping[str, str]) -> dict[str, Any]:
    return {name: env[_env_name(name)] for name in KNOWN_SETTINGS if _env_name(name) in env}


def _normalize(layer: dict[str, Any], source: Any) -> dict[str, Any]:
    """`reserve_gb` -> `operator_reserve_bytes`, within the layer that gave it, so later layers override it."""
    if "reserve_gb" not in layer:
        return layer
    layer = dict(layer)
    if "operator_reserve_bytes" in layer:
        raise ConfigError(f"{source('reserve_gb')}: give reserve_gb or operator_reserve_bytes, not both")
    value = layer.pop("reserve_gb")
    try:
        gib = float(value) if isinstance(value, (str, int, float)) and not isinstance(value, bool) else None
    except ValueError:
        gib = None
    if gib is None or not 0 <= gib < 1e6:
        raise ConfigError(f"{source('reserve_gb')}: field 'reserve_gb': must be a number of GiB >= 0 (got {value!r})")
    layer["operator_reserve_bytes"] = int(gib * GIB)
    return layer


def _source(kind: str, name: str, path: Path | None, env: Mapping[str, str]) -> str:
    if kind == "file":
        named = path or env.get(f"{ENV_PREFIX}CONFIG")
        return str(Path(named).expanduser() if named else default_config_path(env))
    if kind == "env":
        return f"env {_env_name(name)}"
    return f"flag --{FLAG_NAMES.get(name, name).replace('_', '-')}" if kind == "flag" else "default"


def _describe(exc: ValidationError, origin: dict[str, str]) -> str:
    error = exc.errors(include_url=False)[0]
    name = str(error["loc"][0]) if error["loc"] else "(config)"
    source = origin.get(name, "default")
    if error["type"] == "extra_forbidden":
        return f"{source}: unknown setting {name!r} (known: {', '.join(sorted(KNOWN_SETTINGS))})"
    message = error["msg"].removeprefix("Value error, ")
    given = "" if name in _NOT_ECHOED or "input" not in error else f" (got {_clip(repr(error['input']))})"
    return f"{source}: field {name!r}: {message}{given}"


FLAG_NAMES = {"coordinator_url": "coordinator", "provider_token": "token", "models": "model"}  # `start`'s flags
KNOWN_SETTINGS = set(AgentConfig.model_fields) | {"reserve_gb"}  # reserve_gb: operator_reserve_bytes in GiB
_NOT_ECHOED = {"provider_token", "coordinator_url"}  # secrets, and URLs that may carry user:password@


def _env_name(name: str) -> str:
    return f"{ENV_PREFIX}{name.upper()}"


def _home(env: Mapping[str, str] | None) -> Path:
    home = (os.environ if env is None else env).get("HOME")
    return Path(home) if home else Path.home()


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _clip(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
