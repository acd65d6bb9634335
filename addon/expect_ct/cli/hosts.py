"""``python -m expect_ct hosts``: list the Known Expect-CT Hosts of a store."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from expect_ct import records
from expect_ct import store as storemod
from expect_ct.cli.common import DEFAULT_CONFDIR
from expect_ct.cli.common import STORE_FILENAME

STORE_HELP = (
    f"Known Expect-CT Hosts database: an SQLite file (default: {DEFAULT_CONFDIR}/"
    f"{STORE_FILENAME}, the addon's default with mitmproxy's default confdir) or the fleet's "
    "PostgreSQL database (postgresql://USER@HOST:PORT/DB, as in expect_ct_store)"
)


def open_store(path: str | None) -> storemod.HostStore:
    """An existing store (never a new, empty file); a PostgreSQL database is opened as the
    proxies open it (schema created if missing, so the CLI can prepare a fleet's database)."""
    if path and storemod.is_postgres_spec(path):
        return storemod.open_store(path)
    path = path or os.path.join(os.path.expanduser(DEFAULT_CONFDIR), STORE_FILENAME)
    if path != ":memory:" and not os.path.exists(path):
        raise storemod.StoreError(
            f"{path}: no Known Expect-CT Hosts store there (nothing noted yet?)"
        )
    return storemod.KnownHostStore(path)


def add_parser(commands: Any) -> None:
    parser = commands.add_parser("hosts", help="list the Known Expect-CT Hosts")
    parser.add_argument("--store", help=STORE_HELP)
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    store = open_store(args.store)
    try:
        count = 0
        for host in store.hosts():
            count += 1
            record = records.known_host_record(host)
            if args.json:
                print(json.dumps(record))
            else:
                mode = "enforce" if host.enforce else "report-only"
                uri = f"  report-uri {host.report_uri}" if host.report_uri else ""
                print(f"{host.host}  {mode}  expires {record['expires']}{uri}")
        if not args.json:
            print(f"{count} Known Expect-CT Hosts in {store.location}", file=sys.stderr)
    finally:
        store.close()
    return 0
