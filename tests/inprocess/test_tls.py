"""expect_ct.tls: handshake parsers on crafted bytes, and real upstream handshakes in-process.

The in-process tests run mitmproxy's real TlsConfig and our hook in both addon orders, let
mitmproxy build the upstream pyOpenSSL connection, drive it over a socket to
``openssl s_server`` and compare what was captured with the exact bytes the origin served.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from hypothesis import given
from hypothesis import strategies as st
from mitmproxy import connection
from mitmproxy import tls
from mitmproxy.addons.tlsconfig import TlsConfig
from mitmproxy.net import tls as net_tls
from mitmproxy.proxy import context
from mitmproxy.proxy.layers.tls import TlsStartServerHook
from mitmproxy.test import taddons
from mitmproxy.test import tflow
from OpenSSL import SSL

from expect_ct import tls as ct_tls
from expect_ct.tls import HandshakeCapture
from expect_ct.tls import HandshakeSCTs
from expect_ct.tls_messages import MalformedHandshakeMessage
from expect_ct.tls_messages import ServerFlight
from expect_ct.tls_messages import parse_certificate_status
from expect_ct.tls_messages import parse_extensions
from expect_ct.tls_messages import parse_server_hello
from expect_ct.tls_messages import parse_tls13_certificate
from expect_ct.tls_messages import split_handshake_message
from support import pki
from support.origins import Origin
from support.origins import http_response
from support.origins import observed_openssl_origin
from support.origins import parse_msg_log

# --- crafted TLS messages -------------------------------------------------------------------


def ext(extension_type: int, data: bytes) -> bytes:
    return struct.pack(">HH", extension_type, len(data)) + data


def u8(data: bytes) -> bytes:
    return bytes([len(data)]) + data


def u16(data: bytes) -> bytes:
    return struct.pack(">H", len(data)) + data


def u24(data: bytes) -> bytes:
    return struct.pack(">I", len(data))[1:] + data


def handshake(msg_type: int, body: bytes) -> bytes:
    return bytes([msg_type]) + u24(body)


def server_hello_body(
    extensions: bytes | None, *, version: int = 0x0303, session_id: bytes = b"\x07" * 32
) -> bytes:
    fixed = struct.pack(">H", version) + b"\x42" * 32 + u8(session_id) + b"\x13\x01" + b"\x00"
    return fixed if extensions is None else fixed + u16(extensions)


def tls13_certificate_body(
    entries: list[tuple[bytes, bytes]], request_context: bytes = b""
) -> bytes:
    return u8(request_context) + u24(b"".join(u24(cert) + u16(exts) for cert, exts in entries))


def certificate_status(ocsp: bytes, status_type: int = 1) -> bytes:
    return bytes([status_type]) + u24(ocsp)


SCT_LIST = u16(u16(b"\x00" + b"\x11" * 40))
OCSP = b"\x30\x03\x0a\x01\x00"
TLS13 = ext(43, b"\x03\x04")


def all_truncations(data: bytes) -> Iterator[bytes]:
    for end in range(len(data)):
        yield data[:end]


# --- parsers --------------------------------------------------------------------------------


def test_server_hello_tls12_extensions() -> None:
    body = server_hello_body(ext(0xFF01, b"\x00") + ext(18, SCT_LIST))
    hello = parse_server_hello(body)
    assert hello.legacy_version == 0x0303
    assert hello.selected_version == 0x0303
    assert dict(hello.extensions) == {0xFF01: b"\x00", 18: SCT_LIST}


def test_server_hello_tls13_selected_version() -> None:
    hello = parse_server_hello(server_hello_body(TLS13 + ext(51, b"\x00\x1d" + u16(b"k" * 32))))
    assert hello.legacy_version == 0x0303
    assert hello.selected_version == 0x0304


def test_server_hello_without_extensions_block_is_tls12() -> None:
    hello = parse_server_hello(server_hello_body(None, session_id=b""))
    assert dict(hello.extensions) == {}
    assert hello.selected_version == 0x0303


def test_server_hello_every_truncation_is_rejected() -> None:
    body = server_hello_body(ext(18, SCT_LIST) + TLS13)
    no_extensions_length = len(server_hello_body(None))
    for truncated in all_truncations(body):
        if len(truncated) == no_extensions_length:
            # Exactly the fixed part: a valid TLS 1.2 ServerHello without extensions.
            assert dict(parse_server_hello(truncated).extensions) == {}
            continue
        with pytest.raises(MalformedHandshakeMessage):
            parse_server_hello(truncated)


@pytest.mark.parametrize(
    "body, message",
    [
        (server_hello_body(ext(18, SCT_LIST)) + b"\x00", "trailing"),
        (server_hello_body(ext(18, SCT_LIST) + ext(18, b"")), "appears twice"),
        (server_hello_body(b"", session_id=b"\x01" * 33), "at most 32"),
        (server_hello_body(b"\x00\x12\x00\x05\x00"), "needs 5 bytes"),
    ],
)
def test_server_hello_malformed(body: bytes, message: str) -> None:
    with pytest.raises(MalformedHandshakeMessage, match=message):
        parse_server_hello(body)


def test_supported_versions_must_be_one_version() -> None:
    hello = parse_server_hello(server_hello_body(ext(43, b"\x03\x04\x03\x03")))
    with pytest.raises(MalformedHandshakeMessage, match="one version"):
        hello.selected_version  # noqa: B018


def test_split_handshake_message() -> None:
    assert split_handshake_message(handshake(2, b"abc")) == (2, b"abc")
    assert split_handshake_message(handshake(11, b"")) == (11, b"")
    with pytest.raises(MalformedHandshakeMessage, match="trailing"):
        split_handshake_message(handshake(2, b"abc") + b"d")
    for truncated in all_truncations(handshake(2, b"abc")):
        with pytest.raises(MalformedHandshakeMessage):
            split_handshake_message(truncated)


def test_parse_extensions_empty_and_truncated() -> None:
    assert parse_extensions(b"", "x") == {}
    data = ext(18, SCT_LIST) + ext(5, b"")
    assert parse_extensions(data, "x") == {18: SCT_LIST, 5: b""}
    for truncated in all_truncations(data):
        if truncated in (b"", ext(18, SCT_LIST)):
            continue  # whole extensions: valid lists
        with pytest.raises(MalformedHandshakeMessage):
            parse_extensions(truncated, "x")


def test_tls13_certificate_entries() -> None:
    leaf_exts = ext(18, SCT_LIST) + ext(5, certificate_status(OCSP))
    body = tls13_certificate_body([(b"LEAF", leaf_exts), (b"ISSUER", b"")], b"ctx")
    entries = parse_tls13_certificate(body)
    assert [e.cert_data for e in entries] == [b"LEAF", b"ISSUER"]
    assert dict(entries[0].extensions) == {18: SCT_LIST, 5: certificate_status(OCSP)}
    assert dict(entries[1].extensions) == {}
    assert parse_tls13_certificate(tls13_certificate_body([])) == ()
    for truncated in all_truncations(body):
        with pytest.raises(MalformedHandshakeMessage):
            parse_tls13_certificate(truncated)


def test_tls13_certificate_rejects_empty_cert_data_and_trailing_bytes() -> None:
    with pytest.raises(MalformedHandshakeMessage, match="at least 1"):
        parse_tls13_certificate(tls13_certificate_body([(b"", b"")]))
    with pytest.raises(MalformedHandshakeMessage, match="trailing"):
        parse_tls13_certificate(tls13_certificate_body([(b"LEAF", b"")]) + b"\x00")


def test_certificate_status() -> None:
    assert parse_certificate_status(certificate_status(OCSP)) == OCSP
    with pytest.raises(MalformedHandshakeMessage, match="status_type 2"):
        parse_certificate_status(certificate_status(OCSP, status_type=2))
    with pytest.raises(MalformedHandshakeMessage, match="at least 1"):
        parse_certificate_status(certificate_status(b""))
    with pytest.raises(MalformedHandshakeMessage, match="trailing"):
        parse_certificate_status(certificate_status(OCSP) + b"\x00")
    for truncated in all_truncations(certificate_status(OCSP)):
        with pytest.raises(MalformedHandshakeMessage):
            parse_certificate_status(truncated)


@given(st.binary(max_size=200))
def test_parsers_only_raise_malformed_on_hostile_bytes(data: bytes) -> None:
    for parse in (
        split_handshake_message,
        parse_server_hello,
        parse_tls13_certificate,
        parse_certificate_status,
        lambda d: parse_extensions(d, "fuzz"),
        lambda d: ServerFlight(tls13=True).observe(d),
        lambda d: ServerFlight(tls13=False).observe(d),
    ):
        with contextlib.suppress(MalformedHandshakeMessage):
            parse(data)


VALID_MESSAGES = [
    handshake(2, server_hello_body(ext(18, SCT_LIST) + ext(0xFF01, b"\x00"))),
    handshake(2, server_hello_body(TLS13)),
    handshake(
        11,
        tls13_certificate_body(
            [(b"LEAF", ext(18, SCT_LIST) + ext(5, certificate_status(OCSP))), (b"CA", b"")]
        ),
    ),
    handshake(22, certificate_status(OCSP)),
]


@given(
    st.sampled_from(VALID_MESSAGES),
    st.booleans(),
    st.integers(min_value=0, max_value=400),
    st.integers(min_value=0, max_value=255),
)
def test_flight_survives_corrupted_messages(
    message: bytes, tls13: bool, position: int, value: int
) -> None:
    corrupted = bytearray(message)
    corrupted[position % len(corrupted)] = value
    flight = ServerFlight(tls13=tls13)
    with contextlib.suppress(MalformedHandshakeMessage):
        flight.observe(bytes(corrupted))
    for captured in (flight.tls_extension, flight.ocsp_response):
        assert captured is None or bytes(captured) in bytes(corrupted)


def test_flight_tls12() -> None:
    flight = ServerFlight()
    flight.observe(handshake(2, server_hello_body(ext(18, SCT_LIST))))
    # A TLS 1.2 Certificate has no request context or entry extensions: not parsed as 1.3.
    flight.observe(handshake(11, u24(u24(b"LEAF"))))
    flight.observe(handshake(22, certificate_status(OCSP)))
    assert flight == ServerFlight(
        tls13=False, tls_extension=SCT_LIST, tls_extension_where="ServerHello", ocsp_response=OCSP
    )


def test_flight_tls13() -> None:
    flight = ServerFlight()
    flight.observe(handshake(2, server_hello_body(TLS13)))
    leaf_exts = ext(18, SCT_LIST) + ext(5, certificate_status(OCSP))
    other = ext(18, u16(u16(b"not the leaf")))
    flight.observe(handshake(11, tls13_certificate_body([(b"LEAF", leaf_exts), (b"CA", other)])))
    assert flight == ServerFlight(
        tls13=True, tls_extension=SCT_LIST, tls_extension_where="Certificate", ocsp_response=OCSP
    )


def test_flight_ignores_what_the_version_does_not_allow() -> None:
    flight = ServerFlight()
    # RFC 8446 4.2: signed_certificate_timestamp never belongs in a TLS 1.3 ServerHello.
    flight.observe(handshake(2, server_hello_body(TLS13 + ext(18, SCT_LIST))))
    flight.observe(handshake(22, certificate_status(OCSP)))  # TLS 1.2 only message
    assert flight == ServerFlight(tls13=True)
    flight.observe(handshake(11, tls13_certificate_body([])))
    assert flight == ServerFlight(tls13=True)


def test_parse_msg_log_of_origins_helper() -> None:
    log = (
        "<<< TLS 1.0, RecordHeader [length 0005]\n    16 03 01 02 00\n"
        "<<< TLS 1.3, Handshake [length 0200], ClientHello\n    01 00\n"
        "<<< TLS 1.2, RecordHeader [length 0005]\n    17 03 03 00 45\n"
        "<<< TLS 1.3, InnerContent [length 0001]\n    16\n"
        "<<< TLS 1.3, Handshake [length 0034], Finished\n    14 00\n"
        "<<< TLS 1.3, InnerContent [length 0001]\n    17\n"
        "<<< TLS 1.2, Handshake [length 0200], ClientHello\n    01 00\n"
        "<<< TLS 1.2, Handshake [length 0010], Finished\n    14 00\n"
        "<<< TLS 1.2, RecordHeader [length 0005]\n    17 03 03 00 71\n"
        ">>> TLS 1.2, RecordHeader [length 0005]\n    17 03 03 00 71\n"
        "<<< TLS 1.2, Handshake [length 0200], ClientHello\n    01 00\n"
    )
    assert [(c.client_finished, c.application_data_records) for c in parse_msg_log(log)] == [
        (True, 1),
        (True, 1),
        (False, 0),
    ]


# --- in-process handshakes ------------------------------------------------------------------


@dataclass(frozen=True)
class Material:
    root_pem: Path
    leaf: x509.Certificate
    intermediate: x509.Certificate
    leaf_pem: bytes
    key_pem: bytes
    chain_pem: bytes
    sct_list: bytes
    serverinfo: bytes
    ocsp: bytes


@pytest.fixture(scope="module")
def material(tmp_path_factory: pytest.TempPathFactory) -> Material:
    root = pki.make_root()
    intermediate = pki.make_intermediate(root)
    leaf, key = pki.make_leaf(intermediate)
    log = pki.make_log("Capture Test Log", "Capture Test Operator")
    sct_list = pki.tls_sct_list(leaf, [(log, pki.now_ms())])
    root_pem = tmp_path_factory.mktemp("pki") / "root.pem"
    root_pem.write_bytes(pki.pem(root.cert))
    return Material(
        root_pem=root_pem,
        leaf=leaf,
        intermediate=intermediate.cert,
        leaf_pem=pki.pem(leaf),
        key_pem=pki.key_pem(key),
        chain_pem=pki.pem(intermediate.cert),
        sct_list=sct_list,
        serverinfo=pki.serverinfo_pem(sct_list, v2=True),
        ocsp=pki.ocsp_response(leaf, intermediate, sct_list=sct_list),
    )


@pytest.fixture(scope="session")
def confdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Shared so TlsConfig mints its CA once, not per test.
    return tmp_path_factory.mktemp("mitmproxy-confdir")


@contextlib.contextmanager
def origin(
    tmp_path: Path, material: Material, tls_version: str, *, sct: bool = True, ocsp: bool = True
) -> Iterator[Origin]:
    with observed_openssl_origin(
        tmp_path,
        cert_pem=material.leaf_pem,
        key_pem=material.key_pem,
        chain_pem=material.chain_pem,
        tls=tls_version,
        serverinfo=material.serverinfo if sct else None,
        ocsp_der=material.ocsp if ocsp else None,
        responses={"index.html": http_response(headers=[("Expect-CT", "max-age=60")])},
    ) as observed:
        yield observed


class CaptureHooks:
    """The addon's side of the contract: forward tls_start_server to the capture."""

    def __init__(self, capture: HandshakeCapture) -> None:
        self.capture = capture
        self.ssl_conn_existed: list[bool] = []

    def tls_start_server(self, data: tls.TlsData) -> None:
        self.ssl_conn_existed.append(data.ssl_conn is not None)
        self.capture.tls_start_server(data)


