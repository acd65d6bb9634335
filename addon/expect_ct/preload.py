"""Preload files: hosts to seed the Known Expect-CT Hosts store with, like a browser's preload list.

Format (JSON), a list of objects::

    [{"host": "example.com", "enforce": true, "report_uri": "https://r.example/ct",
      "expires": "2027-01-01T00:00:00Z"}]

``host`` and ``expires`` are required; ``enforce`` defaults to false and ``report_uri`` to
null. ``host`` is read as the store keys it (IDNA 2008 / UTS #46: "faß.example" becomes
"xn--fa-hia.example"); a name that cannot be a key is an error. An entry that asks for neither enforcement nor reports has no effect, so it is
refused rather than silently stored (Chromium's store keeps only such entries too).
"""

from __future__ import annotations

import datetime
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from expect_ct.store import canonical_host


class InvalidPreload(ValueError):
    """A preload file is not in the documented format; the message says where."""


@dataclass(frozen=True)
class PreloadEntry:
    host: str
    enforce: bool
    report_uri: str | None
    expires: datetime.datetime


_KEYS = {"host", "enforce", "report_uri", "expires"}


def parse_time(value: Any, where: str) -> datetime.datetime:
    if not isinstance(value, str):
        raise InvalidPreload(f"{where}: expires must be an RFC 3339 string, not {value!r}")
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise InvalidPreload(f"{where}: expires {value!r} is not an RFC 3339 date-time") from None
    if parsed.tzinfo is None:
        raise InvalidPreload(f"{where}: expires {value!r} has no time zone (add Z for UTC)")
    try:
        return parsed.astimezone(datetime.UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00:00+01:00 is before datetime.min in UTC
        raise InvalidPreload(f"{where}: expires {value!r} is out of range") from None


def parse_entry(item: Any, where: str) -> PreloadEntry:
    if not isinstance(item, dict):
        raise InvalidPreload(f"{where}: an entry must be an object, not {type(item).__name__}")
    unknown = set(item) - _KEYS
    if unknown:
        raise InvalidPreload(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    host = item.get("host")
    if not isinstance(host, str) or not host.strip():
        raise InvalidPreload(f"{where}: host must be a non-empty string")
    try:
        # The store's key (IDNA 2008 / UTS #46 A-labels): what the proxy looks up later.
        host = canonical_host(host.strip())
    except ValueError as e:
        raise InvalidPreload(f"{where}: {e}") from None
    enforce = item.get("enforce", False)
    if not isinstance(enforce, bool):
        raise InvalidPreload(f"{where}: enforce must be true or false, not {enforce!r}")
    report_uri = item.get("report_uri")
    if report_uri is not None and (
        not isinstance(report_uri, str) or not report_uri.lower().startswith("https://")
    ):
        raise InvalidPreload(
            f"{where}: report_uri must be an https URI or null, not {report_uri!r}"
        )
    if not enforce and report_uri is None:
        raise InvalidPreload(f"{where}: {host} asks for neither enforce nor a report_uri")
    if "expires" not in item:
        raise InvalidPreload(f"{where}: expires is required")
    return PreloadEntry(host, enforce, report_uri, parse_time(item["expires"], where))


def parse_preload(data: str | bytes, *, source: str = "preload") -> list[PreloadEntry]:
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InvalidPreload(f"{source}: not JSON: {e}") from None
    except RecursionError:  # json.loads recurses per nesting level
        raise InvalidPreload(f"{source}: not JSON: nested too deeply") from None
    if not isinstance(document, list):
        raise InvalidPreload(f"{source}: the top level must be a list of host objects")
    return [parse_entry(item, f"{source}, entry {i}") for i, item in enumerate(document)]


def load_preload(path: str | os.PathLike[str]) -> Sequence[PreloadEntry]:
    with open(path, "rb") as f:
        return parse_preload(f.read(), source=os.fspath(path))
