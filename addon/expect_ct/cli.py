"""Command line of ``python -m expect_ct``.

* no command: print the path of the mitmproxy script (``mitmdump -s "$(python -m expect_ct)"``);
* ``hosts`` / ``forget``: the Known Expect-CT Hosts store;
* ``check``: offline CT analysis of saved flows (``mitmdump -w``);
* ``inspect``: CT analysis of certificate files, without a connection;
* ``update-log-list``: fetch, validate and atomically install a CT log list.

Exit codes of ``check`` and ``inspect``: 0 when everything evaluated is compliant or exempt,
1 when a publicly trusted chain is not CT-compliant, 2 on usage or input errors.
``update-log-list``: 0 installed, 1 could not fetch or refused the list (the old file is kept),
2 usage errors. Only ``check`` imports mitmproxy, and only when it runs.
"""

from __future__ import annotations

import argparse
import datetime
import http.client
import importlib.util
import json
import os
import re
import ssl
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
from collections.abc import Callable
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from typing import Any
from typing import BinaryIO

import certifi
from cryptography import x509
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509 import ocsp

from expect_ct import chain as chainmod
from expect_ct import header as headermod
from expect_ct import loglist as loglistmod
from expect_ct import policy as policymod
from expect_ct import records
from expect_ct import sct as sctmod
from expect_ct import store as storemod

STORE_FILENAME = storemod.STORE_FILENAME
LOG_LIST_FILENAME = loglistmod.INSTALLED_FILENAME
DEFAULT_CONFDIR = "~/.mitmproxy"

EXIT_OK = 0
EXIT_NOT_COMPLIANT = 1
EXIT_USAGE = 2

APPLE_LOG_LIST_URL = "https://valid.apple.com/ct/log_list/current_log_list.json"
# Apple's current list is about 100 kB and Google's all_logs_list about 200 kB.
MAX_LOG_LIST_BYTES = 16 * 1024 * 1024
DEFAULT_TIMEOUT = 30.0
# Chrome and Firefox stop enforcing CT with a log list older than 70 days (ct_policy.md).
STALE_AFTER = datetime.timedelta(days=70)
CHROME_LIST_HOST = "gstatic.com"
CHROME_LIST_PATH = "/ct/log_list"
CHROME_POLICY_NOTE = (
    "Chrome's log lists may not be used to facilitate CT enforcement in TLS clients other than "
    "Chrome without explicit written permission from Chrome's CT team (acceptable-use policy "
    "of 2025-06-25, GoogleChrome/CertificateTransparency log_lists.md)"
)

_PEM_CERTIFICATE = re.compile(
    rb"-----BEGIN CERTIFICATE-----\r?\n.*?-----END CERTIFICATE-----", re.DOTALL
)


class UsageError(Exception):
    """A problem with the command line or an input file: exit code 2, message names the file."""


class FetchError(Exception):
    """A log list could not be fetched, or was refused after fetching: exit code 1."""


def script_path() -> str:
    """Absolute path of the installed mitmproxy script ``expect_ct_addon.py``."""
    spec = importlib.util.find_spec("expect_ct_addon")
    if spec is None or spec.origin is None:
        raise RuntimeError("expect_ct_addon.py is not installed next to the expect_ct package")
    return spec.origin


# ----------------------------------------------------------------------------- the parser


def iso_moment(text: str) -> datetime.datetime:
    """``--now``: an ISO 8601 date or date-time; without a zone it is UTC."""
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not an ISO 8601 date or date-time: {text!r} (e.g. 2026-04-01 or 2026-04-01T12:00:00Z)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment


def _add_analysis_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--log-list",
        metavar="PATH",
        help=f"CT log-list JSON, Google v3 or Apple schema (default: <confdir>/{LOG_LIST_FILENAME} "
        "if update-log-list installed one, else the Apple list bundled with the addon)",
    )
    parser.add_argument(
        "--public-roots",
        metavar="PEM",
        help="PEM bundle of roots treated as publicly trusted (default: certifi's bundle)",
    )
    parser.add_argument(
        "--private-roots",
        metavar="PEM",
        help="PEM bundle of roots trusted upstream but not public (what mitmproxy's "
        "ssl_verify_upstream_trusted_ca names): chains ending there are private and exempt",
    )
    parser.add_argument(
        "--policy",
        choices=policymod.POLICIES,
        default="chrome",
        help="CT policy (default: chrome)",
    )
    parser.add_argument(
        "--now",
        type=iso_moment,
        metavar="ISO",
        help="evaluate as of this moment, e.g. 2026-04-01 (default: now); for old captures",
    )
    parser.add_argument(
        "--confdir",
        metavar="DIR",
        default=DEFAULT_CONFDIR,
        help=f"mitmproxy's confdir, where the installed log list is looked for "
        f"(default: {DEFAULT_CONFDIR})",
    )
    parser.add_argument("--json", action="store_true", help="JSON output, one object per line")


