from __future__ import annotations

import datetime
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from expect_ct.preload import InvalidPreload
from expect_ct.preload import PreloadEntry
from expect_ct.preload import load_preload
from expect_ct.preload import parse_preload

UTC = datetime.UTC


def test_valid_file_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "preload.json"
    path.write_text(
        json.dumps(
            [
                {"host": "a.example", "enforce": True, "expires": "2027-01-01T00:00:00Z"},
                {
                    "host": "b.example",
                    "report_uri": "https://r.example/ct",
                    "expires": "2027-01-01T01:00:00+01:00",
                },
            ]
        )
    )
    assert list(load_preload(path)) == [
        PreloadEntry("a.example", True, None, datetime.datetime(2027, 1, 1, tzinfo=UTC)),
        PreloadEntry(
            "b.example", False, "https://r.example/ct", datetime.datetime(2027, 1, 1, tzinfo=UTC)
        ),
    ]


def test_hosts_are_read_as_store_keys() -> None:
    entries = parse_preload(
        json.dumps(
            [
                {"host": "Faß.Example.", "enforce": True, "expires": "2027-01-01T00:00:00Z"},
                {
                    "host": " XN--BCHER-KVA.example ",
                    "enforce": True,
                    "expires": "2027-01-01T00:00:00Z",
                },
            ]
        )
    )
    # IDNA 2008 / UTS #46 (IDNA 2003 would give fass.example, a name no client sends).
    assert [e.host for e in entries] == ["xn--fa-hia.example", "xn--bcher-kva.example"]


@pytest.mark.parametrize(
    "document, message",
    [
        (
            '[{"host": "\u2603.net", "enforce": true, "expires": "2027-01-01T00:00:00Z"}]',
            "entry 0: invalid host '\u2603.net': label '\u2603' fails IDNA 2008",
        ),
        ('[{"host": "a..b", "enforce": true, "expires": "2027-01-01T00:00:00Z"}]', "empty label"),
        ('[{"host": "a.b:443", "enforce": true, "expires": "2027-01-01T00:00:00Z"}]', "port"),
    ],
)
def test_hosts_that_cannot_be_keys_are_refused(document: str, message: str) -> None:
    with pytest.raises(InvalidPreload) as excinfo:
        parse_preload(document)
    assert message in str(excinfo.value)


@pytest.mark.parametrize(
    "document, message",
    [
        ("{", "not JSON"),
        ('{"host": "a"}', "must be a list"),
        ("[1]", "entry 0: an entry must be an object"),
        ('[{"enforce": true, "expires": "2027-01-01T00:00:00Z"}]', "host must be"),
        ('[{"host": "", "enforce": true, "expires": "2027-01-01T00:00:00Z"}]', "host must be"),
        ('[{"host": "a", "enforce": "yes", "expires": "2027-01-01T00:00:00Z"}]', "enforce must be"),
        ('[{"host": "a", "enforce": true}]', "expires is required"),
        ('[{"host": "a", "enforce": true, "expires": "tomorrow"}]', "not an RFC 3339"),
        ('[{"host": "a", "enforce": true, "expires": "2027-01-01T00:00:00"}]', "no time zone"),
        ('[{"host": "a", "enforce": true, "expires": 1}]', "must be an RFC 3339 string"),
        ('[{"host": "a", "expires": "2027-01-01T00:00:00Z"}]', "neither enforce nor a report_uri"),
        (
            '[{"host": "a", "report_uri": "http://r/", "expires": "2027-01-01T00:00:00Z"}]',
            "https URI",
        ),
        (
            '[{"host": "a", "enforce": true, "expires": "2027-01-01T00:00:00Z", "x": 1}]',
            "unknown key",
        ),
    ],
)
def test_invalid_documents_say_what_is_wrong(document: str, message: str) -> None:
    with pytest.raises(InvalidPreload, match=message):
        parse_preload(document, source="p.json")


def test_error_names_the_file_and_entry() -> None:
    with pytest.raises(InvalidPreload, match=r"p\.json, entry 1"):
        parse_preload(
            '[{"host": "a", "enforce": true, "expires": "2027-01-01T00:00:00Z"}, {}]',
            source="p.json",
        )


@given(st.binary(max_size=200))
def test_arbitrary_bytes_raise_only_invalid_preload(data: bytes) -> None:
    try:
        parse_preload(data)
    except InvalidPreload:
        pass
