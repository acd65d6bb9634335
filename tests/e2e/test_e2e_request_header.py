"""End to end: a client's Expect-CT request header through a real mitmdump.

A real curl sends ``-H 'Expect-CT: max-age=0'`` through a real mitmdump with the addon to a
real HTTPS origin on 127.0.0.1 whose host the Known Expect-CT Hosts store (a real SQLite
file) already knows. The header is recorded, in the JSON-lines log as a ``header`` event with
``direction: "request"``, in mitmproxy's event log and in the flow's metadata (read back
from the ``.mitm`` file mitmdump wrote), and the store is unchanged: max-age=0 from the
site removes a host, from a client it removes nothing.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from mitmproxy import http
from mitmproxy import io as mio

from support.httpsorigin import https_origin
from support.proxy import Mitmdump
from support.world import World
from support.world import proxy_options

ROUTES = {
    "/note": [("Expect-CT", 'max-age=86400, enforce, report-uri="https://r.example/ct"')],
    "/plain": [],
}


def known_hosts(store: Path) -> list[dict[str, Any]]:
    """The store as ``python -m expect_ct hosts --json`` lists it (a separate process)."""
    done = subprocess.run(
        [sys.executable, "-m", "expect_ct", "hosts", "--store", str(store), "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_a_clients_request_header_is_recorded_and_the_store_is_unchanged(
    world: World, tmp_path: Path
) -> None:
    store = tmp_path / "known.sqlite3"
    flows = tmp_path / "flows.mitm"
    options = proxy_options(world, expect_ct_store=str(store))
    with https_origin(world.compliant.chain_pem, world.compliant.key_pem, ROUTES) as origin:
        with Mitmdump(tmp_path / "proxy", options, extra_args=["-w", str(flows)]) as proxy:
            # The site makes its host Known.
            assert proxy.curl(origin.url("/note")).status == 200
            noted = proxy.wait_for_event("header", lambda r: r["direction"] == "response")
            assert noted["action"] == "noted"
            before = known_hosts(store)
            assert [(h["host"], h["enforce"]) for h in before] == [("localhost", True)]

            # A client sends Expect-CT in its request, over HTTP/1.1 and HTTP/2.
            one = proxy.curl(origin.url("/plain"), headers=["Expect-CT: max-age=0"])
            two = proxy.curl(
                origin.url("/plain"), headers=["Expect-CT: max-age=1, enforce"], http2=True
            )
            assert (one.status, two.status) == (200, 200)
            recorded = [
                proxy.wait_for_event(
                    "header", lambda r, v=values: r["direction"] == "request" and r["values"] == v
                )
                for values in (["max-age=0"], ["max-age=1, enforce"])
            ]
            # Client text with an ANSI escape and a bidi override: escaped in every log.
            evil = 'Expect-CT: max-age=2, x="\x1b[31m\u202e"'
            assert proxy.curl(origin.url("/plain"), headers=[evil]).status == 200
            hostile = proxy.wait_for_event(
                "header",
                lambda r: r["direction"] == "request" and r["values"][0].startswith("max-age=2"),
            )
            after = known_hosts(store)
        log = proxy.log_text()
        raw_events = proxy.event_log.read_text()

    for event, (max_age, enforce) in zip(recorded, [(0, False), (1, True)], strict=True):
        assert (event["host"], event["port"]) == ("localhost", origin.port)
        assert (event["valid"], event["max_age"], event["enforce"]) == (True, max_age, enforce)
        assert event["action"] == "ignored"
        assert "never changes the Known Expect-CT Hosts" in event["why"]
    # Neither max-age=0 nor a new policy from the client changed the stored entry.
    assert after == before
    assert "request header 'max-age=0' from the client (valid): ignored" in log
    assert hostile["values"] == ['max-age=2, x="\x1b[31m\u202e"']  # as sent, in JSON
    assert hostile["valid"] is False and "U+001B" in hostile["error"]
    assert raw_events.isascii()
    assert """request header 'max-age=2, x="\\x1b[31m\\u202e"' from the client""" in log
    assert "\x1b[31m" not in log and "\u202e" not in log

    saved = [f for f in mio.FlowReader(flows.open("rb")).stream() if isinstance(f, http.HTTPFlow)]
    assert [f.request.path for f in saved] == ["/note", "/plain", "/plain", "/plain"]
    metas = [f.metadata["expect_ct"] for f in saved]
    assert "request_header" not in metas[0]
    assert metas[0]["header"]["direction"] == "response"
    assert [m["request_header"]["values"] for m in metas[1:3]] == [
        ["max-age=0"],
        ["max-age=1, enforce"],
    ]
    assert all(m["request_header"]["direction"] == "request" for m in metas[1:])
    assert all("header" not in m for m in metas[1:])  # the origin sent none on /plain
    assert saved[1].comment.endswith(" | client sent Expect-CT")
