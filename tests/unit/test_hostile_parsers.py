"""Hostile input for every parser: it never crashes, never gets through, and is shown escaped.

The addon reads bytes chosen by servers (headers, SCT lists, OCSP staples, certificates, TLS
handshake messages) and files chosen by users or downloaded (log lists, preload files). Each
parser has one documented error; the property tests here feed it generated valid input (which
must round-trip), arbitrary input and mutated valid input (which may only raise that error),
and the policy evaluation hostile certificates and huge SCT lists (an explicit status and
reason, never an exception, in work linear in the input). What reaches a log line or a flow
comment must be one printable line.

The existing property tests in test_header.py, test_sct.py, ../inprocess/test_tls.py, test_policy.py and
test_preload.py cover arbitrary text and single-byte corruptions; these extend them to raw
bytes as mitmproxy decodes them, structured mutations, JSON documents and size limits.
"""

from __future__ import annotations

import copy
import datetime
import io
import json
import logging
import math
import statistics
import struct
import time
from collections.abc import Callable
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from expect_ct import records
from expect_ct.header import DIALECTS
from expect_ct.header import ExpectCT
from expect_ct.header import InvalidExpectCT
from expect_ct.header import parse_expect_ct
from expect_ct.loglist import InvalidLogList
from expect_ct.loglist import LogList
from expect_ct.policy import evaluate
from expect_ct.preload import InvalidPreload
from expect_ct.preload import parse_preload
from expect_ct.sct import InvalidSCTList
from expect_ct.sct import Source
from expect_ct.sct import encode_sct
from expect_ct.sct import encode_sct_list
from expect_ct.sct import ocsp_scts
from expect_ct.sct import parse_sct
from expect_ct.sct import parse_sct_list
from expect_ct.store import canonical_host
from expect_ct.store import host_key
from expect_ct.tls_messages import MalformedHandshakeMessage
from expect_ct.tls_messages import parse_certificate_status
from expect_ct.tls_messages import parse_extensions
from expect_ct.tls_messages import parse_server_hello
from expect_ct.tls_messages import parse_tls13_certificate
from support import pki

UTC = datetime.UTC
STATUSES = ("valid", "invalid", "unknown")
FUZZ = settings(max_examples=150, deadline=None)
FEW = settings(max_examples=40, deadline=None)


def printable_line(text: str) -> bool:
    """One line a terminal shows as it is: no control, format or surrogate characters."""
    return text.isprintable()


# --- shared material -------------------------------------------------------------------------


class Material:
    """Two logs in a log list, a CA, a leaf, and valid SCT data for it from every source."""

    def __init__(self) -> None:
        self.log_a = pki.make_log("Hostile A", "Alpha")
        self.log_b = pki.make_log("Hostile B", "Beta")
        self.root = pki.make_root("Hostile Root")
        self.inter = pki.make_intermediate(self.root, "Hostile CA")
        self.ts = pki.now_ms() - 60_000
        self.leaf, _ = pki.make_leaf(
            self.inter, embedded=[(self.log_a, self.ts), (self.log_b, self.ts + 1)]
        )
        self.other, _ = pki.make_leaf(self.inter)
        self.tls_list = pki.tls_sct_list(self.leaf, [(self.log_a, self.ts), (self.log_b, self.ts)])
        self.ocsp = pki.ocsp_response(self.leaf, self.inter, sct_list=self.tls_list)
        self.log_list_dict = pki.log_list_json(
            [pki.LogEntry(self.log_a), pki.LogEntry(self.log_b)],
            timestamp=datetime.datetime.now(UTC),
        )
        self.log_list = LogList.from_json(self.log_list_dict, source="hostile")


MATERIAL = Material()


# --- certificates with hand-made SCT extensions ---------------------------------------------


# --- the Expect-CT header --------------------------------------------------------------------

# Pieces of header syntax, hostile bytes and encodings: drawn as bytes, decoded as mitmproxy
# (UTF-8 with surrogateescape) or http.server (latin-1) would.
HEADER_PIECES = [
    b"max-age=",
    b"Max-Age",
    b"0",
    b"86400",
    b"99999999999999999999999",
    b"enforce",
    b"report-uri=",
    b'"https://r.test/ct"',
    b"https://r.test/",
    b"[",
    b"]",
    b",",
    b";",
    b"=",
    b'"',
    b"\\",
    b" ",
    b"\t",
    b"\x1b[31m",
    b"\x00",
    b"\r",
    b"\n",
    b"\x7f",
    b"\xff",
    b"\xe9",
    b"\xc3\xa9",
    b"\xe2\x80\xae",  # U+202E RIGHT-TO-LEFT OVERRIDE
    b"\xed\xa0\x80",  # an encoded surrogate: not UTF-8
]
header_bytes = st.lists(st.sampled_from(HEADER_PIECES) | st.binary(max_size=4), max_size=14).map(
    b"".join
)
decodings = st.sampled_from(["latin-1", "surrogateescape"])


