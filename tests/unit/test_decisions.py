"""decisions.py: what a header does to the store, whether to block, whether a report is due.

The addon and ``python -m expect_ct check`` both call these functions; the offline effect of
a header (``predicted_store_action``) must be what the store really does (``observe``).
"""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest

from expect_ct import decisions
from expect_ct.chain import ChainKind
from expect_ct.policy import Verdict
from expect_ct.store import KnownHost
from expect_ct.store import KnownHostStore

UTC = datetime.UTC
NOW = datetime.datetime(2026, 6, 1, tzinfo=UTC)
COMPLIANT = Verdict(compliant=True, policy="chrome", reasons=[], scts=[])
FAILING = Verdict(
    compliant=False, policy="chrome", reasons=["no SCTs: none embedded in the certificate"], scts=[]
)


def known(enforce: bool, report_uri: str | None = None) -> KnownHost:
    return KnownHost(
        host="k.test",
        enforce=enforce,
        report_uri=report_uri,
        noted=NOW,
        last_observed=NOW,
        expires=NOW + datetime.timedelta(days=1),
    )


# ------------------------------------------------------------------------ the header


@pytest.mark.parametrize(
    "secure, valid, chain, compliant, why",
    [
        (False, True, ChainKind.PUBLIC, True, "plain HTTP"),
        (True, False, ChainKind.PUBLIC, True, "malformed header"),
        (True, True, None, True, "certificates are not available"),
        (True, True, ChainKind.PRIVATE, True, "private root"),
        (True, True, ChainKind.UNTRUSTED, True, "not publicly trusted: unknown issuer"),
        (True, True, ChainKind.PUBLIC, False, "not CT-compliant"),
    ],
)
def test_header_gate_ignores_what_must_not_change_the_store(
    secure: bool, valid: bool, chain: ChainKind | None, compliant: bool, why: str
) -> None:
    effect = decisions.header_gate(
        secure=secure, valid=valid, chain=chain, chain_error="unknown issuer", compliant=compliant
    )
    assert effect is not None and effect.action == "ignored"
    assert why in effect.why


def test_header_gate_passes_a_valid_header_on_a_compliant_public_connection() -> None:
    assert (
        decisions.header_gate(
            secure=True, valid=True, chain=ChainKind.PUBLIC, chain_error=None, compliant=True
        )
        is None
    )


def test_max_age_0_for_a_host_that_is_not_known_is_ignored_not_removed() -> None:
    """RFC 9163 2.3.2: max-age=0 removes a Known host; for any other host nothing changes."""
    action = decisions.predicted_store_action(max_age=0, max_age_cap=86400, known=False)
    effect = decisions.header_outcome(action, max_age=0, max_age_cap=86400)
    assert effect.action == "ignored"
    assert "not known" in effect.why and "RFC 9163 2.3.2" in effect.why
    removed = decisions.header_outcome(
        decisions.predicted_store_action(max_age=0, max_age_cap=86400, known=True),
        max_age=0,
        max_age_cap=86400,
    )
    assert removed.action == "removed"


@pytest.mark.parametrize("max_age", [0, 1, 86400, 10**9])
@pytest.mark.parametrize("already_known", [False, True])
def test_the_predicted_action_is_what_the_store_does(
    tmp_path: Path, max_age: int, already_known: bool
) -> None:
    cap = 30 * 86400
    with KnownHostStore(tmp_path / "s.sqlite3", max_age_cap=cap) as store:
        if already_known:
            store.observe("h.test", max_age=3600, enforce=False, report_uri=None)
        done, _ = store.observe("h.test", max_age=max_age, enforce=True, report_uri=None)
    predicted = decisions.predicted_store_action(
        max_age=max_age, max_age_cap=cap, known=already_known
    )
    assert predicted == done


def test_a_noted_header_says_for_how_long_after_the_cap() -> None:
    effect = decisions.header_outcome("noted", max_age=10**9, max_age_cap=86400)
    assert (effect.action, effect.why.endswith("known for 86400 s")) == ("noted", True)


# ------------------------------------------------------------------------ blocking


@pytest.mark.parametrize(
    "mode, chain, verdict, host, blocked",
    [
        ("off", ChainKind.PUBLIC, FAILING, known(True), False),
        ("header", ChainKind.PUBLIC, COMPLIANT, known(True), False),
        ("header", ChainKind.PRIVATE, FAILING, known(True), False),
        ("header", ChainKind.PUBLIC, FAILING, known(False), False),
        ("header", ChainKind.PUBLIC, FAILING, None, False),
        ("header", ChainKind.PUBLIC, FAILING, known(True), True),
        ("header", ChainKind.UNTRUSTED, FAILING, known(True), True),
        ("all", ChainKind.PUBLIC, FAILING, None, True),
        ("all", ChainKind.UNTRUSTED, FAILING, None, False),
    ],
)
def test_block_reason(
    mode: str, chain: ChainKind, verdict: Verdict, host: KnownHost | None, blocked: bool
) -> None:
    reason = decisions.block_reason(
        mode=mode, host="k.test", chain=chain, verdict=verdict, known=host
    )
    assert (reason is not None) == blocked
    if reason is not None:
        assert "no SCTs: none embedded in the certificate" in reason
        assert "'" not in reason and "[" not in reason  # a sentence, not a Python repr


def test_only_public_failures_are_marked() -> None:
    assert decisions.warrants_warning(chain=ChainKind.PUBLIC, compliant=False)
    assert not decisions.warrants_warning(chain=ChainKind.UNTRUSTED, compliant=False)
    assert not decisions.warrants_warning(chain=ChainKind.PRIVATE, compliant=False)
    assert not decisions.warrants_warning(chain=ChainKind.PUBLIC, compliant=True)


# ------------------------------------------------------------------------ reports


def test_a_known_hosts_failure_is_reported_once() -> None:
    host = known(True, "https://r.test/ct")
    due = decisions.known_host_report(
        known=host, chain=ChainKind.PUBLIC, compliant=False, reported=False
    )
    assert due == decisions.ReportDue("https://r.test/ct", host.expires, "enforce")
    for change in (
        {"reported": True},
        {"compliant": True},
        {"chain": ChainKind.PRIVATE},
        {"known": known(True)},  # no report-uri
        {"known": None},
    ):
        args: dict[str, object] = dict(
            known=host, chain=ChainKind.PUBLIC, compliant=False, reported=False
        )
        args.update(change)
        assert decisions.known_host_report(**args) is None, change  # type: ignore[arg-type]


def test_a_header_asks_for_a_report_on_a_failing_public_connection() -> None:
    args: dict[str, object] = dict(
        valid=True,
        report_uri="https://r.test/ct",
        enforce=False,
        chain=ChainKind.PUBLIC,
        compliant=False,
        reported=False,
    )
    due = decisions.header_report_due(**args)  # type: ignore[arg-type]
    assert due == decisions.ReportDue("https://r.test/ct", None, "report-only")
    for change in ({"valid": False}, {"report_uri": None}, {"compliant": True}, {"reported": True}):
        assert decisions.header_report_due(**{**args, **change}) is None  # type: ignore[arg-type]
