"""Certificate Transparency log lists: Google's v3 schema and Apple's v4/v5 schema.

Both publishers use the same per-log objects (``description``, ``log_id``, ``key``, ``url``,
``mmd``, ``state``, ``temporal_interval``, ``previous_operators``) inside an ``operators``
array whose entries hold ``logs`` (RFC 6962) and ``tiled_logs`` (static-ct-api). Only the
top-level fields differ: Google has ``version``/``log_list_timestamp``, Apple has ``$schema``,
``assetVersion`` and ``version``, and Apple's ``state`` objects carry an extra ``version``.

Pure: no mitmproxy import. Like the shipped clients (C11, A11), a log entry that cannot be
read (key, id, state, dates...) is skipped and the rest of the list kept, with one line in
``LogList.warnings`` naming the skipped entries. InvalidLogList, naming the file and the JSON
path of the offending value, refuses a list whole only when it is not a log list at all (not
JSON, wrong top-level shape or fields, no ``operators``), when no log entry in it can be read,
or (UnsupportedLogList) when it declares a schema version newer than this parser reads.

Licence note: Chrome's log lists may not be used to facilitate CT enforcement in TLS clients
other than Chrome without written permission (GoogleChrome/CertificateTransparency
log_lists.md, 2025-06-25), so the bundled default is Apple's list; see data/README.md.
"""

from __future__ import annotations

import base64
import binascii
import enum
import functools
import hashlib
import json
import os
import re
import types
from collections.abc import Iterable
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from datetime import UTC
from datetime import datetime
from datetime import timedelta
from importlib import resources
from typing import Any

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

BUNDLED_LIST = "apple_log_list.json"
BUNDLED_META = "apple_log_list.meta.json"
# Google's two "mimic" logs, whose private keys are published (see data/README.md).
MIMIC_LOGS = "mimic_logs.json"


# `python -m expect_ct update-log-list` installs a list here (in mitmproxy's confdir) and the
# addon loads it when expect_ct_log_list is not set.
INSTALLED_FILENAME = "expect-ct-log-list.json"


class LogState(enum.StrEnum):
    """Log states of GoogleChrome/CertificateTransparency log_states.md (Apple uses the same)."""

    PENDING = "pending"
    QUALIFIED = "qualified"
    USABLE = "usable"
    READONLY = "readonly"
    RETIRED = "retired"
    REJECTED = "rejected"


# log_states.md: Qualified, Usable and ReadOnly are "functionally identical" for CT compliance;
# Firefox's enforcer calls the group "Admissible".
ADMISSIBLE_STATES = frozenset({LogState.QUALIFIED, LogState.USABLE, LogState.READONLY})


class InvalidLogList(ValueError):
    """A log list cannot be read or does not follow the v3/Apple schema."""


class UnsupportedLogList(InvalidLogList):
    """A log list declaring a schema version newer than this parser reads. Chrome refuses a
    list whose compatibility_version exceeds its own and keeps the old one (C11); trustd skips
    an asset of another compatibility version (A11). JSON lists carry their version in
    ``$schema`` (Apple ``log_list_schema_v5.json``, Google ``.../log_list/v3/...``)."""


# The newest schema versions this parser reads. Lists without a ``$schema`` (Google's v3
# lists have none) are read as v3/v5 by their fields.
MAX_SCHEMA_VERSION = types.MappingProxyType({"google": 3, "apple": 5})


def datetime_to_ms(value: datetime) -> int:
    """Milliseconds since the epoch, exactly (no float rounding), as SCT timestamps use."""
    return (value - _EPOCH) // timedelta(milliseconds=1)


def ms_to_datetime(timestamp_ms: int) -> datetime:
    """The inverse of datetime_to_ms; raises OverflowError beyond year 9999 (SCT timestamps
    are 64-bit and can be anything)."""
    return _EPOCH + timedelta(milliseconds=timestamp_ms)


