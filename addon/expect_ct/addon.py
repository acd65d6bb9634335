"""The mitmproxy addon: hooks wiring the engine and the pure core to the proxy.

Per upstream TLS connection (not per flow) the addon collects the certificate's SCTs from
all three delivery paths, classifies the chain, evaluates the CT policy once (the engine
caches by certificate and handshake data), and decides during the upstream handshake whether
the connection must be refused. Per response it processes the Expect-CT header (RFC 9163
2.3) and records everything on the flow, in mitmproxy's event log and in the JSON-lines log.

The parts live in expect_ct.mitm: options, connections, judging (the per-connection
evaluation and decision), headers, reporting, annotate, commands (registered in load),
export, faults, inputs, knownhosts and launch.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
from typing import Any

from mitmproxy import connection
from mitmproxy import ctx
from mitmproxy import exceptions
from mitmproxy import http
from mitmproxy import tls as mtls

from expect_ct import cache
from expect_ct import chain as chainmod
from expect_ct import engine as enginemod
from expect_ct import loglist as loglistmod
from expect_ct import quic as quicmod
from expect_ct import records
from expect_ct import report as reportmod
from expect_ct import store as storemod
from expect_ct import tls as tlsmod
from expect_ct.contentview import CTContentview
from expect_ct.mitm import inputs
from expect_ct.mitm import options as optionsmod
from expect_ct.mitm.annotate import Annotator
from expect_ct.mitm.commands import Commands
from expect_ct.mitm.connections import ConnectionRecord
from expect_ct.mitm.connections import Connections
from expect_ct.mitm.connections import request_authority
from expect_ct.mitm.connections import request_host
from expect_ct.mitm.connections import server_identity
from expect_ct.mitm.enforcement import Refusals
from expect_ct.mitm.faults import Faults
from expect_ct.mitm.headers import HeaderHandling
from expect_ct.mitm.headers import expect_ct_values
from expect_ct.mitm.judging import HOSTS_SEEN_LIMIT
from expect_ct.mitm.judging import Judge
from expect_ct.mitm.knownhosts import KnownHosts
from expect_ct.mitm.loglists import LogLists
from expect_ct.mitm.loglists import event_address
from expect_ct.mitm.reporting import Reporting

logger = logging.getLogger("expect_ct")


class ExpectCT:
    """Certificate Transparency checks and Expect-CT enforcement for upstream connections."""

    def __init__(self) -> None:
        self.capture = tlsmod.HandshakeCapture()
        self.quic_capture = quicmod.QuicCapture()
        self.faults = Faults()
        self.known_hosts = KnownHosts(self.faults)
        self.reporting = Reporting(self.faults, claim=self.known_hosts.claim_report)
        self.connections = Connections()
        self.annotator = Annotator()
        self.headers = HeaderHandling(
            self.faults, self.known_hosts, self.reporting, stale=self._log_list_stale
        )
        self.refusals = Refusals(
            self.faults,
            self.known_hosts,
            self.reporting,
            self.connections,
            stale=self._log_list_stale,
        )
        self.judge = Judge(
            self.faults,
            self.known_hosts,
            self.reporting,
            self.connections,
            self.refusals,
            self.annotator,
            engine=lambda: self.engine,
            stale=self._log_list_stale,
        )
        # The commands and the contentview come with the addon on every launch path (-s and
        # built in). They are not sub-addons (self.addons): mitmproxy walks an addon's
        # sub-addons for every event of every flow, eight per keep-alive request, although
        # neither has a hook; load() registers them and done() removes the view.
        self.commands = Commands(self)
        self.contentview = CTContentview()
        self.loaded_log_list: enginemod.LoadedLogList | None = None
        self.classifier: chainmod.ChainClassifier | None = None
        self.engine: enginemod.Engine | None = None
        self.verdicts = cache.VerdictCache(enginemod.VERDICT_CACHE_SIZE)
        self.log_lists = LogLists(on_swap=self._log_list_swapped, write_event=self._log_list_event)
        # (expect_ct_dialect, expect_ct_max_age_cap), read in configure: every response with
        # an Expect-CT header needs them, and each ctx.options read costs a dict walk.
        self._header_options: tuple[str, int] | None = None
        # Until one configure has succeeded, every configure sets up everything (see configure).
        self.configured = False

    # Shortcuts to the parts (the summary, tests and other addons read them).

    @property
    def stats(self) -> collections.Counter[str]:
        return self.faults.stats

    @property
    def store(self) -> storemod.HostStore | None:
        return self.known_hosts.store

    @property
    def sender(self) -> reportmod.ReportSender | None:
        return self.reporting.sender

    @property
    def log_list(self) -> loglistmod.LogList | None:
        return self.loaded_log_list.log_list if self.loaded_log_list is not None else None

    # ------------------------------------------------------------------ options

    def load(self, loader: Any) -> None:
        optionsmod.add_options(loader)
        # What AddonManager.register does for each sub-addon (commands are never removed).
        loader.master.commands.collect_commands(self.commands)
        self.contentview.load(loader)
        problem = self.capture.install(self.judge.decide)
        if problem:
            logger.warning(
                f"Expect-CT: SCTs from the TLS extension and stapled OCSP cannot be captured "
                f"({problem}); only embedded SCTs are checked."
            )
        problem = self.quic_capture.install(self.judge.decide_quic)
        if problem:
            logger.warning(
                f"Expect-CT: QUIC upstreams cannot be refused in the handshake ({problem})."
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
        optionsmod.check_values(opts, updated)
        if {"expect_ct_dialect", "expect_ct_max_age_cap"} & updated:
            self._header_options = (opts.expect_ct_dialect, opts.expect_ct_max_age_cap)
        if optionsmod.LOG_LIST_OPTIONS & updated:
            self._configure_log_list()
        if optionsmod.LOG_LIST_UPDATE_OPTIONS & updated:
            self.log_lists.check_update_options(opts)
        if {"expect_ct_log_list_max_age", "expect_ct_policy"} & updated:
            self.log_lists.limits_changed(opts)
        if optionsmod.ROOTS_OPTIONS & updated:
            self._configure_roots()
        if optionsmod.STORE_OPTIONS & updated:
            self.known_hosts.open(opts)
        if "expect_ct_log" in updated:
            self.reporting.open_event_log(opts.expect_ct_log)
        if optionsmod.REPORT_OPTIONS & updated:
            self._configure_reports()
        if optionsmod.ENGINE_OPTIONS & updated:
            # Keyed by id(log list): a freshly loaded list may reuse a freed list's id.
            if updated & (
                optionsmod.LOG_LIST_OPTIONS | {"expect_ct_policy", "expect_ct_public_roots"}
            ):
                self.verdicts.clear()
            self._configure_engine()
        if self.configured and (optionsmod.LOG_LIST_UPDATE_OPTIONS | {"confdir"}) & updated:
            self.log_lists.restart(opts)

    def _configure_log_list(self) -> None:
        self.loaded_log_list = inputs.load_log_list(ctx.options, self.log_lists)

    def _log_list_swapped(self, changed: bool) -> None:
        """A refreshed list is in force (on the event loop): new connections are judged by
        it at once; verdicts made with the old list are dropped."""
        self.loaded_log_list = self.log_lists.loaded
        if changed:
            self.verdicts.clear()
        self._configure_engine()  # a new engine: its evaluation memo starts empty

    def _log_list_event(self, fields: dict[str, Any]) -> None:
        host, port = event_address(str(fields.get("source") or ""))
        self.reporting.write_event("log_list", host, port, **fields)

    def _configure_roots(self) -> None:
        self.classifier = inputs.load_classifier(ctx.options)

    def _configure_engine(self) -> None:
        if self.loaded_log_list is None or self.classifier is None:
            return
        self.engine = enginemod.Engine(
            self.loaded_log_list,
            self.classifier,
            ctx.options.expect_ct_policy,
            verdicts=self.verdicts,
        )

    def _configure_reports(self) -> None:
        opts = ctx.options
        self.reporting.start_sender(
            send=opts.expect_ct_reports == "send",
            allow_private=opts.expect_ct_report_allow_private,
            cafile=opts.ssl_verify_upstream_trusted_ca,
            forbidden=self._proxy_addresses(),
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
        if self.reporting.sender is not None:
            self._configure_reports()
        if self.configured:
            # In the background: never delays start-up or a connection.
            self.log_lists.start(ctx.options, self._proxy_addresses())

    def done(self) -> None:
        self.log_lists.stop()
        self.contentview.done()
        self.capture.uninstall()
        self.quic_capture.uninstall()
        if self.stats["connections"]:
            logger.info(self.summary())
        self.reporting.close()
        self.known_hosts.close()

    def summary(self) -> str:
        """The shutdown summary table (headless runs read it at the end of mitmdump's output)."""
        hosts = len(self.judge.hosts_seen)
        return self.faults.summary(f"{hosts}{'+' if hosts >= HOSTS_SEEN_LIMIT else ''}")

    # ---------------------------------------------------------------- log list

    def _log_list_stale(self) -> bool:
        if self.loaded_log_list is None:
            return False
        return self.log_lists.stale(ctx.options)

    # ------------------------------------------------------------------ hooks

    def tls_start_server(self, data: mtls.TlsData) -> None:
        self.connections.client_of.put(data.conn.id, data.context.client.id)
        self.capture.tls_start_server(data)

    def quic_start_server(self, data: Any) -> None:
        self.connections.client_of.put(data.conn.id, data.context.client.id)
        self.quic_capture.quic_start_server(data, ctx.master.addons.get("tlsconfig"))

    def tls_established_server(self, data: mtls.TlsData) -> None:
        try:
            self._tls_established_server(data)
        except Exception as e:  # noqa: BLE001 - fail closed for hosts that require it
            server = data.conn
            if isinstance(server, connection.Server):
                host, port = server_identity(server)
                if self.judge.undecided(host, port, e):
                    server.error = (
                        f"Blocked by Expect-CT: the connection to {host} cannot be evaluated and "
                        "the host may be a Known Expect-CT Host with enforce: failing closed"
                    )

    def _tls_established_server(self, data: mtls.TlsData) -> None:
        server = data.conn
        if not isinstance(server, connection.Server) or server.id in self.connections.live:
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
        record = self.judge.evaluate(host, port, served, handshake)
        self.connections.live[server.id] = record
        self.judge.settle(record)
        if record.blocked is not None:
            # Refuse the connection before any request uses it (eager strategy: effective; lazy:
            # the request hook already ran, see README).
            server.error = f"Blocked by Expect-CT: {record.blocked}"
            # Decided only after the handshake (no in-handshake decision point for this
            # connection): a request already waiting for it may have been sent. Say so.
            self.refusals.enforcement_failed(
                host,
                port,
                record.blocked,
                "judged only after the upstream handshake completed; a request already "
                "waiting for the connection (connection_strategy=lazy) may have reached it",
            )

    def tls_failed_server(self, data: mtls.TlsData) -> None:
        self.connections.refused(data.conn.id, data.context.client.id)

    def server_disconnected(self, data: Any) -> None:
        self.connections.disconnected(data.server.id)

    def _annotate(self, flow: http.HTTPFlow, record: ConnectionRecord) -> None:
        self.annotator.annotate(flow, record)

    def request(self, flow: http.HTTPFlow) -> None:
        try:
            self._request(flow)
        except Exception as e:  # noqa: BLE001 - mitmproxy would log it for every flow
            self.faults.internal_error("in the request hook", e)
            self._fail_closed_flow(flow, e)
        # Recording only (it changes no decision): an internal error here fails open.
        try:
            self._request_header(flow)
        except Exception as e:  # noqa: BLE001
            self.faults.internal_error("recording a request's Expect-CT header", e)

    def _request_header(self, flow: http.HTTPFlow) -> None:
        """A client's Expect-CT request header: recorded on the flow and in the logs."""
        values = expect_ct_values(flow.request.headers)
        if not values:
            return
        record = self.connections.find(flow.server_conn.id)
        meta = self.headers.process_request(
            flow, values, record, dialect=ctx.options.expect_ct_dialect
        )
        self.annotator.request_header(flow, meta)

    def _fail_closed_flow(self, flow: http.HTTPFlow, error: Exception) -> None:
        """After an internal error: answer 502 if the host requires enforcement, else pass."""
        if flow.response is not None or not flow.live or flow.request.scheme != "https":
            return
        record = self.connections.find(flow.server_conn.id)
        host = request_host(flow)
        if record is not None and record.blocked is not None:
            reason = record.blocked
        elif record is not None and (record.verdict.compliant or record.exempt):
            return  # nothing to enforce on this connection
        elif self.judge.must_fail_closed(host):
            reason = (
                f"{host} may be a Known Expect-CT Host with enforce and an internal error "
                f"({type(error).__name__}) left the connection unchecked: failing closed"
            )
        else:
            return
        self.stats["blocked"] += 1
        self._answer_blocked(flow, f"Host: {host}\nReason: {reason}\n")
        self.annotator.blocked(flow, reason, response=True, summary=None)

    def _answer_blocked(self, flow: http.HTTPFlow, details: str) -> None:
        body = f"Blocked by mitmproxy-expect-ct.\n\n{details}"
        flow.response = http.Response.make(
            502, body.encode(), {"Content-Type": "text/plain; charset=utf-8"}
        )

    def _request(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None or not flow.live:
            return
        if flow.request.scheme != "https":
            return
        record = self.judge.record_for_flow(flow)
        authority = request_authority(flow)
        if record is None:
            if not flow.server_conn.connected:
                # Lazy strategy: the connection opens after this hook; its handshake decision
                # also judges the names its waiting requests carry.
                self.connections.expect_authority(flow.client_conn.id, flow.id, authority)
            return
        self._annotate(flow, record)
        if record.blocked is None and authority != record.host:
            reason = self.refusals.for_authority(
                authority, record, mode=ctx.options.expect_ct_enforce
            )
            if reason is not None:
                self.refusals.blocked(authority, flow.request.port, reason, connection=record.host)
                self._answer_blocked(
                    flow,
                    f"Host: {authority}\nPolicy: {record.verdict.policy}\nReason: {reason}\n",
                )
                self.annotator.blocked(flow, reason, response=True, summary=record.summary())
                return
        if record.blocked is not None:
            self._answer_blocked(
                flow,
                f"Host: {record.host}:{record.port}\n"
                f"Policy: {record.verdict.policy}\n"
                f"Reason: {record.blocked}\n",
            )
            self.annotator.blocked(flow, record.blocked, response=True, summary=record.summary())

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        self.connections.answered(flow.client_conn.id, flow.id)

    def response(self, flow: http.HTTPFlow) -> None:
        # The upstream connection was already accepted (the decision is made in the handshake
        # and the request hook): an internal error here fails open, logged once.
        try:
            self._response(flow)
        except Exception as e:  # noqa: BLE001
            self.faults.internal_error("in the response hook", e)

    def _response(self, flow: http.HTTPFlow) -> None:
        if self.annotator.answered(flow):
            return
        assert flow.response is not None
        values = expect_ct_values(flow.response.headers)
        record = None
        if flow.request.scheme == "https":
            record = self.judge.record_for_flow(flow, late=True)
            if record is not None:
                self._annotate(flow, record)
                if record.blocked is not None and record.decided_late:
                    # Too late to keep the request from the server; the client at least does
                    # not get what a non-compliant server answered.
                    self._answer_blocked(
                        flow,
                        f"Host: {record.host}:{record.port}\nReason: {record.blocked}\n"
                        "Note: the request had already reached the server.\n",
                    )
                    return
        if not values:
            return
        self.annotator.header(flow, self._process_header(flow, values, record))

    def _process_header(
        self, flow: http.HTTPFlow, values: list[str], record: ConnectionRecord | None
    ) -> dict[str, Any]:
        dialect, max_age_cap = self._header_options or (
            ctx.options.expect_ct_dialect,
            ctx.options.expect_ct_max_age_cap,
        )
        return self.headers.process(flow, values, record, dialect=dialect, max_age_cap=max_age_cap)

    def error(self, flow: http.HTTPFlow) -> None:
        self.connections.answered(flow.client_conn.id, flow.id)
        try:
            self._error(flow)
        except Exception as e:  # noqa: BLE001 - annotation only; the flow already failed
            self.faults.internal_error("in the error hook", e)

    def _error(self, flow: http.HTTPFlow) -> None:
        record = self.connections.refused_for_flow(flow)
        if record is not None and record.blocked is not None:
            self._annotate(flow, record)
            self.annotator.blocked(flow, record.blocked, response=False, summary=record.summary())
