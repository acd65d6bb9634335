"""The "Certificate Transparency" contentview in-process, through mitmproxy's own contentview API.

A real upstream handshake (TlsConfig and the addon in a taddons context, a memory-BIO
pyOpenSSL connection driven over a real socket to ``openssl s_server``) against an origin
serving SCTs embedded in its certificate, in the TLS extension and in a stapled OCSP
response; the addon's request and response hooks write the flow's metadata; the view is then
rendered the way the console and mitmweb render it: ``get_message_content_view`` on
mitmproxy 11, ``prettify_message`` on mitmproxy 12.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from mitmproxy import connection
from mitmproxy import contentviews
from mitmproxy import http
from mitmproxy.addons.tlsconfig import TlsConfig
from mitmproxy.proxy.context import Context
from mitmproxy.proxy.layers.tls import TlsStartServerHook
from mitmproxy.test import taddons
from mitmproxy.test import tflow
from mitmproxy.tls import TlsData
from OpenSSL import SSL

from expect_ct import contentview
from expect_ct import ctview
from expect_ct.addon import ExpectCT
from support import pki
from support.inprocess import handshake as no_scts
from support.inprocess import load_addon
from support.origins import http_response
from support.origins import openssl_origin
from support.world import World

VIEW = ctview.VIEW_NAME
API: Any = contentviews  # mitmproxy 12 names are not in 11, which mypy checks against


@dataclass
class Running:
    tctx: taddons.context
    addon: ExpectCT
    views: contentview.CTContentview


@pytest.fixture
def running(world: World, tmp_path: Path) -> Iterator[Running]:
    with load_addon(world, tmp_path, also=[TlsConfig()]) as loaded:
        # The view comes with the addon on every launch path (registered in its load()).
        views = loaded.addon.contentview
        try:
            yield Running(loaded.tctx, loaded.addon, views)
        finally:
            views.done()  # taddons.context never calls done(); load_addon ends the addon
    assert all(name.lower() != VIEW.lower() for name in view_names())


def view_names() -> list[str]:
    if contentview.modern_api():
        registry: Any = API.registry
        return [view.name for view in registry.values()]
    return [view.name for view in contentviews.views]


def handshake(conn: SSL.Connection, sock: socket.socket) -> None:
    """Drive a memory-BIO connection over ``sock`` as mitmproxy does."""

    def flush() -> None:
        while True:
            try:
                sock.sendall(conn.bio_read(65536))
            except SSL.WantReadError:
                return

    while True:
        try:
            conn.do_handshake()
        except SSL.WantReadError:
            flush()
            data = sock.recv(65536)
            if not data:
                raise ConnectionError("origin closed during the handshake") from None
            conn.bio_write(data)
        else:
            flush()
            return


@dataclass(frozen=True)
class Served:
    leaf: Any
    key: Any
    serverinfo: bytes
    ocsp: bytes


@pytest.fixture(scope="module")
def all_three(world: World) -> Served:
    """A leaf with 2 embedded SCTs, plus 1 TLS-extension SCT and 1 OCSP SCT for it."""
    ts = pki.now_ms() - 60_000
    a, b, inter = world.log_a, world.log_b, world.public_inter
    leaf, key = pki.make_leaf(inter, embedded=[(a, ts), (b, ts + 1)])
    return Served(
        leaf=leaf,
        key=key,
        serverinfo=pki.serverinfo_pem(pki.tls_sct_list(leaf, [(b, ts + 2)])),
        ocsp=pki.ocsp_response(leaf, inter, sct_list=pki.tls_sct_list(leaf, [(a, ts + 3)])),
    )


def flow_through_addon(
    running: Running, world: World, served: Served, tmp_path: Path, tls: str
) -> http.HTTPFlow:
    """One HTTPS flow over a real upstream handshake, through the addon's hooks."""
    response = http_response(headers=[("Expect-CT", "max-age=3600, enforce")])
    with openssl_origin(
        tmp_path,
        cert_pem=pki.pem(served.leaf),
        key_pem=pki.key_pem(served.key),
        chain_pem=pki.pem(world.public_inter.cert),
        tls=tls,
        serverinfo=served.serverinfo,
        ocsp_der=served.ocsp,
        responses={"index.html": response},
    ) as port:
        client = tflow.tclient_conn()
        server = connection.Server(address=("127.0.0.1", port), sni="localhost")
        data = TlsData(server, Context(client, running.tctx.options))
        running.tctx.master.addons.trigger(TlsStartServerHook(data))
        assert data.ssl_conn is not None
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            handshake(data.ssl_conn, sock)
        running.addon.tls_established_server(data)
    flow = tflow.tflow(client_conn=client, server_conn=server, resp=True)
    flow.request.url = f"https://localhost:{port}/index.html"
    flow.request.headers["Expect-CT"] = "max-age=0"  # the client's, recorded only
    running.addon.request(flow)
    assert flow.response is not None
    flow.response.headers["Expect-CT"] = "max-age=3600, enforce"
    running.addon.response(flow)
    return flow


