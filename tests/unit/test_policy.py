"""expect_ct.policy: policy tables (pure apply_policy) and evaluate() with real signed SCTs."""

from __future__ import annotations

import base64
import datetime
import hashlib
import random
from dataclasses import dataclass

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

import support
from expect_ct.loglist import LogList
from expect_ct.loglist import datetime_to_ms
from expect_ct.policy import POLICIES
from expect_ct.policy import SCTCheck
from expect_ct.policy import Verdict
from expect_ct.policy import apply_policy
from expect_ct.policy import check_sct
from expect_ct.policy import evaluate
from expect_ct.sct import SCT
from expect_ct.sct import Source
from support import pki
from support.logs import synthetic_log

UTC = datetime.UTC
DAY = datetime.timedelta(days=1)
SECOND = datetime.timedelta(seconds=1)
VECTORS = support.VECTORS

# --- Synthetic logs and checks for the policy tables (no signatures involved).

NOW = datetime.datetime(2026, 4, 1, tzinfo=UTC)
NOT_BEFORE = datetime.datetime(2026, 1, 1, tzinfo=UTC)
RETIRED_AT = datetime.datetime(2026, 2, 1, tzinfo=UTC)
OPERATOR_CHANGE = datetime.datetime(2026, 1, 15, tzinfo=UTC)
EARLY = datetime_to_ms(datetime.datetime(2026, 1, 1, 0, 10, tzinfo=UTC))  # before both
LATE = datetime_to_ms(datetime.datetime(2026, 2, 15, tzinfo=UTC))  # after both


LOGS = {
    "G1": synthetic_log("G1", "Google"),
    "G2": synthetic_log("G2", "Google"),
    "G3": synthetic_log("G3", "Google", "qualified"),
    "C1": synthetic_log("C1", "Cloudflare"),
    "D1": synthetic_log("D1", "DigiCert", "qualified"),
    "S1": synthetic_log("S1", "Sectigo", "readonly"),
    "R1": synthetic_log("R1", "Retiring Op", "retired", RETIRED_AT),
    "R2": synthetic_log("R2", "Other Retiring Op", "retired", RETIRED_AT),
    # Retirement announced for after NOW: Chromium treats the log as not yet disqualified.
    "F1": synthetic_log("F1", "Future Op", "retired", datetime.datetime(2026, 6, 1, tzinfo=UTC)),
    "P1": synthetic_log("P1", "Pending Op", "pending"),
    "X1": synthetic_log("X1", "Rejected Op", "rejected", datetime.datetime(2023, 6, 2, tzinfo=UTC)),
    "N1": synthetic_log("N1", "Stateless Op", None),
    # Google ran M1 until OPERATOR_CHANGE, then NewOp took over; O1 is NewOp's own log.
    "M1": synthetic_log("M1", "NewOp", previous=(("Google", OPERATOR_CHANGE),)),
    "O1": synthetic_log("O1", "NewOp"),
}

SOURCES = {"": Source.EMBEDDED, "tls": Source.TLS_EXTENSION, "ocsp": Source.OCSP}


def synthetic_check(spec: str) -> SCTCheck:
    """``"G1"``, ``"G1@late"``, ``"G1/tls"``, ``"G1/ocsp@late"``, ``"C1!"`` (bad signature),
    ``"??"`` (log not in the list)."""
    name, _, when = spec.partition("@")
    name, _, source = name.partition("/")
    invalid = name.endswith("!")
    name = name.rstrip("!")
    timestamp = LATE if when == "late" else EARLY
    log = LOGS.get(name)
    log_id = log.log_id if log else hashlib.sha256(b"unlisted").digest()
    sct = SCT(
        version=0,
        log_id=log_id,
        timestamp=timestamp,
        extensions=b"",
        hash_algorithm=4,
        signature_algorithm=3,
        signature=b"sig",
        source=SOURCES[source],
        serialized=b"",
    )
    if log is None:
        return SCTCheck(sct, "unknown", "log not in the log list", None)
    if invalid:
        return SCTCheck(sct, "invalid", "signature does not verify with the log key", log)
    return SCTCheck(sct, "valid", None, log)


@dataclass(frozen=True)
class Case:
    id: str
    policy: str
    lifetime: datetime.timedelta
    scts: tuple[str, ...]
    compliant: bool
    counted: str  # one Y/N per SCT
    reason: str | None = None  # a fragment of the joined reasons (None: reasons empty)
    why: str | None = None  # a fragment of one of the whys
    satisfied_by: str | None = None


D90 = 90 * DAY
D180 = 180 * DAY
D200 = 200 * DAY

