"""Command line of ``python -m expect_ct``."""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import sys
from collections.abc import Sequence

from expect_ct import store as storemod

STORE_FILENAME = "expect-ct.sqlite3"
DEFAULT_CONFDIR = "~/.mitmproxy"


def script_path() -> str:
    """Absolute path of the installed mitmproxy script ``expect_ct_addon.py``."""
    spec = importlib.util.find_spec("expect_ct_addon")
    if spec is None or spec.origin is None:
        raise RuntimeError("expect_ct_addon.py is not installed next to the expect_ct package")
    return spec.origin


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m expect_ct",
        description="Certificate Transparency and Expect-CT for mitmproxy. "
        "With no command, print the path of the mitmproxy script, for "
        'mitmdump -s "$(python -m expect_ct)".',
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    store_help = (
        f"Known Expect-CT Hosts database (default: {DEFAULT_CONFDIR}/{STORE_FILENAME}, "
        "the addon's default with mitmproxy's default confdir)"
    )
    hosts = commands.add_parser("hosts", help="list the Known Expect-CT Hosts")
    hosts.add_argument("--store", help=store_help)
    hosts.add_argument("--json", action="store_true", help="one JSON object per line")
    forget = commands.add_parser("forget", help="remove a host from the Known Expect-CT Hosts")
    forget.add_argument("host")
    forget.add_argument("--store", help=store_help)
    return parser


def default_store_path() -> str:
    return os.path.join(os.path.expanduser(DEFAULT_CONFDIR), STORE_FILENAME)


def rfc3339(when: datetime.datetime) -> str:
    return when.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def open_store(path: str | None) -> storemod.KnownHostStore:
    path = path or default_store_path()
    if path != ":memory:" and not os.path.exists(path):
        raise storemod.StoreError(
            f"{path}: no Known Expect-CT Hosts store there (nothing noted yet?)"
        )
    return storemod.KnownHostStore(path)


def cmd_hosts(args: argparse.Namespace) -> int:
    store = open_store(args.store)
    try:
        count = 0
        for host in store.hosts():
            count += 1
            record = {
                "host": host.host,
                "enforce": host.enforce,
                "report_uri": host.report_uri,
                "expires": rfc3339(host.expires),
                "last_observed": rfc3339(host.last_observed),
            }
            if args.json:
                print(json.dumps(record))
            else:
                mode = "enforce" if host.enforce else "report-only"
                uri = f"  report-uri {host.report_uri}" if host.report_uri else ""
                print(f"{host.host}  {mode}  expires {record['expires']}{uri}")
        if not args.json:
            print(f"{count} Known Expect-CT Hosts in {store.path}", file=sys.stderr)
    finally:
        store.close()
    return 0


def cmd_forget(args: argparse.Namespace) -> int:
    store = open_store(args.store)
    try:
        removed = store.forget(args.host)
    finally:
        store.close()
    print(f"{args.host}: {'forgotten' if removed else 'was not a Known Expect-CT Host'}")
    return 0 if removed else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        try:
            print(script_path())
        except RuntimeError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        return 0
    handlers = {"hosts": cmd_hosts, "forget": cmd_forget}
    try:
        return handlers[args.command](args)
    except (storemod.StoreError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
