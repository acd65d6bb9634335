"""expect_ct.loglist: the bundled Apple list, real Google v3 lists, synthetic lists, bad lists."""

from __future__ import annotations

import base64
import copy
import datetime
import hashlib
import json
import re
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_der_public_key

import support
from expect_ct import loglist_update as update
from expect_ct.loglist import InvalidLogList
from expect_ct.loglist import Log
from expect_ct.loglist import LogList
from expect_ct.loglist import LogState
from expect_ct.loglist import UnsupportedLogList
from expect_ct.loglist import datetime_to_ms
from expect_ct.loglist import ms_to_datetime
from expect_ct.loglist_fetch import FetchOptions
from expect_ct.policy import POLICIES
from expect_ct.policy import evaluate
from support import pki

UTC = datetime.UTC
VECTORS = support.VECTORS
GOOGLE_2026 = VECTORS / "google_all_logs_2026-06-20.json"
GOOGLE_V50_4 = VECTORS / "google_all_logs_v50.4_2024-11-14.json"


def b64(text: str) -> bytes:
    return base64.b64decode(text)


# --- The bundled Apple list.


def test_bundled_is_apples_list_with_the_snapshot_date() -> None:
    bundled = LogList.bundled()
    assert len(bundled) == 166
    assert bundled.schema == "apple-v5"
    assert bundled.version == "511"
    assert bundled.timestamp == datetime.datetime(2026, 4, 1, tzinfo=UTC)
    assert bundled.age(datetime.datetime(2026, 4, 11, tzinfo=UTC)) == datetime.timedelta(days=10)
    assert bundled.extra["assetVersion"] == 32
    assert len(bundled.operators) == 16
    states = {state: 0 for state in LogState}
    for log in bundled.logs.values():
        assert log.state is not None
        states[log.state] += 1
    assert states[LogState.USABLE] == 51
    assert states[LogState.READONLY] == 6
    assert states[LogState.PENDING] == 1


def test_bundled_is_cached_and_immutable() -> None:
    first = LogList.bundled()
    assert LogList.bundled() is first
    with pytest.raises(TypeError):
        first.logs[b"x" * 32] = next(iter(first.logs.values()))  # type: ignore[index]


def test_bundled_file_is_the_recorded_snapshot() -> None:
    data = resources.files("expect_ct") / "data"
    meta = json.loads(data.joinpath("apple_log_list.meta.json").read_text(encoding="utf-8"))
    raw = data.joinpath("apple_log_list.json").read_bytes()
    assert hashlib.sha256(raw).hexdigest() == meta["sha256"]
    assert meta["source_url"].startswith("https://valid.apple.com/")
    assert (
        LogList.bundled().extra["meta"]["captured_via"]["commit"] == meta["captured_via"]["commit"]
    )


def test_bundled_entries_are_complete() -> None:
    bundled = LogList.bundled()
    nimbus = bundled.get(b64("yzj3FYl8hKFEX1vB3fvJbvKaWc1HCmkFhbDLFMMUWOc="))
    assert nimbus is not None
    assert nimbus.operator == "Cloudflare"
    assert nimbus.state is LogState.USABLE and nimbus.admissible
    assert nimbus.url is not None and nimbus.url.startswith("https://")
    assert nimbus.temporal_interval is not None
    start, end = nimbus.temporal_interval
    assert start.year == 2026 and end.year == 2027
    assert isinstance(load_der_public_key(nimbus.key), ec.EllipticCurvePublicKey)
    tiled = [log for log in bundled.logs.values() if log.tiled]
    assert len(tiled) == 31
    assert all(log.url and log.monitoring_url for log in tiled)
    assert bundled.get(b"\x00" * 32) is None


def test_bundled_loads_fast() -> None:
    source = (resources.files("expect_ct") / "data" / "apple_log_list.json").read_bytes()
    started = time.perf_counter()
    for _ in range(5):
        LogList.from_json(source, source="timing")
    per_load = (time.perf_counter() - started) / 5
    # About 5-10 ms on a laptop; the bound only catches an accidental order-of-magnitude loss.
    assert per_load < 0.25


# --- Real Google v3 lists.


def test_google_v50_4_has_version_and_timestamp() -> None:
    google = LogList.load(GOOGLE_V50_4)
    assert google.source == str(GOOGLE_V50_4)
    assert google.schema == "google-v3"
    assert google.version == "50.4"
    assert google.is_all_logs is True
    assert google.timestamp == datetime.datetime(2024, 11, 14, 12, 55, 19, tzinfo=UTC)
    assert google.age(datetime.datetime(2024, 11, 15, 12, 55, 19, tzinfo=UTC)) == (
        datetime.timedelta(days=1)
    )
    assert len(google) == 165
    assert sum(log.state is None for log in google.logs.values()) == 28
    retired = [log for log in google.logs.values() if log.state is LogState.RETIRED]
    assert len(retired) == 1 and retired[0].retired_at == retired[0].state_since
    assert retired[0].state_since is not None and retired[0].state_since.tzinfo is not None


