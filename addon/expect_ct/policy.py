"""CT policy evaluation: which SCTs are valid, and whether they satisfy Chrome's or Apple's policy.

Two steps, kept apart so the policy tables can be tested without signatures:

1. ``evaluate`` collects SCTs from the certificate, the TLS extension and the OCSP staple and
   checks each one (log known? signature valid? timestamp not in the future?) into an SCTCheck.
2. ``apply_policy`` is pure: given the checks, the validity period and a policy name it decides
   compliance, marks every check counted or not with a ``why``, and words the reasons.

Policies (see docs/ct-policies.md):

* ``chrome``: GoogleChrome/CertificateTransparency ct_policy.md at 5ee521b (2026-04-15), with
  SCTs in stapled OCSP responses treated like TLS-extension SCTs as Chrome did before 148.
* ``apple``: support.apple.com/103214 (the 180/398-day table with per-operator caps).

Pure: no mitmproxy import. ``evaluate`` never raises on hostile certificate, TLS or OCSP data.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from dataclasses import replace
from datetime import UTC
from datetime import datetime
from datetime import timedelta

from cryptography import x509

from expect_ct.loglist import Log
from expect_ct.loglist import LogList
from expect_ct.loglist import LogState
from expect_ct.loglist import datetime_to_ms
from expect_ct.loglist import ms_to_datetime
from expect_ct.sct import SCT
from expect_ct.sct import InvalidSCTList
from expect_ct.sct import SCTVerificationError
from expect_ct.sct import Source
from expect_ct.sct import embedded_scts
from expect_ct.sct import find_issuer
from expect_ct.sct import ocsp_scts
from expect_ct.sct import parse_sct_list
from expect_ct.sct import verify_sct

POLICIES = ("chrome", "apple")

VALID = "valid"
INVALID = "invalid"
UNKNOWN = "unknown"

# ct_policy.md: N = 2 for lifetimes of at most 180 days, 3 above (Chromium: `> base::Days(180)`).
CHROME_SHORT_LIFETIME = timedelta(days=180)
# support.apple.com/103214: (days, SCTs from distinct logs, max SCTs counted per operator).
APPLE_TIERS = ((180, 2, 1), (398, 3, 2))

_DAY = timedelta(days=1)
_NON_EMBEDDED = "TLS extension or OCSP"


@dataclass(frozen=True)
class SCTCheck:
    """One SCT and what we concluded about it.

    ``status`` uses RFC 9163's report vocabulary: "valid", "invalid" or "unknown" (log not in
    the log list). ``counted`` says whether the SCT counted toward the policy and ``why``
    explains it in a sentence ("counted: usable log, operator Google").
    """

    sct: SCT
    status: str
    reason: str | None
    log: Log | None
    counted: bool = False
    why: str = ""

    @property
    def source(self) -> Source:
        return self.sct.source

    @property
    def operator(self) -> str | None:
        """The log's operator when the SCT was issued (previous_operators aware)."""
        return None if self.log is None else self.log.operator_at(self.sct.timestamp)


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
    # Which rule made it compliant: "embedded" or "tls-ocsp" (chrome); "a" or "b" (apple).
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
        return SCTCheck(
            sct, INVALID, f"timestamp {_format_ms(sct.timestamp)} is in the future", log
        )
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
    standings = [_standing(check, now) for check in checks]
    if policy == "chrome":
        paths = [
            _chrome_embedded(checks, standings, lifetime),
            _chrome_non_embedded(checks, standings),
        ]
        required: int | None = _chrome_required(lifetime)
    else:
        apple_days = _apple_lifetime_days(lifetime)
        paths = [
            _apple_embedded(checks, standings, apple_days),
            _apple_delivered(checks, standings),
        ]
        tier = _apple_tier(apple_days)
        required = None if tier is None else tier[0]

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
        if policy == "apple":
            reasons = _apple_overall(checks, standings) or reasons
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


@dataclass(frozen=True)
class _Standing:
    """Where a check stands whatever the path: ``excluded`` is set when it can never count."""

    admissible: bool
    retired_at: datetime | None  # set for a log retired before ``now``
    excluded: str | None  # "not counted: ..." when the SCT can never count


def _standing(check: SCTCheck, now: datetime) -> _Standing:
    if check.status != VALID or check.log is None:
        reason = check.reason or f"SCT is {check.status}"
        return _Standing(False, None, f"not counted: {check.status}: {reason}")
    log = check.log
    if log.state is None:
        return _Standing(False, None, "not counted: log has no state in the log list")
    if log.state in (LogState.PENDING, LogState.REJECTED):
        return _Standing(False, None, f"not counted: log is {log.state.value}{_since(log)}")
    if log.state is LogState.RETIRED and log.state_since is not None:
        # Chromium's IsLogDisqualified: a retirement dated in the future does not apply yet.
        if log.state_since <= now:
            return _Standing(False, log.state_since, None)
    return _Standing(True, None, None)