ORDERS = ["tlsconfig-first", "capture-first"]


@dataclass
class Proxy:
    tctx: taddons.context
    capture: HandshakeCapture
    hooks: CaptureHooks

    def start_upstream(self, port: int) -> tls.TlsData:
        server = connection.Server(address=("127.0.0.1", port), sni="localhost")
        data = tls.TlsData(server, context.Context(tflow.tclient_conn(), self.tctx.options))
        self.tctx.master.addons.trigger(TlsStartServerHook(data))
        assert data.ssl_conn is not None
        return data


@contextlib.contextmanager
def proxy(order: str, confdir: Path, material: Material) -> Iterator[Proxy]:
    capture = HandshakeCapture()
    hooks = CaptureHooks(capture)
    addons: tuple[Any, ...] = (TlsConfig(), hooks)
    if order == "capture-first":
        addons = (hooks, TlsConfig())
    tctx = taddons.context(*addons)
    try:
        with tctx:
            tctx.options.update(
                confdir=str(confdir), ssl_verify_upstream_trusted_ca=str(material.root_pem)
            )
            yield Proxy(tctx, capture, hooks)
    finally:
        capture.uninstall()  # taddons.context never calls done()
        if not tctx.master.event_loop.is_closed():
            tctx.master.event_loop.close()


