"""One test (or more) per rule of docs/ct-policies.md (C1-C12, A1-A11, U1-U4), with the
boundaries: exactly at, and one second past, each timestamp the rule compares.

Pure: apply_policy on synthetic checks (no signatures); the signature side is in
test_policy.py and test_sct.py.
"""

from __future__ import annotations

import base64
import datetime
import json
from importlib import resources

import pytest

from expect_ct.loglist import Log
from expect_ct.loglist import datetime_to_ms
from expect_ct.policy import POLICIES
from expect_ct.policy import SCTCheck
from expect_ct.policy import Verdict
from expect_ct.policy import apply_policy
from expect_ct.policy import freshness
from expect_ct.policy import freshness_limit
from expect_ct.policy import is_timely
from expect_ct.sct import SCT
from expect_ct.sct import Source
from support.logs import synthetic_log as make_log

UTC = datetime.UTC
DAY = datetime.timedelta(days=1)
SECOND = datetime.timedelta(seconds=1)
NOW = datetime.datetime(2026, 12, 5, tzinfo=UTC)
NOT_BEFORE = datetime.datetime(2026, 10, 1, tzinfo=UTC)
ISSUED = NOT_BEFORE + datetime.timedelta(minutes=5)
EVENT = datetime.datetime(2026, 10, 10, tzinfo=UTC)  # a retirement, read-only date, etc.
CHROMES = ("chrome", "chrome-pre148")
EMB, TLS, OCSP = Source.EMBEDDED, Source.TLS_EXTENSION, Source.OCSP


G1, G2 = make_log("G1", "Google"), make_log("G2", "Google")
C1 = make_log("C1", "Cloudflare")
D1 = make_log("D1", "DigiCert", "qualified")
RETIRED = make_log("R1", "Retiring Op", "retired", EVENT)
READONLY = make_log("RO", "Frozen Op", "readonly", EVENT)


def check(log: Log, at: datetime.datetime = ISSUED, source: Source = EMB) -> SCTCheck:
    sct = SCT(
        version=0,
        log_id=log.log_id,
        timestamp=datetime_to_ms(at),
        extensions=b"",
        hash_algorithm=4,
        signature_algorithm=3,
        signature=b"sig",
        source=source,
        serialized=b"",
    )
    return SCTCheck(sct, "valid", None, log)


def judge(
    checks: list[SCTCheck],
    policy: str,
    *,
    lifetime: datetime.timedelta = 90 * DAY,
    now: datetime.datetime = NOW,
) -> Verdict:
    verdict = apply_policy(
        checks, not_before=NOT_BEFORE, not_after=NOT_BEFORE + lifetime, policy=policy, now=now
    )
    # Every SCT's why names the rule that decided it (or the check that failed).
    for sct in verdict.scts:
        assert sct.why.startswith("counted: " if sct.counted else "not counted: "), sct.why
        assert sct.why.endswith(")"), sct.why
    assert bool(verdict.reasons) is not verdict.compliant
    return verdict


def counted(verdict: Verdict) -> str:
    return "".join("Y" if c.counted else "N" for c in verdict.scts)


# --- Chrome (C1-C12).


@pytest.mark.parametrize("policy", CHROMES)
def test_c1_embedded_needs_two_operators(policy: str) -> None:
    ok = judge([check(G1), check(C1)], policy)
    assert ok.compliant and ok.satisfied_by == "embedded"
    assert (
        ok.scts[0].why == "counted: embedded, usable log, operator Google, log 1 of 2 needed (C1)"
    )
    bad = judge([check(G1), check(G2)], policy)
    assert not bad.compliant
    assert "embedded SCTs from 2 distinct operators required, only Google found (C1)" in bad.reasons


@pytest.mark.parametrize("policy", CHROMES)
def test_c1_needs_one_embedded_sct_from_a_log_not_retired(policy: str) -> None:
    other = make_log("R2", "Other Op", "retired", EVENT)
    verdict = judge([check(RETIRED), check(other)], policy)
    assert not verdict.compliant
    assert "no embedded SCT from a qualified, usable or readonly log (C1)" in verdict.reasons


