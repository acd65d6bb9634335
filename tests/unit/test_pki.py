"""The test PKI mints artefacts that verify: checked by our verifier and, where cheap, OpenSSL."""

from __future__ import annotations

import base64
import datetime
import hashlib
import os
import re
import select
import shutil
import subprocess
import time
from collections.abc import Callable
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp

from expect_ct.sct import Source
from expect_ct.sct import embedded_scts
from expect_ct.sct import find_issuer
from expect_ct.sct import is_precert_signing_cert
from expect_ct.sct import ocsp_scts
from expect_ct.sct import parse_sct_list
from expect_ct.sct import verify_sct
from support import pki

OPENSSL = shutil.which("openssl")
needs_openssl = pytest.mark.skipif(OPENSSL is None, reason="openssl command not installed")


@dataclass(frozen=True)
class World:
    root: pki.CA
    inter: pki.CA
    ec_log: pki.TestLog
    rsa_log: pki.TestLog
    leaf: x509.Certificate
    leaf_key: pki.PrivateKey
    tls_list: bytes
    ocsp_der: bytes


@pytest.fixture(scope="module")
def world() -> World:
    root = pki.make_root()
    inter = pki.make_intermediate(root)
    ec_log = pki.make_log("Test EC log", "Operator A")
    rsa_log = pki.make_log("Test RSA log", "Operator B", rsa=True)
    stamp = pki.now_ms() - 60_000  # OpenSSL rejects SCTs from the future, even by 1 ms
    leaf, key = pki.make_leaf(inter, embedded=[(ec_log, stamp), (rsa_log, stamp + 1)])
    tls_list = pki.tls_sct_list(leaf, [(ec_log, stamp + 2), (rsa_log, stamp + 3)])
    ocsp_der = pki.ocsp_response(leaf, inter, sct_list=tls_list)
    return World(root, inter, ec_log, rsa_log, leaf, key, tls_list, ocsp_der)


def log_keys(world: World) -> dict[bytes, bytes]:
    return {log.log_id: log.public_der for log in (world.ec_log, world.rsa_log)}


# --- logs


def test_log_id_is_sha256_of_spki() -> None:
    log = pki.make_log("L", "O")
    assert log.log_id == hashlib.sha256(log.public_der).digest()
    assert base64.b64decode(log.public_b64) == log.public_der
    assert isinstance(serialization.load_der_public_key(log.public_der), ec.EllipticCurvePublicKey)


def test_rsa_log_signs_with_rsa(world: World) -> None:
    scts = embedded_scts(world.leaf)
    assert [s.signature_algorithm for s in scts] == [3, 1]
    assert all(s.hash_algorithm == 4 for s in scts)


# --- CAs and leaves


def test_chain_links(world: World) -> None:
    world.inter.cert.verify_directly_issued_by(world.root.cert)
    world.leaf.verify_directly_issued_by(world.inter.cert)
    assert world.root.cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not world.leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_leaf_hosts_become_dns_and_ip_names(world: World) -> None:
    san = world.leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]


def test_leaf_options_are_honoured(world: World) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    start = datetime.datetime(2030, 1, 2, tzinfo=datetime.UTC)
    end = datetime.datetime(2030, 3, 4, tzinfo=datetime.UTC)
    leaf, returned_key = pki.make_leaf(
        world.inter, hosts=["a.example"], not_before=start, not_after=end, key=key, serial=4242
    )
    assert returned_key is key
    assert leaf.serial_number == 4242
    assert (leaf.not_valid_before_utc, leaf.not_valid_after_utc) == (start, end)
    assert leaf.public_key() == key.public_key()
    assert embedded_scts(leaf) == []


def test_embedded_scts_verify(world: World) -> None:
    issuer = find_issuer(world.leaf, [world.root.cert, world.inter.cert])
    assert issuer == world.inter.cert
    keys = log_keys(world)
    scts = embedded_scts(world.leaf)
    assert {s.log_id for s in scts} == set(keys)
    for sct in scts:
        assert sct.source == Source.EMBEDDED
        verify_sct(sct, keys[sct.log_id], world.leaf, issuer)


def test_embedded_sct_extension_is_what_cryptography_sees(world: World) -> None:
    ext = world.leaf.extensions.get_extension_for_class(
        x509.PrecertificateSignedCertificateTimestamps
    )
    theirs = list(ext.value)
    ours = embedded_scts(world.leaf)
    assert [s.log_id for s in theirs] == [s.log_id for s in ours]
    assert [s.signature for s in theirs] == [s.signature for s in ours]
    assert [s.entry_type for s in theirs] == [
        x509.certificate_transparency.LogEntryType.PRE_CERTIFICATE
    ] * 2


