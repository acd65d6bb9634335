"""The ``expect_ct.*`` names of earlier releases, kept for one release, as the console runs them.

mitmweb's REST route cannot reach them (it takes ``[a-z.]+``: tests/e2e/test_commands_rest.py),
but the console's ``:`` prompt and other addons can. Here every old name is typed as a
console command line (``CommandManager.execute``, flow specs resolved by mitmproxy's own View)
and must give what its new name gives, on a real store file and a flow the addon evaluated.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from mitmproxy import certs
from mitmproxy import connection
from mitmproxy.addons.view import View
from mitmproxy.test import taddons
from mitmproxy.test import tflow

from expect_ct.addon import ExpectCT
from support.inprocess import handshake
from support.inprocess import load_addon
from support.world import World

HOST = "localhost"
# old name -> new name; arguments as typed at the console's prompt.
ALIASES = [
    ("expect_ct.show @all", "expectct.show @all"),
    ("expect_ct.check @all", "expectct.check @all"),
    ("expect_ct.hosts", "expectct.hosts"),
    (
        "expect_ct.test_report localhost https://r.example/ct",
        "expectct.testreport localhost https://r.example/ct",
    ),
]


@dataclass
class Console:
    tctx: taddons.context
    addon: ExpectCT
    view: View

    def run(self, line: str) -> object:
        return self.tctx.master.commands.execute(line)


@pytest.fixture
def console(world: World, tmp_path: Path) -> Iterator[Console]:
    view = View()
    with load_addon(world, tmp_path, also=[view]) as loaded:
        addon = loaded.addon
        # One flow on a compliant connection that noted the host (enforce).
        upstream = connection.Server(address=(HOST, 443), sni=HOST)
        leaf = world.compliant.cert
        assert isinstance(leaf, x509.Certificate)
        chain = (leaf, world.public_inter.cert)
        upstream.certificate_list = [certs.Cert(c) for c in chain]
        assert addon.judge.decide(upstream, handshake(chain)) is True
        flow = tflow.tflow(server_conn=upstream, resp=True)
        flow.request.url = f"https://{HOST}/"
        assert flow.response is not None
        flow.response.headers["Expect-CT"] = "max-age=3600, enforce"
        addon.request(flow)
        addon.response(flow)
        view.add([flow])
        yield Console(loaded.tctx, addon, view)


def test_every_old_name_gives_what_its_new_name_gives(console: Console, tmp_path: Path) -> None:
    for old, new in ALIASES:
        expected = console.run(new)
        assert console.run(old) == expected, old
        assert json.loads(json.dumps(expected)) == expected
    shown = console.run("expect_ct.show @all")
    assert isinstance(shown, dict) and shown["flows"][0]["verdict"].startswith("CT: compliant")
    assert console.run("expect_ct.check @all") == {"checked": 1, "counts": {"compliant": 1}}
    old_file, new_file = tmp_path / "old.json", tmp_path / "new.json"
    assert console.run(f"expect_ct.export @all {old_file}") == {"path": str(old_file), "flows": 1}
    console.run(f"expectct.export @all {new_file}")
    old_rows, new_rows = json.loads(old_file.read_text()), json.loads(new_file.read_text())
    assert old_rows == new_rows and old_rows[0]["header_action"] == "noted"
    # The store-changing ones last: forget, then clear.
    assert console.run("expect_ct.forget localhost") == {"host": "localhost", "forgotten": True}
    assert console.run("expect_ct.hosts") == {"hosts": []}
    console.addon.store.observe(HOST, max_age=60, enforce=False, report_uri=None)  # type: ignore[union-attr]
    assert console.run("expect_ct.clear") == {"removed": 1}
    assert console.run("expectct.clear") == {"removed": 0}