@dataclass(frozen=True)
class Log:
    """One CT log as described by a log list.

    ``previous_operators`` is the v3 schema's history: (name, end_time) pairs, the time each
    earlier operator stopped running the log, sorted by end_time.
    """

    log_id: bytes
    key: bytes
    description: str
    operator: str
    url: str | None
    state: LogState | None
    state_since: datetime | None
    mmd: int | None
    temporal_interval: tuple[datetime, datetime] | None
    previous_operators: tuple[tuple[str, datetime], ...] = ()
    tiled: bool = False
    monitoring_url: str | None = None
    log_type: str | None = None
    # The state's name when it is none of LogState (``state`` is then None). U2: a log in a
    # state no policy names satisfies no requirement, so its SCTs are never counted.
    unknown_state: str | None = None

    @property
    def mimic(self) -> bool:
        """One of Google's mimic logs: its private key is public, its SCTs prove nothing."""
        return self.log_id in mimic_log_ids()

    def operator_at(self, timestamp_ms: int) -> str:
        """The operator running the log when an SCT with this timestamp was issued.

        ct_policy.md: the SCT's operator is found by comparing its timestamp with the
        previous operators' end times; like Chromium's GetOperatorForLog, an SCT issued
        exactly at an end_time belongs to the next operator.
        """
        for name, end_time in self.previous_operators:
            # Compared in milliseconds: hostile SCT timestamps can lie beyond datetime's range.
            if timestamp_ms < datetime_to_ms(end_time):
                return name
        return self.operator

    @property
    def admissible(self) -> bool:
        """Qualified, Usable or ReadOnly: the states whose SCTs count without conditions."""
        return self.state in ADMISSIBLE_STATES

    @property
    def retired_at(self) -> datetime | None:
        return self.state_since if self.state is LogState.RETIRED else None


@dataclass(frozen=True)
class LogList:
    """An immutable, parsed log list, indexed by log id."""

    logs: Mapping[bytes, Log]
    timestamp: datetime | None
    source: str
    schema: str = "google-v3"
    version: str | None = None
    operators: tuple[str, ...] = ()
    is_all_logs: bool | None = None
    extra: Mapping[str, Any] = field(default_factory=lambda: types.MappingProxyType({}))
    # Problems that did not stop the list from loading: at most one line per kind (entries
    # skipped as unreadable, logs in states the parser does not know, mimic logs), each
    # printable and bounded. The caller decides how to show them.
    warnings: tuple[str, ...] = ()

    def get(self, log_id: bytes) -> Log | None:
        return self.logs.get(log_id)

    def __len__(self) -> int:
        return len(self.logs)

    def age(self, now: datetime) -> timedelta | None:
        """How old the list is at ``now``; None when the list carries no timestamp."""
        if self.timestamp is None:
            return None
        return now - self.timestamp

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> LogList:
        """Read a Google v3 or Apple (v4/v5) log list; the schema is detected from its fields."""
        name = os.fspath(path)
        try:
            with open(name, "rb") as f:
                data = f.read()
        except OSError as e:
            raise InvalidLogList(f"cannot read log list {name}: {e.strerror or e}") from e
        return cls.from_json(data, source=name)

    @classmethod
    def from_json(cls, data: bytes | str | Mapping[str, Any], *, source: str) -> LogList:
        if isinstance(data, bytes | str):
            try:
                document = json.loads(data)
            except json.JSONDecodeError as e:
                raise InvalidLogList(
                    f"{source}: not valid JSON: {e.msg} at line {e.lineno} column {e.colno}"
                ) from e
            except UnicodeDecodeError as e:
                raise InvalidLogList(f"{source}: not valid JSON: not UTF-8 ({e.reason})") from e
            except RecursionError:
                # json.loads recurses per nesting level; a hostile download can nest deeper.
                raise InvalidLogList(f"{source}: not valid JSON: nested too deeply") from None
        else:
            document = data
        return _parse_document(document, source)

    @classmethod
    def bundled(cls) -> LogList:
        """Apple's log list snapshot shipped in the package (parsed once, then cached)."""
        return _load_bundled()