CHROME_CASES = [
    Case("two operators 90 days", "chrome", D90, ("G1", "C1"), True, "YY", satisfied_by="embedded"),
    Case("180 days exactly needs 2", "chrome", D180, ("G1", "C1"), True, "YY"),
    Case("180 days minus 1 s needs 2", "chrome", D180 - SECOND, ("G1", "C1"), True, "YY"),
    Case(
        "180 days plus 1 s needs 3",
        "chrome",
        D180 + SECOND,
        ("G1", "C1"),
        False,
        "YY",
        "3 embedded SCTs from distinct logs required for a certificate valid 180 days 0:00:01, "
        "2 found",
    ),
    Case("181 days with 3 logs", "chrome", D180 + SECOND, ("G1", "G2", "C1"), True, "YYY"),
    Case(
        "one operator",
        "chrome",
        D90,
        ("G1", "G2"),
        False,
        "YY",
        "embedded SCTs from 2 distinct operators required, only Google found",
    ),
    Case(
        "duplicate log id counts once",
        "chrome",
        D200,
        ("G1", "G1@late", "C1"),
        False,
        "YNY",
        "3 embedded SCTs from distinct logs required for a 200-day certificate, 2 found",
        "not counted: duplicate log",
    ),
    Case(
        "duplicate log id only",
        "chrome",
        D90,
        ("G1", "G1@late"),
        False,
        "YN",
        "2 embedded SCTs from distinct logs required for a 90-day certificate, 1 found",
    ),
    Case(
        "retired log, SCT before retirement",
        "chrome",
        D90,
        ("R1", "G1"),
        True,
        "YY",
        why="counted: embedded, log retired 2026-02-01, after this SCT, operator Retiring Op",
    ),
    Case(
        "retired log, SCT after retirement",
        "chrome",
        D90,
        ("R1@late", "G1"),
        False,
        "NY",
        "2 embedded SCTs from distinct logs required for a 90-day certificate, 1 found",
        "not counted: log retired 2026-02-01, before this SCT",
    ),
    Case(
        # Issuance is the earliest SCT from a log that is not retired (Chromium's
        # issuance_date): R1's own early timestamp does not vouch for itself.
        "retired log, certificate issued after retirement",
        "chrome",
        D200,
        ("R1", "G1@late", "C1@late"),
        False,
        "NYY",
        "3 embedded SCTs from distinct logs required",
        "before the certificate was issued (earliest SCT 2026-02-15)",
    ),
    Case(
        "retired log, certificate issued before retirement",
        "chrome",
        D200,
        ("R1", "G1", "C1@late"),
        True,
        "YYY",
    ),
    Case(
        "only retired logs",
        "chrome",
        D90,
        ("R1", "R2"),
        False,
        "NN",
        "no embedded SCT from a qualified, usable or readonly log",
        "no SCT from a qualified, usable or readonly log shows the certificate was issued",
    ),
    Case(
        # C1b: a retirement dated after now does not apply yet.
        "retirement scheduled after now counts like usable",
        "chrome",
        D90,
        ("F1/tls@late", "G1/tls"),
        True,
        "YY",
        why="counted: TLS extension, log retires 2026-06-01, not yet retired, operator Future Op",
        satisfied_by="mixed",
    ),
    Case(
        "pending log",
        "chrome",
        D90,
        ("P1", "G1"),
        False,
        "NY",
        why="not counted: log is pending since 2025-01-01 (C6)",
    ),
    Case(
        "rejected log",
        "chrome",
        D90,
        ("X1", "G1"),
        False,
        "NY",
        why="not counted: log is rejected since 2023-06-02 (C6)",
    ),
    Case(
        "log without state",
        "chrome",
        D90,
        ("N1", "G1"),
        False,
        "NY",
        why="not counted: log has no state in the log list (C6)",
    ),
    Case(
        "unknown log",
        "chrome",
        D90,
        ("??", "G1"),
        False,
        "NY",
        "1 found",
        "not counted: unknown: log not in the log list",
    ),
    Case(
        "bad signature ignored when others suffice",
        "chrome",
        D90,
        ("C1!", "G1", "D1"),
        True,
        "NYY",
        why="not counted: invalid: signature does not verify",
    ),
    # C6, C6a: qualified, usable and readonly count alike.
    Case("qualified and readonly logs", "chrome", D90, ("D1", "S1"), True, "YY"),
    # C8: the operator when the SCT was issued.
    Case("operator at SCT time (before change)", "chrome", D90, ("M1", "O1"), True, "YY"),
    Case(
        "operator at SCT time (after change)",
        "chrome",
        D90,
        ("M1@late", "O1@late"),
        False,
        "YY",
        "only NewOp found",
        "counted: embedded, usable log, operator NewOp",
    ),
    # C2 (policy text), accepted by C3 (code).
    Case("TLS only", "chrome", D200, ("G1/tls", "C1/tls"), True, "YY", satisfied_by="mixed"),
    Case(
        # C4: Chrome 148+ verifies and shows OCSP SCTs but never counts them.
        "OCSP only",
        "chrome",
        D200,
        ("G1/ocsp", "C1/ocsp"),
        False,
        "NN",
        "SCTs from the stapled OCSP response are ignored since Chrome 148 (C4)",
        "not counted: Chrome 148+ ignores OCSP-delivered SCTs (C4)",
    ),
    Case(
        "TLS and OCSP together",
        "chrome",
        D200,
        ("G1/tls", "C1/ocsp"),
        False,
        "YN",
        "only Google found (C3)",
        "Chrome 148+ ignores OCSP-delivered SCTs (C4)",
    ),
    Case(
        "OCSP SCT cannot be the non-embedded SCT",
        "chrome",
        D90,
        ("G1", "C1/ocsp"),
        False,
        "YN",
        "ignored since Chrome 148 (C4)",
    ),
    Case(
        "TLS one operator",
        "chrome",
        D90,
        ("G1/tls", "G2/tls"),
        False,
        "YY",
        "SCTs from 2 distinct operators required (any delivery once 1 SCT arrives via TLS "
        "extension), only Google found (C3)",
    ),
    Case(
        "retired TLS SCT never counts",
        "chrome",
        D90,
        ("R1/tls", "G1/tls"),
        False,
        "NY",
        "only Google found (C3)",
        "from retired logs never count (C2, C3)",
    ),
    Case("pending TLS SCT", "chrome", D90, ("P1/tls", "G1/tls"), False, "NY", "only Google"),
    Case(
        # C9
        "same log twice via TLS counts once",
        "chrome",
        D90,
        ("G1/tls", "G1/tls@late", "G2/tls"),
        False,
        "YNY",
        "only Google found",
        "not counted: duplicate log (C9)",
    ),
    Case(
        # C3: Chromium's Option 1 accepts 1 embedded + 1 TLS SCT from distinct operators.
        "one embedded and one TLS SCT",
        "chrome",
        D90,
        ("G1", "C1/tls"),
        True,
        "YY",
        why="counted: embedded, usable log, operator Google, counts for operator diversity (C3)",
        satisfied_by="mixed",
    ),
    Case(
        "one embedded and one TLS SCT, one operator",
        "chrome",
        D90,
        ("G1", "G2/tls"),
        False,
        "YY",
        "only Google found (C3)",
    ),
    Case(
        # C3: an embedded SCT from a log retired before it still counts for diversity.
        "embedded SCT from a retired log counts for diversity",
        "chrome",
        D90,
        ("R1@late", "G1/tls"),
        True,
        "YY",
        why="counted: embedded, log retired 2026-02-01, before this SCT, operator Retiring Op",
        satisfied_by="mixed",
    ),
    Case(
        "TLS SCTs rescue a short embedded set",
        "chrome",
        D90,
        ("G1", "C1/tls", "D1/tls"),
        True,
        "YYY",
        satisfied_by="mixed",
    ),
    Case(
        "both paths pass",
        "chrome",
        D90,
        ("G1", "C1", "D1/tls", "S1/ocsp"),
        True,
        "YYYN",
        why="Chrome 148+ ignores OCSP-delivered SCTs (C4)",
        satisfied_by="embedded",
    ),
    Case("no SCTs", "chrome", D90, (), False, "", "no SCTs"),
]

