from __future__ import annotations

import datetime
import logging
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtensionOID

from expect_ct.chain import ChainClassifier
from expect_ct.chain import ChainKind
from expect_ct.chain import default_public_roots
from expect_ct.chain import load_pem_roots
from expect_ct.chain import load_roots_dir
from support import pki

UTC = datetime.UTC


@pytest.fixture(scope="module")
def root() -> pki.CA:
    return pki.make_root("Chain Test Root")


@pytest.fixture(scope="module")
def inter(root: pki.CA) -> pki.CA:
    return pki.make_intermediate(root, "Chain Test Intermediate")


@pytest.fixture(scope="module")
def leaf(inter: pki.CA) -> x509.Certificate:
    return pki.make_leaf(inter)[0]


@pytest.fixture(scope="module")
def certifi_roots() -> list[x509.Certificate]:
    return load_pem_roots(default_public_roots())


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


# ------------------------------------------------------------------------- classification


def test_public_chain_validates_leaf_first_to_the_root(root, inter, leaf):
    result = ChainClassifier([root.cert]).classify([leaf, inter.cert], host="localhost")
    assert result.kind is ChainKind.PUBLIC
    assert result.validated == (leaf, inter.cert, root.cert)
    assert result.error is None


def test_ip_address_host(root, inter, leaf):
    classifier = ChainClassifier([root.cert])
    assert classifier.classify([leaf, inter.cert], host="127.0.0.1").kind is ChainKind.PUBLIC
    # The SAN holds 127.0.0.1 only as an IP address, not as a DNS name.
    assert classifier.classify([leaf, inter.cert], host="127.0.0.2").kind is ChainKind.UNTRUSTED


def test_private_root_only(root, inter, leaf, certifi_roots):
    result = ChainClassifier(certifi_roots, [root.cert]).classify(
        [leaf, inter.cert], host="localhost"
    )
    assert result.kind is ChainKind.PRIVATE
    assert result.validated == (leaf, inter.cert, root.cert)
    assert result.error is not None and result.error.startswith("not publicly trusted")


def test_public_wins_over_private(root, inter, leaf):
    result = ChainClassifier([root.cert], [root.cert]).classify(
        [leaf, inter.cert], host="localhost"
    )
    assert result.kind is ChainKind.PUBLIC


def test_untrusted_chain(inter, leaf, certifi_roots):
    other = pki.make_root("Somebody Else")
    result = ChainClassifier(certifi_roots, [other.cert]).classify(
        [leaf, inter.cert], host="localhost"
    )
    assert result.kind is ChainKind.UNTRUSTED
    assert result.validated == ()
    assert "not publicly trusted" in (result.error or "")
    assert "not trusted by the private roots" in (result.error or "")


def test_no_roots_at_all(inter, leaf):
    result = ChainClassifier([]).classify([leaf, inter.cert], host="localhost")
    assert result.kind is ChainKind.UNTRUSTED
    assert "no public roots configured" in (result.error or "")


def test_wrong_host(root, inter, leaf):
    result = ChainClassifier([root.cert]).classify([leaf, inter.cert], host="example.com")
    assert result.kind is ChainKind.UNTRUSTED
    assert "subjectAltName" in (result.error or "")


@pytest.mark.parametrize("host", ["LOCALHOST", "localhost.", "[127.0.0.1]"])
def test_host_spellings(root, inter, leaf, host):
    assert ChainClassifier([root.cert]).classify([leaf, inter.cert], host=host).kind is (
        ChainKind.PUBLIC
    )


