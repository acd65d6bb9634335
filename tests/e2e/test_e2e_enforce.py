"""End to end: Known Expect-CT Hosts and enforcement (RFC 9163 sections 2.3 and 2.4).

A real mitmdump with the addon, real origins on 127.0.0.1, a real client, and a real store
file. ``resolve=`` points one host name at different origins, so a host can be noted over a
CT-compliant connection and later met over a non-compliant one, as after a mis-issuance.

Blocking happens in the upstream TLS handshake, at the OCSP status callback, which runs after
the server's certificate flight and before the proxy sends its Finished. The origin therefore
sees a TCP connection and a ClientHello, but never a completed handshake nor a request byte.
What the client gets depends on mitmproxy's connection_strategy:

* eager: the handshake fails before the client's request arrives; the addon answers the
  request with its own 502 naming the host, the policy and what was missing.
* lazy: the request hook has already run when the connection opens; the failed handshake
  makes mitmproxy answer 502 with the OpenSSL error ("invalid status response"), a text the
  addon cannot change.
"""

from __future__ import annotations

import datetime
import http.client
import json
import signal
import sqlite3
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from mitmproxy import http as mhttp
from mitmproxy import io as mio

from expect_ct.store import KnownHost
from expect_ct.store import KnownHostStore
from support import pki
from support.httpsorigin import Origin
from support.httpsorigin import https_origin
from support.origins import http_response
from support.origins import observed_openssl_origin
from support.proxy import Mitmdump
from support.world import World
from support.world import proxy_options

# Every leaf below carries these names, so any of them can be pointed at any origin.
SAN = ("shop.test", "*.e2e.test")

ROUTES = {
    "/enforce": [("Expect-CT", "max-age=86400, enforce")],
    "/report-only": [("Expect-CT", "max-age=86400")],
    "/remove": [("Expect-CT", "max-age=0")],
    "/malformed": [("Expect-CT", "max-age=abc, enforce")],
    "/": [],
}

BLOCKED_IN_HANDSHAKE = "invalid status response"  # OpenSSL's text for the aborted handshake
NO_SCTS = "no SCTs"


@dataclass(frozen=True)
class Sites:
    compliant: tuple[Path, Path]  # (chain, key): public root, 2 embedded SCTs
    non_compliant: tuple[Path, Path]  # public root, no SCTs
    private: tuple[Path, Path]  # private root, no SCTs
    non_compliant_cert: Any
    non_compliant_key: Any


def _write_site(
    base: Path, name: str, issuer: pki.CA, embedded: list
) -> tuple[Any, Any, Path, Path]:
    cert, key = pki.make_leaf(issuer, hosts=SAN, embedded=embedded)
    chain, keyfile = base / f"{name}.chain.pem", base / f"{name}.key.pem"
    chain.write_bytes(pki.pem(cert, issuer.cert))
    keyfile.write_bytes(pki.key_pem(key))
    return cert, key, chain, keyfile


@pytest.fixture(scope="module")
def sites(world: World, tmp_path_factory: pytest.TempPathFactory) -> Sites:
    base = tmp_path_factory.mktemp("enforce-sites")
    ts = pki.now_ms() - 60_000
    good = _write_site(base, "good", world.public_inter, [(world.log_a, ts), (world.log_b, ts + 1)])
    bad = _write_site(base, "bad", world.public_inter, [])
    private = _write_site(base, "private", world.private_inter, [])
    return Sites(
        compliant=good[2:],
        non_compliant=bad[2:],
        private=private[2:],
        non_compliant_cert=bad[0],
        non_compliant_key=bad[1],
    )


@pytest.fixture(scope="module")
def compliant_origin(sites: Sites) -> Iterator[Origin]:
    with https_origin(*sites.compliant, ROUTES) as origin:
        yield origin


@pytest.fixture(scope="module")
def non_compliant_origin(sites: Sites) -> Iterator[Origin]:
    with https_origin(*sites.non_compliant, ROUTES) as origin:
        yield origin


