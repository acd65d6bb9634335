"""Does a served chain end at a public root, a private (user-trusted) root, or neither?

RFC 9163 section 2.4.1 lets a UA skip Expect-CT for chains ending at a user-defined trust
anchor, and Chromium only enforced and reported for chains "issued by a known root"
(chromium-expect-ct.md sections 3 and 5). We classify the *upstream* chain:

* public: it validates to one of the public roots (certifi by default);
* private: it validates only to a root mitmproxy was told to trust upstream
  (ssl_verify_upstream_trusted_ca / _confdir);
* untrusted: neither.

Validation is cryptography's ``x509.verification`` (RFC 5280 path building with the CA/B
Forum web PKI profile: SAN required, basicConstraints, key usage ...). That module is marked
unstable by cryptography; it is only used here. Pure: no mitmproxy import.

The class is never stricter than the TLS verification the proxy itself performed (issue 17):
cryptography's verifier refuses some chains OpenSSL accepts (a leaf asserting cA, say), and
"untrusted" means exempt, so an impostor could otherwise pick a chain that mitmproxy trusts
and this module does not. The caller passes the chain OpenSSL verified (``verified_chain``),
and a chain verified to a public (private) trust anchor is at least public (private).
Likewise a served chain is judged on what can be read (``read_served_chain``): certificates
cryptography cannot parse are skipped, and an unreadable leaf is said so, never silently
turned into an empty, exempt chain.
"""

from __future__ import annotations

import bisect
import datetime
import enum
import hashlib
import ipaddress
import logging
import os
import re
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import certifi
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509 import verification

from expect_ct.cache import BoundedMap

logger = logging.getLogger(__name__)

UTC = datetime.UTC

CACHE_SIZE = 1024

_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n(.*?)-----END \1-----", re.DOTALL)
# c_rehash / openssl rehash names (subject hash + ".N", or ".rN" for CRLs, which we skip).
_HASHED_NAME = re.compile(r"^[0-9a-f]{8}\.[0-9]+$")
_ROOT_FILE_SUFFIXES = (".pem", ".crt", ".cer", ".der")


class ChainKind(enum.StrEnum):
    PUBLIC = "public"
    PRIVATE = "private"
    UNTRUSTED = "untrusted"


@dataclass(frozen=True)
class ChainResult:
    """``validated`` runs leaf first to the root (empty unless the chain validated).

    ``error`` says why the chain is untrusted, or for a private chain why it is not public;
    when the class rests on the TLS stack's verification (``tls_verified``), it says why
    cryptography's stricter verifier refused the chain. ``leaf_readable`` is False when the
    leaf itself could not be parsed (``classify_served``): nothing about its SCTs can be
    known, and ``error`` says why.
    """

    kind: ChainKind
    validated: tuple[x509.Certificate, ...]
    error: str | None
    tls_verified: bool = False
    leaf_readable: bool = True


@dataclass(frozen=True)
class ServedChain:
    """What could be read of a chain as served: ``certificates`` holds the leaf first (when
    it could be read), then every other readable certificate in served order. ``skipped``
    has one line per certificate that could not be parsed; ``leaf_error`` is set when the
    leaf was one of them."""

    certificates: tuple[x509.Certificate, ...]
    skipped: tuple[str, ...]
    leaf_error: str | None
    ders: tuple[bytes, ...] = ()  # everything as served, readable or not

    @property
    def leaf(self) -> x509.Certificate | None:
        return (
            None if self.leaf_error is not None or not self.certificates else self.certificates[0]
        )


def read_served_chain(ders: Sequence[bytes]) -> ServedChain:
    """Parse a served chain (DER, leaf first) as far as possible. Never raises.

    OpenSSL completes handshakes with chains holding certificates it never uses and
    cryptography cannot parse (an unsupported version, a malformed extension ...); one such
    extra must not make the whole chain, leaf included, disappear (issue 17, attack 4).
    """
    if not ders:
        return ServedChain((), (), "the server sent no certificate", ())
    certificates: list[x509.Certificate] = []
    skipped: list[str] = []
    leaf_error: str | None = None
    for index, der in enumerate(ders):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", CryptographyDeprecationWarning)
                certificates.append(x509.load_der_x509_certificate(bytes(der)))
        except Exception as e:  # noqa: BLE001 - hostile DER raises more than ValueError
            what = "the leaf" if index == 0 else f"certificate #{index + 1}"
            problem = f"{what} of {len(ders)} cannot be parsed: {_one_line(e)}"
            skipped.append(problem)
            if index == 0:
                leaf_error = problem
    if leaf_error is not None:
        certificates = []  # no leaf, no chain: extras alone say nothing about the server
    return ServedChain(
        tuple(certificates), tuple(skipped), leaf_error, tuple(bytes(d) for d in ders)
    )


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text or type(error).__name__


