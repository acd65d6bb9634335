"""Every ``expectct.*`` command through mitmweb's REST API, on mitmproxy 11 and 12.

A real mitmweb with the addon built in (``python -m expect_ct mitmweb``), a real SQLite store
file, and one real flow: a real curl through the proxy to an ``openssl s_server`` origin that
serves SCTs embedded, in the TLS extension and in a stapled OCSP response, and
``Expect-CT: max-age=3600, enforce`` (so the store knows ``localhost``); curl sends
``Expect-CT: max-age=0`` in its request, which the store must ignore. Each command is then
run as mitmweb's own front end runs it: ``POST /commands/<name>`` with ``{"arguments": [...]}``,
the XSRF cookie and header, and on mitmproxy 12 the token mitmweb printed
(``support.mitmweb.Mitmweb.run_command``); the test asserts the JSON value each returns.

The tests run in file order on one mitmweb: the store-changing commands come last.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from support.collector import https_collector
from support.collector import make_collector_pki
from support.mitmweb import CommandFailed
from support.mitmweb import Mitmweb
from support.mitmweb import all_three_origin
from support.world import World
from support.world import proxy_options

COMMANDS = {
    "expectct.hosts",
    "expectct.forget",
    "expectct.clear",
    "expectct.testreport",
    "expectct.check",
    "expectct.export",
    "expectct.show",
}
# The log-list commands (issue 15); test_loglist_refresh.py also calls them over REST while a
# real refresh turns a stale list fresh.
LOG_LIST_COMMANDS = {"expectct.loglist", "expectct.loglist.update"}


@dataclass
class Run:
    web: Mitmweb
    port: int  # the origin's
    flow: dict[str, Any]
    tmp: Path


@pytest.fixture(scope="module")
def run(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    tmp = tmp_path_factory.mktemp("commands-rest")
    options = proxy_options(world, expect_ct_store=str(tmp / "known.sqlite3"))
    with all_three_origin(world, tmp) as port:
        with Mitmweb(tmp / "proxy", options, built_in=True) as web:
            # The client also sends Expect-CT (recorded, never applied to the store).
            url = f"https://localhost:{port}/index.html"
            assert web.curl(url, headers=["Expect-CT: max-age=0"]).status == 200
            (flow,) = web.wait_for_flows(1)
            yield Run(web, port, flow, tmp)


def test_every_expectct_command_is_offered_to_mitmweb(run: Run) -> None:
    listed = {name for name in run.web.request("GET", "/commands") if name.startswith("expectct.")}
    assert COMMANDS | LOG_LIST_COMMANDS == listed, "a new command needs its REST case here"


def test_loglist_with_updates_off(run: Run) -> None:
    status = run.web.run_command("expectct.loglist")
    assert status["source"] == "off"  # the test proxies set expect_ct_log_list_update=off
    assert status["logs"] == 2 and status["blocking_suspended"] is False
    with pytest.raises(CommandFailed, match="updates are off"):
        run.web.run_command("expectct.loglist.update")


def test_show(run: Run) -> None:
    value = run.web.run_command("expectct.show", "@all")
    assert value == {
        "flows": [
            {
                "flow": run.flow["id"],
                "where": f"GET https://localhost:{run.port}/index.html",
                "verdict": run.flow["comment"].split(" | ")[0],
            }
        ]
    }
    assert value["flows"][0]["verdict"].startswith("CT: compliant (chrome; 4/4 valid SCTs")
    # A filter expression selects flows too; one that matches nothing gives an empty list.
    assert (
        run.web.run_command("expectct.show", "~d localhost")["flows"][0]["flow"] == (run.flow["id"])
    )
    assert run.web.run_command("expectct.show", "~d elsewhere.test") == {"flows": []}


def test_check(run: Run) -> None:
    value = run.web.run_command("expectct.check", "@all")
    assert value == {"checked": 1, "counts": {"compliant": 1}}
    # Re-evaluated from the handshake SCTs the metadata kept: still all four.
    (flow,) = run.web.flows()
    assert flow["comment"].startswith("CT: compliant (chrome; 4/4 valid SCTs")


def test_export_json_and_csv(run: Run) -> None:
    target = run.tmp / "ct.json"
    assert run.web.run_command("expectct.export", "@all", str(target)) == {
        "path": str(target),
        "flows": 1,
    }
    (row,) = json.loads(target.read_text())
    assert (row["host"], row["port"], row["compliant"]) == ("localhost", run.port, True)
    assert row["valid_scts"] == 4 and row["header_action"] == "noted"
    assert row["expect_ct"]["header"]["direction"] == "response"
    assert row["request_header"] == "max-age=0"
    assert row["expect_ct"]["request_header"]["direction"] == "request"
    table = run.tmp / "ct.csv"
    assert run.web.run_command("expectct.export", "@all", str(table))["flows"] == 1
    with table.open(newline="") as f:
        (line,) = list(csv.DictReader(f))
    assert (line["url"], line["sources"], line["request_header"]) == (
        f"https://localhost:{run.port}/index.html",
        "embedded ocsp tls-extension",
        "max-age=0",
    )
    with pytest.raises(CommandFailed, match=r"must end in \.json or \.csv"):
        run.web.run_command("expectct.export", "@all", str(run.tmp / "ct.txt"))
    assert not (run.tmp / "ct.txt").exists()


def test_hosts(run: Run) -> None:
    # Known from the response's header; the request's max-age=0 removed nothing.
    (host,) = run.web.run_command("expectct.hosts")["hosts"]
    assert (host["host"], host["enforce"], host["report_uri"]) == ("localhost", True, None)
    assert host["expires"].endswith("Z")


def test_testreport(run: Run) -> None:
    value = run.web.run_command("expectct.testreport", "localhost", "https://r.example/ct")
    # The host's last connection gives the port; expect_ct_reports=off: not sent.
    assert value == {
        "host": "localhost",
        "port": run.port,
        "report_uri": "https://r.example/ct",
        "delivery": "disabled",
    }
    # The origin's header named no report-uri, and none was given.
    with pytest.raises(CommandFailed, match="give a report-uri"):
        run.web.run_command("expectct.testreport", "localhost")


def test_testreport_with_reports_on_reaches_the_collector(world: World, tmp_path: Path) -> None:
    """A second mitmweb that sends reports: the command queues the report, a real HTTPS
    collector on 127.0.0.1 receives it."""
    files = make_collector_pki(tmp_path / "collector")
    trust = tmp_path / "trust.pem"
    trust.write_bytes(world.upstream_trust_pem.read_bytes() + files.root_pem.read_bytes())
    options = proxy_options(
        world,
        expect_ct_store=":memory:",
        ssl_verify_upstream_trusted_ca=str(trust),
        expect_ct_reports="send",
        expect_ct_report_allow_private=True,
    )
    with https_collector(files) as collector, Mitmweb(tmp_path / "proxy", options) as web:
        uri = collector.uri("/rest")
        value = web.run_command("expectct.testreport", "never.test", uri)
        assert value == {"host": "never.test", "port": 443, "report_uri": uri, "delivery": "queued"}
        # The CORS preflight (OPTIONS), then the report (POST), as Chromium sends them.
        preflight, received = collector.wait_for(2, "/rest")
        event = web.wait_for_event("report", lambda r: r["report_uri"] == uri)
    assert (preflight.method, received.method) == ("OPTIONS", "POST")
    report = json.loads(received.body)["expect-ct-report"]
    assert (report["hostname"], report["port"], report["test-report"]) == ("never.test", 443, True)
    assert event["delivery"] == "sent"


def test_forget_and_clear(run: Run) -> None:
    with pytest.raises(CommandFailed, match="invalid host .bad host!."):
        run.web.run_command("expectct.forget", "bad host!")
    assert run.web.run_command("expectct.forget", "LOCALHOST") == {
        "host": "LOCALHOST",
        "forgotten": True,
    }
    assert run.web.run_command("expectct.hosts") == {"hosts": []}
    assert run.web.run_command("expectct.forget", "localhost") == {
        "host": "localhost",
        "forgotten": False,
    }
    assert run.web.run_command("expectct.clear") == {"removed": 0}


def test_the_old_names_cannot_reach_the_route(run: Run) -> None:
    # Why the commands were renamed: the route takes no underscore (405 on 11, 404 on 12).
    with pytest.raises(AssertionError, match=r"HTTP (404|405)"):
        run.web.request("POST", "/commands/expect_ct.hosts", {"arguments": []})