def test_embedded_sct_extensions_field_is_signed(world: World) -> None:
    leaf, _ = pki.make_leaf(
        world.inter,
        embedded=[(world.ec_log, 1_700_000_000_000)],
        sct_extensions=b"\x00\x00\x05\x00\x00\x00\x01\x02",
    )
    (sct,) = embedded_scts(leaf)
    assert sct.extensions == b"\x00\x00\x05\x00\x00\x00\x01\x02"
    assert sct.timestamp == 1_700_000_000_000
    verify_sct(sct, world.ec_log.public_der, leaf, world.inter.cert)


def test_leaf_under_root_directly() -> None:
    root = pki.make_root("Lonely Root")
    log = pki.make_log("L", "O")
    leaf, _ = pki.make_leaf(root, embedded=[(log, pki.now_ms())])
    (sct,) = embedded_scts(leaf)
    verify_sct(sct, log.public_der, leaf, root.cert)


def test_precert_signer_has_ct_eku(world: World) -> None:
    signer = pki.make_precert_signer(world.inter)
    eku = signer.cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert x509.ObjectIdentifier("1.3.6.1.4.1.11129.2.4.4") in eku
    assert is_precert_signing_cert(signer.cert)
    assert not is_precert_signing_cert(world.inter.cert)
    signer.cert.verify_directly_issued_by(world.inter.cert)


# --- TLS extension


def test_tls_sct_list_verifies(world: World) -> None:
    keys = log_keys(world)
    scts = parse_sct_list(world.tls_list, Source.TLS_EXTENSION)
    assert [s.timestamp - scts[0].timestamp for s in scts] == [0, 1]
    for sct in scts:
        verify_sct(sct, keys[sct.log_id], world.leaf, None)


def test_serverinfo_pem_layout(world: World) -> None:
    for v2, label, prefix in [
        (True, b"SERVERINFOV2 FOR CT", b"\x00\x00\x11\x80\x00\x12"),
        (False, b"SERVERINFO FOR CT", b"\x00\x12"),
    ]:
        text = pki.serverinfo_pem(world.tls_list, v2=v2)
        lines = text.splitlines()
        assert lines[0] == b"-----BEGIN " + label + b"-----"
        assert lines[-1] == b"-----END " + label + b"-----"
        body = base64.b64decode(b"".join(lines[1:-1]))
        assert body == prefix + len(world.tls_list).to_bytes(2, "big") + world.tls_list


# --- OCSP


def test_ocsp_response_reloads_with_single_extension(world: World) -> None:
    response = ocsp.load_der_ocsp_response(world.ocsp_der)
    assert response.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL
    assert response.certificate_status == ocsp.OCSPCertStatus.GOOD
    assert response.serial_number == world.leaf.serial_number
    ext = response.single_extensions.get_extension_for_class(x509.SignedCertificateTimestamps)
    assert len(list(ext.value)) == 2
    assert len(response.extensions) == 0  # not misplaced in responseExtensions
    # Re-signed after patching: the responder signature is valid over the new tbsResponseData.
    responder_key = world.inter.cert.public_key()
    assert isinstance(responder_key, ec.EllipticCurvePublicKey)
    responder_key.verify(response.signature, response.tbs_response_bytes, ec.ECDSA(hashes.SHA256()))


def test_ocsp_scts_verify(world: World) -> None:
    keys = log_keys(world)
    scts = ocsp_scts(world.ocsp_der, world.leaf)
    assert [s.serialized for s in scts] == [
        s.serialized for s in parse_sct_list(world.tls_list, Source.TLS_EXTENSION)
    ]
    for sct in scts:
        assert sct.source == Source.OCSP
        verify_sct(sct, keys[sct.log_id], world.leaf, None)


def test_ocsp_response_without_scts(world: World) -> None:
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    der = pki.ocsp_response(
        world.leaf, world.inter, this_update=now, next_update=now + datetime.timedelta(hours=5)
    )
    response = ocsp.load_der_ocsp_response(der)
    assert len(response.single_extensions) == 0
    assert response.this_update_utc == now
    assert response.next_update_utc == now + datetime.timedelta(hours=5)
    assert ocsp_scts(der, world.leaf) == []


# --- log lists