class Upstream:
    """Drives a memory-BIO pyOpenSSL connection over a real socket, like mitmproxy does."""

    def __init__(self, conn: SSL.Connection, port: int) -> None:
        self.conn = conn
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)

    def close(self) -> None:
        self.sock.close()

    def flush(self) -> None:
        while True:
            try:
                out = self.conn.bio_read(65536)
            except SSL.WantReadError:
                return
            self.sock.sendall(out)

    def receive(self) -> bool:
        data = self.sock.recv(65536)
        if data:
            self.conn.bio_write(data)
        return bool(data)

    def handshake(self) -> None:
        # On SSL.Error nothing more is flushed, as in mitmproxy: the alert stays unsent.
        while True:
            try:
                self.conn.do_handshake()
            except SSL.WantReadError:
                self.flush()
                if not self.receive():
                    raise ConnectionError("origin closed during the handshake") from None
            else:
                self.flush()
                return

    def get(self, path: str = "/index.html") -> bytes:
        self.conn.sendall(f"GET {path} HTTP/1.0\r\n\r\n".encode())
        self.flush()
        response = b""
        while True:
            try:
                response += self.conn.recv(65536)
            except SSL.WantReadError:
                self.flush()
                if not self.receive():
                    return response
            except (SSL.ZeroReturnError, SSL.SysCallError):
                return response


