"""Known Expect-CT Hosts in one SQLite file: the default store, for one machine.

Pure: standard library only, no mitmproxy import. The shared types and the interface are in
``expect_ct.store``; ``KnownHostStore`` is importable from there too.

Design decisions (each one cites the rule it serves):

* Every look-up is a primary-key probe; nothing ever loads the whole table.
* Expired rows are never returned and are deleted when met.
* Several mitmproxy instances may share one file: WAL journal mode (readers never block the
  writer), a busy timeout, and short ``BEGIN IMMEDIATE`` transactions for every
  read-modify-write, so two writers never both read a stale row.
* ``synchronous=NORMAL`` with WAL: a commit has been written to the WAL with write(2) before
  ``observe()`` returns, so it is in the operating system's page cache and survives the
  process being killed (SIGKILL, crash); the database is also never corrupted by a power loss
  (WAL commits are atomic). What NORMAL gives up, compared with FULL, is only durability of
  the last few commits across an OS crash or power cut; it saves an fsync on every observed
  header. Losing a just-noted host there is harmless for a trust-on-first-use mechanism: the
  next response from the host notes it again.
* A file that is not an Expect-CT store is never modified: it is first opened read-only and
  inspected (SQLite header, ``PRAGMA application_id`` and ``PRAGMA user_version``), and only an
  empty file or a store of this schema is opened for writing.
* The ``report_claims`` table (fleet-wide report de-duplication, ``claim_report``) is an
  additive part of schema version 1: older code ignores it, and a version-1 file without it
  gets it on first open.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from expect_ct.store import _COLUMNS
from expect_ct.store import APPLICATION_ID
from expect_ct.store import SCHEMA_VERSION
from expect_ct.store import Action
from expect_ct.store import KnownHost
from expect_ct.store import StoreError
from expect_ct.store import _add_expiry_ms
from expect_ct.store import _check_cap
from expect_ct.store import _effective_max_age
from expect_ct.store import _known_host
from expect_ct.store import _now_ms
from expect_ct.store import _Row
from expect_ct.store import canonical_host

__all__ = ["BUSY_TIMEOUT_SECONDS", "KnownHostStore"]

# Waiting this long for another process's write lock is far longer than any of our transactions
# (a few statements each), so hitting it means the other side is stuck, not busy.
BUSY_TIMEOUT_SECONDS = 5.0

# hosts() reads this many rows per query and holds no read transaction between batches, so a
# slow consumer neither pins the table in memory nor stops WAL checkpoints.
_HOSTS_BATCH = 512

# SQLite's answers for a file that is no database, or a damaged one.
_NOT_A_DATABASE = (sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_CORRUPT)

_CLAIMS_TABLE = """
    CREATE TABLE IF NOT EXISTS report_claims (
        key TEXT PRIMARY KEY NOT NULL,
        expires_ms INTEGER NOT NULL
    ) WITHOUT ROWID
