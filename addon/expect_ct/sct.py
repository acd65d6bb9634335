"""Signed Certificate Timestamps (RFC 6962 section 3.2): model, parsing, verification.

Pure: no mitmproxy import. Malformed input raises InvalidSCTList (a ValueError) with the
reason; a signature that cannot be checked or does not verify raises SCTVerificationError
(also a ValueError). Nothing else escapes from parsing or verification.

The three delivery channels (RFC 6962 section 3.3) carry the same TLS-encoded
``SignedCertificateTimestampList``:

* embedded: X.509 extension 1.3.6.1.4.1.11129.2.4.2 whose extnValue holds an OCTET STRING
  with the list; the SCTs sign a precert_entry (issuer key hash + TBS without the extension);
* tls-extension: TLS extension 18, the list itself; the SCTs sign an x509_entry (leaf DER);
* ocsp: singleExtension 1.3.6.1.4.1.11129.2.4.5 of the stapled OCSP response, encoded like
  the embedded extension; the SCTs sign an x509_entry.

Certificate and OCSP extensions are located with a small DER reader over the signed bytes
rather than through cryptography's extension parser: that keeps each SCT's exact bytes
(reports base64 them), works when cryptography refuses an unrelated malformed extension,
and lets us pick the SingleResponse that matches the leaf in multi-response OCSP replies.
"""

from __future__ import annotations

import datetime
import enum
import functools
import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import ObjectIdentifier


class Source(enum.StrEnum):
    """How an SCT was delivered; the values are RFC 9163's report strings."""

    EMBEDDED = "embedded"
    TLS_EXTENSION = "tls-extension"
    OCSP = "ocsp"


class InvalidSCTList(ValueError):
    """A SignedCertificateTimestampList (or one SCT in it) is not well formed."""


class SCTVerificationError(ValueError):
    """An SCT's signature could not be verified; the message says why."""


# RFC 5246 section 7.4.1.4.1 code points used by CT logs.
HASH_SHA256 = 4
SIG_RSA = 1
SIG_ECDSA = 3

# RFC 6962 section 3.2 enums.
SCT_VERSION_V1 = 0
SIGNATURE_TYPE_CERTIFICATE_TIMESTAMP = 0
ENTRY_TYPE_X509 = 0
ENTRY_TYPE_PRECERT = 1

OID_SCT_EMBEDDED = ObjectIdentifier("1.3.6.1.4.1.11129.2.4.2")
OID_PRECERT_SIGNING = ObjectIdentifier("1.3.6.1.4.1.11129.2.4.4")
OID_SCT_OCSP = ObjectIdentifier("1.3.6.1.4.1.11129.2.4.5")

_LOG_ID_LENGTH = 32
# version(1) + log_id(32) + timestamp(8) + extensions length(2) + hash(1) + sig(1) + sig length(2)
_SCT_FIXED_LENGTH = 1 + _LOG_ID_LENGTH + 8 + 2 + 1 + 1 + 2

_HASH_NAMES = {0: "none", 1: "md5", 2: "sha1", 3: "sha224", 4: "sha256", 5: "sha384", 6: "sha512"}
_SIG_NAMES = {0: "anonymous", 1: "rsa", 2: "dsa", 3: "ecdsa", 7: "ed25519", 8: "ed448"}


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

    @property
    def timestamp_datetime(self) -> datetime.datetime:
        """The timestamp as an aware UTC datetime (millisecond precision)."""
        epoch = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
        return epoch + datetime.timedelta(milliseconds=self.timestamp)


# --- TLS encoding (RFC 5246 section 4 presentation language).


