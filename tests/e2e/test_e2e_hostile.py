"""End to end: hostile origins next to a normal one, through one real mitmdump.

Each hostile origin sends what a server can send: a 100 KB Expect-CT field, a thousand
Expect-CT fields, control characters, bare CR, NUL and bytes that are not UTF-8 in the value
(a raw TLS origin writes them byte for byte), garbage in the SCT TLS extension and in the
OCSP staple, a staple for another certificate, a 50-certificate chain, 50 unrelated extra
certificates, a leaf with two SCT list extensions and one whose SCT extension is not DER (a
leaf whose subject is not UTF-8 cannot be served: OpenSSL refuses to load it; its record is
tested in test_hostile_parsers.py). After each hostile request a normal request through the same
proxy must still get 200; mitmdump must log no traceback and no "Addon error"; the JSON-lines
log must stay one ASCII object per line; what mitmdump prints must hold no raw escape
character or injected line, and flow comments are one printable line.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import random
import socket
import ssl
import threading
from collections.abc import Iterator
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from mitmproxy import http
from mitmproxy import io as mio

from expect_ct import records
from support import pki
from support.httpsorigin import https_origin
from support.origins import openssl_origin
from support.proxy import Mitmdump
from support.proxy import Response
from support.world import World
from support.world import proxy_options

DOMAIN = "hostile.test"
SAN = (f"*.{DOMAIN}",)
NORMAL = f"normal.{DOMAIN}"
HEADERS = f"headers.{DOMAIN}"
ENFORCED = f"enforced.{DOMAIN}"
E = b"Expect-CT: "

# Path -> raw header lines. Everything an HTTP/1.1 server can put on the wire.
HEADER_ROUTES: dict[str, list[bytes]] = {
    "/big": [E + b",".join(b"x%d" % i for i in range(16_000)) + b",max-age=1"],
    "/big-ansi": [E + b"max-age=1, " + b"\x1b[31m" * 20_000],
    "/thousand": [E + b"max-age=1"] + [E + b"x%d" % i for i in range(999)],
    "/thousand-same": [E + b"max-age=1"] * 1000,
    "/ansi": [E + b'max-age=1, x="\x1b[31mRED\x1b[0m"'],
    "/osc": [E + b"\x1b]0;pwned\x07max-age=1"],
    "/nul": [E + b"max-age=1\x00, x"],
    "/bare-cr": [E + b"max-age=1\rX-Forged: yes"],
    "/obs-fold": [E + b"max-age=1,\r\n X-Forged: yes"],
    "/not-utf8": [E + b"max-age=1, \xff\xfe"],
    "/bidi": [E + 'max-age=1, x="\u202eevil"'.encode()],
}
# Whether the addon's rfc9163 parser must accept the field values.
VALID = {"/big", "/thousand", "/bidi"}


# --------------------------------------------------------------------- a raw TLS origin


@dataclass
class RawOrigin:
    port: int
    requests: list[str] = field(default_factory=list)


def _answer(
    sock: socket.socket,
    context: ssl.SSLContext,
    routes: Mapping[str, Sequence[bytes]],
    origin: RawOrigin,
) -> None:
    with contextlib.suppress(OSError), context.wrap_socket(sock, server_side=True) as tls:
        tls.settimeout(5)
        request = b""
        while b"\r\n\r\n" not in request:
            chunk = tls.recv(65536)
            if not chunk:
                return
            request += chunk
        path = request.split(b" ", 2)[1].decode("ascii", "replace")
        origin.requests.append(path)
        body = b"raw origin\n"
        head = b"HTTP/1.1 200 OK\r\n" + b"".join(line + b"\r\n" for line in routes.get(path, []))
        head += b"Content-Type: text/plain\r\nContent-Length: %d\r\n" % len(body)
        tls.sendall(head + b"Connection: close\r\n\r\n" + body)


@contextlib.contextmanager
def raw_tls_origin(
    chain_pem: Path, key_pem: Path, routes: Mapping[str, Sequence[bytes]]
) -> Iterator[RawOrigin]:
    """HTTPS on 127.0.0.1 answering each path with exactly the given header lines (bytes).

    http.server encodes header values itself (latin-1) and refuses CR and LF; this origin
    writes whatever bytes a hostile server would.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(chain_pem), str(key_pem))
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.05)
    origin = RawOrigin(listener.getsockname()[1])
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                sock, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(
                target=_answer, args=(sock, context, routes, origin), daemon=True
            ).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield origin
    finally:
        stop.set()
        thread.join(5)
        listener.close()


