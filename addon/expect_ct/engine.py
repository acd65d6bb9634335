"""The one CT engine: the addon (live connections) and ``python -m expect_ct check`` /
``inspect`` (saved flows, certificate files) judge connections with it alike.

``Engine.evaluate`` turns (served chain, handshake SCTs, stapled OCSP response) with the
engine's log list, roots and policy, at a moment, into an ``Evaluation``: the chain's
classification, the CT verdict, its ``connection`` record and its one-line summary. It
keeps the verdict cache and a short memo of whole evaluations (a new connection to a host
evaluated moments ago). ``load_log_list`` and ``load_public_roots`` / ``load_private_roots``
read what the addon's options and the CLI's flags name, the same way.

Pure: no mitmproxy import (the CLI's ``hosts`` and friends must not import mitmproxy).
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from expect_ct import cache
from expect_ct import chain as chainmod
from expect_ct import loglist as loglistmod
from expect_ct import loglist_update
from expect_ct import policy as policymod
from expect_ct import records
from expect_ct import report as reportmod

LOG_LIST_FILENAME = loglistmod.INSTALLED_FILENAME
VERDICT_CACHE_SIZE = 4096
# A new connection to a host whose chain and handshake data were evaluated moments ago gets
# that evaluation again (chain, verdict, record): at most this old, and never across a
# certificate's notBefore/notAfter.
EVALUATION_MEMO_TTL = 60.0  # seconds
EVALUATION_MEMO_SIZE = 1024


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class LoadError(ValueError):
    """A log list or root file cannot be used; the message says which file and why."""


# ------------------------------------------------------------------------------ inputs


def _load_error(path: str, error: Exception) -> LoadError:
    """One sentence naming the file once (the core's messages often name it already)."""
    text = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
    if isinstance(error, OSError):
        text = f"cannot read: {text}"
    return LoadError(text if path in text else f"{path}: {text}")


@dataclass(frozen=True)
class LoadedLogList:
    log_list: loglistmod.LogList
    # When its source last confirmed it (loglist_update's age rules): the list's own
    # timestamp, else the last fetch, the file's modification time or the snapshot date.
    timestamp: datetime.datetime | None
    path: str | None  # None: the list bundled with the addon

    def stale(self, max_age_days: int, now: datetime.datetime | None = None) -> bool:
        """Older than ``max_age_days`` (0: never stale); a list of unknown age is stale."""
        if not max_age_days:
            return False
        if self.timestamp is None:
            return True
        return (now or utcnow()) - self.timestamp > datetime.timedelta(days=max_age_days)

    def describe(self) -> str:
        if self.log_list.timestamp is not None:
            dated = f"dated {records.rfc3339(self.log_list.timestamp)}"
        elif self.timestamp is not None:
            dated = f"no timestamp in the list; last confirmed {records.rfc3339(self.timestamp)}"
        else:
            dated = "undated"
        return f"{len(self.log_list)} CT logs from {self.log_list.source} ({dated})"


def load_log_list(path: str | None, confdir: str) -> LoadedLogList:
    """The log list at ``path``; without one, what the addon would start with: the list
    installed in ``confdir`` when it is fresher than the bundled Apple snapshot, else the
    snapshot (loglist_update.choose_start_list). Its age runs from its last confirmation."""
    try:
        choice = loglist_update.choose_start_list(confdir, path or None)
    except (OSError, ValueError, loglist_update.FetchError) as e:
        raise _load_error(os.path.expanduser(path or confdir), e) from e
    return loaded_from(choice.current)


def loaded_from(current: loglist_update.CurrentList) -> LoadedLogList:
    """A loglist_update.CurrentList as the engine holds it."""
    meta = current.metadata
    return LoadedLogList(
        current.log_list, meta.confirmed, None if meta.source == "bundled" else meta.source
    )


def load_public_roots(path: str | None) -> list[x509.Certificate]:
    """The roots treated as publicly trusted: a PEM bundle, else certifi's bundle."""
    if not path:
        return chainmod.load_pem_roots(chainmod.default_public_roots(), skip_invalid=True)
    return _load_pem(path)


def load_private_roots(pem: str | None, directory: str | None = None) -> list[x509.Certificate]:
    """Roots trusted upstream but not public (mitmproxy's ssl_verify_upstream_trusted_ca and
    ssl_verify_upstream_trusted_confdir): chains ending there are private, exempt from CT."""
    roots = _load_pem(pem) if pem else []
    if directory:
        try:
            roots += chainmod.load_roots_dir(os.path.expanduser(directory))
        except (OSError, ValueError) as e:
            raise _load_error(directory, e) from e
    return roots


def _load_pem(path: str) -> list[x509.Certificate]:
    path = os.path.expanduser(path)
    try:
        return chainmod.load_pem_roots(path)
    except (OSError, ValueError) as e:
        raise _load_error(path, e) from e


# -------------------------------------------------------------------------- evaluation


def verdict_summary(chain: chainmod.ChainResult, verdict: policymod.Verdict) -> str:
    """One line: the CT verdict on a connection, as flow comments and the event log show it."""
    if chain.kind is chainmod.ChainKind.PRIVATE:
        return "CT: exempt (chain ends at a private root)"
    valid = sum(1 for c in verdict.scts if c.status == "valid")
    sources = sorted({c.sct.source.value for c in verdict.scts})
    detail = f"{valid}/{len(verdict.scts)} valid SCTs" + (
        f" ({', '.join(sources)})" if sources else ""
    )
    if verdict.compliant:
        text = f"CT: compliant ({verdict.policy}; {detail})"
    else:
        reasons = "; ".join(verdict.reasons) or "not compliant"
        text = f"CT: NOT compliant ({verdict.policy}; {detail}): {reasons}"
    if chain.kind is chainmod.ChainKind.UNTRUSTED:
        text += " [chain not publicly trusted]"
    return text


@dataclass(frozen=True)
class Evaluation:
    """What every connection with the same chain, handshake data and settings shares."""

    chain: chainmod.ChainResult
    verdict: policymod.Verdict
    event: dict[str, Any]  # the ``connection`` record (JSON primitives only)
    event_json: str  # ``event`` as EventLog.encode_fields() writes it
    summary: str

    @property
    def exempt(self) -> bool:
        return self.chain.kind is chainmod.ChainKind.PRIVATE

    @property
    def fails(self) -> bool:
        """A publicly trusted chain that is not compliant (the CLI's exit code 1)."""
        return self.chain.kind is chainmod.ChainKind.PUBLIC and not self.verdict.compliant


def next_validity_boundary(chain: Sequence[x509.Certificate], now: datetime.datetime) -> float:
    """Seconds until a certificate of the chain becomes valid or expires (inf if none will)."""
    soonest = float("inf")
    for cert in chain:
        for moment in (cert.not_valid_before_utc, cert.not_valid_after_utc):
            if moment > now:
                soonest = min(soonest, (moment - now).total_seconds())
    return soonest


class Engine:
    """Evaluations under one log list, one set of roots and one policy."""

    def __init__(
        self,
        log_list: LoadedLogList,
        classifier: chainmod.ChainClassifier,
        policy: str,
        *,
        verdicts: cache.VerdictCache | None = None,
    ) -> None:
        self.loaded = log_list
        self.log_list = log_list.log_list
        self.classifier = classifier
        self.policy = policy
        # Shared across engines when the caller passes one: a new policy or log list is
        # part of the verdict cache's key anyway.
        self.verdicts = verdicts if verdicts is not None else cache.VerdictCache(VERDICT_CACHE_SIZE)
        self.memo: cache.BoundedMap[tuple[object, ...], Evaluation] = cache.BoundedMap(
            EVALUATION_MEMO_SIZE, EVALUATION_MEMO_TTL
        )

    def describe(self, now: datetime.datetime) -> str:
        return f"policy {self.policy}, as of {records.rfc3339(now)}, {self.loaded.describe()}"

    def evaluate(
        self,
        host: str | None,
        served: Sequence[x509.Certificate],
        *,
        tls_extension: bytes | None,
        ocsp_response: bytes | None,
        captured: bool,
        tls_version: str | None,
        chain_der: Sequence[bytes] = (),
        verified_chain: Sequence[bytes] = (),
        now: datetime.datetime | None = None,
        sources: dict[str, str] | None = None,
    ) -> Evaluation:
        """Classify and judge the chain, or reuse the result for the same inputs (memo).

        ``captured``: whether the handshake was looked at (False: TLS-extension and OCSP
        SCTs were "not observed"). ``sources`` overrides the record's ``sources`` field.
        ``chain_der``: the served chain as DER, when known (a cheap exact memo key).
        ``verified_chain``: the chain the TLS stack verified (see ChainClassifier.classify).
        """
        at = now
        now = now or utcnow()
        ders = tuple(chain_der) or tuple(
            cert.public_bytes(serialization.Encoding.DER) for cert in served
        )
        key = (
            host,
            ders,
            tls_extension,
            ocsp_response,
            captured,
            tls_version,
            self.policy,
            None if sources is None else tuple(sorted(sources.items())),
            # Evaluations at a chosen moment (check --now) are not mixed with live ones.
            at,
            tuple(verified_chain),
        )
        memo = self.memo.get(key)
        if memo is not None:
            return memo
        chain_result = self.classifier.classify(
            served, host=host, now=now, verified_chain=verified_chain
        )
        verdict = self.verdicts.get_or_evaluate(
            served,
            tls_scts=tls_extension,
            ocsp_response=ocsp_response,
            log_list=self.log_list,
            policy=self.policy,
            # Trust-store roots let embedded SCTs verify when the server omitted the issuer.
            issuers=chain_result.validated[1:],
            now=now,
        )
        event = records.connection_record(
            tls_version=tls_version,
            chain=chain_result.kind,
            leaf=served[0] if served else None,
            verdict=verdict,
            sources=sources
            if sources is not None
            else records.handshake_sources(
                captured=captured, tls_extension=tls_extension, ocsp_response=ocsp_response
            ),
        )
        evaluation = Evaluation(
            chain=chain_result,
            verdict=verdict,
            event=event,
            event_json=reportmod.EventLog.encode_fields(event),
            summary=verdict_summary(chain_result, verdict),
        )
        lifetime = next_validity_boundary((*served, *chain_result.validated), now)
        self.memo.put(key, evaluation, ttl=lifetime)
        return evaluation
