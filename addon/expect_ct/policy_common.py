"""What the CT policies share: the SCT check record, where each SCT stands before any policy
path looks at it, and the wording of every ``why``.

Internal to expect_ct.policy (which re-exports SCTCheck); rule ids such as C4 or A8 refer to
docs/ct-policies.md. Pure: no mitmproxy import.
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field
from datetime import UTC
from datetime import datetime
from datetime import timedelta

from expect_ct.loglist import Log
from expect_ct.loglist import LogState
from expect_ct.loglist import datetime_to_ms
from expect_ct.loglist import ms_to_datetime
from expect_ct.sct import SCT
from expect_ct.sct import Source

VALID = "valid"
INVALID = "invalid"
UNKNOWN = "unknown"

CHROME = "chrome"
CHROME_PRE148 = "chrome-pre148"
APPLE = "apple"

DAY = timedelta(days=1)

# How each policy words "SCTs not embedded in the certificate" (Chrome 148+ drops OCSP, C4).
NON_EMBEDDED = {
    CHROME: "TLS extension",
    CHROME_PRE148: "TLS extension or OCSP",
    APPLE: "TLS extension or OCSP",
}
# The rule that says which log states count at all.
_STATE_RULE = {CHROME: "C6", CHROME_PRE148: "C6", APPLE: "A1"}
_SOURCE_WORDS = {
    Source.EMBEDDED: "embedded",
    Source.TLS_EXTENSION: "TLS extension",
    Source.OCSP: "OCSP",
}


@dataclass(frozen=True)
class SCTCheck:
    """One SCT and what we concluded about it.

    ``status`` uses RFC 9163's report vocabulary: "valid", "invalid" or "unknown" (log not in
    the log list). ``counted`` says whether the SCT counted toward the policy and ``why``
    explains it in a sentence naming the deciding rule ("counted: embedded, usable log,
    operator Google (C1)").
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
        """The log's operator when the SCT was issued (previous_operators aware, C8)."""
        return None if self.log is None else self.log.operator_at(self.sct.timestamp)


@dataclass(frozen=True)
class Standing:
    """Where a check stands whatever the path: ``excluded`` is set when it can never count."""

    admissible: bool
    retired_at: datetime | None  # set for a log retired before ``now``
    excluded: str | None  # "not counted: ... (rule)" when the SCT can never count


@dataclass
class Path:
    """One way of complying, with per-check outcomes (index -> why)."""

    name: str
    passed: bool = False
    relevant: bool = True  # whether its reasons help explain a failure
    reasons: list[str] = field(default_factory=list)
    counted: dict[int, str] = field(default_factory=dict)
    skipped: dict[int, str] = field(default_factory=dict)


def standing(check: SCTCheck, *, policy: str, now: datetime, not_after: datetime) -> Standing:
    """Exclusions that hold for every path of ``policy``, each naming its rule."""
    rule = _STATE_RULE[policy]
    if check.status != VALID or check.log is None:
        reason = check.reason or f"SCT is {check.status}"
        # An unlisted log is in none of the states that count; a failed check is RFC 6962's.
        decided_by = rule if check.status == UNKNOWN else "RFC 6962"
        return Standing(False, None, f"not counted: {check.status}: {reason} ({decided_by})")
    log = check.log
    if log.mimic:
        return Standing(
            False,
            None,
            f"not counted: {log.description or 'log'} is one of Google's mimic logs, whose "
            f"private key is public: its SCTs prove nothing (C12)",
        )
    if log.unknown_state is not None:
        return Standing(
            False,
            None,
            f"not counted: log state {log.unknown_state!r} is unknown to this parser, and "
            f"no policy counts a log in an unnamed state (U2)",
        )
    if log.state is None:
        return Standing(False, None, f"not counted: log has no state in the log list ({rule})")
    if policy == CHROME and check.source is Source.OCSP:
        return Standing(False, None, "not counted: Chrome 148+ ignores OCSP-delivered SCTs (C4)")
    if log.state in (LogState.PENDING, LogState.REJECTED):
        return Standing(False, None, f"not counted: log is {log.state.value}{since(log)} ({rule})")
    if policy == APPLE:
        refused = _apple_log_refusal(check, log, not_after)
        if refused:
            return Standing(False, None, refused)
    if log.state is LogState.RETIRED and log.state_since is not None:
        # Chromium's IsLogDisqualified, trustd's expiry: a future retirement does not apply yet.
        if log.state_since <= now:
            return Standing(False, log.state_since, None)
    return Standing(True, None, None)


def _apple_log_refusal(check: SCTCheck, log: Log, not_after: datetime) -> str | None:
    """trustd's isSCTValidForLogData beyond the state: read-only date (A8), temporal
    interval (A9). Chrome checks neither (C6a, C7)."""
    if log.state is LogState.READONLY and log.state_since is not None:
        # trustd: `if (transitionTime < sctTime) return false`; an SCT at the instant counts.
        if check.sct.timestamp > datetime_to_ms(log.state_since):
            return (
                f"not counted: read-only since {format_time(log.state_since)}, "
                f"SCT issued after (A8)"
            )
    if log.temporal_interval is not None:
        start, end = log.temporal_interval
        if not start <= not_after < end:
            return (
                f"not counted: certificate expires {format_time(not_after)}, outside the log's "
                f"temporal interval {format_time(start)} (inclusive) to {format_time(end)} "
                f"(exclusive) (A9)"
            )
    return None


# --- Wording helpers.


def counted_why(check: SCTCheck, standing: Standing, rule: str, note: str = "") -> str:
    assert check.log is not None and check.log.state is not None
    where = _SOURCE_WORDS[check.source]
    operator = operator_of(check)
    extra = f", {note}" if note else ""
    if standing.retired_at is not None:
        order = "after" if check.sct.timestamp < datetime_to_ms(standing.retired_at) else "before"
        return (
            f"counted: {where}, log retired {format_time(standing.retired_at)}, {order} this "
            f"SCT, operator {operator}{extra} ({rule})"
        )
    if check.log.state is LogState.RETIRED and check.log.state_since is not None:
        retires = format_time(check.log.state_since)
        return (
            f"counted: {where}, log retires {retires}, not yet retired, "
            f"operator {operator}{extra} ({rule})"
        )
    return f"counted: {where}, {check.log.state.value} log, operator {operator}{extra} ({rule})"


def operator_of(check: SCTCheck) -> str:
    operator = check.operator
    assert operator is not None
    return operator


def only(operators: set[str]) -> str:
    if not operators:
        return "none found"
    return f"only {', '.join(sorted(operators))} found"


def since(log: Log) -> str:
    return f" since {format_time(log.state_since)}" if log.state_since else ""


def describe_lifetime(lifetime: timedelta) -> str:
    if lifetime % DAY == timedelta(0):
        return f"a {lifetime.days}-day certificate"
    days, rest = divmod(lifetime, DAY)
    return f"a certificate valid {days} days {rest}"


def format_ms(timestamp_ms: int) -> str:
    try:
        return format_time(ms_to_datetime(timestamp_ms))
    except OverflowError:
        return f"{timestamp_ms} ms after 1970 (beyond year 9999)"


def format_time(moment: datetime) -> str:
    moment = moment.astimezone(UTC)
    if moment.time() == datetime.min.time():
        return moment.strftime("%Y-%m-%d")
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")
