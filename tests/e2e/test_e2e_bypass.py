"""End to end: the nine enforcement bypasses of issue 17, as regression tests.

Each attack runs with a real mitmdump (the addon loaded with ``-s``), a real impostor on
127.0.0.1 that records every application byte it receives (``support.impostor``), and a real
client (curl; aioquic for HTTP/3 and raw QUIC; ``openssl s_client -dtls`` for DTLS). Each
asserts that no request byte reached the impostor, and that a ``blocked`` record exists only
when the traffic really was refused.

The addon refuses each one before application bytes leave: in the upstream handshake (TLS and
DTLS: OpenSSL's status callback; QUIC and HTTP/3: inside aioquic, see expect_ct.quic), or in the
request hook for a request naming another host than its connection (attack 3).
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from expect_ct.store import KnownHost
from expect_ct.store import KnownHostStore
from support import pki
from support.httpsorigin import https_origin
from support.impostor import dtls_impostor
from support.impostor import dtls_send
from support.impostor import h3_get
from support.impostor import quic_impostor
from support.impostor import quic_send
from support.impostor import tls_impostor
from support.proxy import REPO
from support.proxy import Mitmdump
from support.world import World
from support.world import proxy_options

FAULTS_SCRIPT = REPO / "tests" / "support" / "scripts" / "faults.py"

# Every leaf below is for these names, so any name can be pointed at any impostor.
SAN = ("*.bypass.test", "localhost")
KNOWN = "known.bypass.test"  # a Known Expect-CT Host with enforce in every test's store
ENFORCE = [("Expect-CT", "max-age=86400, enforce")]


@dataclass(frozen=True)
class Site:
    chain_pem: Path  # leaf first
    key_pem: Path


@dataclass(frozen=True)
class Sites:
    compliant: Site  # public root, 2 embedded SCTs: CT-compliant
    non_compliant: Site  # public root, no SCTs: what a mis-issued impostor certificate is
    junk_extra: (
        Site  # non-compliant, plus one certificate OpenSSL ignores, cryptography can't parse
    )
    ca_flagged: Site  # non-compliant leaf asserting cA: OpenSSL accepts it, cryptography does not


def _site(base: Path, name: str, chain: bytes, key: Any) -> Site:
    site = Site(base / f"{name}.chain.pem", base / f"{name}.key.pem")
    site.chain_pem.write_bytes(chain)
    site.key_pem.write_bytes(pki.key_pem(key))
    return site


@pytest.fixture(scope="module")
def sites(world: World, tmp_path_factory: pytest.TempPathFactory) -> Sites:
    base = tmp_path_factory.mktemp("bypass-sites")
    inter = world.public_inter
    ts = pki.now_ms() - 60_000
    good, good_key = pki.make_leaf(
        inter, hosts=SAN, embedded=[(world.log_a, ts), (world.log_b, ts)]
    )
    bad, bad_key = pki.make_leaf(inter, hosts=SAN)
    odd, odd_key = pki.make_leaf(inter, hosts=SAN, ca_flag=True)
    junk = pki.der_pem(pki.unparsable_certificate(inter))
    return Sites(
        compliant=_site(base, "compliant", pki.pem(good, inter.cert), good_key),
        non_compliant=_site(base, "non-compliant", pki.pem(bad, inter.cert), bad_key),
        junk_extra=_site(base, "junk", pki.pem(bad, inter.cert) + junk, bad_key),
        ca_flagged=_site(base, "ca-flagged", pki.pem(odd, inter.cert), odd_key),
    )


# ---------------------------------------------------------------------------- helpers


@dataclass(frozen=True)
class Fetched:
    status: int
    body: bytes
    curl_exit: int
    stderr: str


def fetch(
    proxy: Mitmdump,
    url: str,
    *,
    http2: bool = False,
    headers: tuple[str, ...] = (),
    proxy_scheme: str = "http",
) -> Fetched:
    """One request with a real curl through the proxy (``socks5h``: a SOCKS5 proxy that
    resolves the name)."""
    body = proxy.workdir / f"body-{time.monotonic_ns()}"
    args = ["curl", "-sS", "--max-time", "15", "--noproxy", "", "-o", str(body)]
    args += ["--proxy", f"{proxy_scheme}://127.0.0.1:{proxy.port}", "--cacert", str(proxy.ca_cert)]
    args += ["--http2" if http2 else "--http1.1", "-w", "%{http_code}"]
    for header in headers:
        args += ["-H", header]
    done = subprocess.run(args + [url], capture_output=True, timeout=25)
    content = body.read_bytes() if body.exists() else b""
    return Fetched(int(done.stdout or b"0"), content, done.returncode, done.stderr.decode())


def seed(store: Path, host: str = KNOWN, *, max_age: int = 86400) -> None:
    """Make ``host`` a Known Expect-CT Host with enforce, as a compliant visit would have."""
    with KnownHostStore(store) as known:
        known.observe(host, max_age=max_age, enforce=True, report_uri=None)


def stored(store: Path, host: str) -> KnownHost | None:
    with KnownHostStore(store) as known:
        return known.get(host)


def blocked(proxy: Mitmdump, host: str) -> list[dict[str, Any]]:
    return [e for e in proxy.events("blocked") if e["host"] == host]


def assert_refused_and_recorded(proxy: Mitmdump, host: str, received: int) -> None:
    """Nothing reached the impostor (``received``: application bytes, or DTLS application
    data records), and the record says it was refused."""
    assert received == 0, f"application data reached the impostor ({received} bytes or records)"
    proxy.wait_for_event("blocked", lambda e: e["host"] == host)


def settle_until(condition: Any, deadline: float = 5.0) -> None:
    end = time.monotonic() + deadline
    while not condition():
        if time.monotonic() > end:
            raise AssertionError("the condition never became true")
        time.sleep(0.05)


def settle(proxy: Mitmdump, seconds: float = 0.5) -> None:
    """Give the proxy time to finish writing what a finished exchange produced."""
    time.sleep(seconds)


# ------------------------------------------ attack 3: a request riding another name's connection


@pytest.mark.parametrize("strategy", ["eager", "lazy"])
@pytest.mark.parametrize("http2", [False, True], ids=["http1.1", "http2"])
def test_attack_3_request_for_a_known_host_on_a_connection_opened_for_another_name(
    world: World, sites: Sites, tmp_path: Path, http2: bool, strategy: str
) -> None:
    """CONNECT (and SNI) name an unknown host; the Host / :authority names the Known one.
    Eager: the request hook answers 502. Lazy: the connection opens after the request hook,
    and its handshake decision judges the waiting request's name too."""
    store = tmp_path / "known.sqlite3"
    seed(store)
    with tls_impostor(sites.non_compliant.chain_pem, sites.non_compliant.key_pem) as impostor:
        resolve = {"other.bypass.test": impostor.port, KNOWN: impostor.port}
        options = proxy_options(world, expect_ct_store=str(store), connection_strategy=strategy)
        with Mitmdump(tmp_path, options, resolve=resolve) as proxy:
            # Control: the impostor answers under the unknown name, so it records bytes.
            control = fetch(proxy, "https://other.bypass.test/", http2=http2)
            assert control.status == 200 and control.body == b"impostor content\n", control
            before = impostor.received.application_bytes
            assert before > 0

            attack = fetch(
                proxy, "https://other.bypass.test/secret", http2=http2, headers=(f"Host: {KNOWN}",)
            )
            settle(proxy)
            assert attack.status == 502, attack
            assert_refused_and_recorded(proxy, KNOWN, impostor.received.application_bytes - before)