@functools.cache
def _load_bundled() -> LogList:
    data_dir = resources.files("expect_ct") / "data"
    source = f"bundled {BUNDLED_LIST}"
    log_list = LogList.from_json(data_dir.joinpath(BUNDLED_LIST).read_bytes(), source=source)
    meta = json.loads(data_dir.joinpath(BUNDLED_META).read_text(encoding="utf-8"))
    # Apple's list has no publication timestamp; the sidecar records when it was captured.
    snapshot = _parse_time(meta["snapshot_date"], f"{BUNDLED_META}: snapshot_date")
    return LogList(
        logs=log_list.logs,
        timestamp=snapshot,
        source=source,
        schema=log_list.schema,
        version=log_list.version,
        operators=log_list.operators,
        is_all_logs=log_list.is_all_logs,
        extra=types.MappingProxyType(dict(log_list.extra, meta=meta)),
        warnings=log_list.warnings,
    )


@functools.cache
def mimic_log_ids() -> frozenset[bytes]:
    """Log ids of Google's mimic logs (GoogleChrome/CertificateTransparency 3p_libraries.md):
    whatever list names them, their SCTs are never counted."""
    data_dir = resources.files("expect_ct") / "data"
    document = json.loads(data_dir.joinpath(MIMIC_LOGS).read_text(encoding="utf-8"))
    return frozenset(base64.b64decode(log["log_id"]) for log in document["logs"])


class _Problem(Exception):
    """Internal: a schema violation at a JSON path; turned into InvalidLogList at the top."""

    def __init__(self, where: str, what: str) -> None:
        super().__init__(f"{where}: {what}")


class _Unsupported(_Problem):
    """Internal: a schema version newer than MAX_SCHEMA_VERSION; becomes UnsupportedLogList."""


def _parse_document(document: object, source: str) -> LogList:
    try:
        return _parse_root(document, source)
    except _Unsupported as e:
        raise UnsupportedLogList(f"{source}: {e}") from None
    except _Problem as e:
        raise InvalidLogList(f"{source}: {e}") from None


def _detect_schema(root: Mapping[str, Any]) -> str:
    schema_url = root.get("$schema")
    if isinstance(schema_url, str) and "apple.com" in schema_url:
        # e.g. https://valid.apple.com/ct/log_list/schema_versions/log_list_schema_v5.json
        stem = schema_url.rsplit("/", 1)[-1].removesuffix(".json")
        suffix = stem.rsplit("_", 1)[-1] if "_v" in stem else ""
        return f"apple-{suffix}" if suffix.startswith("v") else "apple"
    if "assetVersion" in root or "assetVersionV2" in root:
        return "apple"
    return "google-v3"


# Apple: .../schema_versions/log_list_schema_v5.json; Google: .../ct/log_list/v3/....
_SCHEMA_VERSION_PATTERNS = (
    ("apple", re.compile(r"log_list_schema_v(\d+)\.json")),
    ("google", re.compile(r"/ct/log_list/v(\d+)/")),
)


def _check_schema_version(root: Mapping[str, Any]) -> None:
    """C11/A11: a list of a newer format than ours is refused whole, so the list in force
    stays (and, once it is too old, enforcement stops: C10/A10) rather than half-read."""
    schema_url = root.get("$schema")
    if not isinstance(schema_url, str):
        return
    for family, pattern in _SCHEMA_VERSION_PATTERNS:
        match = pattern.search(schema_url)
        if match is None:
            continue
        digits, supported = match[1].lstrip("0") or "0", MAX_SCHEMA_VERSION[family]
        # Compared by length first: int() of thousands of digits raises ValueError.
        if len(digits) > 6 or int(digits) > supported:
            raise _Unsupported(
                "$schema",
                f"{_shown(schema_url, 160)} is {family} schema v{digits[:12]}, newer than the "
                f"v{supported} this parser reads; a list of a newer format is refused whole, "
                "as Chrome (C11) and Apple (A11) refuse one",
            )
        return