@contextlib.contextmanager
def upstream(data: tls.TlsData, port: int) -> Iterator[Upstream]:
    assert data.ssl_conn is not None
    up = Upstream(data.ssl_conn, port)
    try:
        yield up
    finally:
        up.close()


class Decider:
    def __init__(self, answer: bool = True, error: Exception | None = None) -> None:
        self.answer = answer
        self.error = error
        self.calls: list[tuple[connection.Server, HandshakeSCTs]] = []

    def __call__(self, server: connection.Server, handshake: HandshakeSCTs) -> bool:
        self.calls.append((server, handshake))
        if self.error is not None:
            raise self.error
        return self.answer


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


SERVED = {
    "sct+ocsp": (True, True),
    "none": (False, False),
    "ocsp": (False, True),
    "sct": (True, False),
}


@pytest.mark.parametrize("served", SERVED)
@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("tls_version", ["1.2", "1.3"])
def test_capture_matrix(
    tmp_path: Path, material: Material, confdir: Path, tls_version: str, order: str, served: str
) -> None:
    sct, ocsp = SERVED[served]
    decider = Decider()
    with (
        origin(tmp_path, material, tls_version, sct=sct, ocsp=ocsp) as site,
        proxy(order, confdir, material) as p,
    ):
        assert p.capture.install(decider) is None
        assert p.capture.installed and p.capture.problem is None
        data = p.start_upstream(site.port)
        assert p.hooks.ssl_conn_existed == [order == "tlsconfig-first"]
        with upstream(data, site.port) as up:
            up.handshake()
            result = p.capture.result(data)
            assert up.get().endswith(b"\r\n\r\nhello")

    assert result.captured is True
    assert result.tls_extension == (material.sct_list if sct else None)
    expected_where = "ServerHello" if tls_version == "1.2" else "Certificate"
    assert result.tls_extension_where == (expected_where if sct else None)
    assert result.ocsp_response == (material.ocsp if ocsp else None)
    assert result.tls_version == f"TLSv{tls_version}"
    assert [der(c) for c in result.chain] == [der(material.leaf), der(material.intermediate)]
    assert result.chain_der == (der(material.leaf), der(material.intermediate))
    # decide ran exactly once, inside the handshake, and already saw everything.
    assert len(decider.calls) == 1
    server, seen = decider.calls[0]
    assert server is data.conn
    assert seen == result


