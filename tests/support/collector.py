"""Expect-CT report collectors for tests: a real HTTPS collector on 127.0.0.1, and rude ones.

``https_collector`` answers the CORS preflight and records every request (method, path,
headers, body), so a test can check exactly what reached it. Its certificate chains to its
own test root (``make_collector_pki``), which the sender must be told to trust.
``SilentServer`` accepts TCP connections and never answers (a hung collector) or resets them;
``RawTLSServer`` answers every request with the same bytes (a collector speaking nonsense).
Everything listens on 127.0.0.1 with an OS-chosen port and is shut down by its context manager
or ``close()``.
"""

from __future__ import annotations

import http.server
import socket
import ssl
import struct
import threading
import time
from collections.abc import Iterator
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Any

from support import pki
from support import serving

COLLECTOR_HOSTS = ("localhost", "127.0.0.1", "collector.test")
# What a collector should receive: RFC 9163 section 3.1, every key of a report (scheme is
# optional; we always send it).
REPORT_KEYS = {
    "date-time",
    "hostname",
    "port",
    "scheme",
    "effective-expiration-date",
    "served-certificate-chain",
    "validated-certificate-chain",
    "scts",
    "failure-mode",
    "test-report",
}
CORS_OK = (
    ("Access-Control-Allow-Origin", "*"),
    ("Access-Control-Allow-Methods", "POST"),
    ("Access-Control-Allow-Headers", "Content-Type"),
)


@dataclass(frozen=True)
class CollectorPKI:
    """A collector's own test root (``root_pem``) and its server chain and key."""

    root: pki.CA
    root_pem: Path
    chain_pem: Path  # leaf, then the intermediate
    key_pem: Path


def make_collector_pki(directory: Path, hosts: Sequence[str] = COLLECTOR_HOSTS) -> CollectorPKI:
    root = pki.make_root("Test Report Collector Root")
    inter = pki.make_intermediate(root, "Test Report Collector CA")
    leaf, key = pki.make_leaf(inter, hosts=tuple(hosts))
    directory.mkdir(parents=True, exist_ok=True)
    paths = CollectorPKI(
        root,
        directory / "collector-root.pem",
        directory / "collector-chain.pem",
        directory / "collector-key.pem",
    )
    paths.root_pem.write_bytes(pki.pem(root.cert))
    paths.chain_pem.write_bytes(pki.pem(leaf, inter.cert))
    paths.key_pem.write_bytes(pki.key_pem(key))
    return paths


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    body: bytes


@dataclass
class Collector:
    """What an ``https_collector`` received, and how it answers (changeable while it runs)."""

    port: int = 0
    preflight_headers: Sequence[tuple[str, str]] = CORS_OK
    preflight_status: int = 204
    post_status: int = 204
    connections: int = 0
    _requests: list[Recorded] = field(default_factory=list)
    _changed: threading.Condition = field(default_factory=threading.Condition)

    def uri(self, path: str = "/report", host: str = "127.0.0.1") -> str:
        return f"https://{host}:{self.port}{path}"

    def record(self, request: Recorded) -> None:
        with self._changed:
            self._requests.append(request)
            self._changed.notify_all()

    def requests(self, path: str | None = None) -> list[Recorded]:
        with self._changed:
            return [r for r in self._requests if path is None or r.path == path]

    def wait_for(
        self, count: int, path: str | None = None, deadline: float = 10.0
    ) -> list[Recorded]:
        """The first ``count`` requests (to ``path``), waiting up to ``deadline`` seconds."""
        end = time.monotonic() + deadline
        with self._changed:
            while True:
                got = [r for r in self._requests if path is None or r.path == path]
                if len(got) >= count:
                    return got
                left = end - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"collector got {len(got)} of {count} requests to {path or 'any path'}: "
                        f"{[(r.method, r.path) for r in self._requests]}"
                    )
                self._changed.wait(left)


def _handler(collector: Collector) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def _record(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {k.lower(): v for k, v in self.headers.items()}
            collector.record(Recorded(self.command, self.path, headers, body))

        def _answer(self, status: int, headers: Sequence[tuple[str, str]]) -> None:
            self.send_response(status)
            for name, value in headers:
                self.send_header(name, value)
            self.send_header("Content-Length", "0")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True

        def do_OPTIONS(self) -> None:
            self._record()
            self._answer(collector.preflight_status, collector.preflight_headers)

        def do_POST(self) -> None:
            self._record()
            self._answer(collector.post_status, ())

        do_GET = do_POST

    return Handler


class _TLSServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, collector: Collector, context: ssl.SSLContext) -> None:
        self.collector = collector
        self.context = context
        super().__init__(("127.0.0.1", 0), _handler(collector))

    def get_request(self) -> tuple[Any, Any]:
        sock, addr = super().get_request()
        self.collector.connections += 1
        # The handshake runs in the handler thread, so a stalled client cannot block accept().
        return self.context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client giving up mid-handshake is not the collector's problem


@contextmanager
def https_collector(files: CollectorPKI, **answers: Any) -> Iterator[Collector]:
    """Serve a report collector over HTTPS; ``answers`` set Collector fields (post_status...)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(files.chain_pem), str(files.key_pem))
    collector = Collector(**answers)
    server = _TLSServer(collector, context)
    collector.port = server.server_address[1]
    with serving(server):
        yield collector


class SilentServer:
    """Accepts TCP connections and never answers (a hung collector), or resets each one.

    A hung connection stays open until ``release()`` (or ``close()``) closes it.
    """

    def __init__(self, *, reset: bool = False) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.reset = reset
        self.accepted = 0
        self._held: list[socket.socket] = []
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def uri(self, path: str = "/report") -> str:
        return f"https://127.0.0.1:{self.port}{path}"

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            if self.reset:
                conn.settimeout(5)
                try:
                    conn.recv(4096)  # the ClientHello
                except OSError:
                    pass
                # SO_LINGER with a zero timeout: close() sends a TCP RST.
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.close()
            with self._changed:
                if not self.reset:
                    self._held.append(conn)
                self.accepted += 1
                self._changed.notify_all()

    def wait_accepted(self, count: int = 1, deadline: float = 10.0) -> None:
        with self._changed:
            if not self._changed.wait_for(lambda: self.accepted >= count, deadline):
                raise AssertionError(f"{self.accepted} of {count} connections accepted")

    def release(self) -> None:
        """Close the hung connections: the client sees the collector hang up."""
        with self._changed:
            held, self._held = self._held, []
        for conn in held:
            conn.close()

    def close(self) -> None:
        _close_listener(self.listener)
        self.release()
        self._thread.join(5)


class RawTLSServer:
    """A TLS server that answers every request with fixed bytes, then closes (nonsense replies)."""

    def __init__(self, files: CollectorPKI, reply: bytes) -> None:
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(files.chain_pem, files.key_pem)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.reply = reply
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                raw, _ = self.listener.accept()
            except OSError:
                return
            try:
                with self.context.wrap_socket(raw, server_side=True) as conn:
                    received = b""
                    while b"\r\n\r\n" not in received:
                        chunk = conn.recv(4096)
                        if not chunk:
                            break
                        received += chunk
                    conn.sendall(self.reply)
            except OSError:
                pass

    def close(self) -> None:
        _close_listener(self.listener)
        self._thread.join(5)


def _close_listener(listener: socket.socket) -> None:
    # shutdown() wakes the thread blocked in accept(); close() alone would not (Linux).
    try:
        listener.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    listener.close()