def parse_sct(data: bytes, source: Source) -> SCT:
    """Parse one serialized SCT (RFC 6962 section 3.2); every byte must be accounted for.

    The v1 layout is applied whatever the version byte says: the version is kept so that
    verification can refuse it (RFC 6962 section 3.2 defines only v1).
    """
    data = bytes(data)
    if len(data) < _SCT_FIXED_LENGTH:
        raise InvalidSCTList(
            f"SCT is truncated: {len(data)} bytes, an SCT needs at least {_SCT_FIXED_LENGTH}"
        )
    version = data[0]
    log_id = data[1:33]
    (timestamp, extensions_length) = struct.unpack_from(">QH", data, 33)
    offset = 43
    if offset + extensions_length + 4 > len(data):
        raise InvalidSCTList(
            f"SCT extensions length {extensions_length} overruns the SCT ({len(data)} bytes)"
        )
    extensions = data[offset : offset + extensions_length]
    offset += extensions_length
    (hash_algorithm, signature_algorithm, signature_length) = struct.unpack_from(
        ">BBH", data, offset
    )
    offset += 4
    end = offset + signature_length
    if end > len(data):
        raise InvalidSCTList(
            f"SCT signature length {signature_length} overruns the SCT "
            f"({len(data) - offset} bytes left)"
        )
    if end < len(data):
        raise InvalidSCTList(f"SCT has {len(data) - end} trailing bytes after the signature")
    return SCT(
        version=version,
        log_id=log_id,
        timestamp=timestamp,
        extensions=extensions,
        hash_algorithm=hash_algorithm,
        signature_algorithm=signature_algorithm,
        signature=data[offset:end],
        source=Source(source),
        serialized=data,
    )


def parse_sct_list(data: bytes, source: Source) -> list[SCT]:
    """Parse a TLS ``SignedCertificateTimestampList`` (RFC 6962 section 3.3).

    ``opaque SerializedSCT<1..2^16-1>; SerializedSCT sct_list<1..2^16-1>;``: both the list
    and each SCT must be non-empty, and the lengths must match the data exactly.
    """
    data = bytes(data)
    if len(data) < 2:
        raise InvalidSCTList(f"SCT list is truncated: {len(data)} bytes, no 2-byte list length")
    (total,) = struct.unpack_from(">H", data, 0)
    if total != len(data) - 2:
        raise InvalidSCTList(f"SCT list length field says {total} bytes but {len(data) - 2} follow")
    if total == 0:
        raise InvalidSCTList("SCT list is empty; RFC 6962 requires at least one SCT")
    scts: list[SCT] = []
    offset = 2
    while offset < len(data):
        index = len(scts)
        if offset + 2 > len(data):
            raise InvalidSCTList(f"SCT #{index}: truncated 2-byte length")
        (length,) = struct.unpack_from(">H", data, offset)
        offset += 2
        if length == 0:
            raise InvalidSCTList(f"SCT #{index} is empty (zero length)")
        if offset + length > len(data):
            raise InvalidSCTList(
                f"SCT #{index}: length field says {length} bytes but "
                f"{len(data) - offset} remain in the list"
            )
        try:
            scts.append(parse_sct(data[offset : offset + length], source))
        except InvalidSCTList as e:
            raise InvalidSCTList(f"SCT #{index}: {e}") from None
        offset += length
    return scts


def encode_sct(
    *,
    log_id: bytes,
    timestamp: int,
    signature: bytes,
    extensions: bytes = b"",
    hash_algorithm: int = HASH_SHA256,
    signature_algorithm: int = SIG_ECDSA,
    version: int = SCT_VERSION_V1,
) -> bytes:
    """Serialize one SCT; the inverse of ``parse_sct`` (``SCT.serialized``)."""
    if len(log_id) != _LOG_ID_LENGTH:
        raise ValueError(f"log_id must be {_LOG_ID_LENGTH} bytes, not {len(log_id)}")
    return (
        struct.pack(">B", version)
        + log_id
        + struct.pack(">Q", timestamp)
        + _u16_prefixed(extensions, "SCT extensions")
        + struct.pack(">BB", hash_algorithm, signature_algorithm)
        + _u16_prefixed(signature, "SCT signature")
    )


def encode_sct_list(serialized: Sequence[bytes]) -> bytes:
    """TLS-encode serialized SCTs as a SignedCertificateTimestampList.

    Does not refuse an empty sequence, so tests can build the (invalid) empty list.
    """
    return _u16_prefixed(
        b"".join(_u16_prefixed(s, f"SCT #{i}") for i, s in enumerate(serialized)), "SCT list"
    )


