"""End to end: a real mitmweb with the addon shows the "Certificate Transparency" contentview.

A real curl goes through a real mitmweb (the addon loaded as a ``-s`` script) to an
``openssl s_server`` origin that serves SCTs by all three paths: embedded in its certificate,
in the TLS extension and in a stapled OCSP response. The test then reads what mitmweb's own
REST API serves its web UI: the flow list, and the flow's response through the contentview,
and runs commands through the REST command route (with the auth token mitmproxy 12 prints).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from expect_ct.ctview import VIEW_NAME
from support.mitmweb import CommandFailed
from support.mitmweb import Mitmweb
from support.mitmweb import all_three_origin
from support.world import World
from support.world import proxy_options


@dataclass
class Run:
    web: Mitmweb
    port: int  # the origin's
    flow: dict[str, Any]


@pytest.fixture(scope="module")
def run(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    base = tmp_path_factory.mktemp("mitmweb")
    with all_three_origin(world, base) as port:
        with Mitmweb(base / "proxy", proxy_options(world, expect_ct_store=":memory:")) as web:
            # The client sends Expect-CT too: the view shows both headers.
            url = f"https://localhost:{port}/index.html"
            response = web.curl(url, headers=["Expect-CT: max-age=0"])
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
    assert "SCTs (4)" in lines
    # An SCT row: its number, then its source; the reason it counted or not is under it.
    cells = [
        [cell.strip() for cell in line.split("  ") if cell.strip()]
        for line in lines
        if re.match(r"\s*\d+\s+(embedded|tls-extension|ocsp)\s", line)
    ]
    assert [row[1:4] for row in cells] == [
        ["embedded", "Alpha Log 2026", "Alpha"],
        ["embedded", "Beta Log 2026", "Beta"],
        ["tls-extension", "Beta Log 2026", "Beta"],
        ["ocsp", "Alpha Log 2026", "Alpha"],
    ]
    assert [row[5] for row in cells] == ["valid"] * 4
    assert all(row[6] in ("yes", "no") for row in cells)
    assert (
        "Expect-CT headers\n"
        "  request: max-age=0\n"
        "    valid: max-age 0 s, report-only\n"
        "    action: ignored (sent by the client; a request header never changes the Known "
        "Expect-CT Hosts)\n"
        "  response: max-age=3600, enforce\n"
        "    valid: max-age 3600 s, enforce\n"
        "    action: noted (valid header on a CT-compliant connection; known for 3600 s)\n"
    ) in text
    assert "Stored policy for localhost\n  Known host: yes: enforce" in text
    # The request tab's view menu offers the same view of the flow (README).
    assert run.web.content_view(run.flow["id"], VIEW_NAME, message="request") == text
    # The lower-case name (12's registry key, the UI's menu label) selects the same view.
    assert run.web.content_view(run.flow["id"], VIEW_NAME.lower()) == text


def test_contentview_is_listed_for_the_ui(run: Run) -> None:
    # mitmweb's /state lists the views its "View:" menu offers.
    state = run.web.request("GET", "/state")
    assert VIEW_NAME.lower() in [name.lower() for name in state["contentViews"]]


@pytest.mark.parametrize(
    ("flow_filter", "matches"),
    [
        ("~meta \"'compliant': True\"", True),
        ("~meta \"'compliant': False\"", False),
        ("~meta \"'action': 'noted'\"", True),
        ("~meta \"'direction': 'request'\"", True),
        ("~meta \"'valid': False\"", False),
        ('~comment "CT: compliant"', True),
        ("~marked", False),
        ("~marker :no_entry:", False),
    ],
)
def test_readme_filters_select_flows_in_mitmweb(run: Run, flow_filter: str, matches: bool) -> None:
    saved = run.web.dump(flow_filter)
    assert bool(saved) is matches, (flow_filter, saved[:80])


def test_commands_run_through_the_rest_route(run: Run) -> None:
    assert run.web.run_command("view.properties.length") == 1
    with pytest.raises(CommandFailed, match="view.flows.resolve"):
        run.web.run_command("view.flows.resolve", "~nonsense(")
    with pytest.raises(ValueError, match=r"\[a-z.\]\+"):
        run.web.run_command("expect_ct.hosts")  # the route cannot take an underscore
