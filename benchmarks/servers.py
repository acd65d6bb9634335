"""Benchmark helpers run as separate processes, so their CPU is measured apart from mitmdump's.

    python servers.py origin CHAIN.pem KEY.pem        # HTTPS origin, prints its port
    python servers.py load PROXY_PORT CA.pem URL MODE CONNECTIONS REQUESTS
                                                      # load generator, prints one JSON line

The origin is a minimal asyncio HTTP/1.1 keep-alive server with a fixed response; the load
generator speaks HTTP/1.1 through the proxy (CONNECT, then TLS to mitmproxy) either on
keep-alive connections (MODE=keepalive) or with a new connection per request (MODE=new).
Both are far cheaper per request than the proxy; the benchmark prints their CPU use to show it.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import sys
import time

RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 12\r\n"
    b"Expect-CT: max-age=86400, enforce\r\n\r\nhello world\n"
)


async def serve_origin(chain: str, key: str) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(chain, key)

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

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context, backlog=512)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


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


async def load(
    proxy_port: int, ca: str, host: str, port: int, mode: str, connections: int, requests: int
) -> dict[str, float]:
    context = ssl.create_default_context(cafile=ca)
    errors = 0
    done = 0
    per_connection = requests // connections

    async def keepalive_worker() -> None:
        nonlocal errors, done
        reader, writer = await open_through_proxy(proxy_port, host, port, context)
        for _ in range(per_connection):
            if await one_request(reader, writer, host) == 200:
                done += 1
            else:
                errors += 1
        writer.close()

    async def new_connection_worker() -> None:
        nonlocal errors, done
        for _ in range(per_connection):
            try:
                reader, writer = await open_through_proxy(proxy_port, host, port, context)
                if await one_request(reader, writer, host) == 200:
                    done += 1
                else:
                    errors += 1
                writer.close()
            except Exception:  # noqa: BLE001 - counted, the run goes on
                errors += 1

    worker = keepalive_worker if mode == "keepalive" else new_connection_worker
    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    seconds = time.perf_counter() - start
    return {"requests": done, "errors": errors, "seconds": seconds}


def main() -> None:
    if sys.argv[1] == "origin":
        asyncio.run(serve_origin(sys.argv[2], sys.argv[3]))
    elif sys.argv[1] == "load":
        proxy_port, ca, url, mode, conns, reqs = sys.argv[2:8]
        hostport = url.split("://", 1)[1].rstrip("/")
        host, port = hostport.rsplit(":", 1)
        result = asyncio.run(
            load(int(proxy_port), ca, host, int(port), mode, int(conns), int(reqs))
        )
        print(json.dumps(result), flush=True)
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