def test_google_rsa_log_key() -> None:
    google = LogList.load(GOOGLE_V50_4)
    venafi = [log for log in google.logs.values() if log.description == "Venafi log"]
    assert len(venafi) == 1
    assert isinstance(load_der_public_key(venafi[0].key), rsa.RSAPublicKey)
    assert venafi[0].operator == "Venafi"


def test_google_2026_without_timestamp() -> None:
    google = LogList.load(GOOGLE_2026)
    assert google.timestamp is None
    assert google.age(datetime.datetime(2026, 6, 20, tzinfo=UTC)) is None
    assert len(google) == 256
    tuscolo = google.get(b64("cX6V88I4im2x44RJPTHhWqliCHYtQgDgBQzQZ7WmYeI="))
    assert tuscolo is not None
    assert tuscolo.tiled and tuscolo.operator == "Geomys"
    assert tuscolo.url is not None and tuscolo.monitoring_url is not None
    oak = [log for log in google.logs.values() if log.description == "Let's Encrypt 'Oak2026h1'"]
    assert oak[0].state is LogState.RETIRED
    assert oak[0].retired_at == datetime.datetime(2026, 2, 28, tzinfo=UTC)
    assert not oak[0].admissible
    # The all-logs list has logs with no state at all: known, but never counted.
    assert sum(log.state is None for log in google.logs.values()) == 61


# --- Synthetic lists from tests/support/pki.py.


@pytest.fixture(scope="module")
def logs() -> dict[str, pki.TestLog]:
    return {
        "a": pki.make_log("Alpha 2026", "Alpha"),
        "b": pki.make_log("Beta RSA", "Beta", rsa=True),
        "c": pki.make_log("Gamma tiled", "Gamma"),
        "d": pki.make_log("Delta", "Alpha"),
    }


def test_synthetic_google_list(logs: dict[str, pki.TestLog]) -> None:
    since = datetime.datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    change = datetime.datetime(2025, 6, 1, tzinfo=UTC)
    interval = (
        datetime.datetime(2026, 1, 1, tzinfo=UTC),
        datetime.datetime(2027, 1, 1, tzinfo=UTC),
    )
    document = pki.log_list_json(
        [
            pki.LogEntry(
                logs["a"], state="qualified", state_since=since, temporal_interval=interval
            ),
            pki.LogEntry(logs["b"], state="retired", state_since=since),
            pki.LogEntry(logs["c"], state=None, tiled=True, previous_operators=[("Old", change)]),
            pki.LogEntry(logs["d"], state="readonly"),
        ],
        timestamp=datetime.datetime(2026, 3, 1, tzinfo=UTC),
    )
    parsed = LogList.from_json(document, source="synthetic")
    assert len(parsed) == 4
    assert parsed.timestamp == datetime.datetime(2026, 3, 1, tzinfo=UTC)
    assert parsed.operators == ("Alpha", "Beta", "Gamma")
    alpha = parsed.get(logs["a"].log_id)
    assert alpha == Log(
        log_id=logs["a"].log_id,
        key=logs["a"].public_der,
        description="Alpha 2026",
        operator="Alpha",
        url="https://alpha.example/alpha2026/",
        state=LogState.QUALIFIED,
        state_since=since,
        mmd=86400,
        temporal_interval=interval,
    )
    beta = parsed.get(logs["b"].log_id)
    assert beta is not None and beta.state is LogState.RETIRED and not beta.admissible
    assert isinstance(load_der_public_key(beta.key), rsa.RSAPublicKey)
    gamma = parsed.get(logs["c"].log_id)
    assert gamma is not None and gamma.tiled and gamma.state is None and gamma.state_since is None
    assert gamma.previous_operators == (("Old", change),)
    assert gamma.url == "https://gamma.example/gammatiled/"
    assert parsed.get(logs["d"].log_id).admissible  # type: ignore[union-attr]
    # The same document as bytes and as str parses to the same list.
    text = json.dumps(document)
    assert LogList.from_json(text, source="s").logs == parsed.logs
    assert LogList.from_json(text.encode(), source="s").logs == parsed.logs


def test_synthetic_apple_list(logs: dict[str, pki.TestLog]) -> None:
    document = pki.log_list_json(
        [pki.LogEntry(logs["a"]), pki.LogEntry(logs["b"], state="rejected")], schema="apple"
    )
    parsed = LogList.from_json(document, source="apple")
    assert parsed.schema == "apple-v5"
    assert parsed.timestamp is None  # Apple's lists have none; the addon decides
    assert parsed.get(logs["a"].log_id).state is LogState.USABLE  # type: ignore[union-attr]
    assert parsed.get(logs["b"].log_id).state is LogState.REJECTED  # type: ignore[union-attr]