def _u16_prefixed(data: bytes, what: str) -> bytes:
    if len(data) > 0xFFFF:
        raise ValueError(f"{what} is {len(data)} bytes, more than a 2-byte length allows")
    return struct.pack(">H", len(data)) + data


def _u24_prefixed(data: bytes) -> bytes:
    if len(data) > 0xFFFFFF:
        raise SCTVerificationError(f"certificate is {len(data)} bytes, too long for RFC 6962")
    return struct.pack(">I", len(data))[1:] + data


# --- Minimal DER reader (X.690), only what is needed to reach extensions.


class _DERError(ValueError):
    pass


def _der_read(data: bytes, offset: int) -> tuple[int, int, int]:
    """Read the TLV at ``offset``: (tag, content start, content end). Single-byte tags only."""
    if offset + 2 > len(data):
        raise _DERError("truncated TLV header")
    tag = data[offset]
    if tag & 0x1F == 0x1F:
        raise _DERError(f"multi-byte tag at offset {offset}")
    first = data[offset + 1]
    start = offset + 2
    if first < 0x80:
        length = first
    else:
        n = first & 0x7F
        if n == 0 or n > 4:
            raise _DERError(f"unsupported length encoding 0x{first:02x} at offset {offset}")
        if start + n > len(data):
            raise _DERError("truncated length")
        length = int.from_bytes(data[start : start + n], "big")
        start += n
    end = start + length
    if end > len(data):
        raise _DERError(f"length {length} at offset {offset} overruns the data")
    return tag, start, end


def _der_children(data: bytes, start: int, end: int) -> list[tuple[int, int, int]]:
    children = []
    offset = start
    while offset < end:
        tag, child_start, child_end = _der_read(data, offset)
        if child_end > end:
            raise _DERError("child overruns its parent")
        children.append((tag, child_start, child_end))
        offset = child_end
    return children


def _der_single(data: bytes, expected_tag: int, what: str) -> tuple[int, int]:
    """The content range of ``data``, which must be exactly one TLV with ``expected_tag``."""
    tag, start, end = _der_read(data, 0)
    if tag != expected_tag:
        raise _DERError(f"{what} has tag 0x{tag:02x}, expected 0x{expected_tag:02x}")
    if end != len(data):
        raise _DERError(f"{what} has {len(data) - end} trailing bytes")
    return start, end


def _der_only_sequence(data: bytes, start: int, end: int, what: str) -> tuple[int, int]:
    """Content range of the single SEQUENCE an EXPLICIT tag's content must be."""
    children = _der_children(data, start, end)
    if len(children) != 1 or children[0][0] != 0x30:
        raise _DERError(f"{what} does not hold exactly one SEQUENCE")
    return children[0][1], children[0][2]


def _der_oid(oid: ObjectIdentifier) -> bytes:
    arcs = [int(a) for a in oid.dotted_string.split(".")]
    body = bytearray([40 * arcs[0] + arcs[1]])
    for arc in arcs[2:]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        body += bytes(reversed(chunk))
    return bytes(body)


_OID_SCT_EMBEDDED_DER = _der_oid(OID_SCT_EMBEDDED)
_OID_SCT_OCSP_DER = _der_oid(OID_SCT_OCSP)


def _extension_values(data: bytes, start: int, end: int, oid_der: bytes) -> list[bytes]:
    """extnValue contents of every ``Extension`` with ``oid_der`` in an Extensions SEQUENCE.

    ``Extension ::= SEQUENCE { extnID OID, critical BOOLEAN DEFAULT FALSE, extnValue OCTET
    STRING }`` (RFC 5280 section 4.1).
    """
    values = []
    for tag, ext_start, ext_end in _der_children(data, start, end):
        if tag != 0x30:
            raise _DERError(f"extension has tag 0x{tag:02x}, expected a SEQUENCE")
        parts = _der_children(data, ext_start, ext_end)
        if not parts or parts[0][0] != 0x06:
            raise _DERError("extension does not start with an OID")
        if data[parts[0][1] : parts[0][2]] != oid_der:
            continue
        value_tag, value_start, value_end = parts[-1]
        if value_tag != 0x04 or len(parts) not in (2, 3):
            raise _DERError("SCT extension is not {OID, [critical], OCTET STRING}")
        values.append(data[value_start:value_end])
    return values


