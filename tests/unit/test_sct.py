"""expect_ct.sct: parsing the three SCT channels and verifying signatures (RFC 6962 3.2, 3.3)."""

from __future__ import annotations

import base64
import dataclasses
import datetime
import hashlib
import json
import struct
from dataclasses import dataclass
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509 import ocsp
from cryptography.x509.oid import ObjectIdentifier
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

import support
from expect_ct import sct as sct_module
from expect_ct.sct import SCT
from expect_ct.sct import InvalidSCTList
from expect_ct.sct import SCTVerificationError
from expect_ct.sct import Source
from expect_ct.sct import embedded_scts
from expect_ct.sct import encode_sct
from expect_ct.sct import encode_sct_list
from expect_ct.sct import find_issuer
from expect_ct.sct import is_precert_signing_cert
from expect_ct.sct import issuer_key_hash
from expect_ct.sct import ocsp_scts
from expect_ct.sct import parse_sct
from expect_ct.sct import parse_sct_list
from expect_ct.sct import signed_data
from expect_ct.sct import verify_sct
from support import pki

VECTORS = support.VECTORS
MANIFEST = json.loads((VECTORS / "manifest.json").read_text())


def load_log_keys() -> dict[bytes, bytes]:
    """log_id -> DER SPKI from the vendored Google list (minimal parse, not expect_ct.loglist)."""
    doc = json.loads((VECTORS / MANIFEST["log_list"]).read_text())
    keys = {}
    for operator in doc["operators"]:
        for log in operator["logs"] + operator.get("tiled_logs", []):
            keys[base64.b64decode(log["log_id"])] = base64.b64decode(log["key"])
    return keys


LOG_KEYS = load_log_keys()


def load_cert(name: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate((VECTORS / name).read_bytes())


@dataclass(frozen=True)
class RealVector:
    meta: dict[str, Any]
    leaf: x509.Certificate
    issuer: x509.Certificate | None
    scts: list[SCT]


def load_vector(meta: dict[str, Any]) -> RealVector:
    leaf = load_cert(meta["leaf"])
    issuer = load_cert(meta["issuer"]) if "issuer" in meta else None
    if meta["delivery"] == "embedded":
        scts = embedded_scts(leaf)
    else:
        scts = parse_sct_list((VECTORS / meta["sct_list"]).read_bytes(), Source.TLS_EXTENSION)
    return RealVector(meta, leaf, issuer, scts)


VECTOR_IDS = [v["id"] for v in MANIFEST["vectors"]]
REAL = {v["id"]: load_vector(v) for v in MANIFEST["vectors"]}
REAL_SCTS = [(vid, i) for vid in VECTOR_IDS for i in range(len(REAL[vid].meta["scts"]))]
EMBEDDED_ECDSA = ("rpv-letsencrypt.org-2026", 0)
EMBEDDED_WITH_EXTENSIONS = ("rpv-letsencrypt.org-2026", 1)
EMBEDDED_RSA = ("swiftlibp2p-star.facebook.com-2016", 1)
TLS_ECDSA = ("sctrs-star.google.com-2017", 0)


def real(vid: str, index: int) -> tuple[RealVector, SCT]:
    vector = REAL[vid]
    return vector, vector.scts[index]


# --- real vectors


def test_manifest_covers_both_channels_and_algorithms() -> None:
    deliveries = {REAL[vid].meta["delivery"] for vid in VECTOR_IDS}
    algorithms = {s["signature_algorithm"] for vid in VECTOR_IDS for s in REAL[vid].meta["scts"]}
    assert deliveries == {"embedded", "tls_extension"}
    assert algorithms == {"ecdsa-sha256", "rsa-sha256"}


@pytest.mark.parametrize("vid", VECTOR_IDS)
def test_real_vector_files_are_intact(vid: str) -> None:
    vector = REAL[vid]
    der = vector.leaf.public_bytes(serialization.Encoding.DER)
    assert hashlib.sha256(der).hexdigest() == vector.meta["leaf_sha256"]
    assert len(vector.scts) == vector.meta["num_scts"]
    if vector.issuer is not None:
        assert issuer_key_hash(vector.issuer).hex() == vector.meta["issuer_key_hash_hex"]
        assert find_issuer(vector.leaf, [vector.leaf, vector.issuer]) == vector.issuer


@pytest.mark.parametrize(("vid", "index"), REAL_SCTS)
def test_real_sct_fields_match_manifest(vid: str, index: int) -> None:
    vector, sct = real(vid, index)
    meta = vector.meta["scts"][index]
    assert base64.b64encode(sct.log_id).decode() == meta["log_id"]
    assert sct.timestamp == meta["timestamp_ms"]
    assert sct.timestamp_datetime.isoformat().replace("+00:00", "Z") == meta["timestamp"]
    assert sct.extensions.hex() == meta["extensions_hex"]
    assert sct.version == 0 and sct.report_version == 1
    algorithm = {3: "ecdsa-sha256", 1: "rsa-sha256"}[sct.signature_algorithm]
    assert algorithm == meta["signature_algorithm"]


@pytest.mark.parametrize(("vid", "index"), REAL_SCTS)
def test_real_sct_verifies(vid: str, index: int) -> None:
    vector, sct = real(vid, index)
    verify_sct(sct, LOG_KEYS[sct.log_id], vector.leaf, vector.issuer)


@pytest.mark.parametrize("vid", [v for v in VECTOR_IDS if REAL[v].meta["delivery"] == "embedded"])
def test_embedded_scts_keep_the_exact_bytes_cryptography_sees(vid: str) -> None:
    vector = REAL[vid]
    ext = vector.leaf.extensions.get_extension_for_class(
        x509.PrecertificateSignedCertificateTimestamps
    )
    octet_string = ext.value.public_bytes()
    assert parse_sct_list(pki.der_content(octet_string), Source.EMBEDDED) == vector.scts
    theirs = list(ext.value)
    assert [s.log_id for s in theirs] == [s.log_id for s in vector.scts]
    assert [s.signature for s in theirs] == [s.signature for s in vector.scts]
    assert [s.extension_bytes for s in theirs] == [s.extensions for s in vector.scts]


def test_sct_list_bytes_round_trip_through_encoder() -> None:
    raw = (VECTORS / "sctrs-star.google.com-2017.sct_list.bin").read_bytes()
    scts = REAL["sctrs-star.google.com-2017"].scts
    assert encode_sct_list([s.serialized for s in scts]) == raw
    for sct in scts:
        fields = {
            f.name: getattr(sct, f.name)
            for f in dataclasses.fields(sct)
            if f.name not in ("source", "serialized")
        }
        assert encode_sct(**fields) == sct.serialized


# --- tampering with real SCTs


def tampered(sct: SCT, **changes: Any) -> SCT:
    return dataclasses.replace(sct, **changes)


def flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]