# ----------------------------------------- attacks 4 and 5: chains OpenSSL accepts, cryptography not


def _all_mode_refuses(world: World, site: Site, tmp_path: Path) -> None:
    options = proxy_options(
        world, expect_ct_store=str(tmp_path / "known.sqlite3"), expect_ct_enforce="all"
    )
    with tls_impostor(site.chain_pem, site.key_pem) as impostor:
        with Mitmdump(
            tmp_path, options, resolve={"never-seen.bypass.test": impostor.port}
        ) as proxy:
            attack = fetch(proxy, "https://never-seen.bypass.test/secret")
            settle(proxy)
            assert attack.status == 502, (attack, proxy.events())
            assert_refused_and_recorded(
                proxy, "never-seen.bypass.test", impostor.received.application_bytes
            )
            assert "Traceback" not in proxy.log_text()


def test_attack_4_an_unparsable_extra_certificate_does_not_exempt_the_chain(
    world: World, sites: Sites, tmp_path: Path
) -> None:
    """expect_ct_enforce=all: a junk certificate appended to a non-compliant public chain."""
    _all_mode_refuses(world, sites.junk_extra, tmp_path)


def test_attack_5_a_leaf_only_cryptography_refuses_is_still_public(
    world: World, sites: Sites, tmp_path: Path
) -> None:
    """expect_ct_enforce=all: mitmproxy (OpenSSL) verified the chain to a public root."""
    _all_mode_refuses(world, sites.ca_flagged, tmp_path)


