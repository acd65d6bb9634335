"""Known Expect-CT Hosts (RFC 9163 section 2.3.2.2), persisted in SQLite.

Pure: standard library only, no mitmproxy import.

Design decisions (each one cites the rule it serves):

* Keys are exact, canonical host names (``canonical_host``): RFC 9163 section 2.3 canonicalises
  IDNs as RFC 6797 section 10 does, and section 2.3.2.2 matches hosts with RFC 6797's Congruent
  Match only (no includeSubDomains). Every look-up is a primary-key probe; nothing ever loads the
  whole table.
* Times are stored as integer milliseconds since the Unix epoch (UTC). An entry is *expired* when
  its Effective Expiration Date is strictly in the past (RFC 9163 section 2.4: "expired if its
  Effective Expiration Date is in the past"; Chromium tested ``now > expiry`` too), so at
  ``now == expires`` the host is still Known. Expired rows are never returned and are deleted
  when met.
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
"""

from __future__ import annotations

import functools
import ipaddress
import os
import re
import sqlite3
import threading
from collections.abc import Iterable
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC
from datetime import datetime
from datetime import timedelta
from pathlib import Path
from typing import Literal

import idna

__all__ = [
    "APPLICATION_ID",
    "SCHEMA_VERSION",
    "Action",
    "KnownHost",
    "KnownHostStore",
    "StoreError",
    "canonical_host",
]

# "ExCT": written to the SQLite header (PRAGMA application_id) so a store is recognisable and a
# database of another program is never mistaken for an empty store.
APPLICATION_ID = int.from_bytes(b"ExCT", "big")
SCHEMA_VERSION = 1

# RFC 9163 section 2.1.3 refers to RFC 7234 section 1.2.1: max-age values that do not fit are
# treated as 2**31 seconds. Also keeps every expiry far inside datetime's range.
MAX_AGE_LIMIT = 2**31

# Waiting this long for another process's write lock is far longer than any of our transactions
# (a few statements each), so hitting it means the other side is stuck, not busy.
BUSY_TIMEOUT_SECONDS = 5.0

# hosts() reads this many rows per query and holds no read transaction between batches, so a
# slow consumer neither pins the table in memory nor stops WAL checkpoints.
_HOSTS_BATCH = 512

# SQLite's answers for a file that is no database, or a damaged one.
_NOT_A_DATABASE = (sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_CORRUPT)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)

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
)

Action = Literal["noted", "updated", "removed", "ignored"]


class StoreError(Exception):
    """The Known Expect-CT Host database cannot be used; the message names the file."""


@dataclass(frozen=True)
class KnownHost:
    """One Known Expect-CT Host (RFC 9163 section 2.3.2.2).

    ``noted`` is when the host became Known (first noted, or noted again after it expired or
    was removed); later headers keep it. ``last_observed`` is the Effective Expect-CT Date of
    the most recent valid header, and ``expires`` (its Effective Expiration Date) is
    ``last_observed`` plus the (capped) max-age. All three are aware UTC datetimes with
    millisecond precision.
    """

    host: str
    enforce: bool
    report_uri: str | None
    expires: datetime
    noted: datetime
    last_observed: datetime

    def is_expired(self, now: datetime) -> bool:
        """True once the Effective Expiration Date is in the past (RFC 9163 section 2.4)."""
        return _to_ms(self.expires) < _to_ms(now)


# --- host canonicalisation -------------------------------------------------------------------

# After IDNA, a DNS label is letters, digits, hyphens and (seen in real host names, accepted by
# Chromium's DNSDomainFromDot) underscores.
_LDH_LABEL = re.compile(r"[a-z0-9_-]{1,63}")
_MAX_NAME_LENGTH = 253
# The label separators of IDNA (RFC 3490 section 3.1, kept by UTS #46 mapping): full stop,
# ideographic full stop, full-width full stop, half-width ideographic full stop.
_DOTS = re.compile("[.\u3002\uff0e\uff61]")


STORE_FILENAME = "expect-ct.sqlite3"  # in mitmproxy's confdir, for the addon and the CLI


def host_key(host: str) -> str:
    """The name a host is stored and looked up under; a name that cannot be canonicalised
    (it can never have been noted) is only lower-cased, so it still identifies the host."""
    try:
        return canonical_host(host)
    except ValueError:
        return host.lower()


