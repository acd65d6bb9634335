"""Bounded memory for a long-running proxy: one LRU/TTL mapping, and the verdict cache.

A proxy sees unbounded numbers of certificates, hosts and connections; every map the addon
keeps is a ``BoundedMap``: at most ``maxsize`` entries (the least recently used goes first),
each optionally trusted for ``ttl`` seconds.

A proxy also sees the same certificates over and over: one evaluation (several signature
verifications, ~0.5-1 ms) per distinct certificate and handshake data is enough. The
verdict cache's key is the leaf, the issuer used for embedded SCTs, the exact TLS-extension
and OCSP bytes, the policy and the log list. Verdicts also depend on the time (log states,
retirements, SCT timestamps from the future), so entries expire.
"""

from __future__ import annotations

import collections
import datetime
import time
from collections.abc import Callable
from collections.abc import Hashable
from collections.abc import Sequence
from typing import Generic
from typing import TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from expect_ct import loglist as loglistmod
from expect_ct import policy as policymod

_DER = serialization.Encoding.DER
DEFAULT_MAXSIZE = 4096
DEFAULT_TTL = 3600.0

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

CacheKey = tuple[object, ...]
_NEVER = float("inf")


class BoundedMap(Generic[K, V]):
    """A mapping of at most ``maxsize`` entries, least recently used evicted first.

    With ``ttl`` (seconds, ``time.monotonic()`` by default), an entry older than that is
    gone: ``get`` does not return it. ``put`` may give an entry its own, shorter lifetime.
    """

    def __init__(
        self,
        maxsize: int,
        ttl: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if maxsize < 1:
            raise ValueError(f"maxsize must be at least 1, not {maxsize}")
        self.maxsize = maxsize
        self.ttl = ttl
        self._clock = clock
        # key -> (expiry on the clock or inf, value)
        self._entries: collections.OrderedDict[K, tuple[float, V]] = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def entries(self) -> list[tuple[K, float, V]]:
        """(key, expiry on the clock or inf, value), least recently used first."""
        return [(key, expires, value) for key, (expires, value) in self._entries.items()]

    def get(self, key: K, default: V | None = None) -> V | None:
        entry = self._entries.get(key)
        if entry is None:
            return default
        # Entries without a lifetime (expiry inf) skip the clock: some maps are read several
        # times per request.
        if entry[0] != _NEVER and entry[0] <= self._clock():
            del self._entries[key]
            return default
        self._entries.move_to_end(key)
        return entry[1]

    def put(self, key: K, value: V, *, ttl: float | None = None) -> None:
        lifetime = self.ttl if ttl is None else ttl if self.ttl is None else min(ttl, self.ttl)
        expires = _NEVER if lifetime is None else self._clock() + lifetime
        self._entries[key] = (expires, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.maxsize:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()

    def discard_if(self, predicate: Callable[[K], bool]) -> None:
        """Forget every entry whose key matches."""
        for key in [k for k in self._entries if predicate(k)]:
            del self._entries[key]


class VerdictCache:
    """LRU of Verdicts, at most ``maxsize`` entries, each trusted for ``ttl`` seconds."""

    def __init__(self, maxsize: int = DEFAULT_MAXSIZE, ttl: float = DEFAULT_TTL) -> None:
        self._entries: BoundedMap[CacheKey, policymod.Verdict] = BoundedMap(maxsize, ttl)
        self.maxsize = maxsize
        self.ttl = ttl
        self.hits = 0
        self.misses = 0

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
        cached = self._entries.get(key)
        if cached is not None:
            self.hits += 1
            return cached
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
        self._entries.put(key, verdict)
        return verdict
