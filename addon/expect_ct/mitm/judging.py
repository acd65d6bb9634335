"""Judging upstream connections: evaluate, decide, record (the addon's per-connection path).

Once per upstream connection the judge evaluates the CT policy (the engine caches by
certificate and handshake data), decides whether the connection must be refused (in the
handshake where the capture allows, else at the first flow), fails closed for hosts that
require enforcement when it cannot decide, and logs, counts and reports what it saw.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from collections.abc import Sequence

from cryptography import x509
from mitmproxy import connection
from mitmproxy import ctx
from mitmproxy import http

from expect_ct import decisions
from expect_ct import engine as enginemod
from expect_ct import records
from expect_ct import store as storemod
from expect_ct import tls as tlsmod
from expect_ct.mitm.annotate import META_KEY
from expect_ct.mitm.annotate import Annotator
from expect_ct.mitm.connections import ConnectionRecord
from expect_ct.mitm.connections import Connections
from expect_ct.mitm.connections import server_identity
from expect_ct.mitm.enforcement import Refusals
from expect_ct.mitm.faults import Faults
from expect_ct.mitm.knownhosts import KnownHosts
from expect_ct.mitm.reporting import Reporting

logger = logging.getLogger("expect_ct")

HOSTS_SEEN_LIMIT = 100_000  # for the shutdown summary only


class Judge:
    """The verdict on each upstream connection, and what follows from it."""

    def __init__(
        self,
        faults: Faults,
        known_hosts: KnownHosts,
        reporting: Reporting,
        connections: Connections,
        refusals: Refusals,
        annotator: Annotator,
        *,
        engine: Callable[[], enginemod.Engine | None],
        stale: Callable[[], bool],
    ) -> None:
        self.faults = faults
        self.known_hosts = known_hosts
        self.reporting = reporting
        self.connections = connections
        self.refusals = refusals
        self.annotator = annotator
        # The addon replaces its engine on every reconfiguration and log-list swap.
        self._engine = engine
        self._log_list_stale = stale
        self.hosts_seen: set[str] = set()

    def evaluate(
        self,
        host: str,
        port: int,
        served: Sequence[x509.Certificate],
        handshake: tlsmod.HandshakeSCTs,
    ) -> ConnectionRecord:
        engine = self._engine()
        assert engine is not None
        evaluation = engine.evaluate(
            host,
            served,
            tls_extension=handshake.tls_extension,
            ocsp_response=handshake.ocsp_response,
            captured=handshake.captured,
            tls_version=handshake.tls_version,
            chain_der=handshake.chain_der if served is handshake.chain else (),
            verified_chain=handshake.verified_chain,
        )
        record = ConnectionRecord(
            host=host,
            port=port,
            served_chain=tuple(served),
            evaluation=evaluation,
            handshake=handshake,
            evaluated_at=enginemod.utcnow(),
        )
        # Compliant connections skip the store read and are never refused because the
        # store cannot be read.
        if self.known_hosts.store is not None and decisions.needs_known_host(
            chain=evaluation.chain.kind, compliant=evaluation.verdict.compliant
        ):
            record.known_host = self.known_hosts.lookup(host)
        return record

    def block_reason(self, record: ConnectionRecord) -> str | None:
        return decisions.block_reason(
            mode=ctx.options.expect_ct_enforce,
            host=record.host,
            chain=record.chain.kind,
            verdict=record.verdict,
            known=record.known_host,
        )

    def decide(self, server: connection.Server, handshake: tlsmod.HandshakeSCTs) -> bool:
        """Called by the handshake capture once per upstream handshake; False aborts it."""
        host, port = server_identity(server)
        try:
            if handshake.leaf_error is not None:
                return not self.refusals.unreadable_leaf(
                    host, port, handshake.leaf_error, mode=ctx.options.expect_ct_enforce
                )
            record = self.evaluate(host, port, handshake.chain, handshake)
        except Exception as e:  # noqa: BLE001 - must never escape into OpenSSL
            return not self.undecided(host, port, e)
        self.connections.live[server.id] = record
        self.settle(record)
        if record.blocked is None:
            # Lazy strategy: requests already waiting for this connection may name other hosts.
            self.refusals.check_waiting_requests(
                server.id, record, mode=ctx.options.expect_ct_enforce
            )
        return record.blocked is None

    def decide_quic(self, server: connection.Server, handshake: tlsmod.HandshakeSCTs) -> str | None:
        """The QUIC handshake's decision point (quic.py): why to refuse, or None."""
        if self.decide(server, handshake):
            return None
        record = self.connections.live.get(server.id)
        if record is not None and record.blocked is not None:
            return record.blocked
        return "the connection cannot be checked and the host requires enforcement"

    def undecided(self, host: str, port: int, error: Exception) -> bool:
        """Evaluation failed: log it and return True if the connection must be refused."""
        if not isinstance(error, storemod.StoreError):  # store faults are logged by lookup
            self.faults.internal_error("evaluating an upstream connection", error)
        closed = self.must_fail_closed(host)
        if closed:
            self.faults.stats["blocked"] += 1
            logger.warning(
                f"Expect-CT: blocked {host}:{port}: cannot evaluate the connection "
                f"({type(error).__name__}: {error}) and the host may be a Known Expect-CT Host "
                f"with enforce: failing closed."
            )
        return closed

    def settle(self, record: ConnectionRecord) -> None:
        """after_evaluation; an internal error there never lets a required block through."""
        try:
            self.after_evaluation(record)
        except Exception as e:  # noqa: BLE001
            self.faults.internal_error("recording an upstream connection", e)
            if (
                record.blocked is None
                and not record.verdict.compliant
                and not record.exempt
                and self.must_fail_closed(record.host)
            ):
                record.blocked = (
                    f"{record.host} is a Known Expect-CT Host with enforce, the connection is not "
                    f"CT-compliant, and an internal error ({type(e).__name__}) occurred: "
                    "failing closed"
                )

    def must_fail_closed(self, host: str) -> bool:
        """When the addon cannot decide, a host known to require enforcement stays blocked."""
        if ctx.options.expect_ct_enforce == "off" or self._log_list_stale():
            return False
        return self.known_hosts.may_require_enforcement(host)

    def after_evaluation(self, record: ConnectionRecord) -> None:
        reason = self.block_reason(record)
        if reason is not None:
            if self._log_list_stale():
                record.would_block = reason
                logger.warning(
                    f"Expect-CT: NOT blocking {record.host}:{record.port} although {reason}: the log "
                    f"list is older than expect_ct_log_list_max_age days, blocking is suspended."
                )
            else:
                record.blocked = reason
        self.log_connection(record)
        if record.blocked is not None and record.decided_late:
            self.refusals.enforcement_failed(
                record.host,
                record.port,
                record.blocked,
                "judged only after the request reached the server (its handshake was not "
                "seen); the response is withheld",
            )
        elif record.blocked is not None:
            self.faults.stats["blocked"] += 1
            logger.warning(f"Expect-CT: blocked {record.host}:{record.port}: {record.blocked}")
            self.reporting.write_event(
                "blocked",
                record.host,
                record.port,
                reason=record.blocked,
                known_host=records.known_host_record(record.known_host, last_observed=False)
                if record.known_host is not None
                else None,
            )
        self.connections.last_seen.put(record.host, record)
        due = decisions.known_host_report(
            known=record.known_host,
            chain=record.chain.kind,
            compliant=record.verdict.compliant,
            reported=record.reported,
        )
        if due is not None:
            self.reporting.report(record, due, stale=self._log_list_stale())

    def log_connection(self, record: ConnectionRecord) -> None:
        if record.logged:
            return
        record.logged = True
        self.faults.stats["connections"] += 1
        if len(self.hosts_seen) < HOSTS_SEEN_LIMIT:
            self.hosts_seen.add(record.host)
        self.faults.stats[
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
            self.faults.info_unless_repeated(line)
        self.reporting.write_connection(record)

    def reevaluate(self, flow: http.HTTPFlow) -> ConnectionRecord:
        """A saved flow judged again under the current settings, with the handshake SCTs its
        metadata kept (expectct.check); its metadata, comment and marker are replaced."""
        previous = flow.metadata.get(META_KEY) or {}
        stored = previous.get("handshake") or {}
        served = tuple(records.to_cryptography(c) for c in flow.server_conn.certificate_list)
        handshake = tlsmod.HandshakeSCTs(
            captured=bool(stored),
            tls_extension=records.unb64(stored.get("tls_extension")),
            tls_extension_where=None,
            ocsp_response=records.unb64(stored.get("ocsp_response")),
            tls_version=flow.server_conn.tls_version,
            chain=served,
        )
        host, port = server_identity(flow.server_conn)
        record = self.evaluate(host, port, served, handshake)
        self.annotator.annotate(flow, record, again=True)
        return record

    def record_for_flow(
        self, flow: http.HTTPFlow, *, late: bool = False
    ) -> ConnectionRecord | None:
        # HTTP/3 upstreams never pass through the TLS hooks (aioquic does the handshake): their
        # connection is evaluated here, from the embedded SCTs, when its first flow arrives.
        server = flow.server_conn
        record = self.connections.find(server.id)
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
        record = self.evaluate(host, port, served, handshake)
        # From the response hook: the request already reached the server, nothing is refused.
        record.decided_late = late
        self.connections.live[server.id] = record
        self.settle(record)
        return record
