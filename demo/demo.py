"""A self-contained demonstration of mitmproxy-expect-ct, on 127.0.0.1 only (`make demo`).

It mints its own test Web PKI and two CT logs (tests/support/pki.py), serves five HTTPS sites and a
report collector, and sends real requests through a real mitmdump running the addon:

* ``news.demo``     a publicly trusted certificate with 2 embedded SCTs: CT-compliant;
* ``legacy.demo``   a publicly trusted certificate without SCTs: not compliant, marked;
* ``intranet.demo`` a certificate from a corporate (private) root: exempt from CT;
* ``shop.demo``     compliant, and sends ``Expect-CT: max-age=86400, enforce, report-uri=...``:
  the proxy notes it as a Known Expect-CT Host;
* then ``shop.demo``'s address leads to an impostor (a DNS or BGP hijack in miniature): a
  certificate for shop.demo from the same public CA, never logged. The proxy refuses the
  connection during the TLS handshake (the client gets a 502 explaining why, the impostor
  never sees a request) and POSTs an RFC 9163 report to the collector.

At the end it prints each request's result with the verdict the addon wrote on the flow, the
502 body, ``python -m expect_ct hosts``, the report the collector received and mitmdump's
shutdown summary. Everything it writes goes to one temporary directory, removed at the end
(``--keep`` keeps it: the JSON-lines event log, the saved flows, mitmdump's output). Every
process it starts is stopped on the way out, Ctrl-C included.

Host names reach the local servers through tests/support/scripts/resolve.py (a test-only mitmproxy
script), so no DNS or /etc/hosts change is needed. The report-uri names ``localhost``: the
addon sends reports itself, resolving their host with the system resolver.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import http.client
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from types import FrameType
from typing import Any

sys.dont_write_bytecode = True  # a demo run leaves the checkout as it found it
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from support import collector as collectormod  # noqa: E402 - the test helpers are found through sys.path
from support import httpsorigin  # noqa: E402
from support import pki  # noqa: E402
from support import proxy as proxymod  # noqa: E402

MAX_AGE = 86400
REPORT_PATH = "/report"
RULE = "─" * 78


@dataclass(frozen=True)
class SiteFiles:
    """A site's certificate chain (leaf first) and key, written to the demo directory."""

    host: str
    chain_pem: Path
    key_pem: Path
    description: str


@dataclass(frozen=True)
class DemoPKI:
    """The demo's Web PKI: what mitmproxy trusts upstream, what counts as public, the log list."""

    upstream_trust_pem: Path  # public root, corporate root, the collector's root
    public_roots_pem: Path
    log_list: Path
    collector: collectormod.CollectorPKI
    news: SiteFiles
    legacy: SiteFiles
    intranet: SiteFiles
    shop: SiteFiles
    impostor: SiteFiles


def _write_site(
    directory: Path,
    name: str,
    issuer: pki.CA,
    host: str,
    description: str,
    embedded: Sequence[tuple[pki.TestLog, int]] = (),
) -> SiteFiles:
    cert, key = pki.make_leaf(issuer, hosts=(host,), embedded=embedded)
    files = SiteFiles(
        host, directory / f"{name}.chain.pem", directory / f"{name}.key.pem", description
    )
    files.chain_pem.write_bytes(pki.pem(cert, issuer.cert))
    files.key_pem.write_bytes(pki.key_pem(key))
    return files


def make_pki(directory: Path) -> DemoPKI:
    """Mint roots, CAs, two CT logs of two operators and every site's certificate."""
    directory.mkdir(parents=True, exist_ok=True)
    alpha = pki.make_log("Alpha Demo Log 2026", "Alpha")
    beta = pki.make_log("Beta Demo Log 2026", "Beta")
    public_root = pki.make_root("Demo Public Root")
    public_ca = pki.make_intermediate(public_root, "Demo Public CA")
    corporate_root = pki.make_root("Demo Corporate Root")
    corporate_ca = pki.make_intermediate(corporate_root, "Demo Corporate CA")
    collector = collectormod.make_collector_pki(directory / "collector", ("localhost", "127.0.0.1"))
    (directory / "public-roots.pem").write_bytes(pki.pem(public_root.cert))
    (directory / "upstream-trust.pem").write_bytes(
        pki.pem(public_root.cert, corporate_root.cert) + collector.root_pem.read_bytes()
    )
    now = datetime.datetime.now(datetime.UTC)
    log_list = pki.log_list_json([pki.LogEntry(alpha), pki.LogEntry(beta)], timestamp=now)
    (directory / "log-list.json").write_text(json.dumps(log_list, indent=1))
    logged = [(alpha, pki.now_ms() - 60_000), (beta, pki.now_ms() - 59_000)]
    return DemoPKI(
        upstream_trust_pem=directory / "upstream-trust.pem",
        public_roots_pem=directory / "public-roots.pem",
        log_list=directory / "log-list.json",
        collector=collector,
        news=_write_site(
            directory, "news", public_ca, "news.demo", "public CA, 2 embedded SCTs", logged
        ),
        legacy=_write_site(directory, "legacy", public_ca, "legacy.demo", "public CA, no SCTs"),
        intranet=_write_site(
            directory, "intranet", corporate_ca, "intranet.demo", "corporate root, no SCTs"
        ),
        shop=_write_site(
            directory,
            "shop",
            public_ca,
            "shop.demo",
            "public CA, 2 embedded SCTs, sends Expect-CT enforce",
            logged,
        ),
        impostor=_write_site(
            directory, "impostor", public_ca, "shop.demo", "public CA, no SCTs (never logged)"
        ),
    )