@pytest.mark.parametrize("which", [EMBEDDED_ECDSA, EMBEDDED_RSA, TLS_ECDSA])
@pytest.mark.parametrize(
    "change",
    [
        lambda s: {"signature": flip(s.signature, len(s.signature) // 2)},
        lambda s: {"signature": flip(s.signature, len(s.signature) - 1)},
        lambda s: {"timestamp": s.timestamp + 1},
        lambda s: {"extensions": b"\x00"},
    ],
    ids=["signature-middle", "signature-last", "timestamp", "extensions-added"],
)
def test_tampered_real_sct_fails(which: tuple[str, int], change: Any) -> None:
    vector, sct = real(*which)
    bad = tampered(sct, **change(sct))
    with pytest.raises(SCTVerificationError, match="signature does not verify with the log key"):
        verify_sct(bad, LOG_KEYS[sct.log_id], vector.leaf, vector.issuer)


def test_changed_extension_byte_fails() -> None:
    vector, sct = real(*EMBEDDED_WITH_EXTENSIONS)
    bad = tampered(sct, extensions=flip(sct.extensions, len(sct.extensions) - 1))
    with pytest.raises(SCTVerificationError, match="signature does not verify"):
        verify_sct(bad, LOG_KEYS[sct.log_id], vector.leaf, vector.issuer)


def test_wrong_issuer_fails() -> None:
    vector, sct = real(*EMBEDDED_ECDSA)
    other_issuer = REAL["swiftlibp2p-star.facebook.com-2016"].issuer
    with pytest.raises(
        SCTVerificationError,
        match="signature does not verify with the log key; the issuer certificate's subject is "
        "not the leaf's issuer",
    ):
        verify_sct(sct, LOG_KEYS[sct.log_id], vector.leaf, other_issuer)


def test_missing_issuer_fails_for_embedded_only() -> None:
    vector, sct = real(*EMBEDDED_ECDSA)
    with pytest.raises(SCTVerificationError, match="issuer certificate not available"):
        verify_sct(sct, LOG_KEYS[sct.log_id], vector.leaf, None)


@pytest.mark.parametrize("which", [EMBEDDED_ECDSA, EMBEDDED_RSA])
def test_embedded_sct_presented_as_tls_extension_fails(which: tuple[str, int]) -> None:
    vector, sct = real(*which)
    for source in (Source.TLS_EXTENSION, Source.OCSP):
        with pytest.raises(SCTVerificationError, match="signature does not verify"):
            verify_sct(tampered(sct, source=source), LOG_KEYS[sct.log_id], vector.leaf, None)


def test_real_tls_sct_presented_as_embedded_fails() -> None:
    vector, sct = real(*TLS_ECDSA)
    as_embedded = tampered(sct, source=Source.EMBEDDED)
    with pytest.raises(SCTVerificationError, match="issuer certificate not available"):
        verify_sct(as_embedded, LOG_KEYS[sct.log_id], vector.leaf, None)


def test_wrong_log_key_is_refused_by_log_id() -> None:
    vector, sct = real(*EMBEDDED_ECDSA)
    other_key = LOG_KEYS[real(*EMBEDDED_WITH_EXTENSIONS)[1].log_id]
    with pytest.raises(SCTVerificationError, match="log key does not match the SCT's log_id"):
        verify_sct(sct, other_key, vector.leaf, vector.issuer)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"version": 1}, "SCT version 2 is not RFC 6962"),
        ({"version": 255}, "SCT version 256 is not RFC 6962"),
        ({"hash_algorithm": 2}, r"unsupported algorithm hash=2 \(sha1\) sig=3 \(ecdsa\)"),
        ({"signature_algorithm": 7}, r"unsupported algorithm hash=4 \(sha256\) sig=7 \(ed25519\)"),
        ({"signature_algorithm": 1}, "SCT is signed with RSA but the log key is EC"),
        ({"signature": b""}, "signature does not verify"),
        ({"signature": b"\x30\x02\x02\x00"}, "signature does not verify"),
    ],
)
def test_unverifiable_fields(changes: dict[str, Any], message: str) -> None:
    vector, sct = real(*EMBEDDED_ECDSA)
    with pytest.raises(SCTVerificationError, match=message):
        verify_sct(tampered(sct, **changes), LOG_KEYS[sct.log_id], vector.leaf, vector.issuer)


def test_ecdsa_claim_with_rsa_key() -> None:
    vector, sct = real(*EMBEDDED_RSA)
    with pytest.raises(
        SCTVerificationError, match="SCT is signed with ECDSA but the log key is RSA"
    ):
        verify_sct(
            tampered(sct, signature_algorithm=3), LOG_KEYS[sct.log_id], vector.leaf, vector.issuer
        )


