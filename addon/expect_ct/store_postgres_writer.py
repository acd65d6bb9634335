"""The writing half of the PostgreSQL store: the connection that commits writes, and the queue
that keeps them, in order, while PostgreSQL cannot be reached.

Pure: no mitmproxy import. Used by ``expect_ct.store_postgres.PostgresStore``, which also runs
``Writer.retry`` on its background thread.

* Writes return once committed (RFC 9163 notes are acknowledged only when durable), and the
  store's replica takes the change at once. Per-host read-modify-write is serialised across the
  fleet by a transaction-scoped advisory lock on the host.
* When PostgreSQL cannot be reached, a write is applied to the replica, queued in order, and
  the call raises ``StoreUnavailable`` (it is *pending*, not acknowledged). ``retry`` reconnects
  and commits the queue in order. One warning when the database goes away, one when it is back.
  Queued writes live in memory: they survive an outage of any length, not the end of the
  process.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING
from typing import Any

from expect_ct.store import StoreError
from expect_ct.store import StoreUnavailable
from expect_ct.store import _known_host
from expect_ct.store import _Row
from expect_ct.store_postgres_setup import CHANNEL
from expect_ct.store_postgres_setup import Database
from expect_ct.store_postgres_setup import is_broken

if TYPE_CHECKING:
    import psycopg

    from expect_ct.store_postgres_replica import Replica

# The logger PostgresStore always used, so logging configuration keeps working.
logger = logging.getLogger("expect_ct.store_postgres")

# Second argument of hashtextextended() for the per-host advisory locks (any constant).
_HOST_LOCK_SEED = 9163


@dataclass(frozen=True)
class Write:
    """A write as the caller asked for it, so a queued one can be replayed unchanged."""

    kind: str  # "observe", "add", "forget", "clear"
    key: str = ""
    now_ms: int = 0
    max_age: int = 0  # observe: the effective max-age in seconds
    expires_ms: int = 0  # add
    enforce: bool = False
    report_uri: str | None = None

    @property
    def removes(self) -> bool:
        """True for a write that deletes the host's entry (forget, or an observe of max-age 0)."""
        return self.kind == "forget" or (self.kind == "observe" and self.max_age == 0)

    def new_row(self, kept_noted_ms: int | None) -> _Row:
        """The row an observe or add stores; ``kept_noted_ms`` is the noted time of the entry
        when the host is still Known (kept across updates), None otherwise."""
        expires_ms = (
            self.now_ms + self.max_age * 1000 if self.kind == "observe" else self.expires_ms
        )
        noted_ms = self.now_ms if kept_noted_ms is None else kept_noted_ms
        return (self.key, int(self.enforce), self.report_uri, expires_ms, noted_ms, self.now_ms)


