"""Tests for expect_ct.header: the Expect-CT parser in its rfc9163 and chromium dialects.

The main table puts both dialects side by side, one row per header. Its sources:
- every example of RFC 9163 section 2.1.4;
- Chromium's BogusExpectCTHeaders / ValidExpectCTHeaders unit tests
  (net/http/http_security_headers_unittest.cc), reconstructed from the description of the
  parser and its tests, plus the headers used by its transport_security_state tests;
- the grammar edges of RFC 9110 section 5.6 (tokens, quoted-strings, OWS, empty elements) and
  RFC 3986 section 4.3 (absolute-URI) that make the two dialects disagree.
"""

from __future__ import annotations

import dataclasses
import string
from collections.abc import Sequence

import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from expect_ct.header import CHROMIUM_MAX_AGE
from expect_ct.header import DIALECTS
from expect_ct.header import MAX_AGE_CLAMP
from expect_ct.header import ExpectCT
from expect_ct.header import InvalidExpectCT
from expect_ct.header import parse_expect_ct


@dataclasses.dataclass(frozen=True)
class Err:
    """The header is invalid and the error message contains ``fragment``."""

    fragment: str


Expected = ExpectCT | Err
Header = str | tuple[str, ...]


def ok(max_age: int, enforce: bool = False, report_uri: str | None = None) -> ExpectCT:
    return ExpectCT(max_age=max_age, enforce=enforce, report_uri=report_uri)


def same(expected: Expected) -> tuple[Expected, Expected]:
    return expected, expected


REQUIRED = Err("max-age directive is required")
FOO = "https://foo.test"
EXAMPLE_REPORT = "https://foo.example/report"
HUGE = "9" * 5000  # past Python's 4300-digit int() limit

