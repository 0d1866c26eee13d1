"""A loopback TCP relay that can cut every connection through it at once: a network drop, on demand.

    relay = await Relay.start("127.0.0.1", coordinator_port)    # agents dial relay.port instead
    relay.cut()                                                  # every link through it dies mid-frame
Connections made after a cut pass again (the network came back).

Public names: Relay.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field


@dataclass
class Relay:
    target_host: str
    target_port: int
    server: asyncio.Server | None = None
    num_cuts: int = 0
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)

    @classmethod
    async def start(cls, host: str, port: int) -> Relay:
        relay = cls(host, port)
        relay.server = await asyncio.start_server(relay._accept, "127.0.0.1", 0)
        return relay

    @property
    def port(self) -> int:
        return self.server.sockets[0].getsockname()[1]

    def cut(self) -> None:
        self.num_cuts += 1
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def close(self) -> None:
        self.cut()
        self.server.close()
        await self.server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(self.target_host, self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        self._writers.discard(writer)
        writer.transport.abort()