def test_load_from_file(tmp_path: Path, logs: dict[str, pki.TestLog]) -> None:
    path = tmp_path / "list.json"
    path.write_text(json.dumps(pki.log_list_json([pki.LogEntry(logs["a"])])))
    assert LogList.load(path).source == str(path)
    assert LogList.load(str(path)).get(logs["a"].log_id) is not None


def test_load_missing_file_names_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"
    with pytest.raises(InvalidLogList, match=r"cannot read log list .*nope\.json: No such file"):
        LogList.load(missing)


@pytest.mark.parametrize(
    ("state", "admissible"),
    [
        ("pending", False),
        ("qualified", True),
        ("usable", True),
        ("readonly", True),
        ("retired", False),
        ("rejected", False),
        (None, False),
    ],
)
def test_admissible_states(
    logs: dict[str, pki.TestLog], state: str | None, admissible: bool
) -> None:
    parsed = LogList.from_json(
        pki.log_list_json([pki.LogEntry(logs["a"], state=state)]), source="s"
    )
    log = parsed.get(logs["a"].log_id)
    assert log is not None and log.admissible is admissible
    assert (log.state.value if log.state else None) == state


# --- Log states the parser does not know (U1-U4) and mimic logs (C12).


def _with_state(document: dict[str, Any], index: int, state: dict[str, Any]) -> dict[str, Any]:
    document["operators"][0]["logs"][index]["state"] = state
    return document


@pytest.mark.parametrize("schema", ["google", "apple"])
def test_unknown_states_load_with_one_warning(logs: dict[str, pki.TestLog], schema: str) -> None:
    # U1: a state object holding only an unknown key is schema-invalid, yet the list loads
    # and the log stays, with its state name kept. U3: shipped clients keep a list when one
    # log entry is odd; U2: that log counts for nothing; U4: warn once per list.
    document = pki.log_list_json([pki.LogEntry(logs[name]) for name in "abc"], schema=schema)
    by_id = {entry["log_id"]: entry for op in document["operators"] for entry in op["logs"]}
    by_id[base64.b64encode(logs["b"].log_id).decode()]["state"] = {
        "expired": {"timestamp": "2026-01-01T00:00:00Z"}
    }
    by_id[base64.b64encode(logs["c"].log_id).decode()]["state"] = {"frozen": {}}
    parsed = LogList.from_json(document, source="odd.json")
    assert len(parsed) == 3
    usable = parsed.get(logs["a"].log_id)
    assert usable is not None and usable.state is LogState.USABLE and usable.admissible
    for name, state in (("b", "expired"), ("c", "frozen")):
        log = parsed.get(logs[name].log_id)
        assert log is not None
        assert log.state is None and log.unknown_state == state and not log.admissible
    assert len(parsed.warnings) == 1
    (warning,) = parsed.warnings
    assert "2 logs in a state this parser does not know ('expired', 'frozen')" in warning
    assert logs["b"].description in warning and logs["c"].description in warning
    assert logs["a"].description not in warning
    assert warning.endswith("their SCTs are not counted (U1-U4): 'Beta RSA', 'Gamma tiled'")


def test_known_lists_have_no_warnings() -> None:
    assert LogList.bundled().warnings == ()
    assert LogList.load(GOOGLE_2026).warnings == ()


def test_extra_key_beside_a_known_state_is_ignored(logs: dict[str, pki.TestLog]) -> None:
    # U1: the schemas do not forbid additional properties beside one of the six states.
    document = _with_state(
        pki.log_list_json([pki.LogEntry(logs["a"])]),
        0,
        {"usable": {"timestamp": "2026-01-01T00:00:00Z"}, "frozen": {"since": "x"}},
    )
    log = LogList.from_json(document, source="s").get(logs["a"].log_id)
    assert log is not None and log.state is LogState.USABLE and log.unknown_state is None


def test_mimic_logs_are_flagged_and_warned_about(logs: dict[str, pki.TestLog]) -> None:
    # C12: Google's third-party lists carry two mimic logs whose private keys are public.
    data = resources.files("expect_ct") / "data" / "mimic_logs.json"
    mimics = json.loads(data.read_text(encoding="utf-8"))["logs"]
    assert len(mimics) == 2
    for mimic in mimics:
        assert hashlib.sha256(b64(mimic["key"])).digest() == b64(mimic["log_id"])
    document = pki.log_list_json([pki.LogEntry(logs["a"])])
    document["operators"][0]["logs"].append(
        {
            "description": "Mimic 1",
            "log_id": mimics[0]["log_id"],
            "key": mimics[0]["key"],
            "url": "https://mimic.example/",
            "mmd": 86400,
            "state": {"usable": {"timestamp": "2026-01-22T00:00:00Z"}},
        }
    )
    parsed = LogList.from_json(document, source="3p.json")
    mimic = parsed.get(b64(mimics[0]["log_id"]))
    assert mimic is not None and mimic.mimic and mimic.admissible
    other = parsed.get(logs["a"].log_id)
    assert other is not None and not other.mimic
    assert len(parsed.warnings) == 1
    assert "mimic logs, whose private keys are public ('Mimic 1')" in parsed.warnings[0]