def _parse_root(document: object, source: str) -> LogList:
    if not isinstance(document, Mapping):
        raise _Problem("top level", f"expected a JSON object, got {_json_type(document)}")
    operators = document.get("operators")
    if operators is None:
        if "logs" in document:
            # Google's retired v1/v2 lists put logs at top level and operators as ids.
            raise _Problem(
                "top level", "has 'logs' but no 'operators': v1/v2 lists are not supported"
            )
        raise _Problem("top level", "missing required field 'operators'")
    operators = _expect_array(operators, "operators")
    _check_schema_version(document)
    schema = _detect_schema(document)

    # Top-level fields are read before any entry: a list whose own timestamp or version
    # cannot be read is not skipped around (its age decides whether CT is enforced, C10).
    timestamp = None
    if "log_list_timestamp" in document:
        timestamp = _parse_time(document["log_list_timestamp"], "log_list_timestamp")
    version = document.get("version")
    if version is not None and not isinstance(version, str | int):
        raise _Problem("version", f"expected a string, got {_json_type(version)}")
    is_all_logs = document.get("is_all_logs")
    if is_all_logs is not None and not isinstance(is_all_logs, bool):
        raise _Problem("is_all_logs", f"expected a boolean, got {_json_type(is_all_logs)}")

    logs: dict[bytes, Log] = {}
    operator_names: list[str] = []
    skipped: list[str] = []
    for op_index, operator in enumerate(operators):
        _parse_operator(operator, f"operators[{op_index}]", logs, operator_names, skipped)
    if skipped and not logs:
        raise _Problem(
            "operators",
            f"no log entry can be read ({_count(len(skipped), 'entry', 'entries')} "
            f"unreadable); first: {skipped[0]}",
        )

    extra = {
        key: document[key]
        for key in ("$schema", "assetVersion", "assetVersionV2")
        if key in document
    }
    return LogList(
        logs=types.MappingProxyType(logs),
        timestamp=timestamp,
        source=source,
        schema=schema,
        version=None if version is None else str(version),
        operators=tuple(operator_names),
        is_all_logs=is_all_logs,
        extra=types.MappingProxyType(extra),
        warnings=_list_warnings(logs.values(), skipped),
    )


def _parse_operator(
    operator: object,
    where: str,
    logs: dict[bytes, Log],
    operator_names: list[str],
    skipped: list[str],
) -> None:
    """Add one operator's readable logs to ``logs``; note each unreadable part in ``skipped``
    and go on (C11, A11: an unreadable entry is skipped, the rest of the list kept)."""
    try:
        operator = _expect_object(operator, where)
        name = _expect_str(_require(operator, "name", where), f"{where}.name")
    except _Problem as e:
        # Without a readable name its logs have no operator to count for diversity.
        skipped.append(_bounded(f"{e} (the operator and its logs skipped)"))
        return
    operator_names.append(name)
    for kind, tiled in (("logs", False), ("tiled_logs", True)):
        entries = operator.get(kind)
        if entries is None:
            # The v3 schema requires both arrays, but older snapshots predate tiled_logs.
            if kind == "logs":
                skipped.append(f"{where}: missing required field 'logs' (operator {_shown(name)})")
            continue
        if not isinstance(entries, list):
            skipped.append(f"{where}.{kind}: expected an array, got {_json_type(entries)}")
            continue
        for log_index, entry in enumerate(entries):
            log_where = f"{where}.{kind}[{log_index}]"
            try:
                log = _parse_log(entry, name, tiled, log_where)
            except _Problem as e:
                skipped.append(_bounded(f"{e}{_entry_label(entry)}"))
                continue
            if log.log_id in logs:
                # The first entry stays; a second one for the same log is not a second log.
                skipped.append(
                    f"{log_where}: duplicate log_id {_b64(log.log_id)} "
                    f"(also {_shown(logs[log.log_id].description)})"
                )
                continue
            logs[log.log_id] = log