APPLE_CASES = [
    Case("two operators 90 days", "apple", D90, ("G1", "C1"), True, "YY", satisfied_by="b"),
    Case(
        "cap of 1 per operator up to 180 days",
        "apple",
        D90,
        ("G1", "G2", "C1"),
        True,
        "YNY",
        why="not counted: operator Google already has 1 SCT counted, the most a 91-day "
        "certificate allows",
    ),
    Case(
        "one operator 90 days",
        "apple",
        D90,
        ("G1", "G2"),
        False,
        "YN",
        "2 embedded SCTs from distinct logs required for a 91-day certificate (notBefore "
        "through notAfter inclusive; at most 1 per operator), 1 counted",
    ),
    # RFC 5280 counts notBefore through notAfter inclusive: 180 days minus 1 s is 180 days.
    Case("180 days minus 1 s is 180 days", "apple", D180 - SECOND, ("G1", "C1"), True, "YY"),
    # ... and exactly 180 days is 180 days plus 1 s, so 181 days: 3 SCTs (Chrome: 2).
    Case(
        "180 days exactly is 181 days",
        "apple",
        D180,
        ("G1", "C1"),
        False,
        "YY",
        "3 embedded SCTs from distinct logs required for a 181-day certificate (notBefore "
        "through notAfter inclusive; at most 2 per operator), 2 counted",
    ),
    Case("180 days plus 1 s", "apple", D180 + SECOND, ("G1", "C1"), False, "YY", "181-day"),
    Case("200 days, cap 2", "apple", D200, ("G1", "G2", "C1"), True, "YYY"),
    Case(
        "200 days, third SCT of an operator over the cap",
        "apple",
        D200,
        ("G1", "G2", "G3", "C1"),
        True,
        "YYNY",
        why="not counted: operator Google already has 2 SCTs counted",
    ),
    Case(
        "200 days, one operator",
        "apple",
        D200,
        ("G1", "G2", "G3"),
        False,
        "YYN",
        "at most 2 per operator), 2 counted",
    ),
    Case("397 days is 398", "apple", 397 * DAY, ("G1", "G2", "C1"), True, "YYY"),
    Case(
        "398 days is 399: over the table",
        "apple",
        398 * DAY,
        ("G1", "G2", "C1"),
        False,
        "NNN",
        "embedded SCTs cannot make a 399-day certificate compliant: Apple's policy covers "
        "lifetimes up to 398 days",
        "not counted: no embedded-SCT rule for a 399-day certificate",
    ),
    Case(
        # Rule (a) has no lifetime table.
        "398 days via TLS",
        "apple",
        398 * DAY,
        ("G1/tls", "C1"),
        True,
        "YY",
        satisfied_by="a",
    ),
    Case(
        # Rule (a) has no operator requirement.
        "rule (a) with one operator",
        "apple",
        D90,
        ("G1/tls", "G2"),
        True,
        "YY",
        satisfied_by="a",
    ),
    Case("OCSP only", "apple", D90, ("G1/ocsp", "C1/ocsp"), True, "YY", satisfied_by="a"),
    Case(
        "single TLS SCT",
        "apple",
        D90,
        ("G1/tls",),
        False,
        "Y",
        "2 SCTs from once or currently approved logs required, 1 found",
    ),
    Case(
        "retired TLS SCT cannot serve rule (a)",
        "apple",
        D90,
        ("R1/tls", "G1"),
        False,
        "NY",
        "no SCT from a currently approved log delivered via TLS extension or OCSP",
        "rule (a) needs currently approved logs (A2, A7)",
    ),
    Case(
        # Apple states no issuance rule: only the SCT's own time matters (Chrome: refused).
        "retired embedded SCT before retirement",
        "apple",
        D90,
        ("R1", "G1@late"),
        True,
        "YY",
    ),
    Case(
        "retired embedded SCT after retirement",
        "apple",
        D90,
        ("R1@late", "G1"),
        False,
        "NY",
        "2 SCTs from once or currently approved logs required, 1 found",
        "not counted: log retired 2026-02-01, before this SCT",
    ),
    Case(
        "only retired embedded SCTs",
        "apple",
        D90,
        ("R1", "R2"),
        False,
        "YY",
        "no embedded SCT from a currently approved log",
    ),
    Case("pending and rejected logs", "apple", D90, ("P1", "X1", "G1"), False, "NNY", "1 found"),
    Case(
        "unknown log and bad signature", "apple", D90, ("??", "C1!", "G1"), False, "NNY", "1 found"
    ),
    Case("duplicate log", "apple", D90, ("G1", "G1@late", "C1"), True, "YNY", why="duplicate log"),
    Case(
        "operator at SCT time (before change)", "apple", D90, ("M1", "G1"), False, "YN", "1 counted"
    ),
    Case("operator at SCT time (after change)", "apple", D90, ("M1@late", "G1@late"), True, "YY"),
    Case("no SCTs", "apple", D90, (), False, "", "no SCTs"),
]


