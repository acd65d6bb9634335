"""Test PKI minting: CAs, leaves with embedded SCTs, CT logs, SCT lists, OCSP staples, log lists.

Everything here is synthetic and built in memory with ``cryptography`` alone (EC P-256 keys
unless RSA is asked for), so tests can mint exactly the artefact they need in a few
milliseconds. This docstring is the provenance record of every synthetic vector.

Recipes (RFC 6962 section 3.2 unless stated otherwise):

* **Log** (``make_log``): a fresh P-256 (or RSA-2048) key. ``log_id`` is SHA-256 of the DER
  SubjectPublicKeyInfo, the same value log lists publish as ``log_id`` and ``key``.
* **SCT** (``sign_sct``): the log signs the ``digitally-signed`` struct
  ``version(1) || signature_type=0(1) || timestamp(8) || entry_type(2) || signed_entry ||
  u16(extensions)`` with ECDSA-SHA256 or RSA-PKCS#1v1.5-SHA256, and the result is serialized as
  ``version || log_id(32) || timestamp || u16(extensions) || hash=4 || sig=3|1 || u16(sig)``.
  ``signed_entry`` is passed already encoded: ``u24(leaf DER)`` for x509_entry
  (``x509_signed_entry``), ``SHA-256(issuer SPKI) || u24(TBS)`` for precert_entry
  (``precert_signed_entry``).
* **CAs** (``make_root``, ``make_intermediate``): CA certificates with basicConstraints,
  keyUsage, SKI/AKI, valid from a day ago for ten years. ``make_precert_signer`` adds the
  Precertificate Signing EKU 1.3.6.1.4.1.11129.2.4.4 (RFC 6962 section 3.1).
* **Leaf with embedded SCTs** (``make_leaf``): the certificate builder gets every extension
  except the SCT list and is signed once to obtain its TBSCertificate; that TBS is exactly what
  ``tbs_precertificate_bytes`` returns for the final certificate, because the SCT list
  extension (1.3.6.1.4.1.11129.2.4.2) is appended last and removing it restores the same bytes.
  Each log signs a precert_entry over ``SHA-256(issuer SPKI) || u24(TBS)``; the TLS-encoded
  ``SignedCertificateTimestampList`` is wrapped in a DER OCTET STRING (the extnValue content is
  itself an OCTET STRING, RFC 6962 section 3.3) and the builder is signed again.
* **TLS-extension SCTs** (``tls_sct_list``): x509_entry SCTs over ``u24(leaf DER)``, as a
  ``SignedCertificateTimestampList`` (u16 total, u16-prefixed SCTs). ``serverinfo_pem`` wraps
  such a list as extension 18 for ``openssl s_server -serverinfo``.
* **OCSP staple** (``ocsp_response``): ``OCSPResponseBuilder`` signed by the issuer gives a
  "good" response. cryptography cannot put extensions in a SingleResponse, so the DER is
  patched: ``[1] EXPLICIT Extensions { 1.3.6.1.4.1.11129.2.4.5, OCTET STRING(OCTET STRING(list)) }``
  is appended to each SingleResponse, tbsResponseData is re-signed with the issuer key and the
  outer TLVs are rebuilt (RFC 6960 section 4.2.1).
* **Log lists** (``log_list_json``): dicts in Google's v3 schema or Apple's variant (state
  objects with a ``version``, top-level ``assetVersion``/``version``), logs grouped by operator.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import ipaddress
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.oid import NameOID
from cryptography.x509.oid import ObjectIdentifier

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

OID_SCT_EMBEDDED = ObjectIdentifier("1.3.6.1.4.1.11129.2.4.2")
OID_PRECERT_SIGNING = ObjectIdentifier("1.3.6.1.4.1.11129.2.4.4")
OID_SCT_OCSP = ObjectIdentifier("1.3.6.1.4.1.11129.2.4.5")

X509_ENTRY = 0
PRECERT_ENTRY = 1

UTC = datetime.UTC


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def _now() -> datetime.datetime:
    return datetime.datetime.now(UTC).replace(microsecond=0)


# --- TLS presentation language (RFC 5246 section 4), written independently of expect_ct.sct
# so that tests of the parser are not circular.


def u16(data: bytes) -> bytes:
    return struct.pack(">H", len(data)) + data


def u24(data: bytes) -> bytes:
    return struct.pack(">I", len(data))[1:] + data


def sct_list(serialized: Sequence[bytes]) -> bytes:
    """TLS ``SignedCertificateTimestampList`` of already serialized SCTs."""
    return u16(b"".join(u16(s) for s in serialized))


# --- DER, just enough to wrap and patch.


def der_len(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def der_tlv(tag: int, content: bytes) -> bytes:
    return bytes([tag]) + der_len(len(content)) + content


def der_octet_string(content: bytes) -> bytes:
    return der_tlv(0x04, content)


def der_children(data: bytes) -> list[tuple[int, bytes, bytes]]:
    """Split concatenated TLVs into (tag, content, whole TLV). Test-only, trusts its input."""
    out = []
    i = 0
    while i < len(data):
        tag = data[i]
        first = data[i + 1]
        if first < 0x80:
            length, header = first, 2
        else:
            n = first & 0x7F
            length, header = int.from_bytes(data[i + 2 : i + 2 + n], "big"), 2 + n
        out.append((tag, data[i + header : i + header + length], data[i : i + header + length]))
        i += header + length
    return out


def der_content(tlv: bytes) -> bytes:
    ((_, content, _),) = der_children(tlv)
    return content


# --- Logs and SCTs.


@dataclass(frozen=True)
class TestLog:
    """A CT log we control: its private key signs SCTs."""

    __test__ = False  # not a pytest test class

    key: PrivateKey
    description: str
    operator: str

    @property
    def public_der(self) -> bytes:
        return self.key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    @property
    def public_b64(self) -> str:
        return base64.b64encode(self.public_der).decode()

    @property
    def log_id(self) -> bytes:
        return hashlib.sha256(self.public_der).digest()


def make_log(description: str, operator: str, *, rsa: bool = False) -> TestLog:
    key: PrivateKey
    if rsa:
        key = _rsa_key()
    else:
        key = ec.generate_private_key(ec.SECP256R1())
    return TestLog(key=key, description=description, operator=operator)


def _rsa_key() -> rsa.RSAPrivateKey:
    # A separate function because make_log's ``rsa`` flag shadows the module name.
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def sign(key: PrivateKey, data: bytes) -> bytes:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(data, ec.ECDSA(hashes.SHA256()))
    return key.sign(data, padding.PKCS1v15(), hashes.SHA256())


def signature_algorithm(key: PrivateKey) -> int:
    """RFC 5246 SignatureAlgorithm code point: ecdsa(3) or rsa(1)."""
    return 3 if isinstance(key, ec.EllipticCurvePrivateKey) else 1


def x509_signed_entry(leaf: x509.Certificate) -> bytes:
    return u24(leaf.public_bytes(serialization.Encoding.DER))


def spki_sha256(cert: x509.Certificate) -> bytes:
    return hashlib.sha256(
        cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    ).digest()


def precert_signed_entry(issuer: x509.Certificate, tbs: bytes) -> bytes:
    return spki_sha256(issuer) + u24(tbs)


def sign_sct(
    log: TestLog,
    *,
    entry_type: int,
    signed_entry: bytes,
    timestamp_ms: int,
    extensions: bytes = b"",
    version: int = 0,
) -> bytes:
    """A serialized SCT (no list length prefix). ``signed_entry`` is already TLS-encoded."""
    to_sign = (
        struct.pack(">BBQH", version, 0, timestamp_ms, entry_type) + signed_entry + u16(extensions)
    )
    signature = sign(log.key, to_sign)
    return (
        struct.pack(">B", version)
        + log.log_id
        + struct.pack(">Q", timestamp_ms)
        + u16(extensions)
        + bytes([4, signature_algorithm(log.key)])
        + u16(signature)
    )


# --- Certificates.


@dataclass(frozen=True)
class CA:
    cert: x509.Certificate
    key: PrivateKey


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "expect-ct tests"),
        ]
    )


def _ca_builder(
    name: str, key: PrivateKey, issuer_name: x509.Name, path_length: int | None
) -> x509.CertificateBuilder:
    now = _now()
    return (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )


def _aki(issuer: CA) -> x509.AuthorityKeyIdentifier:
    return x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key())


def make_root(name: str = "Test Root") -> CA:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _ca_builder(name, key, _name(name), None).sign(key, hashes.SHA256())
    return CA(cert=cert, key=key)


def make_intermediate(parent: CA, name: str = "Test Intermediate") -> CA:
    key = ec.generate_private_key(ec.SECP256R1())
    builder = _ca_builder(name, key, parent.cert.subject, 0).add_extension(
        _aki(parent), critical=False
    )
    return CA(cert=builder.sign(parent.key, hashes.SHA256()), key=key)


def make_precert_signer(issuer: CA) -> CA:
    """A Precertificate Signing Certificate (RFC 6962 section 3.1) issued by ``issuer``."""
    key = ec.generate_private_key(ec.SECP256R1())
    issuer_cn = issuer.cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    name = f"{issuer_cn!s} Precertificate Signing"
    builder = (
        _ca_builder(name[:64], key, issuer.cert.subject, 0)
        .add_extension(_aki(issuer), critical=False)
        .add_extension(x509.ExtendedKeyUsage([OID_PRECERT_SIGNING]), critical=False)
    )
    return CA(cert=builder.sign(issuer.key, hashes.SHA256()), key=key)


# AlgorithmIdentifier DER of sha256WithRSAEncryption and sha1WithRSAEncryption (RFC 4055,
# RFC 3279): same length, so one can stand in for the other inside a TBSCertificate.
_ALG_SHA256_RSA = bytes.fromhex("300d06092a864886f70d01010b0500")
_ALG_SHA1_RSA = bytes.fromhex("300d06092a864886f70d0101050500")


def make_rsa_intermediate(parent: CA, name: str = "Test RSA Intermediate") -> CA:
    """An RSA-2048 CA (issued by ``parent`` with SHA-256), to sign SHA-1 leaves."""
    key = _rsa_key()
    builder = _ca_builder(name, key, parent.cert.subject, 0).add_extension(
        _aki(parent), critical=False
    )
    return CA(cert=builder.sign(parent.key, hashes.SHA256()), key=key)


def make_sha1_leaf(
    issuer: CA,
    *,
    embedded: Sequence[tuple[TestLog, int]],
    hosts: Sequence[str] = ("localhost",),
    not_before: datetime.datetime | None = None,
    not_after: datetime.datetime | None = None,
) -> x509.Certificate:
    """A leaf signed with SHA-1 RSA by an RSA ``issuer``, with real embedded SCTs, as CAs
    issued them until 2016 (cryptography refuses to sign with SHA-1, so the TBS is patched
    and signed by hand)."""
    assert isinstance(issuer.key, rsa.RSAPrivateKey), "SHA-1 leaves need an RSA issuer"
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(hosts[0]))
        .issuer_name(issuer.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or now - datetime.timedelta(hours=1))
        .not_valid_after(not_after or now + datetime.timedelta(days=90))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(_aki(issuer), critical=False)
        .add_extension(
            x509.SubjectAlternativeName([_general_name(h) for h in hosts]), critical=False
        )
    )

    def sha1_tbs(cert: x509.Certificate) -> bytes:
        tbs = cert.tbs_certificate_bytes
        assert tbs.count(_ALG_SHA256_RSA) == 1
        return tbs.replace(_ALG_SHA256_RSA, _ALG_SHA1_RSA)

    precert_tbs = sha1_tbs(builder.sign(issuer.key, hashes.SHA256()))
    entry = precert_signed_entry(issuer.cert, precert_tbs)
    scts = [
        sign_sct(log, entry_type=PRECERT_ENTRY, signed_entry=entry, timestamp_ms=ts)
        for log, ts in embedded
    ]
    builder = builder.add_extension(
        x509.UnrecognizedExtension(OID_SCT_EMBEDDED, der_octet_string(sct_list(scts))),
        critical=False,
    )
    tbs = sha1_tbs(builder.sign(issuer.key, hashes.SHA256()))
    signature = issuer.key.sign(tbs, padding.PKCS1v15(), hashes.SHA1())
    der = der_tlv(0x30, tbs + _ALG_SHA1_RSA + der_tlv(0x03, b"\x00" + signature))
    cert = x509.load_der_x509_certificate(der)
    assert cert.tbs_precertificate_bytes == precert_tbs, "SCT extension must be the last one"
    return cert


def _general_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def make_leaf(
    issuer: CA,
    *,
    hosts: Sequence[str] = ("localhost", "127.0.0.1"),
    not_before: datetime.datetime | None = None,
    not_after: datetime.datetime | None = None,
    embedded: Sequence[tuple[TestLog, int]] = (),
    sct_extensions: bytes = b"",
    key: PrivateKey | None = None,
    serial: int | None = None,
    ca_flag: bool = False,
) -> tuple[x509.Certificate, PrivateKey]:
    """A TLS server certificate; ``embedded`` logs sign real precert_entry SCTs for it.

    ``ca_flag`` asserts basicConstraints cA in the leaf: OpenSSL accepts such a server
    certificate, cryptography's web PKI verifier refuses it (issue 17, attack 5).
    """
    if key is None:
        key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(hosts[0] if hosts else "leaf"))
        .issuer_name(issuer.cert.subject)
        .public_key(key.public_key())
        .serial_number(serial if serial is not None else x509.random_serial_number())
        .not_valid_before(not_before or now - datetime.timedelta(hours=1))
        .not_valid_after(not_after or now + datetime.timedelta(days=90))
        .add_extension(x509.BasicConstraints(ca=ca_flag, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(_aki(issuer), critical=False)
    )
    if hosts:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([_general_name(h) for h in hosts]), critical=False
        )
    if embedded:
        tbs = builder.sign(issuer.key, hashes.SHA256()).tbs_certificate_bytes
        entry = precert_signed_entry(issuer.cert, tbs)
        scts = [
            sign_sct(
                log,
                entry_type=PRECERT_ENTRY,
                signed_entry=entry,
                timestamp_ms=ts,
                extensions=sct_extensions,
            )
            for log, ts in embedded
        ]
        builder = builder.add_extension(
            x509.UnrecognizedExtension(OID_SCT_EMBEDDED, der_octet_string(sct_list(scts))),
            critical=False,
        )
        cert = builder.sign(issuer.key, hashes.SHA256())
        assert cert.tbs_precertificate_bytes == tbs, "SCT extension must be the last one"
        return cert, key
    return builder.sign(issuer.key, hashes.SHA256()), key


def tls_sct_list(
    leaf: x509.Certificate, scts: Sequence[tuple[TestLog, int]], *, extensions: bytes = b""
) -> bytes:
    """x509_entry SCTs for ``leaf`` as a TLS SignedCertificateTimestampList."""
    entry = x509_signed_entry(leaf)
    return sct_list(
        [
            sign_sct(
                log,
                entry_type=X509_ENTRY,
                signed_entry=entry,
                timestamp_ms=ts,
                extensions=extensions,
            )
            for log, ts in scts
        ]
    )


# --- OCSP.


def ocsp_response(
    leaf: x509.Certificate,
    issuer: CA,
    *,
    sct_list: bytes | None = None,
    this_update: datetime.datetime | None = None,
    next_update: datetime.datetime | None = None,
) -> bytes:
    """A DER "good" OCSP response for ``leaf`` signed by ``issuer``, optionally with SCTs."""
    now = _now()
    builder = (
        ocsp.OCSPResponseBuilder()
        .add_response(
            cert=leaf,
            issuer=issuer.cert,
            algorithm=hashes.SHA1(),
            cert_status=ocsp.OCSPCertStatus.GOOD,
            this_update=this_update or now - datetime.timedelta(hours=1),
            next_update=next_update or now + datetime.timedelta(days=7),
            revocation_time=None,
            revocation_reason=None,
        )
        .responder_id(ocsp.OCSPResponderEncoding.HASH, issuer.cert)
    )
    der = builder.sign(issuer.key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)
    if sct_list is None:
        return der
    return add_single_extension(der, issuer.key, OID_SCT_OCSP, der_octet_string(sct_list))


def der_oid(oid: ObjectIdentifier) -> bytes:
    arcs = [int(a) for a in oid.dotted_string.split(".")]
    body = bytes([40 * arcs[0] + arcs[1]])
    for arc in arcs[2:]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        body += bytes(reversed(chunk))
    return der_tlv(0x06, body)


def add_single_extension(
    der: bytes, signer: PrivateKey, oid: ObjectIdentifier, extn_value: bytes, *, copies: int = 1
) -> bytes:
    """Append a non-critical extension to every SingleResponse and re-sign (RFC 6960 4.2.1).

    ``copies`` > 1 repeats the extension (invalid per RFC 5280, for negative tests).
    """
    (status, response_bytes_explicit) = der_children(der_content(der))
    # responseBytes [0] EXPLICIT ResponseBytes ::= SEQUENCE { responseType, response OCTET STRING }
    (response_type, response_octets) = der_children(der_content(response_bytes_explicit[1]))
    # BasicOCSPResponse ::= SEQUENCE { tbsResponseData, signatureAlgorithm, signature, certs }
    tbs, sig_alg, *rest = der_children(der_content(response_octets[1]))
    certs = rest[1:]  # rest[0] is the old signature BIT STRING
    one = der_tlv(0x30, der_oid(oid) + der_octet_string(extn_value))
    extension = der_tlv(0xA1, der_tlv(0x30, one * copies))
    new_tbs_children = []
    for tag, content, whole in der_children(tbs[1]):
        if tag == 0x30:  # responses: SEQUENCE OF SingleResponse (the only universal SEQUENCE)
            whole = der_tlv(
                0x30,
                b"".join(der_tlv(0x30, single[1] + extension) for single in der_children(content)),
            )
        new_tbs_children.append(whole)
    new_tbs = der_tlv(0x30, b"".join(new_tbs_children))
    signature = der_tlv(0x03, b"\x00" + sign(signer, new_tbs))
    new_basic = der_tlv(0x30, new_tbs + sig_alg[2] + signature + b"".join(c[2] for c in certs))
    new_response_bytes = der_tlv(0x30, response_type[2] + der_octet_string(new_basic))
    return der_tlv(0x30, status[2] + der_tlv(0xA0, new_response_bytes))


# --- Log lists.


@dataclass
class LogEntry:
    log: TestLog
    state: str | None = "usable"
    state_since: datetime.datetime = datetime.datetime(2020, 1, 1, tzinfo=UTC)
    previous_operators: list[tuple[str, datetime.datetime]] = field(default_factory=list)
    tiled: bool = False
    temporal_interval: tuple[datetime.datetime, datetime.datetime] | None = None


def rfc3339(moment: datetime.datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _slug(text: str) -> str:
    return "".join(c for c in text.lower() if c.isalnum()) or "log"


def _log_json(entry: LogEntry, schema: str) -> dict[str, Any]:
    log = entry.log
    out: dict[str, Any] = {
        "description": log.description,
        "log_id": base64.b64encode(log.log_id).decode(),
        "key": log.public_b64,
        "mmd": 60 if entry.tiled else 86400,
    }
    base = f"https://{_slug(log.operator)}.example/{_slug(log.description)}/"
    if entry.tiled:
        out["submission_url"] = base
        out["monitoring_url"] = base.replace("https://", "https://monitor.")
    else:
        out["url"] = base
    if entry.state is not None:
        state: dict[str, Any] = {"timestamp": rfc3339(entry.state_since)}
        if schema == "apple":
            state["version"] = "1"
        out["state"] = {entry.state: state}
    if entry.temporal_interval is not None:
        start, end = entry.temporal_interval
        out["temporal_interval"] = {
            "start_inclusive": rfc3339(start),
            "end_exclusive": rfc3339(end),
        }
    if entry.previous_operators:
        out["previous_operators"] = [
            {"name": name, "end_time": rfc3339(end)} for name, end in entry.previous_operators
        ]
    return out


APPLE_SCHEMA_URL = "https://valid.apple.com/ct/log_list/schema_versions/log_list_schema_v5.json"


def log_list_json(
    entries: Sequence[LogEntry],
    *,
    timestamp: datetime.datetime | None = None,
    schema: str = "google",
) -> dict[str, Any]:
    """A log list dict in Google's v3 schema ("google") or Apple's variant ("apple").

    ``timestamp`` becomes Google's ``log_list_timestamp`` (omitted when None, as in scraped
    copies). Apple's list has no such field; its top level carries ``assetVersion`` and
    ``version`` instead, and the timestamp is ignored.
    """
    if schema not in ("google", "apple"):
        raise ValueError(f"unknown log list schema {schema!r}: use 'google' or 'apple'")
    operators: dict[str, dict[str, Any]] = {}
    for entry in entries:
        name = entry.log.operator
        operator = operators.setdefault(
            name,
            {"name": name, "email": [f"ct@{_slug(name)}.example"], "logs": [], "tiled_logs": []},
        )
        operator["tiled_logs" if entry.tiled else "logs"].append(_log_json(entry, schema))
    if schema == "apple":
        return {
            "$schema": APPLE_SCHEMA_URL,
            "assetVersion": 1,
            "assetVersionV2": 1,
            "version": "1",
            "operators": list(operators.values()),
        }
    out: dict[str, Any] = {"is_all_logs": False, "version": "1.0"}
    if timestamp is not None:
        out["log_list_timestamp"] = rfc3339(timestamp)
    out["operators"] = list(operators.values())
    return out


# --- Serialization helpers for files and servers.


def pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


# SSL_EXT_CLIENT_HELLO | SSL_EXT_TLS1_2_SERVER_HELLO | SSL_EXT_TLS1_3_CERTIFICATE
SERVERINFOV2_CONTEXT = 0x1180


def serverinfo_pem(sct_list: bytes, *, v2: bool = True) -> bytes:
    """``openssl s_server -serverinfo`` file serving ``sct_list`` as TLS extension 18.

    V2 (context 0x1180) serves TLS 1.2 and 1.3; V1 serves TLS 1.2 only.
    """
    ext = struct.pack(">HH", 18, len(sct_list)) + sct_list
    if v2:
        body, label = struct.pack(">I", SERVERINFOV2_CONTEXT) + ext, "SERVERINFOV2 FOR CT"
    else:
        body, label = ext, "SERVERINFO FOR CT"
    b64 = base64.b64encode(body).decode()
    lines = [b64[i : i + 64] for i in range(0, len(b64), 64)]
    return (f"-----BEGIN {label}-----\n" + "\n".join(lines) + f"\n-----END {label}-----\n").encode()


# --- hostile artefacts (shared by the unit and end-to-end hostile-input tests) ---


def resign(cert: x509.Certificate, issuer: CA, tbs: bytes) -> x509.Certificate:
    """``cert`` with its TBSCertificate replaced by ``tbs``, signed again by ``issuer``."""
    der = cert.public_bytes(serialization.Encoding.DER)
    ((_, content, _),) = der_children(der)
    _, signature_algorithm, _ = der_children(content)
    signature = der_tlv(0x03, b"\x00" + sign(issuer.key, tbs))
    return x509.load_der_x509_certificate(der_tlv(0x30, tbs + signature_algorithm[2] + signature))


def unparsable_certificate(issuer: CA) -> bytes:
    """DER of a certificate OpenSSL reads and cryptography refuses with a ValueError: its
    version is v1 spelled out, which DER forbids (a DEFAULT value must be omitted).
    OpenSSL ignores it as an unused extra of a served chain, and so does mitmproxy (it skips
    certificates cryptography cannot load); issue 17, attack 4."""
    cert, _ = make_leaf(issuer, hosts=("junk.invalid",))
    der = cert.public_bytes(serialization.Encoding.DER)
    v3 = bytes.fromhex("a003020102")  # [0] EXPLICIT INTEGER 2
    assert der.count(v3) == 1
    return der.replace(v3, bytes.fromhex("a003020100"))


def der_pem(der: bytes, label: str = "CERTIFICATE") -> bytes:
    """One PEM block around ``der`` (for DER that cryptography refuses to load)."""
    b64 = base64.b64encode(der).decode()
    lines = [b64[i : i + 64] for i in range(0, len(b64), 64)]
    return (f"-----BEGIN {label}-----\n" + "\n".join(lines) + f"\n-----END {label}-----\n").encode()


def with_sct_extensions(
    issuer: CA, extn_values: list[bytes], *, hosts: tuple[str, ...] = ("localhost",)
) -> tuple[x509.Certificate, PrivateKey]:
    """A leaf whose extensions end with one SCT list extension per raw ``extn_values`` item.

    cryptography refuses to build a certificate with a repeated extension (RFC 5280 4.2), so
    the extensions SEQUENCE is patched and the TBSCertificate signed again.
    """
    leaf, key = make_leaf(issuer, hosts=hosts)
    ((_, tbs_content, _),) = der_children(leaf.tbs_certificate_bytes)
    extra = b"".join(
        der_tlv(0x30, der_oid(OID_SCT_EMBEDDED) + der_octet_string(value)) for value in extn_values
    )
    parts = []
    for tag, content, whole in der_children(tbs_content):
        if tag == 0xA3:  # extensions [3] EXPLICIT SEQUENCE OF Extension
            ((_, extensions, _),) = der_children(content)
            whole = der_tlv(0xA3, der_tlv(0x30, extensions + extra))
        parts.append(whole)
    return resign(leaf, issuer, der_tlv(0x30, b"".join(parts))), key


def ocsp_shell(inner: bytes) -> bytes:
    """An OCSPResponse (RFC 6960 4.2.1): successful, id-pkix-ocsp-basic, ``inner`` as response."""
    basic = der_oid(x509.ObjectIdentifier("1.3.6.1.5.5.7.48.1.1"))
    response_bytes = der_tlv(0x30, basic + der_octet_string(inner))
    return der_tlv(0x30, b"\x0a\x01\x00" + der_tlv(0xA0, response_bytes))