def test_bad_log_keys() -> None:
    vector, sct = real(*EMBEDDED_ECDSA)
    with pytest.raises(SCTVerificationError, match="log key is not a DER SubjectPublicKeyInfo"):
        verify_sct(sct, b"\x30\x03\x02\x01\x00", vector.leaf, vector.issuer)
    ed_key = (
        ed25519.Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(SCTVerificationError, match="unsupported log key type Ed25519PublicKey"):
        verify_sct(sct, ed_key, vector.leaf, vector.issuer)


# --- synthetic PKI


@dataclass(frozen=True)
class Synthetic:
    root: pki.CA
    inter: pki.CA
    log: pki.TestLog
    leaf: x509.Certificate
    embedded: SCT
    ocsp_der: bytes


@pytest.fixture(scope="module")
def syn() -> Synthetic:
    root = pki.make_root()
    inter = pki.make_intermediate(root)
    log = pki.make_log("Synthetic", "Op")
    leaf, _ = pki.make_leaf(inter, embedded=[(log, 1_750_000_000_000)])
    (sct,) = embedded_scts(leaf)
    ocsp_der = pki.ocsp_response(leaf, inter, sct_list=pki.tls_sct_list(leaf, [(log, 1)]))
    return Synthetic(root, inter, log, leaf, sct, ocsp_der)


def test_signed_data_layout(syn: Synthetic) -> None:
    data = signed_data(syn.embedded, syn.leaf, syn.inter.cert)
    tbs = syn.leaf.tbs_precertificate_bytes
    assert data == (
        b"\x00\x00"
        + struct.pack(">QH", 1_750_000_000_000, 1)
        + hashlib.sha256(
            syn.inter.cert.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        ).digest()
        + len(tbs).to_bytes(3, "big")
        + tbs
        + b"\x00\x00"
    )
    as_tls = dataclasses.replace(syn.embedded, source=Source.TLS_EXTENSION, extensions=b"ab")
    der = syn.leaf.public_bytes(serialization.Encoding.DER)
    assert signed_data(as_tls, syn.leaf, None) == (
        b"\x00\x00"
        + struct.pack(">QH", 1_750_000_000_000, 0)
        + len(der).to_bytes(3, "big")
        + der
        + b"\x00\x02ab"
    )


def test_same_name_other_key_issuer_fails(syn: Synthetic) -> None:
    impostor = pki.make_intermediate(syn.root)  # same default name, different key
    assert impostor.cert.subject == syn.inter.cert.subject
    with pytest.raises(SCTVerificationError, match="signature does not verify"):
        verify_sct(syn.embedded, syn.log.public_der, syn.leaf, impostor.cert)
    assert find_issuer(syn.leaf, [impostor.cert]) is None
    assert find_issuer(syn.leaf, [impostor.cert, syn.root.cert, syn.inter.cert]) == syn.inter.cert


def test_precert_signing_cert_as_issuer_fails(syn: Synthetic) -> None:
    signer = pki.make_precert_signer(syn.inter)
    with pytest.raises(SCTVerificationError, match="issuer is a precertificate signing"):
        verify_sct(syn.embedded, syn.log.public_der, syn.leaf, signer.cert)


def test_find_issuer_skips_precert_signing_twin(syn: Synthetic) -> None:
    # Same name and key as the real issuer but with the CT EKU: it would verify the leaf's
    # signature, yet RFC 6962 says it is never the issuer whose key is hashed.
    twin = (
        x509.CertificateBuilder()
        .subject_name(syn.inter.cert.subject)
        .issuer_name(syn.root.cert.subject)
        .public_key(syn.inter.key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(syn.inter.cert.not_valid_before_utc)
        .not_valid_after(syn.inter.cert.not_valid_after_utc)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.ExtendedKeyUsage([pki.OID_PRECERT_SIGNING]), critical=False)
        .sign(syn.root.key, hashes.SHA256())
    )
    syn.leaf.verify_directly_issued_by(twin)
    assert find_issuer(syn.leaf, [twin]) is None
    assert find_issuer(syn.leaf, [twin, syn.inter.cert]) == syn.inter.cert


def test_embedded_source_on_cert_without_scts(syn: Synthetic) -> None:
    plain, _ = pki.make_leaf(syn.inter)
    with pytest.raises(SCTVerificationError, match="cannot rebuild the precertificate TBS"):
        verify_sct(syn.embedded, syn.log.public_der, plain, syn.inter.cert)


def test_tls_sct_presented_as_embedded_fails(syn: Synthetic) -> None:
    # syn.leaf has embedded SCTs, so a precert TBS exists and the issuer is right: only the
    # entry type differs (x509_entry signed, precert_entry checked).
    (sct,) = parse_sct_list(pki.tls_sct_list(syn.leaf, [(syn.log, 8)]), Source.TLS_EXTENSION)
    verify_sct(sct, syn.log.public_der, syn.leaf, syn.inter.cert)
    with pytest.raises(SCTVerificationError, match="signature does not verify"):
        verify_sct(
            tampered(sct, source=Source.EMBEDDED), syn.log.public_der, syn.leaf, syn.inter.cert
        )


def test_rsa_log_synthetic(syn: Synthetic) -> None:
    rsa_log = pki.make_log("RSA", "Op", rsa=True)
    leaf, _ = pki.make_leaf(syn.inter, embedded=[(rsa_log, 1)])
    (sct,) = embedded_scts(leaf)
    verify_sct(sct, rsa_log.public_der, leaf, syn.inter.cert)
    with pytest.raises(SCTVerificationError, match="signature does not verify"):
        verify_sct(tampered(sct, timestamp=2), rsa_log.public_der, leaf, syn.inter.cert)


def test_tls_extension_sct_with_extensions(syn: Synthetic) -> None:
    raw = pki.tls_sct_list(syn.leaf, [(syn.log, 5)], extensions=b"\x00\x00\x05\x00\x00\x00\x00\x07")
    (sct,) = parse_sct_list(raw, Source.TLS_EXTENSION)
    verify_sct(sct, syn.log.public_der, syn.leaf, None)
    with pytest.raises(SCTVerificationError, match="signature does not verify"):
        verify_sct(tampered(sct, extensions=b""), syn.log.public_der, syn.leaf, None)


def test_version_is_kept_by_parser_and_refused_by_verifier(syn: Synthetic) -> None:
    serialized = pki.sign_sct(
        syn.log,
        entry_type=0,
        signed_entry=pki.x509_signed_entry(syn.leaf),
        timestamp_ms=9,
        version=1,
    )
    sct = parse_sct(serialized, Source.TLS_EXTENSION)
    assert sct.version == 1 and sct.report_version == 2
    with pytest.raises(SCTVerificationError, match="SCT version 2 is not RFC 6962"):
        verify_sct(sct, syn.log.public_der, syn.leaf, None)


# --- embedded extraction edge cases


def leaf_with_raw_extension(
    issuer: pki.CA, oid: ObjectIdentifier, value: bytes
) -> x509.Certificate:
    leaf, _ = pki.make_leaf(issuer)
    builder = (
        x509.CertificateBuilder()
        .subject_name(leaf.subject)
        .issuer_name(leaf.issuer)
        .public_key(leaf.public_key())
        .serial_number(leaf.serial_number)
        .not_valid_before(leaf.not_valid_before_utc)
        .not_valid_after(leaf.not_valid_after_utc)
        .add_extension(x509.UnrecognizedExtension(oid, value), critical=False)
    )
    return builder.sign(issuer.key, hashes.SHA256())


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (b"\x05\x00", "SCT extension value is not a DER OCTET STRING: .* tag 0x05"),
        (pki.der_octet_string(b"") + b"\x00", "not a DER OCTET STRING: .*trailing"),
        (pki.der_octet_string(b"\x00\x00"), "SCT list is empty"),
        (pki.der_octet_string(b"\x00\x04\x00\x02ab"), r"SCT #0: SCT is truncated"),
        (b"\x04\x85\x00\x00\x00\x00\x01\x00", "unsupported length encoding"),
    ],
)
def test_malformed_embedded_extension(syn: Synthetic, value: bytes, message: str) -> None:
    cert = leaf_with_raw_extension(syn.inter, pki.OID_SCT_EMBEDDED, value)
    with pytest.raises(InvalidSCTList, match=message):
        embedded_scts(cert)