@pytest.mark.parametrize("case", CHROME_CASES + APPLE_CASES, ids=lambda c: f"{c.policy}: {c.id}")
def test_policy_table(case: Case) -> None:
    checks = [synthetic_check(spec) for spec in case.scts]
    verdict = apply_policy(
        checks,
        not_before=NOT_BEFORE,
        not_after=NOT_BEFORE + case.lifetime,
        policy=case.policy,
        now=NOW,
    )
    joined = " | ".join(verdict.reasons)
    assert verdict.compliant is case.compliant, joined
    assert "".join("Y" if c.counted else "N" for c in verdict.scts) == case.counted, [
        c.why for c in verdict.scts
    ]
    if case.compliant:
        assert verdict.reasons == []
    else:
        assert verdict.reasons, "a non-compliant verdict must say why"
    if case.reason is not None:
        assert case.reason in joined
    if case.why is not None:
        assert any(case.why in c.why for c in verdict.scts), [c.why for c in verdict.scts]
    if case.satisfied_by is not None:
        assert verdict.satisfied_by == case.satisfied_by
    for check in verdict.scts:
        assert check.why.startswith("counted: " if check.counted else "not counted: ")
    # The checks come back in order, only counted/why changed.
    assert [c.sct for c in verdict.scts] == [c.sct for c in checks]
    assert verdict.lifetime == case.lifetime
    assert verdict.policy == case.policy


def test_chrome_and_apple_disagree_at_180_days() -> None:
    checks = [synthetic_check("G1"), synthetic_check("C1")]
    not_after = NOT_BEFORE + D180
    chrome = apply_policy(
        checks, not_before=NOT_BEFORE, not_after=not_after, policy="chrome", now=NOW
    )
    apple = apply_policy(
        checks, not_before=NOT_BEFORE, not_after=not_after, policy="apple", now=NOW
    )
    assert (chrome.compliant, chrome.required) == (True, 2)
    assert (apple.compliant, apple.required) == (False, 3)


def test_verdict_extras() -> None:
    checks = [synthetic_check(s) for s in ("M1", "O1", "X1")]
    verdict = apply_policy(
        checks, not_before=NOT_BEFORE, not_after=NOT_BEFORE + D90, policy="chrome", now=NOW
    )
    assert verdict.operators == ("Google", "NewOp")
    assert verdict.required == 2
    assert verdict.scts[0].operator == "Google" and verdict.scts[1].operator == "NewOp"
    assert verdict.problems == ()


def test_apple_over_398_days_has_no_required_count() -> None:
    verdict = apply_policy(
        [], not_before=NOT_BEFORE, not_after=NOT_BEFORE + 400 * DAY, policy="apple", now=NOW
    )
    assert verdict.required is None


def test_problems_are_reasons_only_when_not_compliant() -> None:
    def verdict(checks: list[SCTCheck]) -> Verdict:
        return apply_policy(
            checks,
            not_before=NOT_BEFORE,
            not_after=NOT_BEFORE + D90,
            policy="chrome",
            now=NOW,
            problems=["TLS list broken"],
        )

    good = [synthetic_check("G1"), synthetic_check("C1")]
    ok = verdict(good)
    assert ok.compliant and ok.reasons == [] and ok.problems == ("TLS list broken",)
    bad = verdict(good[:1])
    assert not bad.compliant and bad.reasons[-1] == "TLS list broken"


def test_unknown_policy_is_refused() -> None:
    with pytest.raises(
        ValueError, match="unknown CT policy 'firefox': use one of chrome, chrome-pre148, apple"
    ):
        apply_policy([], not_before=NOT_BEFORE, not_after=NOT_BEFORE, policy="firefox", now=NOW)
    assert POLICIES == ("chrome", "chrome-pre148", "apple")


# --- evaluate() with real signatures (tests/support/pki.py).


@dataclass(frozen=True)
class World:
    google: pki.TestLog
    cloudflare: pki.TestLog
    digicert: pki.TestLog  # RSA
    rejected: pki.TestLog
    unlisted: pki.TestLog
    root: pki.CA
    inter: pki.CA
    log_list: LogList


@pytest.fixture(scope="module")
def world() -> World:
    google = pki.make_log("Google Argon", "Google")
    cloudflare = pki.make_log("Cloudflare Nimbus", "Cloudflare")
    digicert = pki.make_log("DigiCert Wyvern", "DigiCert", rsa=True)
    rejected = pki.make_log("Old log", "Gone Inc")
    unlisted = pki.make_log("Stranger", "Nobody")
    root = pki.make_root()
    inter = pki.make_intermediate(root)
    document = pki.log_list_json(
        [
            pki.LogEntry(google),
            pki.LogEntry(cloudflare),
            pki.LogEntry(digicert, state="qualified"),
            pki.LogEntry(rejected, state="rejected"),
        ],
        timestamp=datetime.datetime.now(UTC),
    )
    log_list = LogList.from_json(document, source="test")
    return World(google, cloudflare, digicert, rejected, unlisted, root, inter, log_list)


def recent() -> int:
    return pki.now_ms() - 60_000


def leaf_with(world: World, *logs: pki.TestLog) -> x509.Certificate:
    ts = recent()
    cert, _ = pki.make_leaf(world.inter, embedded=[(log, ts) for log in logs])
    return cert