# --- Newer list formats are refused whole (C11, A11).


@pytest.mark.parametrize(
    ("schema_url", "refused"),
    [
        (pki.APPLE_SCHEMA_URL, False),
        (pki.APPLE_SCHEMA_URL.replace("_v5.", "_v4."), False),
        (pki.APPLE_SCHEMA_URL.replace("_v5.", "_v6."), True),
        (pki.APPLE_SCHEMA_URL.replace("_v5.", "_v10."), True),
        ("https://www.gstatic.com/ct/log_list/v3/log_list_schema.json", False),
        ("https://www.gstatic.com/ct/log_list/v4/log_list_schema.json", True),
        ("https://example.test/any-other-schema.json", False),
        (pki.APPLE_SCHEMA_URL.replace("_v5.", "_v005."), False),
        (pki.APPLE_SCHEMA_URL.replace("_v5.", "_v" + "9" * 5000 + "."), True),
    ],
)
def test_a_newer_schema_version_refuses_the_list_whole(
    logs: dict[str, pki.TestLog], schema_url: str, refused: bool
) -> None:
    # C11: Chrome refuses a list whose compatibility_version exceeds its own and keeps the old
    # one; A11: trustd skips an asset of another version. JSON lists declare it in $schema.
    document = pki.log_list_json([pki.LogEntry(logs["a"])], schema="apple")
    document["$schema"] = schema_url
    if not refused:
        assert LogList.from_json(document, source="new.json").get(logs["a"].log_id) is not None
        return
    with pytest.raises(UnsupportedLogList, match=r"^new\.json: \$schema: .* newer than the v"):
        LogList.from_json(document, source="new.json")


def test_schema_version_is_checked_before_the_entries(logs: dict[str, pki.TestLog]) -> None:
    # A newer format is not half-read: its entries are not judged by the old rules.
    document = pki.log_list_json([pki.LogEntry(logs["a"])], schema="apple")
    document["$schema"] = pki.APPLE_SCHEMA_URL.replace("_v5.", "_v6.")
    _log0(document)["key"] = "not base64!"
    with pytest.raises(UnsupportedLogList, match=r"apple schema v6, newer than the v5"):
        LogList.from_json(document, source="new.json")


def test_a_non_string_schema_is_not_a_version(logs: dict[str, pki.TestLog]) -> None:
    document = pki.log_list_json([pki.LogEntry(logs["a"])])
    document["$schema"] = {"v": 99}
    assert len(LogList.from_json(document, source="s")) == 1


# --- One warning line per list, escaped and bounded (C11, A11, U4).


def test_many_problems_make_one_warning_line_per_kind(logs: dict[str, pki.TestLog]) -> None:
    # U4: warn once per list, however many entries are skipped or in unknown states.
    extra = [pki.make_log(f"Extra {n}", "Extra") for n in range(8)]
    document = pki.log_list_json(
        [pki.LogEntry(log) for log in (logs["a"], logs["b"], *extra)], schema="apple"
    )
    entries = {entry["description"]: entry for op in document["operators"] for entry in op["logs"]}
    for n in range(7):
        entries[f"Extra {n}"]["key"] = "%%%"
    entries["Extra 7"]["state"] = {"frozen": {"timestamp": "2026-01-01T00:00:00Z"}}
    parsed = LogList.from_json(document, source="many.json")
    assert len(parsed) == 3
    skipped, unknown = parsed.warnings
    assert skipped.startswith("7 log entries cannot be read and were skipped")
    for n in range(5):
        assert f"(log 'Extra {n}')" in skipped
    assert "'Extra 5'" not in skipped and skipped.endswith("; and 2 more")
    assert unknown.startswith("1 log in a state this parser does not know ('frozen')")
    assert unknown.endswith("their SCTs are not counted (U1-U4): 'Extra 7'")