class Switch:
    """A TCP address that forwards each new connection to whichever local port it points at.

    shop.demo "resolves" here; pointing it at the impostor is a DNS or BGP hijack in miniature.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def point_at(self, port: int) -> None:
        self.target_port = port

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._open += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        # shutdown() wakes the thread blocked in accept(); close() alone would not (Linux).
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        with self._lock:
            for sock in self._open:
                sock.close()
            self._open.clear()
        self._thread.join(5)


@dataclass
class Servers:
    """Everything the proxy talks to, all on 127.0.0.1."""

    collector: collectormod.Collector
    news: httpsorigin.Origin
    legacy: httpsorigin.Origin
    intranet: httpsorigin.Origin
    shop: httpsorigin.Origin
    impostor: httpsorigin.Origin
    shop_address: Switch

    @property
    def report_uri(self) -> str:
        return self.collector.uri(REPORT_PATH, host="localhost")

    @property
    def expect_ct(self) -> str:
        return f'max-age={MAX_AGE}, enforce, report-uri="{self.report_uri}"'

    def resolve(self) -> dict[str, int]:
        """Host name -> port on 127.0.0.1, for tests/support/scripts/resolve.py."""
        return {
            "news.demo": self.news.port,
            "legacy.demo": self.legacy.port,
            "intranet.demo": self.intranet.port,
            "shop.demo": self.shop_address.port,
        }


@contextlib.contextmanager
def run_servers(files: DemoPKI) -> Iterator[Servers]:
    """Start the collector, the five origins and shop.demo's switchable address."""
    with contextlib.ExitStack() as stack:
        collector = stack.enter_context(collectormod.https_collector(files.collector))
        report_uri = collector.uri(REPORT_PATH, host="localhost")
        shop_header = [("Expect-CT", f'max-age={MAX_AGE}, enforce, report-uri="{report_uri}"')]

        def origin(site: SiteFiles, headers: Sequence[tuple[str, str]] = ()) -> httpsorigin.Origin:
            routes = {"*": list(headers)}
            return stack.enter_context(
                httpsorigin.https_origin(site.chain_pem, site.key_pem, routes)
            )

        shop = origin(files.shop, shop_header)
        switch = Switch(shop.port)
        stack.callback(switch.close)
        yield Servers(
            collector=collector,
            news=origin(files.news),
            legacy=origin(files.legacy),
            intranet=origin(files.intranet),
            shop=shop,
            impostor=origin(files.impostor),
            shop_address=switch,
        )


def proxy_options(files: DemoPKI, workdir: Path) -> dict[str, object]:
    """The addon's options for the demo, and where mitmdump keeps its state (all in workdir)."""
    return {
        "ssl_verify_upstream_trusted_ca": str(files.upstream_trust_pem),
        "expect_ct_public_roots": str(files.public_roots_pem),
        "expect_ct_log_list": str(files.log_list),
        "expect_ct_store": str(workdir / "known-hosts.sqlite3"),
        "expect_ct_log": str(workdir / "events.jsonl"),
        "expect_ct_reports": "send",
        "expect_ct_report_allow_private": True,
    }


def child_environment() -> dict[str, str]:
    """Children neither write bytecode into the checkout nor use a proxy from the environment."""
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


@dataclass(frozen=True)
class Fetched:
    host: str
    status_line: str
    body: bytes