def statuses(verdict: Verdict) -> list[tuple[str, str]]:
    return [(c.source.value, c.status) for c in verdict.scts]


@pytest.mark.parametrize("policy", POLICIES)
def test_embedded_scts_compliant(world: World, policy: str) -> None:
    leaf = leaf_with(world, world.google, world.cloudflare, world.digicert)
    verdict = evaluate([leaf, world.inter.cert], log_list=world.log_list, policy=policy)
    assert verdict.compliant, verdict.reasons
    assert statuses(verdict) == [("embedded", "valid")] * 3
    assert [c.log.description for c in verdict.scts if c.log] == [
        "Google Argon",
        "Cloudflare Nimbus",
        "DigiCert Wyvern",
    ]
    assert all(c.counted for c in verdict.scts)
    assert verdict.operators == ("Cloudflare", "DigiCert", "Google")


def test_served_order_is_not_trusted(world: World) -> None:
    leaf = leaf_with(world, world.google, world.cloudflare)
    verdict = evaluate([leaf, world.root.cert, world.inter.cert], log_list=world.log_list)
    assert verdict.compliant, verdict.reasons


def test_issuer_not_served(world: World) -> None:
    leaf = leaf_with(world, world.google, world.cloudflare)
    verdict = evaluate([leaf], log_list=world.log_list)
    assert not verdict.compliant
    assert statuses(verdict) == [("embedded", "invalid")] * 2
    assert all(
        c.reason == "issuer certificate not available to verify the SCT" for c in verdict.scts
    )
    assert "2 embedded SCTs from distinct logs required" in " ".join(verdict.reasons)
    # A root or intermediate from elsewhere (e.g. the trust store) fills the gap.
    verdict = evaluate([leaf], log_list=world.log_list, issuers=[world.root.cert, world.inter.cert])
    assert verdict.compliant, verdict.reasons


@pytest.mark.parametrize("policy", POLICIES)
def test_sha1_signed_leaf_verifies_its_embedded_scts(world: World, policy: str) -> None:
    # cryptography cannot check a SHA-1 signature; the issuer is found by name and key
    # identifier, and the SCTs (which sign the issuer's key hash) verify.
    rsa_inter = pki.make_rsa_intermediate(world.root)
    ts = recent()
    leaf = pki.make_sha1_leaf(
        rsa_inter, embedded=[(world.google, ts), (world.cloudflare, ts), (world.digicert, ts)]
    )
    verdict = evaluate([leaf, rsa_inter.cert], log_list=world.log_list, policy=policy)
    assert statuses(verdict) == [("embedded", "valid")] * 3
    assert verdict.compliant, verdict.reasons
    # The look-up still refuses a same-name CA with another key.
    impostor = pki.make_rsa_intermediate(world.root)
    refused = evaluate([leaf, impostor.cert], log_list=world.log_list, policy=policy)
    assert {c.reason for c in refused.scts} == {
        "issuer certificate not available to verify the SCT"
    }


def test_wrong_issuer_with_same_name(world: World) -> None:
    leaf = leaf_with(world, world.google, world.cloudflare)
    impostor = pki.make_intermediate(world.root)  # same subject name, other key
    verdict = evaluate([leaf, impostor.cert], log_list=world.log_list)
    assert statuses(verdict) == [("embedded", "invalid")] * 2
    assert not verdict.compliant


@pytest.mark.parametrize("policy", POLICIES)
def test_tls_extension_scts(world: World, policy: str) -> None:
    leaf = leaf_with(world)
    tls = pki.tls_sct_list(leaf, [(world.google, recent()), (world.digicert, recent())])
    verdict = evaluate([leaf], tls_scts=tls, log_list=world.log_list, policy=policy)
    assert verdict.compliant, verdict.reasons
    assert statuses(verdict) == [("tls-extension", "valid")] * 2
    assert verdict.satisfied_by == ("a" if policy == "apple" else "mixed")


@pytest.mark.parametrize("policy", POLICIES)
def test_ocsp_staple_scts(world: World, policy: str) -> None:
    leaf = leaf_with(world)
    scts = pki.tls_sct_list(leaf, [(world.google, recent()), (world.cloudflare, recent())])
    staple = pki.ocsp_response(leaf, world.inter, sct_list=scts)
    verdict = evaluate(
        [leaf, world.inter.cert], ocsp_response=staple, log_list=world.log_list, policy=policy
    )
    # C4: Chrome 148+ verifies and shows them, but does not count them; A6: Apple does.
    assert statuses(verdict) == [("ocsp", "valid")] * 2
    if policy == "chrome":
        assert not verdict.compliant
        assert [c.why for c in verdict.scts] == [
            "not counted: Chrome 148+ ignores OCSP-delivered SCTs (C4)"
        ] * 2
    else:
        assert verdict.compliant, verdict.reasons
        assert verdict.satisfied_by == ("a" if policy == "apple" else "mixed")


def test_mixed_sources(world: World) -> None:
    leaf = leaf_with(world, world.google)
    tls = pki.tls_sct_list(leaf, [(world.cloudflare, recent())])
    staple = pki.ocsp_response(
        leaf, world.inter, sct_list=pki.tls_sct_list(leaf, [(world.digicert, recent())])
    )
    verdict = evaluate(
        [leaf, world.inter.cert], tls_scts=tls, ocsp_response=staple, log_list=world.log_list
    )
    assert statuses(verdict) == [
        ("embedded", "valid"),
        ("tls-extension", "valid"),
        ("ocsp", "valid"),
    ]
    # Chrome 148+ (C3, C4): the TLS SCT plus the embedded one from another operator comply;
    # the OCSP SCT is verified but not counted.
    assert verdict.compliant and verdict.satisfied_by == "mixed"
    assert [c.counted for c in verdict.scts] == [True, True, False]
    pre148 = evaluate(
        [leaf, world.inter.cert],
        tls_scts=tls,
        ocsp_response=staple,
        log_list=world.log_list,
        policy="chrome-pre148",
    )
    assert pre148.compliant and [c.counted for c in pre148.scts] == [True, True, True]
    apple = evaluate(
        [leaf, world.inter.cert],
        tls_scts=tls,
        ocsp_response=staple,
        log_list=world.log_list,
        policy="apple",
    )
    assert apple.compliant and apple.satisfied_by == "a"


