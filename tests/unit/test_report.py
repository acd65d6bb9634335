from __future__ import annotations

import base64
import datetime
import json
import logging
import queue
import re
import socket
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from expect_ct.listeners import ProxyListeners
from expect_ct.listeners import canonical_address
from expect_ct.listeners import is_local_address
from expect_ct.records import rfc3339
from expect_ct.report import EventLog
from expect_ct.report import ReportDeduplicator
from expect_ct.report import ReportOutcome
from expect_ct.report import ReportSender
from expect_ct.report import address_kind
from expect_ct.report import build_report
from expect_ct.report import check_preflight
from expect_ct.report import serialize_report
from expect_ct.sct import SCT
from expect_ct.sct import Source
from support import pki
from support.collector import REPORT_KEYS
from support.collector import Collector
from support.collector import CollectorPKI
from support.collector import RawTLSServer
from support.collector import SilentServer
from support.collector import https_collector
from support.collector import make_collector_pki

UTC = datetime.UTC
RFC3339_MS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
SCT_KEYS = {"version", "status", "source", "serialized_sct"}


# ------------------------------------------------------------------------------- fixtures


@dataclass(frozen=True)
class PKI:
    root: pki.CA
    inter: pki.CA
    leaf: x509.Certificate
    log_a: pki.TestLog
    log_b: pki.TestLog


@pytest.fixture(scope="module")
def tpki() -> PKI:
    root = pki.make_root("Report Test Root")
    inter = pki.make_intermediate(root, "Report Test CA")
    log_a = pki.make_log("Report Log A", "Op A")
    log_b = pki.make_log("Report Log B", "Op B", rsa=True)
    leaf, _ = pki.make_leaf(
        inter,
        hosts=("localhost", "127.0.0.1", "collector.test"),
        embedded=[(log_a, pki.now_ms() - 1000)],
    )
    return PKI(root, inter, leaf, log_a, log_b)


def make_sct(log: pki.TestLog, source: Source, leaf: x509.Certificate, ts: int) -> SCT:
    """An SCT built from its wire bytes by hand (independent of expect_ct.sct's parser)."""
    serialized = pki.sign_sct(
        log, entry_type=pki.X509_ENTRY, signed_entry=pki.x509_signed_entry(leaf), timestamp_ms=ts
    )
    (sig_len,) = struct.unpack(">H", serialized[45:47])
    return SCT(
        version=serialized[0],
        log_id=serialized[1:33],
        timestamp=struct.unpack(">Q", serialized[33:41])[0],
        extensions=b"",
        hash_algorithm=serialized[43],
        signature_algorithm=serialized[44],
        signature=serialized[47 : 47 + sig_len],
        source=source,
        serialized=serialized,
    )


