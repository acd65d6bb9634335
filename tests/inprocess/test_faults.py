"""Faults, in-process (mitmproxy.test.taddons): what the addon does when things break.

Each test breaks one thing for real where that is possible here (a store whose SQLite page
limit is reached: SQLITE_FULL; a store file deleted under the running addon; a log list
replaced by garbage; a collector that never answers), or injects an exception into our own
code where nothing else can provoke one. The defined behaviour is in
README.md ("Failure behaviour"); the same faults through a real mitmdump are in
test_e2e_faults.py.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from mitmproxy import connection
from mitmproxy import exceptions
from mitmproxy import flow as mflow
from mitmproxy import http
from mitmproxy.test import tflow

from expect_ct import policy as policymod
from expect_ct.store import KnownHostStore
from expect_ct.store import StoreError
from support import pki
from support.inprocess import Loaded
from support.inprocess import handshake
from support.inprocess import load_addon
from support.world import World

HEADER = "max-age=86400, enforce"


@pytest.fixture
def loaded(world: World, tmp_path: Path) -> Iterator[Loaded]:
    with load_addon(world, tmp_path, expect_ct_log=str(tmp_path / "events.jsonl")) as running:
        yield running


@dataclass(frozen=True)
class Chains:
    compliant: tuple
    non_compliant: tuple


@pytest.fixture(scope="module")
def chains(world: World) -> Chains:
    """Leaves for every name under f.test: one with two embedded SCTs, one with none."""
    ts = pki.now_ms() - 60_000
    good, _ = pki.make_leaf(
        world.public_inter, hosts=("*.f.test",), embedded=[(world.log_a, ts), (world.log_b, ts)]
    )
    bad, _ = pki.make_leaf(world.public_inter, hosts=("*.f.test",))
    return Chains((good, world.public_inter.cert), (bad, world.public_inter.cert))


def upstream(host: str) -> connection.Server:
    return connection.Server(address=(host, 443), sni=host)


def response_flow(server: connection.Server, host: str, header: str | None) -> http.HTTPFlow:
    """A flow whose response (from ``host`` over ``server``) carries ``header``."""
    flow = tflow.tflow(server_conn=server, resp=True)
    flow.request.url = f"https://{host}/"
    assert flow.response is not None
    if header is not None:
        flow.response.headers["Expect-CT"] = header
    return flow


def served_with_header(loaded: Loaded, chains: Chains, host: str) -> http.HTTPFlow:
    """A compliant connection to ``host`` and one response on it with a valid header."""
    server = upstream(host)
    assert loaded.addon.judge.decide(server, handshake(chains.compliant)) is True
    flow = response_flow(server, host, HEADER)
    loaded.addon.response(flow)
    return flow


def messages(caplog: pytest.LogCaptureFixture, text: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if text in r.getMessage()]


# --------------------------------------------------------------------- a full store


def fill_up(store: KnownHostStore) -> None:
    """Make SQLite report SQLITE_FULL ("database or disk is full") for every new entry.

    PRAGMA max_page_count caps the file at its current size; the free space left in its
    pages is then used up, so any further insert needs a page that cannot be had.
    """
    conn = store._conn
    assert conn is not None
    (pages,) = conn.execute("PRAGMA page_count").fetchone()
    conn.execute(f"PRAGMA max_page_count = {pages}")
    for i in range(10_000):
        try:
            store.observe(f"filler{i}.f.test", max_age=60, enforce=False, report_uri=None)
        except StoreError:
            return
    raise AssertionError("the store never became full")


def test_full_store_serves_flows_logs_once_and_still_blocks(
    loaded: Loaded, chains: Chains, caplog: pytest.LogCaptureFixture
) -> None:
    loaded.store.observe("known.f.test", max_age=3600, enforce=True, report_uri=None)
    fill_up(loaded.sqlite_store)
    caplog.set_level(logging.INFO)
    flows = [served_with_header(loaded, chains, f"h{i}.f.test") for i in range(20)]
    for flow in flows:
        assert flow.response is not None and flow.response.status_code == 200
        assert flow.response.headers["Expect-CT"] == HEADER  # the client gets it unchanged
        header = flow.metadata["expect_ct"]["header"]
        assert header["action"] == "ignored"
        assert header["why"] == "store write failed: database or disk is full"
    # One error line for twenty failed writes; the count is in the summary.
    (error,) = messages(caplog, "cannot write")
    assert error.levelno == logging.ERROR
    assert str(loaded.store_path) in error.getMessage()
    assert "database or disk is full" in error.getMessage()
    assert loaded.addon.stats["store_write_errors"] == 20
    assert re.search(r"store write errors +20\n", loaded.addon.summary() + "\n")
    # Look-ups still work: the known enforce host is still refused, others are not.
    assert (
        loaded.addon.judge.decide(upstream("known.f.test"), handshake(chains.non_compliant))
        is False
    )
    assert loaded.addon.judge.decide(upstream("h0.f.test"), handshake(chains.non_compliant)) is True
    # Space again: the next header is noted, and that recovery is said once.
    conn = loaded.sqlite_store._conn
    assert conn is not None
    conn.execute("PRAGMA max_page_count = 1000000")
    flow = served_with_header(loaded, chains, "later.f.test")
    assert flow.metadata["expect_ct"]["header"]["action"] == "noted"
    assert len(messages(caplog, "can be written again")) == 1
    with KnownHostStore(loaded.store_path) as other:
        assert other.get("later.f.test") is not None
        assert other.get("h1.f.test") is None


def test_unreadable_store_blocks_only_where_a_block_is_possible(
    loaded: Loaded, chains: Chains, caplog: pytest.LogCaptureFixture
) -> None:
    loaded.store.close()  # every read and write now raises StoreError
    for i in range(5):
        assert (
            loaded.addon.judge.decide(upstream(f"n{i}.f.test"), handshake(chains.non_compliant))
            is False
        )
    flow = served_with_header(loaded, chains, "c.f.test")  # compliant: no store read needed
    assert flow.metadata["expect_ct"]["header"]["why"].startswith("store write failed:")
    assert len(messages(caplog, "cannot read")) == 1
    assert len(messages(caplog, "cannot write")) == 1
    assert not messages(caplog, "internal error")  # a store fault is not a bug


# ------------------------------------------------------------- the store file deleted


def test_deleted_store_file_is_detected_and_recreated(
    loaded: Loaded, chains: Chains, caplog: pytest.LogCaptureFixture
) -> None:
    served_with_header(loaded, chains, "before.f.test")
    assert loaded.store.get("before.f.test") is not None
    for suffix in ("", "-wal", "-shm"):
        Path(f"{loaded.store_path}{suffix}").unlink(missing_ok=True)
    # SQLite alone would go on writing into the unlinked file, and the note would vanish.
    flow = served_with_header(loaded, chains, "after.f.test")
    assert flow.metadata["expect_ct"]["header"]["action"] == "noted"
    assert loaded.store_path.exists()
    with KnownHostStore(loaded.store_path) as other:  # what a restart would see
        assert other.get("after.f.test") is not None
        assert other.get("before.f.test") is None  # deleting the file forgot it
    (warning,) = messages(caplog, "was deleted while mitmproxy ran")
    assert warning.levelno == logging.WARNING
    served_with_header(loaded, chains, "again.f.test")
    assert len(messages(caplog, "was deleted")) == 1  # the new file is not "deleted" again


def test_store_replaced_by_a_directory_keeps_the_old_store(
    loaded: Loaded, chains: Chains, caplog: pytest.LogCaptureFixture
) -> None:
    loaded.store.observe("known.f.test", max_age=3600, enforce=True, report_uri=None)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{loaded.store_path}{suffix}").unlink(missing_ok=True)
    loaded.store_path.mkdir()  # the path can no longer be a database
    flow = served_with_header(loaded, chains, "x.f.test")
    assert flow.response is not None and flow.response.status_code == 200
    assert len(messages(caplog, "is not a regular file")) == 1
    # The old (unlinked) store still answers look-ups: the known host stays blocked.
    assert (
        loaded.addon.judge.decide(upstream("known.f.test"), handshake(chains.non_compliant))
        is False
    )


def test_unusable_store_set_at_runtime_keeps_the_old_one(
    loaded: Loaded, chains: Chains, tmp_path: Path
) -> None:
    old = loaded.store
    old.observe("known.f.test", max_age=3600, enforce=True, report_uri=None)
    directory = tmp_path / "a-directory"
    directory.mkdir()
    with pytest.raises(exceptions.OptionsError, match="is not a regular file"):
        loaded.tctx.configure(loaded.addon, expect_ct_store=str(directory))
    # Rolled back: the previous file is in use again, with its entries, still enforcing.
    assert loaded.sqlite_store.path == old.location
    assert (
        loaded.addon.judge.decide(upstream("known.f.test"), handshake(chains.non_compliant))
        is False
    )


# Writes until killed: many commits, so WAL checkpoints run all the time.
WRITER = """
import sys
from expect_ct.store import KnownHostStore
with KnownHostStore(sys.argv[1]) as store:
    for i in range(10**9):
        store.observe(f"h{i}.test", max_age=60, enforce=True, report_uri="x" * 300)