# Run with the addon built in; kept here (not imported from addon.py) so that the other
# commands never import mitmproxy.
LAUNCHED_TOOLS = ("mitmdump", "mitmweb")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m expect_ct",
        description="Certificate Transparency and Expect-CT for mitmproxy. "
        "With no command, print the path of the mitmproxy script, for "
        'mitmdump -s "$(python -m expect_ct)".',
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    store_help = (
        f"Known Expect-CT Hosts database (default: {DEFAULT_CONFDIR}/{STORE_FILENAME}, "
        "the addon's default with mitmproxy's default confdir)"
    )
    for tool in LAUNCHED_TOOLS:
        commands.add_parser(
            tool,
            help=f"run {tool} with the addon built in (no -s needed; cheaper per request); "
            f"the arguments are {tool}'s own",
            add_help=False,
        )
    hosts = commands.add_parser("hosts", help="list the Known Expect-CT Hosts")
    hosts.add_argument("--store", help=store_help)
    hosts.add_argument("--json", action="store_true", help="one JSON object per line")
    forget = commands.add_parser("forget", help="remove a host from the Known Expect-CT Hosts")
    forget.add_argument("host")
    forget.add_argument("--store", help=store_help)

    check = commands.add_parser(
        "check",
        help="CT analysis of saved flows (mitmdump -w)",
        description="Evaluate CT for every upstream TLS connection in saved mitmproxy flow files "
        "and parse their Expect-CT headers. Saved flows keep the certificates but not the "
        "handshake, so only embedded SCTs can be checked; SCTs from the TLS extension and "
        "stapled OCSP are reported as 'not observed'. Exit 0: all compliant or exempt; "
        "1: a publicly trusted chain is not compliant; 2: usage or input error.",
    )
    check.add_argument("flow_files", nargs="+", metavar="FLOWFILE", help="mitmproxy flow file")
    check.add_argument(
        "--dialect",
        choices=headermod.DIALECTS,
        default="rfc9163",
        help="Expect-CT header parser (default: rfc9163)",
    )
    _add_analysis_options(check)

    inspect = commands.add_parser(
        "inspect",
        help="CT analysis of certificate files",
        description="Check a certificate's SCTs without a connection. Certificate files may be "
        "PEM (several certificates allowed) or DER; the first certificate is the leaf. Exit 0: "
        "compliant or exempt; 1: publicly trusted and not compliant; 2: usage or input error.",
    )
    inspect.add_argument("leaf", metavar="LEAF", help="leaf certificate (PEM or DER)")
    inspect.add_argument(
        "chain", nargs="*", metavar="CHAIN", help="intermediate certificates (PEM or DER)"
    )
    inspect.add_argument(
        "--tls-scts",
        metavar="FILE",
        help="SCTs as served in the TLS extension: a TLS-encoded SignedCertificateTimestampList",
    )
    inspect.add_argument("--ocsp", metavar="FILE", help="a stapled OCSP response (DER)")
    inspect.add_argument(
        "--host",
        metavar="NAME",
        help="server name to verify the chain for (default: the leaf's first subjectAltName)",
    )
    _add_analysis_options(inspect)

    update = commands.add_parser(
        "update-log-list",
        help="fetch and install a fresh CT log list",
        description="Fetch a CT log list, validate it and install it atomically where the addon "
        "loads it when expect_ct_log_list is not set. An invalid or incomplete download never "
        "replaces the installed list. Exit 0: installed; 1: fetch failed or list refused; "
        "2: usage error.",
    )
    update.add_argument(
        "--source",
        metavar="apple|URL|PATH",
        default="apple",
        help=f"'apple' ({APPLE_LOG_LIST_URL}, the default), an https URL, or a local file",
    )
    update.add_argument(
        "--out", metavar="PATH", help=f"where to install (default: <confdir>/{LOG_LIST_FILENAME})"
    )
    update.add_argument(
        "--confdir",
        metavar="DIR",
        default=DEFAULT_CONFDIR,
        help=f"mitmproxy's confdir (default: {DEFAULT_CONFDIR})",
    )
    update.add_argument(
        "--cafile",
        metavar="PEM",
        help="trust these CA certificates instead of certifi's bundle (for private mirrors)",
    )
    update.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        default=DEFAULT_TIMEOUT,
        help=f"seconds (default: {DEFAULT_TIMEOUT:g})",
    )
    update.add_argument(
        "--i-have-permission",
        action="store_true",
        help="allow Chrome's log list (gstatic.com/ct/log_list): only with written permission "
        "from Chrome's CT team",
    )
    return parser