@dataclass
class _Path:
    """One way of complying, with per-check outcomes (index -> why)."""

    name: str
    passed: bool = False
    relevant: bool = True  # whether its reasons help explain a failure
    reasons: list[str] = field(default_factory=list)
    counted: dict[int, str] = field(default_factory=dict)
    skipped: dict[int, str] = field(default_factory=dict)


def _chrome_required(lifetime: timedelta) -> int:
    return 2 if lifetime <= CHROME_SHORT_LIFETIME else 3


def _chrome_embedded(
    checks: Sequence[SCTCheck], standings: Sequence[_Standing], lifetime: timedelta
) -> _Path:
    """ct_policy.md "Embedded SCTs": 1 admissible, N distinct logs, 2 operators."""
    path = _Path("embedded")
    # Chromium's issuance_date: the earliest SCT from a log that is not retired. Retired logs'
    # SCTs count only if both it and the SCT predate the retirement.
    issuance = min(
        (c.sct.timestamp for c, s in zip(checks, standings, strict=True) if s.admissible),
        default=None,
    )
    seen_logs: set[bytes] = set()
    operators: set[str] = set()
    has_admissible = False
    any_embedded = False
    for index, (check, standing) in enumerate(zip(checks, standings, strict=True)):
        if check.source is not Source.EMBEDDED:
            continue
        any_embedded = True
        if standing.excluded:
            path.skipped[index] = standing.excluded
            continue
        if standing.retired_at is not None:
            refused = _retired_refusal(check, standing.retired_at, issuance)
            if refused:
                path.skipped[index] = refused
                continue
        if check.sct.log_id in seen_logs:
            path.skipped[index] = "not counted: duplicate log"
            continue
        seen_logs.add(check.sct.log_id)
        operators.add(_operator(check))
        has_admissible = has_admissible or standing.admissible
        path.counted[index] = _counted_why(check, standing)

    required = _chrome_required(lifetime)
    if not has_admissible:
        path.reasons.append("no embedded SCT from a qualified, usable or readonly log")
    if len(seen_logs) < required:
        path.reasons.append(
            f"{required} embedded SCTs from distinct logs required for "
            f"{_describe_lifetime(lifetime)}, {len(seen_logs)} found"
        )
    if len(operators) < 2:
        path.reasons.append(f"embedded SCTs from 2 distinct operators required, {_only(operators)}")
    path.passed = not path.reasons
    non_embedded = any(c.source is not Source.EMBEDDED for c in checks)
    path.relevant = any_embedded or not non_embedded
    return path


def _retired_refusal(check: SCTCheck, retired_at: datetime, issuance: int | None) -> str | None:
    retired = _format_time(retired_at)
    if check.sct.timestamp >= datetime_to_ms(retired_at):
        return f"not counted: log retired {retired}, before this SCT"
    if issuance is None:
        return (
            f"not counted: log retired {retired}, and no SCT from a qualified, usable or "
            f"readonly log shows the certificate was issued before that"
        )
    if issuance >= datetime_to_ms(retired_at):
        issued = _format_ms(issuance)
        return (
            f"not counted: log retired {retired}, before the certificate was issued "
            f"(earliest SCT {issued})"
        )
    return None


def _chrome_non_embedded(checks: Sequence[SCTCheck], standings: Sequence[_Standing]) -> _Path:
    """ct_policy.md "SCTs delivered via TLS" (and OCSP before Chrome 148): 2 admissible SCTs
    from 2 distinct operators; retired logs never count here."""
    path = _Path("tls-ocsp")
    seen_logs: set[bytes] = set()
    operators: set[str] = set()
    any_delivered = False
    for index, (check, standing) in enumerate(zip(checks, standings, strict=True)):
        if check.source is Source.EMBEDDED:
            continue
        any_delivered = True
        if standing.excluded:
            path.skipped[index] = standing.excluded
            continue
        if not standing.admissible:
            path.skipped[index] = _retired_delivered(standing)
            continue
        if check.sct.log_id in seen_logs:
            path.skipped[index] = "not counted: duplicate log"
            continue
        seen_logs.add(check.sct.log_id)
        operators.add(_operator(check))
        path.counted[index] = _counted_why(check, standing)
    if len(seen_logs) < 2:
        path.reasons.append(
            f"2 SCTs delivered via {_NON_EMBEDDED} from qualified, usable or readonly logs "
            f"required, {len(seen_logs)} found"
        )
    if len(operators) < 2:
        path.reasons.append(
            f"SCTs delivered via {_NON_EMBEDDED} from 2 distinct operators required, "
            f"{_only(operators)}"
        )
    path.passed = not path.reasons
    path.relevant = any_delivered
    return path