# (header, rfc9163 result, chromium result)
CASES: list[tuple[Header, Expected, Expected]] = [
    # --- RFC 9163 section 2.1.4 examples (all valid) ---
    ("max-age=86400, enforce", *same(ok(86400, True))),
    (
        ("max-age=86400,enforce", f'report-uri="{EXAMPLE_REPORT}"'),
        *same(ok(86400, True, EXAMPLE_REPORT)),
    ),
    (f'max-age=86400,report-uri="{EXAMPLE_REPORT}"', *same(ok(86400, False, EXAMPLE_REPORT))),
    # --- Chromium ValidExpectCTHeaders (reconstructed) ---
    ("max-age=243", *same(ok(243))),
    ("  Max-agE    = 567", Err("Max-agE directive: whitespace is not allowed before '='"), ok(567)),
    ("  mAx-aGe    = 890      ", Err("mAx-aGe directive"), ok(890)),
    ("max-age=123,enFoRce", *same(ok(123, True))),
    ("enFoRCE, max-age=123", *same(ok(123, True))),
    ("   enFORce, max-age=123", *same(ok(123, True))),
    (f'report-uri="{FOO}",   enFORce, max-age=123', *same(ok(123, True, FOO))),
    (f'enforce,report-uri="{FOO}",max-age=123', *same(ok(123, True, FOO))),
    (
        f"enforce,report-uri={FOO},max-age=123",
        Err("report-uri directive: unexpected ':'"),
        ok(123, True, FOO),
    ),
    (f'report-uri="{FOO}",max-age=123', *same(ok(123, False, FOO))),
    (f'   report-uri="{FOO}",max-age=123   ', *same(ok(123, False, FOO))),
    (f'report-uri="{FOO}"   ,  max-age=123   ', *same(ok(123, False, FOO))),
    (f'max-age=123,enforce,report-uri="{FOO}"', *same(ok(123, True, FOO))),
    (f'max-age=123,report-uri="{FOO}" , enforce', *same(ok(123, True, FOO))),
    (f"max-age={CHROMIUM_MAX_AGE + 1}", ok(CHROMIUM_MAX_AGE + 1), ok(CHROMIUM_MAX_AGE)),
    ("max-age=999999999999999999999999999999999", ok(MAX_AGE_CLAMP), ok(CHROMIUM_MAX_AGE)),
    (f'max-age=123,enforce,report-uri="{FOO}",pumpkin=kitten', *same(ok(123, True, FOO))),
    (f'pumpkin=894,report-uri="{FOO}",enforce,max-age=123', *same(ok(123, True, FOO))),
    (
        f'pumpkin=894,report-uri="{FOO}",enforce,max-age=123,pumpkin=kitten',
        Err("pumpkin directive: appears more than once"),
        ok(123, True, FOO),
    ),
    (
        f'max-age=123, enforce, report-uri="{FOO}", animal="squirrel, distinguished"',
        *same(ok(123, True, FOO)),
    ),
    ("max-age=123, pumpkin, enforce", *same(ok(123, True))),
    (",, max-age=123 ,,", *same(ok(123))),
    ("max-age=0", *same(ok(0))),
    ('max-age="123"', *same(ok(123))),
    # transport_security_state_unittest.cc headers (DynamicExpectCT, CompliantConnection,
    # BuildNotTimely, and the expect-ct-header-multiple mock with three fields)
    (
        'max-age=123,enforce,report-uri="http://foo.test"',
        ok(123, True),
        ok(123, True, "http://foo.test"),
    ),
    ('max-age=123,report-uri="http://foo.test"', ok(123), ok(123, False, "http://foo.test")),
    (
        "max-age=10, report-uri=http://report.test",
        Err("report-uri directive"),
        ok(10, False, "http://report.test"),
    ),
    (
        ("max-age=100", "enforce", "report-uri=https://example.test"),
        Err("report-uri directive (field value 3): unexpected ':'"),
        ok(100, True, "https://example.test"),
    ),
    ("", *same(REQUIRED)),  # InvalidExpectCTHeader
    ("blah blah", Err("blah directive: unexpected 'b' after whitespace"), REQUIRED),
    ("preload", *same(REQUIRED)),  # Chromium special-cased this before parsing
    # --- Chromium BogusExpectCTHeaders (reconstructed) ---
    ("    ", *same(REQUIRED)),
    ("abc", *same(REQUIRED)),
    ("  abc", *same(REQUIRED)),
    ("  abc   ", *same(REQUIRED)),
    ("max-age", *same(Err("max-age directive: a value is required"))),
    ("  max-age", *same(Err("max-age directive: a value is required"))),
    ("  max-age  ", *same(Err("max-age directive: a value is required"))),
    (
        "max-age=",
        Err("max-age directive: '=' must be followed by a value"),
        Err("max-age directive: '=' is followed by an empty value"),
    ),
    ("   max-age=", Err("max-age directive: '='"), Err("max-age directive: '='")),
    (
        "   max-age  =",
        Err("max-age directive: whitespace is not allowed before '='"),
        Err("max-age directive: '='"),
    ),
    (
        "   max-age=   ",
        Err("max-age directive: whitespace is not allowed after '='"),
        Err("max-age directive: '='"),
    ),
    ("   max-age  =     ", Err("max-age directive"), Err("max-age directive: '='")),
    ("   max-age  =     xy", *same(Err("max-age directive"))),
    ("   max-age  =     3488a923", *same(Err("max-age directive"))),
    ("max-age=3488a923  ", *same(Err("max-age directive: value '3488a923'"))),
    ("max-ag=3488923", *same(REQUIRED)),
    ("max-aged=3488923", *same(REQUIRED)),
    (
        "max-age==3488923",
        Err("max-age directive: a value cannot start with '='"),
        Err("max-age directive: value '=3488923'"),
    ),
    ("amax-age=3488923", *same(REQUIRED)),
    ("max-age=-3488923", *same(Err("max-age directive: value '-3488923'"))),
    ("max-age=+3488923", *same(Err("max-age directive: value '+3488923'"))),
    ("max-age=13####", *same(Err("max-age directive: value '13####'"))),
    ("max-age=9223372036854775807#####", *same(Err("max-age directive: value"))),
    ("max-age=18446744073709551615####", *same(Err("max-age directive: value"))),
    ("max-age=999999999999999999999999$.&#!", *same(Err("max-age directive: value"))),
    (
        "max-age=3488923     e",
        Err("max-age directive: unexpected 'e' after whitespace"),
        Err("max-age directive: value '3488923     e'"),
    ),
    ("max-age=3488923     includesubdomain", *same(Err("max-age directive"))),
    (
        "max-age=3488923includesubdomains",
        *same(Err("max-age directive: value '3488923includesubdomains'")),
    ),
    (
        "max-age=3488923=includesubdomains",
        Err("max-age directive: '=' is not allowed in a token value"),
        Err("max-age directive: value"),
    ),
    ("max-age=3488923 includesubdomainx", *same(Err("max-age directive"))),
    ("max-age=3488923 includesubdomain=", *same(Err("max-age directive"))),
    ("max-age=3488923 includesubdomain=true", *same(Err("max-age directive"))),
    ("max-age=3488923 includesubdomainsx", *same(Err("max-age directive"))),
    ("max-age=3488923 includesubdomains x", *same(Err("max-age directive"))),
    ("max-age=34889.23 includesubdomains", *same(Err("max-age directive"))),
    ("max-age=34889 includesubdomains", *same(Err("max-age directive"))),
    ("enforce", *same(REQUIRED)),
    (f'enforce, report-uri="{FOO}"', *same(REQUIRED)),
    ("max-age=123, max-age=123", *same(Err("max-age directive: appears more than once"))),
    ("max-age=123, enforce, enforce", *same(Err("enforce directive: appears more than once"))),
    (
        f'max-age=123, report-uri="{FOO}/a", report-uri="{FOO}/b"',
        *same(Err("report-uri directive: appears more than once")),
    ),
    ("max-age=123, enforce=true", *same(Err("enforce directive: must not have a value"))),
    ('max-age=123, enforce="true"', *same(Err("enforce directive: must not have a value"))),
    (
        'max-age=123, report-uri="foo;bar"',
        Err("report-uri directive: 'foo;bar' is not an absolute URI"),
        Err("report-uri directive: 'foo;bar' is not a valid URL"),
    ),
    (
        'max-age=123, report-uri=""',
        Err("report-uri directive: '' is not an absolute URI"),
        Err("report-uri directive: '' is not a valid URL"),
    ),
    (
        "max-age=123, report-uri=",
        Err("report-uri directive: '=' must be followed by a value"),
        Err("report-uri directive: '=' is followed by an empty value"),
    ),
    ("max-age=123, report-uri", *same(Err("report-uri directive"))),
    (
        "max-age=123, report-uri=\"http://foo;bar'",
        Err("report-uri directive: quoted-string is not closed"),
        Err("report-uri directive: malformed quoted value"),
    ),
    (
        'max-age="999',
        Err("max-age directive: quoted-string is not closed"),
        Err("max-age directive: malformed quoted value"),
    ),
    (
        f'max-age=123;enforce;report-uri="{FOO}"',
        Err("max-age directive: unexpected ';'"),
        Err("max-age directive: value '123;enforce;"),
    ),  # draft-00 style
    ("max-age=123; enforce", Err("draft-00"), Err("max-age directive: value '123; enforce'")),
    # --- RFC grammar edges: OWS, '=', empty elements, case ---
    ("max-age=1 , enforce", *same(ok(1, True))),
    ("max-age=1\t,\tenforce", *same(ok(1, True))),
    ("\tmax-age=1\t", *same(ok(1))),
    ("max-age= 1", Err("max-age directive: whitespace is not allowed after '='"), ok(1)),
    ("max-age =1", Err("max-age directive: whitespace is not allowed before '='"), ok(1)),
    ("max-age\t=\t1", Err("max-age directive: whitespace"), ok(1)),
    ("max-age=1,,,,enforce", *same(ok(1, True))),
    (",max-age=1,", *same(ok(1))),
    (" , , ", *same(REQUIRED)),
    (
        "max-age=1 enforce",
        Err("max-age directive: unexpected 'e' after whitespace"),
        Err("max-age directive: value '1 enforce'"),
    ),
    (f'Max-Age=1, ENFORCE, REPORT-URI="{FOO}"', *same(ok(1, True, FOO))),
    ("MAX-AGE=1, max-age=1", *same(Err("directive: appears more than once"))),
    (
        "max-age=1,enforce;",
        Err("enforce directive: unexpected ';'"),
        ok(1),
    ),  # "enforce;" is an unknown name to Chromium
    ("max-age=1, enforce x", Err("enforce directive: unexpected 'x'"), ok(1)),
    (
        "max-age=1\x0b",
        Err("max-age directive: U+000B is not allowed in a token value"),
        Err("max-age directive: value"),
    ),
    (
        "max-age=1, =",
        Err("expected a directive name (a token) at offset 11, found '='"),
        Err("has '=' but no directive name"),
    ),
    (
        "=123, max-age=1",
        Err("expected a directive name (a token) at offset 0"),
        Err("element '=123' has '=' but no directive name"),
    ),
    (
        '"max-age"=1',
        Err("expected a directive name (a token) at offset 0, found '\"'"),
        Err("a quote before '=' is not allowed"),
    ),
    ('max-age=1, "foo"=1', Err("found '\"'"), Err('"foo" directive: a quote before')),
    # --- max-age values ---
    ("max-age=1.0", *same(Err("max-age directive: value '1.0'"))),
    ("max-age=0001", *same(ok(1))),
    ('max-age=""', *same(Err("max-age directive: value ''"))),
    ('max-age=" 1"', *same(Err("max-age directive: value ' 1'"))),
    ('max-age="\\1"', *same(ok(1))),  # a quoted-pair, unescaped before the 1*DIGIT check
    ('max-age="1", enforce', *same(ok(1, True))),
    (
        'max-age="123"x',
        Err("max-age directive: unexpected 'x' after the closing quote"),
        Err("max-age directive: malformed quoted value"),
    ),
    (
        'max-age="12"3"',
        Err("max-age directive: unexpected '3' after the closing quote"),
        Err("max-age directive: malformed quoted value"),
    ),
    (
        'max-age="123\\"',
        Err("max-age directive: quoted-string is not closed"),
        Err("max-age directive: malformed quoted value"),
    ),
    (
        "max-age=\uff11",
        Err("max-age directive: a value cannot start with"),
        Err("max-age directive: value"),
    ),  # FULLWIDTH DIGIT ONE
    (
        "max-age=\u0661",
        Err("max-age directive"),
        Err("max-age directive: value"),
    ),  # ARABIC-INDIC DIGIT ONE
    ("max-age=2592000", *same(ok(2592000))),
    ("max-age=2147483647", ok(2147483647), ok(CHROMIUM_MAX_AGE)),
    ("max-age=2147483648", ok(MAX_AGE_CLAMP), ok(CHROMIUM_MAX_AGE)),
    ("max-age=2147483649", ok(MAX_AGE_CLAMP), ok(CHROMIUM_MAX_AGE)),
    ("max-age=4294967295", ok(MAX_AGE_CLAMP), ok(CHROMIUM_MAX_AGE)),  # uint32 max
    ("max-age=4294967296", ok(MAX_AGE_CLAMP), ok(CHROMIUM_MAX_AGE)),  # uint32 overflow
    (f"max-age={HUGE}", ok(MAX_AGE_CLAMP), ok(CHROMIUM_MAX_AGE)),
    (f"max-age={'0' * 5000}7", *same(ok(7))),
    (f"max-age={HUGE}x", *same(Err("max-age directive: value"))),
    # --- enforce ---
    ('max-age=123, enforce=""', Err("enforce directive: must not have a value"), ok(123, True)),
    (
        "max-age=123, enforce=",
        Err("enforce directive: '=' must be followed by a value"),
        Err("enforce directive: '=' is followed by an empty value"),
    ),
    ("max-age=1, enforce=1, enforce", *same(Err("enforce directive: must not have a value"))),
    # --- unknown directives ---
    (
        "max-age=1, foo=",
        Err("foo directive: '=' must be followed by a value"),
        Err("foo directive: '=' is followed by an empty value"),
    ),
    ('max-age=1, foo=""', *same(ok(1))),
    ("max-age=1, foo, foo", Err("foo directive: appears more than once"), ok(1)),
    ("max-age=1, FOO=1, foo=2", Err("foo directive: appears more than once"), ok(1)),
    ("max-age=1, preload", *same(ok(1))),
    ('max-age=1, foo="with \\"escaped\\" quotes, and a comma"', *same(ok(1))),
    (
        'max-age=1, foo="a\\"',
        Err("foo directive: quoted-string is not closed"),
        Err("foo directive: malformed quoted value"),
    ),
    (
        'max-age=1, foo="a\\',
        Err("foo directive: quoted-string ends in a backslash"),
        Err("foo directive: malformed quoted value"),
    ),
    (
        'max-age=1, foo="unterminated',
        Err("foo directive: quoted-string is not closed"),
        Err("foo directive: malformed quoted value"),
    ),
    (
        'foo="a, max-age=1',
        Err("foo directive: quoted-string is not closed"),
        Err("foo directive: malformed quoted value"),
    ),
    ('max-age=1, "unterminated', Err("expected a directive name"), ok(1)),
    ('max-age=1, foo=a"b', Err("foo directive: '\"' is not allowed in a token value"), ok(1)),
    ("max-age=1, foo=a b", Err("foo directive: unexpected 'b' after whitespace"), ok(1)),
    ("max-age=1, foo bar", Err("foo directive: unexpected 'b' after whitespace"), ok(1)),
    ("max-age=1, foo=\x01", Err("foo directive: a value cannot start with U+0001"), ok(1)),
    (
        'max-age=1, foo="\x01"',
        Err("foo directive: U+0001 is not allowed in a quoted-string"),
        ok(1),
    ),
    (
        'max-age=1, foo="a\x7f"',
        Err("foo directive: U+007F is not allowed in a quoted-string"),
        ok(1),
    ),
    ('max-age=1, foo="a\\\x7f"', Err("foo directive: U+007F cannot be escaped"), ok(1)),
    ('max-age=1, foo="caf\xe9"', *same(ok(1))),  # obs-text
    ('max-age=1, foo="\\\xe9"', *same(ok(1))),  # quoted-pair of obs-text
    ('max-age=1, foo="a\tb"', *same(ok(1))),
    ('max-age=1, foo="a"  ', *same(ok(1))),
    (
        "max-age=1, f\xf6o=1",
        Err("f\xf6o directive: '\xf6' is not allowed in a directive name"),
        ok(1),
    ),
    ("max-age=1, foo=b\xe4r", Err("foo directive: '\xe4' is not allowed in a token value"), ok(1)),
    (
        'max-age=1, foo="1"=2',
        Err("foo directive: unexpected '=' after the closing quote"),
        Err("foo directive: malformed quoted value"),
    ),
    ("max-age=1, foo=!#$%&'*+-.^_`|~", *same(ok(1))),  # every tchar punctuation
    # --- report-uri values ---
    (f'max-age=1, report-uri="{FOO}/path?q=1&r=2"', *same(ok(1, False, f"{FOO}/path?q=1&r=2"))),
    ('max-age=1, report-uri="HTTPS://foo.test/r"', *same(ok(1, False, "HTTPS://foo.test/r"))),
    ('max-age=1, report-uri="https://foo.test/\\r"', *same(ok(1, False, "https://foo.test/r"))),
    (
        'max-age=1, report-uri="https://user@foo.test:8443/r"',
        *same(ok(1, False, "https://user@foo.test:8443/r")),
    ),
    ('max-age=1, report-uri="https://[::1]:8443/r"', *same(ok(1, False, "https://[::1]:8443/r"))),
    (
        'max-age=1, report-uri="https://[v1.fe80::a+en1]/r"',
        ok(1, False, "https://[v1.fe80::a+en1]/r"),
        Err("report-uri directive: '"),
    ),
    ('max-age=1, report-uri="https://127.0.0.1/r"', *same(ok(1, False, "https://127.0.0.1/r"))),
    (
        'max-age=1, report-uri="https://[zz]/r"',
        Err("[zz] is not an IPv6 address"),
        Err("invalid IPv6 host"),
    ),
    ('max-age=1, report-uri="https://[::1/r"', Err("not closed by ']'"), Err("invalid IPv6 host")),
    (
        'max-age=1, report-uri="https://foo.test/a b"',
        Err("report-uri directive: 'https://foo.test/a b' is not an absolute URI"),
        ok(1, False, "https://foo.test/a b"),
    ),
    (
        'max-age=1, report-uri="https://foo test/"',
        Err("report-uri directive"),
        Err("is not allowed in a host"),
    ),
    (
        'max-age=1, report-uri="https://foo.test/#frag"',
        Err("a fragment ('#') is not allowed"),
        ok(1, False, "https://foo.test/#frag"),
    ),
    (
        'max-age=1, report-uri="https://foo.test/%zz"',
        Err("does not start a percent-encoding"),
        ok(1, False, "https://foo.test/%zz"),
    ),
    (
        'max-age=1, report-uri="https://foo.test:99999/r"',
        ok(1, False, "https://foo.test:99999/r"),
        Err("invalid port '99999'"),
    ),
    (
        'max-age=1, report-uri="https://foo.test:8x/r"',
        Err("invalid port '8x'"),
        Err("invalid port '8x'"),
    ),
    (
        'max-age=1, report-uri="https://f\xf6o.test/"',
        Err("report-uri directive"),
        ok(1, False, "https://f\xf6o.test/"),
    ),
    (
        'max-age=1, report-uri="https://foo.test/a[1]"',
        Err("'[' and ']' are only allowed around an IP literal"),
        ok(1, False, "https://foo.test/a[1]"),
    ),
    (
        'max-age=1, report-uri="https://foo.test/?a[1]"',
        Err("'[' and ']' are not allowed in the query"),
        ok(1, False, "https://foo.test/?a[1]"),
    ),
    (
        'max-age=1, report-uri="https://a@b@foo.test/"',
        Err("invalid userinfo"),
        ok(1, False, "https://a@b@foo.test/"),
    ),
    (
        'max-age=1, report-uri=" https://foo.test/ "',
        Err("U+0020 is not allowed in a URI"),
        ok(1, False, "https://foo.test/"),
    ),
    ('max-age=1, report-uri="ftp://foo.test/r"', ok(1), ok(1, False, "ftp://foo.test/r")),
    ('max-age=1, report-uri="urn:isbn:0451450523"', ok(1), ok(1, False, "urn:isbn:0451450523")),
    ('max-age=1, report-uri="https:"', ok(1), Err("nothing after the scheme")),
    ('max-age=1, report-uri="https://"', ok(1), Err("it has no host")),
    ('max-age=1, report-uri="https:foo.test/r"', ok(1), ok(1, False, "https:foo.test/r")),
    (
        'max-age=1, report-uri="/relative"',
        Err("does not start with a scheme"),
        Err("it has no scheme"),
    ),
    (
        'max-age=1, report-uri="//foo.test/r"',
        Err("does not start with a scheme"),
        Err("it has no scheme"),
    ),
    (
        'max-age=1, report-uri="1https://foo.test"',
        Err("does not start with a scheme"),
        Err("it has no scheme"),
    ),
    (
        "max-age=1, report-uri=https",
        Err("report-uri directive: 'https' is not an absolute URI"),
        Err("report-uri directive: 'https' is not a valid URL"),
    ),
    (
        f'max-age=1, report-uri="{FOO}"x',
        Err("report-uri directive: unexpected 'x' after the closing quote"),
        Err("report-uri directive: malformed quoted value"),
    ),
    (
        f'max-age=1, report-uri="{FOO}", Report-URI="{FOO}"',
        *same(Err("directive: appears more than once")),
    ),
    # --- several field values of one response ---
    (("max-age=1", ""), *same(ok(1))),
    (("", "max-age=1"), *same(ok(1))),
    (("", ""), *same(REQUIRED)),
    ((), *same(REQUIRED)),
    (("enforce", "max-age=5"), *same(ok(5, True))),
    (
        ("max-age=1", "max-age=2"),
        Err("max-age directive (field value 2): appears more than once"),
        Err("max-age directive: appears more than once"),
    ),
    (("max-age=1", "enforce", "enforce"), *same(Err("appears more than once"))),
    (
        ("max-age=1", "foo", "foo"),
        Err("foo directive (field value 3): appears more than once"),
        ok(1),
    ),
    (("max-age=1", 'report-uri="https://foo.test", enforce'), *same(ok(1, True, FOO))),
    # A quoted-string cannot span field lines in RFC terms; Chromium joined the values first.
    (
        ('max-age=1, foo="a', 'b"'),
        Err("foo directive (field value 1): quoted-string is not closed"),
        ok(1),
    ),
    (("max-age=1", "en\x01force"), Err("(field value 2)"), ok(1)),
    # --- CR, LF, NUL can be in no field value ---
    ("max-age=1\r\n, enforce", *same(Err("contains U+000D: CR, LF and NUL are not allowed"))),
    ("max-age=1, enforce\n", *same(Err("contains U+000A"))),
    ('max-age=1, foo="\x00"', *same(Err("contains U+0000"))),
    (("max-age=1", "enforce\r"), *same(Err("field value 2 contains U+000D"))),
]


