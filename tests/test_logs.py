from __future__ import annotations

import io
import json
import logging

import pytest
import structlog

from agent.logs import bind_ids, configure_logging, get_logger


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def restore_logging():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    structlog.reset_defaults()
    root.handlers, root.level = handlers, level


def lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


def test_json_lines_carry_the_dotted_event_level_timestamp_and_fields():
    out = io.StringIO()
    configure_logging("json", stream=out)
    get_logger().info("slot.state", model="gpt-oss-20b", old="cold", new="loading")
    [line] = lines(out)
    event = json.loads(line)
    assert event["event"] == "slot.state" and event["level"] == "info"
    assert (event["old"], event["new"], event["model"]) == ("cold", "loading", "gpt-oss-20b")
    assert event["timestamp"].endswith("Z")


def test_auto_writes_json_when_the_output_is_not_a_terminal_as_under_launchd():
    out = io.StringIO()
    configure_logging("auto", stream=out)
    get_logger().info("link.connect", url="wss://c.example")
    assert json.loads(lines(out)[0])["event"] == "link.connect"


def test_auto_writes_readable_text_on_a_terminal():
    out = Terminal()
    configure_logging("auto", stream=out)
    get_logger().info("link.reconnect", attempt=2)
    [line] = lines(out)
    assert "link.reconnect" in line and "attempt" in line
    with pytest.raises(json.JSONDecodeError):
        json.loads(line)


def test_events_below_the_level_are_dropped():
    out = io.StringIO()
    configure_logging("json", level="warning", stream=out)
    get_logger().info("admit.accept")
    get_logger().warning("admit.reject", reason="full")
    assert [json.loads(line)["event"] for line in lines(out)] == ["admit.reject"]


def test_bound_ids_appear_on_every_event_and_unknown_ids_are_left_out():
    out = io.StringIO()
    configure_logging("json", stream=out)
    log = bind_ids(get_logger(), provider_id="prov-1", model="gemma-4-26b", request_id=None)
    log.info("request.start")
    bind_ids(log, request_id="req-9").info("request.done")
    first, second = (json.loads(line) for line in lines(out))
    assert first["provider_id"] == "prov-1" and first["model"] == "gemma-4-26b" and "request_id" not in first
    assert second["request_id"] == "req-9" and second["provider_id"] == "prov-1"


def test_context_variables_bound_for_a_task_are_merged_in():
    out = io.StringIO()
    configure_logging("json", stream=out)
    with structlog.contextvars.bound_contextvars(request_id="req-3"):
        get_logger().info("engine.step")
    assert json.loads(lines(out)[0])["request_id"] == "req-3"


def test_standard_library_loggers_are_rendered_as_the_same_json():
    out = io.StringIO()
    configure_logging("json", stream=out)
    logging.getLogger("websockets.client").warning("connection %s closed", "abc")
    event = json.loads(lines(out)[0])
    assert event["event"] == "connection abc closed" and event["level"] == "warning"
    assert event["logger"] == "websockets.client"


def test_exceptions_become_one_json_line_with_the_traceback_text():
    out = io.StringIO()
    configure_logging("json", stream=out)
    try:
        raise RuntimeError("metal out of memory")
    except RuntimeError:
        get_logger().exception("engine.crash")
    [line] = lines(out)
    assert "metal out of memory" in json.loads(line)["exception"]
