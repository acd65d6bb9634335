"""Setting up the PostgreSQL store: the schema and its migrations, reading a connection string,
opening connections, and turning libpq's errors into one line that names the problem (never the
password).

Pure: no mitmproxy import; psycopg is imported only when a PostgreSQL store is opened.
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field
from types import ModuleType
from typing import TYPE_CHECKING
from typing import Any

from expect_ct.store import StoreError

if TYPE_CHECKING:
    import psycopg

SCHEMA_VERSION = 1
CHANNEL = "expect_ct_known_hosts"
INSTALL_HINT = "pip install 'mitmproxy-expect-ct[postgres]'"

# Serialises schema creation and migration between proxies starting at once ("ExCT").
_MIGRATION_LOCK = int.from_bytes(b"ExCT", "big")

# A NOTIFY payload must stay under 8000 bytes; a row with a longer report-uri is sent as a key
# only, and the replica reads it from the table.
_MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        "CREATE SEQUENCE expect_ct_version",
        """
        CREATE TABLE expect_ct_known_hosts (
            host text PRIMARY KEY,
            enforce boolean NOT NULL,
            report_uri text,
            expires_ms bigint NOT NULL,
            noted_ms bigint NOT NULL,
            last_observed_ms bigint NOT NULL,
            version bigint NOT NULL
        )
        """,
        "CREATE INDEX expect_ct_known_hosts_expires ON expect_ct_known_hosts (expires_ms)",
        """
        CREATE TABLE expect_ct_report_claims (
            key text PRIMARY KEY,
            expires_ms bigint NOT NULL
        )
        """,
        """
        CREATE FUNCTION expect_ct_version_row() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            NEW.version := nextval('expect_ct_version');
            RETURN NEW;
        END $$
        """,
        """
        CREATE FUNCTION expect_ct_notify() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE
            payload text;
        BEGIN
            IF TG_OP = 'TRUNCATE' THEN
                payload := json_build_object('op', 'clear', 'version', nextval('expect_ct_version'));
            ELSIF TG_OP = 'DELETE' THEN
                payload := json_build_object(
                    'op', 'delete', 'host', OLD.host, 'version', nextval('expect_ct_version'));
            ELSE
                payload := json_build_object(
                    'op', 'put', 'host', NEW.host, 'enforce', NEW.enforce,
                    'report_uri', NEW.report_uri, 'expires_ms', NEW.expires_ms,
                    'noted_ms', NEW.noted_ms, 'last_observed_ms', NEW.last_observed_ms,
                    'version', NEW.version);
                IF octet_length(payload) > 7900 THEN
                    payload := json_build_object(
                        'op', 'stale', 'host', NEW.host, 'version', NEW.version);
                END IF;
            END IF;
            PERFORM pg_notify('expect_ct_known_hosts', payload);
            RETURN NULL;
        END $$
        """,
        """
        CREATE TRIGGER expect_ct_known_hosts_version BEFORE INSERT OR UPDATE
        ON expect_ct_known_hosts FOR EACH ROW EXECUTE FUNCTION expect_ct_version_row()
        """,
        """
        CREATE TRIGGER expect_ct_known_hosts_notify AFTER INSERT OR UPDATE OR DELETE
        ON expect_ct_known_hosts FOR EACH ROW EXECUTE FUNCTION expect_ct_notify()
        """,
        """
        CREATE TRIGGER expect_ct_known_hosts_truncate AFTER TRUNCATE
        ON expect_ct_known_hosts FOR EACH STATEMENT EXECUTE FUNCTION expect_ct_notify()
        """,
    ),
}


# Connection parameters unless the spec sets them: a server that vanishes without closing the
# connection (a partition, a dead host) is noticed in seconds, not after the kernel's TCP
# timeouts, so a write waiting on it fails, is queued, and the proxy goes on.
TCP_DEFAULTS = {
    "keepalives": "1",
    "keepalives_idle": "10",
    "keepalives_interval": "5",
    "keepalives_count": "3",
    "tcp_user_timeout": "10000",  # milliseconds
}


def import_psycopg() -> ModuleType:
    try:
        import psycopg
    except ImportError as e:
        raise StoreError(
            f"a PostgreSQL Expect-CT store needs psycopg 3, which is not installed ({e}). "
            f"Install it with: {INSTALL_HINT}"
        ) from e
    return psycopg


def parse_spec(pg: ModuleType, spec: str) -> dict[str, str]:
    """libpq's parameters of a URL or key/value string; StoreError (without it) if invalid."""
    try:
        params: dict[str, Any] = pg.conninfo.conninfo_to_dict(spec)
    except pg.Error as e:
        raise StoreError(
            f"invalid PostgreSQL connection string for the Expect-CT store: "
            f"{scrub(str(e), [spec])}. "
            "Use postgresql://USER@HOST:PORT/DATABASE or 'host=... dbname=...'."
        ) from None
    return {k: str(v) for k, v in params.items() if v is not None}


