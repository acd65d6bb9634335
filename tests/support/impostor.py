"""Impostor origins on 127.0.0.1 that record every application byte they receive.

An enforcement test has to prove a negative: *no request byte* reached a server with a
non-compliant certificate. These servers count bytes, not parsed requests, so a request cut
off half-way, or sent on a connection that then failed, still shows up.

* ``tls_impostor``: TLS over TCP (Python ``ssl``), answers any HTTP/1.1 request with 200.
* ``quic_impostor``: QUIC (aioquic) with ALPN ``h3`` (answers HTTP/3 requests with 200) and
  a raw-QUIC ALPN (echoes stream data), as ``reverse:http3://`` and ``reverse:quic://``
  upstreams.
* ``dtls_impostor``: ``openssl s_server -dtls``; its ``-msg`` log shows whether application
  data arrived.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Any
from typing import cast

from support import stop_process

RAW_QUIC_ALPN = "expect-ct-test"
H3_ALPN = "h3"


@dataclass
class Received:
    """What an impostor got, per connection (TCP connection, QUIC connection)."""

    connections: int = 0
    handshakes: int = 0  # connections whose TLS / QUIC handshake completed
    chunks: list[bytes] = field(default_factory=list)  # application data, as received
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def application_bytes(self) -> int:
        with self.lock:
            return sum(len(c) for c in self.chunks)

    def data(self) -> bytes:
        with self.lock:
            return b"".join(self.chunks)

    def add(self, chunk: bytes) -> None:
        with self.lock:
            self.chunks.append(chunk)


def _ok_response(body: bytes, headers: Sequence[tuple[str, str]]) -> bytes:
    lines = ["HTTP/1.1 200 OK", *(f"{k}: {v}" for k, v in headers)]
    lines += [f"Content-Length: {len(body)}", "Connection: close"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


@dataclass
class TlsImpostor:
    port: int
    received: Received
    headers: list[tuple[str, str]]

    def url(self, path: str = "/", host: str = "localhost") -> str:
        return f"https://{host}:{self.port}{path}"


@contextlib.contextmanager
def tls_impostor(
    chain_pem: Path, key_pem: Path, headers: Sequence[tuple[str, str]] = ()
) -> Iterator[TlsImpostor]:
    """HTTPS on 127.0.0.1 serving ``chain_pem``; every byte after the handshake is kept."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(chain_pem), str(key_pem))
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)
    impostor = TlsImpostor(listener.getsockname()[1], Received(), list(headers))
    stop = threading.Event()

    def serve(raw: socket.socket) -> None:
        with raw:
            raw.settimeout(10)
            try:
                conn = context.wrap_socket(raw, server_side=True)
            except (OSError, ssl.SSLError):
                return  # the proxy aborted the handshake: the refusal under test
            with conn:
                with impostor.received.lock:
                    impostor.received.handshakes += 1
                head = b""
                try:
                    while b"\r\n\r\n" not in head:
                        chunk = conn.recv(65536)
                        if not chunk:
                            return
                        impostor.received.add(chunk)
                        head += chunk
                    conn.sendall(_ok_response(b"impostor content\n", impostor.headers))
                except (OSError, ssl.SSLError):
                    return

    def accept() -> None:
        while not stop.is_set():
            try:
                raw, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with impostor.received.lock:
                impostor.received.connections += 1
            threading.Thread(target=serve, args=(raw,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield impostor
    finally:
        stop.set()
        thread.join(5)
        listener.close()


# ------------------------------------------------------------------------------------- QUIC


@dataclass
class QuicImpostor:
    port: int
    received: Received


def _quic_protocol(received: Received, headers: Sequence[tuple[str, str]]) -> type:
    from aioquic.asyncio.protocol import QuicConnectionProtocol
    from aioquic.h3.connection import H3Connection
    from aioquic.h3.events import DataReceived
    from aioquic.h3.events import HeadersReceived
    from aioquic.quic.events import HandshakeCompleted
    from aioquic.quic.events import QuicEvent
    from aioquic.quic.events import StreamDataReceived

    class Protocol(QuicConnectionProtocol):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.h3: H3Connection | None = None
            with received.lock:
                received.connections += 1

        def quic_event_received(self, event: QuicEvent) -> None:
            if isinstance(event, HandshakeCompleted):
                with received.lock:
                    received.handshakes += 1
                if event.alpn_protocol == H3_ALPN:
                    self.h3 = H3Connection(self._quic)
            if isinstance(event, StreamDataReceived):
                if event.data and (self.h3 is None or event.stream_id % 4 == 0):
                    # Request streams (client-initiated bidirectional) carry request bytes;
                    # HTTP/3 control and QPACK streams are connection set-up, not requests.
                    received.add(event.data)
                if self.h3 is None:
                    self._quic.send_stream_data(event.stream_id, event.data, event.end_stream)
                    self.transmit()
                    return
            if self.h3 is not None:
                for h3_event in self.h3.handle_event(event):
                    if isinstance(h3_event, HeadersReceived | DataReceived) and getattr(
                        h3_event, "stream_ended", False
                    ):
                        body = b"impostor content\n"
                        self.h3.send_headers(
                            h3_event.stream_id,
                            [
                                (b":status", b"200"),
                                (b"content-length", str(len(body)).encode()),
                                *((k.lower().encode(), v.encode()) for k, v in headers),
                            ],
                        )
                        self.h3.send_data(h3_event.stream_id, body, end_stream=True)
                self.transmit()

    return Protocol


@contextlib.contextmanager
def quic_impostor(
    chain_pem: Path, key_pem: Path, headers: Sequence[tuple[str, str]] = ()
) -> Iterator[QuicImpostor]:
    """QUIC on 127.0.0.1 (its own event loop thread): HTTP/3 and raw QUIC (echo)."""
    from aioquic.asyncio import serve
    from aioquic.quic.configuration import QuicConfiguration

    configuration = QuicConfiguration(is_client=False, alpn_protocols=[H3_ALPN, RAW_QUIC_ALPN])
    configuration.load_cert_chain(chain_pem, key_pem)
    received = Received()
    loop = asyncio.new_event_loop()
    started: list[object] = []
    ready = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        server = loop.run_until_complete(
            serve(
                "127.0.0.1",
                0,
                configuration=configuration,
                create_protocol=_quic_protocol(received, headers),
            )
        )
        started.append(server)
        ready.set()
        loop.run_forever()
        server.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    if not ready.wait(10):
        raise RuntimeError("the QUIC impostor did not start")
    server = started[0]
    port = server._transport.get_extra_info("sockname")[1]  # type: ignore[attr-defined]
    try:
        yield QuicImpostor(int(port), received)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)


# ------------------------------------------------------------------------------------- DTLS


@dataclass
class DtlsImpostor:
    port: int
    msg_log: Path
    stdout: Path

    def _inbound(self, content_type: int) -> list[str]:
        """First bytes of each received ``-msg`` entry of this pseudo content type (256: a
        DTLS record header, whose first byte is the record type; 22: a handshake message)."""
        lines = self.msg_log.read_text(errors="replace").splitlines()
        marker = f"content_type={content_type})"
        return [
            (lines[i + 1].split() or [""])[0]
            for i, line in enumerate(lines[:-1])
            if line.startswith("<<< ") and marker in line
        ]

    def application_records(self) -> int:
        """DTLS records of type application_data (23) the impostor received."""
        return self._inbound(256).count("17")

    def handshakes(self) -> int:
        """ClientHellos received (a cookie exchange makes it two per connection)."""
        return self._inbound(22).count("01")


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def dtls_impostor(tmp_path: Path, chain_pem: Path, key_pem: Path) -> Iterator[DtlsImpostor]:
    """``openssl s_server -dtls`` on 127.0.0.1 (UDP), logging every record it reads."""
    base = tmp_path / f"dtls-{time.monotonic_ns()}"
    base.mkdir(parents=True)
    port = _free_udp_port()
    # s_server's -cert takes the leaf only; the rest of the chain goes to -cert_chain.
    blocks = chain_pem.read_bytes().split(b"-----END CERTIFICATE-----")
    (base / "leaf.pem").write_bytes(blocks[0].strip() + b"\n-----END CERTIFICATE-----\n")
    rest = b"-----END CERTIFICATE-----".join(blocks[1:]).strip()
    chain_args = []
    if rest:
        (base / "chain.pem").write_bytes(rest + b"\n")
        chain_args = ["-cert_chain", str(base / "chain.pem")]
    msg_log, stdout = base / "msg.log", base / "stdout.log"
    with stdout.open("wb") as out:
        process = subprocess.Popen(
            ["openssl", "s_server", "-dtls", "-accept", f"127.0.0.1:{port}"]
            + ["-cert", str(base / "leaf.pem"), "-key", str(key_pem), *chain_args]
            + ["-msg", "-msgfile", str(msg_log)],
            stdin=subprocess.PIPE,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 5
        while b"ACCEPT" not in stdout.read_bytes():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"openssl s_server -dtls did not start: {stdout.read_text()}")
            time.sleep(0.02)
        yield DtlsImpostor(port, msg_log, stdout)
    finally:
        stop_process(process, timeout=5)


# ------------------------------------------------------------------------------- clients


@dataclass(frozen=True)
class QuicAnswer:
    """What a QUIC client got: an HTTP/3 status (0 if none), the bytes received, and how the
    connection ended (``error`` is empty when the exchange completed)."""

    status: int
    data: bytes
    error: str


def h3_get(port: int, authority: str, path: str = "/", *, timeout: float = 10.0) -> QuicAnswer:
    """One HTTP/3 GET with aioquic to 127.0.0.1:``port`` (the proxy's certificate is not
    checked: the client's trust is not what these tests are about)."""
    return asyncio.run(_quic_exchange(port, authority, path.encode(), h3=True, timeout=timeout))


def quic_send(port: int, server_name: str, data: bytes, *, timeout: float = 10.0) -> QuicAnswer:
    """Raw QUIC (ALPN ``RAW_QUIC_ALPN``): send ``data`` on one stream, read the echo."""
    return asyncio.run(_quic_exchange(port, server_name, data, h3=False, timeout=timeout))


async def _quic_exchange(
    port: int, server_name: str, payload: bytes, *, h3: bool, timeout: float
) -> QuicAnswer:
    from aioquic.asyncio.client import connect
    from aioquic.asyncio.protocol import QuicConnectionProtocol
    from aioquic.h3.connection import H3Connection
    from aioquic.h3.events import DataReceived
    from aioquic.h3.events import HeadersReceived
    from aioquic.quic.configuration import QuicConfiguration
    from aioquic.quic.events import ConnectionTerminated
    from aioquic.quic.events import QuicEvent
    from aioquic.quic.events import StreamDataReceived

    status = 0
    received = bytearray()
    done: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def finish(error: str = "") -> None:
        if not done.done():
            done.set_result(error)

    class Client(QuicConnectionProtocol):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            # From the start: the server's HTTP/3 control streams may arrive with the handshake.
            self.h3_conn = H3Connection(self._quic) if h3 else None

        def quic_event_received(self, event: QuicEvent) -> None:
            nonlocal status
            if isinstance(event, ConnectionTerminated):
                finish(f"connection closed: {event.error_code} {event.reason_phrase}")
                return
            if self.h3_conn is None:
                if isinstance(event, StreamDataReceived):
                    received.extend(event.data)
                    if event.end_stream or len(received) >= len(payload):
                        finish()
                return
            for h3_event in self.h3_conn.handle_event(event):
                if isinstance(h3_event, HeadersReceived):
                    status = int(dict(h3_event.headers).get(b":status", b"0"))
                elif isinstance(h3_event, DataReceived):
                    received.extend(h3_event.data)
                if getattr(h3_event, "stream_ended", False):
                    finish()

    configuration = QuicConfiguration(
        is_client=True,
        alpn_protocols=[H3_ALPN if h3 else RAW_QUIC_ALPN],
        verify_mode=ssl.CERT_NONE,
        server_name=server_name,
    )
    try:
        async with asyncio.timeout(timeout):
            async with connect(
                "127.0.0.1", port, configuration=configuration, create_protocol=Client
            ) as protocol:
                client = cast(Any, protocol)  # our Client: connect() is typed for the base
                stream_id = client._quic.get_next_available_stream_id()
                if client.h3_conn is not None:
                    client.h3_conn.send_headers(
                        stream_id,
                        [
                            (b":method", b"GET"),
                            (b":scheme", b"https"),
                            (b":authority", server_name.encode()),
                            (b":path", payload),
                        ],
                        end_stream=True,
                    )
                else:
                    client._quic.send_stream_data(stream_id, payload, end_stream=True)
                client.transmit()
                error = await done
    except (TimeoutError, ConnectionError) as e:
        error = f"{type(e).__name__}: {e}"
    return QuicAnswer(status, bytes(received), error)


def dtls_send(port: int, server_name: str, data: bytes, *, timeout: float = 10.0) -> str:
    """``openssl s_client -dtls``: handshake with 127.0.0.1:``port``, send ``data``, close.
    Returns s_client's output."""
    try:
        done = subprocess.run(
            ["openssl", "s_client", "-dtls1_2", "-connect", f"127.0.0.1:{port}"]
            + ["-servername", server_name],
            input=data,
            capture_output=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as e:
        # A proxy that neither answers nor closes: UDP has no connection to close.
        return f"timed out after {timeout} s: {(e.stdout or b'').decode(errors='replace')}"
    return (done.stdout + done.stderr).decode(errors="replace")