def test_embedded_scts_survive_an_unrelated_malformed_extension(syn: Synthetic) -> None:
    # A basicConstraints extension whose value is garbage: cryptography refuses the whole
    # extension list, our DER walk still finds the SCTs.
    leaf, _ = pki.make_leaf(syn.inter)
    bad_bc = x509.UnrecognizedExtension(x509.oid.ExtensionOID.BASIC_CONSTRAINTS, b"\x01\x02")
    base = (
        x509.CertificateBuilder()
        .subject_name(leaf.subject)
        .issuer_name(leaf.issuer)
        .public_key(leaf.public_key())
        .serial_number(leaf.serial_number)
        .not_valid_before(leaf.not_valid_before_utc)
        .not_valid_after(leaf.not_valid_after_utc)
        .add_extension(bad_bc, critical=False)
    )
    tbs = base.sign(syn.inter.key, hashes.SHA256()).tbs_certificate_bytes
    serialized = pki.sign_sct(
        syn.log,
        entry_type=1,
        signed_entry=pki.precert_signed_entry(syn.inter.cert, tbs),
        timestamp_ms=77,
    )
    cert = base.add_extension(
        x509.UnrecognizedExtension(
            pki.OID_SCT_EMBEDDED, pki.der_octet_string(pki.sct_list([serialized]))
        ),
        critical=False,
    ).sign(syn.inter.key, hashes.SHA256())
    with pytest.raises(ValueError):
        _ = cert.extensions
    (sct,) = embedded_scts(cert)
    assert sct.serialized == serialized
    verify_sct(sct, syn.log.public_der, cert, syn.inter.cert)


def test_no_extensions_at_all(syn: Synthetic) -> None:
    leaf, _ = pki.make_leaf(syn.inter, hosts=())
    bare = (
        x509.CertificateBuilder()
        .subject_name(leaf.subject)
        .issuer_name(leaf.issuer)
        .public_key(leaf.public_key())
        .serial_number(1)
        .not_valid_before(leaf.not_valid_before_utc)
        .not_valid_after(leaf.not_valid_after_utc)
        .sign(syn.inter.key, hashes.SHA256())
    )
    assert embedded_scts(bare) == []


# --- OCSP extraction


def test_ocsp_scts_without_leaf(syn: Synthetic) -> None:
    tls = pki.tls_sct_list(syn.leaf, [(syn.log, 3)])
    der = pki.ocsp_response(syn.leaf, syn.inter, sct_list=tls)
    (sct,) = ocsp_scts(der)
    assert sct.source == Source.OCSP
    verify_sct(sct, syn.log.public_der, syn.leaf, None)


def test_ocsp_for_another_certificate(syn: Synthetic) -> None:
    other, _ = pki.make_leaf(syn.inter, serial=0xABC)
    der = pki.ocsp_response(other, syn.inter, sct_list=pki.tls_sct_list(other, [(syn.log, 3)]))
    with pytest.raises(InvalidSCTList, match="serial number\\(s\\) abc, not the leaf's"):
        ocsp_scts(der, syn.leaf)


