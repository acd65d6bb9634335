"""The addon in-process (mitmproxy.test.taddons): commands, the blocking decision, and hooks.

A real store file, the real log list and roots of the test world, real certificates. The
end-to-end behaviour through a real mitmdump is in test_e2e_enforce.py; here every branch of
the decision is enumerated, which would take too many proxy start-ups end to end.
"""

from __future__ import annotations

import dataclasses
import datetime
import itertools
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from mitmproxy import connection
from mitmproxy import exceptions
from mitmproxy import flow as mflow
from mitmproxy import http
from mitmproxy.log import ALERT
from mitmproxy.net import tls as net_tls
from mitmproxy.proxy.context import Context
from mitmproxy.proxy.server_hooks import ServerConnectionHookData
from mitmproxy.test import tflow
from mitmproxy.tls import TlsData

from expect_ct.cli.check import header_effect as check_header_effect
from expect_ct.engine import next_validity_boundary as _next_validity_boundary
from expect_ct.mitm import faults as faults_module
from expect_ct.mitm.headers import expect_ct_values
from expect_ct.mitm.headers import pretty_host
from expect_ct.store import HostStore
from expect_ct.store import KnownHostStore
from support import pki
from support.inprocess import Loaded
from support.inprocess import handshake
from support.inprocess import load_addon
from support.world import World

HOST = "localhost"
PAST = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)


@pytest.fixture
def loaded(world: World, tmp_path: Path) -> Iterator[Loaded]:
    original_factory = net_tls.create_proxy_server_context
    with load_addon(world, tmp_path) as running:
        assert running.addon.capture.installed  # by load(); only done() uninstalls it
        yield running
    assert not running.addon.capture.installed
    assert net_tls.create_proxy_server_context is original_factory


# ---------------------------------------------------------------------------- commands


def alerts(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == ALERT]


