"""Known Expect-CT Hosts in PostgreSQL, shared by a fleet of proxies (psycopg 3).

Pure: no mitmproxy import. psycopg is imported when a store is opened, so SQLite users need
nothing (``pip install 'mitmproxy-expect-ct[postgres]'`` brings it).

``PostgresStore`` is the HostStore; it composes three parts, each in its own module:

* ``store_postgres_setup.Database``: reaching the database (connection string, connections,
  one-line errors) and the schema. The schema is created and migrated on open in one
  transaction under an advisory lock (several proxies may start at once), recorded in
  ``expect_ct_schema``; a database whose schema is newer than this code refuses to open with a
  clear StoreError. Messages name the server as ``postgresql://user@host:port/db``: never the
  password.
* ``store_postgres_replica.Replica``: no network wait in a look-up (the TLS handshake must not
  wait on a database). ``get``, ``count`` and ``hosts`` read only an in-memory replica of the
  unexpired hosts, loaded before the constructor returns and kept current by LISTEN/NOTIFY,
  with a periodic full re-sync as the safety net.
* ``store_postgres_writer.Writer``: writes return once committed (RFC 9163 notes are
  acknowledged only when durable). When PostgreSQL cannot be reached, look-ups go on from the
  replica; a write is applied to the replica, queued in order, and the call raises
  ``StoreUnavailable`` (it is *pending*, not acknowledged).

One background thread per store does the waiting: it retries queued writes (reconnecting by
itself, then re-syncing), follows the notifications, and prunes and re-syncs periodically.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from datetime import datetime

from expect_ct.store import Action
from expect_ct.store import KnownHost
from expect_ct.store import StoreError
from expect_ct.store import _add_expiry_ms
from expect_ct.store import _check_cap
from expect_ct.store import _effective_max_age
from expect_ct.store import _now_ms
from expect_ct.store import canonical_host
from expect_ct.store_postgres_replica import Replica
from expect_ct.store_postgres_setup import CHANNEL
from expect_ct.store_postgres_setup import SCHEMA_VERSION
from expect_ct.store_postgres_setup import Database
from expect_ct.store_postgres_setup import migrate
from expect_ct.store_postgres_writer import Write
from expect_ct.store_postgres_writer import Writer

__all__ = ["SCHEMA_VERSION", "PostgresStore"]

logger = logging.getLogger(__name__)


class PostgresStore:
    """Known Expect-CT Hosts in one PostgreSQL database, with a local replica.

    Thread-safe. ``spec`` is a ``postgresql://`` / ``postgres://`` URL or a libpq key/value
    string. Raises StoreError (one line, no password) when the database cannot be used.
    """

    def __init__(
        self,
        spec: str,
        *,
        max_age_cap: int | None = None,
        resync_interval: float = 300.0,
        retry_interval: float = 1.0,
        connect_timeout: int = 10,
    ) -> None:
        _check_cap(max_age_cap)
        self._max_age_cap = max_age_cap
        self._retry_interval = retry_interval
        self._database = Database.from_spec(spec, connect_timeout=connect_timeout)
        self._location = self._database.location
        self._stop = threading.Event()

        conn = self._database.connect()
        try:
            migrate(self._database.pg, conn, self._location, list(self._database.secrets))
            self._replica = Replica(self._database, resync_interval=resync_interval)
        except BaseException:
            conn.close()
            raise
        self._writer = Writer(self._database, self._replica, conn, retry_interval=retry_interval)
        self._thread = threading.Thread(
            target=self._run, name="expect-ct-postgres-replica", daemon=True
        )
        self._thread.start()

    # -- properties --

    @property
    def location(self) -> str:
        """The database as ``postgresql://user@host:port/db`` (never the password)."""
        return self._location

    path = location  # the name messages used for the SQLite file

    @property
    def max_age_cap(self) -> int | None:
        return self._max_age_cap

    @property
    def pending_writes(self) -> int:
        """Writes accepted but not yet committed (PostgreSQL unreachable); 0 normally."""
        return self._writer.pending

    @property
    def unavailable_reason(self) -> str | None:
        """Why PostgreSQL cannot be reached right now, or None while it can."""
        return self._writer.down_reason

    def __enter__(self) -> PostgresStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"PostgresStore({self._location!r}, max_age_cap={self._max_age_cap!r})"

    # -- the background thread --

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._step()
            except Exception as e:  # never let the replica thread die
                if self._stop.is_set():
                    return
                if not self._replica.listening:
                    self._writer.went_down(self._database.explain(e))
                else:
                    logger.exception("Expect-CT: PostgreSQL replica thread error")
                self._stop.wait(self._retry_interval)

    def _step(self) -> None:
        if self._writer.needs_retry:
            self._writer.retry()
            if self._writer.down_reason is not None:
                self._stop.wait(self._retry_interval)
                return
        self._replica.follow(self._writer.queued)
        if self._replica.resync_due:
            self._prune_quietly()
            self._replica.resync(self._writer.queued)

    def _prune_quietly(self) -> None:
        try:
            self.prune()
        except StoreError as e:
            logger.debug(f"Expect-CT: periodic prune skipped: {e}")

    # -- API --

    def get(self, host: str, *, now: datetime | None = None) -> KnownHost | None:
        """The unexpired entry for exactly this host, or None; from the replica only."""
        return self._replica.get(canonical_host(host), _now_ms(now))

    def observe(
        self,
        host: str,
        *,
        max_age: int,
        enforce: bool,
        report_uri: str | None,
        now: datetime | None = None,
    ) -> tuple[Action, KnownHost | None]:
        """The RFC 9163 section 2.3.2 update, as KnownHostStore.observe; committed before it
        returns (StoreUnavailable: applied locally, pending)."""
        key = canonical_host(host)
        write = Write(
            "observe",
            key,
            _now_ms(now),
            max_age=_effective_max_age(max_age, self._max_age_cap),
            enforce=enforce,
            report_uri=report_uri,
        )
        result: tuple[Action, KnownHost | None] = self._writer.write(
            write, f"record the Expect-CT header of {key}"
        )
        return result

    def add(
        self,
        host: str,
        *,
        enforce: bool,
        report_uri: str | None,
        expires: datetime,
        now: datetime | None = None,
    ) -> KnownHost:
        """Make ``host`` Known until ``expires`` (preload seeding); see KnownHostStore.add."""
        key = canonical_host(host)
        now_ms = _now_ms(now)
        expires_ms = _add_expiry_ms(key, expires, now_ms)
        write = Write(
            "add", key, now_ms, expires_ms=expires_ms, enforce=enforce, report_uri=report_uri
        )
        entry: KnownHost = self._writer.write(write, f"add {key}")
        return entry

    def forget(self, host: str, *, now: datetime | None = None) -> bool:
        """Delete the host's entry everywhere; True if it was Known."""
        key = canonical_host(host)
        known: bool = self._writer.write(Write("forget", key, _now_ms(now)), f"forget {key}")
        return known

    def clear(self) -> int:
        """Delete every entry, expired or not; return how many rows were deleted."""
        count: int = self._writer.write(Write("clear", now_ms=_now_ms(None)), "clear")
        return count

    def prune(self, now: datetime | None = None) -> int:
        """Delete expired entries (and lapsed report claims); return how many hosts."""
        now_ms = _now_ms(now)
        self._writer.direct(
            "prune report claims",
            "DELETE FROM expect_ct_report_claims WHERE expires_ms <= %s",
            (now_ms,),
        )
        cursor = self._writer.direct(
            "prune expired entries",
            "DELETE FROM expect_ct_known_hosts WHERE expires_ms < %s",
            (now_ms,),
        )
        return int(cursor.rowcount)

    def claim_report(self, key: str, window_s: int, *, now: datetime | None = None) -> bool:
        """True for exactly one caller per ``key`` per ``window_s`` seconds across the fleet.

        Not queued: while PostgreSQL is down it raises StoreUnavailable, and the caller
        decides (sending a possible duplicate is better than losing a report).
        """
        if window_s < 1:
            raise ValueError(f"window_s must be a positive number of seconds, not {window_s}")
        now_ms = _now_ms(now)
        cursor = self._writer.direct(
            f"claim report {key}",
            "INSERT INTO expect_ct_report_claims AS c (key, expires_ms) VALUES (%s, %s) "
            "ON CONFLICT (key) DO UPDATE SET expires_ms = EXCLUDED.expires_ms "
            "WHERE c.expires_ms <= %s RETURNING key",
            (key, now_ms + window_s * 1000, now_ms),
        )
        return cursor.fetchone() is not None

    def count(self, *, now: datetime | None = None) -> int:
        """Number of Known (unexpired) hosts in the replica."""
        return self._replica.count(_now_ms(now))

    def hosts(self, *, now: datetime | None = None) -> Iterator[KnownHost]:
        """Every Known (unexpired) host in the replica, in host order."""
        yield from self._replica.hosts(_now_ms(now))

    def wait_for_sync(self, timeout: float = 30.0) -> None:
        """Return once this replica has taken every change committed anywhere before this
        call: a NOTIFY sent now arrives after those of every earlier commit. For tests and
        tools that must read their own fleet's writes."""

        def send(payload: str) -> None:
            self._writer.direct(
                "wait for the replica", "SELECT pg_notify(%s, %s)", (CHANNEL, payload)
            )

        if not self._replica.await_sync(send, timeout):
            raise StoreError(
                f"Expect-CT store {self._location}: the replica did not catch up in {timeout:g} s"
            )

    def close(self) -> None:
        """Stop the replica thread and close the connections (idempotent). Writes still
        queued are lost: they are logged."""
        if not self._writer.close():
            return
        self._stop.set()
        self._writer.wake_listeners()  # the replica thread waits for notifications
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=5)
        self._writer.disconnect()
        self._replica.close()