def test_expired_leaf(root, inter):
    long_ago = datetime.datetime(2020, 1, 1, tzinfo=UTC)
    expired, _ = pki.make_leaf(
        inter, not_before=long_ago, not_after=long_ago + datetime.timedelta(days=90)
    )
    classifier = ChainClassifier([root.cert])
    result = classifier.classify([expired, inter.cert], host="localhost")
    assert result.kind is ChainKind.UNTRUSTED
    assert "validation time" in (result.error or "")
    # `now` is honoured. The CAs only became valid a day ago, so the 2020 chain cannot
    # validate at any time: that is the CA that is "not valid at validation time" then.
    in_2020 = classifier.classify([expired, inter.cert], host="localhost", now=long_ago)
    assert in_2020.kind is ChainKind.UNTRUSTED


def test_validity_is_checked_at_now(root, inter, leaf):
    classifier = ChainClassifier([root.cert])
    after = leaf.not_valid_after_utc + datetime.timedelta(seconds=1)
    before = leaf.not_valid_before_utc - datetime.timedelta(seconds=1)
    assert classifier.classify([leaf, inter.cert], host="localhost", now=after).kind is (
        ChainKind.UNTRUSTED
    )
    assert classifier.classify([leaf, inter.cert], host="localhost", now=before).kind is (
        ChainKind.UNTRUSTED
    )
    # Both ends are inclusive (RFC 5280 section 4.1.2.5).
    for edge in (leaf.not_valid_after_utc, leaf.not_valid_before_utc):
        assert classifier.classify([leaf, inter.cert], host="localhost", now=edge).kind is (
            ChainKind.PUBLIC
        )


def test_naive_now_is_utc(root, inter, leaf):
    classifier = ChainClassifier([root.cert])
    naive_after = (leaf.not_valid_after_utc + datetime.timedelta(seconds=1)).replace(tzinfo=None)
    assert classifier.classify([leaf, inter.cert], host="localhost", now=naive_after).kind is (
        ChainKind.UNTRUSTED
    )


def test_disordered_served_chain(root, inter, leaf):
    stranger = pki.make_root("Unrelated Extra")
    served = [leaf, root.cert, stranger.cert, inter.cert]
    result = ChainClassifier([root.cert]).classify(served, host="localhost")
    assert result.kind is ChainKind.PUBLIC
    assert result.validated == (leaf, inter.cert, root.cert)


def test_leaf_directly_under_root(root):
    direct, _ = pki.make_leaf(root)
    result = ChainClassifier([root.cert]).classify([direct], host="localhost")
    assert result.validated == (direct, root.cert)


def test_missing_intermediate(root, leaf):
    result = ChainClassifier([root.cert]).classify([leaf], host="localhost")
    assert result.kind is ChainKind.UNTRUSTED
    assert result.validated == ()
    assert result.error


def test_host_none_uses_the_leafs_first_san(root, inter, leaf):
    assert ChainClassifier([root.cert]).classify([leaf, inter.cert], host=None).kind is (
        ChainKind.PUBLIC
    )
    only_ip, _ = pki.make_leaf(inter, hosts=("10.1.2.3",))
    assert ChainClassifier([root.cert]).classify([only_ip, inter.cert], host=None).kind is (
        ChainKind.PUBLIC
    )
    wildcard, _ = pki.make_leaf(inter, hosts=("*.example.test",))
    assert ChainClassifier([root.cert]).classify([wildcard, inter.cert], host=None).kind is (
        ChainKind.PUBLIC
    )


def test_host_none_without_san(root, inter):
    no_san, _ = pki.make_leaf(inter, hosts=())
    result = ChainClassifier([root.cert]).classify([no_san, inter.cert], host=None)
    assert result.kind is ChainKind.UNTRUSTED
    assert "no subjectAltName" in (result.error or "")


def test_host_none_with_only_other_san_types(root, inter):
    email_only, _ = pki.make_leaf(inter, hosts=())
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(UTC)
    email_only = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(inter.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.RFC822Name("a@example.test")]), critical=False
        )
        .sign(inter.key, hashes.SHA256())
    )
    result = ChainClassifier([root.cert]).classify([email_only, inter.cert], host=None)
    assert result.kind is ChainKind.UNTRUSTED
    assert "has no DNS name or IP address" in (result.error or "")


