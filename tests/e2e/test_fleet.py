"""End to end: three proxies on one PostgreSQL behave as one (issue 19).

Three real mitmdump processes share one real PostgreSQL database (``tests/support/postgres.py``
starts the server). Host names route differently per proxy: proxy A reaches ``*.fleet.test``
over a CT-compliant origin (where hosts get noted), B and C reach the same names over a
publicly trusted origin without SCTs (where a Known host with enforce is refused). So a 502 on
B or C for a name only A saw proves the note travelled through the database.

"Within 1 s" is checked as the issue states it: one attempt one second after the note (or the
forget) was acknowledged, never a retry loop that would hide a slow replica.
"""

from __future__ import annotations

import contextlib
import datetime
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import support
from expect_ct import store as storemod
from support import pki
from support.cli import run_cli
from support.collector import Collector
from support.collector import https_collector
from support.collector import make_collector_pki
from support.httpsorigin import Origin
from support.httpsorigin import https_origin
from support.postgres import PASSWORD
from support.postgres import PostgresServer
from support.proxy import Mitmdump
from support.world import World
from support.world import proxy_options

SAN = ("*.fleet.test",)
NOTED_HOSTS = ("noted", "forgotten", "killed", "outage")  # A: compliant; B, C: not
# Every proxy meets these over the non-compliant origin.
SHARED_HOSTS = ("reported", "control", "preseeded")
ROUTES = {
    "/enforce": [("Expect-CT", "max-age=86400, enforce")],
    "/": [],
}
REPLICA_DELAY = 1.0  # seconds: the bound for a change to reach every proxy


@dataclass
class Fleet:
    url: str
    server: PostgresServer
    collector: Collector
    trust: Path
    compliant: Origin
    non_compliant: Origin
    a: Mitmdump
    b: Mitmdump
    c: Mitmdump

    def store(self) -> storemod.HostStore:
        return storemod.open_store(self.url)

    def stored(self, host: str) -> storemod.KnownHost | None:
        with contextlib.closing(self.store()) as store:
            return store.get(host)


def status(proxy: Mitmdump, url: str) -> int:
    response = proxy.curl(url)
    return response.status


def routes(origin: Origin, non_compliant: Origin) -> dict[str, int]:
    mapping = {f"{name}.fleet.test": origin.port for name in NOTED_HOSTS}
    mapping.update({f"{name}.fleet.test": non_compliant.port for name in SHARED_HOSTS})
    return mapping


def proxy_for(
    world: World,
    workdir: Path,
    url: str,
    trust: Path,
    origin: Origin,
    non_compliant: Origin,
    **extra: object,
) -> Mitmdump:
    options = proxy_options(
        world,
        ssl_verify_upstream_trusted_ca=str(trust),
        expect_ct_store=url,
        expect_ct_reports="send",
        expect_ct_report_allow_private=True,
        **extra,
    )
    return Mitmdump(workdir, options, resolve=routes(origin, non_compliant))


@pytest.fixture(scope="module")
def fleet(
    world: World, postgres_server: PostgresServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Fleet]:
    base = tmp_path_factory.mktemp("fleet")
    files = make_collector_pki(base / "collector")
    trust = base / "upstream-and-collector.pem"
    trust.write_bytes(world.upstream_trust_pem.read_bytes() + files.root_pem.read_bytes())
    ts = pki.now_ms() - 60_000
    good, good_key = pki.make_leaf(
        world.public_inter, hosts=SAN, embedded=[(world.log_a, ts), (world.log_b, ts + 1)]
    )
    bad, bad_key = pki.make_leaf(world.public_inter, hosts=SAN)
    for name, cert, key in (("good", good, good_key), ("bad", bad, bad_key)):
        (base / f"{name}.pem").write_bytes(pki.pem(cert, world.public_inter.cert))
        (base / f"{name}.key").write_bytes(pki.key_pem(key))
    url = postgres_server.new_database()
    with contextlib.ExitStack() as stack:
        collector = stack.enter_context(https_collector(files))
        compliant = stack.enter_context(https_origin(base / "good.pem", base / "good.key", ROUTES))
        non_compliant = stack.enter_context(
            https_origin(base / "bad.pem", base / "bad.key", ROUTES)
        )
        proxies = [
            stack.enter_context(proxy_for(world, base / name, url, trust, origin, non_compliant))
            for name, origin in (("a", compliant), ("b", non_compliant), ("c", non_compliant))
        ]
        yield Fleet(url, postgres_server, collector, trust, compliant, non_compliant, *proxies)