class Writer:
    """Commits writes to the database and queues them while it is unreachable. Thread-safe.

    ``conn`` is the open connection to write on (the one the schema was migrated on).
    """

    def __init__(
        self,
        database: Database,
        replica: Replica,
        conn: psycopg.Connection[Any],
        *,
        retry_interval: float,
    ) -> None:
        self._database = database
        self._replica = replica
        self._retry_interval = retry_interval
        self._lock = threading.Lock()  # the connection and the queue
        self._conn: psycopg.Connection[Any] | None = conn
        self._queue: deque[Write] = deque()
        self._down_reason: str | None = None
        self._closed = False

    @property
    def pending(self) -> int:
        """Writes accepted but not yet committed."""
        return len(self._queue)

    @property
    def queued(self) -> Iterable[Write]:
        """The writes not yet committed, oldest first (live: the replica re-applies them)."""
        return self._queue

    @property
    def down_reason(self) -> str | None:
        """Why PostgreSQL cannot be reached right now, or None while it can."""
        return self._down_reason

    @property
    def needs_retry(self) -> bool:
        """True while writes are queued or the database is known to be unreachable."""
        return bool(self._queue) or self._down_reason is not None

    # -- writing --

    def write(self, write: Write, doing: str) -> Any:
        """Commit ``write`` and return its result; StoreUnavailable (with the provisional
        result) when it was queued instead, StoreError when the database refuses it."""
        location = self._database.location
        with self._lock:
            if self._closed:
                raise StoreError(f"Expect-CT store {location} is closed; cannot {doing}")
            if not self._queue and self._down_reason is None:
                conn = self._conn
                try:
                    if conn is None:
                        raise self._database.pg.OperationalError("no connection")
                    return self._commit(conn, write)
                except self._database.pg.Error as e:
                    self._refused_or_down(conn, e, doing)
            # Down, or writes queued before this one: keep the order, let the thread retry.
            provisional = self._replica.apply_pending(write)
            self._queue.append(write)
        message = (
            f"Expect-CT store {location} unreachable ({self._down_reason}): "
            f"{doing} is pending, {len(self._queue)} writes queued"
        )
        if isinstance(provisional, tuple):
            raise StoreUnavailable(message, action=provisional[0], entry=provisional[1])
        raise StoreUnavailable(message)

    def direct(self, doing: str, sql: str, params: tuple[Any, ...]) -> Any:
        """A statement that is not queued when the database is down (StoreUnavailable); its
        cursor."""
        location = self._database.location
        with self._lock:
            if self._closed:
                raise StoreError(f"Expect-CT store {location} is closed; cannot {doing}")
            conn = self._conn
            if self._down_reason is None and conn is not None:
                try:
                    return conn.execute(sql, params)
                except self._database.pg.Error as e:
                    self._refused_or_down(conn, e, doing)
        raise StoreUnavailable(
            f"Expect-CT store {location} unreachable ({self._down_reason}): cannot {doing} now"
        )

    def _refused_or_down(
        self, conn: psycopg.Connection[Any] | None, error: Exception, doing: str
    ) -> None:
        """After ``error``: StoreError when the database refused the statement on a working
        connection; otherwise the database went away, so mark it down (caller queues)."""
        reason = self._database.explain(error)
        if not is_broken(conn):
            raise StoreError(
                f"Expect-CT store {self._database.location}: cannot {doing}: {reason}"
            ) from None
        self.went_down(reason)

    def _commit(self, conn: psycopg.Connection[Any], write: Write) -> Any:
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
                if write.removes:
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
                    new_row = write.new_row(found[1] if (found is not None and known) else None)
                    _, _, _, expires_ms, noted_ms, _ = new_row
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
            self._replica.put(*put)
        if deleted is not None:
            self._replica.delete(*deleted)
        if cleared is not None:
            self._replica.clear(int(cleared))
        return result

    # -- outages --

    def went_down(self, why: str) -> None:
        """Note that the database cannot be reached (one warning per outage)."""
        if self._down_reason is None:
            logger.warning(
                f"Expect-CT: the PostgreSQL store {self._database.location} cannot be reached "
                f"({why}). Known hosts are still enforced from this proxy's replica; new notes "
                f"are kept in memory and committed once it is back (retrying every "
                f"{self._retry_interval:g} s)."
            )
        self._down_reason = why

    def retry(self) -> None:
        """Reconnect if needed and commit queued writes in order (background thread); stops at
        the first failure."""
        pg = self._database.pg
        with self._lock:
            if self._conn is not None and not is_broken(self._conn):
                try:  # a connection only knows it is broken once it is used
                    self._conn.execute("SELECT 1")
                except pg.Error:
                    pass
            if is_broken(self._conn):
                if self._conn is not None:
                    self._conn.close()
                self._conn = None
                try:
                    self._conn = self._database.connect()
                except StoreError as e:
                    self.went_down(str(e).split(": ", 1)[-1])
                    return
            assert self._conn is not None
            committed = 0
            while self._queue:
                try:
                    self._commit(self._conn, self._queue[0])
                except pg.Error as e:
                    if is_broken(self._conn):
                        self.went_down(self._database.explain(e))
                        return
                    logger.error(
                        f"Expect-CT: dropped a queued write to {self._database.location} that "
                        f"the database refuses: {self._database.explain(e)}"
                    )
                self._queue.popleft()
                committed += 1
            if self._down_reason is not None:
                logger.warning(
                    f"Expect-CT: the PostgreSQL store {self._database.location} is reachable "
                    f"again; {committed} queued writes committed."
                )
                self._down_reason = None

    # -- closing --

    def close(self) -> bool:
        """Refuse further writes; False if already closed. Writes still queued are lost: they
        are logged."""
        with self._lock:
            if self._closed:
                return False
            self._closed = True
            if self._queue:
                logger.error(
                    f"Expect-CT: closing the PostgreSQL store {self._database.location} with "
                    f"{len(self._queue)} writes never committed (the database was unreachable)."
                )
            return True

    def wake_listeners(self) -> None:
        """Send a no-op notification, so a thread waiting for notifications returns now."""
        try:
            with self._lock:
                if self._conn is not None and self._down_reason is None:
                    self._conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, '{"op": "wake"}'))
        except self._database.pg.Error:
            pass

    def disconnect(self) -> None:
        if self._conn is not None:
            self._conn.close()
