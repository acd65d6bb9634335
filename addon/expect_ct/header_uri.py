"""Report-uri checks and message text for ``expect_ct.header``.

``absolute_uri_problem`` is RFC 3986's absolute-URI (dialect rfc9163), ``report_uri_unusable``
the RFC 9163 section 2.1.1 rule that a report-uri must be https with a host, and
``gurl_problem`` an approximation of what Chromium's GURL accepted (dialect chromium). Each
returns why a URI is refused, or None. ``show_char`` and ``printable`` keep messages on one
printable line; ``ascii_lower`` is the case folding both dialects use for names.

Pure: no mitmproxy import.
"""

from __future__ import annotations

import ipaddress
import re
import string


def show_char(char: str) -> str:
    """A character as a message can show it, even when it is a control character."""
    if char.isprintable() and char not in " \t":
        return repr(char)
    return f"U+{ord(char):04X}"


def printable(text: str) -> str:
    return text if text.isprintable() else repr(text)


def ascii_lower(name: str) -> str:
    # Names are compared ASCII case-insensitively; str.lower() would also fold non-ASCII
    # characters (KELVIN SIGN to "k"), which neither dialect does.
    return name.translate(_ASCII_LOWER)


_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


# RFC 3986 section 2 and appendix A.
_UNRESERVED = string.ascii_letters + string.digits + "-._~"
_SUB_DELIMS = "!$&'()*+,;="
_URI_CHARS = frozenset(_UNRESERVED + _SUB_DELIMS + ":/?#[]@%")
_PCHARS = frozenset(_UNRESERVED + _SUB_DELIMS + ":@%")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")
_REG_NAME = re.compile(rf"[{re.escape(_UNRESERVED + _SUB_DELIMS)}%]*")
_USERINFO = re.compile(rf"[{re.escape(_UNRESERVED + _SUB_DELIMS)}%:]*")
_IPV_FUTURE = re.compile(rf"v[0-9A-Fa-f]+\.[{re.escape(_UNRESERVED + _SUB_DELIMS)}:]+")
_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")


def absolute_uri_problem(uri: str) -> str | None:
    """Why ``uri`` is not an RFC 3986 absolute-URI, or None if it is one.

    absolute-URI = scheme ":" hier-part [ "?" query ]   (no fragment)
    """
    bad = next((c for c in uri if c not in _URI_CHARS), None)
    if bad is not None:
        return f"{show_char(bad)} is not allowed in a URI"
    if "#" in uri:
        return "a fragment ('#') is not allowed"
    bad_percent = _PERCENT.search(uri)
    if bad_percent is not None:
        return f"'%' at offset {bad_percent.start()} does not start a percent-encoding"
    scheme, colon, rest = uri.partition(":")
    if not colon or not _SCHEME.fullmatch(scheme):
        return "it does not start with a scheme followed by ':'"
    hier_part, _, query = rest.partition("?")
    if "[" in query or "]" in query:
        return "'[' and ']' are not allowed in the query"
    path = hier_part
    if hier_part.startswith("//"):
        authority, slash, path = hier_part[2:].partition("/")
        path = slash + path
        problem = _authority_problem(authority)
        if problem is not None:
            return problem
    if not frozenset(path) <= _PCHARS | {"/"}:
        return "'[' and ']' are only allowed around an IP literal host"
    return None


def _authority_problem(authority: str) -> str | None:
    userinfo, at, host_port = authority.rpartition("@")
    if at and not _USERINFO.fullmatch(userinfo):
        return f"invalid userinfo {userinfo!r}"
    if host_port.startswith("["):
        literal, bracket, port = host_port[1:].partition("]")
        if not bracket:
            return "the IP literal host is not closed by ']'"
        if not _is_ip_literal(literal):
            return f"[{literal}] is not an IPv6 address or IPvFuture literal"
        if port and not port.startswith(":"):
            return f"unexpected {port!r} after the IP literal host"
        port = port[1:]
    else:
        host, _, port = host_port.partition(":")
        if not _REG_NAME.fullmatch(host):
            return f"invalid host {host!r}"
    if not port.isascii() or not (port == "" or port.isdigit()):
        return f"invalid port {port!r}"
    return None


def _is_ip_literal(literal: str) -> bool:
    if _IPV_FUTURE.fullmatch(literal):
        return True
    if "%" in literal:  # zone identifiers are RFC 6874, not RFC 3986
        return False
    try:
        ipaddress.IPv6Address(literal)
    except ValueError:
        return False
    return True


def report_uri_unusable(uri: str) -> str | None:
    """Why a syntactically valid report-uri is still to be ignored, or None."""
    scheme, _, rest = uri.partition(":")
    if ascii_lower(scheme) != "https":
        return (
            f"scheme {scheme!r} is not https, and RFC 9163 section 2.1.1 says UAs MUST ignore "
            "report-uris that do not use the HTTPS scheme"
        )
    host = _uri_host(rest)
    if not host:
        return "an https URI must have a non-empty host (RFC 9110 section 4.2.2)"
    return None


def _uri_host(rest: str) -> str:
    if not rest.startswith("//"):
        return ""
    authority = re.split(r"[/?]", rest[2:], maxsplit=1)[0]
    host_port = authority.rpartition("@")[2]
    if host_port.startswith("["):
        return host_port.partition("]")[0] + "]"
    return host_port.partition(":")[0]


C0_AND_SPACE = "".join(chr(code) for code in range(0x21))
# Schemes GURL parses with an authority ("standard" schemes); they need a host.
_GURL_HOST_SCHEMES = frozenset({"http", "https", "ws", "wss", "ftp"})
# WHATWG URL "forbidden domain code points", which GURL refuses in a host.
_FORBIDDEN_HOST_CHARS = frozenset(C0_AND_SPACE + "#/:<>?@[\\]^|%\x7f")


def gurl_problem(uri: str) -> str | None:
    """Why GURL would find ``uri`` invalid, approximately; None if it would accept it.

    GURL needs a scheme and something after it; for schemes with an authority it needs a
    usable host (and port). It is lenient about the rest: "https:foo.test", fragments, spaces
    in the path, bad percent-encodings and non-ASCII hosts are all valid to it.
    """
    match = _SCHEME.match(uri)
    if match is None or uri[match.end() : match.end() + 1] != ":":
        return "it has no scheme"
    scheme = ascii_lower(match.group())
    rest = uri[match.end() + 1 :]
    if not rest:
        return "there is nothing after the scheme"
    if scheme not in _GURL_HOST_SCHEMES:
        return None
    authority = re.split(r"[/\\?#]", rest.lstrip("/\\"), maxsplit=1)[0]
    host_port = authority.rpartition("@")[2]
    if host_port.startswith("["):
        literal, bracket, port = host_port[1:].partition("]")
        if not bracket or not _is_ipv6(literal):
            # GURL takes any character here: quote it, a message must stay one printable line.
            return f"invalid IPv6 host {printable(f'[{literal}]')}"
        if port and not port.startswith(":"):
            return f"unexpected {port!r} after the IPv6 host"
        port = port[1:]
    else:
        host, _, port = host_port.partition(":")
        if not host:
            return "it has no host"
        bad = next((c for c in host if c in _FORBIDDEN_HOST_CHARS), None)
        if bad is not None:
            return f"{show_char(bad)} is not allowed in a host"
    if port and not (port.isascii() and port.isdigit() and int(port) <= 65535):
        return f"invalid port {port!r}"
    return None


def _is_ipv6(literal: str) -> bool:
    try:
        ipaddress.IPv6Address(literal)
    except ValueError:
        return False
    return "%" not in literal
