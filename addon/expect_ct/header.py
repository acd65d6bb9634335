"""Parsing the Expect-CT response header field (RFC 9163 section 2.1), in two dialects.

``parse_expect_ct(value, dialect=...)`` turns one field value (a ``str``) or all the field
values of one response (a sequence of ``str``) into an ``ExpectCT``, or raises
``InvalidExpectCT`` (a ``ValueError``) whose message names the offending directive.

Dialect ``"rfc9163"`` (the default) is the strict grammar:

    Expect-CT           = 1#expect-ct-directive
    expect-ct-directive = directive-name [ "=" directive-value ]
    directive-name      = token
    directive-value     = token / quoted-string

with RFC 9110 section 5.6 lists, tokens and quoted-strings: OWS only around commas, none around
"=", empty list elements ignored, names case-insensitive, no directive repeated (RFC 9163
section 2.1 item 2), unknown directives ignored once they are syntactically valid (item 5),
anything else makes the whole field invalid and it must not be repaired (item 4).

Dialect ``"chromium"`` reproduces Chromium's ``ParseExpectCTHeader`` (Chrome 61-106): an
``HttpUtil::NameValuePairsIterator`` over ``,`` with STRICT_QUOTES, LWS trimmed around names and
values, unquoted values taken as they are, max-age capped at 30 days, ``http:`` report-uris kept.
Chromium compared the whole value with ``"preload"`` *before* calling its parser (static,
report-only Expect-CT for preloaded hosts); this parser does not: ``"preload"`` has no max-age
and is invalid here, so a caller that wants that behaviour must test for it first.

Both dialects refuse CR, LF and NUL, which no HTTP field value can contain (RFC 9110 section 5.5)
and which therefore never reached Chromium's parser either.

The report-uri checks of both dialects and the message-text helpers are in
``expect_ct.header_uri``. Pure: no mitmproxy import.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field

from expect_ct.header_uri import C0_AND_SPACE
from expect_ct.header_uri import absolute_uri_problem
from expect_ct.header_uri import ascii_lower
from expect_ct.header_uri import gurl_problem
from expect_ct.header_uri import printable
from expect_ct.header_uri import report_uri_unusable
from expect_ct.header_uri import show_char

DIALECTS = ("rfc9163", "chromium")

# RFC 9163 section 2.1.3 defers to delta-seconds (RFC 9111 section 1.2.2): a value larger than
# the recipient can represent is treated as 2**31, i.e. clamped, not rejected.
MAX_AGE_CLAMP = 2**31

# Chromium's kMaxExpectCTAgeSecs (net/http/http_security_headers.h): 30 days.
CHROMIUM_MAX_AGE = 2592000

# Chromium parsed max-age as a uint32, clamping overflow to this before applying the 30-day cap.
_UINT32_MAX = 2**32 - 1


class InvalidExpectCT(ValueError):
    """An Expect-CT header that must be ignored as a whole (RFC 9163 section 2.1 item 4)."""


@dataclass(frozen=True)
class ExpectCT:
    """The policy an Expect-CT header asks for.

    ``max_age`` is in seconds, already clamped by the dialect (2**31 or 2592000); a UA cap is
    the caller's business (RFC 9163 section 2.3.2.2). ``report_uri`` is None when absent or
    when the dialect ignored it.

    The remaining fields are diagnostics and take no part in equality or hashing, so two
    headers asking for the same policy compare equal:
    ``ignored_report_uri`` is a syntactically valid report-uri that was dropped (rfc9163: a
    scheme other than https, or an https URI without a host); ``unknown_directives`` holds the
    lower-cased names of ignored directives in order of first appearance; ``notes`` are
    human-readable remarks on what was clamped or ignored and why.
    """

    max_age: int
    enforce: bool = False
    report_uri: str | None = None
    ignored_report_uri: str | None = field(default=None, compare=False)
    unknown_directives: tuple[str, ...] = field(default=(), compare=False)
    notes: tuple[str, ...] = field(default=(), compare=False)


def parse_expect_ct(value: str | Sequence[str], *, dialect: str = "rfc9163") -> ExpectCT:
    """Parse an Expect-CT field value, or all of a response's Expect-CT field values.

    A ``str`` is one field value; a sequence holds every Expect-CT field value of one response
    in order, which together form one list (RFC 9163 section 2.1.4, RFC 9110 section 5.3), so
    a directive given in two of them is a duplicate.
    """
    if dialect not in DIALECTS:
        raise ValueError(
            f"unknown Expect-CT dialect {dialect!r}; expected one of {', '.join(DIALECTS)}"
        )
    field_values = [value] if isinstance(value, str) else list(value)
    for index, field_value in enumerate(field_values, start=1):
        if not isinstance(field_value, str):
            raise TypeError(
                f"Expect-CT field value {index} must be str, not {type(field_value).__name__}"
            )
        bad = next((c for c in field_value if c in "\r\n\0"), None)
        if bad is not None:
            label = f"field value {index}" if len(field_values) > 1 else "field value"
            raise InvalidExpectCT(
                f"{label} contains {show_char(bad)}: "
                "CR, LF and NUL are not allowed in an HTTP field value (RFC 9110 section 5.5)"
            )
    if dialect == "chromium":
        return _parse_chromium(field_values)
    return _parse_rfc9163(field_values)


# --- shared helpers --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Directive:
    name: str  # as written, for messages
    key: str  # ASCII-lower-cased name, for comparisons
    value: str | None  # None when valueless; quoted-strings already unescaped
    where: str  # " (field value N)" when several field values were given, else ""

    def error(self, problem: str) -> InvalidExpectCT:
        return InvalidExpectCT(f"{printable(self.name)} directive{self.where}: {problem}")


def _where(index: int, count: int) -> str:
    return f" (field value {index})" if count > 1 else ""


_DIGITS = re.compile(r"[0-9]+")


def _delta_seconds(text: str) -> int | None:
    """``1*DIGIT`` as an int, or None if ``text`` is not 1*DIGIT.

    Values beyond 2**64 come back as 2**64, which is above every limit applied here, so that
    huge strings need no int() conversion (Python refuses it past 4300 digits).
    """
    if not _DIGITS.fullmatch(text):
        return None
    significant = text.lstrip("0") or "0"
    if len(significant) > 20:
        return _HUGE
    return min(int(significant), _HUGE)


_HUGE = 2**64


@dataclass
class _Result:
    """What the directives said so far; turned into an ExpectCT at the end."""

    max_age: int | None = None
    enforce: bool = False
    report_uri: str | None = None
    ignored_report_uri: str | None = None
    # An insertion-ordered set: a hostile header can hold tens of thousands of unknown
    # directives, and a list membership test per directive would make parsing quadratic.
    unknown: dict[str, None] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def note_unknown(self, directive: _Directive) -> None:
        self.unknown.setdefault(directive.key, None)

    def finish(self) -> ExpectCT:
        if self.max_age is None:
            raise InvalidExpectCT(
                "max-age directive is required (RFC 9163 section 2.1.3) but none was found"
            )
        return ExpectCT(
            max_age=self.max_age,
            enforce=self.enforce,
            report_uri=self.report_uri,
            ignored_report_uri=self.ignored_report_uri,
            unknown_directives=tuple(self.unknown),
            notes=tuple(self.notes),
        )


# --- dialect rfc9163 -------------------------------------------------------------------------

# RFC 9110 section 5.6.2.
_TCHARS = frozenset("!#$%&'*+-.^_`|~" + string.ascii_letters + string.digits)
_OWS = " \t"


def _is_qdtext(char: str) -> bool:
    # RFC 9110 section 5.6.4: HTAB / SP / %x21 / %x23-5B / %x5D-7E / obs-text. Non-ASCII
    # characters stand for obs-text octets whatever decoding the caller applied (latin-1,
    # UTF-8, surrogateescape), so every code point from U+0080 up is accepted.
    code = ord(char)
    return char in _OWS or (0x21 <= code <= 0x7E and char not in '"\\') or code >= 0x80


def _is_quoted_pair_char(char: str) -> bool:
    # RFC 9110 section 5.6.4: quoted-pair = "\" ( HTAB / SP / VCHAR / obs-text ).
    code = ord(char)
    return char in _OWS or 0x21 <= code <= 0x7E or code >= 0x80


def _skip_ows(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in _OWS:
        pos += 1
    return pos


def _scan_token(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in _TCHARS:
        pos += 1
    return pos


def _scan_quoted_string(text: str, pos: int, name: str, where: str) -> tuple[str, int]:
    """Unescape the quoted-string starting at ``text[pos] == '"'``; return it and the end."""
    prefix = f"{name} directive{where}"
    unescaped: list[str] = []
    i = pos + 1
    while i < len(text):
        char = text[i]
        if char == '"':
            return "".join(unescaped), i + 1
        if char == "\\":
            if i + 1 == len(text):
                raise InvalidExpectCT(
                    f"{prefix}: quoted-string ends in a backslash and is never closed"
                )
            escaped = text[i + 1]
            if not _is_quoted_pair_char(escaped):
                raise InvalidExpectCT(
                    f"{prefix}: {show_char(escaped)} cannot be escaped in a quoted-string "
                    f"(offset {i + 1})"
                )
            unescaped.append(escaped)
            i += 2
            continue
        if not _is_qdtext(char):
            raise InvalidExpectCT(
                f"{prefix}: {show_char(char)} is not allowed in a quoted-string (offset {i})"
            )
        unescaped.append(char)
        i += 1
    raise InvalidExpectCT(f"{prefix}: quoted-string is not closed (it opens at offset {pos})")


def _rfc9163_directives(text: str, where: str) -> list[_Directive]:
    """Split one field value into directives, enforcing the RFC 9163 section 2.1 grammar."""
    directives: list[_Directive] = []
    pos = 0
    while True:
        pos = _skip_ows(text, pos)
        if pos == len(text):
            return directives
        if text[pos] == ",":  # an empty list element (RFC 9110 section 5.6.1)
            pos += 1
            continue
        name_end = _scan_token(text, pos)
        if name_end == pos:
            raise InvalidExpectCT(
                f"expected a directive name (a token){where} at offset {pos}, "
                f"found {show_char(text[pos])}"
            )
        name = text[pos:name_end]
        prefix = f"{name} directive{where}"
        pos = name_end
        value: str | None = None
        quoted = False
        if pos < len(text) and text[pos] == "=":
            pos += 1
            if pos == len(text) or text[pos] == ",":
                raise InvalidExpectCT(
                    f"{prefix}: '=' must be followed by a value (a token or quoted-string)"
                )
            if text[pos] in _OWS:
                raise InvalidExpectCT(
                    f"{prefix}: whitespace is not allowed after '=' (RFC 9163 section 2.1)"
                )
            if text[pos] == '"':
                value, pos = _scan_quoted_string(text, pos, name, where)
                quoted = True
            else:
                value_end = _scan_token(text, pos)
                if value_end == pos:
                    raise InvalidExpectCT(
                        f"{prefix}: a value cannot start with {show_char(text[pos])} "
                        f"(offset {pos}); it must be a token or a quoted-string"
                    )
                value = text[pos:value_end]
                pos = value_end
        elif pos < len(text) and text[pos] not in _OWS + ",;":
            # The name goes on with a character a token cannot hold: name the whole word.
            word = re.split(r"[ \t,=]", text[name_end - len(name) :], maxsplit=1)[0]
            raise InvalidExpectCT(
                f"{printable(word)} directive{where}: {show_char(text[pos])} is not allowed in a "
                f"directive name (a token, RFC 9110 section 5.6.2; offset {pos})"
            )
        directives.append(_Directive(name, ascii_lower(name), value, where))
        after = _skip_ows(text, pos)
        if after == len(text):
            return directives
        if text[after] == ",":
            pos = after + 1
            continue
        problem = _rfc9163_junk_problem(text, pos, after, name, quoted)
        raise InvalidExpectCT(f"{prefix}: {problem}")


def _rfc9163_junk_problem(text: str, pos: int, after: int, name: str, quoted: bool) -> str:
    """Explain what follows a directive's value (``pos``, or ``after`` past OWS): not ','."""
    char = text[after]
    if char == "=" and after > pos:
        return "whitespace is not allowed before '=' (RFC 9163 section 2.1)"
    if char == ";":
        return (
            f"unexpected ';' at offset {after}: directives are separated by ',' "
            "(the ';' syntax was draft-00's)"
        )
    if after > pos:
        return (
            f"unexpected {show_char(char)} after whitespace at offset {after}: "
            "directives must be separated by ','"
        )
    if quoted:
        return f"unexpected {show_char(char)} after the closing quote at offset {after}"
    if char == ":" and ascii_lower(name) == "report-uri":
        return (
            f"unexpected ':' at offset {after}: a URI contains characters a token cannot, "
            "so it must be sent as a quoted-string"
        )
    return (
        f"{show_char(char)} is not allowed in a token value (offset {after}); "
        "such a value must be a quoted-string"
    )