def _sct_list_from_extension_value(extn_value: bytes, source: Source) -> list[SCT]:
    """The extnValue content is an OCTET STRING holding the TLS list (RFC 6962 3.3)."""
    try:
        start, end = _der_single(extn_value, 0x04, "SCT extension value")
    except _DERError as e:
        raise InvalidSCTList(f"SCT extension value is not a DER OCTET STRING: {e}") from None
    return parse_sct_list(extn_value[start:end], source)


# --- Extraction from the three channels.


def embedded_scts(cert: x509.Certificate) -> list[SCT]:
    """SCTs embedded in ``cert`` (extension 1.3.6.1.4.1.11129.2.4.2); [] when it has none."""
    try:
        values = _tbs_sct_extension_values(cert.tbs_certificate_bytes)
    except _DERError as e:
        raise InvalidSCTList(f"cannot read the certificate's extensions: {e}") from None
    if not values:
        return []
    if len(values) > 1:
        # RFC 5280 section 4.2: a certificate MUST NOT include more than one instance.
        raise InvalidSCTList(f"certificate has {len(values)} SCT list extensions")
    return _sct_list_from_extension_value(values[0], Source.EMBEDDED)


def _tbs_sct_extension_values(tbs: bytes) -> list[bytes]:
    """extnValue contents of the SCT list extensions in a DER TBSCertificate (RFC 5280 4.1)."""
    start, end = _der_single(tbs, 0x30, "TBSCertificate")
    extensions = [c for c in _der_children(tbs, start, end) if c[0] == 0xA3]  # [3] EXPLICIT
    if not extensions:
        return []
    _, explicit_start, explicit_end = extensions[-1]
    seq_start, seq_end = _der_only_sequence(tbs, explicit_start, explicit_end, "extensions [3]")
    return _extension_values(tbs, seq_start, seq_end, _OID_SCT_EMBEDDED_DER)


def ocsp_scts(der: bytes, leaf: x509.Certificate | None = None) -> list[SCT]:
    """SCTs in the singleExtension 1.3.6.1.4.1.11129.2.4.5 of a DER OCSP response.

    With ``leaf``, the SingleResponse for the leaf's serial number is used and a response
    about other certificates is refused; without it the response must hold exactly one
    SingleResponse. The OCSP signature is not checked: the SCT signatures cover the leaf
    themselves, so an unsigned staple cannot forge them.
    """
    der = bytes(der)
    try:
        response = ocsp.load_der_ocsp_response(der)
        status = response.response_status
    except Exception as e:  # cryptography raises ValueError, but be safe on hostile input
        raise InvalidSCTList(f"not a DER OCSP response: {e}") from None
    if status != ocsp.OCSPResponseStatus.SUCCESSFUL:
        raise InvalidSCTList(f"OCSP response status is {status.name}, not SUCCESSFUL")
    try:
        singles = _ocsp_single_responses(der)
    except _DERError as e:
        raise InvalidSCTList(f"cannot read the OCSP response: {e}") from None
    if leaf is not None:
        matching = [s for s in singles if s[0] == leaf.serial_number]
        if not matching:
            serials = ", ".join(f"{s[0]:x}" for s in singles) or "none"
            raise InvalidSCTList(
                f"OCSP response is for serial number(s) {serials}, "
                f"not the leaf's {leaf.serial_number:x}"
            )
        chosen = matching[0]
    elif len(singles) == 1:
        chosen = singles[0]
    else:
        raise InvalidSCTList(
            f"OCSP response has {len(singles)} single responses; pass the leaf to choose one"
        )
    values = chosen[1]
    if not values:
        return []
    if len(values) > 1:
        raise InvalidSCTList(f"OCSP single response has {len(values)} SCT list extensions")
    return _sct_list_from_extension_value(values[0], Source.OCSP)


