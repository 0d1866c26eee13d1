"""Who may open a provider link, and as whom.

    an identity credential (`dbp_...`, `coordinator providers create`)   admitted as that identity, unless
                                                                          revoked
    the shared provider token (settings.provider_token)                   admitted as an anonymous connection,
                                                                          but only while the database holds no
                                                                          identity and identities are not required
    no token configured, no identity                                     anything is admitted (local use)

An anonymous connection gets a fresh provider id, so what it showed is lost when it reconnects: an
operator who wants reputation to stick issues identities.

Public names: ProviderCredential, admit_provider.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from agent.coordinator.billing.identities import IdentityStore, ProviderIdentity
from agent.coordinator.settings import CoordinatorSettings


@dataclass(frozen=True, slots=True)
class ProviderCredential:
    identity: ProviderIdentity | None = None  # None: the shared token, or open local use
    refusal: str = ""  # why the link is refused (HTTP 401), "" when admitted


def admit_provider(settings: CoordinatorSettings, identities: IdentityStore,
                   authorization: str | None) -> ProviderCredential:
    scheme, _, given = (authorization or "").partition(" ")
    given = given.strip() if scheme.lower() == "bearer" else ""
    identity = identities.authenticate(given) if given else None
    if identity is not None:
        if identity.is_revoked:
            return ProviderCredential(refusal=f"provider identity {identity.name} was revoked: ask the operator "
                                              "for a new credential")
        return ProviderCredential(identity)
    if identities.num_identities or settings.require_provider_identity:
        return ProviderCredential(refusal="this coordinator admits providers by identity: set provider_token in "
                                          "the agent config to a credential from `coordinator providers create`")
    token = settings.provider_token
    if token is None or hmac.compare_digest(given.encode(), token.encode()):
        return ProviderCredential()
    return ProviderCredential(refusal="invalid provider token: set provider_token in the agent config to the "
                                      "coordinator's")