@dataclass(frozen=True)
class CacheInfo:
    hits: int
    misses: int
    size: int
    max_size: int


# ------------------------------------------------------------------------------- root files


def default_public_roots() -> str:
    """Path of the PEM bundle used as public roots by default: certifi's (Mozilla's roots)."""
    return certifi.where()


def _parse_pem_certificates(
    data: bytes, source: str, *, skip_invalid: bool
) -> list[x509.Certificate]:
    certs = []
    for number, match in enumerate(_PEM_BLOCK.finditer(data), start=1):
        if match.group(1) != b"CERTIFICATE":
            continue  # keys, CRLs, "TRUSTED CERTIFICATE" (OpenSSL auxiliary format) ...
        line = data.count(b"\n", 0, match.start()) + 1
        try:
            with warnings.catch_warnings():
                # certifi ships a few roots with non-positive serial numbers; cryptography
                # warns about them, and we cannot fix root certificates.
                warnings.simplefilter("ignore", CryptographyDeprecationWarning)
                certs.append(x509.load_pem_x509_certificate(match.group(0)))
        except ValueError as e:
            message = f"{source}: PEM block #{number} (line {line}) is not a valid certificate: {e}"
            if not skip_invalid:
                raise ValueError(message) from e
            logger.warning(f"Skipping a root: {message}")
    return certs


def load_pem_roots(
    path: str | os.PathLike[str], *, skip_invalid: bool = False
) -> list[x509.Certificate]:
    """Every CERTIFICATE block of a PEM file; other PEM blocks are skipped.

    Raises ValueError naming the file if it holds no certificate, or if a certificate block
    does not parse (unless ``skip_invalid``: then it is skipped with a warning, which suits
    third-party bundles such as certifi that a future cryptography may partly refuse).
    OSError if the file cannot be read.
    """
    name = os.fspath(path)
    with open(name, "rb") as f:
        data = f.read()
    certs = _parse_pem_certificates(data, name, skip_invalid=skip_invalid)
    if not certs:
        raise ValueError(f"{name}: no PEM certificate (-----BEGIN CERTIFICATE-----) found")
    return certs


def load_roots_dir(path: str | os.PathLike[str]) -> list[x509.Certificate]:
    """Roots from an OpenSSL-style CA directory (ssl_verify_upstream_trusted_confdir).

    Reads ``*.pem``, ``*.crt``, ``*.cer``, ``*.der`` and hashed names (``5ed36f99.0``), not
    recursively. PEM files may hold several certificates; files without a PEM block are tried
    as one DER certificate. A system directory holds files we do not control, so a file that
    cannot be read or parsed is skipped with a warning. Duplicates (hash links) are removed.
    Raises ValueError if ``path`` is not a directory.
    """
    directory = os.fspath(path)
    if not os.path.isdir(directory):
        raise ValueError(f"{directory}: not a directory")
    roots: list[x509.Certificate] = []
    seen: set[bytes] = set()
    for entry in sorted(os.listdir(directory)):
        lower = entry.lower()
        if not (lower.endswith(_ROOT_FILE_SUFFIXES) or _HASHED_NAME.match(lower)):
            continue
        file = os.path.join(directory, entry)
        if not os.path.isfile(file):
            continue
        try:
            with open(file, "rb") as f:
                data = f.read()
            if b"-----BEGIN" in data:
                certs = _parse_pem_certificates(data, file, skip_invalid=True)
            else:
                certs = [x509.load_der_x509_certificate(data)]
        except (OSError, ValueError) as e:
            logger.warning(f"Skipping {file} in the trusted CA directory: {e}")
            continue
        for cert in certs:
            der = cert.public_bytes(serialization.Encoding.DER)
            if der not in seen:
                seen.add(der)
                roots.append(cert)
    return roots


# ---------------------------------------------------------------------------- classification


def _subject_for(
    host: str | None, leaf: x509.Certificate
) -> verification.DNSName | verification.IPAddress:
    """The name to verify. ValueError says why there is none.

    With ``host`` None the server verifier still needs a name, so we use the leaf's own first
    SAN (DNS name, else IP address): the result then answers "is this a valid certificate for
    the name it claims", which is what chain classification needs without a host.
    """
    if host is not None:
        name = host.strip()
        if name.startswith("[") and name.endswith("]"):
            name = name[1:-1]
        try:
            return verification.IPAddress(ipaddress.ip_address(name))
        except ValueError:
            pass
        return verification.DNSName(name.rstrip(".").lower())
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise ValueError("no host given and the leaf has no subjectAltName") from None
    dns_names = san.get_values_for_type(x509.DNSName)
    if dns_names:
        # A wildcard SAN stands for any one label; verify as one concrete such name.
        first = dns_names[0]
        return verification.DNSName("wildcard." + first[2:] if first.startswith("*.") else first)
    addresses = san.get_values_for_type(x509.IPAddress)
    if addresses:
        return verification.IPAddress(addresses[0])
    raise ValueError("no host given and the leaf's subjectAltName has no DNS name or IP address")