def test_controls_for_attacks_4_and_5_mitmproxy_accepts_both_chains(
    world: World, sites: Sites, tmp_path: Path
) -> None:
    """With enforcement off, both chains pass mitmproxy's own upstream verification: the
    attacks are about the addon's classification, not about a chain mitmproxy refuses."""
    options = proxy_options(
        world, expect_ct_store=str(tmp_path / "known.sqlite3"), expect_ct_enforce="off"
    )
    with (
        tls_impostor(sites.junk_extra.chain_pem, sites.junk_extra.key_pem) as junk,
        tls_impostor(sites.ca_flagged.chain_pem, sites.ca_flagged.key_pem) as odd,
    ):
        resolve = {"junk.bypass.test": junk.port, "odd.bypass.test": odd.port}
        with Mitmdump(tmp_path, options, resolve=resolve) as proxy:
            for name, impostor in (("junk", junk), ("odd", odd)):
                response = fetch(proxy, f"https://{name}.bypass.test/")
                assert response.status == 200, (name, response, proxy.log_text()[-2000:])
                assert impostor.received.application_bytes > 0
            assert not proxy.events("blocked")


# ------------------------------------------------------------------ attack 6: IDNA 2008 names

IDN = "xn--fa-hia.bypass.test"  # faß.bypass.test as IDNA 2008 (IDNA 2003 says fass.bypass.test)


def test_attack_6_an_idna2008_name_becomes_known_and_is_enforced(
    world: World, sites: Sites, tmp_path: Path
) -> None:
    """Through a SOCKS5 proxy: mitmproxy's HTTP proxy mode refuses such a name in CONNECT
    itself (its host check uses the IDNA 2003 codec), but SOCKS5, transparent, WireGuard and
    local modes pass it on, and the upstream SNI carries it."""
    store = tmp_path / "known.sqlite3"
    socks = ["--mode", "socks5"]
    with (
        https_origin(sites.compliant.chain_pem, sites.compliant.key_pem, {"*": ENFORCE}) as good,
        tls_impostor(sites.non_compliant.chain_pem, sites.non_compliant.key_pem) as impostor,
        Mitmdump(
            tmp_path / "noter",
            proxy_options(world, expect_ct_store=str(store)),
            resolve={IDN: good.port},
            extra_args=socks,
        ) as noter,
        Mitmdump(
            tmp_path / "enforcer",
            proxy_options(world, expect_ct_store=str(store)),
            resolve={IDN: impostor.port, "control.bypass.test": impostor.port},
            extra_args=socks,
        ) as enforcer,
    ):
        noted = fetch(noter, f"https://{IDN}/", proxy_scheme="socks5h")
        assert noted.status == 200, noted
        event = noter.wait_for_event("header", lambda e: e["host"] == IDN)
        assert event["action"] == "noted", event
        # Stored under the IDNA 2008 key, found under either spelling.
        known = stored(store, "faß.bypass.test")
        assert known is not None and known.host == IDN and known.enforce

        control = fetch(enforcer, "https://control.bypass.test/", proxy_scheme="socks5h")
        assert control.status == 200 and impostor.received.application_bytes > 0
        before = impostor.received.application_bytes
        attack = fetch(enforcer, f"https://{IDN}/secret", proxy_scheme="socks5h")
        settle(enforcer)
        # Refused in the upstream handshake, before the client's: mitmproxy then has no
        # upstream certificate to copy names from, so curl sees a TLS error, not a 502.
        assert attack.status != 200 and b"impostor" not in attack.body, attack
        assert_refused_and_recorded(enforcer, IDN, impostor.received.application_bytes - before)


# -------------------------------------------------- attack 7: a short max-age, sent every time