def _case_id(header: Header) -> str:
    text = header if isinstance(header, str) else " | ".join(header) or "()"
    return ascii(text[:70])


@pytest.mark.parametrize(
    ("header", "dialect", "expected"),
    [
        pytest.param(header, dialect, expected, id=f"{dialect}-{_case_id(header)}")
        for header, rfc, chromium in CASES
        for dialect, expected in (("rfc9163", rfc), ("chromium", chromium))
    ],
)
def test_parse(header: Header, dialect: str, expected: Expected) -> None:
    if isinstance(expected, Err):
        with pytest.raises(InvalidExpectCT) as excinfo:
            parse_expect_ct(header, dialect=dialect)
        assert expected.fragment in str(excinfo.value)
    else:
        result = parse_expect_ct(header, dialect=dialect)
        assert result == expected
        # Equality ignores the diagnostic fields, so compare the policy fields explicitly too.
        assert (result.max_age, result.enforce, result.report_uri) == (
            expected.max_age,
            expected.enforce,
            expected.report_uri,
        )


def test_table_is_large_and_covers_both_outcomes() -> None:
    results = [expected for _, rfc, chromium in CASES for expected in (rfc, chromium)]
    assert len(results) >= 300
    assert sum(isinstance(r, ExpectCT) for r in results) >= 100
    assert sum(isinstance(r, Err) for r in results) >= 100
    assert sum(rfc != chromium for _, rfc, chromium in CASES) >= 50  # the dialects differ


