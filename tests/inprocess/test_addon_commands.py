"""The addon's commands (expectct.*, and the expect_ct.* aliases kept for one release), what
they return, and the option checks of issue 14: in-process (mitmproxy.test.taddons)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from mitmproxy import connection
from mitmproxy import exceptions
from mitmproxy.test import taddons
from mitmproxy.test import tflow

from expect_ct.addon import ExpectCT
from support import pki
from support.inprocess import Loaded
from support.inprocess import handshake
from support.inprocess import load_addon
from support.world import World

NEW_NAMES = (
    "expectct.hosts",
    "expectct.forget",
    "expectct.clear",
    "expectct.testreport",
    "expectct.check",
    "expectct.export",
    "expectct.show",
)
OLD_NAMES = (
    "expect_ct.hosts",
    "expect_ct.forget",
    "expect_ct.clear",
    "expect_ct.test_report",
    "expect_ct.check",
    "expect_ct.export",
    "expect_ct.show",
)


@pytest.fixture
def loaded(world: World, tmp_path: Path) -> Iterator[Loaded]:
    with load_addon(world, tmp_path) as running:
        yield running


def test_every_command_has_a_name_mitmwebs_rest_route_accepts(loaded: Loaded) -> None:
    assert loaded.tctx.master.addons.get("expectct") is loaded.addon
    commands = loaded.tctx.master.commands.commands
    for name in NEW_NAMES:
        assert re.fullmatch(r"[a-z.]+", name) and name in commands, name
    for name in OLD_NAMES:
        assert name in commands, name  # aliases for one release


def test_hosts_forget_and_clear_return_their_results(loaded: Loaded) -> None:
    loaded.store.observe("a.example", max_age=3600, enforce=True, report_uri="https://r.example/")
    loaded.store.observe("b.example", max_age=3600, enforce=False, report_uri=None)
    execute = loaded.tctx.master.commands.execute
    hosts = execute("expectct.hosts")
    assert [h["host"] for h in hosts["hosts"]] == ["a.example", "b.example"]
    assert hosts["hosts"][0]["enforce"] is True
    assert hosts["hosts"][0]["report_uri"] == "https://r.example/"
    assert hosts["hosts"][0]["expires"].endswith("Z")
    assert execute("expect_ct.hosts") == hosts  # the old name gives the same
    assert execute("expectct.forget A.Example") == {"host": "A.Example", "forgotten": True}
    assert execute("expectct.forget a.example") == {"host": "a.example", "forgotten": False}
    assert execute("expectct.clear") == {"removed": 1}
    assert execute("expectct.hosts") == {"hosts": []}
    for result in (hosts, execute("expectct.clear")):
        assert json.loads(json.dumps(result)) == result


def test_testreport_returns_what_happened(loaded: Loaded) -> None:
    result = loaded.tctx.master.commands.execute(
        "expectct.testreport never.test https://r.example/ct"
    )
    assert result == {
        "host": "never.test",
        "port": 443,
        "report_uri": "https://r.example/ct",
        "delivery": "disabled",  # expect_ct_reports=off
    }


def test_check_show_and_export_return_their_results(loaded: Loaded, tmp_path: Path) -> None:
    flow = tflow.tflow(resp=True)  # no upstream certificates
    commands = loaded.addon.commands
    assert commands.check([flow]) == {"checked": 0, "counts": {"without certificates": 1}}
    shown = commands.show([flow])
    assert shown == {
        "flows": [{"flow": flow.id, "where": f"GET {flow.request.pretty_url}", "verdict": None}]
    }
    target = tmp_path / "ct.json"
    assert commands.export([flow], str(target)) == {"path": str(target), "flows": 1}
    assert json.loads(target.read_text())[0]["url"] == flow.request.pretty_url


# ------------------------------------------------------------------ options (issue 14)


def test_a_store_in_a_directory_that_does_not_exist_is_an_option_error(
    world: World, tmp_path: Path
) -> None:
    addon = ExpectCT()
    missing = tmp_path / "no-such-dir" / "store.sqlite3"
    try:
        with taddons.context(addon) as tctx:
            # Set at run time (the first configure logs its error instead: test_first_configure).
            tctx.configure(
                addon, confdir=str(tmp_path / "confdir"), expect_ct_log_list=str(world.log_list)
            )
            assert addon.configured
            with pytest.raises(exceptions.OptionsError) as raised:
                tctx.configure(addon, expect_ct_store=str(missing))
            message = str(raised.value)
            assert message.startswith("Cannot open expect_ct_store ") and "\n" not in message
            assert "does not exist" in message
            assert not missing.parent.exists()  # not created behind the user's back
    finally:
        addon.done()


def test_the_default_store_creates_only_the_confdir(world: World, tmp_path: Path) -> None:
    addon = ExpectCT()
    confdir = tmp_path / "fresh-home" / ".mitmproxy"
    try:
        with taddons.context(addon) as tctx:
            tctx.configure(addon, confdir=str(confdir), expect_ct_log_list=str(world.log_list))
            assert addon.store is not None
            assert Path(addon.store.location) == confdir / "expect-ct.sqlite3"
            assert (confdir / "expect-ct.sqlite3").exists()
    finally:
        addon.done()


def test_a_failing_untrusted_chain_is_not_marked(loaded: Loaded) -> None:
    """A self-signed upstream (e.g. with ssl_insecure) is not a CT problem: no :warning:."""
    root = pki.make_root("Lab Root")
    leaf, _ = pki.make_leaf(root)
    server = connection.Server(address=("localhost", 443), sni="localhost")
    assert loaded.addon.judge.decide(server, handshake((leaf, root.cert))) is True
    record = loaded.addon.connections.live[server.id]
    assert record.chain.kind.value == "untrusted" and not record.verdict.compliant
    flow = tflow.tflow(server_conn=server)
    flow.request.url = "https://localhost/"
    loaded.addon.request(flow)
    assert flow.metadata["expect_ct"]["connection"]["chain"] == "untrusted"
    assert not flow.marked
    assert "NOT compliant" in flow.comment
