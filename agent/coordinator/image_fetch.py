"""The coordinator fetches a consumer's http(s) image itself, so an agent never fetches anything.

A URL is a request the coordinator makes on a stranger's behalf, from inside its own network. So:
- the host is resolved first, and every address it resolves to must be public: private, loopback,
  link-local, multicast, reserved and unspecified addresses are refused unless the operator allows their
  network (`image_fetch_allowed_networks`);
- the connection goes to the address that was checked (the Host header and TLS name stay the URL's), so a
  second DNS answer cannot point it elsewhere;
- redirects are followed by hand, at most `image_fetch_max_redirects`, each hop checked like the first;
- the whole fetch has one deadline, the body is read up to `max_image_bytes` and no further, and the
  response must say it is one of the image types (agent/wire/image_parts.py).

Every refusal is an ImageFetchRefused whose message says what was wrong; the caller names the part.

Public names: ImageFetcher, FetchedImage, ImageFetchRefused.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import httpx

from agent.wire.image_parts import MEDIA_TYPES

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class ImageFetchRefused(Exception):
    pass


@dataclass(frozen=True, slots=True)
class FetchedImage:
    media_type: str
    data: bytes


class ImageFetcher:
    def __init__(self, *, max_bytes: int, timeout_s: float, max_redirects: int,
                 allowed_networks: tuple[str, ...] = (), transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.max_bytes, self.timeout_s, self.max_redirects = max_bytes, timeout_s, max_redirects
        self.allowed = tuple(ipaddress.ip_network(network, strict=False) for network in allowed_networks)
        self._transport = transport

    async def fetch(self, url: str) -> FetchedImage:
        try:
            async with asyncio.timeout(self.timeout_s):
                return await self._follow(url)
        except TimeoutError:
            raise ImageFetchRefused(f"the image URL did not answer within {self.timeout_s:g} s") from None
        except httpx.HTTPError as exc:
            raise ImageFetchRefused(f"the image URL could not be fetched ({type(exc).__name__})") from None

    async def _follow(self, url: str) -> FetchedImage:
        async with httpx.AsyncClient(follow_redirects=False, transport=self._transport, trust_env=False) as client:
            for _ in range(self.max_redirects + 1):
                request = await self._pinned_request(client, url)
                response = await client.send(request, stream=True)
                try:
                    if response.is_redirect:
                        location = response.headers.get("location", "")
                        if not location:
                            raise ImageFetchRefused("the image URL redirected without a location")
                        url = urljoin(url, location)
                        continue
                    return await self._image(response)
                finally:
                    await response.aclose()
        raise ImageFetchRefused(f"the image URL redirected more than {self.max_redirects} times")

    async def _pinned_request(self, client: httpx.AsyncClient, url: str) -> httpx.Request:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ImageFetchRefused("an image URL must be http(s) with a host, or a data: URL")
        address = await self._checked_address(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))
        host = f"[{address}]" if address.version == 6 else str(address)
        netloc = host if parts.port is None else f"{host}:{parts.port}"
        pinned = parts._replace(netloc=netloc).geturl()
        headers = {"host": parts.netloc.rpartition("@")[2], "accept": ", ".join(MEDIA_TYPES)}
        extensions = {"sni_hostname": parts.hostname} if parts.scheme == "https" else {}
        return client.build_request("GET", pinned, headers=headers, extensions=extensions)

    async def _checked_address(self, hostname: str, port: int) -> IPAddress:
        try:
            literal = ipaddress.ip_address(hostname.strip("[]"))
            addresses = [literal]
        except ValueError:
            try:
                infos = await asyncio.get_running_loop().getaddrinfo(hostname, port, type=socket.SOCK_STREAM)
            except socket.gaierror:
                raise ImageFetchRefused(f"the image URL's host {hostname!r} does not resolve") from None
            addresses = [ipaddress.ip_address(info[4][0]) for info in infos]
        for address in addresses:  # all of them: any could be the one connected to
            if not self._is_allowed(address):
                raise ImageFetchRefused(f"the image URL's host resolves to {address}, a private, loopback or "
                                        "link-local address, which the coordinator does not fetch from")
        return addresses[0]

    def _is_allowed(self, address: IPAddress) -> bool:
        if any(address in network for network in self.allowed):
            return True
        return address.is_global and not address.is_multicast

    async def _image(self, response: httpx.Response) -> FetchedImage:
        if response.status_code != 200:
            raise ImageFetchRefused(f"the image URL answered HTTP {response.status_code}")
        media_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type not in MEDIA_TYPES:
            raise ImageFetchRefused(f"the image URL's content-type is {media_type or 'missing'!r}; it must be one "
                                    f"of {', '.join(MEDIA_TYPES)}")
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            raise ImageFetchRefused(f"the image is {declared} bytes, over the limit of {self.max_bytes}")
        data = bytearray()
        async for piece in response.aiter_bytes():
            data += piece
            if len(data) > self.max_bytes:
                raise ImageFetchRefused(f"the image is over the limit of {self.max_bytes} bytes")
        return FetchedImage(media_type, bytes(data))