def _leaf_with_garbage_san(issuer: pki.CA) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(issuer.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.UnrecognizedExtension(ExtensionOID.SUBJECT_ALTERNATIVE_NAME, b"\x30\x05garb"),
            critical=False,
        )
        .sign(issuer.key, hashes.SHA256())
    )


@pytest.mark.parametrize(
    "make_chain, host, expected_error",
    [
        (lambda r, i, lf: [], "localhost", "empty certificate chain"),
        (lambda r, i, lf: [b"not a certificate"], "localhost", "cannot read the chain"),
        (lambda r, i, lf: [lf, "junk"], "localhost", "cannot read the chain"),
        (lambda r, i, lf: [r.cert], "localhost", "not publicly trusted"),  # CA as leaf
        (lambda r, i, lf: [i.cert, r.cert], "localhost", "not publicly trusted"),
        (lambda r, i, lf: [lf, i.cert], "bad host!", "cannot verify for 'bad host!'"),
        (lambda r, i, lf: [_leaf_with_garbage_san(i), i.cert], "localhost", ""),
        (lambda r, i, lf: [_leaf_with_garbage_san(i), i.cert], None, ""),
    ],
)
def test_garbage_is_untrusted_never_raises(root, inter, leaf, make_chain, host, expected_error):
    result = ChainClassifier([root.cert]).classify(make_chain(root, inter, leaf), host=host)
    assert result.kind is ChainKind.UNTRUSTED
    assert result.validated == ()
    assert result.error and expected_error in (result.error or "")


def test_real_public_roots_do_not_trust_the_test_pki(inter, leaf, certifi_roots):
    assert len(certifi_roots) > 100
    result = ChainClassifier(certifi_roots).classify([leaf, inter.cert], host="localhost")
    assert result.kind is ChainKind.UNTRUSTED


# ---------------------------------------------------------------------------------- caching


def test_cache_hits_for_the_same_question(root, inter, leaf):
    classifier = ChainClassifier([root.cert])
    first = classifier.classify([leaf, inter.cert], host="localhost")
    again = classifier.classify([leaf, inter.cert], host="localhost")
    assert again is first
    info = classifier.cache_info()
    assert (info.hits, info.misses, info.size) == (1, 1, 1)
    classifier.classify([leaf, inter.cert], host="127.0.0.1")
    assert classifier.cache_info().misses == 2  # the host is part of the key


def test_cache_reused_within_the_validity_window(root, inter, leaf):
    classifier = ChainClassifier([root.cert])
    start = leaf.not_valid_before_utc + datetime.timedelta(minutes=1)
    classifier.classify([leaf, inter.cert], host="localhost", now=start)
    later = classifier.classify(
        [leaf, inter.cert], host="localhost", now=start + datetime.timedelta(days=30)
    )
    assert later.kind is ChainKind.PUBLIC
    assert classifier.cache_info().hits == 1


def test_cache_never_serves_a_result_across_expiry(root, inter, leaf):
    classifier = ChainClassifier([root.cert])
    edge = leaf.not_valid_after_utc
    assert classifier.classify([leaf, inter.cert], host="localhost", now=edge).kind is (
        ChainKind.PUBLIC
    )
    expired = classifier.classify(
        [leaf, inter.cert], host="localhost", now=edge + datetime.timedelta(seconds=1)
    )
    assert expired.kind is ChainKind.UNTRUSTED
    assert classifier.cache_info().hits == 0


def _short_lived_root(days: int) -> pki.CA:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "Short-lived Root")])
    now = datetime.datetime.now(UTC).replace(microsecond=0)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return pki.CA(cert=cert, key=key)


