"""End to end: the SCT engine and handshake SCT capture through a real mitmdump.

A real mitmdump loads the addon as a ``-s`` script (what ``Mitmdump`` always does), real
origins serve certificates and SCTs on 127.0.0.1, and real clients (curl, ``http.client``
through CONNECT, an aioquic HTTP/3 client) go through it. The tests read the JSON-lines
``connection`` events and the flows mitmdump saved with ``save_stream_file`` (read back with
``mitmproxy.io.FlowReader``, which also proves the metadata survives a ``.mitm`` file).

Each module fixture drives all of its traffic, stops mitmdump (so the flow file is complete)
and hands the tests what was recorded; the tests then only look.

* Python ``ssl`` origins: compliant, non-compliant and private chains, a leaf whose embedded
  SCTs were signed for another certificate, an SCT from a log missing from the log list, a
  180-day certificate (Chrome: 2 SCTs suffice; Apple counts 181 days inclusive and wants 3),
  and a keep-alive origin (several requests on one upstream connection).
* ``openssl s_server`` origins (TLS 1.2 and 1.3): embedded + TLS extension + stapled OCSP;
  TLS extension only; OCSP only; no SCTs; TLS-extension and OCSP SCTs signed for another leaf.
  Under ``chrome`` (Chrome 148+) OCSP SCTs are verified but never counted (C4); the stapling
  origins are visited again through a ``chrome-pre148`` and an ``apple`` mitmdump, which count
  them.
* HTTP/3: mitmdump in ``reverse:http3://`` mode in front of an aioquic origin; only embedded
  SCTs can be seen, and the event says the handshake sources were "not observed".
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.client import HTTPSConnection
from pathlib import Path
from typing import Any

import pytest
from aioquic.asyncio import QuicConnectionProtocol
from aioquic.asyncio import connect
from aioquic.asyncio import serve
from aioquic.h3.connection import H3_ALPN
from aioquic.h3.connection import H3Connection
from aioquic.h3.events import DataReceived
from aioquic.h3.events import H3Event
from aioquic.h3.events import HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import ProtocolNegotiated
from aioquic.quic.events import QuicEvent
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import serialization
from mitmproxy import certs
from mitmproxy import http
from mitmproxy import io as mitmio
from mitmproxy.test import taddons
from mitmproxy.test import tflow

from expect_ct.addon import ExpectCT
from support import pki
from support.httpsorigin import Origin as HttpsOrigin
from support.httpsorigin import https_origin
from support.origins import openssl_origins
from support.proxy import ADDON_SCRIPT
from support.proxy import Mitmdump
from support.proxy import Response
from support.world import World
from support.world import proxy_options

Event = dict[str, Any]
# What EventLog adds around the addon's own connection record (see report.EventLog.write).
ENVELOPE = ("time", "event", "host", "port")
NOT_OBSERVED = {"embedded": "observed", "tls-extension": "not observed", "ocsp": "not observed"}


# --------------------------------------------------------------------------- PKI helpers


def sha256_hex(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


def leaf_with_foreign_embedded_scts(
    issuer: pki.CA, donor: x509.Certificate, logs: list[tuple[pki.TestLog, int]]
) -> tuple[x509.Certificate, pki.PrivateKey]:
    """A leaf whose embedded SCTs are real log signatures, but over ``donor``'s precertificate
    TBS (RFC 6962 section 3.2 precert_entry), not over this certificate's."""
    entry = pki.precert_signed_entry(issuer.cert, donor.tbs_certificate_bytes)
    scts = [
        pki.sign_sct(log, entry_type=pki.PRECERT_ENTRY, signed_entry=entry, timestamp_ms=ts)
        for log, ts in logs
    ]
    key = pki.ec.generate_private_key(pki.ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    cert = (
        x509.CertificateBuilder()
        .subject_name(donor.subject)
        .issuer_name(issuer.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=90))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()),
            critical=False,
        )
        .add_extension(
            x509.UnrecognizedExtension(
                pki.OID_SCT_EMBEDDED, pki.der_octet_string(pki.sct_list(scts))
            ),
            critical=False,
        )
        .sign(issuer.key, hashes.SHA256())
    )
    return cert, key


def write_site(
    base: Path, name: str, cert: x509.Certificate, key: pki.PrivateKey, issuer: pki.CA
) -> tuple[Path, Path]:
    chain, keyfile = base / f"{name}.chain.pem", base / f"{name}.key.pem"
    chain.write_bytes(pki.pem(cert, issuer.cert))
    keyfile.write_bytes(pki.key_pem(key))
    return chain, keyfile


def only_event(events: list[Event], port: int) -> Event:
    matching = [e for e in events if e["port"] == port]
    assert len(matching) == 1, f"expected one connection event for port {port}: {matching}"
    return matching[0]


def sct_summary(event: Event) -> list[tuple[str, str, bool]]:
    return [(s["source"], s["status"], s["counted"]) for s in event["scts"]]


