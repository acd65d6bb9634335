"""A real HTTPS origin on 127.0.0.1 (Python ssl + http.server) that records what it receives.

Each path maps to a list of response headers; every request that reaches the origin is
recorded, so a test can prove that a blocked request never left the proxy.
"""

from __future__ import annotations

import http.server
import ssl
from collections.abc import Iterator
from collections.abc import Mapping
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path

from support import serving

Headers = Sequence[tuple[str, str]]


@dataclass
class Origin:
    port: int
    requests: list[tuple[str, str]] = field(default_factory=list)  # (method, path)
    connections: int = 0
    scheme: str = "https"

    def url(self, path: str = "/", host: str = "localhost") -> str:
        return f"{self.scheme}://{host}:{self.port}{path}"


def _handler(
    origin: Origin, routes: Mapping[str, Headers]
) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            origin.requests.append((self.command, self.path))
            headers = routes.get(self.path.split("?")[0], routes.get("*", ()))
            body = f"hello from {self.path}\n".encode()
            self.send_response(200)
            for name, value in headers:
                self.send_header(name, value)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_POST = do_GET

    return Handler


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, origin: Origin, context: ssl.SSLContext | None, *args: object) -> None:
        self.origin = origin
        self.context = context
        super().__init__(*args)  # type: ignore[arg-type]

    def get_request(self):  # type: ignore[no-untyped-def]
        sock, addr = super().get_request()
        self.origin.connections += 1
        if self.context is None:
            return sock, addr
        # The handshake runs in the handler thread, so a stalled client cannot block accept().
        return self.context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client (the proxy) aborting a handshake is part of several tests


@contextmanager
def _serve(
    origin: Origin, context: ssl.SSLContext | None, routes: Mapping[str, Headers]
) -> Iterator[Origin]:
    server = _Server(origin, context, ("127.0.0.1", 0), _handler(origin, routes))
    origin.port = server.server_address[1]
    with serving(server):
        yield origin


@contextmanager
def http_origin(routes: Mapping[str, Headers] | None = None) -> Iterator[Origin]:
    """Plain HTTP on 127.0.0.1:<free port>."""
    with _serve(Origin(port=0, scheme="http"), None, routes or {}) as origin:
        yield origin


@contextmanager
def https_origin(
    cert_chain_pem: Path,
    key_pem: Path,
    routes: Mapping[str, Headers] | None = None,
    *,
    tls_max: ssl.TLSVersion = ssl.TLSVersion.TLSv1_3,
) -> Iterator[Origin]:
    """Serve HTTPS on 127.0.0.1:<free port> with the given certificate chain (leaf first)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.maximum_version = tls_max
    context.load_cert_chain(str(cert_chain_pem), str(key_pem))
    with _serve(Origin(port=0), context, routes or {}) as origin:
        yield origin
