"""Chrome's CT policy as Chrome 148 and later ships it (rules C1-C11 of docs/ct-policies.md).

Two ways to comply, as Chromium's ChromeCTPolicyEnforcer::CheckCTRequirements:

* ``embedded`` (C1): N embedded SCTs from distinct logs (C1a), 2 operators, 1 from a log not
  retired; retired logs count only when both the SCT and the issuance predate the retirement
  (C1b).
* ``mixed`` (C3, Chromium's "Option 1"): 1 non-embedded SCT from a log not retired, and 2
  distinct operators among all considered SCTs, embedded ones included. This is the shipped
  code; the policy text (C2) wants 2 TLS SCTs and 2 operators, which C3 accepts too.

``chrome`` drops SCTs from stapled OCSP responses (C4, Chrome 148); ``chrome-pre148`` counts
them like TLS-extension SCTs. Internal to expect_ct.policy. Pure: no mitmproxy import.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from datetime import timedelta

from expect_ct.loglist import datetime_to_ms
from expect_ct.policy_common import NON_EMBEDDED
from expect_ct.policy_common import Path
from expect_ct.policy_common import SCTCheck
from expect_ct.policy_common import Standing
from expect_ct.policy_common import counted_why
from expect_ct.policy_common import describe_lifetime
from expect_ct.policy_common import format_ms
from expect_ct.policy_common import format_time
from expect_ct.policy_common import only
from expect_ct.policy_common import operator_of
from expect_ct.sct import Source

# C1a: N = 2 for lifetimes of at most 180 days, 3 above (Chromium: `lifetime > base::Days(180)`).
CHROME_SHORT_LIFETIME = timedelta(days=180)


def required_embedded_logs(lifetime: timedelta) -> int:
    """C1a: exactly 180 days needs 2 logs; one second more needs 3."""
    return 2 if lifetime <= CHROME_SHORT_LIFETIME else 3


def issuance_time(checks: Sequence[SCTCheck], standings: Sequence[Standing]) -> int | None:
    """C1b: Chromium's issuance_date, the earliest SCT from a log not retired at check time."""
    return min(
        (c.sct.timestamp for c, s in zip(checks, standings, strict=True) if s.admissible),
        default=None,
    )


def retired_embedded_refusal(
    check: SCTCheck, retired_at: datetime, issuance: int | None
) -> str | None:
    """C1b: why an embedded SCT from a retired log does not count toward N (None: it does)."""
    retired = format_time(retired_at)
    if check.sct.timestamp >= datetime_to_ms(retired_at):
        return f"not counted: log retired {retired}, before this SCT (C1b)"
    if issuance is None:
        return (
            f"not counted: log retired {retired}, and no SCT from a qualified, usable or "
            f"readonly log shows the certificate was issued before that (C1b)"
        )
    if issuance >= datetime_to_ms(retired_at):
        return (
            f"not counted: log retired {retired}, before the certificate was issued "
            f"(earliest SCT {format_ms(issuance)}) (C1b)"
        )
    return None


def embedded_path(
    checks: Sequence[SCTCheck], standings: Sequence[Standing], lifetime: timedelta
) -> Path:
    """C1: 1 embedded SCT from a log not retired, N distinct logs (C1a, C9), 2 operators at
    SCT time (C8); retired logs per C1b."""
    path = Path("embedded")
    issuance = issuance_time(checks, standings)
    required = required_embedded_logs(lifetime)
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
            refused = retired_embedded_refusal(check, standing.retired_at, issuance)
            if refused:
                path.skipped[index] = refused
                continue
        if check.sct.log_id in seen_logs:
            path.skipped[index] = "not counted: duplicate log (C9)"
            continue
        seen_logs.add(check.sct.log_id)
        operators.add(operator_of(check))
        has_admissible = has_admissible or standing.admissible
        note = f"log {len(seen_logs)} of {required} needed"
        path.counted[index] = counted_why(check, standing, "C1", note)

    if not has_admissible:
        path.reasons.append("no embedded SCT from a qualified, usable or readonly log (C1)")
    if len(seen_logs) < required:
        path.reasons.append(
            f"{required} embedded SCTs from distinct logs required for "
            f"{describe_lifetime(lifetime)}, {len(seen_logs)} found (C1a)"
        )
    if len(operators) < 2:
        path.reasons.append(
            f"embedded SCTs from 2 distinct operators required, {only(operators)} (C1)"
        )
    path.passed = not path.reasons
    non_embedded = any(c.source is not Source.EMBEDDED for c in checks)
    path.relevant = any_embedded or not non_embedded
    return path


def mixed_path(checks: Sequence[SCTCheck], standings: Sequence[Standing], policy: str) -> Path:
    """C3 (Chromium's Option 1): 1 non-embedded SCT from a log not retired, and SCTs from 2
    distinct operators among all considered SCTs. Considered: every valid SCT except
    non-embedded ones from retired logs, so an embedded SCT from a retired log still counts
    for operator diversity, even when issued after the retirement. Covers C2 (2 TLS SCTs,
    2 operators). Duplicate SCTs from one log count once (C9)."""
    path = Path("mixed")
    words = NON_EMBEDDED[policy]
    seen_logs: set[bytes] = set()
    operators: set[str] = set()
    non_embedded = 0
    # Non-embedded SCTs first, so a log that sent both kinds is counted for its delivered one.
    order = sorted(range(len(checks)), key=lambda i: checks[i].source is Source.EMBEDDED)
    for index in order:
        check, standing = checks[index], standings[index]
        if standing.excluded:
            path.skipped[index] = standing.excluded
            continue
        delivered = check.source is not Source.EMBEDDED
        if delivered and not standing.admissible:
            retired = format_time(standing.retired_at) if standing.retired_at else "?"
            path.skipped[index] = (
                f"not counted: log retired {retired}; SCTs delivered via {words} "
                f"from retired logs never count (C2, C3)"
            )
            continue
        if check.sct.log_id in seen_logs:
            path.skipped[index] = "not counted: duplicate log (C9)"
            continue
        seen_logs.add(check.sct.log_id)
        operator = operator_of(check)
        note = (
            "non-embedded SCT from a log not retired"
            if delivered
            else "counts for operator diversity"
        )
        if operator in operators:
            note += ", operator already seen"
        operators.add(operator)
        non_embedded += delivered
        path.counted[index] = counted_why(check, standing, "C3", note)
    if non_embedded == 0:
        reason = f"no SCT delivered via {words} from a log not retired (C3)"
        if policy == "chrome" and any(c.source is Source.OCSP for c in checks):
            reason += "; SCTs from the stapled OCSP response are ignored since Chrome 148 (C4)"
        path.reasons.append(reason)
    if len(operators) < 2:
        path.reasons.append(
            f"SCTs from 2 distinct operators required (any delivery once 1 SCT arrives via "
            f"{words}), {only(operators)} (C3)"
        )
    path.passed = not path.reasons
    path.relevant = any(c.source is not Source.EMBEDDED for c in checks)
    return path