@pytest.mark.parametrize("policy", CHROMES)
def test_c1a_lifetime_boundary(policy: str) -> None:
    two = [check(G1), check(C1)]
    assert judge(two, policy, lifetime=180 * DAY).required == 2
    assert judge(two, policy, lifetime=180 * DAY).compliant
    over = judge(two, policy, lifetime=180 * DAY + SECOND)
    assert over.required == 3 and not over.compliant
    assert "3 embedded SCTs from distinct logs required" in over.reasons[0]
    assert over.reasons[0].endswith("(C1a)")
    assert judge([*two, check(G2)], policy, lifetime=180 * DAY + SECOND).compliant


@pytest.mark.parametrize("policy", CHROMES)
def test_c1b_retired_sct_at_the_retirement_instant(policy: str) -> None:
    before = judge([check(RETIRED, EVENT - SECOND), check(G1)], policy)
    assert before.compliant and counted(before) == "YY"
    assert "log retired 2026-10-10, after this SCT" in before.scts[0].why
    at = judge([check(RETIRED, EVENT), check(G1)], policy)
    assert not at.compliant and counted(at) == "NY"
    assert at.scts[0].why == "not counted: log retired 2026-10-10, before this SCT (C1b)"


@pytest.mark.parametrize("policy", CHROMES)
def test_c1b_issuance_must_predate_the_retirement(policy: str) -> None:
    # Issuance = the earliest SCT from a log not retired at check time.
    early = judge([check(RETIRED, EVENT - 2 * SECOND), check(G1, EVENT - SECOND)], policy)
    assert early.compliant
    late = judge([check(RETIRED, EVENT - 2 * SECOND), check(G1, EVENT)], policy)
    assert not late.compliant
    assert "before the certificate was issued (earliest SCT 2026-10-10) (C1b)" in late.scts[0].why


@pytest.mark.parametrize("policy", CHROMES)
def test_c1b_future_retirement_applies_from_its_instant(policy: str) -> None:
    scts = [check(RETIRED, ISSUED, TLS), check(G1, ISSUED, TLS)]
    assert judge(scts, policy, now=EVENT - SECOND).compliant  # not yet retired
    at = judge(scts, policy, now=EVENT)
    assert not at.compliant
    assert "from retired logs never count (C2, C3)" in at.scts[0].why


@pytest.mark.parametrize("policy", CHROMES)
def test_c2_two_tls_scts_from_two_operators(policy: str) -> None:
    assert judge([check(G1, source=TLS), check(C1, source=TLS)], policy).compliant
    same = judge([check(G1, source=TLS), check(G2, source=TLS)], policy)
    assert not same.compliant and same.reasons[-1].endswith("only Google found (C3)")


@pytest.mark.parametrize("policy", CHROMES)
def test_c3_one_embedded_and_one_tls_sct_from_distinct_operators(policy: str) -> None:
    verdict = judge([check(G1), check(C1, source=TLS)], policy)
    assert verdict.compliant and verdict.satisfied_by == "mixed" and counted(verdict) == "YY"
    assert verdict.scts[1].why == (
        "counted: TLS extension, usable log, operator Cloudflare, non-embedded SCT from a log "
        "not retired (C3)"
    )


@pytest.mark.parametrize("policy", CHROMES)
def test_c3_embedded_sct_from_log_retired_before_it_counts_for_diversity(policy: str) -> None:
    # Chromium's unit test: "still counted towards the diversity requirement even though it
    # is disqualified".
    verdict = judge([check(RETIRED, EVENT + DAY), check(G1, source=TLS)], policy)
    assert verdict.compliant and counted(verdict) == "YY"
    assert "log retired 2026-10-10, before this SCT" in verdict.scts[0].why
    assert verdict.scts[0].why.endswith("counts for operator diversity (C3)")


@pytest.mark.parametrize("policy", CHROMES)
def test_c3_non_embedded_sct_must_come_from_a_log_not_retired(policy: str) -> None:
    verdict = judge([check(G1), check(RETIRED, EVENT - DAY, TLS)], policy)
    assert not verdict.compliant
    assert any("from a log not retired (C3)" in reason for reason in verdict.reasons)