def test_constants() -> None:
    assert DIALECTS == ("rfc9163", "chromium")
    assert MAX_AGE_CLAMP == 2147483648
    assert CHROMIUM_MAX_AGE == 30 * 86400


def test_default_dialect_is_rfc9163() -> None:
    assert parse_expect_ct('max-age=123,report-uri="http://foo.test"') == ok(123)
    with pytest.raises(InvalidExpectCT):
        parse_expect_ct("max-age = 1")


@pytest.mark.parametrize("dialect", ["", "RFC9163", "chrome", "rfc"])
def test_unknown_dialect_is_a_plain_value_error(dialect: str) -> None:
    with pytest.raises(ValueError, match="unknown Expect-CT dialect") as excinfo:
        parse_expect_ct("max-age=1", dialect=dialect)
    assert not isinstance(excinfo.value, InvalidExpectCT)


def test_invalid_expect_ct_is_a_value_error() -> None:
    assert issubclass(InvalidExpectCT, ValueError)


def test_non_str_field_value_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="field value 2 must be str, not bytes"):
        parse_expect_ct(["max-age=1", b"enforce"])  # type: ignore[list-item]


def test_sequence_may_be_a_list_or_tuple() -> None:
    for values in (["max-age=1", "enforce"], ("max-age=1", "enforce")):
        for dialect in DIALECTS:
            assert parse_expect_ct(values, dialect=dialect) == ok(1, True)


