"""Interactive commands on real flows: recorded by a real mitmdump, loaded from its file.

expectct.show, expectct.check (re-evaluate saved flows against the current log list and
policy) and expectct.export (.json / .csv).
"""

from __future__ import annotations

import csv
import datetime
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from mitmproxy import exceptions
from mitmproxy import flowfilter
from mitmproxy import http
from mitmproxy import io
from mitmproxy.test import taddons

from expect_ct.addon import ExpectCT
from support import pki
from support.httpsorigin import https_origin
from support.proxy import Mitmdump
from support.world import World
from support.world import proxy_options


@pytest.fixture(scope="module")
def saved_flows(world: World, tmp_path_factory: pytest.TempPathFactory) -> list[http.HTTPFlow]:
    """Flows through a compliant and a non-compliant origin, as mitmdump saved them."""
    workdir = tmp_path_factory.mktemp("commands")
    flows_file = workdir / "flows.mitm"
    routes = {"/": [("Expect-CT", "max-age=100")]}
    with (
        https_origin(world.compliant.chain_pem, world.compliant.key_pem, routes) as good,
        https_origin(world.non_compliant.chain_pem, world.non_compliant.key_pem, routes) as bad,
    ):
        options = proxy_options(world, expect_ct_store=":memory:", expect_ct_enforce="off")
        with Mitmdump(workdir, options, extra_args=["-w", str(flows_file)]) as proxy:
            assert proxy.curl(good.url("/")).status == 200
            assert proxy.curl(bad.url("/")).status == 200
    with open(flows_file, "rb") as f:
        flows = [x for x in io.FlowReader(f).stream() if isinstance(x, http.HTTPFlow)]
    assert len(flows) == 2
    return flows


@pytest.fixture
def addon(world: World, tmp_path: Path) -> Iterator[tuple[ExpectCT, taddons.context]]:
    a = ExpectCT()
    with taddons.context(a) as tctx:
        tctx.configure(
            a,
            confdir=str(tmp_path),
            expect_ct_store=":memory:",
            expect_ct_log_list=str(world.log_list),
            expect_ct_public_roots=str(world.public_roots_pem),
            ssl_verify_upstream_trusted_ca=str(world.upstream_trust_pem),
        )
        yield a, tctx
    a.done()


def by_port(flows: list[http.HTTPFlow]) -> dict[bool, http.HTTPFlow]:
    return {f.metadata["expect_ct"]["connection"]["compliant"]: f for f in flows}


def test_saved_flows_carry_the_analysis(saved_flows: list[http.HTTPFlow]) -> None:
    flows = by_port(saved_flows)
    good, bad = flows[True], flows[False]
    assert good.metadata["expect_ct"]["connection"]["chain"] == "public"
    assert good.comment.startswith("CT: compliant (chrome")
    assert not good.marked
    assert bad.marked == ":warning:"
    assert "NOT compliant" in bad.comment
    assert bad.metadata["expect_ct"]["header"]["action"] == "ignored"


def test_show_summarises_each_flow(
    addon: tuple[ExpectCT, taddons.context],
    saved_flows: list[http.HTTPFlow],
    caplog: pytest.LogCaptureFixture,
) -> None:
    a, _ = addon
    caplog.set_level(logging.INFO)
    a.commands.show(saved_flows)
    assert caplog.text.count("GET https://localhost:") == 2
    assert "CT: compliant" in caplog.text and "CT: NOT compliant" in caplog.text


def test_check_re_evaluates_against_the_current_log_list(
    world: World,
    addon: tuple[ExpectCT, taddons.context],
    saved_flows: list[http.HTTPFlow],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    a, tctx = addon
    flows = [f.copy() for f in saved_flows]
    good = by_port(flows)[True]
    # Beta's log is rejected in the new list: the once-compliant certificate has one SCT left.
    entries = [pki.LogEntry(world.log_a), pki.LogEntry(world.log_b, state="rejected")]
    new_list = tmp_path / "new_list.json"
    new_list.write_text(
        json.dumps(pki.log_list_json(entries, timestamp=datetime.datetime.now(datetime.UTC)))
    )
    tctx.configure(a, expect_ct_log_list=str(new_list))
    caplog.set_level(logging.INFO)
    a.commands.check(flows)
    connection = good.metadata["expect_ct"]["connection"]
    assert connection["compliant"] is False
    assert {s["log"]: s["counted"] for s in connection["scts"]} == {
        "Alpha Log 2026": True,
        "Beta Log 2026": False,
    }
    assert good.marked == ":warning:"
    assert "NOT compliant" in good.comment
    assert "re-checked 2 flows: 2 not compliant" in caplog.text


def test_check_with_the_original_list_keeps_the_verdicts(
    addon: tuple[ExpectCT, taddons.context], saved_flows: list[http.HTTPFlow]
) -> None:
    a, _ = addon
    flows = [f.copy() for f in saved_flows]
    a.commands.check(flows)
    assert sorted(f.metadata["expect_ct"]["connection"]["compliant"] for f in flows) == [
        False,
        True,
    ]


def test_export_csv_and_json(
    addon: tuple[ExpectCT, taddons.context], saved_flows: list[http.HTTPFlow], tmp_path: Path
) -> None:
    a, _ = addon
    a.commands.export(saved_flows, str(tmp_path / "ct.csv"))
    with open(tmp_path / "ct.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2
    assert {r["compliant"] for r in rows} == {"True", "False"}
    good = next(r for r in rows if r["compliant"] == "True")
    assert good["valid_scts"] == "2" and good["sources"] == "embedded"
    assert good["header"] == "max-age=100" and good["url"].startswith("https://localhost:")

    a.commands.export(saved_flows, str(tmp_path / "ct.json"))
    exported = json.loads((tmp_path / "ct.json").read_text())
    assert [e["expect_ct"] for e in exported] == [f.metadata["expect_ct"] for f in saved_flows]


def test_export_refuses_other_extensions(
    addon: tuple[ExpectCT, taddons.context], saved_flows: list[http.HTTPFlow], tmp_path: Path
) -> None:
    a, _ = addon
    with pytest.raises(exceptions.CommandError, match=r"\.json or \.csv"):
        a.commands.export(saved_flows, str(tmp_path / "ct.txt"))
    assert not (tmp_path / "ct.txt").exists()


@pytest.mark.parametrize(
    "expression, compliant_flows",
    [
        ("~meta \"'compliant': False\"", [False]),
        ("~meta \"'compliant': True\"", [True]),
        ("~meta \"'chain': 'public'\"", [False, True]),
        ("~marker :warning:", [False]),
        ('~comment "NOT compliant"', [False]),
        ("~meta \"'action': 'ignored'\"", [False]),
    ],
)
def test_documented_filters_select_the_right_flows(
    saved_flows: list[http.HTTPFlow], expression: str, compliant_flows: list[bool]
) -> None:
    matches = flowfilter.parse(expression)
    selected = [f for f in saved_flows if matches(f)]
    assert sorted(f.metadata["expect_ct"]["connection"]["compliant"] for f in selected) == (
        compliant_flows
    )