def _retired_delivered(standing: _Standing) -> str:
    retired = _format_time(standing.retired_at) if standing.retired_at else "?"
    return (
        f"not counted: log retired {retired}; SCTs delivered via {_NON_EMBEDDED} "
        f"from retired logs never count"
    )


def _apple_lifetime_days(lifetime: timedelta) -> int:
    """RFC 5280 section 4.1.2.5: the validity period runs from notBefore through notAfter
    inclusive, so one second is added; Apple counts any part of a day as a day."""
    return math.ceil((lifetime + timedelta(seconds=1)) / _DAY)


def _apple_tier(days: int) -> tuple[int, int] | None:
    for max_days, required, cap in APPLE_TIERS:
        if days <= max_days:
            return required, cap
    return None


def _once_approved(check: SCTCheck, standing: _Standing) -> bool:
    """Currently approved, or retired after this SCT was issued."""
    if standing.admissible:
        return True
    return standing.retired_at is not None and check.sct.timestamp < datetime_to_ms(
        standing.retired_at
    )


def _apple_overall(checks: Sequence[SCTCheck], standings: Sequence[_Standing]) -> list[str]:
    """Apple's first rule, a precondition of both (a) and (b): 2 SCTs from once or
    currently approved logs. When it fails it is the whole story."""
    logs = {
        c.sct.log_id
        for c, s in zip(checks, standings, strict=True)
        if not s.excluded and _once_approved(c, s)
    }
    if len(logs) >= 2:
        return []
    return [f"2 SCTs from once or currently approved logs required, {len(logs)} found"]


def _apple_delivered(checks: Sequence[SCTCheck], standings: Sequence[_Standing]) -> _Path:
    """Apple (a): 2 SCTs from currently approved logs, at least one via TLS or OCSP."""
    path = _Path("a")
    seen_logs: set[bytes] = set()
    delivered = 0
    # Delivered SCTs first, so a log that sent both kinds is counted for its delivered SCT.
    order = sorted(range(len(checks)), key=lambda i: checks[i].source is Source.EMBEDDED)
    for index in order:
        check, standing = checks[index], standings[index]
        if standing.excluded:
            path.skipped[index] = standing.excluded
            continue
        if not standing.admissible:
            retired = _format_time(standing.retired_at) if standing.retired_at else "?"
            path.skipped[index] = (
                f"not counted: log retired {retired}; this rule needs currently approved logs"
            )
            continue
        if check.sct.log_id in seen_logs:
            path.skipped[index] = "not counted: duplicate log"
            continue
        seen_logs.add(check.sct.log_id)
        delivered += check.source is not Source.EMBEDDED
        path.counted[index] = _counted_why(check, standing)
    if delivered == 0:
        path.reasons.append(f"no SCT from a currently approved log delivered via {_NON_EMBEDDED}")
    elif len(seen_logs) < 2:
        path.reasons.append(
            f"2 SCTs from currently approved logs (at least 1 via {_NON_EMBEDDED}) required, "
            f"{len(seen_logs)} found"
        )
    path.passed = not path.reasons
    path.relevant = any(c.source is not Source.EMBEDDED for c in checks)
    return path


