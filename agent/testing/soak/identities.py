"""The credential each provider of the soak connects with: its own identity when the coordinator has them.

Issue 11 point 3 adds provider identities (hashed secrets in the accounts database). Until that lands,
every provider presents the shared token. The one place that tells the two apart is `identity_api`:
after the merge, make `provider_credentials` call the identities module directly and drop the probing.

Public names: provider_credentials, identity_api, SHARED_TOKEN.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Iterable
from pathlib import Path
from types import ModuleType

SHARED_TOKEN = "soak-shared-token"
IDENTITY_MODULES = ("agent.coordinator.billing.providers", "agent.coordinator.billing.identities")
CREATE_NAMES = ("create_provider", "create_identity")
SECRET_NAMES = ("secret", "token", "key")


def identity_api() -> tuple[ModuleType, Callable] | None:
    """The identities module and its create function, if this coordinator has them."""
    for name in IDENTITY_MODULES:
        if importlib.util.find_spec(name) is None:
            continue
        module = importlib.import_module(name)
        for create in CREATE_NAMES:
            if callable(getattr(module, create, None)):
                return module, getattr(module, create)
    return None


def provider_credentials(db_path: str | Path, names: Iterable[str]) -> tuple[dict[str, str], bool]:
    """{provider name: the bearer credential it connects with}, and whether those are identities."""
    api = identity_api()
    if api is None:
        return {name: SHARED_TOKEN for name in names}, False
    _, create = api
    credentials = {}
    for name in names:
        created = create(db_path, name)
        secret = next((getattr(created, attr) for attr in SECRET_NAMES if isinstance(getattr(created, attr, None), str)),
                      created if isinstance(created, str) else None)
        if secret is None:
            raise TypeError(f"{create.__module__}.{create.__name__} returned no secret: update agent/testing/soak/identities.py")
        credentials[name] = secret
    return credentials, True