def pem_str(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


# --------------------------------------------------------------------------------- rfc3339


@pytest.mark.parametrize(
    "moment, expected",
    [
        (datetime.datetime(2017, 1, 1, tzinfo=UTC), "2017-01-01T00:00:00.000Z"),
        (datetime.datetime(2019, 10, 4, 1, 5, 38, 621999, tzinfo=UTC), "2019-10-04T01:05:38.621Z"),
        (datetime.datetime(2017, 1, 1, 2, 0), "2017-01-01T02:00:00.000Z"),  # naive = UTC
        (
            datetime.datetime(
                2017, 1, 1, 2, 0, tzinfo=datetime.timezone(datetime.timedelta(hours=2))
            ),
            "2017-01-01T00:00:00.000Z",
        ),
        (datetime.datetime(1601, 1, 1, tzinfo=UTC), "1601-01-01T00:00:00.000Z"),
        (datetime.datetime(9, 1, 1, tzinfo=UTC), "0009-01-01T00:00:00.000Z"),
    ],
)
def test_rfc3339(moment, expected):
    assert rfc3339(moment, milliseconds=True) == expected


# ------------------------------------------------------------------------------ the report


def test_known_host_enforce_report_matches_rfc9163(tpki: PKI):
    now = datetime.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    expires = now + datetime.timedelta(days=30)
    embedded = make_sct(tpki.log_a, Source.EMBEDDED, tpki.leaf, 1000)
    tls = make_sct(tpki.log_b, Source.TLS_EXTENSION, tpki.leaf, 2000)
    ocsp = make_sct(tpki.log_a, Source.OCSP, tpki.leaf, 3000)
    served = [tpki.leaf, tpki.root.cert, tpki.inter.cert]  # disordered, as served
    validated = [tpki.leaf, tpki.inter.cert, tpki.root.cert]
    report = build_report(
        hostname="example.test",
        port=8443,
        date_time=now,
        effective_expiration=expires,
        served_chain=served,
        validated_chain=validated,
        scts=[(embedded, "valid"), (tls, "invalid"), (ocsp, "unknown")],
        failure_mode="enforce",
    )
    assert set(report) == {"expect-ct-report"}
    body = report["expect-ct-report"]
    assert set(body) == REPORT_KEYS
    assert body["date-time"] == "2024-05-06T07:08:09.123Z"
    assert body["effective-expiration-date"] == "2024-06-05T07:08:09.123Z"
    assert RFC3339_MS.match(body["date-time"]) and RFC3339_MS.match(
        body["effective-expiration-date"]
    )
    assert body["hostname"] == "example.test"
    assert body["port"] == 8443 and type(body["port"]) is int
    assert body["scheme"] == "https"
    assert body["failure-mode"] == "enforce"
    assert body["test-report"] is False
    # PEM strings exactly, in the served order and in the validated order (leaf first).
    assert body["served-certificate-chain"] == [pem_str(c) for c in served]
    assert body["validated-certificate-chain"] == [pem_str(c) for c in validated]
    assert body["validated-certificate-chain"][0] == pem_str(tpki.leaf)
    for text, cert in zip(body["served-certificate-chain"], served, strict=True):
        assert x509.load_pem_x509_certificate(text.encode()) == cert
    scts = body["scts"]
    assert [s["source"] for s in scts] == ["embedded", "tls-extension", "ocsp"]
    assert [s["status"] for s in scts] == ["valid", "invalid", "unknown"]
    for entry, sct in zip(scts, (embedded, tls, ocsp), strict=True):
        assert set(entry) == SCT_KEYS
        assert entry["version"] == 1 and type(entry["version"]) is int
        assert base64.b64decode(entry["serialized_sct"], validate=True) == sct.serialized
        assert entry["serialized_sct"] == base64.standard_b64encode(sct.serialized).decode()
        assert entry["serialized_sct"].endswith("=") or len(sct.serialized) % 3 == 0


def test_unknown_host_header_processing_report(tpki: PKI):
    now = datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    report = build_report(
        hostname="new.example",
        port=443,
        date_time=now,
        effective_expiration=None,
        served_chain=[tpki.leaf, tpki.inter.cert],
        validated_chain=[tpki.leaf, tpki.inter.cert, tpki.root.cert],
        scts=[],
        failure_mode="report-only",
        test_report=True,
    )["expect-ct-report"]
    assert set(report) == REPORT_KEYS
    assert report["failure-mode"] == "report-only"
    # No Effective Expiration Date for a host that is not known: the failure time stands in.
    assert report["effective-expiration-date"] == report["date-time"] == "2024-01-02T03:04:05.000Z"
    assert report["scts"] == []
    assert report["test-report"] is True


@pytest.mark.parametrize("source", list(Source))
@pytest.mark.parametrize("status", ["valid", "invalid", "unknown"])
def test_each_sct_source_and_status(tpki: PKI, source, status):
    sct = make_sct(tpki.log_b, source, tpki.leaf, 42)
    report = build_report(
        hostname="h",
        port=1,
        date_time=datetime.datetime.now(UTC),
        effective_expiration=None,
        served_chain=[],
        validated_chain=[],
        scts=[(sct, status)],
        failure_mode="report-only",
    )
    (entry,) = report["expect-ct-report"]["scts"]
    assert entry == {
        "version": 1,
        "status": status,
        "source": source.value,
        "serialized_sct": base64.b64encode(sct.serialized).decode(),
    }
    assert type(entry["source"]) is str


def test_bad_enumerations_are_refused(tpki: PKI):
    sct = make_sct(tpki.log_a, Source.EMBEDDED, tpki.leaf, 1)
    common: dict[str, Any] = dict(
        hostname="h",
        port=1,
        date_time=datetime.datetime.now(UTC),
        effective_expiration=None,
        served_chain=[],
        validated_chain=[],
    )
    with pytest.raises(ValueError, match="failure_mode must be one of enforce, report-only"):
        build_report(**common, scts=[], failure_mode="block")
    with pytest.raises(ValueError, match="SCT status must be one of valid, invalid, unknown"):
        build_report(**common, scts=[(sct, "ok")], failure_mode="enforce")


def test_serialize_report_is_compact_sorted_utf8(tpki: PKI):
    report = build_report(
        hostname="bücher.example\n",
        port=443,
        date_time=datetime.datetime(2017, 1, 1, tzinfo=UTC),
        effective_expiration=datetime.datetime(2017, 1, 1, tzinfo=UTC),
        served_chain=[],
        validated_chain=[],
        scts=[],
        failure_mode="report-only",
    )
    data = serialize_report(report)
    assert data.startswith(b'{"expect-ct-report":{"date-time":"2017-01-01T00:00:00.000Z",')
    assert b" " not in data and b"\n" not in data
    assert data.decode("utf-8") == data.decode("ascii")
    assert json.loads(data) == report
    keys = list(json.loads(data)["expect-ct-report"])
    assert keys == sorted(keys)


# ------------------------------------------------------------------------------- dedupe


def test_dedupe_ttl():
    d = ReportDeduplicator(ttl=60)
    assert d.should_send("a.test", 443, "https://r/", 1000.0)
    assert not d.should_send("a.test", 443, "https://r/", 1059.9)
    assert not d.should_send("A.TEST", 443, "https://r/", 1001.0)  # host names are case-insensitive
    assert d.should_send("a.test", 8443, "https://r/", 1001.0)  # other port
    assert d.should_send("a.test", 443, "https://other/", 1001.0)  # other report-uri
    assert d.should_send("a.test", 443, "https://r/", 1060.0)  # expired
    assert not d.should_send("a.test", 443, "https://r/", 1061.0)


def test_dedupe_accepts_datetimes():
    d = ReportDeduplicator()
    start = datetime.datetime(2024, 1, 1, tzinfo=UTC)
    assert d.should_send("h", 443, "u", start)
    assert not d.should_send("h", 443, "u", start + datetime.timedelta(minutes=59))
    assert d.should_send("h", 443, "u", start + datetime.timedelta(minutes=60))
    assert d.should_send("x", 443, "u")  # default: now


def test_dedupe_is_bounded_and_forgets_the_oldest():
    d = ReportDeduplicator(ttl=3600, max_entries=3)
    for i in range(5):
        assert d.should_send(f"h{i}", 443, "u", 100.0 + i)
    assert len(d) == 3
    assert d.should_send("h0", 443, "u", 110.0)  # evicted, so allowed again
    assert not d.should_send("h4", 443, "u", 110.0)  # still remembered
    # Expired entries are dropped as time passes, not only when the table is full.
    d.should_send("late", 443, "u", 100_000.0)
    assert len(d) == 1


def test_dedupe_rejects_nonsense():
    with pytest.raises(ValueError, match="max_entries"):
        ReportDeduplicator(max_entries=0)
    with pytest.raises(ValueError, match="ttl"):
        ReportDeduplicator(ttl=-1)


# ------------------------------------------------------------------- address classification


@pytest.mark.parametrize(
    "address, kind",
    [
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("172.31.255.255", "private"),
        ("192.168.1.1", "private"),
        ("100.64.0.1", "shared (CGNAT)"),
        ("100.127.255.254", "shared (CGNAT)"),
        ("169.254.169.254", "link-local"),
        ("127.0.0.1", "loopback"),
        ("127.255.0.9", "loopback"),
        ("0.0.0.0", "unspecified"),
        ("0.1.2.3", "this-network"),
        ("224.0.0.1", "multicast"),
        ("239.255.255.250", "multicast"),
        ("255.255.255.255", "broadcast"),
        ("240.0.0.1", "reserved"),
        ("192.0.2.1", "documentation"),
        ("198.18.0.1", "benchmarking"),
        ("::1", "loopback"),
        ("::", "unspecified"),
        ("fe80::1", "link-local"),
        ("fc00::1", "private"),
        ("fd12:3456::1", "private"),
        ("ff02::1", "multicast"),
        ("::ffff:127.0.0.1", "IPv4-mapped loopback"),
        ("::ffff:10.0.0.1", "IPv4-mapped private"),
        ("64:ff9b::a9fe:a9fe", "NAT64 link-local"),
        ("2002:7f00:1::", "6to4 loopback"),
        ("2002:c0a8:0101::1", "6to4 private"),
        ("2001:db8::1", "documentation"),
        ("::127.0.0.1", "reserved"),  # deprecated IPv4-compatible form
        ("4000::1", "reserved"),  # outside 2000::/3
        # Public: allowed (classification only, nothing connects to these).
        ("93.184.216.34", None),
        ("8.8.8.8", None),
        ("172.32.0.1", None),
        ("100.128.0.1", None),
        ("2606:2800:220:1:248:1893:25c8:1946", None),
        ("::ffff:93.184.216.34", None),
        ("64:ff9b::5db8:d822", None),
        ("2002:5db8:d822::1", None),
    ],
)
def test_address_kind(address, kind):
    assert address_kind(address) == kind


def test_address_kind_rejects_non_addresses():
    with pytest.raises(ValueError):
        address_kind("localhost")


# ---------------------------------------------------------------------------- preflight


OK = [(b"Access-Control-Allow-Origin", b"*"), (b"Access-Control-Allow-Headers", b"content-type")]


@pytest.mark.parametrize(
    "status, headers, problem",
    [
        (204, OK, None),
        (
            200,
            [(b"access-control-allow-origin", b"null"), (b"access-control-allow-headers", b"*")],
            None,
        ),
        (
            200,
            [
                (b"Access-Control-Allow-Origin", b" https://x.test , NULL "),
                (b"Access-Control-Allow-Headers", b"X-Foo"),
                (b"Access-Control-Allow-Headers", b"Content-Type"),
            ],
            None,
        ),
        (403, OK, "preflight: HTTP 403"),
        (301, OK, "preflight: HTTP 301"),
        (204, OK[1:], "preflight: Access-Control-Allow-Origin missing"),
        (
            204,
            [(b"Access-Control-Allow-Origin", b"https://another-origin.test"), OK[1]],
            "preflight: Access-Control-Allow-Origin 'https://another-origin.test' allows neither * nor null",
        ),
        (204, OK[:1], "preflight: Access-Control-Allow-Headers missing"),
        (
            204,
            [OK[0], (b"Access-Control-Allow-Headers", b"Not-Content-Type")],
            "preflight: Access-Control-Allow-Headers 'not-content-type' does not allow content-type",
        ),
    ],
)
def test_check_preflight(status, headers, problem):
    assert check_preflight(status, headers) == problem


# --------------------------------------------------------------------- a real HTTPS collector


@pytest.fixture(scope="module")
def server_files(tmp_path_factory: pytest.TempPathFactory) -> CollectorPKI:
    """The same collector as test_e2e_reports.py uses, so both test one implementation."""
    return make_collector_pki(tmp_path_factory.mktemp("collector"))


@pytest.fixture
def collector(server_files: CollectorPKI) -> Iterator[Collector]:
    with https_collector(server_files) as running:
        yield running


@pytest.fixture
def cafile(server_files: CollectorPKI) -> str:
    return str(server_files.root_pem)


BODY = serialize_report(
    build_report(
        hostname="example.test",
        port=443,
        date_time=datetime.datetime(2024, 1, 1, tzinfo=UTC),
        effective_expiration=None,
        served_chain=[],
        validated_chain=[],
        scts=[],
        failure_mode="report-only",
    )
)


def _sender(cafile: str, **kwargs: Any) -> tuple[ReportSender, queue.Queue[ReportOutcome]]:
    outcomes: queue.Queue[ReportOutcome] = queue.Queue()
    kwargs.setdefault("timeout", 5.0)
    sender = ReportSender(cafile=cafile, on_result=outcomes.put, **kwargs)
    return sender, outcomes


def test_end_to_end_preflight_then_post(collector: Collector, cafile: str):
    uri = collector.uri("/report?x=1")
    sender, outcomes = _sender(cafile, allow_private=True)
    try:
        assert sender.submit(uri, BODY, context=("ctx", 1))
        outcome = outcomes.get(timeout=10)
    finally:
        sender.close()
    assert outcome == ReportOutcome(uri, "sent", "HTTP 204", 204, ("ctx", 1))
    options, post = collector.requests()
    assert options.method == "OPTIONS" and options.path == "/report?x=1"
    assert options.headers["origin"] == "null"
    assert options.headers["access-control-request-method"] == "POST"
    assert options.headers["access-control-request-headers"] == "content-type"
    assert options.headers["host"] == f"127.0.0.1:{collector.port}"
    assert options.body == b""
    assert post.method == "POST" and post.path == "/report?x=1"
    assert post.headers["content-type"] == "application/expect-ct-report+json"
    assert post.headers["content-length"] == str(len(BODY))
    assert post.headers["host"] == f"127.0.0.1:{collector.port}"
    assert post.body == BODY
    for request in (options, post):
        assert not {"cookie", "authorization", "proxy-authorization"} & set(request.headers)


def test_private_address_refused_by_default(collector: Collector, cafile: str):
    sender, _ = _sender(cafile)
    try:
        outcome = sender.deliver(collector.uri(), BODY)
    finally:
        sender.close()
    assert outcome.delivery == "failed"
    assert outcome.detail == (
        "refused: 127.0.0.1 is a loopback address (set expect_ct_report_allow_private to allow)"
    )
    assert outcome.status is None
    assert collector.connections == 0 and collector.requests() == []


def test_hostname_resolving_to_a_private_address_is_refused(collector: Collector, cafile: str):
    asked: list[tuple[Any, ...]] = []

    def resolver(host: str, port: int, *args: Any) -> list[tuple[Any, ...]]:
        asked.append((host, port))
        assert host == "collector.test"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]

    refused, _ = _sender(cafile, resolver=resolver)
    allowed, _ = _sender(cafile, resolver=resolver, allow_private=True)
    try:
        outcome = refused.deliver(collector.uri(host="collector.test"), BODY)
        assert outcome.detail.startswith("refused: 127.0.0.1 is a loopback address")
        assert collector.connections == 0
        # Allowed: the checked address itself is used, the name only for TLS and Host.
        asked.clear()
        outcome = allowed.deliver(collector.uri(host="collector.test"), BODY)
        assert outcome.delivery == "sent", outcome
        assert asked == [("collector.test", collector.port)]  # resolved exactly once
        assert collector.requests()[-1].headers["host"] == f"collector.test:{collector.port}"
    finally:
        refused.close()
        allowed.close()


