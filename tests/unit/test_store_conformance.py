"""One suite that every HostStore implementation passes: SQLite (a real file) and PostgreSQL (a
real server started by support.postgres). Opened through open_store(), as the addon will.

Two stores opened on the same spec stand for two proxies sharing it; ``settle`` waits until the
second has taken the first's writes (a NOTIFY round trip for PostgreSQL, nothing for SQLite).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from collections.abc import Iterator
from datetime import UTC
from datetime import datetime
from datetime import timedelta
from pathlib import Path

import pytest

from expect_ct import preload as preloadmod
from expect_ct.store import MAX_AGE_LIMIT
from expect_ct.store import HostStore
from expect_ct.store import KnownHost
from expect_ct.store import StoreError
from expect_ct.store import open_store

# Real time (in whole milliseconds): a PostgreSQL replica loads only what is unexpired at the
# real present, as a proxy would.
_REAL_NOW = datetime.now(UTC)
NOW = _REAL_NOW.replace(microsecond=_REAL_NOW.microsecond // 1000 * 1000)
DAY = 86400
YEAR_LATER = NOW + timedelta(days=365)

Opener = Callable[..., HostStore]


@pytest.fixture(params=["sqlite", "postgres"])
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    """Opens stores on one shared spec (file or database); closes them all at the end."""
    if request.param == "sqlite":
        spec = str(tmp_path / "expect-ct.sqlite3")
    else:
        spec = request.getfixturevalue("postgres_url")
    opened: list[HostStore] = []

    def open_one(**kwargs: object) -> HostStore:
        store = open_store(spec, **kwargs)  # type: ignore[arg-type]
        opened.append(store)
        return store

    yield open_one
    for store in opened:
        store.close()


@pytest.fixture
def store(opener: Opener) -> HostStore:
    return opener()


def settle(*stores: HostStore) -> None:
    for s in stores:
        wait = getattr(s, "wait_for_sync", None)
        if wait is not None:
            wait()


# --- RFC 9163 section 2.3.2 noting ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("before", "max_age", "action", "known_after"),
    [
        ("absent", 3600, "noted", True),
        ("known", 3600, "updated", True),
        ("expired", 3600, "noted", True),  # an expired host is not Known (section 2.4)
        ("absent", 0, "ignored", False),  # MUST NOT note
        ("known", 0, "removed", False),  # MUST remove
        ("expired", 0, "ignored", False),
    ],
)
def test_observe_table(
    opener: Opener, before: str, max_age: int, action: str, known_after: bool
) -> None:
    first, other = opener(), opener()
    if before != "absent":
        first.observe("host.example", max_age=60, enforce=True, report_uri=None, now=NOW)
    now = NOW + timedelta(seconds=30 if before == "known" else 61)
    got_action, entry = first.observe(
        "host.example", max_age=max_age, enforce=False, report_uri="https://r.example/", now=now
    )
    assert got_action == action
    assert (entry is not None) == known_after
    assert first.get("host.example", now=now) == entry
    settle(other)
    assert other.get("host.example", now=now) == entry  # another proxy agrees
    assert first.count(now=now) == other.count(now=now) == int(known_after)


def test_noted_then_updated_keeps_noted(store: HostStore) -> None:
    action, entry = store.observe(
        "Host.Example.", max_age=DAY, enforce=True, report_uri="https://r.example/ct", now=NOW
    )
    assert action == "noted"
    assert entry == KnownHost(
        host="host.example",
        enforce=True,
        report_uri="https://r.example/ct",
        expires=NOW + timedelta(seconds=DAY),
        noted=NOW,
        last_observed=NOW,
    )
    later = NOW + timedelta(hours=1)
    action, updated = store.observe(
        "host.example", max_age=60, enforce=False, report_uri=None, now=later
    )
    assert action == "updated"
    assert updated == KnownHost(
        "host.example", False, None, later + timedelta(seconds=60), NOW, later
    )
    assert store.get("HOST.example", now=later) == updated
    assert store.get("www.host.example", now=later) is None  # Congruent Match only


def test_renoting_after_expiry_resets_noted(store: HostStore) -> None:
    store.observe("h.example", max_age=10, enforce=True, report_uri=None, now=NOW)
    later = NOW + timedelta(seconds=11)
    action, entry = store.observe("h.example", max_age=10, enforce=True, report_uri=None, now=later)
    assert action == "noted"
    assert entry is not None and entry.noted == later


# --- expiry, cap ---------------------------------------------------------------------------------


def test_expiry_boundary(store: HostStore) -> None:
    _, entry = store.observe("h.example", max_age=100, enforce=True, report_uri=None, now=NOW)
    at_expiry = NOW + timedelta(seconds=100)
    assert store.get("h.example", now=at_expiry) == entry
    assert store.count(now=at_expiry) == 1
    assert [h.host for h in store.hosts(now=at_expiry)] == ["h.example"]
    just_after = at_expiry + timedelta(milliseconds=1)
    assert store.get("h.example", now=just_after) is None
    assert store.count(now=just_after) == 0
    assert list(store.hosts(now=just_after)) == []


def test_prune_removes_only_expired(opener: Opener) -> None:
    store, other = opener(), opener()
    for i, max_age in enumerate([10, 20, 30, 40]):
        store.observe(f"h{i}.example", max_age=max_age, enforce=False, report_uri=None, now=NOW)
    after_25s = NOW + timedelta(seconds=25)
    assert store.prune(after_25s) == 2
    assert store.prune(after_25s) == 0
    settle(other)
    assert [h.host for h in other.hosts(now=NOW)] == ["h2.example", "h3.example"]


def test_max_age_cap(opener: Opener) -> None:
    capped = opener(max_age_cap=30 * DAY)
    assert capped.max_age_cap == 30 * DAY
    _, entry = capped.observe("h.example", max_age=90 * DAY, enforce=True, report_uri=None, now=NOW)
    assert entry is not None and entry.expires == NOW + timedelta(days=30)
    assert capped.observe("h.example", max_age=0, enforce=True, report_uri=None, now=NOW) == (
        "removed",
        None,
    )
    uncapped = opener()
    _, entry = uncapped.observe("h.example", max_age=10**30, enforce=True, report_uri=None, now=NOW)
    assert entry is not None and entry.expires == NOW + timedelta(seconds=MAX_AGE_LIMIT)
    with pytest.raises(
        ValueError, match="max_age_cap must be a whole number of seconds, at least 1"
    ):
        opener(max_age_cap=0)


def test_argument_errors(store: HostStore) -> None:
    with pytest.raises(ValueError, match="max_age must not be negative"):
        store.observe("h.example", max_age=-1, enforce=True, report_uri=None, now=NOW)
    with pytest.raises(ValueError, match="'bad host'"):
        store.observe("bad host", max_age=1, enforce=True, report_uri=None, now=NOW)
    with pytest.raises(ValueError, match="timezone-aware"):
        store.get("h.example", now=datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="is in the past"):
        store.add("h.example", enforce=True, report_uri=None, expires=NOW, now=NOW + timedelta(1))
    assert store.count(now=NOW) == 0


# --- preload, forget, clear ----------------------------------------------------------------------


def test_preload_entries_are_added_and_then_updated_by_headers(opener: Opener) -> None:
    document = [
        {"host": "Preloaded.Example", "enforce": True, "expires": YEAR_LATER.isoformat()},
        {
            "host": "r.example",
            "report_uri": "https://c.example/",
            "expires": (NOW + timedelta(days=2)).isoformat(),
        },
    ]
    entries = preloadmod.parse_preload(json.dumps(document))
    store, other = opener(), opener()
    for e in entries:
        store.add(e.host, enforce=e.enforce, report_uri=e.report_uri, expires=e.expires, now=NOW)
    settle(other)
    got = other.get("preloaded.example", now=NOW)
    assert got == KnownHost("preloaded.example", True, None, YEAR_LATER, NOW, NOW)
    assert other.get("r.example", now=NOW) is not None
    later = NOW + timedelta(days=1)
    action, updated = other.observe(
        "preloaded.example", max_age=60, enforce=False, report_uri=None, now=later
    )
    assert action == "updated" and updated is not None and updated.noted == NOW


def test_forget_and_clear_reach_every_store(opener: Opener) -> None:
    store, other = opener(), opener()
    for host in ("a.example", "b.example", "c.example"):
        store.observe(host, max_age=DAY, enforce=True, report_uri=None, now=NOW)
    store.observe("old.example", max_age=1, enforce=True, report_uri=None, now=NOW)
    settle(other)
    assert other.count(now=NOW) == 4
    assert other.forget("A.example.", now=NOW) is True
    assert other.forget("a.example", now=NOW) is False
    assert other.forget("old.example", now=NOW + timedelta(seconds=2)) is False  # was expired
    settle(store)
    assert store.get("a.example", now=NOW) is None
    assert store.get("old.example", now=NOW) is None  # ... but gone all the same
    assert store.clear() == 2
    settle(other)
    assert other.count(now=NOW) == 0 and store.count(now=NOW) == 0
    assert store.pending_writes == other.pending_writes == 0  # every write was committed
    store.observe("new.example", max_age=DAY, enforce=True, report_uri=None, now=NOW)
    settle(other)
    assert [h.host for h in other.hosts(now=NOW)] == ["new.example"]


# --- several writers -----------------------------------------------------------------------------


def test_concurrent_writers(opener: Opener) -> None:
    """Four proxies note their own hosts and fight over shared ones; nothing is lost."""
    stores = [opener() for _ in range(4)]
    errors: list[BaseException] = []
    count = 60

    def writer(n: int, s: HostStore) -> None:
        try:
            for i in range(count):
                s.observe(f"p{n}-{i}.example", max_age=DAY, enforce=True, report_uri=None, now=NOW)
                s.observe(
                    f"shared-{i % 7}.example",
                    max_age=DAY,
                    enforce=False,
                    report_uri=f"https://{n}.example/",
                    now=NOW,
                )
                if i % 10 == 9:
                    assert s.forget(f"p{n}-{i - 1}.example", now=NOW) is True
        except BaseException as e:  # reported in the main thread
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(n, s)) for n, s in enumerate(stores)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    expected = {f"p{n}-{i}.example" for n in range(4) for i in range(count) if i % 10 != 8}
    expected |= {f"shared-{i}.example" for i in range(7)}
    fresh = opener()
    assert {h.host for h in fresh.hosts(now=NOW)} == expected
    settle(*stores)
    for s in stores:  # every replica converged on the same state
        assert {h.host for h in s.hosts(now=NOW)} == expected
        assert {s.get(f"shared-{i}.example", now=NOW) for i in range(7)} == {
            fresh.get(f"shared-{i}.example", now=NOW) for i in range(7)
        }


def test_claim_report_once_per_window(opener: Opener) -> None:
    stores = [opener() for _ in range(4)]
    results: list[bool] = []
    lock = threading.Lock()
    barrier = threading.Barrier(len(stores))

    def claim(s: HostStore) -> None:
        barrier.wait()
        won = s.claim_report("violation:h.example:abc", 60, now=NOW)
        with lock:
            results.append(won)

    threads = [threading.Thread(target=claim, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(results) == [False, False, False, True]
    a, b = stores[0], stores[1]
    assert a.claim_report("violation:h.example:abc", 60, now=NOW + timedelta(seconds=59)) is False
    assert b.claim_report("other-key", 60, now=NOW) is True  # keys are independent
    # The window has passed: exactly one new claim wins again.
    later = NOW + timedelta(seconds=60)
    assert b.claim_report("violation:h.example:abc", 60, now=later) is True
    assert a.claim_report("violation:h.example:abc", 60, now=later) is False
    with pytest.raises(ValueError, match="window_s must be a positive"):
        a.claim_report("k", 0, now=NOW)


def test_closed_store_raises(opener: Opener) -> None:
    s = opener()
    s.close()
    s.close()  # idempotent
    with pytest.raises(StoreError, match="is closed; cannot record"):
        s.observe("h.example", max_age=1, enforce=True, report_uri=None, now=NOW)
