"""Issue 17 in-process: refusals beyond the connection's own verdict, and honest records.

End to end (a real mitmdump, impostor and client) in tests/e2e/test_e2e_bypass.py; here the
branches: a request naming another host than its connection, a leaf that cannot be read, and
a refusal decided too late (the response hook), which must not be recorded as ``blocked``.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from mitmproxy import certs
from mitmproxy import connection
from mitmproxy import http
from mitmproxy.test import tflow

from support.inprocess import Loaded
from support.inprocess import handshake
from support.inprocess import load_addon
from support.world import World

KNOWN = "known.example"
OTHER = "localhost"  # the test world's leaves are for localhost


@pytest.fixture
def loaded(world: World, tmp_path: Path) -> Iterator[Loaded]:
    with load_addon(world, tmp_path, expect_ct_log=str(tmp_path / "events.jsonl")) as running:
        running.store.observe(KNOWN, max_age=3600, enforce=True, report_uri=None)
        yield running


def events(tmp_path: Path, kind: str) -> list[dict[str, Any]]:
    path = tmp_path / "events.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return [e for e in map(json.loads, lines) if e["event"] == kind]


def upstream(host: str) -> connection.Server:
    return connection.Server(address=(host, 443), sni=host)


def flow_on(server: connection.Server, authority: str) -> http.HTTPFlow:
    flow = tflow.tflow(server_conn=server)
    flow.request.url = f"https://{server.sni}/secret"
    flow.request.headers["Host"] = authority
    return flow


def test_a_request_naming_a_known_host_on_another_names_connection_gets_502(
    loaded: Loaded, world: World, tmp_path: Path
) -> None:
    server = upstream(OTHER)
    chain = (world.non_compliant.cert, world.public_inter.cert)
    assert loaded.addon.judge.decide(server, handshake(chain)) is True  # OTHER is not Known
    flow = flow_on(server, KNOWN)
    loaded.addon.request(flow)
    assert flow.response is not None and flow.response.status_code == 502
    assert f"Host: {KNOWN}" in (flow.response.get_text() or "")
    [event] = events(tmp_path, "blocked")
    assert event["host"] == KNOWN and event["connection"] == OTHER
    # The same connection still serves requests naming its own host.
    same = flow_on(server, OTHER)
    loaded.addon.request(same)
    assert same.response is None


def test_a_request_naming_a_known_host_on_a_compliant_connection_passes(
    loaded: Loaded, world: World, tmp_path: Path
) -> None:
    server = upstream(OTHER)
    assert loaded.addon.judge.decide(
        server, handshake((world.compliant.cert, world.public_inter.cert))
    )
    flow = flow_on(server, KNOWN)
    loaded.addon.request(flow)
    assert flow.response is None
    assert not events(tmp_path, "blocked")


@pytest.mark.parametrize(("mode", "refused"), [("header", False), ("all", True), ("off", False)])
def test_an_unreadable_leaf_is_refused_in_all_mode(
    loaded: Loaded, tmp_path: Path, mode: str, refused: bool
) -> None:
    loaded.tctx.configure(loaded.addon, expect_ct_enforce=mode)
    unreadable = dataclasses.replace(
        handshake(()), leaf_error="the leaf of 2 cannot be parsed: bad DER"
    )
    assert loaded.addon.judge.decide(upstream(OTHER), unreadable) is (not refused)
    blocked = events(tmp_path, "blocked")
    assert len(blocked) == int(refused)
    if refused:
        assert "cannot be parsed" in blocked[0]["reason"]


def test_an_unreadable_leaf_of_a_known_enforce_host_is_refused(loaded: Loaded) -> None:
    unreadable = dataclasses.replace(handshake(()), leaf_error="the leaf cannot be parsed")
    assert loaded.addon.judge.decide(upstream(KNOWN), unreadable) is False


def test_a_block_decided_in_the_response_hook_is_enforcement_failed_not_blocked(
    loaded: Loaded, world: World, tmp_path: Path
) -> None:
    """No handshake decision ran (e.g. the capture is unavailable) and the request went out:
    the record says so, and the client does not get the non-compliant server's answer."""
    server = upstream(KNOWN)
    leaf = world.non_compliant.cert
    assert isinstance(leaf, x509.Certificate)
    chain = (leaf, world.public_inter.cert)
    server.certificate_list = [
        certs.Cert.from_pem(c.public_bytes(serialization.Encoding.PEM)) for c in chain
    ]
    server.timestamp_tls_setup = time.time()  # established, by a handshake nobody saw
    flow = flow_on(server, KNOWN)
    flow.response = http.Response.make(200, b"impostor content")
    loaded.addon.response(flow)
    assert flow.response.status_code == 502
    assert b"already reached the server" in (flow.response.content or b"")
    assert not events(tmp_path, "blocked")
    [failed] = events(tmp_path, "enforcement_failed")
    assert failed["host"] == KNOWN and "Known Expect-CT Host" in failed["reason"]
    assert loaded.addon.stats["blocked"] == 0 and loaded.addon.stats["enforcement_failed"] == 1
    rows = dict(line.strip().rsplit(maxsplit=1) for line in loaded.addon.summary().splitlines()[1:])
    assert rows["NOT refused in time"] == "1" and rows["blocked"] == "0"