# Pure and called for every connection and header: memoised (errors are not cached).
@functools.lru_cache(maxsize=4096)
def canonical_host(host: str) -> str:
    """Return the key under which ``host`` is stored.

    RFC 9163 section 2.3 canonicalises names as RFC 6797 section 10 does: every label that is
    not plain LDH becomes an A-label, then everything is lower-cased. One trailing dot (the
    root) is removed. IP literals are kept as addresses (RFC 9163 does not forbid noting them,
    unlike drafts up to -05): IPv4 in dotted-quad form, IPv6 without brackets in RFC 5952 form.

    Labels that are not ASCII are converted as UTS #46 (non-transitional processing, as
    browsers and curl's libidn2 do) with IDNA 2008 validity, through the ``idna`` package: so
    "faß.example" is "xn--fa-hia.example", the name a client sends, not IDNA 2003's
    "fass.example". Hosts reaching a proxy are normally already A-labels: those only have to be
    well-formed Punycode that decodes to printable text and re-encodes to itself (names
    registered under IDNA 2003, such as "xn--n3h.net", stay usable as keys: they are what is on
    the wire).

    Raises ValueError, naming what is wrong, for an empty or otherwise invalid host.
    """
    if not isinstance(host, str):
        raise TypeError(f"host must be a str, not {type(host).__name__}")
    name = host[:-1] if host.endswith(".") else host
    if not name:
        raise ValueError(f"invalid host {host!r}: empty")

    if name.startswith("[") or name.endswith("]"):
        if not (name.startswith("[") and name.endswith("]")):
            raise ValueError(f"invalid host {host!r}: unbalanced brackets")
        try:
            return _canonical_ip(ipaddress.IPv6Address(name[1:-1]))
        except ValueError as e:
            raise ValueError(f"invalid host {host!r}: not an IPv6 address in brackets ({e})") from e
    try:
        return _canonical_ip(ipaddress.ip_address(name))
    except ValueError:
        pass

    if ":" in name:
        raise ValueError(
            f"invalid host {host!r}: ':' is not allowed in a host name "
            "(pass the host without a port; IPv6 addresses must be valid)"
        )
    labels = [_canonical_label(label, host) for label in _DOTS.split(name)]
    if labels[-1].isdigit():
        # A numeric final label is an IPv4 address to a URL parser ("1.2.3.256", "010.0.0.1",
        # "1234"); it is no valid TLD, so storing it as a name would never match anything.
        raise ValueError(f"invalid host {host!r}: not a valid IPv4 address and not a DNS name")
    canonical = ".".join(labels)
    if len(canonical) > _MAX_NAME_LENGTH:
        raise ValueError(
            f"invalid host {host!r}: {len(canonical)} characters after IDNA conversion, "
            f"more than the {_MAX_NAME_LENGTH} a DNS name can have"
        )
    return canonical


def _canonical_ip(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        # RFC 5952 section 5 form; str() only uses it from Python 3.13 on, so spell it out to
        # keep keys identical across interpreters sharing one store.
        scope = f"%{address.scope_id}" if address.scope_id else ""
        return f"::ffff:{address.ipv4_mapped}{scope}"
    return str(address)


def _canonical_label(label: str, host: str) -> str:
    if not label:
        raise ValueError(f"invalid host {host!r}: empty label")
    if label.isascii():
        ascii_label = label.lower()
        if ascii_label.startswith("xn--"):
            _check_a_label(ascii_label, label, host)
    else:
        try:
            ascii_label = idna.encode(label, uts46=True, transitional=False).decode("ascii")
        except (idna.IDNAError, UnicodeError) as e:
            raise ValueError(
                f"invalid host {host!r}: label {label!r} fails IDNA 2008 / UTS #46 ({e})"
            ) from e
    if not _LDH_LABEL.fullmatch(ascii_label):
        raise ValueError(
            f"invalid host {host!r}: label {label!r} must be 1 to 63 letters, digits, "
            "hyphens or underscores after IDNA conversion"
        )
    return ascii_label


def _check_a_label(ascii_label: str, label: str, host: str) -> None:
    """An A-label must be Punycode that decodes to printable non-ASCII text and encodes back
    to itself. Deliberately not IDNA 2008 validity: an A-label is the name on the wire, and a
    name that can never become a key could never be enforced."""
    try:
        decoded = ascii_label[4:].encode("ascii").decode("punycode")
        valid = decoded.isprintable() and not decoded.isascii()
        valid = valid and decoded.encode("punycode").decode("ascii") == ascii_label[4:]
    except UnicodeError:
        valid = False
    if not valid:
        raise ValueError(f"invalid host {host!r}: label {label!r} fails IDNA (not a valid A-label)")


# --- time helpers ----------------------------------------------------------------------------


def _to_ms(moment: datetime) -> int:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"datetime {moment.isoformat()} must be timezone-aware")
    # Integer timedelta arithmetic: exact, unlike timestamp() floats.
    return (moment - _EPOCH) // _ONE_MS


