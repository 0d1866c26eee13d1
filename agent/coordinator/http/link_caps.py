"""Caps on live provider links per credential and per IP address, so one peer cannot hold every socket.

A check then a commit: `refusal(ip, credential)` says why a new link may not open ("" if it may),
`open` counts it, `close` releases it. The credential is kept as a digest, never as the secret.

Public names: LinkCaps, credential_key.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field


def credential_key(authorization: str | None) -> str:
    """A stable digest of the bearer credential a link presented ("" for none)."""
    _, _, given = (authorization or "").partition(" ")
    return hashlib.sha256(given.strip().encode()).hexdigest()[:16] if given.strip() else ""


@dataclass(slots=True)
class LinkCaps:
    max_per_ip: int
    max_per_credential: int
    by_ip: Counter = field(default_factory=Counter)
    by_credential: Counter = field(default_factory=Counter)

    def refusal(self, ip: str, credential: str) -> str:
        if self.by_ip[ip] >= self.max_per_ip:
            return (f"too many provider links from {ip}: {self.by_ip[ip]} live, the limit is {self.max_per_ip} "
                    "(coordinator setting max_provider_links_per_ip)")
        if self.by_credential[credential] >= self.max_per_credential:
            return (f"too many provider links with this credential: {self.by_credential[credential]} live, the "
                    f"limit is {self.max_per_credential} (coordinator setting max_provider_links_per_credential)")
        return ""

    def open(self, ip: str, credential: str) -> None:
        self.by_ip[ip] += 1
        self.by_credential[credential] += 1

    def close(self, ip: str, credential: str) -> None:
        for counts, key in ((self.by_ip, ip), (self.by_credential, credential)):
            counts[key] -= 1
            if counts[key] <= 0:
                del counts[key]