def _ocsp_single_responses(der: bytes) -> list[tuple[int, list[bytes]]]:
    """(serial number, SCT extnValues) per SingleResponse (RFC 6960 section 4.2.1)."""

    def child(start: int, end: int, index: int, tag: int, what: str) -> tuple[int, int]:
        children = _der_children(der, start, end)
        if len(children) <= index or children[index][0] != tag:
            raise _DERError(f"{what} missing")
        return children[index][1], children[index][2]

    # OCSPResponse ::= SEQUENCE { responseStatus, responseBytes [0] EXPLICIT ResponseBytes }
    start, end = _der_single(der, 0x30, "OCSPResponse")
    start, end = child(start, end, 1, 0xA0, "responseBytes")
    start, end = child(start, end, 0, 0x30, "ResponseBytes")
    start, end = child(start, end, 1, 0x04, "response OCTET STRING")
    # BasicOCSPResponse ::= SEQUENCE { tbsResponseData ResponseData, ... }
    start, end = child(start, end, 0, 0x30, "BasicOCSPResponse")
    start, end = child(start, end, 0, 0x30, "tbsResponseData")
    # ResponseData: [0] version, responderID ([1] or [2]), producedAt, responses SEQUENCE OF
    # SingleResponse: the only universal SEQUENCE among its children.
    sequences = [c for c in _der_children(der, start, end) if c[0] == 0x30]
    if len(sequences) != 1:
        raise _DERError("ResponseData has no single responses SEQUENCE")
    singles = []
    for tag, single_start, single_end in _der_children(der, sequences[0][1], sequences[0][2]):
        if tag != 0x30:
            raise _DERError("SingleResponse is not a SEQUENCE")
        # SingleResponse ::= SEQUENCE { certID, certStatus, thisUpdate GeneralizedTime,
        #   nextUpdate [0] EXPLICIT OPTIONAL, singleExtensions [1] EXPLICIT OPTIONAL }.
        # certStatus "revoked" is also tagged [1], hence the position-based search.
        parts = _der_children(der, single_start, single_end)
        if len(parts) < 3 or parts[0][0] != 0x30:
            raise _DERError("SingleResponse has no CertID")
        cert_id = _der_children(der, parts[0][1], parts[0][2])
        if len(cert_id) != 4 or cert_id[3][0] != 0x02:
            raise _DERError("CertID has no serialNumber")
        serial = int.from_bytes(der[cert_id[3][1] : cert_id[3][2]], "big", signed=True)
        values: list[bytes] = []
        for part_tag, part_start, part_end in parts[3:]:
            if part_tag == 0xA1:
                seq_start, seq_end = _der_only_sequence(
                    der, part_start, part_end, "singleExtensions"
                )
                values = _extension_values(der, seq_start, seq_end, _OID_SCT_OCSP_DER)
        singles.append((serial, values))
    return singles


# --- Issuer lookup.


@functools.lru_cache(maxsize=256)
def issuer_key_hash(issuer: x509.Certificate) -> bytes:
    """SHA-256 of the issuer's DER SubjectPublicKeyInfo (RFC 6962 section 3.2).

    Cached: a handful of intermediates issue almost every leaf, and reading the TBS costs
    tens of microseconds with newer cryptography releases.
    """
    return hashlib.sha256(_spki_der(issuer)).digest()


def _spki_der(cert: x509.Certificate) -> bytes:
    """The SubjectPublicKeyInfo exactly as encoded in ``cert``.

    Taken from the TBS rather than re-encoded from ``public_key()``: that is what the CA
    hashed, and it avoids loading (and validating) the key, the costliest step here.
    """
    tbs = cert.tbs_certificate_bytes
    try:
        start, end = _der_single(tbs, 0x30, "TBSCertificate")
        # version [0] (optional), serialNumber, signature, issuer, validity, subject, SPKI
        offset = start
        fields_before_spki = 6
        if _der_read(tbs, offset)[0] != 0xA0:
            fields_before_spki -= 1
        for _ in range(fields_before_spki):
            offset = _der_read(tbs, offset)[2]
        tag, _, spki_end = _der_read(tbs, offset)
        if tag != 0x30 or spki_end > end:
            raise _DERError("no SubjectPublicKeyInfo where expected")
        return tbs[offset:spki_end]
    except _DERError:  # cannot happen for a certificate cryptography loaded; stay correct
        return cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )


