"""A client's Expect-CT request header, in-process (mitmproxy.test.taddons).

Recorded as a ``header`` event with ``direction: "request"`` (the response's get
``"response"``), parsed with the same grammar, shown on the flow and in the contentview; it
never changes the Known Expect-CT Hosts store, whatever it says. A real store file, the real
log list and roots of the test world, real certificates; the e2e counterpart (a real curl
through a real mitmdump) is tests/e2e/test_e2e_request_header.py.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mitmproxy import connection
from mitmproxy import http
from mitmproxy.test import tflow

from expect_ct import contentview
from expect_ct import ctview
from support.inprocess import Loaded
from support.inprocess import handshake
from support.inprocess import load_addon
from support.world import World

HOST = "localhost"


@pytest.fixture
def loaded(world: World, tmp_path: Path) -> Iterator[Loaded]:
    with load_addon(world, tmp_path, expect_ct_log=str(tmp_path / "events.jsonl")) as running:
        yield running


def events(loaded: Loaded) -> list[dict[str, Any]]:
    path = loaded.store_path.parent / "events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def compliant_upstream(loaded: Loaded, world: World) -> connection.Server:
    upstream = connection.Server(address=(HOST, 443), sni=HOST)
    chain = (world.compliant.cert, world.public_inter.cert)
    assert loaded.addon.judge.decide(upstream, handshake(chain)) is True
    return upstream


def request_on(
    loaded: Loaded, upstream: connection.Server, *fields: tuple[bytes, bytes]
) -> http.HTTPFlow:
    flow = tflow.tflow(server_conn=upstream)
    flow.request.url = f"https://{HOST}/"
    for name, value in fields:
        flow.request.headers.fields = (*flow.request.headers.fields, (name, value))
    loaded.addon.request(flow)
    return flow


def test_a_request_header_is_recorded_and_never_changes_the_store(
    loaded: Loaded, world: World, caplog: pytest.LogCaptureFixture
) -> None:
    loaded.store.observe(HOST, max_age=3600, enforce=True, report_uri=None)
    before = loaded.store.get(HOST)
    upstream = compliant_upstream(loaded, world)
    with caplog.at_level(logging.INFO, logger="expect_ct"):
        flow = request_on(loaded, upstream, (b"Expect-CT", b"max-age=0"))
    # max-age=0 in a response would remove the host (RFC 9163 2.3.2); from a client it is
    # only recorded.
    assert loaded.store.get(HOST) == before
    meta = flow.metadata["expect_ct"]
    assert meta["request_header"] == {
        "direction": "request",
        "values": ["max-age=0"],
        "valid": True,
        "error": None,
        "max_age": 0,
        "enforce": False,
        "report_uri": None,
        "action": "ignored",
        "why": "sent by the client; a request header never changes the Known Expect-CT Hosts",
    }
    assert "header" not in meta  # no response yet
    assert flow.comment.endswith(" | client sent Expect-CT")
    assert not flow.marked
    (line,) = [r.getMessage() for r in caplog.records if "request header" in r.getMessage()]
    assert line.startswith(f"Expect-CT: {HOST}:443 request header 'max-age=0' from the client")
    (event,) = [e for e in events(loaded) if e["event"] == "header"]
    assert event["direction"] == "request" and event["host"] == HOST and event["port"] == 443
    assert {k: v for k, v in event.items() if k not in ("time", "event", "host", "port")} == (
        meta["request_header"]
    )

    # The response's own header is applied as always, and its event says "response".
    assert flow.response is None
    flow.response = http.Response.make(200, b"", {"Expect-CT": "max-age=0"})
    loaded.addon.response(flow)
    assert loaded.store.get(HOST) is None
    assert meta["header"]["direction"] == "response" and meta["header"]["action"] == "removed"
    assert [e["direction"] for e in events(loaded) if e["event"] == "header"] == [
        "request",
        "response",
    ]


def test_a_client_cannot_make_a_host_known(loaded: Loaded, world: World) -> None:
    upstream = compliant_upstream(loaded, world)
    header = b'max-age=86400, enforce, report-uri="https://r.test/ct"'
    flow = request_on(loaded, upstream, (b"Expect-CT", header))
    assert flow.metadata["expect_ct"]["request_header"]["enforce"] is True
    assert list(loaded.store.hosts()) == []
    assert loaded.addon.stats["header_noted"] == 0
    assert loaded.addon.stats["request_headers"] == 1


def test_an_invalid_request_header_is_recorded_without_marking_the_flow(
    loaded: Loaded, world: World
) -> None:
    upstream = compliant_upstream(loaded, world)
    flow = request_on(loaded, upstream, (b"Expect-CT", b"max-age=soon"))
    header = flow.metadata["expect_ct"]["request_header"]
    assert header["valid"] is False and "max-age" in header["error"]
    # A client's malformed header says nothing about the site's certificates.
    assert not flow.marked
    assert flow.comment.endswith(" | client sent Expect-CT (invalid)")


def test_client_text_is_escaped_in_the_metadata_the_log_and_the_view(
    loaded: Loaded, world: World, caplog: pytest.LogCaptureFixture
) -> None:
    upstream = compliant_upstream(loaded, world)
    evil = b'max-age=1, report-uri="https://r.test/\x1b[31m\xe2\x80\xae\xff"'
    with caplog.at_level(logging.INFO, logger="expect_ct"):
        flow = request_on(loaded, upstream, (b"Expect-CT", evil))
    header = flow.metadata["expect_ct"]["request_header"]
    # The non-UTF-8 byte is stored as the text \xff (a .mitm file and JSON can hold that).
    assert header["values"] == ['max-age=1, report-uri="https://r.test/\x1b[31m\u202e\\xff"']
    (line,) = [r.getMessage() for r in caplog.records if "request header" in r.getMessage()]
    # As for a response header: escaped as a string literal (the lone surrogate mitmproxy
    # decodes the byte 0xff to is \udcff there).
    assert "\\x1b[31m\\u202e\\udcff" in line and "\x1b" not in line and "\u202e" not in line
    raw = (loaded.store_path.parent / "events.jsonl").read_text()
    assert raw.isascii()  # nothing a client sends can break a line of the JSON-lines log
    (event,) = [e for e in events(loaded) if e["event"] == "header"]
    assert event["values"] == header["values"] and event["direction"] == "request"
    _description, lines = contentview.render_flow(flow)
    shown = ctview.to_text(lines)
    assert '  request: max-age=1, report-uri="https://r.test/\\x1b[31m\\u202e\\xff"' in shown
    assert all(ch.isprintable() for row in shown.splitlines() for ch in row)


def test_a_repeated_request_header_is_recorded_once_a_minute(loaded: Loaded, world: World) -> None:
    upstream = compliant_upstream(loaded, world)
    first = request_on(loaded, upstream, (b"Expect-CT", b"max-age=60"))
    again = request_on(loaded, upstream, (b"Expect-CT", b"max-age=60"))
    other = request_on(loaded, upstream, (b"Expect-CT", b"max-age=61"))
    header = first.metadata["expect_ct"]["request_header"]
    assert again.metadata["expect_ct"]["request_header"] is header
    assert other.metadata["expect_ct"]["request_header"]["max_age"] == 61
    assert loaded.addon.stats["request_header_repeats"] == 1
    assert [e["values"] for e in events(loaded) if e["event"] == "header"] == [
        ["max-age=60"],
        ["max-age=61"],
    ]


def test_plain_http_request_header_is_recorded_too(loaded: Loaded) -> None:
    flow = tflow.tflow()
    flow.request.url = "http://plain.test:8080/"
    flow.request.headers["Expect-CT"] = "max-age=5"
    loaded.addon.request(flow)
    meta = flow.metadata["expect_ct"]
    assert (meta["request_header"]["direction"], meta["request_header"]["max_age"]) == (
        "request",
        5,
    )
    assert "connection" not in meta
    (event,) = [e for e in events(loaded) if e["event"] == "header"]
    assert (event["host"], event["port"]) == ("plain.test", 8080)
    text = ctview.to_text(contentview.render_flow(flow)[1])
    assert "Expect-CT headers\n  request: max-age=5\n    valid: max-age 5 s, report-only" in text


def test_a_request_without_the_header_records_nothing(loaded: Loaded, world: World) -> None:
    upstream = compliant_upstream(loaded, world)
    flow = request_on(loaded, upstream)
    assert "request_header" not in flow.metadata["expect_ct"]
    assert loaded.addon.stats["request_headers"] == 0