def header_event(proxy: Mitmdump, host: str) -> dict[str, Any]:
    return proxy.wait_for_event("header", lambda e: e["host"] == host, deadline=30)


# ------------------------------------------------------------------------------ the tests


def test_a_note_on_one_proxy_is_enforced_by_the_others_within_a_second(fleet: Fleet) -> None:
    # Positive control: B and C reach the non-compliant origin for a name nobody noted.
    assert status(fleet.b, "https://control.fleet.test/") == 200
    assert status(fleet.c, "https://control.fleet.test/") == 200

    assert status(fleet.a, "https://noted.fleet.test/enforce") == 200
    event = header_event(fleet.a, "noted.fleet.test")
    assert event["action"] == "noted", event
    # Acknowledged means committed: a fresh connection to the database sees it.
    known = fleet.stored("noted.fleet.test")
    assert known is not None and known.enforce

    time.sleep(REPLICA_DELAY)
    assert status(fleet.b, "https://noted.fleet.test/") == 502
    assert status(fleet.c, "https://noted.fleet.test/") == 502
    for proxy in (fleet.b, fleet.c):
        blocked = proxy.wait_for_event("blocked", lambda e: e["host"] == "noted.fleet.test")
        assert blocked["known_host"]["enforce"] is True


def test_cli_hosts_and_forget_work_on_the_fleet_database(fleet: Fleet) -> None:
    with contextlib.closing(fleet.store()) as store:
        store.observe("forgotten.fleet.test", max_age=86400, enforce=True, report_uri=None)
    time.sleep(REPLICA_DELAY)
    assert status(fleet.b, "https://forgotten.fleet.test/") == 502

    listed = run_cli("hosts", "--json", "--store", fleet.url)
    assert listed.returncode == 0, listed.stderr
    assert '"host": "forgotten.fleet.test"' in listed.stdout
    assert PASSWORD not in listed.stdout + listed.stderr

    forgot = run_cli("forget", "forgotten.fleet.test", "--store", fleet.url)
    assert forgot.returncode == 0, forgot.stderr
    assert "forgotten" in forgot.stdout
    time.sleep(REPLICA_DELAY)
    assert status(fleet.b, "https://forgotten.fleet.test/") == 200
    assert status(fleet.c, "https://forgotten.fleet.test/") == 200
    assert fleet.stored("forgotten.fleet.test") is None


def test_sigkill_after_an_acknowledged_note_loses_nothing(
    fleet: Fleet, world: World, tmp_path: Path
) -> None:
    doomed = proxy_for(
        world, tmp_path, fleet.url, fleet.trust, fleet.compliant, fleet.non_compliant
    ).start()
    try:
        assert status(doomed, "https://killed.fleet.test/enforce") == 200
        assert header_event(doomed, "killed.fleet.test")["action"] == "noted"
    finally:
        doomed.stop(signal.SIGKILL)
    known = fleet.stored("killed.fleet.test")
    assert known is not None and known.enforce
    time.sleep(REPLICA_DELAY)
    assert status(fleet.b, "https://killed.fleet.test/") == 502


def test_one_report_for_a_violation_seen_by_all_three(fleet: Fleet) -> None:
    uri = fleet.collector.uri("/fleet")
    # A Known report-only host with a report-uri, met over a non-compliant connection by all
    # three proxies.
    with contextlib.closing(fleet.store()) as store:
        store.add(
            "reported.fleet.test",
            enforce=False,
            report_uri=uri,
            expires=datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=1),
        )
    time.sleep(REPLICA_DELAY)
    outcomes = []
    for proxy in (fleet.a, fleet.b, fleet.c):
        assert status(proxy, "https://reported.fleet.test/") == 200  # report-only: served
        event = proxy.wait_for_event("report", lambda e: e["report_uri"] == uri, deadline=30)
        outcomes.append(event["delivery"])
    assert outcomes[1:] == ["suppressed", "suppressed"], outcomes
    assert outcomes[0] != "suppressed", outcomes
    time.sleep(REPLICA_DELAY)  # a second report would have arrived by now
    posts = [r for r in fleet.collector.requests("/fleet") if r.method == "POST"]
    assert len(posts) == 1, posts
    for proxy in (fleet.b, fleet.c):
        suppressed = [e for e in proxy.events("report") if e["report_uri"] == uri]
        assert "another proxy" in suppressed[0]["detail"]