def test_scts_for_another_certificate(world: World) -> None:
    leaf = leaf_with(world)
    other = leaf_with(world)
    tls = pki.tls_sct_list(other, [(world.google, recent()), (world.cloudflare, recent())])
    verdict = evaluate([leaf], tls_scts=tls, log_list=world.log_list)
    assert statuses(verdict) == [("tls-extension", "invalid")] * 2
    assert all(c.reason and "signature" in c.reason for c in verdict.scts)
    assert not verdict.compliant
    assert all(c.why.startswith("not counted: invalid: ") for c in verdict.scts)


def test_ocsp_response_for_another_certificate(world: World) -> None:
    leaf = leaf_with(world)
    other = leaf_with(world)
    scts = pki.tls_sct_list(other, [(world.google, recent()), (world.cloudflare, recent())])
    staple = pki.ocsp_response(other, world.inter, sct_list=scts)
    verdict = evaluate([leaf], ocsp_response=staple, log_list=world.log_list)
    assert not verdict.compliant and verdict.scts == []
    assert any(r.startswith("stapled OCSP response is malformed: ") for r in verdict.reasons)
    assert verdict.reasons[0].startswith("no SCTs")


def test_malformed_tls_list_is_a_reason(world: World) -> None:
    leaf = leaf_with(world, world.google, world.cloudflare)
    verdict = evaluate([leaf, world.inter.cert], tls_scts=b"\x00\x05abc", log_list=world.log_list)
    # The embedded SCTs still make it compliant; the broken list is recorded as a problem.
    assert verdict.compliant
    assert len(verdict.problems) == 1
    assert verdict.problems[0].startswith("SCT list in the TLS extension is malformed: ")
    bare = leaf_with(world)
    verdict = evaluate([bare], tls_scts=b"\x00\x05abc", log_list=world.log_list)
    assert not verdict.compliant
    assert verdict.reasons[0].startswith("no SCTs")
    assert verdict.reasons[1].startswith("SCT list in the TLS extension is malformed: ")


def test_malformed_embedded_list_is_a_reason(world: World) -> None:
    builder = (
        x509.CertificateBuilder()
        .subject_name(world.inter.cert.subject)
        .issuer_name(world.inter.cert.subject)
        .public_key(world.inter.key.public_key())
        .serial_number(7)
        .not_valid_before(datetime.datetime(2026, 1, 1, tzinfo=UTC))
        .not_valid_after(datetime.datetime(2026, 3, 1, tzinfo=UTC))
        .add_extension(
            x509.UnrecognizedExtension(pki.OID_SCT_EMBEDDED, pki.der_octet_string(b"\x00\x09junk")),
            critical=False,
        )
    )
    leaf = builder.sign(world.inter.key, hashes.SHA256())
    verdict = evaluate([leaf], log_list=world.log_list)
    assert not verdict.compliant
    assert any(
        r.startswith("embedded SCT list in the certificate is malformed: ") for r in verdict.reasons
    )


@settings(max_examples=150, deadline=None)
@given(tls=st.binary(max_size=300), staple=st.binary(max_size=300))
def test_hostile_bytes_never_raise(tls: bytes, staple: bytes) -> None:
    verdict = evaluate([FUZZ_LEAF], tls_scts=tls, ocsp_response=staple, log_list=FUZZ_LIST)
    assert isinstance(verdict.compliant, bool)
    if not verdict.compliant:
        assert verdict.reasons


@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_mangled_valid_lists_never_raise(data: st.DataObject) -> None:
    raw = bytearray(FUZZ_TLS)
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(raw) - 1))
        raw[position] = data.draw(st.integers(0, 255))
    verdict = evaluate([FUZZ_LEAF], tls_scts=bytes(raw), log_list=FUZZ_LIST)
    assert all(c.status in ("valid", "invalid", "unknown") for c in verdict.scts)


def _fuzz_material() -> tuple[x509.Certificate, bytes, LogList]:
    log = pki.make_log("Fuzz", "Fuzz Op")
    other = pki.make_log("Fuzz 2", "Other Op")
    root = pki.make_root()
    leaf, _ = pki.make_leaf(root)
    tls = pki.tls_sct_list(leaf, [(log, recent()), (other, recent())])
    listing = LogList.from_json(
        pki.log_list_json([pki.LogEntry(log), pki.LogEntry(other)]), source="fuzz"
    )
    return leaf, tls, listing


FUZZ_LEAF, FUZZ_TLS, FUZZ_LIST = _fuzz_material()


def test_future_timestamp_is_invalid(world: World) -> None:
    now = datetime.datetime.now(UTC)
    future = datetime_to_ms(now) + 3_600_000
    leaf, _ = pki.make_leaf(
        world.inter, embedded=[(world.google, future), (world.cloudflare, recent())]
    )
    verdict = evaluate([leaf, world.inter.cert], log_list=world.log_list, now=now)
    assert statuses(verdict) == [("embedded", "invalid"), ("embedded", "valid")]
    reason = verdict.scts[0].reason
    assert reason is not None and reason.endswith("is in the future")
    assert not verdict.compliant
    # The same certificate checked an hour and a bit later is fine.
    later = evaluate(
        [leaf, world.inter.cert], log_list=world.log_list, now=now + datetime.timedelta(hours=2)
    )
    assert later.compliant, later.reasons


