"""End to end: RFC 9163 violation reports from a real mitmdump to a real HTTPS collector.

Origins and the collector listen on 127.0.0.1; host names reach the origins through resolve=.
The collector has its own test root, added to ssl_verify_upstream_trusted_ca (the file the
report sender trusts), and is reached with expect_ct_report_allow_private=true.

A test-only script (written next to each proxy) runs a mitmproxy command when curl asks the
proxy for http://command.invalid/<command>?arg=...; it drives ``expectct.testreport``.
Since the sender delivers reports one at a time in order, a test report that has arrived
proves every report submitted before it has been dealt with (``flush_reports``).
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import itertools
import json
import os
import subprocess
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from expect_ct.store import KnownHostStore
from support import pki
from support.collector import REPORT_KEYS
from support.collector import Collector
from support.collector import CollectorPKI
from support.collector import SilentServer
from support.collector import https_collector
from support.collector import make_collector_pki
from support.httpsorigin import Origin
from support.httpsorigin import https_origin
from support.proxy import Mitmdump
from support.proxy import Response
from support.world import World
from support.world import proxy_options

UTC = datetime.UTC
NON_COMPLIANT_HOSTS = ("k.test", "ke.test", "u.test", "u2.test", "self.test", "hang.test")
COMPLIANT_HOSTS = ("k.test", "ke.test", "c.test")
MAX_AGE = 86400

COMMAND_SCRIPT = '''
"""Test only: run a mitmproxy command for http://command.invalid/<command>?arg=..."""
from mitmproxy import ctx
from mitmproxy import exceptions
from mitmproxy import http


class RunCommand:
    def request(self, flow):
        if flow.request.pretty_host != "command.invalid":
            return
        name = flow.request.path.split("?")[0].strip("/")
        try:
            ctx.master.commands.call_strings(name, flow.request.query.get_all("arg"))
        except exceptions.CommandError as e:
            flow.response = http.Response.make(400, str(e).encode())
            return
        flow.response = http.Response.make(200, b"ok")