@pytest.fixture(scope="module")
def private_origin(sites: Sites) -> Iterator[Origin]:
    with https_origin(*sites.private, ROUTES) as origin:
        yield origin


# ---------------------------------------------------------------------------- helpers


@dataclass(frozen=True)
class Fetched:
    status: int
    body: bytes
    curl_exit: int
    stderr: str


def fetch(proxy: Mitmdump, url: str, *, http2: bool = False) -> Fetched:
    """One request with a real curl through the proxy; the final status from curl itself."""
    body = proxy.workdir / f"body-{time.monotonic_ns()}"
    done = subprocess.run(
        [
            "curl",
            "-sS",
            "--max-time",
            "15",
            "--noproxy",
            "",
            "--proxy",
            f"http://127.0.0.1:{proxy.port}",
            "--cacert",
            str(proxy.ca_cert),
            "--http2" if http2 else "--http1.1",
            "-o",
            str(body),
            "-w",
            "%{http_code}",
            url,
        ],
        capture_output=True,
        timeout=20,
    )
    status = int(done.stdout or b"0")
    content = body.read_bytes() if body.exists() else b""
    return Fetched(status, content, done.returncode, done.stderr.decode(errors="replace"))


def saved_flows(path: Path) -> list[mhttp.HTTPFlow]:
    with path.open("rb") as f:
        return [f for f in mio.FlowReader(f).stream() if isinstance(f, mhttp.HTTPFlow)]


def host_events(proxy: Mitmdump, kind: str, host: str) -> list[dict[str, Any]]:
    return [e for e in proxy.events(kind) if e["host"] == host]


def seed(store_path: Path, host: str, *, enforce: bool = True, max_age: int = 86400) -> None:
    """Make ``host`` Known directly in the store file (for tests about what follows)."""
    with KnownHostStore(store_path) as store:
        store.observe(host, max_age=max_age, enforce=enforce, report_uri=None)


def stored(store_path: Path, host: str) -> KnownHost | None:
    with KnownHostStore(store_path) as store:
        return store.get(host)


# ------------------------------------------------- noted, restarted, then blocked