def test_timestamp_beyond_year_9999(world: World) -> None:
    leaf = leaf_with(world)
    entry = pki.x509_signed_entry(leaf)
    far = pki.sign_sct(world.google, entry_type=0, signed_entry=entry, timestamp_ms=2**64 - 1)
    verdict = evaluate([leaf], tls_scts=pki.sct_list([far]), log_list=world.log_list)
    assert statuses(verdict) == [("tls-extension", "invalid")]
    assert verdict.scts[0].reason == (
        "timestamp 18446744073709551615 ms after 1970 (beyond year 9999) is in the future"
    )


def test_operator_history_with_huge_timestamp() -> None:
    assert LOGS["M1"].operator_at(2**64 - 1) == "NewOp"


def test_unknown_and_rejected_logs(world: World) -> None:
    leaf = leaf_with(world, world.unlisted, world.rejected, world.google)
    verdict = evaluate([leaf, world.inter.cert], log_list=world.log_list)
    assert statuses(verdict) == [
        ("embedded", "unknown"),
        ("embedded", "valid"),
        ("embedded", "valid"),
    ]
    assert verdict.scts[0].log is None
    assert verdict.scts[1].why == "not counted: log is rejected since 2020-01-01 (C6)"
    assert [c.counted for c in verdict.scts] == [False, False, True]
    assert not verdict.compliant


@pytest.mark.parametrize("policy", POLICIES)
def test_unknown_state_log_in_a_loaded_list(world: World, policy: str) -> None:
    # U1-U4: the list loads with one warning; the odd log's SCT verifies but never counts,
    # and the other logs still make the certificate compliant.
    odd = pki.make_log("Odd state log", "Odd Op")
    document = pki.log_list_json(
        [pki.LogEntry(world.google), pki.LogEntry(world.cloudflare), pki.LogEntry(odd)]
    )
    for operator in document["operators"]:
        for entry in operator["logs"]:
            if entry["description"] == "Odd state log":
                entry["state"] = {"expired": {"timestamp": "2026-01-01T00:00:00Z"}}
    listing = LogList.from_json(document, source="odd")
    assert len(listing.warnings) == 1 and "Odd state log" in listing.warnings[0]
    leaf = leaf_with(world, odd, world.google, world.cloudflare)
    verdict = evaluate([leaf, world.inter.cert], log_list=listing, policy=policy)
    assert statuses(verdict) == [("embedded", "valid")] * 3
    assert verdict.compliant, verdict.reasons
    assert [c.counted for c in verdict.scts] == [False, True, True]
    assert verdict.scts[0].why.endswith("(U2)")
    alone = evaluate(
        [leaf_with(world, odd, world.google), world.inter.cert], log_list=listing, policy=policy
    )
    assert not alone.compliant


def test_sct_version_other_than_v1_is_invalid(world: World) -> None:
    leaf = leaf_with(world)
    entry = pki.x509_signed_entry(leaf)
    v2 = pki.sign_sct(
        world.google, entry_type=0, signed_entry=entry, timestamp_ms=recent(), version=1
    )
    verdict = evaluate([leaf], tls_scts=pki.sct_list([v2]), log_list=world.log_list)
    assert statuses(verdict) == [("tls-extension", "invalid")]
    assert verdict.scts[0].reason == "unsupported SCT version 2"


def test_unusable_key_in_user_log_list(world: World) -> None:
    garbage = b"\x30\x03\x02\x01\x00"
    listing = LogList.from_json(
        {
            "operators": [
                {
                    "name": "Broken",
                    "email": [],
                    "logs": [
                        {
                            "description": "bad key",
                            "key": base64.b64encode(garbage).decode(),
                            "log_id": base64.b64encode(hashlib.sha256(garbage).digest()).decode(),
                            "url": "https://broken.example/",
                            "mmd": 86400,
                            "state": {"usable": {"timestamp": "2020-01-01T00:00:00Z"}},
                        }
                    ],
                    "tiled_logs": [],
                }
            ]
        },
        source="user",
    )
    leaf = leaf_with(world)
    sct = SCT(
        version=0,
        log_id=hashlib.sha256(garbage).digest(),
        timestamp=recent(),
        extensions=b"",
        hash_algorithm=4,
        signature_algorithm=3,
        signature=b"\x30\x00",
        source=Source.TLS_EXTENSION,
        serialized=b"",
    )
    check = check_sct(sct, log_list=listing, leaf=leaf, issuer=None, now=datetime.datetime.now(UTC))
    assert check.status == "invalid" and check.reason is not None
    assert "log key" in check.reason


def test_empty_chain() -> None:
    verdict = evaluate([], log_list=LogList.bundled())
    assert not verdict.compliant and verdict.reasons == ["no certificate"]


def test_evaluate_refuses_unknown_policy(world: World) -> None:
    with pytest.raises(ValueError, match="unknown CT policy"):
        evaluate([leaf_with(world)], log_list=world.log_list, policy="firefox")


def test_default_now_is_the_current_time(world: World) -> None:
    # An SCT dated an hour ahead is in the future for the default ``now``.
    ahead = pki.now_ms() + 3_600_000
    leaf, _ = pki.make_leaf(world.inter, embedded=[(world.google, ahead)])
    verdict = evaluate([leaf, world.inter.cert], log_list=world.log_list)
    assert verdict.scts[0].status == "invalid"


def test_shuffled_many_logs(world: World) -> None:
    # Nine SCTs in random order from 3 operators: compliant whatever the order.
    logs = [world.google, world.cloudflare, world.digicert] * 3
    random.Random(4).shuffle(logs)
    ts = recent()
    leaf, _ = pki.make_leaf(world.inter, embedded=[(log, ts - i) for i, log in enumerate(logs)])
    verdict = evaluate([leaf, world.inter.cert], log_list=world.log_list)
    assert verdict.compliant
    assert sum(c.counted for c in verdict.scts) == 3
    assert sum(c.why == "not counted: duplicate log (C9)" for c in verdict.scts) == 6