def _apple_embedded(checks: Sequence[SCTCheck], standings: Sequence[_Standing], days: int) -> _Path:
    """Apple (b): 1 embedded SCT from a currently approved log, and N embedded SCTs from
    distinct once or currently approved logs, at most ``cap`` of them per operator.

    The table counts embedded SCTs, as Apple's trustd does (SCTs delivered via TLS or OCSP
    are rule (a)'s business).
    """
    path = _Path("b")
    tier = _apple_tier(days)
    embedded = [i for i, c in enumerate(checks) if c.source is Source.EMBEDDED]
    path.relevant = bool(embedded) or all(c.source is Source.EMBEDDED for c in checks)
    if tier is None:
        path.reasons.append(
            f"embedded SCTs cannot make a {days}-day certificate compliant: Apple's policy "
            f"covers lifetimes up to 398 days"
        )
        for index in embedded:
            path.skipped[index] = standings[index].excluded or (
                f"not counted: no embedded-SCT rule for a {days}-day certificate"
            )
        return path
    required, cap = tier
    # Currently approved logs first, so the cap never squeezes them out.
    embedded.sort(key=lambda i: not standings[i].admissible)
    seen_logs: set[bytes] = set()
    per_operator: dict[str, int] = {}
    has_admissible = False
    for index in embedded:
        check, standing = checks[index], standings[index]
        if standing.excluded:
            path.skipped[index] = standing.excluded
            continue
        if not _once_approved(check, standing):
            retired = _format_time(standing.retired_at) if standing.retired_at else "?"
            path.skipped[index] = f"not counted: log retired {retired}, before this SCT"
            continue
        if check.sct.log_id in seen_logs:
            path.skipped[index] = "not counted: duplicate log"
            continue
        operator = _operator(check)
        if per_operator.get(operator, 0) >= cap:
            path.skipped[index] = (
                f"not counted: operator {operator} already has {cap} SCT{'s' * (cap > 1)} "
                f"counted, the most a {days}-day certificate allows"
            )
            continue
        seen_logs.add(check.sct.log_id)
        per_operator[operator] = per_operator.get(operator, 0) + 1
        has_admissible = has_admissible or standing.admissible
        path.counted[index] = _counted_why(check, standing)
    if not has_admissible:
        path.reasons.append("no embedded SCT from a currently approved log")
    if len(seen_logs) < required:
        path.reasons.append(
            f"{required} embedded SCTs from distinct logs required for a {days}-day "
            f"certificate (notBefore through notAfter inclusive; at most {cap} per operator), "
            f"{len(seen_logs)} counted"
        )
    path.passed = not path.reasons
    return path


def _annotate(
    checks: Sequence[SCTCheck],
    standings: Sequence[_Standing],
    paths: Sequence[_Path],
    passing: Sequence[_Path],
) -> list[SCTCheck]:
    """Mark checks counted by the passing paths (or, when none passes, by the paths whose
    reasons explain the failure)."""
    deciding = passing or [p for p in paths if p.relevant] or paths
    out: list[SCTCheck] = []
    for index, (check, standing) in enumerate(zip(checks, standings, strict=True)):
        counted_why = next((p.counted[index] for p in deciding if index in p.counted), None)
        if counted_why is not None:
            out.append(replace(check, counted=True, why=counted_why))
            continue
        why = next(
            (p.skipped[index] for p in [*deciding, *paths] if index in p.skipped),
            None,
        )
        if why is None:
            if standing.excluded:
                why = standing.excluded
            else:
                used = " and ".join(_PATH_WORDS[p.name] for p in passing)
                why = f"not counted: compliant via {used} without it"
        out.append(replace(check, counted=False, why=why))
    return out


_PATH_WORDS = {
    "embedded": "embedded SCTs",
    "tls-ocsp": f"SCTs delivered via {_NON_EMBEDDED}",
    "a": f"rule (a), SCTs delivered via {_NON_EMBEDDED}",
    "b": "rule (b), embedded SCTs",
}


# --- Wording helpers.


def _counted_why(check: SCTCheck, standing: _Standing) -> str:
    assert check.log is not None and check.log.state is not None
    operator = _operator(check)
    if standing.retired_at is not None:
        return (
            f"counted: log retired {_format_time(standing.retired_at)}, after this SCT, "
            f"operator {operator}"
        )
    if check.log.state is LogState.RETIRED and check.log.state_since is not None:
        retires = _format_time(check.log.state_since)
        return f"counted: log retires {retires}, not yet retired, operator {operator}"
    return f"counted: {check.log.state.value} log, operator {operator}"


def _operator(check: SCTCheck) -> str:
    operator = check.operator
    assert operator is not None
    return operator


def _only(operators: set[str]) -> str:
    if not operators:
        return "none found"
    return f"only {', '.join(sorted(operators))} found"


def _since(log: Log) -> str:
    return f" since {_format_time(log.state_since)}" if log.state_since else ""


def _describe_lifetime(lifetime: timedelta) -> str:
    if lifetime % _DAY == timedelta(0):
        return f"a {lifetime.days}-day certificate"
    days, rest = divmod(lifetime, _DAY)
    return f"a certificate valid {days} days {rest}"


def _format_ms(timestamp_ms: int) -> str:
    try:
        return _format_time(ms_to_datetime(timestamp_ms))
    except OverflowError:
        return f"{timestamp_ms} ms after 1970 (beyond year 9999)"


def _format_time(moment: datetime) -> str:
    moment = moment.astimezone(UTC)
    if moment.time() == datetime.min.time():
        return moment.strftime("%Y-%m-%d")
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _describe_error(error: Exception) -> str:
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _aware(moment: datetime) -> datetime:
    # Naive datetimes are taken as UTC, as cryptography's not_valid_* (non _utc) return them.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _require_known_policy(policy: str) -> None:
    if policy not in POLICIES:
        raise ValueError(f"unknown CT policy {policy!r}: use one of {', '.join(POLICIES)}")
