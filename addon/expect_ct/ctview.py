"""The "Certificate Transparency" view of a flow: its ``expect_ct`` metadata as monospace text.

Pure: no mitmproxy import. ``contentview.py`` hands mitmproxy's contentview APIs (11 and 12)
what ``render`` returns; the same lines read in the console, in mitmweb and in a test.

The input is ``flow.metadata["expect_ct"]`` as the addon writes it (README, "What is
recorded"), possibly from an older saved flow, so every key may be missing or of another type:
a missing part is left out, never guessed. Text that came from a server (certificate names,
header values, log descriptions) is shown with non-printable characters escaped the way
``records.one_line`` escapes them; text that the addon already escaped (a non-UTF-8 header byte
stored as ``\\xNN``) is shown as stored, not unescaped and not escaped twice.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from expect_ct.records import escape_char
from expect_ct.store import KnownHost

VIEW_NAME = "Certificate Transparency"
NO_DATA = (
    "No Certificate Transparency data: the addon did not evaluate this flow's upstream connection."
)

# Styles mitmproxy's console palettes define (mitmweb uses them as CSS class names).
HEADING = "header"
TEXT = "text"
STRONG = "highlight"
ERROR = "error"

Line = list[tuple[str, str]]
# mitmweb 11 draws a line without text with no height at all: a blank keeps the gap.
BLANK: Line = [(TEXT, " ")]

# One table row per SCT, and under it why the SCT counted or not: a long sentence that, as a
# last column, would push the table past the width of mitmweb's detail pane.
SCT_COLUMNS = ("#", "Source", "Log", "Operator", "Timestamp (UTC)", "Status", "Counted")
WHY_HEADING = "Why"


@dataclass(frozen=True)
class StoredPolicy:
    """What the Known Expect-CT Hosts store says about the flow's host, when it was asked.

    ``entry`` is None when the host is not Known; ``error`` says why the store could not
    answer (then ``entry`` is None too).
    """

    host: str
    entry: KnownHost | None
    error: str | None = None


def has_data(meta: object) -> bool:
    """True when the metadata holds anything this view shows."""
    return isinstance(meta, Mapping) and any(
        key in meta for key in ("connection", "header", "request_header", "blocked", "verdict")
    )


def render(meta: object, *, stored: StoredPolicy | None = None) -> list[Line]:
    """The view's lines: verdict, SCT table, certificate, Expect-CT headers, stored policy."""
    if not has_data(meta):
        return [[(TEXT, NO_DATA)]]
    assert isinstance(meta, Mapping)
    conn = _mapping(meta.get("connection"))
    lines: list[Line] = []
    lines += _verdict_section(meta, conn)
    if conn:
        lines += _sct_section(conn)
        lines += _certificate_section(conn)
    lines += _header_section(meta)
    if stored is not None:
        lines += _stored_section(stored)
    return lines


def description(meta: object) -> str:
    """A short description for the view's title bar."""
    if not has_data(meta):
        return "no CT data"
    assert isinstance(meta, Mapping)
    conn = _mapping(meta.get("connection"))
    if meta.get("blocked"):
        return "CT: blocked"
    if "compliant" in conn:
        return "CT: compliant" if conn.get("compliant") else "CT: NOT compliant"
    return "CT"


def to_text(lines: Sequence[Line]) -> str:
    """The lines as one string (mitmproxy 12's prettify, tests)."""
    return "\n".join("".join(text for _style, text in line).rstrip() for line in lines)


# ------------------------------------------------------------------------------ sections


