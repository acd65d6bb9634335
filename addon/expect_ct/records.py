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


def rfc3339(moment: datetime.datetime, *, milliseconds: bool = False) -> str:
    """RFC 3339 section 5.6 UTC time: whole seconds, as every record's time fields use, or
    with milliseconds, as reports (Chromium's ``TimeToISO8601``) and SCT timestamps use.

    A naive datetime is taken to be UTC (cryptography's convention for certificate times).
    """
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    moment = moment.astimezone(datetime.UTC)
    text = (
        f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}T"
        f"{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}"
    )
    return text + (f".{moment.microsecond // 1000:03d}Z" if milliseconds else "Z")


def b64(data: bytes | None) -> str | None:
    return base64.b64encode(data).decode("ascii") if data is not None else None


def unb64(data: Any) -> bytes | None:
    """The bytes of a base64 text from flow metadata; None if it is not one."""
    if not isinstance(data, str):
        return None
    try:
        return base64.b64decode(data, validate=True)
    except ValueError:
        return None


def sources_text(sources: Mapping[str, str]) -> str:
    """``sources`` as words: "embedded observed, tls-extension absent, ocsp not observed"."""
    return ", ".join(f"{path} {state}" for path, state in sources.items())


def known_host_record(known: Any, *, last_observed: bool = True) -> dict[str, Any]:
    """A Known Expect-CT Host (store.KnownHost) as JSON: ``hosts`` output, command results,
    and (without ``last_observed``) the ``blocked`` event's ``known_host``."""
    record = {
        "host": known.host,
        "enforce": known.enforce,
        "report_uri": known.report_uri,
        "expires": rfc3339(known.expires),
    }
    if last_observed:
        record["last_observed"] = rfc3339(known.last_observed)
    return record


def to_cryptography(cert: Any) -> x509.Certificate:
    """A mitmproxy ``certs.Cert`` as a cryptography certificate (11.0 has no to_cryptography())."""
    convert = getattr(cert, "to_cryptography", None)
    if convert is not None:
        result: x509.Certificate = convert()
        return result
    return x509.load_pem_x509_certificate(cert.to_pem())


def certificate_facts(cert: x509.Certificate) -> dict[str, str]:
    """The leaf summary of a ``connection`` record: SHA-256 of the DER, names, validity."""
    return dict(_certificate_facts(cert.public_bytes(serialization.Encoding.DER)))


@functools.lru_cache(maxsize=1024)  # the same few certificates, connection after connection
def _certificate_facts(der: bytes) -> tuple[tuple[str, str], ...]:
    cert = x509.load_der_x509_certificate(der)
    return (
        ("sha256", hashlib.sha256(der).hexdigest()),
        ("subject", _name_text(cert, "subject")),
        ("issuer", _name_text(cert, "issuer")),
        ("not_before", rfc3339(cert.not_valid_before_utc)),
        ("not_after", rfc3339(cert.not_valid_after_utc)),
    )


def _name_text(cert: x509.Certificate, which: str) -> str:
    # cryptography decodes names lazily and raises on, e.g., a UTF8String that is not UTF-8:
    # a server's certificate must not be able to suppress the record of its own connection.
    try:
        name: x509.Name = getattr(cert, which)
        return name.rfc4514_string()
    except ValueError as e:
        return f"(unreadable {which}: {e})"


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
        # Unreadable SCT sources are worth knowing even when other SCTs made the verdict.
        "problems": list(verdict.problems),
        "sources": dict(sources),
    }


def header_facts(values: Sequence[str], *, dialect: str) -> dict[str, Any]:
    """What parsing a response's Expect-CT field values gave: the ``header`` event's fields
    ``values``, ``valid``, ``error``, ``max_age``, ``enforce`` and ``report_uri``."""
    facts: dict[str, Any] = {"values": [field_text(value) for value in values]}
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


def field_text(value: str) -> str:
    """A header field value as text every UTF-8 encoder accepts.

    mitmproxy decodes field values as UTF-8 with surrogateescape, so each byte that is not
    UTF-8 arrives as a lone surrogate U+DC80-U+DCFF, which neither a .mitm flow file nor
    strict JSON can hold. Such a byte becomes the text ``\\xNN``; other text is unchanged.
    """
    if not any("\ud800" <= char <= "\udfff" for char in value):
        return value
    return "".join(_surrogate_text(char) for char in value)


def _surrogate_text(char: str) -> str:
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:
        return f"\\x{code - 0xDC00:02x}"
    if 0xD800 <= code <= 0xDFFF:
        return f"\\u{code:04x}"
    return char


def one_line(text: str, limit: int = 300) -> str:
    """Server-chosen text made safe for one terminal or log line.

    Characters that are not printable (controls, format characters such as bidi overrides,
    lone surrogates) and the backslash are written as in a Python string literal, so the
    text can be read back exactly and an escape sent by the server cannot pass for ours.
    """
    if text.isprintable() and "\\" not in text:
        cleaned = text  # the common case, checked at C speed: this runs for every flow
    else:
        cleaned = "".join(ch if ch.isprintable() and ch != "\\" else escape_char(ch) for ch in text)
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 1] + "…"


def escape_char(char: str) -> str:
    """``char`` as a Python string-literal escape (``\\xNN``, ``\\uNNNN``, ``\\UNNNNNNNN``,
    ``\\\\``); ``ctview`` shows server text with the same escapes."""
    # Python's escape forms: "\x" takes exactly two hex digits, so U+202E (a bidi override)
    # or U+DCFF (an invalid UTF-8 byte mitmproxy decoded with surrogateescape) shown as
    # "\x202e" would read as "\x20" followed by "2e".
    if char == "\\":
        return "\\\\"
    code = ord(char)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"
