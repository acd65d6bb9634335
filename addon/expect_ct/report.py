"""Expect-CT violation reports (RFC 9163 section 3): building, deduplication, event log.

Pure of mitmproxy. Delivery to report-uris lives in ``expect_ct.report_sender``; its public
names (``ReportSender``, ``ReportOutcome``, ``address_kind``, ``check_preflight``) are
importable from here too, where the contract puts them.
"""

from __future__ import annotations

import base64
import collections
import datetime
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any
from typing import TextIO

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from expect_ct.records import rfc3339
from expect_ct.report_sender import REPORT_CONTENT_TYPE
from expect_ct.report_sender import ReportOutcome
from expect_ct.report_sender import ReportSender
from expect_ct.report_sender import address_kind
from expect_ct.report_sender import check_preflight
from expect_ct.sct import SCT

logger = logging.getLogger(__name__)

UTC = datetime.UTC

SCT_STATUSES = ("valid", "invalid", "unknown")
FAILURE_MODES = ("enforce", "report-only")


# ------------------------------------------------------------------------------ report object


def certificate_pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


def sct_entry(sct: SCT, status: str) -> dict[str, Any]:
    """One element of the report's ``scts`` array (RFC 9163 section 3.1)."""
    if status not in SCT_STATUSES:
        raise ValueError(f"SCT status must be one of {', '.join(SCT_STATUSES)}, not {status!r}")
    return {
        "version": sct.report_version,
        "status": status,
        "source": sct.source.value,
        # RFC 4648 section 4: the standard alphabet, with padding.
        "serialized_sct": base64.b64encode(sct.serialized).decode("ascii"),
    }


def build_report(
    *,
    hostname: str,
    port: int,
    scheme: str = "https",
    date_time: datetime.datetime,
    effective_expiration: datetime.datetime | None,
    served_chain: Sequence[x509.Certificate],
    validated_chain: Sequence[x509.Certificate],
    scts: Sequence[tuple[SCT, str]],
    failure_mode: str,
    test_report: bool = False,
) -> dict[str, Any]:
    """The RFC 9163 section 3.2 report: ``{"expect-ct-report": <violation report object>}``.

    Every key of section 3.1 is present, including the optional ``scheme``.

    ``served_chain`` is kept in the order the server sent it; ``validated_chain`` must be the
    chain that was validated, end-entity first (section 3.1). ``scts`` pairs each received SCT
    with its status ("valid", "invalid" or "unknown").

    ``effective_expiration`` is the stored Effective Expiration Date of a Known Expect-CT Host.
    For a report sent while processing a header from a host that is not known (section 2.3.3)
    there is no such date, yet section 3.1 requires the key as an RFC 3339 string. Pass None
    and the report then carries ``date_time`` itself: the host has no unexpired Expect-CT
    entry at the moment of the failure, and a collector that checks the value gets a real,
    plausible date. (Chromium sent its null time here, which would have serialised as
    ``1601-01-01T00:00:00.000Z``; that is an artefact of base::Time, not a meaningful date.)

    Raises ValueError for a failure mode or SCT status outside the RFC's enumerations.
    """
    if failure_mode not in FAILURE_MODES:
        raise ValueError(
            f"failure_mode must be one of {', '.join(FAILURE_MODES)}, not {failure_mode!r}"
        )
    expiration = date_time if effective_expiration is None else effective_expiration
    return {
        "expect-ct-report": {
            "date-time": rfc3339(date_time, milliseconds=True),
            "hostname": hostname,
            "port": port,
            "scheme": scheme,
            "effective-expiration-date": rfc3339(expiration, milliseconds=True),
            "served-certificate-chain": [certificate_pem(c) for c in served_chain],
            "validated-certificate-chain": [certificate_pem(c) for c in validated_chain],
            "scts": [sct_entry(sct, status) for sct, status in scts],
            "failure-mode": failure_mode,
            "test-report": test_report,
        }
    }