def test_warnings_escape_and_bound_what_the_list_says(logs: dict[str, pki.TestLog]) -> None:
    # Descriptions and state names come from a downloaded file: a warning is one printable
    # line, escaped like records.one_line (Python literal syntax), of bounded length.
    hostile = "evil\x1b[31m\u202e\n" + "x" * 5000
    document = pki.log_list_json([pki.LogEntry(logs["a"]), pki.LogEntry(logs["b"])])
    _log0(document)["description"] = hostile
    _log0(document)["key"] = "!!"
    beta = document["operators"][1]["logs"][0]
    beta["description"] = "odd\\state\u2028"
    beta["state"] = {"x\x00" * 3000: {}}
    parsed = LogList.from_json(document, source="hostile.json")
    skipped, unknown = parsed.warnings
    for warning in parsed.warnings:
        assert warning.isprintable() and len(warning) < 1000
    assert r"(log 'evil\x1b[31m\u202e\nxxx" in skipped
    assert r"'odd\\state\u2028'" in unknown and r"'x\x00x\x00" in unknown


def test_many_unknown_states_are_named_up_to_five(logs: dict[str, pki.TestLog]) -> None:
    # U4: one bounded line however many distinct state names a list invents.
    odd = [pki.make_log(f"Odd {n}", "Odd") for n in range(12)]
    document = pki.log_list_json([pki.LogEntry(logs["a"]), *map(pki.LogEntry, odd)])
    for n, entry in enumerate(document["operators"][1]["logs"]):
        entry["state"] = {f"state{n:02}" + "z" * 200: {}}
    (warning,) = LogList.from_json(document, source="odd.json").warnings
    assert warning.startswith("12 logs in a state this parser does not know ('state00zzz")
    assert "'state04z" in warning and "'state05z" not in warning and ", …); " in warning
    assert warning.endswith("'Odd 3', 'Odd 4' and 7 more") and len(warning) < 1000


def test_validate_accepts_a_list_with_a_skipped_entry(logs: dict[str, pki.TestLog]) -> None:
    # The updater installs such a list (shipped clients use it too) and its warning stays
    # on the list; it still refuses one whose readable logs are none usable.
    document = pki.log_list_json([pki.LogEntry(logs["a"]), pki.LogEntry(logs["b"])])
    document["operators"][1]["logs"][0]["log_id"] = "AAAA"
    validated = update.validate(json.dumps(document).encode(), source="mirror")
    assert list(validated.logs) == [logs["a"].log_id]
    assert "operators[1].logs[0].log_id: does not match SHA-256" in validated.warnings[0]
    _log0(document)["state"] = {"rejected": {"timestamp": "2026-01-01T00:00:00Z"}}
    with pytest.raises(InvalidLogList, match="mirror lists no usable CT logs"):
        update.validate(json.dumps(document).encode(), source="mirror")
    _log0(document)["key"] = "AAAA"
    with pytest.raises(InvalidLogList, match="mirror: operators: no log entry can be read"):
        update.validate(json.dumps(document).encode(), source="mirror")


def test_updater_installs_a_list_with_a_skipped_entry(
    logs: dict[str, pki.TestLog], tmp_path: Path
) -> None:
    document = pki.log_list_json([pki.LogEntry(logs["a"]), pki.LogEntry(logs["b"])])
    document["operators"][1]["logs"][0]["mmd"] = "one day"
    source = tmp_path / "offered.json"
    source.write_text(json.dumps(document))
    out = tmp_path / "confdir" / "expect-ct-log-list.json"
    result = update.attempt(
        update.Source(str(source), path=str(source)), str(out), None, FetchOptions()
    )
    assert result.outcome == update.UPDATED and result.error is None
    assert result.current is not None and len(result.current.log_list) == 1
    assert result.event()["logs"] == 1
    assert out.read_bytes() == source.read_bytes()
    reloaded = update.load_installed(str(out))
    assert reloaded is not None and "mmd: expected a whole number" in reloaded.log_list.warnings[0]


# --- U2 with real SCTs: unknown-state and skipped logs never count, under every policy.


@pytest.fixture(scope="module")
def issued(logs: dict[str, pki.TestLog]) -> tuple[x509.Certificate, x509.Certificate, LogList]:
    root = pki.make_root("U Root")
    inter = pki.make_intermediate(root, "U CA")
    odd = pki.make_log("Odd state", "Odd Op")
    broken = pki.make_log("Broken entry", "Broken Op")
    now = pki.now_ms() - 60_000
    leaf, _ = pki.make_leaf(
        inter,
        embedded=[(odd, now), (broken, now), (logs["a"], now), (logs["c"], now)],
    )
    document = pki.log_list_json(
        [pki.LogEntry(log) for log in (odd, broken, logs["a"], logs["c"])],
        timestamp=datetime.datetime.now(UTC),
    )
    entries = {entry["description"]: entry for op in document["operators"] for entry in op["logs"]}
    entries["Odd state"]["state"] = {"expired": {"timestamp": "2026-01-01T00:00:00Z"}}
    entries["Broken entry"]["state"] = {"usable": {"timestamp": "last week"}}
    listing = LogList.from_json(document, source="u.json")
    return leaf, inter.cert, listing


