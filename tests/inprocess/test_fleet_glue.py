"""The addon's glue for a fleet sharing one store: report claims and pending notes.

Real stores: an SQLite file shared by two addon parts (as two proxies share it), and for the
pending case a real PostgreSQL server stopped under a running store.
"""

from __future__ import annotations

import datetime
import time
from pathlib import Path

import pytest

from expect_ct import store as storemod
from expect_ct.mitm.faults import Faults
from expect_ct.mitm.headers import pending_why
from expect_ct.mitm.knownhosts import KnownHosts
from expect_ct.mitm.knownhosts import file_identity
from expect_ct.mitm.reporting import Reporting
from expect_ct.mitm.reporting import claim_key
from support.inprocess import load_addon
from support.postgres import PASSWORD
from support.postgres import PostgresServer
from support.world import World

NOW = datetime.datetime.now(datetime.UTC)
URI = "https://collector.example/report"
BODY = {"expect-ct-report": {"hostname": "shop.example"}}


def proxy_parts(store: Path, events: Path) -> tuple[KnownHosts, Reporting]:
    faults = Faults()
    known_hosts = KnownHosts(faults)
    known_hosts.store = storemod.open_store(str(store))
    reporting = Reporting(faults, claim=known_hosts.claim_report)
    reporting.open_event_log(str(events))
    # A sender that may never reach anything: the outcome under test is decided before.
    reporting.start_sender(send=True, allow_private=False, cafile=None, forbidden=[])
    return known_hosts, reporting


def test_two_proxies_on_one_sqlite_file_send_one_report(tmp_path: Path) -> None:
    store = tmp_path / "shared.sqlite3"
    parts = [proxy_parts(store, tmp_path / f"events-{i}.jsonl") for i in range(2)]
    try:
        first = parts[0][1].dispatch("shop.example", 443, URI, BODY, now=NOW)
        second = parts[1][1].dispatch("shop.example", 443, URI, BODY, now=NOW)
        # Another port is another key: both proxies may send it once.
        other = parts[1][1].dispatch("shop.example", 8443, URI, BODY, now=NOW)
        # A test report (expectct.testreport) is never de-duplicated.
        test = parts[1][1].dispatch("shop.example", 443, URI, BODY, now=NOW, test_report=True)
    finally:
        for known_hosts, reporting in parts:
            reporting.close()
            known_hosts.close()
    assert (first, second, other, test) == ("queued", "suppressed", "queued", "queued")
    suppressed = (tmp_path / "events-1.jsonl").read_text()
    assert '"delivery":"suppressed"' in suppressed.replace(" ", "")
    assert "another proxy" in suppressed
    assert parts[1][0].faults.stats["reports_fleet_suppressed"] == 1


def test_claim_key_ignores_host_case() -> None:
    assert claim_key("Shop.Example", 443, URI) == claim_key("shop.example", 443, URI)
    assert claim_key("shop.example", 443, URI) != claim_key("shop.example", 443, URI + "2")


def test_a_store_that_cannot_claim_lets_the_report_go(tmp_path: Path) -> None:
    known_hosts, reporting = proxy_parts(tmp_path / "s.sqlite3", tmp_path / "e.jsonl")
    assert known_hosts.store is not None
    known_hosts.store.close()  # every call now raises StoreError
    try:
        assert reporting.dispatch("shop.example", 443, URI, BODY, now=NOW) == "queued"
    finally:
        reporting.close()


def test_pending_why_says_pending_and_what_it_would_be() -> None:
    error = storemod.StoreUnavailable("down", action="noted")
    assert pending_why(error).startswith("pending (would be noted):")
    assert pending_why(storemod.StoreUnavailable("down")).startswith("pending:")


def test_a_note_while_postgresql_is_down_is_pending_then_committed(
    postgres_server: PostgresServer, tmp_path: Path
) -> None:
    url = postgres_server.new_database()
    faults = Faults()
    known_hosts = KnownHosts(faults)
    known_hosts.store = storemod.open_store(url, retry_interval=0.2)
    try:
        postgres_server.stop("fast")
        try:
            with pytest.raises(storemod.StoreUnavailable) as raised:
                known_hosts.observe("q.example", max_age=600, enforce=True, report_uri=None)
            assert raised.value.action == "noted"
            assert faults.stats["store_pending"] == 1
            # Enforced here at once, from the replica.
            known = known_hosts.lookup("q.example")
            assert known is not None and known.enforce
            # Reports are still sent while the claim cannot be made.
            assert known_hosts.claim_report("report q.example:443 u", 3600) is True
        finally:
            postgres_server.start()
        store = known_hosts.store
        assert store is not None
        # The store reconnects by itself (retrying every 0.2 s) and commits its queue.
        deadline = time.monotonic() + 60
        while store.pending_writes and time.monotonic() < deadline:
            time.sleep(0.1)
        assert store.pending_writes == 0
        with storemod.open_store(url) as fresh:
            assert fresh.get("q.example") is not None
    finally:
        known_hosts.close()


def test_the_addon_switches_to_postgresql_and_forgets_while_it_is_away(
    world: World, postgres_server: PostgresServer, tmp_path: Path
) -> None:
    url = postgres_server.new_database()
    with load_addon(world, tmp_path) as loaded:
        loaded.tctx.configure(loaded.addon, expect_ct_store=url)
        store = loaded.addon.store
        assert store is not None and store.location.startswith("postgresql://")
        assert PASSWORD not in store.location
        store.observe("gone.example", max_age=600, enforce=True, report_uri=None)
        execute = loaded.tctx.master.commands.execute
        postgres_server.stop("fast")
        try:
            result = execute("expectct.forget gone.example")
            assert result == {"host": "gone.example", "forgotten": True, "pending": True}
            assert store.get("gone.example") is None  # no longer enforced here
        finally:
            postgres_server.start()
        deadline = time.monotonic() + 60
        while store.pending_writes and time.monotonic() < deadline:
            time.sleep(0.1)
        with storemod.open_store(url) as fresh:
            assert fresh.get("gone.example") is None


def test_a_database_url_is_never_checked_as_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Even with a file of that name in the working directory (issue 19: such files were made).
    monkeypatch.chdir(tmp_path)
    url = "postgresql://proxy@db.example:5432/ct"
    (tmp_path / "postgresql:").mkdir()
    (tmp_path / "postgresql:" / "proxy@db.example:5432").mkdir()
    (tmp_path / "postgresql:" / "proxy@db.example:5432" / "ct").write_text("")
    assert file_identity(url) is None
    assert file_identity(str(tmp_path / "postgresql:" / "proxy@db.example:5432" / "ct")) is not None