def _entry_label(entry: object) -> str:
    """`` (log 'Argon 2026')`` for a skipped entry whose description can be read."""
    if isinstance(entry, Mapping) and isinstance(entry.get("description"), str):
        return f" (log {_shown(entry['description'])})"
    return ""


def _shown(text: str, limit: int = 80) -> str:
    """Text from a list in a one-line message: quoted and escaped as a Python literal
    (controls, bidi overrides, backslashes), and bounded."""
    shown = repr(text)
    return shown if len(shown) <= limit else shown[: limit - 1] + "…"


def _bounded(note: str, limit: int = 300) -> str:
    """A problem note cut to a length a log line can carry (a hostile list may hold a
    megabyte-long date); its values are already escaped by _shown or repr."""
    return note if len(note) <= limit else note[: limit - 1] + "…"


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


# At most this many skipped entries (logs, states) are spelled out in a warning.
_SKIPPED_SHOWN = 5


def _list_warnings(logs: Iterable[Log], skipped: list[str]) -> tuple[str, ...]:
    """One line per kind of problem that leaves the list usable (C11/A11, U1-U4, C12)."""
    warnings = []
    if skipped:
        shown = "; ".join(skipped[:_SKIPPED_SHOWN])
        more = len(skipped) - _SKIPPED_SHOWN
        warnings.append(
            f"{_count(len(skipped), 'log entry', 'log entries')} cannot be read and "
            f"{'was' if len(skipped) == 1 else 'were'} skipped, the rest of the list is used "
            f"(C11, A11): {shown}{f'; and {more} more' if more > 0 else ''}"
        )
    listed = list(logs)
    unknown = [log for log in listed if log.unknown_state is not None]
    if unknown:
        names = sorted({_shown(log.unknown_state or "") for log in unknown})
        states = ", ".join(names[:_SKIPPED_SHOWN]) + (", …" if len(names) > _SKIPPED_SHOWN else "")
        warnings.append(
            f"{_count(len(unknown), 'log', 'logs')} in a state this parser does not know "
            f"({states}); their SCTs are not counted (U1-U4): {_names(unknown)}"
        )
    mimics = [log for log in listed if log.mimic]
    if mimics:
        warnings.append(
            f"list names Google's mimic logs, whose private keys are public ({_names(mimics)}); "
            f"their SCTs are never counted (C12)"
        )
    return tuple(warnings)


def _names(logs: list[Log]) -> str:
    shown = ", ".join(
        _shown(log.description) if log.description else _b64(log.log_id)
        for log in logs[:_SKIPPED_SHOWN]
    )
    more = len(logs) - _SKIPPED_SHOWN
    return shown + (f" and {more} more" if more > 0 else "")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _parse_log(entry: object, operator: str, tiled: bool, where: str) -> Log:
    entry = _expect_object(entry, where)
    key = _parse_base64(_require(entry, "key", where), f"{where}.key")
    log_id = _parse_base64(_require(entry, "log_id", where), f"{where}.log_id")
    # RFC 6962 section 3.2: LogID is the SHA-256 hash of the log's DER SubjectPublicKeyInfo.
    if hashlib.sha256(key).digest() != log_id:
        raise _Problem(f"{where}.log_id", "does not match SHA-256 of the key")
    description = entry.get("description", "")
    description = _expect_str(description, f"{where}.description")

    url_field = "submission_url" if tiled else "url"
    url = _optional_str(entry, url_field, where)
    monitoring_url = _optional_str(entry, "monitoring_url", where)
    log_type = _optional_str(entry, "log_type", where)

    mmd = entry.get("mmd")
    if mmd is not None:
        # json.loads accepts Infinity, NaN and 1e999; int() of those raises, not compares.
        whole = isinstance(mmd, int) or (isinstance(mmd, float) and mmd.is_integer())
        if isinstance(mmd, bool) or not whole:
            raise _Problem(f"{where}.mmd", f"expected a whole number of seconds, got {mmd!r}")
        mmd = int(mmd)

    state, state_since, unknown_state = _parse_state(entry.get("state"), f"{where}.state")

    temporal_interval = None
    if "temporal_interval" in entry:
        interval_where = f"{where}.temporal_interval"
        interval = _expect_object(entry["temporal_interval"], interval_where)
        start = _parse_time(
            _require(interval, "start_inclusive", interval_where),
            f"{interval_where}.start_inclusive",
        )
        end = _parse_time(
            _require(interval, "end_exclusive", interval_where),
            f"{interval_where}.end_exclusive",
        )
        temporal_interval = (start, end)

    previous: list[tuple[str, datetime]] = []
    if "previous_operators" in entry:
        history_where = f"{where}.previous_operators"
        history = _expect_array(entry["previous_operators"], history_where)
        for index, item in enumerate(history):
            item_where = f"{history_where}[{index}]"
            item = _expect_object(item, item_where)
            name = _expect_str(_require(item, "name", item_where), f"{item_where}.name")
            end_time = _parse_time(_require(item, "end_time", item_where), f"{item_where}.end_time")
            previous.append((name, end_time))
        previous.sort(key=lambda pair: pair[1])

    return Log(
        log_id=log_id,
        key=key,
        description=description,
        operator=operator,
        url=url,
        state=state,
        state_since=state_since,
        mmd=mmd,
        temporal_interval=temporal_interval,
        previous_operators=tuple(previous),
        tiled=tiled,
        monitoring_url=monitoring_url,
        log_type=log_type,
        unknown_state=unknown_state,
    )