def fetch(proxy_port: int, ca_cert: Path, host: str, path: str = "/") -> Fetched:
    """GET https://host/path through the proxy, trusting the proxy's CA (an ordinary client)."""
    context = ssl.create_default_context(cafile=str(ca_cert))
    conn = http.client.HTTPSConnection("127.0.0.1", proxy_port, context=context, timeout=15)
    conn.set_tunnel(host, 443)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read()
        version = f"HTTP/{response.version // 10}.{response.version % 10}"
        return Fetched(host, f"{version} {response.status} {response.reason}", body)
    finally:
        conn.close()


@dataclass
class Story:
    """What the demo saw, collected for the final printout."""

    requests: list[Fetched] = field(default_factory=list)
    impostor_requests: int = 0
    report: collectormod.Recorded | None = None
    preflight: collectormod.Recorded | None = None


def send_demo_traffic(
    servers: Servers, proxy_port: int, ca_cert: Path, say: Callable[[str], None] = print
) -> Story:
    """The requests of the story, in order; ``say`` narrates."""
    story = Story()

    def get(host: str) -> Fetched:
        fetched = fetch(proxy_port, ca_cert, host)
        story.requests.append(fetched)
        say(f"  [{len(story.requests)}] GET https://{host}/  ->  {fetched.status_line}")
        return fetched

    get("news.demo")
    get("legacy.demo")
    get("intranet.demo")
    get("shop.demo")
    say("  ... shop.demo's address now leads to an impostor (certificate never logged) ...")
    servers.shop_address.point_at(servers.impostor.port)
    get("shop.demo")
    story.impostor_requests = len(servers.impostor.requests)
    # The addon delivers the report from its own thread: an OPTIONS preflight, then the POST.
    try:
        preflight, post = servers.collector.wait_for(2, REPORT_PATH, deadline=15)[:2]
    except AssertionError as e:
        say(f"  no report arrived: {e}")
    else:
        story.preflight, story.report = preflight, post
    return story


# ------------------------------------------------------------------------------ the printout


def heading(title: str) -> str:
    return f"\n{RULE}\n{title}\n{RULE}"


def shorten_pem(pem: str) -> str:
    """A PEM certificate in one short line: its start, its size."""
    body = "".join(pem.strip().splitlines()[1:-1])
    return f"-----BEGIN CERTIFICATE----- {body[:24]}... ({len(body)} base64 chars)"


def shorten_report(value: Any) -> Any:
    """The report with PEM certificates and serialized SCTs cut short for the terminal."""
    if isinstance(value, dict):
        return {
            k: (f"{v[:24]}... ({len(v)} chars)" if k == "serialized_sct" else shorten_report(v))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [shorten_report(v) for v in value]
    if isinstance(value, str) and value.startswith("-----BEGIN CERTIFICATE-----"):
        return shorten_pem(value)
    return value


def saved_flows(path: Path) -> list[Any]:
    """The flows mitmdump saved (-w), in the order they completed."""
    from mitmproxy import io as mitmio  # only the demo's reading of saved flows needs it

    if not path.exists():
        return []
    with path.open("rb") as f:
        return list(mitmio.FlowReader(f).stream())


def request_lines(story: Story, flows: Sequence[Any]) -> list[str]:
    """Each request: what the client got, then the marker and comment the addon put on the flow."""
    lines = []
    remaining = list(flows)
    for number, fetched in enumerate(story.requests, 1):
        flow = next((f for f in remaining if f.request.pretty_host == fetched.host), None)
        if flow is not None:
            remaining.remove(flow)
        marker = f"  {flow.marked}" if flow is not None and flow.marked else ""
        lines.append(f"[{number}] https://{fetched.host}/  {fetched.status_line}{marker}")
        comment = flow.comment if flow is not None else "(flow not saved)"
        for i, part in enumerate(textwrap.wrap(comment, 72) or [""]):
            lines.append(f"    {'comment: ' if i == 0 else '         '}{part}")
    return lines


def summary_lines(mitmdump_output: str) -> list[str]:
    """The "Expect-CT summary:" block mitmdump printed when it stopped."""
    match = re.search(r"Expect-CT summary:\n((?:\s{2,}.*\n?)+)", mitmdump_output)
    if match is None:
        return ["(mitmdump printed no summary)"]
    return ["Expect-CT summary:"] + match.group(1).rstrip("\n").splitlines()


def known_hosts_lines(store: Path) -> list[str]:
    command = [sys.executable, "-m", "expect_ct", "hosts", "--store", str(store)]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=30, env=child_environment()
    )
    shown = f"$ python -m expect_ct hosts --store {store}"
    return [shown] + (done.stdout + done.stderr).rstrip("\n").splitlines()