def _verdict_section(meta: Mapping[str, Any], conn: Mapping[str, Any]) -> list[Line]:
    where = ""
    if meta.get("host") is not None:
        where = _shown(meta.get("host"))
        if meta.get("port") is not None:
            where += f":{_shown(meta.get('port'))}"
    if conn.get("tls_version"):
        where += f" ({_shown(conn['tls_version'])})"
    lines: list[Line] = [[(HEADING, "Certificate Transparency" + (f": {where}" if where else ""))]]
    pairs: list[tuple[str, str, str]] = []
    if meta.get("verdict"):
        pairs.append(("Verdict", _shown(meta["verdict"]), STRONG))
    if meta.get("blocked"):
        pairs.append(("Blocked", _shown(meta["blocked"]), ERROR))
    elif meta.get("would_block"):
        pairs.append(("Would block", _shown(meta["would_block"]) + " (blocking suspended)", ERROR))
    if "compliant" in conn:
        compliant = conn.get("compliant")
        policy = f" under the {_shown(conn['policy'])} policy" if conn.get("policy") else ""
        pairs.append(
            ("Compliant", ("yes" if compliant else "NO") + policy, TEXT if compliant else ERROR)
        )
    if conn.get("chain"):
        pairs.append(("Chain", _chain_text(conn["chain"]), TEXT))
    sources = _mapping(conn.get("sources"))
    if sources:
        pairs.append(
            ("SCT sources", ", ".join(f"{_shown(k)} {_shown(v)}" for k, v in sources.items()), TEXT)
        )
    lines += _pairs(pairs)
    for title, key in (("Reasons", "reasons"), ("Problems", "problems")):
        items = _sequence(conn.get(key))
        if items:
            lines.append([(HEADING, f"  {title}:")])
            lines += [[(ERROR, f"    - {_shown(item)}")] for item in items]
    return lines


def _chain_text(kind: object) -> str:
    explained = {
        "public": "public (ends at a publicly trusted root)",
        "private": "private (ends at a root trusted only locally: exempt from CT)",
        "untrusted": "untrusted (does not validate to a known root)",
    }
    return explained.get(str(kind), _shown(kind))


def _sct_section(conn: Mapping[str, Any]) -> list[Line]:
    scts = [_mapping(s) for s in _sequence(conn.get("scts"))]
    lines: list[Line] = [BLANK, [(HEADING, f"SCTs ({len(scts)})")]]
    if not scts:
        lines.append([(TEXT, "  none: no SCT was delivered by any path")])
        return lines
    rows = [
        (
            str(index),
            _shown(sct.get("source", "?")),
            _shown(sct.get("log") or "(log not in the log list)"),
            _shown(sct.get("operator") or "-"),
            _timestamp(sct.get("timestamp")),
            _shown(sct.get("status", "?")),
            "yes" if sct.get("counted") else "no",
        )
        for index, sct in enumerate(scts, 1)
    ]
    widths = [max(len(row[i]) for row in (SCT_COLUMNS, *rows)) for i in range(len(SCT_COLUMNS))]
    under = " " * (2 + widths[0] + 2)  # the why lines start under the Source column
    lines.append([(HEADING, "  " + _row(SCT_COLUMNS, widths))])
    lines.append([(HEADING, under + WHY_HEADING)])
    for row, sct in zip(rows, scts, strict=True):
        style = TEXT if sct.get("status") == "valid" else ERROR
        lines.append([(style, "  " + _row(row, widths))])
        lines.append([(TEXT, under + _why(sct))])
    return lines


def _why(sct: Mapping[str, Any]) -> str:
    why = _shown(sct.get("why") or "")
    reason = sct.get("reason")
    if reason and str(reason) not in why:
        why = f"{_shown(reason)}; {why}" if why else _shown(reason)
    return why or "-"


def _row(cells: Sequence[str], widths: Sequence[int]) -> str:
    # The last column is left ragged: no trailing blanks.
    return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip()


def _certificate_section(conn: Mapping[str, Any]) -> list[Line]:
    cert = _mapping(conn.get("certificate"))
    if not cert:
        return []
    pairs = [
        ("Subject", _shown(cert.get("subject", "?")), TEXT),
        ("Issuer", _shown(cert.get("issuer", "?")), TEXT),
        ("SHA-256", _shown(cert.get("sha256", "?")), TEXT),
        (
            "Valid",
            f"{_shown(cert.get('not_before', '?'))} to {_shown(cert.get('not_after', '?'))}",
            TEXT,
        ),
    ]
    return [BLANK, [(HEADING, "Certificate")], *_pairs(pairs)]


