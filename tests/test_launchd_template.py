from __future__ import annotations

import plistlib
from pathlib import Path

from agent.daemon.launch_agent import launch_agent, plist_problems, render_plist

TEMPLATE = Path(__file__).resolve().parent.parent / "launchd" / "com.darkbloom.agent.plist"


def test_the_launch_agent_template_restarts_after_crashes_only_and_runs_interactive():
    plist = plistlib.loads(TEMPLATE.read_bytes())
    assert plist["Label"] == "com.darkbloom.agent"
    assert plist["ProgramArguments"][1:3] == ["start", "--config"]
    assert plist["RunAtLoad"] is True
    assert plist["KeepAlive"] == {"SuccessfulExit": False}
    assert plist["ThrottleInterval"] == 10
    assert plist["ProcessType"] == "Interactive"
    assert "PATH" in plist["EnvironmentVariables"]
    for key in ("StandardOutPath", "StandardErrorPath"):
        assert "/Library/Logs/darkbloom/" in plist[key]
        assert not any(part in plist[key] for part in ("Desktop", "Documents", "Downloads"))


def test_the_template_is_exactly_what_the_service_renders_with_placeholders_for_paths():
    rendered = launch_agent(Path("__PROGRAM__"), Path("__CONFIG__"), Path("__HOME__"), path_env="__PATH__")
    assert plistlib.loads(TEMPLATE.read_bytes()) == rendered
    assert plistlib.loads(render_plist(rendered)) == rendered


def test_the_template_with_real_paths_in_place_of_its_placeholders_has_no_problems():
    text = TEMPLATE.read_text()
    for placeholder, value in {"__PROGRAM__": "/opt/darkbloom/bin/darkbloom-agent", "__HOME__": "/Users/owner",
                               "__CONFIG__": "/Users/owner/.config/darkbloom/agent.toml",
                               "__PATH__": "/opt/darkbloom/bin:/usr/bin:/bin"}.items():
        text = text.replace(placeholder, value)
    assert plist_problems(plistlib.loads(text.encode()), Path("/Users/owner")) == []
