"""Known Expect-CT Hosts (RFC 9163 section 2.3.2.2): the shared types and the store interface.

Pure: standard library only, no mitmproxy import. Two implementations of ``HostStore``:
``KnownHostStore`` (SQLite, ``expect_ct.store_sqlite``, the default) and ``PostgresStore``
(``expect_ct.store_postgres``, psycopg 3, for a fleet of proxies). ``open_store(spec)`` picks
one from the ``expect_ct_store`` value.

Design decisions shared by both (each one cites the rule it serves):

* Keys are exact, canonical host names (``canonical_host``): RFC 9163 section 2.3 canonicalises
  IDNs as RFC 6797 section 10 does, and section 2.3.2.2 matches hosts with RFC 6797's Congruent
  Match only (no includeSubDomains).
* Times are stored as integer milliseconds since the Unix epoch (UTC). An entry is *expired* when
  its Effective Expiration Date is strictly in the past (RFC 9163 section 2.4: "expired if its
  Effective Expiration Date is in the past"; Chromium tested ``now > expiry`` too), so at
  ``now == expires`` the host is still Known. Expired entries are never returned.
* A write returns only once committed. When a shared database cannot be reached, the write is
  kept and retried, and the call raises ``StoreUnavailable`` so the caller knows it is pending.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC
from datetime import datetime
from datetime import timedelta
from typing import TYPE_CHECKING
from typing import Any
from typing import Literal
from typing import Protocol

if TYPE_CHECKING:
    from expect_ct.store_postgres import PostgresStore
    from expect_ct.store_sqlite import KnownHostStore

import idna

__all__ = [
    "APPLICATION_ID",
    "MAX_AGE_LIMIT",
    "SCHEMA_VERSION",
    "STORE_FILENAME",
    "Action",
    "HostStore",
    "KnownHost",
    "KnownHostStore",
    "PostgresStore",
    "StoreError",
    "StoreUnavailable",
    "canonical_host",
    "host_key",
    "is_postgres_spec",
    "open_store",
]

# "ExCT": written to the SQLite header (PRAGMA application_id) so a store is recognisable and a
# database of another program is never mistaken for an empty store.
APPLICATION_ID = int.from_bytes(b"ExCT", "big")
# The SQLite file's schema (PRAGMA user_version); PostgreSQL keeps its own in a version table.
SCHEMA_VERSION = 1

# RFC 9163 section 2.1.3 refers to RFC 7234 section 1.2.1: max-age values that do not fit are
# treated as 2**31 seconds. Also keeps every expiry far inside datetime's range.
MAX_AGE_LIMIT = 2**31

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)

Action = Literal["noted", "updated", "removed", "ignored"]


class StoreError(Exception):
    """The Known Expect-CT Host database cannot be used; the message names the store (a file,
    or a PostgreSQL server and database, never a password)."""


class StoreUnavailable(StoreError):
    """A write was accepted but not yet committed: the shared database cannot be reached.

    The change is already in this proxy's replica (look-ups enforce it), queued, and retried
    in the background until committed; nothing is lost while the process runs. ``action`` and
    ``entry`` are what the write would have returned, judged against the replica. The addon
    must not say "noted" for it (RFC 9163 notes count only once stored durably).
    """

    def __init__(
        self, message: str, *, action: Action | None = None, entry: KnownHost | None = None
    ) -> None:
        super().__init__(message)
        self.action = action
        self.entry = entry


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


def _effective_max_age(max_age: int, cap: int | None) -> int:
    if max_age < 0:
        raise ValueError(f"max_age must not be negative, got {max_age}")
    capped = min(max_age, MAX_AGE_LIMIT)
    # RFC 9163 section 2.3.2.2: a UA MAY cap max-age and behave as if the host sent the cap.
    if cap is not None:
        capped = min(capped, cap)
    return capped


def _add_expiry_ms(key: str, expires: datetime, now_ms: int) -> int:
    """``expires`` in ms for an add of ``key``; ValueError if it is already in the past."""
    expires_ms = _to_ms(expires)
    if expires_ms < now_ms:
        raise ValueError(
            f"cannot add {key}: expiry {expires.isoformat()} is in the past "
            f"(now is {_from_ms(now_ms).isoformat()})"
        )
    return expires_ms


def _check_cap(max_age_cap: int | None) -> None:
    # Checked before anything is opened: a cap of 0 would turn every header into a removal,
    # and a negative one into a failure at the next header (issue 17, attack 9).
    if max_age_cap is not None and (
        isinstance(max_age_cap, bool) or not isinstance(max_age_cap, int) or max_age_cap < 1
    ):
        raise ValueError(
            f"max_age_cap must be a whole number of seconds, at least 1 (or None for no "
            f"cap), not {max_age_cap!r}"
        )


# --- the interface ---------------------------------------------------------------------------


class HostStore(Protocol):
    """What the addon and the CLI use; both implementations pass one conformance suite.

    Every method may raise StoreError (the store cannot be used) and ValueError (an invalid
    host or argument). Writes (observe, add, forget, clear, claim_report) return once
    committed; a store on a shared server that is down raises StoreUnavailable for a write it
    has queued (see there). ``get`` never waits on a network.
    """

    @property
    def location(self) -> str:
        """Where the hosts are kept, for messages: a file path or a PostgreSQL URL without
        password."""
        ...

    @property
    def max_age_cap(self) -> int | None: ...

    @property
    def pending_writes(self) -> int:
        """Writes accepted (StoreUnavailable) but not yet committed; always 0 for SQLite."""
        ...

    def get(self, host: str, *, now: datetime | None = None) -> KnownHost | None: ...

    def observe(
        self,
        host: str,
        *,
        max_age: int,
        enforce: bool,
        report_uri: str | None,
        now: datetime | None = None,
    ) -> tuple[Action, KnownHost | None]: ...

    def add(
        self,
        host: str,
        *,
        enforce: bool,
        report_uri: str | None,
        expires: datetime,
        now: datetime | None = None,
    ) -> KnownHost: ...

    def forget(self, host: str, *, now: datetime | None = None) -> bool: ...

    def clear(self) -> int: ...

    def prune(self, now: datetime | None = None) -> int: ...

    def count(self, *, now: datetime | None = None) -> int: ...

    def hosts(self, *, now: datetime | None = None) -> Iterator[KnownHost]: ...

    def claim_report(self, key: str, window_s: int, *, now: datetime | None = None) -> bool: ...

    def close(self) -> None: ...

    def __enter__(self) -> HostStore: ...

    def __exit__(self, *exc_info: object) -> None: ...


# --- choosing an implementation --------------------------------------------------------------

_URL_SCHEMES = ("postgresql://", "postgres://")
# A libpq key/value string starts with one of libpq's keywords: "host=db dbname=ct",
# "dbname = ct", "service=fleet". Any other "name=..." is a file name.
_KEY_VALUE = re.compile(r"^\s*([A-Za-z_]+)\s*=")
_LIBPQ_KEYWORDS = frozenset(
    """host hostaddr port dbname user password passfile service servicefile sslmode
    sslrootcert sslcert sslkey sslcrl sslpassword sslnegotiation sslcompression requiressl
    connect_timeout application_name fallback_application_name options client_encoding
    target_session_attrs load_balance_hosts channel_binding require_auth gssencmode
    krbsrvname gsslib keepalives keepalives_idle keepalives_interval keepalives_count
    tcp_user_timeout replication""".split()
)


def is_postgres_spec(spec: str) -> bool:
    """True if ``spec`` names a PostgreSQL database (URL or libpq key/value string), False for
    an SQLite file path or ``:memory:``. A ``postgresql://`` spec is never a file path."""
    if spec.strip().lower().startswith(_URL_SCHEMES):
        return True
    match = _KEY_VALUE.match(spec)
    return match is not None and match.group(1).lower() in _LIBPQ_KEYWORDS


