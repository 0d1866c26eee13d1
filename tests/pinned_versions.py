"""The version ranges pyproject.toml pins, for tests of adapters over other libraries' internals.

An adapter test skips (with the reason) only when the installed library is outside the range the
project says it supports; inside the range it must pass.
"""

from __future__ import annotations

import tomllib
from importlib.metadata import version
from pathlib import Path

from packaging.requirements import Requirement

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


def pinned_requirement(distribution: str) -> Requirement:
    """The dependency line for `distribution` (the first one whose markers hold on this machine)."""
    dependencies = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    for line in dependencies:
        requirement = Requirement(line)
        if requirement.name.lower() == distribution.lower() and (requirement.marker is None
                                                                 or requirement.marker.evaluate()):
            return requirement
    raise LookupError(f"{distribution} is not a dependency in {PYPROJECT}")


def outside_pinned_range(distribution: str) -> str | None:
    """Why an adapter test cannot judge this install, or None when the installed version is supported."""
    requirement, installed = pinned_requirement(distribution), version(distribution)
    if requirement.specifier.contains(installed, prereleases=True):
        return None
    return f"{distribution} {installed} is outside the supported range {requirement.specifier} (pyproject.toml)"