def test_c4_chrome_148_ignores_ocsp_scts() -> None:
    scts = [check(G1, source=OCSP), check(C1, source=OCSP)]
    verdict = judge(scts, "chrome")
    assert not verdict.compliant and counted(verdict) == "NN"
    assert {c.why for c in verdict.scts} == {
        "not counted: Chrome 148+ ignores OCSP-delivered SCTs (C4)"
    }
    assert all(c.status == "valid" for c in verdict.scts)  # verified and shown
    assert "ignored since Chrome 148 (C4)" in verdict.reasons[0]
    # An OCSP SCT does not stand in for the non-embedded SCT of C3 either.
    assert not judge([check(G1), check(C1, source=OCSP)], "chrome").compliant


def test_c4a_chrome_before_148_counts_ocsp_like_tls() -> None:
    assert judge([check(G1, source=OCSP), check(C1, source=OCSP)], "chrome-pre148").compliant
    mixed = judge([check(G1), check(C1, source=OCSP)], "chrome-pre148")
    assert mixed.compliant and mixed.satisfied_by == "mixed"


@pytest.mark.parametrize("policy", CHROMES)
def test_c5_static_ct_api_logs_alone_comply(policy: str) -> None:
    tiled = [make_log("T1", "Google", tiled=True), make_log("T2", "Geomys", tiled=True)]
    assert judge([check(log) for log in tiled], policy).compliant


@pytest.mark.parametrize("policy", CHROMES)
@pytest.mark.parametrize("state", ["pending", "rejected", None])
def test_c6_only_named_states_count(policy: str, state: str | None) -> None:
    verdict = judge([check(make_log("X", "Other", state)), check(G1)], policy)
    assert not verdict.compliant and counted(verdict) == "NY"
    assert verdict.scts[0].why.endswith("(C6)")


@pytest.mark.parametrize("policy", CHROMES)
def test_c6a_readonly_date_is_never_consulted(policy: str) -> None:
    for at in (EVENT, EVENT + SECOND, EVENT + 30 * DAY):
        verdict = judge([check(READONLY, at), check(G1)], policy)
        assert verdict.compliant and counted(verdict) == "YY"
        assert "readonly log" in verdict.scts[0].why


@pytest.mark.parametrize("policy", CHROMES)
def test_c7_temporal_interval_is_not_checked(policy: str) -> None:
    start, end = EVENT, EVENT + 30 * DAY  # notAfter (2026-12-30) lies outside
    sharded = make_log("Shard", "Cloudflare", interval=(start, end))
    assert judge([check(sharded), check(G1)], policy).compliant


@pytest.mark.parametrize("policy", POLICIES)
def test_c8_operator_changes_at_the_end_time(policy: str) -> None:
    moved = make_log("M1", "NewOp", previous=(("Google", EVENT),))
    before = judge([check(moved, EVENT - SECOND), check(G1, EVENT - SECOND)], policy)
    assert not before.compliant  # both Google's
    at = judge([check(moved, EVENT), check(G1, EVENT)], policy)
    assert at.compliant and at.operators == ("Google", "NewOp")


@pytest.mark.parametrize("policy", CHROMES)
def test_c9_one_sct_per_log(policy: str) -> None:
    verdict = judge([check(G1), check(G1, ISSUED + SECOND), check(C1)], policy, lifetime=200 * DAY)
    assert not verdict.compliant and counted(verdict) == "YNY"
    assert verdict.scts[1].why == "not counted: duplicate log (C9)"


@pytest.mark.parametrize("policy", CHROMES)
def test_c10_freshness_70_days_from_the_list_timestamp(policy: str) -> None:
    assert freshness_limit(policy) == 70 * DAY
    assert freshness(policy).rule == "C10"
    assert "log_list_timestamp" in freshness(policy).measured_from
    assert is_timely(policy, 70 * DAY - SECOND)
    assert not is_timely(policy, 70 * DAY)  # InDays() < 70