# ------------------------------------------------------------------------ certificates


def long_chain(root: pki.CA, length: int) -> list[pki.CA]:
    """``length`` CAs under ``root``, each issuing the next (pki.make_intermediate fixes
    pathLenConstraint 0, so these have none)."""
    now = datetime.datetime.now(datetime.UTC)
    cas = [root]
    for index in range(length):
        key = ec.generate_private_key(ec.SECP256R1())
        parent = cas[-1]
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"Deep CA {index}")]))
            .issuer_name(parent.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(True, False, False, False, False, True, True, False, False),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(parent.key.public_key()),
                critical=False,
            )
            .sign(parent.key, hashes.SHA256())
        )
        cas.append(pki.CA(cert, key))
    return cas[1:]


# ------------------------------------------------------------------------------ checks


def assert_clean_output(proxy: Mitmdump) -> None:
    """No traceback, no addon error, no raw escape character or injected line printed."""
    text = proxy.log_text()
    assert "Traceback" not in text and "Addon error" not in text, text[-3000:]
    assert "\x1b" not in text and "\x00" not in text and "\x07" not in text
    assert not [line for line in text.splitlines() if line.startswith("X-Forged")]


def assert_event_log_is_one_object_per_line(proxy: Mitmdump) -> int:
    lines = proxy.event_log.read_bytes().split(b"\n")
    assert lines[-1] == b""
    for line in lines[:-1]:
        assert line.isascii()
        assert isinstance(json.loads(line), dict)
    return len(lines) - 1


def ok(response: Response) -> bool:
    return response.curl_exit == 0 and response.status == 200


@dataclass
class Run:
    proxy: Mitmdump
    ports: dict[str, int]
    responses: dict[str, Response]
    normal_after: dict[str, Response]
    flows: list[http.HTTPFlow]

    def connection(self, name: str) -> dict[str, Any]:
        port = self.ports[name]
        return self.proxy.wait_for_event(
            "connection", lambda r: r["host"] == name and r["port"] == port
        )


def read_flows(path: Path) -> list[http.HTTPFlow]:
    with path.open("rb") as file:
        return [f for f in mio.FlowReader(file).stream() if isinstance(f, http.HTTPFlow)]


def exercise(
    proxy: Mitmdump, ports: dict[str, int], requests: Sequence[tuple[str, str]], flow_file: Path
) -> Run:
    """Each hostile request, then a normal one through the same proxy."""
    responses, normal_after = {}, {}
    for key, url in requests:
        responses[key] = proxy.curl(url)
        normal_after[key] = proxy.curl(f"https://{NORMAL}/")
    proxy.stop()
    return Run(proxy, ports, responses, normal_after, read_flows(flow_file))


# --------------------------------------------------------------------- the main proxy