# --------------------------------------------------------------------- hosts and forget


def default_store_path() -> str:
    return os.path.join(os.path.expanduser(DEFAULT_CONFDIR), STORE_FILENAME)


def open_store(path: str | None) -> storemod.KnownHostStore:
    path = path or default_store_path()
    if path != ":memory:" and not os.path.exists(path):
        raise storemod.StoreError(
            f"{path}: no Known Expect-CT Hosts store there (nothing noted yet?)"
        )
    return storemod.KnownHostStore(path)


def cmd_hosts(args: argparse.Namespace) -> int:
    store = open_store(args.store)
    try:
        count = 0
        for host in store.hosts():
            count += 1
            record = {
                "host": host.host,
                "enforce": host.enforce,
                "report_uri": host.report_uri,
                "expires": records.rfc3339(host.expires),
                "last_observed": records.rfc3339(host.last_observed),
            }
            if args.json:
                print(json.dumps(record))
            else:
                mode = "enforce" if host.enforce else "report-only"
                uri = f"  report-uri {host.report_uri}" if host.report_uri else ""
                print(f"{host.host}  {mode}  expires {record['expires']}{uri}")
        if not args.json:
            print(f"{count} Known Expect-CT Hosts in {store.path}", file=sys.stderr)
    finally:
        store.close()
    return 0


def cmd_forget(args: argparse.Namespace) -> int:
    store = open_store(args.store)
    try:
        removed = store.forget(args.host)
    finally:
        store.close()
    print(f"{args.host}: {'forgotten' if removed else 'was not a Known Expect-CT Host'}")
    return 0 if removed else 1


# ------------------------------------------------------------------ shared analysis set-up


@dataclass(frozen=True)
class Analysis:
    """What a CT evaluation needs, chosen as the addon chooses it from its options."""

    log_list: loglistmod.LogList
    log_list_timestamp: datetime.datetime | None
    classifier: chainmod.ChainClassifier
    policy: str
    now: datetime.datetime

    def describe(self) -> str:
        if self.log_list.timestamp is not None:
            dated = f"dated {records.rfc3339(self.log_list.timestamp)}"
        elif self.log_list_timestamp is not None:
            dated = f"no timestamp in the list; file modified {records.rfc3339(self.log_list_timestamp)}"
        else:
            dated = "undated"
        return (
            f"policy {self.policy}, as of {records.rfc3339(self.now)}, "
            f"{len(self.log_list)} CT logs from {self.log_list.source} ({dated})"
        )


def _load_log_list(
    path: str | None, confdir: str
) -> tuple[loglistmod.LogList, datetime.datetime | None]:
    if not path:
        installed = os.path.join(os.path.expanduser(confdir), LOG_LIST_FILENAME)
        if os.path.exists(installed):
            path = installed
    if not path:
        bundled = loglistmod.LogList.bundled()
        return bundled, bundled.timestamp
    path = os.path.expanduser(path)
    try:
        log_list = loglistmod.LogList.load(path)
    except ValueError as e:
        raise UsageError(f"--log-list {path}: {e}") from e
    # A list without its own timestamp is only as fresh as the file (as the addon does).
    timestamp = log_list.timestamp or datetime.datetime.fromtimestamp(
        os.path.getmtime(path), datetime.UTC
    )
    return log_list, timestamp


def _load_roots(option: str, path: str) -> list[x509.Certificate]:
    try:
        return chainmod.load_pem_roots(os.path.expanduser(path))
    except OSError as e:
        raise UsageError(f"{option} {path}: cannot read: {e.strerror or e}") from e
    except ValueError as e:
        raise UsageError(f"{option} {path}: {e}") from e


def load_analysis(args: argparse.Namespace) -> Analysis:
    log_list, timestamp = _load_log_list(args.log_list, args.confdir)
    if args.public_roots:
        public = _load_roots("--public-roots", args.public_roots)
    else:
        public = chainmod.load_pem_roots(chainmod.default_public_roots(), skip_invalid=True)
    private = _load_roots("--private-roots", args.private_roots) if args.private_roots else []
    return Analysis(
        log_list=log_list,
        log_list_timestamp=timestamp,
        classifier=chainmod.ChainClassifier(public, private),
        policy=args.policy,
        now=args.now or datetime.datetime.now(datetime.UTC),
    )


