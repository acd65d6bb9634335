"""Refusals beyond the connection's own verdict (issue 17), and honest records of them.

* A request may name (Host / ``:authority``) another host than the one its upstream
  connection was opened and judged for: the connection is judged again under that name.
* A served leaf that cannot be parsed is refused where enforcement applies.
* ``blocked`` is written only for traffic that really was refused; a refusal decided too late
  to stop the request is an ``enforcement_failed`` record and a WARNING.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from expect_ct import decisions
from expect_ct.mitm.connections import ConnectionRecord
from expect_ct.mitm.connections import Connections
from expect_ct.mitm.faults import Faults
from expect_ct.mitm.knownhosts import KnownHosts
from expect_ct.mitm.reporting import Reporting

logger = logging.getLogger("expect_ct")


class Refusals:
    def __init__(
        self,
        faults: Faults,
        known_hosts: KnownHosts,
        reporting: Reporting,
        connections: Connections,
        *,
        stale: Callable[[], bool],
    ) -> None:
        self.faults = faults
        self.known_hosts = known_hosts
        self.reporting = reporting
        self.connections = connections
        self.stale = stale

    def blocked(self, host: str, port: int, reason: str, **fields: Any) -> None:
        """The ``blocked`` record: only for traffic that really was refused."""
        self.faults.stats["blocked"] += 1
        logger.warning(f"Expect-CT: blocked {host}:{port}: {reason}")
        self.reporting.write_event("blocked", host, port, reason=reason, **fields)

    def enforcement_failed(self, host: str, port: int, reason: str, detail: str) -> None:
        """A refusal decided too late to keep every request from the server: say so, loudly."""
        self.faults.stats["enforcement_failed"] += 1
        logger.warning(f"Expect-CT: enforcement FAILED for {host}:{port}: {detail}: {reason}")
        self.reporting.write_event("enforcement_failed", host, port, reason=reason, detail=detail)

    def _known(self, host: str) -> Any:
        return self.known_hosts.lookup(host) if self.known_hosts.store is not None else None

    def unreadable_leaf(self, host: str, port: int, why: str, *, mode: str) -> bool:
        """The served leaf cannot be parsed: nothing about its SCTs can be known. Refuse in
        ``all`` mode and for Known enforce hosts (records it); True means refuse."""
        reason = None
        if mode != "off" and not self.stale():
            known = self._known(host)
            if known is not None and known.enforce:
                reason = f"{host} is a Known Expect-CT Host with enforce and {why}"
            elif mode == "all":
                reason = f"{why}: its SCTs cannot be checked (expect_ct_enforce=all)"
        if reason is None:
            logger.warning(f"Expect-CT: {host}:{port}: {why}; not checked")
            return False
        self.blocked(host, port, reason)
        return True

    def for_authority(self, host: str, record: ConnectionRecord, *, mode: str) -> str | None:
        """Why a request naming ``host`` must not use the connection ``record`` describes
        (opened and judged for another name), or None (issue 17, attack 3)."""
        if record.verdict.compliant or record.exempt or self.stale():
            return None
        reason = decisions.block_reason(
            mode=mode,
            host=host,
            chain=record.chain.kind,
            verdict=record.verdict,
            known=self._known(host),
        )
        if reason is None:
            return None
        return f"{reason} (the request names {host} on a connection opened for {record.host})"

    def check_waiting_requests(
        self, server_id: str, record: ConnectionRecord, *, mode: str
    ) -> None:
        """Lazy strategy: the requests waiting for this connection may name other hosts; one
        that must not use it refuses the connection (``record.blocked``) and is recorded."""
        for host in sorted(self.connections.waiting_authorities(server_id)):
            if host == record.host:
                continue
            reason = self.for_authority(host, record, mode=mode)
            if reason is not None:
                record.blocked = reason
                self.blocked(host, record.port, reason, connection=record.host)
                return
