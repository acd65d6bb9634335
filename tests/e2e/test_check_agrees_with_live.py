"""``python -m expect_ct check`` on saved flows agrees with the live addon (issue 14).

A real mitmdump with the addon fronts ``openssl s_server`` origins that deliver their SCTs
each one way (embedded in the certificate, in the TLS extension via ``-serverinfo``, in a
stapled OCSP response via ``-status_file``, or not at all) and saves the flows; ``check``
then re-evaluates the flow file in a separate process. Both must give every connection the
same verdict, SCTs and sources: before issue 14, ``check`` ignored the handshake SCTs the
flows carry and called TLS-extension and OCSP sites not compliant.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from support import pki
from support.origins import openssl_origins
from support.proxy import Mitmdump
from support.world import World
from support.world import proxy_options

DELIVERY = ("embedded", "tls-extension", "ocsp", "none")
TLS_VERSIONS = ("1.2", "1.3")
POLICY = "chrome-pre148"
SAME_FIELDS = ("chain", "certificate", "scts", "compliant", "policy", "reasons", "sources")


@dataclass
class Run:
    ports: dict[tuple[str, str], int]  # (delivery, tls) -> origin port
    live: dict[int, dict[str, Any]]  # port -> the live ``connection`` event
    offline: dict[int, dict[str, Any]]  # port -> check's record
    check_exit: int


@pytest.fixture(scope="module")
def run(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    base = tmp_path_factory.mktemp("check-agrees")
    ts = pki.now_ms() - 60_000
    inter = world.public_inter
    two_logs = [(world.log_a, ts + 10), (world.log_b, ts + 11)]
    embedded, embedded_key = pki.make_leaf(
        inter, embedded=[(world.log_a, ts), (world.log_b, ts + 1)]
    )
    plain, plain_key = pki.make_leaf(inter)
    served = {
        "embedded": (embedded, embedded_key, None, None),
        "tls-extension": (
            plain,
            plain_key,
            pki.serverinfo_pem(pki.tls_sct_list(plain, two_logs)),
            None,
        ),
        "ocsp": (
            plain,
            plain_key,
            None,
            pki.ocsp_response(plain, inter, sct_list=pki.tls_sct_list(plain, two_logs)),
        ),
        "none": (plain, plain_key, None, None),
    }
    flow_file = base / "flows.mitm"
    with contextlib.ExitStack() as stack:
        ports = openssl_origins(stack, base, served, chain=inter.cert, tls_versions=TLS_VERSIONS)
        proxy = Mitmdump(
            base / "proxy",
            # chrome-pre148 counts OCSP-delivered SCTs, so every delivery path can make a site
            # compliant (Chrome 148+ ignores OCSP SCTs: test_e2e_ct.py covers that rule).
            proxy_options(
                world,
                expect_ct_store=":memory:",
                expect_ct_policy=POLICY,
                save_stream_file=str(flow_file),
            ),
        )
        with proxy:
            for port in ports.values():
                assert proxy.curl(f"https://localhost:{port}/index.html").status == 200
        live = {event["port"]: event for event in proxy.events("connection")}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "expect_ct",
            "check",
            str(flow_file),
            "--json",
            "--log-list",
            str(world.log_list),
            "--public-roots",
            str(world.public_roots_pem),
            "--private-roots",
            str(world.upstream_trust_pem),
            "--confdir",
            str(base / "confdir"),
            "--policy",
            POLICY,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode in (0, 1), done.stderr
    offline = {record["port"]: record for record in map(json.loads, done.stdout.splitlines())}
    yield Run(ports, live, offline, done.returncode)


@pytest.mark.parametrize("tls", TLS_VERSIONS)
@pytest.mark.parametrize("delivery", DELIVERY)
def test_check_gives_the_live_verdict(run: Run, delivery: str, tls: str) -> None:
    port = run.ports[delivery, tls]
    live, offline = run.live[port], run.offline[port]
    assert offline["evaluated"] is True
    for name in SAME_FIELDS:
        assert offline[name] == live[name], (delivery, tls, name)
    compliant = delivery != "none"
    assert (live["compliant"], offline["compliant"]) == (compliant, compliant)
    if delivery in ("tls-extension", "ocsp"):
        # The SCTs that made it compliant came from the handshake, live and offline.
        assert {s["source"] for s in offline["scts"]} == {delivery}
        assert offline["sources"][delivery] == "present"


def test_check_exit_code_follows_the_non_compliant_site(run: Run) -> None:
    assert run.check_exit == 1  # the "none" site: public and not compliant
    assert len(run.offline) == len(run.ports)