def test_connections_to_one_server_share_its_certificate_objects(
    tmp_path: Path, material: Material, confdir: Path
) -> None:
    results = []
    with (
        origin(tmp_path, material, "1.3", sct=True, ocsp=False) as site,
        proxy(ORDERS[0], confdir, material) as p,
    ):
        p.capture.install(Decider())
        for _ in range(2):
            data = p.start_upstream(site.port)
            with upstream(data, site.port) as up:
                up.handshake()
                results.append(p.capture.result(data))
    first, second = results
    assert first.chain_der == second.chain_der
    # Parsed once: the addon's caches see the very same objects on the second connection.
    assert all(a is b for a, b in zip(first.chain, second.chain, strict=True))


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("tls_version", ["1.2", "1.3"])
def test_decide_false_aborts_before_any_request_byte(
    tmp_path: Path, material: Material, confdir: Path, tls_version: str, order: str
) -> None:
    decider = Decider(answer=False)
    with (
        origin(tmp_path, material, tls_version) as site,
        proxy(order, confdir, material) as p,
    ):
        p.capture.install(decider)
        data = p.start_upstream(site.port)
        with (
            upstream(data, site.port) as up,
            pytest.raises(SSL.Error, match="invalid status response"),
        ):
            up.handshake()
        result = p.capture.result(data)
        before_control = site.settle()

    assert len(decider.calls) == 1
    # What was known at the decision point is still there after the abort.
    assert result.tls_extension == material.sct_list
    assert result.ocsp_response == material.ocsp
    # The origin saw our ClientHello but never a Finished, let alone a request.
    assert [(c.client_finished, c.application_data_records) for c in before_control] == [(False, 0)]
    assert site.served() == ["index.html"]  # only the control request of settle()