def test_result_is_frozen_and_equality_ignores_diagnostics() -> None:
    plain = parse_expect_ct("max-age=5, enforce")
    noisy = parse_expect_ct('max-age=5, enforce, foo, report-uri="http://r.test"')
    assert plain == noisy == ok(5, True)
    assert hash(plain) == hash(noisy)
    assert noisy.unknown_directives == ("foo",)
    assert noisy.ignored_report_uri == "http://r.test"
    with pytest.raises(dataclasses.FrozenInstanceError):
        plain.max_age = 6  # type: ignore[misc]
    assert ok(5, True) != ok(5, False) != ok(6, False) != ok(6, False, FOO)


def test_rfc9163_ignored_report_uri_is_explained() -> None:
    result = parse_expect_ct('max-age=1, report-uri="http://report.test/r"')
    assert result.report_uri is None
    assert result.ignored_report_uri == "http://report.test/r"
    assert any("not https" in note and "2.1.1" in note for note in result.notes)

    hostless = parse_expect_ct('max-age=1, report-uri="https:/r"')
    assert hostless.report_uri is None
    assert hostless.ignored_report_uri == "https:/r"
    assert any("non-empty host" in note for note in hostless.notes)

    kept = parse_expect_ct(f'max-age=1, report-uri="{FOO}"')
    assert kept.ignored_report_uri is None
    assert kept.notes == ()


