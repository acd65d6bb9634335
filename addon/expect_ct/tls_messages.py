"""The server's TLS handshake messages, parsed: where SCTs and stapled OCSP responses travel.

Pure (no mitmproxy, no OpenSSL): tls.py feeds these parsers the messages OpenSSL's message
callback sees.

* the ``signed_certificate_timestamp`` extension (type 18): in the ServerHello for TLS 1.2
  (RFC 6962 section 3.3.1), in the leaf's CertificateEntry for TLS 1.3 (RFC 8446 section 4.4.2);
* a stapled OCSP response (RFC 6066 section 8): the CertificateStatus message (TLS 1.2) or the
  leaf's status_request extension (TLS 1.3).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

# RFC 8446 section 4 / RFC 6962 / RFC 6066 code points.
CONTENT_TYPE_HANDSHAKE = 22
HANDSHAKE_SERVER_HELLO = 2
HANDSHAKE_CERTIFICATE = 11
HANDSHAKE_CERTIFICATE_STATUS = 22  # TLS 1.2 only (RFC 6066 section 8)
EXT_STATUS_REQUEST = 5
EXT_SIGNED_CERTIFICATE_TIMESTAMP = 18
EXT_SUPPORTED_VERSIONS = 43
STATUS_TYPE_OCSP = 1
TLS1_3 = 0x0304

WHERE_SERVER_HELLO = "ServerHello"
WHERE_CERTIFICATE = "Certificate"


class MalformedHandshakeMessage(ValueError):
    """A TLS handshake message is truncated, has trailing bytes or breaks a length rule."""


class _Reader:
    """Strict reader for the TLS presentation language (RFC 8446 section 3)."""

    def __init__(self, data: bytes, what: str) -> None:
        self._data = data
        self._offset = 0
        self._what = what

    def take(self, count: int, field_name: str) -> bytes:
        end = self._offset + count
        if end > len(self._data):
            raise MalformedHandshakeMessage(
                f"{self._what}: {field_name} needs {count} bytes at offset {self._offset}, "
                f"only {len(self._data) - self._offset} left"
            )
        chunk = self._data[self._offset : end]
        self._offset = end
        return chunk

    def uint(self, size: int, field_name: str) -> int:
        return int.from_bytes(self.take(size, field_name), "big")

    def vector(self, length_size: int, field_name: str, *, minimum: int = 0) -> bytes:
        length = self.uint(length_size, f"length of {field_name}")
        if length < minimum:
            raise MalformedHandshakeMessage(
                f"{self._what}: {field_name} is {length} bytes, at least {minimum} required"
            )
        return self.take(length, field_name)

    @property
    def at_end(self) -> bool:
        return self._offset == len(self._data)

    def finish(self) -> None:
        if not self.at_end:
            raise MalformedHandshakeMessage(
                f"{self._what}: {len(self._data) - self._offset} trailing bytes"
            )


def split_handshake_message(message: bytes) -> tuple[int, bytes]:
    """(msg_type, body) of one complete Handshake struct (RFC 8446 section 4)."""
    reader = _Reader(message, "handshake message")
    msg_type = reader.uint(1, "msg_type")
    body = reader.vector(3, "body")
    reader.finish()
    return msg_type, body


def parse_extensions(data: bytes, what: str) -> dict[int, bytes]:
    """An ``Extension extensions<..>`` list's contents as {type: extension_data}.

    RFC 8446 section 4.2: there MUST NOT be more than one extension of the same type.
    """
    reader = _Reader(data, what)
    extensions: dict[int, bytes] = {}
    while not reader.at_end:
        extension_type = reader.uint(2, "extension_type")
        extension_data = reader.vector(2, f"extension {extension_type} data")
        if extension_type in extensions:
            raise MalformedHandshakeMessage(f"{what}: extension {extension_type} appears twice")
        extensions[extension_type] = extension_data
    return extensions


@dataclass(frozen=True)
class ServerHello:
    legacy_version: int
    extensions: Mapping[int, bytes]

    @property
    def selected_version(self) -> int:
        """The negotiated version: supported_versions wins over legacy_version (RFC 8446 4.2.1)."""
        selected = self.extensions.get(EXT_SUPPORTED_VERSIONS)
        if selected is None:
            return self.legacy_version
        if len(selected) != 2:
            raise MalformedHandshakeMessage(
                f"ServerHello: supported_versions must hold one version (2 bytes), "
                f"got {len(selected)} bytes"
            )
        return int.from_bytes(selected, "big")


def parse_server_hello(body: bytes) -> ServerHello:
    """ServerHello body (RFC 5246 section 7.4.1.3, RFC 8446 section 4.1.3)."""
    reader = _Reader(body, "ServerHello")
    legacy_version = reader.uint(2, "legacy_version")
    reader.take(32, "random")
    session_id = reader.vector(1, "legacy_session_id_echo")
    if len(session_id) > 32:
        raise MalformedHandshakeMessage(
            f"ServerHello: session id is {len(session_id)} bytes, at most 32 allowed"
        )
    reader.take(2, "cipher_suite")
    reader.take(1, "legacy_compression_method")
    # TLS 1.2 allows the extensions block to be absent altogether.
    if reader.at_end:
        return ServerHello(legacy_version, {})
    extensions = parse_extensions(reader.vector(2, "extensions"), "ServerHello")
    reader.finish()
    return ServerHello(legacy_version, extensions)


@dataclass(frozen=True)
class CertificateEntry:
    cert_data: bytes
    extensions: Mapping[int, bytes]


def parse_tls13_certificate(body: bytes) -> tuple[CertificateEntry, ...]:
    """TLS 1.3 Certificate body (RFC 8446 section 4.4.2), leaf first."""
    reader = _Reader(body, "Certificate")
    reader.vector(1, "certificate_request_context")
    entries_reader = _Reader(reader.vector(3, "certificate_list"), "Certificate")
    reader.finish()
    entries = []
    while not entries_reader.at_end:
        cert_data = entries_reader.vector(3, "cert_data", minimum=1)
        extensions = parse_extensions(
            entries_reader.vector(2, "CertificateEntry extensions"), "CertificateEntry"
        )
        entries.append(CertificateEntry(cert_data, extensions))
    return tuple(entries)


def parse_certificate_status(data: bytes) -> bytes:
    """The DER OCSPResponse inside a CertificateStatus (RFC 6066 section 8, RFC 8446 4.4.2.1)."""
    reader = _Reader(data, "CertificateStatus")
    status_type = reader.uint(1, "status_type")
    if status_type != STATUS_TYPE_OCSP:
        raise MalformedHandshakeMessage(
            f"CertificateStatus: status_type {status_type} is not ocsp ({STATUS_TYPE_OCSP})"
        )
    response = reader.vector(3, "OCSPResponse", minimum=1)
    reader.finish()
    return response


@dataclass
class ServerFlight:
    """What the server's handshake messages carried, fed one message at a time.

    ``observe`` raises MalformedHandshakeMessage for messages it cannot parse; the message
    callback logs that and keeps whatever was captured before.
    """

    tls13: bool | None = None
    tls_extension: bytes | None = None
    tls_extension_where: str | None = None
    ocsp_response: bytes | None = None

    def observe(self, message: bytes) -> None:
        msg_type, body = split_handshake_message(message)
        if msg_type == HANDSHAKE_SERVER_HELLO:
            hello = parse_server_hello(body)
            self.tls13 = hello.selected_version == TLS1_3
            sct_list = hello.extensions.get(EXT_SIGNED_CERTIFICATE_TIMESTAMP)
            # In TLS 1.3 the ServerHello must not carry it (RFC 8446 section 4.2 table).
            if sct_list is not None and not self.tls13:
                self.tls_extension = sct_list
                self.tls_extension_where = WHERE_SERVER_HELLO
        elif msg_type == HANDSHAKE_CERTIFICATE and self.tls13:
            entries = parse_tls13_certificate(body)
            if not entries:
                return
            leaf = entries[0]
            sct_list = leaf.extensions.get(EXT_SIGNED_CERTIFICATE_TIMESTAMP)
            if sct_list is not None:
                self.tls_extension = sct_list
                self.tls_extension_where = WHERE_CERTIFICATE
            status = leaf.extensions.get(EXT_STATUS_REQUEST)
            if status is not None:
                self.ocsp_response = parse_certificate_status(status)
        elif msg_type == HANDSHAKE_CERTIFICATE_STATUS and self.tls13 is False:
            self.ocsp_response = parse_certificate_status(body)
