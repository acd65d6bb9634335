"""Keeping the CT log list fresh: sources, fetching, validation, atomic install and age.

One refresh ``attempt`` fetches a list from its source, validates it, refuses a downgrade and
installs it atomically with a metadata sidecar; its outcome is ``updated``, ``unchanged``,
``failed`` or ``refused``. The CLI (``update-log-list``) runs one attempt; the addon runs
them in the background through ``loglist_updater.LogListUpdater``. Both judge age the same
way, by ``confirmation``:

* a list carrying its own ``log_list_timestamp`` (Google v3) is as old as that timestamp;
* otherwise a list fetched from a URL is as old as its last successful fetch (an unchanged
  list, or an HTTP 304, confirms it too);
* a local file is as old as its modification time;
* the bundled snapshot is as old as its recorded snapshot date.

Never by install time: copying an old file does not make it fresh. The sidecar
(``expect-ct-log-list.meta.json``) carries that moment across restarts; it is trusted only
while the SHA-256 it records matches the installed list.

Pure: no mitmproxy import. Network access is urllib over HTTPS verified against certifi's
roots (plus an optional extra bundle), through ``HTTPS_PROXY`` when set, never through the
proxy this runs in.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os
import re
import tempfile
import urllib.parse
from collections.abc import Callable
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from expect_ct import loglist as loglistmod
from expect_ct.loglist import LogList
from expect_ct.loglist_fetch import FetchError
from expect_ct.loglist_fetch import FetchOptions
from expect_ct.loglist_fetch import SourceError
from expect_ct.loglist_fetch import fetch_url
from expect_ct.loglist_fetch import read_file
from expect_ct.records import rfc3339

UTC = datetime.UTC
APPLE_LOG_LIST_URL = "https://valid.apple.com/ct/log_list/current_log_list.json"
INSTALLED_FILENAME = loglistmod.INSTALLED_FILENAME
METADATA_SUFFIX = ".meta.json"
DEFAULT_INTERVAL = 86400
MIN_INTERVAL = 60

UPDATED = "updated"
UNCHANGED = "unchanged"
FAILED = "failed"
REFUSED = "refused"

# How a list's age is measured (ListMetadata.confirmed_by).
BY_LIST_TIMESTAMP = "log_list_timestamp"
BY_FETCH = "last successful fetch"
BY_FILE_MTIME = "file modification time"
BY_SNAPSHOT = "bundled snapshot date"

CHROME_LIST_HOST = "gstatic.com"
CHROME_LIST_PATH = "/ct/log_list"
CHROME_POLICY_NOTE = (
    "Chrome's log lists may not be used to facilitate CT enforcement in TLS clients other than "
    "Chrome without explicit written permission from Chrome's CT team (acceptable-use policy "
    "of 2025-06-25, GoogleChrome/CertificateTransparency log_lists.md)"
)
GOOGLE_REFUSAL = (
    "'google' is not a log-list source: " + CHROME_POLICY_NOTE + "; since 2026 the lists Google "
    "serves to third-party clients are frozen and carry 'mimic' logs whose private keys are "
    "public. Use 'apple', an https:// URL of a list you may use, a file path, or 'off'."
)


class RefusedList(Exception):
    """A valid list that must not replace the current one (a downgrade)."""


# ------------------------------------------------------------------------------ sources


@dataclass(frozen=True)
class Source:
    """Where lists come from: ``name`` as configured (``apple``, a URL or a path), and the
    resolved ``url`` or ``path`` (exactly one is set)."""

    name: str
    url: str | None = None
    path: str | None = None


def is_chrome_log_list(url: str) -> bool:
    parts = urllib.parse.urlsplit(url)
    host = (parts.hostname or "").lower()
    return (
        host == CHROME_LIST_HOST or host.endswith("." + CHROME_LIST_HOST)
    ) and parts.path.startswith(CHROME_LIST_PATH)


def parse_source(
    text: str, *, log_list_configured: bool = False, allow_chrome: bool = False
) -> Source | None:
    """The source named by ``expect_ct_log_list_update`` (or ``--source``); None for ``off``.

    ``auto`` is ``apple`` unless the user chose a list with ``expect_ct_log_list``.
    """
    value = text.strip()
    word = value.lower()
    if word == "auto":
        word = value = "off" if log_list_configured else "apple"
    if word == "off":
        return None
    if word == "apple":
        return Source("apple", url=APPLE_LOG_LIST_URL)
    if word in ("google", "chrome"):
        raise SourceError(GOOGLE_REFUSAL)
    if not value:
        raise SourceError("empty log-list source: use apple, an https:// URL, a file path or off")
    scheme = urllib.parse.urlsplit(value).scheme.lower()
    if scheme == "https":
        if is_chrome_log_list(value) and not allow_chrome:
            raise SourceError(f"refusing {value} as a CT enforcement list: {CHROME_POLICY_NOTE}")
        if not urllib.parse.urlsplit(value).hostname:
            raise SourceError(f"{value}: no host name in the URL")
        return Source(value, url=value)
    if scheme in ("http", "ftp", "file", "data"):
        raise SourceError(
            f"{value}: only https URLs, 'apple' or a local file path are accepted "
            "(a log list decides what is blocked; fetch it over verified HTTPS)"
        )
    return Source(value, path=os.path.abspath(os.path.expanduser(value)))


# ----------------------------------------------------------------------------- metadata


@dataclass(frozen=True)
class ListMetadata:
    """What is known about a list beyond its content; stored as the sidecar JSON."""

    source: str
    confirmed: datetime.datetime | None  # the list's age is measured from here
    confirmed_by: str
    sha256: str
    logs: int
    schema: str
    version: str | None = None
    list_timestamp: datetime.datetime | None = None
    fetched: datetime.datetime | None = None  # the last successful fetch or read
    etag: str | None = None
    last_modified: str | None = None

    def age(self, now: datetime.datetime) -> datetime.timedelta | None:
        return None if self.confirmed is None else now - self.confirmed

    def age_days(self, now: datetime.datetime) -> float | None:
        age = self.age(now)
        return None if age is None else round(age / datetime.timedelta(days=1), 2)

    def stale(self, now: datetime.datetime, max_age_days: float | None) -> bool:
        """Older than ``max_age_days`` (None or 0: never stale); undated lists are stale."""
        if not max_age_days:
            return False
        age = self.age(now)
        return age is None or age > datetime.timedelta(days=max_age_days)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = dataclasses.asdict(self)
        for key in ("confirmed", "list_timestamp", "fetched"):
            value = out[key]
            out[key] = None if value is None else value.astimezone(UTC).isoformat()
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ListMetadata:
        """Raises ValueError (with what is wrong) for anything but what to_json wrote."""
        names = {f.name for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {k: v for k, v in data.items() if k in names}
        for key in ("confirmed", "list_timestamp", "fetched"):
            text = values.get(key)
            if text is not None:
                if not isinstance(text, str):
                    raise ValueError(f"{key}: expected a date-time string")
                moment = datetime.datetime.fromisoformat(text)
                if moment.tzinfo is None:
                    raise ValueError(f"{key}: date-time has no time zone")
                values[key] = moment.astimezone(UTC)
        for key in ("source", "confirmed_by", "sha256", "schema"):
            if not isinstance(values.get(key), str):
                raise ValueError(f"{key}: expected a string")
        if not isinstance(values.get("logs"), int):
            raise ValueError("logs: expected a number")
        return cls(**values)


@dataclass(frozen=True)
class CurrentList:
    """A parsed list together with its metadata: what the addon judges connections by."""

    log_list: LogList = dataclasses.field(repr=False)  # hundreds of logs: not in reprs
    metadata: ListMetadata


def metadata_path(list_path: str) -> str:
    """``<confdir>/expect-ct-log-list.json`` -> ``<confdir>/expect-ct-log-list.meta.json``."""
    return os.path.splitext(list_path)[0] + METADATA_SUFFIX


def installed_path(confdir: str) -> str:
    return os.path.join(os.path.expanduser(confdir), INSTALLED_FILENAME)


def describe(log_list: LogList, *, source: str, sha256: str, **when: Any) -> ListMetadata:
    """Metadata for ``log_list``; ``when`` gives ``confirmed``/``confirmed_by``/``fetched``..."""
    return ListMetadata(
        source=source,
        sha256=sha256,
        logs=len(log_list),
        schema=log_list.schema,
        version=list_version_text(log_list),
        list_timestamp=content_timestamp(log_list),
        **when,
    )


def content_timestamp(log_list: LogList) -> datetime.datetime | None:
    """The publication time written in the list itself (Google's ``log_list_timestamp``)."""
    if log_list.schema.startswith("apple"):
        # The bundled Apple snapshot carries its capture date as .timestamp; that is ours,
        # not Apple's.
        return None
    return log_list.timestamp


def confirmation(
    log_list: LogList, fallback: datetime.datetime | None, fallback_by: str
) -> dict[str, Any]:
    """The age rule: the list's own timestamp when it has one, else the source's moment."""
    stamped = content_timestamp(log_list)
    if stamped is not None:
        return {"confirmed": stamped, "confirmed_by": BY_LIST_TIMESTAMP}
    return {"confirmed": fallback, "confirmed_by": fallback_by}


# ----------------------------------------------------------------------------- versions


def list_version_text(log_list: LogList) -> str | None:
    """Google ``version``; Apple ``version`` with its ``assetVersion``, e.g. ``511/32``."""
    asset = log_list.extra.get("assetVersion")
    if log_list.schema.startswith("apple") and asset is not None:
        return f"{log_list.version or '-'}/{asset}"
    return log_list.version


def _number(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def _dotted(value: str | None) -> tuple[int, ...] | None:
    if value is None or not re.fullmatch(r"\d+(\.\d+)*", value):
        return None
    return tuple(int(part) for part in value.split("."))


def _version_parts(log_list: LogList) -> tuple[str, list[object]]:
    if log_list.schema.startswith("apple"):
        return "apple", [_number(log_list.version), _number(log_list.extra.get("assetVersion"))]
    return "google", [_dotted(log_list.version), content_timestamp(log_list)]


def compare_versions(new: LogList, old: LogList) -> int | None:
    """-1, 0 or 1 as ``new``'s version is lower, equal or higher than ``old``'s; None when
    they cannot be compared (different publishers, or no version on either side).

    Google: ``version`` (dotted numbers), then ``log_list_timestamp``; Apple: ``version``,
    then ``assetVersion``. The first component both lists have and that differs decides.
    """
    new_family, new_parts = _version_parts(new)
    old_family, old_parts = _version_parts(old)
    if new_family != old_family:
        return None
    compared = False
    for a, b in zip(new_parts, old_parts, strict=True):
        if a is None or b is None:
            continue
        compared = True
        if a != b:
            return -1 if a < b else 1  # type: ignore[operator]
    return 0 if compared else None


# ------------------------------------------------------------------------------ loading


def validate(data: bytes, *, source: str) -> LogList:
    """Parse and check a downloaded list: valid schema, every log id the SHA-256 of its key
    (LogList does both), at least one log whose SCTs can count."""
    log_list = LogList.from_json(data, source=source)
    if not len(log_list):
        raise loglistmod.InvalidLogList(f"{source} lists no CT logs (every SCT would be unknown)")
    if not any(log.admissible for log in log_list.logs.values()):
        raise loglistmod.InvalidLogList(
            f"{source} lists no usable CT logs: none is qualified, usable or readonly"
        )
    return log_list


def _mtime(path: str) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(os.stat(path).st_mtime, UTC)


def load_file(path: str) -> CurrentList:
    """A list file the user named (``expect_ct_log_list``): its own timestamp, else mtime."""
    path = os.path.expanduser(path)
    data = read_file(path)
    log_list = LogList.from_json(data, source=path)
    when = confirmation(log_list, _mtime(path), BY_FILE_MTIME)
    return CurrentList(
        log_list, describe(log_list, source=path, sha256=_sha256(data), fetched=None, **when)
    )


def read_metadata(list_path: str) -> ListMetadata | None:
    """The sidecar of ``list_path``, or None when it is missing or unreadable."""
    try:
        with open(metadata_path(list_path), encoding="utf-8") as f:
            return ListMetadata.from_json(json.load(f))
    except (OSError, ValueError, TypeError, AttributeError):
        return None


def load_installed(list_path: str) -> CurrentList | None:
    """The installed list with its sidecar; None when nothing is installed.

    Without a matching sidecar (an older install, or a file replaced by hand) the list is
    judged like any local file: its own timestamp, else its modification time.
    Raises InvalidLogList when the file is there but unusable.
    """
    if not os.path.exists(list_path):
        return None
    data = read_file(list_path)
    log_list = LogList.from_json(data, source=list_path)
    digest = _sha256(data)
    metadata = read_metadata(list_path)
    if metadata is None or metadata.sha256 != digest:
        when = confirmation(log_list, _mtime(list_path), BY_FILE_MTIME)
        metadata = describe(log_list, source=list_path, sha256=digest, **when)
    return CurrentList(log_list, metadata)


def bundled() -> CurrentList:
    log_list = LogList.bundled()
    meta = log_list.extra.get("meta", {})
    data_sha = meta.get("sha256") if isinstance(meta, Mapping) else None
    return CurrentList(
        log_list,
        describe(
            log_list,
            source="bundled",
            sha256=data_sha if isinstance(data_sha, str) else _bundled_sha256(),
            confirmed=log_list.timestamp,  # the snapshot date (data/apple_log_list.meta.json)
            confirmed_by=BY_SNAPSHOT,
        ),
    )


def _bundled_sha256() -> str:
    from importlib import resources

    data = (resources.files("expect_ct") / "data" / loglistmod.BUNDLED_LIST).read_bytes()
    return _sha256(data)


@dataclass(frozen=True)
class StartChoice:
    current: CurrentList
    why: str  # one line for mitmproxy's event log
    problem: str | None = None  # an installed list that could not be used


def choose_start_list(confdir: str, configured_path: str | None = None) -> StartChoice:
    """The list to start with. A configured path wins (InvalidLogList propagates); else the
    installed list when it is fresher than the bundled snapshot, even with updates off."""
    if configured_path:
        current = load_file(configured_path)
        return StartChoice(current, f"expect_ct_log_list {current.metadata.source}")
    snapshot = bundled()
    path = installed_path(confdir)
    try:
        installed = load_installed(path)
    except (loglistmod.InvalidLogList, FetchError) as e:
        return StartChoice(snapshot, "the bundled snapshot", f"ignoring installed {path}: {e}")
    if installed is None:
        return StartChoice(snapshot, "the bundled snapshot (nothing installed)")
    mine, theirs = installed.metadata.confirmed, snapshot.metadata.confirmed
    if mine is not None and (theirs is None or mine > theirs):
        return StartChoice(installed, f"installed {path} (fresher than the bundled snapshot)")
    return StartChoice(snapshot, f"the bundled snapshot (fresher than installed {path})")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ------------------------------------------------------------------------------ install


def write_atomically(data: bytes, out: str) -> None:
    """Write ``out`` so a reader sees the old file or the new one, never a mix."""
    directory = os.path.dirname(os.path.abspath(out))
    os.makedirs(directory, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=directory, prefix=".expect-ct-log-list.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temp, 0o666 & ~umask)
        os.replace(temp, out)
    except BaseException:
        try:
            os.unlink(temp)
        except OSError:
            pass
        raise


def install(out: str, data: bytes | None, metadata: ListMetadata) -> None:
    """Install the list (unless ``data`` is None: only the metadata changed), then its
    sidecar. A crash in between leaves a sidecar whose sha256 no longer matches, which
    load_installed ignores."""
    if data is not None:
        write_atomically(data, out)
    text = json.dumps(metadata.to_json(), indent=1, sort_keys=True) + "\n"
    write_atomically(text.encode(), metadata_path(out))


def _installed_sha256(out: str) -> str | None:
    try:
        return _sha256(read_file(out))
    except FetchError:
        return None


# ------------------------------------------------------------------------------ attempt


@dataclass(frozen=True)
class Attempt:
    """One refresh: its outcome and the list in force after it (None only when there was
    no list before and none could be had)."""

    source: str
    outcome: str
    current: CurrentList | None
    error: str | None
    at: datetime.datetime
    data_changed: bool = False  # the list itself (not only its confirmation) is new

    def event(self, now: datetime.datetime | None = None) -> dict[str, Any]:
        """The fields of the contract's ``log_list`` event (``time``/``event`` excluded).
        ``version``, ``list_timestamp``, ``confirmed``, ``age_days`` and ``logs`` describe
        the list in force after the attempt."""
        meta = self.current.metadata if self.current else None
        when = now or self.at
        return {
            "source": self.source,
            "outcome": self.outcome,
            "version": meta.version if meta else None,
            "list_timestamp": iso(meta.list_timestamp) if meta else None,
            "confirmed": iso(meta.confirmed) if meta else None,
            "age_days": meta.age_days(when) if meta else None,
            "logs": meta.logs if meta else None,
            "error": self.error,
        }


def iso(moment: datetime.datetime | None) -> str | None:
    """RFC 3339 UTC with whole seconds, as every event's time fields use; None stays None."""
    return None if moment is None else rfc3339(moment)


def attempt(
    source: Source,
    out: str,
    baseline: CurrentList | None,
    options: FetchOptions,
    *,
    now: datetime.datetime | None = None,
) -> Attempt:
    """Fetch (or read) ``source`` once; install the result at ``out`` when it is new.

    ``baseline`` is the list to compare with (the one in force): the same bytes are
    ``unchanged`` (but confirmed again), a lower version is ``refused``, and any problem
    is ``failed``. Nothing is raised for a problem with the source; the baseline stays.
    """
    at = now or datetime.datetime.now(UTC)

    def result(
        outcome: str, current: CurrentList | None, error: str | None, changed: bool = False
    ) -> Attempt:
        return Attempt(source.name, outcome, current, error, at, changed)

    try:
        return _attempt(source, out, baseline, options, at, result)
    except (FetchError, SourceError, loglistmod.InvalidLogList) as e:
        return result(FAILED, baseline, f"{e}; keeping the current list")
    except RefusedList as e:
        return result(REFUSED, baseline, str(e))
    except OSError as e:
        return result(FAILED, baseline, f"cannot install {out}: {e.strerror or e}")


def _attempt(
    source: Source,
    out: str,
    baseline: CurrentList | None,
    options: FetchOptions,
    at: datetime.datetime,
    result: Callable[..., Attempt],
) -> Attempt:
    installed_sha = _installed_sha256(out)
    previous = baseline.metadata if baseline else None
    same_source = previous is not None and previous.source == source.name
    if source.url is not None:
        conditional = same_source and previous is not None and installed_sha == previous.sha256
        fetched = fetch_url(
            source.url,
            options,
            etag=previous.etag if conditional and previous else None,
            last_modified=previous.last_modified if conditional and previous else None,
        )
        validators: dict[str, Any] = {"etag": fetched.etag, "last_modified": fetched.last_modified}
        if fetched.data is None:  # 304: the copy we have is current, confirmed now
            assert baseline is not None
            when = confirmation(baseline.log_list, at, BY_FETCH)
            metadata = dataclasses.replace(baseline.metadata, fetched=at, **validators, **when)
            install(out, None, metadata)
            return result(UNCHANGED, CurrentList(baseline.log_list, metadata), None)
        data, moment, moment_by = fetched.data, at, BY_FETCH
    else:
        assert source.path is not None
        validators = {}
        data = read_file(source.path)
        moment, moment_by = _mtime(source.path), BY_FILE_MTIME
    digest = _sha256(data)
    if baseline is not None and digest == baseline.metadata.sha256:
        log_list = baseline.log_list  # the same object: caches keyed on it stay valid
    else:
        log_list = validate(data, source=source.name)
    when = confirmation(log_list, moment, moment_by)
    metadata = describe(log_list, source=source.name, sha256=digest, fetched=at, **when)
    metadata = dataclasses.replace(metadata, **validators)
    if baseline is not None and digest == baseline.metadata.sha256:
        install(out, None if installed_sha == digest else data, metadata)
        return result(UNCHANGED, CurrentList(log_list, metadata), None)
    if baseline is not None and compare_versions(log_list, baseline.log_list) == -1:
        raise RefusedList(
            f"{source.name} offers version {metadata.version}, lower than the current "
            f"{baseline.metadata.version} ({baseline.metadata.source}): not installed, "
            "a log list is never downgraded"
        )
    install(out, data, metadata)
    return result(UPDATED, CurrentList(log_list, metadata), None, True)