def test_chromium_keeps_http_report_uri() -> None:
    result = parse_expect_ct('max-age=1, report-uri="http://report.test/r"', dialect="chromium")
    assert result.report_uri == "http://report.test/r"
    assert result.ignored_report_uri is None


@pytest.mark.parametrize(
    ("dialect", "header", "names"),
    [
        (
            "rfc9163",
            'max-age=1, Pumpkin=kitten, animal="squirrel, distinguished", preload',
            ("pumpkin", "animal", "preload"),
        ),
        ("chromium", "pumpkin=894, max-age=1, PUMPKIN=kitten, odd name=1", ("pumpkin", "odd name")),
        ("chromium", "max-age=1, K\u212aelvin", ("k\u212aelvin",)),  # ASCII-only case folding
        ("rfc9163", "max-age=1, enforce", ()),
    ],
)
def test_unknown_directives_are_listed(dialect: str, header: str, names: tuple[str, ...]) -> None:
    assert parse_expect_ct(header, dialect=dialect).unknown_directives == names


@pytest.mark.parametrize(
    ("dialect", "header", "note"),
    [
        ("rfc9163", "max-age=2147483649", "clamped to 2147483648"),
        ("rfc9163", f"max-age={HUGE}", "(5000 digits) clamped"),
        ("chromium", "max-age=2592001", "capped at 2592000"),
    ],
)
def test_clamping_is_noted(dialect: str, header: str, note: str) -> None:
    result = parse_expect_ct(header, dialect=dialect)
    assert any(note in n for n in result.notes), result.notes


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize("header", ["max-age=2147483648", "max-age=2592000", "max-age=1"])
def test_no_note_when_nothing_was_clamped(dialect: str, header: str) -> None:
    result = parse_expect_ct(header, dialect=dialect)
    limit = MAX_AGE_CLAMP if dialect == "rfc9163" else CHROMIUM_MAX_AGE
    assert (result.notes == ()) == (int(header.split("=")[1]) <= limit)