def decode(raw: bytes, how: str) -> str:
    if how == "latin-1":
        return raw.decode("latin-1")
    return raw.decode("utf-8", "surrogateescape")


@FUZZ
@given(
    fields=st.lists(header_bytes, min_size=1, max_size=3),
    how=decodings,
    dialect=st.sampled_from(DIALECTS),
)
def test_header_bytes_decoded_like_a_proxy_raise_only_invalid_expect_ct(
    fields: list[bytes], how: str, dialect: str
) -> None:
    values = [decode(raw, how) for raw in fields]
    try:
        result = parse_expect_ct(values, dialect=dialect)
    except InvalidExpectCT as error:
        message = str(error)
        assert message and printable_line(message), message
        return
    assert result.max_age >= 0
    assert not any(c in "\r\n\0" for value in values for c in value)
    for note in result.notes:
        assert printable_line(note), note


def serialize(header: ExpectCT) -> str:
    """An Expect-CT field value asking for ``header``, quoting as RFC 9110 5.6.4 requires."""
    parts = [f"max-age={header.max_age}"]
    if header.enforce:
        parts.append("enforce")
    if header.report_uri is not None:
        escaped = header.report_uri.replace("\\", "\\\\").replace('"', '\\"')
        parts.append(f'report-uri="{escaped}"')
    return ", ".join(parts)


uri_paths = st.text(alphabet="abc-._~!$&'()*+,;=:@/%41", max_size=16).filter(
    lambda p: "%" not in p.replace("%41", "")
)
headers = st.builds(
    ExpectCT,
    max_age=st.integers(0, 2**31),
    enforce=st.booleans(),
    report_uri=st.none() | uri_paths.map(lambda p: f"https://report.test/{p}"),
)


@FUZZ
@given(header=headers, dialect=st.sampled_from(DIALECTS))
def test_serialized_headers_round_trip_to_a_fixed_point(header: ExpectCT, dialect: str) -> None:
    parsed = parse_expect_ct(serialize(header), dialect=dialect)
    expected_max_age = header.max_age if dialect == "rfc9163" else min(header.max_age, 2592000)
    assert parsed == ExpectCT(expected_max_age, header.enforce, header.report_uri)
    assert parse_expect_ct(serialize(parsed), dialect=dialect) == parsed


def median_seconds(run: Callable[[], object], repeat: int = 3) -> float:
    timings = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        timings.append(time.perf_counter() - start)
    return statistics.median(timings)


def unknown_directives(count: int) -> str:
    return ",".join(f"x{i}" for i in range(count)) + ",max-age=1"


@pytest.mark.parametrize("dialect", DIALECTS)
def test_many_unknown_directives_parse_in_linear_time(dialect: str) -> None:
    # Regression: unknown directive names were collected in a list with a membership test
    # each, so 16000 of them (a 100 KB field) cost about two seconds on the proxy's loop.
    big = unknown_directives(16_000)
    assert 100_000 <= len(big) < 110_000
    result = parse_expect_ct(big, dialect=dialect)
    assert result.max_age == 1 and len(result.unknown_directives) == 16_000
    small_cost = median_seconds(lambda: parse_expect_ct(unknown_directives(1_600), dialect=dialect))
    big_cost = median_seconds(lambda: parse_expect_ct(big, dialect=dialect))
    # Linear work gives a ratio near 10, quadratic near 100.
    assert big_cost / max(small_cost, 1e-4) < 35