def _parse_state(value: object, where: str) -> tuple[LogState | None, datetime | None, str | None]:
    """(state, since, unknown state name). A state the parser does not know is kept by name
    and the log stays in the list uncounted: shipped clients skip or ignore such a log rather
    than refuse the whole list (U3). Keys beside one known state are ignored (U1)."""
    # All-logs lists have entries with no state at all (test or not-yet-pending logs).
    if value is None:
        return None, None, None
    value = _expect_object(value, where)
    known = [name for name in value if name in _STATE_NAMES]
    if len(known) > 1:
        raise _Problem(where, f"expected exactly one state, found {', '.join(sorted(known))}")
    if not known:
        if not value:
            raise _Problem(where, "expected exactly one state, found nothing")
        return None, None, ", ".join(sorted(value))
    name = known[0]
    details = _expect_object(value[name], f"{where}.{name}")
    since = _parse_time(
        _require(details, "timestamp", f"{where}.{name}"), f"{where}.{name}.timestamp"
    )
    return LogState(name), since, None


_STATE_NAMES = frozenset(state.value for state in LogState)


def _parse_time(value: object, where: str) -> datetime:
    text = _expect_str(value, where)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise _Problem(where, f"not an RFC 3339 date-time: {text!r}") from None
    if moment.tzinfo is None:
        raise _Problem(where, f"date-time has no time zone: {text!r}")
    try:
        return moment.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00:00+01:00 is before datetime.min in UTC
        raise _Problem(where, f"date-time out of range: {text!r}") from None


def _parse_base64(value: object, where: str) -> bytes:
    text = _expect_str(value, where)
    try:
        decoded = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as e:
        raise _Problem(where, f"not valid base64 ({e})") from None
    if not decoded:
        raise _Problem(where, "is empty")
    return decoded


def _optional_str(entry: Mapping[str, Any], name: str, where: str) -> str | None:
    value = entry.get(name)
    if value is None:
        return None
    return _expect_str(value, f"{where}.{name}")


def _require(mapping: Mapping[str, Any], name: str, where: str) -> object:
    if name not in mapping:
        raise _Problem(where, f"missing required field '{name}'")
    return mapping[name]


def _expect_object(value: object, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _Problem(where, f"expected an object, got {_json_type(value)}")
    return value


def _expect_array(value: object, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise _Problem(where, f"expected an array, got {_json_type(value)}")
    return value


def _expect_str(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise _Problem(where, f"expected a string, got {_json_type(value)}")
    return value


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, Mapping):
        return "object"
    return type(value).__name__
