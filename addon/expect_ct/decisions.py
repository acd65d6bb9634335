"""What Expect-CT decides, as pure functions: the addon and ``python -m expect_ct check`` both
call these, so live and offline analysis cannot disagree.

* ``header_gate`` / ``header_outcome``: a response's Expect-CT header and the Known Expect-CT
  Hosts store (RFC 9163 2.3.2): noted, updated, removed or ignored, each with why;
* ``block_reason``: whether a connection must be refused, and why (RFC 9163 2.4);
* ``known_host_report`` / ``header_report_due``: whether a violation report is due
  (RFC 9163 2.3.3 and 2.4).

No mitmproxy import, no I/O: the callers do the store reads and writes.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from expect_ct import records
from expect_ct.chain import ChainKind
from expect_ct.policy import Verdict
from expect_ct.store import KnownHost

NOTED = "noted"
UPDATED = "updated"
REMOVED = "removed"
IGNORED = "ignored"

ENFORCE_MODES = ("off", "header", "all")
DEFAULT_MAX_AGE_CAP = 2592000  # seconds (30 days): expect_ct_max_age_cap's default

NOT_KNOWN_MAX_AGE_0 = "max-age=0 for a host that is not known: nothing to remove (RFC 9163 2.3.2)"


@dataclass(frozen=True)
class HeaderEffect:
    """What a header did (or would do) to the Known Expect-CT Hosts store, and why."""

    action: str  # NOTED, UPDATED, REMOVED or IGNORED
    why: str


def header_gate(
    *,
    secure: bool,
    valid: bool,
    chain: ChainKind | None,
    chain_error: str | None,
    compliant: bool,
) -> HeaderEffect | None:
    """Why a header must leave the store alone, or None if the store is to apply it.

    ``chain`` is None when the upstream connection's certificates are not available.
    """
    if not secure:
        return HeaderEffect(
            IGNORED, "received over plain HTTP (RFC 9163 2.3.2: only secure transport counts)"
        )
    if not valid:
        return HeaderEffect(
            IGNORED, "malformed header: no Expect-CT state changes (RFC 9163 2.3.1)"
        )
    if chain is None:
        return HeaderEffect(IGNORED, "the upstream connection's certificates are not available")
    if chain is ChainKind.PRIVATE:
        return HeaderEffect(
            IGNORED, "the chain ends at a private root: Expect-CT does not apply (RFC 9163 2.4.1)"
        )
    if chain is ChainKind.UNTRUSTED:
        detail = f": {chain_error}" if chain_error else ""
        return HeaderEffect(IGNORED, f"the chain is not publicly trusted{detail}")
    if not compliant:
        return HeaderEffect(
            IGNORED,
            "the connection is not CT-compliant: Expect-CT state is not updated (RFC 9163 2.3.2)",
        )
    return None


def header_outcome(store_action: str, *, max_age: int, max_age_cap: int) -> HeaderEffect:
    """The effect of a header the store applied (``KnownHostStore.observe``'s action)."""
    if store_action == NOTED:
        return HeaderEffect(
            NOTED,
            f"valid header on a CT-compliant connection; known for {min(max_age, max_age_cap)} s",
        )
    if store_action == UPDATED:
        return HeaderEffect(
            UPDATED, "valid header on a CT-compliant connection; stored policy refreshed"
        )
    if store_action == REMOVED:
        return HeaderEffect(REMOVED, "max-age=0 on a CT-compliant connection (RFC 9163 2.3.2)")
    return HeaderEffect(IGNORED, NOT_KNOWN_MAX_AGE_0)


def predicted_store_action(*, max_age: int, max_age_cap: int, known: bool) -> str:
    """What ``KnownHostStore.observe`` does with a header that passed ``header_gate``."""
    if min(max_age, max_age_cap) == 0:
        return REMOVED if known else IGNORED
    return UPDATED if known else NOTED


def block_reason(
    *,
    mode: str,
    host: str,
    chain: ChainKind,
    verdict: Verdict,
    known: KnownHost | None,
) -> str | None:
    """Why this connection must be refused, or None. Fail open only when the RFC says so."""
    if mode == "off" or chain is ChainKind.PRIVATE or verdict.compliant:
        return None
    why = "; ".join(verdict.reasons) or "not CT-compliant"
    if known is not None and known.enforce:
        return (
            f"{host} is a Known Expect-CT Host with enforce (until "
            f"{records.rfc3339(known.expires)}) and the connection is not CT-compliant under the "
            f"{verdict.policy} policy: {why}"
        )
    if mode == "all" and chain is ChainKind.PUBLIC:
        return (
            f"the certificate of {host} chains to a public root but is not CT-compliant "
            f"under the {verdict.policy} policy: {why} (expect_ct_enforce=all)"
        )
    return None


def needs_known_host(*, chain: ChainKind, compliant: bool) -> bool:
    """Only a non-compliant, non-exempt connection can be blocked or reported (RFC 9163 2.4),
    so only it needs the host's stored policy."""
    return not compliant and chain is not ChainKind.PRIVATE


def warrants_warning(*, chain: ChainKind, compliant: bool) -> bool:
    """A flow is marked only when a publicly trusted chain fails CT: a private or untrusted
    upstream (a lab server, ssl_insecure) is not a CT problem."""
    return chain is ChainKind.PUBLIC and not compliant


@dataclass(frozen=True)
class ReportDue:
    report_uri: str
    expiration: datetime.datetime | None
    failure_mode: str  # "enforce" or "report-only"


def known_host_report(
    *, known: KnownHost | None, chain: ChainKind, compliant: bool, reported: bool
) -> ReportDue | None:
    """RFC 9163 2.4: a Known Expect-CT Host with a report-uri, a public chain that fails CT,
    at most one report per connection (2.3.3)."""
    if known is None or not known.report_uri or compliant or chain is not ChainKind.PUBLIC:
        return None
    if reported:
        return None
    return ReportDue(
        report_uri=known.report_uri,
        expiration=known.expires,
        failure_mode="enforce" if known.enforce else "report-only",
    )


def header_report_due(
    *,
    valid: bool,
    report_uri: str | None,
    enforce: bool | None,
    chain: ChainKind,
    compliant: bool,
    reported: bool,
) -> ReportDue | None:
    """RFC 9163 2.3.3: a valid header with a report-uri over a non-compliant connection (public
    root), once per connection. The caller also checks that the host is not yet Known (a Known
    host's failures are reported at connection setup)."""
    if reported or not valid or not report_uri or compliant or chain is not ChainKind.PUBLIC:
        return None
    return ReportDue(
        report_uri=report_uri,
        expiration=None,
        failure_mode="enforce" if enforce else "report-only",
    )