@pytest.mark.parametrize(
    "status",
    [ocsp.OCSPResponseStatus.UNAUTHORIZED, ocsp.OCSPResponseStatus.TRY_LATER],
)
def test_ocsp_unsuccessful(status: ocsp.OCSPResponseStatus) -> None:
    der = ocsp.OCSPResponseBuilder.build_unsuccessful(status).public_bytes(
        serialization.Encoding.DER
    )
    with pytest.raises(InvalidSCTList, match=f"OCSP response status is {status.name}"):
        ocsp_scts(der)


@pytest.mark.parametrize("data", [b"", b"\x30\x00", b"not ocsp at all"])
def test_not_ocsp(data: bytes) -> None:
    with pytest.raises(InvalidSCTList, match="not a DER OCSP response"):
        ocsp_scts(data)


def test_ocsp_malformed_sct_list(syn: Synthetic) -> None:
    der = pki.ocsp_response(syn.leaf, syn.inter, sct_list=b"\x00\x00")
    with pytest.raises(InvalidSCTList, match="SCT list is empty"):
        ocsp_scts(der, syn.leaf)


def multi_response(syn: Synthetic, leaves: list[x509.Certificate], sct_list: bytes) -> bytes:
    """An OCSP response with one SingleResponse per leaf (each carrying ``sct_list``)."""
    ders = [pki.ocsp_response(leaf, syn.inter, sct_list=sct_list) for leaf in leaves]

    def singles(der: bytes) -> bytes:
        (_, response_bytes) = pki.der_children(pki.der_content(der))
        (_, octets) = pki.der_children(pki.der_content(response_bytes[1]))
        (tbs, *_) = pki.der_children(pki.der_content(octets[1]))
        (responses,) = [c for c in pki.der_children(tbs[1]) if c[0] == 0x30]
        return responses[1]

    merged = pki.der_tlv(0x30, b"".join(singles(d) for d in ders))
    return _replace_in_tbs(ders[0], pki.der_tlv(0x30, singles(ders[0])), merged, syn.inter.key)


def _replace_in_tbs(der: bytes, old: bytes, new: bytes, key: pki.PrivateKey) -> bytes:
    """Replace bytes inside tbsResponseData, re-sign, and rebuild the enclosing TLVs."""
    (status, response_bytes) = pki.der_children(pki.der_content(der))
    (response_type, octets) = pki.der_children(pki.der_content(response_bytes[1]))
    (tbs, sig_alg, _signature, *certs) = pki.der_children(pki.der_content(octets[1]))
    new_tbs = pki.der_tlv(0x30, tbs[1].replace(old, new))
    basic = pki.der_tlv(
        0x30,
        new_tbs
        + sig_alg[2]
        + pki.der_tlv(0x03, b"\x00" + pki.sign(key, new_tbs))
        + b"".join(c[2] for c in certs),
    )
    inner = pki.der_tlv(0x30, response_type[2] + pki.der_octet_string(basic))
    return pki.der_tlv(0x30, status[2] + pki.der_tlv(0xA0, inner))


def test_ocsp_multi_response_picks_the_leaf(syn: Synthetic) -> None:
    other, _ = pki.make_leaf(syn.inter)
    tls = pki.tls_sct_list(syn.leaf, [(syn.log, 3)])
    der = multi_response(syn, [other, syn.leaf], tls)
    assert len(list(ocsp.load_der_ocsp_response(der).responses)) == 2
    (sct,) = ocsp_scts(der, syn.leaf)
    verify_sct(sct, syn.log.public_der, syn.leaf, None)
    with pytest.raises(InvalidSCTList, match="has 2 single responses; pass the leaf"):
        ocsp_scts(der)


# --- malformed lists


def valid_sct(extensions: bytes = b"", signature: bytes = b"sig") -> bytes:
    return encode_sct(log_id=b"L" * 32, timestamp=1, extensions=extensions, signature=signature)


GOOD = valid_sct()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "SCT list is truncated: 0 bytes"),
        (b"\x00", "SCT list is truncated: 1 bytes"),
        (b"\x00\x00", "SCT list is empty; RFC 6962 requires at least one SCT"),
        (b"\x00\x05abc", "list length field says 5 bytes but 3 follow"),
        (pki.sct_list([GOOD]) + b"\x00", "list length field says .* but .* follow"),
        (pki.u16(b"\x00\x00"), r"SCT #0 is empty \(zero length\)"),
        (pki.u16(pki.u16(GOOD) + b"\x00\x00"), r"SCT #1 is empty"),
        (pki.u16(b"\x00\x10ab"), "SCT #0: length field says 16 bytes but 2 remain"),
        (pki.u16(b"\xff\xff" + GOOD), "SCT #0: length field says 65535 bytes"),
        (pki.u16(pki.u16(GOOD) + b"\x00"), "SCT #1: truncated 2-byte length"),
        (pki.sct_list([GOOD[:-1]]), "SCT #0: SCT signature length 3 overruns the SCT"),
        (pki.sct_list([GOOD + b"x"]), "SCT #0: SCT has 1 trailing bytes after the signature"),
        (pki.sct_list([GOOD[:20]]), "SCT #0: SCT is truncated: 20 bytes"),
        (
            pki.sct_list([GOOD[:41] + b"\x01\x00" + GOOD[43:]]),
            "SCT #0: SCT extensions length 256 overruns",
        ),
        (pki.sct_list([GOOD, GOOD[:-2]]), "SCT #1: SCT signature length"),
    ],
)
def test_malformed_lists(data: bytes, message: str) -> None:
    with pytest.raises(InvalidSCTList, match=message):
        parse_sct_list(data, Source.TLS_EXTENSION)


def test_minimal_and_unknown_version_scts_parse() -> None:
    minimal = encode_sct(log_id=b"\x00" * 32, timestamp=0, signature=b"")
    assert len(minimal) == 47
    (sct,) = parse_sct_list(pki.sct_list([minimal]), Source.OCSP)
    assert sct.signature == b"" and sct.extensions == b""
    v9 = b"\x09" + minimal[1:]
    assert parse_sct(v9, Source.EMBEDDED).version == 9