def serialize_report(report: dict[str, Any]) -> bytes:
    """Compact JSON with sorted keys, like Chromium's ``base::JSONWriter``.

    Non-ASCII text is \\u-escaped, so the bytes are valid UTF-8 (and ASCII) even if a host
    name carries a lone surrogate.
    """
    return json.dumps(report, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode(
        "utf-8"
    )


# ---------------------------------------------------------------------------- deduplication


class ReportDeduplicator:
    """Rate limit (RFC 9163 section 2.1.1: "SHOULD limit the rate at which they send reports").

    One report per (host, port, report-uri) per ``ttl`` seconds. Chromium keyed on host:port
    only and kept 50 entries for 60 minutes; the report-uri is part of our key so that a host
    changing its report-uri still reaches the new collector. The table is bounded: when full,
    the oldest entry is forgotten (which can only cause an extra report, never a lost one).
    Entries are kept in insertion order, and since the TTL is constant that is also expiry
    order, so expired entries are dropped from the front: amortised O(1) per call.
    """

    def __init__(self, ttl: float = 3600.0, max_entries: int = 1000) -> None:
        if ttl < 0:
            raise ValueError(f"ttl must not be negative, got {ttl}")
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, got {max_entries}")
        self.ttl = ttl
        self.max_entries = max_entries
        self._sent: collections.OrderedDict[tuple[str, int, str], float] = collections.OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._sent)

    def should_send(
        self, host: str, port: int, uri: str, now: datetime.datetime | float | None = None
    ) -> bool:
        """True (and remembered) if no report for this key was allowed in the last ``ttl`` s.

        ``now`` is a datetime or POSIX seconds; default: the current time.
        """
        if now is None:
            moment = time.time()
        elif isinstance(now, datetime.datetime):
            moment = (now if now.tzinfo else now.replace(tzinfo=UTC)).timestamp()
        else:
            moment = float(now)
        key = (host.lower(), port, uri)
        with self._lock:
            while self._sent:
                oldest_key, sent_at = next(iter(self._sent.items()))
                if moment - sent_at < self.ttl:
                    break
                del self._sent[oldest_key]
            last = self._sent.get(key)
            if last is not None and moment - last < self.ttl:
                return False
            self._sent[key] = moment
            self._sent.move_to_end(key)
            while len(self._sent) > self.max_entries:
                self._sent.popitem(last=False)
            return True


# -------------------------------------------------------------------------------- event log


def _json_default(value: object) -> object:
    if isinstance(value, datetime.datetime):
        return rfc3339(value, milliseconds=True)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, set | frozenset):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


_ENVELOPE = ("time", "event", "host", "port")


class EventLog:
    """Append-only JSON-lines event log (contract.md, "JSON-lines event log").

    One object per line with ``time`` (RFC 3339 UTC), ``event``, ``host``, ``port`` and the
    event's fields. Safe to call from several threads (report outcomes arrive on the sender's
    worker). JSON is written with ensure_ascii, so a newline or control character in a host
    name cannot start a forged line. Writing never raises OSError into the caller: the first
    failure is logged as a warning, every failure counted in ``errors``, and the file is
    reopened on the next write. Writes after ``close()`` are ignored.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        clock: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(UTC),
    ) -> None:
        self.path = os.fspath(path)
        self.errors = 0
        self._clock = clock
        self._lock = threading.Lock()
        self._file: TextIO | None = None
        self._warned = False
        self._closed = False
        with self._lock:
            self._open()

    def _open(self) -> TextIO | None:
        if self._file is None:
            try:
                self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115
            except OSError as e:
                self._failed(e)
        return self._file

    def _failed(self, error: OSError) -> None:
        self.errors += 1
        if not self._warned:
            self._warned = True
            logger.warning(f"Expect-CT: cannot write the event log {self.path}: {error}")

    def write(self, event: str, host: str, port: int, **fields: Any) -> None:
        self.write_encoded(event, host, port, self.encode_fields(fields))

    @staticmethod
    def encode_fields(fields: Mapping[str, Any]) -> str:
        """An event's own fields as JSON, for write_encoded(): encode once, write often."""
        for name in _ENVELOPE:
            if name in fields:
                raise TypeError(f"EventLog sets {name!r} itself")
        return json.dumps(fields, ensure_ascii=True, default=_json_default)

    def write_encoded(self, event: str, host: str, port: int, encoded_fields: str) -> None:
        """Append one record; ``encoded_fields`` comes from encode_fields(). The line is the
        same as write() gives for those fields."""
        envelope = json.dumps(
            {
                "time": rfc3339(self._clock(), milliseconds=True),
                "event": event,
                "host": host,
                "port": port,
            },
            ensure_ascii=True,
        )
        if encoded_fields == "{}":
            line = envelope + "\n"
        else:
            line = envelope[:-1] + ", " + encoded_fields[1:] + "\n"
        with self._lock:
            if self._closed:
                logger.debug(f"Expect-CT: event log {self.path} is closed, {event} not written")
                return
            file = self._open()
            if file is None:
                return
            try:
                file.write(line)
                file.flush()
            except OSError as e:
                self._failed(e)
                self._file = None
                try:
                    file.close()
                except OSError:
                    pass

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._file is not None:
                try:
                    self._file.close()
                except OSError as e:
                    self._failed(e)
                self._file = None


__all__ = [
    "FAILURE_MODES",
    "REPORT_CONTENT_TYPE",
    "SCT_STATUSES",
    "EventLog",
    "ReportDeduplicator",
    "ReportOutcome",
    "ReportSender",
    "address_kind",
    "build_report",
    "certificate_pem",
    "check_preflight",
    "serialize_report",
    "sct_entry",
]