@dataclass(frozen=True)
class Evaluation:
    chain: chainmod.ChainResult
    verdict: policymod.Verdict

    @property
    def exempt(self) -> bool:
        return self.chain.kind is chainmod.ChainKind.PRIVATE

    @property
    def fails(self) -> bool:
        """A publicly trusted chain that is not compliant: what makes the exit code 1."""
        return self.chain.kind is chainmod.ChainKind.PUBLIC and not self.verdict.compliant


def evaluate(
    analysis: Analysis,
    served: Sequence[x509.Certificate],
    *,
    host: str | None,
    tls_scts: bytes | None = None,
    ocsp_response: bytes | None = None,
) -> Evaluation:
    """Classify the chain and apply the policy exactly as the addon does for a connection."""
    chain = analysis.classifier.classify(served, host=host, now=analysis.now)
    verdict = policymod.evaluate(
        served,
        tls_scts=tls_scts,
        ocsp_response=ocsp_response,
        log_list=analysis.log_list,
        policy=analysis.policy,
        now=analysis.now,
        # Trust-store roots let embedded SCTs verify when the server omitted the issuer.
        issuers=chain.validated[1:],
    )
    return Evaluation(chain, verdict)


def ct_word(kind: str, compliant: bool) -> str:
    if kind == chainmod.ChainKind.PRIVATE.value:
        return "exempt"
    return "compliant" if compliant else "NOT compliant"


def sct_counts(scts: Sequence[dict[str, Any]]) -> str:
    counts = {status: 0 for status in (policymod.VALID, policymod.INVALID, policymod.UNKNOWN)}
    for entry in scts:
        counts[entry["status"]] = counts.get(entry["status"], 0) + 1
    return "/".join(str(counts[s]) for s in (policymod.VALID, policymod.INVALID, policymod.UNKNOWN))


def print_json(record: dict[str, Any]) -> None:
    print(json.dumps(record, ensure_ascii=True))


def table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = []
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=False)]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    return "\n".join(lines)


# ------------------------------------------------------------------------------- check


@dataclass
class SavedConnection:
    """What the saved flows of one upstream connection tell us."""

    file: str
    host: str
    port: int
    tls_version: str | None
    served: tuple[x509.Certificate, ...]
    recorded: dict[str, Any] | None  # the addon's ``connection`` record from flow metadata
    blocked: str | None
    flows: int = 0
    headers: dict[tuple[str, ...], int] = field(default_factory=dict)  # values -> responses


def _server_identity(server: Any, meta: dict[str, Any]) -> tuple[str, int] | None:
    """The addon's (host, port) for a connection: SNI, else the address, canonicalised."""
    address = server.address
    host = server.sni or (str(address[0]) if address else meta.get("host"))
    port = address[1] if address else meta.get("port")
    if not host or port is None:
        return None
    return storemod.host_key(str(host)), int(port)


def read_flow_file(path: str, connections: dict[str, SavedConnection]) -> tuple[int, int]:
    """Add the HTTPS connections of one flow file; returns (flows read, flows skipped)."""
    from mitmproxy import http
    from mitmproxy import io as mitmio

    try:
        handle: BinaryIO = open(path, "rb")  # noqa: SIM115 - closed below
    except OSError as e:
        raise UsageError(f"{path}: cannot read: {e.strerror or e}") from e
    read = skipped = 0
    with handle:
        try:
            for flow in mitmio.FlowReader(handle).stream():
                read += 1
                if not isinstance(flow, http.HTTPFlow) or not _note_flow(path, flow, connections):
                    skipped += 1
        except Exception as e:  # noqa: BLE001 - FlowReader raises anything on foreign data
            raise UsageError(
                f"{path}: not a mitmproxy flow file (flow #{read + 1}: {e or type(e).__name__})"
            ) from e
    return read, skipped