@pytest.fixture(scope="module")
def run(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    base = tmp_path_factory.mktemp("e2e-hostile")
    rng = random.Random(9163)
    ts = pki.now_ms() - 60_000
    inter = world.public_inter
    good, good_key = pki.make_leaf(
        inter, hosts=SAN, embedded=[(world.log_a, ts), (world.log_b, ts + 1)]
    )
    plain, plain_key = pki.make_leaf(inter, hosts=SAN)
    other, _ = pki.make_leaf(inter, hosts=SAN)
    deep = long_chain(world.public_root, 49)
    deep_leaf, deep_key = pki.make_leaf(
        deep[-1], hosts=SAN, embedded=[(world.log_a, ts), (world.log_b, ts + 1)]
    )
    strangers = [pki.make_root(f"Stranger {i}").cert for i in range(50)]
    good_chain, good_keyfile = base / "good.pem", base / "good.key"
    good_chain.write_bytes(pki.pem(good, inter.cert))
    good_keyfile.write_bytes(pki.key_pem(good_key))
    preload = base / "preload.json"
    preload.write_text(
        json.dumps([{"host": ENFORCED, "enforce": True, "expires": "2099-01-01T00:00:00Z"}])
    )
    openssl_sites: dict[str, dict[str, Any]] = {
        f"garbage-sct-12.{DOMAIN}": dict(
            serverinfo=pki.serverinfo_pem(rng.randbytes(300)), tls="1.2"
        ),
        f"garbage-sct-13.{DOMAIN}": dict(serverinfo=pki.serverinfo_pem(rng.randbytes(300))),
        ENFORCED: dict(serverinfo=pki.serverinfo_pem(rng.randbytes(300))),
        f"garbage-ocsp.{DOMAIN}": dict(ocsp_der=pki.ocsp_shell(rng.randbytes(300))),
        f"garbage-ocsp-12.{DOMAIN}": dict(ocsp_der=pki.ocsp_shell(rng.randbytes(300)), tls="1.2"),
        f"foreign-ocsp.{DOMAIN}": dict(ocsp_der=pki.ocsp_response(other, inter)),
        f"deep-chain.{DOMAIN}": dict(
            cert=deep_leaf, key=deep_key, chain=[c.cert for c in reversed(deep)]
        ),
        f"strangers.{DOMAIN}": dict(cert=good, key=good_key, chain=[inter.cert, *strangers]),
    }
    flow_file = base / "flows.mitm"
    with contextlib.ExitStack() as stack:
        ports = {
            NORMAL: stack.enter_context(https_origin(good_chain, good_keyfile, {"/": []})).port
        }
        ports[HEADERS] = stack.enter_context(
            raw_tls_origin(good_chain, good_keyfile, HEADER_ROUTES)
        ).port
        for name, site in openssl_sites.items():
            ports[name] = stack.enter_context(
                openssl_origin(
                    base,
                    cert_pem=pki.pem(site.get("cert", plain)),
                    key_pem=pki.key_pem(site.get("key", plain_key)),
                    chain_pem=pki.pem(*site.get("chain", [inter.cert])),
                    tls=site.get("tls", "1.3"),
                    serverinfo=site.get("serverinfo"),
                    ocsp_der=site.get("ocsp_der"),
                )
            )
        proxy = Mitmdump(
            base / "proxy",
            proxy_options(
                world,
                expect_ct_store=":memory:",
                expect_ct_preload=str(preload),
                save_stream_file=str(flow_file),
            ),
            resolve=ports,
        )
        requests = [(path, f"https://{HEADERS}{path}") for path in HEADER_ROUTES]
        requests += [(name, f"https://{name}/index.html") for name in openssl_sites]
        with proxy:
            first = proxy.curl(f"https://{NORMAL}/")
            assert ok(first), first
            yield exercise(proxy, ports, requests, flow_file)


def test_the_proxy_keeps_serving_after_every_hostile_origin(run: Run) -> None:
    assert len(run.normal_after) == len(HEADER_ROUTES) + 8
    failed = {key: r for key, r in run.normal_after.items() if not ok(r)}
    assert not failed
    assert_clean_output(run.proxy)
    normal = [f for f in run.flows if f.request.port == run.ports[NORMAL]]
    assert len(normal) == len(run.normal_after) + 1
    assert all(f.response is not None and f.response.status_code == 200 for f in normal)


def test_hostile_headers_reach_the_client_and_are_recorded(run: Run) -> None:
    for path, lines in HEADER_ROUTES.items():
        response = run.responses[path]
        if path == "/nul":
            assert response.curl_exit == 8, response  # curl refuses NUL in a header
        else:
            assert ok(response), (path, response)
        expected = [
            records.field_text(line[len(E) :].decode("utf-8", "surrogateescape")) for line in lines
        ]
        event = run.proxy.wait_for_event("header", lambda r, v=expected: r["values"] == v)
        assert event["host"] == HEADERS and event["port"] == run.ports[HEADERS]
        assert event["valid"] is (path in VALID), (path, event["error"])
        if path not in VALID:
            assert event["error"] and event["action"] == "ignored"
            assert event["error"].isprintable()
            assert event["why"].startswith("malformed header")


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/big-ansi", "U+001B"),
        ("/thousand-same", "max-age directive (field value 2): appears more than once"),
        ("/ansi", "U+001B is not allowed in a quoted-string"),
        ("/nul", "contains U+0000"),
        ("/bare-cr", "contains U+000D"),
        ("/obs-fold", "contains U+000D"),
        ("/not-utf8", "found U+DCFF"),
    ],
)
def test_invalid_headers_say_what_is_wrong(run: Run, path: str, message: str) -> None:
    values = [
        records.field_text(line[len(E) :].decode("utf-8", "surrogateescape"))
        for line in HEADER_ROUTES[path]
    ]
    event = run.proxy.wait_for_event("header", lambda r: r["values"] == values)
    assert message in event["error"]