@pytest.mark.parametrize("policy", POLICIES)
def test_unknown_state_and_skipped_logs_never_count(
    issued: tuple[x509.Certificate, x509.Certificate, LogList], policy: str
) -> None:
    # U2: a log in a state no policy names satisfies no requirement (chrome, chrome-pre148,
    # apple alike); C11/A11: a skipped entry's log is simply not in the list; the other two
    # logs (two operators) still make the certificate compliant.
    leaf, issuer, listing = issued
    assert len(listing) == 3 and len(listing.warnings) == 2
    verdict = evaluate([leaf, issuer], log_list=listing, policy=policy)
    assert [(c.status, c.counted) for c in verdict.scts] == [
        ("valid", False),
        ("unknown", False),
        ("valid", True),
        ("valid", True),
    ]
    assert verdict.compliant, verdict.reasons
    assert "'expired' is unknown to this parser" in verdict.scts[0].why
    assert verdict.scts[0].why.endswith("(U2)")
    assert verdict.scts[1].log is None and "log not in the log list" in verdict.scts[1].why


# --- previous_operators.


def test_operator_at_boundaries(logs: dict[str, pki.TestLog]) -> None:
    first_end = datetime.datetime(2024, 1, 1, tzinfo=UTC)
    second_end = datetime.datetime(2025, 1, 1, tzinfo=UTC)
    # Listed out of order on purpose: lookup must not depend on the JSON order.
    document = pki.log_list_json(
        [pki.LogEntry(logs["a"], previous_operators=[("Second", second_end), ("First", first_end)])]
    )
    log = LogList.from_json(document, source="s").get(logs["a"].log_id)
    assert log is not None
    first_ms = datetime_to_ms(first_end)
    second_ms = datetime_to_ms(second_end)
    assert log.operator_at(0) == "First"
    assert log.operator_at(first_ms - 1) == "First"
    # end_time is when the operator stopped: an SCT at that instant is the next operator's.
    assert log.operator_at(first_ms) == "Second"
    assert log.operator_at(second_ms - 1) == "Second"
    assert log.operator_at(second_ms) == "Alpha"
    assert log.operator_at(second_ms + 86_400_000) == "Alpha"


def test_operator_at_without_history(logs: dict[str, pki.TestLog]) -> None:
    log = LogList.from_json(pki.log_list_json([pki.LogEntry(logs["a"])]), source="s").get(
        logs["a"].log_id
    )
    assert log is not None and log.operator_at(0) == "Alpha"


def test_millisecond_conversion_is_exact() -> None:
    moment = datetime.datetime(2026, 3, 8, 18, 3, 0, 455000, tzinfo=UTC)
    assert datetime_to_ms(moment) == 1772992980455
    assert ms_to_datetime(1772992980455) == moment


# --- Malformed lists: refused whole (not a log list, newer format) or entry by entry.

Mutation = Callable[[dict[str, Any]], object]