def _parse_rfc9163(field_values: list[str]) -> ExpectCT:
    result = _Result()
    seen: set[str] = set()
    for index, text in enumerate(field_values, start=1):
        for directive in _rfc9163_directives(text, _where(index, len(field_values))):
            # Section 2.1 item 2 forbids repeating *any* directive, unknown ones included,
            # and the field values of a response form one list (section 2.1.4).
            if directive.key in seen:
                raise directive.error(
                    "appears more than once (RFC 9163 section 2.1 item 2; field values of "
                    "one response count as one list)"
                )
            seen.add(directive.key)
            _apply_rfc9163(directive, result)
    return result.finish()


def _apply_rfc9163(directive: _Directive, result: _Result) -> None:
    if directive.key == "max-age":
        if directive.value is None:
            raise directive.error("a value is required (delta-seconds, RFC 9163 section 2.1.3)")
        max_age = _delta_seconds(directive.value)
        if max_age is None:
            raise directive.error(
                f"value {directive.value!r} is not delta-seconds (1*DIGIT, RFC 9163 section 2.1.3)"
            )
        if max_age > MAX_AGE_CLAMP:
            result.notes.append(
                f"max-age {_abbreviate(directive.value)} clamped to {MAX_AGE_CLAMP} "
                "(RFC 9111 section 1.2.2)"
            )
        result.max_age = min(max_age, MAX_AGE_CLAMP)
    elif directive.key == "enforce":
        if directive.value is not None:
            raise directive.error(
                f"must not have a value (RFC 9163 section 2.1.2), got {directive.value!r}"
            )
        result.enforce = True
    elif directive.key == "report-uri":
        if directive.value is None:
            raise directive.error("a value is required (an absolute URI, RFC 9163 section 2.1.1)")
        problem = absolute_uri_problem(directive.value)
        if problem is not None:
            raise directive.error(
                f"{directive.value!r} is not an absolute URI (RFC 3986 section 4.3): {problem}"
            )
        ignored_because = report_uri_unusable(directive.value)
        if ignored_because is None:
            result.report_uri = directive.value
        else:
            result.ignored_report_uri = directive.value
            result.notes.append(f"report-uri {directive.value!r} ignored: {ignored_because}")
    else:
        result.note_unknown(directive)