def read_flows(path: Path) -> list[http.HTTPFlow]:
    with path.open("rb") as file:
        flows = list(mitmio.FlowReader(file).stream())
    assert all(isinstance(f, http.HTTPFlow) for f in flows)
    return flows  # type: ignore[return-value]


# ------------------------------------------------------- part 1: Python ssl origins, curl


@dataclass
class BasicRun:
    """Everything one mitmdump (chrome policy) and one (apple policy) recorded."""

    ports: dict[str, int]
    certs: dict[str, x509.Certificate]
    responses: dict[str, Response]
    events: list[Event]
    apple_events: list[Event]
    flows: list[http.HTTPFlow]
    keepalive: HttpsOrigin
    keepalive_statuses: list[list[int]]
    log_text: str


def requests_on_one_connection(proxy: Mitmdump, port: int, paths: list[str]) -> list[int]:
    """Several requests on one client connection (CONNECT, then keep-alive HTTP/1.1)."""
    context = ssl.create_default_context(cafile=str(proxy.ca_cert))
    client = HTTPSConnection("127.0.0.1", proxy.port, context=context, timeout=10)
    client.set_tunnel("localhost", port)
    statuses = []
    try:
        for path in paths:
            client.request("GET", path)
            response = client.getresponse()
            response.read()
            assert not response.will_close, "the origin closed the keep-alive connection"
            statuses.append(response.status)
    finally:
        client.close()
    return statuses


@pytest.fixture(scope="module")
def basic(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BasicRun]:
    base = tmp_path_factory.mktemp("e2e-ct-basic")
    ts = pki.now_ms() - 60_000
    unknown_log = pki.make_log("Gamma Log (not in the log list)", "Gamma")
    donor, _ = pki.make_leaf(world.public_inter)
    tampered, tampered_key = leaf_with_foreign_embedded_scts(
        world.public_inter, donor, [(world.log_a, ts), (world.log_b, ts + 1)]
    )
    unknown, unknown_key = pki.make_leaf(
        world.public_inter, embedded=[(world.log_a, ts), (unknown_log, ts + 1)]
    )
    start = datetime.datetime.now(datetime.UTC).replace(microsecond=0) - datetime.timedelta(hours=1)
    day180, day180_key = pki.make_leaf(
        world.public_inter,
        not_before=start,
        not_after=start + datetime.timedelta(days=180),
        embedded=[(world.log_a, ts), (world.log_b, ts + 1)],
    )
    sites = {
        "compliant": (world.compliant.chain_pem, world.compliant.key_pem),
        "non_compliant": (world.non_compliant.chain_pem, world.non_compliant.key_pem),
        "private": (world.private.chain_pem, world.private.key_pem),
        "tampered": write_site(base, "tampered", tampered, tampered_key, world.public_inter),
        "unknown": write_site(base, "unknown", unknown, unknown_key, world.public_inter),
        "day180": write_site(base, "day180", day180, day180_key, world.public_inter),
    }
    leaf_certs: dict[str, x509.Certificate] = {
        "compliant": world.compliant.cert,  # type: ignore[dict-item]
        "non_compliant": world.non_compliant.cert,  # type: ignore[dict-item]
        "private": world.private.cert,  # type: ignore[dict-item]
        "tampered": tampered,
        "unknown": unknown,
        "day180": day180,
    }
    flow_file = base / "flows.mitm"
    with contextlib.ExitStack() as stack:
        origins = {
            name: stack.enter_context(https_origin(chain, key))
            for name, (chain, key) in sites.items()
        }
        keepalive = stack.enter_context(
            https_origin(world.compliant.chain_pem, world.compliant.key_pem)
        )
        ports = {name: origin.port for name, origin in origins.items()}
        proxy = Mitmdump(
            base / "chrome",
            proxy_options(world, expect_ct_store=":memory:", save_stream_file=str(flow_file)),
        )
        with proxy:
            responses = {
                name: proxy.curl(origin.url(f"/{name}")) for name, origin in origins.items()
            }
            keepalive_statuses = [
                requests_on_one_connection(proxy, keepalive.port, ["/one", "/two", "/three"]),
                requests_on_one_connection(proxy, keepalive.port, ["/again"]),
            ]
        events = proxy.events("connection")
        log_text = proxy.log_text()
        apple = Mitmdump(
            base / "apple",
            proxy_options(world, expect_ct_store=":memory:", expect_ct_policy="apple"),
        )
        with apple:
            for name in ("compliant", "day180"):
                assert apple.curl(origins[name].url("/")).status == 200
        yield BasicRun(
            ports=ports,
            certs=leaf_certs,
            responses=responses,
            events=events,
            apple_events=apple.events("connection"),
            flows=read_flows(flow_file),
            keepalive=keepalive,
            keepalive_statuses=keepalive_statuses,
            log_text=log_text,
        )


def flows_to(run: BasicRun, name: str) -> list[http.HTTPFlow]:
    return [f for f in run.flows if f.request.port == run.ports[name]]


def the_flow(run: BasicRun, name: str) -> http.HTTPFlow:
    (flow,) = flows_to(run, name)
    return flow


