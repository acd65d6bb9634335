"""Benchmark helpers run as separate processes, so their CPU is measured apart from mitmdump's.

    python servers.py origin CHAIN.pem KEY.pem        # HTTPS origin, prints its port
    python servers.py cold-origin DIR COUNT LISTENERS # a new certificate on every connection,
                                                      # prints its ports (a JSON list)
    python servers.py interleave SPEC.json            # interleaved load over several proxies,
                                                      # prints one JSON line

`interleave` sends the same chunk of requests to each proxy in turn (in a new random order
each round), one proxy busy at a time, and reads each proxy's CPU time from
/proc/PID/task/*/schedstat (nanoseconds, all threads) at every chunk boundary, so every
configuration sees the same machine conditions within a second of the others. (A spec with a
single proxy is a plain load generator, e.g. for profiling one mitmdump.)

The origin is a minimal asyncio HTTP/1.1 keep-alive server with a fixed response; the load
generator speaks HTTP/1.1 through the proxy (CONNECT, then TLS to mitmproxy) either on
keep-alive connections (MODE=keepalive) or with a new connection per request (MODE=new).
Both are far cheaper per request than the proxy; the benchmark prints their CPU use to show it.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import ssl
import sys
import time
from pathlib import Path
from typing import Any

RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 12\r\n"
    b"Expect-CT: max-age=86400, enforce\r\n\r\nhello world\n"
)


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            if not head:
                break
            writer.write(RESPONSE)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
        pass
    finally:
        writer.close()


async def serve_origin(chain: str, key: str) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(chain, key)
    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context, backlog=512)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


async def serve_cold_origin(pool: Path, count: int, listeners: int) -> None:
    """One port per proxy; each port hands out the pool's certificates in turn, a different
    one on every connection, so a proxy never meets a certificate twice until it has met
    ``count`` others (the benchmark makes the pool larger than any proxy's connections).
    All of them name localhost and chain to the same root: only the leaf is new."""
    contexts = []
    for i in range(count):
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(pool / f"leaf-{i}.chain.pem", pool / "key.pem")
        contexts.append(context)
    servers = []
    for _ in range(listeners):
        turn = itertools.count()
        listening = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        listening.load_cert_chain(pool / "leaf-0.chain.pem", pool / "key.pem")

        def next_certificate(
            connection: ssl.SSLObject, _name: str | None, _context: ssl.SSLContext, turn=turn
        ) -> None:
            connection.context = contexts[next(turn) % count]

        listening.sni_callback = next_certificate  # type: ignore[assignment]
        servers.append(
            await asyncio.start_server(handle, "127.0.0.1", 0, ssl=listening, backlog=512)
        )
    print(json.dumps([server.sockets[0].getsockname()[1] for server in servers]), flush=True)
    await asyncio.gather(*(server.serve_forever() for server in servers))


async def open_through_proxy(
    proxy_port: int, host: str, port: int, context: ssl.SSLContext
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy_port)
    writer.write(f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
    await writer.drain()
    status = await reader.readuntil(b"\r\n\r\n")
    if b" 200" not in status.split(b"\r\n", 1)[0]:
        raise RuntimeError(f"CONNECT failed: {status!r}")
    await writer.start_tls(context, server_hostname=host)
    return reader, writer


async def one_request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str) -> int:
    writer.write(f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    await reader.readexactly(length)
    return int(head.split(b" ", 2)[1])


def schedstat_seconds(pid: int) -> float:
    """CPU time of every thread of `pid` so far, from the scheduler's nanosecond counters."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            pass  # a thread that ended since the listing: its time is in the process total
    return total / 1e9


class Target:
    """One proxy under test: its persistent keep-alive connections and its measurements."""

    def __init__(self, spec: dict[str, Any], host: str, port: int) -> None:
        self.name: str = spec["name"]
        self.proxy_port: int = spec["port"]
        self.pid: int = spec["pid"]
        self.context = ssl.create_default_context(cafile=spec["ca"])
        self.host = host
        self.port = port
        self.streams: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.cpu: list[float] = []
        self.wall: list[float] = []
        self.requests: list[int] = []
        self.errors = 0

    async def open(self, connections: int) -> None:
        self.streams = [
            await open_through_proxy(self.proxy_port, self.host, self.port, self.context)
            for _ in range(connections)
        ]

    async def chunk(self, mode: str, connections: int, per_connection: int) -> int:
        done = 0

        async def keepalive(stream: tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> None:
            nonlocal done
            for _ in range(per_connection):
                if await one_request(*stream, self.host) == 200:
                    done += 1
                else:
                    self.errors += 1

        async def new_connections() -> None:
            nonlocal done
            for _ in range(per_connection):
                try:
                    reader, writer = await open_through_proxy(
                        self.proxy_port, self.host, self.port, self.context
                    )
                    if await one_request(reader, writer, self.host) == 200:
                        done += 1
                    else:
                        self.errors += 1
                    writer.close()
                    await writer.wait_closed()
                except Exception:  # noqa: BLE001 - counted, the run goes on
                    self.errors += 1

        if mode == "keepalive":
            await asyncio.gather(*(keepalive(s) for s in self.streams))
        else:
            await asyncio.gather(*(new_connections() for _ in range(connections)))
        return done


async def interleave(spec: dict[str, Any]) -> dict[str, Any]:
    host, port = spec["host"], spec["origin_port"]
    # A cold origin has a port per proxy (its own turn through the certificate pool).
    targets = [Target(t, host, t.get("origin_port", port)) for t in spec["proxies"]]
    mode, connections, per_connection = spec["mode"], spec["connections"], spec["per_connection"]
    for target in targets:
        await target.open(connections)
        for _ in range(spec["warmup_chunks"]):
            await target.chunk(mode, connections, per_connection)
    origin_before = schedstat_seconds(spec["origin_pid"])
    self_before = time.process_time()
    start = time.perf_counter()
    last = {t.name: schedstat_seconds(t.pid) for t in targets}
    # A fresh random order every round: a fixed rotation would always run each proxy right
    # after the same other one, and the cache state one leaves behind biases the next.
    shuffler = random.Random(spec.get("seed", 0))
    for round_number in range(spec["rounds"]):
        order = list(targets)
        shuffler.shuffle(order)
        for target in order:
            # A proxy's CPU between two of its chunk starts is charged to its chunk: work it
            # finishes after the client got the response (logging, teardown) counts too.
            cpu_now = schedstat_seconds(target.pid)
            if round_number:
                target.cpu.append(cpu_now - last[target.name])
            last[target.name] = cpu_now
            t0 = time.perf_counter()
            target.requests.append(await target.chunk(mode, connections, per_connection))
            target.wall.append(time.perf_counter() - t0)
            await asyncio.sleep(spec.get("settle", 0.005))
    await asyncio.sleep(0.2)
    for target in targets:
        target.cpu.append(schedstat_seconds(target.pid) - last[target.name])
    seconds = time.perf_counter() - start
    for target in targets:
        for _reader, writer in target.streams:
            writer.close()
    # Chunks are charged from one start to the next, so round r's CPU belongs to chunk r.
    return {
        "proxies": {
            t.name: {"cpu": t.cpu, "wall": t.wall, "requests": t.requests, "errors": t.errors}
            for t in targets
        },
        "seconds": seconds,
        "origin_cpu": schedstat_seconds(spec["origin_pid"]) - origin_before,
        "loadgen_cpu": time.process_time() - self_before,
    }


def main() -> None:
    if sys.argv[1] == "origin":
        asyncio.run(serve_origin(sys.argv[2], sys.argv[3]))
    elif sys.argv[1] == "cold-origin":
        asyncio.run(serve_cold_origin(Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])))
    elif sys.argv[1] == "interleave":
        spec = json.loads(Path(sys.argv[2]).read_text())
        print(json.dumps(asyncio.run(interleave(spec))), flush=True)
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
