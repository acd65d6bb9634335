"""Test origins: ``openssl s_server -HTTP`` on 127.0.0.1 that serves SCTs and OCSP staples.

``openssl_origin`` yields the port (an ``int``). ``observed_openssl_origin`` takes the same
arguments and yields an ``Origin`` (``.port`` plus what the origin received). s_server runs
with ``-msg``, which logs every TLS message it reads to a file (``<<<`` lines), and without
``-quiet``, which logs ``FILE:<path>`` on stderr for every file it serves. From these:

* ``Origin.connections()``: one ``OriginConnection`` per ClientHello received, with whether the
  client's Finished arrived and how many application-data records the client sent (TLS 1.3:
  decrypted records whose inner content type is 23; TLS 1.2: records of content type 23).
* ``Origin.served()``: the files served, one per successful ``GET``.
* ``Origin.settle()``: proving a negative ("no request bytes reached the origin") needs to know
  that the origin finished logging the connection in question. s_server serves one connection
  at a time, so ``settle`` makes one control request and waits until it is logged; every earlier
  connection is then logged completely. It returns the earlier connections.

The files in ``responses`` hold complete raw HTTP responses (``-HTTP`` sends them verbatim),
so any header, e.g. ``Expect-CT``, can be served; ``http_response`` builds one.
"""

from __future__ import annotations

import contextlib
import re
import socket
import ssl
import subprocess
import time
from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from support import pki
from support import stop_process

STARTUP_TIMEOUT = 5.0
POLL_INTERVAL = 0.01


