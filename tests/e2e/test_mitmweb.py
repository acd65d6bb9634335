"""End to end: a real mitmweb with the addon shows the "Certificate Transparency" contentview.

A real curl goes through a real mitmweb (the addon loaded as a ``-s`` script) to an
``openssl s_server`` origin that serves SCTs by all three paths: embedded in its certificate,
in the TLS extension and in a stapled OCSP response. The test then reads what mitmweb's own
REST API serves its web UI: the flow list, and the flow's response through the contentview,
and runs commands through the REST command route (with the auth token mitmproxy 12 prints).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from expect_ct.ctview import VIEW_NAME
from support import pki
from support.mitmweb import CommandFailed
from support.mitmweb import Mitmweb
from support.origins import http_response
from support.origins import openssl_origin
from support.world import World
from support.world import proxy_options


@dataclass
class Run:
    web: Mitmweb
    port: int  # the origin's
    flow: dict[str, Any]


@contextlib.contextmanager
def all_three_origin(world: World, tmp_path: Path, tls: str = "1.3") -> Iterator[int]:
    ts = pki.now_ms() - 60_000
    a, b, inter = world.log_a, world.log_b, world.public_inter
    leaf, key = pki.make_leaf(inter, embedded=[(a, ts), (b, ts + 1)])
    with openssl_origin(
        tmp_path,
        cert_pem=pki.pem(leaf),
        key_pem=pki.key_pem(key),
        chain_pem=pki.pem(inter.cert),
        tls=tls,
        serverinfo=pki.serverinfo_pem(pki.tls_sct_list(leaf, [(b, ts + 2)])),
        ocsp_der=pki.ocsp_response(leaf, inter, sct_list=pki.tls_sct_list(leaf, [(a, ts + 3)])),
        responses={"index.html": http_response(headers=[("Expect-CT", "max-age=3600, enforce")])},
    ) as port:
        yield port


@pytest.fixture(scope="module")
def run(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    base = tmp_path_factory.mktemp("mitmweb")
    with all_three_origin(world, base) as port:
        with Mitmweb(base / "proxy", proxy_options(world, expect_ct_store=":memory:")) as web:
            response = web.curl(f"https://localhost:{port}/index.html")
            assert response.status == 200, response
            (flow,) = web.wait_for_flows(1)
            yield Run(web, port, flow)


def test_flow_list_carries_the_addons_verdict(run: Run) -> None:
    assert run.flow["request"]["port"] == run.port
    assert run.flow["comment"].startswith("CT: compliant (chrome; 4/4 valid SCTs")
    assert not run.flow["marked"]
    # mitmproxy 12 needs the token it printed; 11 prints none.
    assert ("?token=" in run.web.web_url) == (run.web.token is not None)


def test_contentview_shows_the_sct_table(run: Run) -> None:
    text = run.web.content_view(run.flow["id"], VIEW_NAME)
    lines = text.splitlines()
    assert lines[0] == f"Certificate Transparency: localhost:{run.port} (TLSv1.3)"
    header = next(i for i, line in enumerate(lines) if line.startswith("  #  Source"))
    assert lines[header - 1] == "SCTs (4)"
    rows = [line.split("  ") for line in lines[header + 1 : header + 5]]
    cells = [[c.strip() for c in row if c.strip()] for row in rows]
    assert [row[1:4] for row in cells] == [
        ["embedded", "Alpha Log 2026", "Alpha"],
        ["embedded", "Beta Log 2026", "Beta"],
        ["tls-extension", "Beta Log 2026", "Beta"],
        ["ocsp", "Alpha Log 2026", "Alpha"],
    ]
    assert [row[5] for row in cells] == ["valid"] * 4
    assert all(row[6] in ("yes", "no") for row in cells)
    assert "  response: max-age=3600, enforce" in text
    assert "Stored policy for localhost\n  Known host: yes: enforce" in text
    # The lower-case name (12's registry key, the UI's menu label) selects the same view.
    assert run.web.content_view(run.flow["id"], VIEW_NAME.lower()) == text


def test_contentview_is_listed_for_the_ui(run: Run) -> None:
    # mitmweb's /state lists the views its "View:" menu offers.
    state = run.web.request("GET", "/state")
    assert VIEW_NAME.lower() in [name.lower() for name in state["contentViews"]]


def test_commands_run_through_the_rest_route(run: Run) -> None:
    assert run.web.run_command("view.properties.length") == 1
    with pytest.raises(CommandFailed, match="view.flows.resolve"):
        run.web.run_command("view.flows.resolve", "~nonsense(")
    with pytest.raises(ValueError, match=r"\[a-z.\]\+"):
        run.web.run_command("expect_ct.hosts")  # the route cannot take an underscore
