"""The mitmproxy addon: options, hooks and commands wiring the pure core to the proxy.

Per upstream TLS connection (not per flow) the addon collects the certificate's SCTs from
all three delivery paths, classifies the chain, evaluates the CT policy once (cached by
certificate and handshake data), and decides during the upstream handshake whether the
connection must be refused. Per response it processes the Expect-CT header (RFC 9163 2.3)
and records everything on the flow, in mitmproxy's event log and in the JSON-lines log.
"""

from __future__ import annotations

import base64
import collections
import csv
import dataclasses
import datetime
import functools
import json
import logging
import os
import threading
import time
import traceback
from collections.abc import Sequence
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import serialization
from mitmproxy import command
from mitmproxy import connection
from mitmproxy import ctx
from mitmproxy import exceptions
from mitmproxy import flow as mflow
from mitmproxy import http
from mitmproxy import tls as mtls
from mitmproxy import types as mtypes
from mitmproxy.hooks import UpdateHook
from mitmproxy.log import ALERT
from mitmproxy.net.http import url

from expect_ct import cache
from expect_ct import chain as chainmod
from expect_ct import header as headermod
from expect_ct import loglist as loglistmod
from expect_ct import policy as policymod
from expect_ct import preload as preloadmod
from expect_ct import records
from expect_ct import report as reportmod
from expect_ct import store as storemod
from expect_ct import tls as tlsmod

logger = logging.getLogger("expect_ct")
SHA256 = hashes.SHA256()

META_KEY = "expect_ct"
ENFORCE_MODES = ("off", "header", "all")
REPORT_MODES = ("off", "send")
STORE_FILENAME = storemod.STORE_FILENAME
LOG_LIST_FILENAME = loglistmod.INSTALLED_FILENAME
# Bounded caches: a long-running proxy sees unbounded numbers of certificates and hosts.
VERDICT_CACHE_SIZE = 4096
ABORTED_MEMORY = 1024
HEADER_REFRESH = 60.0  # seconds
HEADER_MEMO_SIZE = 1024
LINE_REPEAT_WINDOW = 60.0  # seconds: identical INFO lines within it are counted, not logged
# A new connection to a host whose chain and handshake data were evaluated moments ago gets
# that evaluation again (chain, verdict, record): at most this old, and never across a
# certificate's notBefore/notAfter.
EVALUATION_MEMO_TTL = 60.0  # seconds
EVALUATION_MEMO_SIZE = 1024
HOSTS_SEEN_LIMIT = 100_000  # for the shutdown summary only
LOGGED_ONCE_MEMORY = 256  # distinct faults remembered so each is logged once


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


HeaderMemoKey = tuple[str, int, tuple[str, ...], int, str]


@dataclasses.dataclass(frozen=True)
class ReportContext:
    """What a delivered report's outcome needs to be logged."""

    host: str
    port: int
    body: dict[str, Any]
    test_report: bool = False


@dataclasses.dataclass
class ConnectionRecord:
    """What the addon learned about one upstream TLS connection."""

    host: str
    port: int
    tls_version: str | None
    served_chain: tuple[x509.Certificate, ...]
    chain: chainmod.ChainResult
    verdict: policymod.Verdict
    handshake: tlsmod.HandshakeSCTs
    evaluated_at: datetime.datetime
    known_host: storemod.KnownHost | None = None
    blocked: str | None = None  # why the connection was refused, if it was
    would_block: str | None = None  # why it would have been refused (blocking suspended)
    reported: bool = False
    handshake_safe: dict[str, str | None] | None = None
    summary_text: str = ""
    logged: bool = False
    event: dict[str, Any] = dataclasses.field(default_factory=dict)
    event_json: str = ""  # ``event`` as EventLog.encode_fields() writes it
    # The Expect-CT field values last processed on this connection, when, and the result.
    last_header: tuple[list[str], float, dict[str, Any], int] | None = None

    @property
    def exempt(self) -> bool:
        return self.chain.kind is chainmod.ChainKind.PRIVATE

    def summary(self) -> str:
        return self.summary_text or verdict_summary(self.chain, self.verdict)


def verdict_summary(chain: chainmod.ChainResult, verdict: policymod.Verdict) -> str:
    """One line: the CT verdict on a connection, as flow comments and the event log show it."""
    if chain.kind is chainmod.ChainKind.PRIVATE:
        return "CT: exempt (chain ends at a private root)"
    valid = sum(1 for c in verdict.scts if c.status == "valid")
    sources = sorted({c.sct.source.value for c in verdict.scts})
    detail = f"{valid}/{len(verdict.scts)} valid SCTs" + (
        f" ({', '.join(sources)})" if sources else ""
    )
    if verdict.compliant:
        text = f"CT: compliant ({verdict.policy}; {detail})"
    else:
        reasons = "; ".join(verdict.reasons) or "not compliant"
        text = f"CT: NOT compliant ({verdict.policy}; {detail}): {reasons}"
    if chain.kind is chainmod.ChainKind.UNTRUSTED:
        text += " [chain not publicly trusted]"
    return text


@dataclasses.dataclass(frozen=True)
class _Evaluation:
    """What every connection with the same chain, handshake data and settings shares."""

    expires: float  # time.monotonic()
    chain: chainmod.ChainResult
    verdict: policymod.Verdict
    event: dict[str, Any]
    event_json: str
    summary: str


EvaluationKey = tuple[object, ...]


def _next_validity_boundary(chain: Sequence[x509.Certificate], now: datetime.datetime) -> float:
    """Seconds until a certificate of the chain becomes valid or expires (inf if none will)."""
    soonest = float("inf")
    for cert in chain:
        for moment in (cert.not_valid_before_utc, cert.not_valid_after_utc):
            if moment > now:
                soonest = min(soonest, (moment - now).total_seconds())
    return soonest


