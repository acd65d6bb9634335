"""Per-connection state: what the addon learned about each upstream TLS connection, kept in
the addon's own bounded maps (flow metadata is for users, not a channel between hooks)."""

from __future__ import annotations

import dataclasses
import datetime
from typing import Any

from cryptography import x509
from mitmproxy import connection
from mitmproxy import http
from mitmproxy.net.http import url

from expect_ct import cache
from expect_ct import chain as chainmod
from expect_ct import engine as enginemod
from expect_ct import policy as policymod
from expect_ct import store as storemod
from expect_ct import tls as tlsmod

# Bounded: a long-running proxy sees unbounded numbers of connections and hosts.
RECENT_CONNECTIONS = 1024
PENDING_AUTHORITIES = 64  # per client connection: HTTP/2 streams racing a lazy handshake


@dataclasses.dataclass
class ConnectionRecord:
    """What the addon learned about one upstream TLS connection."""

    host: str
    port: int
    served_chain: tuple[x509.Certificate, ...]
    evaluation: enginemod.Evaluation
    handshake: tlsmod.HandshakeSCTs
    evaluated_at: datetime.datetime
    known_host: storemod.KnownHost | None = None
    blocked: str | None = None  # why the connection was refused, if it was
    would_block: str | None = None  # why it would have been refused (blocking suspended)
    reported: bool = False
    logged: bool = False
    # Judged only in the response hook (no handshake decision ran): a block is not a refusal.
    decided_late: bool = False
    # The handshake's SCT data as flow metadata (base64), built once and shared by its flows.
    handshake_meta: dict[str, str | None] | None = None
    # The Expect-CT field values last processed on this connection, when, the result, and
    # the header generation it belongs to (see headers.HeaderHandling).
    last_header: tuple[list[str], float, dict[str, Any], int] | None = None

    @property
    def tls_version(self) -> str | None:
        return self.handshake.tls_version

    @property
    def chain(self) -> chainmod.ChainResult:
        return self.evaluation.chain

    @property
    def verdict(self) -> policymod.Verdict:
        return self.evaluation.verdict

    @property
    def event(self) -> dict[str, Any]:
        return self.evaluation.event

    @property
    def event_json(self) -> str:
        return self.evaluation.event_json

    @property
    def exempt(self) -> bool:
        return self.evaluation.exempt

    def summary(self) -> str:
        return self.evaluation.summary


class Connections:
    """Records by upstream connection id: live ones, refused ones, recently closed ones."""

    def __init__(self) -> None:
        self.live: dict[str, ConnectionRecord] = {}
        self.aborted: cache.BoundedMap[str, ConnectionRecord] = cache.BoundedMap(RECENT_CONNECTIONS)
        # Lazy strategy: a flow whose upstream handshake failed keeps its placeholder
        # server_conn, so its error hook finds the refused connection by client connection.
        self.aborted_by_client: cache.BoundedMap[str, ConnectionRecord] = cache.BoundedMap(
            RECENT_CONNECTIONS
        )
        # Recently closed upstream connections: the response hook can run after
        # server_disconnected (mitmproxy 11, `Connection: close`), and must not re-evaluate.
        self.closed: cache.BoundedMap[str, ConnectionRecord] = cache.BoundedMap(RECENT_CONNECTIONS)
        # Lazy strategy: per client connection, the names (Host / :authority) of its requests
        # waiting for an upstream connection (by flow id), and each upstream's client.
        self.pending_authorities: cache.BoundedMap[str, dict[str, str]] = cache.BoundedMap(
            RECENT_CONNECTIONS
        )
        self.client_of: cache.BoundedMap[str, str] = cache.BoundedMap(RECENT_CONNECTIONS)
        # The latest connection per host, for expectct.testreport's body.
        self.last_seen: cache.BoundedMap[str, ConnectionRecord] = cache.BoundedMap(
            RECENT_CONNECTIONS
        )

    def expect_authority(self, client_id: str, flow_id: str, host: str) -> None:
        """A request naming ``host`` waits for a (lazy) upstream connection of ``client_id``;
        mitmproxy makes that connection after the request hook, so only the client links them."""
        waiting = self.pending_authorities.get(client_id)
        if waiting is None:
            self.pending_authorities.put(client_id, {flow_id: host})
        elif len(waiting) < PENDING_AUTHORITIES:
            waiting[flow_id] = host

    def answered(self, client_id: str, flow_id: str) -> None:
        """The request is done (response or error): its name no longer waits."""
        waiting = self.pending_authorities.get(client_id)
        if waiting is not None:
            waiting.pop(flow_id, None)

    def waiting_authorities(self, server_id: str) -> set[str]:
        """The names the requests waiting for this upstream connection's client carry."""
        client_id = self.client_of.get(server_id)
        waiting = self.pending_authorities.get(client_id) if client_id is not None else None
        return set(waiting.values()) if waiting else set()

    def find(self, server_id: str) -> ConnectionRecord | None:
        return self.live.get(server_id) or self.aborted.get(server_id) or self.closed.get(server_id)

    def refused(self, server_id: str, client_id: str) -> None:
        record = self.live.pop(server_id, None)
        if record is not None and record.blocked is not None:
            self.aborted.put(server_id, record)
            self.aborted_by_client.put(client_id, record)

    def disconnected(self, server_id: str) -> None:
        record = self.live.pop(server_id, None)
        if record is not None:
            self.closed.put(server_id, record)

    def refused_for_flow(self, flow: http.HTTPFlow) -> ConnectionRecord | None:
        record = self.aborted.get(flow.server_conn.id)
        if record is None:
            # Lazy strategy: the connection that failed never became flow.server_conn.
            candidate = self.aborted_by_client.get(flow.client_conn.id)
            if candidate is not None and candidate.host == request_host(flow):
                record = candidate
        return record


def server_identity(server: connection.Server) -> tuple[str, int]:
    address = server.address or ("", 0)
    return storemod.host_key(server.sni or str(address[0])), int(address[1])


def request_host(flow: http.HTTPFlow) -> str:
    """The flow's upstream host name as server_identity() spells it."""
    return storemod.host_key(flow.server_conn.sni or flow.request.host)


def request_authority(flow: http.HTTPFlow) -> str:
    """The host the request itself names (Host / :authority), as server_identity() spells
    it: a request may ride a connection opened for another name (issue 17, attack 3)."""
    authority = flow.request.host_header
    if authority:
        try:
            host = url.parse_authority(authority, check=False)[0]
        except ValueError:
            host = flow.request.host
    else:
        host = flow.request.host
    return storemod.host_key(host)
