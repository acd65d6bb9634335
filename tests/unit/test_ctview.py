"""ctview: the "Certificate Transparency" view's text, from metadata as the addon builds it.

The connection records come from the real policy evaluation and ``records.connection_record``
(what the addon stores under ``flow.metadata["expect_ct"]["connection"]``), over certificates,
TLS-extension SCT lists and OCSP staples of the test world. The in-process and mitmweb tests
render metadata written by the addon itself.
"""

from __future__ import annotations

import datetime
import json
from typing import Any

import pytest

from expect_ct import ctview
from expect_ct import policy
from expect_ct import records
from expect_ct.chain import ChainKind
from expect_ct.loglist import LogList
from expect_ct.store import KnownHost
from support import pki
from support.world import World


@pytest.fixture(scope="module")
def log_list(world: World) -> LogList:
    return LogList.load(world.log_list)


def connection(
    world: World,
    log_list: LogList,
    leaf: Any,
    issuer: Any,
    *,
    kind: ChainKind = ChainKind.PUBLIC,
    tls_scts: bytes | None = None,
    ocsp: bytes | None = None,
) -> dict[str, Any]:
    verdict = policy.evaluate(
        [leaf, issuer.cert],
        tls_scts=tls_scts,
        ocsp_response=ocsp,
        log_list=log_list,
        issuers=[issuer.cert],
    )
    record = records.connection_record(
        tls_version="TLSv1.3",
        chain=kind,
        leaf=leaf,
        verdict=verdict,
        sources=records.handshake_sources(
            captured=True, tls_extension=tls_scts, ocsp_response=ocsp
        ),
    )
    # What survives a saved flow: JSON primitives only.
    return dict(json.loads(json.dumps(record)))


def meta_for(conn: dict[str, Any], **extra: Any) -> dict[str, Any]:
    meta = {"secure": True, "host": "shop.test", "port": 443, "connection": conn}
    meta.update(extra)
    return meta


def text(meta: object, **kwargs: Any) -> str:
    return ctview.to_text(ctview.render(meta, **kwargs))


def table_rows(rendered: str) -> list[list[str]]:
    """The SCT table's rows: the cells (split on runs of two or more blanks), then the why
    line printed under each row."""
    lines = rendered.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith("#  Source"))
    assert lines[start + 1].strip() == "Why"
    rows = []
    body = lines[start + 2 :]
    for index in range(0, len(body) - 1, 2):
        if not body[index].strip():
            break
        cells = [cell.strip() for cell in body[index].strip().split("  ") if cell.strip()]
        assert body[index + 1].startswith("     ")  # under the Source column
        rows.append([*cells, body[index + 1].strip()])
    return rows


def test_all_three_sources_one_row_per_sct(world: World, log_list: LogList) -> None:
    ts = pki.now_ms() - 60_000
    a, b, inter = world.log_a, world.log_b, world.public_inter
    leaf, _ = pki.make_leaf(inter, embedded=[(a, ts), (b, ts + 1)])
    tls = pki.tls_sct_list(leaf, [(a, ts + 2)])
    ocsp = pki.ocsp_response(leaf, inter, sct_list=pki.tls_sct_list(leaf, [(b, ts + 3)]))
    conn = connection(world, log_list, leaf, inter, tls_scts=tls, ocsp=ocsp)
    rendered = text(meta_for(conn, verdict="CT: compliant (chrome; 4/4 valid SCTs)"))

    rows = table_rows(rendered)
    assert [row[:4] for row in rows] == [
        ["1", "embedded", "Alpha Log 2026", "Alpha"],
        ["2", "embedded", "Beta Log 2026", "Beta"],
        ["3", "tls-extension", "Alpha Log 2026", "Alpha"],
        ["4", "ocsp", "Beta Log 2026", "Beta"],
    ]
    stamp = datetime.datetime.fromtimestamp((ts + 2) / 1000, datetime.UTC)
    assert rows[2][4] == stamp.strftime("%Y-%m-%d %H:%M:%S.") + f"{(ts + 2) % 1000:03d}"
    assert all(row[5] == "valid" for row in rows)
    # Counted or not, with the policy's own sentence for each.
    for row, sct in zip(rows, conn["scts"], strict=True):
        assert row[6] == ("yes" if sct["counted"] else "no")
        assert row[7] == sct["why"]
    assert "SCTs (4)" in rendered
    assert "Verdict:" in rendered and "CT: compliant (chrome; 4/4 valid SCTs)" in rendered
    assert "Compliant:   yes under the chrome policy" in rendered
    assert "embedded observed, tls-extension present, ocsp present" in rendered
    cert = conn["certificate"]
    for field in ("subject", "issuer", "sha256"):
        assert cert[field] in rendered
    assert f"Valid:   {cert['not_before']} to {cert['not_after']}" in rendered
    assert "Certificate Transparency: shop.test:443 (TLSv1.3)" in rendered.splitlines()[0]