@pytest.mark.parametrize("policy", POLICIES)
def test_c12_mimic_logs_never_count(policy: str) -> None:
    data = resources.files("expect_ct") / "data" / "mimic_logs.json"
    mimic_key = base64.b64decode(json.loads(data.read_text(encoding="utf-8"))["logs"][1]["key"])
    mimic = make_log("Mimic 2", "Mimic Op", key=mimic_key)
    assert mimic.mimic
    verdict = judge([check(mimic), check(G1), check(mimic, source=TLS)], policy)
    assert not verdict.compliant and counted(verdict)[0] == "N" and counted(verdict)[2] == "N"
    assert verdict.scts[0].why == (
        "not counted: Mimic 2 is one of Google's mimic logs, whose private key is public: "
        "its SCTs prove nothing (C12)"
    )


# --- Apple (A1-A11).


def test_a1_two_scts_from_once_or_currently_approved_logs() -> None:
    verdict = judge([check(G1, source=TLS)], "apple")
    assert verdict.reasons == ["2 SCTs from once or currently approved logs required, 1 found (A1)"]


def test_a2_rule_a_has_no_operator_requirement() -> None:
    verdict = judge([check(G1), check(G2, source=TLS)], "apple")
    assert verdict.compliant and verdict.satisfied_by == "a"
    assert verdict.scts[1].why.endswith("(A2)")


def test_a3_caps_per_operator() -> None:
    g3 = make_log("G3", "Google")
    # Up to 180 days: N = 2, at most 1 per operator.
    short = judge([check(G1), check(G2), check(C1)], "apple")
    assert short.compliant and counted(short) == "YNY"
    assert short.scts[1].why == (
        "not counted: operator Google already has 1 SCT counted, the most a 91-day "
        "certificate allows (A3)"
    )
    assert not judge([check(G1), check(G2)], "apple").compliant
    # 181-398 days: N = 3, at most 2 per operator.
    scts = [check(G1), check(G2), check(g3), check(C1)]
    long = judge(scts, "apple", lifetime=200 * DAY)
    assert long.compliant and counted(long) == "YYNY"
    assert not judge(scts[:3], "apple", lifetime=200 * DAY).compliant


def test_a3a_over_398_days_rule_b_never_complies() -> None:
    # Apple's text stops at 398 days; trustd would ask 3 (<= 825 days). We follow the text.
    scts = [check(G1), check(C1), check(D1), check(G2)]
    verdict = judge(scts, "apple", lifetime=398 * DAY)  # 399 days inclusive
    assert not verdict.compliant and "covers lifetimes up to 398 days (A3)" in verdict.reasons[0]
    assert judge(scts, "apple", lifetime=398 * DAY - SECOND).compliant


def test_a4_inclusive_lifetime_at_180_days() -> None:
    two = [check(G1), check(C1)]
    # 180 days - 1 s is 180 days inclusive: 2 SCTs.
    assert judge(two, "apple", lifetime=180 * DAY - SECOND).compliant
    # Exactly 180 days is 181 days by the text (3 SCTs); trustd's code would take 2.
    exact = judge(two, "apple", lifetime=180 * DAY)
    assert not exact.compliant and exact.required == 3
    assert "for a 181-day certificate" in exact.reasons[0]
    assert judge([*two, check(D1)], "apple", lifetime=180 * DAY).compliant


def test_a5_one_sct_from_an_rfc6962_log() -> None:
    tiled = [make_log("T1", "Google", tiled=True), make_log("T2", "Geomys", tiled=True)]
    only_tiled = judge([check(log) for log in tiled], "apple")
    assert not only_tiled.compliant
    assert only_tiled.reasons[0].endswith("static-ct-api (tiled) log (A5)")
    assert judge([check(tiled[0]), check(C1)], "apple").compliant
    assert not judge([check(tiled[0], source=TLS), check(tiled[1])], "apple").compliant
    assert judge([check(tiled[0], source=TLS), check(C1)], "apple").compliant


def test_a6_ocsp_counts_as_external() -> None:
    verdict = judge([check(G1), check(C1, source=OCSP)], "apple")
    assert verdict.compliant and verdict.satisfied_by == "a"