"""

_SCHEMA = (
    # WITHOUT ROWID: the table is clustered on host, so get() is one B-tree descent.
    """
    CREATE TABLE known_hosts (
        host TEXT PRIMARY KEY NOT NULL,
        enforce INTEGER NOT NULL CHECK (enforce IN (0, 1)),
        report_uri TEXT,
        expires_ms INTEGER NOT NULL,
        noted_ms INTEGER NOT NULL,
        last_observed_ms INTEGER NOT NULL
    ) WITHOUT ROWID
    """,
    # prune(), count() and a million-row table: range scans on expiry instead of full scans.
    "CREATE INDEX known_hosts_expires ON known_hosts (expires_ms)",
    _CLAIMS_TABLE,
)


def _in_wal_mode(file: Path) -> bool:
    """True if the file starts with an SQLite header that declares WAL mode (file format 2)."""
    try:
        with open(file, "rb") as f:
            header = f.read(20)
    except OSError:
        return False
    return header[:16] == b"SQLite format 3\x00" and header[18:20] == b"\x02\x02"


# --- the store -------------------------------------------------------------------------------


class KnownHostStore:
    """The Known Expect-CT Host cache in one SQLite file (or ``":memory:"``).

    One connection per object, usable from any thread (calls are serialised by a lock); open
    as many objects, in as many processes, on one file as needed. Every write is committed
    before the method returns. Database failures raise StoreError; invalid hosts and
    arguments raise ValueError.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_age_cap: int | None = None,
    ) -> None:
        _check_cap(max_age_cap)
        self._max_age_cap = max_age_cap
        raw = os.fspath(path)
        self._path = raw if raw == ":memory:" else os.path.expanduser(raw)
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = self._open()

    @property
    def location(self) -> str:
        """Where the hosts are kept, for messages: the file path."""
        return self._path

    @property
    def pending_writes(self) -> int:
        """Always 0: every write is committed (or fails) before it returns."""
        return 0

    @property
    def path(self) -> str:
        """The database file (``~`` expanded), or ``":memory:"``."""
        return self._path

    @property
    def max_age_cap(self) -> int | None:
        return self._max_age_cap

    def __enter__(self) -> KnownHostStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"KnownHostStore({self._path!r}, max_age_cap={self._max_age_cap!r})"

    # -- opening --

    def _open(self) -> sqlite3.Connection:
        if self._path == ":memory:":
            conn = self._connect(self._path)
            self._initialise(conn)
            return conn
        file = Path(self._path)
        self._make_directory(file.parent)
        if file.exists():
            if not file.is_file():
                raise StoreError(
                    f"Expect-CT store {self._path} is not a regular file. "
                    "Pass expect_ct_store=<path of a file>."
                )
            if file.stat().st_size > 0:
                self._inspect_read_only(file)
        try:
            conn = self._connect(self._path)
        except sqlite3.Error as e:
            raise self._cannot_open(e) from e
        try:
            # Persistent in the file; harmless when another process already set it.
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            self._initialise(conn)
        except StoreError:
            conn.close()
            raise
        except sqlite3.Error as e:
            conn.close()
            raise self._cannot_open(e) from e
        return conn

    @staticmethod
    def _connect(target: str, *, uri: bool = False) -> sqlite3.Connection:
        # isolation_level=None: no implicit transactions; every write is an explicit
        # BEGIN IMMEDIATE ... COMMIT (or a single autocommitted statement).
        return sqlite3.connect(
            target,
            timeout=BUSY_TIMEOUT_SECONDS,
            isolation_level=None,
            check_same_thread=False,
            uri=uri,
        )

    def _make_directory(self, directory: Path) -> None:
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(
                f"cannot create the directory {directory} for the Expect-CT store "
                f"{self._path}: {e.strerror or e}. Create it, or pass expect_ct_store=<other path>."
            ) from e

    def _inspect_read_only(self, file: Path) -> None:
        # immutable: SQLite takes no locks and creates no -wal/-shm/-journal file, so nothing
        # (journal-mode switch, WAL checkpoint on close, hot-journal rollback) can write next to
        # or into a file that turns out not to be ours. It reads only the main file, which may
        # lag a WAL; _initialise checks again through the normal connection.
        #
        # Except for a database in WAL mode (header bytes 18-19 are 2) whose -wal file exists:
        # another process may be checkpointing into the main file at this very moment, and the
        # main file alone is then torn ("database disk image is malformed" for a sound store,
        # so a second proxy would refuse to start). It is read through its WAL with an ordinary
        # read-only connection, which never checkpoints, rolls back or changes the journal mode.
        live_wal = _in_wal_mode(file) and os.path.exists(f"{file}-wal")
        uri = file.resolve().as_uri() + ("?mode=ro" if live_wal else "?mode=ro&immutable=1")
        try:
            probe = self._connect(uri, uri=True)
        except sqlite3.Error as e:
            raise self._cannot_open(e) from e
        try:
            self._check_schema(probe)
        except sqlite3.Error as e:
            if getattr(e, "sqlite_errorcode", None) in _NOT_A_DATABASE:
                raise self._not_a_store(str(e)) from e
            raise self._cannot_open(e) from e
        finally:
            probe.close()

    def _initialise(self, conn: sqlite3.Connection) -> None:
        if self._check_schema(conn) == "ours":
            return  # the usual case needs no write lock
        # IMMEDIATE: two processes starting on a new file must not both create the schema.
        conn.execute("BEGIN IMMEDIATE")
        try:
            state = self._check_schema(conn)
            if state == "empty":
                for statement in _SCHEMA:
                    conn.execute(statement)
                conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            elif state == "without-claims":
                conn.execute(_CLAIMS_TABLE)  # additive: a store written before claim_report
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _check_schema(self, conn: sqlite3.Connection) -> str:
        """Return "empty", "ours" or "without-claims" (ours, before report_claims existed);
        raise StoreError for anything else."""
        application_id = conn.execute("PRAGMA application_id").fetchone()[0]
        user_version = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = sorted(
            name
            for (name,) in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            )
        )
        if application_id == 0 and user_version == 0 and not tables:
            return "empty"
        if application_id != APPLICATION_ID:
            listed = ", ".join(tables) if tables else "no tables"
            raise self._not_a_store(
                f"an SQLite database of another program: application_id {application_id}, "
                f"user_version {user_version}, {listed}"
            )
        if user_version != SCHEMA_VERSION:
            newer = "a newer" if user_version > SCHEMA_VERSION else "an unknown"
            raise self._not_a_store(
                f"schema version {user_version} from {newer} version of mitmproxy-expect-ct; "
                f"this one understands version {SCHEMA_VERSION}"
            )
        if "known_hosts" not in tables:
            raise self._not_a_store("its known_hosts table is missing")
        return "ours" if "report_claims" in tables else "without-claims"

    def _not_a_store(self, why: str) -> StoreError:
        return StoreError(
            f"{self._path} is not an Expect-CT store this version can use ({why}). "
            f"Move it aside or pass expect_ct_store=<other path>; it was not modified."
        )

    def _cannot_open(self, error: sqlite3.Error) -> StoreError:
        return StoreError(
            f"cannot open the Expect-CT store {self._path}: {error}. Check that the file and its "
            f"directory are writable (SQLite also creates {self._path}-wal and "
            f"{self._path}-shm) and that no other program holds an exclusive lock, "
            f"or pass expect_ct_store=<other path>."
        )

    # -- plumbing --

    @contextmanager
    def _connection(self, doing: str) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._conn is None:
                raise StoreError(f"Expect-CT store {self._path} is closed; cannot {doing}")
            try:
                yield self._conn
            except sqlite3.Error as e:
                raise StoreError(f"Expect-CT store {self._path}: cannot {doing}: {e}") from e

    @staticmethod
    @contextmanager
    def _write_transaction(conn: sqlite3.Connection) -> Iterator[None]:
        # IMMEDIATE takes the write lock before the first read, so a read-modify-write never
        # acts on a row another process changes in between.
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    @staticmethod
    def _select(conn: sqlite3.Connection, host: str) -> _Row | None:
        row: _Row | None = conn.execute(
            f"SELECT {_COLUMNS} FROM known_hosts WHERE host = ?", (host,)
        ).fetchone()
        return row

    # -- API --

    def get(self, host: str, *, now: datetime | None = None) -> KnownHost | None:
        """The unexpired entry for exactly this host, or None (RFC 9163 section 2.4).

        An expired entry found here is deleted.
        """
        key = canonical_host(host)
        now_ms = _now_ms(now)
        with self._connection(f"look up {key}") as conn:
            row = self._select(conn, key)
            if row is None:
                return None
            if row[3] < now_ms:
                # Conditional: another process may have noted the host again meanwhile.
                conn.execute(
                    "DELETE FROM known_hosts WHERE host = ? AND expires_ms < ?", (key, now_ms)
                )
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
        """Apply a valid Expect-CT header received over a CT-qualified connection.

        The RFC 9163 section 2.3.2 update; the caller has checked that the header is valid and
        the connection CT-qualified (otherwise nothing may be updated, section 2.3.2). Returns
        the action and the host's entry afterwards (None when it is not Known):

        * "noted": the host was not Known (absent or expired) and max-age > 0.
        * "updated": the host was Known and max-age > 0. The entry is always rewritten, even
          when enforce and report-uri are the same: the Effective Expiration Date is computed
          from the time of this observation (section 2.3.2.2), so every valid header moves it.
          ``noted`` is kept; ``last_observed`` and ``expires`` move.
        * "removed": max-age = 0 and the host was Known: its entry is deleted.
        * "ignored": max-age = 0 and the host was not Known: it MUST NOT be noted.

        max-age is clamped to 2**31 (RFC 7234 section 1.2.1) and to ``max_age_cap``.
        The change is committed before this returns.
        """
        key = canonical_host(host)
        now_ms = _now_ms(now)
        effective_max_age = _effective_max_age(max_age, self._max_age_cap)
        with self._connection(f"record the Expect-CT header of {key}") as conn:
            with self._write_transaction(conn):
                row = self._select(conn, key)
                known = row is not None and row[3] >= now_ms
                if effective_max_age == 0:
                    if row is not None:
                        conn.execute("DELETE FROM known_hosts WHERE host = ?", (key,))
                    return ("removed" if known else "ignored"), None
                noted_ms = row[4] if (row is not None and known) else now_ms
                new_row: _Row = (
                    key,
                    int(enforce),
                    report_uri,
                    now_ms + effective_max_age * 1000,
                    noted_ms,
                    now_ms,
                )
                conn.execute(
                    f"INSERT OR REPLACE INTO known_hosts ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
                    new_row,
                )
            return ("updated" if known else "noted"), _known_host(new_row)

    def add(
        self,
        host: str,
        *,
        enforce: bool,
        report_uri: str | None,
        expires: datetime,
        now: datetime | None = None,
    ) -> KnownHost:
        """Make ``host`` Known until ``expires`` (preload seeding, RFC 9163 section 2.2.1).

        Replaces any entry; ``noted`` is kept if the host was already Known. ValueError if
        ``expires`` is already in the past.
        """
        key = canonical_host(host)
        now_ms = _now_ms(now)
        expires_ms = _add_expiry_ms(key, expires, now_ms)
        with self._connection(f"add {key}") as conn:
            with self._write_transaction(conn):
                row = self._select(conn, key)
                known = row is not None and row[3] >= now_ms
                noted_ms = row[4] if (row is not None and known) else now_ms
                new_row: _Row = (key, int(enforce), report_uri, expires_ms, noted_ms, now_ms)
                conn.execute(
                    f"INSERT OR REPLACE INTO known_hosts ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
                    new_row,
                )
        return _known_host(new_row)

    def forget(self, host: str, *, now: datetime | None = None) -> bool:
        """Delete the host's entry; True if it was Known (present and unexpired)."""
        key = canonical_host(host)
        now_ms = _now_ms(now)
        with self._connection(f"forget {key}") as conn:
            with self._write_transaction(conn):
                row = self._select(conn, key)
                if row is None:
                    return False
                conn.execute("DELETE FROM known_hosts WHERE host = ?", (key,))
            return row[3] >= now_ms

    def clear(self) -> int:
        """Delete every entry, expired or not; return how many rows were deleted."""
        with self._connection("clear") as conn:
            return conn.execute("DELETE FROM known_hosts").rowcount

    def prune(self, now: datetime | None = None) -> int:
        """Delete expired entries (and lapsed report claims); return how many hosts."""
        now_ms = _now_ms(now)
        with self._connection("prune expired entries") as conn:
            conn.execute("DELETE FROM report_claims WHERE expires_ms <= ?", (now_ms,))
            return conn.execute("DELETE FROM known_hosts WHERE expires_ms < ?", (now_ms,)).rowcount

    def claim_report(self, key: str, window_s: int, *, now: datetime | None = None) -> bool:
        """True for exactly one caller per ``key`` per ``window_s`` seconds, across every
        process using this file: the caller that gets True sends the report, the others
        record it as suppressed. A claim lapses ``window_s`` seconds after it was won."""
        if window_s < 1:
            raise ValueError(f"window_s must be a positive number of seconds, not {window_s}")
        now_ms = _now_ms(now)
        with self._connection(f"claim report {key}") as conn:
            # One statement, so atomic: it inserts or takes over a lapsed claim, or does nothing.
            won = conn.execute(
                "INSERT INTO report_claims (key, expires_ms) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET expires_ms = excluded.expires_ms "
                "WHERE report_claims.expires_ms <= ? RETURNING key",
                (key, now_ms + window_s * 1000, now_ms),
            ).fetchall()
            return bool(won)

    def count(self, *, now: datetime | None = None) -> int:
        """Number of Known (unexpired) hosts."""
        now_ms = _now_ms(now)
        with self._connection("count entries") as conn:
            (n,) = conn.execute(
                "SELECT COUNT(*) FROM known_hosts WHERE expires_ms >= ?", (now_ms,)
            ).fetchone()
            return int(n)

    def hosts(self, *, now: datetime | None = None) -> Iterator[KnownHost]:
        """Every Known (unexpired) host, in host order, read in batches.

        ``now`` is fixed when iteration starts. Other calls on this store (and other
        processes) may run between items; entries changed meanwhile may or may not appear.
        """
        now_ms = _now_ms(now)
        after: str | None = None
        while True:
            with self._connection("list entries") as conn:
                if after is None:
                    batch = conn.execute(
                        f"SELECT {_COLUMNS} FROM known_hosts WHERE expires_ms >= ? "
                        "ORDER BY host LIMIT ?",
                        (now_ms, _HOSTS_BATCH),
                    ).fetchall()
                else:
                    batch = conn.execute(
                        f"SELECT {_COLUMNS} FROM known_hosts WHERE host > ? AND expires_ms >= ? "
                        "ORDER BY host LIMIT ?",
                        (after, now_ms, _HOSTS_BATCH),
                    ).fetchall()
            for row in batch:
                yield _known_host(row)
            if len(batch) < _HOSTS_BATCH:
                return
            after = batch[-1][0]

    def integrity_check(self) -> str:
        """SQLite's ``PRAGMA integrity_check`` result: "ok" for a sound file."""
        with self._connection("check integrity") as conn:
            return "\n".join(str(r[0]) for r in conn.execute("PRAGMA integrity_check"))

    def close(self) -> None:
        """Close the connection (idempotent); later calls raise StoreError."""
        with self._lock:
            if self._conn is not None:
                conn, self._conn = self._conn, None
                conn.close()