def rendered_in_mitmproxy(flow: http.HTTPFlow, view: str = VIEW) -> tuple[str, str]:
    """(view name used, text) as the console and mitmweb get it, on either API."""
    assert flow.response is not None
    if contentview.modern_api():
        result = API.prettify_message(flow.response, flow, view_name=view)
        return str(result.view_name), str(result.text)
    description, lines, error = contentviews.get_message_content_view(view, flow.response, flow)
    assert error is None, error
    text = "\n".join("".join(str(t) for _style, t in line) for line in lines)
    return view if description.startswith("CT") else description, text


@pytest.mark.parametrize("tls", ["1.2", "1.3"])
def test_view_shows_embedded_tls_extension_and_ocsp_scts(
    running: Running, world: World, all_three: Served, tmp_path: Path, tls: str
) -> None:
    flow = flow_through_addon(running, world, all_three, tmp_path, tls)
    meta = flow.metadata["expect_ct"]
    assert meta["connection"]["compliant"] is True
    name, text = rendered_in_mitmproxy(flow)
    assert name == VIEW
    lines = text.splitlines()
    assert lines[0] == f"Certificate Transparency: localhost:{meta['port']} (TLSv{tls})"
    rows = [line.split() for line in lines if line.startswith("  ") and line.split()[0].isdigit()]
    assert [row[:4] for row in rows] == [
        ["1", "embedded", "Alpha", "Log"],
        ["2", "embedded", "Beta", "Log"],
        ["3", "tls-extension", "Beta", "Log"],
        ["4", "ocsp", "Alpha", "Log"],
    ]
    assert all("valid" in row for row in rows)
    assert "embedded observed, tls-extension present, ocsp present" in text
    assert meta["connection"]["certificate"]["sha256"] in text
    # The client's and the response's Expect-CT headers, and what the addon did with them.
    assert "  request: max-age=0\n    valid: max-age 0 s, report-only\n    action: ignored" in text
    assert "  response: max-age=3600, enforce" in text
    assert "    action: noted (valid header on a CT-compliant connection" in text
    # The store now knows the host: the view reads it from the running addon.
    assert "Stored policy for localhost\n  Known host: yes: enforce" in text


def test_view_is_offered_but_not_the_default(
    running: Running, world: World, all_three: Served, tmp_path: Path
) -> None:
    flow = flow_through_addon(running, world, all_three, tmp_path, "1.3")
    assert VIEW.lower() in [n.lower() for n in view_names()]
    name, text = rendered_in_mitmproxy(flow, "auto")
    assert name != VIEW and "SCTs (" not in text  # the body ("hello") stays the default


def test_view_of_a_flow_the_addon_never_saw_says_so_in_one_line(running: Running) -> None:
    flow = tflow.tflow(resp=True)
    _name, text = rendered_in_mitmproxy(flow)
    assert text == ctview.NO_DATA


def test_blocked_flow_shows_the_reason_and_the_stored_policy(
    running: Running, world: World, tmp_path: Path
) -> None:
    assert running.addon.store is not None
    running.addon.store.observe("localhost", max_age=3600, enforce=True, report_uri=None)
    client = tflow.tclient_conn()
    server = connection.Server(address=("127.0.0.1", 443), sni="localhost")
    # The decision the handshake capture hands the addon: no SCTs anywhere.
    chain = (world.non_compliant.cert, world.public_inter.cert)
    assert running.addon.judge.decide(server, no_scts(chain)) is False
    running.addon.tls_failed_server(TlsData(server, Context(client, running.tctx.options)))
    flow = tflow.tflow(client_conn=client, server_conn=server)
    flow.request.url = "https://localhost/"
    flow.request.headers["Expect-CT"] = "max-age=0"  # the client's, recorded only
    running.addon.request(flow)
    assert flow.response is not None and flow.response.status_code == 502
    _name, text = rendered_in_mitmproxy(flow)
    assert "  Blocked:     localhost is a Known Expect-CT Host with enforce" in text
    assert "SCTs (0)\n  none: no SCT was delivered by any path" in text
    assert "Stored policy for localhost\n  Known host: yes: enforce" in text


def test_reload_replaces_the_view_instead_of_failing(running: Running) -> None:
    # A script reload runs load() of a new instance, sometimes before done() of the old one.
    second = contentview.CTContentview()
    second.load(None)
    assert [n for n in view_names() if n.lower() == VIEW.lower()] == [VIEW]
    running.views.done()  # the old instance's done() leaves the new view in place
    assert [n for n in view_names() if n.lower() == VIEW.lower()] == [VIEW]
    second.done()
    assert all(n.lower() != VIEW.lower() for n in view_names())
