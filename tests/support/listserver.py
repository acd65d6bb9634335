"""A log-list mirror for tests: a real HTTPS server on 127.0.0.1 with its own test root.

Routes map a path to (status, body, declared Content-Length or None). Responses carry an
ETag (the body's SHA-256) and honour If-None-Match with 304, as a CDN does. ``down()``
closes the listening socket (connection refused) and ``up()`` serves again on the same port.
``requests`` records (path, If-None-Match) of every request.
"""

from __future__ import annotations

import datetime
import hashlib
import http.server
import json
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path

from support import pki


@dataclass
class ListServer:
    root_pem: Path  # the test root the client must trust
    other_root_pem: Path  # a root that did NOT sign the server's certificate
    routes: dict[str, tuple[int, bytes, int | None]] = field(default_factory=dict)
    requests: list[tuple[str, str | None]] = field(default_factory=list)
    port: int = 0
    _context: ssl.SSLContext | None = None
    _server: http.server.ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    def url(self, path: str) -> str:
        return f"https://127.0.0.1:{self.port}{path}"

    def serve(self, path: str, body: bytes, status: int = 200) -> None:
        self.routes[path] = (status, body, None)

    def up(self) -> None:
        assert self._server is None and self._context is not None
        state = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                condition = self.headers.get("If-None-Match")
                state.requests.append((self.path, condition))
                status, body, declared = state.routes.get(self.path, (404, b"not found\n", None))
                etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
                if status == 200 and condition == etag:
                    self.send_response(304)
                    self.send_header("ETag", etag)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                if status == 200:
                    self.send_header("ETag", etag)
                self.send_header("Content-Length", str(declared if declared else len(body)))
                if declared:
                    self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(body)
                if declared:
                    self.close_connection = True

        server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        server.socket = self._context.wrap_socket(server.socket, server_side=True)
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def down(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None


@contextmanager
def list_server(directory: Path) -> Iterator[ListServer]:
    root = pki.make_root("Mirror Test Root")
    cert, key = pki.make_leaf(root, hosts=["127.0.0.1", "localhost"])
    (directory / "mirror.pem").write_bytes(pki.pem(cert, root.cert))
    (directory / "mirror.key").write_bytes(pki.key_pem(key))
    (directory / "mirror-root.pem").write_bytes(pki.pem(root.cert))
    (directory / "other-root.pem").write_bytes(pki.pem(pki.make_root("Unrelated Root").cert))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(directory / "mirror.pem", directory / "mirror.key")
    server = ListServer(directory / "mirror-root.pem", directory / "other-root.pem")
    server._context = context
    server.up()
    try:
        yield server
    finally:
        server.down()


def apple_list(logs: tuple[pki.TestLog, ...], version: int, asset: int = 1) -> bytes:
    """``logs`` as the body of an Apple-schema list, as a mirror serves it."""
    document = pki.log_list_json([pki.LogEntry(log) for log in logs], schema="apple")
    document["version"] = str(version)
    document["assetVersion"] = asset
    return json.dumps(document).encode()


def google_list(
    logs: tuple[pki.TestLog, ...], version: str, timestamp: datetime.datetime, state: str = "usable"
) -> bytes:
    """``logs`` (all in ``state``) as the body of a Google v3 list dated ``timestamp``."""
    document = pki.log_list_json(
        [pki.LogEntry(log, state=state) for log in logs], timestamp=timestamp
    )
    document["version"] = version
    return json.dumps(document).encode()