def _abbreviate(digits: str) -> str:
    return digits if len(digits) <= 30 else f"{digits[:12]}...({len(digits)} digits)"


# --- dialect chromium ------------------------------------------------------------------------

_LWS = " \t"  # HttpUtil::IsLWS


def _chromium_elements(text: str) -> list[str]:
    """base::StringTokenizer over ',' with '"' quotes, as HttpUtil::ValuesIterator uses it.

    A comma inside quotes does not split (backslash escapes inside quotes); a quote opens
    wherever it appears, even mid-value, and an unclosed one runs to the end. Elements are
    LWS-trimmed and empty ones skipped.
    """
    elements: list[str] = []
    start = 0
    in_quote = in_escape = False
    for i, char in enumerate(text):
        if in_quote:
            if in_escape:
                in_escape = False
            elif char == "\\":
                in_escape = True
            elif char == '"':
                in_quote = False
        elif char == ",":
            elements.append(text[start:i])
            start = i + 1
        elif char == '"':
            in_quote = True
    elements.append(text[start:])
    trimmed = (element.strip(_LWS) for element in elements)
    return [element for element in trimmed if element]


def _chromium_strict_unquote(quoted: str) -> str | None:
    """HttpUtil::StrictUnquote: None for an unclosed quote, a stray '"' or a trailing '\\'."""
    if len(quoted) < 2 or not quoted.endswith('"'):
        return None
    unescaped: list[str] = []
    escaping = False
    for char in quoted[1:-1]:
        if char == "\\" and not escaping:
            escaping = True
            continue
        if char == '"' and not escaping:
            return None
        escaping = False
        unescaped.append(char)
    return None if escaping else "".join(unescaped)


