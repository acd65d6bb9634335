"""The log-list updater core against a real HTTPS mirror on 127.0.0.1 with its own test root.

Each test installs into a temporary confdir and reads back exactly what the addon would load
(``load_installed`` / ``choose_start_list``), so the age rules are checked end to end: a list's
age is the time since its source last confirmed it, never its install time.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import queue
import socket
import threading
from pathlib import Path
from typing import Any

import pytest

from expect_ct import loglist_update as update
from expect_ct.loglist import InvalidLogList
from expect_ct.loglist import LogList
from expect_ct.loglist_fetch import FetchOptions
from expect_ct.loglist_fetch import SourceError
from expect_ct.loglist_fetch import points_at_self
from expect_ct.loglist_updater import LogListUpdater
from expect_ct.loglist_updater import retry_delay
from support import pki
from support.listserver import ListServer
from support.listserver import apple_list
from support.listserver import google_list

UTC = datetime.UTC
NOW = datetime.datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
DAY = datetime.timedelta(days=1)
EVENT_KEYS = {
    "source",
    "outcome",
    "version",
    "list_timestamp",
    "confirmed",
    "age_days",
    "logs",
    "error",
}


@pytest.fixture(scope="module")
def logs() -> tuple[pki.TestLog, pki.TestLog]:
    return pki.make_log("Alpha Log", "Alpha"), pki.make_log("Beta Log", "Beta")


@pytest.fixture
def out(tmp_path: Path) -> Path:
    return tmp_path / "confdir" / update.INSTALLED_FILENAME


def trusting(server: ListServer, **extra: Any) -> FetchOptions:
    # Tests must not depend on the environment's proxies unless they set them.
    return FetchOptions(cafile=str(server.root_pem), timeout=10, use_env_proxy=False, **extra)


def source(server: ListServer, path: str = "/list.json") -> update.Source:
    parsed = update.parse_source(server.url(path))
    assert parsed is not None
    return parsed


def files_in(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


# ------------------------------------------------------------------------------ sources


def test_parse_source_words_urls_and_paths(tmp_path: Path) -> None:
    apple = update.parse_source("apple")
    assert apple is not None and apple.url == update.APPLE_LOG_LIST_URL
    assert update.parse_source("auto") == apple
    assert update.parse_source("auto", log_list_configured=True) is None
    assert update.parse_source("off") is None
    url = update.parse_source("https://mirror.example/ct.json")
    assert url is not None and url.url == "https://mirror.example/ct.json" and url.path is None
    path = update.parse_source(str(tmp_path / "list.json"))
    assert path is not None and path.path == str(tmp_path / "list.json") and path.url is None


@pytest.mark.parametrize(
    "text, message",
    [
        ("google", "mimic"),
        ("http://mirror.example/list.json", "only https"),
        ("file:///etc/list.json", "only https"),
        ("https://www.gstatic.com/ct/log_list/v3/log_list.json", "acceptable-use policy"),
        ("", "empty"),
    ],
)
def test_parse_source_refuses(text: str, message: str) -> None:
    with pytest.raises(SourceError, match=message):
        update.parse_source(text)


def test_chrome_url_allowed_only_with_permission() -> None:
    url = "https://www.gstatic.com/ct/log_list/v3/log_list.json"
    allowed = update.parse_source(url, allow_chrome=True)
    assert allowed is not None and allowed.url == url


# ----------------------------------------------------------------------------- versions


def test_compare_versions(logs: tuple[pki.TestLog, pki.TestLog]) -> None:
    def load(data: bytes) -> LogList:
        return LogList.from_json(data, source="test")

    assert update.compare_versions(load(apple_list(logs, 510)), load(apple_list(logs, 511))) == -1
    assert update.compare_versions(load(apple_list(logs, 512)), load(apple_list(logs, 511))) == 1
    # Same version: assetVersion decides.
    older_asset = load(apple_list(logs, 511, asset=3))
    assert update.compare_versions(older_asset, load(apple_list(logs, 511, asset=4))) == -1
    assert update.compare_versions(older_asset, older_asset) == 0
    g1 = load(google_list(logs, "9.10", NOW))
    assert update.compare_versions(g1, load(google_list(logs, "9.9", NOW))) == 1  # numeric
    # Same version, older timestamp: lower.
    assert update.compare_versions(load(google_list(logs, "9.10", NOW - DAY)), g1) == -1
    # Different publishers cannot be compared.
    assert update.compare_versions(g1, load(apple_list(logs, 1))) is None


# ---------------------------------------------------------------------------- attempts


def test_updated_installs_the_list_and_its_metadata(
    mirror: ListServer, out: Path, logs: tuple[pki.TestLog, pki.TestLog]
) -> None:
    body = apple_list(logs, 600)
    mirror.serve("/list.json", body)
    baseline = update.bundled()
    result = update.attempt(source(mirror), str(out), baseline, trusting(mirror), now=NOW)
    assert result.outcome == update.UPDATED, result.error
    assert result.data_changed
    assert out.read_bytes() == body
    assert files_in(out.parent) == [update.INSTALLED_FILENAME, "expect-ct-log-list.meta.json"]
    assert result.current is not None
    meta = result.current.metadata
    # Apple's list has no timestamp: confirmed by this fetch.
    assert meta.confirmed == NOW and meta.confirmed_by == update.BY_FETCH
    assert meta.version == "600/1" and meta.logs == 2 and meta.source == mirror.url("/list.json")
    event = result.event(NOW + DAY)
    assert set(event) == EVENT_KEYS
    assert event["outcome"] == "updated" and event["error"] is None
    assert event["confirmed"] == "2026-12-05T12:00:00Z" and event["age_days"] == 1.0
    assert event["logs"] == 2 and event["list_timestamp"] is None
    # What the addon loads at the next start: the same metadata.
    installed = update.load_installed(str(out))
    assert installed is not None and installed.metadata == meta


def test_google_list_is_dated_by_its_own_timestamp_not_the_fetch(
    mirror: ListServer, out: Path, logs: tuple[pki.TestLog, pki.TestLog]
) -> None:
    stamped = NOW - 80 * DAY
    mirror.serve("/list.json", google_list(logs, "7.1", stamped))
    result = update.attempt(source(mirror), str(out), None, trusting(mirror), now=NOW)
    assert result.outcome == update.UPDATED and result.current is not None
    meta = result.current.metadata
    assert meta.confirmed == stamped and meta.confirmed_by == update.BY_LIST_TIMESTAMP
    assert meta.stale(NOW, 70)  # fetched just now, still 80 days old
    assert result.event()["list_timestamp"] == "2026-09-16T12:00:00Z"


def test_unchanged_list_confirms_it_and_resets_its_age(
    mirror: ListServer, out: Path, logs: tuple[pki.TestLog, pki.TestLog]
) -> None:
    mirror.serve("/list.json", apple_list(logs, 600))
    first = update.attempt(source(mirror), str(out), None, trusting(mirror), now=NOW)
    assert first.current is not None
    later = NOW + 65 * DAY
    assert first.current.metadata.stale(later, 60)
    second = update.attempt(source(mirror), str(out), first.current, trusting(mirror), now=later)
    assert second.outcome == update.UNCHANGED, second.error
    assert not second.data_changed
    assert second.current is not None
    assert second.current.log_list is first.current.log_list  # caches keyed on it stay valid
    assert second.current.metadata.confirmed == later
    assert not second.current.metadata.stale(later, 60)
    assert second.event()["age_days"] == 0.0
    # The second request was conditional and answered 304; the confirmation persisted.
    assert mirror.requests[0][1] is None and mirror.requests[1][1] is not None
    installed = update.load_installed(str(out))
    assert installed is not None and installed.metadata.confirmed == later


def test_unchanged_without_etag_compares_content(
    tmp_path: Path, out: Path, logs: tuple[pki.TestLog, pki.TestLog]
) -> None:
    listfile = tmp_path / "list.json"
    listfile.write_bytes(apple_list(logs, 600))
    src = update.parse_source(str(listfile))
    assert src is not None
    first = update.attempt(src, str(out), None, FetchOptions(), now=NOW)
    assert first.outcome == update.UPDATED
    second = update.attempt(src, str(out), first.current, FetchOptions(), now=NOW + DAY)
    assert second.outcome == update.UNCHANGED


@pytest.mark.parametrize(
    "older, newer",
    [
        ("apple:599", "apple:600"),
        ("google:7.1", "google:7.2"),
    ],
)
def test_downgrade_is_refused_and_the_current_list_kept(
    mirror: ListServer,
    out: Path,
    logs: tuple[pki.TestLog, pki.TestLog],
    older: str,
    newer: str,
) -> None:
    def body(spec: str) -> bytes:
        kind, version = spec.split(":")
        if kind == "apple":
            return apple_list(logs, int(version))
        return google_list(logs, version, NOW - DAY)

    mirror.serve("/list.json", body(newer))
    first = update.attempt(source(mirror), str(out), None, trusting(mirror), now=NOW)
    assert first.outcome == update.UPDATED
    mirror.serve("/list.json", body(older))
    second = update.attempt(source(mirror), str(out), first.current, trusting(mirror), now=NOW)
    assert second.outcome == update.REFUSED
    assert second.error is not None and "never downgraded" in second.error
    assert second.current is first.current
    assert out.read_bytes() == body(newer)
    assert second.event()["version"] == first.event()["version"]


def test_apple_list_older_than_the_bundled_one_is_refused(
    mirror: ListServer, out: Path, logs: tuple[pki.TestLog, pki.TestLog]
) -> None:
    mirror.serve("/list.json", apple_list(logs, 500))  # bundled is 511
    result = update.attempt(source(mirror), str(out), update.bundled(), trusting(mirror), now=NOW)
    assert result.outcome == update.REFUSED and "511/32" in (result.error or "")
    assert not out.exists()


def _body(kind: str, logs: tuple[pki.TestLog, pki.TestLog]) -> bytes:
    if kind == "bad json":
        return b"<html>maintenance</html>"
    if kind == "no logs":
        return json.dumps({"operators": []}).encode()
    if kind == "no usable logs":
        return google_list(logs, "1", NOW, state="rejected")
    document = pki.log_list_json([pki.LogEntry(logs[0])], timestamp=NOW)
    document["operators"][0]["logs"][0]["log_id"] = pki.log_list_json(
        [pki.LogEntry(logs[1])], timestamp=NOW
    )["operators"][0]["logs"][0]["log_id"]
    return json.dumps(document).encode()  # "key mismatch"


@pytest.mark.parametrize(
    "kind, message",
    [
        ("bad json", "not valid JSON"),
        ("no logs", "lists no CT logs"),
        ("no usable logs", "no usable CT logs"),
        ("key mismatch", "does not match SHA-256 of the key"),
    ],
)
def test_invalid_list_fails_and_keeps_the_current_one(
    mirror: ListServer,
    out: Path,
    logs: tuple[pki.TestLog, pki.TestLog],
    kind: str,
    message: str,
) -> None:
    mirror.serve("/list.json", apple_list(logs, 600))
    first = update.attempt(source(mirror), str(out), None, trusting(mirror), now=NOW)
    installed_before = out.read_bytes()
    mirror.serve("/list.json", _body(kind, logs))
    result = update.attempt(source(mirror), str(out), first.current, trusting(mirror), now=NOW)
    assert result.outcome == update.FAILED
    assert result.error is not None and message in result.error
    assert "keeping the current list" in result.error
    assert result.current is first.current
    assert out.read_bytes() == installed_before
    assert result.event()["logs"] == 2  # the list in force


def test_source_down_fails_and_keeps_the_current_list(
    mirror: ListServer, out: Path, logs: tuple[pki.TestLog, pki.TestLog]
) -> None:
    mirror.serve("/list.json", apple_list(logs, 600))
    first = update.attempt(source(mirror), str(out), None, trusting(mirror), now=NOW)
    mirror.down()
    result = update.attempt(source(mirror), str(out), first.current, trusting(mirror), now=NOW)
    assert result.outcome == update.FAILED and "cannot fetch" in (result.error or "")
    assert result.current is first.current


def test_bad_tls_fails(
    mirror: ListServer, out: Path, logs: tuple[pki.TestLog, pki.TestLog]
) -> None:
    mirror.serve("/list.json", apple_list(logs, 600))
    wrong = FetchOptions(cafile=str(mirror.other_root_pem), timeout=10, use_env_proxy=False)
    result = update.attempt(source(mirror), str(out), None, wrong, now=NOW)
    assert result.outcome == update.FAILED
    assert "certificate verify failed" in (result.error or "")
    assert not out.exists()


def test_extra_ca_adds_to_certifi(
    mirror: ListServer, out: Path, logs: tuple[pki.TestLog, pki.TestLog]
) -> None:
    mirror.serve("/list.json", apple_list(logs, 600))
    options = FetchOptions(extra_cafile=str(mirror.root_pem), timeout=10, use_env_proxy=False)
    assert update.attempt(source(mirror), str(out), None, options).outcome == update.UPDATED
    missing = FetchOptions(extra_cafile=str(out.parent / "nope.pem"), use_env_proxy=False)
    result = update.attempt(source(mirror), str(out), None, missing)
    assert result.outcome == update.FAILED and "cannot load CA certificates" in (result.error or "")


def test_https_proxy_from_the_environment_is_used(
    mirror: ListServer,
    out: Path,
    logs: tuple[pki.TestLog, pki.TestLog],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    mirror.serve("/list.json", apple_list(logs, 600))
    options = FetchOptions(cafile=str(mirror.root_pem), timeout=10)
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")
    result = update.attempt(source(mirror), str(out), None, options)
    assert result.outcome == update.FAILED and not mirror.requests
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    assert update.attempt(source(mirror), str(out), None, options).outcome == update.UPDATED


@pytest.mark.parametrize("listen_host", ["127.0.0.1", "", "0.0.0.0"])
def test_never_through_the_proxy_itself(
    mirror: ListServer,
    out: Path,
    monkeypatch: pytest.MonkeyPatch,
    listen_host: str,
) -> None:
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("https_proxy", "http://localhost:8080")
    monkeypatch.setenv("HTTPS_PROXY", "http://localhost:8080")
    options = FetchOptions(cafile=str(mirror.root_pem), own_addresses=((listen_host, 8080),))
    result = update.attempt(source(mirror), str(out), None, options)
    assert result.outcome == update.FAILED and "own listen address" in (result.error or "")
    assert not mirror.requests
    # Nor from it directly.
    own = FetchOptions(use_env_proxy=False, own_addresses=(("127.0.0.1", mirror.port),))
    result = update.attempt(source(mirror), str(out), None, own)
    assert result.outcome == update.FAILED and "own listen address" in (result.error or "")


def test_install_failure_keeps_the_current_list(
    mirror: ListServer, tmp_path: Path, logs: tuple[pki.TestLog, pki.TestLog]
) -> None:
    mirror.serve("/list.json", apple_list(logs, 600))
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    baseline = update.bundled()
    out = blocker / update.INSTALLED_FILENAME
    result = update.attempt(source(mirror), str(out), baseline, trusting(mirror))
    assert result.outcome == update.FAILED and "cannot install" in (result.error or "")
    assert result.current is baseline


def test_install_is_atomic_for_a_concurrent_reader(
    tmp_path: Path, logs: tuple[pki.TestLog, pki.TestLog]
) -> None:
    out = tmp_path / update.INSTALLED_FILENAME
    versions = [apple_list(logs, 600), apple_list(logs[:1], 601)]
    update.write_atomically(versions[0], str(out))
    done = threading.Event()

    def writer() -> None:
        for i in range(200):
            update.write_atomically(versions[i % 2], str(out))
        done.set()

    thread = threading.Thread(target=writer)
    thread.start()
    seen = 0
    while not done.is_set():
        assert out.read_bytes() in versions  # never a mix, never empty
        seen += 1
    thread.join()
    assert seen > 0
    assert files_in(tmp_path) == [update.INSTALLED_FILENAME]  # no temp file left


# ------------------------------------------------------------------------------ age rules


def test_stale_by_content_file_with_a_fresh_mtime_is_stale(
    tmp_path: Path, out: Path, logs: tuple[pki.TestLog, pki.TestLog]
) -> None:
    old = tmp_path / "old-checkout.json"
    old.write_bytes(google_list(logs, "3.0", NOW - 200 * DAY))  # mtime: now
    as_option = update.load_file(str(old))
    assert as_option.metadata.confirmed == NOW - 200 * DAY
    assert as_option.metadata.stale(NOW, 70)
    src = update.parse_source(str(old))
    assert src is not None
    result = update.attempt(src, str(out), None, FetchOptions(), now=NOW)
    assert result.outcome == update.UPDATED
    installed = update.load_installed(str(out))  # installed just now, still 200 days old
    assert installed is not None and installed.metadata.stale(NOW, 70)
    assert installed.metadata.confirmed == NOW - 200 * DAY


def test_local_file_without_timestamp_is_dated_by_its_mtime_not_install_time(
    tmp_path: Path, out: Path, logs: tuple[pki.TestLog, pki.TestLog]
) -> None:
    copy = tmp_path / "apple-copy.json"
    copy.write_bytes(apple_list(logs, 600))
    moment = (NOW - 90 * DAY).timestamp()
    os.utime(copy, (moment, moment))
    src = update.parse_source(str(copy))
    assert src is not None
    result = update.attempt(src, str(out), None, FetchOptions(), now=NOW)
    assert result.outcome == update.UPDATED
    installed = update.load_installed(str(out))
    assert installed is not None
    assert installed.metadata.confirmed == NOW - 90 * DAY
    assert installed.metadata.confirmed_by == update.BY_FILE_MTIME


def test_sidecar_for_other_content_is_ignored(
    mirror: ListServer, out: Path, logs: tuple[pki.TestLog, pki.TestLog]
) -> None:
    mirror.serve("/list.json", apple_list(logs, 600))
    update.attempt(source(mirror), str(out), None, trusting(mirror), now=NOW)
    out.write_bytes(apple_list(logs[:1], 700))  # replaced by hand
    moment = (NOW - 100 * DAY).timestamp()
    os.utime(out, (moment, moment))
    installed = update.load_installed(str(out))
    assert installed is not None and installed.metadata.confirmed == NOW - 100 * DAY
    assert installed.metadata.source == str(out)


def test_start_prefers_the_installed_list_only_when_fresher(
    tmp_path: Path, logs: tuple[pki.TestLog, pki.TestLog]
) -> None:
    confdir = tmp_path / "confdir"
    assert update.choose_start_list(str(confdir)).current.metadata.source == "bundled"
    snapshot = update.bundled().metadata.confirmed
    assert snapshot is not None
    out = confdir / update.INSTALLED_FILENAME
    old = tmp_path / "old.json"
    old.write_bytes(google_list(logs, "1", snapshot - DAY))
    src = update.parse_source(str(old))
    assert src is not None
    update.attempt(src, str(out), None, FetchOptions())
    choice = update.choose_start_list(str(confdir))
    assert choice.current.metadata.source == "bundled" and "fresher than installed" in choice.why
    fresh = tmp_path / "fresh.json"
    fresh.write_bytes(google_list(logs, "2", snapshot + DAY))
    src = update.parse_source(str(fresh))
    assert src is not None
    update.attempt(src, str(out), None, FetchOptions())
    choice = update.choose_start_list(str(confdir))
    assert choice.current.metadata.source == str(fresh)
    assert choice.current.metadata.confirmed == snapshot + DAY
    # A configured list wins whatever its age; a broken installed one falls back with a note.
    assert update.choose_start_list(str(confdir), str(old)).current.metadata.source == str(old)
    out.write_text("{broken")
    choice = update.choose_start_list(str(confdir))
    assert choice.current.metadata.source == "bundled" and "ignoring installed" in (
        choice.problem or ""
    )
    with pytest.raises(InvalidLogList):
        update.choose_start_list(str(confdir), str(out))


# ------------------------------------------------------------------------------- updater


def test_retry_delay_doubles_up_to_the_interval() -> None:
    assert [retry_delay(n, 60, 3600) for n in range(0, 8)] == [
        3600,
        60,
        120,
        240,
        480,
        960,
        1920,
        3600,
    ]


def test_interval_below_the_minimum_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least 60 seconds"):
        LogListUpdater(
            update.Source("apple", url=update.APPLE_LOG_LIST_URL),
            out=str(tmp_path / "x.json"),
            current=update.bundled(),
            interval=59,
        )


def test_updater_retries_with_backoff_warns_once_and_recovers(
    mirror: ListServer,
    out: Path,
    logs: tuple[pki.TestLog, pki.TestLog],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="expect_ct.loglist_updater")
    mirror.serve("/list.json", apple_list(logs, 600))
    mirror.down()
    events: queue.Queue[dict[str, Any]] = queue.Queue()
    updates: list[tuple[LogList, update.ListMetadata]] = []
    baseline = update.bundled()
    updater = LogListUpdater(
        source(mirror),
        out=str(out),
        current=baseline,
        on_update=lambda log_list, meta: updates.append((log_list, meta)),
        on_attempt=events.put,
        interval=3600,
        first_retry=0.05,
        fetch=trusting(mirror),
        max_age_days=60,
    )
    updater.start()
    try:
        failed = [events.get(timeout=60) for _ in range(4)]
        assert [e["outcome"] for e in failed] == ["failed"] * 4
        assert all(e["logs"] == len(baseline.log_list) for e in failed)  # the list kept
        assert updater.current is baseline and not updates
        assert updater.failures >= 4
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and "blocking suspended" in warnings[0].getMessage()
        mirror.up()
        updater.refresh_now()
        while (event := events.get(timeout=60))["outcome"] == "failed":
            pass
        assert event["outcome"] == "updated" and event["version"] == "600/1"
        assert updater.failures == 0
        assert updates and updates[-1][1].version == "600/1"
        assert updater.current.metadata.version == "600/1"
        assert any("reachable again" in r.getMessage() for r in caplog.records)
        # Success: the next attempt is a whole interval away.
        status = updater.status()
        assert status["last_outcome"] == "updated" and status["failures"] == 0
        assert status["next_refresh"] is not None
    finally:
        updater.stop()
    assert not updater.running


def test_updater_backoff_schedule_after_failures(tmp_path: Path) -> None:
    missing = tmp_path / "missing.json"
    updater = LogListUpdater(
        update.Source(str(missing), path=str(missing)),
        out=str(tmp_path / "out.json"),
        current=update.bundled(),
        interval=600,
        first_retry=10,
    )
    delays = []
    for _ in range(8):
        assert updater.attempt().outcome == update.FAILED
        delays.append(retry_delay(updater.failures, updater.first_retry, updater.interval))
    assert delays == [10, 20, 40, 80, 160, 320, 600, 600]


def test_updater_callback_errors_do_not_stop_it(
    mirror: ListServer, out: Path, logs: tuple[pki.TestLog, pki.TestLog]
) -> None:
    mirror.serve("/list.json", apple_list(logs, 600))

    def broken(*args: object) -> None:
        raise RuntimeError("callback bug")

    updater = LogListUpdater(
        source(mirror),
        out=str(out),
        current=update.bundled(),
        on_update=broken,
        on_attempt=broken,
        fetch=trusting(mirror),
    )
    assert updater.attempt().outcome == update.UPDATED
    assert updater.attempt().outcome == update.UNCHANGED
    assert updater.current.metadata.version == "600/1"


def _lan_address() -> str | None:
    """This machine's own non-loopback IPv4 address (a UDP connect sends nothing)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("192.0.2.1", 9))
            address = str(probe.getsockname()[0])
    except OSError:
        return None
    return None if address.startswith("127.") else address