def _validity_bounds(
    certs: Sequence[x509.Certificate],
) -> tuple[list[datetime.datetime], list[datetime.datetime]]:
    return (
        sorted(c.not_valid_before_utc for c in certs),
        sorted(c.not_valid_after_utc for c in certs),
    )


def _position(bounds: Sequence[datetime.datetime], now: datetime.datetime) -> tuple[int, int]:
    # Together, bisect_left and bisect_right pin down the sign of (now - t) for every t.
    return bisect.bisect_left(bounds, now), bisect.bisect_right(bounds, now)


class ChainClassifier:
    """Classifies served chains; stores are built once, results cached (bounded LRU).

    The cache key is the SHA-256 of every served certificate in served order, the host, and
    where ``now`` (truncated to whole seconds, as cryptography itself does) falls relative to
    every notBefore/notAfter of the served certificates and of all roots. Time enters
    verification only through those comparisons, so a cached answer is reused exactly when
    verifying again would give the same answer, and never across an expiry.
    """

    def __init__(
        self,
        public_roots: Sequence[x509.Certificate],
        private_roots: Sequence[x509.Certificate] = (),
        *,
        cache_size: int = CACHE_SIZE,
    ) -> None:
        self._public = verification.Store(list(public_roots)) if public_roots else None
        self._private = verification.Store(list(private_roots)) if private_roots else None
        self._public_anchors = _anchor_ids(public_roots)
        self._private_anchors = _anchor_ids(private_roots)
        roots = list(public_roots) + list(private_roots)
        self._root_not_before, self._root_not_after = _validity_bounds(roots)
        self._cache: BoundedMap[tuple[object, ...], ChainResult] = BoundedMap(cache_size)
        self._lock = threading.Lock()
        self._hits = 0
        self._misses = 0

    def cache_info(self) -> CacheInfo:
        with self._lock:
            return CacheInfo(self._hits, self._misses, len(self._cache), self._cache.maxsize)

    def classify(
        self,
        chain: Sequence[x509.Certificate],
        *,
        host: str | None,
        now: datetime.datetime | None = None,
        verified_chain: Sequence[bytes] | None = None,
    ) -> ChainResult:
        """chain[0] is the leaf, the rest as served (any order). Never raises.

        ``verified_chain``: pass it only when the TLS stack completed certificate
        verification of this connection (OpenSSL's verify result X509_V_OK with
        verification on, as mitmproxy does unless ssl_insecure is set): the chain it built,
        as DER, leaf first and trust anchor last (``SSL_get0_verified_chain``). When its leaf
        is the served leaf and its anchor is one of the public (private) roots, the result is
        at least public (private), whatever cryptography's stricter verifier says.
        """
        verified = tuple(bytes(der) for der in verified_chain) if verified_chain else ()
        try:
            moment = (now or datetime.datetime.now(UTC)).replace(microsecond=0)
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
            verified_key = tuple(hashlib.sha256(der).digest() for der in verified)
            key = (*self._cache_key(chain, host, moment), verified_key)
        except Exception as e:  # noqa: BLE001 - hostile or malformed input
            return ChainResult(ChainKind.UNTRUSTED, (), f"cannot read the chain: {e}")
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._hits += 1
                return cached
            self._misses += 1
        result = self._classify(chain, host, moment)
        if verified and chain and result.kind is not ChainKind.PUBLIC:
            result = self._no_stricter_than_tls(result, chain[0], verified)
        with self._lock:
            self._cache.put(key, result)
        return result

    def classify_served(
        self,
        served: ServedChain,
        *,
        host: str | None,
        now: datetime.datetime | None = None,
        verified_chain: Sequence[bytes] | None = None,
    ) -> ChainResult:
        """``classify`` for what ``read_served_chain`` read. Never raises.

        Unparsable extras are already left out. With an unreadable leaf the result says so
        (``leaf_readable`` False); its class then comes from the TLS verification alone:
        public or private when OpenSSL verified the chain to such a root, else untrusted.
        """
        if served.leaf is not None:
            return self.classify(
                served.certificates, host=host, now=now, verified_chain=verified_chain
            )
        error = f"cannot read the chain: {served.leaf_error}"
        kind = None
        if verified_chain and served.ders and bytes(verified_chain[0]) == served.ders[0]:
            kind = self._anchor_kind(verified_chain[-1])
        if kind is None:
            return ChainResult(ChainKind.UNTRUSTED, (), error, leaf_readable=False)
        return ChainResult(kind, (), error, tls_verified=True, leaf_readable=False)

    def _no_stricter_than_tls(
        self, result: ChainResult, leaf: x509.Certificate, verified: tuple[bytes, ...]
    ) -> ChainResult:
        try:
            same_leaf = verified[0] == leaf.public_bytes(serialization.Encoding.DER)
        except Exception:  # noqa: BLE001
            same_leaf = False
        kind = self._anchor_kind(verified[-1]) if same_leaf else None
        if kind is None or kind is result.kind:
            return result
        if kind is ChainKind.PRIVATE and result.kind is not ChainKind.UNTRUSTED:
            return result
        validated = read_served_chain(verified).certificates
        why = result.error or "refused by cryptography's verifier"
        return ChainResult(kind, validated, f"verified by the TLS stack; {why}", tls_verified=True)

    def _anchor_kind(self, anchor_der: bytes) -> ChainKind | None:
        """PUBLIC or PRIVATE when ``anchor_der`` is one of our roots (same subject and key,
        as RFC 5280 defines a trust anchor), else None."""
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", CryptographyDeprecationWarning)
                anchor = _anchor_id(x509.load_der_x509_certificate(bytes(anchor_der)))
        except Exception:  # noqa: BLE001
            return None
        if anchor in self._public_anchors:
            return ChainKind.PUBLIC
        if anchor in self._private_anchors:
            return ChainKind.PRIVATE
        return None

    def _cache_key(
        self, chain: Sequence[x509.Certificate], host: str | None, moment: datetime.datetime
    ) -> tuple[object, ...]:
        digests = tuple(
            hashlib.sha256(c.public_bytes(serialization.Encoding.DER)).digest() for c in chain
        )
        served_times = tuple(
            (
                (moment > c.not_valid_before_utc) - (moment < c.not_valid_before_utc),
                (moment > c.not_valid_after_utc) - (moment < c.not_valid_after_utc),
            )
            for c in chain
        )
        return (
            digests,
            host,
            served_times,
            _position(self._root_not_before, moment),
            _position(self._root_not_after, moment),
        )

    def _classify(
        self, chain: Sequence[x509.Certificate], host: str | None, moment: datetime.datetime
    ) -> ChainResult:
        if not chain:
            return ChainResult(ChainKind.UNTRUSTED, (), "empty certificate chain")
        try:
            subject = _subject_for(host, chain[0])
        except Exception as e:  # noqa: BLE001
            return ChainResult(ChainKind.UNTRUSTED, (), str(e))
        public_error = "no public roots configured"
        try:
            public = self._verifier(self._public, subject, moment)
            private = self._verifier(self._private, subject, moment)
        except Exception as e:  # noqa: BLE001 - cryptography refuses the name itself
            return ChainResult(ChainKind.UNTRUSTED, (), f"cannot verify for {host!r}: {e}")
        if public is not None:
            validated, public_error = _verify(public, chain)
            if validated:
                return ChainResult(ChainKind.PUBLIC, validated, None)
        if private is None:
            return ChainResult(ChainKind.UNTRUSTED, (), f"not publicly trusted: {public_error}")
        validated, private_error = _verify(private, chain)
        if validated:
            return ChainResult(
                ChainKind.PRIVATE, validated, f"not publicly trusted: {public_error}"
            )
        return ChainResult(
            ChainKind.UNTRUSTED,
            (),
            f"not publicly trusted: {public_error}; not trusted by the private roots: "
            f"{private_error}",
        )

    @staticmethod
    def _verifier(
        store: verification.Store | None,
        subject: verification.DNSName | verification.IPAddress,
        moment: datetime.datetime,
    ) -> verification.ServerVerifier | None:
        if store is None:
            return None
        return verification.PolicyBuilder().store(store).time(moment).build_server_verifier(subject)


def _anchor_ids(roots: Sequence[x509.Certificate]) -> frozenset[tuple[bytes, bytes]]:
    ids = set()
    for root in roots:
        try:
            ids.add(_anchor_id(root))
        except Exception:  # noqa: BLE001 - a key type cryptography cannot load
            continue
    return frozenset(ids)


def _anchor_id(root: x509.Certificate) -> tuple[bytes, bytes]:
    return (
        root.subject.public_bytes(),
        root.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    )


def _verify(
    verifier: verification.ServerVerifier, chain: Sequence[x509.Certificate]
) -> tuple[tuple[x509.Certificate, ...], str]:
    """(validated chain, "") or ((), why not)."""
    try:
        return tuple(verifier.verify(chain[0], list(chain[1:]))), ""
    except Exception as e:  # noqa: BLE001 - VerificationError, or errors from hostile DER
        return (), str(e) or type(e).__name__