def describe(params: dict[str, str]) -> str:
    """``postgresql://user@host:port/db`` from libpq parameters, without the password."""
    if params.get("service"):
        return f"postgresql service {params['service']}"
    user = f"{params['user']}@" if params.get("user") else ""
    host = params.get("host") or params.get("hostaddr") or ""
    port = f":{params['port']}" if params.get("port") else ""
    return f"postgresql://{user}{host}{port}/{params.get('dbname') or ''}"


def scrub(text: str, secrets: list[str]) -> str:
    """``text`` on one line, with every secret replaced by ***."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    # libpq's messages span lines ("...failed: Connection refused\n\tIs the server...").
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


_UNREACHABLE = (
    "connection refused",
    "could not translate",
    "failed to resolve",
    "timeout",
    "no route",
    "could not connect",
)


def explain(error: BaseException, secrets: list[str]) -> str:
    """One line saying what went wrong, with a hint for the usual start-up mistakes."""
    text = scrub(str(error), secrets)
    for prefix in ("connection failed: ", "connection is bad: "):
        text = text.removeprefix(prefix)
    lowered = text.lower()
    if text.startswith("invalid ") and "connection option" in text:
        return f"invalid connection string ({text})"
    if "password authentication failed" in lowered or "no password supplied" in lowered:
        return f"wrong or missing password ({text}). Check the URL, PGPASSWORD or ~/.pgpass"
    if "does not exist" in lowered and "database" in lowered:
        return f"{text}. Create it (createdb) or name another database in the URL"
    if any(s in lowered for s in _UNREACHABLE):
        return f"server unreachable ({text})"
    return text


@dataclass(frozen=True)
class Database:
    """One PostgreSQL database as the store reaches it. Every connection the store opens comes
    from here, and every error it reports is explained here, so none of them shows the password.
    """

    pg: ModuleType
    location: str  # postgresql://user@host:port/db, for messages
    conninfo: str = field(repr=False)  # may hold the password
    secrets: tuple[str, ...] = field(repr=False)

    @classmethod
    def from_spec(cls, spec: str, *, connect_timeout: int) -> Database:
        """The database a ``postgresql://`` URL or libpq key/value string names; StoreError
        (one line, no password) when psycopg is missing or the string is invalid."""
        pg = import_psycopg()
        params = parse_spec(pg, spec)
        secrets = tuple(s for s in (spec, params.get("password")) if s)
        location = describe(params)
        params.setdefault("connect_timeout", str(connect_timeout))
        params.setdefault("application_name", "mitmproxy-expect-ct")
        for name, value in TCP_DEFAULTS.items():
            params.setdefault(name, value)
        return cls(pg, location, pg.conninfo.make_conninfo(**params), secrets)

    def connect(self) -> psycopg.Connection[Any]:
        """A new autocommit connection; StoreError naming the problem if it cannot be opened."""
        try:
            conn: psycopg.Connection[Any] = self.pg.connect(self.conninfo, autocommit=True)
        except self.pg.Error as e:
            raise StoreError(
                f"cannot open the Expect-CT store {self.location}: {self.explain(e)}"
            ) from None
        return conn

    def explain(self, error: BaseException) -> str:
        return explain(error, list(self.secrets))


def is_broken(conn: psycopg.Connection[Any] | None) -> bool:
    """True when ``conn`` is missing or unusable (closed, or its server went away)."""
    return conn is None or conn.closed or conn.broken


def migrate(
    pg: ModuleType, conn: psycopg.Connection[Any], location: str, secrets: list[str]
) -> None:
    """Create or migrate the schema to SCHEMA_VERSION, in one transaction under an advisory
    lock (proxies starting at once); StoreError for a schema newer than this code."""
    try:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            conn.execute("CREATE TABLE IF NOT EXISTS expect_ct_schema (version integer NOT NULL)")
            row = conn.execute("SELECT max(version) FROM expect_ct_schema").fetchone()
            current = int(row[0]) if row and row[0] is not None else 0
            if current > SCHEMA_VERSION:
                raise StoreError(
                    f"the Expect-CT store {location} has schema version {current}, "
                    f"from a newer version of mitmproxy-expect-ct; this one understands "
                    f"version {SCHEMA_VERSION}. Upgrade mitmproxy-expect-ct on this proxy."
                )
            for version in range(current + 1, SCHEMA_VERSION + 1):
                for statement in _MIGRATIONS[version]:
                    conn.execute(statement)
                conn.execute("INSERT INTO expect_ct_schema (version) VALUES (%s)", (version,))
    except pg.Error as e:
        raise StoreError(
            f"cannot create or migrate the Expect-CT schema in {location}: {explain(e, secrets)}"
        ) from None