def report_lines(story: Story) -> list[str]:
    if story.report is None or story.preflight is None:
        return ["(no report arrived)"]
    post = story.report
    report = json.loads(post.body)
    pretty = json.dumps(shorten_report(report), indent=2)
    return [
        f"{story.preflight.method} {story.preflight.path} (CORS preflight, "
        f"Origin: {story.preflight.headers.get('origin')}), then",
        f"{post.method} {post.path}  Content-Type: {post.headers.get('content-type')}",
        *pretty.splitlines(),
    ]


def story_problems(story: Story) -> list[str]:
    """What differs from the story the demo tells (then `make demo` fails)."""
    problems = []
    statuses = [f.status_line.split(" ")[1] for f in story.requests]
    if statuses != ["200", "200", "200", "200", "502"]:
        problems.append(f"expected 4 answered requests and a 502, got {statuses}")
    if story.impostor_requests:
        problems.append(f"the impostor received {story.impostor_requests} requests")
    if story.report is None:
        problems.append("no report reached the collector")
    return problems


# ---------------------------------------------------------------------------------- running


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def run(workdir: Path, keep: bool) -> int:
    print("mitmproxy-expect-ct demo: CT checks and Expect-CT enforcement in a real mitmdump")
    print(f"Working directory: {workdir} ({'kept' if keep else 'removed at the end'})")
    files = make_pki(workdir / "pki")
    with run_servers(files) as servers:
        print(
            heading("The sites (all on 127.0.0.1, named through tests/support/scripts/resolve.py)")
        )
        print("Each name leads to a local port: that port, not 443, appears in what follows.")
        for site in (files.news, files.legacy, files.intranet, files.shop, files.impostor):
            label = "shop.demo (impostor)" if site is files.impostor else site.host
            print(f"  {label:<21} {site.description}")
        print(f"  shop.demo sends      Expect-CT: {servers.expect_ct}")
        print(f"  report collector     {servers.report_uri} (its own test root)")

        options = proxy_options(files, workdir)
        options["save_stream_file"] = str(workdir / "flows.mitm")
        mitmdump = proxymod.Mitmdump(
            workdir / "mitmdump",
            options,
            resolve=servers.resolve(),
            env=child_environment(),
        )
        with mitmdump:
            assert mitmdump.process is not None
            print(heading("Requests through mitmdump"))
            print(
                f"mitmdump (pid {mitmdump.process.pid}) with the addon on "
                f"127.0.0.1:{mitmdump.port}, expect_ct_reports=send"
            )
            story = send_demo_traffic(servers, mitmdump.port, mitmdump.ca_cert)
        output = mitmdump.log_text()

    flows = saved_flows(workdir / "flows.mitm")
    print(heading("What each client got, and the verdict the addon wrote on each flow"))
    print("\n".join(request_lines(story, flows)))

    blocked = story.requests[-1]
    print(heading("The blocked request: the 502 body the client read (long lines wrapped)"))
    for line in blocked.body.decode(errors="replace").rstrip("\n").splitlines():
        print("\n".join(textwrap.wrap(line, 76, initial_indent="  ", subsequent_indent="    ")))
    print(f"(the impostor's server received {story.impostor_requests} HTTP requests)")

    print(heading("The Known Expect-CT Host the proxy noted"))
    print("\n".join(known_hosts_lines(Path(str(options["expect_ct_store"])))))

    print(heading("The RFC 9163 report the collector received"))
    print("\n".join(report_lines(story)))

    print(heading("mitmdump's summary at shutdown"))
    print("\n".join(summary_lines(output)))
    if keep:
        print(f"\nKept {workdir}:")
        print(f"  JSON-lines event log  {options['expect_ct_log']}")
        print(f"  saved flows           {options['save_stream_file']} (mitmweb -r FILE shows them)")
        print(f"  mitmdump's output     {mitmdump.output}")
    problems = story_problems(story)
    for problem in problems:
        print(f"\nThe demo did not go as expected: {problem}", file=sys.stderr)
    return 1 if problems else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the temporary directory (event log, saved flows, mitmdump output)",
    )
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGHUP, _interrupt)
    workdir = Path(tempfile.mkdtemp(prefix="expect-ct-demo-"))
    started = time.monotonic()
    try:
        code = run(workdir, args.keep)
        print(f"\nDone in {time.monotonic() - started:.1f} s.")
        return code
    except KeyboardInterrupt:
        print("\nInterrupted: every process the demo started has been stopped.", file=sys.stderr)
        return 130
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