def test_one_private_address_among_public_ones_refuses(cafile: str):
    def resolver(host: str, port: int, *args: Any) -> list[tuple[Any, ...]]:
        return [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", port)),
            (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("::ffff:10.0.0.1", port, 0, 0)),
        ]

    sender, _ = _sender(cafile, resolver=resolver)
    try:
        outcome = sender.deliver("https://mixed.test/r", BODY)
    finally:
        sender.close()
    assert outcome.detail.startswith("refused: ::ffff:10.0.0.1 is an IPv4-mapped private address")


def test_unresolvable_host(cafile: str):
    def resolver(host: str, port: int, *args: Any) -> list[tuple[Any, ...]]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    sender, _ = _sender(cafile, resolver=resolver)
    try:
        outcome = sender.deliver("https://nowhere.test/r", BODY)
    finally:
        sender.close()
    assert outcome.delivery == "failed"
    assert outcome.detail.startswith("cannot resolve nowhere.test")


@pytest.mark.parametrize(
    "uri, detail",
    [
        ("http://127.0.0.1/report", "refused: not https"),
        ("ftp://127.0.0.1/report", "refused: not https"),
        ("//127.0.0.1/report", "refused: not https"),
        ("https:///nohost", "refused: invalid report-uri: no host"),
        ("https://127.0.0.1:99999/", "refused: invalid report-uri"),
    ],
)
def test_bad_report_uris_refused(collector: Collector, cafile: str, uri, detail):
    sender, _ = _sender(cafile, allow_private=True)
    try:
        outcome = sender.deliver(uri, BODY)
    finally:
        sender.close()
    assert outcome.delivery == "failed"
    assert outcome.detail.startswith(detail)
    assert collector.connections == 0


