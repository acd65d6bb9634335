"""CT policy evaluation: which SCTs are valid, and whether they satisfy Chrome's or Apple's policy.

Two steps, kept apart so the policy tables can be tested without signatures:

1. ``evaluate`` collects SCTs from the certificate, the TLS extension and the OCSP staple and
   checks each one (log known? signature valid? timestamp not in the future?) into an SCTCheck.
2. ``apply_policy`` is pure: given the checks, the validity period and a policy name it decides
   compliance, marks every check counted or not with a ``why``, and words the reasons.

Policies (rules C1-C12, A1-A11, U1-U4 of docs/ct-policies.md, in force on 2026-12-05):

* ``chrome``: what Chrome 148 and later ships (policy_chrome.py): GoogleChrome/
  CertificateTransparency ct_policy.md at 5ee521b, with Chromium's enforcer where code and
  text differ (mixed delivery, C3); SCTs in stapled OCSP responses are verified and shown
  but never counted (C4).
* ``chrome-pre148``: the same, counting OCSP SCTs like TLS-extension SCTs (Chrome < 148).
* ``apple``: support.apple.com/103214 with trustd's per-log checks (policy_apple.py).

Pure: no mitmproxy import. ``evaluate`` never raises on hostile certificate, TLS or OCSP data.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import replace
from datetime import UTC
from datetime import datetime
from datetime import timedelta

from cryptography import x509

from expect_ct import policy_apple
from expect_ct import policy_chrome
from expect_ct.loglist import LogList
from expect_ct.loglist import datetime_to_ms
from expect_ct.policy_common import APPLE
from expect_ct.policy_common import CHROME
from expect_ct.policy_common import CHROME_PRE148
from expect_ct.policy_common import INVALID
from expect_ct.policy_common import NON_EMBEDDED
from expect_ct.policy_common import UNKNOWN
from expect_ct.policy_common import VALID
from expect_ct.policy_common import Path
from expect_ct.policy_common import SCTCheck
from expect_ct.policy_common import Standing
from expect_ct.policy_common import format_ms
from expect_ct.policy_common import standing
from expect_ct.sct import SCT
from expect_ct.sct import InvalidSCTList
from expect_ct.sct import SCTVerificationError
from expect_ct.sct import Source
from expect_ct.sct import embedded_scts
from expect_ct.sct import find_issuer
from expect_ct.sct import ocsp_scts
from expect_ct.sct import parse_sct_list
from expect_ct.sct import verify_sct

__all__ = [
    "INVALID",
    "POLICIES",
    "UNKNOWN",
    "VALID",
    "Freshness",
    "SCTCheck",
    "Verdict",
    "apply_policy",
    "check_sct",
    "evaluate",
    "freshness",
    "freshness_limit",
    "is_timely",
]

POLICIES = (CHROME, CHROME_PRE148, APPLE)

# Kept for callers of the former single-module policy.
CHROME_SHORT_LIFETIME = policy_chrome.CHROME_SHORT_LIFETIME
APPLE_TIERS = policy_apple.APPLE_TIERS


@dataclass(frozen=True)
class Freshness:
    """How long a policy's clients keep enforcing CT with an old log list.

    Enforcement holds while the list's age is strictly under ``limit``; after that the
    client stops enforcing (fails open). ``measured_from`` says what the age counts from.
    """

    limit: timedelta
    measured_from: str
    rule: str


_FRESHNESS = {
    # C10: Chromium's IsLogDataTimely, `(now - log_list_timestamp).InDays() < 70`.
    CHROME: Freshness(timedelta(days=70), "the list's log_list_timestamp", "C10"),
    CHROME_PRE148: Freshness(timedelta(days=70), "the list's log_list_timestamp", "C10"),
    # A10: trustd's SecOTAPKIAssetStalenessLessThanSeconds(kSecOTAPKIAssetStalenessDisable),
    # 60 days since the device last confirmed it has the latest list.
    APPLE: Freshness(
        timedelta(days=60), "the last confirmation that the list is the latest", "A10"
    ),
}


def freshness(policy: str) -> Freshness:
    """The freshness rule of ``policy`` (C10, A10)."""
    _require_known_policy(policy)
    return _FRESHNESS[policy]


def freshness_limit(policy: str) -> timedelta:
    """The list age from which ``policy``'s clients stop enforcing CT (Chrome 70 days from
    log_list_timestamp, C10; Apple 60 days since the list was last confirmed, A10)."""
    return freshness(policy).limit


def is_timely(policy: str, age: timedelta) -> bool:
    """Whether a list ``age`` old still enforces under ``policy``: strictly under the limit."""
    return age < freshness_limit(policy)


@dataclass(frozen=True)
class Verdict:
    """The outcome of a policy check. ``reasons`` is empty exactly when ``compliant``."""

    compliant: bool
    policy: str
    reasons: list[str]
    scts: list[SCTCheck]
    lifetime: timedelta | None = None
    # SCTs from distinct logs the embedded path needs (Chrome's N, Apple's table), if any.
    required: int | None = None
    # Distinct operators (at SCT time) among the counted SCTs.
    operators: tuple[str, ...] = ()
    # Which rule made it compliant: "embedded" (C1) or "mixed" (C3) for chrome and
    # chrome-pre148; "a" (A2) or "b" (A3) for apple.
    satisfied_by: str | None = None
    # SCT sources that could not be read (malformed list or OCSP response). They are listed
    # here even when the other SCTs make the certificate compliant.
    problems: tuple[str, ...] = ()


# --- Step 1: collect and check SCTs.


def evaluate(
    chain: Sequence[x509.Certificate],
    *,
    tls_scts: bytes | None = None,
    ocsp_response: bytes | None = None,
    log_list: LogList,
    policy: str = "chrome",
    now: datetime | None = None,
    issuers: Sequence[x509.Certificate] = (),
) -> Verdict:
    """Check every SCT for ``chain[0]`` and apply ``policy``.

    ``chain`` is the leaf followed by the certificates as served (their order is not
    trusted); ``issuers`` adds candidates such as trust-store roots, needed to verify
    embedded SCTs when the server did not send the issuer.
    """
    _require_known_policy(policy)
    now = _aware(now) if now is not None else datetime.now(UTC)
    if not chain:
        return Verdict(compliant=False, policy=policy, reasons=["no certificate"], scts=[])
    leaf = chain[0]

    problems: list[str] = []
    scts: list[SCT] = []
    scts += _collect("embedded SCT list in the certificate", lambda: embedded_scts(leaf), problems)
    if tls_scts is not None:
        scts += _collect(
            "SCT list in the TLS extension",
            lambda: parse_sct_list(tls_scts, Source.TLS_EXTENSION),
            problems,
        )
    if ocsp_response is not None:
        scts += _collect("stapled OCSP response", lambda: ocsp_scts(ocsp_response, leaf), problems)

    issuer: x509.Certificate | None = None
    if any(sct.source is Source.EMBEDDED for sct in scts):
        candidates = [*chain[1:], *issuers]
        try:
            issuer = find_issuer(leaf, candidates)
        except Exception as e:  # hostile certificates must not escape as exceptions
            problems.append(f"looking for the issuer failed: {_describe_error(e)}")

    checks = [check_sct(sct, log_list=log_list, leaf=leaf, issuer=issuer, now=now) for sct in scts]
    return apply_policy(
        checks,
        not_before=leaf.not_valid_before_utc,
        not_after=leaf.not_valid_after_utc,
        policy=policy,
        now=now,
        problems=problems,
    )


def _collect(what: str, extract: Callable[[], list[SCT]], problems: list[str]) -> list[SCT]:
    try:
        return extract()
    except InvalidSCTList as e:
        problems.append(f"{what} is malformed: {e}")
    except Exception as e:  # the contract: malformed input becomes a reason, never an exception
        problems.append(f"{what} could not be read: {_describe_error(e)}")
    return []


def check_sct(
    sct: SCT,
    *,
    log_list: LogList,
    leaf: x509.Certificate,
    issuer: x509.Certificate | None,
    now: datetime,
) -> SCTCheck:
    """Status of one SCT, independent of any policy."""
    # RFC 6962 section 3.2: v1 is the only version; its wire value is 0.
    if sct.version != 0:
        log = log_list.get(sct.log_id)
        return SCTCheck(sct, INVALID, f"unsupported SCT version {sct.version + 1}", log)
    log = log_list.get(sct.log_id)
    if log is None:
        return SCTCheck(sct, UNKNOWN, "log not in the log list", None)
    if sct.timestamp > datetime_to_ms(now):
        return SCTCheck(sct, INVALID, f"timestamp {format_ms(sct.timestamp)} is in the future", log)
    if sct.source is Source.EMBEDDED and issuer is None:
        # RFC 6962 section 3.2: a precert_entry signs the issuer's key hash, so the issuer
        # certificate is needed to verify it.
        return SCTCheck(sct, INVALID, "issuer certificate not available to verify the SCT", log)
    try:
        verify_sct(sct, log.key, leaf, issuer)
    except SCTVerificationError as e:
        return SCTCheck(sct, INVALID, str(e) or "invalid signature", log)
    except Exception as e:  # e.g. a malformed key in a user-supplied log list
        return SCTCheck(sct, INVALID, f"verification failed: {_describe_error(e)}", log)
    return SCTCheck(sct, VALID, None, log)


# --- Step 2: the policies.


def apply_policy(
    checks: Sequence[SCTCheck],
    *,
    not_before: datetime,
    not_after: datetime,
    policy: str,
    now: datetime,
    problems: Iterable[str] = (),
) -> Verdict:
    """Decide compliance from already checked SCTs (pure; no signatures involved)."""
    _require_known_policy(policy)
    now = _aware(now)
    lifetime = _aware(not_after) - _aware(not_before)
    problems = tuple(problems)
    not_after = _aware(not_after)
    standings = [standing(check, policy=policy, now=now, not_after=not_after) for check in checks]
    paths: list[Path]
    if policy == APPLE:
        apple_days = policy_apple.lifetime_days(lifetime)
        paths = [
            policy_apple.embedded_path(checks, standings, apple_days),
            policy_apple.delivered_path(checks, standings),
        ]
        tier = policy_apple.tier(apple_days)
        required = None if tier is None else tier[0]
    else:
        paths = [
            policy_chrome.embedded_path(checks, standings, lifetime),
            policy_chrome.mixed_path(checks, standings, policy),
        ]
        required = policy_chrome.required_embedded_logs(lifetime)

    passing = [path for path in paths if path.passed]
    annotated = _annotate(checks, standings, paths, passing)
    operators = sorted({c.operator for c in annotated if c.counted and c.operator is not None})
    if passing:
        reasons: list[str] = []
    elif not checks:
        reasons = [
            "no SCTs: none embedded in the certificate, none in the TLS extension "
            "or the OCSP response",
            *problems,
        ]
    else:
        reasons = [reason for path in paths if path.relevant for reason in path.reasons]
        if policy == APPLE:
            reasons = policy_apple.overall_reasons(checks, standings) or reasons
        reasons += problems
    return Verdict(
        compliant=bool(passing),
        policy=policy,
        reasons=reasons,
        scts=annotated,
        lifetime=lifetime,
        required=required,
        operators=tuple(operators),
        satisfied_by=passing[0].name if passing else None,
        problems=problems,
    )


def _annotate(
    checks: Sequence[SCTCheck],
    standings: Sequence[Standing],
    paths: Sequence[Path],
    passing: Sequence[Path],
) -> list[SCTCheck]:
    """Mark checks counted by the passing paths (or, when none passes, by the paths whose
    reasons explain the failure)."""
    deciding = passing or [p for p in paths if p.relevant] or paths
    out: list[SCTCheck] = []
    for index, (check, stand) in enumerate(zip(checks, standings, strict=True)):
        counted_why = next((p.counted[index] for p in deciding if index in p.counted), None)
        if counted_why is not None:
            out.append(replace(check, counted=True, why=counted_why))
            continue
        why = next(
            (p.skipped[index] for p in [*deciding, *paths] if index in p.skipped),
            None,
        )
        if why is None:
            if stand.excluded:
                why = stand.excluded
            else:
                used = " and ".join(_PATH_WORDS[p.name] for p in passing)
                why = f"not counted: compliant via {used} without it"
        out.append(replace(check, counted=False, why=why))
    return out


_PATH_WORDS = {
    "embedded": "embedded SCTs (C1)",
    "mixed": "1 non-embedded SCT and 2 operators (C3)",
    "a": f"rule (a), SCTs delivered via {NON_EMBEDDED[APPLE]} (A2)",
    "b": "rule (b), embedded SCTs (A3)",
}


def _describe_error(error: Exception) -> str:
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _aware(moment: datetime) -> datetime:
    # Naive datetimes are taken as UTC, as cryptography's not_valid_* (non _utc) return them.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _require_known_policy(policy: str) -> None:
    if policy not in POLICIES:
        raise ValueError(f"unknown CT policy {policy!r}: use one of {', '.join(POLICIES)}")
