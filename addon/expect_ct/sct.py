"""Signed Certificate Timestamps (RFC 6962 section 3.2): model, parsing, verification.

Pure: no mitmproxy import. Malformed input raises InvalidSCTList (a ValueError) with the
reason; verification problems are reported as values, never as exceptions out of here.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Source(str, enum.Enum):
    """How an SCT was delivered; the values are RFC 9163's report strings."""

    EMBEDDED = "embedded"
    TLS_EXTENSION = "tls-extension"
    OCSP = "ocsp"


class InvalidSCTList(ValueError):
    """A SignedCertificateTimestampList (or one SCT in it) is not well formed."""


# RFC 5246 section 7.4.1.4.1 code points used by CT logs.
HASH_SHA256 = 4
SIG_RSA = 1
SIG_ECDSA = 3


@dataclass(frozen=True)
class SCT:
    """One SignedCertificateTimestamp exactly as received.

    ``version`` is the wire value (0 means v1, RFC 6962); RFC 9163 reports call that
    version 1, see ``report_version``. ``timestamp`` is milliseconds since the epoch.
    ``serialized`` holds the exact bytes of this SCT (without the list's 2-byte length
    prefix), which is what reports base64-encode.
    """

    version: int
    log_id: bytes
    timestamp: int
    extensions: bytes
    hash_algorithm: int
    signature_algorithm: int
    signature: bytes
    source: Source
    serialized: bytes

    @property
    def report_version(self) -> int:
        return self.version + 1