def _note_flow(path: str, flow: Any, connections: dict[str, SavedConnection]) -> bool:
    if flow.request.scheme != "https":
        return False
    meta = flow.metadata.get("expect_ct")
    meta = meta if isinstance(meta, dict) else {}
    recorded = meta.get("connection") if isinstance(meta.get("connection"), dict) else None
    server = flow.server_conn
    if not server.certificate_list and recorded is None:
        return False
    identity = _server_identity(server, meta)
    if identity is None:
        return False
    saved = connections.get(server.id)
    if saved is None:
        try:
            served = tuple(records.to_cryptography(c) for c in server.certificate_list)
        except ValueError:
            served = ()
        saved = SavedConnection(
            file=path,
            host=identity[0],
            port=identity[1],
            tls_version=server.tls_version or (recorded or {}).get("tls_version"),
            served=served,
            recorded=recorded,
            blocked=meta.get("blocked"),
        )
        connections[server.id] = saved
    saved.flows += 1
    if flow.response is not None and not meta.get("blocked_response"):
        values = tuple(flow.response.headers.get_all("Expect-CT"))
        if values:
            saved.headers[values] = saved.headers.get(values, 0) + 1
    return True


def header_effect(facts: dict[str, Any], chain: str, compliant: bool) -> tuple[str, str]:
    """What the addon would do with this header on this connection (RFC 9163 2.3.2), against
    a store that does not know the host yet."""
    if not facts["valid"]:
        return "ignored", "malformed header: no Expect-CT state changes (RFC 9163 2.3.1)"
    if chain == chainmod.ChainKind.PRIVATE.value:
        return (
            "ignored",
            "the chain ends at a private root: Expect-CT does not apply (RFC 9163 2.4.1)",
        )
    if chain != chainmod.ChainKind.PUBLIC.value:
        return "ignored", "the chain is not publicly trusted"
    if not compliant:
        return "ignored", "the connection is not CT-compliant: Expect-CT state is not updated"
    if facts["max_age"] == 0:
        return "removed", "max-age=0 on a CT-compliant connection: the host is forgotten if known"
    return "noted", "valid header on a CT-compliant connection"


def _header_summary(entry: dict[str, Any]) -> str:
    if not entry["valid"]:
        text = f"invalid ({entry['error']})"
    else:
        text = f"max-age={entry['max_age']}" + (" enforce" if entry["enforce"] else "")
        if entry["report_uri"]:
            text += f" report-uri={entry['report_uri']}"
    return f"{text} -> {entry['effect']}"


def check_record(saved: SavedConnection, analysis: Analysis, dialect: str) -> dict[str, Any]:
    """One output object: the ``connection`` event fields plus what only offline analysis has."""
    record: dict[str, Any] = {
        "time": records.rfc3339(analysis.now),
        "event": "connection",
        "host": saved.host,
        "port": saved.port,
    }
    if saved.served:
        result = evaluate(analysis, saved.served, host=saved.host)
        record.update(
            records.connection_record(
                tls_version=saved.tls_version,
                chain=result.chain.kind,
                leaf=saved.served[0],
                verdict=result.verdict,
                # Saved flows keep the certificates, not the handshake messages.
                sources=records.handshake_sources(
                    captured=False, tls_extension=None, ocsp_response=None
                ),
            )
        )
        record["evaluated"] = True
    else:
        # Refused during the handshake: mitmproxy saved no certificates, only the addon's record.
        record.update(saved.recorded or {})
        record["evaluated"] = False
    headers = []
    for values, count in saved.headers.items():
        facts = records.header_facts(values, dialect=dialect)
        effect, why = header_effect(facts, record["chain"], record["compliant"])
        headers.append({**facts, "effect": effect, "why": why, "responses": count})
    record.update(
        file=saved.file,
        flows=saved.flows,
        headers=headers,
        recorded=saved.recorded,
        blocked=saved.blocked,
    )
    return record


def _record_fails(record: dict[str, Any]) -> bool:
    return record["chain"] == chainmod.ChainKind.PUBLIC.value and not record["compliant"]


def cmd_check(args: argparse.Namespace) -> int:
    analysis = load_analysis(args)
    connections: dict[str, SavedConnection] = {}
    total = len(args.flow_files)
    for number, path in enumerate(args.flow_files, start=1):
        before = len(connections)
        read, skipped = read_flow_file(path, connections)
        if total > 1:
            print(
                f"[{number}/{total}] {path}: {read} flows, {len(connections) - before} "
                f"new HTTPS connections",
                file=sys.stderr,
            )
    output = [check_record(saved, analysis, args.dialect) for saved in connections.values()]
    if args.json:
        for record in output:
            print_json(record)
    else:
        print(f"CT check of {total} flow file(s): {analysis.describe()}")
        print("Saved flows do not keep the handshake: TLS-extension and OCSP SCTs not observed.")
        print()
        print(_check_table(output) if output else "No HTTPS connections with certificates.")
    failing = sum(1 for r in output if _record_fails(r))
    summary = (
        f"{len(output)} connections: "
        f"{sum(1 for r in output if r['compliant'] and r['chain'] != 'private')} compliant, "
        f"{failing} publicly trusted and NOT compliant, "
        f"{sum(1 for r in output if r['chain'] == 'private')} exempt (private root), "
        f"{sum(1 for r in output if r['chain'] == 'untrusted')} not publicly trusted"
    )
    print(summary, file=sys.stderr if args.json else sys.stdout)
    return EXIT_NOT_COMPLIANT if failing else EXIT_OK


