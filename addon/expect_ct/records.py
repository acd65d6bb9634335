"""JSON records describing a CT evaluation: the fields of the event log's ``connection`` event.

The addon writes these records to its JSON-lines log and to flow metadata; the offline
``python -m expect_ct check`` and ``inspect`` commands print the same records, so one parser
reads both (README, "The JSON-lines event log"). Pure: no mitmproxy import.
"""

from __future__ import annotations

import base64
import datetime
import functools
import hashlib
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from expect_ct import header as headermod
from expect_ct.chain import ChainKind
from expect_ct.policy import SCTCheck
from expect_ct.policy import Verdict
from expect_ct.sct import Source

# What the ``sources`` field says about each SCT delivery path.
PRESENT = "present"  # the handshake was inspected and carried this data
ABSENT = "absent"  # the handshake was inspected and did not carry it
NOT_OBSERVED = "not observed"  # we could not look (HTTP/3, a saved flow, no file given)
OBSERVED = "observed"  # the certificate itself is always available


def rfc3339(moment: datetime.datetime) -> str:
    """RFC 3339 UTC with whole seconds, as every record's time fields use."""
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def certificate_facts(cert: x509.Certificate) -> dict[str, str]:
    """The leaf summary of a ``connection`` record: SHA-256 of the DER, names, validity."""
    return dict(_certificate_facts(cert.public_bytes(serialization.Encoding.DER)))


@functools.lru_cache(maxsize=1024)  # the same few certificates, connection after connection
def _certificate_facts(der: bytes) -> tuple[tuple[str, str], ...]:
    cert = x509.load_der_x509_certificate(der)
    return (
        ("sha256", hashlib.sha256(der).hexdigest()),
        ("subject", cert.subject.rfc4514_string()),
        ("issuer", cert.issuer.rfc4514_string()),
        ("not_before", rfc3339(cert.not_valid_before_utc)),
        ("not_after", rfc3339(cert.not_valid_after_utc)),
    )


def sct_facts(check: SCTCheck) -> dict[str, Any]:
    """One element of a ``connection`` record's ``scts``: the SCT and what was concluded."""
    log = check.log
    return {
        "source": check.sct.source.value,
        "log_id": base64.b64encode(check.sct.log_id).decode("ascii"),
        "log": log.description if log is not None else None,
        "operator": check.operator,
        "timestamp": check.sct.timestamp,
        "status": check.status,
        "reason": check.reason,
        "counted": check.counted,
        "why": check.why,
    }


def observed(captured: bool, value: bytes | None) -> str:
    """ "not observed" (we could not look) is not the same as "absent" (the server sent none)."""
    if not captured:
        return NOT_OBSERVED
    return PRESENT if value else ABSENT


def handshake_sources(
    *, captured: bool, tls_extension: bytes | None, ocsp_response: bytes | None
) -> dict[str, str]:
    """The ``sources`` field: which SCT delivery paths were looked at, and what they held."""
    return {
        Source.EMBEDDED.value: OBSERVED,
        Source.TLS_EXTENSION.value: observed(captured, tls_extension),
        Source.OCSP.value: observed(captured, ocsp_response),
    }


def connection_record(
    *,
    tls_version: str | None,
    chain: ChainKind,
    leaf: x509.Certificate | None,
    verdict: Verdict,
    sources: Mapping[str, str],
) -> dict[str, Any]:
    """The fields a ``connection`` event adds to ``time``, ``event``, ``host`` and ``port``."""
    return {
        "tls_version": tls_version,
        "chain": chain.value,
        "certificate": certificate_facts(leaf) if leaf is not None else None,
        "scts": [sct_facts(check) for check in verdict.scts],
        "compliant": verdict.compliant,
        "policy": verdict.policy,
        "reasons": list(verdict.reasons),
        "sources": dict(sources),
    }


def header_facts(values: Sequence[str], *, dialect: str) -> dict[str, Any]:
    """What parsing a response's Expect-CT field values gave: the ``header`` event's fields
    ``values``, ``valid``, ``error``, ``max_age``, ``enforce`` and ``report_uri``."""
    facts: dict[str, Any] = {"values": list(values)}
    try:
        parsed = headermod.parse_expect_ct(list(values), dialect=dialect)
    except headermod.InvalidExpectCT as e:
        facts.update(valid=False, error=str(e), max_age=None, enforce=None, report_uri=None)
    else:
        facts.update(
            valid=True,
            error=None,
            max_age=parsed.max_age,
            enforce=parsed.enforce,
            report_uri=parsed.report_uri,
        )
    return facts


def one_line(text: str, limit: int = 300) -> str:
    """Server-chosen text made safe for one terminal or log line (control characters escaped)."""
    cleaned = "".join(ch if ch.isprintable() else f"\\x{ord(ch):02x}" for ch in text)
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 1] + "…"