def test_no_scts_says_so_and_lists_the_reasons(world: World, log_list: LogList) -> None:
    conn = connection(world, log_list, world.non_compliant.cert, world.public_inter)
    assert conn["scts"] == [] and not conn["compliant"]
    rendered = text(meta_for(conn))
    assert "SCTs (0)\n  none: no SCT was delivered by any path" in rendered
    assert "Compliant:   NO under the chrome policy" in rendered
    assert "  Reasons:" in rendered
    for reason in conn["reasons"]:
        assert f"    - {reason}" in rendered
    assert ctview.description(meta_for(conn)) == "CT: NOT compliant"


def test_blocked_flow_shows_why(world: World, log_list: LogList) -> None:
    conn = connection(world, log_list, world.non_compliant.cert, world.public_inter)
    reason = "shop.test is a Known Expect-CT Host with enforce and the connection is not compliant"
    meta = meta_for(conn, blocked=reason, blocked_response=True)
    lines = ctview.render(meta)
    blocked = [line for line in lines if line and line[0][1].strip() == "Blocked:"]
    assert blocked == [[("header", "  Blocked:     "), ("error", reason)]]
    assert ctview.description(meta) == "CT: blocked"
    would = text(meta_for(conn, would_block=reason))
    assert f"Would block: {reason} (blocking suspended)" in would


def test_private_chain_is_explained(world: World, log_list: LogList) -> None:
    conn = connection(
        world, log_list, world.private.cert, world.private_inter, kind=ChainKind.PRIVATE
    )
    rendered = text(meta_for(conn, verdict="CT: exempt (chain ends at a private root)"))
    assert "Chain:       private (ends at a root trusted only locally: exempt from CT)" in rendered
    assert "CT: exempt" in rendered


def test_flows_without_data_get_one_line() -> None:
    for meta in (None, {}, {"comment": "x"}, "garbage", ["connection"]):
        assert ctview.render(meta) == [[("text", ctview.NO_DATA)]]
        assert ctview.description(meta) == "no CT data"


def test_missing_and_odd_keys_of_older_saved_flows() -> None:
    # An older flow: a verdict and a header without "direction"; odd types everywhere.
    meta = {
        "verdict": "CT: compliant",
        "connection": {"scts": [{"source": "embedded", "timestamp": "soon", "status": "valid"}]},
        "header": {"values": ["max-age=5"], "valid": True, "max_age": 5, "enforce": False},
    }
    rendered = text(meta)
    (row,) = table_rows(rendered)
    assert row == ["1", "embedded", "(log not in the log list)", "-", "?", "valid", "no", "-"]
    assert "  response: max-age=5\n    valid: max-age 5 s, report-only" in rendered
    assert "Certificate\n" not in rendered  # no certificate facts: no section
    assert text({"connection": {"scts": "nope", "sources": 3, "reasons": None}}).startswith(
        "Certificate Transparency\n\nSCTs (0)"
    )