def _check_table(output: Sequence[dict[str, Any]]) -> str:
    rows = [["HOST:PORT", "CHAIN", "CT", "SCTS V/I/U", "EXPECT-CT", "REASONS"]]
    for r in output:
        ct = ct_word(r["chain"], r["compliant"])
        if not r["evaluated"]:
            ct += " (recorded)"
        recorded = r["recorded"]
        notes = list(r["reasons"])
        if r["chain"] == chainmod.ChainKind.PRIVATE.value:
            notes = ["CT does not apply: the chain ends at a private root"]
        if r["blocked"]:
            notes.append("blocked by the addon during the handshake (certificates not saved)")
        elif recorded is not None and recorded.get("compliant") != r["compliant"]:
            live = "compliant" if recorded.get("compliant") else "NOT compliant"
            notes.append(f"the live addon recorded {live} (sources {recorded.get('sources')})")
        rows.append(
            [
                records.one_line(f"{r['host']}:{r['port']}", 80),
                r["chain"],
                ct,
                sct_counts(r["scts"]),
                records.one_line("; ".join(_header_summary(h) for h in r["headers"]) or "-", 120),
                records.one_line("; ".join(notes) or "-"),
            ]
        )
    return table(rows)


# ----------------------------------------------------------------------------- inspect


def read_file(option: str, path: str) -> bytes:
    try:
        with open(os.path.expanduser(path), "rb") as f:
            return f.read()
    except OSError as e:
        raise UsageError(f"{option}{path}: cannot read: {e.strerror or e}") from e


def load_certificates(option: str, path: str) -> list[x509.Certificate]:
    """Every certificate of a PEM file, or the one certificate of a DER file."""
    data = read_file(option, path)
    certs: list[x509.Certificate] = []
    with warnings.catch_warnings():
        # Old real certificates (negative serials ...) make cryptography warn, not fail.
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)
        blocks = _PEM_CERTIFICATE.findall(data)
        for number, block in enumerate(blocks, start=1):
            try:
                certs.append(x509.load_pem_x509_certificate(block))
            except ValueError as e:
                raise UsageError(
                    f"{option}{path}: PEM certificate #{number} does not parse: {e}"
                ) from e
        if not blocks:
            try:
                certs.append(x509.load_der_x509_certificate(data))
            except ValueError as e:
                raise UsageError(
                    f"{option}{path}: not a certificate: no PEM block "
                    f"(-----BEGIN CERTIFICATE-----) and not DER ({e})"
                ) from e
    return certs


def format_timestamp(timestamp_ms: int) -> str:
    try:
        moment = loglistmod.ms_to_datetime(timestamp_ms)
    except OverflowError:
        return f"{timestamp_ms} ms since 1970 (beyond year 9999)"
    return records.rfc3339(moment, milliseconds=True)


def cmd_inspect(args: argparse.Namespace) -> int:
    served = load_certificates("", args.leaf)
    for path in args.chain:
        served += load_certificates("", path)
    tls_scts = read_file("--tls-scts ", args.tls_scts) if args.tls_scts else None
    if tls_scts is not None:
        try:
            sctmod.parse_sct_list(tls_scts, sctmod.Source.TLS_EXTENSION)
        except sctmod.InvalidSCTList as e:
            raise UsageError(
                f"--tls-scts {args.tls_scts}: not a TLS-encoded SignedCertificateTimestampList: {e}"
            ) from e
    ocsp_der = read_file("--ocsp ", args.ocsp) if args.ocsp else None
    if ocsp_der is not None:
        try:
            ocsp.load_der_ocsp_response(ocsp_der)
        except ValueError as e:
            raise UsageError(f"--ocsp {args.ocsp}: not a DER OCSP response: {e}") from e
    analysis = load_analysis(args)
    result = evaluate(analysis, served, host=args.host, tls_scts=tls_scts, ocsp_response=ocsp_der)
    record: dict[str, Any] = {
        "time": records.rfc3339(analysis.now),
        "event": "connection",
        "host": args.host,
        "port": None,
    }
    record.update(
        records.connection_record(
            tls_version=None,
            chain=result.chain.kind,
            leaf=served[0],
            verdict=result.verdict,
            # A file not given is a delivery path we did not look at.
            sources={
                "embedded": records.OBSERVED,
                "tls-extension": records.observed(tls_scts is not None, tls_scts),
                "ocsp": records.observed(ocsp_der is not None, ocsp_der),
            },
        )
    )
    record["chain_error"] = result.chain.error
    if args.json:
        print_json(record)
    else:
        print(_inspect_text(record, result, analysis))
    return EXIT_NOT_COMPLIANT if result.fails else EXIT_OK