def test_never_sends_to_the_proxy_itself(collector: Collector, cafile: str):
    for forbidden in [
        ("127.0.0.1", collector.port),
        ("0.0.0.0", collector.port),
        ("localhost", collector.port),
    ]:
        sender, _ = _sender(cafile, allow_private=True, forbidden=[forbidden])
        try:
            outcome = sender.deliver(collector.uri(), BODY)
        finally:
            sender.close()
        assert outcome.detail == f"refused: 127.0.0.1 port {collector.port} is the proxy itself"
    assert collector.connections == 0


@pytest.mark.parametrize(
    "spelling",
    ["[::ffff:127.0.0.1]", "0.0.0.0", "[::FFFF:7f00:1]", "localhost", "127.0.0.1"],
)
def test_every_spelling_of_the_proxy_is_refused_before_connecting(
    collector: Collector, cafile: str, spelling: str
):
    """Issue 17, attack 8: other spellings of the proxy's own address (127.0.0.1 here)."""
    uri = f"https://{spelling}:{collector.port}/report"
    # Control: without the guard this spelling really reaches the listener on 127.0.0.1.
    before = collector.connections
    sender, _ = _sender(cafile, allow_private=True)
    try:
        sender.deliver(uri, BODY)
    finally:
        sender.close()
    assert collector.connections > before, f"{spelling} does not reach 127.0.0.1 here"

    before = collector.connections
    sender, _ = _sender(cafile, allow_private=True, forbidden=[("127.0.0.1", collector.port)])
    try:
        outcome = sender.deliver(uri, BODY)
    finally:
        sender.close()
    assert outcome.delivery == "failed"
    assert outcome.detail.endswith(f"port {collector.port} is the proxy itself"), outcome
    assert collector.connections == before