def test_postgresql_restart_while_the_proxies_run(fleet: Fleet) -> None:
    assert fleet.stored("noted.fleet.test") is not None  # noted by the first test
    fleet.server.stop("fast")
    try:
        # Known hosts stay enforced from the replica.
        assert status(fleet.b, "https://noted.fleet.test/") == 502
        # A new note is pending, not acknowledged, and enforced by the proxy that saw it.
        assert status(fleet.a, "https://outage.fleet.test/enforce") == 200
        event = header_event(fleet.a, "outage.fleet.test")
        assert event["action"] == "ignored", event
        assert event["why"].startswith("pending"), event
    finally:
        fleet.server.start()
    # Reconnects by itself and commits the queued note: the other proxies get it.
    deadline = time.monotonic() + 60
    while fleet.stored("outage.fleet.test") is None and time.monotonic() < deadline:
        time.sleep(0.2)
    known = fleet.stored("outage.fleet.test")
    assert known is not None and known.enforce
    for proxy in (fleet.b, fleet.c):
        end = time.monotonic() + 30  # a replica re-syncs after its own reconnection
        while status(proxy, "https://outage.fleet.test/") != 502 and time.monotonic() < end:
            time.sleep(0.5)
        assert status(proxy, "https://outage.fleet.test/") == 502
    log = fleet.a.log_text()
    assert log.count("PostgreSQL store") >= 2, log
    assert log.count("cannot be reached (") == 1, log
    assert "reachable again" in log


# -------------------------------------------------------------- start-up ordering and errors


@pytest.mark.parametrize("loading", ["script", "built-in"])
def test_a_proxy_listens_only_with_its_replica_loaded(
    world: World, postgres_server: PostgresServer, tmp_path: Path, fleet: Fleet, loading: str
) -> None:
    url = postgres_server.new_database()
    with contextlib.closing(storemod.open_store(url)) as store:
        store.observe("preseeded.fleet.test", max_age=86400, enforce=True, report_uri=None)
    proxy = proxy_for(world, tmp_path, url, fleet.trust, fleet.compliant, fleet.non_compliant)
    proxy.built_in = loading == "built-in"
    with proxy:
        # The very first connection, as soon as the proxy listens: refused, never fail open.
        assert status(proxy, "https://preseeded.fleet.test/") == 502


def database_errors(server: PostgresServer) -> list[tuple[str, str]]:
    free = socket_port()
    return [
        ("unreachable", f"postgresql://postgres:{PASSWORD}@127.0.0.1:{free}/ct"),
        ("missing database", server.url("no_such_database")),
        ("wrong password", server.url(password="wrong-" + PASSWORD)),
        ("bad url", "postgresql://postgres@127.0.0.1:notaport/ct"),
    ]


def socket_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_bad_databases_are_one_line_at_startup(
    world: World, postgres_server: PostgresServer, tmp_path: Path
) -> None:
    for case, url in database_errors(postgres_server):
        proxy = Mitmdump(
            tmp_path / case.replace(" ", "-"), proxy_options(world, expect_ct_store=url)
        )
        # mitmproxy's errorcheck ends the process once start-up logged an error (its listener
        # may exist for one loop iteration before that: mitmproxy starts it in `running`).
        done = subprocess.run(proxy.command(), capture_output=True, text=True, timeout=120)
        text = done.stdout + done.stderr
        assert done.returncode != 0, (case, text)
        lines = [line for line in text.splitlines() if "expect_ct_store" in line]
        assert len(lines) == 1, (case, text)
        assert "Traceback" not in text, (case, text)
        assert PASSWORD not in text and "wrong-" not in text, (case, text)
        assert not list(Path.cwd().glob("postgresql:*")), "a spec was taken as a file name"


def test_a_small_load_over_three_proxies_one_killed(
    postgres_server: PostgresServer, tmp_path: Path
) -> None:
    """benchmarks/load.py --fleet --kill-one at a small size: no unexpected error, every
    acknowledged note in PostgreSQL, also those of the proxy killed halfway."""
    sys.path.insert(0, str(support.REPO / "benchmarks"))
    import load

    url = postgres_server.new_database()
    result = load.run(clients=20, seconds=6, kill_one=True, workdir=tmp_path, postgres=url)
    assert result.problems == []
    assert result.proxies == 3
    assert set(result.acknowledged.values()) == {"proxy-a", "proxy-b", "proxy-c"}
    assert result.entries_checked == len(result.acknowledged)
    assert result.outcomes["blocked by the addon (502)"] > 0