def test_encoders_refuse_impossible_values() -> None:
    with pytest.raises(ValueError, match="log_id must be 32 bytes, not 31"):
        encode_sct(log_id=b"x" * 31, timestamp=0, signature=b"")
    with pytest.raises(ValueError, match="SCT signature is 65536 bytes"):
        encode_sct(log_id=b"x" * 32, timestamp=0, signature=b"s" * 65536)
    with pytest.raises(ValueError, match="SCT list is .* more than a 2-byte length allows"):
        encode_sct_list([b"s" * 40000, b"t" * 40000])
    assert encode_sct_list([]) == b"\x00\x00"


# --- property tests

sct_fields = st.fixed_dictionaries(
    {
        "version": st.integers(0, 255),
        "log_id": st.binary(min_size=32, max_size=32),
        "timestamp": st.integers(0, 2**64 - 1),
        "extensions": st.binary(max_size=40),
        "hash_algorithm": st.integers(0, 255),
        "signature_algorithm": st.integers(0, 255),
        "signature": st.binary(max_size=80),
    }
)


@given(st.lists(sct_fields, min_size=1, max_size=5), st.sampled_from(list(Source)))
def test_generated_lists_round_trip(fields: list[dict[str, Any]], source: Source) -> None:
    serialized = [encode_sct(**f) for f in fields]
    parsed = parse_sct_list(encode_sct_list(serialized), source)
    assert [s.serialized for s in parsed] == serialized
    for sct, f in zip(parsed, fields, strict=True):
        assert {k: getattr(sct, k) for k in f} == f
        assert sct.source == source


@given(st.binary(max_size=300))
def test_arbitrary_bytes_parse_or_raise_invalid(data: bytes) -> None:
    try:
        scts = parse_sct_list(data, Source.TLS_EXTENSION)
    except InvalidSCTList:
        return
    assert encode_sct_list([s.serialized for s in scts]) == data


@given(st.binary(max_size=300))
def test_arbitrary_bytes_into_ocsp_raise_only_invalid(data: bytes) -> None:
    try:
        ocsp_scts(data)
    except InvalidSCTList:
        pass


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=200)
@given(position=st.integers(0, 10_000), value=st.integers(0, 255))
def test_corrupted_ocsp_response_raises_only_invalid(
    syn: Synthetic, position: int, value: int
) -> None:
    der = syn.ocsp_der
    position %= len(der)
    corrupted = der[:position] + bytes([value]) + der[position + 1 :]
    for leaf in (None, syn.leaf):
        try:
            ocsp_scts(corrupted, leaf)
        except InvalidSCTList:
            pass


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=200)
@given(position=st.integers(0, 10_000), value=st.integers(0, 255))
def test_corrupted_sct_never_escapes_verification_error(
    syn: Synthetic, position: int, value: int
) -> None:
    serialized = syn.embedded.serialized
    position %= len(serialized)
    corrupted = serialized[:position] + bytes([value]) + serialized[position + 1 :]
    try:
        sct = parse_sct(corrupted, Source.EMBEDDED)
    except InvalidSCTList:
        return
    try:
        verify_sct(sct, syn.log.public_der, syn.leaf, syn.inter.cert)
    except SCTVerificationError:
        assert corrupted != serialized
    else:
        assert corrupted == serialized


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=100)
@given(key=st.binary(max_size=120), issuer_is_root=st.booleans())
def test_arbitrary_log_keys_raise_only_verification_error(
    syn: Synthetic, key: bytes, issuer_is_root: bool
) -> None:
    issuer = syn.root.cert if issuer_is_root else syn.inter.cert
    with pytest.raises(SCTVerificationError):
        verify_sct(syn.embedded, key, syn.leaf, issuer)


def test_ec_key_on_another_curve_is_accepted_type() -> None:
    # "accept any EC key": a P-384 log still verifies (hash stays SHA-256).
    log = pki.TestLog(ec.generate_private_key(ec.SECP384R1()), "P384", "Op")
    root = pki.make_root()
    leaf, _ = pki.make_leaf(root, embedded=[(log, 10)])
    (sct,) = embedded_scts(leaf)
    verify_sct(sct, log.public_der, leaf, root.cert)


# --- defensive DER reading (inputs cryptography would already refuse at load time)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "truncated TLV header"),
        (b"\x30", "truncated TLV header"),
        (b"\x1f\x01\x00", "multi-byte tag at offset 0"),
        (b"\x30\x80", "unsupported length encoding 0x80"),
        (b"\x30\x85\x00\x00\x00\x00\x01", "unsupported length encoding 0x85"),
        (b"\x30\x82\x01", "truncated length"),
        (b"\x30\x05ab", "length 5 at offset 0 overruns the data"),
    ],
)
def test_der_reader_errors(data: bytes, message: str) -> None:
    with pytest.raises(sct_module._DERError, match=message):
        sct_module._der_read(data, 0)


def test_der_child_overrunning_parent() -> None:
    with pytest.raises(sct_module._DERError, match="child overruns its parent"):
        sct_module._der_children(b"\x04\x05abcde", 0, 3)


SCT_OID = pki.der_oid(pki.OID_SCT_EMBEDDED)


@pytest.mark.parametrize(
    ("extensions", "message"),
    [
        (pki.der_tlv(0x04, b""), "extension has tag 0x04, expected a SEQUENCE"),
        (pki.der_tlv(0x30, pki.der_tlv(0x04, b"")), "extension does not start with an OID"),
        (pki.der_tlv(0x30, SCT_OID), "SCT extension is not"),
        (pki.der_tlv(0x30, SCT_OID + pki.der_tlv(0x02, b"\x01")), "SCT extension is not"),
    ],
    ids=["not-sequence", "no-oid", "no-value", "integer-value"],
)
def test_malformed_extension_entries(extensions: bytes, message: str) -> None:
    tbs = pki.der_tlv(0x30, pki.der_tlv(0xA3, pki.der_tlv(0x30, extensions)))
    with pytest.raises(sct_module._DERError, match=message):
        sct_module._tbs_sct_extension_values(tbs)