# --- Real certificates (tests/vectors).


def load_pem(name: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate((VECTORS / name).read_bytes())


def test_real_letsencrypt_vector_chrome() -> None:
    leaf = load_pem("rpv-letsencrypt.org-2026.leaf.pem")
    issuer = load_pem("rpv-letsencrypt.org-2026.issuer.pem")
    google = LogList.load(VECTORS / "google_all_logs_2026-06-20.json")
    now = datetime.datetime(2026, 4, 1, tzinfo=UTC)
    verdict = evaluate([leaf, issuer], log_list=google, now=now)
    # Nimbus2026 (Cloudflare) and Tuscolo2026h1 (Geomys, static-ct-api) are both usable in
    # that list; the certificate lives 89 days 23:59:59, so 2 logs of 2 operators suffice.
    assert statuses(verdict) == [("embedded", "valid")] * 2
    assert verdict.compliant, verdict.reasons
    assert verdict.required == 2
    assert verdict.operators == ("Cloudflare", "Geomys")
    assert [c.why for c in verdict.scts] == [
        "counted: embedded, usable log, operator Cloudflare, log 1 of 2 needed (C1)",
        "counted: embedded, usable log, operator Geomys, log 2 of 2 needed (C1)",
    ]
    # Without the issuer, nothing verifies.
    assert not evaluate([leaf], log_list=google, now=now).compliant
    # Checked before the SCTs were issued, their timestamps are in the future.
    early = evaluate([leaf, issuer], log_list=google, now=datetime.datetime(2026, 3, 1, tzinfo=UTC))
    assert statuses(early) == [("embedded", "invalid")] * 2 and not early.compliant


def test_real_letsencrypt_vector_apple_bundled() -> None:
    leaf = load_pem("rpv-letsencrypt.org-2026.leaf.pem")
    issuer = load_pem("rpv-letsencrypt.org-2026.issuer.pem")
    verdict = evaluate(
        [leaf, issuer],
        log_list=LogList.bundled(),
        policy="apple",
        now=datetime.datetime(2026, 4, 1, tzinfo=UTC),
    )
    assert verdict.compliant, verdict.reasons
    assert verdict.satisfied_by == "b"


@pytest.mark.parametrize("policy", POLICIES)
def test_every_real_vector_under_every_policy(policy: str) -> None:
    google = LogList.load(VECTORS / "google_all_logs_2026-06-20.json")
    letsencrypt = evaluate(
        [
            load_pem("rpv-letsencrypt.org-2026.leaf.pem"),
            load_pem("rpv-letsencrypt.org-2026.issuer.pem"),
        ],
        log_list=google,
        policy=policy,
        now=datetime.datetime(2026, 4, 1, tzinfo=UTC),
    )
    # Nimbus2026 (RFC 6962, A5) and Tuscolo2026h1 (static-ct-api, C5): usable, 2 operators,
    # notAfter inside both logs' temporal intervals (A9).
    assert letsencrypt.compliant, letsencrypt.reasons
    assert [c.counted for c in letsencrypt.scts] == [True, True]
    facebook = evaluate(
        [
            load_pem("swiftlibp2p-star.facebook.com-2016.leaf.pem"),
            load_pem("swiftlibp2p-star.facebook.com-2016.issuer.pem"),
        ],
        log_list=google,
        policy=policy,
        now=datetime.datetime(2017, 1, 1, tzinfo=UTC),
    )
    rule = "A1" if policy == "apple" else "C6"
    assert statuses(facebook) == [("embedded", "valid")] * 4
    assert all(c.why.endswith(f"({rule})") for c in facebook.scts)
    assert not facebook.compliant
    tls = evaluate(
        [load_pem("sctrs-star.google.com-2017.leaf.pem")],
        tls_scts=(VECTORS / "sctrs-star.google.com-2017.sct_list.bin").read_bytes(),
        log_list=google,
        policy=policy,
        now=datetime.datetime(2017, 7, 1, tzinfo=UTC),
    )
    assert statuses(tls) == [("tls-extension", "valid")] * 2
    assert not tls.compliant and not any(c.counted for c in tls.scts)


def test_real_vectors_from_rejected_logs() -> None:
    # Signatures still verify, but every log has since been rejected: valid, not counted.
    google = LogList.load(VECTORS / "google_all_logs_2026-06-20.json")
    facebook = load_pem("swiftlibp2p-star.facebook.com-2016.leaf.pem")
    digicert = load_pem("swiftlibp2p-star.facebook.com-2016.issuer.pem")
    verdict = evaluate(
        [facebook, digicert], log_list=google, now=datetime.datetime(2017, 1, 1, tzinfo=UTC)
    )
    assert statuses(verdict) == [("embedded", "valid")] * 4  # including Venafi's RSA SCT
    assert not any(c.counted for c in verdict.scts)
    assert all(c.why.startswith("not counted: log is rejected since ") for c in verdict.scts)
    assert not verdict.compliant
    google_leaf = load_pem("sctrs-star.google.com-2017.leaf.pem")
    tls = (VECTORS / "sctrs-star.google.com-2017.sct_list.bin").read_bytes()
    verdict = evaluate(
        [google_leaf], tls_scts=tls, log_list=google, now=datetime.datetime(2017, 7, 1, tzinfo=UTC)
    )
    assert statuses(verdict) == [("tls-extension", "valid")] * 2
    assert not verdict.compliant
    assert verdict.reasons[0] == "no SCT delivered via TLS extension from a log not retired (C3)"
    assert all(c.why.endswith("(C6)") for c in verdict.scts)