def _chromium_directive(element: str, where: str) -> _Directive:
    """HttpUtil::NameValuePairsIterator::GetNext with Values::NOT_REQUIRED, STRICT_QUOTES."""
    equals = element.find("=")
    if equals == 0:
        raise InvalidExpectCT(f"element {element!r}{where} has '=' but no directive name")
    if equals < 0:
        return _Directive(element, ascii_lower(element), None, where)
    raw_name = element[:equals]
    name = raw_name.strip(_LWS)
    if '"' in raw_name:
        raise InvalidExpectCT(
            f"{printable(name)} directive{where}: a quote before '=' is not allowed "
            f"(element {element!r})"
        )
    raw_value = element[equals + 1 :].strip(_LWS)
    directive = _Directive(name, ascii_lower(name), raw_value, where)
    if not raw_value:
        raise directive.error("'=' is followed by an empty value")
    if raw_value.startswith('"'):
        unquoted = _chromium_strict_unquote(raw_value)
        if unquoted is None:
            raise directive.error(
                f"malformed quoted value {raw_value!r} (unclosed, a stray '\"', text after the "
                "closing quote, or a trailing backslash)"
            )
        directive = _Directive(name, directive.key, unquoted, where)
    return directive


def _parse_chromium(field_values: list[str]) -> ExpectCT:
    # HttpResponseHeaders::GetNormalizedHeader joins all field values with ", ".
    text = ", ".join(field_values)
    result = _Result()
    seen: set[str] = set()
    for element in _chromium_elements(text):
        directive = _chromium_directive(element, "")
        apply = _CHROMIUM_DIRECTIVES.get(directive.key)
        if apply is None:
            result.note_unknown(directive)  # whatever its value
            continue
        if directive.key in seen:
            raise directive.error("appears more than once")
        seen.add(directive.key)
        apply(directive, result)
    return result.finish()