"""


def test_second_process_opens_a_store_another_one_is_writing(tmp_path: Path) -> None:
    """Regression: the read-only probe used to read only the main file, which a concurrent
    WAL checkpoint leaves torn, and called a sound store "malformed"."""
    path = tmp_path / "shared.sqlite3"
    KnownHostStore(path).close()
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path)])
    try:
        deadline = time.monotonic() + 30
        while not os.path.exists(f"{path}-wal") and time.monotonic() < deadline:
            time.sleep(0.01)
        for _ in range(400):
            with KnownHostStore(path) as store:
                store.get("h1.test")
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait(10)
    with KnownHostStore(path) as store:
        assert store.integrity_check() == "ok"
        assert store.count() > 0


# ---------------------------------------------------------------------- the log list


def test_garbage_log_list_at_runtime_keeps_the_old_one(
    loaded: Loaded, world: World, chains: Chains, tmp_path: Path
) -> None:
    old = loaded.addon.log_list
    garbage = tmp_path / "garbage.json"
    garbage.write_bytes(b'{"operators": [{"logs": "\xff')
    with pytest.raises(exceptions.OptionsError, match=f"Cannot load expect_ct_log_list {garbage}"):
        loaded.tctx.configure(loaded.addon, expect_ct_log_list=str(garbage))
    # mitmproxy rolled the option back and the addon reloaded the previous list.
    assert loaded.addon.log_list is not None and old is not None
    assert loaded.addon.log_list.source == old.source
    assert set(loaded.addon.log_list.logs) == set(old.logs)
    assert loaded.tctx.options.expect_ct_log_list == str(world.log_list)  # rolled back
    # The old list still judges connections: compliant stays compliant.
    server = upstream("c.f.test")
    assert loaded.addon.judge.decide(server, handshake(chains.compliant)) is True
    assert loaded.addon.connections.live[server.id].verdict.compliant


# ---------------------------------------------------------- exceptions in our own code


def raiser(message: str) -> Callable[..., None]:
    def fail(*args: object, **kwargs: object) -> None:
        raise RuntimeError(message)

    return fail


boom = raiser("injected fault")


def internal_errors(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return messages(caplog, "internal error")


def test_failing_evaluation_fails_closed_only_for_known_enforce_hosts(
    loaded: Loaded,
    chains: Chains,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    loaded.store.observe("known.f.test", max_age=3600, enforce=True, report_uri=None)
    loaded.store.observe("soft.f.test", max_age=3600, enforce=False, report_uri=None)
    monkeypatch.setattr(policymod, "evaluate", boom)
    for _ in range(5):
        for chain in (chains.compliant, chains.non_compliant):
            # Cannot tell whether the connection complies: the host that asked is refused.
            assert loaded.addon.judge.decide(upstream("known.f.test"), handshake(chain)) is False
            assert loaded.addon.judge.decide(upstream("soft.f.test"), handshake(chain)) is True
            assert loaded.addon.judge.decide(upstream("other.f.test"), handshake(chain)) is True
    (error,) = internal_errors(caplog)  # thirty failures, one traceback
    assert error.levelno == logging.ERROR and error.exc_info is not None
    assert "RuntimeError: injected fault" in error.getMessage()
    assert loaded.addon.stats["internal_errors"] == 30
    assert len(messages(caplog, "blocked known.f.test:443: cannot evaluate")) == 10
    # With enforcement off nothing is refused, whatever happens.
    loaded.tctx.configure(loaded.addon, expect_ct_enforce="off")
    assert (
        loaded.addon.judge.decide(upstream("known.f.test"), handshake(chains.non_compliant)) is True
    )


def test_failure_after_the_verdict_never_lets_a_required_block_through(
    loaded: Loaded,
    chains: Chains,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    loaded.store.observe("known.f.test", max_age=3600, enforce=True, report_uri=None)
    monkeypatch.setattr(loaded.addon.judge, "block_reason", boom)  # before blocked is decided
    assert (
        loaded.addon.judge.decide(upstream("known.f.test"), handshake(chains.non_compliant))
        is False
    )
    assert loaded.addon.judge.decide(upstream("known.f.test"), handshake(chains.compliant)) is True
    assert (
        loaded.addon.judge.decide(upstream("other.f.test"), handshake(chains.non_compliant)) is True
    )
    monkeypatch.undo()
    # After blocked is decided.
    monkeypatch.setattr(loaded.addon.judge, "log_connection", raiser("late fault"))
    assert (
        loaded.addon.judge.decide(upstream("known.f.test"), handshake(chains.non_compliant))
        is False
    )
    assert (
        loaded.addon.judge.decide(upstream("other.f.test"), handshake(chains.non_compliant)) is True
    )
    assert len(internal_errors(caplog)) == 2  # two distinct places, each logged once


def test_failing_request_hook_blocks_only_what_must_be_blocked(
    loaded: Loaded,
    chains: Chains,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    loaded.store.observe("known.f.test", max_age=3600, enforce=True, report_uri=None)
    refused, fine, lazy = upstream("known.f.test"), upstream("c.f.test"), upstream("known.f.test")
    assert loaded.addon.judge.decide(refused, handshake(chains.non_compliant)) is False
    assert loaded.addon.judge.decide(fine, handshake(chains.compliant)) is True
    monkeypatch.setattr(loaded.addon, "_annotate", boom)

    def request(server: connection.Server, host: str) -> http.HTTPFlow:
        flow = tflow.tflow(server_conn=server)
        flow.request.url = f"https://{host}/"
        loaded.addon.request(flow)  # must not raise into mitmproxy
        return flow

    blocked = request(refused, "known.f.test")
    assert blocked.response is not None and blocked.response.status_code == 502
    assert blocked.metadata["expect_ct"]["blocked"].startswith("known.f.test is a Known")
    assert request(fine, "c.f.test").response is None  # compliant: served
    # Failing before the connection's record is found.
    monkeypatch.setattr(loaded.addon.judge, "record_for_flow", raiser("lookup fault"))
    assert request(fine, "c.f.test").response is None  # its record says compliant: served
    # Lazy strategy: no upstream connection yet, the host asked for enforcement: refused.
    unchecked = request(lazy, "known.f.test")
    assert unchecked.response is not None and unchecked.response.status_code == 502
    assert "internal error (RuntimeError)" in (unchecked.response.get_text() or "")
    assert request(upstream("other.f.test"), "other.f.test").response is None
    assert len(internal_errors(caplog)) == 2  # two distinct errors, each logged once


def test_failing_response_and_error_hooks_serve_and_log_once(
    loaded: Loaded,
    chains: Chains,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(loaded.addon, "_process_header", boom)
    flows = [served_with_header(loaded, chains, f"r{i}.f.test") for i in range(10)]
    for flow in flows:
        assert flow.response is not None and flow.response.status_code == 200
        assert flow.response.headers["Expect-CT"] == HEADER
    monkeypatch.setattr(loaded.addon, "_error", boom)
    failed = tflow.tflow()
    failed.error = mflow.Error("connection refused")
    loaded.addon.error(failed)
    loaded.addon.error(failed)
    assert len(internal_errors(caplog)) == 1  # the same injected error, wherever it surfaces
    assert loaded.addon.stats["internal_errors"] == 12


def test_invalid_host_name_is_never_taken_for_a_known_host(loaded: Loaded, chains: Chains) -> None:
    # "1.2.3.256" cannot be canonicalised (a numeric last label), so it can never be Known:
    # a store look-up error must not turn into a fail-closed block.
    assert loaded.addon.judge.decide(upstream("1.2.3.256"), handshake(chains.non_compliant)) is True


# ----------------------------------------------------------------- the report queue


def test_report_queue_full_under_many_reports_never_blocks(
    loaded: Loaded, chains: Chains, tmp_path: Path
) -> None:
    """A collector that accepts and never answers: the sender's worker is stuck on the first
    report, 100 more wait in its queue, the rest are dropped as "queue full"; connections
    are decided all along."""
    hung = socket.create_server(("127.0.0.1", 0), backlog=1)
    uri = f"https://127.0.0.1:{hung.getsockname()[1]}/collect"
    loaded.tctx.configure(
        loaded.addon, expect_ct_reports="send", expect_ct_report_allow_private=True
    )
    hosts = [f"k{i}.f.test" for i in range(150)]
    for host in hosts:
        loaded.store.observe(host, max_age=3600, enforce=False, report_uri=uri)
    try:
        for host in hosts:
            assert (
                loaded.addon.judge.decide(upstream(host), handshake(chains.non_compliant)) is True
            )
        sender = loaded.addon.sender
        assert sender is not None
        assert 45 <= sender.dropped <= 50  # 150 - (at most 1 in delivery) - 100 queued
        events = [e for e in read_events(tmp_path) if e["event"] == "report"]
        assert len([e for e in events if e["detail"] == "queue full"]) == sender.dropped
    finally:
        hung.close()  # the stuck delivery now fails at once
    loaded.addon.done()
    events = [e for e in read_events(tmp_path) if e["event"] == "report"]
    assert {e["detail"] for e in events} <= {"queue full", "shut down"} | {
        e["detail"] for e in events if e["detail"].startswith(("connection", "TLS", "network"))
    }


def read_events(tmp_path: Path) -> list[dict]:
    import json

    text = (tmp_path / "events.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines() if line]


def test_store_readable_through_sqlite_after_faults(loaded: Loaded, chains: Chains) -> None:
    served_with_header(loaded, chains, "ok.f.test")
    fill_up(loaded.sqlite_store)
    served_with_header(loaded, chains, "lost.f.test")
    with sqlite3.connect(loaded.store_path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        hosts = {h for (h,) in conn.execute("SELECT host FROM known_hosts")}
    assert "ok.f.test" in hosts and "lost.f.test" not in hosts
