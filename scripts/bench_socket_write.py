#!/usr/bin/env python3
"""The floor under the relay's CPU per token: what one small socket write costs this machine's kernel.

    scripts/bench_socket_write.py [--connections 500] [--writes 100000] [--bytes 250] [--json]

At a real decode rate every engine step carries one token per stream, so the coordinator writes each stream's
socket once per token (scripts/bench_relay.py). This times that write alone, with no Python around it
but the loop: one process writes --bytes bytes to each of --connections loopback TCP connections in turn
(TCP_NODELAY, as uvloop sets it), and a reader in another process drains them all. It reports the writer's
own user and system CPU per write (getrusage), the part of a relayed token that no code of ours can remove.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import selectors
import socket
import time


def drain(port: int, connections: int, total_bytes: int) -> None:
    sockets = [socket.create_connection(("127.0.0.1", port)) for _ in range(connections)]
    selector = selectors.DefaultSelector()
    for sock in sockets:
        selector.register(sock, selectors.EVENT_READ)
    received = 0
    while received < total_bytes:
        for key, _ in selector.select():
            data = key.fileobj.recv(1 << 16)
            if not data:
                return
            received += len(data)


def measure(connections: int, writes: int, size: int) -> dict:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(connections)
    port = server.getsockname()[1]
    reader = os.fork()
    if reader == 0:
        drain(port, connections, writes * size)
        os._exit(0)
    peers = [server.accept()[0] for _ in range(connections)]
    for peer in peers:
        peer.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    data = b"x" * size
    before = resource.getrusage(resource.RUSAGE_SELF)
    for i in range(writes):
        peers[i % connections].send(data)
        if i % connections == connections - 1:
            time.sleep(0.001)  # a step's writes, then a pause: the reader keeps up, no buffer fills
    after = resource.getrusage(resource.RUSAGE_SELF)
    os.waitpid(reader, 0)
    return {"connections": connections, "writes": writes, "bytes": size,
            "user_us_per_write": round((after.ru_utime - before.ru_utime) / writes * 1e6, 2),
            "system_us_per_write": round((after.ru_stime - before.ru_stime) / writes * 1e6, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=500)
    parser.add_argument("--writes", type=int, default=100_000)
    parser.add_argument("--bytes", type=int, default=250)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    print(json.dumps(measure(args.connections, args.writes, args.bytes), indent=None if args.json else 1))


if __name__ == "__main__":
    main()