def test_google_log_list_shape() -> None:
    a1 = pki.make_log("A1", "Operator A")
    a2 = pki.make_log("A2", "Operator A")
    b1 = pki.make_log("B1", "Operator B", rsa=True)
    since = datetime.datetime(2021, 5, 6, 7, 8, 9, tzinfo=datetime.UTC)
    moved = datetime.datetime(2022, 1, 1, tzinfo=datetime.UTC)
    interval = (
        datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC),
        datetime.datetime(2026, 7, 1, tzinfo=datetime.UTC),
    )
    doc = pki.log_list_json(
        [
            pki.LogEntry(a1, state="retired", state_since=since, temporal_interval=interval),
            pki.LogEntry(b1, state=None, previous_operators=[("Old Op", moved)]),
            pki.LogEntry(a2, tiled=True),
        ],
        timestamp=datetime.datetime(2026, 6, 1, tzinfo=datetime.UTC),
    )
    assert doc["log_list_timestamp"] == "2026-06-01T00:00:00Z"
    assert [op["name"] for op in doc["operators"]] == ["Operator A", "Operator B"]
    op_a, op_b = doc["operators"]
    assert op_a["email"] and op_b["email"]
    (log_a1,) = op_a["logs"]
    (log_a2,) = op_a["tiled_logs"]
    (log_b1,) = op_b["logs"]
    assert op_b["tiled_logs"] == []
    for log, entry in [(log_a1, a1), (log_a2, a2), (log_b1, b1)]:
        assert base64.b64decode(log["log_id"]) == entry.log_id
        assert hashlib.sha256(base64.b64decode(log["key"])).digest() == entry.log_id
        assert log["description"] == entry.description
        assert log["mmd"] >= 1
    assert log_a1["state"] == {"retired": {"timestamp": "2021-05-06T07:08:09Z"}}
    assert log_a1["temporal_interval"] == {
        "start_inclusive": "2026-01-01T00:00:00Z",
        "end_exclusive": "2026-07-01T00:00:00Z",
    }
    assert "url" in log_a1 and "submission_url" not in log_a1
    assert "submission_url" in log_a2 and "monitoring_url" in log_a2 and "url" not in log_a2
    assert log_a2["state"] == {"usable": {"timestamp": "2020-01-01T00:00:00Z"}}
    assert "state" not in log_b1
    assert log_b1["previous_operators"] == [{"name": "Old Op", "end_time": "2022-01-01T00:00:00Z"}]


def test_google_log_list_without_timestamp() -> None:
    doc = pki.log_list_json([pki.LogEntry(pki.make_log("L", "O"))], timestamp=None)
    assert "log_list_timestamp" not in doc


def test_apple_log_list_shape() -> None:
    log = pki.make_log("L", "O")
    doc = pki.log_list_json([pki.LogEntry(log, state="usable")], timestamp=None, schema="apple")
    assert isinstance(doc["assetVersion"], int) and isinstance(doc["version"], str)
    (entry,) = doc["operators"][0]["logs"]
    assert set(entry["state"]["usable"]) == {"timestamp", "version"}
    with pytest.raises(ValueError, match="unknown log list schema 'mozilla'"):
        pki.log_list_json([], timestamp=None, schema="mozilla")


# --- PEM helpers


def test_pem_helpers_round_trip(world: World) -> None:
    certs = x509.load_pem_x509_certificates(pki.pem(world.leaf, world.inter.cert))
    assert certs == [world.leaf, world.inter.cert]
    key = serialization.load_pem_private_key(pki.key_pem(world.leaf_key), None)
    assert key.public_key() == world.leaf_key.public_key()


def test_now_ms_is_wall_clock_milliseconds() -> None:
    assert abs(pki.now_ms() - time.time() * 1000) < 5000


# --- OpenSSL agrees


def run_openssl(*args: str) -> str:
    assert OPENSSL is not None
    done = subprocess.run([OPENSSL, *args], capture_output=True, text=True, timeout=10, check=True)
    return done.stdout + done.stderr


@needs_openssl
def test_openssl_sees_embedded_scts(world: World, tmp_path: Path) -> None:
    (tmp_path / "leaf.pem").write_bytes(pki.pem(world.leaf))
    text = run_openssl("x509", "-in", str(tmp_path / "leaf.pem"), "-noout", "-text")
    assert "CT Precertificate SCTs" in text
    assert text.count("Signed Certificate Timestamp:") == 2