def test_points_at_self_matches_wildcard_listeners_on_any_local_address() -> None:
    assert points_at_self("127.0.0.1", 8080, [("", 8080)])
    assert points_at_self("::1", 8080, [("::", 8080)])
    assert points_at_self("localhost", 8080, [("127.0.0.1", 8080)])
    assert not points_at_self("127.0.0.1", 8081, [("", 8080)])
    assert not points_at_self("203.0.113.77", 8080, [("", 8080)])  # TEST-NET-3: not this host
    lan = _lan_address()
    if lan is None:
        pytest.skip("no non-loopback IPv4 address on this machine")
    assert points_at_self(lan, 8080, [("0.0.0.0", 8080)])
    assert not points_at_self(lan, 8080, [("127.0.0.1", 8080)])


def test_updater_stops_while_waiting_without_an_attempt(tmp_path: Path) -> None:
    attempts: list[dict[str, Any]] = []
    missing = tmp_path / "missing.json"
    updater = LogListUpdater(
        update.Source(str(missing), path=str(missing)),
        out=str(tmp_path / "out.json"),
        current=update.bundled(),
        on_attempt=attempts.append,
        interval=3600,
    )
    updater.start(first_delay=3600)
    assert updater.running and updater.status()["next_refresh"] is not None
    updater.stop()
    assert not updater.running and attempts == [] and updater.attempts == 0
    assert updater.status()["next_refresh"] is None