HUNDRED_KB = 100 * 1024


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("max-age=" + "9" * HUNDRED_KB, True),
        ('max-age=1, x="' + "a" * HUNDRED_KB + '"', True),
        ("max-age=1, " + "\x1b[31m" * (HUNDRED_KB // 5), False),
        ("," * HUNDRED_KB + "max-age=1", True),
        ('max-age=1, x="' + "\\a" * (HUNDRED_KB // 2), False),
    ],
    ids=["digits", "quoted", "ansi", "commas", "unclosed"],
)
def test_hundred_kilobyte_values(value: str, valid: bool, dialect: str) -> None:
    if dialect == "chromium" and value.startswith("max-age=1, \x1b"):
        valid = True  # Chromium ignored unknown elements whatever they held
    try:
        result = parse_expect_ct(value, dialect=dialect)
    except InvalidExpectCT as error:
        assert not valid, error
        assert printable_line(str(error))
    else:
        assert valid
        assert result.max_age in (1, 2**31, 2592000)


@pytest.mark.parametrize("dialect", DIALECTS)
def test_a_thousand_field_values(dialect: str) -> None:
    spread = ["max-age=1"] + [f"x{i}" for i in range(999)]
    assert parse_expect_ct(spread, dialect=dialect).max_age == 1
    with pytest.raises(InvalidExpectCT, match="max-age directive"):
        parse_expect_ct(["max-age=1"] * 1000, dialect=dialect)


def test_chromium_url_problems_are_escaped() -> None:
    # The host part of a report-uri is quoted in the message, whatever it holds.
    with pytest.raises(InvalidExpectCT) as caught:
        parse_expect_ct('max-age=1, report-uri="https://[\x1b[31m]/"', dialect="chromium")
    assert printable_line(str(caught.value)) and "\\x1b" in str(caught.value)


# --- SCT lists -------------------------------------------------------------------------------

sct_fields = st.fixed_dictionaries(
    {
        "version": st.integers(0, 255),
        "log_id": st.binary(min_size=32, max_size=32),
        "timestamp": st.integers(0, 2**64 - 1),
        "extensions": st.binary(max_size=20),
        "hash_algorithm": st.integers(0, 255),
        "signature_algorithm": st.integers(0, 255),
        "signature": st.binary(max_size=40),
    }
)


@FUZZ
@given(data=st.binary(max_size=120) | st.builds(lambda f: encode_sct(**f), sct_fields))
def test_parse_sct_raises_only_invalid_and_keeps_every_byte(data: bytes) -> None:
    try:
        sct = parse_sct(data, Source.OCSP)
    except InvalidSCTList as error:
        assert printable_line(str(error))
        return
    assert sct.serialized == data
    rebuilt = encode_sct(
        version=sct.version,
        log_id=sct.log_id,
        timestamp=sct.timestamp,
        extensions=sct.extensions,
        hash_algorithm=sct.hash_algorithm,
        signature_algorithm=sct.signature_algorithm,
        signature=sct.signature,
    )
    assert rebuilt == data


@st.composite
def mutated(draw: st.DrawFn, original: bytes) -> bytes:
    """``original`` after 1-4 overwrites, insertions, deletions or a truncation."""
    data = bytearray(original)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["overwrite", "insert", "delete", "truncate"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "overwrite" and data:
            data[at] = draw(st.integers(0, 255))
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete" and data:
            del data[at : at + draw(st.integers(1, 8))]
        elif kind == "truncate":
            del data[at:]
    return bytes(data)


@FUZZ
@given(data=st.data(), fields=st.lists(sct_fields, min_size=1, max_size=4))
def test_mutated_sct_lists_raise_only_invalid(data: st.DataObject, fields: list[dict]) -> None:
    original = encode_sct_list([encode_sct(**f) for f in fields])
    assert [s.serialized for s in parse_sct_list(original, Source.TLS_EXTENSION)] == [
        encode_sct(**f) for f in fields
    ]
    hostile = data.draw(mutated(original))
    try:
        scts = parse_sct_list(hostile, Source.TLS_EXTENSION)
    except InvalidSCTList as error:
        assert printable_line(str(error))
        return
    assert encode_sct_list([s.serialized for s in scts]) == hostile


def minimal_sct(index: int, *, signature: bytes = b"") -> bytes:
    return encode_sct(log_id=index.to_bytes(32, "big"), timestamp=index, signature=signature)


def test_a_thousand_scts_and_the_largest_list() -> None:
    thousand = encode_sct_list([minimal_sct(i) for i in range(1000)])
    assert len(parse_sct_list(thousand, Source.TLS_EXTENSION)) == 1000
    # 65535 bytes of list: the most the 2-byte length allows (RFC 6962 section 3.3).
    one_big = encode_sct(log_id=bytes(32), timestamp=1, signature=bytes(65535 - 2 - 47))
    largest = encode_sct_list([one_big])
    assert len(largest) == 2 + 65535
    (sct,) = parse_sct_list(largest, Source.TLS_EXTENSION)
    assert len(sct.signature) == 65535 - 2 - 47
    with pytest.raises(ValueError, match="more than a 2-byte length allows"):
        encode_sct_list([one_big + b"\x00"])
    with pytest.raises(InvalidSCTList, match="length field says 65535 bytes but 65536 follow"):
        parse_sct_list(largest + b"\x00", Source.TLS_EXTENSION)


# --- OCSP staples ----------------------------------------------------------------------------


@FUZZ
@given(data=st.data(), leaf=st.sampled_from(["none", "leaf", "other"]))
def test_mutated_ocsp_responses_raise_only_invalid(data: st.DataObject, leaf: str) -> None:
    hostile = data.draw(mutated(MATERIAL.ocsp))
    cert = {"none": None, "leaf": MATERIAL.leaf, "other": MATERIAL.other}[leaf]
    try:
        scts = ocsp_scts(hostile, cert)
    except InvalidSCTList as error:
        assert printable_line(str(error)) or "not a DER OCSP response" in str(error)
        return
    for sct in scts:
        assert sct.serialized in hostile and sct.source is Source.OCSP


def test_ocsp_for_another_certificate_and_garbage_inside_a_valid_shell() -> None:
    with pytest.raises(InvalidSCTList, match="not the leaf's"):
        ocsp_scts(pki.ocsp_response(MATERIAL.other, MATERIAL.inter), MATERIAL.leaf)
    # The shell s_server can load (status, responseBytes) around random BasicOCSPResponse bytes.
    with pytest.raises(InvalidSCTList, match="not a DER OCSP response"):
        ocsp_scts(pki.ocsp_shell(bytes(range(256)) * 2), MATERIAL.leaf)


# --- log lists -------------------------------------------------------------------------------

json_leaves = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.sampled_from(
        [
            "",
            "AAAA",
            "2026-01-01T00:00:00Z",
            "0001-01-01T00:00:00+01:00",
            "9999-12-31T23:59:59-01:00",
            "usable",
            "retired",
            MATERIAL.log_a.public_b64,
        ]
    )
)
json_values = st.recursive(
    json_leaves,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=10) | st.sampled_from(["operators", "logs"]), children)
    ),
    max_leaves=12,
)


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every path to a value inside a JSON document (keys and indexes)."""
    yield prefix
    if isinstance(value, dict):
        for key, child in value.items():
            yield from paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from paths(child, (*prefix, index))


@st.composite
def mutated_documents(draw: st.DrawFn, original: Any, under: tuple[Any, ...] = ()) -> Any:
    """``original`` with 1-3 values replaced by arbitrary JSON, or keys deleted; only values
    at or below the path ``under`` when it is given."""
    document = copy.deepcopy(original)
    for _ in range(draw(st.integers(1, 3))):
        inside = [path for path in paths(document) if path[: len(under)] == under]
        path = draw(st.sampled_from([path for path in inside if path]))
        parent = document
        for step in path[:-1]:
            parent = parent[step]
        if isinstance(parent, dict) and draw(st.booleans()):
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(json_values)
    return document


def load_log_list(document: Any) -> LogList | None:
    try:
        return LogList.from_json(json.dumps(document), source="hostile.json")
    except InvalidLogList as error:
        assert str(error).startswith("hostile.json: ")
        return None


@FUZZ
@given(document=json_values)
def test_log_list_arbitrary_json_raises_only_invalid_log_list(document: Any) -> None:
    load_log_list(document)
    load_log_list({"operators": [document]})
    load_log_list({"operators": [{"name": "x", "logs": [document]}]})


def two_operator_list(schema: str) -> dict[str, Any]:
    """Log A (operator Alpha, with an operator history) and log B (operator Beta)."""
    return pki.log_list_json(
        [
            pki.LogEntry(
                MATERIAL.log_a, previous_operators=[("Old", datetime.datetime(2020, 1, 1))]
            ),
            pki.LogEntry(MATERIAL.log_b, state="readonly"),
        ],
        schema=schema,
        timestamp=datetime.datetime(2026, 1, 1, tzinfo=UTC),
    )


def assert_sound(parsed: LogList) -> None:
    """What a loaded list promises whatever the input: only logs that were there, typed
    fields, and warnings that are printable lines of bounded length (C11/A11, U4)."""
    assert set(parsed.logs) <= {MATERIAL.log_a.log_id, MATERIAL.log_b.log_id}
    for log in parsed.logs.values():
        assert log.mmd is None or isinstance(log.mmd, int)
        assert isinstance(log.description, str) and isinstance(log.operator, str)
    assert len(parsed.warnings) <= 3
    for warning in parsed.warnings:
        assert printable_line(warning) and len(warning) < 3000


@FUZZ
@given(data=st.data(), schema=st.sampled_from(["google", "apple"]))
def test_mutated_log_lists_raise_only_invalid_log_list(data: st.DataObject, schema: str) -> None:
    original = two_operator_list(schema)
    assert load_log_list(original) is not None
    parsed = load_log_list(data.draw(mutated_documents(original)))
    if parsed is not None:
        assert_sound(parsed)


@FUZZ
@given(data=st.data(), schema=st.sampled_from(["google", "apple"]))
def test_a_mutated_log_entry_never_refuses_the_list(data: st.DataObject, schema: str) -> None:
    # C11 / A11 / U3: whatever happens inside one log entry, the list loads and the other
    # operator's log is there, unchanged.
    original = two_operator_list(schema)
    clean = load_log_list(original)
    assert clean is not None
    mutated = data.draw(mutated_documents(original, under=("operators", 0, "logs", 0)))
    parsed = load_log_list(mutated)
    assert parsed is not None
    assert_sound(parsed)
    assert parsed.get(MATERIAL.log_b.log_id) == clean.get(MATERIAL.log_b.log_id)
    if parsed.get(MATERIAL.log_a.log_id) is None:
        assert parsed.warnings and "operators[0].logs[0]" in parsed.warnings[0]


def entry(**changes: Any) -> dict[str, Any]:
    document = pki.log_list_json([pki.LogEntry(MATERIAL.log_a)])
    document["operators"][0]["logs"][0].update(changes)
    return document


@pytest.mark.parametrize(
    ("document", "message"),
    [
        # Regressions: these escaped as OverflowError, ValueError and RecursionError.
        (json.dumps(entry(mmd=math.inf)), r"mmd: expected a whole number of seconds, got inf"),
        (json.dumps(entry(mmd=math.nan)), r"mmd: expected a whole number of seconds, got nan"),
        ('{"operators": [], "x": 1e999, "log_list_timestamp": "x"}', "not an RFC 3339"),
        (
            json.dumps({"operators": [], "log_list_timestamp": "0001-01-01T00:00:00+01:00"}),
            "log_list_timestamp: date-time out of range",
        ),
        (
            json.dumps(entry(state={"usable": {"timestamp": "9999-12-31T23:59:59-01:00"}})),
            "state.usable.timestamp: date-time out of range",
        ),
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
        (b"\xff\xfe{\x00}\x00", "missing required field 'operators'"),  # UTF-16 is JSON
        ("", "not valid JSON"),
    ],
    ids=["mmd-inf", "mmd-nan", "1e999", "year-0", "year-10000", "deep", "utf16", "empty"],
)
def test_log_list_edge_documents(document: str | bytes, message: str) -> None:
    with pytest.raises(InvalidLogList, match=message):
        LogList.from_json(document, source="edge")


def test_whole_float_mmd_is_still_accepted() -> None:
    log = next(iter(LogList.from_json(json.dumps(entry(mmd=86400.0)), source="x").logs.values()))
    assert log.mmd == 86400 and isinstance(log.mmd, int)


@FUZZ
@given(data=st.binary(max_size=200))
def test_log_list_arbitrary_bytes_raise_only_invalid_log_list(data: bytes) -> None:
    try:
        LogList.from_json(data, source="bytes")
    except InvalidLogList:
        pass


# --- host names (IDNA 2008 / UTS #46) ----------------------------------------------------------

host_text = st.lists(
    st.sampled_from(["a", "B", "ß", "ü", "σ", "ς", "-", "_", ".", "\u3002", "xn--", "\u200d"])
    | st.text(max_size=4),
    max_size=8,
).map("".join)


@FUZZ
@given(host=host_text)
def test_canonical_host_returns_a_stable_ascii_key_or_raises_value_error(host: str) -> None:
    try:
        key = canonical_host(host)
    except ValueError as error:
        # One line that names the input, whatever it holds.
        assert repr(host) in str(error) and "\n" not in str(error)
        assert host_key(host) == host.lower()
        return
    assert key.isascii() and key == key.lower() and key
    assert canonical_host(key) == key  # a key is its own key
    assert host_key(host) == key


# --- preload files ---------------------------------------------------------------------------

preload_entries = st.dictionaries(
    st.sampled_from(["host", "enforce", "report_uri", "expires"]) | st.text(max_size=6),
    json_values,
    max_size=5,
) | st.fixed_dictionaries(
    {
        "host": st.text(max_size=10),
        "enforce": st.booleans(),
        "expires": st.sampled_from(
            ["2030-01-01T00:00:00Z", "0001-01-01T00:00:00+01:00", "2030-01-01", "x"]
        ),
    }
)


@FUZZ
@given(document=st.lists(preload_entries, max_size=3) | json_values)
def test_preload_arbitrary_json_raises_only_invalid_preload(document: Any) -> None:
    try:
        parsed = parse_preload(json.dumps(document))
    except InvalidPreload as error:
        assert str(error).startswith("preload")
        return
    assert isinstance(document, list) and len(parsed) == len(document)
    for item in parsed:
        assert item.host and item.expires.tzinfo is not None


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (
            '[{"host": "a.test", "enforce": true, "expires": "0001-01-01T00:00:00+01:00"}]',
            "out of range",
        ),
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ],
    ids=["year-0", "deep"],
)
def test_preload_edge_documents(document: str, message: str) -> None:
    # Regressions: these escaped as OverflowError and RecursionError.
    with pytest.raises(InvalidPreload, match=message):
        parse_preload(document)


# --- TLS handshake messages ------------------------------------------------------------------

extension_maps = st.dictionaries(st.integers(0, 0xFFFF), st.binary(max_size=30), max_size=5)


def encode_extensions(extensions: dict[int, bytes]) -> bytes:
    return b"".join(struct.pack(">H", t) + pki.u16(d) for t, d in extensions.items())


def server_hello(version: int, session_id: bytes, extensions: dict[int, bytes] | None) -> bytes:
    body = struct.pack(">H", version) + bytes(32) + bytes([len(session_id)]) + session_id
    body += b"\x13\x01\x00"
    if extensions is not None:
        body += pki.u16(encode_extensions(extensions))
    return body


def tls13_certificate(entries: list[tuple[bytes, dict[int, bytes]]]) -> bytes:
    listing = b"".join(pki.u24(cert) + pki.u16(encode_extensions(ext)) for cert, ext in entries)
    return b"\x00" + pki.u24(listing)


@FUZZ
@given(
    version=st.integers(0, 0xFFFF),
    session_id=st.binary(max_size=32),
    extensions=st.none() | extension_maps,
    data=st.data(),
)
def test_server_hellos_round_trip_and_mutations_raise_only_malformed(
    version: int, session_id: bytes, extensions: dict[int, bytes] | None, data: st.DataObject
) -> None:
    body = server_hello(version, session_id, extensions)
    hello = parse_server_hello(body)
    assert hello.legacy_version == version and dict(hello.extensions) == (extensions or {})
    try:
        parse_server_hello(data.draw(mutated(body)))
    except MalformedHandshakeMessage as error:
        assert printable_line(str(error))


@FUZZ
@given(
    entries=st.lists(st.tuples(st.binary(min_size=1, max_size=40), extension_maps), max_size=4),
    data=st.data(),
)
def test_tls13_certificates_round_trip_and_mutations_raise_only_malformed(
    entries: list[tuple[bytes, dict[int, bytes]]], data: st.DataObject
) -> None:
    body = tls13_certificate(entries)
    parsed = parse_tls13_certificate(body)
    assert [(e.cert_data, dict(e.extensions)) for e in parsed] == entries
    try:
        parse_tls13_certificate(data.draw(mutated(body)))
    except MalformedHandshakeMessage as error:
        assert printable_line(str(error))


@FUZZ
@given(response=st.binary(min_size=1, max_size=60), data=st.data())
def test_certificate_status_round_trips_and_mutations_raise_only_malformed(
    response: bytes, data: st.DataObject
) -> None:
    message = b"\x01" + pki.u24(response)
    assert parse_certificate_status(message) == response
    try:
        parse_certificate_status(data.draw(mutated(message)))
    except MalformedHandshakeMessage as error:
        assert printable_line(str(error))


@FEW
@given(extensions=extension_maps.filter(bool), data=st.data())
def test_a_repeated_extension_is_malformed(
    extensions: dict[int, bytes], data: st.DataObject
) -> None:
    repeated = data.draw(st.sampled_from(sorted(extensions)))
    encoded = encode_extensions(extensions) + struct.pack(">H", repeated) + pki.u16(b"")
    with pytest.raises(MalformedHandshakeMessage, match=f"extension {repeated} appears twice"):
        parse_extensions(encoded, "hostile")


# --- policy evaluation on hostile certificates and SCT lists ---------------------------------


def assert_explicit(verdict: Any) -> None:
    """Every SCT has a known status, every non-valid one a reason; failures are explained."""
    assert isinstance(verdict.compliant, bool)
    assert verdict.compliant or verdict.reasons
    for check in verdict.scts:
        assert check.status in STATUSES
        assert check.status == "valid" or check.reason
        assert check.why


@FEW
@given(
    values=st.lists(
        st.binary(max_size=60) | st.sampled_from([b"", b"\x04\x00", b"\x04\x02\x00\x00"]),
        min_size=1,
        max_size=3,
    )
)
def test_malformed_or_repeated_sct_extensions_become_reasons(values: list[bytes]) -> None:
    leaf, _ = pki.with_sct_extensions(MATERIAL.inter, values)
    verdict = evaluate([leaf, MATERIAL.inter.cert], log_list=MATERIAL.log_list)
    assert_explicit(verdict)
    assert not verdict.compliant
    if len(values) > 1:
        assert f"certificate has {len(values)} SCT list extensions" in " ".join(verdict.reasons)


def test_repeated_valid_sct_extension_is_refused_not_counted_twice() -> None:
    ((_, valid_value),) = [
        (e.oid, e.value.public_bytes())
        for e in MATERIAL.leaf.extensions
        if e.oid == pki.OID_SCT_EMBEDDED
    ]
    leaf, _ = pki.with_sct_extensions(MATERIAL.inter, [valid_value] * 2)
    verdict = evaluate([leaf, MATERIAL.inter.cert], log_list=MATERIAL.log_list)
    assert not verdict.compliant and verdict.scts == []
    assert any("2 SCT list extensions" in r for r in verdict.reasons)


sct_for_the_leaf = st.fixed_dictionaries(
    {
        "version": st.sampled_from([0, 0, 1, 2, 255]),
        "log_id": st.sampled_from([MATERIAL.log_a.log_id, MATERIAL.log_b.log_id])
        | st.binary(min_size=32, max_size=32),
        "timestamp": st.sampled_from([0, MATERIAL.ts, 2**63, 2**64 - 1]),
        "extensions": st.sampled_from([b"", b"\x00"]),
        "hash_algorithm": st.sampled_from([4, 4, 0, 2, 255]),
        "signature_algorithm": st.sampled_from([3, 3, 1, 0, 7, 255]),
        "signature": st.sampled_from([b"", b"\x30\x00", b"\x00" * 72]) | st.binary(max_size=72),
    }
)


@FUZZ
@given(fields=st.lists(sct_for_the_leaf, min_size=1, max_size=6), channel=st.booleans())
def test_scts_with_unknown_versions_algorithms_or_empty_signatures(
    fields: list[dict[str, Any]], channel: bool
) -> None:
    listing = encode_sct_list([encode_sct(**f) for f in fields])
    if channel:
        verdict = evaluate([MATERIAL.leaf], tls_scts=listing, log_list=MATERIAL.log_list)
    else:
        staple = pki.ocsp_response(MATERIAL.leaf, MATERIAL.inter, sct_list=listing)
        verdict = evaluate([MATERIAL.leaf], ocsp_response=staple, log_list=MATERIAL.log_list)
    assert_explicit(verdict)
    delivered = [c for c in verdict.scts if c.source is not Source.EMBEDDED]
    assert len(delivered) == len(fields)
    for check, f in zip(delivered, fields, strict=True):
        # None of them is signed by the log: only the embedded pair can be valid.
        assert check.status != "valid"
        if f["version"] != 0:
            assert check.reason == f"unsupported SCT version {f['version'] + 1}"
        elif check.status == "invalid" and not f["signature"]:
            assert check.reason


def sct_list_of(count: int) -> bytes:
    """``count`` SCTs: every tenth a valid one repeated, then forged ones from a known log and
    SCTs from unknown logs in turn."""
    (valid,) = [s.serialized for s in parse_sct_list(MATERIAL.tls_list, Source.TLS_EXTENSION)][:1]
    forged = encode_sct(log_id=MATERIAL.log_b.log_id, timestamp=MATERIAL.ts, signature=b"\x30\x00")
    serialized = []
    for index in range(count):
        if index % 10 == 0:
            serialized.append(valid)
        else:
            serialized.append(forged if index % 2 else minimal_sct(index))
    return encode_sct_list(serialized)


def test_a_thousand_scts_get_explicit_statuses_in_linear_time() -> None:
    hundred, thousand = sct_list_of(100), sct_list_of(1000)
    assert len(thousand) < 65_536

    def run(listing: bytes) -> Any:
        return evaluate([MATERIAL.leaf], tls_scts=listing, log_list=MATERIAL.log_list)

    verdict = run(thousand)
    assert_explicit(verdict)
    statuses = [c.status for c in verdict.scts if c.source is Source.TLS_EXTENSION]
    assert (statuses.count("valid"), statuses.count("invalid"), statuses.count("unknown")) == (
        100,
        500,
        400,
    )
    assert not verdict.compliant  # one log's SCT, however often repeated, is one log
    assert sum(c.counted for c in verdict.scts if c.source is Source.TLS_EXTENSION) <= 1
    ratio = median_seconds(lambda: run(thousand)) / max(median_seconds(lambda: run(hundred)), 1e-4)
    assert ratio < 35  # linear: about 10


def test_sixty_four_kilobytes_of_embedded_scts() -> None:
    listing = encode_sct_list([minimal_sct(i, signature=bytes(1300)) for i in range(48)])
    assert 60_000 < len(listing) <= 65_537
    leaf, _ = pki.with_sct_extensions(MATERIAL.inter, [pki.der_octet_string(listing)])
    verdict = evaluate([leaf, MATERIAL.inter.cert], log_list=MATERIAL.log_list)
    assert_explicit(verdict)
    assert [c.status for c in verdict.scts] == ["unknown"] * 48


# --- what reaches log lines, comments and flow files -----------------------------------------


@FUZZ
@given(
    text=st.text(max_size=60)
    | st.lists(st.sampled_from(["\\", "x1b", "\x1b", "\u202e", "a"])).map("".join),
    limit=st.integers(10, 400),
)
def test_one_line_escapes_unambiguously(text: str, limit: int) -> None:
    shown = records.one_line(text, limit)
    assert printable_line(shown) and len(shown) <= limit
    if len(shown) < limit:
        # Python's own escape syntax, backslashes included, so the original can be read back
        # exactly and a server cannot send text that looks like one of our escapes.
        unescaped = shown.encode("latin-1", "backslashreplace").decode("unicode_escape")
        assert unescaped == text
    if text.isprintable() and "\\" not in text and len(text) <= limit:
        assert shown == text


@FUZZ
@given(raw=st.binary(max_size=40) | header_bytes)
def test_field_text_is_always_encodable(raw: bytes) -> None:
    value = raw.decode("utf-8", "surrogateescape")
    text = records.field_text(value)
    text.encode("utf-8")  # strict: no lone surrogates left
    if value.isascii() or not any("\udc80" <= c <= "\udcff" for c in value):
        assert text == value
    else:
        assert "\\x" in text


def test_certificate_with_an_undecodable_subject_is_still_recorded() -> None:
    # Regression: cryptography raises on reading such a name; the connection record failed
    # and the connection went unlogged (and, during the handshake, undecided).
    leaf, _ = pki.make_leaf(MATERIAL.inter, hosts=("zzzzzz.test",))
    tbs = leaf.tbs_certificate_bytes
    needle = b"\x0c\x0bzzzzzz.test"  # the commonName UTF8String
    broken = pki.resign(leaf, MATERIAL.inter, tbs.replace(needle, b"\x0c\x0b\xff\xfe\x1b[31mzzzz"))
    with pytest.raises(ValueError):
        broken.subject.rfc4514_string()
    facts = records.certificate_facts(broken)
    assert facts["subject"].startswith("(unreadable subject: ")
    assert facts["issuer"] == MATERIAL.inter.cert.subject.rfc4514_string()
    verdict = evaluate([broken, MATERIAL.inter.cert], log_list=MATERIAL.log_list)
    assert_explicit(verdict)


HOSTILE_VALUES = [
    'max-age=1, x="\x1b[31mRED\x1b[0m"',
    "max-age=1\r\nX-Forged: yes",
    "max-age=1\x00",
    "max-age=1, \udcff\udcfe",
    'max-age=1, x="\u202eevil"',
    "\x1b]0;title\x07max-age=1",
    "max-age=" + "9" * 5000,
]


@pytest.fixture(scope="module")
def addon_context(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from mitmproxy.net import tls as net_tls
    from mitmproxy.test import taddons

    from expect_ct.addon import ExpectCT

    base = tmp_path_factory.mktemp("hostile-addon")
    (base / "roots.pem").write_bytes(pki.pem(MATERIAL.root.cert))
    (base / "log_list.json").write_text(json.dumps(MATERIAL.log_list_dict))
    original = net_tls.create_proxy_server_context
    addon = ExpectCT()
    with taddons.context(addon) as tctx:
        tctx.configure(
            addon,
            confdir=str(base / "confdir"),
            expect_ct_public_roots=str(base / "roots.pem"),
            expect_ct_log_list=str(base / "log_list.json"),
            expect_ct_store=":memory:",
            expect_ct_log=str(base / "events.jsonl"),
        )
        try:
            yield addon, base / "events.jsonl"
        finally:
            addon.done()
    assert net_tls.create_proxy_server_context is original


def respond(addon: Any, values: list[str], caplog: pytest.LogCaptureFixture) -> Any:
    from mitmproxy.test import tflow

    flow = tflow.tflow(resp=True)
    flow.request.scheme = "https"
    assert flow.response is not None
    for value in values:
        flow.response.headers.add("Expect-CT", value)
    caplog.clear()
    addon.response(flow)
    return flow


def assert_safe_output(flow: Any, caplog: pytest.LogCaptureFixture) -> None:
    from mitmproxy import io as mio

    header = flow.metadata["expect_ct"]["header"]
    assert flow.comment and printable_line(flow.comment)
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("expect_ct")]
    assert any("header" in m for m in messages)
    for message in messages:
        assert printable_line(message), message
    # Regression: undecodable bytes in the metadata made mitmproxy unable to save the flow.
    writer = io.BytesIO()
    mio.FlowWriter(writer).add(flow)
    (loaded,) = list(mio.FlowReader(io.BytesIO(writer.getvalue())).stream())
    assert loaded.metadata["expect_ct"]["header"]["values"] == header["values"]
    assert header["error"] is None or printable_line(header["error"])


@pytest.mark.parametrize("value", HOSTILE_VALUES, ids=range(len(HOSTILE_VALUES)))
def test_addon_log_line_comment_and_flow_file_stay_safe(
    addon_context: Any, value: str, caplog: pytest.LogCaptureFixture
) -> None:
    addon, events = addon_context
    caplog.set_level(logging.INFO)
    flow = respond(addon, [value], caplog)
    assert_safe_output(flow, caplog)
    last = events.read_text().splitlines()[-1]
    assert json.loads(last)["event"] == "header" and last.isascii()
    if "\x1b" in value:
        assert any("\\x1b" in r.getMessage() for r in caplog.records)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(fields=st.lists(header_bytes, min_size=1, max_size=3))
def test_addon_output_is_safe_for_arbitrary_header_bytes(
    addon_context: Any, fields: list[bytes], caplog: pytest.LogCaptureFixture
) -> None:
    addon, _ = addon_context
    caplog.set_level(logging.INFO)
    values = [decode(raw, "surrogateescape") for raw in fields]
    assert_safe_output(respond(addon, values, caplog), caplog)