def test_attack_7_a_short_max_age_sent_on_every_response_keeps_the_host_known(
    world: World, sites: Sites, tmp_path: Path
) -> None:
    """max-age=3 on every response: every valid header moves the expiry (RFC 9163 2.3.2.2)."""
    host = "short.bypass.test"
    store = tmp_path / "known.sqlite3"
    routes = {"*": [("Expect-CT", "max-age=3, enforce")]}
    with (
        https_origin(sites.compliant.chain_pem, sites.compliant.key_pem, routes) as good,
        tls_impostor(sites.non_compliant.chain_pem, sites.non_compliant.key_pem) as impostor,
        Mitmdump(
            tmp_path / "noter",
            proxy_options(world, expect_ct_store=str(store)),
            resolve={host: good.port},
        ) as noter,
        Mitmdump(
            tmp_path / "enforcer",
            proxy_options(world, expect_ct_store=str(store)),
            resolve={host: impostor.port},
        ) as enforcer,
    ):
        assert fetch(noter, f"https://{host}/first").status == 200
        noter.wait_for_event("header", lambda e: e["host"] == host and e["action"] == "noted")
        first_noted = time.monotonic()
        # The host keeps sending its header, for longer than max-age.
        while time.monotonic() - first_noted < 4.5:
            assert fetch(noter, f"https://{host}/again").status == 200
            time.sleep(0.3)
        last_header = time.monotonic()
        known = stored(store, host)
        assert known is not None, "the host lapsed although it kept sending max-age=3"

        attack = fetch(enforcer, f"https://{host}/secret")
        settle(enforcer)
        assert attack.status == 502, attack
        assert_refused_and_recorded(enforcer, host, impostor.received.application_bytes)

        # When the headers stop, the host lapses after max-age and is no longer refused.
        time.sleep(max(0.0, last_header + 3.5 - time.monotonic()))
        assert stored(store, host) is None
        assert fetch(enforcer, f"https://{host}/after").status == 200
        assert impostor.received.application_bytes > 0


# ------------------------------------------------------- attack 8: reports to the proxy itself


@pytest.mark.parametrize("spelling", ["[::ffff:127.0.0.1]", "0.0.0.0"])
def test_attack_8_a_report_uri_spelling_the_proxy_differently_is_refused(
    world: World, sites: Sites, tmp_path: Path, spelling: str
) -> None:
    # Filled in once the proxy's port is known (the origin reads it per request).
    routes: dict[str, list[tuple[str, str]]] = {"/unused": []}
    options = proxy_options(
        world,
        expect_ct_store=str(tmp_path / "known.sqlite3"),
        expect_ct_reports="send",
        expect_ct_report_allow_private=True,
    )
    with (
        https_origin(sites.non_compliant.chain_pem, sites.non_compliant.key_pem, routes) as origin,
        Mitmdump(tmp_path, options, resolve={"loop.bypass.test": origin.port}) as proxy,
    ):
        uri = f"https://{spelling}:{proxy.port}/self"
        routes["*"] = [("Expect-CT", f'max-age=60, report-uri="{uri}"')]
        assert fetch(proxy, "https://loop.bypass.test/").status == 200
        event = proxy.wait_for_event("report", lambda e: e["host"] == "loop.bypass.test")
        assert event["delivery"] == "failed"
        assert event["detail"].endswith(f"port {proxy.port} is the proxy itself"), event
        settle(proxy)
        # The proxy saw one client: curl. A report sent to itself would be a second one.
        assert proxy.log_text().count("client connect") == 1, proxy.log_text()


# -------------------------------------------------------- attack 9: expect_ct_max_age_cap=0


def test_attack_9_max_age_cap_zero_at_start_is_refused_cleanly(
    world: World, tmp_path: Path
) -> None:
    """mitmproxy loads ``-s`` scripts while it starts listening: the option error is logged,
    and mitmproxy's errorcheck then exits non-zero, possibly just after the "listening" line.
    So wait for the exit whichever way start() returns."""
    options = proxy_options(
        world, expect_ct_store=str(tmp_path / "known.sqlite3"), expect_ct_max_age_cap=0
    )
    proxy = Mitmdump(tmp_path, options)
    try:
        proxy.start()
    except RuntimeError as e:
        assert "exited with" in str(e), e
    assert proxy.process is not None
    code = proxy.process.wait(timeout=30)  # a hang guard, not a speed limit
    text = proxy.log_text()
    proxy.stop()
    assert code != 0, text
    lines = [line for line in text.splitlines() if "expect_ct_max_age_cap" in line]
    assert len(lines) == 1 and "at least 1" in lines[0], text
    assert "Traceback" not in text
    assert "Error logged during startup" in text