def _from_ms(ms: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=ms)


def _now_ms(now: datetime | None) -> int:
    return _to_ms(datetime.now(UTC) if now is None else now)


_Row = tuple[str, int, str | None, int, int, int]
_COLUMNS = "host, enforce, report_uri, expires_ms, noted_ms, last_observed_ms"


def _known_host(row: _Row) -> KnownHost:
    host, enforce, report_uri, expires_ms, noted_ms, last_observed_ms = row
    return KnownHost(
        host=host,
        enforce=bool(enforce),
        report_uri=report_uri,
        expires=_from_ms(expires_ms),
        noted=_from_ms(noted_ms),
        last_observed=_from_ms(last_observed_ms),
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

    def __init__(self, path: str | os.PathLike[str], *, max_age_cap: int | None = None) -> None:
        # Checked before anything is opened: a cap of 0 would turn every header into a
        # removal, and a negative one into a failure at the next header (issue 17, attack 9).
        if max_age_cap is not None and (
            isinstance(max_age_cap, bool) or not isinstance(max_age_cap, int) or max_age_cap < 1
        ):
            raise ValueError(
                f"max_age_cap must be a whole number of seconds, at least 1 (or None for no "
                f"cap), not {max_age_cap!r}"
            )
        self._max_age_cap = max_age_cap
        raw = os.fspath(path)
        self._path = raw if raw == ":memory:" else os.path.expanduser(raw)
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = self._open()

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
            if self._check_schema(conn) == "empty":
                for statement in _SCHEMA:
                    conn.execute(statement)
                conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _check_schema(self, conn: sqlite3.Connection) -> str:
        """Return "empty" or "ours"; raise StoreError for anything else."""
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
        return "ours"

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

    def _effective_max_age(self, max_age: int) -> int:
        if max_age < 0:
            raise ValueError(f"max_age must not be negative, got {max_age}")
        capped = min(max_age, MAX_AGE_LIMIT)
        # RFC 9163 section 2.3.2.2: a UA MAY cap max-age and behave as if the host sent the cap.
        if self._max_age_cap is not None:
            capped = min(capped, self._max_age_cap)
        return capped

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
        effective_max_age = self._effective_max_age(max_age)
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
        expires_ms = _to_ms(expires)
        if expires_ms < now_ms:
            raise ValueError(
                f"cannot add {key}: expiry {expires.isoformat()} is in the past "
                f"(now is {_from_ms(now_ms).isoformat()})"
            )
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
        """Delete expired entries; return how many."""
        now_ms = _now_ms(now)
        with self._connection("prune expired entries") as conn:
            return conn.execute("DELETE FROM known_hosts WHERE expires_ms < ?", (now_ms,)).rowcount

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


def _bulk_insert_for_benchmarks(
    store: KnownHostStore,
    hosts: Iterable[str],
    *,
    max_age: int = 86400,
    now: datetime | None = None,
) -> int:
    """Insert already-canonical ``hosts`` fast: one transaction, executemany over a generator.

    For benchmarks and tests only; skips canonicalisation and the RFC update rules.
    Returns the number of rows inserted.
    """
    now_ms = _now_ms(now)
    expires_ms = now_ms + max_age * 1000
    rows = ((host, 0, None, expires_ms, now_ms, now_ms) for host in hosts)
    with store._connection("bulk insert") as conn:
        with store._write_transaction(conn):
            cursor = conn.executemany(
                f"INSERT OR REPLACE INTO known_hosts ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
                rows,
            )
        return cursor.rowcount
