"""Tests for expect_ct.store: the Known Expect-CT Host database (RFC 9163 section 2.3.2.2).

Everything runs against real SQLite files in tmp_path, and the multi-process tests use real
child processes (sys.executable). ``python tests/unit/test_store.py`` prints timings of get() and
observe() at 1,000 and 1,000,000 rows (reported, never asserted).
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from collections.abc import Iterator
from datetime import UTC
from datetime import datetime
from datetime import timedelta
from datetime import timezone
from pathlib import Path

import pytest

import support
from expect_ct.store import APPLICATION_ID
from expect_ct.store import MAX_AGE_LIMIT
from expect_ct.store import KnownHost
from expect_ct.store import KnownHostStore
from expect_ct.store import StoreError
from expect_ct.store import canonical_host

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
DAY = 86400
ADDON_DIR = support.REPO / "addon"


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    return tmp_path / "expect-ct.sqlite3"


@pytest.fixture
def store(store_path: Path) -> Iterator[KnownHostStore]:
    with KnownHostStore(store_path) as s:
        yield s


def insert_rows(path: Path, hosts: list[str], *, max_age: int, now: datetime) -> int:
    """Fill a store fast with plain sqlite3 (canonical hosts, report-only, no RFC rules)."""
    now_ms = (now - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)
    conn = sqlite3.connect(path)
    try:
        with conn:
            cursor = conn.executemany(
                "INSERT OR REPLACE INTO known_hosts VALUES (?, 0, NULL, ?, ?, ?)",
                ((h, now_ms + max_age * 1000, now_ms, now_ms) for h in hosts),
            )
        return cursor.rowcount
    finally:
        conn.close()


def raw_rows(path: Path) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT * FROM known_hosts ORDER BY host").fetchall()
    finally:
        conn.close()


# --- canonical_host ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("example.com", "example.com"),
        ("EXAMPLE.Com", "example.com"),
        ("example.com.", "example.com"),
        ("BÜcher.Example.", "xn--bcher-kva.example"),
        ("bücher.example", "xn--bcher-kva.example"),
        ("xn--bcher-kva.example", "xn--bcher-kva.example"),
        ("XN--BCHER-KVA.EXAMPLE", "xn--bcher-kva.example"),
        ("bücher\u3002example", "xn--bcher-kva.example"),  # IDEOGRAPHIC FULL STOP separates labels
        ("\uff45\uff58\uff41\uff4d\uff50\uff4c\uff45.com", "example.com"),  # full-width letters
        # IDNA 2008 / UTS #46 non-transitional: the deviation characters are kept, so these
        # are the names clients send (IDNA 2003 gave "strasse.example" and "fass.example").
        ("straße.example", "xn--strae-oqa.example"),
        ("faß.example", "xn--fa-hia.example"),
        ("Faß.EXAMPLE", "xn--fa-hia.example"),
        ("xn--fa-hia.example", "xn--fa-hia.example"),
        ("βόλος.example", "xn--nxasmm1c.example"),  # final sigma kept (IDNA 2003: σ)
        ("\u0dc1\u0dca\u200d\u0dbb\u0dd3.example", "xn--10cl1a0b660p.example"),  # ZWJ kept
        # An A-label registered under IDNA 2003 (a symbol IDNA 2008 disallows) is on the wire
        # as is and must stay usable as a key.
        ("xn--n3h.net", "xn--n3h.net"),
        ("_dmarc.example", "_dmarc.example"),
        ("localhost", "localhost"),
        ("192.0.2.1", "192.0.2.1"),
        ("192.0.2.1.", "192.0.2.1"),
        ("[2001:DB8:0:0::1]", "2001:db8::1"),
        ("2001:0db8::0001", "2001:db8::1"),
        ("[::1]", "::1"),
        ("[::FFFF:192.0.2.1]", "::ffff:192.0.2.1"),  # RFC 5952 section 5 on every Python
    ],
)
def test_canonical_host(given: str, expected: str) -> None:
    assert canonical_host(given) == expected


@pytest.mark.parametrize(
    ("given", "why"),
    [
        ("", "empty"),
        (".", "empty"),
        ("example..com", "empty label"),
        ("example.com..", "empty label"),
        ("exa mple.com", "letters, digits"),
        ("a/b.example", "letters, digits"),
        ("a\uff0fb.example", "fails IDNA 2008"),  # full-width solidus maps to "/"
        ("*.example", "letters, digits"),
        ("nul\x00.example", "letters, digits"),
        ("example.com:443", "without a port"),
        ("[::1", "unbalanced brackets"),
        ("::1]", "unbalanced brackets"),
        ("[192.0.2.1]", "not an IPv6 address"),
        ("[example.com]", "not an IPv6 address"),
        ("xn--zz.example", "fails IDNA"),
        ("xn--a.example", "fails IDNA"),  # decodes to a control character
        ("xn--.example", "fails IDNA"),
        ("\u2603.net", "fails IDNA 2008"),  # U-label of a symbol: disallowed by IDNA 2008
        ("a\u2488.example", "fails IDNA 2008"),  # maps to "a1." (a dot inside one label)
        ("a\u200db.example", "fails IDNA 2008"),  # ZWJ without its required context
        ("-bücher.example", "fails IDNA 2008"),  # leading hyphen
        ("a" * 64 + ".example", "fails IDNA|letters, digits"),
        (".".join(["a" * 63] * 4), "more than the 253"),
        ("192.0.2.256", "not a valid IPv4 address"),
        ("010.0.0.1", "not a valid IPv4 address"),
        ("1234", "not a valid IPv4 address"),
    ],
)
def test_canonical_host_rejects(given: str, why: str) -> None:
    with pytest.raises(ValueError, match=why) as excinfo:
        canonical_host(given)
    assert repr(given) in str(excinfo.value)


def test_canonical_host_is_idempotent() -> None:
    for host in ("BÜcher.Example.", "[::ffff:192.0.2.1]", "Straße.example", "x.EXAMPLE", "faß.a"):
        once = canonical_host(host)
        assert canonical_host(once) == once


# --- the RFC 9163 section 2.3.2 update table ------------------------------------------------------


@pytest.mark.parametrize(
    ("before", "max_age", "action", "known_after"),
    [
        # (state before, max-age of a valid header on a CT-qualified connection, action, Known?)
        ("absent", 3600, "noted", True),
        ("known", 3600, "updated", True),
        ("expired", 3600, "noted", True),  # an expired host is not Known (section 2.4)
        ("absent", 0, "ignored", False),  # MUST NOT note
        ("known", 0, "removed", False),  # MUST remove
        ("expired", 0, "ignored", False),
    ],
)
def test_observe_table(
    store: KnownHostStore, before: str, max_age: int, action: str, known_after: bool
) -> None:
    if before != "absent":
        store.observe("host.example", max_age=60, enforce=True, report_uri=None, now=NOW)
    now = NOW + timedelta(seconds=30 if before == "known" else 61)
    got_action, entry = store.observe(
        "host.example", max_age=max_age, enforce=False, report_uri="https://r.example/", now=now
    )
    assert got_action == action
    assert (entry is not None) == known_after
    assert store.get("host.example", now=now) == entry
    # max-age=0 and expired rows leave nothing behind in the file.
    assert len(raw_rows(Path(store.path))) == int(known_after)


def test_noted_entry_fields(store: KnownHostStore) -> None:
    action, entry = store.observe(
        "Host.Example", max_age=3600, enforce=True, report_uri="https://r.example/ct", now=NOW
    )
    assert action == "noted"
    assert entry == KnownHost(
        host="host.example",
        enforce=True,
        report_uri="https://r.example/ct",
        expires=NOW + timedelta(seconds=3600),
        noted=NOW,
        last_observed=NOW,
    )
    assert entry.expires.tzinfo is not None and entry.expires.utcoffset() == timedelta(0)


def test_update_replaces_directives_and_keeps_noted(store: KnownHostStore) -> None:
    store.observe("h.example", max_age=DAY, enforce=True, report_uri="https://a.example/", now=NOW)
    later = NOW + timedelta(hours=1)
    action, entry = store.observe(
        "h.example", max_age=60, enforce=False, report_uri=None, now=later
    )
    assert action == "updated"
    assert entry is not None
    assert (entry.enforce, entry.report_uri) == (False, None)
    # Section 2.3.2.2: the expiry counts from this observation, so it may move backwards too.
    assert entry.expires == later + timedelta(seconds=60)
    assert entry.noted == NOW
    assert entry.last_observed == later


def test_identical_header_later_is_an_update_that_moves_expiry(store: KnownHostStore) -> None:
    store.observe("h.example", max_age=DAY, enforce=True, report_uri=None, now=NOW)
    later = NOW + timedelta(seconds=5)
    action, entry = store.observe(
        "h.example", max_age=DAY, enforce=True, report_uri=None, now=later
    )
    assert action == "updated"
    assert entry is not None and entry.expires == later + timedelta(seconds=DAY)


def test_renoting_after_expiry_resets_noted(store: KnownHostStore) -> None:
    store.observe("h.example", max_age=10, enforce=True, report_uri=None, now=NOW)
    later = NOW + timedelta(seconds=11)
    _, entry = store.observe("h.example", max_age=10, enforce=True, report_uri=None, now=later)
    assert entry is not None and entry.noted == later


def test_exact_host_match_only(store: KnownHostStore) -> None:
    # RFC 9163 section 2.3.2.2: Congruent Match, no includeSubDomains.
    store.observe("example.com", max_age=DAY, enforce=True, report_uri=None, now=NOW)
    assert store.get("www.example.com", now=NOW) is None
    assert store.get("com", now=NOW) is None
    assert store.get("EXAMPLE.COM.", now=NOW) is not None


# --- expiry ---------------------------------------------------------------------------------------


def test_expiry_boundary(store: KnownHostStore) -> None:
    # "expired if its Effective Expiration Date is in the past": at the expiry instant it is not.
    _, entry = store.observe("h.example", max_age=100, enforce=True, report_uri=None, now=NOW)
    assert entry is not None
    at_expiry = NOW + timedelta(seconds=100)
    assert not entry.is_expired(at_expiry)
    assert store.get("h.example", now=at_expiry) == entry
    assert store.count(now=at_expiry) == 1
    assert [h.host for h in store.hosts(now=at_expiry)] == ["h.example"]

    just_after = at_expiry + timedelta(milliseconds=1)
    assert entry.is_expired(just_after)
    assert store.count(now=just_after) == 0
    assert list(store.hosts(now=just_after)) == []
    assert len(raw_rows(Path(store.path))) == 1  # count() and hosts() do not write
    assert store.get("h.example", now=just_after) is None
    assert raw_rows(Path(store.path)) == []  # get() pruned it


def test_prune_count_clear_forget(store: KnownHostStore) -> None:
    for i, max_age in enumerate([10, 20, 30, 40]):
        store.observe(f"h{i}.example", max_age=max_age, enforce=False, report_uri=None, now=NOW)
    after_25s = NOW + timedelta(seconds=25)
    assert store.count(now=NOW) == 4
    assert store.count(now=after_25s) == 2
    assert store.prune(after_25s) == 2
    assert store.prune(after_25s) == 0
    assert [h.host for h in store.hosts(now=NOW)] == ["h2.example", "h3.example"]

    assert store.forget("H2.example.", now=NOW) is True
    assert store.forget("h2.example", now=NOW) is False
    assert store.forget("h3.example", now=NOW + timedelta(seconds=50)) is False  # was expired
    assert raw_rows(Path(store.path)) == []  # ... but its row is gone all the same

    store.observe("a.example", max_age=10, enforce=False, report_uri=None, now=NOW)
    store.observe("b.example", max_age=10, enforce=False, report_uri=None, now=NOW)
    assert store.clear() == 2
    assert store.count(now=NOW) == 0


def test_max_age_cap(store_path: Path) -> None:
    with KnownHostStore(store_path, max_age_cap=30 * DAY) as capped:
        assert capped.max_age_cap == 30 * DAY
        _, entry = capped.observe(
            "h.example", max_age=90 * DAY, enforce=True, report_uri=None, now=NOW
        )
        assert entry is not None and entry.expires == NOW + timedelta(days=30)
        _, entry = capped.observe("h.example", max_age=60, enforce=True, report_uri=None, now=NOW)
        assert entry is not None and entry.expires == NOW + timedelta(seconds=60)
        # max-age=0 is below any cap and still removes.
        assert capped.observe("h.example", max_age=0, enforce=True, report_uri=None, now=NOW) == (
            "removed",
            None,
        )


@pytest.mark.parametrize("cap", [0, -1, -(2**40), 1.5, True, "60"])
def test_max_age_cap_below_one_second_or_not_a_number_is_refused(
    store_path: Path, cap: object
) -> None:
    """Issue 17, attack 9: a cap of 0 used to be accepted and broke later store changes."""
    with pytest.raises(ValueError) as excinfo:
        KnownHostStore(store_path, max_age_cap=cap)  # type: ignore[arg-type]
    assert str(excinfo.value) == (
        f"max_age_cap must be a whole number of seconds, at least 1 (or None for no cap), "
        f"not {cap!r}"
    )
    # Refused before the file was touched.
    assert not store_path.exists()
    with KnownHostStore(store_path, max_age_cap=1) as smallest:
        _, entry = smallest.observe("h.example", max_age=3, enforce=True, report_uri=None, now=NOW)
        assert entry is not None and entry.expires == NOW + timedelta(seconds=1)


def test_huge_max_age_is_clamped_to_2_31(store: KnownHostStore) -> None:
    _, entry = store.observe("h.example", max_age=10**30, enforce=True, report_uri=None, now=NOW)
    assert entry is not None and entry.expires == NOW + timedelta(seconds=MAX_AGE_LIMIT)
    assert store.get("h.example", now=NOW) == entry


def test_argument_errors(store: KnownHostStore, store_path: Path) -> None:
    with pytest.raises(ValueError, match="max_age must not be negative"):
        store.observe("h.example", max_age=-1, enforce=True, report_uri=None, now=NOW)
    with pytest.raises(ValueError, match="timezone-aware"):
        store.get("h.example", now=datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="max_age_cap must be a whole number"):
        KnownHostStore(store_path, max_age_cap=0)
    with pytest.raises(ValueError, match="'bad host'"):
        store.get("bad host")
    assert raw_rows(store_path) == []


def test_add_for_preload(store: KnownHostStore) -> None:
    expires = NOW + timedelta(days=365)
    entry = store.add(
        "Preloaded.Example", enforce=True, report_uri="https://r.example/", expires=expires, now=NOW
    )
    assert entry.host == "preloaded.example" and entry.expires == expires and entry.noted == NOW
    assert store.get("preloaded.example", now=NOW) == entry
    # A later header updates it like any Known host.
    later = NOW + timedelta(days=1)
    action, updated = store.observe(
        "preloaded.example", max_age=60, enforce=False, report_uri=None, now=later
    )
    assert action == "updated" and updated is not None and updated.noted == NOW
    with pytest.raises(ValueError, match="is in the past"):
        store.add("old.example", enforce=True, report_uri=None, expires=NOW, now=later)


def test_other_timezones_are_converted(store: KnownHostStore) -> None:
    plus_two = datetime(2026, 3, 1, 14, 0, 0, tzinfo=timezone(timedelta(hours=2)))
    _, entry = store.observe("h.example", max_age=1, enforce=True, report_uri=None, now=plus_two)
    assert entry is not None and entry.noted == datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


# --- persistence, files and errors ---------------------------------------------------------------


def test_persistence_across_reopen(store_path: Path) -> None:
    with KnownHostStore(store_path) as first:
        _, a = first.observe("a.example", max_age=DAY, enforce=True, report_uri=None, now=NOW)
        _, b = first.observe(
            "b.example", max_age=DAY, enforce=False, report_uri="https://r.example/", now=NOW
        )
    with KnownHostStore(str(store_path)) as second:
        assert second.path == str(store_path)
        assert list(second.hosts(now=NOW)) == [a, b]
        assert second.integrity_check() == "ok"
    conn = sqlite3.connect(store_path)
    assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert conn.execute("PRAGMA application_id").fetchone() == (APPLICATION_ID,)
    assert conn.execute("PRAGMA user_version").fetchone() == (1,)
    conn.close()


def test_memory_store_keeps_nothing() -> None:
    with KnownHostStore(":memory:") as mem:
        assert mem.path == ":memory:"
        mem.observe("h.example", max_age=DAY, enforce=True, report_uri=None, now=NOW)
        assert mem.count(now=NOW) == 1
    with KnownHostStore(":memory:") as mem:
        assert mem.count(now=NOW) == 0


def test_missing_directories_are_created(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "store.sqlite3"
    with KnownHostStore(path) as s:
        s.observe("h.example", max_age=DAY, enforce=True, report_uri=None, now=NOW)
    assert path.is_file()


def test_directory_that_cannot_be_created(tmp_path: Path) -> None:
    # Running as root, permissions do not stop mkdir; a regular file in the way does.
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    path = blocker / "sub" / "store.sqlite3"
    with pytest.raises(StoreError, match="cannot create the directory") as excinfo:
        KnownHostStore(path)
    assert str(blocker / "sub") in str(excinfo.value)
    assert str(path) in str(excinfo.value)
    assert blocker.read_text() == "x"


def test_path_is_a_directory(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="not a regular file") as excinfo:
        KnownHostStore(tmp_path)
    assert str(tmp_path) in str(excinfo.value)


def _foreign_sqlite(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE cookies (name TEXT, value TEXT)")
    conn.execute("INSERT INTO cookies VALUES ('a', 'b')")
    conn.commit()
    conn.close()


def _our_schema_from_the_future(path: Path) -> None:
    KnownHostStore(path).close()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 99")
    conn.commit()
    conn.close()


def _our_marker_without_table(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    conn.execute("PRAGMA user_version = 1")
    conn.execute("CREATE TABLE other (x)")
    conn.commit()
    conn.close()


@pytest.mark.parametrize(
    ("make", "why"),
    [
        (lambda p: p.write_bytes(random.Random(9163).randbytes(16384)), "file is not a database"),
        (lambda p: p.write_text("host,enforce\nexample.com,1\n"), "file is not a database"),
        (
            lambda p: p.write_bytes(b"SQLite format 3\x00" + b"\xff" * 84),
            "not a database|malformed",
        ),
        (_foreign_sqlite, "another program.*cookies"),
        (_our_schema_from_the_future, "schema version 99 from a newer version"),
        (_our_marker_without_table, "known_hosts table is missing"),
    ],
    ids=["random-bytes", "text", "bad-sqlite-header", "other-schema", "newer-schema", "no-table"],
)
def test_not_a_store_is_refused_and_left_untouched(
    tmp_path: Path, make: Callable[[Path], object], why: str
) -> None:
    path = tmp_path / "store.sqlite3"
    make(path)
    before = path.read_bytes()
    listing = sorted(os.listdir(tmp_path))
    with pytest.raises(StoreError, match=why) as excinfo:
        KnownHostStore(path)
    message = str(excinfo.value)
    assert str(path) in message
    assert "Move it aside or pass expect_ct_store=<other path>; it was not modified." in message
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == listing  # no -wal / -shm / -journal left either


def test_store_from_before_report_claims_gains_the_table(store_path: Path) -> None:
    # A version-1 file written before claim_report existed: known_hosts only.
    conn = sqlite3.connect(store_path)
    conn.execute(
        "CREATE TABLE known_hosts (host TEXT PRIMARY KEY NOT NULL, enforce INTEGER NOT NULL, "
        "report_uri TEXT, expires_ms INTEGER NOT NULL, noted_ms INTEGER NOT NULL, "
        "last_observed_ms INTEGER NOT NULL) WITHOUT ROWID"
    )
    conn.execute("INSERT INTO known_hosts VALUES ('old.example', 1, NULL, 9999999999999, 0, 0)")
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    with KnownHostStore(store_path) as s:
        assert s.get("old.example", now=NOW) is not None
        assert s.claim_report("k", 60, now=NOW) is True
        assert s.claim_report("k", 60, now=NOW) is False
    conn = sqlite3.connect(store_path)
    assert conn.execute("PRAGMA user_version").fetchone() == (1,)  # additive: same version
    conn.close()


def test_empty_file_becomes_a_store(store_path: Path) -> None:
    store_path.touch()
    with KnownHostStore(store_path) as s:
        s.observe("h.example", max_age=DAY, enforce=True, report_uri=None, now=NOW)
        assert s.count(now=NOW) == 1


def test_closed_store_raises(store_path: Path) -> None:
    s = KnownHostStore(store_path)
    s.close()
    s.close()  # idempotent
    with pytest.raises(StoreError, match=f"{store_path} is closed; cannot look up h.example"):
        s.get("h.example")


def test_write_error_is_a_store_error_naming_the_file(store_path: Path) -> None:
    with KnownHostStore(store_path) as s:
        blocker = sqlite3.connect(store_path, timeout=0, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")  # another process holding the write lock
        try:
            s_fast = KnownHostStore(store_path)  # opening an existing store needs no write lock
            # Shorten the wait so the test does not sit out the 5 s busy timeout.
            assert s_fast._conn is not None
            s_fast._conn.execute("PRAGMA busy_timeout = 50")
            assert s_fast.get("h.example", now=NOW) is None  # WAL: readers are not blocked
            with pytest.raises(StoreError, match=f"{store_path}: cannot record .*locked"):
                s_fast.observe("h.example", max_age=DAY, enforce=True, report_uri=None, now=NOW)
            s_fast.close()
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        # The failed transaction left nothing half-done.
        assert s.get("h.example", now=NOW) is None
        assert s.integrity_check() == "ok"


# --- streaming and threads ----------------------------------------------------------------------


def test_hosts_streams_in_batches_and_allows_calls_in_between(store: KnownHostStore) -> None:
    names = [f"h{i:05d}.example" for i in range(1300)]  # more than two batches of 512
    assert insert_rows(Path(store.path), names, max_age=DAY, now=NOW) == 1300
    store.observe(
        "expired.example", max_age=1, enforce=False, report_uri=None, now=NOW - timedelta(hours=1)
    )
    seen = []
    for entry in store.hosts(now=NOW):
        seen.append(entry.host)
        if entry.host == "h00600.example":
            # A call on the same store while iterating neither deadlocks nor breaks iteration.
            store.observe("zzz.example", max_age=DAY, enforce=True, report_uri=None, now=NOW)
    assert seen == [*names, "zzz.example"]


def test_one_store_from_many_threads(store: KnownHostStore) -> None:
    errors: list[BaseException] = []

    def writer(t: int) -> None:
        try:
            for i in range(100):
                store.observe(
                    f"t{t}-{i}.example", max_age=DAY, enforce=True, report_uri=None, now=NOW
                )
                assert store.get(f"t{t}-{i}.example", now=NOW) is not None
        except BaseException as e:  # reported below, in the main thread
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []
    assert store.count(now=NOW) == 400


# --- several processes ----------------------------------------------------------------------------

# Opens the store, says "ready", waits for a line on stdin, then notes hosts and prints each one
# after observe() has returned, i.e. once it is acknowledged.
_WRITER = """
import sys
from expect_ct.store import KnownHostStore