def test_extensions_field_must_hold_one_sequence() -> None:
    tbs = pki.der_tlv(0x30, pki.der_tlv(0xA3, pki.der_tlv(0x04, b"")))
    with pytest.raises(sct_module._DERError, match=r"extensions \[3\] does not hold"):
        sct_module._tbs_sct_extension_values(tbs)


@pytest.mark.parametrize(
    ("der", "message"),
    [
        (pki.der_tlv(0x30, pki.der_tlv(0x0A, b"\x00")), "responseBytes missing"),
        (
            pki.der_tlv(0x30, pki.der_tlv(0x0A, b"\x00") + pki.der_tlv(0xA0, b"")),
            "ResponseBytes missing",
        ),
    ],
)
def test_ocsp_walk_errors(der: bytes, message: str) -> None:
    with pytest.raises(sct_module._DERError, match=message):
        sct_module._ocsp_single_responses(der)


def ocsp_with_responses(responses_content: bytes) -> bytes:
    tbs = pki.der_tlv(0x30, pki.der_tlv(0xA2, b"") + pki.der_tlv(0x30, responses_content))
    basic = pki.der_tlv(0x30, tbs)
    inner = pki.der_tlv(0x30, pki.der_tlv(0x06, b"\x01") + pki.der_octet_string(basic))
    return pki.der_tlv(0x30, pki.der_tlv(0x0A, b"\x00") + pki.der_tlv(0xA0, inner))


CERT_ID = pki.der_tlv(
    0x30,
    pki.der_tlv(0x30, b"")
    + pki.der_tlv(0x04, b"")
    + pki.der_tlv(0x04, b"")
    + pki.der_tlv(0x02, b"\x05"),
)
GOOD_STATUS_AND_TIME = pki.der_tlv(0x80, b"") + pki.der_tlv(0x18, b"20260101000000Z")


@pytest.mark.parametrize(
    ("responses", "message"),
    [
        (pki.der_tlv(0x04, b""), "SingleResponse is not a SEQUENCE"),
        (pki.der_tlv(0x30, pki.der_tlv(0x04, b"")), "SingleResponse has no CertID"),
        (
            pki.der_tlv(0x30, pki.der_tlv(0x30, b"") + GOOD_STATUS_AND_TIME),
            "CertID has no serialNumber",
        ),
        (
            pki.der_tlv(0x30, CERT_ID + GOOD_STATUS_AND_TIME + pki.der_tlv(0xA1, b"")),
            "singleExtensions does not hold exactly one SEQUENCE",
        ),
    ],
)
def test_ocsp_single_response_errors(responses: bytes, message: str) -> None:
    with pytest.raises(sct_module._DERError, match=message):
        sct_module._ocsp_single_responses(ocsp_with_responses(responses))


def test_ocsp_single_response_serial_and_values() -> None:
    revoked = pki.der_tlv(0xA1, pki.der_tlv(0x18, b"20250101000000Z"))  # also tagged [1]
    single = pki.der_tlv(0x30, CERT_ID + revoked + pki.der_tlv(0x18, b"20260101000000Z"))
    assert sct_module._ocsp_single_responses(ocsp_with_responses(single)) == [(5, [])]


def test_ocsp_response_data_without_responses() -> None:
    tbs = pki.der_tlv(0x30, pki.der_tlv(0xA2, b""))
    inner = pki.der_tlv(
        0x30, pki.der_tlv(0x06, b"\x01") + pki.der_octet_string(pki.der_tlv(0x30, tbs))
    )
    der = pki.der_tlv(0x30, pki.der_tlv(0x0A, b"\x00") + pki.der_tlv(0xA0, inner))
    with pytest.raises(sct_module._DERError, match="no single responses SEQUENCE"):
        sct_module._ocsp_single_responses(der)


# --- duplicates and unusable certificates


def test_duplicate_sct_extension_in_certificate(syn: Synthetic) -> None:
    # CertificateBuilder refuses duplicates, so patch the DER: repeat the SCT extension.
    der = syn.leaf.public_bytes(serialization.Encoding.DER)
    (tbs, sig_alg, _signature) = pki.der_children(pki.der_content(der))
    sct_oid = pki.der_oid(pki.OID_SCT_EMBEDDED)
    rebuilt = b""
    for tag, content, whole in pki.der_children(tbs[1]):
        if tag == 0xA3:  # [3] EXPLICIT SEQUENCE OF Extension
            extensions = [e[2] for e in pki.der_children(pki.der_content(content))]
            (sct_extension,) = [
                e for e in extensions if pki.der_children(pki.der_content(e))[0][2] == sct_oid
            ]
            whole = pki.der_tlv(0xA3, pki.der_tlv(0x30, b"".join(extensions) + sct_extension))
        rebuilt += whole
    new_tbs = pki.der_tlv(0x30, rebuilt)
    signature = pki.der_tlv(0x03, b"\x00" + pki.sign(syn.inter.key, new_tbs))
    cert = x509.load_der_x509_certificate(pki.der_tlv(0x30, new_tbs + sig_alg[2] + signature))
    with pytest.raises(InvalidSCTList, match="certificate has 2 SCT list extensions"):
        embedded_scts(cert)


