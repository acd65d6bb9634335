"""The Expect-CT header (RFC 9163 2.3): a response's is parsed, applied to the Known Expect-CT
Hosts store as decisions.py says, logged, and reported when a report is due; a request's (a
client signalling CT support) is parsed with the same grammar and recorded, never applied."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from typing import Any

from mitmproxy import http
from mitmproxy.net.http import url

from expect_ct import cache
from expect_ct import decisions
from expect_ct import records
from expect_ct import store as storemod
from expect_ct.mitm.connections import ConnectionRecord
from expect_ct.mitm.faults import Faults
from expect_ct.mitm.knownhosts import KnownHosts
from expect_ct.mitm.reporting import Reporting

logger = logging.getLogger("expect_ct")

HEADER_REFRESH = 60.0  # seconds
HEADER_MEMO_SIZE = 1024

HeaderMemoKey = tuple[str, int, tuple[str, ...], int, str]
RequestMemoKey = tuple[str, int, tuple[str, ...], str]

# The action and why of every request header: RFC 9163 defines the header for responses only.
REQUEST_WHY = "sent by the client; a request header never changes the Known Expect-CT Hosts"

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


def pending_why(error: storemod.StoreUnavailable) -> str:
    """The ``why`` of a header whose store write is queued while the database is away."""
    would = f" (would be {error.action})" if error.action and error.action != "ignored" else ""
    return (
        f"pending{would}: the Known Expect-CT Hosts database cannot be reached; the change "
        "is enforced by this proxy now and written to the database when it is back"
    )


class HeaderHandling:
    def __init__(
        self,
        faults: Faults,
        known_hosts: KnownHosts,
        reporting: Reporting,
        *,
        stale: Callable[[], bool],
    ) -> None:
        self.faults = faults
        self.known_hosts = known_hosts
        self.reporting = reporting
        self.stale = stale
        # Sites send the same header on every response: process it (store write, log line)
        # once a minute per host and connection verdict, not once per flow.
        self.memo: cache.BoundedMap[HeaderMemoKey, tuple[float, dict[str, Any]]] = cache.BoundedMap(
            HEADER_MEMO_SIZE
        )
        # Bumped when remembered headers must be processed again (the store was changed by a
        # command): per-connection memos of an older generation no longer count.
        self.generation = 0
        # A client sends the same request header on every request: recorded once a minute per
        # host and values, like a response header.
        self.request_memo: cache.BoundedMap[RequestMemoKey, tuple[float, dict[str, Any]]] = (
            cache.BoundedMap(HEADER_MEMO_SIZE)
        )

    def forget(self) -> None:
        self.memo.clear()
        self.generation += 1

    def process(
        self,
        flow: http.HTTPFlow,
        values: list[str],
        record: ConnectionRecord | None,
        *,
        dialect: str,
        max_age_cap: int,
    ) -> dict[str, Any]:
        """The ``header`` metadata of one response's Expect-CT field values."""
        if record is not None:
            # The name the upstream connection was made and judged under (SNI): the same
            # name a later connection is looked up by, also in reverse-proxy mode, where the
            # client's Host header names the proxy instead.
            host, port = record.host, record.port
        else:
            host, port = pretty_host(flow.request), flow.request.port
        # The stored expiry lags by at most HEADER_REFRESH seconds.
        memo_key: HeaderMemoKey | None = None
        if record is not None:
            # Responses on one connection repeat the header: compare with the connection's
            # last one before building and hashing the key of the shared memo.
            clock = time.monotonic()
            last = record.last_header
            seen: tuple[float, dict[str, Any]] | None = None
            if last is not None and last[0] == values and last[3] == self.generation:
                seen = (last[1], last[2])
            if seen is None or clock - seen[0] >= HEADER_REFRESH:
                memo_key = (host, port, tuple(values), id(record.verdict), record.chain.kind.value)
                seen = self.memo.get(memo_key)
            if seen is not None and clock - seen[0] < HEADER_REFRESH:
                self.faults.stats["header_repeats"] += 1
                # The memo skips re-parsing and logging, never the store refresh: every valid
                # header moves the expiry (RFC 9163 2.3.2.2), or a short max-age lapses while
                # the host keeps asking for it (issue 17, attack 7).
                self._refresh(host, seen[1])
                record.last_header = (values, seen[0], seen[1], self.generation)
                # The report is per connection (RFC 9163 2.3.3), not per memoised header.
                self._maybe_report(host, record, seen[1])
                return seen[1]
        # Undecodable bytes must not reach the metadata: a .mitm file cannot hold them.
        meta = {"direction": "response", **records.header_facts(values, dialect=dialect)}
        effect = self._effect(
            host, meta, record, secure=flow.request.scheme == "https", max_age_cap=max_age_cap
        )
        meta.update(action=effect.action, why=effect.why)
        self._maybe_report(host, record, meta)
        self.faults.stats[f"header_{effect.action}"] += 1
        safe_values = records.one_line(", ".join(values), 200)
        # one_line escapes like a string literal; repr() on top would double every backslash.
        text = f"Expect-CT: {host}:{port} header '{safe_values}': {effect.action} ({effect.why})"
        if meta["valid"]:
            logger.info(text)
        else:
            logger.warning(text)
        self.reporting.write_event("header", host, port, **meta)
        if memo_key is not None and record is not None:
            now = time.monotonic()
            self.memo.put(memo_key, (now, meta))
            record.last_header = (values, now, meta, self.generation)
        return meta

    def process_request(
        self,
        flow: http.HTTPFlow,
        values: list[str],
        record: ConnectionRecord | None,
        *,
        dialect: str,
    ) -> dict[str, Any]:
        """The ``request_header`` metadata of one request's Expect-CT field values: parsed,
        logged and written to the event log like a response header, never applied to the
        store (the client is not the site: it cannot make a host Known or forget one)."""
        if record is not None:
            host, port = record.host, record.port
        else:
            host, port = pretty_host(flow.request), flow.request.port
        key: RequestMemoKey = (host, port, tuple(values), dialect)
        clock = time.monotonic()
        seen = self.request_memo.get(key)
        if seen is not None and clock - seen[0] < HEADER_REFRESH:
            self.faults.stats["request_header_repeats"] += 1
            return seen[1]
        meta: dict[str, Any] = {
            "direction": "request",
            **records.header_facts(values, dialect=dialect),
            "action": decisions.IGNORED,
            "why": REQUEST_WHY,
        }
        self.faults.stats["request_headers"] += 1
        safe_values = records.one_line(", ".join(values), 200)
        parsed = "valid" if meta["valid"] else f"invalid: {records.one_line(str(meta['error']))}"
        logger.info(
            f"Expect-CT: {host}:{port} request header '{safe_values}' from the client ({parsed}): "
            f"{decisions.IGNORED} ({REQUEST_WHY})"
        )
        self.reporting.write_event("header", host, port, **meta)
        self.request_memo.put(key, (clock, meta))
        return meta

    def _refresh(self, host: str, meta: dict[str, Any]) -> None:
        """Apply a memoised header to the store again (it was applied when first seen)."""
        if meta.get("action") not in (decisions.NOTED, decisions.UPDATED):
            return
        if self.known_hosts.store is None:
            return
        try:
            self.known_hosts.observe(
                host,
                max_age=meta["max_age"],
                enforce=meta["enforce"],
                report_uri=meta["report_uri"],
            )
        except (ValueError, storemod.StoreError):
            return  # logged by known_hosts when first seen; the flow is still served
        self.faults.stats["header_refreshes"] += 1

    def _effect(
        self,
        host: str,
        meta: dict[str, Any],
        record: ConnectionRecord | None,
        *,
        secure: bool,
        max_age_cap: int,
    ) -> decisions.HeaderEffect:
        gate = decisions.header_gate(
            secure=secure,
            valid=meta["valid"],
            chain=record.chain.kind if record is not None else None,
            chain_error=record.chain.error if record is not None else None,
            compliant=record is not None and record.verdict.compliant,
        )
        if gate is not None:
            return gate
        if self.known_hosts.store is None:
            return decisions.HeaderEffect(decisions.IGNORED, "no Known Expect-CT Hosts store")
        try:
            action = self.known_hosts.observe(
                host,
                max_age=meta["max_age"],
                enforce=meta["enforce"],
                report_uri=meta["report_uri"],
            )
        except ValueError as e:
            return decisions.HeaderEffect(decisions.IGNORED, f"the host name cannot be noted: {e}")
        except storemod.StoreUnavailable as e:
            # Not "noted": a note counts only once durable (issue 19). The replica enforces it
            # here already, and the store commits the queued write when the database is back.
            return decisions.HeaderEffect(decisions.IGNORED, pending_why(e))
        except storemod.StoreError as e:
            return decisions.HeaderEffect(
                decisions.IGNORED, f"store write failed: {e.__cause__ or e}"
            )
        return decisions.header_outcome(action, max_age=meta["max_age"], max_age_cap=max_age_cap)

    def _maybe_report(
        self, host: str, record: ConnectionRecord | None, meta: dict[str, Any]
    ) -> None:
        if record is None:
            return
        due = decisions.header_report_due(
            valid=bool(meta.get("valid")),
            report_uri=meta.get("report_uri"),
            enforce=meta.get("enforce"),
            chain=record.chain.kind,
            compliant=record.verdict.compliant,
            reported=record.reported,
        )
        if due is None:
            return
        # Cannot tell (unreadable store): the header asked for a report, send it.
        if self.known_hosts.lookup_or_none(host) is not None:
            return  # a Known host's failures are reported at connection setup (RFC 9163 2.4)
        self.reporting.report(record, due, stale=self.stale())