def test_messages_show_control_characters_readably() -> None:
    with pytest.raises(InvalidExpectCT) as excinfo:
        parse_expect_ct("m\x01ax-age=1")
    message = str(excinfo.value)
    assert "U+0001" in message
    assert "\x01" not in message
    with pytest.raises(InvalidExpectCT) as excinfo:
        parse_expect_ct('m\x01x"=1, max-age=1', dialect="chromium")
    assert "\x01" not in str(excinfo.value)


# --- property tests ---------------------------------------------------------------------------

TCHARS = "!#$%&'*+-.^_`|~" + string.ascii_letters + string.digits
KNOWN = {"max-age", "enforce", "report-uri"}

header_text = st.text(
    alphabet=st.sampled_from(list(' \t,="\\;:/abcdefgmnoprstuxy-0123456789\x00\x01\x7f\xe9\u0661')),
    max_size=40,
) | st.text(max_size=40)


@settings(max_examples=200, deadline=None)
@given(value=header_text | st.lists(header_text, max_size=3), dialect=st.sampled_from(DIALECTS))
def test_arbitrary_text_raises_only_invalid_expect_ct(value: str | list[str], dialect: str) -> None:
    try:
        result = parse_expect_ct(value, dialect=dialect)
    except InvalidExpectCT as error:
        assert str(error)
        return
    limit = MAX_AGE_CLAMP if dialect == "rfc9163" else CHROMIUM_MAX_AGE
    assert 0 <= result.max_age <= limit