def test_every_origin_answered_through_the_proxy(basic: BasicRun) -> None:
    # Recording is passive: with expect_ct_enforce=header and no Known Hosts nothing is blocked.
    for name, response in basic.responses.items():
        assert (response.status, response.curl_exit) == (200, 0), (name, response.stderr)
        assert response.body == f"hello from /{name}\n".encode()


def test_compliant_chain_event_explains_each_sct(basic: BasicRun, world: World) -> None:
    event = only_event(basic.events, basic.ports["compliant"])
    assert event["host"] == "localhost"
    assert event["chain"] == "public"
    assert event["compliant"] is True and event["reasons"] == []
    assert event["policy"] == "chrome"
    assert event["tls_version"] == "TLSv1.3"
    cert = world.compliant.cert
    assert isinstance(cert, x509.Certificate)
    assert event["certificate"] == {
        "sha256": sha256_hex(cert),
        "subject": cert.subject.rfc4514_string(),
        "issuer": world.public_inter.cert.subject.rfc4514_string(),
        "not_before": cert.not_valid_before_utc.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "not_after": cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    assert sct_summary(event) == [("embedded", "valid", True), ("embedded", "valid", True)]
    assert [(s["log"], s["operator"]) for s in event["scts"]] == [
        ("Alpha Log 2026", "Alpha"),
        ("Beta Log 2026", "Beta"),
    ]
    # Each why names its rule: the embedded path, N = 2 logs for a 90-day certificate (C1).
    assert [s["why"] for s in event["scts"]] == [
        "counted: embedded, usable log, operator Alpha, log 1 of 2 needed (C1)",
        "counted: embedded, usable log, operator Beta, log 2 of 2 needed (C1)",
    ]
    assert all(s["reason"] is None for s in event["scts"])
    # Python's ssl origin sends neither a TLS-extension SCT list nor a staple: the addon
    # looked (capture works under -s) and saw none.
    assert event["sources"] == {"embedded": "observed", "tls-extension": "absent", "ocsp": "absent"}


def test_public_chain_without_scts_is_not_compliant(basic: BasicRun) -> None:
    event = only_event(basic.events, basic.ports["non_compliant"])
    assert event["chain"] == "public"
    assert event["compliant"] is False
    assert event["scts"] == []
    assert len(event["reasons"]) == 1 and event["reasons"][0].startswith("no SCTs")


def test_private_chain_is_recorded_as_private(basic: BasicRun, world: World) -> None:
    event = only_event(basic.events, basic.ports["private"])
    assert event["chain"] == "private"
    assert event["certificate"]["issuer"] == world.private_inter.cert.subject.rfc4514_string()
    # The policy verdict is recorded as it is; the private chain is what exempts it (the flow's
    # comment and marker, below, show the exemption).
    assert event["scts"] == [] and event["compliant"] is False


def test_embedded_scts_signed_for_another_certificate_are_invalid(basic: BasicRun) -> None:
    event = only_event(basic.events, basic.ports["tampered"])
    assert event["certificate"]["sha256"] == sha256_hex(basic.certs["tampered"])
    assert sct_summary(event) == [("embedded", "invalid", False), ("embedded", "invalid", False)]
    for sct in event["scts"]:
        assert sct["log"] is not None  # the log is known; its signature does not match
        assert "signature does not verify" in sct["reason"]
        assert sct["why"].startswith("not counted: invalid")
    assert event["compliant"] is False
    assert any("2 embedded SCTs from distinct logs required" in r for r in event["reasons"])


def test_sct_from_a_log_missing_from_the_list_is_unknown(basic: BasicRun, world: World) -> None:
    event = only_event(basic.events, basic.ports["unknown"])
    known, unknown = event["scts"]
    assert (known["status"], known["log"], known["counted"]) == ("valid", "Alpha Log 2026", True)
    assert unknown["status"] == "unknown"
    assert unknown["reason"] == "log not in the log list"
    assert (unknown["log"], unknown["operator"], unknown["counted"]) == (None, None, False)
    assert unknown["log_id"] != known["log_id"]
    assert event["compliant"] is False
    assert any("2 distinct operators required" in r for r in event["reasons"])


def test_policy_option_changes_the_verdict_for_a_180_day_certificate(basic: BasicRun) -> None:
    port = basic.ports["day180"]
    cert = basic.certs["day180"]
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == datetime.timedelta(days=180)
    chrome = only_event(basic.events, port)
    # Chrome: lifetime <= 180 days needs 2 SCTs.
    assert (chrome["policy"], chrome["compliant"]) == ("chrome", True)
    apple = only_event(basic.apple_events, port)
    # Apple: notBefore through notAfter inclusive is 181 days, so the 3-SCT tier applies.
    assert (apple["policy"], apple["compliant"]) == ("apple", False)
    assert any("181-day" in r and "3 embedded SCTs" in r for r in apple["reasons"]), apple
    # Where the policies agree, Apple's verdict agrees too.
    both = only_event(basic.apple_events, basic.ports["compliant"])
    assert (both["policy"], both["compliant"]) == ("apple", True)


def test_saved_flows_carry_the_connection_record(basic: BasicRun) -> None:
    for name in ("compliant", "non_compliant", "private", "tampered", "unknown", "day180"):
        flow = the_flow(basic, name)
        meta = flow.metadata["expect_ct"]
        event = only_event(basic.events, basic.ports[name])
        assert meta["connection"] == {k: v for k, v in event.items() if k not in ENVELOPE}
        assert (meta["host"], meta["port"], meta["secure"]) == ("localhost", event["port"], True)
        assert flow.comment == meta["verdict"] == meta["comment"]


def test_comment_and_marker_follow_the_verdict(basic: BasicRun) -> None:
    compliant = the_flow(basic, "compliant")
    assert compliant.comment == "CT: compliant (chrome; 2/2 valid SCTs (embedded))"
    assert not compliant.marked

    non_compliant = the_flow(basic, "non_compliant")
    assert non_compliant.comment.startswith("CT: NOT compliant (chrome; 0/0 valid SCTs): no SCTs")
    assert non_compliant.marked == ":warning:"

    # A private chain is exempt from CT: neither a warning nor a NOT-compliant comment.
    private = the_flow(basic, "private")
    assert private.comment == "CT: exempt (chain ends at a private root)"
    assert not private.marked

    tampered = the_flow(basic, "tampered")
    assert tampered.comment.startswith("CT: NOT compliant (chrome; 0/2 valid SCTs (embedded))")
    assert tampered.marked == ":warning:"

    unknown = the_flow(basic, "unknown")
    assert unknown.comment.startswith("CT: NOT compliant (chrome; 1/2 valid SCTs (embedded))")
    assert unknown.marked == ":warning:"


def test_verdict_is_evaluated_once_per_connection_not_per_flow(basic: BasicRun) -> None:
    port = basic.keepalive.port
    assert basic.keepalive_statuses == [[200, 200, 200], [200]]
    # Two client connections -> two upstream connections, four requests.
    assert basic.keepalive.connections == 2
    assert [p for _, p in basic.keepalive.requests] == ["/one", "/two", "/three", "/again"]
    events = [e for e in basic.events if e["port"] == port]
    assert len(events) == 2, events
    assert all(e["compliant"] is True for e in events)
    flows = [f for f in basic.flows if f.request.port == port]
    assert [f.request.path for f in flows] == ["/one", "/two", "/three", "/again"]
    by_connection: dict[str, list[str]] = {}
    for flow in flows:
        by_connection.setdefault(flow.server_conn.id, []).append(flow.request.path)
        assert flow.metadata["expect_ct"]["connection"]["compliant"] is True
    assert sorted(by_connection.values()) == [["/again"], ["/one", "/two", "/three"]]


def test_addon_ran_as_a_script_with_full_handshake_capture(basic: BasicRun) -> None:
    assert f"Loading script {ADDON_SCRIPT}" in basic.log_text
    assert "handshake capture is degraded" not in basic.log_text
    assert "cannot be captured" not in basic.log_text


# ------------------------------------------ part 2: openssl s_server, handshake SCTs


SCENARIOS = ("all-three", "tls-only", "ocsp-only", "none", "foreign")
TLS_VERSIONS = ("1.2", "1.3")
# The policies that count SCTs from a stapled OCSP response: Chrome before 148 (C4a), Apple (A6).
OCSP_COUNTING_POLICIES = ("chrome-pre148", "apple")
CHROME_148_IGNORES_OCSP = "not counted: Chrome 148+ ignores OCSP-delivered SCTs (C4)"
# chrome's reasons when no SCT counts and a staple was there: the TLS-extension SCT that mixed
# delivery needs is missing (C3), and the staple's SCTs do not stand in for it (C4).
CHROME_NO_TLS_SCT_REASONS = [
    "no SCT delivered via TLS extension from a log not retired (C3); SCTs from the stapled "
    "OCSP response are ignored since Chrome 148 (C4)",
    "SCTs from 2 distinct operators required (any delivery once 1 SCT arrives via "
    "TLS extension), none found (C3)",
]
# (counted, why) of the embedded and TLS-extension SCTs of "all-three" under chrome and
# chrome-pre148: the embedded ones for the embedded rule (C1), the others for mixed delivery (C3).
CHROME_ALL_THREE_COUNTED = [
    (True, "counted: embedded, usable log, operator Alpha, log 1 of 2 needed (C1)"),
    (True, "counted: embedded, usable log, operator Beta, log 2 of 2 needed (C1)"),
    (
        True,
        "counted: TLS extension, usable log, operator Alpha, non-embedded SCT from a log not "
        "retired (C3)",
    ),
    (
        True,
        "counted: TLS extension, usable log, operator Beta, non-embedded SCT from a log not "
        "retired (C3)",
    ),
]


@dataclass
class HandshakeRun:
    ports: dict[tuple[str, str], int]  # (scenario, tls) -> origin port
    leaves: dict[str, x509.Certificate]
    responses: dict[tuple[str, str], Response]
    events: list[Event]
    flows: list[http.HTTPFlow]


@pytest.fixture(scope="module")
def handshake(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HandshakeRun]:
    base = tmp_path_factory.mktemp("e2e-ct-handshake")
    ts = pki.now_ms() - 60_000
    a, b, inter = world.log_a, world.log_b, world.public_inter
    two_operators = [(a, ts + 10), (b, ts + 11)]

    embedded, embedded_key = pki.make_leaf(inter, embedded=[(a, ts), (b, ts + 1)])
    plain, plain_key = pki.make_leaf(inter)
    other, _ = pki.make_leaf(inter)  # the certificate the "foreign" SCTs were signed for

    def staple(leaf: x509.Certificate, sct_list: bytes | None) -> bytes:
        return pki.ocsp_response(leaf, inter, sct_list=sct_list)

    # (leaf, key, serverinfo, ocsp DER)
    served: dict[str, tuple[x509.Certificate, pki.PrivateKey, bytes | None, bytes | None]] = {
        "all-three": (
            embedded,
            embedded_key,
            pki.serverinfo_pem(pki.tls_sct_list(embedded, [(a, ts + 2), (b, ts + 3)])),
            staple(embedded, pki.tls_sct_list(embedded, [(a, ts + 4), (b, ts + 5)])),
        ),
        "tls-only": (
            plain,
            plain_key,
            pki.serverinfo_pem(pki.tls_sct_list(plain, two_operators)),
            None,
        ),
        "ocsp-only": (
            plain,
            plain_key,
            None,
            staple(plain, pki.tls_sct_list(plain, two_operators)),
        ),
        "none": (plain, plain_key, None, None),
        "foreign": (
            plain,
            plain_key,
            pki.serverinfo_pem(pki.tls_sct_list(other, two_operators)),
            # The OCSP response is for the served leaf; only its SCTs are for ``other``.
            staple(plain, pki.tls_sct_list(other, two_operators)),
        ),
    }
    flow_file = base / "flows.mitm"
    with contextlib.ExitStack() as stack:
        ports = openssl_origins(stack, base, served, chain=inter.cert, tls_versions=TLS_VERSIONS)
        proxy = Mitmdump(
            base / "proxy",
            proxy_options(world, expect_ct_store=":memory:", save_stream_file=str(flow_file)),
        )
        with proxy:
            responses = {
                key: proxy.curl(f"https://localhost:{port}/index.html")
                for key, port in ports.items()
            }
        yield HandshakeRun(
            ports=ports,
            leaves={name: leaf for name, (leaf, *_rest) in served.items()},
            responses=responses,
            events=proxy.events("connection"),
            flows=read_flows(flow_file),
        )


def handshake_event(run: HandshakeRun, scenario: str, tls: str) -> Event:
    event = only_event(run.events, run.ports[scenario, tls])
    assert event["tls_version"] == f"TLSv{tls}"
    assert event["certificate"]["sha256"] == sha256_hex(run.leaves[scenario])
    return event


@pytest.fixture(scope="module")
def ocsp_counting(
    handshake: HandshakeRun, world: World, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, list[Event]]:
    """The origins that staple OCSP SCTs once more, each through a mitmdump running a policy that
    counts them (chrome-pre148, apple): policy -> the connection events it wrote."""
    base = tmp_path_factory.mktemp("e2e-ct-ocsp-counting")
    events: dict[str, list[Event]] = {}
    for policy in OCSP_COUNTING_POLICIES:
        proxy = Mitmdump(
            base / policy,
            proxy_options(world, expect_ct_store=":memory:", expect_ct_policy=policy),
        )
        with proxy:
            for scenario in ("all-three", "ocsp-only"):
                for tls in TLS_VERSIONS:
                    port = handshake.ports[scenario, tls]
                    response = proxy.curl(f"https://localhost:{port}/index.html")
                    assert (response.status, response.body) == (200, b"hello"), (
                        policy,
                        scenario,
                        tls,
                        response.stderr,
                    )
        events[policy] = proxy.events("connection")
    return events


def same_connection_under(
    policy_events: list[Event], run: HandshakeRun, scenario: str, tls: str
) -> Event:
    """The event another policy's mitmdump wrote for ``scenario``: the same origin, leaf and
    SCTs as the chrome run's event."""
    event = only_event(policy_events, run.ports[scenario, tls])
    chrome = handshake_event(run, scenario, tls)
    assert event["tls_version"] == chrome["tls_version"]
    assert event["certificate"] == chrome["certificate"]
    assert event["sources"] == chrome["sources"]
    assert [(s["source"], s["log_id"], s["timestamp"], s["status"]) for s in event["scts"]] == [
        (s["source"], s["log_id"], s["timestamp"], s["status"]) for s in chrome["scts"]
    ]
    return event


def test_openssl_origins_answered(handshake: HandshakeRun) -> None:
    for key, response in handshake.responses.items():
        assert (response.status, response.body) == (200, b"hello"), (key, response.stderr)


@pytest.mark.parametrize("tls", TLS_VERSIONS)
def test_all_three_sources_are_captured_and_valid(handshake: HandshakeRun, tls: str) -> None:
    event = handshake_event(handshake, "all-three", tls)
    assert event["sources"] == {
        "embedded": "observed",
        "tls-extension": "present",
        "ocsp": "present",
    }
    assert [(s["source"], s["status"]) for s in event["scts"]] == [
        ("embedded", "valid"),
        ("embedded", "valid"),
        ("tls-extension", "valid"),
        ("tls-extension", "valid"),
        ("ocsp", "valid"),
        ("ocsp", "valid"),
    ]
    assert [s["operator"] for s in event["scts"]] == ["Alpha", "Beta"] * 3
    assert len({s["timestamp"] for s in event["scts"]}) == 6  # six distinct SCTs, none merged
    # Each path counts under its own rule: the embedded SCTs for the embedded rule (C1), the
    # TLS-extension ones for the mixed rule (C3); Chrome 148+ verifies the OCSP SCTs but ignores
    # them (C4).
    assert [(s["counted"], s["why"]) for s in event["scts"]] == [
        *CHROME_ALL_THREE_COUNTED,
        (False, CHROME_148_IGNORES_OCSP),
        (False, CHROME_148_IGNORES_OCSP),
    ]
    assert event["compliant"] is True and event["reasons"] == []


@pytest.mark.parametrize("tls", TLS_VERSIONS)
def test_tls_extension_scts_alone_make_it_compliant(handshake: HandshakeRun, tls: str) -> None:
    event = handshake_event(handshake, "tls-only", tls)
    assert event["sources"] == {
        "embedded": "observed",
        "tls-extension": "present",
        "ocsp": "absent",
    }
    assert sct_summary(event) == [("tls-extension", "valid", True)] * 2
    assert {s["operator"] for s in event["scts"]} == {"Alpha", "Beta"}
    assert event["compliant"] is True and event["reasons"] == []


@pytest.mark.parametrize("tls", TLS_VERSIONS)
@pytest.mark.parametrize("policy", OCSP_COUNTING_POLICIES)
def test_all_three_sources_under_policies_that_count_ocsp(
    handshake: HandshakeRun, ocsp_counting: dict[str, list[Event]], policy: str, tls: str
) -> None:
    event = same_connection_under(ocsp_counting[policy], handshake, "all-three", tls)
    assert event["policy"] == policy
    assert event["compliant"] is True and event["reasons"] == []
    # The OCSP SCTs now count like TLS-extension ones, but come from the same logs as the
    # TLS-extension SCTs already counted: duplicates (Chrome C9, Apple rule (a) A2).
    if policy == "chrome-pre148":
        expected = CHROME_ALL_THREE_COUNTED + [(False, "not counted: duplicate log (C9)")] * 2
    else:
        expected = [
            (True, "counted: embedded, usable log, operator Alpha, log 1 of 2 needed (A3)"),
            (True, "counted: embedded, usable log, operator Beta, log 2 of 2 needed (A3)"),
            (True, "counted: TLS extension, usable log, operator Alpha (A2)"),
            (True, "counted: TLS extension, usable log, operator Beta (A2)"),
            *[(False, "not counted: duplicate log (A2)")] * 2,
        ]
    assert [(s["counted"], s["why"]) for s in event["scts"]] == expected


@pytest.mark.parametrize("tls", TLS_VERSIONS)
def test_chrome_148_ignores_ocsp_scts_alone(handshake: HandshakeRun, tls: str) -> None:
    event = handshake_event(handshake, "ocsp-only", tls)
    assert event["policy"] == "chrome"
    assert event["sources"] == {
        "embedded": "observed",
        "tls-extension": "absent",
        "ocsp": "present",
    }
    # Verified and shown, but not counted (C4): nothing else is left to comply with.
    assert sct_summary(event) == [("ocsp", "valid", False)] * 2
    assert {s["operator"] for s in event["scts"]} == {"Alpha", "Beta"}
    assert [s["why"] for s in event["scts"]] == [CHROME_148_IGNORES_OCSP] * 2
    assert event["compliant"] is False
    assert event["reasons"] == CHROME_NO_TLS_SCT_REASONS


@pytest.mark.parametrize("tls", TLS_VERSIONS)
@pytest.mark.parametrize("policy", OCSP_COUNTING_POLICIES)
def test_ocsp_scts_alone_make_it_compliant(
    handshake: HandshakeRun, ocsp_counting: dict[str, list[Event]], policy: str, tls: str
) -> None:
    # The connection chrome refused above, judged by Chrome before 148 and by Apple.
    event = same_connection_under(ocsp_counting[policy], handshake, "ocsp-only", tls)
    assert event["policy"] == policy
    assert event["sources"] == {
        "embedded": "observed",
        "tls-extension": "absent",
        "ocsp": "present",
    }
    assert sct_summary(event) == [("ocsp", "valid", True)] * 2
    assert {s["operator"] for s in event["scts"]} == {"Alpha", "Beta"}
    # Chrome before 148: the mixed-delivery rule (C3); Apple: rule (a) (A2).
    why_end = {"chrome-pre148": ", non-embedded SCT from a log not retired (C3)", "apple": " (A2)"}
    assert [s["why"] for s in event["scts"]] == [
        f"counted: OCSP, usable log, operator {operator}{why_end[policy]}"
        for operator in ("Alpha", "Beta")
    ]
    assert event["compliant"] is True and event["reasons"] == []


@pytest.mark.parametrize("tls", TLS_VERSIONS)
def test_origin_without_any_sct(handshake: HandshakeRun, tls: str) -> None:
    event = handshake_event(handshake, "none", tls)
    assert event["sources"] == {"embedded": "observed", "tls-extension": "absent", "ocsp": "absent"}
    assert event["scts"] == []
    assert event["compliant"] is False
    assert event["reasons"][0].startswith("no SCTs")


@pytest.mark.parametrize("tls", TLS_VERSIONS)
def test_handshake_scts_for_another_certificate_are_invalid(
    handshake: HandshakeRun, tls: str
) -> None:
    event = handshake_event(handshake, "foreign", tls)
    assert event["sources"] == {
        "embedded": "observed",
        "tls-extension": "present",
        "ocsp": "present",
    }
    assert sct_summary(event) == [
        ("tls-extension", "invalid", False),
        ("tls-extension", "invalid", False),
        ("ocsp", "invalid", False),
        ("ocsp", "invalid", False),
    ]
    for sct in event["scts"]:
        assert sct["log"] is not None
        assert "signature does not verify" in sct["reason"]
        # An invalid SCT is refused before any policy rule looks at it, OCSP ones included.
        assert sct["why"] == f"not counted: invalid: {sct['reason']} (RFC 6962)"
    assert event["compliant"] is False
    assert event["reasons"] == CHROME_NO_TLS_SCT_REASONS


def test_handshake_verdicts_reach_the_saved_flows(handshake: HandshakeRun) -> None:
    assert len(handshake.flows) == len(handshake.ports)
    for (scenario, tls), port in handshake.ports.items():
        (flow,) = [f for f in handshake.flows if f.request.port == port]
        event = only_event(handshake.events, port)
        meta = flow.metadata["expect_ct"]
        assert meta["connection"] == {k: v for k, v in event.items() if k not in ENVELOPE}
        # Under chrome (Chrome 148+), OCSP SCTs alone do not comply (C4).
        compliant = scenario in ("all-three", "tls-only")
        assert flow.marked == ("" if compliant else ":warning:"), (scenario, tls)
        assert flow.comment.startswith("CT: compliant" if compliant else "CT: NOT compliant")


# --------------------------------------------------------------- part 3: HTTP/3 (QUIC)


class H3Origin(QuicConnectionProtocol):
    """Answers every HTTP/3 request with 200 and a fixed body."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._h3: H3Connection | None = None

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, ProtocolNegotiated):
            self._h3 = H3Connection(self._quic)
        if self._h3 is None:
            return
        for h3_event in self._h3.handle_event(event):
            if isinstance(h3_event, HeadersReceived) and h3_event.stream_ended:
                self._h3.send_headers(
                    h3_event.stream_id, [(b":status", b"200"), (b"content-type", b"text/plain")]
                )
                self._h3.send_data(h3_event.stream_id, b"hello over h3", end_stream=True)
                self.transmit()


class H3Client(QuicConnectionProtocol):
    """One GET at a time; ``get`` returns (status, body)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._h3 = H3Connection(self._quic)
        self._pending: dict[int, tuple[asyncio.Future[None], list[bytes], list[bytes]]] = {}

    def quic_event_received(self, event: QuicEvent) -> None:
        for h3_event in self._h3.handle_event(event):
            self._h3_event(h3_event)

    def _h3_event(self, event: H3Event) -> None:
        if not isinstance(event, HeadersReceived | DataReceived):
            return
        if event.stream_id not in self._pending:
            return
        done, status, body = self._pending[event.stream_id]
        if isinstance(event, HeadersReceived):
            status.append(dict(event.headers).get(b":status", b""))
        else:
            body.append(event.data)
        if event.stream_ended and not done.done():
            done.set_result(None)

    async def get(self, authority: str, path: str) -> tuple[int, bytes]:
        stream_id = self._quic.get_next_available_stream_id()
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        status: list[bytes] = []
        body: list[bytes] = []
        self._pending[stream_id] = (done, status, body)
        self._h3.send_headers(
            stream_id,
            [
                (b":method", b"GET"),
                (b":scheme", b"https"),
                (b":authority", authority.encode()),
                (b":path", path.encode()),
            ],
            end_stream=True,
        )
        self.transmit()
        await asyncio.wait_for(done, 10)
        return int(status[0]) if status else 0, b"".join(body)


@dataclass
class QuicOrigin:
    port: int


@contextlib.contextmanager
def quic_origin(chain_pem: Path, key_pem: Path) -> Iterator[QuicOrigin]:
    """An aioquic HTTP/3 origin on 127.0.0.1 (UDP), in its own event-loop thread."""
    configuration = QuicConfiguration(is_client=False, alpn_protocols=H3_ALPN)
    configuration.load_cert_chain(chain_pem, key_pem)
    loop = asyncio.new_event_loop()
    server = loop.run_until_complete(
        serve("127.0.0.1", 0, configuration=configuration, create_protocol=H3Origin)
    )
    transport = server._transport
    assert transport is not None
    port = transport.get_extra_info("sockname")[1]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield QuicOrigin(port)
    finally:
        loop.call_soon_threadsafe(server.close)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


def h3_get_on_one_connection(proxy: Mitmdump, paths: list[str]) -> list[tuple[int, bytes]]:
    async def run() -> list[tuple[int, bytes]]:
        configuration = QuicConfiguration(
            is_client=True, alpn_protocols=H3_ALPN, server_name="localhost"
        )
        configuration.load_verify_locations(str(proxy.ca_cert))
        async with connect(
            "127.0.0.1", proxy.port, configuration=configuration, create_protocol=H3Client
        ) as client:
            assert isinstance(client, H3Client)
            return [await client.get("localhost", path) for path in paths]

    return asyncio.run(asyncio.wait_for(run(), 20))


def test_http3_upstream_records_embedded_scts_only(world: World, tmp_path: Path) -> None:
    flow_file = tmp_path / "flows.mitm"
    with quic_origin(world.compliant.chain_pem, world.compliant.key_pem) as origin:
        proxy = Mitmdump(
            tmp_path / "proxy",
            proxy_options(world, expect_ct_store=":memory:", save_stream_file=str(flow_file)),
            extra_args=["--mode", f"reverse:http3://127.0.0.1:{origin.port}"],
        )
        with proxy:
            answers = h3_get_on_one_connection(proxy, ["/a", "/b"])
        events = proxy.events("connection")
    assert answers == [(200, b"hello over h3")] * 2
    (event,) = [e for e in events if e["port"] == origin.port]  # two requests, one connection
    assert event["tls_version"] == "QUICv1"
    assert event["chain"] == "public"
    assert event["certificate"]["sha256"] == sha256_hex(world.compliant.cert)  # type: ignore[arg-type]
    assert sct_summary(event) == [("embedded", "valid", True)] * 2
    assert event["compliant"] is True
    # aioquic did the handshake: the TLS extension and OCSP staple were never visible.
    assert event["sources"] == NOT_OBSERVED
    flows = read_flows(flow_file)
    assert [f.request.path for f in flows] == ["/a", "/b"]
    assert all(f.request.http_version == "HTTP/3" for f in flows)
    for flow in flows:
        assert flow.metadata["expect_ct"]["connection"]["sources"] == NOT_OBSERVED
        assert flow.comment == "CT: compliant (chrome; 2/2 valid SCTs (embedded))"


def test_record_for_flow_covers_connections_the_tls_hooks_never_saw(
    world: World, tmp_path: Path
) -> None:
    """In process: a flow whose server connection only has ``certificate_list`` (as after a
    QUIC handshake) is evaluated from the flow, embedded SCTs only, once per connection."""
    addon = ExpectCT()
    event_log = tmp_path / "events.jsonl"
    try:
        with taddons.context(addon) as tctx:
            tctx.configure(
                addon,
                expect_ct_log_list=str(world.log_list),
                expect_ct_public_roots=str(world.public_roots_pem),
                ssl_verify_upstream_trusted_ca=str(world.upstream_trust_pem),
                expect_ct_store=":memory:",
                expect_ct_log=str(event_log),
            )
            first = quic_like_flow(world)
            second = tflow.tflow(resp=True)
            second.server_conn = first.server_conn
            second.request.scheme = "https"
            for flow in (first, second):
                addon.request(flow)
                addon.response(flow)
    finally:
        addon.done()
    events = [json.loads(line) for line in event_log.read_text().splitlines()]
    (event,) = [e for e in events if e["event"] == "connection"]
    assert (event["host"], event["port"], event["tls_version"]) == ("localhost", 443, "QUICv1")
    assert event["sources"] == NOT_OBSERVED
    assert sct_summary(event) == [("embedded", "valid", True)] * 2
    assert event["compliant"] is True
    for flow in (first, second):
        assert flow.metadata["expect_ct"]["connection"] == {
            k: v for k, v in event.items() if k not in ENVELOPE
        }
        assert flow.comment == "CT: compliant (chrome; 2/2 valid SCTs (embedded))"


def quic_like_flow(world: World) -> http.HTTPFlow:
    flow = tflow.tflow(resp=True)
    flow.request.scheme = "https"
    server = flow.server_conn
    server.address = ("localhost", 443)
    server.sni = "localhost"
    server.tls_version = "QUICv1"
    leaf = world.compliant.cert
    assert isinstance(leaf, x509.Certificate)
    server.certificate_list = [
        certs.Cert.from_pem(c.public_bytes(serialization.Encoding.PEM))
        for c in (leaf, world.public_inter.cert)
    ]
    return flow