class ExpectCT:
    """Certificate Transparency checks and Expect-CT enforcement for upstream connections."""

    def __init__(self) -> None:
        self.capture = tlsmod.HandshakeCapture()
        self.log_list: loglistmod.LogList | None = None
        self.log_list_age: datetime.timedelta | None = None
        self.classifier: chainmod.ChainClassifier | None = None
        self.store: storemod.KnownHostStore | None = None
        self.event_log: reportmod.EventLog | None = None
        self.sender: reportmod.ReportSender | None = None
        self.dedupe = reportmod.ReportDeduplicator()
        self._connections: dict[str, ConnectionRecord] = {}
        self._aborted: collections.OrderedDict[str, ConnectionRecord] = collections.OrderedDict()
        # Recently closed upstream connections (bounded): the response hook can run after
        # server_disconnected (mitmproxy 11, `Connection: close`), and must not re-evaluate.
        self._closed: collections.OrderedDict[str, ConnectionRecord] = collections.OrderedDict()
        # The latest connection per host, for expect_ct.test_report's body (bounded).
        self._last_seen: collections.OrderedDict[str, ConnectionRecord] = collections.OrderedDict()
        # Lazy strategy: a flow whose upstream handshake failed keeps its placeholder
        # server_conn, so its error hook finds the refused connection by client connection.
        self._aborted_by_client: collections.OrderedDict[str, ConnectionRecord] = (
            collections.OrderedDict()
        )
        self.verdicts = cache.VerdictCache(VERDICT_CACHE_SIZE)
        self._evaluations: collections.OrderedDict[EvaluationKey, _Evaluation] = (
            collections.OrderedDict()
        )
        self._header_memo: collections.OrderedDict[HeaderMemoKey, tuple[float, dict[str, Any]]] = (
            collections.OrderedDict()
        )
        self._recent_lines: collections.OrderedDict[str, list[float]] = collections.OrderedDict()
        # Bumped when remembered headers must be processed again (the store was changed by a
        # command): per-connection memos of an older generation no longer count.
        self._header_generation = 0
        self._lock = threading.Lock()
        self.stats: collections.Counter[str] = collections.Counter()
        self._hosts_seen: set[str] = set()
        # Faults (docs/failure-behaviour.md): each distinct problem is logged once, repeats
        # are only counted, so a fault hit by every flow cannot flood the log.
        self._logged_once: collections.OrderedDict[tuple[str, ...], None] = (
            collections.OrderedDict()
        )
        self._store_identity: tuple[int, int] | None = None
        self._store_write_failing = False
        # Until one configure has succeeded, every configure sets up everything (see configure).
        self.configured = False

    # ------------------------------------------------------------------ options

    def load(self, loader: Any) -> None:
        loader.add_option(
            "expect_ct_enforce",
            str,
            "header",
            "Expect-CT enforcement. off: record only. header: refuse non-compliant connections "
            "to Known Expect-CT Hosts that asked for enforce. all: also refuse every "
            "non-compliant connection whose chain ends at a publicly trusted root.",
            choices=ENFORCE_MODES,
        )
        loader.add_option(
            "expect_ct_policy",
            str,
            "chrome",
            "CT policy connections are judged by: chrome or apple.",
            choices=policymod.POLICIES,
        )
        loader.add_option(
            "expect_ct_dialect",
            str,
            "rfc9163",
            "Expect-CT header parser: rfc9163 (strict RFC 9163 grammar) or chromium "
            "(what Chromium 61-106 accepted, with its 30-day max-age clamp).",
            choices=headermod.DIALECTS,
        )
        loader.add_option(
            "expect_ct_log_list",
            str | None,  # type: ignore[arg-type]
            None,
            "Path of a CT log-list JSON file (Google v3 or Apple schema). "
            f"Default: <confdir>/{LOG_LIST_FILENAME} if `python -m expect_ct update-log-list` "
            "installed one, else the Apple log list bundled with the addon.",
        )
        loader.add_option(
            "expect_ct_log_list_max_age",
            int,
            70,
            "Days. When the log list is older than this, blocking is suspended "
            "(fail open, as Chrome does); 0 disables the check.",
        )
        loader.add_option(
            "expect_ct_public_roots",
            str | None,  # type: ignore[arg-type]
            None,
            "PEM bundle of root certificates treated as publicly trusted. Default: certifi's bundle. "
            "Chains ending at roots mitmproxy trusts upstream but not listed here are private and "
            "exempt from CT.",
        )
        loader.add_option(
            "expect_ct_store",
            str | None,  # type: ignore[arg-type]
            None,
            f"Known Expect-CT Hosts database (SQLite). Default: <confdir>/{STORE_FILENAME}. "
            "':memory:' keeps nothing across restarts.",
        )
        loader.add_option(
            "expect_ct_max_age_cap",
            int,
            2592000,
            "Seconds. Expect-CT max-age values above this are stored as this (RFC 9163 2.3.2.2).",
        )
        loader.add_option(
            "expect_ct_log",
            str | None,  # type: ignore[arg-type]
            None,
            "Path of a JSON-lines event log (appended): connection, header, blocked and report events.",
        )
        loader.add_option(
            "expect_ct_reports",
            str,
            "off",
            "RFC 9163 violation reports. off: record them in the JSON-lines log only. send: also "
            "POST them to the host's report-uri (https only, after a CORS preflight, never through "
            "the proxy, never to private addresses unless expect_ct_report_allow_private is set). "
            "Collector certificates are always verified, against ssl_verify_upstream_trusted_ca "
            "when it is set (as mitmproxy verifies upstream servers), else against certifi.",
            choices=REPORT_MODES,
        )
        loader.add_option(
            "expect_ct_report_allow_private",
            bool,
            False,
            "Let reports go to private, loopback and link-local addresses (tests, labs).",
        )
        loader.add_option(
            "expect_ct_preload",
            str | None,  # type: ignore[arg-type]
            None,
            "Path of a JSON file of hosts to seed the Known Expect-CT Hosts store with: "
            '[{"host": "example.com", "enforce": true, "report_uri": null, "expires": "2027-01-01T00:00:00Z"}].',
        )
        problem = self.capture.install(self._decide)
        if problem:
            logger.warning(
                f"Expect-CT: SCTs from the TLS extension and stapled OCSP cannot be captured "
                f"({problem}); only embedded SCTs are checked."
            )

    def configure(self, updated: set[str]) -> None:
        if self.configured:
            self._configure(updated)
            return
        # The first configure sets up everything, whatever keys it names: a -s script gets
        # every key from mitmproxy's script loader, but a built-in addon gets only the keys the
        # command line changed, and defaults must take effect too.
        try:
            self._configure(set(ctx.options.keys()))
        except exceptions.OptionsError as e:
            # At start-up: one line naming the option. Raised, it would become the script
            # loader's "error in script" traceback. Logged as an error, it makes mitmproxy's
            # errorcheck exit non-zero before the proxy serves anything.
            logger.error(f"Expect-CT: {e}")
            return
        self.configured = True

    def _configure(self, updated: set[str]) -> None:
        opts = ctx.options
        # mitmproxy checks choices only for values typed interactively, not for --set values
        # applied when a script loads, so check them here.
        for name, choices in (
            ("expect_ct_enforce", ENFORCE_MODES),
            ("expect_ct_policy", policymod.POLICIES),
            ("expect_ct_dialect", headermod.DIALECTS),
            ("expect_ct_reports", REPORT_MODES),
        ):
            if name in updated and getattr(opts, name) not in choices:
                raise exceptions.OptionsError(
                    f"{name} must be one of {', '.join(choices)}, not {getattr(opts, name)!r}."
                )
        if "expect_ct_max_age_cap" in updated and opts.expect_ct_max_age_cap < 0:
            raise exceptions.OptionsError(
                f"expect_ct_max_age_cap must be 0 or more seconds, not {opts.expect_ct_max_age_cap}."
            )
        if "expect_ct_log_list_max_age" in updated and opts.expect_ct_log_list_max_age < 0:
            raise exceptions.OptionsError(
                f"expect_ct_log_list_max_age must be 0 or more days, not {opts.expect_ct_log_list_max_age}."
            )
        if {"expect_ct_log_list", "expect_ct_log_list_max_age", "confdir"} & updated:
            self._configure_log_list()
        if {
            "expect_ct_public_roots",
            "ssl_verify_upstream_trusted_ca",
            "ssl_verify_upstream_trusted_confdir",
        } & updated:
            self._configure_roots()
        if {"expect_ct_store", "confdir", "expect_ct_max_age_cap", "expect_ct_preload"} & updated:
            self._configure_store()
        if "expect_ct_log" in updated:
            self._configure_event_log()
        if {
            "expect_ct_reports",
            "expect_ct_report_allow_private",
            "ssl_verify_upstream_trusted_ca",
        } & updated:
            self._configure_reports()
        if updated & {
            "expect_ct_log_list",
            "expect_ct_policy",
            "expect_ct_public_roots",
        }:
            self.verdicts.clear()
        if updated & {
            "expect_ct_log_list",
            "expect_ct_log_list_max_age",
            "expect_ct_policy",
            "expect_ct_public_roots",
            "ssl_verify_upstream_trusted_ca",
            "ssl_verify_upstream_trusted_confdir",
            "confdir",
        }:
            # Keyed by id(log list) and id(classifier): a new object may reuse an old id.
            self._evaluations.clear()

    def _configure_log_list(self) -> None:
        path = ctx.options.expect_ct_log_list
        if not path:
            # `python -m expect_ct update-log-list` installs a fresh list here.
            installed = os.path.join(os.path.expanduser(ctx.options.confdir), LOG_LIST_FILENAME)
            if os.path.exists(installed):
                path = installed
        try:
            log_list = (
                loglistmod.LogList.load(os.path.expanduser(path))
                if path
                else loglistmod.LogList.bundled()
            )
        except (OSError, ValueError) as e:
            raise exceptions.OptionsError(f"Cannot load expect_ct_log_list {path}: {e}") from e
        timestamp = log_list.timestamp
        if timestamp is None and path:
            # A list without its own timestamp is only as fresh as the file.
            timestamp = datetime.datetime.fromtimestamp(
                os.path.getmtime(os.path.expanduser(path)), datetime.UTC
            )
        self.log_list = log_list
        self.log_list_timestamp = timestamp
        max_age = ctx.options.expect_ct_log_list_max_age
        if max_age and self._log_list_stale():
            logger.warning(
                f"Expect-CT: the CT log list ({log_list.source}) is from "
                f"{timestamp.date() if timestamp else 'an unknown date'}, older than "
                f"expect_ct_log_list_max_age={max_age} days: blocking is SUSPENDED (fail open, as "
                f"Chrome does). Run `python -m expect_ct update-log-list` or set "
                f"expect_ct_log_list_max_age=0."
            )
        else:
            logger.info(
                f"Expect-CT: {len(log_list)} CT logs from {log_list.source}"
                + (f", dated {timestamp.date()}" if timestamp else "")
            )

    def _log_list_stale(self, now: datetime.datetime | None = None) -> bool:
        max_age = ctx.options.expect_ct_log_list_max_age
        if not max_age:
            return False
        timestamp = getattr(self, "log_list_timestamp", None)
        if timestamp is None:
            return True
        return (now or utcnow()) - timestamp > datetime.timedelta(days=max_age)

    def _configure_roots(self) -> None:
        opts = ctx.options
        try:
            if opts.expect_ct_public_roots:
                public = chainmod.load_pem_roots(os.path.expanduser(opts.expect_ct_public_roots))
            else:
                public = chainmod.load_pem_roots(chainmod.default_public_roots(), skip_invalid=True)
        except (OSError, ValueError) as e:
            raise exceptions.OptionsError(
                f"Cannot load expect_ct_public_roots {opts.expect_ct_public_roots}: {e}"
            ) from e
        private: list[x509.Certificate] = []
        try:
            if opts.ssl_verify_upstream_trusted_ca:
                private += chainmod.load_pem_roots(opts.ssl_verify_upstream_trusted_ca)
            if opts.ssl_verify_upstream_trusted_confdir:
                private += chainmod.load_roots_dir(opts.ssl_verify_upstream_trusted_confdir)
        except (OSError, ValueError) as e:
            # mitmproxy's own TlsConfig reports bad upstream trust settings; we only lose the
            # private/untrusted distinction.
            logger.warning(f"Expect-CT: cannot read the upstream trust roots: {e}")
        self.classifier = chainmod.ChainClassifier(public, private)

    def _configure_store(self) -> None:
        opts = ctx.options
        path = opts.expect_ct_store or os.path.join(
            os.path.expanduser(opts.confdir), STORE_FILENAME
        )
        # Open the new store before closing the old one: when opening fails, mitmproxy rolls
        # the option back and the old store stays in use (no silent fail-open without a store).
        try:
            # Only the default location (mitmproxy's confdir) is created: a typo in an explicit
            # path is an option error, not a new directory.
            fresh = storemod.KnownHostStore(
                path,
                max_age_cap=opts.expect_ct_max_age_cap,
                create_directory=not opts.expect_ct_store,
            )
        except storemod.StoreError as e:
            raise exceptions.OptionsError(str(e)) from e
        if self.store is not None:
            self.store.close()
        self.store = fresh
        self._store_identity = file_identity(fresh.path)
        if opts.expect_ct_preload:
            try:
                entries = preloadmod.load_preload(os.path.expanduser(opts.expect_ct_preload))
            except (OSError, ValueError) as e:
                raise exceptions.OptionsError(
                    f"Cannot load expect_ct_preload {opts.expect_ct_preload}: {e}"
                ) from e
            now = utcnow()
            live = [e for e in entries if e.expires > now]
            try:
                for entry in live:
                    self.store.add(
                        entry.host,
                        enforce=entry.enforce,
                        report_uri=entry.report_uri,
                        expires=entry.expires,
                        now=now,
                    )
            except (storemod.StoreError, ValueError) as e:
                raise exceptions.OptionsError(
                    f"Cannot apply expect_ct_preload {opts.expect_ct_preload}: {e}"
                ) from e
            logger.info(
                f"Expect-CT: {len(live)} preloaded hosts from {opts.expect_ct_preload}"
                + (
                    f" ({len(entries) - len(live)} already expired, skipped)"
                    if len(live) < len(entries)
                    else ""
                )
            )

    def _configure_event_log(self) -> None:
        if self.event_log is not None:
            self.event_log.close()
            self.event_log = None
        path = ctx.options.expect_ct_log
        if path:
            try:
                self.event_log = reportmod.EventLog(os.path.expanduser(path))
            except OSError as e:
                raise exceptions.OptionsError(f"Cannot open expect_ct_log {path}: {e}") from e

    def _configure_reports(self) -> None:
        if self.sender is not None:
            self.sender.close(timeout=1)
            self.sender = None
        opts = ctx.options
        if opts.expect_ct_reports == "send":
            self.sender = reportmod.ReportSender(
                allow_private=opts.expect_ct_report_allow_private,
                cafile=opts.ssl_verify_upstream_trusted_ca,
                forbidden=self._proxy_addresses(),
                on_result=self._report_delivered,
            )

    def _proxy_addresses(self) -> list[tuple[str, int]]:
        """Where this proxy listens: reports never go there (no loop through ourselves)."""
        opts = ctx.options
        addresses = [(opts.listen_host or "0.0.0.0", opts.listen_port or 8080)]
        proxyserver = ctx.master.addons.get("proxyserver")
        listen_addrs = getattr(proxyserver, "listen_addrs", None)
        if listen_addrs is not None:
            # The real ports: listen_port 0 and extra modes (regular@8081) are known only here.
            addresses += [(str(a[0]), int(a[1])) for a in listen_addrs()]
        return addresses

    def running(self) -> None:
        # The proxy's listening sockets exist only now: rebuild the sender to forbid them.
        if self.sender is not None:
            self._configure_reports()

    def done(self) -> None:
        self.capture.uninstall()
        if self.stats["connections"]:
            logger.info(self.summary())
        if self.sender is not None:
            self.sender.close(timeout=2)
            self.sender = None
        if self.store is not None:
            self.store.close()
            self.store = None
        if self.event_log is not None:
            self.event_log.close()
            self.event_log = None

    def summary(self) -> str:
        """The shutdown summary table (headless runs read it at the end of mitmdump's output)."""
        hosts = len(self._hosts_seen)
        rows = [
            ("hosts seen", f"{hosts}{'+' if hosts >= HOSTS_SEEN_LIMIT else ''}"),
            ("connections evaluated", self.stats["connections"]),
            ("compliant", self.stats["compliant"]),
            ("not compliant", self.stats["non_compliant"]),
            ("exempt (private root)", self.stats["exempt"]),
            ("blocked", self.stats["blocked"]),
            ("known hosts noted", self.stats["header_noted"]),
            ("known hosts updated", self.stats["header_updated"]),
            ("known hosts removed", self.stats["header_removed"]),
            ("reports", self.stats["reports"]),
        ]
        # Faults show up only when they happened (each was logged once, see _log_once).
        rows += [
            (name, self.stats[key])
            for name, key in (
                ("repeats not logged", "repeated_lines"),
                ("store read errors", "store_read_errors"),
                ("store write errors", "store_write_errors"),
                ("internal errors", "internal_errors"),
            )
            if self.stats[key]
        ]
        width = max(len(name) for name, _ in rows)
        return "Expect-CT summary:\n" + "\n".join(
            f"  {name:<{width}}  {value}" for name, value in rows
        )

    # ------------------------------------------------------------- evaluation

    def _evaluate(
        self,
        host: str,
        port: int,
        served: Sequence[x509.Certificate],
        handshake: tlsmod.HandshakeSCTs,
    ) -> ConnectionRecord:
        assert self.log_list is not None and self.classifier is not None
        now = utcnow()
        evaluation = self._shared_evaluation(host, served, handshake, now)
        record = ConnectionRecord(
            host=host,
            port=port,
            tls_version=handshake.tls_version,
            served_chain=tuple(served),
            chain=evaluation.chain,
            verdict=evaluation.verdict,
            handshake=handshake,
            evaluated_at=now,
            event=evaluation.event,
            event_json=evaluation.event_json,
            summary_text=evaluation.summary,
        )
        # Only a non-compliant, non-exempt connection can be blocked or reported (RFC 9163
        # 2.4), so only it needs the host's policy: compliant connections skip the store read
        # and are never refused because the store cannot be read.
        if self.store is not None and not evaluation.verdict.compliant and not record.exempt:
            record.known_host = self._lookup(host)
        return record

    def _shared_evaluation(
        self,
        host: str,
        served: Sequence[x509.Certificate],
        handshake: tlsmod.HandshakeSCTs,
        now: datetime.datetime,
    ) -> _Evaluation:
        """Classify and judge the chain, or reuse the result for the same inputs (memo)."""
        assert self.log_list is not None and self.classifier is not None
        policy = ctx.options.expect_ct_policy
        ders = (
            handshake.chain_der
            if handshake.chain_der and served is handshake.chain
            else tuple(cert.public_bytes(serialization.Encoding.DER) for cert in served)
        )
        key: EvaluationKey = (
            host,
            ders,
            handshake.tls_extension,
            handshake.ocsp_response,
            handshake.captured,
            handshake.tls_version,
            policy,
            id(self.log_list),
            id(self.classifier),
        )
        clock = time.monotonic()
        memo = self._evaluations.get(key)
        if memo is not None and clock < memo.expires:
            self._evaluations.move_to_end(key)
            return memo
        chain_result = self.classifier.classify(served, host=host, now=now)
        verdict = self.verdicts.get_or_evaluate(
            served,
            tls_scts=handshake.tls_extension,
            ocsp_response=handshake.ocsp_response,
            log_list=self.log_list,
            policy=policy,
            issuers=chain_result.validated[1:],
            now=now,
        )
        event = records.connection_record(
            tls_version=handshake.tls_version,
            chain=chain_result.kind,
            leaf=served[0] if served else None,
            verdict=verdict,
            sources=records.handshake_sources(
                captured=handshake.captured,
                tls_extension=handshake.tls_extension,
                ocsp_response=handshake.ocsp_response,
            ),
        )
        lifetime = min(
            EVALUATION_MEMO_TTL,
            _next_validity_boundary((*served, *chain_result.validated), now),
        )
        memo = _Evaluation(
            expires=clock + lifetime,
            chain=chain_result,
            verdict=verdict,
            event=event,
            event_json=reportmod.EventLog.encode_fields(event),
            summary=verdict_summary(chain_result, verdict),
        )
        self._evaluations[key] = memo
        while len(self._evaluations) > EVALUATION_MEMO_SIZE:
            self._evaluations.popitem(last=False)
        return memo

    def _lookup(self, host: str) -> storemod.KnownHost | None:
        assert self.store is not None
        try:
            return self.store.get(host)
        except ValueError:
            return None  # a name that cannot be canonicalised can never have been noted
        except storemod.StoreError as e:
            self._store_failed("read", e)
            raise

    # ------------------------------------------------------------------ faults

    def _log_once(self, key: tuple[str, ...], level: int, message: str, **kwargs: Any) -> bool:
        """Log ``message`` unless ``key`` was logged already (bounded memory); True if logged."""
        if key in self._logged_once:
            self._logged_once.move_to_end(key)
            return False
        self._logged_once[key] = None
        while len(self._logged_once) > LOGGED_ONCE_MEMORY:
            self._logged_once.popitem(last=False)
        logger.log(level, message, **kwargs)
        return True

    def _internal_error(self, where: str, error: Exception) -> None:
        """A bug in our own code: traceback once per distinct error, then only counted.

        Distinct: the exception's type, message and the line that raised it; not the hook it
        surfaced in, since one failing evaluation surfaces in several hooks of one flow.
        """
        self.stats["internal_errors"] += 1
        frames = traceback.extract_tb(error.__traceback__)
        origin = f"{frames[-1].filename}:{frames[-1].lineno}" if frames else ""
        self._log_once(
            ("internal", type(error).__name__, str(error)[:200], origin),
            logging.ERROR,
            f"Expect-CT: internal error {where}: {type(error).__name__}: {error} "
            f"(logged once; repeats are counted in the shutdown summary)",
            exc_info=error,
        )

    def _store_failed(self, doing: str, error: storemod.StoreError) -> None:
        """The store cannot read or write: logged once per distinct SQLite error."""
        self.stats[f"store_{doing}_errors"] += 1
        cause = str(error.__cause__ or error)
        # Without an SQLite cause the store was closed; that message names the host.
        key = cause if error.__cause__ is not None else "closed"
        if doing == "write":
            self._store_write_failing = True
            effect = "Expect-CT headers are not noted (flows are still served)"
        else:
            effect = (
                "non-compliant connections to hosts that might be Known Expect-CT Hosts are "
                "refused (fail closed)"
            )
        path = self.store.path if self.store is not None else "(closed)"
        self._log_once(
            ("store", doing, key),
            logging.ERROR,
            f"Expect-CT: the Known Expect-CT Hosts store {path} cannot {doing}: {cause}. "
            f"{effect}. Logged once; repeats are counted in the shutdown summary.",
        )

    def _store_write_ok(self) -> None:
        if self._store_write_failing:
            self._store_write_failing = False
            self._logged_once = collections.OrderedDict(
                (k, None) for k in self._logged_once if k[:2] != ("store", "write")
            )
            path = self.store.path if self.store is not None else "(closed)"
            logger.warning(f"Expect-CT: the store {path} can be written again.")

    def _reopen_store_if_replaced(self) -> None:
        """SQLite keeps writing to a deleted (unlinked) file: notes would vanish at exit.

        Before each write, compare the path's inode with the one opened; when the file was
        deleted or replaced, open the path again (a new, empty store, preload re-applied).
        """
        if self.store is None or self._store_identity is None:
            return
        current = file_identity(self.store.path)
        if current == self._store_identity:
            return
        path = self.store.path
        self._log_once(
            ("store-replaced", path, str(current)),
            logging.WARNING,
            f"Expect-CT: the store {path} was "
            + ("deleted" if current is None else "replaced by another file")
            + " while mitmproxy ran; opening it again (Known hosts kept only in the old file "
            "are gone).",
        )
        try:
            self._configure_store()
        except exceptions.OptionsError as e:
            # Keep the old (unlinked) store: its look-ups still work, its notes are lost.
            self._log_once(("store-reopen", path, str(e)), logging.ERROR, f"Expect-CT: {e}")

    def _block_reason(self, record: ConnectionRecord) -> str | None:
        """Why this connection must be refused, or None. Fail open only when the RFC says so."""
        mode = ctx.options.expect_ct_enforce
        if mode == "off" or record.exempt or record.verdict.compliant:
            return None
        known = record.known_host
        why = "; ".join(record.verdict.reasons) or "not CT-compliant"
        if known is not None and known.enforce:
            return (
                f"{record.host} is a Known Expect-CT Host with enforce (until "
                f"{records.rfc3339(known.expires)}) and the connection is not CT-compliant under the "
                f"{record.verdict.policy} policy: {why}"
            )
        if mode == "all" and record.chain.kind is chainmod.ChainKind.PUBLIC:
            return (
                f"the certificate of {record.host} chains to a public root but is not CT-compliant "
                f"under the {record.verdict.policy} policy: {why} (expect_ct_enforce=all)"
            )
        return None

    def _decide(self, server: connection.Server, handshake: tlsmod.HandshakeSCTs) -> bool:
        """Called by the handshake capture once per upstream handshake; False aborts it."""
        host, port = server_identity(server)
        try:
            record = self._evaluate(host, port, handshake.chain, handshake)
        except Exception as e:  # noqa: BLE001 - must never escape into OpenSSL
            return not self._undecided(host, port, e)
        self._connections[server.id] = record
        self._settle(record)
        return record.blocked is None

    def _undecided(self, host: str, port: int, error: Exception) -> bool:
        """Evaluation failed: log it and return True if the connection must be refused."""
        if not isinstance(error, storemod.StoreError):  # store faults are logged by _lookup
            self._internal_error("evaluating an upstream connection", error)
        closed = self._must_fail_closed(host)
        if closed:
            self.stats["blocked"] += 1
            logger.warning(
                f"Expect-CT: blocked {host}:{port}: cannot evaluate the connection "
                f"({type(error).__name__}: {error}) and the host may be a Known Expect-CT Host "
                f"with enforce: failing closed."
            )
        return closed

    def _settle(self, record: ConnectionRecord) -> None:
        """_after_evaluation; an internal error there never lets a required block through."""
        try:
            self._after_evaluation(record)
        except Exception as e:  # noqa: BLE001
            self._internal_error("recording an upstream connection", e)
            if (
                record.blocked is None
                and not record.verdict.compliant
                and not record.exempt
                and self._must_fail_closed(record.host)
            ):
                record.blocked = (
                    f"{record.host} is a Known Expect-CT Host with enforce, the connection is not "
                    f"CT-compliant, and an internal error ({type(e).__name__}) occurred: "
                    "failing closed"
                )

    def _must_fail_closed(self, host: str) -> bool:
        """When the addon cannot decide, a host known to require enforcement stays blocked."""
        if ctx.options.expect_ct_enforce == "off" or self.store is None or self._log_list_stale():
            return False
        try:
            known = self.store.get(host)
        except ValueError:
            return False  # not a valid host name: it can never have been noted
        except Exception:  # noqa: BLE001 - the store cannot tell: assume the worst
            return True
        return known is not None and known.enforce

    def _after_evaluation(self, record: ConnectionRecord) -> None:
        reason = self._block_reason(record)
        if reason is not None:
            if self._log_list_stale():
                record.would_block = reason
                logger.warning(
                    f"Expect-CT: NOT blocking {record.host}:{record.port} although {reason}: the log "
                    f"list is older than expect_ct_log_list_max_age days, blocking is suspended."
                )
            else:
                record.blocked = reason
        self._log_connection(record)
        if record.blocked is not None:
            self.stats["blocked"] += 1
            logger.warning(f"Expect-CT: blocked {record.host}:{record.port}: {record.blocked}")
            self._write_event(
                "blocked",
                record.host,
                record.port,
                reason=record.blocked,
                known_host=known_host_json(record.known_host),
            )
        self._last_seen.pop(record.host, None)
        self._last_seen[record.host] = record
        while len(self._last_seen) > ABORTED_MEMORY:
            self._last_seen.popitem(last=False)
        self._maybe_report_known_host(record)

    def _log_connection(self, record: ConnectionRecord) -> None:
        if record.logged:
            return
        record.logged = True
        self.stats["connections"] += 1
        if len(self._hosts_seen) < HOSTS_SEEN_LIMIT:
            self._hosts_seen.add(record.host)
        self.stats[
            "exempt"
            if record.exempt
            else "compliant"
            if record.verdict.compliant
            else "non_compliant"
        ] += 1
        line = f"Expect-CT: {record.host}:{record.port} {record.tls_version or ''} {record.chain.kind.value} chain: {record.summary()}"
        if not (record.verdict.compliant or record.exempt):
            logger.warning(line)  # every time: each one is a problem
        else:
            self._log_unless_repeated(line)
        if self.event_log is not None:
            self.event_log.write_encoded("connection", record.host, record.port, record.event_json)

    def _forget_headers(self) -> None:
        self._header_memo.clear()
        self._header_generation += 1

    def _log_unless_repeated(self, line: str) -> None:
        """INFO, but a line already logged in the last LINE_REPEAT_WINDOW seconds is only
        counted; the next time it is logged it says how many were left out. A client that
        opens a connection per request would otherwise repeat the same line all day (and
        mitmproxy's logging is the largest part of the addon's per-connection cost)."""
        clock = time.monotonic()
        seen = self._recent_lines.get(line)
        if seen is not None and clock - seen[0] < LINE_REPEAT_WINDOW:
            seen[1] += 1
            self.stats["repeated_lines"] += 1
            return
        self._recent_lines[line] = [clock, 0]
        self._recent_lines.move_to_end(line)
        while len(self._recent_lines) > HEADER_MEMO_SIZE:
            self._recent_lines.popitem(last=False)
        if seen is not None and seen[1]:
            line += f" (and {seen[1]:.0f} more like it in the {clock - seen[0]:.0f} s before)"
        logger.info(line)

    # ---------------------------------------------------------------- reports

    def _maybe_report_known_host(self, record: ConnectionRecord) -> None:
        known = record.known_host
        if (
            known is None
            or not known.report_uri
            or record.verdict.compliant
            or record.chain.kind is not chainmod.ChainKind.PUBLIC
            or record.reported
        ):
            return
        self._report(
            record,
            report_uri=known.report_uri,
            expiration=known.expires,
            failure_mode="enforce" if known.enforce else "report-only",
        )

    def _report(
        self,
        record: ConnectionRecord,
        *,
        report_uri: str,
        expiration: datetime.datetime | None,
        failure_mode: str,
    ) -> None:
        record.reported = True  # RFC 9163 2.3.3: at most one report per connection
        if self._log_list_stale():
            # RFC 9163 2.4: no reports when the check is bypassed. With an outdated log list
            # CT is not really evaluated (Chromium's BUILD_NOT_TIMELY: no report either).
            logger.info(
                f"Expect-CT: no report for {record.host}:{record.port} to {report_uri}: the log "
                f"list is older than expect_ct_log_list_max_age days."
            )
            return
        now = utcnow()
        body = reportmod.build_report(
            hostname=record.host,
            port=record.port,
            date_time=now,
            effective_expiration=expiration,
            served_chain=record.served_chain,
            validated_chain=record.chain.validated or record.served_chain,
            scts=[(c.sct, c.status) for c in record.verdict.scts],
            failure_mode=failure_mode,
        )
        self._dispatch(record.host, record.port, report_uri, body, now=now)

    def _dispatch(
        self,
        host: str,
        port: int,
        report_uri: str,
        body: dict[str, Any],
        *,
        now: datetime.datetime,
        test_report: bool = False,
    ) -> None:
        self.stats["reports"] += 1
        if not test_report and not self.dedupe.should_send(host, port, report_uri, now):
            self._report_event(
                host,
                port,
                report_uri,
                "suppressed",
                body,
                "a report for this host, port and report-uri was sent in the last hour",
            )
            return
        if self.sender is None:
            self._report_event(host, port, report_uri, "disabled", body, "expect_ct_reports=off")
            return
        context = ReportContext(host, port, body, test_report)
        # A refused submit (queue full) is reported through on_result like any other outcome.
        self.sender.submit(report_uri, reportmod.serialize_report(body), context=context)

    def _report_delivered(self, outcome: reportmod.ReportOutcome) -> None:
        # Runs on the sender's worker thread; EventLog and logging are thread-safe.
        context = outcome.context
        if not isinstance(context, ReportContext):
            return
        if context.test_report:
            logging.log(
                ALERT,
                f"Expect-CT test report about {context.host}:{context.port} to "
                f"{outcome.report_uri}: {outcome.delivery} ({outcome.detail})",
            )
        self._report_event(
            context.host,
            context.port,
            outcome.report_uri,
            outcome.delivery,
            context.body,
            outcome.detail,
        )

    def _report_event(
        self,
        host: str,
        port: int,
        report_uri: str,
        delivery: str,
        body: dict[str, Any],
        detail: str,
    ) -> None:
        logger.info(f"Expect-CT: report for {host}:{port} to {report_uri}: {delivery} ({detail})")
        self._write_event(
            "report", host, port, report_uri=report_uri, delivery=delivery, detail=detail, body=body
        )

    def _write_event(self, event: str, host: str, port: int, **fields: Any) -> None:
        if self.event_log is not None:
            self.event_log.write(event, host, port, **fields)

    # ------------------------------------------------------------------ hooks

    def tls_start_server(self, data: mtls.TlsData) -> None:
        self.capture.tls_start_server(data)

    def tls_established_server(self, data: mtls.TlsData) -> None:
        try:
            self._tls_established_server(data)
        except Exception as e:  # noqa: BLE001 - fail closed for hosts that require it
            server = data.conn
            if isinstance(server, connection.Server):
                host, port = server_identity(server)
                if self._undecided(host, port, e):
                    server.error = (
                        f"Blocked by Expect-CT: cannot evaluate the connection to {host}, a "
                        "possible Known Expect-CT Host with enforce: failing closed"
                    )

    def _tls_established_server(self, data: mtls.TlsData) -> None:
        server = data.conn
        if not isinstance(server, connection.Server) or server.id in self._connections:
            return
        # The handshake decision point did not run (capture unavailable): evaluate now.
        handshake = self.capture.result(data)
        if handshake.tls_version is None and server.tls_version:
            # QUIC: aioquic did the handshake (no ssl_conn to ask); mitmproxy says "QUICv1".
            handshake = dataclasses.replace(handshake, tls_version=server.tls_version)
        served = handshake.chain or tuple(
            records.to_cryptography(c) for c in server.certificate_list
        )
        if not served:
            return
        host, port = server_identity(server)
        record = self._evaluate(host, port, served, handshake)
        self._connections[server.id] = record
        self._settle(record)
        if record.blocked is not None:
            # Refuse the connection before any request uses it (eager strategy: effective; lazy:
            # the request hook already ran, see README).
            server.error = f"Blocked by Expect-CT: {record.blocked}"

    def tls_failed_server(self, data: mtls.TlsData) -> None:
        server = data.conn
        record = self._connections.pop(server.id, None)
        if record is not None and record.blocked is not None:
            self._aborted[server.id] = record
            self._aborted_by_client[data.context.client.id] = record
            for remembered in (self._aborted, self._aborted_by_client):
                while len(remembered) > ABORTED_MEMORY:
                    remembered.popitem(last=False)

    def server_disconnected(self, data: Any) -> None:
        record = self._connections.pop(data.server.id, None)
        if record is not None:
            self._closed[data.server.id] = record
            while len(self._closed) > ABORTED_MEMORY:
                self._closed.popitem(last=False)

    def _record_for_flow(self, flow: http.HTTPFlow) -> ConnectionRecord | None:
        # HTTP/3 upstreams never pass through the TLS hooks (aioquic does the handshake): their
        # connection is evaluated here, from the embedded SCTs, when its first flow arrives.
        server = flow.server_conn
        record = (
            self._connections.get(server.id)
            or self._aborted.get(server.id)
            or self._closed.get(server.id)
        )
        if record is not None:
            return record
        if not server.certificate_list or server.tls_established is False:
            return None
        # QUIC or a connection the handshake hooks never saw: embedded SCTs only.
        served = tuple(records.to_cryptography(c) for c in server.certificate_list)
        host, port = server_identity(server)
        handshake = tlsmod.HandshakeSCTs(
            captured=False,
            tls_extension=None,
            tls_extension_where=None,
            ocsp_response=None,
            tls_version=server.tls_version,
            chain=served,
        )
        # An exception here reaches the hook's wrapper, which fails closed where required.
        record = self._evaluate(host, port, served, handshake)
        self._connections[server.id] = record
        self._settle(record)
        return record

    def request(self, flow: http.HTTPFlow) -> None:
        try:
            self._request(flow)
        except Exception as e:  # noqa: BLE001 - mitmproxy would log it for every flow
            self._internal_error("in the request hook", e)
            self._fail_closed_flow(flow, e)

    def _fail_closed_flow(self, flow: http.HTTPFlow, error: Exception) -> None:
        """After an internal error: answer 502 if the host requires enforcement, else pass."""
        if flow.response is not None or not flow.live or flow.request.scheme != "https":
            return
        server = flow.server_conn
        record = (
            self._connections.get(server.id)
            or self._aborted.get(server.id)
            or self._closed.get(server.id)
        )
        host = request_host(flow)
        if record is not None and record.blocked is not None:
            reason = record.blocked
        elif record is not None and (record.verdict.compliant or record.exempt):
            return  # nothing to enforce on this connection
        elif self._must_fail_closed(host):
            reason = (
                f"{host} may be a Known Expect-CT Host with enforce and an internal error "
                f"({type(error).__name__}) left the connection unchecked: failing closed"
            )
        else:
            return
        self.stats["blocked"] += 1
        body = f"Blocked by mitmproxy-expect-ct.\n\nHost: {host}\nReason: {reason}\n"
        flow.response = http.Response.make(
            502, body.encode(), {"Content-Type": "text/plain; charset=utf-8"}
        )
        meta = flow.metadata.setdefault(META_KEY, {})
        meta["blocked"] = reason
        meta["blocked_response"] = True
        flow.marked = ":no_entry:"

    def _request(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None or not flow.live:
            return
        if flow.request.scheme != "https":
            return
        record = self._record_for_flow(flow)
        if record is None:
            return
        self._annotate(flow, record)
        if record.blocked is not None:
            self._block_flow(flow, record)

    def _block_flow(self, flow: http.HTTPFlow, record: ConnectionRecord) -> None:
        body = (
            "Blocked by mitmproxy-expect-ct.\n\n"
            f"Host: {record.host}:{record.port}\n"
            f"Policy: {record.verdict.policy}\n"
            f"Reason: {record.blocked}\n"
        )
        flow.response = http.Response.make(
            502, body.encode(), {"Content-Type": "text/plain; charset=utf-8"}
        )
        flow.metadata[META_KEY]["blocked"] = record.blocked
        flow.metadata[META_KEY]["blocked_response"] = True
        flow.marked = ":no_entry:"
        self._set_comment(flow, f"BLOCKED by Expect-CT: {record.summary()}")

    def response(self, flow: http.HTTPFlow) -> None:
        # The upstream connection was already accepted (the decision is made in the handshake
        # and the request hook): an internal error here fails open, logged once.
        try:
            self._response(flow)
        except Exception as e:  # noqa: BLE001
            self._internal_error("in the response hook", e)

    def _response(self, flow: http.HTTPFlow) -> None:
        meta = flow.metadata.get(META_KEY, {})
        if meta.get("blocked_response"):
            return
        assert flow.response is not None
        values = expect_ct_values(flow.response.headers)
        record = None
        if flow.request.scheme == "https":
            record = self._record_for_flow(flow)
            if record is not None:
                self._annotate(flow, record)
        if not values:
            return
        header_meta = self._process_header(flow, values, record)
        flow.metadata.setdefault(META_KEY, {})["header"] = header_meta
        self._refresh_comment(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        try:
            self._error(flow)
        except Exception as e:  # noqa: BLE001 - annotation only; the flow already failed
            self._internal_error("in the error hook", e)

    def _error(self, flow: http.HTTPFlow) -> None:
        record = self._aborted.get(flow.server_conn.id)
        if record is None:
            # Lazy strategy: the connection that failed never became flow.server_conn.
            candidate = self._aborted_by_client.get(flow.client_conn.id)
            if candidate is not None and candidate.host == request_host(flow):
                record = candidate
        if record is not None:
            self._annotate(flow, record)
            flow.metadata[META_KEY]["blocked"] = record.blocked
            flow.marked = ":no_entry:"
            self._set_comment(flow, f"BLOCKED by Expect-CT: {record.summary()}")

    # ------------------------------------------------------------- the header

    def _process_header(
        self, flow: http.HTTPFlow, values: list[str], record: ConnectionRecord | None
    ) -> dict[str, Any]:
        if record is not None:
            # The name the upstream connection was made and judged under (SNI): the same
            # name a later connection is looked up by, also in reverse-proxy mode, where the
            # client's Host header names the proxy instead.
            host, port = record.host, record.port
        else:
            host, port = pretty_host(flow.request), flow.request.port
        # Sites send the same header on every response: process it (store write, log line)
        # once a minute per host and connection verdict, not once per flow. The stored
        # expiry lags by at most HEADER_REFRESH seconds.
        memo_key: HeaderMemoKey | None = None
        if record is not None:
            # Responses on one connection repeat the header: compare with the connection's
            # last one before building and hashing the key of the shared memo.
            clock = time.monotonic()
            last = record.last_header
            seen: tuple[float, dict[str, Any]] | None = None
            if last is not None and last[0] == values and last[3] == self._header_generation:
                seen = (last[1], last[2])
            if seen is None or clock - seen[0] >= HEADER_REFRESH:
                memo_key = (host, port, tuple(values), id(record.verdict), record.chain.kind.value)
                seen = self._header_memo.get(memo_key)
            if seen is not None and clock - seen[0] < HEADER_REFRESH:
                self.stats["header_repeats"] += 1
                record.last_header = (values, seen[0], seen[1], self._header_generation)
                # The report is per connection (RFC 9163 2.3.3), not per memoised header.
                self._maybe_report_header(host, record, seen[1])
                return seen[1]
        # Undecodable bytes must not reach the metadata: a .mitm file cannot hold them.
        meta: dict[str, Any] = {"values": [records.field_text(v) for v in values]}
        try:
            parsed: headermod.ExpectCT | None = headermod.parse_expect_ct(
                values, dialect=ctx.options.expect_ct_dialect
            )
            meta.update(valid=True, error=None)
        except headermod.InvalidExpectCT as e:
            parsed = None
            meta.update(valid=False, error=str(e))
        meta.update(
            max_age=parsed.max_age if parsed else None,
            enforce=parsed.enforce if parsed else None,
            report_uri=parsed.report_uri if parsed else None,
        )
        action, why = self._header_action(
            host, parsed, meta, record, secure=flow.request.scheme == "https"
        )
        meta.update(action=action, why=why)
        self._maybe_report_header(host, record, meta)
        self.stats[f"header_{action}"] += 1
        safe_values = records.one_line(", ".join(values), 200)
        # one_line escapes like a string literal; repr() on top would double every backslash.
        text = f"Expect-CT: {host}:{port} header '{safe_values}': {action} ({why})"
        if meta["valid"]:
            logger.info(text)
        else:
            logger.warning(text)
        self._write_event("header", host, port, **meta)
        if memo_key is not None and record is not None:
            now = time.monotonic()
            self._header_memo[memo_key] = (now, meta)
            record.last_header = (values, now, meta, self._header_generation)
            while len(self._header_memo) > HEADER_MEMO_SIZE:
                self._header_memo.popitem(last=False)
        return meta

    def _maybe_report_header(
        self, host: str, record: ConnectionRecord | None, meta: dict[str, Any]
    ) -> None:
        """RFC 9163 2.3.3: a valid header with a report-uri over a non-compliant connection
        (public root) to a host that is not yet known is reported, once per connection."""
        if (
            record is None
            or record.reported
            or not meta.get("valid")
            or not meta.get("report_uri")
            or record.verdict.compliant
            or record.chain.kind is not chainmod.ChainKind.PUBLIC
        ):
            return
        try:
            known = self.store.get(host) if self.store is not None else None
        except (ValueError, storemod.StoreError) as e:
            if isinstance(e, storemod.StoreError):
                self._store_failed("read", e)
            known = None  # cannot tell: the header asked for a report, send it
        if known is not None:
            return  # a Known host's failures are reported at connection setup (RFC 9163 2.4)
        self._report(
            record,
            report_uri=meta["report_uri"],
            expiration=None,
            failure_mode="enforce" if meta.get("enforce") else "report-only",
        )

    def _header_action(
        self,
        host: str,
        parsed: headermod.ExpectCT | None,
        meta: dict[str, Any],
        record: ConnectionRecord | None,
        *,
        secure: bool,
    ) -> tuple[str, str]:
        # RFC 9163 2.3.2: ignore over non-secure transport.
        if not secure:
            return (
                "ignored",
                "received over plain HTTP (RFC 9163 2.3.2: only secure transport counts)",
            )
        if parsed is None:
            return (
                "ignored",
                "malformed header: no Expect-CT state changes (RFC 9163 2.3.1)",
            )
        if record is None:
            return "ignored", "the upstream connection's certificates are not available"
        if record.chain.kind is chainmod.ChainKind.PRIVATE:
            return (
                "ignored",
                "the chain ends at a private root: Expect-CT does not apply (RFC 9163 2.4.1)",
            )
        if record.chain.kind is chainmod.ChainKind.UNTRUSTED:
            return "ignored", f"the chain is not publicly trusted ({record.chain.error})"
        if not record.verdict.compliant:
            return (
                "ignored",
                "the connection is not CT-compliant: Expect-CT state is not updated (RFC 9163 2.3.2)",
            )
        if self.store is None:
            return "ignored", "no Known Expect-CT Hosts store"
        self._reopen_store_if_replaced()
        try:
            action, _entry = self.store.observe(
                host, max_age=parsed.max_age, enforce=parsed.enforce, report_uri=parsed.report_uri
            )
        except ValueError as e:
            return "ignored", f"the host name cannot be noted: {e}"
        except storemod.StoreError as e:
            # The flow is still served; the header is simply not noted (logged once).
            self._store_failed("write", e)
            return "ignored", f"store write failed: {e.__cause__ or e}"
        self._store_write_ok()
        if action == "noted":
            return (
                action,
                f"valid header on a CT-compliant connection; known for {min(parsed.max_age, ctx.options.expect_ct_max_age_cap)} s",
            )
        if action == "updated":
            return action, "valid header on a CT-compliant connection; stored policy refreshed"
        if action == "removed":
            return action, "max-age=0 on a CT-compliant connection (RFC 9163 2.3.2)"
        return "ignored", "max-age=0 for a host that is not known: not noted (RFC 9163 2.3.2)"

    # ------------------------------------------------------------ annotation

    def _annotate(self, flow: http.HTTPFlow, record: ConnectionRecord) -> None:
        meta = flow.metadata.setdefault(META_KEY, {})
        if "connection" in meta:
            return
        meta["secure"] = True
        meta["host"] = record.host
        meta["port"] = record.port
        if record.handshake.captured and record.handshake_safe is None:
            # Once per connection, shared by its flows: the raw handshake SCT data, so
            # expect_ct.check can re-evaluate a saved flow.
            record.handshake_safe = {
                "tls_extension": b64(record.handshake.tls_extension),
                "ocsp_response": b64(record.handshake.ocsp_response),
            }
        # Shared by every flow of the connection: records.py builds it from JSON primitives
        # only, so it survives a saved .mitm file as it is.
        meta["connection"] = record.event
        meta["verdict"] = record.summary_text
        if record.handshake_safe is not None:
            meta["handshake"] = record.handshake_safe
        if record.would_block:
            meta["would_block"] = record.would_block
        if not record.verdict.compliant and not record.exempt and not flow.marked:
            flow.marked = ":warning:"
        self._refresh_comment(flow)

    def _refresh_comment(self, flow: http.HTTPFlow) -> None:
        meta = flow.metadata.get(META_KEY, {})
        parts = []
        if "verdict" in meta:
            parts.append(meta["verdict"])
        header = meta.get("header")
        if header:
            parts.append(
                f"Expect-CT header {header['action']}" + ("" if header["valid"] else " (invalid)")
            )
            if not header["valid"] and not flow.marked:
                flow.marked = ":warning:"
        if meta.get("blocked"):
            return
        self._set_comment(flow, " | ".join(parts))

    def _set_comment(self, flow: http.HTTPFlow, text: str) -> None:
        previous = flow.metadata.get(META_KEY, {}).get("comment")
        if flow.comment and flow.comment != previous:
            return  # the user's (or another addon's) comment wins
        flow.comment = records.one_line(text)
        flow.metadata.setdefault(META_KEY, {})["comment"] = flow.comment

    # ---------------------------------------------------------------- commands

    @command.command("expect_ct.hosts")
    def hosts(self) -> None:
        """List the Known Expect-CT Hosts in the event log."""
        if self.store is None:
            raise exceptions.CommandError("The Known Expect-CT Hosts store is not open.")
        lines = [
            f"{h.host}: {'enforce' if h.enforce else 'report-only'}, expires {records.rfc3339(h.expires)}"
            + (f", report-uri {h.report_uri}" if h.report_uri else "")
            for h in self.store.hosts()
        ]
        logging.log(
            ALERT, f"{len(lines)} Known Expect-CT Hosts" + "".join(f"\n  {x}" for x in lines)
        )

    @command.command("expect_ct.forget")
    def forget(self, host: str) -> None:
        """Remove a host from the Known Expect-CT Hosts."""
        if self.store is None:
            raise exceptions.CommandError("The Known Expect-CT Hosts store is not open.")
        try:
            removed = self.store.forget(host)
        except ValueError as e:
            raise exceptions.CommandError(str(e)) from e
        self._forget_headers()
        logging.log(
            ALERT, f"{host}: {'forgotten' if removed else 'was not a Known Expect-CT Host'}"
        )

    @command.command("expect_ct.clear")
    def clear(self) -> None:
        """Remove every Known Expect-CT Host."""
        if self.store is None:
            raise exceptions.CommandError("The Known Expect-CT Hosts store is not open.")
        self._forget_headers()
        logging.log(ALERT, f"Removed {self.store.clear()} Known Expect-CT Hosts.")

    @command.command("expect_ct.test_report")
    def test_report(self, host: str, report_uri: str = "") -> None:
        """Send a test report about a host to its stored report-uri, or to report_uri.

        The body has "test-report": true and describes the host's last connection; if none was
        seen, port 443 with empty chains and SCTs, as Chromium's test report. Test reports are
        not rate-limited. The outcome is logged.
        """
        try:
            name = storemod.canonical_host(host)
        except ValueError as e:
            raise exceptions.CommandError(f"Invalid host {host!r}: {e}") from e
        try:
            known = self.store.get(name) if self.store is not None else None
        except storemod.StoreError as e:
            raise exceptions.CommandError(str(e)) from e
        uri = report_uri or (known.report_uri if known is not None else None)
        if not uri:
            raise exceptions.CommandError(
                f"{name} is not a Known Expect-CT Host with a report-uri: give a report-uri."
            )
        record = self._last_seen.get(name)
        port = record.port if record is not None else 443
        now = utcnow()
        body = reportmod.build_report(
            hostname=name,
            port=port,
            date_time=now,
            effective_expiration=known.expires if known is not None else None,
            served_chain=record.served_chain if record is not None else (),
            validated_chain=(record.chain.validated or record.served_chain)
            if record is not None
            else (),
            scts=[(c.sct, c.status) for c in record.verdict.scts] if record is not None else [],
            failure_mode="enforce" if known is not None and known.enforce else "report-only",
            test_report=True,
        )
        logging.log(
            ALERT,
            f"Expect-CT: test report about {name} to {uri}: "
            + ("queued" if self.sender is not None else "not sent (expect_ct_reports=off)"),
        )
        self._dispatch(name, port, uri, body, now=now, test_report=True)

    @command.command("expect_ct.check")
    def check(self, flows: Sequence[mflow.Flow]) -> None:
        """Re-evaluate the selected flows against the current log list and policy (e.g. flows loaded from a file)."""
        updated: list[mflow.Flow] = []
        counts: collections.Counter[str] = collections.Counter()
        for f in flows:
            if not isinstance(f, http.HTTPFlow) or not f.server_conn.certificate_list:
                counts["without certificates"] += 1
                continue
            previous = f.metadata.get(META_KEY) or {}
            stored = previous.get("handshake") or {}
            served = tuple(records.to_cryptography(c) for c in f.server_conn.certificate_list)
            handshake = tlsmod.HandshakeSCTs(
                captured=bool(stored),
                tls_extension=unb64(stored.get("tls_extension")),
                tls_extension_where=None,
                ocsp_response=unb64(stored.get("ocsp_response")),
                tls_version=f.server_conn.tls_version,
                chain=served,
            )
            host, port = server_identity(f.server_conn)
            record = self._evaluate(host, port, served, handshake)
            meta = f.metadata.setdefault(META_KEY, {})
            for key in ("connection", "verdict", "handshake"):
                meta.pop(key, None)
            if f.marked == ":warning:":
                f.marked = ""
            self._annotate(f, record)
            counts[
                "compliant"
                if record.verdict.compliant
                else "exempt"
                if record.exempt
                else "not compliant"
            ] += 1
            updated.append(f)
        ctx.master.addons.trigger(UpdateHook(updated))
        summary = (
            ", ".join(f"{n} {what}" for what, n in sorted(counts.items())) or "nothing to check"
        )
        logging.log(ALERT, f"Expect-CT: re-checked {len(updated)} flows: {summary}.")

    @command.command("expect_ct.export")
    def export(self, flows: Sequence[mflow.Flow], path: mtypes.Path) -> None:
        """Export the selected flows' CT state to a .json or .csv file."""
        target = os.path.expanduser(path)
        rows = [export_row(f) for f in flows]
        try:
            if target.lower().endswith(".csv"):
                with open(target, "w", newline="", encoding="utf-8") as out:
                    writer = csv.DictWriter(out, fieldnames=EXPORT_COLUMNS)
                    writer.writeheader()
                    writer.writerows(rows)
            elif target.lower().endswith(".json"):
                for row, f in zip(rows, flows, strict=True):
                    row["expect_ct"] = f.metadata.get(META_KEY)
                with open(target, "w", encoding="utf-8") as out:
                    json.dump(rows, out, indent=2, default=str)
            else:
                raise exceptions.CommandError(f"{path}: the file name must end in .json or .csv")
        except OSError as e:
            raise exceptions.CommandError(f"Cannot write {path}: {e}") from e
        logging.log(ALERT, f"Expect-CT: exported {len(rows)} flows to {target}.")

    @command.command("expect_ct.show")
    def show(self, flows: Sequence[mflow.Flow]) -> None:
        """Summarise the CT state of the selected flows in the event log."""
        lines = []
        for f in flows:
            meta = f.metadata.get(META_KEY)
            if isinstance(f, http.HTTPFlow):
                where = f"{f.request.method} {f.request.pretty_url}"
            else:
                where = type(f).__name__
            lines.append(
                f"{records.one_line(where, 120)}: {meta.get('verdict', 'no CT data') if meta else 'no CT data'}"
            )
        logging.log(ALERT, "\n".join(lines) if lines else "No flows selected.")
        ctx.master.addons.trigger(UpdateHook([]))


def b64(data: bytes | None) -> str | None:
    return base64.b64encode(data).decode() if data is not None else None


def unb64(data: Any) -> bytes | None:
    if not isinstance(data, str):
        return None
    try:
        return base64.b64decode(data, validate=True)
    except ValueError:
        return None


EXPORT_COLUMNS = (
    "time",
    "method",
    "url",
    "host",
    "port",
    "chain",
    "compliant",
    "policy",
    "valid_scts",
    "invalid_scts",
    "unknown_scts",
    "sources",
    "header",
    "header_action",
    "blocked",
    "reasons",
    "verdict",
)


def export_row(flow: mflow.Flow) -> dict[str, Any]:
    """One flow's CT state as a flat row (CSV) that JSON export extends with the metadata."""
    meta = flow.metadata.get(META_KEY) or {}
    conn = meta.get("connection") or {}
    header = meta.get("header") or {}
    scts = conn.get("scts") or []
    row: dict[str, Any] = dict.fromkeys(EXPORT_COLUMNS)
    row["time"] = records.rfc3339(
        datetime.datetime.fromtimestamp(flow.timestamp_created, datetime.UTC)
    )
    if isinstance(flow, http.HTTPFlow):
        row.update(method=flow.request.method, url=flow.request.pretty_url)
    row.update(
        host=meta.get("host"),
        port=meta.get("port"),
        chain=conn.get("chain"),
        compliant=conn.get("compliant"),
        policy=conn.get("policy"),
        valid_scts=sum(1 for x in scts if x.get("status") == "valid") if conn else None,
        invalid_scts=sum(1 for x in scts if x.get("status") == "invalid") if conn else None,
        unknown_scts=sum(1 for x in scts if x.get("status") == "unknown") if conn else None,
        sources=" ".join(sorted({x.get("source", "") for x in scts})) or None,
        header=", ".join(header.get("values", [])) or None,
        header_action=header.get("action"),
        blocked=meta.get("blocked"),
        reasons="; ".join(conn.get("reasons") or []) or None,
        verdict=meta.get("verdict"),
    )
    return row


def server_identity(server: connection.Server) -> tuple[str, int]:
    address = server.address or ("", 0)
    return storemod.host_key(server.sni or str(address[0])), int(address[1])


def file_identity(path: str) -> tuple[int, int] | None:
    """(device, inode) of a file, None if it does not exist (or is ":memory:")."""
    if path == ":memory:":
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


_EXPECT_CT = b"expect-ct"


def expect_ct_values(headers: http.Headers) -> list[str]:
    """``headers.get_all("Expect-CT")`` in one pass over the raw fields: this runs for every
    response, and mitmproxy's get_all converts the name and every field's name per call."""
    return [
        value.decode("utf-8", "surrogateescape")
        for name, value in headers.fields
        if name.lower() == _EXPECT_CT
    ]


def pretty_host(request: http.Request) -> str:
    """``request.pretty_host``, parsing each distinct Host header once: sites send the same
    one on every request, and mitmproxy validates it anew each time it is asked."""
    authority = request.host_header
    return _authority_host(authority) if authority else request.host


@functools.lru_cache(maxsize=1024)
def _authority_host(authority: str) -> str:
    return url.parse_authority(authority, check=False)[0]


def request_host(flow: http.HTTPFlow) -> str:
    """The flow's upstream host name as server_identity() spells it."""
    return storemod.host_key(flow.server_conn.sni or flow.request.host)


def known_host_json(known: storemod.KnownHost | None) -> dict[str, Any] | None:
    if known is None:
        return None
    return {
        "host": known.host,
        "enforce": known.enforce,
        "report_uri": known.report_uri,
        "expires": records.rfc3339(known.expires),
    }


# ------------------------------------------------------------- built-in launch


def run_tool(tool: str, arguments: Sequence[str]) -> None:
    """Run mitmdump, mitmweb or mitmproxy with ExpectCT built in: ``python -m expect_ct mitmdump``.

    The addon then sits in mitmproxy's addon chain like mitmproxy's own addons. Loaded with
    ``-s``, every event of every flow also passes through the script loader, the script and
    its module before reaching it, which costs mitmproxy a few per cent per request even for
    an empty script (benchmarks/bench.py measures both ways). Arguments are mitmproxy's own.
    """
    from mitmproxy import hooks
    from mitmproxy.tools import cmdline
    from mitmproxy.tools import main as mitmproxy_main

    base: type[Any]
    extra: Any = None
    if tool == "mitmdump":
        from mitmproxy.tools.dump import DumpMaster

        base, make_parser = DumpMaster, cmdline.mitmdump

        def extra(args: Any) -> dict[str, Any]:
            # As mitmproxy.tools.main.mitmdump does: a filter expression limits all output.
            if args.filter_args:
                expression = " ".join(args.filter_args)
                return {
                    "save_stream_filter": expression,
                    "readfile_filter": expression,
                    "dumper_filter": expression,
                }
            return {}

    elif tool == "mitmweb":
        from mitmproxy.tools.web.master import WebMaster

        base, make_parser = WebMaster, cmdline.mitmweb
    elif tool == "mitmproxy":
        from mitmproxy.tools.console.master import ConsoleMaster

        base, make_parser = ConsoleMaster, cmdline.mitmproxy
    else:
        raise ValueError(f"tool must be mitmdump, mitmweb or mitmproxy, not {tool!r}")

    class WithExpectCT(base):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            # Registered now, so that its options exist for --set, config.yaml and --options;
            # put in the addon chain only in run(), once all of them are applied, so that its
            # first configure sees every option (as a -s script's does), not only the first
            # keys the command line happens to change.
            self.expect_ct = self.addons.register(ExpectCT())

        async def run(self) -> None:
            # Placed where -s scripts run (right after the script loader, before save,
            # tlsconfig and the rest): hooks see flows in the same order either way.
            manager = self.addons
            loader = manager.get("scriptloader")
            index = manager.chain.index(loader) + 1 if loader in manager.chain else 0
            manager.chain.insert(index, self.expect_ct)
            # An option error is logged as one line; mitmproxy's errorcheck (in run) then
            # exits non-zero before the proxy serves anything.
            manager.invoke_addon_sync(self.expect_ct, hooks.ConfigureHook(set(self.options.keys())))
            await super().run()

    mitmproxy_main.run(WithExpectCT, make_parser, list(arguments), extra)