def test_request_and_response_headers_with_direction_and_action() -> None:
    # As the addon writes them: the client's header under "request_header", the response's
    # under "header" (README, "On the flow").
    meta = {
        "header": {
            "direction": "response",
            "values": ['max-age=86400, enforce, report-uri="https://r.test/"'],
            "valid": True,
            "max_age": 86400,
            "enforce": True,
            "report_uri": "https://r.test/",
            "action": "noted",
            "why": "valid header on a CT-compliant connection; known for 86400 s",
        },
        "request_header": {
            "direction": "request",
            "values": ["max-age=0"],
            "valid": True,
            "max_age": 0,
            "enforce": False,
            "report_uri": None,
            "action": "ignored",
            "why": "sent by the client; a request header never changes the Known Expect-CT Hosts",
        },
    }
    rendered = text(meta)
    assert rendered.endswith(
        "Expect-CT headers\n"
        "  request: max-age=0\n"
        "    valid: max-age 0 s, report-only\n"
        "    action: ignored (sent by the client; a request header never changes the Known "
        "Expect-CT Hosts)\n"
        '  response: max-age=86400, enforce, report-uri="https://r.test/"\n'
        "    valid: max-age 86400 s, enforce, report-uri https://r.test/\n"
        "    action: noted (valid header on a CT-compliant connection; known for 86400 s)"
    )
    # A flow with only the client's header (plain HTTP, or a connection never evaluated).
    alone = {"request_header": {"direction": "request", "values": ["x"], "valid": False}}
    assert ctview.has_data(alone)
    assert text(alone).endswith("Expect-CT headers\n  request: x\n    invalid: malformed")


def test_server_text_is_escaped_and_stored_escapes_stay() -> None:
    meta = {
        "connection": {
            "certificate": {"subject": "CN=evil\x1b[31m\u202eoops", "issuer": "CN=ok"},
            "scts": [{"source": "ocsp", "log": "Log\nInjected", "status": "valid"}],
        },
        # The addon stored the non-UTF-8 byte 0xff as the text \xff.
        "header": {"values": ["max-age=1\\xff\x07"], "valid": False, "error": "bad \x00"},
    }
    rendered = text(meta)
    assert "CN=evil\\x1b[31m\\u202eoops" in rendered
    assert "Log\\x0aInjected" in rendered
    assert "max-age=1\\xff\\x07" in rendered  # not \\\\xff
    assert "invalid: bad \\x00" in rendered
    assert all(ch.isprintable() for line in rendered.splitlines() for ch in line)


def test_stored_policy_known_unknown_and_unreadable() -> None:
    now = datetime.datetime(2026, 12, 5, 8, 0, tzinfo=datetime.UTC)
    entry = KnownHost(
        host="shop.test",
        enforce=True,
        report_uri="https://r.test/ct",
        expires=now + datetime.timedelta(days=1),
        noted=now - datetime.timedelta(hours=2),
        last_observed=now,
    )
    meta = {"verdict": "CT: compliant", "host": "shop.test"}
    known = text(meta, stored=ctview.StoredPolicy("shop.test", entry))
    assert (
        "Stored policy for shop.test\n"
        "  Known host: yes: enforce\n"
        "  Report-uri: https://r.test/ct\n"
        "  Expires:    2026-12-06T08:00:00Z\n"
        "  Noted:      2026-12-05T06:00:00Z\n"
        "  Last seen:  2026-12-05T08:00:00Z"
    ) in known
    unknown = text(meta, stored=ctview.StoredPolicy("shop.test", None))
    assert unknown.endswith("Stored policy for shop.test\n  not a Known Expect-CT Host")
    broken = text(meta, stored=ctview.StoredPolicy("shop.test", None, error="disk I/O error"))
    assert broken.endswith("  the store could not be read: disk I/O error")
    assert "Stored policy" not in text(meta)
