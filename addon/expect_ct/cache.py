"""A bounded cache of CT verdicts, keyed by what the verdict depends on.

A proxy sees the same certificates over and over: one evaluation (several signature
verifications, ~0.5-1 ms) per distinct certificate and handshake data is enough. The key
is the leaf, the issuer used for embedded SCTs, the exact TLS-extension and OCSP bytes,
the policy and the log list. Verdicts also depend on the
time (log states, retirements, SCT timestamps from the future), so entries expire.
"""

from __future__ import annotations

import collections
import datetime
import time
from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from expect_ct import loglist as loglistmod
from expect_ct import policy as policymod

_DER = serialization.Encoding.DER
DEFAULT_MAXSIZE = 4096
DEFAULT_TTL = 3600.0

CacheKey = tuple[object, ...]


class VerdictCache:
    """LRU of Verdicts, at most ``maxsize`` entries, each trusted for ``ttl`` seconds."""

    def __init__(self, maxsize: int = DEFAULT_MAXSIZE, ttl: float = DEFAULT_TTL) -> None:
        if maxsize < 1:
            raise ValueError(f"maxsize must be at least 1, not {maxsize}")
        self.maxsize = maxsize
        self.ttl = ttl
        self.hits = 0
        self.misses = 0
        self._entries: collections.OrderedDict[CacheKey, tuple[float, policymod.Verdict]] = (
            collections.OrderedDict()
        )

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()

    def get_or_evaluate(
        self,
        chain: Sequence[x509.Certificate],
        *,
        tls_scts: bytes | None,
        ocsp_response: bytes | None,
        log_list: loglistmod.LogList,
        policy: str,
        issuers: Sequence[x509.Certificate] = (),
        now: datetime.datetime | None = None,
    ) -> policymod.Verdict:
        # The verdict depends on the leaf, the key that issued it (for embedded SCTs: the
        # validated issuer if there is one, else whatever the served chain offers), the
        # handshake bytes, the policy and the log list. DER bytes, not fingerprints: hashing
        # the bytes is cheaper than SHA-256, and a hit compares them in full.
        leaf = chain[0].public_bytes(_DER) if chain else b""
        anchor: object = (
            issuers[0].public_bytes(_DER)
            if issuers
            else tuple(c.public_bytes(_DER) for c in chain[1:])
        )
        key: CacheKey = (leaf, anchor, tls_scts, ocsp_response, policy, id(log_list))
        clock = time.monotonic()
        entry = self._entries.get(key)
        if entry is not None and clock - entry[0] < self.ttl:
            self._entries.move_to_end(key)
            self.hits += 1
            return entry[1]
        self.misses += 1
        verdict = policymod.evaluate(
            chain,
            tls_scts=tls_scts,
            ocsp_response=ocsp_response,
            log_list=log_list,
            policy=policy,
            now=now,
            issuers=issuers,
        )
        self._entries[key] = (clock, verdict)
        self._entries.move_to_end(key)
        while len(self._entries) > self.maxsize:
            self._entries.popitem(last=False)
        return verdict