def _why(text: str) -> str:
    for prefix in ("counted: ", "not counted: "):
        if text.startswith(prefix):
            return text[len(prefix) :]
    return text


def _inspect_text(record: dict[str, Any], result: Evaluation, analysis: Analysis) -> str:
    cert = record["certificate"]
    verdict = result.verdict
    lines = [
        f"Certificate  {records.one_line(cert['subject'])}",
        f"  issuer     {records.one_line(cert['issuer'])}",
        f"  valid      {cert['not_before']} to {cert['not_after']}",
        f"  sha256     {cert['sha256']}",
        f"  chain      {record['chain']}"
        + (f" ({records.one_line(result.chain.error)})" if result.chain.error else ""),
        f"Evaluated    {analysis.describe()}",
        "Sources      " + ", ".join(f"{k} {v}" for k, v in record["sources"].items()),
        "",
    ]
    for number, sct in enumerate(record["scts"], start=1):
        lines += [
            f"SCT {number} of {len(record['scts'])}",
            f"  source     {sct['source']}",
            f"  log        {records.one_line(sct['log'] or 'not in the log list')}"
            f"  (log id {sct['log_id']})",
            f"  operator   {records.one_line(sct['operator'] or 'unknown')}",
            f"  timestamp  {format_timestamp(sct['timestamp'])}",
            f"  status     {sct['status']}"
            + (f": {records.one_line(sct['reason'])}" if sct["reason"] else ""),
            f"  counted    {'yes' if sct['counted'] else 'no'} ({records.one_line(_why(sct['why']))})",
            "",
        ]
    if not record["scts"]:
        lines += ["No SCTs.", ""]
    word = ct_word(record["chain"], verdict.compliant)
    lines.append(f"Verdict      {word} under the {verdict.policy} policy")
    if result.exempt and not verdict.compliant:
        lines.append("  (not compliant, but the chain ends at a private root: CT does not apply)")
    lines += [f"  - {records.one_line(reason)}" for reason in verdict.reasons]
    return "\n".join(lines)


# --------------------------------------------------------------------- update-log-list


def is_chrome_log_list(url: str) -> bool:
    parts = urllib.parse.urlsplit(url)
    host = (parts.hostname or "").lower()
    return (
        host == CHROME_LIST_HOST or host.endswith("." + CHROME_LIST_HOST)
    ) and parts.path.startswith(CHROME_LIST_PATH)


def _progress(received: int, total: int | None) -> None:
    if sys.stderr.isatty():
        of = f" of {total}" if total else ""
        print(f"\rdownloading: {received}{of} bytes", end="", file=sys.stderr, flush=True)