def test_attack_9_max_age_cap_zero_at_run_time_is_rejected_and_changes_nothing(
    world: World, sites: Sites, tmp_path: Path
) -> None:
    first, second = tmp_path / "first.sqlite3", tmp_path / "second.sqlite3"
    seed(first)
    seed(second)
    options = proxy_options(world, expect_ct_store=str(first), expect_ct_max_age_cap=3600)
    with (
        tls_impostor(sites.non_compliant.chain_pem, sites.non_compliant.key_pem) as impostor,
        Mitmdump(
            tmp_path,
            options,
            resolve={KNOWN: impostor.port},
            extra_args=["-s", str(FAULTS_SCRIPT)],
        ) as proxy,
    ):

        def set_option(**changes: object) -> tuple[int, str]:
            query = "&".join(f"{k}={v}" for k, v in changes.items())
            response = proxy.curl(f"http://control.test/set?{query}")
            return response.status, response.body.decode(errors="replace")

        for bad in ("0", "-5"):
            status, text = set_option(expect_ct_max_age_cap=bad)
            assert status == 400 and "expect_ct_max_age_cap" in text, (bad, status, text)
        assert set_option(expect_ct_max_age_cap="7200")[0] == 200
        # A later store change still works, and the Known host is still refused.
        status, text = set_option(expect_ct_store=str(second))
        assert status == 200, text
        attack = fetch(proxy, f"https://{KNOWN}/secret")
        settle(proxy)
        assert attack.status == 502, attack
        assert_refused_and_recorded(proxy, KNOWN, impostor.received.application_bytes)
        assert "Traceback" not in proxy.log_text()


# ----------------------------------------- attacks 1 and 2: HTTP/3, raw QUIC and DTLS upstreams


def _reverse_proxy(
    world: World, tmp_path: Path, store: Path, scheme: str, port: int, **extra: object
) -> Mitmdump:
    """mitmdump as a reverse proxy to KNOWN (resolved to the impostor's port)."""
    return Mitmdump(
        tmp_path,
        proxy_options(world, expect_ct_store=str(store), **extra),
        resolve={KNOWN: port},
        extra_args=["--mode", f"reverse:{scheme}://{KNOWN}:{port}"],
    )


@pytest.mark.parametrize("strategy", ["lazy", "eager"])
def test_attack_1_http3_upstream_of_a_known_host(
    world: World, sites: Sites, tmp_path: Path, strategy: str
) -> None:
    store = tmp_path / "known.sqlite3"
    seed(store)
    with quic_impostor(sites.non_compliant.chain_pem, sites.non_compliant.key_pem) as impostor:
        # Control: the impostor answers HTTP/3 directly.
        direct = h3_get(impostor.port, KNOWN, "/control")
        assert direct.status == 200 and impostor.received.application_bytes > 0, direct
        before = impostor.received.application_bytes
        with _reverse_proxy(
            world, tmp_path, store, "http3", impostor.port, connection_strategy=strategy
        ) as proxy:
            answer = h3_get(proxy.port, KNOWN, "/secret")
            settle(proxy)
            assert answer.status != 200 and b"impostor" not in answer.data, answer
            assert_refused_and_recorded(proxy, KNOWN, impostor.received.application_bytes - before)


def test_attack_2_raw_quic_reverse_mode(world: World, sites: Sites, tmp_path: Path) -> None:
    store = tmp_path / "known.sqlite3"
    seed(store)
    secret = b"request bytes for the known host\n"
    with quic_impostor(sites.non_compliant.chain_pem, sites.non_compliant.key_pem) as impostor:
        direct = quic_send(impostor.port, KNOWN, b"control\n")
        assert direct.data == b"control\n", direct
        before = impostor.received.application_bytes
        with _reverse_proxy(world, tmp_path, store, "quic", impostor.port) as proxy:
            answer = quic_send(proxy.port, KNOWN, secret)
            settle(proxy)
            assert answer.data != secret, answer
            assert_refused_and_recorded(proxy, KNOWN, impostor.received.application_bytes - before)


def test_attack_2_dtls_reverse_mode(world: World, sites: Sites, tmp_path: Path) -> None:
    """With s_client as the client, mitmproxy 11 relays the client's datagrams as payload of
    its upstream DTLS session, so application data reaches the impostor as soon as that
    session is up: exactly what refusing the upstream handshake has to prevent."""
    store = tmp_path / "known.sqlite3"
    seed(store)
    secret = b"request bytes for the known host\n"
    with dtls_impostor(
        tmp_path, sites.non_compliant.chain_pem, sites.non_compliant.key_pem
    ) as impostor:
        # Control: the impostor reads what a client sends it directly.
        dtls_send(impostor.port, KNOWN, b"control\n")
        settle_until(lambda: b"control\n" in impostor.stdout.read_bytes())
        before = impostor.application_records()
        assert before > 0
        with _reverse_proxy(world, tmp_path, store, "dtls", impostor.port) as proxy:
            output = dtls_send(proxy.port, KNOWN, secret, timeout=3)
            settle(proxy, 1.0)
            assert secret not in impostor.stdout.read_bytes(), output
            assert_refused_and_recorded(proxy, KNOWN, impostor.application_records() - before)
