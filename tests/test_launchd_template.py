from __future__ import annotations

import plistlib
from pathlib import Path

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