def test_cache_depends_on_root_validity():
    # The root (not served) expires long before the leaf does: the served certificates'
    # dates say nothing about that moment, the roots' dates must.
    root = _short_lived_root(days=2)
    served = [pki.make_leaf(root)[0]]
    classifier = ChainClassifier([root.cert])
    root_end = root.cert.not_valid_after_utc
    assert classifier.classify(served, host="localhost", now=root_end).kind is ChainKind.PUBLIC
    after = classifier.classify(
        served, host="localhost", now=root_end + datetime.timedelta(seconds=1)
    )
    assert after.kind is ChainKind.UNTRUSTED
    assert classifier.cache_info().hits == 0


def test_cache_is_bounded_lru(root, inter):
    classifier = ChainClassifier([root.cert], cache_size=2)
    leaves = [pki.make_leaf(inter)[0] for _ in range(3)]
    for lf in leaves:
        classifier.classify([lf, inter.cert], host="localhost")
    assert classifier.cache_info().size == 2
    classifier.classify([leaves[2], inter.cert], host="localhost")
    assert classifier.cache_info().hits == 1
    classifier.classify([leaves[0], inter.cert], host="localhost")  # evicted: a miss
    assert classifier.cache_info().misses == 4


# ------------------------------------------------------------------------------ root files


def test_load_pem_roots_skips_other_blocks(tmp_path: Path, root, inter):
    path = tmp_path / "bundle.pem"
    path.write_bytes(
        b"# comment\n"
        + pki.key_pem(root.key)
        + pki.pem(root.cert)
        + b"text\n"
        + pki.pem(inter.cert)
    )
    assert [der(c) for c in load_pem_roots(path)] == [der(root.cert), der(inter.cert)]
    assert len(load_pem_roots(str(path))) == 2


def test_load_pem_roots_names_the_file_and_block(tmp_path: Path, root):
    path = tmp_path / "broken.pem"
    path.write_bytes(
        pki.pem(root.cert) + b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
    )
    with pytest.raises(ValueError, match=r"broken\.pem: PEM block #2 \(line 1[0-9]\)"):
        load_pem_roots(path)
    assert [der(c) for c in load_pem_roots(path, skip_invalid=True)] == [der(root.cert)]


def test_load_pem_roots_without_certificates(tmp_path: Path, root):
    path = tmp_path / "key.pem"
    path.write_bytes(pki.key_pem(root.key))
    with pytest.raises(ValueError, match=r"key\.pem: no PEM certificate"):
        load_pem_roots(path)
    with pytest.raises(OSError):
        load_pem_roots(tmp_path / "missing.pem")


def test_load_roots_dir(tmp_path: Path, root, inter, caplog):
    other = pki.make_root("Other Root")
    (tmp_path / "a.pem").write_bytes(pki.pem(root.cert, inter.cert))
    (tmp_path / "b.crt").write_bytes(der(other.cert))  # DER
    (tmp_path / "1a2b3c4d.0").write_bytes(pki.pem(root.cert))  # hash-named duplicate
    (tmp_path / "README.txt").write_bytes(pki.pem(pki.make_root("Ignored").cert))
    (tmp_path / "broken.pem").write_bytes(
        b"-----BEGIN CERTIFICATE-----\nAA\n-----END CERTIFICATE-----\n"
    )
    (tmp_path / "garbage.der").write_bytes(b"\x00\x01")
    (tmp_path / "sub.pem").mkdir()
    with caplog.at_level(logging.WARNING, logger="expect_ct.chain"):
        roots = load_roots_dir(tmp_path)
    assert sorted(der(c) for c in roots) == sorted(
        der(c) for c in (root.cert, inter.cert, other.cert)
    )
    assert "broken.pem" in caplog.text and "garbage.der" in caplog.text
    with pytest.raises(ValueError, match="not a directory"):
        load_roots_dir(tmp_path / "a.pem")


def test_default_public_roots_is_certifi(certifi_roots):
    import certifi

    assert default_public_roots() == certifi.where()
    assert all(isinstance(c, x509.Certificate) for c in certifi_roots)
