from __future__ import annotations

from pathlib import Path

import pytest

from agent.daemon.config import AgentConfig, default_config_path, load_config
from agent.errors import ConfigError, DarkbloomError

GIB = 1024**3


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path


def write_config(home: Path, text: str) -> Path:
    path = default_config_path({"HOME": str(home)})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def load(home: Path, path: Path | None = None, flags: dict | None = None, **env: str) -> AgentConfig:
    return load_config(path, {"HOME": str(home), **env}, flags)


def test_with_no_file_no_environment_and_no_flags_the_defaults_apply(home):
    config = load(home)
    assert config.coordinator_url is None and config.provider_token is None
    assert config.heartbeat_interval_s == 2.0
    assert config.idle_policy == "keep_warm" and config.unload_after_idle_s is None
    assert config.operator_reserve_bytes == 0 and config.allow_insecure_remote is False
    assert config.log_format == "auto" and config.models == ()
    assert str(config.status_path).startswith(str(home))


def test_the_default_file_lives_under_the_users_config_directory(home):
    assert default_config_path({"HOME": str(home)}) == home / ".config" / "darkbloom" / "agent.toml"


def test_each_layer_overrides_the_one_before_defaults_file_environment_flags(home):
    write_config(home, 'coordinator_url = "wss://file.example"\nheartbeat_interval_s = 5\n'
                       'drain_deadline_s = 30\nmodels = ["gpt-oss-20b"]\n')
    config = load(home, flags={"coordinator_url": "wss://flag.example", "heartbeat_interval_s": None},
                  DARKBLOOM_COORDINATOR_URL="wss://env.example", DARKBLOOM_HEARTBEAT_INTERVAL_S="3")
    assert config.coordinator_url == "wss://flag.example"  # flag beats env beats file
    assert config.heartbeat_interval_s == 3.0  # a None flag is "not given"
    assert config.drain_deadline_s == 30.0  # only the file set it
    assert config.models == ("gpt-oss-20b",)


def test_environment_values_are_converted_from_text(home):
    config = load(home, DARKBLOOM_MODELS="gpt-oss-20b, ~/models/gemma ,", DARKBLOOM_ALLOW_INSECURE_REMOTE="true",
                  DARKBLOOM_PROVIDER_TOKEN="s3cret", DARKBLOOM_IDLE_POLICY="unload_after_minutes",
                  DARKBLOOM_UNLOAD_AFTER_MINUTES="10", DARKBLOOM_TINY_MODELS="/not/ours")
    assert config.models == ("gpt-oss-20b", "~/models/gemma")
    assert config.allow_insecure_remote is True
    assert config.provider_token.get_secret_value() == "s3cret" and "s3cret" not in repr(config)
    assert config.unload_after_idle_s == 600


def test_reserve_gb_stands_for_operator_reserve_bytes_and_a_later_layer_overrides_it(home):
    write_config(home, "reserve_gb = 4\n")
    assert load(home).operator_reserve_bytes == 4 * GIB
    assert load(home, DARKBLOOM_OPERATOR_RESERVE_BYTES="1024").operator_reserve_bytes == 1024
    assert load(home, flags={"reserve_gb": 0.5}).operator_reserve_bytes == GIB // 2


def test_an_explicit_config_path_or_darkbloom_config_replaces_the_default_file(home, tmp_path):
    write_config(home, "heartbeat_interval_s = 9\n")
    other = tmp_path / "other.toml"
    other.write_text("heartbeat_interval_s = 4\n")
    assert load(home, path=other).heartbeat_interval_s == 4
    assert load(home, DARKBLOOM_CONFIG=str(other)).heartbeat_interval_s == 4
    assert load(home).heartbeat_interval_s == 9