def _log0(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["operators"][0]["logs"][0]  # type: ignore[no-any-return]


def _set(path: Callable[[dict[str, Any]], dict[str, Any]], key: str, value: object) -> Mutation:
    def mutate(doc: dict[str, Any]) -> object:
        path(doc)[key] = value
        return doc

    return mutate


def _delete(path: Callable[[dict[str, Any]], dict[str, Any]], key: str) -> Mutation:
    def mutate(doc: dict[str, Any]) -> object:
        del path(doc)[key]
        return doc

    return mutate


def _top(doc: dict[str, Any]) -> dict[str, Any]:
    return doc


def _op0(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["operators"][0]  # type: ignore[no-any-return]


def _duplicate_log(doc: dict[str, Any]) -> object:
    doc["operators"][1]["logs"].append(copy.deepcopy(_log0(doc)))
    return doc


def _operator0_is_a_number(doc: dict[str, Any]) -> object:
    doc["operators"][0] = 1
    return doc


def _swap_log_ids(doc: dict[str, Any]) -> object:
    other = doc["operators"][1]["logs"][0]
    _log0(doc)["log_id"], other["log_id"] = other["log_id"], _log0(doc)["log_id"]
    return doc


OTHER_KEY = base64.b64encode(b"\x30\x00").decode()

# Not a log list at all, or no entry in it readable: refused whole, whatever the entries.
NOT_A_LOG_LIST: list[tuple[str, Mutation, str]] = [
    ("not JSON", lambda doc: b'{"operators": [', r"not valid JSON: .* line 1 column 16"),
    ("not UTF-8", lambda doc: b"\xff\xfe{}", r"not valid JSON"),
    ("top level array", lambda doc: [doc], r"top level: expected a JSON object, got array"),
    ("no operators", _delete(_top, "operators"), r"missing required field 'operators'"),
    (
        "v2 list",
        lambda doc: {"logs": []},
        r"has 'logs' but no 'operators': v1/v2 lists are not supported",
    ),
    (
        "operators not array",
        _set(_top, "operators", {}),
        r"operators: expected an array, got object",
    ),
    (
        "bad list timestamp",
        _set(_top, "log_list_timestamp", 5),
        r"log_list_timestamp: expected a string",
    ),
    (
        "list timestamp not a date",
        _set(_top, "log_list_timestamp", "2026-13-01T00:00:00Z"),
        r"log_list_timestamp: not an RFC 3339 date-time",
    ),
    ("version object", _set(_top, "version", {}), r"version: expected a string, got object"),
    ("is_all_logs string", _set(_top, "is_all_logs", "yes"), r"is_all_logs: expected a boolean"),
    # U3 / C11: a list whose every entry is unreadable is no list of logs.
    (
        "only operator not object",
        _set(_top, "operators", [1]),
        r"operators: no log entry can be read \(1 entry unreadable\); "
        r"first: operators\[0\]: expected an object, got number \(the operator and its logs",
    ),
    (
        "swapped log ids",
        _swap_log_ids,
        r"no log entry can be read \(2 entries unreadable\); "
        r"first: operators\[0\]\.logs\[0\]\.log_id: does not match SHA-256 of the key "
        r"\(log 'Alpha 2026'\)",
    ),
]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [pytest.param(mutate, message, id=name) for name, mutate, message in NOT_A_LOG_LIST],
)
def test_lists_refused_whole(logs: dict[str, pki.TestLog], mutate: Mutation, message: str) -> None:
    # C11 / A11: refused whole only when it is not a log list at all.
    document = pki.log_list_json(
        [pki.LogEntry(logs["a"]), pki.LogEntry(logs["b"], state="retired")],
        timestamp=datetime.datetime(2026, 1, 1, tzinfo=UTC),
    )
    data = mutate(copy.deepcopy(document))
    with pytest.raises(InvalidLogList, match=message) as excinfo:
        LogList.from_json(data, source="my-list.json")  # type: ignore[arg-type]
    assert str(excinfo.value).startswith("my-list.json: ")
    assert not isinstance(excinfo.value, UnsupportedLogList)


# One unreadable part of operator 0 ("Alpha"): (id, mutation, message, whether Alpha's log
# "Alpha 2026" survives it). Operator 1 ("Beta") is untouched and always kept.
UNREADABLE_ENTRIES: list[tuple[str, Mutation, str, bool]] = [
    (
        "operator not object",
        _operator0_is_a_number,
        r"operators\[0\]: expected an object, got number \(the operator and its logs skipped\)",
        False,
    ),
    (
        "operator without name",
        _delete(_op0, "name"),
        r"operators\[0\]: missing required field 'name' \(the operator and its logs skipped\)",
        False,
    ),
    (
        "operator name number",
        _set(_op0, "name", 7),
        r"operators\[0\]\.name: expected a string, got number",
        False,
    ),
    (
        "missing logs",
        _delete(_op0, "logs"),
        r"operators\[0\]: missing required field 'logs' \(operator 'Alpha'\)",
        False,
    ),
    (
        "logs not array",
        _set(_op0, "logs", "x"),
        r"operators\[0\]\.logs: expected an array, got string",
        False,
    ),
    (
        "tiled_logs not array",
        _set(_op0, "tiled_logs", {}),
        r"operators\[0\]\.tiled_logs: expected an array, got object",
        True,
    ),
    (
        "log not object",
        _set(_op0, "logs", [None]),
        r"operators\[0\]\.logs\[0\]: expected an object, got null",
        False,
    ),
    (
        "missing key",
        _delete(_log0, "key"),
        r"logs\[0\]: missing required field 'key' \(log 'Alpha 2026'\)",
        False,
    ),
    (
        "missing log_id",
        _delete(_log0, "log_id"),
        r"logs\[0\]: missing required field 'log_id'",
        False,
    ),
    (
        "key not string",
        _set(_log0, "key", True),
        r"logs\[0\]\.key: expected a string, got boolean",
        False,
    ),
    (
        "bad base64 key",
        _set(_log0, "key", "not base64!"),
        r"logs\[0\]\.key: not valid base64",
        False,
    ),
    (
        "bad base64 padding",
        _set(_log0, "log_id", "AAA"),
        r"logs\[0\]\.log_id: not valid base64",
        False,
    ),
    ("empty key", _set(_log0, "key", ""), r"logs\[0\]\.key: is empty", False),
    (
        "log_id not hash of key",
        _set(_log0, "key", OTHER_KEY),
        r"logs\[0\]\.log_id: does not match SHA-256 of the key \(log 'Alpha 2026'\)",
        False,
    ),
    (
        "duplicate log",
        _duplicate_log,
        r"operators\[1\]\.logs\[1\]: duplicate log_id \S+ \(also 'Alpha 2026'\)",
        True,
    ),
    ("description number", _set(_log0, "description", 3), r"description: expected a string", False),
    (
        "url not string",
        _set(_log0, "url", ["x"]),
        r"logs\[0\]\.url: expected a string, got array",
        False,
    ),
    ("mmd string", _set(_log0, "mmd", "86400"), r"mmd: expected a whole number of seconds", False),
    ("mmd fraction", _set(_log0, "mmd", 1.5), r"mmd: expected a whole number of seconds", False),
    (
        "state not object",
        _set(_log0, "state", "usable"),
        r"state: expected an object, got string",
        False,
    ),
    (
        "empty state",
        _set(_log0, "state", {}),
        r"state: expected exactly one state, found nothing",
        False,
    ),
    (
        "two states",
        _set(_log0, "state", {"usable": {"timestamp": "2020-01-01T00:00:00Z"}, "retired": {}}),
        r"state: expected exactly one state, found retired, usable",
        False,
    ),
    (
        "state without timestamp",
        _set(_log0, "state", {"usable": {}}),
        r"state\.usable: missing required field 'timestamp'",
        False,
    ),
    (
        "bad state timestamp",
        _set(_log0, "state", {"usable": {"timestamp": "yesterday"}}),
        r"state\.usable\.timestamp: not an RFC 3339 date-time: 'yesterday'",
        False,
    ),
    (
        "naive timestamp",
        _set(_log0, "state", {"usable": {"timestamp": "2020-01-01T00:00:00"}}),
        r"date-time has no time zone",
        False,
    ),
    (
        "temporal interval incomplete",
        _set(_log0, "temporal_interval", {"start_inclusive": "2020-01-01T00:00:00Z"}),
        r"temporal_interval: missing required field 'end_exclusive'",
        False,
    ),
    (
        "previous operators not array",
        _set(_log0, "previous_operators", {"name": "x"}),
        r"previous_operators: expected an array",
        False,
    ),
    (
        "previous operator without end_time",
        _set(_log0, "previous_operators", [{"name": "x"}]),
        r"previous_operators\[0\]: missing required field 'end_time'",
        False,
    ),
]


@pytest.mark.parametrize("schema", ["google", "apple"])
@pytest.mark.parametrize(
    ("mutate", "message", "alpha_kept"),
    [pytest.param(m, message, kept, id=name) for name, m, message, kept in UNREADABLE_ENTRIES],
)
def test_one_unreadable_entry_is_skipped_the_rest_kept(
    logs: dict[str, pki.TestLog], schema: str, mutate: Mutation, message: str, alpha_kept: bool
) -> None:
    # C11 (Chrome skips an entry whose id or key cannot be decoded), A11 (trustd skips an
    # unreadable entry), U3 (no shipped client refuses a whole list over one entry): the
    # entry goes, the list stays, and U4 one warning line says which entry and why.
    document = pki.log_list_json(
        [pki.LogEntry(logs["a"]), pki.LogEntry(logs["b"], state="retired")],
        timestamp=datetime.datetime(2026, 1, 1, tzinfo=UTC),
        schema=schema,
    )
    parsed = LogList.from_json(mutate(copy.deepcopy(document)), source="my-list.json")  # type: ignore[arg-type]
    beta = parsed.get(logs["b"].log_id)
    assert beta is not None and beta.state is LogState.RETIRED and beta.operator == "Beta"
    assert (parsed.get(logs["a"].log_id) is not None) is alpha_kept
    assert len(parsed) == 1 + alpha_kept
    (warning,) = parsed.warnings
    assert warning.startswith(
        "1 log entry cannot be read and was skipped, the rest of the list is used (C11, A11): "
    )
    assert re.search(message, warning), warning
    assert warning.isprintable()


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        pytest.param(m, message, id=name)
        for name, m, message, kept in UNREADABLE_ENTRIES
        if not kept
    ],
)
def test_a_list_whose_only_entry_is_unreadable_is_refused(
    logs: dict[str, pki.TestLog], mutate: Mutation, message: str
) -> None:
    # A list that ends with no log at all is not a log list: refused, naming the entry.
    document = pki.log_list_json([pki.LogEntry(logs["a"])])
    with pytest.raises(
        InvalidLogList, match=r"^solo\.json: operators: no log entry can be read"
    ) as excinfo:
        LogList.from_json(mutate(copy.deepcopy(document)), source="solo.json")  # type: ignore[arg-type]
    assert re.search(message, str(excinfo.value)), excinfo.value


def test_malformed_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{"operators": [}')
    with pytest.raises(InvalidLogList, match=r"broken\.json: not valid JSON: .* line 1 column 16"):
        LogList.load(path)


def test_invalid_log_list_is_a_value_error() -> None:
    assert issubclass(InvalidLogList, ValueError)
    assert issubclass(UnsupportedLogList, InvalidLogList)