def is_precert_signing_cert(cert: x509.Certificate) -> bool:
    """True for a Precertificate Signing Certificate (EKU 1.3.6.1.4.1.11129.2.4.4)."""
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return False
    except Exception:  # unparseable extensions: it cannot be relied on as anything
        return False
    return OID_PRECERT_SIGNING in eku


def find_issuer(
    leaf: x509.Certificate, candidates: Sequence[x509.Certificate]
) -> x509.Certificate | None:
    """The candidate that issued ``leaf`` (served order is not trusted).

    A candidate whose signature on ``leaf`` verifies wins. When cryptography cannot check the
    signature at all (SHA-1 or another refused algorithm, an unsupported key type), a
    candidate whose subject is the leaf's issuer and whose subject key identifier matches the
    leaf's authority key identifier is taken instead: the embedded SCTs sign only the issuer's
    key hash (RFC 6962 section 3.2), so they still verify, and a wrong pick fails there.
    A signature that is checked and wrong rules the candidate out.

    Precertificate Signing Certificates are skipped: RFC 6962 section 3.2 hashes the key of
    the CA that issues the final certificate, never the precertificate signer's.
    """
    by_key_identifier: x509.Certificate | None = None
    for candidate in candidates:
        if candidate.subject != leaf.issuer or is_precert_signing_cert(candidate):
            continue
        try:
            leaf.verify_directly_issued_by(candidate)
        except InvalidSignature:
            continue
        except (ValueError, TypeError, UnsupportedAlgorithm):
            # Names already match, so this is "Unsupported signature algorithm" or key type.
            if by_key_identifier is None and _key_identifiers_match(leaf, candidate):
                by_key_identifier = candidate
            continue
        return candidate
    return by_key_identifier


def _key_identifiers_match(leaf: x509.Certificate, candidate: x509.Certificate) -> bool:
    """RFC 5280 4.2.1.1: the leaf's authorityKeyIdentifier.keyIdentifier equals the issuer's
    subjectKeyIdentifier (its extension, else the method-1 hash of its key). A leaf without
    one matches on the name alone; the SCT signature check is what proves the key."""
    try:
        aki = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    except x509.ExtensionNotFound:
        return True
    except Exception:  # unparseable extensions: no basis for a match
        return False
    if aki.key_identifier is None:
        return True
    try:
        ski = candidate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        return ski.digest == aki.key_identifier
    except x509.ExtensionNotFound:
        pass
    except Exception:
        return False
    try:
        computed = x509.SubjectKeyIdentifier.from_public_key(candidate.public_key())  # type: ignore[arg-type]
    except Exception:
        return False
    return computed.digest == aki.key_identifier


# --- Verification.


def signed_data(sct: SCT, leaf: x509.Certificate, issuer: x509.Certificate | None) -> bytes:
    """The RFC 6962 section 3.2 ``digitally-signed`` struct the log signed for ``sct``.

    Embedded SCTs sign a precert_entry (issuer key hash + TBS without the SCT extension);
    TLS-extension and OCSP SCTs sign an x509_entry (the leaf DER). ``extensions`` is always
    included, with its length, even when non-empty (static-ct-api leaf index).
    """
    if sct.source == Source.EMBEDDED:
        if issuer is None:
            raise SCTVerificationError("issuer certificate not available to verify an embedded SCT")
        try:
            tbs = leaf.tbs_precertificate_bytes
        except Exception as e:
            raise SCTVerificationError(f"cannot rebuild the precertificate TBS: {e}") from None
        entry_type = ENTRY_TYPE_PRECERT
        signed_entry = issuer_key_hash(issuer) + _u24_prefixed(tbs)
    else:
        entry_type = ENTRY_TYPE_X509
        signed_entry = _u24_prefixed(leaf.public_bytes(serialization.Encoding.DER))
    return (
        struct.pack(
            ">BBQH", sct.version, SIGNATURE_TYPE_CERTIFICATE_TIMESTAMP, sct.timestamp, entry_type
        )
        + signed_entry
        + struct.pack(">H", len(sct.extensions))
        + sct.extensions
    )