def test_hosts_command_lists_known_hosts(loaded: Loaded, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    loaded.store.observe("b.example", max_age=3600, enforce=True, report_uri="https://r.example/ct")
    loaded.store.observe("a.example", max_age=3600, enforce=False, report_uri=None)
    loaded.store.observe("old.example", max_age=1, enforce=True, report_uri=None, now=PAST)
    loaded.tctx.command(loaded.addon.commands.hosts)
    (text,) = alerts(caplog)
    lines = text.splitlines()
    assert lines[0] == "2 Known Expect-CT Hosts"
    assert lines[1].startswith("  a.example: report-only, expires ")
    assert lines[2].startswith("  b.example: enforce, expires ")
    assert lines[2].endswith(", report-uri https://r.example/ct")
    assert "old.example" not in text  # expired entries are not Known


def test_forget_command_removes_one_host_from_the_file(
    loaded: Loaded, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    loaded.store.observe("a.example", max_age=3600, enforce=True, report_uri=None)
    loaded.store.observe("b.example", max_age=3600, enforce=True, report_uri=None)
    # Through the command manager, as a user types it.
    loaded.tctx.master.commands.execute("expectct.forget A.Example")
    loaded.tctx.command(loaded.addon.commands.forget, "a.example")
    assert alerts(caplog) == [
        "A.Example: forgotten",
        "a.example: was not a Known Expect-CT Host",
    ]
    with KnownHostStore(loaded.store_path) as other:  # what another process sees
        assert other.get("a.example") is None
        assert other.get("b.example") is not None


def test_forget_command_rejects_an_invalid_host(loaded: Loaded) -> None:
    with pytest.raises(exceptions.CommandError, match="':' is not allowed"):
        loaded.tctx.command(loaded.addon.commands.forget, "a.example:443")


def test_clear_command_removes_everything(loaded: Loaded, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    for name in ("a.example", "b.example", "c.example"):
        loaded.store.observe(name, max_age=3600, enforce=True, report_uri=None)
    loaded.tctx.master.commands.execute("expectct.clear")
    assert alerts(caplog) == ["Removed 3 Known Expect-CT Hosts."]
    assert loaded.store.count() == 0


def test_commands_say_when_the_store_is_not_open(loaded: Loaded) -> None:
    loaded.addon.store.close()  # type: ignore[union-attr]
    loaded.addon.known_hosts.store = None
    for call, args in (
        (loaded.addon.commands.hosts, ()),
        (loaded.addon.commands.forget, ("a.example",)),
        (loaded.addon.commands.clear, ()),
    ):
        with pytest.raises(exceptions.CommandError, match="store is not open"):
            loaded.tctx.command(call, *args)


# ----------------------------------------------------------- the blocking decision


@dataclass(frozen=True)
class Chains:
    compliant: tuple
    non_compliant: tuple
    private: tuple
    untrusted: tuple


@pytest.fixture(scope="module")
def chains(world: World) -> Chains:
    stranger_root = pki.make_root("Stranger Root")
    stranger = pki.make_intermediate(stranger_root, "Stranger CA")
    untrusted_leaf, _ = pki.make_leaf(stranger)
    return Chains(
        compliant=(world.compliant.cert, world.public_inter.cert),
        non_compliant=(world.non_compliant.cert, world.public_inter.cert),
        private=(world.private.cert, world.private_inter.cert),
        untrusted=(untrusted_leaf, stranger.cert),
    )


def make_known(store: HostStore, state: str) -> None:
    if state == "report-only":
        store.observe(HOST, max_age=3600, enforce=False, report_uri="https://r.example/ct")
    elif state == "enforce":
        store.observe(HOST, max_age=3600, enforce=True, report_uri=None)
    elif state == "expired-enforce":
        store.observe(HOST, max_age=60, enforce=True, report_uri=None, now=PAST)
    else:
        assert state == "unknown"


def expected_block(mode: str, chain: str, known: str) -> str | None:
    """RFC 9163 2.4 plus the addon's options; "known"/"all" name the reason, None: not blocked."""
    if mode == "off" or chain in ("compliant", "private"):
        return None  # compliant, or exempt (RFC 9163 2.4.1: a local trust anchor)
    if known == "enforce":
        # Also for a chain nobody trusts (reachable with ssl_insecure): the host asked.
        return "known"
    if mode == "all" and chain == "non_compliant":
        return "all"
    return None


CHAIN_KINDS = ("compliant", "non_compliant", "private", "untrusted")
KNOWN_STATES = ("unknown", "report-only", "enforce", "expired-enforce")


@pytest.mark.parametrize(("chain", "known"), list(itertools.product(CHAIN_KINDS, KNOWN_STATES)))
def test_block_reason_for_every_mode(
    loaded: Loaded, chains: Chains, chain: str, known: str
) -> None:
    make_known(loaded.store, known)
    served = getattr(chains, chain)
    for mode in ("off", "header", "all"):
        loaded.tctx.configure(loaded.addon, expect_ct_enforce=mode)
        record = loaded.addon.judge.evaluate(HOST, 443, served, handshake(served))
        reason = loaded.addon.judge.block_reason(record)
        want = expected_block(mode, chain, known)
        if want is None:
            assert reason is None, (mode, reason)
        elif want == "known":
            assert reason is not None and "Known Expect-CT Host with enforce" in reason, mode
            assert record.verdict.policy in reason
        else:
            assert reason is not None and "expect_ct_enforce=all" in reason, mode
        if chain == "compliant" or chain == "private":
            # No store read is needed for a connection that can never be refused.
            assert record.known_host is None


def server(host: str = HOST) -> connection.Server:
    return connection.Server(address=(host, 443), sni=host)


def test_decide_aborts_only_the_blocked_handshake(loaded: Loaded, chains: Chains) -> None:
    make_known(loaded.store, "enforce")
    refused, accepted = server(), server()
    assert loaded.addon.judge.decide(refused, handshake(chains.non_compliant)) is False
    assert loaded.addon.judge.decide(accepted, handshake(chains.compliant)) is True
    assert loaded.addon.connections.live[refused.id].blocked is not None
    assert loaded.addon.connections.live[accepted.id].blocked is None


def test_stale_log_list_suspends_blocking(
    loaded: Loaded, chains: Chains, world: World, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    loaded.tctx.configure(loaded.addon, expect_ct_log_list=str(world.stale_log_list))
    assert "blocking is SUSPENDED" in caplog.text
    make_known(loaded.store, "enforce")
    conn = server()
    assert loaded.addon.judge.decide(conn, handshake(chains.non_compliant)) is True
    record = loaded.addon.connections.live[conn.id]
    assert record.blocked is None
    assert record.would_block is not None and "Known Expect-CT Host" in record.would_block
    assert f"NOT blocking {HOST}:443" in caplog.text


def test_unreadable_store_fails_closed_only_where_blocking_is_possible(
    loaded: Loaded, chains: Chains, world: World
) -> None:
    loaded.store.close()  # every read now raises StoreError
    # Compliant and exempt connections never depend on the store.
    assert loaded.addon.judge.decide(server(), handshake(chains.compliant)) is True
    assert loaded.addon.judge.decide(server(), handshake(chains.private)) is True
    # A non-compliant public connection might be to a Known enforce host: refused.
    assert loaded.addon.judge.decide(server(), handshake(chains.non_compliant)) is False
    # Unless nothing is blocked anyway.
    loaded.tctx.configure(loaded.addon, expect_ct_enforce="off")
    assert loaded.addon.judge.decide(server(), handshake(chains.non_compliant)) is True
    loaded.tctx.configure(
        loaded.addon, expect_ct_enforce="header", expect_ct_log_list=str(world.stale_log_list)
    )
    assert loaded.addon.judge.decide(server(), handshake(chains.non_compliant)) is True


# ------------------------------------------------------------------------- hooks


def failed_handshake(loaded: Loaded, chains: Chains) -> tuple[connection.Client, connection.Server]:
    """A blocked upstream handshake as mitmproxy reports it: decision, then tls_failed_server."""
    make_known(loaded.store, "enforce")
    client, upstream = tflow.tclient_conn(), server()
    assert loaded.addon.judge.decide(upstream, handshake(chains.non_compliant)) is False
    loaded.addon.tls_failed_server(TlsData(upstream, Context(client, loaded.tctx.options)))
    # mitmproxy then closes the connection, before any request hook runs.
    loaded.addon.server_disconnected(ServerConnectionHookData(upstream, client))
    return client, upstream


def https_flow(
    client: connection.Client, upstream: connection.Server, host: str = HOST
) -> http.HTTPFlow:
    flow = tflow.tflow(client_conn=client, server_conn=upstream)
    flow.request.url = f"https://{host}/account"
    return flow


def placeholder(host: str) -> connection.Server:
    """The server connection a lazy flow carries: never opened, SNI from the client."""
    return connection.Server(address=(host, 443), sni=host)


def test_eager_request_on_a_refused_connection_gets_the_addon_502(
    loaded: Loaded, chains: Chains
) -> None:
    client, upstream = failed_handshake(loaded, chains)
    flow = https_flow(client, upstream)
    loaded.addon.request(flow)
    assert flow.response is not None and flow.response.status_code == 502
    body = flow.response.get_text() or ""
    assert f"Host: {HOST}:443" in body
    assert "Policy: chrome" in body
    assert "no SCTs" in body
    assert flow.marked == ":no_entry:"
    assert flow.comment.startswith("BLOCKED by Expect-CT:")
    assert flow.metadata["expect_ct"]["blocked"].startswith(f"{HOST} is a Known Expect-CT Host")
    # The response hook also fires for the addon's own 502: it must leave it alone.
    loaded.addon.response(flow)
    assert flow.response.status_code == 502
    assert "header" not in flow.metadata["expect_ct"]


def test_lazy_error_on_a_refused_connection_is_marked(loaded: Loaded, chains: Chains) -> None:
    client, _upstream = failed_handshake(loaded, chains)
    # Lazy strategy: the flow keeps its placeholder server connection, not the refused one.
    flow = https_flow(client, placeholder(HOST))
    flow.error = mflow.Error("OpenSSL Error([('SSL routines', '', 'invalid status response')])")
    loaded.addon.error(flow)
    assert flow.marked == ":no_entry:"
    assert flow.metadata["expect_ct"]["blocked"].startswith(f"{HOST} is a Known Expect-CT Host")
    assert flow.comment.startswith("BLOCKED by Expect-CT:")
    # Another host's failure on the same client connection is not ours to claim.
    other = https_flow(client, placeholder("other.example"), host="other.example")
    other.error = mflow.Error("connection refused")
    loaded.addon.error(other)
    assert not other.marked
    assert "expect_ct" not in other.metadata


# ----------------------------------------------------- what connections share (speed)


def test_connections_with_the_same_chain_and_handshake_share_one_evaluation(
    loaded: Loaded, chains: Chains
) -> None:
    addon = loaded.addon
    first = addon.judge.evaluate(HOST, 443, chains.compliant, handshake(chains.compliant))
    misses = addon.verdicts.misses
    second = addon.judge.evaluate(HOST, 8443, chains.compliant, handshake(chains.compliant))
    assert second is not first and second.port == 8443
    assert second.verdict is first.verdict and second.chain is first.chain
    assert second.event is first.event and second.event_json == first.event_json
    assert addon.verdicts.misses == misses  # not even a verdict-cache look-up missed
    # Different handshake data is a different evaluation.
    with_extension = dataclasses.replace(handshake(chains.compliant), tls_extension=b"\0\0")
    third = addon.judge.evaluate(HOST, 443, chains.compliant, with_extension)
    assert third.verdict is not first.verdict
    assert third.event != first.event
    # So is another host name (the name is checked against the certificate).
    elsewhere = addon.judge.evaluate(
        "elsewhere.test", 443, chains.compliant, handshake(chains.compliant)
    )
    assert elsewhere.chain is not first.chain
    assert elsewhere.chain.kind is not first.chain.kind
    # A configuration change forgets every shared evaluation.
    loaded.tctx.configure(addon, expect_ct_policy="apple")
    again = addon.judge.evaluate(HOST, 443, chains.compliant, handshake(chains.compliant))
    assert again.verdict.policy == "apple"


def test_a_shared_evaluation_ends_when_a_certificate_of_the_chain_expires(
    loaded: Loaded, world: World
) -> None:
    soon = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=5)
    leaf, _ = pki.make_leaf(world.public_inter, not_after=soon)
    served = (leaf, world.public_inter.cert)
    addon = loaded.addon
    addon.judge.evaluate(HOST, 443, served, handshake(served))
    assert addon.engine is not None
    memo = addon.engine.memo.entries()
    (expires,) = [e for _, e, m in memo if m.chain.validated[:1] == (leaf,)]
    assert expires - time.monotonic() <= 5.0
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=30)
    assert _next_validity_boundary(served, later) > 30 * 86400  # the intermediate's expiry
    assert _next_validity_boundary((leaf,), later) == float("inf")


@pytest.mark.parametrize(
    "host_header",
    [
        None,
        "example.com",
        "example.com:8443",
        "[::1]:8443",
        "[2001:db8::1]",
        "EXAMPLE.com.",
        "bücher.example",
        "xn--bcher-kva.example:443",
        "bad host:x",
    ],
)
def test_pretty_host_is_mitmproxys(host_header: str | None) -> None:
    flow = tflow.tflow()
    flow.request.host = "upstream.example"
    flow.request.headers.pop("Host", None)
    if host_header is not None:
        flow.request.headers["Host"] = host_header
    assert pretty_host(flow.request) == flow.request.pretty_host
    assert pretty_host(flow.request) == flow.request.pretty_host  # from the memo
    # HTTP/2 and HTTP/3 carry the authority pseudo-header instead.
    flow.request.http_version = "HTTP/2.0"
    flow.request.authority = "h2.example:8443"
    assert pretty_host(flow.request) == flow.request.pretty_host == "h2.example"


def test_repeated_compliant_lines_are_counted_then_summarised(
    loaded: Loaded,
    chains: Chains,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.INFO)
    monkeypatch.setattr(faults_module, "LINE_REPEAT_WINDOW", 0.5)
    for _ in range(3):
        assert loaded.addon.judge.decide(server(), handshake(chains.compliant)) is True
    lines = [
        r.getMessage() for r in caplog.records if "public chain: CT: compliant" in r.getMessage()
    ]
    assert len(lines) == 1 and "more like it" not in lines[0]
    time.sleep(0.6)
    assert loaded.addon.judge.decide(server(), handshake(chains.compliant)) is True
    lines = [
        r.getMessage() for r in caplog.records if "public chain: CT: compliant" in r.getMessage()
    ]
    assert len(lines) == 2 and "(and 2 more like it in the " in lines[1]
    # Problems are never left out.
    for _ in range(2):
        loaded.addon.judge.decide(server(), handshake(chains.non_compliant))
    warnings = [r for r in caplog.records if "public chain: CT: NOT compliant" in r.getMessage()]
    assert len(warnings) == 2 and all(r.levelno == logging.WARNING for r in warnings)
    assert "repeats not logged     2" in loaded.addon.summary()


@pytest.mark.parametrize(
    "fields",
    [
        [],
        [(b"Expect-CT", b"max-age=60")],
        [(b"expect-ct", b"max-age=60"), (b"Server", b"x"), (b"EXPECT-CT", b"enforce")],
        [(b"Expect-CT", b'max-age=60, report-uri="https://r.example/\xff\xfe"')],
        [(b"Expect-CTX", b"max-age=1"), (b"X-Expect-CT", b"max-age=2")],
    ],
)
def test_expect_ct_values_are_mitmproxys_get_all(fields: list[tuple[bytes, bytes]]) -> None:
    headers = http.Headers(fields)
    assert expect_ct_values(headers) == headers.get_all("Expect-CT")


def respond_on(loaded: Loaded, upstream: connection.Server, header: str) -> http.HTTPFlow:
    flow = tflow.tflow(resp=True, server_conn=upstream)
    flow.request.url = f"https://{HOST}/"
    assert flow.response is not None
    flow.response.headers["Expect-CT"] = header
    loaded.addon.response(flow)
    return flow


def test_a_repeated_header_on_one_connection_is_processed_again_after_forget(
    loaded: Loaded, chains: Chains
) -> None:
    upstream = server()
    assert loaded.addon.judge.decide(upstream, handshake(chains.compliant)) is True
    first = respond_on(loaded, upstream, "max-age=3600, enforce")
    assert first.metadata["expect_ct"]["header"]["action"] == "noted"
    assert loaded.store.get(HOST) is not None
    repeats = loaded.addon.stats["header_repeats"]
    again = respond_on(loaded, upstream, "max-age=3600, enforce")
    assert loaded.addon.stats["header_repeats"] == repeats + 1
    assert again.metadata["expect_ct"]["header"] is first.metadata["expect_ct"]["header"]
    # The user forgets the host: the next response on the same connection notes it anew.
    loaded.addon.commands.forget(HOST)
    assert loaded.store.get(HOST) is None
    after = respond_on(loaded, upstream, "max-age=3600, enforce")
    assert after.metadata["expect_ct"]["header"]["action"] == "noted"
    assert loaded.store.get(HOST) is not None
    # A different header on the same connection is never taken for a repeat.
    changed = respond_on(loaded, upstream, "max-age=0")
    assert changed.metadata["expect_ct"]["header"]["action"] == "removed"


@pytest.mark.parametrize(
    "header, action",
    [
        ("max-age=0", "ignored"),  # not known: nothing to remove (RFC 9163 2.3.2)
        ("max-age=86400, enforce", "noted"),
        ("max-age=x", "ignored"),
    ],
)
def test_the_addon_and_check_give_a_header_the_same_effect(
    loaded: Loaded, chains: Chains, header: str, action: str
) -> None:
    """The live addon (store.observe) and ``python -m expect_ct check`` (which predicts the
    store's answer) decide through decisions.py: same action, same why, for a host not yet
    known. Before issue 14 check said "removed" for max-age=0 from an unknown host."""
    upstream = server()
    assert loaded.addon.judge.decide(upstream, handshake(chains.compliant)) is True
    live = respond_on(loaded, upstream, header).metadata["expect_ct"]["header"]
    facts = {k: live[k] for k in ("values", "valid", "error", "max_age", "enforce", "report_uri")}
    offline = check_header_effect(facts, "public", None, True)
    assert (live["action"], live["why"]) == (offline.action, offline.why) == (action, live["why"])
