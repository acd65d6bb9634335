"""Apple's CT policy as published (support.apple.com/103214; rules A1-A11 of
docs/ct-policies.md), with trustd's per-log checks (read-only date A8, temporal interval A9).

Where Apple's text and trustd's code differ we follow the text, which is what Apple commits
to: the per-operator cap and the 398-day ceiling of rule (b) (A3, not trustd's
distinct-logs-only 180/825-day tiers, A3a) and the inclusive lifetime count (A4: exactly
180 days is a 181-day certificate, 3 SCTs; trustd asks for 2). A5 (1 SCT from an RFC 6962
log) is text only too, and enforced.

Internal to expect_ct.policy. Pure: no mitmproxy import.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import timedelta

from expect_ct.loglist import datetime_to_ms
from expect_ct.policy_common import DAY
from expect_ct.policy_common import NON_EMBEDDED
from expect_ct.policy_common import Path
from expect_ct.policy_common import SCTCheck
from expect_ct.policy_common import Standing
from expect_ct.policy_common import counted_why
from expect_ct.policy_common import format_time
from expect_ct.policy_common import operator_of
from expect_ct.sct import Source

# A3 (support.apple.com/103214): (days, SCTs from distinct logs, max SCTs counted per operator).
APPLE_TIERS = ((180, 2, 1), (398, 3, 2))

_WORDS = NON_EMBEDDED["apple"]


def lifetime_days(lifetime: timedelta) -> int:
    """A4: RFC 5280 section 4.1.2.5, notBefore through notAfter inclusive, so one second is
    added; any part of a day is a day."""
    return math.ceil((lifetime + timedelta(seconds=1)) / DAY)


def tier(days: int) -> tuple[int, int] | None:
    """A3: (logs required, cap per operator) for a lifetime in days; None above 398."""
    for max_days, required, cap in APPLE_TIERS:
        if days <= max_days:
            return required, cap
    return None


def once_approved(check: SCTCheck, standing: Standing) -> bool:
    """A7: currently approved, or retired after this SCT was issued."""
    if standing.admissible:
        return True
    return standing.retired_at is not None and check.sct.timestamp < datetime_to_ms(
        standing.retired_at
    )


def overall_reasons(checks: Sequence[SCTCheck], standings: Sequence[Standing]) -> list[str]:
    """A1, a precondition of both (a) and (b): 2 SCTs from once or currently approved logs.
    When it fails it is the whole story."""
    logs = {
        c.sct.log_id
        for c, s in zip(checks, standings, strict=True)
        if not s.excluded and once_approved(c, s)
    }
    if len(logs) >= 2:
        return []
    return [f"2 SCTs from once or currently approved logs required, {len(logs)} found (A1)"]


def require_rfc6962_log(path: Path, checks: Sequence[SCTCheck]) -> None:
    """A5: of the SCTs a passing path counted, at least 1 is from an RFC 6962 (non-tiled)
    log; a set of static-ct-api SCTs alone does not comply."""
    if not path.passed:
        return
    if any(checks[i].log is not None and not checks[i].log.tiled for i in path.counted):  # type: ignore[union-attr]
        return
    path.passed = False
    path.reasons.append(
        "at least 1 SCT from an RFC 6962 log required; every counted SCT is from a "
        "static-ct-api (tiled) log (A5)"
    )


def delivered_path(checks: Sequence[SCTCheck], standings: Sequence[Standing]) -> Path:
    """A2, rule (a): 2 SCTs from currently approved logs, at least 1 via TLS or OCSP (A6);
    retired logs never count here (A7)."""
    path = Path("a")
    seen_logs: set[bytes] = set()
    delivered = 0
    # Delivered SCTs first, so a log that sent both kinds is counted for its delivered SCT;
    # RFC 6962 logs before tiled ones (A5).
    order = sorted(
        range(len(checks)),
        key=lambda i: (checks[i].source is Source.EMBEDDED, _tiled(checks[i])),
    )
    for index in order:
        check, standing = checks[index], standings[index]
        if standing.excluded:
            path.skipped[index] = standing.excluded
            continue
        if not standing.admissible:
            retired = format_time(standing.retired_at) if standing.retired_at else "?"
            path.skipped[index] = (
                f"not counted: log retired {retired}; rule (a) needs currently approved "
                f"logs (A2, A7)"
            )
            continue
        if check.sct.log_id in seen_logs:
            path.skipped[index] = "not counted: duplicate log (A2)"
            continue
        seen_logs.add(check.sct.log_id)
        delivered += check.source is not Source.EMBEDDED
        path.counted[index] = counted_why(check, standing, "A2")
    if delivered == 0:
        path.reasons.append(f"no SCT from a currently approved log delivered via {_WORDS} (A2)")
    elif len(seen_logs) < 2:
        path.reasons.append(
            f"2 SCTs from currently approved logs (at least 1 via {_WORDS}) required, "
            f"{len(seen_logs)} found (A2)"
        )
    path.passed = not path.reasons
    require_rfc6962_log(path, checks)
    path.relevant = any(c.source is not Source.EMBEDDED for c in checks)
    return path


def embedded_path(checks: Sequence[SCTCheck], standings: Sequence[Standing], days: int) -> Path:
    """A3, rule (b): 1 embedded SCT from a currently approved log, and N embedded SCTs from
    distinct once or currently approved logs (A7), at most ``cap`` of them per operator.

    The table counts embedded SCTs, as trustd does (SCTs delivered via TLS or OCSP are rule
    (a)'s business).
    """
    path = Path("b")
    found = tier(days)
    embedded = [i for i, c in enumerate(checks) if c.source is Source.EMBEDDED]
    path.relevant = bool(embedded) or all(c.source is Source.EMBEDDED for c in checks)
    if found is None:
        path.reasons.append(
            f"embedded SCTs cannot make a {days}-day certificate compliant: Apple's policy "
            f"covers lifetimes up to 398 days (A3)"
        )
        for index in embedded:
            path.skipped[index] = standings[index].excluded or (
                f"not counted: no embedded-SCT rule for a {days}-day certificate (A3)"
            )
        return path
    required, cap = found
    # Currently approved logs first, so the cap never squeezes them out; RFC 6962 logs
    # before tiled ones (A5).
    embedded.sort(key=lambda i: (not standings[i].admissible, _tiled(checks[i])))
    seen_logs: set[bytes] = set()
    per_operator: dict[str, int] = {}
    has_admissible = False
    for index in embedded:
        check, standing = checks[index], standings[index]
        if standing.excluded:
            path.skipped[index] = standing.excluded
            continue
        if not once_approved(check, standing):
            retired = format_time(standing.retired_at) if standing.retired_at else "?"
            path.skipped[index] = f"not counted: log retired {retired}, before this SCT (A7)"
            continue
        if check.sct.log_id in seen_logs:
            path.skipped[index] = "not counted: duplicate log (A3)"
            continue
        operator = operator_of(check)
        if per_operator.get(operator, 0) >= cap:
            path.skipped[index] = (
                f"not counted: operator {operator} already has {cap} SCT{'s' * (cap > 1)} "
                f"counted, the most a {days}-day certificate allows (A3)"
            )
            continue
        seen_logs.add(check.sct.log_id)
        per_operator[operator] = per_operator.get(operator, 0) + 1
        has_admissible = has_admissible or standing.admissible
        note = f"log {len(seen_logs)} of {required} needed"
        path.counted[index] = counted_why(check, standing, "A3", note)
    if not has_admissible:
        path.reasons.append("no embedded SCT from a currently approved log (A3)")
    if len(seen_logs) < required:
        path.reasons.append(
            f"{required} embedded SCTs from distinct logs required for a {days}-day "
            f"certificate (notBefore through notAfter inclusive; at most {cap} per operator), "
            f"{len(seen_logs)} counted (A3, A4)"
        )
    path.passed = not path.reasons
    require_rfc6962_log(path, checks)
    return path


def _tiled(check: SCTCheck) -> bool:
    return check.log is not None and check.log.tiled
