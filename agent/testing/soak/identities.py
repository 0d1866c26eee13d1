"""The credential each provider of the soak connects with: an identity of its own (issue 11 point 3).

Each cast member gets `create_identity(db_path, name)`: its provider id on the wire is then `prov-<name>`,
and what it shows (reputation, quarantine) follows it across reconnects. With `shared=True` every member
presents the one shared provider token instead, as before identities: the "before" figure.

Public names: provider_credentials, identity_name, SHARED_TOKEN.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from agent.coordinator.billing.identities import create_identity

SHARED_TOKEN = "soak-shared-token"


def identity_name(member: str) -> str:
    """An identity name (lowercase, digits and hyphens) for a cast member's name."""
    return member.lower().replace("_", "-")[:32]


def provider_credentials(db_path: str | Path, names: Iterable[str], *, shared: bool = False) -> dict[str, str]:
    """{cast member name: the bearer credential it connects with}."""
    if shared:
        return {name: SHARED_TOKEN for name in names}
    return {name: create_identity(db_path, identity_name(name)).credential for name in names}