def test_invalid_utf8_is_logged_as_escaped_bytes(run: Run) -> None:
    event = run.proxy.wait_for_event("header", lambda r: r["values"] == ["max-age=1, \\xff\\xfe"])
    assert event["valid"] is False
    # Regression: the undecodable bytes reached the flow metadata and mitmproxy could not
    # save the flow (UnicodeEncodeError in its save addon, logged as an Addon error).
    (flow,) = [f for f in run.flows if f.request.path == "/not-utf8"]
    assert flow.metadata["expect_ct"]["header"]["values"] == ["max-age=1, \\xff\\xfe"]


def test_mitmdump_prints_escaped_header_lines(run: Run) -> None:
    text = run.proxy.log_text()
    header_lines = [
        line for line in text.splitlines() if f"{HEADERS}:" in line and " header " in line
    ]
    # A thousand identical-looking fields are one line each response, never one per field.
    assert len(header_lines) == len(HEADER_ROUTES)
    for line in header_lines:
        assert line.isprintable() and len(line) < 600
    for path, escaped in [
        ("/ansi", "header 'max-age=1, x=\"\\x1b[31mRED\\x1b[0m\"'"),
        ("/osc", "header '\\x1b]0;pwned\\x07max-age=1'"),
        ("/nul", "header 'max-age=1\\x00, x'"),
        ("/bare-cr", "header 'max-age=1\\x0dX-Forged: yes'"),
        ("/obs-fold", "header 'max-age=1,\\x0d\\x0a X-Forged: yes'"),
        ("/not-utf8", "header 'max-age=1, \\udcff\\udcfe'"),  # surrogateescape'd bytes
        ("/bidi", "header 'max-age=1, x=\"\\u202eevil\"'"),
    ]:
        assert any(escaped in line for line in header_lines), (path, escaped)


def test_flow_comments_are_one_printable_line_and_flows_were_saved(run: Run) -> None:
    hostile = [f for f in run.flows if f.request.port == run.ports[HEADERS]]
    assert sorted(f.request.path for f in hostile) == sorted(HEADER_ROUTES)
    for flow in hostile:
        assert flow.comment.isprintable() and flow.comment.startswith("CT: compliant")
        header = flow.metadata["expect_ct"]["header"]
        expected = "(invalid)" not in flow.comment
        assert header["valid"] is expected


def test_json_lines_log_stays_one_object_per_line(run: Run) -> None:
    count = assert_event_log_is_one_object_per_line(run.proxy)
    assert count == len(run.proxy.events())
    assert len(run.proxy.events("header")) == len(HEADER_ROUTES)