@pytest.mark.parametrize("tls_version", ["1.2", "1.3"])
def test_decide_true_lets_the_request_through(
    tmp_path: Path, material: Material, confdir: Path, tls_version: str
) -> None:
    # The positive control for the test above: the same log does show a request.
    with (
        origin(tmp_path, material, tls_version) as site,
        proxy("tlsconfig-first", confdir, material) as p,
    ):
        p.capture.install(Decider(answer=True))
        data = p.start_upstream(site.port)
        with upstream(data, site.port) as up:
            up.handshake()
            up.get()
        before_control = site.settle()
    assert len(before_control) == 1
    assert before_control[0].client_finished
    assert before_control[0].application_data_records >= 1
    assert site.served() == ["index.html", "index.html"]


@pytest.mark.parametrize("tls_version", ["1.2", "1.3"])
def test_decide_raising_continues_and_logs(
    tmp_path: Path,
    material: Material,
    confdir: Path,
    tls_version: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    decider = Decider(error=RuntimeError("policy exploded"))
    caplog.set_level(logging.ERROR, logger="expect_ct.tls")
    with (
        origin(tmp_path, material, tls_version) as site,
        proxy("capture-first", confdir, material) as p,
    ):
        p.capture.install(decider)
        data = p.start_upstream(site.port)
        with upstream(data, site.port) as up:
            up.handshake()
            assert up.get().endswith(b"hello")
        result = p.capture.result(data)
    assert len(decider.calls) == 1
    assert result.tls_extension == material.sct_list
    errors = [r for r in caplog.records if r.name == "expect_ct.tls" and r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "localhost:" in errors[0].getMessage()
    assert errors[0].exc_info is not None and "policy exploded" in str(errors[0].exc_info[1])


def test_without_decide_the_handshake_always_continues(
    tmp_path: Path, material: Material, confdir: Path
) -> None:
    with (
        origin(tmp_path, material, "1.3") as site,
        proxy("tlsconfig-first", confdir, material) as p,
    ):
        assert p.capture.install() is None
        data = p.start_upstream(site.port)
        with upstream(data, site.port) as up:
            up.handshake()
        result = p.capture.result(data)
    assert (result.tls_extension, result.ocsp_response) == (material.sct_list, material.ocsp)


def test_dtls_gets_the_decision_point_but_not_the_extension_parser(
    material: Material, confdir: Path
) -> None:
    """Issue 17, attack 2: DTLS upstreams are refused in the handshake like TLS ones; their
    12-byte DTLS handshake headers are not fed to the TLS message parser."""
    with proxy("capture-first", confdir, material) as p:
        p.capture.install(lambda server, handshake: True)
        server = connection.Server(address=("127.0.0.1", 9), sni="localhost")
        data = tls.TlsData(server, context.Context(tflow.tclient_conn(), p.tctx.options))
        data.is_dtls = True
        p.capture.tls_start_server(data)
        assert data.ssl_conn is not None  # TlsConfig built it (DTLS client method)
        state = ct_tls._state_of(data.ssl_conn)
        assert state is not None and state.decide is not None
        assert not state.extension_capture
        assert not p.capture.result(data).captured


def test_connection_not_seen_by_the_hook_reports_not_captured(
    tmp_path: Path, material: Material, confdir: Path
) -> None:
    decider = Decider()
    with (
        origin(tmp_path, material, "1.3") as site,
        proxy("tlsconfig-first", confdir, material) as p,
    ):
        p.capture.install(decider)
        server = connection.Server(address=("127.0.0.1", site.port), sni="localhost")
        data = tls.TlsData(server, context.Context(tflow.tclient_conn(), p.tctx.options))
        p.tctx.master.addons.get("tlsconfig").tls_start_server(data)  # our hook skipped
        with upstream(data, site.port) as up:
            up.handshake()
        result = p.capture.result(data)
    assert result.captured is False
    assert (result.tls_extension, result.ocsp_response) == (None, None)  # OCSP never requested
    assert [der(c) for c in result.chain][:1] == [der(material.leaf)]
    assert result.chain_der[:1] == (der(material.leaf),)
    assert decider.calls == []


# --- install / uninstall --------------------------------------------------------------------


def context_kwargs() -> dict[str, Any]:
    return dict(
        method=net_tls.Method.TLS_CLIENT_METHOD,
        min_version=net_tls.Version.TLS1_2,
        max_version=net_tls.Version.UNBOUNDED,
        cipher_list=None,
        ecdh_curve=None,
        verify=net_tls.Verify.VERIFY_NONE,
        ca_path=None,
        ca_pemfile=None,
        client_cert=None,
        legacy_server_connect=False,
    )


@pytest.fixture
def original_factory() -> Iterator[Any]:
    original = net_tls.create_proxy_server_context
    original.cache_clear()
    yield original
    net_tls.create_proxy_server_context = original
    original.cache_clear()


def test_install_wraps_and_uninstall_restores_exactly(original_factory: Any) -> None:
    original = original_factory
    stale = original(**context_kwargs())
    assert original.cache_info().currsize == 1
    capture = HandshakeCapture()
    assert capture.install() is None
    assert capture.installed
    wrapper: Any = net_tls.create_proxy_server_context
    assert wrapper is not original and wrapper.__wrapped__ is original
    assert original.cache_info().currsize == 0  # the stale, uninstrumented context is gone
    fresh: Any = wrapper(**context_kwargs())
    assert fresh is not stale
    assert fresh._expect_ct_instrumented is True
    assert getattr(stale, "_expect_ct_instrumented", None) is None
    assert wrapper(**context_kwargs()) is fresh  # still cached
    wrapper.cache_clear()
    assert original.cache_info().currsize == 0

    assert capture.install() is None  # idempotent
    assert net_tls.create_proxy_server_context is wrapper

    wrapper(**context_kwargs())
    capture.uninstall()
    assert net_tls.create_proxy_server_context is original
    assert original.cache_info().currsize == 0
    assert not capture.installed
    capture.uninstall()  # idempotent
    assert net_tls.create_proxy_server_context is original
    assert getattr(original(**context_kwargs()), "_expect_ct_instrumented", None) is None


def test_script_reload_order_either_way(original_factory: Any) -> None:
    original = original_factory
    old, new = HandshakeCapture(), HandshakeCapture()
    old.install()
    old_wrapper = net_tls.create_proxy_server_context
    new.install()  # new instance loaded before the old one's done()
    assert net_tls.create_proxy_server_context.__wrapped__ is original  # not double-wrapped
    new_wrapper = net_tls.create_proxy_server_context
    assert new_wrapper is not old_wrapper
    old.uninstall()  # must not remove the new instance's wrapper
    assert net_tls.create_proxy_server_context is new_wrapper and new.installed
    new.uninstall()
    assert net_tls.create_proxy_server_context is original


class LibWithout:
    """The bindings of this pyOpenSSL, minus one symbol."""

    def __init__(self, lib: Any, missing: str) -> None:
        self._lib = lib
        self._missing = missing

    def __getattr__(self, name: str) -> Any:
        if name == self._missing:
            raise AttributeError(name)
        return getattr(self._lib, name)


@pytest.mark.parametrize("tls_version", ["1.2", "1.3"])
def test_missing_msg_callback_degrades_to_ocsp_and_decide(
    tmp_path: Path,
    material: Material,
    confdir: Path,
    tls_version: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ct_tls, "_lib", LibWithout(ct_tls._lib, "SSL_CTX_set_msg_callback"))
    decider = Decider()
    with (
        origin(tmp_path, material, tls_version) as site,
        proxy("tlsconfig-first", confdir, material) as p,
    ):
        problem = p.capture.install(decider)
        assert problem is not None and "SSL_CTX_set_msg_callback" in problem
        assert "TLS-extension SCTs are not captured" in problem
        assert p.capture.problem == problem and p.capture.installed
        data = p.start_upstream(site.port)
        with upstream(data, site.port) as up:
            up.handshake()
        result = p.capture.result(data)
    assert result.captured is False
    assert (result.tls_extension, result.tls_extension_where) == (None, None)
    assert result.ocsp_response == material.ocsp
    assert [seen for _, seen in decider.calls] == [result]


def test_missing_factory_installs_nothing_but_still_reads_ocsp(
    tmp_path: Path,
    material: Material,
    confdir: Path,
    original_factory: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def without_cache(**kwargs: Any) -> SSL.Context:
        return original_factory(**kwargs)  # type: ignore[no-any-return]

    monkeypatch.setattr(net_tls, "create_proxy_server_context", without_cache)
    decider = Decider(answer=False)
    with origin(tmp_path, material, "1.3") as site, proxy("capture-first", confdir, material) as p:
        problem = p.capture.install(decider)
        assert problem is not None and "create_proxy_server_context" in problem
        assert not p.capture.installed
        assert net_tls.create_proxy_server_context is without_cache
        data = p.start_upstream(site.port)
        with upstream(data, site.port) as up:
            up.handshake()  # no decision point without the wrapper: decide cannot abort
        result = p.capture.result(data)
    assert net_tls.create_proxy_server_context is without_cache  # uninstall left it alone
    assert result.captured is False and result.tls_extension is None
    assert result.ocsp_response == material.ocsp  # read from OpenSSL after the handshake
    assert decider.calls == []