def http_response(
    status: int = 200,
    headers: Sequence[tuple[str, str]] = (),
    body: bytes = b"hello",
    reason: str | None = None,
) -> bytes:
    """A complete HTTP/1.1 response with Content-Length and Connection: close."""
    if reason is None:
        reason = {200: "OK", 204: "No Content", 404: "Not Found"}.get(status, "Status")
    lines = [f"HTTP/1.1 {status} {reason}"]
    lines += [f"{name}: {value}" for name, value in headers]
    lines += [f"Content-Length: {len(body)}", "Connection: close"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


@dataclass(frozen=True)
class OriginConnection:
    """What s_server read on one connection (from its ``-msg`` log)."""

    client_finished: bool
    application_data_records: int


_INBOUND = re.compile(r"^<<< (?P<what>.*)$")


def parse_msg_log(text: str) -> list[OriginConnection]:
    """Split an ``s_server -msg`` log at each ClientHello received and summarise each part."""
    connections: list[OriginConnection] = []
    lines = text.splitlines()
    finished = False
    inner_app_data = 0
    record_app_data = 0
    seen_inner = False
    started = False

    def close() -> None:
        if started:
            # TLS 1.3 encrypts every record as type 23; only the inner type tells app data.
            count = inner_app_data if seen_inner else record_app_data
            connections.append(OriginConnection(finished, count))

    for index, line in enumerate(lines):
        match = _INBOUND.match(line)
        if match is None:
            continue
        what = match["what"]
        first_bytes = lines[index + 1].split() if index + 1 < len(lines) else []
        if what.endswith("ClientHello"):
            close()
            started, finished, seen_inner = True, False, False
            inner_app_data = record_app_data = 0
        elif what.endswith(", Finished"):
            finished = True
        elif "InnerContent" in what:
            seen_inner = True
            inner_app_data += first_bytes[:1] == ["17"]
        elif "RecordHeader" in what:
            record_app_data += first_bytes[:1] == ["17"]
    close()
    return connections


@dataclass(frozen=True)
class Origin:
    """A running origin: its port, plus access to what it has received so far."""

    port: int
    msg_log: Path
    err_log: Path

    def connections(self) -> list[OriginConnection]:
        return parse_msg_log(self.msg_log.read_text(errors="replace"))

    def served(self) -> list[str]:
        text = self.err_log.read_text(errors="replace")
        return [line[len("FILE:") :] for line in text.splitlines() if line.startswith("FILE:")]

    def fetch(self, path: str = "/index.html", *, timeout: float = 5.0) -> bytes:
        """GET ``path`` over TLS without certificate checks; the raw response bytes."""
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as raw:
            with context.wrap_socket(raw, server_hostname="localhost") as sock:
                sock.sendall(f"GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n".encode())
                chunks = []
                while chunk := sock.recv(65536):
                    chunks.append(chunk)
        return b"".join(chunks)

    def wait_until(
        self, condition: Callable[[list[OriginConnection]], bool], *, timeout: float = 5.0
    ) -> list[OriginConnection]:
        deadline = time.monotonic() + timeout
        while True:
            connections = self.connections()
            if condition(connections):
                return connections
            if time.monotonic() > deadline:
                raise TimeoutError(f"origin log never matched; it shows {connections}")
            time.sleep(POLL_INTERVAL)

    def settle(self, *, control_path: str = "/index.html") -> list[OriginConnection]:
        """Make a control request, wait until it is logged, return the connections before it."""
        before = len(self.connections())
        response = self.fetch(control_path)
        if not response.startswith(b"HTTP/"):
            raise AssertionError(f"control request to the origin failed: {response[:200]!r}")
        connections = self.wait_until(
            lambda cs: len(cs) > before and cs[-1].application_data_records > 0
        )
        return connections[:-1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_listening(process: subprocess.Popen[bytes], port: int, err_log: Path) -> bool:
    """True once the port accepts connections; False if s_server exited (e.g. port taken)."""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return True
        time.sleep(POLL_INTERVAL)
    raise TimeoutError(f"openssl s_server did not listen on {port}: {err_log.read_text()}")


@contextlib.contextmanager
def observed_openssl_origin(
    tmp_path: Path,
    *,
    cert_pem: bytes,
    key_pem: bytes,
    chain_pem: bytes = b"",
    tls: str = "1.3",
    serverinfo: bytes | None = None,
    ocsp_der: bytes | None = None,
    responses: Mapping[str, bytes] | None = None,
) -> Iterator[Origin]:
    """Run ``openssl s_server -HTTP`` on 127.0.0.1; yield it as an ``Origin``."""
    if tls not in ("1.2", "1.3"):
        raise ValueError(f"tls must be '1.2' or '1.3', not {tls!r}")
    if responses is None:
        responses = {"index.html": http_response()}
    base = Path(tmp_path) / f"origin-{time.monotonic_ns()}"
    www = base / "www"
    www.mkdir(parents=True)
    for name, content in responses.items():
        target = www / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
    (base / "cert.pem").write_bytes(cert_pem)
    (base / "key.pem").write_bytes(key_pem)
    args = ["-cert", str(base / "cert.pem"), "-key", str(base / "key.pem")]
    if chain_pem:
        (base / "chain.pem").write_bytes(chain_pem)
        args += ["-cert_chain", str(base / "chain.pem")]
    if serverinfo is not None:
        (base / "serverinfo.pem").write_bytes(serverinfo)
        args += ["-serverinfo", str(base / "serverinfo.pem")]
    if ocsp_der is not None:
        (base / "ocsp.der").write_bytes(ocsp_der)
        args += ["-status_file", str(base / "ocsp.der")]
    msg_log, err_log = base / "msg.log", base / "err.log"

    for _attempt in range(3):  # the free port may be taken between probe and bind
        port = _free_port()
        with msg_log.open("wb") as out, err_log.open("wb") as err:
            process = subprocess.Popen(
                ["openssl", "s_server", "-accept", f"127.0.0.1:{port}", "-HTTP", "-msg"]
                + [f"-tls{tls.replace('.', '_')}"]
                + args,
                cwd=www,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
            )
        try:
            if _wait_listening(process, port, err_log):
                break
        except BaseException:
            process.kill()
            process.wait()
            raise
        process.wait()
    else:
        raise RuntimeError(f"openssl s_server did not start: {err_log.read_text()}")

    try:
        yield Origin(port, msg_log, err_log)
    finally:
        stop_process(process, timeout=5)


@contextlib.contextmanager
def openssl_origin(
    tmp_path: Path,
    *,
    cert_pem: bytes,
    key_pem: bytes,
    chain_pem: bytes = b"",
    tls: str = "1.3",
    serverinfo: bytes | None = None,
    ocsp_der: bytes | None = None,
    responses: Mapping[str, bytes] | None = None,
) -> Iterator[int]:
    """Run ``openssl s_server -HTTP`` on 127.0.0.1; yield its port."""
    with observed_openssl_origin(
        tmp_path,
        cert_pem=cert_pem,
        key_pem=key_pem,
        chain_pem=chain_pem,
        tls=tls,
        serverinfo=serverinfo,
        ocsp_der=ocsp_der,
        responses=responses,
    ) as origin:
        yield origin.port


def openssl_origins(
    stack: contextlib.ExitStack,
    tmp_path: Path,
    served: Mapping[str, tuple[Any, Any, bytes | None, bytes | None]],
    *,
    chain: Any,
    tls_versions: Sequence[str],
) -> dict[tuple[str, str], int]:
    """One ``openssl_origin`` per site and TLS version, kept running by ``stack``; returns
    their ports by (site, TLS version). ``served``: site -> (leaf certificate, its key,
    serverinfo PEM or None, OCSP response DER or None); ``chain``: the intermediate."""
    ports: dict[tuple[str, str], int] = {}
    for name, (leaf, key, serverinfo, ocsp_der) in served.items():
        for tls in tls_versions:
            ports[name, tls] = stack.enter_context(
                openssl_origin(
                    tmp_path,
                    cert_pem=pki.pem(leaf),
                    key_pem=pki.key_pem(key),
                    chain_pem=pki.pem(chain),
                    tls=tls,
                    serverinfo=serverinfo,
                    ocsp_der=ocsp_der,
                )
            )
    return ports