@pytest.mark.parametrize("name", [f"garbage-sct-12.{DOMAIN}", f"garbage-sct-13.{DOMAIN}"])
def test_garbage_sct_extension_is_a_reason_and_the_request_succeeds(run: Run, name: str) -> None:
    assert ok(run.responses[name])
    event = run.connection(name)
    assert event["sources"]["tls-extension"] == "present"
    assert event["compliant"] is False and event["chain"] == "public"
    assert any(
        r.startswith("SCT list in the TLS extension is malformed: ") for r in event["reasons"]
    )


def test_garbage_sct_extension_blocks_a_known_enforce_host(run: Run) -> None:
    response = run.responses[ENFORCED]
    assert response.status == 502 and b"Blocked by mitmproxy-expect-ct" in response.body
    blocked = run.proxy.wait_for_event("blocked", lambda r: r["host"] == ENFORCED)
    assert "SCT list in the TLS extension is malformed" in blocked["reason"]
    assert blocked["known_host"]["enforce"] is True


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        (f"garbage-ocsp.{DOMAIN}", "stapled OCSP response is malformed: not a DER OCSP response"),
        (
            f"garbage-ocsp-12.{DOMAIN}",
            "stapled OCSP response is malformed: not a DER OCSP response",
        ),
        (
            f"foreign-ocsp.{DOMAIN}",
            "stapled OCSP response is malformed: OCSP response is for serial",
        ),
    ],
)
def test_garbage_or_foreign_staples_are_reasons(run: Run, name: str, reason: str) -> None:
    assert ok(run.responses[name])
    event = run.connection(name)
    assert event["sources"]["ocsp"] == "present"
    assert event["compliant"] is False
    assert any(r.startswith(reason) for r in event["reasons"]), event["reasons"]


def test_fifty_certificate_chain_is_evaluated(run: Run) -> None:
    name = f"deep-chain.{DOMAIN}"
    assert ok(run.responses[name])  # OpenSSL verifies up to depth 100
    event = run.connection(name)
    # The embedded SCTs verify (the issuer was served). The chain is deeper than
    # cryptography's path builder goes, but OpenSSL verified it to the public root, and the
    # class is never stricter than the TLS verification mitmproxy performed (issue 17).
    assert event["compliant"] is True
    assert [s["status"] for s in event["scts"]] == ["valid", "valid"]
    assert event["chain"] == "public"


def test_fifty_unrelated_extra_certificates_change_nothing(run: Run) -> None:
    name = f"strangers.{DOMAIN}"
    assert ok(run.responses[name])
    event = run.connection(name)
    assert (event["chain"], event["compliant"]) == ("public", True)


# ------------------------------------------------------- certificates mitmproxy chokes on


CERT_CASES = ("two-sct-extensions", "sct-extension-not-der")