@needs_openssl
def test_openssl_reads_and_verifies_ocsp_response(world: World, tmp_path: Path) -> None:
    (tmp_path / "resp.der").write_bytes(world.ocsp_der)
    (tmp_path / "inter.pem").write_bytes(pki.pem(world.inter.cert))
    (tmp_path / "leaf.pem").write_bytes(pki.pem(world.leaf))
    text = run_openssl("ocsp", "-respin", str(tmp_path / "resp.der"), "-resp_text", "-noverify")
    assert "Response Single Extensions" in text and "CT Certificate SCTs" in text
    assert text.count("Signed Certificate Timestamp:") == 2
    inter = str(tmp_path / "inter.pem")
    text = run_openssl(
        "ocsp", "-respin", str(tmp_path / "resp.der"), "-issuer", inter, "-VAfile", inter,
        "-cert", str(tmp_path / "leaf.pem"),
    )  # fmt: skip
    assert "Response verify OK" in text
    assert f"{tmp_path / 'leaf.pem'}: good" in text


@pytest.fixture
def s_server(world: World, tmp_path: Path) -> Iterator[Callable[..., int]]:
    """Start ``openssl s_server`` serving the world's leaf with all three SCT channels."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(protocol: str, *, v2: bool) -> int:
        (tmp_path / "leaf.pem").write_bytes(pki.pem(world.leaf))
        (tmp_path / "leaf.key").write_bytes(pki.key_pem(world.leaf_key))
        (tmp_path / "inter.pem").write_bytes(pki.pem(world.inter.cert))
        (tmp_path / "serverinfo.pem").write_bytes(pki.serverinfo_pem(world.tls_list, v2=v2))
        (tmp_path / "ocsp.der").write_bytes(world.ocsp_der)
        assert OPENSSL is not None
        proc = subprocess.Popen(
            [
                OPENSSL, "s_server", "-accept", "127.0.0.1:0", "-www", "-naccept", "1",
                protocol, "-cert", "leaf.pem", "-key", "leaf.key", "-cert_chain", "inter.pem",
                "-serverinfo", "serverinfo.pem", "-status_file", "ocsp.der",
            ],
            cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        procs.append(proc)
        assert proc.stdout is not None
        # Raw os.read: a buffered readline could swallow the ACCEPT line that select waits for.
        output = b""
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            ready, _, _ = select.select([proc.stdout], [], [], deadline - time.monotonic())
            chunk = os.read(proc.stdout.fileno(), 4096) if ready else b""
            if not chunk:
                break
            output += chunk
            match = re.search(rb"^ACCEPT 127\.0\.0\.1:(\d+)$", output, re.MULTILINE)
            if match:
                return int(match.group(1))
        raise AssertionError(f"s_server did not report its port: {output!r}")

    yield start
    for proc in procs:
        proc.kill()
        proc.wait(timeout=5)


@needs_openssl
@pytest.mark.parametrize(
    ("protocol", "v2", "expected"),
    [
        ("-tls1_3", True, 6),  # embedded 2 + TLS extension 2 + OCSP 2
        ("-tls1_2", True, 6),
        ("-tls1_2", False, 6),  # SERVERINFO (v1) is enough for TLS 1.2
        ("-tls1_3", False, 4),  # but not for TLS 1.3: no TLS-extension SCTs
    ],
)
def test_openssl_s_client_validates_all_channels(
    world: World,
    tmp_path: Path,
    s_server: Callable[..., int],
    protocol: str,
    v2: bool,
    expected: int,
) -> None:
    port = s_server(protocol, v2=v2)
    (tmp_path / "root.pem").write_bytes(pki.pem(world.root.cert))
    (tmp_path / "ct.cnf").write_text(
        "enabled_logs = ec,rsa\n"
        f"[ec]\ndescription = EC\nkey = {world.ec_log.public_b64}\n"
        f"[rsa]\ndescription = RSA\nkey = {world.rsa_log.public_b64}\n"
    )
    assert OPENSSL is not None
    done = subprocess.run(
        [
            OPENSSL, "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "localhost",
            "-ct", "-ctlogfile", "ct.cnf", "-CAfile", "root.pem", "-status",
        ],
        cwd=tmp_path, input=b"", capture_output=True, timeout=10,
    )  # fmt: skip
    text = done.stdout.decode() + done.stderr.decode()  # SCT status goes to stderr
    assert "Verify return code: 0 (ok)" in text
    assert f"SCTs present ({expected})" in text
    assert text.count("SCT validation status: valid") == expected
    assert "SCT validation status: invalid" not in text
