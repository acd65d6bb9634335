"""Known Expect-CT Hosts in PostgreSQL, shared by a fleet of proxies (psycopg 3).

Pure: no mitmproxy import. psycopg is imported when a store is opened, so SQLite users need
nothing (``pip install 'mitmproxy-expect-ct[postgres]'`` brings it).

Design decisions (each one cites the rule it serves):

* No network wait in a look-up (the TLS handshake must not wait on a database): every store
  keeps an in-memory replica of the unexpired hosts, loaded before the constructor returns.
  ``get``, ``count`` and ``hosts`` read only the replica.
* The replica follows the database through LISTEN/NOTIFY on a background thread: triggers on
  the table send every insert, update, delete and truncate with the row (or its key) and a
  version from one sequence, so any writer (another proxy, the CLI, psql) reaches every
  replica at once. A version per host lets a late message never undo a newer change. A full
  re-sync every ``resync_interval`` seconds (and after every reconnection, when messages may
  have been missed) is the safety net.
* Writes return once committed (RFC 9163 notes are acknowledged only when durable), and this
  store's replica takes the change at once. Per-host read-modify-write is serialised across
  the fleet by a transaction-scoped advisory lock on the host.
* When PostgreSQL cannot be reached, look-ups go on from the replica; a write is applied to
  the replica, queued in order, and the call raises ``StoreUnavailable`` (it is *pending*,
  not acknowledged). The background thread reconnects by itself and commits the queue in
  order, then re-syncs. One warning when the database goes away, one when it is back. Queued
  writes live in memory: they survive an outage of any length, not the end of the process.
* Schema: created and migrated on open in one transaction under an advisory lock (several
  proxies may start at once), recorded in ``expect_ct_schema``; a database whose schema is
  newer than this code refuses to open with a clear StoreError.
* Messages name the server as ``postgresql://user@host:port/db``: never the password.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING
from typing import Any

from expect_ct.store import Action
from expect_ct.store import KnownHost
from expect_ct.store import StoreError
from expect_ct.store import StoreUnavailable
from expect_ct.store import _check_cap
from expect_ct.store import _effective_max_age
from expect_ct.store import _from_ms
from expect_ct.store import _known_host
from expect_ct.store import _now_ms
from expect_ct.store import _Row
from expect_ct.store import _to_ms
from expect_ct.store import canonical_host
from expect_ct.store_postgres_setup import CHANNEL
from expect_ct.store_postgres_setup import SCHEMA_VERSION
from expect_ct.store_postgres_setup import TCP_DEFAULTS
from expect_ct.store_postgres_setup import describe
from expect_ct.store_postgres_setup import explain
from expect_ct.store_postgres_setup import import_psycopg
from expect_ct.store_postgres_setup import migrate
from expect_ct.store_postgres_setup import parse_spec

if TYPE_CHECKING:
    import psycopg

__all__ = ["SCHEMA_VERSION", "PostgresStore"]

logger = logging.getLogger(__name__)

# Second argument of hashtextextended() for the per-host advisory locks (any constant).
_HOST_LOCK_SEED = 9163

_COLUMNS = "host, enforce::int, report_uri, expires_ms, noted_ms, last_observed_ms"


@dataclass(frozen=True)
class _Write:
    """A write as the caller asked for it, so a queued one can be replayed unchanged."""

    kind: str  # "observe", "add", "forget", "clear"
    key: str = ""
    now_ms: int = 0
    max_age: int = 0  # observe: the effective max-age in seconds
    expires_ms: int = 0  # add
    enforce: bool = False
    report_uri: str | None = None


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
        self._resync_interval = resync_interval
        self._retry_interval = retry_interval
        self._pg = import_psycopg()
        params = parse_spec(self._pg, spec)
        self._secrets = [s for s in (spec, params.get("password")) if s]
        self._location = describe(params)
        params.setdefault("connect_timeout", str(connect_timeout))
        params.setdefault("application_name", "mitmproxy-expect-ct")
        for name, value in TCP_DEFAULTS.items():
            params.setdefault(name, value)
        self._conninfo: str = self._pg.conninfo.make_conninfo(**params)

        self._write_lock = threading.Lock()  # the writer connection and the queue
        self._replica_lock = threading.Lock()
        self._rows: dict[str, _Row] = {}
        self._versions: dict[str, int] = {}  # of rows and of deletions (tombstones)
        self._cleared_at = 0
        self._queue: deque[_Write] = deque()
        self._down_reason: str | None = None
        self._closed = False
        self._stop = threading.Event()
        self._sync_tokens: dict[str, threading.Event] = {}

        self._writer: psycopg.Connection[Any] | None = self._connect()
        try:
            migrate(self._pg, self._writer, self._location, self._secrets)
            self._listener: psycopg.Connection[Any] | None = self._connect()
            self._listener.execute(f"LISTEN {CHANNEL}")
            self._resync(self._listener)
        except BaseException:
            self._close_connections()
            raise
        self._next_resync = time.monotonic() + resync_interval
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
        return len(self._queue)

    @property
    def unavailable_reason(self) -> str | None:
        """Why PostgreSQL cannot be reached right now, or None while it can."""
        return self._down_reason

    def __enter__(self) -> PostgresStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"PostgresStore({self._location!r}, max_age_cap={self._max_age_cap!r})"

    # -- connecting --

    def _connect(self) -> psycopg.Connection[Any]:
        try:
            conn: psycopg.Connection[Any] = self._pg.connect(self._conninfo, autocommit=True)
        except self._pg.Error as e:
            raise StoreError(
                f"cannot open the Expect-CT store {self._location}: {self._explain(e)}"
            ) from None
        return conn

    def _explain(self, error: BaseException) -> str:
        return explain(error, self._secrets)

    # -- the replica --

    def _resync(self, conn: psycopg.Connection[Any]) -> None:
        """Replace the replica with the table's unexpired rows (one consistent snapshot)."""
        now_ms = _now_ms(None)
        rows: dict[str, _Row] = {}
        versions: dict[str, int] = {}
        with conn.cursor() as cursor:
            cursor.execute(
                f"SELECT {_COLUMNS}, version FROM expect_ct_known_hosts WHERE expires_ms >= %s",
                (now_ms,),
            )
            while batch := cursor.fetchmany(10_000):
                for *fields, version in batch:
                    row: _Row = tuple(fields)  # type: ignore[assignment]
                    rows[row[0]] = row
                    versions[row[0]] = version
        with self._replica_lock:
            self._rows = rows
            self._versions = versions
            # Writes still queued are newer than anything in the table.
            for write in self._queue:
                self._apply_provisional(write)

    def _newer(self, host: str, version: int) -> bool:
        return version > max(self._versions.get(host, 0), self._cleared_at)

    def _put(self, row: _Row, version: int) -> None:
        with self._replica_lock:
            if self._newer(row[0], version):
                self._rows[row[0]] = row
                self._versions[row[0]] = version

    def _delete(self, host: str, version: int) -> None:
        with self._replica_lock:
            if self._newer(host, version):
                self._rows.pop(host, None)
                self._versions[host] = version

    def _clear_replica(self, version: int) -> None:
        with self._replica_lock:
            if version <= self._cleared_at:
                return
            self._cleared_at = version
            self._rows = {h: r for h, r in self._rows.items() if self._versions.get(h, 0) > version}
            self._versions = {h: v for h, v in self._versions.items() if v > version}

    def _on_notify(self, payload: str, conn: psycopg.Connection[Any]) -> None:
        message = json.loads(payload)
        op, version = message["op"], int(message.get("version", 0))
        if op == "sync":
            arrived = self._sync_tokens.get(message.get("token", ""))
            if arrived is not None:
                arrived.set()
        elif op == "clear":
            self._clear_replica(version)
        elif op == "delete":
            self._delete(message["host"], version)
        elif op == "put":
            self._put(
                (
                    message["host"],
                    int(message["enforce"]),
                    message["report_uri"],
                    int(message["expires_ms"]),
                    int(message["noted_ms"]),
                    int(message["last_observed_ms"]),
                ),
                version,
            )
        elif op == "stale":
            found = conn.execute(
                f"SELECT {_COLUMNS}, version FROM expect_ct_known_hosts WHERE host = %s",
                (message["host"],),
            ).fetchone()
            if found is not None:
                *fields, row_version = found
                self._put(tuple(fields), row_version)  # type: ignore[arg-type]

    def _apply_provisional(self, write: _Write) -> tuple[Action, KnownHost | None] | int | bool:
        """Apply a write to the replica only (caller holds the replica lock); its result."""
        row = self._rows.get(write.key)
        known = row is not None and row[3] >= write.now_ms
        if write.kind == "clear":
            count = len(self._rows)
            self._rows.clear()
            return count
        if write.kind == "forget" or (write.kind == "observe" and write.max_age == 0):
            self._rows.pop(write.key, None)
            if write.kind == "forget":
                return known
            return ("removed" if known else "ignored"), None
        noted_ms = row[4] if (row is not None and known) else write.now_ms
        expires_ms = (
            write.now_ms + write.max_age * 1000 if write.kind == "observe" else write.expires_ms
        )
        new_row: _Row = (
            write.key,
            int(write.enforce),
            write.report_uri,
            expires_ms,
            noted_ms,
            write.now_ms,
        )
        self._rows[write.key] = new_row
        return ("updated" if known else "noted"), _known_host(new_row)

    # -- writing --

    def _commit(self, conn: psycopg.Connection[Any], write: _Write) -> Any:
        """Run one write in one transaction; update the replica after the commit."""
        put: tuple[_Row, int] | None = None
        deleted: tuple[str, int] | None = None
        cleared: int | None = None
        with conn.transaction():
            if write.kind == "clear":
                conn.execute("LOCK TABLE expect_ct_known_hosts IN ACCESS EXCLUSIVE MODE")
                (count,) = conn.execute("SELECT count(*) FROM expect_ct_known_hosts").fetchone()  # type: ignore[misc]
                conn.execute("TRUNCATE expect_ct_known_hosts")
                (cleared,) = conn.execute("SELECT currval('expect_ct_version')").fetchone()  # type: ignore[misc]
                result: Any = int(count)
            else:
                conn.execute(
                    "SELECT pg_advisory_xact_lock(hashtextextended(%s, %s))",
                    (write.key, _HOST_LOCK_SEED),
                )
                found = conn.execute(
                    "SELECT expires_ms, noted_ms FROM expect_ct_known_hosts WHERE host = %s",
                    (write.key,),
                ).fetchone()
                known = found is not None and found[0] >= write.now_ms
                if write.kind == "forget" or (write.kind == "observe" and write.max_age == 0):
                    if found is not None:
                        conn.execute(
                            "DELETE FROM expect_ct_known_hosts WHERE host = %s", (write.key,)
                        )
                        (version,) = conn.execute("SELECT currval('expect_ct_version')").fetchone()  # type: ignore[misc]
                        deleted = (write.key, int(version))
                    result = (
                        known
                        if write.kind == "forget"
                        else (
                            ("removed" if known else "ignored"),
                            None,
                        )
                    )
                else:
                    noted_ms = found[1] if (found is not None and known) else write.now_ms
                    expires_ms = (
                        write.now_ms + write.max_age * 1000
                        if write.kind == "observe"
                        else write.expires_ms
                    )
                    new_row: _Row = (
                        write.key,
                        int(write.enforce),
                        write.report_uri,
                        expires_ms,
                        noted_ms,
                        write.now_ms,
                    )
                    (version,) = conn.execute(
                        "INSERT INTO expect_ct_known_hosts (host, enforce, report_uri, "
                        "expires_ms, noted_ms, last_observed_ms, version) "
                        "VALUES (%s, %s, %s, %s, %s, %s, 0) ON CONFLICT (host) DO UPDATE SET "
                        "enforce = EXCLUDED.enforce, report_uri = EXCLUDED.report_uri, "
                        "expires_ms = EXCLUDED.expires_ms, noted_ms = EXCLUDED.noted_ms, "
                        "last_observed_ms = EXCLUDED.last_observed_ms RETURNING version",
                        (
                            write.key,
                            write.enforce,
                            write.report_uri,
                            expires_ms,
                            noted_ms,
                            write.now_ms,
                        ),
                    ).fetchone()  # type: ignore[misc]
                    put = (new_row, int(version))
                    entry = _known_host(new_row)
                    result = (
                        entry if write.kind == "add" else (("updated" if known else "noted"), entry)
                    )
        if put is not None:
            self._put(*put)
        if deleted is not None:
            self._delete(*deleted)
        if cleared is not None:
            self._clear_replica(int(cleared))
        return result

    def _broken(self, conn: psycopg.Connection[Any] | None) -> bool:
        return conn is None or conn.closed or conn.broken

    def _went_down(self, why: str) -> None:
        if self._down_reason is None:
            logger.warning(
                f"Expect-CT: the PostgreSQL store {self._location} cannot be reached ({why}). "
                "Known hosts are still enforced from this proxy's replica; new notes are kept "
                f"in memory and committed once it is back (retrying every "
                f"{self._retry_interval:g} s)."
            )
        self._down_reason = why

    def _write(self, write: _Write, doing: str) -> Any:
        with self._write_lock:
            if self._closed:
                raise StoreError(f"Expect-CT store {self._location} is closed; cannot {doing}")
            if not self._queue and self._down_reason is None:
                conn = self._writer
                try:
                    if conn is None:
                        raise self._pg.OperationalError("no connection")
                    return self._commit(conn, write)
                except self._pg.Error as e:
                    if not self._broken(conn):
                        raise StoreError(
                            f"Expect-CT store {self._location}: cannot {doing}: {self._explain(e)}"
                        ) from None
                    self._went_down(self._explain(e))
            # Down, or writes queued before this one: keep the order, let the thread retry.
            with self._replica_lock:
                provisional = self._apply_provisional(write)
            self._queue.append(write)
        message = (
            f"Expect-CT store {self._location} unreachable ({self._down_reason}): "
            f"{doing} is pending, {len(self._queue)} writes queued"
        )
        if isinstance(provisional, tuple):
            raise StoreUnavailable(message, action=provisional[0], entry=provisional[1])
        raise StoreUnavailable(message)

    def _drain(self) -> None:
        """Commit queued writes in order (background thread); stops at the first failure."""
        with self._write_lock:
            if self._writer is not None and not self._broken(self._writer):
                try:  # a connection only knows it is broken once it is used
                    self._writer.execute("SELECT 1")
                except self._pg.Error:
                    pass
            if self._broken(self._writer):
                if self._writer is not None:
                    self._writer.close()
                self._writer = None
                try:
                    self._writer = self._connect()
                except StoreError as e:
                    self._went_down(str(e).split(": ", 1)[-1])
                    return
            assert self._writer is not None
            committed = 0
            while self._queue:
                try:
                    self._commit(self._writer, self._queue[0])
                except self._pg.Error as e:
                    if self._broken(self._writer):
                        self._went_down(self._explain(e))
                        return
                    logger.error(
                        f"Expect-CT: dropped a queued write to {self._location} that the "
                        f"database refuses: {self._explain(e)}"
                    )
                self._queue.popleft()
                committed += 1
            if self._down_reason is not None:
                logger.warning(
                    f"Expect-CT: the PostgreSQL store {self._location} is reachable again; "
                    f"{committed} queued writes committed."
                )
                self._down_reason = None

    # -- the background thread --

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._step()
            except Exception as e:  # never let the replica thread die
                if self._stop.is_set():
                    return
                if self._broken(self._listener):
                    self._went_down(self._explain(e))
                else:
                    logger.exception("Expect-CT: PostgreSQL replica thread error")
                self._stop.wait(self._retry_interval)

    def _step(self) -> None:
        if self._queue or self._down_reason is not None:
            self._drain()
            if self._down_reason is not None:
                self._stop.wait(self._retry_interval)
                return
        if self._broken(self._listener):
            if self._listener is not None:
                self._listener.close()
            self._listener = None
            fresh = self._connect()
            fresh.execute(f"LISTEN {CHANNEL}")
            self._listener = fresh
            self._resync(fresh)  # messages were missed while disconnected
            self._next_resync = time.monotonic() + self._resync_interval
        listener = self._listener
        assert listener is not None
        # Collected first, applied after: notifies() holds the connection's lock, and a
        # "stale" message needs a query on this connection. stop_after=1 returns after one
        # whole batch: leaving the generator inside a batch would drop the rest of it.
        payloads = [
            notify.payload
            for notify in listener.notifies(timeout=0.5, stop_after=1)
            if notify.channel == CHANNEL
        ]
        for payload in payloads:
            self._on_notify(payload, listener)
        if time.monotonic() >= self._next_resync:
            self._prune_quietly()
            self._resync(listener)
            self._next_resync = time.monotonic() + self._resync_interval

    def _prune_quietly(self) -> None:
        try:
            self.prune()
        except StoreError as e:
            logger.debug(f"Expect-CT: periodic prune skipped: {e}")

    # -- API --

    def get(self, host: str, *, now: datetime | None = None) -> KnownHost | None:
        """The unexpired entry for exactly this host, or None; from the replica only."""
        key = canonical_host(host)
        now_ms = _now_ms(now)
        row = self._rows.get(key)  # one dict read: atomic, needs no lock
        if row is None or row[3] < now_ms:
            return None
        return _known_host(row)

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
        write = _Write(
            "observe",
            key,
            _now_ms(now),
            max_age=_effective_max_age(max_age, self._max_age_cap),
            enforce=enforce,
            report_uri=report_uri,
        )
        result: tuple[Action, KnownHost | None] = self._write(
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
        expires_ms = _to_ms(expires)
        if expires_ms < now_ms:
            raise ValueError(
                f"cannot add {key}: expiry {expires.isoformat()} is in the past "
                f"(now is {_from_ms(now_ms).isoformat()})"
            )
        write = _Write(
            "add", key, now_ms, expires_ms=expires_ms, enforce=enforce, report_uri=report_uri
        )
        entry: KnownHost = self._write(write, f"add {key}")
        return entry

    def forget(self, host: str, *, now: datetime | None = None) -> bool:
        """Delete the host's entry everywhere; True if it was Known."""
        key = canonical_host(host)
        known: bool = self._write(_Write("forget", key, _now_ms(now)), f"forget {key}")
        return known

    def clear(self) -> int:
        """Delete every entry, expired or not; return how many rows were deleted."""
        count: int = self._write(_Write("clear", now_ms=_now_ms(None)), "clear")
        return count

    def _direct(self, doing: str, sql: str, params: tuple[Any, ...]) -> Any:
        """A statement that is not queued when the database is down (StoreUnavailable)."""
        with self._write_lock:
            if self._closed:
                raise StoreError(f"Expect-CT store {self._location} is closed; cannot {doing}")
            conn = self._writer
            if self._down_reason is None and conn is not None:
                try:
                    return conn.execute(sql, params)
                except self._pg.Error as e:
                    if not self._broken(conn):
                        raise StoreError(
                            f"Expect-CT store {self._location}: cannot {doing}: {self._explain(e)}"
                        ) from None
                    self._went_down(self._explain(e))
        raise StoreUnavailable(
            f"Expect-CT store {self._location} unreachable ({self._down_reason}): "
            f"cannot {doing} now"
        )

    def prune(self, now: datetime | None = None) -> int:
        """Delete expired entries (and lapsed report claims); return how many hosts."""
        now_ms = _now_ms(now)
        self._direct(
            "prune report claims",
            "DELETE FROM expect_ct_report_claims WHERE expires_ms <= %s",
            (now_ms,),
        )
        cursor = self._direct(
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
        cursor = self._direct(
            f"claim report {key}",
            "INSERT INTO expect_ct_report_claims AS c (key, expires_ms) VALUES (%s, %s) "
            "ON CONFLICT (key) DO UPDATE SET expires_ms = EXCLUDED.expires_ms "
            "WHERE c.expires_ms <= %s RETURNING key",
            (key, now_ms + window_s * 1000, now_ms),
        )
        return cursor.fetchone() is not None

    def count(self, *, now: datetime | None = None) -> int:
        """Number of Known (unexpired) hosts in the replica."""
        now_ms = _now_ms(now)
        return sum(1 for row in list(self._rows.values()) if row[3] >= now_ms)

    def hosts(self, *, now: datetime | None = None) -> Iterator[KnownHost]:
        """Every Known (unexpired) host in the replica, in host order."""
        now_ms = _now_ms(now)
        rows = sorted(row for row in list(self._rows.values()) if row[3] >= now_ms)
        for row in rows:
            yield _known_host(row)

    def wait_for_sync(self, timeout: float = 30.0) -> None:
        """Return once this replica has taken every change committed anywhere before this
        call: a NOTIFY sent now arrives after those of every earlier commit. For tests and
        tools that must read their own fleet's writes."""
        token = uuid.uuid4().hex
        arrived = threading.Event()
        self._sync_tokens[token] = arrived
        try:
            self._direct(
                "wait for the replica",
                "SELECT pg_notify(%s, %s)",
                (CHANNEL, json.dumps({"op": "sync", "token": token, "version": 0})),
            )
            if not arrived.wait(timeout):
                raise StoreError(
                    f"Expect-CT store {self._location}: the replica did not catch up in "
                    f"{timeout:g} s"
                )
        finally:
            self._sync_tokens.pop(token, None)

    def close(self) -> None:
        """Stop the replica thread and close the connections (idempotent). Writes still
        queued are lost: they are logged."""
        with self._write_lock:
            if self._closed:
                return
            self._closed = True
            if self._queue:
                logger.error(
                    f"Expect-CT: closing the PostgreSQL store {self._location} with "
                    f"{len(self._queue)} writes never committed (the database was unreachable)."
                )
        self._stop.set()
        try:  # wake the replica thread from its wait for notifications
            with self._write_lock:
                if self._writer is not None and self._down_reason is None:
                    self._writer.execute("SELECT pg_notify(%s, %s)", (CHANNEL, '{"op": "wake"}'))
        except self._pg.Error:
            pass
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=5)
        self._close_connections()

    def _close_connections(self) -> None:
        for conn in (getattr(self, "_writer", None), getattr(self, "_listener", None)):
            if conn is not None:
                conn.close()