@pytest.fixture(scope="module")
def cert_run(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    """Leaves with a repeated SCT extension and one whose SCT extension is not DER.

    mitmproxy itself cannot mint a client-facing certificate from such a leaf with its
    default upstream_cert=true (cryptography raises in certs.Cert.altnames, inside
    mitmproxy's tlsconfig addon); see test_mitmproxy_itself_fails_on_such_a_leaf. This proxy
    sets upstream_cert=false so the whole path through the addon can be checked.
    """
    base = tmp_path_factory.mktemp("e2e-hostile-certs")
    ts = pki.now_ms() - 60_000
    inter = world.public_inter
    good, good_key = pki.make_leaf(
        inter, hosts=SAN, embedded=[(world.log_a, ts), (world.log_b, ts + 1)]
    )
    good_chain, good_keyfile = base / "good.pem", base / "good.key"
    good_chain.write_bytes(pki.pem(good, inter.cert))
    good_keyfile.write_bytes(pki.key_pem(good_key))
    (sct_value,) = [
        e.value.public_bytes() for e in good.extensions if e.oid == pki.OID_SCT_EMBEDDED
    ]
    leaves = {
        "two-sct-extensions": pki.with_sct_extensions(inter, [sct_value, sct_value], hosts=SAN),
        "sct-extension-not-der": pki.with_sct_extensions(inter, [b"\x00\x09junk"], hosts=SAN),
    }
    flow_file = base / "flows.mitm"
    with contextlib.ExitStack() as stack:
        ports = {
            NORMAL: stack.enter_context(https_origin(good_chain, good_keyfile, {"/": []})).port
        }
        for case, (leaf, key) in leaves.items():
            ports[f"{case}.{DOMAIN}"] = stack.enter_context(
                openssl_origin(
                    base,
                    cert_pem=pki.pem(leaf),
                    key_pem=pki.key_pem(key),
                    chain_pem=pki.pem(inter.cert),
                )
            )
        proxy = Mitmdump(
            base / "proxy",
            proxy_options(
                world,
                expect_ct_store=":memory:",
                upstream_cert=False,
                save_stream_file=str(flow_file),
            ),
            resolve=ports,
        )
        requests = [(case, f"https://{case}.{DOMAIN}/index.html") for case in CERT_CASES]
        with proxy:
            yield exercise(proxy, ports, requests, flow_file)


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        (
            "two-sct-extensions",
            "embedded SCT list in the certificate is malformed: certificate has 2 SCT list extensions",
        ),
        (
            "sct-extension-not-der",
            "embedded SCT list in the certificate is malformed: SCT extension value is not a DER OCTET STRING",
        ),
    ],
)
def test_hostile_leaves_are_evaluated_and_served(cert_run: Run, case: str, reason: str) -> None:
    assert ok(cert_run.responses[case]), cert_run.responses[case]
    assert ok(cert_run.normal_after[case])
    event = cert_run.connection(f"{case}.{DOMAIN}")
    assert event["compliant"] is False and event["scts"] == []
    assert any(r.startswith(reason) for r in event["reasons"]), event["reasons"]
    assert_clean_output(cert_run.proxy)
    assert_event_log_is_one_object_per_line(cert_run.proxy)


def test_mitmproxy_itself_fails_on_such_a_leaf(world: World, tmp_path: Path) -> None:
    """With mitmproxy's default upstream_cert=true the client connection to such a host fails
    inside mitmproxy's own tlsconfig (not the addon); the addon has recorded the connection
    and the proxy keeps serving everyone else."""
    ts = pki.now_ms() - 60_000
    inter = world.public_inter
    good, good_key = pki.make_leaf(
        inter, hosts=SAN, embedded=[(world.log_a, ts), (world.log_b, ts + 1)]
    )
    (tmp_path / "good.pem").write_bytes(pki.pem(good, inter.cert))
    (tmp_path / "good.key").write_bytes(pki.key_pem(good_key))
    leaf, key = pki.with_sct_extensions(inter, [b"\x00\x09junk"], hosts=SAN)
    name = f"not-der.{DOMAIN}"
    with (
        https_origin(tmp_path / "good.pem", tmp_path / "good.key", {"/": []}) as normal,
        openssl_origin(
            tmp_path,
            cert_pem=pki.pem(leaf),
            key_pem=pki.key_pem(key),
            chain_pem=pki.pem(inter.cert),
        ) as port,
        Mitmdump(
            tmp_path / "proxy",
            proxy_options(world, expect_ct_store=":memory:"),
            resolve={name: port, NORMAL: normal.port},
        ) as proxy,
    ):
        assert proxy.curl(f"https://{name}/index.html").curl_exit != 0
        event = proxy.wait_for_event("connection", lambda r: r["host"] == name)
        assert ok(proxy.curl(f"https://{NORMAL}/"))
    assert any("SCT extension value is not a DER OCTET STRING" in r for r in event["reasons"])
    text = proxy.log_text()
    tracebacks = text.split("Traceback (most recent call last):")[1:]
    assert tracebacks, "mitmproxy fixed certs.Cert.altnames: use the default proxy for these"
    for trace in tracebacks:
        assert "mitmproxy/addons/tlsconfig.py" in trace and "expect_ct" not in trace