addons = [RunCommand()]
'''


# ------------------------------------------------------------------------------- fixtures


@dataclass
class Env:
    world: World
    files: CollectorPKI
    collector: Collector
    hung: SilentServer
    rude: SilentServer
    compliant: Origin
    non_compliant: Origin
    private: Origin
    non_compliant_routes: dict[str, list[tuple[str, str]]]
    leaf: x509.Certificate  # the non-compliant origin's certificate
    trust: Path  # upstream trust of mitmproxy plus the collector's root
    store: Path

    def options(self, **extra: object) -> dict[str, object]:
        options = proxy_options(
            self.world,
            ssl_verify_upstream_trusted_ca=str(self.trust),
            expect_ct_store=str(self.store),
            expect_ct_reports="send",
            expect_ct_report_allow_private=True,
        )
        options.update(extra)
        return options

    def resolve(self) -> dict[str, int]:
        mapping = {name: self.non_compliant.port for name in NON_COMPLIANT_HOSTS}
        mapping["c.test"] = self.compliant.port
        mapping["p.test"] = self.private.port
        return mapping


def header(collector: Collector, path: str, *, enforce: bool = False) -> list[tuple[str, str]]:
    value = f'max-age={MAX_AGE}{", enforce" if enforce else ""}, report-uri="{collector.uri(path)}"'
    return [("Expect-CT", value)]


@pytest.fixture(scope="module")
def env(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    base = tmp_path_factory.mktemp("e2e-reports")
    files = make_collector_pki(base / "collector")
    trust = base / "upstream-and-collector.pem"
    trust.write_bytes(world.upstream_trust_pem.read_bytes() + files.root_pem.read_bytes())
    ts = pki.now_ms() - 60_000
    # One SCT from a known log (valid) and one from a log missing from the log list (unknown):
    # a single operator, so not Chrome-compliant, and the report carries both statuses.
    stranger = pki.make_log("Gamma Log", "Gamma")
    leaf, key = pki.make_leaf(
        world.public_inter,
        hosts=NON_COMPLIANT_HOSTS,
        embedded=[(world.log_a, ts), (stranger, ts + 1)],
    )
    good, good_key = pki.make_leaf(
        world.public_inter, hosts=COMPLIANT_HOSTS, embedded=[(world.log_a, ts), (world.log_b, ts)]
    )
    private, private_key = pki.make_leaf(world.private_inter, hosts=("p.test",))
    for name, cert, issuer, k in (
        ("nc", leaf, world.public_inter, key),
        ("ok", good, world.public_inter, good_key),
        ("private", private, world.private_inter, private_key),
    ):
        (base / f"{name}.pem").write_bytes(pki.pem(cert, issuer.cert))
        (base / f"{name}.key").write_bytes(pki.key_pem(k))
    with contextlib.ExitStack() as stack:
        collector = stack.enter_context(https_collector(files))
        hung = SilentServer()
        stack.callback(hung.close)
        rude = SilentServer(reset=True)
        stack.callback(rude.close)
        routes = {
            "/": [],
            "/report-only": header(collector, "/u-report-only"),
            "/enforce": header(collector, "/u-enforce", enforce=True),
            "/r1": header(collector, "/r1"),
            "/r2": header(collector, "/r2"),
            "/refused": header(collector, "/refused"),
            "/off": header(collector, "/off"),
            "/stale": header(collector, "/stale"),
            "/hang": [("Expect-CT", f'max-age=1, report-uri="{hung.uri("/hang")}"')],
            "/reset": [("Expect-CT", f'max-age=1, report-uri="{rude.uri("/reset")}"')],
        }
        good_routes = {
            "/note": header(collector, "/k"),
            "/note-enforce": header(collector, "/ke", enforce=True),
            "/c": header(collector, "/c"),
        }
        yield Env(
            world=world,
            files=files,
            collector=collector,
            hung=hung,
            rude=rude,
            compliant=stack.enter_context(
                https_origin(base / "ok.pem", base / "ok.key", good_routes)
            ),
            non_compliant=stack.enter_context(
                https_origin(base / "nc.pem", base / "nc.key", routes)
            ),
            private=stack.enter_context(
                https_origin(
                    base / "private.pem", base / "private.key", {"/p": header(collector, "/p")}
                )
            ),
            non_compliant_routes=routes,
            leaf=leaf,
            trust=trust,
            store=base / "known-hosts.sqlite3",
        )


@dataclass(frozen=True)
class Noted:
    events: list[dict[str, Any]]
    collector_requests: int
    expires: dict[str, datetime.datetime]


@pytest.fixture(scope="module")
def noted(env: Env, tmp_path_factory: pytest.TempPathFactory) -> Noted:
    """k.test (report-only) and ke.test (enforce) become Known Expect-CT Hosts with a report-uri,
    through a proxy that maps them to the compliant origin."""
    workdir = tmp_path_factory.mktemp("e2e-reports-noting")
    resolve = {"k.test": env.compliant.port, "ke.test": env.compliant.port}
    with Mitmdump(workdir, env.options(), resolve=resolve) as proxy:
        for host, path in (("k.test", "/note"), ("ke.test", "/note-enforce")):
            assert proxy.curl(f"https://{host}:{env.compliant.port}{path}").status == 200
            proxy.wait_for_event("header", lambda r, h=host: r["host"] == h)
    events = proxy.events()
    with contextlib.closing(KnownHostStore(env.store)) as store:
        expires = {}
        for host in ("k.test", "ke.test"):
            known = store.get(host)
            assert known is not None, f"{host} was not noted: {events}"
            expires[host] = known.expires
    return Noted(events, len(env.collector.requests()), expires)


@pytest.fixture(scope="module")
def proxy(env: Env, noted: Noted, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mitmdump]:
    """The main proxy: reports sent, private addresses allowed, names on the test origins."""
    with start_proxy(env, tmp_path_factory.mktemp("e2e-reports-send"), env.options()) as p:
        yield p


@contextlib.contextmanager
def start_proxy(env: Env, workdir: Path, options: dict[str, object]) -> Iterator[Mitmdump]:
    script = workdir / "run_command.py"
    script.write_text(COMMAND_SCRIPT)
    with Mitmdump(workdir, options, resolve=env.resolve(), extra_args=["-s", str(script)]) as p:
        yield p


# -------------------------------------------------------------------------------- helpers


def statuses(proxy: Mitmdump, *urls: str) -> list[int]:
    """Final HTTP statuses of one curl run fetching urls in order (one connection per host)."""
    args = ["curl", "-sS", "--max-time", "15", "--http1.1", "--proxy"]
    args += [f"http://127.0.0.1:{proxy.port}", "--cacert", str(proxy.ca_cert)]
    args += ["-w", "%{http_code}\\n"]
    for url in urls:
        args += ["-o", "/dev/null", url]
    environment = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    done = subprocess.run(args, capture_output=True, timeout=30, env=environment)
    assert done.returncode == 0, done.stderr
    return [int(code) for code in done.stdout.split()]


def run_command(proxy: Mitmdump, name: str, *args: str) -> Response:
    query = urllib.parse.urlencode([("arg", a) for a in args])
    return proxy.curl(f"http://command.invalid/{name}?{query}")


_flushes = itertools.count()


def flush_reports(proxy: Mitmdump, env: Env) -> None:
    """Wait until every report submitted so far has an outcome (the sender works in order)."""
    uri = env.collector.uri(f"/flush-{next(_flushes)}")
    assert run_command(proxy, "expectct.testreport", "flush.test", uri).status == 200
    proxy.wait_for_event("report", lambda r: r["report_uri"] == uri)


def reports(proxy: Mitmdump, host: str) -> list[dict[str, Any]]:
    return [r for r in proxy.events("report") if r["host"] == host]


def pem_of(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


def embedded_sct_bytes(cert: x509.Certificate) -> list[bytes]:
    """The exact serialized SCTs in the certificate, split out of the TLS-encoded list."""
    extension = cert.extensions.get_extension_for_oid(pki.OID_SCT_EMBEDDED).value
    data = pki.der_content(extension.public_bytes())
    assert int.from_bytes(data[:2], "big") == len(data) - 2
    out, i = [], 2
    while i < len(data):
        n = int.from_bytes(data[i : i + 2], "big")
        out.append(data[i + 2 : i + 2 + n])
        i += 2 + n
    return out


def parse_time(value: str) -> datetime.datetime:
    assert value.endswith("Z") and len(value) == len("2017-01-01T00:00:00.000Z"), value
    return datetime.datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def assert_same_instant(value: str, expected: datetime.datetime) -> None:
    # RFC 3339 with milliseconds: equal to the stored date truncated to the millisecond.
    assert parse_time(value) == expected.replace(microsecond=expected.microsecond // 1000 * 1000), (
        value,
        expected,
    )


def assert_non_compliant_connection(report: dict[str, Any], env: Env) -> None:
    """The chains and SCTs of the non-compliant origin, compared with what it really served."""
    world = env.world
    assert report["served-certificate-chain"] == [pem_of(env.leaf), pem_of(world.public_inter.cert)]
    assert report["validated-certificate-chain"] == [
        pem_of(env.leaf),
        pem_of(world.public_inter.cert),
        pem_of(world.public_root.cert),
    ]
    first, second = embedded_sct_bytes(env.leaf)
    expected = [
        {
            "version": 1,
            "status": "valid",
            "source": "embedded",
            "serialized_sct": base64.b64encode(first).decode(),
        },
        {
            "version": 1,
            "status": "unknown",
            "source": "embedded",
            "serialized_sct": base64.b64encode(second).decode(),
        },
    ]
    key = lambda s: s["serialized_sct"]  # noqa: E731 - the RFC allows any order
    assert sorted(report["scts"], key=key) == sorted(expected, key=key)


def received_report(collector: Collector, path: str, count: int = 1) -> dict[str, Any]:
    """The count-th report POSTed to path, after checking its preflight and content type."""
    requests = collector.wait_for(2 * count, path)
    preflight, post = requests[2 * count - 2 : 2 * count]
    assert (preflight.method, post.method) == ("OPTIONS", "POST")
    assert preflight.headers["origin"] == "null"
    assert preflight.headers["access-control-request-method"] == "POST"
    assert preflight.headers["access-control-request-headers"] == "content-type"
    assert post.headers["content-type"] == "application/expect-ct-report+json"
    for request in (preflight, post):
        assert not {"cookie", "authorization", "proxy-authorization", "via"} & set(request.headers)
    body = json.loads(post.body)
    # Compact JSON with sorted keys, like Chromium's base::JSONWriter.
    assert post.body == json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    assert set(body) == {"expect-ct-report"}
    assert set(body["expect-ct-report"]) == REPORT_KEYS
    return body


# ---------------------------------------------------------------------------------- tests


def test_compliant_connections_send_no_report(env: Env, noted: Noted, proxy: Mitmdump) -> None:
    noting = [(e["host"], e["action"]) for e in noted.events if e["event"] == "header"]
    assert noting == [("k.test", "noted"), ("ke.test", "noted")]
    assert [e for e in noted.events if e["event"] == "report"] == []
    assert noted.collector_requests == 0
    # The main proxy too: c.test is compliant and sends a report-uri.
    assert proxy.curl(f"https://c.test:{env.compliant.port}/c").status == 200
    assert proxy.wait_for_event("header", lambda r: r["host"] == "c.test")["action"] == "noted"
    flush_reports(proxy, env)
    assert reports(proxy, "c.test") == []
    assert env.collector.requests("/c") == []


def test_known_host_report_is_sent_then_suppressed(env: Env, noted: Noted, proxy: Mitmdump) -> None:
    port = env.non_compliant.port
    before = datetime.datetime.now(UTC).replace(microsecond=0)
    assert proxy.curl(f"https://k.test:{port}/").status == 200  # report-only: not blocked
    after = datetime.datetime.now(UTC)
    event = proxy.wait_for_event("report", lambda r: r["host"] == "k.test")
    assert (event["report_uri"], event["delivery"], event["detail"]) == (
        env.collector.uri("/k"),
        "sent",
        "HTTP 204",
    )
    body = received_report(env.collector, "/k")
    assert event["body"] == body
    report = body["expect-ct-report"]
    assert report["hostname"] == "k.test"
    assert report["port"] == port
    assert report["scheme"] == "https"
    assert report["failure-mode"] == "report-only"
    assert report["test-report"] is False
    assert before <= parse_time(report["date-time"]) <= after
    assert_same_instant(report["effective-expiration-date"], noted.expires["k.test"])
    assert_non_compliant_connection(report, env)

    # A second failing connection within the hour: recorded, not sent again.
    assert proxy.curl(f"https://k.test:{port}/").status == 200
    again = proxy.wait_for_event(
        "report", lambda r: r["host"] == "k.test" and r["delivery"] == "suppressed"
    )
    assert again["report_uri"] == env.collector.uri("/k")
    assert (
        again["body"]["expect-ct-report"]["served-certificate-chain"]
        == (report["served-certificate-chain"])
    )
    flush_reports(proxy, env)
    assert [r["delivery"] for r in reports(proxy, "k.test")] == ["sent", "suppressed"]
    assert len(env.collector.requests("/k")) == 2  # one preflight, one POST


def test_known_enforce_host_is_blocked_and_reported(
    env: Env, noted: Noted, proxy: Mitmdump
) -> None:
    assert statuses(proxy, f"https://ke.test:{env.non_compliant.port}/") == [502]
    event = proxy.wait_for_event("report", lambda r: r["host"] == "ke.test")
    assert event["delivery"] == "sent"
    body = received_report(env.collector, "/ke")
    assert event["body"] == body
    report = body["expect-ct-report"]
    assert (report["hostname"], report["port"]) == ("ke.test", env.non_compliant.port)
    assert report["failure-mode"] == "enforce"
    assert_same_instant(report["effective-expiration-date"], noted.expires["ke.test"])
    assert_non_compliant_connection(report, env)
    assert [b["reason"] for b in proxy.events("blocked") if b["host"] == "ke.test"]


@pytest.mark.parametrize("mode", ["report-only", "enforce"])
def test_header_from_unknown_host_over_non_compliant_connection(
    env: Env, proxy: Mitmdump, mode: str
) -> None:
    port = env.non_compliant.port
    assert proxy.curl(f"https://u.test:{port}/{mode}").status == 200
    head = proxy.wait_for_event(
        "header", lambda r: r["host"] == "u.test" and r["report_uri"].endswith(f"/u-{mode}")
    )
    assert head["action"] == "ignored" and "not CT-compliant" in head["why"]
    event = proxy.wait_for_event(
        "report", lambda r: r["report_uri"] == env.collector.uri(f"/u-{mode}")
    )
    assert event["delivery"] == "sent"
    body = received_report(env.collector, f"/u-{mode}")
    assert event["body"] == body
    report = body["expect-ct-report"]
    assert (report["hostname"], report["port"], report["scheme"]) == ("u.test", port, "https")
    assert report["failure-mode"] == mode
    assert report["test-report"] is False
    # No stored expiry for a host that is not known: the report carries the failure's time.
    assert report["effective-expiration-date"] == report["date-time"]
    assert_non_compliant_connection(report, env)


def test_at_most_one_report_per_connection(env: Env, proxy: Mitmdump) -> None:
    port = env.non_compliant.port
    # One curl, two requests on one connection; each response names a different report-uri.
    assert statuses(proxy, f"https://u2.test:{port}/r1", f"https://u2.test:{port}/r2") == [200, 200]
    for path in ("/r1", "/r2"):
        proxy.wait_for_event(
            "header", lambda r, p=path: r["host"] == "u2.test" and r["report_uri"].endswith(p)
        )
    assert len([e for e in proxy.events("connection") if e["host"] == "u2.test"]) == 1
    # A new connection may report to /r2: had the first connection reported twice, this one
    # would be "suppressed".
    assert proxy.curl(f"https://u2.test:{port}/r2").status == 200
    flush_reports(proxy, env)
    sent = [(r["report_uri"], r["delivery"]) for r in reports(proxy, "u2.test")]
    assert sent == [(env.collector.uri("/r1"), "sent"), (env.collector.uri("/r2"), "sent")]
    assert len(env.collector.requests("/r1")) == len(env.collector.requests("/r2")) == 2


def test_private_root_is_never_reported(env: Env, proxy: Mitmdump) -> None:
    assert proxy.curl(f"https://p.test:{env.private.port}/p").status == 200
    head = proxy.wait_for_event("header", lambda r: r["host"] == "p.test")
    assert head["action"] == "ignored" and "private root" in head["why"]
    flush_reports(proxy, env)
    assert reports(proxy, "p.test") == []
    assert env.collector.requests("/p") == []


def test_report_uri_on_the_proxy_itself_is_refused(env: Env, proxy: Mitmdump) -> None:
    env.non_compliant_routes["/self"] = [
        ("Expect-CT", f'max-age=1, report-uri="https://127.0.0.1:{proxy.port}/self"')
    ]
    assert proxy.curl(f"https://self.test:{env.non_compliant.port}/self").status == 200
    event = proxy.wait_for_event("report", lambda r: r["host"] == "self.test")
    assert event["delivery"] == "failed"
    assert event["detail"] == f"refused: 127.0.0.1 port {proxy.port} is the proxy itself"


def test_hung_or_resetting_collector_does_not_delay_proxied_requests(
    env: Env, proxy: Mitmdump
) -> None:
    port = env.non_compliant.port
    hang_uri = env.hung.uri("/hang")
    try:
        assert proxy.curl(f"https://hang.test:{port}/hang").status == 200
        env.hung.wait_accepted(1)  # the sender is connected and waits for the collector
        # The proxy keeps serving while that delivery is stuck (its timeout is 10 s).
        for _ in range(10):
            response = proxy.curl(f"https://u.test:{port}/")
            assert (response.status, response.body) == (200, b"hello from /\n")
        assert [r for r in proxy.events("report") if r["report_uri"] == hang_uri] == []
        assert env.hung.accepted == 1
    finally:
        env.hung.release()
    failed = proxy.wait_for_event("report", lambda r: r["report_uri"] == hang_uri)
    assert failed["delivery"] == "failed"

    assert proxy.curl(f"https://hang.test:{port}/reset").status == 200
    reset = proxy.wait_for_event("report", lambda r: r["report_uri"] == env.rude.uri("/reset"))
    assert reset["delivery"] == "failed"
    assert reset["detail"] == "connection reset" or reset["detail"].startswith("TLS error")
    assert proxy.curl(f"https://u.test:{port}/").status == 200


def test_test_report_command(env: Env, noted: Noted, proxy: Mitmdump) -> None:
    port = env.non_compliant.port
    assert proxy.curl(f"https://k.test:{port}/").status == 200  # the last connection seen
    proxy.wait_for_event("connection", lambda r: r["host"] == "k.test")
    posts_before = len(env.collector.requests("/k")) // 2

    # The stored report-uri; not rate-limited although k.test may have been reported already.
    assert run_command(proxy, "expectct.testreport", "k.test").status == 200
    body = received_report(env.collector, "/k", posts_before + 1)
    report = body["expect-ct-report"]
    assert report["test-report"] is True
    assert (report["hostname"], report["port"]) == ("k.test", port)
    assert report["failure-mode"] == "report-only"
    assert_same_instant(report["effective-expiration-date"], noted.expires["k.test"])
    assert_non_compliant_connection(report, env)
    event = proxy.wait_for_event(
        "report", lambda r: r["host"] == "k.test" and r["body"]["expect-ct-report"]["test-report"]
    )
    assert (event["delivery"], event["body"]) == ("sent", body)
    assert "Expect-CT test report about k.test" in proxy.log_text()

    # A host never seen, to a given URI: empty chains and SCTs, as Chromium's test report.
    uri = env.collector.uri("/test")
    assert run_command(proxy, "expectct.testreport", "Never.Test", uri).status == 200
    report = received_report(env.collector, "/test")["expect-ct-report"]
    assert report["test-report"] is True
    assert (report["hostname"], report["port"], report["scheme"]) == ("never.test", 443, "https")
    assert report["served-certificate-chain"] == report["validated-certificate-chain"] == []
    assert report["scts"] == []
    assert report["failure-mode"] == "report-only"

    refused = run_command(proxy, "expectct.testreport", "nobody.test")
    assert refused.status == 400
    assert b"not a Known Expect-CT Host with a report-uri" in refused.body


# ------------------------------- other configurations: options changed while the proxy runs


@contextlib.contextmanager
def options_set(proxy: Mitmdump, **changes: str) -> Iterator[None]:
    """Set options with mitmproxy's `set` command, and restore the main proxy's afterwards."""
    for name, value in changes.items():
        assert run_command(proxy, "set", name, value).status == 200
    try:
        yield
    finally:
        for name in changes:
            original = proxy.options[name]
            if isinstance(original, bool):
                original = "true" if original else "false"
            assert run_command(proxy, "set", name, str(original)).status == 200


def test_private_collector_refused_without_the_allow_option(env: Env, proxy: Mitmdump) -> None:
    with options_set(proxy, expect_ct_report_allow_private="false"):
        assert proxy.curl(f"https://u.test:{env.non_compliant.port}/refused").status == 200
        event = proxy.wait_for_event("report", lambda r: r["report_uri"].endswith("/refused"))
    assert event["host"] == "u.test"
    assert event["delivery"] == "failed"
    assert event["detail"] == (
        "refused: 127.0.0.1 is a loopback address (set expect_ct_report_allow_private to allow)"
    )
    assert event["body"]["expect-ct-report"]["hostname"] == "u.test"
    assert env.collector.requests("/refused") == []


def test_reports_off_are_recorded_as_disabled(env: Env, proxy: Mitmdump) -> None:
    with options_set(proxy, expect_ct_reports="off"):
        assert proxy.curl(f"https://u.test:{env.non_compliant.port}/off").status == 200
        event = proxy.wait_for_event("report", lambda r: r["report_uri"].endswith("/off"))
    assert (event["delivery"], event["detail"]) == ("disabled", "expect_ct_reports=off")
    report = event["body"]["expect-ct-report"]
    assert set(report) == REPORT_KEYS
    assert (report["hostname"], report["failure-mode"]) == ("u.test", "report-only")
    assert_non_compliant_connection(report, env)
    flush_reports(proxy, env)  # sending again once the option is back
    assert env.collector.requests("/off") == []


def test_no_report_when_the_log_list_is_stale(env: Env, proxy: Mitmdump) -> None:
    # Chromium's BUILD_NOT_TIMELY: CT is not really evaluated, so nothing is reported.
    with options_set(proxy, expect_ct_log_list=str(env.world.stale_log_list)):
        assert proxy.curl(f"https://u.test:{env.non_compliant.port}/stale").status == 200
        head = proxy.wait_for_event("header", lambda r: r["values"][0].endswith('/stale"'))
        flush_reports(proxy, env)
    assert head["host"] == "u.test" and head["action"] == "ignored"
    assert [r for r in proxy.events("report") if r["report_uri"].endswith("/stale")] == []
    assert env.collector.requests("/stale") == []
    assert "no report for u.test" in proxy.log_text()