def _one_local_interface_address() -> str | None:
    """A non-loopback address of this host, if it has one (found without sending a packet)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # UDP connect only picks a route
        except OSError:
            return None
        address = str(probe.getsockname()[0])
    return None if address.startswith("127.") or address == "0.0.0.0" else address


@pytest.mark.parametrize("listen_host", ["", "0.0.0.0", "::", "[::]", "*"])
def test_a_proxy_on_an_unspecified_address_listens_on_every_local_address(listen_host: str):
    listeners = ProxyListeners([(listen_host, 8080)])
    for target in ("127.0.0.1", "127.0.0.2", "::1", "::ffff:127.0.0.1", "0.0.0.0", "::"):
        assert listeners.reaches_proxy(target, 8080), target
        assert not listeners.reaches_proxy(target, 8081), target
    # A public address that is not this host's: another machine, not a loop.
    assert not listeners.reaches_proxy("192.0.2.77", 8080)
    assert not listeners.reaches_proxy("2001:db8::77", 8080)
    own = _one_local_interface_address()
    if own is not None:
        assert listeners.reaches_proxy(own, 8080), own


def test_a_proxy_on_one_address_is_reached_only_there_or_through_this_host():
    listeners = ProxyListeners([("127.0.0.1", 8080), ("[::1]", 8443)])
    assert listeners.reaches_proxy("127.0.0.1", 8080)
    assert listeners.reaches_proxy("::ffff:127.0.0.1", 8080)  # IPv4-mapped
    assert listeners.reaches_proxy("0.0.0.0", 8080)  # "this host" as a target
    assert listeners.reaches_proxy("::", 8443)
    assert listeners.reaches_proxy("::1", 8443)
    # A listener bound to 127.0.0.1 does not accept connections to 127.0.0.2 or ::1.
    assert not listeners.reaches_proxy("127.0.0.2", 8080)
    assert not listeners.reaches_proxy("::1", 8080)
    assert not listeners.reaches_proxy("127.0.0.1", 8443)


def test_listeners_given_by_name_or_in_odd_spellings():
    def resolver(host: str, port: int, *args: Any) -> list[tuple[Any, ...]]:
        assert host == "localhost"
        return [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port)),
            (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("::1", port, 0, 0)),
        ]

    listeners = ProxyListeners(
        [("localhost", 8080), ("::ffff:127.0.0.2", 8081), ("fe80::1%lo", 8082)], resolver
    )
    assert listeners.reaches_proxy("127.0.0.1", 8080)
    assert listeners.reaches_proxy("::1", 8080)
    assert listeners.reaches_proxy("127.0.0.2", 8081)
    assert listeners.reaches_proxy("fe80::1", 8082)


def test_an_unresolvable_listener_name_guards_its_port_on_every_local_address(caplog):
    def resolver(*args: Any) -> list[tuple[Any, ...]]:
        raise socket.gaierror("no such host")

    with caplog.at_level(logging.WARNING, logger="expect_ct.report"):
        listeners = ProxyListeners([("proxy.invalid", 8080)], resolver)
    assert "cannot resolve the proxy address proxy.invalid" in caplog.text
    assert listeners.reaches_proxy("127.0.0.1", 8080)
    assert not listeners.reaches_proxy("127.0.0.1", 8081)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("::ffff:127.0.0.1", "127.0.0.1"),
        ("[::ffff:7f00:1]", "127.0.0.1"),
        ("[2001:DB8::1]", "2001:db8::1"),
        ("fe80::1%eth0", "fe80::1"),
        ("0.0.0.0", "0.0.0.0"),
    ],
)
def test_canonical_address(given: str, expected: str):
    assert str(canonical_address(given)) == expected


def test_is_local_address():
    import ipaddress

    for local in ("127.0.0.1", "127.1.2.3", "::1", "0.0.0.0", "::", "::ffff:127.0.0.1"):
        assert is_local_address(ipaddress.ip_address(local)), local
    assert not is_local_address(ipaddress.ip_address("192.0.2.77"))


@pytest.mark.parametrize(
    "status, headers, detail",
    [
        (
            204,
            [("Access-Control-Allow-Headers", "content-type")],
            "preflight: Access-Control-Allow-Origin missing",
        ),
        (
            204,
            [
                ("Access-Control-Allow-Origin", "*"),
                ("Access-Control-Allow-Headers", "Not-Content-Type"),
            ],
            "preflight: Access-Control-Allow-Headers 'not-content-type' does not allow content-type",
        ),
        (
            403,
            [("Access-Control-Allow-Origin", "*"), ("Access-Control-Allow-Headers", "*")],
            "preflight: HTTP 403",
        ),
    ],
)
def test_bad_preflight_stops_the_post(collector: Collector, cafile: str, status, headers, detail):
    collector.preflight_status = status
    collector.preflight_headers = headers
    sender, _ = _sender(cafile, allow_private=True)
    try:
        outcome = sender.deliver(collector.uri(), BODY)
    finally:
        sender.close()
    assert (outcome.delivery, outcome.detail, outcome.status) == ("failed", detail, status)
    assert [r.method for r in collector.requests()] == ["OPTIONS"]


def test_post_rejected(collector: Collector, cafile: str):
    collector.post_status = 400
    sender, _ = _sender(cafile, allow_private=True)
    try:
        outcome = sender.deliver(collector.uri(), BODY)
    finally:
        sender.close()
    assert (outcome.delivery, outcome.detail, outcome.status) == ("failed", "HTTP 400", 400)
    assert [r.method for r in collector.requests()] == ["OPTIONS", "POST"]


def test_untrusted_collector_certificate(collector: Collector, tmp_path: Path):
    other = tmp_path / "other.pem"
    other.write_bytes(pki.pem(pki.make_root("Not The Collector's Root").cert))
    sender, _ = _sender(str(other), allow_private=True)
    try:
        outcome = sender.deliver(collector.uri(), BODY)
    finally:
        sender.close()
    assert outcome.delivery == "failed"
    assert outcome.detail.startswith("TLS certificate verification failed")
    assert collector.requests() == []


def test_collector_name_mismatch(collector: Collector, cafile: str):
    # The certificate covers localhost/127.0.0.1/collector.test, not this name.
    def resolver(host: str, port: int, *args: Any) -> list[tuple[Any, ...]]:
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]

    sender, _ = _sender(cafile, allow_private=True, resolver=resolver)
    try:
        outcome = sender.deliver(f"https://elsewhere.test:{collector.port}/", BODY)
    finally:
        sender.close()
    assert outcome.detail.startswith("TLS certificate verification failed")
    assert collector.requests() == []


@pytest.mark.parametrize(
    "reply, detail",
    [
        (b"", "connection closed before a response"),
        (b"garbage\r\n\r\n", "HTTP protocol error"),
        (b"HTTP/1.1 204 No Content\r\nBad Header\r\n\r\n", "HTTP protocol error"),
        # Headers beyond the size cap are refused, not buffered without end.
        (b"HTTP/1.1 200 OK\r\nX: " + b"a" * 100_000 + b"\r\n\r\n", "HTTP protocol error"),
    ],
)
def test_collector_speaking_nonsense(server_files, cafile: str, reply, detail):
    server = RawTLSServer(server_files, reply)
    sender, _ = _sender(cafile, allow_private=True)
    try:
        outcome = sender.deliver(f"https://127.0.0.1:{server.port}/", BODY)
    finally:
        sender.close()
        server.close()
    assert outcome.delivery == "failed"
    assert outcome.detail.startswith(detail)


def test_informational_response_and_large_body_are_fine(server_files, cafile: str):
    reply = (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nAccess-Control-Allow-Origin: *\r\n"
        b"Access-Control-Allow-Headers: *\r\nContent-Length: 1000000\r\n\r\n" + b"z" * 1_000_000
    )
    server = RawTLSServer(server_files, reply)
    sender, _ = _sender(cafile, allow_private=True)
    try:
        outcome = sender.deliver(f"https://127.0.0.1:{server.port}/", BODY)
    finally:
        sender.close()
        server.close()
    assert (outcome.delivery, outcome.detail) == ("sent", "HTTP 200")


@pytest.mark.parametrize(
    "answer, detail",
    [
        ([], "cannot resolve weird.test: no addresses"),
        (
            [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("not-an-ip", 443))],
            "refused: resolver returned",
        ),
    ],
)
def test_odd_resolver_answers(cafile: str, answer, detail):
    sender, _ = _sender(cafile, resolver=lambda *args: answer)
    try:
        outcome = sender.deliver("https://weird.test/", BODY)
    finally:
        sender.close()
    assert outcome.detail.startswith(detail)


def test_invalid_idna_host(cafile: str):
    sender, _ = _sender(cafile)
    try:
        outcome = sender.deliver("https://" + "a" * 64 + ".test/", BODY)
    finally:
        sender.close()
    assert outcome.detail.startswith("refused: invalid host name")


def test_unexpected_errors_become_outcomes(cafile: str, caplog):
    def resolver(*args: Any) -> list[tuple[Any, ...]]:
        raise RuntimeError("resolver bug")

    sender, outcomes = _sender(cafile, resolver=resolver)
    try:
        with caplog.at_level(logging.ERROR, logger="expect_ct.report"):
            assert sender.submit("https://bug.test/", BODY)
            outcome = outcomes.get(timeout=10)
    finally:
        sender.close()
    assert (outcome.delivery, outcome.detail) == ("failed", "internal error: resolver bug")
    assert "unexpected error" in caplog.text


def test_sender_arguments(cafile: str, caplog):
    with pytest.raises(ValueError, match="timeout must be positive"):
        ReportSender(timeout=0)

    def resolver(*args: Any) -> list[tuple[Any, ...]]:
        raise socket.gaierror("no such proxy host")

    with caplog.at_level(logging.WARNING, logger="expect_ct.report"):
        ReportSender(cafile=cafile, forbidden=[("proxy.invalid", 8080)], resolver=resolver).close()
    assert "cannot resolve the proxy address proxy.invalid" in caplog.text


def test_hung_collector_times_out(cafile: str):
    silent = SilentServer()
    sender, _ = _sender(cafile, allow_private=True, timeout=0.5)
    try:
        started = time.monotonic()
        outcome = sender.deliver(f"https://127.0.0.1:{silent.port}/", BODY)
        elapsed = time.monotonic() - started
    finally:
        sender.close()
        silent.close()
    assert (outcome.delivery, outcome.detail) == ("failed", "timeout after 0.5s")
    assert 0.4 < elapsed < 3


def test_collector_resets_the_connection(cafile: str):
    rude = SilentServer(reset=True)
    sender, _ = _sender(cafile, allow_private=True, timeout=2)
    try:
        outcome = sender.deliver(f"https://127.0.0.1:{rude.port}/", BODY)
    finally:
        sender.close()
        rude.close()
    assert outcome.delivery == "failed"
    assert outcome.detail == "connection reset" or outcome.detail.startswith("TLS error")


def test_connection_refused(cafile: str):
    closed = socket.create_server(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    sender, _ = _sender(cafile, allow_private=True)
    try:
        outcome = sender.deliver(f"https://127.0.0.1:{port}/", BODY)
    finally:
        sender.close()
    assert (outcome.delivery, outcome.detail) == ("failed", "connection refused")


def test_queue_full_never_blocks(cafile: str):
    silent = SilentServer()
    sender, outcomes = _sender(cafile, allow_private=True, timeout=30, queue_size=1)
    uri = f"https://127.0.0.1:{silent.port}/"
    try:
        assert sender.submit(uri, BODY, context=1)
        silent.wait_accepted(deadline=5)  # the worker is now stuck in the first delivery
        assert sender.submit(uri, BODY, context=2)  # fills the queue
        started = time.monotonic()
        assert not sender.submit(uri, BODY, context=3)
        assert not sender.submit(uri, BODY, context=4)
        elapsed = time.monotonic() - started
        assert sender.dropped == 2
        full = [outcomes.get_nowait(), outcomes.get_nowait()]
        assert [(o.detail, o.context) for o in full] == [("queue full", 3), ("queue full", 4)]
        assert outcomes.empty()  # the first report is still in flight
        # Returned while the worker is stuck for up to 30 s: far below that.
        assert elapsed < 30 / 10
        sender.close(timeout=0.1)
        assert outcomes.get(timeout=5).context == 2  # the queued one: shut down
    finally:
        silent.close()  # frees the worker: its delivery fails
    first = outcomes.get(timeout=10)
    assert first.context == 1 and first.delivery == "failed"
    assert not sender.submit(uri, BODY, context=5)
    assert outcomes.get_nowait().detail == "shut down"


def test_close_fails_pending_reports(cafile: str):
    silent = SilentServer()
    sender, outcomes = _sender(cafile, allow_private=True, timeout=30, queue_size=5)
    uri = f"https://127.0.0.1:{silent.port}/"
    try:
        sender.submit(uri, BODY, context="in flight")
        silent.wait_accepted(deadline=5)
        for i in range(3):
            assert sender.submit(uri, BODY, context=i)
        sender.close(timeout=0.1)
        shut = [outcomes.get(timeout=5) for _ in range(3)]
        assert [(o.delivery, o.detail, o.context) for o in shut] == [
            ("failed", "shut down", i) for i in range(3)
        ]
        sender.close()  # idempotent
    finally:
        silent.close()
    assert outcomes.get(timeout=10).context == "in flight"


def test_worker_survives_a_failing_callback(collector: Collector, cafile: str, caplog):
    results: list[ReportOutcome] = []
    done = threading.Event()

    def callback(outcome: ReportOutcome) -> None:
        results.append(outcome)
        if len(results) == 1:
            raise RuntimeError("callback bug")
        done.set()

    sender = ReportSender(cafile=cafile, allow_private=True, on_result=callback)
    try:
        with caplog.at_level(logging.ERROR, logger="expect_ct.report"):
            sender.submit("http://insecure.test/", BODY)
            sender.submit(collector.uri(), BODY)
            assert done.wait(10)
    finally:
        sender.close()
    assert [r.delivery for r in results] == ["failed", "sent"]
    assert "callback failed" in caplog.text


def test_ignores_proxy_environment(collector: Collector, cafile: str, monkeypatch):
    # A proxy that does not exist: if the sender used it, delivery would fail.
    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    sender, _ = _sender(cafile, allow_private=True)
    try:
        assert sender.deliver(collector.uri(), BODY).delivery == "sent"
    finally:
        sender.close()


# -------------------------------------------------------------------------------- event log


def test_event_log_lines(tmp_path: Path):
    path = tmp_path / "events.jsonl"
    moment = datetime.datetime(2024, 2, 3, 4, 5, 6, tzinfo=UTC)
    log = EventLog(path, clock=lambda: moment)
    log.write("report", "example.test", 443, delivery="sent", body={"expect-ct-report": {}})
    log.write("header", "example.test", 8443, valid=False, when=moment, raw=b"\x00\x01", tags={"a"})
    log.close()
    log.write("late", "example.test", 1)  # ignored after close
    lines = path.read_text().splitlines()
    assert [json.loads(line) for line in lines] == [
        {
            "time": "2024-02-03T04:05:06.000Z",
            "event": "report",
            "host": "example.test",
            "port": 443,
            "delivery": "sent",
            "body": {"expect-ct-report": {}},
        },
        {
            "time": "2024-02-03T04:05:06.000Z",
            "event": "header",
            "host": "example.test",
            "port": 8443,
            "valid": False,
            "when": "2024-02-03T04:05:06.000Z",
            "raw": "AAE=",
            "tags": ["a"],
        },
    ]
    # Appends.
    again = EventLog(path)
    again.write("connection", "h", 1)
    again.close()
    assert len(path.read_text().splitlines()) == 3
    assert RFC3339_MS.match(json.loads(path.read_text().splitlines()[2])["time"])


def test_event_log_escapes_control_characters(tmp_path: Path):
    path = tmp_path / "events.jsonl"
    log = EventLog(path)
    evil = 'evil.test\n{"event": "forged"}\r\x00\u2028'
    log.write("header", evil, 443, values=["a\nb"])
    log.close()
    data = path.read_bytes()
    assert data.count(b"\n") == 1 and data.endswith(b"\n")
    assert data.isascii()
    assert json.loads(data)["host"] == evil


def test_event_log_concurrent_writes_do_not_interleave(tmp_path: Path):
    path = tmp_path / "events.jsonl"
    log = EventLog(path)
    payload = "x" * 20_000  # larger than a write buffer

    def writer(n: int) -> None:
        for i in range(50):
            log.write("connection", f"host{n}", i, payload=payload)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    log.close()
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(records) == 400
    assert all(r["payload"] == payload for r in records)
    for n in range(8):
        assert [r["port"] for r in records if r["host"] == f"host{n}"] == list(range(50))


def test_event_log_unwritable_path_warns_once(tmp_path: Path, caplog):
    regular = tmp_path / "file"
    regular.write_text("")
    with caplog.at_level(logging.WARNING, logger="expect_ct.report"):
        log = EventLog(regular / "events.jsonl")  # a path under a regular file
        log.write("connection", "h", 1)
        log.write("connection", "h", 2)
        log.close()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "cannot write the event log" in warnings[0].getMessage()
    assert log.errors == 3  # opening at construction, then once per write


def test_event_log_refuses_to_overwrite_time(tmp_path: Path):
    log = EventLog(tmp_path / "e.jsonl")
    with pytest.raises(TypeError, match="time"):
        log.write("x", "h", 1, time="never")
    log.close()


def test_event_log_encoded_fields_give_the_same_line_as_write(tmp_path: Path):
    moment = datetime.datetime(2024, 2, 3, 4, 5, 6, tzinfo=UTC)
    fields = {"scts": [{"status": "valid"}], "evil": 'x\n{"event": "forged"}\u2028', "raw": b"\0"}
    direct = EventLog(tmp_path / "direct.jsonl", clock=lambda: moment)
    direct.write("connection", "h.test", 443, **fields)
    direct.close()
    encoded = EventLog(tmp_path / "encoded.jsonl", clock=lambda: moment)
    once = EventLog.encode_fields(fields)
    encoded.write_encoded("connection", "h.test", 443, once)
    encoded.write_encoded("blocked", "h.test", 443, EventLog.encode_fields({}))
    encoded.close()
    first, second = (tmp_path / "encoded.jsonl").read_text().splitlines()
    assert first == (tmp_path / "direct.jsonl").read_text().rstrip("\n")
    assert json.loads(first)["evil"] == fields["evil"]
    assert json.loads(second) == {
        "time": "2024-02-03T04:05:06.000Z",
        "event": "blocked",
        "host": "h.test",
        "port": 443,
    }


@pytest.mark.parametrize("name", ["time", "event", "host", "port"])
def test_event_log_fields_cannot_replace_the_envelope(name: str):
    with pytest.raises(TypeError, match=name):
        EventLog.encode_fields({name: "forged"})