def test_plain_ws_is_fine_on_loopback_and_refused_elsewhere_unless_allowed(home):
    for url in ("ws://localhost:8080/agent", "ws://127.0.0.1/agent", "ws://[::1]:9/x", "wss://coord.example"):
        assert load(home, flags={"coordinator_url": url}).coordinator_url == url
    with pytest.raises(ConfigError) as refused:
        load(home, flags={"coordinator_url": "ws://coord.example/agent"})
    assert str(refused.value).startswith("flag --coordinator: field 'coordinator_url': plain ws:// to coord.example")
    allowed = load(home, flags={"coordinator_url": "ws://10.0.0.5/agent", "allow_insecure_remote": True})
    assert allowed.coordinator_url == "ws://10.0.0.5/agent"


@pytest.mark.parametrize(
    ("file_text", "env", "flags", "expected"),
    [
        ('coordinator_url = "https://coord.example"\n', {}, {}, "{file}: field 'coordinator_url': must be a ws://"),
        ("heartbeat_interval_s = 0\n", {}, {}, "{file}: field 'heartbeat_interval_s': Input should be greater than 0"),
        ("", {"DARKBLOOM_HEARTBEAT_INTERVAL_S": "fast"}, {},
         "env DARKBLOOM_HEARTBEAT_INTERVAL_S: field 'heartbeat_interval_s': Input should be a valid number"),
        ("", {}, {"drain_deadline_s": -1}, "flag --drain-deadline-s: field 'drain_deadline_s'"),
        ("heartbeat_secs = 2\n", {}, {}, "{file}: unknown setting 'heartbeat_secs'"),
        ('log_format = "xml"\n', {}, {}, "{file}: field 'log_format'"),
        ("", {"DARKBLOOM_RESERVE_GB": "lots"}, {}, "env DARKBLOOM_RESERVE_GB: field 'reserve_gb': must be a number"),
        ("reserve_gb = 1\noperator_reserve_bytes = 5\n", {}, {}, "{file}: give reserve_gb or operator_reserve_bytes"),
        ("heartbeat_interval_s = \n", {}, {}, "{file}: not valid TOML"),
    ],
)
def test_an_invalid_setting_is_one_line_naming_its_source_and_field(home, file_text, env, flags, expected):
    file = write_config(home, file_text)
    with pytest.raises(ConfigError) as error:
        load(home, flags=flags, **env)
    message = str(error.value)
    assert message.startswith(expected.format(file=file)), message
    assert "\n" not in message
    assert isinstance(error.value, DarkbloomError) and error.value.code == "config_invalid"


def test_a_named_config_file_that_does_not_exist_is_an_error(home):
    with pytest.raises(ConfigError, match=r"missing\.toml: cannot read the config file"):
        load(home, path=home / "missing.toml")


def test_a_bad_provider_token_is_reported_without_echoing_it(home):
    write_config(home, "provider_token = 12345\n")
    with pytest.raises(ConfigError) as error:
        load(home)
    assert "provider_token" in str(error.value) and "12345" not in str(error.value)


def test_paths_expand_the_home_directory(home):
    config = load(home, flags={"status_path": "~/status.json", "catalog": "~/models.toml"})
    assert config.status_path == Path("~/status.json").expanduser()
    assert config.catalog == Path("~/models.toml").expanduser()


def test_an_empty_provider_token_is_a_mistake_not_an_anonymous_agent(home):
    with pytest.raises(ConfigError, match=r"^env DARKBLOOM_PROVIDER_TOKEN: field 'provider_token': is empty"):
        load(home, DARKBLOOM_PROVIDER_TOKEN=" ")


def test_a_refused_url_is_not_echoed_since_it_may_carry_a_password(home):
    with pytest.raises(ConfigError) as error:
        load(home, flags={"coordinator_url": "ws://user:hunter2@coord.example"})
    assert "hunter2" not in str(error.value)


def test_an_unknown_setting_lists_the_documented_reserve_gb_among_the_known_ones(home):
    write_config(home, "reserve_gib = 4\n")
    with pytest.raises(ConfigError, match=r"unknown setting 'reserve_gib' \(known: .*reserve_gb"):
        load(home)