def test_a7_retired_logs() -> None:
    # Embedded, SCT and issuance before the retirement: once approved, counts for (b).
    once = judge([check(RETIRED, EVENT - SECOND), check(G1, EVENT - SECOND)], "apple")
    assert once.compliant and once.satisfied_by == "b"
    at = judge([check(RETIRED, EVENT), check(G1)], "apple")
    assert not at.compliant
    assert at.scts[0].why == "not counted: log retired 2026-10-10, before this SCT (A7)"
    # Delivered via TLS: never valid.
    tls = judge([check(RETIRED, EVENT - DAY, TLS), check(G1), check(C1, source=TLS)], "apple")
    assert tls.compliant and counted(tls)[0] == "N"


@pytest.mark.parametrize("source", [EMB, TLS, OCSP])
def test_a8_readonly_log_sct_after_the_date_is_invalid(source: Source) -> None:
    companions = [check(G1, source=TLS), check(C1, source=TLS)]
    at = judge([check(READONLY, EVENT, source), *companions], "apple")
    assert at.compliant and at.scts[0].counted  # an SCT at the read-only instant counts
    after = judge([check(READONLY, EVENT + SECOND, source), *companions], "apple")
    assert after.scts[0].why == "not counted: read-only since 2026-10-10, SCT issued after (A8)"
    assert not after.scts[0].counted


def test_a8_readonly_rejection_can_break_compliance() -> None:
    assert judge([check(READONLY, EVENT), check(G1)], "apple").compliant
    assert not judge([check(READONLY, EVENT + SECOND), check(G1)], "apple").compliant


def test_a9_temporal_interval_against_not_after() -> None:
    not_after = NOT_BEFORE + 90 * DAY

    def verdict_for(start: datetime.datetime, end: datetime.datetime) -> Verdict:
        shard = make_log("Shard", "Cloudflare", interval=(start, end))
        return judge([check(shard), check(G1)], "apple")

    far = not_after + 100 * DAY
    assert verdict_for(not_after, far).compliant  # start inclusive
    assert verdict_for(not_after - 100 * DAY, not_after + SECOND).compliant
    refused = verdict_for(not_after + SECOND, far)
    assert not refused.compliant
    assert refused.scts[0].why == (
        "not counted: certificate expires 2026-12-30, outside the log's temporal interval "
        "2026-12-30 00:00:01 UTC (inclusive) to 2027-04-09 (exclusive) (A9)"
    )
    assert not verdict_for(not_after - 100 * DAY, not_after).compliant  # end exclusive


def test_a10_freshness_60_days_since_last_confirmation() -> None:
    assert freshness_limit("apple") == 60 * DAY
    assert freshness("apple").rule == "A10"
    assert is_timely("apple", 60 * DAY - SECOND)
    assert not is_timely("apple", 60 * DAY)


def test_freshness_refuses_unknown_policy() -> None:
    with pytest.raises(ValueError, match="unknown CT policy 'firefox'"):
        freshness_limit("firefox")


# --- Log states the parser does not know (U1-U4).


@pytest.mark.parametrize("policy", POLICIES)
def test_u2_unknown_state_log_never_counts_others_work(policy: str) -> None:
    odd = make_log("Odd", "Odd Op", None, unknown_state="expired")
    verdict = judge([check(odd), check(G1), check(C1)], policy)
    assert verdict.compliant and counted(verdict) == "NYY"
    assert verdict.scts[0].why == (
        "not counted: log state 'expired' is unknown to this parser, and no policy counts a "
        "log in an unnamed state (U2)"
    )
    assert not judge([check(odd), check(G1)], policy).compliant


@pytest.mark.parametrize("policy", POLICIES)
def test_unlisted_and_invalid_scts_name_their_rule(policy: str) -> None:
    unlisted = SCTCheck(check(G2).sct, "unknown", "log not in the log list", None)
    invalid = SCTCheck(check(D1).sct, "invalid", "signature does not verify with the log key", D1)
    verdict = judge([unlisted, invalid, check(G1), check(C1)], policy)
    assert verdict.compliant and counted(verdict) == "NNYY"
    rule = "A1" if policy == "apple" else "C6"
    assert verdict.scts[0].why == f"not counted: unknown: log not in the log list ({rule})"
    assert verdict.scts[1].why == (
        "not counted: invalid: signature does not verify with the log key (RFC 6962)"
    )