@pytest.fixture(scope="module")
def noted_store(
    world: World, compliant_origin: Origin, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A store in which a first mitmdump noted shop.test (enforce) over a compliant origin."""
    workdir = tmp_path_factory.mktemp("enforce-noting")
    store = workdir / "known.sqlite3"
    with Mitmdump(
        workdir,
        proxy_options(world, expect_ct_store=str(store)),
        resolve={"shop.test": compliant_origin.port},
    ) as proxy:
        response = fetch(proxy, "https://shop.test/enforce")
        assert response.status == 200, response
        event = proxy.wait_for_event("header", lambda e: e["host"] == "shop.test")
        assert event["action"] == "noted"
        # The first mitmdump stops here: what follows must come from the file.
    known = stored(store, "shop.test")
    assert known is not None and known.enforce
    # Not capped by the default expect_ct_max_age_cap (30 days).
    assert known.expires - known.last_observed == datetime.timedelta(seconds=86400)
    return store


@pytest.mark.parametrize("loading", ["script", "built-in"])
@pytest.mark.parametrize("strategy", ["eager", "lazy"])
def test_known_enforce_host_is_blocked_by_a_restarted_proxy(
    world: World,
    noted_store: Path,
    non_compliant_origin: Origin,
    tmp_path: Path,
    strategy: str,
    loading: str,
) -> None:
    flows_file = tmp_path / "flows.mitm"
    options = proxy_options(
        world,
        expect_ct_store=str(noted_store),
        connection_strategy=strategy,
        save_stream_file=str(flows_file),
    )
    resolve = {
        "shop.test": non_compliant_origin.port,
        "control.e2e.test": non_compliant_origin.port,
    }
    with Mitmdump(tmp_path, options, resolve=resolve, built_in=loading == "built-in") as proxy:
        # Positive control: the same origin, under a host name that is not Known, is reached,
        # so an empty request list below means "refused", not "this origin records nothing".
        control = fetch(proxy, "https://control.e2e.test/")
        assert control.status == 200, control
        assert ("GET", "/") in non_compliant_origin.requests
        requests_before = list(non_compliant_origin.requests)
        connections_before = non_compliant_origin.connections

        blocked = fetch(proxy, "https://shop.test/secret")

        assert blocked.status == 502, blocked
        if strategy == "eager":
            text = blocked.body.decode()
            assert "shop.test" in text
            assert "Policy: chrome" in text
            assert NO_SCTS in text  # what was missing
            assert "Known Expect-CT Host with enforce" in text
        else:
            # mitmproxy's own error page, from the handshake error; the addon cannot reword it.
            assert BLOCKED_IN_HANDSHAKE in blocked.body.decode()
        # Not one HTTP request reached the origin. The TLS handshake did start there (one
        # more TCP connection), but it was aborted before the proxy's Finished, so no
        # request could have been sent on it (test_origin_sees_no_finished proves that part).
        assert non_compliant_origin.requests == requests_before
        assert ("GET", "/secret") not in non_compliant_origin.requests
        assert non_compliant_origin.connections == connections_before + 1

        event = proxy.wait_for_event("blocked", lambda e: e["host"] == "shop.test")
        assert "Known Expect-CT Host with enforce" in event["reason"]
        assert NO_SCTS in event["reason"]
        assert event["known_host"]["host"] == "shop.test"
        assert event["known_host"]["enforce"] is True
        assert event["port"] == non_compliant_origin.port
        assert "blocked shop.test" in proxy.log_text()
        assert not host_events(proxy, "blocked", "control.e2e.test")

    flows = {f.request.pretty_host: f for f in saved_flows(flows_file)}
    flow = flows["shop.test"]
    assert flow.marked == ":no_entry:"
    assert flow.comment.startswith("BLOCKED by Expect-CT: CT: NOT compliant")
    assert flow.metadata["expect_ct"]["blocked"] == event["reason"]
    if strategy == "eager":
        assert flow.response is not None and flow.response.status_code == 502
    else:
        assert flow.response is None
        assert flow.error is not None and BLOCKED_IN_HANDSHAKE in flow.error.msg
    # The unblocked non-compliant control flow is only marked as a warning.
    assert flows["control.e2e.test"].marked == ":warning:"
    assert "blocked" not in flows["control.e2e.test"].metadata["expect_ct"]


@pytest.mark.parametrize("strategy", ["eager", "lazy"])
def test_origin_sees_no_finished_and_no_application_data(
    world: World, sites: Sites, tmp_path: Path, strategy: str
) -> None:
    """What a blocked origin received, from its own TLS message log (openssl s_server -msg).

    Hosts come from an expect_ct_preload file, so this also shows a preloaded enforce host
    being blocked on first contact.
    """
    preload = tmp_path / "preload.json"
    expires = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=30)
    preload.write_text(
        json.dumps(
            [
                {"host": f"tls{v}.e2e.test", "enforce": True, "expires": pki.rfc3339(expires)}
                for v in ("12", "13")
            ]
        )
    )
    cert_pem = pki.pem(sites.non_compliant_cert)
    key_pem = pki.key_pem(sites.non_compliant_key)
    chain_pem = pki.pem(world.public_inter.cert)
    responses = {"index.html": http_response(body=b"origin content")}
    with (
        observed_openssl_origin(
            tmp_path,
            cert_pem=cert_pem,
            key_pem=key_pem,
            chain_pem=chain_pem,
            tls="1.2",
            responses=responses,
        ) as tls12,
        observed_openssl_origin(
            tmp_path,
            cert_pem=cert_pem,
            key_pem=key_pem,
            chain_pem=chain_pem,
            tls="1.3",
            responses=responses,
        ) as tls13,
    ):
        resolve = {
            "tls12.e2e.test": tls12.port,
            "tls13.e2e.test": tls13.port,
            "open12.e2e.test": tls12.port,
            "open13.e2e.test": tls13.port,
        }
        options = proxy_options(
            world,
            expect_ct_store=str(tmp_path / "known.sqlite3"),
            expect_ct_preload=str(preload),
            connection_strategy=strategy,
        )
        with Mitmdump(tmp_path / "proxy", options, resolve=resolve) as proxy:
            for version, origin in (("12", tls12), ("13", tls13)):
                # Positive control through the proxy: an unknown name reaches this origin.
                control = fetch(proxy, f"https://open{version}.e2e.test/index.html")
                assert control.status == 200 and control.body == b"origin content", control
                assert len(origin.served()) == 1

                blocked = fetch(proxy, f"https://tls{version}.e2e.test/index.html")
                assert blocked.status == 502, blocked

                connections = origin.settle()
                assert len(connections) == 2, connections
                reached, refused = connections
                assert reached.client_finished and reached.application_data_records > 0
                assert not refused.client_finished
                assert refused.application_data_records == 0
                # Only the control request and settle()'s own were served.
                assert len(origin.served()) == 2
                event = proxy.wait_for_event(
                    "blocked", lambda e, v=version: e["host"] == f"tls{v}.e2e.test"
                )
                assert event["known_host"]["enforce"] is True
            assert "2 preloaded hosts" in proxy.log_text()


# ------------------------------------------- one store file, two running processes


@pytest.fixture(scope="module")
def shared_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("enforce-shared") / "known.sqlite3"


NAMES = (
    "share",
    "gone",
    "ro",
    "ro-kept",
    "priv",
    "mal",
    "mal-known",
    "fresh",
    "cap",
)


@pytest.fixture(scope="module")
def noter(
    world: World,
    shared_store: Path,
    compliant_origin: Origin,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Mitmdump]:
    """Proxy A: every name reaches the compliant origin (where headers get noted)."""
    resolve = {f"{n}.e2e.test": compliant_origin.port for n in NAMES}
    options = proxy_options(world, expect_ct_store=str(shared_store), expect_ct_max_age_cap=3600)
    with Mitmdump(tmp_path_factory.mktemp("noter"), options, resolve=resolve) as proxy:
        yield proxy


@pytest.fixture(scope="module")
def enforcer(
    world: World,
    shared_store: Path,
    noter: Mitmdump,
    non_compliant_origin: Origin,
    private_origin: Origin,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Mitmdump]:
    """Proxy B, started with A, on the same file: the names reach non-compliant origins."""
    resolve = {f"{n}.e2e.test": non_compliant_origin.port for n in NAMES}
    resolve["priv.e2e.test"] = private_origin.port
    options = proxy_options(world, expect_ct_store=str(shared_store))
    with Mitmdump(tmp_path_factory.mktemp("enforcer"), options, resolve=resolve) as proxy:
        yield proxy


def note(noter: Mitmdump, host: str, path: str, action: str) -> dict[str, Any]:
    """Fetch ``path`` from ``host`` through the noting proxy; its header event must say ``action``."""
    seen = len(host_events(noter, "header", host))
    assert fetch(noter, f"https://{host}{path}").status == 200
    noter.wait_for_event("header", lambda e: len(host_events(noter, "header", host)) > seen)
    event = host_events(noter, "header", host)[seen]
    assert event["action"] == action, event
    return event


def test_a_host_noted_by_one_proxy_is_enforced_by_another_already_running(
    noter: Mitmdump, enforcer: Mitmdump, non_compliant_origin: Origin, shared_store: Path
) -> None:
    host = "share.e2e.test"
    # B meets the host before anyone noted it: not Known, not blocked.
    assert fetch(enforcer, f"https://{host}/").status == 200
    note(noter, host, "/enforce", "noted")
    # B must look the host up for this new connection, not trust what it saw before.
    before = list(non_compliant_origin.requests)
    response = fetch(enforcer, f"https://{host}/after")
    assert response.status == 502 and host in response.body.decode()
    assert non_compliant_origin.requests == before
    enforcer.wait_for_event("blocked", lambda e: e["host"] == host)


def test_max_age_cap_caps_the_stored_expiry(noter: Mitmdump, shared_store: Path) -> None:
    host = "cap.e2e.test"
    event = note(noter, host, "/enforce", "noted")
    assert event["max_age"] == 86400
    assert "known for 3600 s" in event["why"]
    known = stored(shared_store, host)
    assert known is not None
    # The header said 86400 s; this proxy runs with expect_ct_max_age_cap=3600 (the
    # restart test's store, noted with the default cap, keeps the full 86400 s).
    assert known.expires - known.last_observed == datetime.timedelta(seconds=3600)


def test_max_age_zero_over_a_compliant_connection_removes_the_host(
    noter: Mitmdump, enforcer: Mitmdump, non_compliant_origin: Origin, shared_store: Path
) -> None:
    host = "gone.e2e.test"
    note(noter, host, "/enforce", "noted")
    assert fetch(enforcer, f"https://{host}/while-known").status == 502
    note(noter, host, "/remove", "removed")
    assert stored(shared_store, host) is None
    response = fetch(enforcer, f"https://{host}/after-removal")
    assert response.status == 200
    assert ("GET", "/after-removal") in non_compliant_origin.requests


def test_report_only_host_is_not_blocked(
    noter: Mitmdump, enforcer: Mitmdump, non_compliant_origin: Origin, shared_store: Path
) -> None:
    host = "ro.e2e.test"
    note(noter, host, "/report-only", "noted")
    known = stored(shared_store, host)
    assert known is not None and known.enforce is False
    assert fetch(enforcer, f"https://{host}/report-only-visit").status == 200
    assert ("GET", "/report-only-visit") in non_compliant_origin.requests
    connection = enforcer.wait_for_event("connection", lambda e: e["host"] == host)
    assert connection["compliant"] is False
    assert not host_events(enforcer, "blocked", host)


def test_private_root_chain_is_exempt_for_a_known_enforce_host(
    noter: Mitmdump, enforcer: Mitmdump, private_origin: Origin
) -> None:
    host = "priv.e2e.test"
    note(noter, host, "/enforce", "noted")
    assert fetch(enforcer, f"https://{host}/corporate").status == 200
    assert ("GET", "/corporate") in private_origin.requests
    connection = enforcer.wait_for_event("connection", lambda e: e["host"] == host)
    assert connection["chain"] == "private"
    assert not host_events(enforcer, "blocked", host)


def test_malformed_header_changes_nothing(
    noter: Mitmdump, enforcer: Mitmdump, shared_store: Path
) -> None:
    # Not Known before: a malformed header (which says enforce) does not note it.
    note(noter, "mal.e2e.test", "/malformed", "ignored")
    assert stored(shared_store, "mal.e2e.test") is None
    assert fetch(enforcer, "https://mal.e2e.test/").status == 200
    # Known before: a malformed header neither removes nor refreshes the entry.
    host = "mal-known.e2e.test"
    note(noter, host, "/enforce", "noted")
    before = stored(shared_store, host)
    note(noter, host, "/malformed", "ignored")
    assert stored(shared_store, host) == before
    assert fetch(enforcer, f"https://{host}/").status == 502


def test_header_on_a_non_compliant_connection_changes_nothing(
    noter: Mitmdump, enforcer: Mitmdump, shared_store: Path
) -> None:
    # An unknown host sending enforce over a non-compliant connection is not noted.
    host = "fresh.e2e.test"
    assert fetch(enforcer, f"https://{host}/enforce").status == 200
    event = enforcer.wait_for_event("header", lambda e: e["host"] == host)
    assert event["valid"] is True and event["action"] == "ignored"
    assert "not CT-compliant" in event["why"]
    assert stored(shared_store, host) is None
    assert fetch(enforcer, f"https://{host}/again").status == 200
    # A Known report-only host is neither removed (max-age=0) nor upgraded (enforce) there.
    host = "ro-kept.e2e.test"
    note(noter, host, "/report-only", "noted")
    before = stored(shared_store, host)
    for path in ("/remove", "/enforce"):
        assert fetch(enforcer, f"https://{host}{path}").status == 200
    enforcer.wait_for_event(
        "header", lambda e: e["host"] == host and e["values"] == ["max-age=86400, enforce"]
    )
    assert stored(shared_store, host) == before


# ------------------------------------------------------------- option variants


def test_stale_log_list_suspends_blocking_with_warnings(
    world: World, non_compliant_origin: Origin, tmp_path: Path
) -> None:
    store = tmp_path / "known.sqlite3"
    seed(store, "shop.test")
    flows_file = tmp_path / "flows.mitm"
    options = proxy_options(
        world,
        expect_ct_store=str(store),
        expect_ct_log_list=str(world.stale_log_list),
        save_stream_file=str(flows_file),
    )
    with Mitmdump(tmp_path, options, resolve={"shop.test": non_compliant_origin.port}) as proxy:
        startup = proxy.log_text()
        assert "blocking is SUSPENDED" in startup
        response = fetch(proxy, "https://shop.test/stale")
        assert response.status == 200
        assert ("GET", "/stale") in non_compliant_origin.requests
        proxy.wait_for_event("connection", lambda e: e["host"] == "shop.test")
        assert "NOT blocking shop.test" in proxy.log_text()
        assert not proxy.events("blocked")
    (flow,) = [f for f in saved_flows(flows_file) if f.request.path == "/stale"]
    would_block = flow.metadata["expect_ct"]["would_block"]
    assert "Known Expect-CT Host with enforce" in would_block
    assert "blocked" not in flow.metadata["expect_ct"]
    assert flow.marked == ":warning:"


def test_enforce_off_blocks_nothing(
    world: World, non_compliant_origin: Origin, tmp_path: Path
) -> None:
    store = tmp_path / "known.sqlite3"
    seed(store, "shop.test")
    options = proxy_options(world, expect_ct_store=str(store), expect_ct_enforce="off")
    with Mitmdump(tmp_path, options, resolve={"shop.test": non_compliant_origin.port}) as proxy:
        assert fetch(proxy, "https://shop.test/off").status == 200
        assert ("GET", "/off") in non_compliant_origin.requests
        connection = proxy.wait_for_event("connection", lambda e: e["host"] == "shop.test")
        assert connection["compliant"] is False
        assert not proxy.events("blocked")


def test_enforce_all_blocks_never_seen_public_hosts_only(
    world: World,
    compliant_origin: Origin,
    non_compliant_origin: Origin,
    private_origin: Origin,
    tmp_path: Path,
) -> None:
    resolve = {
        "public.e2e.test": non_compliant_origin.port,
        "private.e2e.test": private_origin.port,
        "good.e2e.test": compliant_origin.port,
    }
    options = proxy_options(
        world, expect_ct_store=str(tmp_path / "known.sqlite3"), expect_ct_enforce="all"
    )
    with Mitmdump(tmp_path, options, resolve=resolve) as proxy:
        before = list(non_compliant_origin.requests)
        blocked = fetch(proxy, "https://public.e2e.test/all")
        assert blocked.status == 502
        assert "expect_ct_enforce=all" in blocked.body.decode()
        assert non_compliant_origin.requests == before
        event = proxy.wait_for_event("blocked", lambda e: e["host"] == "public.e2e.test")
        assert event["known_host"] is None
        assert fetch(proxy, "https://private.e2e.test/all").status == 200
        assert ("GET", "/all") in private_origin.requests
        assert fetch(proxy, "https://good.e2e.test/all").status == 200
        assert [e["host"] for e in proxy.events("blocked")] == ["public.e2e.test"]


# ----------------------------------------------------------- SIGKILL during writes


def tunnelled_get(proxy_port: int, ca: Path, host: str, path: str) -> tuple[int, str | None]:
    context = ssl.create_default_context(cafile=str(ca))
    conn = http.client.HTTPSConnection("127.0.0.1", proxy_port, context=context, timeout=10)
    try:
        conn.set_tunnel(host, 443)
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        return response.status, response.getheader("Expect-CT")
    finally:
        conn.close()


def test_sigkill_during_writes_keeps_every_acknowledged_host(
    world: World, compliant_origin: Origin, tmp_path: Path
) -> None:
    names = [f"k{i}.e2e.test" for i in range(120)]
    store = tmp_path / "known.sqlite3"
    options = proxy_options(world, expect_ct_store=str(store))
    resolve = dict.fromkeys(names, compliant_origin.port)
    acknowledged: list[str] = []
    attempted: list[str] = []
    lock = threading.Lock()
    pending = iter(names)
    proxy = Mitmdump(tmp_path, options, resolve=resolve).start()

    def client() -> None:
        while True:
            with lock:
                host = next(pending, None)
                if host is None:
                    return
                attempted.append(host)
            try:
                status, header = tunnelled_get(proxy.port, proxy.ca_cert, host, "/enforce")
            except OSError:
                return  # the proxy is gone
            # The response carrying the header reached the client: the host counts as noted.
            if status == 200 and header == "max-age=86400, enforce":
                with lock:
                    acknowledged.append(host)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(4)]
    try:
        for t in threads:
            t.start()
        deadline = time.monotonic() + 20
        while len(acknowledged) < 30 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(acknowledged) >= 30, f"only {len(acknowledged)} hosts noted in time"
        assert proxy.stop(signal.SIGKILL) == -signal.SIGKILL
    finally:
        proxy.stop(signal.SIGKILL)
        for t in threads:
            t.join(15)
    with lock:
        acked = list(acknowledged)
    assert len(acked) < len(attempted), "the kill came after all traffic; nothing was cut off"
    # Killed, not closed: the last commits are still in the write-ahead log, so opening the
    # file below has to recover them from there.
    wal = Path(f"{store}-wal")
    assert wal.exists() and wal.stat().st_size > 0

    raw = sqlite3.connect(store)
    try:
        assert raw.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        raw.close()
    with KnownHostStore(store) as reopened:
        assert reopened.integrity_check() == "ok"
        missing = [h for h in acked if reopened.get(h) is None]
        assert not missing, f"acknowledged but lost: {missing}"
        assert all(reopened.get(h).enforce for h in acked)  # type: ignore[union-attr]
        assert reopened.count() >= len(acked)


@pytest.mark.parametrize("keep_host_header", [False, True])
def test_reverse_proxy_notes_the_upstream_host_that_later_connections_are_checked_under(
    world: World, compliant_origin: Origin, tmp_path: Path, keep_host_header: bool
) -> None:
    store = tmp_path / "known.sqlite3"
    options = proxy_options(world, expect_ct_store=str(store), keep_host_header=keep_host_header)
    with Mitmdump(
        tmp_path,
        options,
        resolve={"shop.test": compliant_origin.port},
        extra_args=["--mode", f"reverse:https://shop.test:{compliant_origin.port}"],
    ) as proxy:
        client = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=15)
        client.request("GET", "/enforce", headers={"Host": "public-name.example"})
        assert client.getresponse().status == 200
        client.close()
        event = proxy.wait_for_event("header")
    assert (event["host"], event["action"]) == ("shop.test", "noted")
    assert event["port"] == compliant_origin.port
    known = stored(store, "shop.test")
    assert known is not None and known.enforce
    assert stored(store, "public-name.example") is None