def _chromium_max_age(directive: _Directive, result: _Result) -> None:
    if directive.value is None:
        raise directive.error("a value is required")
    seconds = _delta_seconds(directive.value)
    if seconds is None:
        raise directive.error(
            f"value {directive.value!r} is not made of digits only (Chromium accepted no sign, "
            "decimal point, spaces or trailing characters)"
        )
    if seconds > CHROMIUM_MAX_AGE:
        result.notes.append(
            f"max-age {_abbreviate(directive.value)} capped at {CHROMIUM_MAX_AGE} "
            "(Chromium's kMaxExpectCTAgeSecs, 30 days)"
        )
    # MaxAgeToLimitedInt clamps to uint32 on overflow, then to the 30-day cap; the first
    # clamp cannot change the outcome of the second.
    result.max_age = min(seconds, _UINT32_MAX, CHROMIUM_MAX_AGE)


def _chromium_enforce(directive: _Directive, result: _Result) -> None:
    # Chromium tested name_value_pairs.value().empty(): the unquoted value, so enforce=""
    # passes while enforce=true and enforce="x" fail.
    if directive.value:
        raise directive.error(f"must not have a value, got {directive.value!r}")
    result.enforce = True


def _chromium_report_uri(directive: _Directive, result: _Result) -> None:
    # GURL trims leading and trailing C0 controls and spaces before parsing. The URI is kept
    # as sent otherwise; GURL would also canonicalise it ("https://foo.test" becomes
    # "https://foo.test/"), which does not change where a report goes.
    uri = (directive.value or "").strip(C0_AND_SPACE)
    problem = gurl_problem(uri)
    if problem is not None:
        raise directive.error(f"{directive.value or ''!r} is not a valid URL: {problem}")
    result.report_uri = uri


_CHROMIUM_DIRECTIVES: dict[str, Callable[[_Directive, _Result], None]] = {
    "max-age": _chromium_max_age,
    "enforce": _chromium_enforce,
    "report-uri": _chromium_report_uri,
}
