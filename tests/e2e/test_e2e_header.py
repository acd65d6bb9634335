"""End to end: a real mitmdump with the addon, real origins on 127.0.0.1, a real curl.

The addon must see every response's Expect-CT header, parse it, and record what it saw in
the JSON-lines log and on the flow, without changing what the client receives.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from support.httpsorigin import http_origin
from support.httpsorigin import https_origin
from support.proxy import Mitmdump
from support.world import World
from support.world import proxy_options

ROUTES = {
    "/valid": [("Expect-CT", 'max-age=86400, enforce, report-uri="https://r.example/ct"')],
    "/invalid": [("Expect-CT", "max-age=abc")],
    "/duplicate": [("Expect-CT", "max-age=1, max-age=2")],
    "/multi": [("Expect-CT", "max-age=100"), ("Expect-CT", "enforce")],
    "/multi-dup": [("Expect-CT", "max-age=100"), ("Expect-CT", "max-age=100")],
    "/http-report-uri": [("Expect-CT", 'max-age=5, report-uri="http://r.example/ct"')],
    "/control": [("Expect-CT", 'max-age=1, x="a\tb"')],
    "/none": [],
}


@pytest.fixture(scope="module")
def compliant_proxy(world: World, tmp_path_factory: pytest.TempPathFactory):
    workdir = tmp_path_factory.mktemp("e2e-header")
    with https_origin(world.compliant.chain_pem, world.compliant.key_pem, ROUTES) as origin:
        with Mitmdump(workdir, proxy_options(world, expect_ct_store=":memory:")) as proxy:
            yield proxy, origin


def header_event(proxy: Mitmdump, origin_port: int, path_values: list[str]) -> dict:
    return proxy.wait_for_event(
        "header", lambda r: r["port"] == origin_port and r["values"] == path_values
    )


def test_valid_header_is_recorded_and_client_gets_it_unchanged(compliant_proxy) -> None:
    proxy, origin = compliant_proxy
    response = proxy.curl(origin.url("/valid"))
    assert response.status == 200
    assert (
        response.headers["expect-ct"] == 'max-age=86400, enforce, report-uri="https://r.example/ct"'
    )
    event = header_event(proxy, origin.port, [ROUTES["/valid"][0][1]])
    assert event["host"] == "localhost"
    assert event["valid"] is True and event["error"] is None
    assert (event["max_age"], event["enforce"], event["report_uri"]) == (
        86400,
        True,
        "https://r.example/ct",
    )
    assert event["action"] in ("noted", "updated")
    assert event["time"].endswith("Z")


def test_invalid_header_is_recorded_as_ignored_with_the_error(compliant_proxy) -> None:
    proxy, origin = compliant_proxy
    assert proxy.curl(origin.url("/invalid")).status == 200
    event = header_event(proxy, origin.port, ["max-age=abc"])
    assert event["valid"] is False
    assert "max-age" in event["error"]
    assert event["action"] == "ignored"
    assert "malformed" in event["why"]


def test_duplicated_directive_is_invalid(compliant_proxy) -> None:
    proxy, origin = compliant_proxy
    proxy.curl(origin.url("/duplicate"))
    event = header_event(proxy, origin.port, ["max-age=1, max-age=2"])
    assert event["valid"] is False and "max-age" in event["error"]


def test_several_fields_combine_as_one_list(compliant_proxy) -> None:
    proxy, origin = compliant_proxy
    proxy.curl(origin.url("/multi"))
    event = header_event(proxy, origin.port, ["max-age=100", "enforce"])
    assert event["valid"] is True
    assert (event["max_age"], event["enforce"]) == (100, True)


def test_same_directive_in_two_fields_is_a_duplicate(compliant_proxy) -> None:
    proxy, origin = compliant_proxy
    proxy.curl(origin.url("/multi-dup"))
    event = header_event(proxy, origin.port, ["max-age=100", "max-age=100"])
    assert event["valid"] is False


def test_http_report_uri_is_dropped_by_the_rfc_dialect(compliant_proxy) -> None:
    proxy, origin = compliant_proxy
    proxy.curl(origin.url("/http-report-uri"))
    event = header_event(proxy, origin.port, [ROUTES["/http-report-uri"][0][1]])
    assert event["valid"] is True and event["report_uri"] is None


def test_response_without_header_writes_no_header_event(compliant_proxy) -> None:
    proxy, origin = compliant_proxy
    assert proxy.curl(origin.url("/none")).status == 200
    proxy.wait_for_event("connection", lambda r: r["port"] == origin.port)
    assert not [e for e in proxy.events("header") if e["values"] == []]


def test_header_over_plain_http_is_ignored(world: World, tmp_path: Path) -> None:
    with http_origin({"/": [("Expect-CT", "max-age=86400, enforce")]}) as origin:
        with Mitmdump(tmp_path, proxy_options(world, expect_ct_store=":memory:")) as proxy:
            response = proxy.curl(origin.url("/"))
            assert response.status == 200
            event = proxy.wait_for_event("header")
    assert event["port"] == origin.port
    assert event["valid"] is True
    assert event["action"] == "ignored"
    assert "plain HTTP" in event["why"]


def test_chromium_dialect_accepts_what_rfc_rejects(world: World, tmp_path: Path) -> None:
    routes = {"/": [("Expect-CT", "max-age = 99999999, report-uri=http://r.example/x")]}
    with https_origin(world.compliant.chain_pem, world.compliant.key_pem, routes) as origin:
        with Mitmdump(
            tmp_path,
            proxy_options(world, expect_ct_store=":memory:", expect_ct_dialect="chromium"),
        ) as proxy:
            proxy.curl(origin.url("/"))
            event = proxy.wait_for_event("header")
    assert event["valid"] is True
    assert event["max_age"] == 2592000
    assert event["report_uri"] == "http://r.example/x"


@pytest.mark.parametrize("loading", ["script", "built-in"])
def test_mitmdump_prints_a_line_per_distinct_connection_and_header_and_a_summary(
    world: World, tmp_path: Path, loading: str
) -> None:
    routes = {"/": [("Expect-CT", "max-age=5")]}
    with https_origin(world.compliant.chain_pem, world.compliant.key_pem, routes) as origin:
        proxy = Mitmdump(
            tmp_path,
            proxy_options(world, expect_ct_store=":memory:"),
            built_in=loading == "built-in",
        )
        with proxy:
            for _ in range(3):  # three connections, the same header each time
                assert proxy.curl(origin.url("/")).status == 200
        code = proxy.stop()
    log = proxy.log_text()
    assert code in (0, None)
    # The same compliant verdict for the same host within a minute is logged once, counted
    # in the summary.
    assert log.count(f"Expect-CT: localhost:{origin.port} TLSv1.3 public chain: CT: compliant") == 1
    assert "repeats not logged     2" in log
    # Identical headers with an identical verdict are processed once a minute, not per flow.
    assert log.count("header 'max-age=5'") == 1
    summary = log.split("Expect-CT summary:", 1)[1]
    assert "connections evaluated  3" in summary
    assert "known hosts noted      1" in summary
    assert "hosts seen             1" in summary


def test_mitmweb_with_the_addon_built_in_checks_connections(world: World, tmp_path: Path) -> None:
    with socket.socket() as probe:  # a free port for mitmweb's web interface
        probe.bind(("127.0.0.1", 0))
        web_port = probe.getsockname()[1]
    web = ["--web-host", "127.0.0.1", "--web-port", str(web_port), "--no-web-open-browser"]
    routes = {"/": [("Expect-CT", "max-age=60")]}
    with https_origin(world.compliant.chain_pem, world.compliant.key_pem, routes) as origin:
        proxy = Mitmdump(
            tmp_path,
            proxy_options(world, expect_ct_store=":memory:"),
            built_in=True,
            tool="mitmweb",
            extra_args=web,
        )
        with proxy:
            assert proxy.curl(origin.url("/")).status == 200
            connection = proxy.wait_for_event("connection")
            header = proxy.wait_for_event("header")
    assert connection["compliant"] is True and connection["chain"] == "public"
    assert header["action"] == "noted"
    assert f"127.0.0.1:{web_port}" in proxy.log_text()  # it really was mitmweb