def test_duplicate_sct_extension_in_ocsp(syn: Synthetic) -> None:
    plain = pki.ocsp_response(syn.leaf, syn.inter)
    tls = pki.tls_sct_list(syn.leaf, [(syn.log, 1)])
    der = pki.add_single_extension(
        plain, syn.inter.key, pki.OID_SCT_OCSP, pki.der_octet_string(tls), copies=2
    )
    with pytest.raises(InvalidSCTList, match="OCSP single response has 2 SCT list extensions"):
        ocsp_scts(der, syn.leaf)


def test_leaf_with_other_extensions_but_no_scts(syn: Synthetic) -> None:
    plain, _ = pki.make_leaf(syn.inter)
    assert len(plain.extensions) > 0
    assert embedded_scts(plain) == []


def test_unparseable_extensions_are_not_a_precert_signer(syn: Synthetic) -> None:
    cert = leaf_with_raw_extension(syn.inter, x509.oid.ExtensionOID.EXTENDED_KEY_USAGE, b"\x01\x02")
    assert not is_precert_signing_cert(cert)


def test_issuer_key_hash_does_not_need_a_loadable_key(syn: Synthetic) -> None:
    # Swap the issuer's id-ecPublicKey OID for an unknown one of the same length: the key
    # no longer loads, but the hash is over the SPKI bytes as encoded in the certificate.
    der = syn.inter.cert.public_bytes(serialization.Encoding.DER)
    ec_oid = pki.der_oid(ObjectIdentifier("1.2.840.10045.2.1"))
    unknown = pki.der_oid(ObjectIdentifier("1.2.840.10045.2.9"))
    assert der.count(ec_oid) == 1
    broken = x509.load_der_x509_certificate(der.replace(ec_oid, unknown))
    with pytest.raises(Exception):  # noqa: B017 - whatever cryptography raises for it
        broken.public_key()
    spki = syn.inter.cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert issuer_key_hash(syn.inter.cert) == hashlib.sha256(spki).digest()
    assert issuer_key_hash(broken) == hashlib.sha256(spki.replace(ec_oid, unknown)).digest()
    with pytest.raises(SCTVerificationError, match="signature does not verify"):
        verify_sct(syn.embedded, syn.log.public_der, syn.leaf, broken)


def test_issuer_key_hash_of_v1_certificate() -> None:
    # X.509 v1 has no [0] version field: the SPKI is one field earlier.
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "v1")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(syn_time(0))
        .not_valid_after(syn_time(1))
        .sign(key, hashes.SHA256())
    )
    der = cert.public_bytes(serialization.Encoding.DER)
    (tbs, sig_alg, _signature) = pki.der_children(pki.der_content(der))
    fields = pki.der_children(tbs[1])
    assert fields[0][0] == 0xA0  # cryptography always writes v3; drop the version to get v1
    v1_tbs = pki.der_tlv(0x30, b"".join(f[2] for f in fields[1:]))
    signature = pki.der_tlv(0x03, b"\x00" + pki.sign(key, v1_tbs))
    v1 = x509.load_der_x509_certificate(pki.der_tlv(0x30, v1_tbs + sig_alg[2] + signature))
    assert v1.version == x509.Version.v1
    spki = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert issuer_key_hash(v1) == hashlib.sha256(spki).digest()


def syn_time(years: int) -> datetime.datetime:
    return datetime.datetime(2025 + years, 1, 1, tzinfo=datetime.UTC)


# --- Issuers whose signature cryptography cannot check (SHA-1 RSA, as before 2016).


@dataclass(frozen=True)
class Sha1Chain:
    root: pki.CA
    inter: pki.CA
    logs: tuple[pki.TestLog, pki.TestLog]
    leaf: x509.Certificate


@pytest.fixture(scope="module")
def sha1() -> Sha1Chain:
    root = pki.make_root()
    inter = pki.make_rsa_intermediate(root)
    logs = (pki.make_log("SHA-1 era EC", "Op A"), pki.make_log("SHA-1 era RSA", "Op B", rsa=True))
    leaf = pki.make_sha1_leaf(inter, embedded=[(logs[0], 1_450_000_000_000), (logs[1], 1)])
    return Sha1Chain(root, inter, logs, leaf)


def test_sha1_leaf_signature_cannot_be_checked_by_cryptography(sha1: Sha1Chain) -> None:
    # The premise of the key-identifier fallback: cryptography refuses SHA-1 signatures.
    assert isinstance(sha1.leaf.signature_hash_algorithm, hashes.SHA1)
    with pytest.raises(ValueError, match="Unsupported signature algorithm"):
        sha1.leaf.verify_directly_issued_by(sha1.inter.cert)


def test_sha1_leaf_issuer_found_by_name_and_key_identifier(sha1: Sha1Chain) -> None:
    assert find_issuer(sha1.leaf, [sha1.root.cert, sha1.leaf, sha1.inter.cert]) == sha1.inter.cert
    scts = embedded_scts(sha1.leaf)
    assert len(scts) == 2
    for sct, log in zip(scts, sha1.logs, strict=True):
        verify_sct(sct, log.public_der, sha1.leaf, sha1.inter.cert)


def test_sha1_leaf_same_name_other_key_is_not_its_issuer(sha1: Sha1Chain) -> None:
    impostor = pki.make_rsa_intermediate(sha1.root)  # same default name, other key and SKI
    assert impostor.cert.subject == sha1.inter.cert.subject
    assert find_issuer(sha1.leaf, [impostor.cert]) is None
    assert find_issuer(sha1.leaf, [impostor.cert, sha1.inter.cert]) == sha1.inter.cert


def test_checked_bad_signature_is_never_overridden_by_key_identifier(syn: Synthetic) -> None:
    # Same issuer name, a signature cryptography can check and that is wrong: refused.
    other = pki.make_intermediate(syn.root)
    forged = pki.make_leaf(other, hosts=("localhost",))[0]
    assert forged.issuer == syn.inter.cert.subject
    assert find_issuer(forged, [syn.inter.cert]) is None