def _header_events(meta: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    # The client's request header first, then the response's (an older saved flow has no
    # ``request_header``, and its ``header`` has no ``direction``: a response's).
    events = [_mapping(meta.get("request_header")), _mapping(meta.get("header"))]
    return [event for event in events if event]


def _header_section(meta: Mapping[str, Any]) -> list[Line]:
    events = _header_events(meta)
    if not events:
        return []
    lines: list[Line] = [BLANK, [(HEADING, "Expect-CT headers")]]
    for event in events:
        direction = _shown(event.get("direction") or "response")
        values = ", ".join(_shown(v) for v in _sequence(event.get("values")))
        lines.append([(HEADING, f"  {direction}: "), (TEXT, values or "(empty)")])
        if event.get("valid") is False:
            lines.append([(ERROR, f"    invalid: {_shown(event.get('error') or 'malformed')}")])
        elif event.get("valid"):
            parsed = [f"max-age {_shown(event.get('max_age'))} s"]
            parsed.append("enforce" if event.get("enforce") else "report-only")
            if event.get("report_uri"):
                parsed.append(f"report-uri {_shown(event['report_uri'])}")
            lines.append([(TEXT, "    valid: " + ", ".join(parsed))])
        if event.get("action"):
            why = f" ({_shown(event['why'])})" if event.get("why") else ""
            lines.append([(TEXT, f"    action: {_shown(event['action'])}{why}")])
    return lines


def _stored_section(stored: StoredPolicy) -> list[Line]:
    lines: list[Line] = [BLANK, [(HEADING, f"Stored policy for {_shown(stored.host)}")]]
    if stored.error is not None:
        return [*lines, [(ERROR, f"  the store could not be read: {_shown(stored.error)}")]]
    entry = stored.entry
    if entry is None:
        return [*lines, [(TEXT, "  not a Known Expect-CT Host")]]
    pairs = [
        ("Known host", "yes: " + ("enforce" if entry.enforce else "report-only"), STRONG),
        ("Report-uri", _shown(entry.report_uri) if entry.report_uri else "-", TEXT),
        ("Expires", _rfc3339(entry.expires), TEXT),
        ("Noted", _rfc3339(entry.noted), TEXT),
        ("Last seen", _rfc3339(entry.last_observed), TEXT),
    ]
    return [*lines, *_pairs(pairs)]


# ------------------------------------------------------------------------------- helpers


def _pairs(pairs: Sequence[tuple[str, str, str]]) -> list[Line]:
    width = max((len(key) for key, _v, _s in pairs), default=0) + 1
    return [[(HEADING, f"  {key + ':':<{width}} "), (style, value)] for key, value, style in pairs]


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _sequence(value: object) -> Sequence[Any]:
    return value if isinstance(value, (list, tuple)) else ()


def _timestamp(value: object) -> str:
    if not isinstance(value, int) or isinstance(value, bool):
        return "?"
    try:
        moment = datetime.datetime.fromtimestamp(value / 1000, datetime.UTC)
    except (OverflowError, OSError, ValueError):
        return f"{value} ms"
    return moment.strftime("%Y-%m-%d %H:%M:%S.") + f"{value % 1000:03d}"


def _rfc3339(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _shown(value: object) -> str:
    """Server-chosen text for one line: non-printable characters escaped as in
    ``records.one_line``. A backslash stays as it is: the addon stores non-UTF-8 header
    bytes as ``\\xNN`` text, which must read as stored, not as ``\\\\xNN``."""
    text = value if isinstance(value, str) else str(value)
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else escape_char(char) for char in text)