path, prefix, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
store = KnownHostStore(path)
print("ready", flush=True)
sys.stdin.readline()
for i in range(count):
    host = f"{prefix}-{i}.example"
    store.observe(host, max_age=86400, enforce=i % 2 == 0, report_uri=None)
    store.observe(f"shared-{i % 50}.example", max_age=86400, enforce=True, report_uri=prefix)
    print(host, flush=True)
store.close()
"""


def _start_writer(path: Path, prefix: str, count: int) -> subprocess.Popen[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ADDON_DIR), env.get("PYTHONPATH")]))
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(path), prefix, str(count)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line == "ready\n", line + (proc.stderr.read() if proc.stderr else "")
    return proc


def _go(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None
    proc.stdin.write("go\n")
    proc.stdin.flush()


@pytest.fixture
def watchdog() -> Iterator[list[subprocess.Popen[str]]]:
    """Children registered here are killed after 30 s at most, and at test end in any case."""
    procs: list[subprocess.Popen[str]] = []

    def kill_all() -> None:
        for p in procs:
            if p.poll() is None:
                p.kill()

    timer = threading.Timer(30, kill_all)
    timer.start()
    try:
        yield procs
    finally:
        timer.cancel()
        kill_all()
        for p in procs:
            p.wait(timeout=10)
            for stream in (p.stdin, p.stdout, p.stderr):
                if stream is not None:
                    stream.close()


def test_two_processes_write_concurrently(
    tmp_path: Path, watchdog: list[subprocess.Popen[str]]
) -> None:
    # Both start on a file that does not exist yet: schema creation races too.
    path = tmp_path / "shared" / "store.sqlite3"
    count = 300
    procs = [_start_writer(path, prefix, count) for prefix in ("p1", "p2")]
    watchdog.extend(procs)
    for proc in procs:  # both are open and waiting; release them together
        _go(proc)
    for proc in procs:
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert len(out.splitlines()) == count
    with KnownHostStore(path) as s:
        assert s.integrity_check() == "ok"
        hosts = {h.host for h in s.hosts()}
        for prefix in ("p1", "p2"):
            assert {f"{prefix}-{i}.example" for i in range(count)} <= hosts
        assert {f"shared-{i}.example" for i in range(50)} <= hosts
        assert len(hosts) == 2 * count + 50


def test_sigkill_mid_writes_loses_no_acknowledged_host(
    tmp_path: Path, watchdog: list[subprocess.Popen[str]]
) -> None:
    path = tmp_path / "store.sqlite3"
    acknowledged: set[str] = set()
    for round_number, kill_after in enumerate((20, 150, 400)):
        proc = _start_writer(path, f"k{round_number}", 10**7)
        watchdog.append(proc)
        assert proc.stdout is not None
        _go(proc)
        for _ in range(kill_after):
            line = proc.stdout.readline()
            assert line.endswith("\n"), "writer stopped early"
            acknowledged.add(line.strip())
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        assert proc.returncode == -signal.SIGKILL
        # Lines written before the kill are acknowledged too; a torn last line is not.
        for line in proc.stdout.read().splitlines(keepends=True):
            if line.endswith("\n"):
                acknowledged.add(line.strip())

        conn = sqlite3.connect(path)
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        conn.close()
        with KnownHostStore(path) as s:
            assert s.integrity_check() == "ok"
            stored = {h.host for h in s.hosts()}
        assert acknowledged <= stored, sorted(acknowledged - stored)[:5]
    assert len(acknowledged) >= 20 + 150 + 400


# --- benchmark helper ------------------------------------------------------------------------------


def _time_per_call(fn: Callable[[int], object], calls: int) -> float:
    start = time.perf_counter()
    for i in range(calls):
        fn(i)
    return (time.perf_counter() - start) / calls


def _benchmark_rows(path: Path, rows: int) -> str:
    with KnownHostStore(path) as s:
        start = time.perf_counter()
        insert_rows(
            path, [f"host{i}.example" for i in range(rows)], max_age=DAY, now=datetime.now(UTC)
        )
        fill = time.perf_counter() - start
        rng = random.Random(rows)
        hit = _time_per_call(lambda i: s.get(f"host{rng.randrange(rows)}.example"), 20_000)
        miss = _time_per_call(lambda i: s.get(f"absent{i}.example"), 20_000)
        update = _time_per_call(
            lambda i: s.observe(
                f"host{rng.randrange(rows)}.example", max_age=DAY, enforce=True, report_uri=None
            ),
            2_000,
        )
        new = _time_per_call(
            lambda i: s.observe(f"new{i}.example", max_age=DAY, enforce=True, report_uri=None),
            2_000,
        )
    size = path.stat().st_size / 1e6
    return (
        f"{rows:>9,} rows ({size:.1f} MB, filled in {fill:.2f} s): "
        f"get hit {hit * 1e6:.1f} us, get miss {miss * 1e6:.1f} us, "
        f"observe update {update * 1e6:.1f} us, observe new {new * 1e6:.1f} us"
    )


def benchmark(directory: Path) -> None:
    """Print the cost of get() and observe() at 1,000 and 1,000,000 rows (not a test)."""
    print(f"Python {sys.version.split()[0]}, SQLite {sqlite3.sqlite_version}")
    for rows in (1_000, 1_000_000):
        print(_benchmark_rows(directory / f"bench-{rows}.sqlite3", rows))


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        benchmark(Path(tmp))