@dataclass(frozen=True)
class _LogKey:
    key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey | None
    log_id: bytes
    error: str | None


@functools.lru_cache(maxsize=512)
def _load_log_key(der: bytes) -> _LogKey:
    # Cached because verification runs on every new upstream connection and parsing the
    # SPKI costs about as much as a hash of the signed data.
    log_id = hashlib.sha256(der).digest()
    try:
        key = serialization.load_der_public_key(der)
    except Exception as e:
        return _LogKey(None, log_id, f"log key is not a DER SubjectPublicKeyInfo: {e}")
    if not isinstance(key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
        return _LogKey(None, log_id, f"unsupported log key type {type(key).__name__}")
    return _LogKey(key, log_id, None)


def _algorithm_name(sct: SCT) -> str:
    hash_name = _HASH_NAMES.get(sct.hash_algorithm, "unknown")
    sig_name = _SIG_NAMES.get(sct.signature_algorithm, "unknown")
    return f"hash={sct.hash_algorithm} ({hash_name}) sig={sct.signature_algorithm} ({sig_name})"


def verify_sct(
    sct: SCT, log_key_der: bytes, leaf: x509.Certificate, issuer: x509.Certificate | None
) -> None:
    """Check ``sct``'s signature with the log's DER SubjectPublicKeyInfo.

    Returns None when the signature verifies; otherwise raises SCTVerificationError whose
    message says why. Log acceptance (state, operator, policy) is not this function's job.
    """
    if sct.version != SCT_VERSION_V1:
        raise SCTVerificationError(f"SCT version {sct.report_version} is not RFC 6962")
    if sct.hash_algorithm != HASH_SHA256 or sct.signature_algorithm not in (SIG_ECDSA, SIG_RSA):
        raise SCTVerificationError(
            f"unsupported algorithm {_algorithm_name(sct)}; "
            "RFC 6962 logs sign with SHA-256 and ECDSA or RSA"
        )
    log_key = _load_log_key(bytes(log_key_der))
    if log_key.key is None:
        raise SCTVerificationError(log_key.error or "log key unusable")
    if log_key.log_id != sct.log_id:
        raise SCTVerificationError("log key does not match the SCT's log_id")
    key = log_key.key
    if sct.signature_algorithm == SIG_ECDSA and not isinstance(key, ec.EllipticCurvePublicKey):
        raise SCTVerificationError("SCT is signed with ECDSA but the log key is RSA")
    if sct.signature_algorithm == SIG_RSA and not isinstance(key, rsa.RSAPublicKey):
        raise SCTVerificationError("SCT is signed with RSA but the log key is EC")
    embedded_issuer = issuer if sct.source == Source.EMBEDDED else None
    if embedded_issuer is not None and is_precert_signing_cert(embedded_issuer):
        # It would only show up as a bad signature; say what is actually wrong.
        raise SCTVerificationError(
            "issuer is a precertificate signing certificate; embedded SCTs hash the key "
            "of the CA that issued the final certificate (RFC 6962 section 3.2)"
        )
    try:
        data = signed_data(sct, leaf, issuer)
    except SCTVerificationError:
        raise
    except Exception as e:  # defensive: cryptography errors must not escape
        raise SCTVerificationError(
            f"cannot build the signed data: {type(e).__name__}: {e}"
        ) from None
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(sct.signature, data, ec.ECDSA(hashes.SHA256()))
        else:
            key.verify(sct.signature, data, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        reason = "signature does not verify with the log key"
        # Only on failure (names cost more than the rest): point at the likely culprit.
        if embedded_issuer is not None and embedded_issuer.subject != leaf.issuer:
            reason += "; the issuer certificate's subject is not the leaf's issuer"
        raise SCTVerificationError(reason) from None
    except Exception as e:
        raise SCTVerificationError(f"signature check failed: {type(e).__name__}: {e}") from None
