"""The local replica of the PostgreSQL store: what look-ups read, so the TLS handshake never
waits on the network.

Pure: no mitmproxy import. Used by ``expect_ct.store_postgres.PostgresStore``, which calls
``Replica.follow`` and ``Replica.resync`` from its background thread.

* The replica holds the unexpired hosts, loaded when it is created (before the store's
  constructor returns).
* It follows the database through LISTEN/NOTIFY on its own connection: triggers on the table
  send every insert, update, delete and truncate with the row (or its key) and a version from
  one sequence, so any writer (another proxy, the CLI, psql) reaches every replica at once. A
  version per host (of rows and of deletions) lets a late message never undo a newer change.
* A full re-sync every ``resync_interval`` seconds, and after every reconnection (messages may
  have been missed), is the safety net. Writes still queued by this store are re-applied on top
  of it: they are newer than anything in the table.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Iterator
from typing import TYPE_CHECKING
from typing import Any

from expect_ct.store import Action
from expect_ct.store import KnownHost
from expect_ct.store import _known_host
from expect_ct.store import _now_ms
from expect_ct.store import _Row
from expect_ct.store_postgres_setup import CHANNEL
from expect_ct.store_postgres_setup import Database
from expect_ct.store_postgres_setup import is_broken

if TYPE_CHECKING:
    import psycopg

    from expect_ct.store_postgres_writer import Write

_COLUMNS = "host, enforce::int, report_uri, expires_ms, noted_ms, last_observed_ms"


class Replica:
    """This proxy's copy of the Known Hosts, kept current from the database.

    Reads (``get``, ``count``, ``hosts``) take no lock and touch no connection. Changes come
    from the listener connection (``follow``, ``resync``) and from the store's own writes
    (``put``, ``delete``, ``clear`` after a commit; ``apply_pending`` before one).
    """

    def __init__(self, database: Database, *, resync_interval: float) -> None:
        self._resync_interval = resync_interval
        self._database = database
        self._lock = threading.Lock()
        self.rows: dict[str, _Row] = {}
        self._versions: dict[str, int] = {}  # of rows and of deletions (tombstones)
        self._cleared_at = 0
        self._sync_tokens: dict[str, threading.Event] = {}
        self._listener: psycopg.Connection[Any] | None = database.connect()
        try:
            self._listener.execute(f"LISTEN {CHANNEL}")
            self._load(self._listener, ())
        except BaseException:
            self._listener.close()
            raise
        self._next_resync = time.monotonic() + resync_interval

    # -- reads --

    def get(self, key: str, now_ms: int) -> KnownHost | None:
        row = self.rows.get(key)  # one dict read: atomic, needs no lock
        if row is None or row[3] < now_ms:
            return None
        return _known_host(row)

    def count(self, now_ms: int) -> int:
        return sum(1 for row in list(self.rows.values()) if row[3] >= now_ms)

    def hosts(self, now_ms: int) -> Iterator[KnownHost]:
        rows = sorted(row for row in list(self.rows.values()) if row[3] >= now_ms)
        for row in rows:
            yield _known_host(row)

    # -- following the database (the store's background thread) --

    @property
    def listening(self) -> bool:
        """False when the listener connection is gone (the next ``follow`` reconnects)."""
        return not is_broken(self._listener)

    @property
    def resync_due(self) -> bool:
        return time.monotonic() >= self._next_resync

    def follow(self, pending: Iterable[Write]) -> None:
        """Take the notifications that arrive within half a second; reconnect (and re-sync)
        first if the listener connection was lost. StoreError if it cannot reconnect."""
        if is_broken(self._listener):
            if self._listener is not None:
                self._listener.close()
            self._listener = None
            fresh = self._database.connect()
            fresh.execute(f"LISTEN {CHANNEL}")
            self._listener = fresh
            self._load(fresh, pending)  # messages were missed while disconnected
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

    def resync(self, pending: Iterable[Write]) -> None:
        """Reload the whole replica now (the periodic safety net)."""
        listener = self._listener
        assert listener is not None
        self._load(listener, pending)
        self._next_resync = time.monotonic() + self._resync_interval

    def await_sync(self, send: Callable[[str], object], timeout: float) -> bool:
        """Call ``send`` with a NOTIFY payload for the database to echo; True once the echo has
        come back (every change committed before it has then been taken), False after
        ``timeout`` seconds."""
        token = uuid.uuid4().hex
        arrived = threading.Event()
        self._sync_tokens[token] = arrived
        try:
            send(json.dumps({"op": "sync", "token": token, "version": 0}))
            return arrived.wait(timeout)
        finally:
            self._sync_tokens.pop(token, None)

    def close(self) -> None:
        if self._listener is not None:
            self._listener.close()

    def _load(self, conn: psycopg.Connection[Any], pending: Iterable[Write]) -> None:
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
        with self._lock:
            self.rows = rows
            self._versions = versions
            # Writes still queued are newer than anything in the table.
            for write in pending:
                self._apply(write)

    def _on_notify(self, payload: str, conn: psycopg.Connection[Any]) -> None:
        message = json.loads(payload)
        op, version = message["op"], int(message.get("version", 0))
        if op == "sync":
            arrived = self._sync_tokens.get(message.get("token", ""))
            if arrived is not None:
                arrived.set()
        elif op == "clear":
            self.clear(version)
        elif op == "delete":
            self.delete(message["host"], version)
        elif op == "put":
            self.put(
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
                self.put(tuple(fields), row_version)  # type: ignore[arg-type]

    # -- committed changes (from notifications and from this store's writes) --

    def _newer(self, host: str, version: int) -> bool:
        return version > max(self._versions.get(host, 0), self._cleared_at)

    def put(self, row: _Row, version: int) -> None:
        with self._lock:
            if self._newer(row[0], version):
                self.rows[row[0]] = row
                self._versions[row[0]] = version

    def delete(self, host: str, version: int) -> None:
        with self._lock:
            if self._newer(host, version):
                self.rows.pop(host, None)
                self._versions[host] = version

    def clear(self, version: int) -> None:
        with self._lock:
            if version <= self._cleared_at:
                return
            self._cleared_at = version
            self.rows = {h: r for h, r in self.rows.items() if self._versions.get(h, 0) > version}
            self._versions = {h: v for h, v in self._versions.items() if v > version}

    # -- writes not yet committed --

    def apply_pending(self, write: Write) -> tuple[Action, KnownHost | None] | int | bool:
        """Apply a queued write to the replica only, so it is enforced here at once; the
        result the write would have had."""
        with self._lock:
            return self._apply(write)

    def _apply(self, write: Write) -> tuple[Action, KnownHost | None] | int | bool:
        """``apply_pending`` for a caller that already holds the lock."""
        row = self.rows.get(write.key)
        known = row is not None and row[3] >= write.now_ms
        if write.kind == "clear":
            count = len(self.rows)
            self.rows.clear()
            return count
        if write.removes:
            self.rows.pop(write.key, None)
            if write.kind == "forget":
                return known
            return ("removed" if known else "ignored"), None
        new_row = write.new_row(row[4] if (row is not None and known) else None)
        self.rows[write.key] = new_row
        return ("updated" if known else "noted"), _known_host(new_row)