def fetch_url(
    url: str,
    *,
    cafile: str | None,
    timeout: float,
    limit: int = MAX_LOG_LIST_BYTES,
    progress: Callable[[int, int | None], None] = _progress,
) -> bytes:
    """GET ``url`` over verified HTTPS, directly (proxy environment variables are ignored:
    this usually runs next to the very proxy that needs the list)."""
    try:
        context = ssl.create_default_context(cafile=cafile or certifi.where())
    except (OSError, ssl.SSLError) as e:
        raise UsageError(f"--cafile {cafile}: cannot load CA certificates: {e}") from e
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context)
    )
    request = urllib.request.Request(url, headers={"User-Agent": "mitmproxy-expect-ct"})
    chunks: list[bytes] = []
    received = 0
    try:
        with opener.open(request, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            if total is not None and total > limit:
                raise FetchError(f"{url}: {total} bytes is more than the {limit}-byte limit")
            while chunk := response.read(64 * 1024):
                received += len(chunk)
                if received > limit:
                    raise FetchError(f"{url}: more than the {limit}-byte limit")
                chunks.append(chunk)
                progress(received, total)
            if total is not None and received != total:
                raise FetchError(f"{url}: truncated: got {received} of {total} bytes")
    except urllib.error.HTTPError as e:
        raise FetchError(f"{url}: HTTP {e.code} {e.reason}") from e
    except urllib.error.URLError as e:
        raise FetchError(f"{url}: cannot fetch: {e.reason}") from e
    except http.client.IncompleteRead as e:
        raise FetchError(
            f"{url}: truncated: the connection closed after {received + len(e.partial)} bytes"
        ) from e
    except (OSError, http.client.HTTPException) as e:
        raise FetchError(f"{url}: cannot fetch: {e or type(e).__name__}") from e
    finally:
        if sys.stderr.isatty() and received:
            print(file=sys.stderr)
    return b"".join(chunks)


def install_atomically(data: bytes, out: str) -> None:
    """Write ``out`` so a reader sees the old file or the new one, never a mix."""
    directory = os.path.dirname(os.path.abspath(out))
    os.makedirs(directory, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=directory, prefix=".expect-ct-log-list.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temp, 0o666 & ~umask)
        os.replace(temp, out)
    except BaseException:
        try:
            os.unlink(temp)
        except OSError:
            pass
        raise


def describe_age(log_list: loglistmod.LogList, now: datetime.datetime) -> str:
    age = log_list.age(now)
    if age is None or log_list.timestamp is None:
        return (
            "the list carries no timestamp (Apple's lists do not): dated as fetched now; "
            "the addon dates it by the file's modification time"
        )
    days = age / datetime.timedelta(days=1)
    text = f"dated {records.rfc3339(log_list.timestamp)} ({days:.1f} days old)"
    if age > STALE_AFTER:
        text += (
            f"; WARNING: older than {STALE_AFTER.days} days, the addon's default "
            "expect_ct_log_list_max_age: blocking would be suspended"
        )
    return text


def cmd_update_log_list(args: argparse.Namespace) -> int:
    source = args.source
    out = os.path.expanduser(
        args.out or os.path.join(os.path.expanduser(args.confdir), LOG_LIST_FILENAME)
    )
    if source == "apple":
        source = APPLE_LOG_LIST_URL
    scheme = urllib.parse.urlsplit(source).scheme.lower()
    started = time.monotonic()
    if scheme == "https":
        if is_chrome_log_list(source) and not args.i_have_permission:
            raise UsageError(
                f"refusing {source} as a CT enforcement list: {CHROME_POLICY_NOTE}. Use the "
                "default (Apple's list), or pass --i-have-permission if you have that permission."
            )
        data = fetch_url(source, cafile=args.cafile, timeout=args.timeout)
        print(
            f"fetched {len(data)} bytes from {source} in {time.monotonic() - started:.1f} s",
            file=sys.stderr,
        )
    elif scheme in ("http", "ftp", "file", "data"):
        raise UsageError(
            f"--source {source}: only https URLs, 'apple' or a local file path are accepted "
            "(a log list decides what is blocked; fetch it over verified HTTPS)"
        )
    else:
        data = read_file("--source ", source)
        print(f"read {len(data)} bytes from {source}", file=sys.stderr)
    try:
        log_list = loglistmod.LogList.from_json(data, source=source)
    except ValueError as e:
        raise FetchError(f"not installed, {out} is unchanged: {e}") from e
    if not len(log_list):
        raise FetchError(
            f"not installed, {out} is unchanged: {source} lists no CT logs (every SCT would be "
            "unknown)"
        )
    try:
        install_atomically(data, out)
    except OSError as e:
        raise FetchError(f"cannot install {out}: {e.strerror or e}") from e
    now = datetime.datetime.now(datetime.UTC)
    print(
        f"installed {out}: {len(log_list)} CT logs ({log_list.schema} schema) from {source}; "
        f"{describe_age(log_list, now)}"
    )
    return EXIT_OK


# ---------------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments and arguments[0] in LAUNCHED_TOOLS:
        # Everything after the tool's name is mitmproxy's command line, untouched.
        from expect_ct.mitm import launch  # imports mitmproxy: only on this path

        launch.run_tool(arguments[0], arguments[1:])
        return EXIT_OK
    parser = build_parser()
    args = parser.parse_args(arguments)
    if args.command is None:
        try:
            print(script_path())
        except RuntimeError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        return 0
    handlers: dict[str, Callable[[argparse.Namespace], int]] = {
        "hosts": cmd_hosts,
        "forget": cmd_forget,
        "check": cmd_check,
        "inspect": cmd_inspect,
        "update-log-list": cmd_update_log_list,
    }
    try:
        return handlers[args.command](args)
    except FetchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except (UsageError, storemod.StoreError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        # `python -m expect_ct check ... | head`: stop quietly.
        sys.stderr.close()
        return EXIT_OK
