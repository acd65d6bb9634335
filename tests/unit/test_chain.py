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
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from expect_ct.chain import ChainClassifier
from expect_ct.chain import ChainKind
from expect_ct.chain import default_public_roots
from expect_ct.chain import load_pem_roots
from expect_ct.chain import load_roots_dir
from expect_ct.chain import read_served_chain
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


# ------------------------------ never stricter than the TLS stack (issue 17, attacks 4 and 5)


@pytest.fixture(scope="module")
def ca_flagged_leaf(inter: pki.CA) -> x509.Certificate:
    """A leaf OpenSSL accepts for TLS and cryptography's web PKI verifier refuses."""
    return pki.make_leaf(inter, ca_flag=True)[0]


def test_a_chain_the_tls_stack_verified_to_a_public_root_is_public(
    root, inter, ca_flagged_leaf, certifi_roots
):
    classifier = ChainClassifier([root.cert], certifi_roots)
    served = [ca_flagged_leaf, inter.cert]
    # cryptography alone: untrusted, which would make the chain exempt.
    alone = classifier.classify(served, host="localhost")
    assert alone.kind is ChainKind.UNTRUSTED
    assert "basicConstraints.cA" in (alone.error or "")
    verified = [der(ca_flagged_leaf), der(inter.cert), der(root.cert)]
    result = classifier.classify(served, host="localhost", verified_chain=verified)
    assert result.kind is ChainKind.PUBLIC
    assert result.tls_verified
    assert result.validated == (ca_flagged_leaf, inter.cert, root.cert)  # issuers for SCTs
    assert result.error is not None and result.error.startswith("verified by the TLS stack; ")
    assert "basicConstraints.cA" in result.error
    # A chain cryptography accepts is untouched by the hint.
    plain = pki.make_leaf(inter)[0]
    normal = classifier.classify(
        [plain, inter.cert], host="localhost", verified_chain=[der(plain), der(root.cert)]
    )
    assert normal.kind is ChainKind.PUBLIC and not normal.tls_verified and normal.error is None


def test_public_by_the_tls_stack_wins_over_private_by_cryptography(root, inter):
    """The intermediate is also a private root: served without it, cryptography finds only
    the private path, while OpenSSL (which may have it cached or configured) verified the
    chain to the public root."""
    private_root = pki.make_root("Chain Test Private Root")
    classifier = ChainClassifier([root.cert], [inter.cert, private_root.cert])
    leaf = pki.make_leaf(inter)[0]
    assert classifier.classify([leaf], host="localhost").kind is ChainKind.PRIVATE
    verified = [der(leaf), der(inter.cert), der(root.cert)]
    result = classifier.classify([leaf], host="localhost", verified_chain=verified)
    assert (result.kind, result.tls_verified) == (ChainKind.PUBLIC, True)
    assert result.validated == (leaf, inter.cert, root.cert)


def test_a_chain_the_tls_stack_verified_to_a_private_root_is_private(inter, ca_flagged_leaf):
    private = pki.make_root("Chain Test Corporate Root")
    public = pki.make_root("Chain Test Other Public Root")
    classifier = ChainClassifier([public.cert], [inter.cert, private.cert])
    result = classifier.classify(
        [ca_flagged_leaf],
        host="localhost",
        verified_chain=[der(ca_flagged_leaf), der(inter.cert)],
    )
    assert result.kind is ChainKind.PRIVATE and result.tls_verified


@pytest.mark.parametrize("which", ["other leaf", "unknown anchor", "garbage anchor", "empty"])
def test_a_tls_verification_that_does_not_fit_changes_nothing(root, inter, ca_flagged_leaf, which):
    classifier = ChainClassifier([root.cert])
    other_root = pki.make_root("Chain Test Unknown Root")
    verified = {
        "other leaf": [der(pki.make_leaf(inter)[0]), der(inter.cert), der(root.cert)],
        "unknown anchor": [der(ca_flagged_leaf), der(inter.cert), der(other_root.cert)],
        "garbage anchor": [der(ca_flagged_leaf), b"\x30\x03\x02\x01\x00"],
        "empty": [],
    }[which]
    result = classifier.classify(
        [ca_flagged_leaf, inter.cert], host="localhost", verified_chain=verified
    )
    assert result.kind is ChainKind.UNTRUSTED and not result.tls_verified


def test_the_tls_verification_is_part_of_the_cache_key(root, inter, ca_flagged_leaf):
    classifier = ChainClassifier([root.cert])
    served = [ca_flagged_leaf, inter.cert]
    verified = [der(ca_flagged_leaf), der(inter.cert), der(root.cert)]
    assert classifier.classify(served, host="localhost").kind is ChainKind.UNTRUSTED
    assert (
        classifier.classify(served, host="localhost", verified_chain=verified).kind
        is ChainKind.PUBLIC
    )
    assert classifier.classify(served, host="localhost").kind is ChainKind.UNTRUSTED


def test_an_unparsable_extra_certificate_is_skipped_and_the_rest_judged(root, inter, leaf):
    junk = pki.unparsable_certificate(inter)
    with pytest.raises(ValueError, match="EncodedDefault"):
        x509.load_der_x509_certificate(junk)
    served = read_served_chain([der(leaf), der(inter.cert), junk])
    assert served.leaf == leaf
    assert served.certificates == (leaf, inter.cert)
    assert served.leaf_error is None
    (skipped,) = served.skipped
    assert skipped.startswith("certificate #3 of 3 cannot be parsed: ")
    result = ChainClassifier([root.cert]).classify_served(served, host="localhost")
    assert result.kind is ChainKind.PUBLIC and result.leaf_readable
    assert result.validated == (leaf, inter.cert, root.cert)


def test_an_unreadable_leaf_is_said_so(root, inter):
    junk = pki.unparsable_certificate(inter)
    served = read_served_chain([junk, der(inter.cert)])
    assert served.leaf is None and served.certificates == ()
    assert served.leaf_error is not None
    assert served.leaf_error.startswith("the leaf of 2 cannot be parsed: ")
    classifier = ChainClassifier([root.cert])
    result = classifier.classify_served(served, host="localhost")
    assert (result.kind, result.leaf_readable) == (ChainKind.UNTRUSTED, False)
    assert result.error == f"cannot read the chain: {served.leaf_error}"
    # OpenSSL verified it to a public root: public, so enforcement applies and must block.
    verified = [junk, der(inter.cert), der(root.cert)]
    result = classifier.classify_served(served, host="localhost", verified_chain=verified)
    assert (result.kind, result.leaf_readable, result.tls_verified) == (
        ChainKind.PUBLIC,
        False,
        True,
    )
    # A verification of some other leaf says nothing about this one.
    other = [der(pki.make_leaf(inter)[0]), der(inter.cert), der(root.cert)]
    result = classifier.classify_served(served, host="localhost", verified_chain=other)
    assert (result.kind, result.tls_verified) == (ChainKind.UNTRUSTED, False)


def test_no_certificate_at_all():
    served = read_served_chain([])
    assert served.leaf is None and served.leaf_error == "the server sent no certificate"


@settings(max_examples=150, deadline=None)
@given(ders=st.lists(st.binary(max_size=64), max_size=4))
def test_read_served_chain_never_raises(ders: list[bytes]) -> None:
    served = read_served_chain(ders)
    assert len(served.skipped) + len(served.certificates) <= max(len(ders), 1)
    assert (served.leaf is None) == (served.leaf_error is not None)
    assert all("\n" not in line for line in served.skipped)