def _random_case(draw: st.DrawFn, name: str) -> str:
    flips = draw(st.lists(st.booleans(), min_size=len(name), max_size=len(name)))
    return "".join(c.upper() if flip else c for c, flip in zip(name, flips, strict=True))


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@st.composite
def valid_headers(draw: st.DrawFn) -> tuple[list[str], int, bool, str | None, set[str]]:
    """A header valid in both dialects: (field values, max-age sent, enforce, report-uri, unknown)."""
    max_age = draw(st.integers(min_value=0, max_value=2**40) | st.sampled_from([0, 2**31, 2**32]))
    digits = "0" * draw(st.integers(0, 3)) + str(max_age)
    directives = [
        _random_case(draw, "max-age") + "=" + (_quote(digits) if draw(st.booleans()) else digits)
    ]
    enforce = draw(st.booleans())
    if enforce:
        directives.append(_random_case(draw, "enforce"))
    report_uri = None
    if draw(st.booleans()):
        path = draw(
            st.text(
                alphabet=string.ascii_letters + string.digits + "-._~!$&'()*+,;=:@/", max_size=12
            )
        )
        report_uri = f"{draw(st.sampled_from(['https', 'HTTPS', 'Https']))}://report.test/{path}"
        directives.append(_random_case(draw, "report-uri") + "=" + _quote(report_uri))
    unknown = draw(
        st.sets(
            st.text(alphabet=TCHARS, min_size=1, max_size=8).filter(
                lambda n: n.lower() not in KNOWN
            ),
            max_size=3,
        ).filter(lambda names: len({n.lower() for n in names}) == len(names))
    )
    for name in unknown:
        value = draw(
            st.none()
            | st.text(alphabet=TCHARS, min_size=1, max_size=6)
            | st.text(
                alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=8
            ).map(_quote)
        )
        directives.append(name if value is None else f"{name}={value}")
    directives = draw(st.permutations(directives))
    ows = st.text(alphabet=" \t", max_size=2)
    # Split the list into 1-3 field values, each with OWS and empty elements around the commas.
    cuts = sorted(draw(st.lists(st.integers(0, len(directives)), max_size=2)))
    fields = []
    for start, end in zip([0, *cuts], [*cuts, len(directives)], strict=True):
        parts = [draw(ows) + d + draw(ows) for d in directives[start:end]]
        if draw(st.booleans()):
            parts.insert(draw(st.integers(0, len(parts))), draw(ows))  # an empty element
        fields.append(",".join(parts))
    return fields, max_age, enforce, report_uri, {n.lower() for n in unknown}


@settings(max_examples=100, deadline=None)
@given(case=valid_headers(), dialect=st.sampled_from(DIALECTS))
def test_generated_valid_headers_round_trip(
    case: tuple[list[str], int, bool, str | None, set[str]], dialect: str
) -> None:
    fields, max_age, enforce, report_uri, unknown = case
    value: str | Sequence[str] = fields[0] if len(fields) == 1 else fields
    result = parse_expect_ct(value, dialect=dialect)
    limit = MAX_AGE_CLAMP if dialect == "rfc9163" else CHROMIUM_MAX_AGE
    assert result == ExpectCT(min(max_age, limit), enforce, report_uri)
    assert set(result.unknown_directives) == unknown
    if dialect == "chromium":
        # Chromium joins the field values with ", " first: the same as one combined value.
        assert parse_expect_ct(", ".join(fields), dialect=dialect) == result
    else:
        assert parse_expect_ct(",".join(fields), dialect=dialect) == result


@settings(max_examples=100, deadline=None)
@given(
    max_age=st.integers(min_value=0, max_value=2**40),
    spaces=st.text(alphabet=" \t", min_size=1, max_size=3),
)
def test_whitespace_around_equals_splits_the_dialects(max_age: int, spaces: str) -> None:
    header = f"max-age{spaces}={spaces}{max_age}"
    assert parse_expect_ct(header, dialect="chromium") == ok(min(max_age, CHROMIUM_MAX_AGE))
    with pytest.raises(InvalidExpectCT, match="max-age directive: whitespace is not allowed"):
        parse_expect_ct(header, dialect="rfc9163")