def open_store(
    spec: str | os.PathLike[str],
    *,
    max_age_cap: int | None = None,
    **options: Any,
) -> HostStore:
    """Open the store named by an ``expect_ct_store`` value.

    * ``postgresql://USER@HOST:PORT/DB?sslmode=...``, ``postgres://...`` or a libpq key/value
      string (``host=... dbname=...``): ``PostgresStore`` (needs the ``postgres`` extra). The
      password comes from the spec, ``PGPASSWORD`` or ``~/.pgpass`` (libpq reads both).
      ``options`` go to PostgresStore (``resync_interval``, ``retry_interval``).
    * anything else, a path (``~`` expanded) or ``:memory:``: ``KnownHostStore`` (SQLite).

    Returns once the store is usable (for PostgreSQL: schema ready, replica loaded). Raises
    StoreError with one line naming the problem.
    """
    text = os.fspath(spec)
    if is_postgres_spec(text):
        from expect_ct.store_postgres import PostgresStore

        return PostgresStore(text, max_age_cap=max_age_cap, **options)
    if options:
        raise TypeError(f"options {sorted(options)} apply to PostgreSQL stores only")
    from expect_ct.store_sqlite import KnownHostStore

    return KnownHostStore(text, max_age_cap=max_age_cap)


def __getattr__(name: str) -> object:
    # The implementations import this module; importing them lazily keeps either import order
    # working and psycopg unimported for SQLite users.
    if name == "KnownHostStore":
        from expect_ct.store_sqlite import KnownHostStore

        return KnownHostStore
    if name == "PostgresStore":
        from expect_ct.store_postgres import PostgresStore

        return PostgresStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
